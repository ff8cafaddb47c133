"""The built wheel is the product: it installs into a fresh venv and plans a project from there.

The fresh venv gets the project's dependencies by a .pth line pointing at the
test venv's site-packages (installing pulumi-aws again would take minutes);
a .pth file inside that folder is not executed, so the test venv's editable
devprod stays invisible and only the wheel's packages can answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT, STACKS

pytestmark = pytest.mark.slow


# The fresh venv must see the wheel and the dependencies only, never the tree under test.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    # Build from the files a clone holds: a local *.egg-info (left by the editable
    # install) would otherwise add every file it lists, hiding missing package data.
    source = work / "source"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (work / "dist").glob("devprod-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    site = next(env_dir.glob("lib/python3*/site-packages"))
    (site / "test-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                              "--no-deps", "-q", str(wheel)], capture_output=True, text=True, timeout=300, env=CLEAN_ENV)
    assert install.returncode == 0, install.stderr
    return env_dir


def run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(env_dir / "bin" / "devprod"), *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=CLEAN_ENV)


def test_the_wheel_holds_the_cli_the_program_the_rules_and_their_files(fresh, tmp_path):
    where = subprocess.run(
        [str(fresh / "bin" / "python"), "-c",
         "import devprod, components, policy, scripts; from components import production_service as p; "
         "print(devprod.__file__, components.__file__, policy.__file__, p.DEPLOY_SCRIPT.is_file())"],
        capture_output=True, text=True, cwd=tmp_path, env=CLEAN_ENV,
    )
    assert where.returncode == 0, where.stderr
    paths = where.stdout.split()
    assert all(str(fresh) in path for path in paths[:3]), paths
    assert paths[3] == "True"
    assert run(fresh, "--help", cwd=tmp_path).returncode == 0


def test_the_installed_devprod_plans_a_folder_of_stack_files(fresh, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: devprod\nruntime: python\n")
    for stack in ("dev", "prod"):
        shutil.copy(STACKS / f"Pulumi.{stack}.yaml", project / f"Pulumi.{stack}.yaml")
    result = run(fresh, "plan", "prod", "--json", "--project-dir", str(project), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"production-deploy"' in result.stdout and '"delivery-release"' in result.stdout
    # The dev stack embeds the box-side scripts (scripts/host) in each box's setup document.
    result = run(fresh, "plan", "dev", "--json", "--project-dir", str(project), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "devprod-idle-stop" in result.stdout and "devprod-authorized-keys" in result.stdout
