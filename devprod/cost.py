"""Monthly cost estimate of a plan: instance hours after stop schedules, EBS, public IPv4, builds, logs.

Prices come from prices.json (dated, source named) or, with live prices, from
the AWS Price List API. Every assumption that is not in the plan is a named
constant below and printed with the estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from devprod.errors import BadInput
from devprod.aws import doing

PRICES_FILE = Path(__file__).with_name("prices.json")
HOURS_PER_MONTH = 730  # AWS's own monthly convention
ASSUMED_MANUAL_START = "08:00"  # boxes without startAt are assumed started by hand at this local time
DEPLOYS_PER_MONTH = 60
BUILD_MINUTES_PER_DEPLOY = 6  # the Test stage; the Release action is a Lambda function (cents a year)
LOG_GB_PER_MONTH = 1.0
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
INSTANCE = "aws:ec2/instance:Instance"


class PriceError(BadInput):
    pass


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    return json.loads(PRICES_FILE.read_text())


def region_prices(region: str) -> dict[str, Any]:
    regions = price_table()["regions"]
    if region not in regions:
        raise PriceError(f"no prices for region {region!r} in {PRICES_FILE.name} (have: {', '.join(sorted(regions))}); use --live-prices")
    return regions[region]


def running_hours(start: datetime, end: datetime, *, stop_at: str | None, start_at: str | None,
                  days: Iterable[str], tz: str, manual_start: str = ASSUMED_MANUAL_START) -> float:
    """Hours a scheduled box runs between two aware instants: from its start time to its stop
    time, in its own time zone, on its listed weekdays (DST-aware: real elapsed hours)."""
    zone = ZoneInfo(tz)
    days = set(days)
    on, off = (time.fromisoformat(start_at or manual_start), time.fromisoformat(stop_at or "23:59"))
    total = timedelta()
    local_day = start.astimezone(zone).date() - timedelta(days=1)
    last_day = end.astimezone(zone).date() + timedelta(days=1)
    while local_day <= last_day:
        if WEEKDAYS[local_day.weekday()] in days and off > on:
            window_start = datetime.combine(local_day, on, zone).astimezone(timezone.utc)
            window_end = datetime.combine(local_day, off, zone).astimezone(timezone.utc)
            lo, hi = max(window_start, start), min(window_end, end)
            if hi > lo:
                total += hi - lo
        local_day += timedelta(days=1)
    return total.total_seconds() / 3600


def monthly_hours(schedule: dict[str, Any] | None) -> float:
    """Average hours per month for a schedule (None: always on), from a reference 4-week span."""
    if schedule is None:
        return float(HOURS_PER_MONTH)
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday, no DST change within four weeks
    hours = running_hours(start, start + timedelta(weeks=4), stop_at=schedule.get("stop_at"),
                          start_at=schedule.get("start_at"), days=schedule.get("days", WEEKDAYS), tz=schedule.get("timezone", "UTC"))
    return hours / (24 * 28) * HOURS_PER_MONTH


@dataclass
class Line:
    component: str
    item: str
    quantity: str
    monthly: float


@dataclass
class Estimate:
    region: str
    source: str
    lines: list[Line] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return round(sum(l.monthly for l in self.lines), 2)

    def by_component(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.lines:
            out[line.component] = round(out.get(line.component, 0) + line.monthly, 2)
        return out


def _component(resource: dict[str, Any]) -> str:
    """'DeveloperInstance alice' from the parent's URN; 'stack' at the top."""
    parent = resource.get("parent") or ""
    parts = parent.split("::")
    if len(parts) < 4 or parts[2].endswith("pulumi:pulumi:Stack"):
        return "stack"
    return f"{parts[2].split('$')[-1].split(':')[-1]} {parts[3]}"


