"""Human view of an offline plan: resources grouped by component with the properties a
reviewer checks first, then the outputs, all within 80 columns (`--json` keeps everything)."""

from __future__ import annotations

import json
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from devprod.plan import PLACEHOLDER_NOTE, Plan, RecordedResource

WIDTH = 80
LONG = 40  # longer values (ARNs, policy text) are shortened in the middle


def lookup(inputs: dict[str, Any], dotted: str) -> Any:
    value: Any = inputs
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def elide(text: str, limit: int = LONG) -> str:
    """Keep both ends of a long value: ARNs differ at the end, paths at the start."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def plain(value: Any) -> str:
    """A value as a reader writes it: no Python reprs, lists joined, long text shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return elide(json.dumps(value, separators=(",", ":")))
    return elide(str(value).replace("\n", "\\n"))  # one line per value, whatever it holds


def _ingress(inputs: dict[str, Any]) -> list[str]:
    rules = inputs.get("ingress") or []
    if not rules:
        return ["no ingress"]
    out = []
    for rule in rules:
        ports = rule.get("fromPort") if rule.get("fromPort") == rule.get("toPort") else f"{rule.get('fromPort')}-{rule.get('toPort')}"
        sources = (rule.get("cidrBlocks") or []) + (rule.get("ipv6CidrBlocks") or []) + (rule.get("securityGroups") or [])
        out.append(f"in {rule.get('protocol')} {ports} from {plain(sources)}")
    return out


def _instance(inputs: dict[str, Any]) -> list[str]:
    root = inputs.get("rootBlockDevice") or {}
    out = [str(inputs.get("instanceType")),
           f"root {root.get('volumeSize', 8)} GB {'encrypted' if root.get('encrypted') else 'NOT encrypted'}",
           "IMDSv2 required" if lookup(inputs, "metadataOptions.httpTokens") == "required" else "IMDSv1 allowed"]
    out += ["public IP"] if inputs.get("associatePublicIpAddress") else []
    out += ["termination protected"] if inputs.get("disableApiTermination") else []
    out += [f"key pair {inputs['keyName']}"] if inputs.get("keyName") else []
    ami = str(inputs.get("ami") or "")
    out += [f"ami {ami}"] if ami and "computed" not in ami else []
    return out


def _schedule(inputs: dict[str, Any]) -> list[str]:
    from devprod.cost import parse_cron

    verb = str(lookup(inputs, "target.arn") or "").rsplit(":", 1)[-1].removesuffix("Instances")
    parsed = parse_cron(str(inputs.get("scheduleExpression", "")))
    when = f"{parsed[0]} {','.join(parsed[1])}" if parsed else str(inputs.get("scheduleExpression"))
    return [f"{verb} at {when} {inputs.get('scheduleExpressionTimezone') or 'UTC'}"]


_ALARM_OPS = {"GreaterThanOrEqualToThreshold": ">=", "GreaterThanThreshold": ">",
              "LessThanThreshold": "<", "LessThanOrEqualToThreshold": "<="}


def _alarm(inputs: dict[str, Any]) -> list[str]:
    op = _ALARM_OPS.get(str(inputs.get("comparisonOperator")), inputs.get("comparisonOperator") or "")
    actions = [str(a).rsplit(":", 2)[-2] + ":" + str(a).rsplit(":", 1)[-1] for a in inputs.get("alarmActions") or []]
    metric, period = inputs.get("metricName"), inputs.get("period")
    queries = inputs.get("metricQueries") or []
    if queries:  # metric math: the returned expression's label, the queries' period
        metric = next((q.get("label") or q.get("expression") for q in queries if q.get("returnData")), "math")
        period = next(((q.get("metric") or {}).get("period") for q in queries if q.get("metric")), None)
    return [f"{metric} {op} {plain(inputs.get('threshold'))}".replace("  ", " "),
            f"{inputs.get('evaluationPeriods')} x {period} s", f"then {plain(actions)}"]


def _trust(inputs: dict[str, Any]) -> list[str]:
    try:
        statements = json.loads(inputs.get("assumeRolePolicy") or "{}").get("Statement", [])
    except (ValueError, AttributeError):
        return []
    who = [p for s in statements for p in (s.get("Principal") or {}).values()]
    # Service principals read whole; a federated provider by its host (the ARN's last part).
    return [f"trusts {plain([str(w).rsplit('/', 1)[-1] for w in who])}"] if who else []


def _fields(*paths: str, fmt: str = "{}") -> Callable[[dict[str, Any]], list[str]]:
    def read(inputs: dict[str, Any]) -> list[str]:
        values = [lookup(inputs, path) for path in paths]
        return [fmt.format(*(plain(v) for v in values))] if any(v is not None for v in values) else []
    return read


