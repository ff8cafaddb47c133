"""Where the plan's CPU goes beyond floor B: its resources' inputs, or its program.

For one roster size, in fresh processes, round after round (interleaved, as in
`plan_ab.py`), the CPU seconds of:

- floor B: `plan_scale.py`'s floor (imports, the service modules, as many resources
  as the plan registers, each with one input);
- floor C: floor B's imports and modules, then every custom resource the plan
  registered, with the same type, name and recorded inputs, registered as a plain
  resource whose class declares a getter per input (as pulumi_aws classes do, so
  the offline properties stay unread), and one one-input resource for each other
  registration (the components), so that it registers as many as floor B: no
  components, no parents, no Outputs, no applies, no exports, no config. Reading
  the recorded inputs is not counted, nor is writing them in the plan's process;
- the plan itself.

floor C minus floor B is what the plan's inputs cost; the plan minus floor C is
devprod's program: its imports (pydantic, components), the config, components and
their outputs, the pulumi_aws constructors and the Outputs between resources.
Prints the fastest and the median of each; asserts nothing.

    .venv/bin/python benchmarks/plan_layers.py [--repeat N] [DEVELOPERS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.plan_ab import project  # noqa: E402
from benchmarks.plan_scale import FLOOR, PLAN, ROOT, count, machine, options, run  # noqa: E402

# The plan, then (after its figures are taken) writing what it registered for floor C:
# each custom resource's type, name and inputs, and how many others (components).
RECORD = PLAN.replace("print(json.dumps(", "figures = (").replace(
    "}}))\n", "}})\n"
    "json.dump([[[r.type, r.name, r.inputs] for r in plan.resources if r.custom],\n"
    "           sum(not r.custom for r in plan.resources)], open({out!r}, 'w'))\n"
    "print(json.dumps(figures))\n")

# Floor B's set-up as it is (imports, service modules, the recorder, its one-input class),
# then the plan's own resources.
FLOOR_C = FLOOR[:FLOOR.index("t1 = time.perf_counter()")] + """c1 = time.process_time()
rows, others = json.load(open({recorded!r}))
reading = time.process_time() - c1  # not the floor's: taken out of its CPU below
names = {{}}
for kind, _, inputs in rows:
    names.setdefault(kind, set()).update(inputs)
def getter(name):
    return property(lambda self: pulumi.get(self, name))
def init(self, kind, name, inputs):
    pulumi.CustomResource.__init__(self, kind, name, inputs)
classes = {{kind: type("Plain", (pulumi.CustomResource,), {{"__init__": init, **{{n: getter(n) for n in found}}}})
           for kind, found in names.items()}}
def program():
    [classes[kind](kind, name, inputs) for kind, name, inputs in rows]
    [Plain(f"r{{i}}") for i in range(others)]  # as many registrations as the plan and floor B
record(program, project="bench", stack="bench")
print(json.dumps({{"cpu": time.process_time() - c0 - reading, "resources": len(rows) + others}}))
"""


def main(size: int, repeat: int) -> None:
    print(machine())
    cpu: dict[str, list[float]] = {"floor B": [], "floor C": [], "plan": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder, recorded = project(Path(tmp) / "p", ROOT, size), str(Path(tmp) / "recorded.json")
        fmt = dict(root=str(ROOT), project=str(folder))
        for round_ in range(repeat):
            print(f"round {round_ + 1}/{repeat}", file=sys.stderr)
            plan = run(RECORD.format(out=recorded, **fmt))
            cpu["plan"].append(plan["cpu"])
            cpu["floor B"].append(run(FLOOR.format(count=plan["resources"], **fmt))["cpu"])
            floor_c = run(FLOOR_C.format(recorded=recorded, **fmt))
            cpu["floor C"].append(floor_c["cpu"])
    print(f"resources registered: plan {plan['resources']}, floor B {plan['resources']}, "
          f"floor C {floor_c['resources']}")
    print(f"{size} developers, CPU seconds of {repeat} fresh processes each")
    fastest = {name: min(values) for name, values in cpu.items()}
    median = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"{'':8} {'fastest':>8} {'median':>8} {'x B (fastest)':>14} {'x B (median)':>13}")
    for name in cpu:
        print(f"{name:8} {fastest[name]:8.2f} {median[name]:8.2f} {fastest[name] / fastest['floor B']:14.2f}"
              f" {median[name] / median['floor B']:13.2f}")
    print(f"inputs (C - B): {median['floor C'] - median['floor B']:.2f} s; "
          f"program (plan - C): {median['plan'] - median['floor C']:.2f} s (medians)")


if __name__ == "__main__":
    USAGE = "usage: plan_layers.py [--repeat N] [DEVELOPERS]"
    repeat, args = options(sys.argv[1:], USAGE, 3)
    if len(args) > 1:
        sys.exit(USAGE)
    main(count(args[0], USAGE) if args else 400, repeat)
