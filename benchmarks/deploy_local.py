"""Deploy and rollback timings of scripts/deploy.sh against the fixture app, in one run.

Starts moto's S3 server on 127.0.0.1, deploys release 1, then measures:
  - deploy of release 2: wall time of deploy.sh, and time until /health reports it
  - rollback to release 1: the same
  - failed requests of a client polling /health every 20 ms during each
plus the fixture app's own start time (process start to first 200), as the
baseline the targets are stated against. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/deploy_local.py [rounds]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.conftest import VENV_BIN, free_port, wait_for_http  # noqa: E402
from tests.test_deploy_script import Host, sha  # noqa: E402


class Poller(threading.Thread):
    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.ok, self.failed, self.running = url, 0, 0, True

    def run(self) -> None:
        while self.running:
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    self.ok += response.status == 200
            except OSError:
                self.failed += 1
            time.sleep(0.02)


def timed(host: Host, action: str, release: str) -> tuple[float, int, int]:
    poller = Poller(f"http://127.0.0.1:{host.port}/health")
    poller.start()
    started = time.perf_counter()
    result = host.run(action, release, HEALTH_PASSES="1", HEALTH_INTERVAL="0.05")
    elapsed = time.perf_counter() - started
    poller.running = False
    poller.join()
    assert result.returncode == 0, result.stderr
    return elapsed, poller.failed, poller.ok


def app_start_time(host: Host) -> float:
    started = time.perf_counter()
    subprocess.run([str(ROOT / "tests/fixtures/bin/systemctl"), "restart", "app"], env=host.env(), check=True)
    wait_for_http(f"http://127.0.0.1:{host.port}/health", timeout=10)
    return time.perf_counter() - started


def main(rounds: int) -> None:
    port = free_port()
    moto = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for_http(endpoint + "/moto-api/")
        with tempfile.TemporaryDirectory() as tmp:
            env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "eu-central-1", "AWS_CONFIG_FILE": f"{tmp}/c", "AWS_SHARED_CREDENTIALS_FILE": f"{tmp}/k"}
            host = Host(Path(tmp), env)
            try:
                for n in (1, 2):
                    host.publish(sha(n))
                assert host.run("deploy", sha(1)).returncode == 0
                starts, deploys, rollbacks = [], [], []
                for _ in range(rounds):
                    starts.append(app_start_time(host))
                    deploys.append(timed(host, "deploy", sha(2)))
                    rollbacks.append(timed(host, "rollback", sha(1)))
            finally:
                host.stop()
    finally:
        moto.terminate()
        moto.wait()

    def row(name: str, samples: list[tuple[float, int, int]]) -> None:
        times = [s[0] for s in samples]
        print(f"{name:<9} median {statistics.median(times):5.2f}s  max {max(times):5.2f}s  "
              f"failed polls median {statistics.median(s[1] for s in samples):.0f} "
              f"(of ~{statistics.median(s[1] + s[2] for s in samples):.0f}, every 20 ms)")

    print(f"rounds: {rounds}; app start (restart to first 200): median {statistics.median(starts):.2f}s")
    row("deploy", deploys)
    row("rollback", rollbacks)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
