"""What a plan imports: a stack that wires no GitHub repository never loads pulumi_github.

pulumi_github costs about 0.1 s of CPU to import, a tenth of a small dev stack's whole
plan; only the pipeline's repository wiring needs it (components/program.py imports it
there). Each plan runs in a fresh interpreter: the suite's own has imported everything.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, STACKS

PROBE = """
import sys, tempfile
from pathlib import Path
from devprod.plan import plan_stack
from tests.conftest import STACKS, write_stack
with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp)
    write_stack(folder, sys.argv[1], (STACKS / f"Pulumi.{sys.argv[1]}.yaml").read_text())
    plan = plan_stack(folder, sys.argv[1])
github = sorted({r.type for r in plan.resources if r.type.startswith("github:")})
print("pulumi_github" in sys.modules, ",".join(github) or "-")
"""


def _imports_github(stack: str) -> tuple[str, str]:
    probe = subprocess.run([sys.executable, "-c", PROBE, stack], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    loaded, types = probe.stdout.split()
    return loaded, types


def test_a_dev_stack_plans_without_importing_pulumi_github():
    assert _imports_github("dev") == ("False", "-")


def test_a_stack_that_wires_github_imports_it_and_plans_its_resources():
    assert "manageRepository" not in (STACKS / "Pulumi.prod.yaml").read_text()  # wired by default
    loaded, types = _imports_github("prod")
    assert loaded == "True"
    assert "github:index/actionsVariable:ActionsVariable" in types.split(","), types
