"""scripts/deploy.sh run for real: a local HTTP app, artifacts in moto's S3 server, the real AWS CLI.

The one emulated piece is `systemctl` (tests/fixtures/bin/systemctl), which
restarts the fixture app from APP_DIR/current as systemd would. Everything
else is the production script doing real downloads, checksums, tar, flock,
symlink renames and HTTP health checks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from tests.conftest import ROOT, VENV_BIN, free_port

DEPLOY = ROOT / "scripts" / "deploy.sh"
FIXTURES = ROOT / "tests" / "fixtures"
SERVER = (FIXTURES / "app" / "server.py").read_text()

pytestmark = pytest.mark.slow


def sha(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


class Host:
    """One simulated production host: APP_DIR, a port, a bucket."""

    def __init__(self, tmp_path: Path, aws_env: dict[str, str]):
        self.root = tmp_path / "host"
        self.app_dir = self.root / "app"
        self.root.mkdir()
        self.port = free_port()
        self.bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
        self.aws_env = aws_env
        self.s3 = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="eu-central-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        self.s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})

    def tarball(self, release: str, mode: str = "ok") -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, text in (("server.py", SERVER), ("RELEASE", release), ("MODE", mode)):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def publish(self, release: str, mode: str = "ok", *, body: bytes | None = None, checksum: str | None = None) -> None:
        body = self.tarball(release, mode) if body is None else body
        digest = checksum or hashlib.sha256(body).hexdigest()
        self.s3.put_object(Bucket=self.bucket, Key=f"releases/{release}.tar.gz", Body=body)
        self.s3.put_object(Bucket=self.bucket, Key=f"releases/{release}.tar.gz.sha256",
                           Body=f"{digest}  {release}.tar.gz\n".encode())

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            **self.aws_env,
            "PATH": f"{FIXTURES / 'bin'}:{VENV_BIN}:{os.environ['PATH']}",
            "APP_DIR": str(self.app_dir),
            "PORT": str(self.port),
            "ARTIFACT_BUCKET": self.bucket,
            "HEALTH_URL": f"http://127.0.0.1:{self.port}/health",
            "HEALTH_TIMEOUT": "4",
            "HEALTH_PASSES": "2",
            "HEALTH_INTERVAL": "0.1",
            "AWS_CLI": str(VENV_BIN / "aws"),
        }
        env.update(extra)
        return env

    def start(self, action: str = "deploy", release: str = "", **extra: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(DEPLOY)], env=self.env(ACTION=action, RELEASE=release, **extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def run(self, action: str = "deploy", release: str = "", **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(DEPLOY)], env=self.env(ACTION=action, RELEASE=release, **extra),
                              capture_output=True, text=True, timeout=120)

    def health(self) -> tuple[int, str | None]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                return response.status, json.loads(response.read())["release"]
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except OSError:
            return 0, None

    def live(self) -> str | None:
        link = self.app_dir / "current"
        return os.readlink(link).split("/")[-1] if link.is_symlink() else None

    def log_results(self) -> list[str]:
        lines = (self.app_dir / "deploys.log").read_text().splitlines()
        return [line.split("result=")[1] for line in lines]

    def assert_serving(self, release: str) -> None:
        assert self.health() == (200, release), (self.health(), self.live())
        assert self.live() == release
        assert (self.app_dir / "releases" / release / ".devprod-complete").is_file()

    def stop(self) -> None:
        subprocess.run([str(FIXTURES / "bin" / "systemctl"), "stop", "app"], env=self.env(), check=False)


@pytest.fixture
def host(tmp_path, aws_env):
    h = Host(tmp_path, aws_env)
    yield h
    h.stop()


def deployed(host: Host, release: str) -> None:
    host.publish(release)
    result = host.run("deploy", release)
    assert result.returncode == 0, result.stderr
    host.assert_serving(release)


def test_first_deploy_then_redeploy_is_a_noop(host):
    deployed(host, sha(1))
    result = host.run("deploy", sha(1))
    assert result.returncode == 0, result.stderr
    assert host.log_results() == ["success", "noop-healthy"]
    host.assert_serving(sha(1))


@pytest.mark.parametrize(
    "case",
    ["download-fails", "checksum-mismatch", "corrupt-tarball", "install-fails"],
)
def test_failures_before_the_switch_change_nothing(host, case):
    deployed(host, sha(1))
    new = sha(2)
    extra = {}
    if case == "checksum-mismatch":
        host.publish(new, checksum="0" * 64)
    elif case == "corrupt-tarball":
        host.publish(new, body=b"this is not a gzip file at all")
    elif case == "install-fails":
        host.publish(new)
        extra["INSTALL_COMMAND"] = "echo installing; exit 3"
    result = host.run("deploy", new, **extra)
    assert result.returncode == 11, result.stderr
    host.assert_serving(sha(1))
    assert host.log_results()[-1] == "failed-before-switch"
    assert not (host.app_dir / "releases" / new).exists()


@pytest.mark.parametrize("mode", ["crash", "error", "hang"])
def test_unhealthy_release_is_rolled_back(host, mode):
    deployed(host, sha(1))
    host.publish(sha(2), mode)
    started = time.monotonic()
    result = host.run("deploy", sha(2))
    assert result.returncode == 10, result.stderr
    assert time.monotonic() - started < 20
    host.assert_serving(sha(1))
    assert host.log_results()[-1] == f"failed-rolled-back-to-{sha(1)}"


def test_first_deploy_failing_keeps_current_and_exits_14(host):
    host.publish(sha(1), "error")
    result = host.run("deploy", sha(1))
    assert result.returncode == 14, result.stderr
    assert (host.app_dir / "current").is_symlink()
    assert host.log_results() == ["failed-no-previous-release"]


def test_killed_after_unpacking_then_next_deploy_succeeds(host):
    deployed(host, sha(1))
    host.publish(sha(2))
    marker = host.root / "unpacked"
    proc = host.start("deploy", sha(2), INSTALL_COMMAND=f"touch {marker}; sleep 30")
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "deploy never reached the install step"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    host.assert_serving(sha(1))
    assert (host.app_dir / "releases" / f"{sha(2)}.partial").exists()  # left behind by the kill
    result = host.run("deploy", sha(2))
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))
    assert not (host.app_dir / "releases" / f"{sha(2)}.partial").exists()


def test_two_deploys_at_once_only_one_switches(host):
    deployed(host, sha(1))
    host.publish(sha(2))
    host.publish(sha(3))
    first = host.start("deploy", sha(2), INSTALL_COMMAND="sleep 2")
    time.sleep(0.5)
    second = host.run("deploy", sha(3))
    first.wait(timeout=60)
    assert second.returncode == 12, second.stderr
    assert first.returncode == 0, first.stderr.read() if first.stderr else ""
    host.assert_serving(sha(2))
    assert sorted(host.log_results()[1:]) == ["busy", "success"]
    assert not (host.app_dir / "releases" / sha(3)).exists()


def test_rollback_to_previous_and_to_a_named_release(host):
    for n in (1, 2, 3):
        deployed(host, sha(n))
    result = host.run("rollback")
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))
    result = host.run("rollback", sha(1))
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(1))
    result = host.run("rollback")  # previous is now sha(2): rollback goes back and forth
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))


def test_rollback_without_previous_changes_nothing(host):
    deployed(host, sha(1))
    result = host.run("rollback")
    assert result.returncode == 11, result.stderr
    host.assert_serving(sha(1))
    assert host.log_results()[-1] == "no-release-to-roll-back-to"


def test_retention_keeps_five_and_never_live_or_previous(host):
    for n in range(1, 9):
        deployed(host, sha(n))
    kept = sorted(p.name for p in (host.app_dir / "releases").iterdir())
    assert kept == sorted(sha(n) for n in range(4, 9))
    assert (host.app_dir / ".previous").read_text().strip() == sha(7)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ACTION": "deploy", "RELEASE": "main; rm -rf /"}, "RELEASE must be a git sha"),
        ({"ACTION": "destroy", "RELEASE": sha(1)}, "ACTION must be deploy or rollback"),
        ({"ACTION": "deploy", "RELEASE": ""}, "deploy needs RELEASE"),
        ({"ACTION": "deploy", "RELEASE": sha(1), "KEEP_RELEASES": "1"}, "KEEP_RELEASES must be at least 2"),
    ],
)
def test_bad_input_exits_13_before_touching_anything(host, env, message):
    result = subprocess.run(["bash", str(DEPLOY)], env={**host.env(), **env}, capture_output=True, text=True)
    assert result.returncode == 13 and message in result.stderr
    assert not host.app_dir.exists()


def test_parameter_store_values_become_a_0600_env_file(host, aws_env):
    ssm = boto3.client("ssm", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="eu-central-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    path = f"/devprod/test-{uuid.uuid4().hex[:8]}/app"
    ssm.put_parameter(Name=f"{path}/DATABASE_URL", Value="postgres://u:p@db/app", Type="SecureString")
    ssm.put_parameter(Name=f"{path}/FEATURE", Value="on", Type="String")
    host.publish(sha(1))
    result = host.run("deploy", sha(1), PARAMETER_PATH=path)
    assert result.returncode == 0, result.stderr
    env_file = host.app_dir / "shared" / "env"
    assert sorted(env_file.read_text().splitlines()) == ["DATABASE_URL=postgres://u:p@db/app", "FEATURE=on"]
    assert env_file.stat().st_mode & 0o777 == 0o600


def test_the_ssm_documents_script_deploys(host):
    """The document's runCommand, run by /bin/sh as the SSM agent would, with SSM_* variables.

    Only the settings lines are pointed at this test host; the rest (the
    SSM_* mapping and the heredoc carrying deploy.sh) runs as planned.
    """
    from tests.conftest import ROOT as root
    from devprod.plan import plan_stack

    doc = json.loads(plan_stack(root, "prod").named("production-deploy").inputs["content"])
    commands = doc["mainSteps"][0]["inputs"]["runCommand"]
    overrides = {
        "APP_DIR": str(host.app_dir), "ARTIFACT_BUCKET": host.bucket, "INSTALL_COMMAND": "''",
        "HEALTH_URL": f"http://127.0.0.1:{host.port}/health", "PARAMETER_PATH": "''",
        "UNIT_DROPIN": str(host.root / "unit.d" / "50-devprod.conf"), "APP_PORT": str(host.port),
    }
    lines = []
    for line in commands:
        key = line.removeprefix("export ").split("=", 1)[0]
        lines.append(f"export {key}={overrides[key]}" if line.startswith("export ") and key in overrides else line)
    script = host.root / "_script.sh"
    script.write_text("\n".join(lines) + "\n")
    host.publish(sha(1))
    env = {k: v for k, v in host.env().items() if k not in ("ACTION", "RELEASE", "APP_DIR", "HEALTH_URL")}
    result = subprocess.run(["sh", str(script)], env={**env, "SSM_release": sha(1), "SSM_action": "deploy"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(1))
    result = subprocess.run(["sh", str(script)], env={**env, "SSM_release": "", "SSM_action": "rollback"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 11 and host.log_results()[-1] == "no-release-to-roll-back-to"


def test_unit_drop_in_follows_port_and_start_command(host):
    dropin = host.root / "unit.d" / "50-devprod.conf"
    settings = {"UNIT_DROPIN": str(dropin), "APP_PORT": str(host.port), "APP_START_COMMAND": "node server.js"}
    host.publish(sha(1))
    host.publish(sha(2))
    assert host.run("deploy", sha(1), **settings).returncode == 0
    assert dropin.read_text() == (
        f"[Service]\nEnvironment=PORT={host.port}\nExecStart=\nExecStart=/bin/bash -c 'node server.js'\n"
    )
    assert host.run("deploy", sha(2), **settings).returncode == 0  # unchanged: no second reload
    assert (host.root / "daemon-reloads").read_text().splitlines() == ["reload"]
    result = host.run("deploy", sha(1), **{**settings, "APP_START_COMMAND": "echo 'quoted'"})
    assert result.returncode == 13 and "without single quotes" in result.stderr
