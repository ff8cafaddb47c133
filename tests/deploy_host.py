"""A simulated production host for running scripts/deploy.sh for real.

Each Host has its own APP_DIR, its own real nginx (started as root from a
configuration of its own, listening on a free loopback port, as deploy.sh's
header describes), two free loopback ports for the slots, and a bucket in
moto's S3 server. The one emulated piece is `systemctl`
(tests/fixtures/bin/systemctl), which runs the fixture app in a slot as the
template unit would, as the app user.

Used by tests/test_deploy_script.py, tests/test_zero_downtime.py and
benchmarks/zero_downtime.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3

from tests.conftest import ROOT, VENV_BIN, free_port

DEPLOY = ROOT / "scripts" / "deploy.sh"
FIXTURES = ROOT / "tests" / "fixtures"
SERVER = (FIXTURES / "app" / "server.py").read_text()
SYSTEMCTL = FIXTURES / "bin" / "systemctl"
APP_USER = "devprod-test-app"
APP_PYTHON = Path("/usr/bin/python3")  # the app user cannot run the venv's (under /root)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SLOTS = ("blue", "green")

NGINX_CONF = """\
# A test host's nginx: root-started master, unprivileged loopback ports.
worker_processes 2;
pid {root}/nginx/nginx.pid;
error_log {root}/nginx/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {root}/nginx/tmp/body;
    proxy_temp_path {root}/nginx/tmp/proxy;
    fastcgi_temp_path {root}/nginx/tmp/fastcgi;
    uwsgi_temp_path {root}/nginx/tmp/uwsgi;
    scgi_temp_path {root}/nginx/tmp/scgi;
    include {root}/nginx/conf.d/*.conf;
}}
"""


def ensure_app_user() -> str:
    """A real unprivileged system user, created once (idempotent; several workers may race to create it)."""
    if os.geteuid() != 0:
        raise RuntimeError(
            "deploy.sh tests need root: deploy.sh runs as root and hands the install step to a real "
            f"app user ({APP_USER}), which only root can create and switch to. Run the suite as root.")
    assert APP_PYTHON.is_file(), f"{APP_PYTHON} is missing: the fixture app runs on the system python (apt-get install python3)"
    assert Path(NGINX).is_file(), "nginx is missing: `make system-deps` installs it (Debian package nginx)"
    if subprocess.run(["id", "-u", APP_USER], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", APP_USER], capture_output=True, text=True)
        exists = subprocess.run(["id", "-u", APP_USER], capture_output=True).returncode == 0
        assert exists, f"useradd {APP_USER} failed: {made.stderr}"
    return APP_USER


def app_uid() -> int:
    return pwd.getpwnam(APP_USER).pw_uid


def app_gid() -> int:
    return pwd.getpwnam(APP_USER).pw_gid


def as_app(*command: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command as the app user, the way an attacker inside the app would."""
    return subprocess.run(["runuser", "-u", APP_USER, "--", *command], capture_output=True, text=True, **kwargs)


def sha(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def get(url: str, timeout: float = 5) -> tuple[int, dict]:
    """(status, JSON body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


class Host:
    """One simulated production host: APP_DIR, nginx on a port, two slot ports, a bucket."""

    def __init__(self, base: Path, aws_env: dict[str, str], start_delay: float = 1.0):
        self.root = Path(tempfile.mkdtemp(dir=base))
        self.root.chmod(0o755)
        self.app_dir = self.root / "app"
        self.deploy_log = self.root / "log" / "deploys.log"
        self.start_delay = start_delay
        # Somewhere the app user (and so the install step) may write, for the tests to read back.
        self.scratch = self.root / "scratch"
        self.scratch.mkdir()
        shutil.chown(self.scratch, APP_USER, APP_USER)
        self.port, self.blue_port, self.green_port = free_port(), free_port(), free_port()
        self.nginx_dir = self.root / "nginx"
        self.nginx_conf = self.nginx_dir / "nginx.conf"
        self.site = self.nginx_dir / "conf.d" / "devprod.conf"
        self.upstream = self.nginx_dir / "upstream.conf"
        self.access_log = self.nginx_dir / "access.log"
        (self.nginx_dir / "conf.d").mkdir(parents=True)
        (self.nginx_dir / "tmp").mkdir()
        self.nginx_conf.write_text(NGINX_CONF.format(root=self.root))
        self.start_nginx()
        self.bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
        self.aws_env = aws_env
        self.s3 = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="eu-central-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        self.s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        self.published: dict[str, str] = {}

    # ------------------------------------------------------------ nginx

    def nginx_pid(self) -> int | None:
        try:
            pid = int((self.nginx_dir / "nginx.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if cmdline.startswith(b"nginx: master") else None

    def start_nginx(self) -> None:
        result = subprocess.run([NGINX, "-c", str(self.nginx_conf)], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 5
        while self.nginx_pid() is None:
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.02)

    def stop_nginx(self) -> None:
        pid = self.nginx_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while self.nginx_pid() and time.monotonic() < deadline:
                time.sleep(0.02)

    def nginx_workers(self) -> set[int]:
        master = self.nginx_pid()
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout if master else ""
        return {int(p) for p in out.split()}

    # ------------------------------------------------------------ releases

    def tarball(self, release: str, mode: str = "ok", extra: tuple[tarfile.TarInfo, ...] = (),
                start_delay: float | None = None) -> bytes:
        """A release archive; `extra` members (links, devices, odd modes) are appended as given."""
        delay = self.start_delay if start_delay is None else start_delay
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
            for name, text in (("server.py", SERVER), ("RELEASE", release), ("MODE", mode), ("START_DELAY", str(delay))):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
            for info in extra:
                tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
        return buffer.getvalue()

    def publish(self, release: str, mode: str = "ok", *, body: bytes | None = None, checksum: str | None = None,
                start_delay: float | None = None) -> None:
        """Put a release in the bucket, as the Release action does, and remember the digest it
        published: `run`/`start` pass it as CHECKSUM (the document parameter) for that release."""
        body = self.tarball(release, mode, start_delay=start_delay) if body is None else body
        digest = checksum or hashlib.sha256(body).hexdigest()
        self.s3.put_object(Bucket=self.bucket, Key=f"releases/{release}.tar.gz", Body=body)
        self.s3.put_object(Bucket=self.bucket, Key=f"releases/{release}.tar.gz.sha256",
                           Body=f"{digest}  {release}.tar.gz\n".encode())
        self.published[release] = digest

    # ------------------------------------------------------------ running deploy.sh

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            **self.aws_env,
            "PATH": f"{FIXTURES / 'bin'}:{VENV_BIN}:{os.environ['PATH']}",
            "APP_DIR": str(self.app_dir),
            "APP_USER": APP_USER,
            "APP_PYTHON": str(APP_PYTHON),
            "DEPLOY_LOG": str(self.deploy_log),
            "ARTIFACT_BUCKET": self.bucket,
            "BLUE_PORT": str(self.blue_port),
            "GREEN_PORT": str(self.green_port),
            "HEALTH_URL": f"http://127.0.0.1:{self.port}/health",
            # Generous for releases that start (they pass as soon as they answer, even on a busy
            # machine); tests of releases that must fail set a short one.
            "HEALTH_TIMEOUT": "8",
            "HEALTH_PASSES": "2",
            "HEALTH_INTERVAL": "0.1",
            "DRAIN_TIMEOUT": "10",
            "NGINX_BIN": NGINX,
            "NGINX_CONF": str(self.nginx_conf),
            "NGINX_PID_FILE": str(self.nginx_dir / "nginx.pid"),
            "NGINX_RELOAD": f"{NGINX} -c {self.nginx_conf} -s reload",
            "NGINX_SITE": str(self.site),
            "NGINX_UPSTREAM": str(self.upstream),
            "PROXY_LISTEN": f"127.0.0.1:{self.port}",
            "ACCESS_LOG": str(self.access_log),
            "AWS_CLI": str(VENV_BIN / "aws"),
        }
        env.update(extra)
        return env

    def _settings(self, action: str, release: str, extra: dict[str, str]) -> dict[str, str]:
        checksum = self.published.get(release, "")
        return self.env(ACTION=action, RELEASE=release, **{"CHECKSUM": checksum, **extra})

    def start(self, action: str = "deploy", release: str = "", **extra: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(DEPLOY)], env=self._settings(action, release, extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def run(self, action: str = "deploy", release: str = "", **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(DEPLOY)], env=self._settings(action, release, extra),
                              capture_output=True, text=True, timeout=120)

    # ------------------------------------------------------------ what the host shows

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def health(self) -> tuple[int, str | None]:
        """/health through nginx: (status, release)."""
        status, body = get(self.url(), timeout=3)
        return status, body.get("release") if status == 200 else None

    def live(self) -> str | None:
        link = self.app_dir / "current"
        return os.readlink(link).split("/")[-1] if link.is_symlink() else None

    def state(self) -> tuple[str, str, str] | None:
        """(live slot, its release, previous release) from the deploy state file."""
        path = self.app_dir / ".deploy" / "state"
        return tuple(path.read_text().split()) if path.exists() else None  # type: ignore[return-value]

    def slot_port(self, slot: str) -> int:
        return self.blue_port if slot == "blue" else self.green_port

    def running_slots(self) -> list[str]:
        """Slots whose app process is alive, per the stand-in's pid files."""
        alive = []
        for slot in SLOTS:
            try:
                pid = int((self.root / f"slot-{slot}.pid").read_text())
                if "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text():
                    alive.append(slot)
            except (OSError, ValueError):
                pass
        return alive

    def log_lines(self) -> list[dict[str, str]]:
        lines = self.deploy_log.read_text().splitlines() if self.deploy_log.exists() else []
        return [dict(field.split("=", 1) for field in line.split()[1:]) for line in lines]

    def log_results(self) -> list[str]:
        return [line["result"] for line in self.log_lines()]

    def assert_serving(self, release: str) -> None:
        """The release answers through nginx, is current and live in the state file, and only its slot runs."""
        assert self.health() == (200, release), (self.health(), self.live(), self.state())
        assert self.live() == release
        assert (self.app_dir / "releases" / release / ".devprod-complete").is_file()
        state = self.state()
        assert state and state[1] == release, state
        assert self.running_slots() == [state[0]], (self.running_slots(), state)
        assert f"127.0.0.1:{self.slot_port(state[0])};" in self.upstream.read_text()

    def stop(self) -> None:
        for slot in SLOTS:
            subprocess.run([str(SYSTEMCTL), "stop", f"devprod-app@{slot}"], env=self.env(), check=False)
        self.stop_nginx()
