"""Delivery metrics (deploy frequency, lead time, change-failure rate, time to restore) from pipeline runs.

Pure functions over `Run` records: no AWS calls, no clock of their own (the
window's end is passed in), so every figure can be checked against a table.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Sequence

# Stages whose failure means the change reached (or was being put on) the
# production hosts. A failure in Source or Test is the pipeline stopping a bad
# change before production: not a change failure.
DEPLOY_STAGES = frozenset({"Release", "Deploy"})
FINISHED = frozenset({"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"})


@dataclass(frozen=True)
class Run:
    """One pipeline execution, as the metrics see it.

    `status` is CodePipeline's (Succeeded, Failed, Stopped, Superseded,
    InProgress, ...). `failed_stage` is the stage that failed, when known.
    `rolled_back_at` is when an operator rolled production back from this
    release (a `rollback` command of the deploy document), when that happened.
    `commit_time` is the commit's own time (committer date), when known.
    """

    id: str
    commit: str | None
    status: str
    trigger: str | None
    started: datetime | None
    ended: datetime | None
    commit_time: datetime | None = None
    failed_stage: str | None = None
    rolled_back_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED and self.ended is not None

    @property
    def live(self) -> bool:
        """The release went live: the execution succeeded (it may have been rolled back since)."""
        return self.status == "Succeeded" and self.ended is not None

    @property
    def deploy(self) -> bool:
        """A deploy attempt: it went live, or it failed while deploying (or where it failed is unknown)."""
        if self.live:
            return True
        return self.status == "Failed" and self.ended is not None and (
            self.failed_stage is None or self.failed_stage in DEPLOY_STAGES
        )

    @property
    def change_failure(self) -> bool:
        """A deploy that failed, or that went live and was rolled back."""
        return self.deploy and (self.status == "Failed" or self.rolled_back_at is not None)

    @property
    def duration(self) -> timedelta | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass(frozen=True)
class Metrics:
    """The figures over one window, with how many runs each is based on."""

    since: datetime
    until: datetime
    runs: int
    deploys: int
    live_deploys: int
    failures: int
    deploys_per_week: float
    median_lead_time: timedelta | None
    lead_time_basis: str  # "commit", "pipeline", "mixed" or "none"
    change_failure_rate: float | None
    median_time_to_restore: timedelta | None
    restores: int
    unrestored: int
    notes: list[str] = field(default_factory=list)


def in_window(run: Run, since: datetime, until: datetime) -> bool:
    """A run belongs to the window when it ended in [since, until): a start before `since` still counts."""
    return run.ended is not None and since <= run.ended < until


def deploys_per_week(runs: Iterable[Run], since: datetime, until: datetime) -> float:
    """Releases that went live (status Succeeded) and ended in [since, until), divided by the window's
    length in weeks (days / 7). Rolled-back releases still count: they were deployed."""
    weeks = (until - since) / timedelta(days=7)
    if weeks <= 0:
        raise ValueError(f"the window must be longer than zero (since {since}, until {until})")
    return sum(1 for r in runs if r.live and in_window(r, since, until)) / weeks


def lead_times(runs: Iterable[Run], since: datetime, until: datetime) -> tuple[list[timedelta], str]:
    """Lead time of each release that went live in the window, and which clock it started from.

    Commit to live: `commit_time` to the execution's end (the Release stage
    ends when every host passed its health gate). Where the commit time is
    unknown, pipeline start to live (`started` to `ended`): shorter, since it
    leaves out review, CI and the upload. The basis is "commit" when every
    figure used the commit time, "pipeline" when none did, else "mixed".
    """
    times: list[timedelta] = []
    bases: set[str] = set()
    for run in runs:
        if not (run.live and in_window(run, since, until)):
            continue
        if run.commit_time is not None:
            times.append(run.ended - run.commit_time)  # type: ignore[operator]
            bases.add("commit")
        elif run.started is not None:
            times.append(run.ended - run.started)  # type: ignore[operator]
            bases.add("pipeline")
    basis = "none" if not bases else bases.pop() if len(bases) == 1 else "mixed"
    return times, basis


def change_failure_rate(runs: Iterable[Run], since: datetime, until: datetime) -> float | None:
    """Failed or rolled-back deploys divided by all deploys ending in the window; None without deploys.

    A deploy is a run that went live or failed in a deploy stage (Release,
    Deploy) or failed where the stage is unknown. A run stopped by its tests,
    stopped by hand or superseded is not a deploy, so it is in neither count.
    A failed deploy counts even though deploy.sh kept the last good release
    serving: the change failed to go out.
    """
    deploys = [r for r in runs if r.deploy and in_window(r, since, until)]
    if not deploys:
        return None
    return sum(1 for r in deploys if r.change_failure) / len(deploys)


def restore_times(runs: Sequence[Run], since: datetime, until: datetime) -> tuple[list[timedelta], int]:
    """Time to restore per failure episode that began in the window; and how many are not restored yet.

    Runs are taken in order of their end. An episode begins with a change
    failure: a failed deploy (at its end) or a rolled-back release (at its end,
    when it went live). It ends at the first later good release, a live run
    never rolled back, at that run's end; for a rolled-back release, its
    rollback ends it when that came sooner. Failures inside an open episode
    join it (one outage, one figure). Later runs are looked at up to `until`.
    """
    ordered = sorted((r for r in runs if r.ended is not None and r.ended < until), key=lambda r: r.ended)  # type: ignore[arg-type, return-value]
    times: list[timedelta] = []
    open_since: datetime | None = None
    open_rollback: datetime | None = None
    unrestored = 0

    def close(at: datetime) -> None:
        nonlocal open_since, open_rollback
        if open_since is not None and open_since >= since:
            times.append(at - open_since)
        open_since, open_rollback = None, None

    for run in ordered:
        if open_since is not None and open_rollback is not None and open_rollback <= run.ended:  # type: ignore[operator]
            close(open_rollback)
        if run.deploy and run.change_failure:
            if open_since is None:
                open_since = run.ended
                open_rollback = run.rolled_back_at
            elif run.rolled_back_at is not None and open_rollback is None:
                open_rollback = run.rolled_back_at
        elif run.live and open_since is not None:
            close(run.ended)  # type: ignore[arg-type]
    if open_since is not None:
        if open_rollback is not None and open_rollback < until:
            close(open_rollback)
        elif open_since >= since:
            unrestored += 1
    return times, unrestored


def median(values: Sequence[timedelta]) -> timedelta | None:
    """The median (the mean of the middle two for an even count); None for no values."""
    if not values:
        return None
    return timedelta(seconds=statistics.median(v.total_seconds() for v in values))


def compute(runs: Sequence[Run], until: datetime, days: int = 28) -> Metrics:
    """Every figure over the window [until - days, until)."""
    if days <= 0:
        raise ValueError(f"the window must be at least one day, got {days}")
    since = until - timedelta(days=days)
    windowed = [r for r in runs if in_window(r, since, until)]
    leads, basis = lead_times(runs, since, until)
    restores, unrestored = restore_times(runs, since, until)
    deploys = [r for r in windowed if r.deploy]
    notes = []
    if basis in ("pipeline", "mixed"):
        notes.append("lead time runs from pipeline start where the commit time is unknown")
    running = sum(1 for r in runs if not r.finished)
    if running:
        notes.append(f"{running} execution(s) still running are not counted")
    return Metrics(
        since=since,
        until=until,
        runs=len(windowed),
        deploys=len(deploys),
        live_deploys=sum(1 for r in deploys if r.live),
        failures=sum(1 for r in deploys if r.change_failure),
        deploys_per_week=deploys_per_week(runs, since, until),
        median_lead_time=median(leads),
        lead_time_basis=basis,
        change_failure_rate=change_failure_rate(runs, since, until),
        median_time_to_restore=median(restores),
        restores=len(restores),
        unrestored=unrestored,
        notes=notes,
    )


def short_duration(value: timedelta | float | None) -> str:
    """'45s', '12m05s', '3h20m', '2d04h' (truncated); '-' for unknown."""
    if value is None:
        return "-"
    # Truncated, as a stopwatch shows it: 7m00.9s is 7m00s.
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if seconds < 0:
        return "-" + short_duration(float(-seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


HOW = {
    "deploys per week": "releases that went live (execution Succeeded) ending in the window / (days / 7)",
    "median lead time": "commit time -> execution end (live), per live release; pipeline start where the commit time is unknown",
    "change-failure rate": "deploys that failed or were rolled back / deploys (went live, or failed in the Release stage)",
    "median time to restore": "first failed or rolled-back deploy -> end of the next good release (or the rollback)",
}


def describe(m: Metrics) -> list[str]:
    """The figures as lines of at most 80 columns, each with how it was computed."""
    rate = "-" if m.change_failure_rate is None else f"{m.change_failure_rate:.0%}"
    days = round((m.until - m.since) / timedelta(days=1))
    lines = [
        f"delivery metrics, last {days} days ({m.since:%Y-%m-%d} to {m.until:%Y-%m-%d %H:%M} UTC):",
        f"  deploys per week        {m.deploys_per_week:.1f}  ({m.live_deploys} live in {days} days)",
        f"  median lead time        {short_duration(m.median_lead_time)}  (from {_basis(m.lead_time_basis)})",
        f"  change-failure rate     {rate}  ({m.failures} of {m.deploys} deploys)",
        f"  median time to restore  {short_duration(m.median_time_to_restore)}  ({m.restores} restored, "
        f"{m.unrestored} open)",
        "how:",
    ]
    for name, how in HOW.items():
        lines.extend(_wrap(f"  {name}: {how}", "    "))
    for note in m.notes:
        lines.extend(_wrap(f"note: {note}", "  "))
    return lines


def _basis(basis: str) -> str:
    return {"commit": "commit time", "pipeline": "pipeline start", "mixed": "commit or pipeline start"}.get(basis, "-")


def _wrap(text: str, indent: str, width: int = 80) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, subsequent_indent=indent, break_on_hyphens=False) or [""]
