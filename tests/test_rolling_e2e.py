"""Rolling deploys end to end: three local hosts behind a load balancer, under load (issue #15).

Everything runs for real except the cloud: devprod/rollout.py (the product's
rolling logic) drives LocalRunner (tests/rolling_hosts.py), which runs
scripts/deploy.sh on three simulated hosts (tests/deploy_host.py: each its own
APP_DIR, root-started nginx proxy, two slots of the fixture app, deploy log),
while clients hammer a plain root-started nginx balancing round-robin over the
three hosts' proxies, with no retries. Releases come from moto's S3 server
through the real AWS CLI. The fixture app starts in 0.3 s here; /slow takes 1 s.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from devprod.rollout import DONE, FAILED, ROLLED_BACK, Rollout, run
from tests.deploy_host import sha
from tests.rolling_hosts import HOST_NAMES, Fleet, Load, LocalRunner, LocalTraffic, switches

pytestmark = pytest.mark.slow

A, B, C = sha(1), sha(2), sha(3)
# What each host's deploy.sh gets besides the document's parameters. A release that fails its
# gate fails it whatever the deadline, and every second of it is spent on host 2; 8 s (the
# deploy tests' default) leaves room for a good one to pass on a machine shared with other work.
SETTINGS = {"HEALTH_TIMEOUT": "8", "HEALTH_PASSES": "2", "HEALTH_INTERVAL": "0.1", "DRAIN_TIMEOUT": "10"}


@pytest.fixture
def fleet(request, hosts_dir, aws_env):
    """The three hosts and the balancer; parametrized True, the balancer keeps connections to the
    hosts' proxies open (HTTP/1.1 keepalive), as an ALB does with its targets."""
    f = Fleet(hosts_dir, aws_env, start_delay=0.3, keepalive=getattr(request, "param", False))
    yield f
    f.stop()
    f.remove()


@pytest.fixture
def runner(fleet):
    r = LocalRunner(fleet, **SETTINGS)
    yield r
    r.reap()


def everywhere(fleet: Fleet, *releases: str) -> None:
    """Deploy each release on all three hosts at once (setting the scene, not the rollout under test)."""
    for release in releases:
        if release not in fleet.hosts[HOST_NAMES[0]].published:
            fleet.publish(release)

        def deploy(host, release=release):
            return host.run("deploy", release, **SETTINGS)

        with ThreadPoolExecutor(len(fleet.hosts)) as pool:
            results = list(pool.map(deploy, fleet.hosts.values()))
        failed = [f"{name}: exit {r.returncode}: {r.stderr[-1500:]}"
                  for name, r in zip(fleet.hosts, results) if r.returncode != 0]
        assert not failed, "\n".join(failed)  # the failing hosts' own ends, not the others'
    for host in fleet.hosts.values():
        host.assert_serving(releases[-1])


def roll(runner: LocalRunner, release: str, checksum: str, previous: str, traffic: LocalTraffic | None = None) -> Rollout:
    """devprod.rollout run to the end over host1..host3, one at a time, with the live release
    (and its checksum) as `previous`, as the deploy stage reads it from the live-release
    parameter. Each state it reaches must survive the JSON round trip the Release function's
    continuation token puts it through."""

    def round_trips(state: Rollout) -> None:
        assert Rollout.from_json(state.to_json()) == state

    previous_checksum = runner.fleet.hosts[HOST_NAMES[0]].published[previous]
    state = Rollout.new(release, checksum, list(HOST_NAMES), batch=1, timeout=60, previous=previous,
                        previous_checksum=previous_checksum)
    return run(state, runner, clock=time.monotonic, sleep=time.sleep, poll_seconds=0.1, on_update=round_trips,
               traffic=traffic)


def assert_whole(load: Load, minimum: int) -> None:
    failed = load.failed()
    assert failed == [], f"{len(failed)} of {len(load.answers)} requests failed: {failed[:5]}"
    assert len(load.answers) >= minimum, f"only {len(load.answers)} requests: the load did not run"
    assert {a.kind for a in load.answers} == {"fast", "slow"}


