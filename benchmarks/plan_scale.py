"""Plan time for generated rosters against the floor the SDK itself sets, in one run.

For N developers: the offline plan (fresh process: import + config + mocks run)
versus a floor measured in a fresh process: importing pulumi, pulumi_aws and
pulumi_github, plus registering the same number of plain resources under the
same recording mocks. Prints a table; asserts nothing (machines are noisy).
Wall time is what a user waits; CPU time (the process's own) is what stays
comparable when other work shares the cores.
Each figure is the fastest of --repeat fresh processes (default 3), plan and
floor alternating, so that a burst of load from elsewhere does not land on one
side of a ratio only.

    .venv/bin/python benchmarks/plan_scale.py [--repeat N] [10 100 400]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMF6oIOB13KcUJRUajc0dZQKQN+1SvR1BVAl/kIXA6vP bench@host"

PLAN = """
import sys, time, json
t0, c0 = time.perf_counter(), time.process_time()
sys.path[:0] = [{root!r}]
from devprod.plan import plan_stack
from pathlib import Path
plan = plan_stack(Path({project!r}), "bench")
print(json.dumps({{"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "resources": len(plan.resources)}}))
"""

FLOOR = """
import sys, time, json
t0, c0 = time.perf_counter(), time.process_time()
sys.path[:0] = [{root!r}]
import pulumi, pulumi_aws, pulumi_github
t_import = time.perf_counter() - t0
# pulumi_aws loads its service modules lazily; the program touches these. The plan
# loads them while it runs, with the cyclic collector paused: so does the floor.
import gc
gc.disable()
from pulumi_aws import cloudwatch, ebs, ec2, iam, scheduler, ssm
(ec2.Instance, ec2.Vpc, iam.Role, ebs.Volume, cloudwatch.MetricAlarm, scheduler.Schedule, ssm.get_parameter_output)
gc.enable()
t_modules = time.perf_counter() - t0 - t_import
c_imports = time.process_time() - c0
from devprod.plan import record
class Plain(pulumi.CustomResource):
    def __init__(self, name):
        super().__init__("bench:index:Plain", name, {{"value": name}})
t1 = time.perf_counter()
record(lambda: [Plain(f"r{{i}}") for i in range({count})], project="bench", stack="bench")
t_register = time.perf_counter() - t1
print(json.dumps({{"import": t_import, "modules": t_modules, "register": t_register,
                  "seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}}))
"""


def roster(size: int) -> str:
    lines = [
        "config:",
        "  aws:region: eu-central-1",
        "  devprod:devDefaults:",
        "    schedule: {stopAt: '20:00', startAt: '08:00', timezone: Europe/Berlin}",
        "  devprod:developers:",
    ]
    for i in range(size):
        lines += [f"    - name: dev{i:04d}", f"      sshPublicKey: {KEY}"]
    return "\n".join(lines) + "\n"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(code: str) -> dict:
    """The child's own figures, plus `proc`: its whole CPU time as the kernel counts it,
    interpreter start and exit included (what the in-process clock cannot see)."""
    before = _children_cpu()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "proc": _children_cpu() - before}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({cpu}), python {sys.version.split()[0]}, {platform.platform()}, load {load}"


def main(sizes: list[int], repeat: int = 3) -> None:
    print(machine())
    print(f"each figure: the fastest of {repeat} fresh processes")
    print("floor A = import pulumi+pulumi_aws+pulumi_github + registering as many plain resources")
    print("floor B = floor A + the lazily loaded pulumi_aws service modules the program uses")
    print("plan s, floorA, floorB = wall seconds of each process's work, start to end")
    print("floor B cpu = floor B's process CPU time (imports, modules, registering)")
    print("proc = whole-process CPU time from the kernel (start and exit included)")
    print("paired = median over rounds of plan cpu / floor B cpu of the same round (a plan and")
    print("         its floor run back to back, so a machine that is slower for a while slows both)")
    print(f"{'devs':>5} {'resources':>9} {'plan s':>7} {'floorA':>7} {'floorB':>7} {'ratioA':>6} {'ratioB':>6} {'ms/dev':>7}"
          f" {'plan cpu':>8} {'B cpu':>6} {'ratio':>5} {'proc':>5} {'B proc':>6} {'ratio':>5} {'paired':>6}")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp)
            for name in ("__main__.py", "Pulumi.yaml", "components", "scripts"):
                (project / name).symlink_to(ROOT / name)
            (project / "Pulumi.bench.yaml").write_text(roster(size))
            fmt = dict(root=str(ROOT), scripts=str(ROOT / "scripts"), project=str(project))
            plans, floors = [], []
            for _ in range(repeat):
                plans.append(run(PLAN.format(**fmt)))
                floors.append(run(FLOOR.format(count=plans[0]["resources"], **fmt)))
            plan = min(plans, key=lambda p: p["seconds"])
            floor = min(floors, key=lambda f: f["seconds"])
            plan_cpu, floor_cpu = min(p["cpu"] for p in plans), min(f["cpu"] for f in floors)
            plan_proc, floor_proc = min(p["proc"] for p in plans), min(f["proc"] for f in floors)
            paired = statistics.median(p["cpu"] / f["cpu"] for p, f in zip(plans, floors))
        # Start to end, as the plan's own figure is (the recorder's import and the floor's
        # class included); floor A without the service modules.
        floor_b = floor["seconds"]
        floor_a = floor_b - floor["modules"]
        per_dev = (plan["seconds"] - floor["import"] - floor["modules"]) / size * 1000
        print(
            f"{size:>5} {plan['resources']:>9} {plan['seconds']:>7.2f} {floor_a:>7.2f} {floor_b:>7.2f} "
            f"{plan['seconds'] / floor_a:>6.2f} {plan['seconds'] / floor_b:>6.2f} {per_dev:>7.1f}"
            f" {plan_cpu:>8.2f} {floor_cpu:>6.2f} {plan_cpu / floor_cpu:>5.2f}"
            f" {plan_proc:>5.2f} {floor_proc:>6.2f} {plan_proc / floor_proc:>5.2f} {paired:>6.2f}"
        )
    print("load at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


def count(text: str, usage: str) -> int:
    """A positive whole number from the command line, or the usage line (exit 1)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        sys.exit(f"{usage}\n{text!r} is not a positive whole number")
    return int(text)


def options(args: list[str], usage: str, repeat: int) -> tuple[int, list[str]]:
    """`--repeat N` if it leads the arguments (else `repeat`), and the arguments after it."""
    if args[:1] == ["--repeat"]:
        if len(args) < 2:
            sys.exit(usage)
        return count(args[1], usage), args[2:]
    return repeat, args


if __name__ == "__main__":
    USAGE = "usage: plan_scale.py [--repeat N] [DEVELOPERS ...]"
    repeat, sizes = options(sys.argv[1:], USAGE, 3)
    main([count(a, USAGE) for a in sizes] or [10, 100, 400], repeat)
