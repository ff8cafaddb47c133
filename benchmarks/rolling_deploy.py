"""Rolling deploys across three local hosts behind a load balancer, under load, measured.

The setup of tests/test_rolling_e2e.py (tests/rolling_hosts.py): three
simulated hosts, each scripts/deploy.sh behind its own root-started nginx
with two slots of the fixture app, and a plain nginx balancing round-robin
over them (no retries). devprod/rollout.py drives LocalRunner, one host at a
time. For each round: roll out a good release (every host switches), then a
release that fails its gate on host 2 only (host 1 is switched, then rolled
back; host 3 is never touched). FAST clients poll /health and SLOW clients
call /slow (1 s) through the balancer for the whole run.

Needs root (nginx's masters and the app user, as the tests do) and starts
moto's S3 server. Asserts nothing; prints per run and per host what deploy.sh
took and when the clients saw that host change release, and last

    requests=<n> failed=<n> rollouts=<n> host_runs=<n> p99_ms=<x> wall_s=<y>

    .venv/bin/python benchmarks/rolling_deploy.py [rounds [--keepalive] [--leave]]   (default 2)

--keepalive makes the balancer keep HTTP/1.1 connections to the hosts' proxies
open between requests, as an ALB does with its targets (the tests use a fresh
connection per request). --leave takes each host out of the balancer while it
switches (LocalTraffic), as the rollout does with an ALB's target group; the
report then shows how long each host was out instead of when clients saw it switch.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.zero_downtime import machine, moto_workdir, p99  # noqa: E402
from tests.deploy_host import ensure_app_user, sha  # noqa: E402
from tests.rolling_hosts import HOST_NAMES, Fleet, Load, LocalRunner, LocalTraffic, switches  # noqa: E402
from tests.test_rolling_e2e import SETTINGS, everywhere, roll  # noqa: E402

FAST, SLOW, STEADY = 6, 3, 1.0
# The tests' settings with a shorter gate deadline: the failing release's cost on host 2 is that deadline.
RUNNER_SETTINGS = {**SETTINGS, "HEALTH_TIMEOUT": "5"}


def seconds(value: float | None) -> str:
    return "     -  " if value is None else f"{value:6.2f}s"


def rounds_under_load(fleet: Fleet, rounds: int, leave: bool) -> tuple[Load, list]:
    """Per round: a good release everywhere, then one failing on host 2. Returns the load and
    (label, release, runner, final state, wall seconds, previous release, traffic) per rollout."""
    done = []
    live = sha(1)
    with Load(fleet.lb.port, fast=FAST, slow=SLOW) as load:
        for r in range(rounds):
            good, bad = sha(100 + 2 * r), sha(101 + 2 * r)
            for label, release, mode in (("good", good, "ok"), ("fails on host2", bad, "error-where-marked")):
                checksum = fleet.publish(release, mode)
                runner = LocalRunner(fleet, **RUNNER_SETTINGS)
                time.sleep(STEADY)
                began = time.monotonic()
                traffic = LocalTraffic(fleet) if leave else None
                state = roll(runner, release, checksum, previous=live, traffic=traffic)
                done.append((label, release, runner, state, time.monotonic() - began, live, traffic))
                if mode == "ok":
                    live = release
        time.sleep(STEADY)
    return load, done


def report(fleet: Fleet, load: Load, done: list) -> None:
    """Per rollout, per host run: deploy.sh's duration; among the requests that started during
    the run and went through the balancer to that host, when (from the run's start) the first
    answer from the run's target release came, and the last answer from another release
    (the old slot draining)."""
    for label, release, runner, state, wall, previous, traffic in done:
        print(f"{label} {release[:7]}: {state.phase} in {wall:.2f}s, {len(runner.runs)} host runs")
        if traffic is not None:
            for name in dict.fromkeys(run.host for run in runner.runs):
                if any(e[2] == "attach" and name in e[3] for e in traffic.events):
                    drained, back = traffic.out_between(name)
                    left = next(e[0] for e in traffic.events if e[2] == "detach" and name in e[3])
                    print(f"  {name}: drained in {drained - left:.2f}s, out of the balancer {back - left:.2f}s")
            continue
        print("  host   action    target   deploy.sh  first target  last other")
        for s in switches(load, fleet, runner, rollback_to=previous):
            print(f"  {s.host:<6} {s.action:<9} {s.target[:7]}  {seconds(s.duration)}"
                  f"     {seconds(s.first_target)}     {seconds(s.last_other)}")
        if state.failure:
            print(textwrap.fill(f"failure: {state.failure}", 78, initial_indent="  ", subsequent_indent="    ",
                                max_lines=3))


def main(rounds: int, keepalive: bool, leave: bool) -> None:
    ensure_app_user()
    print(machine())
    print("load average at start: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    began = time.monotonic()
    with moto_workdir() as (tmp, env):
        fleet = Fleet(tmp, env, start_delay=0.3, keepalive=keepalive)
        try:
            everywhere(fleet, sha(1))
            (fleet.hosts["host2"].app_dir / "FAIL_HEALTH").write_text("host-local fault\n")
            load, done = rounds_under_load(fleet, rounds, leave)
            report(fleet, load, done)
            ends = {name: fleet.hosts[name].live() for name in HOST_NAMES}
        finally:
            fleet.stop()
    per_host = {name: sum(1 for a in load.answers if fleet.by_port.get(a.upstream) == name) for name in HOST_NAMES}
    latencies = [(a.ended - a.started) * 1000 for a in load.answers if a.kind == "fast"]
    print(f"requests per host: {per_host}")
    print(f"hosts end on: { {n: (r or '-')[:7] for n, r in ends.items()} }; balancer keepalive: {keepalive}; "
          f"hosts leave it: {leave}")
    print("load average at end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"requests={len(load.answers)} failed={len(load.failed())} rollouts={len(done)} "
          f"host_runs={sum(len(d[2].runs) for d in done)} p99_ms={p99(latencies):.1f} "
          f"wall_s={time.monotonic() - began:.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, "--keepalive" in sys.argv[2:], "--leave" in sys.argv[2:])
