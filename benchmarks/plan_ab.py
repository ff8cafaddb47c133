"""Plan and floor B CPU of two checkouts, interleaved: is a change faster, and does the ratio move?

For one roster size: the plan of checkout A, floor B of A, the plan of B, floor B of B,
round after round, each in a fresh process (the same code as `plan_scale.py`), so that
load from elsewhere lands on both sides alike. Prints the fastest and the median CPU
seconds of each, and the ratios. Asserts nothing.

    .venv/bin/python benchmarks/plan_ab.py [--repeat N] CHECKOUT_A CHECKOUT_B [DEVELOPERS]

A checkout is a folder holding this repository (`git worktree add /tmp/base REV`); both
run with this interpreter and its packages. Byte-compile both first (`python -m
compileall devprod components policy`): `make` does so for this one.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.plan_scale import FLOOR, PLAN, count, machine, options, roster, run  # noqa: E402


def project(folder: Path, checkout: Path, size: int) -> Path:
    """A project folder planning `size` generated developers with `checkout`'s program."""
    folder.mkdir()
    for name in ("__main__.py", "Pulumi.yaml", "components", "scripts"):
        (folder / name).symlink_to(checkout / name)
    (folder / "Pulumi.bench.yaml").write_text(roster(size))
    return folder


def main(checkouts: list[Path], size: int, repeat: int) -> None:
    print(machine())
    # By position, not by path: the same checkout twice is two sides (a noise check).
    cpu: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        projects = [project(Path(tmp) / f"p{i}", c, size) for i, c in enumerate(checkouts)]
        for round_ in range(repeat):
            print(f"round {round_ + 1}/{repeat}", file=sys.stderr)
            for side, checkout in enumerate(checkouts):
                fmt = dict(root=str(checkout), project=str(projects[side]))
                plan = run(PLAN.format(**fmt))
                cpu.setdefault((side, "plan"), []).append(plan["cpu"])
                floor = run(FLOOR.format(count=plan["resources"], **fmt))
                cpu.setdefault((side, "floor"), []).append(floor["cpu"])
    print(f"{size} developers, CPU seconds of {repeat} fresh processes each (fastest / median)")
    for side, checkout in enumerate(checkouts):
        plans, floors = cpu[(side, "plan")], cpu[(side, "floor")]
        print(f"{str(checkout)[-28:]:>28}  plan {min(plans):5.2f} / {statistics.median(plans):5.2f}"
              f"  floor B {min(floors):5.2f} / {statistics.median(floors):5.2f}"
              f"  ratio {min(plans) / min(floors):4.2f} / {statistics.median(plans) / statistics.median(floors):4.2f}")


if __name__ == "__main__":
    USAGE = "usage: plan_ab.py [--repeat N] CHECKOUT_A CHECKOUT_B [DEVELOPERS]"
    repeat, args = options(sys.argv[1:], USAGE, 5)
    if len(args) not in (2, 3):
        sys.exit(USAGE)
    for checkout in args[:2]:
        if not (Path(checkout) / "devprod" / "plan.py").is_file():
            sys.exit(f"{USAGE}\n{checkout} is not a checkout of this repository (no devprod/plan.py)")
    main([Path(a).resolve() for a in args[:2]], count(args[2], USAGE) if len(args) == 3 else 400, repeat)
