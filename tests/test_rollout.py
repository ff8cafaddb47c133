"""devprod/rollout.py: the rolling logic, driven by a scripted runner (no AWS, no processes)."""

from __future__ import annotations

import json

import pytest

from devprod.rollout import (
    DONE,
    FAILED,
    HostResult,
    Rollout,
    RolloutError,
    advance,
    rollback_targets,
    run,
)

NEW, OLD = "b" * 40, "a" * 40
SUM, OLD_SUM = "1" * 64, "2" * 64
HOSTS = ["i-01", "i-02", "i-03"]
OK = HostResult(True, "Success", "deployed")


class ScriptedRunner:
    """Answers each command from a script: {(action, host): [results per poll, last one repeats]}."""

    def __init__(self, script=None, never_ends=()):
        self.script = script or {}
        self.never_ends = set(never_ends)
        self.sent: list[tuple[str, tuple[str, ...], str | None, str | None]] = []
        self.cancelled: list[str] = []
        self.commands: dict[str, tuple[str, list[str]]] = {}

    def start(self, hosts, action, release, checksum):
        handle = f"cmd-{len(self.sent)}"
        self.sent.append((action, tuple(hosts), release, checksum))
        self.commands[handle] = (action, list(hosts))
        return handle

    def poll(self, handle, hosts):
        action, _ = self.commands[handle]
        return {h: (None if (action, h) in self.never_ends else self.script.get((action, h), OK)) for h in hosts}

    def cancel(self, handle):
        self.cancelled.append(handle)


def drive(state, runner, traffic=None, step=10.0, limit=200):
    """Step until finished, each step on the state as the Release function's token carries it."""
    now = 0.0
    for _ in range(limit):
        state = advance(Rollout.from_json(state.to_json()), runner, now, traffic)
        if state.finished:
            return state
        now += step
    raise AssertionError("the rollout never finished")


def test_all_hosts_succeed_one_at_a_time_in_the_given_order():
    runner = ScriptedRunner()
    state = drive(Rollout.new(NEW, SUM, HOSTS, previous=OLD, previous_checksum=OLD_SUM), runner)
    assert state.phase == DONE and state.failure is None
    assert runner.sent == [("deploy", (h,), NEW, SUM) for h in HOSTS]
    assert state.summary().endswith("all 3 host(s) succeeded: i-01, i-02, i-03")


def test_host_2_fails_host_1_is_rolled_back_host_3_never_touched():
    runner = ScriptedRunner({("deploy", "i-02"): HostResult(False, "Failed", "gate\nhealth check failed: HTTP 500\n")})
    state = drive(Rollout.new(NEW, SUM, HOSTS, previous=OLD, previous_checksum=OLD_SUM), runner)
    assert state.phase == FAILED
    assert runner.sent == [
        ("deploy", ("i-01",), NEW, SUM),
        ("deploy", ("i-02",), NEW, SUM),
        # i-02 is told to go back too: a no-op on deploy.sh when it already serves OLD.
        ("rollback", ("i-01", "i-02"), OLD, OLD_SUM),
    ]
    assert all("i-03" not in hosts for _, hosts, _, _ in runner.sent)
    assert state.results == {"i-01": "rolled back", "i-02": "rolled back"}
    line = state.summary()
    assert "host i-02 failed: Failed: gate | health check failed: HTTP 500" in line
    assert f"rolled back i-01, i-02 to {OLD}" in line and line.endswith("not touched: i-03")


def test_without_a_known_previous_release_the_failed_host_is_left_as_deploy_sh_left_it():
    runner = ScriptedRunner({("deploy", "i-02"): HostResult(False, "Failed", "boom")})
    state = drive(Rollout.new(NEW, SUM, HOSTS), runner)
    # "rollback" with no release means "the release before the live one": right for
    # i-01 (it switched), wrong for i-02 (its deploy never switched).
    assert runner.sent[-1] == ("rollback", ("i-01",), None, None)
    assert state.phase == FAILED and "to their previous release" in state.summary()


