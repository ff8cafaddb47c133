"""EC2 regions and instance types checked against AWS's own API models.

The table lives in `aws_catalog.py`, generated from botocore's data, because
the program's runtime (what `pulumi up` loads) does not ship botocore. Refresh
it in a venv that has botocore (the test venv has it):

    .venv/bin/python -m components.aws_names --refresh

The suite checks the committed table against the installed botocore, so a
hand edit that invents a name fails the tests.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
import textwrap
from pathlib import Path

from components.aws_catalog import BOTOCORE_VERSION, INSTANCE_SIZES, REGIONS

CATALOG = Path(__file__).with_name("aws_catalog.py")
REFRESH = "python -m components.aws_names --refresh"
# vCPU-like weight of the named sizes; `Nxlarge` is N times xlarge and
# `metal-Nxl` likewise. Only used to suggest the nearest real size.
_NAMED_SIZES = {"nano": 0.125, "micro": 0.25, "small": 0.5, "medium": 1, "large": 2, "xlarge": 4}
_SCALED_SIZE = re.compile(r"^(?:metal-)?([0-9]+)(?:xlarge|xl)$")


def _size_weight(size: str) -> float | None:
    if size in _NAMED_SIZES:
        return _NAMED_SIZES[size]
    if size == "metal":
        return 4 * 256  # bare metal: the whole host, larger than any named size
    found = _SCALED_SIZE.match(size)
    return 4 * int(found.group(1)) if found else None


def sorted_sizes(sizes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Smallest first; names whose weight is unknown go last, alphabetically."""
    return tuple(sorted(sizes, key=lambda s: (_size_weight(s) is None, _size_weight(s) or 0, s)))


def _nearest_size(size: str, sizes: tuple[str, ...]) -> str:
    """The real size closest in capacity (t3.24xlarge -> 2xlarge), else in spelling."""
    if size.startswith("metal") and "metal" in sizes:
        return "metal"
    weight = _size_weight(size)
    weighed = [s for s in sizes if _size_weight(s) is not None and not s.startswith("metal")]
    if weight is not None and weighed:
        return min(weighed, key=lambda s: abs(math.log(_size_weight(s) / weight)))
    close = difflib.get_close_matches(size, sizes, n=1, cutoff=0)
    return close[0] if close else sizes[0]


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def instance_type_problem(value: str) -> str | None:
    """Why `value` is not an EC2 instance type, or None when it is one.

    Names not in the table are refused, new families included: `m7l.large`
    (a typo of m7i) and a family AWS launched last week look the same, and a
    typo accepted here fails only at `pulumi up`, after the preview passed.
    A new family costs one table refresh, which the message names.
    """
    family, dot, size = value.partition(".")
    sizes = INSTANCE_SIZES.get(family)
    if dot and sizes is not None:
        if size in sizes:
            return None
        return (
            f"{value!r} is not an EC2 instance type: {family} comes in {', '.join(sizes)} "
            f"(nearest: {family}.{_nearest_size(size, sizes)})"
        )
    if not dot:
        return f"{value!r} is not an EC2 instance type; expected family.size such as t3.large"
    names = [f"{f}.{s}" for f, group in INSTANCE_SIZES.items() for s in group]
    close = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
    hint = f"; did you mean {_one_of(close)}?" if close else ""
    return (
        f"{value!r} is not an EC2 instance type{hint} "
        f"(if AWS added it after botocore {BOTOCORE_VERSION}: {REFRESH})"
    )


def region_problem(value: str) -> str | None:
    """Why `value` is not an AWS region with EC2, or None when it is one."""
    if value in REGIONS:
        return None
    close = difflib.get_close_matches(value, REGIONS, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else " such as eu-central-1"
    return f"{value!r} is not an AWS region{hint} (regions from botocore {BOTOCORE_VERSION})"


def is_zone_name(value: str) -> bool:
    """An availability zone's name: a known region plus one letter (eu-central-1a, us-isob-east-1b)."""
    return len(value) > 1 and "a" <= value[-1] <= "z" and value[:-1] in REGIONS


# --------------------------------------------------------------------------- refresh


def catalog_from_botocore() -> tuple[str, tuple[str, ...], dict[str, tuple[str, ...]]]:
    """(botocore version, EC2 regions of every partition, family -> sizes) from botocore's data."""
    import botocore
    import botocore.session

    session = botocore.session.get_session()
    regions = {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)}
    families: dict[str, list[str]] = {}
    for name in session.get_service_model("ec2").shape_for("InstanceType").enum:
        family, _, size = name.partition(".")
        families.setdefault(family, []).append(size)
    sizes = {family: sorted_sizes(group) for family, group in sorted(families.items())}
    return botocore.__version__, tuple(sorted(regions)), sizes


def _sizes_line(family: str, sizes: tuple[str, ...]) -> str:
    quoted = [f'"{s}"' for s in sizes]
    line = f'    "{family}": ({", ".join(quoted)}{"," if len(sizes) == 1 else ""}),'
    if len(line) <= 100:
        return line
    wrapped = textwrap.wrap(", ".join(quoted) + ",", width=92, break_on_hyphens=False)
    return "\n".join([f'    "{family}": (', *(f"        {part}" for part in wrapped), "    ),"])


def render_catalog(version: str, regions: tuple[str, ...], sizes: dict[str, tuple[str, ...]]) -> str:
    lines = [
        '"""EC2 regions and instance types from botocore (generated by components/aws_names.py; do not edit).',
        "",
        "Regions: every partition's regions that offer EC2 (botocore endpoints.json).",
        "Instance types: the InstanceType enum of the EC2 API model (botocore ec2 service-2.json).",
        '"""',
        "",
        f'BOTOCORE_VERSION = "{version}"',
        "",
        "REGIONS = (",
        *(f'    "{r}",' for r in regions),
        ")",
        "",
        "INSTANCE_SIZES: dict[str, tuple[str, ...]] = {",
        *(_sizes_line(f, group) for f, group in sizes.items()),
        "}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv != ["--refresh"]:
        print(f"usage: {REFRESH}", file=sys.stderr)
        return 2
    version, regions, sizes = catalog_from_botocore()
    CATALOG.write_text(render_catalog(version, regions, sizes))
    count = sum(len(group) for group in sizes.values())
    print(f"{CATALOG.name}: botocore {version}, {len(regions)} regions, {count} instance types", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