@pytest.mark.parametrize("fleet", [False, True], indirect=True, ids=["fresh-connections", "keepalive"])
def test_a_rolling_deploy_under_load_fails_no_request_and_ends_on_one_release(fleet, runner):
    """The issue's proof: B rolled out over three hosts on A, one at a time, while 9 clients go
    through the balancer: every request answered 2xx, every host ends on B, and the clients saw
    each host change release during its own run.

    With keepalive the balancer holds connections to the hosts, as an ALB does, and a host's
    nginx reload closes the idle ones: one the balancer reuses at that instant is a lost request
    (seen here about once in 6000 under load). So, as with an ALB's target group, each host
    leaves the balancer (LocalTraffic) before its switch and returns after: the balancer then
    sent it nothing between its drain and its return."""
    everywhere(fleet, A)
    checksum = fleet.publish(B)
    traffic = LocalTraffic(fleet) if fleet.lb.keepalive else None
    with Load(fleet.lb.port) as load:
        time.sleep(0.3)
        state = roll(runner, B, checksum, previous=A, traffic=traffic)
        time.sleep(0.3)
    if traffic is not None:
        for run_ in runner.runs:
            drained, back = traffic.out_between(run_.host)
            assert drained <= run_.started and run_.ended <= back, (run_.host, traffic.events)
            assert traffic.served_while_out(run_.host) == [], run_.host
    assert_whole(load, minimum=1000)
    assert state.phase == DONE and state.failure is None, state.summary()
    assert runner.hosts_run() == [(name, "deploy", B) for name in HOST_NAMES]  # one command per host, in order
    for earlier, later in zip(runner.runs, runner.runs[1:]):
        assert earlier.ended <= later.started, "hosts were updated at the same time: batch 1 is one at a time"
    for name, host in fleet.hosts.items():
        host.assert_serving(B)  # current symlink, state file, the host's proxy, one slot running
        assert host.log_results() == ["success", "success"], (name, host.log_lines())
    seen = {(fleet.by_port[a.upstream], a.release) for a in load.answers}
    assert seen == {(name, release) for name in HOST_NAMES for release in (A, B)}, seen
    if traffic is not None:
        for name, host in fleet.hosts.items():
            # Out of the balancer while it switched: A up to its drain, B from its return on.
            drained, back = traffic.out_between(name)
            via = [a for a in load.answers if a.upstream == f"127.0.0.1:{host.port}"]
            assert {a.release for a in via if a.ended <= drained} == {A}, name
            assert {a.release for a in via if a.started >= back} == {B}, name
            assert not [a for a in via if drained < a.started < back], name
        return
    for switch in switches(load, fleet, runner, rollback_to=A):
        # The clients saw each host change during its own run, not before and not later.
        assert switch.first_target is not None and switch.first_target <= switch.duration, switch


@pytest.mark.parametrize("leave", [False, True], ids=["in-place", "leaving-the-balancer"])
def test_a_release_failing_on_host_2_leaves_all_three_on_the_old_release_under_load(fleet, runner, leave):
    """C fails its health gate on host 2 only: the fixture app's mode error-where-marked answers
    /health with 500 on a host whose APP_DIR holds FAIL_HEALTH, and only host 2's does (as a
    host-local fault would: a missing package, a full disk). Host 1 is switched to C for real,
    then rolled back to B; host 3 never receives a command; nobody sees an error."""
    everywhere(fleet, A, B)
    (fleet.hosts["host2"].app_dir / "FAIL_HEALTH").write_text("host-local fault\n")
    checksum = fleet.publish(C, "error-where-marked")
    host3 = fleet.hosts["host3"]
    host3_log = host3.deploy_log.read_text()
    # Leaving: host 2 is out of the balancer when it fails and while it is rolled back, host 1
    # (back in by then) is rolled back in it, host 2 returns last. Fresh connections here: a
    # rollback reaches the hosts in the balancer at once (see devprod/rollout.py).
    traffic = LocalTraffic(fleet) if leave else None
    with Load(fleet.lb.port) as load:
        time.sleep(0.3)
        state = roll(runner, C, checksum, previous=B, traffic=traffic)
        time.sleep(0.3)
    assert_whole(load, minimum=1000)
    if traffic is not None:
        assert [(what, hosts) for _, _, what, hosts in traffic.events if what != "drained"] == [
            ("detach", ("host1",)), ("attach", ("host1",)), ("detach", ("host2",)), ("attach", ("host2",))]
        assert traffic.out_between("host2")[1] >= runner.runs[-1].ended  # back after its rollback
        assert traffic.down == set()
    # The rollout failed, naming host 2 and deploy.sh's reason; it put back what it had updated.
    assert state.phase == FAILED and state.rollback_problem is None, state.summary()
    assert state.failure.startswith("host host2 failed: exit 11") and "not healthy within" in state.failure, state.failure
    assert state.results == {"host1": ROLLED_BACK, "host2": ROLLED_BACK} and state.untouched == ["host3"], state
    assert "not touched: host3" in state.summary()
    # Commands, in order: C to host 1, C to host 2, then one rollback to B for both (on host 2, which
    # never switched, it finds B live and healthy: a no-op). Host 3: none.
    assert [(r.host, r.action, r.release) for r in runner.runs] == [
        ("host1", "deploy", C), ("host2", "deploy", C), ("host1", "rollback", B), ("host2", "rollback", B)]
    # Host 3: deploy.sh never ran there.
    assert host3.deploy_log.read_text() == host3_log
    assert not (host3.app_dir / "releases" / C).exists()
    # Host 1 really served C (clients saw it, through the balancer, from host 1 only), then B again.
    served_c = {fleet.by_port[a.upstream] for a in load.answers if a.release == C}
    assert served_c == {"host1"}, served_c
    assert [(line["action"], line["release"], line["result"], line["live"]) for line in fleet.hosts["host1"].log_lines()[2:]] == [
        ("deploy", C, "success", C), ("rollback", B, "success", B)]
    assert fleet.hosts["host2"].log_results()[-2:] == ["failed-health-gate", "noop-healthy"]
    for host in fleet.hosts.values():
        host.assert_serving(B)
