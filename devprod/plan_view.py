"""Human view of an offline plan: resources grouped by component, key properties, outputs."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.tree import Tree

from devprod.plan import PLACEHOLDER_NOTE, Plan, RecordedResource
from devprod.render import print_wide

# The properties a reviewer looks at first, per resource type (dotted paths).
KEY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "aws:ec2/instance:Instance": (
        "instanceType", "ami", "metadataOptions.httpTokens", "rootBlockDevice.encrypted",
        "rootBlockDevice.volumeSize", "associatePublicIpAddress", "disableApiTermination", "keyName",
    ),
    "aws:ebs/volume:Volume": ("availabilityZone", "size", "type", "encrypted"),
    "aws:ec2/securityGroup:SecurityGroup": ("ingress",),
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("availabilityZone", "cidrBlock"),
    "aws:scheduler/schedule:Schedule": ("scheduleExpression", "scheduleExpressionTimezone"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName", "threshold", "evaluationPeriods", "alarmActions"),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("policyArn",),
    "aws:ec2/volumeAttachment:VolumeAttachment": ("deviceName",),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "retentionInDays"),
    "aws:ssm/document:Document": ("documentType", "documentFormat"),
    "aws:s3/bucketVersioning:BucketVersioning": ("versioningConfiguration.status",),
}


def lookup(inputs: dict[str, Any], dotted: str) -> Any:
    value: Any = inputs
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _short(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "; ".join(
            f"{v.get('protocol')}:{v.get('fromPort')}-{v.get('toPort')} from "
            f"{','.join((v.get('cidrBlocks') or []) + (v.get('ipv6CidrBlocks') or []))}"
            for v in value
        )
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(resource: RecordedResource) -> str:
    short_type = resource.type.split(":")[-1]
    parts = [f"[bold]{short_type}[/] {resource.name}"]
    for key in KEY_PROPERTIES.get(resource.type, ()):
        value = lookup(resource.inputs, key)
        if key == "ingress" and not value:
            parts.append("ingress=none")
        elif value is not None:
            parts.append(f"{key.split('.')[-1] if '.' in key else key}={_short(value)}")
    flags = [name for name in ("protect", "retainOnDelete", "deleteBeforeReplace") if resource.options.get(name)]
    if resource.options.get("ignoreChanges"):
        flags.append("ignoreChanges: " + ", ".join(resource.options["ignoreChanges"]))
    if flags:
        parts.append("[yellow]\\[" + "; ".join(flags) + "][/]")
    return "  ".join(parts)


def render(plan: Plan, console: Console) -> None:
    tree = Tree(f"[bold]{plan.project}-{plan.stack}[/]: {len(plan.resources)} resources")
    by_parent: dict[str, list[RecordedResource]] = {}
    for resource in plan.resources:
        by_parent.setdefault(resource.parent, []).append(resource)

    def add(node: Tree, parent_urn: str) -> None:
        for resource in sorted(by_parent.get(parent_urn, []), key=lambda r: (r.custom, r.name)):
            if resource.custom:
                node.add(describe(resource))
            else:
                branch = node.add(f"[bold cyan]{resource.type.split(':')[-1]}[/] {resource.name}")
                add(branch, resource.urn)

    roots = {r.parent for r in plan.resources if not any(p.urn == r.parent for p in plan.resources)}
    for root in sorted(roots):
        add(tree, root)
    print_wide(console, tree, 240)
    console.print(f"[dim]{PLACEHOLDER_NOTE}[/]")
    ssh = plan.outputs.get("sshConfig")
    if ssh:
        console.print("\n[bold]~/.ssh/config[/] (output sshConfig):")
        console.print(ssh, markup=False, highlight=False)
    for key, value in plan.outputs.items():
        if key not in ("sshConfig", "developers"):
            console.print(f"[bold]{key}[/]: {value}", highlight=False)
