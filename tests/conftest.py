"""Shared fixtures: the repository, the dev stack's raw config, and a plan runner."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from devprod.plan import Plan, load_stack_raw, plan_stack

ROOT = Path(__file__).resolve().parent.parent
# The suite's own stack files: the live Pulumi.<stack>.yaml are the team's data.
STACKS = ROOT / "tests" / "stacks"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def stack_project(tmp_path_factory) -> Path:
    """A project folder: the repository's program with the suite's own stack files."""
    folder = tmp_path_factory.mktemp("project")
    for stack in ("dev", "prod"):
        write_stack(folder, stack, (STACKS / f"Pulumi.{stack}.yaml").read_text())
    return folder


@pytest.fixture(scope="session")
def _dev_raw() -> dict[str, Any]:
    raw, _ = load_stack_raw(STACKS, "dev")
    return raw


@pytest.fixture
def dev_raw(_dev_raw) -> dict[str, Any]:
    """A deep copy of the suite's dev stack config, which a test may change."""
    return copy.deepcopy(_dev_raw)


@pytest.fixture(scope="session")
def dev_plan(stack_project) -> Plan:
    return plan_stack(stack_project, "dev")


@pytest.fixture(scope="session")
def prod_plan(stack_project) -> Plan:
    return plan_stack(stack_project, "prod")


@pytest.fixture
def prod_raw() -> dict[str, Any]:
    """The suite's prod stack config, which a test may change."""
    raw, _ = load_stack_raw(STACKS, "prod")
    return raw


def plan_of(raw: dict[str, Any], stack: str = "prod", account: str | None = None) -> Plan:
    """Plan a (changed) raw config through the same program, without a stack file.

    `account` is the account the mocked credentials belong to (default: the
    config's accountId, else the placeholder account).
    """
    from components.config import parse_stack_config
    from components.program import build
    from devprod.plan import PLACEHOLDER_ACCOUNT, record

    config = parse_stack_config(raw, project="devprod", stack=stack)
    account = account or config.account_id or PLACEHOLDER_ACCOUNT
    plan = record(lambda: build(config), project="devprod", stack=stack, account=account)
    plan.config = config
    return plan


def write_stack(folder: Path, stack: str, text: str) -> Path:
    """A throwaway project (program, components, scripts linked from the repo)."""
    for name in ("__main__.py", "Pulumi.yaml", "components", "scripts"):
        target = folder / name
        if not target.exists():
            target.symlink_to(ROOT / name)
    path = folder / f"Pulumi.{stack}.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------ moto server

import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

VENV_BIN = Path(sys.executable).parent


_HANDED_OUT: set[int] = set()
# Below the kernel's ephemeral range (32768-60999 here): a port handed out here is not free only
# until the server binds it, and the load tests' thousands of client connections take their local
# ports from that range. A block of its own per xdist worker, so two workers never pick the same.
PORT_BLOCK = 1500


def free_port() -> int:
    """A port free now, below the ephemeral range, in this worker's block, and never handed out
    before in this process (a fresh-clone run once got BLUE_PORT == GREEN_PORT from bind(0))."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    base = 20000 + (int(worker) % 8 if worker.isdigit() else 0) * PORT_BLOCK
    for port in range(base, base + PORT_BLOCK):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port left in {base}-{base + PORT_BLOCK - 1}")


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:  # noqa: BLE001 - any answer or refusal: keep polling until the deadline
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's AWS server on 127.0.0.1: a real HTTP endpoint, one per test worker."""
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(endpoint + "/moto-api/")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws_env(moto_endpoint, tmp_path) -> dict[str, str]:
    """Environment for the real AWS CLI and boto3 against moto; no real credentials."""
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }
    return env


# ------------------------------------------------------------------ simulated production hosts


@pytest.fixture(scope="session")
def app_user() -> str:
    """The unprivileged app user the deploy tests create (they run as root, as CI does)."""
    from tests.deploy_host import ensure_app_user

    try:
        return ensure_app_user()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def hosts_dir(app_user):
    """Root-owned, world-traversable parent for simulated hosts (pytest's tmp dirs are 0700)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="devprod-hosts-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