def test_a_host_that_does_not_finish_is_cancelled_then_rolled_back():
    runner = ScriptedRunner(never_ends={("deploy", "i-02")})
    state = drive(Rollout.new(NEW, SUM, HOSTS, timeout=30, previous=OLD), runner)
    assert runner.cancelled == ["cmd-1"]
    assert runner.sent[-1] == ("rollback", ("i-01", "i-02"), OLD, None)
    assert "host i-02 did not finish within 30s (command cancelled)" in state.summary()
    assert "i-03" in state.untouched


def test_a_batch_of_two_waits_for_both_and_rolls_back_the_successful_half():
    runner = ScriptedRunner({("deploy", "i-04"): HostResult(False, "TimedOut", "")})
    state = drive(Rollout.new(NEW, SUM, HOSTS + ["i-04", "i-05"], batch=2, previous=OLD), runner)
    assert [hosts for _, hosts, _, _ in runner.sent] == [("i-01", "i-02"), ("i-03", "i-04"), ("i-01", "i-02", "i-03", "i-04")]
    assert state.untouched == ["i-05"] and "host i-04 failed: TimedOut" in state.summary()


def test_a_failing_rollback_is_said_loudly():
    runner = ScriptedRunner({
        ("deploy", "i-02"): HostResult(False, "Failed", "bad"),
        ("rollback", "i-01"): HostResult(False, "Failed", "previous release unhealthy"),
    })
    state = drive(Rollout.new(NEW, SUM, HOSTS, previous=OLD), runner)
    assert state.phase == FAILED
    assert state.rollback_problem == "host i-01: Failed: previous release unhealthy"
    assert "ROLLBACK FAILED" in state.summary() and state.results["i-01"] == "rollback failed"


def test_one_step_at_a_time_and_the_state_survives_json_between_steps():
    """As the Release function runs it: each invocation loads the token, steps, saves."""
    runner = ScriptedRunner({("deploy", "i-03"): HostResult(False, "Failed", "x")})
    token, now = Rollout.new(NEW, SUM, HOSTS, previous=OLD).to_json(), 0.0
    for _ in range(20):
        state = advance(Rollout.from_json(token), runner, now)
        token, now = state.to_json(), now + 1
        if state.finished:
            break
    assert state.phase == FAILED and runner.sent[-1] == ("rollback", ("i-01", "i-02", "i-03"), OLD, None)


def test_a_running_command_is_left_alone_until_its_deadline():
    runner = ScriptedRunner(never_ends={("deploy", "i-01")})
    state = advance(Rollout.new(NEW, SUM, HOSTS, timeout=100), runner, 0.0)
    for now in (10.0, 50.0, 99.0):
        state = advance(state, runner, now)
    assert len(runner.sent) == 1 and runner.cancelled == [] and state.running == ["i-01"]


def test_a_send_that_raises_during_rollback_is_retried_as_a_rollback_never_a_deploy():
    class FlakyRunner(ScriptedRunner):
        fail_next_rollback = True

        def start(self, hosts, action, release, checksum):
            if action == "rollback" and self.fail_next_rollback:
                self.fail_next_rollback = False
                raise RuntimeError("throttled")
            return super().start(hosts, action, release, checksum)

    runner = FlakyRunner({("deploy", "i-02"): HostResult(False, "Failed", "x")})
    state = Rollout.new(NEW, SUM, HOSTS, previous=OLD)
    state = advance(advance(state, runner, 0), runner, 1)  # i-01 deployed, i-02 sent
    with pytest.raises(RuntimeError):
        advance(state, runner, 2)
    state = drive(state, runner)
    assert [a for a, *_ in runner.sent] == ["deploy", "deploy", "rollback"] and state.phase == FAILED


def test_run_blocks_until_done_and_reports_each_step():
    seen = []
    clock = iter(range(1000)).__next__
    state = run(Rollout.new(NEW, SUM, HOSTS), ScriptedRunner(), lambda: float(clock()), lambda _s: None,
                on_update=lambda s: seen.append(s.phase))
    assert state.phase == DONE and seen[-1] == DONE


