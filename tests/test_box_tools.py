"""The box document's `tools` step, run for real as the SSM agent runs it (sh, as root).

The package managers, systemctl and usermod are stubs that log their
arguments (installing packages here would change the test machine); the
developer is a real user, the dotfiles a real git repository cloned as that
user. git's own `url.<base>.insteadOf` (passed in the environment) points the
https URL at the local repository: no network, and nothing in the script
knows about tests.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import plan_of

USER = "tools-dev"
URL = "https://git.example.test/tools-dev/dotfiles.git"
STUBS = ("dnf", "apt-get", "systemctl", "usermod")


@pytest.fixture(scope="module")
def developer():
    if os.geteuid() != 0:
        pytest.fail("the tools step runs as root and switches to the developer: run the suite as root")
    base = Path(tempfile.mkdtemp(prefix="devprod-tools-"))
    base.chmod(0o755)
    home = base / "home"
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash", USER], check=True)
    else:  # left by an earlier session: its home moves here (the script reads it from passwd)
        subprocess.run(["usermod", "--home", str(home), USER], check=True)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def box(developer, tmp_path):
    """A fresh home (mounted: its marker is there), stub package tools, and the step's shell text."""
    home = developer / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    (home / ".devprod-home").touch()
    user = pwd.getpwnam(USER)
    os.chown(home, user.pw_uid, user.pw_gid)
    stubs = developer / "stubs"
    stubs.mkdir(exist_ok=True)
    log = developer / "calls.log"
    log.write_text("")
    log.chmod(0o666)
    for name in STUBS:
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >>{log}\n')
        (stubs / name).chmod(0o755)
    raw = _raw()
    raw["devprod:developers"][0].update(tools=["docker", "git", "node", "python"], dotfiles=URL)
    plan = plan_of(raw, stack="dev")
    content = _document(plan)
    step = next(s for s in content["mainSteps"] if s["name"] == "tools")
    script = tmp_path / "step.sh"
    script.write_text("\n".join(step["inputs"]["runCommand"]) + "\n")
    parameters = _association(plan)["parameters"]
    return {"home": home, "log": log, "stubs": stubs, "script": script, "parameters": parameters, "base": developer}


def _raw():
    from devprod.plan import load_stack_raw
    from tests.conftest import STACKS

    return load_stack_raw(STACKS, "dev")[0]


def _document(plan):
    (doc,) = [r for r in plan.of_type("aws:ssm/document:Document") if r.name == "box-setup"]
    return json.loads(doc.inputs["content"])


def _association(plan):
    (assoc,) = [r for r in plan.of_type("aws:ssm/association:Association") if r.name == "alice-box-setup"]
    return assoc.inputs


def make_repo(base: Path, files: dict[str, str]) -> Path:
    """A git repository owned by the developer (git refuses other owners' repositories)."""
    repo = base / "dotfiles-src"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.test", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "dotfiles"], check=True)
    user = pwd.getpwnam(USER)
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, user.pw_uid, user.pw_gid)
    return repo


def run_step(box, *, os_id="ubuntu", home_marker=True, **parameters):
    release = box["base"] / "os-release"
    release.write_text(f'NAME="x"\nID={os_id}\n')
    env = {
        "PATH": f"{box['stubs']}:/usr/sbin:/usr/bin:/sbin:/bin",
        **{f"SSM_{k}": v for k, v in {**box["parameters"], **parameters}.items()},
        "OS_RELEASE": str(release),
        # git's own URL rewriting: the https URL is served from the local repository.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.file://{box['base'] / 'dotfiles-src'}.insteadOf",
        "GIT_CONFIG_VALUE_0": URL,
    }
    if not home_marker:
        (box["home"] / ".devprod-home").unlink()
    return subprocess.run(["sh", str(box["script"])], env={**env, "SSM_user": USER}, capture_output=True, text=True, timeout=120)


def missing(commands, path="/usr/sbin:/usr/bin:/sbin:/bin"):
    return [c for c in commands if shutil.which(c, path=path) is None]


def test_the_step_installs_missing_tools_the_distributions_way_and_runs_the_dotfiles_installer(box):
    make_repo(box["base"], {"install.sh": "id -un > \"$HOME/installed-by\"\n", ".vimrc": "set nu\n"})
    result = run_step(box)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = box["log"].read_text().splitlines()
    packages = {"docker": ["docker.io"], "git": ["git"], "node": ["nodejs", "npm"], "python3": ["python3", "python3-pip", "python3-venv"]}
    expected = [p for command in missing(["docker", "git", "node", "python3"]) for p in packages[command]]
    assert "docker.io" in expected, "docker is not on the test PATH, so at least it is installed"
    assert calls[:2] == ["apt-get update -q", "apt-get install -y -q --no-install-recommends " + " ".join(expected)]
    assert calls[2:] == ["systemctl enable --now docker", f"usermod -a -G docker {USER}"]
    home = box["home"]
    assert (home / "installed-by").read_text().strip() == USER, "the dotfiles installer runs as the developer"
    assert (home / ".dotfiles" / ".git").is_dir() and (home / ".dotfiles").stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert not (home / ".vimrc").exists(), "with an installer, nothing is linked"
    # Once per home: a second run leaves the developer's dotfiles alone.
    (home / "installed-by").unlink()
    again = run_step(box)
    assert again.returncode == 0 and not (home / "installed-by").exists()
    assert "dotfiles: installed before" in again.stdout


def test_on_al2023_dnf_installs_and_without_an_installer_dot_entries_are_linked_never_overwritten(box):
    make_repo(box["base"], {".vimrc": "set nu\n", ".bashrc": "# theirs\n", "README": "x\n"})
    (box["home"] / ".bashrc").write_text("# mine\n")
    result = run_step(box, os_id="amzn", tools="docker")
    assert result.returncode == 0, result.stdout + result.stderr
    assert box["log"].read_text().splitlines()[0] == "dnf install -y -q docker"
    home = box["home"]
    assert (home / ".vimrc").is_symlink() and os.readlink(home / ".vimrc") == str(home / ".dotfiles" / ".vimrc")
    assert (home / ".bashrc").read_text() == "# mine\n" and "keeping the existing ~/.bashrc" in result.stdout
    assert not (home / "README").exists() and not (home / ".git").exists()


def test_nothing_to_do_installs_nothing_and_an_unmounted_home_is_not_ready(box):
    result = run_step(box, tools="git", dotfiles="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert box["log"].read_text() == "" and "tools: git already installed" in result.stdout
    result = run_step(box, home_marker=False)
    assert result.returncode == 3 and "not mounted yet; will retry" in result.stdout
    assert not (box["home"] / ".dotfiles").exists()


def test_the_tools_step_passes_shellcheck(box):
    from tests.test_shell import shellcheck

    lint = subprocess.run([shellcheck(), "-s", "sh", "-S", "warning", str(box["script"])], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
