"""The plan benchmarks run end to end on a tiny roster (their figures are not checked:
machines are noisy; that they run and print every row is)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"\d+\.\d\d"


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_plan_scale_prints_a_row_per_roster_size():
    out = _run("benchmarks/plan_scale.py", "--repeat", "2", "2")
    row = re.search(rf"^\s+2\s+\d+\s+{NUMBER}.*$", out, re.M)
    assert row and len(row[0].split()) == 15, out  # the figures, the last the paired ratio
    assert "paired = median over rounds" in out


@pytest.mark.slow
def test_plan_layers_prints_each_layer_and_the_split():
    out = _run("benchmarks/plan_layers.py", "--repeat", "1", "2")
    counts = re.search(r"resources registered: plan (\d+), floor B (\d+), floor C (\d+)", out)
    assert counts and len(set(counts.groups())) == 1 and int(counts[1]) > 30, out  # each side registers as many
    for layer in ("floor B", "floor C", "plan"):
        assert re.search(rf"^{layer}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out, re.M), out
    assert re.search(rf"inputs \(C - B\): -?{NUMBER} s; program \(plan - C\): -?{NUMBER} s", out), out


@pytest.mark.slow
def test_plan_ab_compares_two_checkouts():
    out = _run("benchmarks/plan_ab.py", "--repeat", "1", str(ROOT), str(ROOT), "2")
    rows = re.findall(rf"plan\s+({NUMBER}) /\s+({NUMBER})\s+floor B", out)
    assert len(rows) == 2, out
    assert all(fastest == median for fastest, median in rows), out  # one process a side, not the two merged


@pytest.mark.parametrize("script,args,last", [
    ("plan_layers.py", ["1", "2"], "usage: plan_layers.py [--repeat N] [DEVELOPERS]"),
    ("plan_layers.py", ["many"], "'many' is not a positive whole number"),
    ("plan_scale.py", ["--repeat", "0", "10"], "'0' is not a positive whole number"),
    ("plan_scale.py", ["--repeat"], "usage: plan_scale.py [--repeat N] [DEVELOPERS ...]"),
    ("plan_scale.py", ["\u00b2"], "'\u00b2' is not a positive whole number"),
    ("plan_ab.py", [".", "/nowhere"], "/nowhere is not a checkout of this repository (no devprod/plan.py)"),
    ("plan_ab.py", [".", ".", "-3"], "'-3' is not a positive whole number"),
])
def test_a_bad_argument_is_the_usage_and_the_value_not_a_traceback(script, args, last):
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and done.stdout == "" and lines[0].startswith(f"usage: {script}")
    assert lines[-1] == last and len(lines) <= 2