def test_rollback_targets_follow_what_each_host_may_be_serving():
    state = Rollout.new(NEW, SUM, HOSTS, previous=OLD)
    state.updated = list(HOSTS)
    state.results = {"i-01": "switched", "i-02": "failed", "i-03": "timed out"}
    assert rollback_targets(state) == HOSTS
    state.previous = None
    assert rollback_targets(state) == ["i-01", "i-03"]


@pytest.mark.parametrize(
    "change",
    [
        {"release": "../../etc"},
        {"checksum": "zz"},
        {"hosts": []},
        {"hosts": ["i-01", "--document-name=x"]},
        {"hosts": ["i-01", "i-01"]},
        {"batch": 0},
        {"batch": True},
        {"action": "shell"},
        {"phase": "whatever"},
        {"updated": ["i-99"]},
        {"previous": "HEAD"},
        {"results": {"i-99": "switched"}},
        {"stage": "elsewhere"},
        {"detached": ["i-99"]},
        {"unknown": 1},
    ],
)
def test_a_state_this_module_did_not_write_is_refused(change):
    data = json.loads(Rollout.new(NEW, SUM, HOSTS).to_json())
    data.update(change)
    with pytest.raises(RolloutError):
        Rollout.from_json(json.dumps(data))


def test_not_json_is_refused_and_a_rollback_may_name_no_release():
    for text in ("", "[]", "{", "null"):
        with pytest.raises(RolloutError):
            Rollout.from_json(text)
    assert Rollout.new(None, None, HOSTS, action="rollback").release is None
    with pytest.raises(RolloutError):
        Rollout.new(None, None, HOSTS, action="deploy")


# ---------------------------------------------------------------- behind a load balancer


class ScriptedTraffic:
    """A balancer that drains a host after `drain_polls` polls and finds it healthy after
    `health_polls`; `never` hosts never finish that step. Every call goes into `log`, with the
    runner's sends, so the order of the whole rollout can be read."""

    def __init__(self, runner, drain_polls=1, health_polls=1, never_drain=(), never_healthy=(), sick=()):
        self.runner, self.log = runner, []
        self.drain_polls, self.health_polls = drain_polls, health_polls
        self.never_drain, self.never_healthy = set(never_drain), set(never_healthy)
        self.sick = set(sick)  # unhealthy until their own switch brings them back
        self.out: set[str] = set()
        self.returning: dict[str, int] = {}
        self.polls: dict[tuple[str, tuple[str, ...]], int] = {}
        original = runner.start

        def start(hosts, action, release, checksum):
            self.log.append((action, tuple(hosts)))
            return original(hosts, action, release, checksum)

        runner.start = start

    def _polled(self, what, hosts, needed, never):
        key = (what, tuple(hosts))
        self.polls[key] = self.polls.get(key, 0) + 1
        return not (set(hosts) & never) and self.polls[key] >= needed

    def detach(self, hosts):
        self.log.append(("detach", tuple(hosts)))
        self.out.update(hosts)
        self.polls.pop(("drained", tuple(hosts)), None)

    def detached(self, hosts):
        return self._polled("drained", hosts, self.drain_polls, self.never_drain)

    def attach(self, hosts):
        self.log.append(("attach", tuple(hosts)))
        self.out.difference_update(hosts)
        self.sick.difference_update(hosts)
        self.returning.update({h: 0 for h in hosts})

    def attached(self, hosts):
        """A host that came back is healthy after `health_polls` polls; one never taken out, at once."""
        for host in set(hosts) & set(self.returning):
            self.returning[host] += 1
        return all(h not in self.out and h not in self.never_healthy and h not in self.sick
                   and self.returning.get(h, self.health_polls) >= self.health_polls for h in hosts)


def test_each_batch_leaves_the_balancer_drains_switches_and_is_back_healthy_before_the_next_leaves():
    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner, drain_polls=3, health_polls=2)
    state = drive(Rollout.new(NEW, SUM, HOSTS, previous=OLD), runner, traffic)
    assert state.phase == DONE and state.detached == [] and traffic.out == set()
    assert traffic.log == [step for h in HOSTS for step in (("detach", (h,)), ("deploy", (h,)), ("attach", (h,)))]
    # Nothing was sent before the drain ended, and the next host left only once this one was healthy.
    assert traffic.polls[("drained", ("i-01",))] == 3 and traffic.returning["i-01"] >= 2


