"""`make plan` from a fresh clone: the README's first command, for real.

Named to sort first: it is the longest test (a venv and the plan layer's
packages), so pytest-xdist starts it at once and runs the rest of the suite
beside it.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_make_plan_from_a_fresh_clone(tmp_path):
    """`make plan` in a clone of the committed tree: venv, the plan layer only, editable install, plan."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # As from a shell: not the suite's venv or tree, and not inside `make test`'s make (which would
    # add "Entering directory" lines to stdout).
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # as on many CI images: no .pyc is written on import
    result = subprocess.run(["make", "plan"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Setup talks on stderr, a line per step; stdout holds the plan alone.
    assert result.stdout.startswith("devprod-dev: "), result.stdout[:500]
    assert "==> " in result.stderr and "plan layer ready" in result.stderr, result.stderr[-2000:]
    # Whatever the team's roster is (their data): every developer on it gets a box and an ssh block.
    from devprod.plan import load_stack_raw

    raw, _ = load_stack_raw(clone, "dev")
    for entry in raw.get("devprod:developers") or []:
        name = entry["name"]
        assert f"DeveloperInstance {name}" in result.stdout and f"Host {name}-dev" in result.stdout, name
    # Planning installed nothing of the test layer: no moto, AWS CLI, pytest, linters or policy SDK.
    python = clone / ".venv" / "bin" / "python"
    for module in ("moto", "awscli", "pytest", "pulumi_policy"):
        found = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, env=env)
        assert found.returncode != 0, f"make plan installed {module}"
    # Its packages are byte-compiled: where PYTHONDONTWRITEBYTECODE is set, Python would
    # otherwise compile every module a plan imports, in every plan (2 s of a 1.4 s plan).
    compiled = subprocess.run(
        [str(python), "-c", "import importlib.util as u, os, pulumi_aws.ec2.instance as m, pydantic as p;"
                            "print(all(os.path.exists(u.cache_from_source(x.__file__)) for x in (m, p)))"],
        capture_output=True, text=True, env=env)
    assert compiled.stdout.strip() == "True", compiled.stdout + compiled.stderr
    # Idempotent: the layer is current, so a second `make plan` would install nothing.
    again = subprocess.run(["make", "-q", "setup-plan"], cwd=clone, env=env, capture_output=True, text=True)
    assert again.returncode == 0, "the plan layer is out of date right after `make plan`"


def test_the_plan_layer_is_exactly_the_packages_dependencies():
    """requirements.txt (what `make plan` installs) and pyproject's dependencies (what the wheel needs) agree."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(line for line in lines if line) == sorted(declared)
