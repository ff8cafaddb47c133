"""Zero-downtime deploys under load: scripts/deploy.sh behind a real nginx, measured.

The same load as tests/test_zero_downtime.py, for longer: 6 clients polling
/health through nginx and 2 clients on /slow (2 s), for the whole run, while
deploy.sh deploys and rolls back releases of the fixture app (which takes 1 s
to start), including releases that fail their gate (500), crash after start,
hang or redirect. Between runs the load goes on for STEADY seconds: the
steady state the switch latency is compared with.

Starts moto's S3 server and a root-started nginx on loopback ports (needs
root, as the tests do). Asserts nothing; its last line is

    requests=<n> failed=<n> deploys=<n> p99_ms_steady=<x> p99_ms_during_switch=<y>

where `during_switch` counts the /health requests that started while a run
that changed the live release was going on (start of the new slot to the old
slot's stop), and `steady` those that started while no run was.

    .venv/bin/python benchmarks/zero_downtime.py [rounds]     (a round is 11 runs; default 2)
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from tests.conftest import VENV_BIN, free_port, wait_for_http  # noqa: E402
from tests.deploy_host import NGINX, Host, ensure_app_user, sha  # noqa: E402
from tests.test_zero_downtime import Load, check_slow_requests  # noqa: E402

STEADY = 1.5


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def plan(host: Host, rounds: int) -> list[tuple[str, str, int]]:
    """Per round: 5 deploys, 2 rollbacks, 4 releases that must fail their gate."""
    failing = {21: "error", 22: "crash", 23: "hang", 24: "redirect"}
    for n, mode in failing.items():
        host.publish(sha(n), mode)
    runs: list[tuple[str, str, int]] = []
    for r in range(rounds):
        good = [sha(100 + 5 * r + i) for i in range(5)]
        for release in good:
            host.publish(release)
        runs += [("deploy", good[0], 0), ("deploy", sha(21), 11), ("deploy", good[1], 0), ("rollback", "", 0),
                 ("deploy", sha(22), 11), ("deploy", good[2], 0), ("deploy", sha(23), 11), ("deploy", good[3], 0),
                 ("rollback", "", 0), ("deploy", sha(24), 11), ("deploy", good[4], 0)]
    return runs


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0")
    nginx = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {int(memory) // 1024 // 1024} GiB, {platform.platform()}, "
            f"python {platform.python_version()}, {nginx}")


@contextlib.contextmanager
def moto_workdir() -> Iterator[tuple[Path, dict[str, str]]]:
    """moto's server on a free port and a world-readable scratch folder; (folder, AWS CLI env)."""
    port = free_port()
    moto = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for_http(endpoint + "/moto-api/")
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp).chmod(0o755)  # the app user reads releases from here
            yield Path(tmp), {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                              "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1",
                              "AWS_CONFIG_FILE": f"{tmp}/c", "AWS_SHARED_CREDENTIALS_FILE": f"{tmp}/k"}
    finally:
        moto.terminate()
        moto.wait()


def main(rounds: int) -> None:
    ensure_app_user()
    print(machine())
    began = time.monotonic()
    with moto_workdir() as (tmp, env):
        host = Host(tmp, env, start_delay=1.0)
        settings = {"HEALTH_TIMEOUT": "3", "DRAIN_TIMEOUT": "10", "KEEP_RELEASES": "50"}
        try:
            host.publish(sha(1))
            assert host.run("deploy", sha(1), **settings).returncode == 0
            runs = plan(host, rounds)
            timeline, results = [], []
            with Load(host) as load:
                time.sleep(STEADY)
                for action, release, expected in runs:
                    before = host.state()[1]
                    started = time.monotonic()
                    result = host.run(action, release, **settings)
                    timeline.append((started, time.monotonic(), before, host.state()[1]))
                    results.append((action, release[:7] or "(prev)", result.returncode, expected))
                    time.sleep(STEADY)
        finally:
            host.stop()

    unexpected = [r for r in results if r[2] != r[3]]
    fast = [r for r in load.records if r[0] == "fast"]
    switching = [run for run in timeline if run[2] != run[3]]
    during = [(r[2] - r[1]) * 1000 for r in fast if any(s <= r[1] <= e for s, e, _, _ in switching)]
    steady = [(r[2] - r[1]) * 1000 for r in fast if not any(s <= r[1] <= e for s, e, _, _ in timeline)]
    durations = sorted(e - s for s, e, old, new in switching)
    try:
        straddled = check_slow_requests(load, timeline)
        slow_check = f"every slow request answered 200 by the release live when it started; {straddled} outlived their switch"
    except AssertionError as exc:
        slow_check = f"slow requests: FAILED {exc}"
    print(f"runs: {len(runs)} ({len(switching)} switched the live release, {sum(1 for r in results if r[3] == 11)} "
          f"refused at the gate); unexpected exit codes: {unexpected or 'none'}")
    print(f"switching run duration: median {durations[len(durations) // 2]:.2f}s, max {durations[-1]:.2f}s; "
          f"requests during switches {len(during)}, steady {len(steady)}; {slow_check}")
    print(f"whole benchmark: {time.monotonic() - began:.0f}s")
    print(f"requests={len(load.records)} failed={len(load.failed())} deploys={len(runs)} "
          f"p99_ms_steady={p99(steady):.1f} p99_ms_during_switch={p99(during):.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
