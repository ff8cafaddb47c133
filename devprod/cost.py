"""Monthly cost estimate of a plan: instance hours after stop schedules, EBS, public IPv4, builds, logs,
the load balancer, alarms and the proxy's custom metrics.

Prices come from prices.json (dated, source named) or, with live prices, from
the AWS Price List API. Every assumption that is not in the plan is a named
constant below and printed with the estimate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from devprod.errors import BadInput
from devprod.aws import doing
from devprod.contracts import PRODUCTION_ROLE, PROXY_METRICS_NAMESPACE, ROLE_TAG
from devprod.plan import component_labels

PRICES_FILE = Path(__file__).with_name("prices.json")
HOURS_PER_MONTH = 730  # AWS's own monthly convention
ASSUMED_MANUAL_START = "08:00"  # boxes without startAt are assumed started by hand at this local time
DEPLOYS_PER_MONTH = 60
BUILD_MINUTES_PER_DEPLOY = 6  # the Test stage; the Release action is a Lambda function (cents a year)
LOG_GB_PER_MONTH = 1.0
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
INSTANCE = "aws:ec2/instance:Instance"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
CERTIFICATE = "aws:acm/certificate:Certificate"
DNS_RECORD = "aws:route53/record:Record"
# An ALB is billed per hour plus per LCU-hour; the LCUs depend on traffic the
# plan cannot know. One LCU (25 new connections/s, 3,000 active, 1 GB/h, or
# 1,000 rule evaluations/s) on average is far above a team app's load.
ALB_AVERAGE_LCUS = 1.0
# Each production host runs devprod-proxy-metrics once a minute: one
# PutMetricData call carrying the three metrics. The metrics carry only the
# Stack dimension, so a stack has three custom metrics however many hosts.
PROXY_METRICS_PER_STACK = 3
PUT_METRIC_CALLS_PER_HOST = 60 * HOURS_PER_MONTH
PROXY_METRICS_SCRIPT = "devprod-proxy-metrics"  # scripts/host/devprod-proxy-metrics.py


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
    """Average hours per month for a schedule (None: always on), from a reference 4-week span.
    A box that is started on a schedule but never stopped runs all month once started."""
    if schedule is None or not schedule.get("stop_at"):
        return float(HOURS_PER_MONTH)
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday, no DST change within four weeks
    hours = running_hours(start, start + timedelta(weeks=4), stop_at=schedule.get("stop_at"),
                          start_at=schedule.get("start_at"), days=schedule.get("days", WEEKDAYS), tz=schedule.get("timezone", "UTC"))
    return hours / (24 * 28) * HOURS_PER_MONTH


SCHEDULE = "aws:scheduler/schedule:Schedule"
# What the program's stop/start schedules look like: cron(MINUTE HOUR ? * DAYS *).
_CRON = re.compile(r"^cron\((\d{1,2}) (\d{1,2}) \? \* ([A-Z,]+) \*\)$")
_VERBS = {"stopInstances": "stop_at", "startInstances": "start_at"}


def parse_cron(expression: str) -> tuple[str, tuple[str, ...]] | None:
    """('20:00', ('mon', 'tue')) from cron(0 20 ? * MON,TUE *); None for any other shape."""
    match = _CRON.match(expression)
    if not match:
        return None
    minute, hour, days = match.groups()
    return f"{int(hour):02d}:{int(minute):02d}", tuple(d.lower() for d in days.split(","))


def _instance_names(target: dict[str, Any]) -> list[str]:
    try:
        ids = json.loads(target.get("input") or "{}").get("InstanceIds", [])
    except (ValueError, AttributeError):
        return []
    # Offline plans name instance ids i-computed-<logical name>.
    return [i.removeprefix("i-computed-") for i in ids if isinstance(i, str) and i.startswith("i-computed-")]


def schedules_of(resources: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Instance logical name -> its schedule, read from the plan's own stop/start schedules.

    Pricing reads the plan rather than the stack config, so that a base plan (a git ref, a
    saved --json file) is priced with its own schedules. An instance without any is always on.
    """
    found: dict[str, dict[str, Any]] = {}
    for r in resources:
        if r["type"] != SCHEDULE:
            continue
        inputs = r["inputs"]
        target = inputs.get("target") or {}
        verb = _VERBS.get(str(target.get("arn", "")).rsplit(":", 1)[-1])
        if verb is None:
            continue
        parsed = parse_cron(str(inputs.get("scheduleExpression", "")))
        if parsed is None:
            raise PriceError(f"schedule {r['name']}: cannot price {inputs.get('scheduleExpression')!r} "
                             "(expected cron(MINUTE HOUR ? * DAYS *))")
        for name in _instance_names(target):
            entry = found.setdefault(name, {"stop_at": None, "start_at": None, "days": (), "timezone": "UTC"})
            entry[verb], entry["days"] = parsed
            entry["timezone"] = inputs.get("scheduleExpressionTimezone") or "UTC"
    return found


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


