"""Zero downtime, through a real nginx: load during deploys and rollbacks, the fault matrix, D11-D19.

Every test here runs scripts/deploy.sh for real against a simulated host
(tests/deploy_host.py): a root-started nginx on free loopback ports, the
fixture app in two slots (started by the systemctl stand-in as the app user),
releases in moto's S3 server fetched by the real AWS CLI. The fixture app
takes START_DELAY seconds (1 s here) to listen and serves /slow in 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from tests.deploy_host import Host, get, sha

pytestmark = pytest.mark.slow


@pytest.fixture
def host(hosts_dir, aws_env):
    h = Host(hosts_dir, aws_env, start_delay=1.0)
    yield h
    h.stop()
    shutil.rmtree(h.root, ignore_errors=True)


def deployed(host: Host, release: str, **extra: str) -> None:
    if release not in host.published:
        host.publish(release)
    result = host.run("deploy", release, **extra)
    assert result.returncode == 0, result.stderr
    host.assert_serving(release)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------ load


class Load:
    """Clients hammering nginx for the whole run: `fast` on /health, `slow` on /slow (2 s).

    Every request is recorded as (kind, started, ended, status, release, error).
    """

    def __init__(self, host: Host, fast: int = 6, slow: int = 2, pause: float = 0.01):
        self.host, self.pause, self.running = host, pause, True
        self.records: list[tuple[str, float, float, int, str | None, str | None]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=("fast",), daemon=True) for _ in range(fast)]
        self.threads += [threading.Thread(target=self.client, args=("slow",), daemon=True) for _ in range(slow)]

    def client(self, kind: str) -> None:
        url = self.host.url("/health" if kind == "fast" else "/slow?s=2")
        while self.running:
            started = time.monotonic()
            status, body = get(url, timeout=30)
            with self.lock:
                self.records.append((kind, started, time.monotonic(), status, body.get("release"),
                                     None if status == 200 else f"HTTP {status}" if status else "no answer"))
            time.sleep(self.pause)

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(timeout=40)

    def failed(self) -> list[tuple]:
        return [r for r in self.records if r[3] != 200]


def run_under_load(host: Host, plan: list[tuple[str, str, int]], load: Load) -> list[tuple[float, float, str, str]]:
    """Runs each (action, release, expected exit) and returns (started, ended, live before, live after) per run."""
    timeline = []
    for action, release, expected in plan:
        before = host.state()[1]
        started = time.monotonic()
        # A release that must fail its gate fails it whatever the deadline: a short one keeps the test quick.
        result = host.run(action, release, HEALTH_TIMEOUT="2" if expected == 11 else "10")
        ended = time.monotonic()
        assert result.returncode == expected, (action, release, result.stderr)
        timeline.append((started, ended, before, host.state()[1]))
    return timeline


def load_plan(host: Host) -> list[tuple[str, str, int]]:
    """20 runs: deploys, rollbacks, and releases that fail their gate (500, 302), crash after start, or hang."""
    for n in range(1, 8):
        host.publish(sha(n))
    host.publish(sha(11), "error")
    host.publish(sha(12), "crash")
    host.publish(sha(13), "hang")
    host.publish(sha(14), "redirect")
    return [
        ("deploy", sha(2), 0), ("deploy", sha(11), 11), ("deploy", sha(3), 0), ("rollback", "", 0),
        ("deploy", sha(12), 11), ("deploy", sha(4), 0), ("deploy", sha(13), 11), ("rollback", "", 0),
        ("deploy", sha(5), 0), ("deploy", sha(14), 11), ("rollback", sha(2), 0), ("deploy", sha(6), 0),
        ("deploy", sha(11), 11), ("rollback", "", 0), ("deploy", sha(7), 0), ("deploy", sha(12), 11),
        ("rollback", sha(5), 0), ("deploy", sha(13), 11), ("deploy", sha(7), 0), ("rollback", "", 0),
    ]


def check_slow_requests(load: Load, timeline: list[tuple[float, float, str, str]]) -> int:
    """Every slow request answered 200 from the release live when it started (either one, if it
    started while a run was switching). Returns how many were still running on the old release
    when nginx already answered from the new one: those the drain let finish."""
    straddling = 0
    for kind, started, ended, status, release, _ in load.records:
        if kind != "slow":
            continue
        assert status == 200, (started, status)
        during = [run for run in timeline if run[0] <= started <= run[1]]
        if during:
            assert release in (during[0][2], during[0][3]), (release, during[0])
        else:
            before = [run for run in timeline if run[1] < started]
            assert release == (before[-1][3] if before else timeline[0][2]), (release, started)
    for run_started, run_ended, old, new in timeline:
        if old == new:
            continue
        switched = min((r[1] for r in load.records if r[0] == "fast" and r[4] == new and r[1] >= run_started), default=None)
        assert switched is not None and switched <= run_ended, (old, new)
        straddling += sum(1 for r in load.records
                          if r[0] == "slow" and r[4] == old and r[1] < switched < r[2])
    return straddling


def test_no_request_fails_during_deploys_and_rollbacks_under_load(host):
    """The issue's proof: 8 clients for the whole run, 20 deploys and rollbacks (7 of them releases
    that fail their gate, crash after start, hang or redirect): 0 failed requests, and every slow
    request started before a switch completes with 200 from the release that accepted it."""
    deployed(host, sha(1))
    plan = load_plan(host)
    host_env = {"DRAIN_TIMEOUT": "10", "KEEP_RELEASES": "20"}
    host.run = _with_settings(host.run, host_env)  # type: ignore[method-assign]
    with Load(host) as load:
        timeline = run_under_load(host, plan, load)
        time.sleep(0.2)
    failed = load.failed()
    assert failed == [], f"{len(failed)} of {len(load.records)} requests failed: {failed[:5]}"
    assert len(load.records) > 1000, len(load.records)
    assert check_slow_requests(load, timeline) >= 3
    host.assert_serving(sha(5))  # the last run rolled back from 7
    failures = [line for line in host.log_lines()[1:] if line["result"] != "success"]
    assert len(failures) == 7 and {line["result"] for line in failures} == {"failed-health-gate"}, failures


def _with_settings(run, settings: dict[str, str]):
    def wrapped(action: str = "deploy", release: str = "", **extra: str):
        return run(action, release, **{**settings, **extra})
    return wrapped


# ------------------------------------------------------------------ the fault matrix, through nginx


def test_invalid_nginx_configuration_switches_nothing(host):
    deployed(host, sha(1))
    (host.nginx_dir / "conf.d" / "broken.conf").write_text("this is not nginx configuration;\n")
    host.publish(sha(2))
    upstream = host.upstream.read_text()
    result = host.run("deploy", sha(2))
    assert result.returncode == 11 and "nginx -t refused the configuration" in result.stderr, result.stderr
    assert host.log_results()[-1] == "failed-proxy-switch"
    assert host.upstream.read_text() == upstream
    host.assert_serving(sha(1))


def test_nginx_down_at_deploy_time_switches_nothing(host):
    deployed(host, sha(1))
    host.stop_nginx()
    host.publish(sha(2))
    result = host.run("deploy", sha(2))
    assert result.returncode == 11 and "nginx is not running" in result.stderr, result.stderr
    assert host.log_results()[-1] == "failed-nginx-down"
    assert host.running_slots() == ["blue"] and host.state()[1] == sha(1)
    host.start_nginx()
    host.assert_serving(sha(1))
    deployed(host, sha(2))


def test_a_release_healthy_on_its_slot_but_not_through_nginx_is_switched_back(host):
    """D4: the confirmation through nginx fails after the switch: nginx goes back to the old slot,
    which was never stopped, and the run still fails (exit 10)."""
    deployed(host, sha(1))
    host.publish(sha(2), "proxied-error")
    result = host.run("deploy", sha(2), HEALTH_TIMEOUT="3")
    assert result.returncode == 10 and "answers on its slot but not through nginx" in result.stderr, result.stderr
    assert host.log_results()[-1] == f"failed-rolled-back-to-{sha(1)}"
    host.assert_serving(sha(1))
    assert host.state() == ("blue", sha(1), "-")


@pytest.mark.parametrize("moment", ["switched", "committed"])
def test_sigkill_between_the_switch_and_the_old_slots_stop_is_recovered_by_the_next_run(host, moment):
    """`switched`: nginx routes to the new slot, nothing recorded yet; `committed`: the state file
    names the new slot, the old one is still draining a slow request. Either way the next run ends
    with one live slot: the recorded one."""
    deployed(host, sha(1))
    host.publish(sha(2))
    green = f"127.0.0.1:{host.slot_port('green')};"
    slow: dict = {}
    if moment == "committed":
        threading.Thread(target=lambda: slow.update(answer=get(host.url("/slow?s=3"), timeout=20)), daemon=True).start()
        time.sleep(0.3)
    # Twenty passes make the confirmation through nginx last two seconds: the `switched` window.
    proc = host.start("deploy", sha(2), HEALTH_PASSES="20" if moment == "switched" else "2", HEALTH_TIMEOUT="10")
    if moment == "switched":
        wait_until(lambda: green in host.upstream.read_text(), what="the switch")
        time.sleep(0.3)
    else:
        wait_until(lambda: host.state()[1] == sha(2), what="the commit")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert sorted(host.running_slots()) == ["blue", "green"]  # both slots up: what the next run must repair
    live = sha(1) if moment == "switched" else sha(2)
    result = host.run("deploy", live)
    assert result.returncode == 0 and host.log_results()[-1] == "noop-healthy", result.stderr
    host.assert_serving(live)
    if moment == "committed":
        wait_until(lambda: "answer" in slow, what="the slow request")
        assert slow["answer"][0] == 200 and slow["answer"][1]["release"] == sha(1), slow


# ------------------------------------------------------------------ D11, D12, D13


def test_an_unexpected_error_is_logged_once_and_exits_16(host):
    host.app_dir.mkdir()
    (host.app_dir / "slots").write_text("a file where a directory belongs\n")
    host.publish(sha(1))
    result = host.run("deploy", sha(1))
    assert result.returncode == 16 and "unexpected error" in result.stderr, result.stderr
    (line,) = host.log_lines()
    assert line["result"].startswith("error-line-") and line["release"] == sha(1), line


@pytest.mark.parametrize("moment", ["install", "gate", "switched"])
def test_sigterm_at_any_point_leaves_the_last_verified_release_serving(host, moment):
    """D12: terminated while the install runs, while a hanging release is gated, or after nginx
    was switched to the new slot (before the confirmation through nginx ends)."""
    deployed(host, sha(1))
    extra: dict[str, str] = {}
    if moment == "install":
        host.publish(sha(2))
        extra["INSTALL_COMMAND"] = f"touch {host.scratch}/installing; sleep 60"
    elif moment == "gate":
        host.publish(sha(2), "hang")
        extra["HEALTH_TIMEOUT"] = "60"
    else:
        host.publish(sha(2))
        extra.update(HEALTH_PASSES="20", HEALTH_TIMEOUT="10")
    proc = host.start("deploy", sha(2), **extra)
    if moment == "install":
        wait_until(lambda: (host.scratch / "installing").exists(), what="the install step")
    elif moment == "gate":
        wait_until(lambda: "green" in host.running_slots(), what="the new slot")
        time.sleep(0.5)
    else:
        wait_until(lambda: f"127.0.0.1:{host.slot_port('green')};" in host.upstream.read_text(), what="the switch")
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 17, stderr
    assert time.monotonic() - started < 8, "the signal was not handled promptly"
    assert "terminated (TERM) while" in stderr
    assert host.log_results() == ["success", "terminated"]
    assert host.log_lines()[-1]["live"] == sha(1)
    host.assert_serving(sha(1))


def test_rollback_after_an_interrupted_deploy_returns_to_the_last_verified_release(host):
    """D13: the deploy of 3 is killed after nginx was switched to it; rollback returns to 2 (the
    last verified), not to 1, and a later rollback goes on to 1."""
    for n in (1, 2):
        deployed(host, sha(n))
    host.publish(sha(3))
    proc = host.start("deploy", sha(3), HEALTH_PASSES="20", HEALTH_TIMEOUT="10")
    wait_until(lambda: sha(3) in host.upstream.read_text(), what="the switch")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    result = host.run("rollback")
    assert result.returncode == 0, result.stderr
    assert host.log_results()[-1] == "recovered"
    host.assert_serving(sha(2))
    result = host.run("rollback")
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(1))


def test_a_port_taken_by_something_else_fails_the_deploy_before_the_switch(host):
    """The gate must know that the release answering is the new one: a stray server on the idle
    slot's port (an old process that survived, another program) stops the deploy."""
    deployed(host, sha(1))
    host.publish(sha(2))
    stray = subprocess.Popen(["python3", "-m", "http.server", str(host.slot_port("green")), "--bind", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(host.slot_port("green")), what="the stray server")
        result = host.run("deploy", sha(2))
    finally:
        stray.terminate()
        stray.wait()
    assert result.returncode == 11 and "is taken by something else" in result.stderr, result.stderr
    host.assert_serving(sha(1))


# ------------------------------------------------------------------ the env (D15, D16)


def ssm_client(aws_env: dict[str, str]):
    return boto3.client("ssm", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="eu-central-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def parameters(aws_env: dict[str, str], values: dict[str, str], path: str | None = None) -> str:
    """Put `values` (name relative to the path, may hold /) under a fresh path, overwriting."""
    ssm = ssm_client(aws_env)
    path = path or f"/devprod/test-{uuid.uuid4().hex[:8]}/app"
    for name, value in values.items():
        ssm.put_parameter(Name=f"{path}/{name}", Value=value, Type="SecureString", Overwrite=True)
    return path


PEM = "-----BEGIN PRIVATE KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEA\nFEATURE=injected\n-----END PRIVATE KEY-----\n"
ODD_VALUES = {
    "QUOTED": '"surrounded by quotes"',
    "SINGLE": "'single' and \"double\"",
    "EDGES": "  edge spaces  ",
    "BACKSLASHES": "C:\\path\\to\\n and \\\\ and \\",
    "TAB": "a\tb",
    "NEWLINE": "line one\nline two",
    "CRLF": "dos\r\nline",
    "PEM": PEM,
    "DOLLAR": "$HOME ${HOME} `id` $(id) %i %%",
    "HASH": "# not a comment ; nor this",
    "UNICODE": "grüße, 日本",
    "EMPTY_LOOKING": "=",
}


def test_parameter_values_reach_the_app_exactly(host, aws_env):
    """D15: through the env file systemd reads (the stand-in parses it as systemd's env-file.c does)."""
    path = parameters(aws_env, ODD_VALUES)
    deployed(host, sha(1), PARAMETER_PATH=path)
    env = get(host.url("/env"))[1]["env"]
    assert {name: env.get(name) for name in ODD_VALUES} == ODD_VALUES
    assert "FEATURE" not in env  # the PEM's lines stay inside its value
    assert list((host.app_dir / ".deploy").glob("tmp.*")) == []  # no copy of the values left behind


@pytest.mark.parametrize("values, message", [
    ({"my-name": "x"}, "'my-name' is not a variable name"),
    ({"1ABC": "x"}, "'1ABC' is not a variable name"),
    ({"a/TOKEN": "x", "b/TOKEN": "y"}, "both become TOKEN"),
    ({"PORT": "80"}, "PORT is set by the unit"),
])
def test_parameters_that_cannot_be_represented_are_refused_before_anything_changes(host, aws_env, values, message):
    deployed(host, sha(1))
    host.publish(sha(2))
    result = host.run("deploy", sha(2), PARAMETER_PATH=parameters(aws_env, values))
    assert result.returncode == 11 and message in result.stderr and "parameters refused" in result.stderr, result.stderr
    assert host.log_results()[-1] == "failed-before-switch"
    host.assert_serving(sha(1))


def test_each_release_runs_with_the_env_it_was_verified_with(host, aws_env):
    """D16: a failed deploy that changed a parameter leaves the live release on its old values;
    rollback restores a release's env; a redeploy of the live release with changed parameters
    rolls it through the idle slot with them, and without changes is a no-op."""
    path = parameters(aws_env, {"FEATURE": "one"})
    deployed(host, sha(1), PARAMETER_PATH=path)
    parameters(aws_env, {"FEATURE": "two"}, path)
    host.publish(sha(2), "error")
    assert host.run("deploy", sha(2), PARAMETER_PATH=path, HEALTH_TIMEOUT="2").returncode == 11
    assert get(host.url("/env"))[1]["env"]["FEATURE"] == "one"
    host.publish(sha(3))
    deployed(host, sha(3), PARAMETER_PATH=path)
    assert get(host.url("/env"))[1]["env"]["FEATURE"] == "two"
    assert host.run("rollback", PARAMETER_PATH=path).returncode == 0
    host.assert_serving(sha(1))
    assert get(host.url("/env"))[1]["env"]["FEATURE"] == "one"  # the env 1 was verified with
    slot = host.state()[0]
    assert host.run("deploy", sha(1), PARAMETER_PATH=path).returncode == 0  # live release, parameters changed
    host.assert_serving(sha(1))
    assert host.state()[0] != slot and host.log_results()[-1] == "success"
    assert get(host.url("/env"))[1]["env"]["FEATURE"] == "two"
    assert host.run("deploy", sha(1), PARAMETER_PATH=path).returncode == 0
    assert host.log_results()[-1] == "noop-healthy"


# ------------------------------------------------------------------ D17, D19


WRAPPER = """#!/bin/bash
# Records whether this program was started holding the deploy lock, then runs the real one.
ls -l /proc/$$/fd | grep -q '/.deploy/lock$' && echo "{name} HOLDS THE LOCK" >> {record} || echo "{name} ok" >> {record}
PATH={path} exec {name} "$@"
"""


def test_no_child_holds_the_lock(host):
    """D17: curl, sleep, systemctl and aws run without the lock's descriptor; a download left
    running by a killed deploy does not block the next one."""
    deployed(host, sha(1))
    host.publish(sha(2))
    wrappers, record = host.root / "wrappers", host.root / "fds"
    wrappers.mkdir()
    real_path = host.env()["PATH"]
    for name in ("curl", "sleep", "systemctl", "aws"):
        (wrappers / name).write_text(WRAPPER.format(name=name, record=record, path=real_path))
        (wrappers / name).chmod(0o755)
    result = host.run("deploy", sha(2), PATH=f"{wrappers}:{real_path}", AWS_CLI=str(wrappers / "aws"))
    assert result.returncode == 0, result.stderr
    seen = set(record.read_text().splitlines())
    assert seen == {"curl ok", "sleep ok", "systemctl ok", "aws ok"}, seen
    # A download that hangs; the deploy is killed (its process alone), the download lives on.
    hang = host.root / "hanging-aws"
    hang.write_text(f"#!/bin/bash\necho $$ > {host.root}/downloading\nexec sleep 60\n")
    hang.chmod(0o755)
    host.publish(sha(3))
    proc = host.start("deploy", sha(3), AWS_CLI=str(hang))
    wait_until(lambda: (host.root / "downloading").exists() and (host.root / "downloading").read_text().strip(),
               what="the download")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    orphan = int((host.root / "downloading").read_text())
    try:
        assert Path(f"/proc/{orphan}").exists()  # still running, and it must not hold the lock
        result = host.run("deploy", sha(3))
        assert result.returncode == 0, result.stderr
        host.assert_serving(sha(3))
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_failed_releases_are_pruned_like_any_other(host):
    """D19: with KEEP_RELEASES=2, failures are counted too; the live and previous ones stay."""
    for n in (1, 2):
        deployed(host, sha(n), KEEP_RELEASES="2")
    for n in (3, 4, 5):
        host.publish(sha(n), "error")
        assert host.run("deploy", sha(n), KEEP_RELEASES="2", HEALTH_TIMEOUT="2").returncode == 11
    kept = sorted(p.name for p in (host.app_dir / "releases").iterdir())
    assert kept == sorted([sha(1), sha(2), sha(4), sha(5)])
    assert sorted(p.name for p in (host.app_dir / ".deploy" / "env").iterdir()) == sorted([sha(1), sha(2)])


# ------------------------------------------------------------------ the proxy's defaults


def test_proxy_defaults_forwarded_headers_no_version_body_limit_access_log(host):
    deployed(host, sha(1), MAX_BODY_MB="1")
    request = urllib.request.Request(host.url("/env"), headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(request, timeout=5) as response:
        server, slot, release = (response.headers[h] for h in ("Server", "X-Devprod-Slot", "X-Devprod-Release"))
        headers = json.loads(response.read())["headers"]
    assert server == "nginx", server  # server_tokens off: no version
    assert (slot, release) == ("blue", sha(1))  # what `devprod health` shows
    assert headers["X-Forwarded-For"] == "127.0.0.1" and headers["X-Forwarded-Proto"] == "http", headers
    assert headers["X-Real-IP"] == "127.0.0.1"
    big = urllib.request.Request(host.url("/upload"), data=b"x" * (2 * 1024 * 1024), method="POST")
    try:
        urllib.request.urlopen(big, timeout=5)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 413
    small = urllib.request.Request(host.url("/upload"), data=b"x" * 1000, method="POST")
    with urllib.request.urlopen(small, timeout=5) as response:
        assert response.status == 200
    log = host.access_log.read_text()
    assert '"GET /env HTTP/1.1" 200' in log and f"upstream=127.0.0.1:{host.blue_port}" in log, log
    assert host.site.stat().st_uid == 0 and host.site.stat().st_mode & 0o777 == 0o644
