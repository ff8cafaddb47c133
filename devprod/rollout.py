"""Rolling deploys: one release to every production host, a batch at a time, ending on one release.

Pure logic with no AWS import: a `Runner` sends the deploy document to hosts
and reports how each ended (SSM in the Release function and the CLI, local
processes in the end-to-end test). The state is a plain dataclass that
round-trips through JSON, so the Release function can carry it in its
continuation token between invocations and `advance` can take one
non-blocking step per call.

The rule that keeps every host on one release: when any host of a batch fails
or does not finish in time, the rollout stops, every host that may have
switched is put back on the release it served before, and hosts not yet
reached are never sent anything.

Behind a load balancer (a `Traffic`), each batch first leaves it and waits
for its drain, is switched, and comes back healthy before the next batch
leaves. The balancer's kept-alive connections then never meet the nginx
reload that switches a host: a reload closes idle connections, and one the
balancer reuses at that instant is a request lost (an ALB answers it 502).
A batch that is every host stays in: leaving would leave nothing serving.
A rollback is sent to every host it puts back at once, in the balancer or not.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

DEPLOYING, ROLLING_BACK, DONE, FAILED = "deploying", "rolling-back", "done", "failed"
PHASES = (DEPLOYING, ROLLING_BACK, DONE, FAILED)
# With a balancer: the batch in `running` is leaving it (before its command) or coming back (after).
DRAINING, RETURNING = "draining", "returning"
STAGES = (None, DRAINING, RETURNING)
ACTIONS = ("deploy", "rollback")
SHA = re.compile(r"^[0-9a-f]{7,40}$")
CHECKSUM = re.compile(r"^[0-9a-f]{64}$")
# Instance ids in AWS; short names in the local test. Never a path or an option.
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# Per-host outcomes kept in `results`.
SWITCHED, FAILED_HERE, TIMED_OUT, ROLLED_BACK, NOT_ROLLED_BACK = (
    "switched", "failed", "timed out", "rolled back", "rollback failed",
)


class RolloutError(ValueError):
    """A rollout state that this module did not write (bad JSON, field or value)."""


@dataclass(frozen=True)
class HostResult:
    """How the document ended on one host: `status` as the runner names it, `detail` its output's tail."""

    ok: bool
    status: str
    detail: str = ""


class Runner(Protocol):
    def start(self, hosts: list[str], action: str, release: Optional[str], checksum: Optional[str]) -> str:
        """Send the deploy document (action 'deploy' or 'rollback') to these hosts; a handle to poll."""

    def poll(self, handle: str, hosts: list[str]) -> Mapping[str, Optional[HostResult]]:
        """Per host: None while it runs, else how it ended."""

    def cancel(self, handle: str) -> None:
        """Stop the command on every host still running it."""


class Traffic(Protocol):
    """The load balancer in front of the hosts."""

    def detach(self, hosts: list[str]) -> None:
        """Send these hosts no new requests; those in flight finish (the balancer's drain)."""

    def detached(self, hosts: list[str]) -> bool:
        """True once the balancer has finished draining every one of them."""

    def attach(self, hosts: list[str]) -> None:
        """Send them requests again once its health check passes."""

    def attached(self, hosts: list[str]) -> bool:
        """True once the balancer's health check passes on every one of them."""


