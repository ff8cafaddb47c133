"""Delivery metrics: a week of executions with a known answer, then edge cases, all pure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devprod import metrics
from devprod.metrics import Run

UTC = timezone.utc
UNTIL = datetime(2026, 11, 9, tzinfo=UTC)  # a Monday; the window is the week before
SINCE = UNTIL - timedelta(days=7)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def run(id_, status, started, ended, commit_time=None, failed_stage=None, rolled_back_at=None):
    return Run(id_, f"{id_:0<40}"[:40], status, "StartPipelineExecution", started, ended, commit_time, failed_stage,
               rolled_back_at)


# id, status, start, end, commit time, failed stage, rolled back at; what each row is for on the right
WEEK = [
    run("r0", "Succeeded", at(1, 23, 50), at(1, 23, 59), at(1, 23, 0)),        # ended before the window
    run("r1", "Succeeded", at(2, 9, 30), at(2, 9, 40), at(2, 9, 0)),            # lead 40m
    run("r2", "Failed", at(2, 14, 0), at(2, 14, 5), at(2, 13, 0), "Test"),      # tests stopped it: no deploy
    run("r3", "Succeeded", at(3, 10, 10), at(3, 10, 20), at(3, 10, 0)),         # lead 20m
    run("r4", "Failed", at(4, 11, 0), at(4, 11, 15), at(4, 10, 50), "Release"), # failed deploy: outage opens
    run("r5", "Succeeded", at(4, 11, 40), at(4, 11, 55), at(4, 11, 30)),        # lead 25m; restores r4 in 40m
    run("r6", "Succeeded", at(5, 15, 50), at(5, 16, 0), at(5, 15, 0), None, at(5, 16, 30)),  # lead 60m, rolled back after 30m
    run("r7", "Superseded", at(6, 9, 0), at(6, 9, 3)),                          # not a deploy
    run("r8", "Succeeded", at(7, 9, 0), at(7, 9, 12)),                          # no commit time: pipeline 12m
    run("r9", "InProgress", at(8, 23, 0), None),                                # still running: not counted
]


def test_a_week_of_executions_gives_the_known_answer():
    m = metrics.compute(WEEK, UNTIL, days=7)
    assert (m.since, m.until) == (SINCE, UNTIL)
    assert m.runs == 8  # r1..r8 ended in the window
    assert (m.deploys, m.live_deploys, m.failures) == (6, 5, 2)
    assert m.deploys_per_week == 5.0
    assert m.median_lead_time == timedelta(minutes=25)  # of 12, 20, 25, 40, 60
    assert m.lead_time_basis == "mixed"
    assert m.change_failure_rate == pytest.approx(2 / 6)
    assert m.median_time_to_restore == timedelta(minutes=35)  # of 40 (r4 -> r5) and 30 (r6's rollback)
    assert (m.restores, m.unrestored) == (2, 0)
    assert m.notes == ["lead time runs from pipeline start where the commit time is unknown",
                       "1 execution(s) still running are not counted"]


@pytest.mark.parametrize(
    "runs, days, per_week, lead, basis, rate, restore, unrestored",
    [
        # no executions at all
        ([], 7, 0.0, None, "none", None, None, 0),
        # every one failed while deploying: one open outage, nothing went live
        ([run("f1", "Failed", at(3, 9), at(3, 9, 10), None, "Release"),
          run("f2", "Failed", at(4, 9), at(4, 9, 10), None, "Release")], 7, 0.0, None, "none", 1.0, None, 1),
        # a failure whose stage is unknown counts as a failed deploy
        ([run("u1", "Failed", at(3, 9), at(3, 9, 10)),
          run("u2", "Succeeded", at(3, 10), at(3, 10, 5), at(3, 9, 55))], 7, 1.0, timedelta(minutes=10), "commit",
         0.5, timedelta(minutes=55), 0),
        # consecutive failures are one outage, measured from the first
        ([run("c1", "Failed", at(3, 9), at(3, 9, 10), None, "Release"),
          run("c2", "Failed", at(3, 9, 20), at(3, 9, 30), None, "Deploy"),
          run("c3", "Succeeded", at(3, 9, 40), at(3, 10, 10))], 7, 1.0, timedelta(minutes=30), "pipeline",
         pytest.approx(2 / 3), timedelta(hours=1), 0),
        # a window of two weeks halves the rate
        ([run("w1", "Succeeded", at(3, 9), at(3, 9, 10)), run("w2", "Succeeded", at(4, 9), at(4, 9, 10))], 14,
         1.0, timedelta(minutes=10), "pipeline", 0.0, None, 0),
        # tests failing, a stop by hand and a superseded run are no deploys
        ([run("t1", "Failed", at(3, 9), at(3, 9, 10), None, "Test"), run("t2", "Stopped", at(3, 10), at(3, 10, 1)),
          run("t3", "Superseded", at(3, 11), at(3, 11, 1))], 7, 0.0, None, "none", None, None, 0),
    ],
    ids=["empty", "all-failed", "unknown-stage", "consecutive-failures", "two-weeks", "no-deploys"],
)
def test_edge_cases(runs, days, per_week, lead, basis, rate, restore, unrestored):
    m = metrics.compute(runs, UNTIL, days=days)
    assert m.deploys_per_week == per_week
    assert (m.median_lead_time, m.lead_time_basis) == (lead, basis)
    assert m.change_failure_rate == rate
    assert (m.median_time_to_restore, m.unrestored) == (restore, unrestored)


def test_window_boundaries_include_since_and_exclude_until():
    on_since = run("b1", "Succeeded", SINCE - timedelta(minutes=5), SINCE)
    on_until = run("b2", "Succeeded", UNTIL - timedelta(minutes=5), UNTIL)
    m = metrics.compute([on_since, on_until], UNTIL, days=7)
    assert m.runs == 1 and m.live_deploys == 1
    assert m.median_lead_time == timedelta(minutes=5)


def test_an_outage_that_began_before_the_window_is_not_counted_but_closes():
    before = run("p1", "Failed", SINCE - timedelta(hours=2), SINCE - timedelta(hours=1), None, "Release")
    fixed = run("p2", "Succeeded", SINCE + timedelta(hours=1), SINCE + timedelta(hours=1, minutes=5))
    m = metrics.compute([before, fixed], UNTIL, days=7)
    assert (m.restores, m.unrestored, m.median_time_to_restore) == (0, 0, None)
    assert m.change_failure_rate == 0.0  # the failure ended outside the window


def test_a_rollback_after_the_window_leaves_the_outage_open():
    rolled = run("o1", "Succeeded", at(8, 22), at(8, 22, 10), None, None, UNTIL + timedelta(hours=1))
    m = metrics.compute([rolled], UNTIL, days=7)
    assert m.failures == 1 and m.unrestored == 1 and m.restores == 0


def test_a_good_release_before_the_rollback_restores_first():
    bad = run("g1", "Succeeded", at(3, 9), at(3, 9, 10), None, None, at(3, 12))
    good = run("g2", "Succeeded", at(3, 9, 20), at(3, 9, 40))
    times, open_ = metrics.restore_times([bad, good], SINCE, UNTIL)
    assert times == [timedelta(minutes=30)] and open_ == 0


def test_a_zero_or_negative_window_is_refused():
    with pytest.raises(ValueError, match="at least one day"):
        metrics.compute([], UNTIL, days=0)
    with pytest.raises(ValueError, match="longer than zero"):
        metrics.deploys_per_week([], UNTIL, UNTIL)


@pytest.mark.parametrize("seconds, text", [(None, "-"), (45, "45s"), (725, "12m05s"), (12000, "3h20m"),
                                           (187200, "2d04h"), (-30, "-30s")])
def test_short_duration(seconds, text):
    assert metrics.short_duration(None if seconds is None else timedelta(seconds=seconds)) == text


def test_describe_says_how_each_figure_is_computed_in_80_columns():
    lines = metrics.describe(metrics.compute(WEEK, UNTIL, days=7))
    assert all(len(line) <= 80 for line in lines), [l for l in lines if len(l) > 80]
    text = "\n".join(lines)
    assert "deploys per week        5.0  (5 live in 7 days)" in text
    assert "median lead time        25m00s  (from commit or pipeline start)" in text
    assert "change-failure rate     33%  (2 of 6 deploys)" in text
    assert "median time to restore  35m00s  (2 restored, 0 open)" in text
    for name in metrics.HOW:
        assert f"  {name}: " in text
    assert text.splitlines()[-1].startswith("  ") or "note:" in text
