"""The production host's proxy metrics, run for real: scripts/host/devprod-proxy-metrics.py
as a process, against a real nginx writing the devprod_proxy log format taken from
scripts/deploy.sh, publishing to moto's CloudWatch server."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from devprod import contracts
from tests.aws_clients import REGION, client
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "host" / "devprod-proxy-metrics.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OK = '127.0.0.1 [2026-11-28T08:00:00+00:00] "GET / HTTP/1.1" 200 12 0.003 upstream=127.0.0.1:9001 200 "curl/8"\n'
FAIL = '10.0.1.9 [2026-11-28T08:00:01+00:00] "GET /x HTTP/1.1" 502 150 0.001 upstream=127.0.0.1:9001 502 "-"\n'


def load_script():
    spec = importlib.util.spec_from_file_location("proxy_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


metrics = load_script()


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_the_script_names_equal_the_contract():
    """The script cannot import devprod on the host; its copies must not drift."""
    for name in ("PROXY_METRICS_NAMESPACE", "PROXY_REQUESTS", "PROXY_SERVER_ERRORS", "PROXY_UNHEALTHY"):
        assert getattr(metrics, name) == getattr(contracts, name), name
    assert "import devprod" not in SCRIPT.read_text() and "from devprod" not in SCRIPT.read_text()


def test_the_script_is_executable_python_3_9_and_imports_only_what_it_uses():
    """No flake8 in the toolchain: the host scripts' lint is this (AL2023's python is 3.9)."""
    assert os.access(SCRIPT, os.X_OK)
    tree = ast.parse(SCRIPT.read_text(), feature_version=(3, 9))
    imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names} - {"annotations"}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert imported - used == set()
    third_party = {(a.name.split(".")[0]) for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    third_party |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert third_party - set(sys.stdlib_module_names) == {"boto3", "botocore"}
    too_long = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno >= 60]
    assert too_long == []


# ------------------------------------------------------------ unit cases: reading the log


def test_first_run_starts_at_the_end_then_counts_new_complete_lines(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(OK * 5)
    counts, state = metrics.read_log(str(log), None)
    assert counts["requests"] == 0 and state["offset"] == log.stat().st_size  # history is not this minute's
    with log.open("a") as handle:
        handle.write(OK + FAIL + FAIL[:20])  # nginx is mid-way through a line
    counts, state = metrics.read_log(str(log), state)
    assert (counts["requests"], counts["errors"]) == (2, 1)
    assert state["offset"] == log.stat().st_size - 20  # the partial line waits
    with log.open("a") as handle:
        handle.write(FAIL[20:])
    counts, state = metrics.read_log(str(log), state)
    assert (counts["requests"], counts["errors"], state["offset"]) == (1, 1, log.stat().st_size)


def test_rotation_finishes_the_old_file_then_reads_the_new_from_zero(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(OK)
    _, state = metrics.read_log(str(log), None)
    with log.open("a") as handle:
        handle.write(FAIL)  # logged after the last run, before logrotate moved the file
    log.rename(tmp_path / "access.log.1")
    log.write_text(OK + OK)
    counts, new = metrics.read_log(str(log), state)
    assert (counts["requests"], counts["errors"]) == (3, 1)
    assert new == {"inode": log.stat().st_ino, "offset": len(OK) * 2}


def test_a_new_inode_without_the_old_file_and_a_truncated_log_start_at_zero(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(OK * 3)
    counts, state = metrics.read_log(str(log), {"inode": log.stat().st_ino + 1, "offset": 999})
    assert counts["requests"] == 3 and state["offset"] == len(OK) * 3
    log.write_text(FAIL)  # copytruncate, then one line: shorter than the saved offset
    counts, state = metrics.read_log(str(log), state)
    assert (counts["requests"], counts["errors"], state["offset"]) == (1, 1, len(FAIL))


def test_malformed_lines_are_skipped_and_counted_apart(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(b"garbage\n" + b"\xff\xfe not utf-8\n" + OK.encode()
                    + b'127.0.0.1 [t] "GET / HTTP/1.1" 2000 1 0.1 upstream=- - "-"\n')
    counts, _ = metrics.read_log(str(log), {"inode": log.stat().st_ino, "offset": 0})
    assert counts == {"requests": 1, "errors": 0, "malformed": 3}


def test_the_probe_is_not_traffic_unless_it_comes_from_outside(tmp_path):
    log = tmp_path / "access.log"
    probe = '127.0.0.1 [t] "GET /health HTTP/1.1" 200 2 0.001 upstream=x 200 "devprod-proxy-metrics"\n'
    spoofed = probe.replace("127.0.0.1", "10.0.1.7").replace(" 200 2", " 500 2")
    log.write_text(probe + spoofed)
    counts, _ = metrics.read_log(str(log), {"inode": log.stat().st_ino, "offset": 0})
    assert (counts["requests"], counts["errors"]) == (1, 1)


def test_a_missing_log_counts_nothing_and_a_bad_state_is_ignored(tmp_path, capsys):
    assert metrics.read_log(str(tmp_path / "none.log"), None) == ({"requests": 0, "errors": 0, "malformed": 0}, None)
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    assert metrics.load_state(str(bad)) is None
    bad.write_text('{"inode": "x", "offset": 1}')
    assert metrics.load_state(str(bad)) is None
    assert "ignoring" in capsys.readouterr().err


def test_an_unreachable_health_url_is_one_unhealthy_host():
    assert metrics.unhealthy(f"http://127.0.0.1:{free_port()}/health") == 1


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    common = ["--log", "x", "--state", str(tmp_path / "s.json")]
    for args, needle in ((["--stack", "prod", "--health-url", "file:///etc/shadow"], "--health-url 'file:///etc/shadow'"),
                         (["--stack", "prod;rm", "--health-url", "http://x/"], "--stack 'prod;rm'"),
                         (["--health-url", "http://x/"], "--stack")):
        result = run(*common, *args)
        assert result.returncode == 2, result
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_failed_publish_keeps_the_offset_so_no_count_is_lost(tmp_path):
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    log.write_text(OK + FAIL)
    saved = {"inode": log.stat().st_ino, "offset": 0}
    state.write_text(json.dumps(saved))
    result = run("--stack", "prod", "--log", str(log), "--health-url", f"http://127.0.0.1:{free_port()}/",
                 "--state", str(state), "--region", REGION, "--endpoint-url", f"http://127.0.0.1:{free_port()}",
                 env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    assert result.returncode == 1
    assert result.stderr.startswith("devprod-proxy-metrics: publishing to CloudWatch failed")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert json.loads(state.read_text()) == saved


def test_the_state_is_written_by_rename_and_private(tmp_path):
    state = tmp_path / "state.json"
    metrics.save_state(str(state), {"inode": 1, "offset": 2})
    assert json.loads(state.read_text()) == {"inode": 1, "offset": 2}
    assert state.stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind


# ------------------------------------------------------------ a real nginx and moto's CloudWatch


def log_format() -> str:
    """The log_format line exactly as scripts/deploy.sh writes it."""
    line = next(l for l in (ROOT / "scripts" / "deploy.sh").read_text().splitlines() if "log_format devprod_proxy" in l)
    return subprocess.run(["bash", "-c", line.strip()], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def nginx(tmp_path):
    assert Path(NGINX).is_file(), "nginx is missing: `make system-deps` installs it (Debian package nginx)"
    if os.geteuid() != 0:
        pytest.skip("a root-started nginx master, as on the host: run the suite as root")
    port, closed = free_port(), free_port()
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {tmp_path}/tmp/body;
    proxy_temp_path {tmp_path}/tmp/proxy;
    fastcgi_temp_path {tmp_path}/tmp/fastcgi;
    uwsgi_temp_path {tmp_path}/tmp/uwsgi;
    scgi_temp_path {tmp_path}/tmp/scgi;
    {log_format()}
    server {{
        listen 127.0.0.1:{port};
        access_log {tmp_path}/devprod-access.log devprod_proxy;
        location = /health {{ return 200 "ok"; }}
        location = /sick {{ return 503; }}
        location = /moved {{ return 301 /health; }}
        location / {{ proxy_pass http://127.0.0.1:{closed}; }}
    }}
}}
""")
    subprocess.run([NGINX, "-c", str(conf)], check=True, capture_output=True, timeout=10)
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "devprod-access.log"
    finally:
        pid = int((tmp_path / "nginx.pid").read_text())
        os.kill(pid, signal.SIGTERM)


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def sums(cloudwatch, stack: str) -> dict[str, float]:
    now = datetime.now(timezone.utc)
    found = {}
    for name in (contracts.PROXY_REQUESTS, contracts.PROXY_SERVER_ERRORS, contracts.PROXY_UNHEALTHY):
        points = cloudwatch.get_metric_statistics(
            Namespace=contracts.proxy_metrics_namespace(stack), MetricName=name, Dimensions=[{"Name": "Stack", "Value": stack}],
            StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=1), Period=60, Statistics=["Sum"])
        found[name] = sum(p["Sum"] for p in points["Datapoints"])
    return found