def test_a_batch_that_is_every_host_never_leaves_the_balancer():
    for hosts, batch in ((["i-01"], 1), (HOSTS, 3), (HOSTS, 5)):
        runner = ScriptedRunner()
        traffic = ScriptedTraffic(runner)
        state = drive(Rollout.new(NEW, SUM, hosts, batch=batch, previous=OLD), runner, traffic)
        assert state.phase == DONE and traffic.log == [("deploy", tuple(hosts))]


def test_batches_of_two_leave_two_at_a_time():
    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner)
    drive(Rollout.new(NEW, SUM, HOSTS + ["i-04"], batch=2), runner, traffic)
    assert [step for step in traffic.log if step[0] == "detach"] == [("detach", ("i-01", "i-02")), ("detach", ("i-03", "i-04"))]


def test_a_failed_host_is_rolled_back_out_of_the_balancer_then_comes_back():
    runner = ScriptedRunner({("deploy", "i-02"): HostResult(False, "Failed", "gate")})
    traffic = ScriptedTraffic(runner)
    state = drive(Rollout.new(NEW, SUM, HOSTS, previous=OLD, previous_checksum=OLD_SUM), runner, traffic)
    assert state.phase == FAILED and traffic.out == set() and state.detached == []
    assert traffic.log == [
        ("detach", ("i-01",)), ("deploy", ("i-01",)), ("attach", ("i-01",)),
        ("detach", ("i-02",)), ("deploy", ("i-02",)),
        # i-01 serves in the balancer while it goes back; i-02 is still out, and returns last.
        ("rollback", ("i-01", "i-02")), ("attach", ("i-02",)),
    ]
    assert "i-03" not in str(traffic.log) and state.results == {"i-01": "rolled back", "i-02": "rolled back"}


def test_a_host_that_never_drains_is_sent_nothing_and_put_back():
    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner, never_drain={"i-02"})
    state = drive(Rollout.new(NEW, SUM, HOSTS, timeout=60, previous=OLD), runner, traffic)
    assert state.phase == FAILED
    assert traffic.log[-3:] == [("detach", ("i-02",)), ("rollback", ("i-01",)), ("attach", ("i-02",))]
    assert ("deploy", ("i-02",)) not in traffic.log and "i-02" not in state.updated
    assert "host(s) i-02 still draining from the load balancer after 60s; nothing was sent to them" in state.summary()


def test_a_switched_host_the_balancer_never_finds_healthy_fails_the_rollout_and_goes_back():
    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner, never_healthy={"i-01"})
    state = drive(Rollout.new(NEW, SUM, HOSTS, timeout=60, previous=OLD), runner, traffic)
    assert state.phase == FAILED and state.untouched == ["i-02", "i-03"]
    assert traffic.log == [("detach", ("i-01",)), ("deploy", ("i-01",)), ("attach", ("i-01",)), ("rollback", ("i-01",))]
    assert "host(s) i-01 not healthy in the load balancer by the deadline after their switch" in state.failure
    assert state.results == {"i-01": "rolled back"} and state.detached == []


def test_a_host_not_healthy_after_the_rollback_is_a_rollback_problem():
    runner = ScriptedRunner({("deploy", "i-02"): HostResult(False, "Failed", "gate")})
    traffic = ScriptedTraffic(runner, never_healthy={"i-02"})
    state = drive(Rollout.new(NEW, SUM, HOSTS, timeout=60, previous=OLD), runner, traffic)
    assert state.phase == FAILED
    assert state.rollback_problem == "host(s) i-02 not healthy in the load balancer by the deadline after the rollback"
    assert "ROLLBACK FAILED" in state.summary()