def estimate(plan: dict[str, Any], schedules: dict[str, dict[str, Any] | None], region: str,
             prices: dict[str, Any] | None = None, source: str | None = None) -> Estimate:
    """`schedules` maps an instance's logical name to its schedule (None: always on)."""
    p = prices or region_prices(region)
    result = Estimate(region, source or f"{price_table()['source']} (as of {price_table()['as_of']})")
    result.assumptions = [
        f"{HOURS_PER_MONTH} hours per month",
        f"boxes without startAt are started by hand at {ASSUMED_MANUAL_START} local time on scheduled days",
        "idle stops are not counted (they only lower the figure)",
        f"{DEPLOYS_PER_MONTH} pipeline runs a month of {BUILD_MINUTES_PER_DEPLOY} CodeBuild minutes (general1.small)",
        f"{LOG_GB_PER_MONTH} GB of logs ingested and stored a month",
    ]
    resources = plan.get("resources", [])
    # An instance with an Elastic IP gives up its auto-assigned address; bill the EIP only.
    # Offline plans name instance ids i-computed-<logical name>.
    with_eip = {str(r["inputs"].get("instance")) for r in resources if r["type"] == "aws:ec2/eip:Eip"}
    for r in resources:
        inputs, component = r["inputs"], _component(r)
        if r["type"] == INSTANCE:
            kind = inputs.get("instanceType")
            hourly = p["instance_hour"].get(kind)
            if hourly is None:
                raise PriceError(f"no price for instance type {kind!r} in {region}; use --live-prices")
            hours = monthly_hours(schedules.get(r["name"])) if r["name"] in schedules else float(HOURS_PER_MONTH)
            result.lines.append(Line(component, f"{kind} ({r['name']})", f"{hours:.0f} h", hourly * hours))
            root = (inputs.get("rootBlockDevice") or {}).get("volumeSize", 8)
            result.lines.append(Line(component, "root gp3", f"{root} GB", root * p["gp3_gb_month"]))
            if inputs.get("associatePublicIpAddress") and f"i-computed-{r['name']}" not in with_eip:
                result.lines.append(Line(component, "public IPv4 while running", f"{hours:.0f} h", hours * p["public_ipv4_hour"]))
        elif r["type"] == "aws:ebs/volume:Volume":
            size = inputs.get("size", 0)
            result.lines.append(Line(component, f"gp3 volume ({r['name']})", f"{size} GB", size * p["gp3_gb_month"]))
        elif r["type"] == "aws:ec2/eip:Eip":
            # An Elastic IP is billed every hour, running or stopped.
            result.lines.append(Line(component, f"Elastic IP ({r['name']})", f"{HOURS_PER_MONTH} h", HOURS_PER_MONTH * p["public_ipv4_hour"]))
        elif r["type"] == "aws:cloudwatch/metricAlarm:MetricAlarm":
            result.lines.append(Line(component, f"alarm ({r['name']})", "1", p["alarm_month"]))
        elif r["type"] == "aws:kms/key:Key":
            result.lines.append(Line(component, f"KMS key ({r['name']})", "1", p["kms_key_month"]))
        elif r["type"] == "aws:codepipeline/pipeline:Pipeline":
            minutes = DEPLOYS_PER_MONTH * BUILD_MINUTES_PER_DEPLOY
            result.lines.append(Line(component, "CodeBuild minutes", f"{minutes} min", minutes * p["codebuild_small_minute"]))
        elif r["type"] == "aws:cloudwatch/logGroup:LogGroup":
            share = LOG_GB_PER_MONTH / max(1, sum(1 for x in resources if x["type"] == r["type"]))
            result.lines.append(Line(component, f"logs ({inputs.get('name')})", f"{share:.2f} GB",
                                     share * (p["logs_ingest_gb"] + p["logs_storage_gb_month"])))
    for line in result.lines:
        line.monthly = round(line.monthly, 2)
    result.lines.sort(key=lambda l: l.component)
    return result


# ---------------------------------------------------------------- live prices

PRICING_REGION = "us-east-1"  # the Price List API answers from here for every region


def live_instance_prices(pricing: Any, region: str, instance_types: Iterable[str]) -> dict[str, float]:
    """On-demand Linux shared-tenancy hourly prices from the AWS Price List API."""
    found: dict[str, float] = {}
    for kind in sorted(set(instance_types)):
        filters = [
            {"Type": "TERM_MATCH", "Field": "instanceType", "Value": kind},
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
            {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
            {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
            {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
            {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
        ]
        with doing(f"reading the price of {kind} in {region}"):
            pages = pricing.get_paginator("get_products").paginate(ServiceCode="AmazonEC2", Filters=filters)
            items = [json.loads(item) for page in pages for item in page.get("PriceList", [])]
        for item in items:
            for term in item.get("terms", {}).get("OnDemand", {}).values():
                for dimension in term.get("priceDimensions", {}).values():
                    usd = float(dimension.get("pricePerUnit", {}).get("USD", 0) or 0)
                    if usd > 0:
                        found[kind] = usd
        if kind not in found:
            raise PriceError(f"the Price List API has no on-demand price for {kind} in {region}")
    return found


def schedules_from_config(config: Any) -> dict[str, dict[str, Any] | None]:
    """Instance logical name -> schedule dict, from a parsed StackConfig."""
    out: dict[str, dict[str, Any] | None] = {}
    for dev in getattr(config, "developers", ()):
        out[f"{dev.name}-box"] = None if dev.schedule is None else {
            "stop_at": dev.schedule.stop_at, "start_at": dev.schedule.start_at,
            "days": dev.schedule.days, "timezone": dev.schedule.timezone,
        }
    return out
