"""The Makefile byte-compiles the pulumi_aws service packages that plans import, no fewer.

A service the program starts using but the list lacks still plans, only slower where
PYTHONDONTWRITEBYTECODE is set (every plan compiles its modules again); this test
names it instead.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, STACKS

# Plans each test stack in a fresh interpreter (the suite's own has imported more) and
# prints the pulumi_aws service packages it imported.
PROBE = """
import shutil, sys, tempfile
from pathlib import Path
from devprod.plan import plan_stack
from tests.conftest import STACKS, write_stack
folder = Path(tempfile.mkdtemp())
for stack in sys.argv[1:]:
    write_stack(folder, stack, (STACKS / f"Pulumi.{stack}.yaml").read_text())
    plan_stack(folder, stack)
shutil.rmtree(folder)
print(" ".join(sorted({m.split(".")[1] for m in sys.modules if m.startswith("pulumi_aws.") and m.count(".") >= 2})))
"""


def makefile_services() -> set[str]:
    found = re.search(r"^AWS_SERVICES := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "Makefile: no AWS_SERVICES line"
    return set(found.group(1).split())


def test_the_makefile_compiles_every_aws_service_the_plans_import():
    stacks = sorted(p.name.split(".")[1] for p in STACKS.glob("Pulumi.*.yaml"))
    probe = subprocess.run([sys.executable, "-c", PROBE, *stacks], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    imported = set(probe.stdout.split())
    assert {"ec2", "iam"} <= imported, probe.stdout  # the probe saw the program's services
    listed = makefile_services()
    assert not imported - listed, f"Makefile AWS_SERVICES lacks {sorted(imported - listed)}"
    assert not listed - imported, f"Makefile AWS_SERVICES lists {sorted(listed - imported)}, which no plan imports"


def test_the_exclusion_pattern_keeps_the_listed_services_and_top_level_modules():
    """The regex that COMPILE_VENV hands compileall's -x, as make expands it."""
    expanded = subprocess.run(["make", "-n", "-B", ".venv/.devprod-plan-layer"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    found = re.search(r"compileall -q -j 0 -x '([^']+)'", expanded)
    assert found, expanded[-2000:]
    excluded = re.compile(found.group(1))
    site = "/v/lib/python3.11/site-packages/pulumi_aws/"
    for service in makefile_services():
        assert not excluded.search(f"{site}{service}/instance.py"), service
    assert not excluded.search(f"{site}_utilities.py")
    assert not excluded.search("/v/lib/python3.11/site-packages/pydantic/main.py")
    assert excluded.search(f"{site}rds/instance.py")
    assert excluded.search(f"{site}ec2transitgateway/route.py")  # a prefix of a listed name is not it