def test_real_nginx_log_counted_and_published_to_cloudwatch(nginx, aws_env, tmp_path):
    base, log = nginx
    state = tmp_path / "state.json"
    args = ["--stack", "shop-prod", "--log", str(log), "--health-url", f"{base}/health",
            "--state", str(state), "--region", REGION, "--endpoint-url", aws_env["AWS_ENDPOINT_URL"]]
    env = {k: v for k, v in aws_env.items() if k != "AWS_ENDPOINT_URL"}
    assert get(f"{base}/health") == 200  # before the first run: not this minute's traffic
    first = run(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert [get(f"{base}/health"), get(f"{base}/app"), get(f"{base}/sick"), get(f"{base}/app")] == [200, 502, 503, 502]
    time.sleep(0.2)  # nginx writes its log line after the answer
    second = run(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "shop-prod requests=4 5xx=3 unhealthy=0" in second.stdout
    cloudwatch = client("cloudwatch", aws_env)
    assert sums(cloudwatch, "shop-prod") == {"Requests": 4.0, "ServerErrors": 3.0, "UnhealthyHosts": 0.0}
    listed = cloudwatch.list_metrics(Namespace=contracts.proxy_metrics_namespace("shop-prod"))["Metrics"]
    assert {m["MetricName"] for m in listed} == {"Requests", "ServerErrors", "UnhealthyHosts"}
    assert all(m["Dimensions"] == [{"Name": "Stack", "Value": "shop-prod"}] for m in listed)
    # the probe's own request was logged but is not traffic; the next run sees only it
    third = run(*(a if a != f"{base}/health" else f"{base}/sick" for a in args), env=env)
    assert third.returncode == 0, third.stderr
    assert "requests=0 5xx=0 unhealthy=1" in third.stdout
    assert sums(cloudwatch, "shop-prod")["UnhealthyHosts"] == 1.0
    # a redirect is not health (it could point anywhere): the probe does not follow it
    assert metrics.unhealthy(f"{base}/moved") == 1 and metrics.unhealthy(f"{base}/health") == 0


def test_without_boto3_it_says_what_to_install(tmp_path):
    """AL2023's python3 may lack boto3; the host's own python here has none either."""
    host_python = Path("/usr/bin/python3")
    if not host_python.exists() or subprocess.run([str(host_python), "-c", "import boto3"],
                                                  capture_output=True).returncode == 0:
        pytest.skip("needs a python3 without boto3")
    log = tmp_path / "access.log"
    log.write_text(OK)
    result = subprocess.run([str(host_python), str(SCRIPT), "--stack", "prod", "--log", str(log), "--health-url",
                             f"http://127.0.0.1:{free_port()}/", "--state", str(tmp_path / "s.json")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == "devprod-proxy-metrics: boto3 is not installed (dnf install python3-boto3)\n"


def test_a_bug_is_one_line_with_its_own_exit_code(tmp_path, monkeypatch, capsys):
    def broken(path, state):
        raise TypeError("boom")

    monkeypatch.setattr(metrics, "read_log", broken)
    code = metrics.main(["--stack", "prod", "--log", "x", "--health-url", "http://127.0.0.1:1/",
                         "--state", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 70 and err == "devprod-proxy-metrics: unexpected error, a bug (TypeError): boom\n"