@dataclass
class CostChange:
    """The monthly cost of a base plan and a head plan, each priced with its own schedules."""

    base: float
    head: float
    by_component: dict[str, tuple[float, float]]  # component -> (base, head)
    currency: str = "USD"

    @classmethod
    def between(cls, before: Estimate, after: Estimate) -> "CostChange":
        old, new = before.by_component(), after.by_component()
        return cls(before.total, after.total, {c: (old.get(c, 0.0), new.get(c, 0.0)) for c in sorted(old.keys() | new.keys())})

    @property
    def delta(self) -> float:
        return round(self.head - self.base, 2)

    def of(self, component: str) -> float:
        base, head = self.by_component.get(component, (0.0, 0.0))
        return round(head - base, 2)

    def changed_components(self) -> list[str]:
        return [c for c in self.by_component if self.of(c) != 0]

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "head": self.head, "delta": self.delta, "currency": self.currency,
                "byComponent": {c: {"base": b, "head": h, "delta": self.of(c)} for c, (b, h) in self.by_component.items()}}


def still_billed(head: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The head plan plus what leaves the stack but stays in AWS (retainOnDelete), with the
    base's components above it: an offboarded developer's home volume is still billed, under
    their name, until someone deletes it."""
    present = {r["urn"] for r in head.get("resources", [])}
    by_urn = {r["urn"]: r for r in base.get("resources", [])}
    kept: dict[str, dict[str, Any]] = {}
    for resource in base.get("resources", []):
        if resource["urn"] in present or not (resource.get("options") or {}).get("retainOnDelete"):
            continue
        node: dict[str, Any] | None = resource
        while node is not None and node["urn"] not in present and node["urn"] not in kept:
            kept[node["urn"]] = node
            node = by_urn.get(node.get("parent") or "")
    return {**head, "resources": [*head.get("resources", []), *kept.values()]} if kept else head


ASSUMPTIONS = (
    f"{HOURS_PER_MONTH} hours per month",
    f"boxes without startAt are started by hand at {ASSUMED_MANUAL_START} local time on scheduled days",
    "boxes without a stop time run all month",
    "idle stops are not counted (they only lower the figure)",
    f"{DEPLOYS_PER_MONTH} pipeline runs a month of {BUILD_MINUTES_PER_DEPLOY} CodeBuild minutes (general1.small)",
    f"{LOG_GB_PER_MONTH} GB of logs ingested and stored a month",
)


def _instance_lines(r: dict[str, Any], p: dict[str, Any], region: str, schedule: dict[str, Any] | None,
                    has_eip: bool) -> list[tuple[str, str, float]]:
    inputs = r["inputs"]
    kind = inputs.get("instanceType")
    hourly = p["instance_hour"].get(kind)
    hours = monthly_hours(schedule)
    if hourly is None:
        # prices.json holds the common types only; a valid type it lacks must not fail a
        # PR's offline diff (which has no AWS role): the line says so and counts 0.
        return [(f"{kind} ({r['name']}) UNPRICED", f"{hours:.0f} h", 0.0)]
    root = (inputs.get("rootBlockDevice") or {}).get("volumeSize", 8)
    lines = [(f"{kind} ({r['name']})", f"{hours:.0f} h", hourly * hours),
             ("root gp3", f"{root} GB", root * p["gp3_gb_month"])]
    # An instance with an Elastic IP gives up its auto-assigned address; the EIP is billed instead.
    if inputs.get("associatePublicIpAddress") and not has_eip:
        lines.append(("public IPv4 while running", f"{hours:.0f} h", hours * p["public_ipv4_hour"]))
    return lines


def _other_lines(r: dict[str, Any], p: dict[str, Any], log_share: float) -> list[tuple[str, str, float]]:
    type_, inputs = r["type"], r["inputs"]
    if type_ == "aws:ebs/volume:Volume":
        size = inputs.get("size", 0)
        return [(f"gp3 volume ({r['name']})", f"{size} GB", size * p["gp3_gb_month"])]
    if type_ == "aws:ec2/eip:Eip":  # billed every hour, running or stopped
        return [(f"Elastic IP ({r['name']})", f"{HOURS_PER_MONTH} h", HOURS_PER_MONTH * p["public_ipv4_hour"])]
    if type_ == ALARM:
        return _alarm_lines(r, p)
    if type_ == LOAD_BALANCER and inputs.get("loadBalancerType", "application") == "application":
        return [(f"ALB ({r['name']})", f"{HOURS_PER_MONTH} h", HOURS_PER_MONTH * p["alb_hour"]),
                (f"ALB LCUs ({r['name']})", f"{ALB_AVERAGE_LCUS:g} x {HOURS_PER_MONTH} h",
                 ALB_AVERAGE_LCUS * HOURS_PER_MONTH * p["alb_lcu_hour"])]
    if type_ == CERTIFICATE:  # public ACM certificates are free; a private CA is not used
        return [(f"ACM certificate ({r['name']}) free", "1", 0.0)]
    if type_ == DNS_RECORD and inputs.get("aliases"):  # alias queries to an ELB are free
        return [(f"alias record ({r['name']}) free", "1", 0.0)]
    if type_ == "aws:kms/key:Key":
        return [(f"KMS key ({r['name']})", "1", p["kms_key_month"])]
    if type_ == "aws:codepipeline/pipeline:Pipeline":
        minutes = DEPLOYS_PER_MONTH * BUILD_MINUTES_PER_DEPLOY
        return [("CodeBuild minutes", f"{minutes} min", minutes * p["codebuild_small_minute"])]
    if type_ == "aws:cloudwatch/logGroup:LogGroup":
        return [(f"logs ({inputs.get('name')})", f"{log_share:.2f} GB",
                 log_share * (p["logs_ingest_gb"] + p["logs_storage_gb_month"]))]
    return []


def _alarm_lines(r: dict[str, Any], p: dict[str, Any]) -> list[tuple[str, str, float]]:
    """An alarm is billed per metric it watches: one for a plain alarm, each
    metric (not expression) of a metric-math alarm; periods under 60 s cost
    the high-resolution price."""
    inputs = r["inputs"]
    queries = inputs.get("metricQueries") or []
    watched = [q["metric"] for q in queries if isinstance(q, dict) and q.get("metric")]
    count = len(watched) if queries else 1
    periods = [m.get("period") for m in watched] if queries else [inputs.get("period")]
    high = any(isinstance(period, (int, float)) and period < 60 for period in periods)
    unit = p["alarm_high_resolution_month"] if high else p["alarm_month"]
    item = f"{'high-res ' if high else ''}alarm ({r['name']})"
    return [(item, str(count) if count == 1 else f"{count} metrics", count * unit)]


def _is_production_host(r: dict[str, Any]) -> bool:
    tags = r["inputs"].get("tags") or {}
    return r["type"] == INSTANCE and isinstance(tags, dict) and tags.get(ROLE_TAG) == PRODUCTION_ROLE


def _runs_proxy_metrics(resources: list[dict[str, Any]]) -> bool:
    """Whether the plan's production hosts publish the proxy metrics: their user
    data installs the script, or an alarm watches the metrics. Read from the plan,
    so a base plan from before the script existed is priced without them."""
    for r in resources:
        if _is_production_host(r) and PROXY_METRICS_SCRIPT in str(r["inputs"].get("userData") or ""):
            return True
        if r["type"] == ALARM and PROXY_METRICS_NAMESPACE in json.dumps(r["inputs"]):
            return True
    return False


def _proxy_metric_lines(resources: list[dict[str, Any]], p: dict[str, Any],
                        labels: dict[str, str]) -> list[Line]:
    """The proxy metrics of the stack's production hosts: three custom metrics
    per stack, one PutMetricData call a minute per host."""
    hosts = [r for r in resources if _is_production_host(r)]
    if not hosts or not _runs_proxy_metrics(resources):
        return []
    lines = [Line(labels[hosts[0]["urn"]], "proxy custom metrics", str(PROXY_METRICS_PER_STACK),
                  round(PROXY_METRICS_PER_STACK * p["custom_metric_month"], 2))]
    calls = PUT_METRIC_CALLS_PER_HOST
    lines += [Line(labels[h["urn"]], f"PutMetricData ({h['name']})", f"{calls} calls",
                   round(calls / 1000 * p["metric_api_per_1000"], 2)) for h in hosts]
    return lines


def _assumptions(resources: list[dict[str, Any]]) -> list[str]:
    """The fixed assumptions, and those of the kinds of resource this plan has."""
    kinds = {r["type"] for r in resources}
    found = list(ASSUMPTIONS)
    if LOAD_BALANCER in kinds:
        found.append(f"{ALB_AVERAGE_LCUS:g} LCU on average per load balancer, all month")
    if ALARM in kinds:
        found.append("alarms: priced per metric watched (metric math: each metric)")
    if any(_is_production_host(r) for r in resources) and _runs_proxy_metrics(resources):
        found.append(f"proxy metrics: {PROXY_METRICS_PER_STACK} custom metrics a stack, one "
                     "PutMetricData call a host a minute, no free tier")
    if kinds & {CERTIFICATE, DNS_RECORD}:
        found.append("public ACM certificates and alias records to a load balancer are free")
    return found


def estimate(plan: dict[str, Any], region: str, prices: dict[str, Any] | None = None,
             source: str | None = None) -> Estimate:
    """Monthly cost of a plan (its --json form), instance hours after its own schedules."""
    p = prices or region_prices(region)
    resources = plan.get("resources", [])
    result = Estimate(region, source or f"{price_table()['source']} (as of {price_table()['as_of']})",
                      assumptions=_assumptions(resources))
    schedules = schedules_of(resources)
    labels = component_labels(resources)
    # Offline plans name instance ids i-computed-<logical name>.
    with_eip = {str(r["inputs"].get("instance")) for r in resources if r["type"] == "aws:ec2/eip:Eip"}
    log_share = LOG_GB_PER_MONTH / max(1, sum(1 for r in resources if r["type"] == "aws:cloudwatch/logGroup:LogGroup"))
    for r in resources:
        if r["type"] == INSTANCE:
            items = _instance_lines(r, p, region, schedules.get(r["name"]), f"i-computed-{r['name']}" in with_eip)
        else:
            items = _other_lines(r, p, log_share)
        result.lines += [Line(labels[r["urn"]], item, quantity, round(monthly, 2)) for item, quantity, monthly in items]
    result.lines += _proxy_metric_lines(resources, p, labels)
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


# The ALB's two on-demand prices, told apart by the usage type's suffix (the
# prefix is the region's billing code, EUC1-...); idle provisioned LCUs are
# another usage type and are not what a plain ALB pays.
ALB_USAGE = {"LoadBalancerUsage": "alb_hour", "LCUUsage": "alb_lcu_hour"}


def live_load_balancer_prices(pricing: Any, region: str) -> dict[str, float]:
    """{"alb_hour", "alb_lcu_hour"} for region from the AWS Price List API."""
    filters = [
        {"Type": "TERM_MATCH", "Field": "productFamily", "Value": "Load Balancer-Application"},
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "locationType", "Value": "AWS Region"},
    ]
    with doing(f"reading the load balancer prices in {region}"):
        pages = pricing.get_paginator("get_products").paginate(ServiceCode="AWSELB", Filters=filters)
        items = [json.loads(item) for page in pages for item in page.get("PriceList", [])]
    found: dict[str, float] = {}
    for item in items:
        usage = str(item.get("product", {}).get("attributes", {}).get("usagetype", ""))
        key = ALB_USAGE.get(usage.rsplit("-", 1)[-1])
        for term in item.get("terms", {}).get("OnDemand", {}).values() if key else ():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0) or 0)
                if usd > 0:
                    found[key] = usd
    missing = sorted(set(ALB_USAGE.values()) - found.keys())
    if missing:
        raise PriceError(f"the Price List API has no {', '.join(missing)} price for region {region}")
    return found