@dataclass
class Rollout:
    """Where a rollout stands. `previous` is the release every host served before
    (None when unknown: deploy.sh's own record of the previous release is used)."""

    release: Optional[str]
    checksum: Optional[str]
    hosts: list[str]
    batch: int = 1
    timeout: float = 1800.0
    action: str = "deploy"
    previous: Optional[str] = None
    previous_checksum: Optional[str] = None
    phase: str = DEPLOYING
    updated: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    handle: Optional[str] = None
    deadline: Optional[float] = None
    failure: Optional[str] = None
    rollback_problem: Optional[str] = None
    results: dict[str, str] = field(default_factory=dict)
    stage: Optional[str] = None
    detached: list[str] = field(default_factory=list)  # out of the balancer by this rollout's doing
    in_place: list[str] = field(default_factory=list)  # switched in the balancer: the others were not all healthy

    @classmethod
    def new(cls, release: Optional[str], checksum: Optional[str], hosts: Sequence[str], *, batch: int = 1,
            timeout: float = 1800.0, action: str = "deploy", previous: Optional[str] = None,
            previous_checksum: Optional[str] = None) -> "Rollout":
        state = cls(release, checksum, list(dict.fromkeys(hosts)), batch, float(timeout), action,
                    previous, previous_checksum)
        state.validate()
        return state

    # ---------------------------------------------------------------- reading

    @property
    def finished(self) -> bool:
        return self.phase in (DONE, FAILED)

    @property
    def untouched(self) -> list[str]:
        return [h for h in self.hosts if h not in self.updated]

    def batches(self) -> list[list[str]]:
        """The order hosts are deployed in: `batch` at a time, in the order given."""
        return [self.hosts[i:i + self.batch] for i in range(0, len(self.hosts), self.batch)]

    def summary(self) -> str:
        """One line: what happened, naming the failing host, the reason and what was put back."""
        what = f"{self.action} {self.release or '(previous release)'}"
        in_place = f"; {self.in_place_note()}" if self.in_place else ""
        if self.phase == DONE:
            return f"{what}: all {len(self.hosts)} host(s) succeeded: {', '.join(self.hosts)}{in_place}"
        if not self.failure:
            return f"{what}: {self.phase}; {len(self.updated)} of {len(self.hosts)} host(s) reached"
        back = [h for h, r in self.results.items() if r == ROLLED_BACK]
        parts = [f"{what} failed: {self.failure}"]
        if back:
            parts.append(f"rolled back {', '.join(back)} to {self.previous or 'their previous release'}")
        if self.rollback_problem:
            parts.append(f"ROLLBACK FAILED: {self.rollback_problem}; hosts may serve different releases")
        if self.untouched:
            parts.append(f"not touched: {', '.join(self.untouched)}")
        return "; ".join(parts) + in_place

    def in_place_note(self) -> str:
        """Which hosts switched in the balancer, and why (empty when none did)."""
        if not self.in_place:
            return ""
        return (f"switched without leaving the load balancer (the other hosts were not all healthy): "
                f"{', '.join(self.in_place)}")

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Rollout":
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            state = cls(**data)
        except (TypeError, ValueError) as exc:
            raise RolloutError(f"not a rollout state: {exc}") from None
        state.validate()
        return state

    def validate(self) -> None:
        """Every field has the type and shape this module writes; raises RolloutError naming the first that does not."""
        for name, ok in self._checks():
            if not ok:
                raise RolloutError(f"rollout state field {name} is invalid: {getattr(self, name)!r}")

    def _checks(self) -> list[tuple[str, bool]]:
        def sha(value: Any, optional: bool = True) -> bool:
            return (optional and value is None) or (isinstance(value, str) and bool(SHA.match(value)))

        def digest(value: Any) -> bool:
            return value is None or (isinstance(value, str) and bool(CHECKSUM.match(value)))

        def hosts(value: Any) -> bool:
            return isinstance(value, list) and all(isinstance(h, str) and HOST.match(h) for h in value)

        number = (int, float)
        return [
            ("action", self.action in ACTIONS),
            ("release", sha(self.release, optional=self.action == "rollback")),
            ("checksum", digest(self.checksum)),
            ("hosts", hosts(self.hosts) and bool(self.hosts) and len(set(self.hosts)) == len(self.hosts)),
            ("batch", isinstance(self.batch, int) and not isinstance(self.batch, bool) and self.batch >= 1),
            ("timeout", isinstance(self.timeout, number) and self.timeout > 0),
            ("previous", sha(self.previous)),
            ("previous_checksum", digest(self.previous_checksum)),
            ("phase", self.phase in PHASES),
            ("updated", hosts(self.updated) and set(self.updated) <= set(self.hosts)),
            # Only a rollback's command reaches more hosts than a batch; only a batch is out of the balancer.
            ("running", hosts(self.running) and set(self.running) <= set(self.hosts)
             and (len(self.running) <= self.batch or (self.phase == ROLLING_BACK and self.stage is None))),
            ("handle", self.handle is None or (isinstance(self.handle, str) and 0 < len(self.handle) <= 200)),
            ("deadline", self.deadline is None or isinstance(self.deadline, number)),
            ("failure", self.failure is None or isinstance(self.failure, str)),
            ("rollback_problem", self.rollback_problem is None or isinstance(self.rollback_problem, str)),
            ("results", isinstance(self.results, dict) and set(self.results) <= set(self.hosts)
             and all(isinstance(v, str) for v in self.results.values())),
            ("stage", self.stage in STAGES),
            ("detached", hosts(self.detached) and set(self.detached) <= set(self.hosts)
             and len(self.detached) <= self.batch),
            ("in_place", hosts(self.in_place) and set(self.in_place) <= set(self.hosts)),
        ]


