"""Three simulated production hosts behind a local load balancer, for rolling deploys.

Each host is a tests/deploy_host.py Host (its own APP_DIR, its own root-started
nginx proxy on its own loopback port, its own two slot ports, deploy log and
state), on which scripts/deploy.sh runs for real. In front of them, one more
root-started nginx balances round-robin over the three hosts' proxies, as the
Application Load Balancer does in production. LocalRunner is the Runner that
devprod/rollout.py drives: it does on the local hosts what the SSM document
does on real ones (runs deploy.sh with ACTION, RELEASE and CHECKSUM in its
environment). Load is several clients hammering the balancer for the whole
rollout, recording which host answered each request and with what.

Used by tests/test_rolling_e2e.py and benchmarks/rolling_deploy.py.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devprod.rollout import HostResult
from tests.conftest import free_port
from tests.deploy_host import DEPLOY, NGINX, NGINX_CONF, Host

HOST_NAMES = ("host1", "host2", "host3")

# The balancer is kept plain on purpose: what keeps requests whole during a
# rollout must be each host's own slot switch, not the balancer hiding errors.
# So `proxy_next_upstream off` (an answer that failed is never retried on
# another host: a failure reaches the client and is counted), every host stays
# in rotation unless the rollout takes it out (LocalTraffic, as devprod.ops.
# AlbTraffic deregisters an ALB's target), and a fresh connection per request
# (nginx's default towards an upstream: HTTP/1.0, no keepalive). An ALB does
# keep connections to its targets: see `keepalive`.
LB_SITE = """\
log_format lb '$msec "$request" $status upstream=$upstream_addr $upstream_status';
upstream devprod_fleet {{
{servers}{keepalive}}}
server {{
    listen 127.0.0.1:{port};
    access_log {root}/nginx/access.log lb;
    add_header X-Lb-Upstream $upstream_addr always;
    location / {{
        proxy_pass http://devprod_fleet;
        proxy_next_upstream off;
        proxy_connect_timeout 2s;
        proxy_read_timeout 30s;
{http11}    }}
}}
"""
KEEPALIVE = "    keepalive 16;\n"
HTTP11 = '        proxy_http_version 1.1;\n        proxy_set_header Connection "";\n'


def _master_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if cmdline.startswith(b"nginx: master") else None


class LoadBalancer:
    """A root-started nginx on a free loopback port, round-robin over the hosts' proxies."""

    def __init__(self, base: Path, ports: list[int], keepalive: bool = False):
        self.root = Path(tempfile.mkdtemp(dir=base, prefix="lb-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.nginx_dir = self.root / "nginx"
        (self.nginx_dir / "conf.d").mkdir(parents=True)
        (self.nginx_dir / "tmp").mkdir()
        self.conf = self.nginx_dir / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(root=self.root))
        self.ports, self.keepalive = list(ports), keepalive
        self._write_site(set())
        self.pid_file = self.nginx_dir / "nginx.pid"
        result = subprocess.run([NGINX, "-c", str(self.conf)], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 5
        while _master_pid(self.pid_file) is None:
            assert time.monotonic() < deadline, "the load balancer's nginx did not start"
            time.sleep(0.02)

    def _write_site(self, down: set[int]) -> None:
        servers = "".join(f"    server 127.0.0.1:{port}{' down' if port in down else ''};\n" for port in self.ports)
        (self.nginx_dir / "conf.d" / "lb.conf").write_text(LB_SITE.format(
            servers=servers, port=self.port, root=self.root,
            keepalive=KEEPALIVE if self.keepalive else "", http11=HTTP11 if self.keepalive else ""))

    def workers(self) -> set[int]:
        master = _master_pid(self.pid_file)
        found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return {int(pid) for pid in found}

    def route(self, down: set[int]) -> set[int]:
        """Route to every host but those on the `down` ports, by a graceful reload; returns the
        workers from before it, which finish what they hold (and then close their connections)."""
        before = self.workers()
        self._write_site(down)
        result = subprocess.run([NGINX, "-c", str(self.conf), "-s", "reload"], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        # `-s reload` only signals the master. Wait until it has started new workers (this config's), so
        # that the next route() counts them among the workers from before it: two reloads close
        # together (a host's return, the next host's exit) left the first one's workers, which
        # still routed to the next host, out of its drain (a request it served while out).
        deadline = time.monotonic() + 10
        while not self.workers() - before:
            assert time.monotonic() < deadline, f"nginx started no new workers within 10 s of a reload: {self.conf}"
            time.sleep(0.01)
        return before

    def stop(self) -> None:
        pid = _master_pid(self.pid_file)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _master_pid(self.pid_file) and time.monotonic() < deadline:
                time.sleep(0.02)


class Fleet:
    """Three hosts (host1..host3) and the balancer in front of them."""

    def __init__(self, base: Path, aws_env: dict[str, str], start_delay: float = 0.3, keepalive: bool = False):
        self.hosts: dict[str, Host] = {}
        self.lb: LoadBalancer | None = None
        try:
            for name in HOST_NAMES:
                self.hosts[name] = Host(base, aws_env, start_delay=start_delay)
            self.lb = LoadBalancer(base, [h.port for h in self.hosts.values()], keepalive=keepalive)
        except BaseException:
            self.stop()
            raise
        self.by_port = {f"127.0.0.1:{h.port}": name for name, h in self.hosts.items()}

    def publish(self, release: str, mode: str = "ok") -> str:
        """One archive put in every host's bucket, as one pipeline run publishes one release:
        returns its sha256 (the CHECKSUM the deploy stage passes)."""
        body = self.hosts[HOST_NAMES[0]].tarball(release, mode)
        for host in self.hosts.values():
            host.publish(release, body=body)
        return self.hosts[HOST_NAMES[0]].published[release]

    def stop(self) -> None:
        for host in self.hosts.values():
            host.stop()
        if self.lb:
            self.lb.stop()

    def remove(self) -> None:
        for host in self.hosts.values():
            shutil.rmtree(host.root, ignore_errors=True)
        if self.lb:
            shutil.rmtree(self.lb.root, ignore_errors=True)


class LocalTraffic:
    """devprod.rollout's Traffic over the local balancer, as an ALB target group behaves: a host
    taken out gets no new request (marked `down`, by a graceful reload); it has drained once the
    balancer's workers from before that reload have exited, their requests answered and their
    kept-alive connections closed; put back, it is in once its proxy answers the health check.
    `events` records (monotonic time, wall-clock time for the balancer's $msec, what, hosts)."""

    def __init__(self, fleet: "Fleet"):
        self.fleet, self.down = fleet, set()
        self.events: list[tuple[float, float, str, tuple[str, ...]]] = []
        self.draining: set[int] = set()

    def _ports(self, hosts: list[str]) -> set[int]:
        return {self.fleet.hosts[h].port for h in hosts}

    def detach(self, hosts: list[str]) -> None:
        self.down |= self._ports(hosts)
        self.draining |= self.fleet.lb.route(self.down)
        self.events.append((time.monotonic(), time.time(), "detach", tuple(hosts)))

    def detached(self, hosts: list[str]) -> bool:
        self.draining = {pid for pid in self.draining if Path(f"/proc/{pid}").exists()}
        if self.draining:
            return False
        self.events.append((time.monotonic(), time.time(), "drained", tuple(hosts)))
        return True

    def attach(self, hosts: list[str]) -> None:
        # Back from the moment it is asked for: route() returns once the new workers run, and
        # they may serve the host before it returns.
        self.events.append((time.monotonic(), time.time(), "attach", tuple(hosts)))
        self.down -= self._ports(hosts)
        self.fleet.lb.route(self.down)

    def attached(self, hosts: list[str]) -> bool:
        """In rotation (not `down`) and answering the health check, as an ALB's `healthy`: like
        its unhealthy threshold (2), one slow answer on a loaded machine is not yet unhealthy."""
        def healthy(port: int) -> bool:
            return any(fetch(port, "/health", 2)[0] == 200 for _ in range(2))

        return all(self.fleet.hosts[h].port not in self.down and healthy(self.fleet.hosts[h].port) for h in hosts)

    def served_while_out(self, host: str) -> list[str]:
        """The balancer's log lines for requests to `host` that ended between its drain and its return."""
        drained, back = self.out_between(host, wall=True)
        upstream = f"upstream=127.0.0.1:{self.fleet.hosts[host].port} "
        log = (self.fleet.lb.root / "nginx" / "access.log").read_text().splitlines()
        return [line for line in log if upstream in line and drained < float(line.split(" ", 1)[0]) < back]

    def out_between(self, host: str, wall: bool = False) -> tuple[float, float]:
        """When `host` had drained, and when it was put back (monotonic, or wall-clock)."""
        at = 1 if wall else 0
        drained = next(e[at] for e in self.events if e[2] == "drained" and host in e[3])
        back = next(e[at] for e in self.events if e[2] == "attach" and host in e[3])
        return drained, back


# ------------------------------------------------------------------ load through the balancer


@dataclass(frozen=True)
class Answer:
    kind: str  # "fast" (/health) or "slow" (/slow)
    started: float
    ended: float
    status: int  # 0: nothing answered
    release: str | None
    upstream: str | None  # the host proxy the balancer used, "127.0.0.1:<port>"
    error: str | None


def fetch(port: int, path: str, timeout: float) -> tuple[int, str | None, str | None, str | None]:
    """(status, release, balancer upstream, error) for one GET on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        upstream = response.getheader("X-Lb-Upstream")
        try:
            release = json.loads(body).get("release") if body else None
        except ValueError:
            release = None
        return response.status, release, upstream, None if 200 <= response.status < 300 else body[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return 0, None, None, repr(exc)
    finally:
        conn.close()


class Load:
    """`fast` clients on /health and `slow` clients on /slow?s=SLOW, through the balancer, until exit."""

    def __init__(self, port: int, fast: int = 6, slow: int = 3, slow_seconds: float = 1.0, pause: float = 0.01):
        self.port, self.pause, self.slow_seconds = port, pause, slow_seconds
        self.running = True
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        kinds = ["fast"] * fast + ["slow"] * slow
        self.threads = [threading.Thread(target=self.client, args=(kind,), daemon=True) for kind in kinds]

    def client(self, kind: str) -> None:
        path = "/health" if kind == "fast" else f"/slow?s={self.slow_seconds}"
        while self.running:
            started = time.monotonic()
            status, release, upstream, error = fetch(self.port, path, timeout=30)
            answer = Answer(kind, started, time.monotonic(), status, release, upstream, error)
            with self.lock:
                self.answers.append(answer)
            time.sleep(self.pause)

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(timeout=40)

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if not 200 <= a.status < 300]


# ------------------------------------------------------------------ running deploy.sh on the hosts


@dataclass
class Run:
    """One deploy.sh run on one host, started by LocalRunner."""

    host: str
    handle: str
    action: str
    release: str | None
    proc: subprocess.Popen
    output: Path
    started: float
    ended: float | None = None


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a run's output, as the SSM runner reports a command's output."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalRunner:
    """devprod.rollout's Runner for the local fleet: what the SSM document does on a real host.

    `start` launches scripts/deploy.sh on each host of the batch with ACTION, RELEASE and
    CHECKSUM in its environment (the document's parameters; everything else is the host's
    own settings), `poll` reports each run's exit status and the tail of its output,
    `cancel` kills the runs (deploy.sh handles TERM: it leaves the last verified release).
    Every run is kept in `runs`, in start order: the tests read which hosts got a command.
    """

    def __init__(self, fleet: Fleet, **settings: str):
        self.fleet, self.settings = fleet, settings
        self.runs: list[Run] = []

    def start(self, hosts: list[str], action: str, release: str | None, checksum: str | None) -> str:
        handle = uuid.uuid4().hex[:12]
        for name in hosts:
            host = self.fleet.hosts[name]
            env = host.env(**self.settings, ACTION=action, RELEASE=release or "", CHECKSUM=checksum or "")
            output = host.root / f"run-{handle}.out"
            with output.open("w") as sink:
                proc = subprocess.Popen(["bash", str(DEPLOY)], env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            self.runs.append(Run(name, handle, action, release, proc, output, time.monotonic()))
        return handle

    def poll(self, handle: str, hosts: list[str]) -> dict[str, HostResult | None]:
        results: dict[str, HostResult | None] = {}
        for run in self._runs(handle, hosts):
            code = run.proc.poll()
            if code is None:
                results[run.host] = None
                continue
            if run.ended is None:
                run.ended = time.monotonic()
            results[run.host] = HostResult(ok=code == 0, status=f"exit {code}", detail=tail(run.output))
        return results

    def cancel(self, handle: str) -> None:
        for run in self._runs(handle, None):
            if run.proc.poll() is None:
                run.proc.terminate()
        for run in self._runs(handle, None):
            try:
                run.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait(timeout=10)

    def _runs(self, handle: str, hosts: list[str] | None) -> list[Run]:
        return [r for r in self.runs if r.handle == handle and (hosts is None or r.host in hosts)]

    def hosts_run(self, release: str | None = None) -> list[tuple[str, str, str | None]]:
        """(host, action, release) of every run so far, or only those naming `release`."""
        return [(r.host, r.action, r.release) for r in self.runs if release is None or r.release == release]

    def reap(self) -> None:
        """Kill whatever is still running (a failed test must not leave deploys behind)."""
        for run in self.runs:
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait(timeout=10)


# ------------------------------------------------------------------ reading a rollout back


@dataclass(frozen=True)
class HostSwitch:
    """One deploy.sh run as the clients saw it, in seconds from the run's start."""

    host: str
    action: str
    target: str
    duration: float
    first_target: float | None  # first answer by the target release via this host, started during the run
    last_other: float | None  # last answer by another release via this host, started during the run


def switches(load: Load, fleet: Fleet, runner: LocalRunner, rollback_to: str) -> list[HostSwitch]:
    """Per finished run: when the clients, through the balancer, saw that host change release.
    A run's target is its RELEASE, or `rollback_to` for a rollback that named none."""
    found = []
    for run in runner.runs:
        if run.ended is None:
            continue
        target = run.release or rollback_to
        port = f"127.0.0.1:{fleet.hosts[run.host].port}"
        via = [a for a in load.answers
               if a.upstream == port and run.started <= a.started <= run.ended and 200 <= a.status < 300]
        new = [a.ended - run.started for a in via if a.release == target]
        other = [a.ended - run.started for a in via if a.release != target]
        found.append(HostSwitch(run.host, run.action, target, run.ended - run.started,
                                min(new, default=None), max(other, default=None)))
    return found
