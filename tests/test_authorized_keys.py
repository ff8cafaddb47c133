"""The box side of key rotation, run for real: scripts/host/devprod-authorized-keys.py as root on a fake home.

The tests run as root (as the SSM agent does) against a home owned by an
unprivileged uid, so ownership, modes and the symlink refusals are the real ones.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "host" / "devprod-authorized-keys.py"
UID = 2345
OLD = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMF6oIOB13KcUJRUajc0dZQKQN+1SvR1BVAl/kIXA6vP alice@laptop"
NEW = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB0XgcmyVX1/YuEGpr/Kjcn9XFN3sgZ5RHtUDG9u"
    "YNP1xdaDl/nbQ+DHi1kueaPTXSEwqWxzPpR00fAH86WBB6E= alice@new-laptop"
)
OWN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOWNOWNOWNOWNOWNOWNOWNOWNOWNOWNOWNOWNOWNOWNO alice@tablet"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs as root, as the SSM agent does")


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home" / "alice"
    path.mkdir(parents=True)
    (path / ".devprod-home").touch()
    os.chown(path, UID, UID)
    return path


def install(home: Path, key: str, user_data: str | None = None) -> subprocess.CompletedProcess:
    user_data_file = home.parent.parent / "user-data.txt"
    if user_data is not None:
        user_data_file.write_text(user_data)
    env = {
        "PATH": os.environ["PATH"],
        "DEVPROD_USER": "alice",
        "DEVPROD_PUBLIC_KEY": key,
        "DEVPROD_HOME": str(home),
        "DEVPROD_UID": str(UID),
        "DEVPROD_GID": str(UID),
        "DEVPROD_STATE_DIR": str(home.parent.parent / "state"),
        "DEVPROD_USER_DATA": str(user_data_file),
    }
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def keys_of(home: Path) -> list[str]:
    return [l for l in (home / ".ssh" / "authorized_keys").read_text().splitlines() if l and not l.startswith("#")]


def test_fresh_home_gets_the_key_owned_by_the_developer_with_ssh_modes(home):
    result = install(home, OLD)
    assert result.returncode == 0, result.stdout
    keys = home / ".ssh" / "authorized_keys"
    assert keys_of(home) == [OLD]
    for path, mode in ((home / ".ssh", 0o700), (keys, 0o600)):
        info = path.lstat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (UID, UID, mode), path
    assert "installed" in result.stdout
    again = install(home, OLD)
    assert again.returncode == 0 and "already current" in again.stdout


def test_rotation_serves_the_new_key_not_the_old_and_keeps_the_developers_own_lines(home):
    assert install(home, OLD).returncode == 0
    with (home / ".ssh" / "authorized_keys").open("a") as handle:
        handle.write(OWN + "\n")
    result = install(home, NEW)
    assert result.returncode == 0, result.stdout
    assert keys_of(home) == [OWN, NEW]


def test_a_box_bootstrapped_before_loses_its_first_boot_key(home):
    """User data appended the key without markers; the key it names is retired on the first rotation."""
    (home / ".ssh").mkdir(mode=0o700)
    os.chown(home / ".ssh", UID, UID)
    (home / ".ssh" / "authorized_keys").write_text(f"{OWN}\n{OLD}\n")
    os.chown(home / ".ssh" / "authorized_keys", UID, UID)  # as the first-boot script leaves it
    user_data = f"#!/bin/bash\nDEV_USER=alice\nSSH_PUBLIC_KEY='{OLD}'\nHOME_VOLUME_ID=vol-0123\n"
    result = install(home, NEW, user_data=user_data)
    assert result.returncode == 0, result.stdout
    assert keys_of(home) == [OWN, NEW]


def test_ssh_dir_symlinked_elsewhere_is_refused_and_the_target_untouched(home, tmp_path):
    elsewhere = tmp_path / "root-owned"
    elsewhere.mkdir()
    (home / ".ssh").symlink_to(elsewhere)
    result = install(home, NEW)
    assert result.returncode == 4, result.stdout
    assert "symlink" in result.stdout
    assert list(elsewhere.iterdir()) == []


def test_authorized_keys_symlinked_to_a_system_file_is_replaced_not_written_through(home, tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    (home / ".ssh").mkdir(mode=0o700)
    os.chown(home / ".ssh", UID, UID)
    (home / ".ssh" / "authorized_keys").symlink_to(victim)
    result = install(home, NEW)
    assert result.returncode == 0, result.stdout
    assert victim.read_text() == "root:secret\n" and victim.stat().st_uid == 0
    assert not (home / ".ssh" / "authorized_keys").is_symlink() and keys_of(home) == [NEW]


def test_authorized_keys_hard_linked_to_a_root_file_is_replaced_not_copied(home, tmp_path):
    """Root made the link here; on a box fs.protected_hardlinks keeps the developer from it."""
    victim = tmp_path / "secret"
    victim.write_text("root-secret: s3cr3t\n")
    victim.chmod(0o600)
    (home / ".ssh").mkdir(mode=0o700)
    os.chown(home / ".ssh", UID, UID)
    os.link(victim, home / ".ssh" / "authorized_keys")
    result = install(home, NEW)
    assert result.returncode == 0, result.stdout
    assert "s3cr3t" not in (home / ".ssh" / "authorized_keys").read_text() and keys_of(home) == [NEW]
    assert victim.read_text() == "root-secret: s3cr3t\n"


def test_authorized_keys_as_a_directory_is_refused_and_leaves_no_temporary_file(home):
    (home / ".ssh" / "authorized_keys").mkdir(parents=True)
    os.chown(home / ".ssh", UID, UID)
    (home / ".ssh").chmod(0o700)
    result = install(home, NEW)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "authorized_keys" in (result.stdout + result.stderr)
    assert [p.name for p in (home / ".ssh").iterdir()] == ["authorized_keys"]


def test_ssh_dir_owned_by_someone_else_is_refused(home):
    (home / ".ssh").mkdir(mode=0o700)  # root-owned
    result = install(home, NEW)
    assert result.returncode == 4 and "not the developer" in result.stdout


@pytest.mark.parametrize(
    "key, message",
    [
        ('command="sh" ' + NEW, "is not one of"),
        ("ssh-ed25519 " + NEW.split()[1] + " alice", "the key data says"),
        ("ssh-ed25519 not!base64", "not a valid OpenSSH key blob"),
        (OLD + "\nssh-ed25519 AAAA", "one line"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "is not one of"),
    ],
    ids=["options-prefix", "type-mismatch", "bad-base64", "two-lines", "private-key"],
)
def test_bad_keys_are_refused_and_nothing_is_written(home, key, message):
    result = install(home, key)
    assert result.returncode == 2 and message in result.stdout, result.stdout
    assert not (home / ".ssh").exists()


def test_home_not_mounted_yet_is_retried_later(home):
    (home / ".devprod-home").unlink()
    result = install(home, NEW)
    assert result.returncode == 3 and "not mounted" in result.stdout