# -------------------------------------------------------------------- stepping


def advance(state: Rollout, runner: Runner, now: float, traffic: Optional[Traffic] = None) -> Rollout:
    """One non-blocking step: start the next command or follow the running one (or the balancer)."""
    if state.finished:
        return state
    if state.stage is not None:
        if traffic is None:
            raise RolloutError(f"the rollout is {state.stage} hosts of a load balancer, and none was given")
        return (_draining if state.stage == DRAINING else _returning)(state, runner, traffic, now)
    if state.handle is None:
        return _start_next(state, runner, now, traffic)
    results = dict(runner.poll(state.handle, state.running))
    waiting = [h for h in state.running if results.get(h) is None]
    if waiting and now < (state.deadline or 0):
        return state
    if waiting:
        runner.cancel(state.handle)
    if state.phase == ROLLING_BACK:
        return _rollback_ended(state, results, waiting, traffic, now)
    return _batch_ended(state, runner, results, waiting, now, traffic)


def _start_next(state: Rollout, runner: Runner, now: float, traffic: Optional[Traffic]) -> Rollout:
    if state.phase == ROLLING_BACK:  # a rollback whose command never started (the send failed before)
        return _start_rollback(state, runner, now, traffic)
    pending = state.untouched
    if not pending:
        state.phase = DONE
        return state
    hosts = pending[: state.batch]
    if traffic is not None and len(hosts) < len(state.hosts):
        if _others_serve(state, traffic, hosts):
            # Recorded first: a detach that raises halfway is waited for (and undone) all the same.
            state.detached, state.running, state.stage = list(hosts), list(hosts), DRAINING
            state.deadline = now + state.timeout  # one deadline for the batch: drain, switch, return
            traffic.detach(list(hosts))
            return state
        state.in_place.extend(hosts)  # leaving would leave no healthy host: switched where they are
    state.updated.extend(hosts)
    return _send(state, runner, hosts, state.action, state.release, state.checksum, now)


def _others_serve(state: Rollout, traffic: Traffic, hosts: list[str]) -> bool:
    """Every host outside the batch is healthy in the balancer: the batch may leave it. Else
    leaving would send all traffic to unhealthy hosts (an ALB then fails open to them)."""
    return traffic.attached([h for h in state.hosts if h not in hosts])


def _send(state: Rollout, runner: Runner, hosts: list[str], action: str, release: Optional[str],
          checksum: Optional[str], now: float, deadline: Optional[float] = None) -> Rollout:
    state.running = list(hosts)
    state.handle = runner.start(list(hosts), action, release, checksum)
    state.deadline = deadline if deadline is not None else now + state.timeout
    return state


def _draining(state: Rollout, runner: Runner, traffic: Traffic, now: float) -> Rollout:
    hosts = state.running
    back_in = state.phase == DEPLOYING and not _others_serve(state, traffic, hosts)
    if back_in:
        # Another host left meanwhile (a second rollout, a failing host): back in at once,
        # and switched where it is, rather than both out at the same time.
        traffic.attach(list(hosts))
        state.detached = []
        state.in_place.extend(hosts)
    if back_in or traffic.detached(hosts):
        state.stage = None
        state.updated.extend(hosts)
        return _send(state, runner, hosts, state.action, state.release, state.checksum, now, state.deadline)
    if now < (state.deadline or 0):
        return state
    state.stage, state.running = None, []
    state.failure = (f"host(s) {', '.join(hosts)} still draining from the load balancer after "
                     f"{state.timeout:.0f}s; nothing was sent to them")
    return _start_rollback(state, runner, now, traffic)


def _returning(state: Rollout, runner: Runner, traffic: Traffic, now: float) -> Rollout:
    hosts = state.running
    back = traffic.attached(hosts)
    if not back and now < (state.deadline or 0):
        return state
    # Registered either way: from here the balancer's health check decides whether they serve.
    state.stage, state.running = None, []
    state.detached = [h for h in state.detached if h not in hosts]
    late = f"host(s) {', '.join(hosts)} not healthy in the load balancer by the deadline after"
    if state.phase == ROLLING_BACK:
        if not back:
            state.rollback_problem = "; ".join(filter(None, [state.rollback_problem, f"{late} the rollback"]))
        state.phase, state.deadline = FAILED, None
        return state
    if back:
        state.deadline = None
        return _start_next(state, runner, now, traffic)
    state.failure = f"{late} their switch"
    return _start_rollback(state, runner, now, traffic)