def test_the_batch_deadline_covers_the_drain_and_the_command():
    runner = ScriptedRunner(never_ends={("deploy", "i-01")})
    traffic = ScriptedTraffic(runner, drain_polls=5)
    state = Rollout.new(NEW, SUM, HOSTS, timeout=100, previous=OLD)
    for now in range(0, 100, 10):
        state = advance(state, runner, float(now), traffic)
    assert runner.cancelled == [] and state.deadline == 100.0  # set when i-01 left, not when it was sent
    state = advance(state, runner, 100.0, traffic)
    assert runner.cancelled == ["cmd-0"] and state.phase == "rolling-back"


def test_a_detach_that_raises_is_waited_for_and_undone_all_the_same():
    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner)

    def refused(hosts):
        ScriptedTraffic.detach(traffic, hosts)
        raise RuntimeError("throttled")

    traffic.detach = refused
    state = Rollout.new(NEW, SUM, HOSTS)
    with pytest.raises(RuntimeError):
        advance(state, runner, 0.0, traffic)
    assert state.stage == "draining" and state.detached == ["i-01"]
    traffic.detach = lambda hosts: ScriptedTraffic.detach(traffic, hosts)
    assert drive(state, runner, traffic).phase == DONE and traffic.out == set()


def test_a_state_waiting_on_a_balancer_needs_one():
    runner = ScriptedRunner()
    state = advance(Rollout.new(NEW, SUM, HOSTS), runner, 0.0, ScriptedTraffic(runner))
    with pytest.raises(RolloutError, match="draining hosts of a load balancer, and none was given"):
        advance(state, runner, 1.0)


def test_a_batch_stays_in_when_the_other_hosts_are_not_all_healthy():
    """Leaving would send every request to unhealthy hosts (an ALB fails open to them): the
    batch switches where it is, and the summary says so."""
    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner, sick={"i-03"})
    state = drive(Rollout.new(NEW, SUM, HOSTS, previous=OLD), runner, traffic)
    assert state.phase == DONE and state.in_place == ["i-01", "i-02"]
    # i-03 leaves: the two others are healthy; its own switch brings it back healthy.
    assert traffic.log == [("deploy", ("i-01",)), ("deploy", ("i-02",)),
                           ("detach", ("i-03",)), ("deploy", ("i-03",)), ("attach", ("i-03",))]
    assert state.summary().endswith("the other hosts were not all healthy): i-01, i-02")


def test_a_host_coming_back_gets_the_health_checks_time_whatever_is_left_of_its_batch():
    """The batch's deadline covers drain, switch and return; a switch that used most of it
    still leaves the return RETURN_GRACE_SECONDS (an ALB needs 2 checks 15 s apart)."""
    from devprod.rollout import RETURN_GRACE_SECONDS

    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner, health_polls=5)
    state = Rollout.new(NEW, SUM, HOSTS, timeout=300, previous=OLD)
    state = advance(state, runner, 0.0, traffic)       # i-01 leaves
    state = advance(state, runner, 1.0, traffic)       # drained: sent
    state = advance(state, runner, 295.0, traffic)     # done at 295 s: back in
    assert state.stage == "returning" and state.deadline == 295.0 + RETURN_GRACE_SECONDS
    for now in (300.0, 330.0, 360.0, 380.0, 384.0):  # the 5th look finds it healthy, before 385
        state = advance(state, runner, now, traffic)
    assert state.failure is None and state.stage == "draining" and state.running == ["i-02"]


def test_a_batch_draining_while_another_host_leaves_comes_back_and_switches_in_place():
    """Two rollouts at once (the pipeline and `devprod deploy`): each sees the others healthy and
    leaves; the next look finds the other gone, so it comes straight back rather than both out."""
    runner = ScriptedRunner()
    traffic = ScriptedTraffic(runner, drain_polls=3)
    state = advance(Rollout.new(NEW, SUM, HOSTS, previous=OLD), runner, 0.0, traffic)
    traffic.out.add("i-02")  # the other rollout took i-02 out
    state = advance(state, runner, 1.0, traffic)
    assert traffic.log == [("detach", ("i-01",)), ("attach", ("i-01",)), ("deploy", ("i-01",))]
    assert state.in_place == ["i-01"] and state.detached == [] and state.stage is None