# Per resource type: what a reviewer checks first. Not every input: `--json` has those.
KEY_PROPERTIES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "aws:ec2/instance:Instance": _instance,
    "aws:ebs/volume:Volume": lambda i: _fields("size", "type", "availabilityZone", fmt="{} GB {}, {}")(i)
    + ["encrypted" if i.get("encrypted") else "NOT encrypted"],
    "aws:ec2/securityGroup:SecurityGroup": _ingress,
    "aws:ec2/vpc:Vpc": _fields("cidrBlock"),
    "aws:ec2/subnet:Subnet": _fields("availabilityZone", "cidrBlock", fmt="{} {}"),
    "aws:scheduler/schedule:Schedule": _schedule,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _alarm,
    "aws:iam/role:Role": _trust,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": lambda i: [str(i.get("policyArn", "")).rsplit(":", 1)[-1]],
    "aws:ec2/volumeAttachment:VolumeAttachment": _fields("deviceName"),
    "aws:cloudwatch/logGroup:LogGroup": _fields("name", "retentionInDays", fmt="{}, kept {} days"),
    "aws:ssm/document:Document": _fields("documentType", "documentFormat", fmt="{} {}"),
    "aws:s3/bucketVersioning:BucketVersioning": _fields("versioningConfiguration.status", fmt="versioning {}"),
    "aws:ec2/flowLog:FlowLog": _fields("trafficType", fmt="traffic {}"),
    "aws:kms/key:Key": lambda i: ["rotated yearly" if i.get("enableKeyRotation") else "NOT rotated"],
    "aws:codebuild/project:Project": _fields("environment.computeType", "buildTimeout", fmt="{}, timeout {} min"),
    "aws:codepipeline/pipeline:Pipeline": _fields("pipelineType", "executionMode", fmt="{} {}"),
    "aws:lambda/function:Function": _fields("runtime", "memorySize", "timeout", fmt="{}, {} MB, timeout {} s"),
    "aws:sns/topicSubscription:TopicSubscription": _fields("protocol", "endpoint", fmt="{} {}"),
    "github:index/actionsVariable:ActionsVariable": _fields("variableName", "repository", fmt="{} in {}"),
    "github:index/branchProtection:BranchProtection": _fields("pattern", fmt="branch {}"),
    "github:index/repositoryFile:RepositoryFile": _fields("file"),
}


def key_properties(type_: str, inputs: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The few properties of a resource worth reading in a review, then its options."""
    reader = KEY_PROPERTIES.get(type_)
    found = reader(inputs) if reader else []
    flags = [name for name in ("protect", "retainOnDelete", "deleteBeforeReplace") if options.get(name)]
    if options.get("ignoreChanges"):
        flags.append("ignoreChanges: " + ", ".join(options["ignoreChanges"]))
    return found + ([f"[{'; '.join(flags)}]"] if flags else [])


def phrase(props: list[str]) -> str:
    """'t3.large, public IP [retainOnDelete]': properties by commas, the options bracketed after."""
    return " ".join(part for part in (", ".join(p for p in props if not p.startswith("[")),
                                      *(p for p in props if p.startswith("["))) if part)


def describe(resource: RecordedResource) -> str:
    props = key_properties(resource.type, resource.inputs, resource.options)
    head = f"[bold]{resource.type.split(':')[-1]}[/] {escape(resource.name)}"
    return head + (": " + escape(phrase(props)) if props else "")


def output_lines(value: Any, indent: int = 0, width: int = WIDTH) -> list[str]:
    """Outputs as YAML-like lines: nested maps indented, long values shortened to fit the width."""
    lines: list[str] = []
    for key, inner in value.items():
        prefix = " " * indent + f"{key}:"
        if isinstance(inner, dict) and inner:
            lines += [prefix] + output_lines(inner, indent + 2, width)
            continue
        text = plain(inner) if not isinstance(inner, str) else inner
        rows = text.strip().splitlines() or [""]
        shown = rows[0] + (f" … ({len(rows)} lines; --json has all)" if len(rows) > 1 else "")
        room = max(12, width - len(prefix) - 1)
        lines.append(f"{prefix} {shown if len(shown) <= room else elide(shown, room)}")
    return lines


def narrow(console: Console) -> Console:
    """A console on the same stream that wraps at 80 columns (or the terminal's width, if less)."""
    width = min(console.width, WIDTH) if console.is_terminal else WIDTH
    return Console(file=console.file, width=width, force_terminal=console.is_terminal, soft_wrap=False,
                   highlight=False)


def render(plan: Plan, console: Console) -> None:
    view = narrow(console)
    tree = Tree(f"[bold]{plan.project}-{plan.stack}[/]: {len(plan.resources)} resources")
    by_parent: dict[str, list[RecordedResource]] = {}
    for resource in plan.resources:
        by_parent.setdefault(resource.parent, []).append(resource)

    def add(node: Tree, parent_urn: str) -> None:
        for resource in sorted(by_parent.get(parent_urn, []), key=lambda r: (r.custom, r.name)):
            if resource.custom:
                node.add(describe(resource))
            else:
                add(node.add(f"[bold cyan]{resource.type.split(':')[-1]}[/] {escape(resource.name)}"), resource.urn)

    known = {r.urn for r in plan.resources}
    for root in sorted({r.parent for r in plan.resources if r.parent not in known}):
        add(tree, root)
    view.print(tree)
    view.print(f"[dim]{escape(PLACEHOLDER_NOTE)}[/]")
    if plan.outputs:
        view.print("\n[bold]outputs[/]:")
        view.print("\n".join(output_lines(plan.outputs, 2, view.width)), markup=False)