# A host coming back needs the balancer's health check to pass (an ALB: 2 checks 15 s apart):
# at least this long, whatever is left of its batch's deadline (counted in the Release budget).
RETURN_GRACE_SECONDS = 90.0


def _come_back(state: Rollout, traffic: Traffic, hosts: list[str], deadline: float, now: float) -> Rollout:
    deadline = max(deadline, now + min(RETURN_GRACE_SECONDS, state.timeout))
    state.running, state.stage, state.deadline = list(hosts), RETURNING, deadline
    traffic.attach(list(hosts))
    return state


def _batch_ended(state: Rollout, runner: Runner, results: Mapping[str, Optional[HostResult]],
                 waiting: list[str], now: float, traffic: Optional[Traffic]) -> Rollout:
    failed = [h for h in state.running if h not in waiting and not results[h].ok]  # type: ignore[union-attr]
    for host in state.running:
        state.results[host] = TIMED_OUT if host in waiting else (FAILED_HERE if host in failed else SWITCHED)
    if not failed and not waiting:
        state.handle, state.running = None, []
        if state.detached and traffic is not None:  # back in before the next batch leaves
            return _come_back(state, traffic, state.detached, state.deadline or now + state.timeout, now)
        state.deadline = None
        return _start_next(state, runner, now, traffic)
    reasons = [f"host {h} failed: {_reason(results[h])}" for h in failed]  # type: ignore[arg-type]
    reasons += [f"host {h} did not finish within {state.timeout:.0f}s (command cancelled)" for h in waiting]
    state.failure = "; ".join(reasons)
    return _start_rollback(state, runner, now, traffic)


def rollback_targets(state: Rollout) -> list[str]:
    """Which hosts to put back, and why each is safe.

    - A host that switched serves the new release: it goes back.
    - A host whose deploy failed was left on its live release by deploy.sh (a
      failed gate never takes traffic; a failure after the switch is rolled
      back on the host). With `previous` known, it is sent an explicit
      rollback to it anyway, a no-op when it already serves it. Without it,
      "roll back" on that host would mean the release before its live one, so
      it is left alone.
    - A host that timed out was cancelled at an unknown point: an explicit
      rollback to `previous`, or, when that is unknown, deploy.sh's own
      recovery (an interrupted deploy puts the last verified release back).
    """
    known = state.previous is not None
    return [
        h for h in state.updated
        if state.results.get(h) in (SWITCHED, TIMED_OUT) or (known and state.results.get(h) == FAILED_HERE)
    ]


def _start_rollback(state: Rollout, runner: Runner, now: float, traffic: Optional[Traffic]) -> Rollout:
    state.phase = ROLLING_BACK
    targets = rollback_targets(state)
    if not targets:
        state.handle, state.running = None, []
        return _rollback_done(state, traffic, now)
    state.handle = None  # if start raises, the next step retries the rollback, never the deploy
    return _send(state, runner, targets, "rollback", state.previous, state.previous_checksum, now)


def _rollback_ended(state: Rollout, results: Mapping[str, Optional[HostResult]], waiting: list[str],
                    traffic: Optional[Traffic], now: float) -> Rollout:
    problems = []
    for host in state.running:
        result = results.get(host)
        if result is not None and result.ok:
            state.results[host] = ROLLED_BACK
            continue
        state.results[host] = NOT_ROLLED_BACK
        problems.append(f"host {host}: " + ("did not finish" if result is None else _reason(result)))
    state.rollback_problem = "; ".join(problems) or None
    state.handle, state.running = None, []
    return _rollback_done(state, traffic, now)


def _rollback_done(state: Rollout, traffic: Optional[Traffic], now: float) -> Rollout:
    """Hosts this rollout took out of the balancer go back in, rolled back or never sent anything."""
    if state.detached and traffic is not None:
        return _come_back(state, traffic, state.detached, now, now)  # the grace only: the budget counts it
    state.phase, state.deadline = FAILED, None
    return state


def _reason(result: HostResult) -> str:
    lines = [line for line in result.detail.strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-3:])[-400:]
    return f"{result.status}: {tail}" if tail else result.status


def run(state: Rollout, runner: Runner, clock: Callable[[], float], sleep: Callable[[float], None],
        poll_seconds: float = 5.0, on_update: Callable[[Rollout], None] = lambda _s: None,
        traffic: Optional[Traffic] = None) -> Rollout:
    """Advance until the rollout is finished (the CLI and the end-to-end test)."""
    while True:
        state = advance(state, runner, clock(), traffic)
        on_update(state)
        if state.finished:
            return state
        sleep(poll_seconds)
