"""A Mermaid flowchart of what a stack holds, drawn from its recorded offline plan.

Everything comes from the recorded resources (so a saved `devprod plan --json`
draws the same picture): the network, each developer's box with its access
mode and schedule, the production host behind nginx, the pipeline's stages and
the GitHub wiring. Given what a plan diff changed, the added, changed,
replaced and removed parts are marked (GitHub renders Mermaid in PR comments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

NETWORK = "devprod:network:Network"
DEVELOPER = "devprod:compute:DeveloperInstance"
PRODUCTION = "devprod:compute:ProductionService"
ARTIFACTS = "devprod:storage:ArtifactStore"
PIPELINE = "devprod:delivery:DeployPipeline"
GITHUB = "devprod:delivery:GitHubWiring"
CI = "devprod:delivery:CiIdentities"

# Change kinds as devprod.diff names them; "change" is accepted for "update".
KINDS = ("add", "update", "replace", "remove")
CLASS_OF = {"add": "added", "update": "changed", "change": "changed", "replace": "replaced", "remove": "removed"}
SEVERITY = {"add": 1, "update": 2, "change": 2, "replace": 3, "remove": 4}
CLASS_DEFS = {
    "added": "fill:#e6ffed,stroke:#22863a,stroke-width:2px",
    "changed": "fill:#fff8c5,stroke:#9a6700,stroke-width:2px",
    "replaced": "fill:#ffebda,stroke:#bc4c00,stroke-width:3px",
    "removed": "fill:#ffebe9,stroke:#cf222e,stroke-width:2px,stroke-dasharray:5 5",
}
LEGEND = {"added": "added", "changed": "changed in place", "replaced": "replaced", "removed": "removed"}

INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SCHEDULE = "aws:scheduler/schedule:Schedule"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
VOLUME = "aws:ebs/volume:Volume"


# ------------------------------------------------------------------ escaping


_RESERVED = {"end", "graph", "subgraph", "flowchart", "click", "class", "classdef", "style", "linkstyle", "default",
             "direction"}


def node_id(*parts: str) -> str:
    """A Mermaid-safe id: letters, digits and '_', starting with a letter, never a keyword."""
    text = "_".join(re.sub(r"[^A-Za-z0-9]+", "_", p).strip("_") for p in parts if p) or "node"
    if not text[0].isalpha() or text.lower() in _RESERVED:
        text = "n_" + text
    return text


def label(*lines: str) -> str:
    """A quoted label: entity codes for the characters Mermaid or its HTML would read; lines joined by <br/>."""
    escaped = []
    for line in lines:
        text = str(line)
        for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("&", "#amp;"),
                           ("`", "#96;"), ("|", "#124;")):
            text = text.replace(char, code)
        escaped.append(" ".join(text.split()))
    return '"' + "<br/>".join(escaped) + '"'


# ------------------------------------------------------------------ the picture


@dataclass
class Node:
    id: str
    text: list[str]
    shape: str = "box"  # box | round | stadium | cylinder | circle
    owners: list[str] = field(default_factory=list)  # resource or component names it stands for
    component: str | None = None

    def render(self) -> str:
        open_, close = {"box": ("[", "]"), "round": ("(", ")"), "stadium": ("([", "])"),
                        "cylinder": ("[(", ")]"), "circle": ("((", "))")}[self.shape]
        return f"{self.id}{open_}{label(*self.text)}{close}"


@dataclass
class Picture:
    nodes: dict[str, Node] = field(default_factory=dict)
    groups: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (id, title, node ids)
    edges: list[tuple[str, str, str | None, bool]] = field(default_factory=list)  # (from, to, text, dotted)

    def add(self, node: Node, group: list[str] | None = None) -> str:
        base, n = node.id, 2
        while node.id in self.nodes:
            node.id, n = f"{base}_{n}", n + 1
        self.nodes[node.id] = node
        if group is not None:
            group.append(node.id)
        return node.id

    def group(self, id_: str, title: str) -> list[str]:
        members: list[str] = []
        self.groups.append((node_id("g", id_), title, members))
        return members

    def edge(self, a: str | None, b: str | None, text: str | None = None, dotted: bool = False) -> None:
        if a and b:
            self.edges.append((a, b, text, dotted))


def _resources(plan: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any], Any]:
    if isinstance(plan, Mapping):
        return str(plan.get("stack", "?")), list(plan.get("resources", [])), dict(plan.get("outputs") or {}), None
    return plan.stack, [r.to_json() for r in plan.resources], dict(plan.outputs or {}), getattr(plan, "config", None)


def _cron_text(expression: str) -> str:
    """cron(0 20 ? * MON,TUE,WED,THU,FRI *) -> '20:00 Mon-Fri'; other expressions as they are."""
    match = re.fullmatch(r"cron\((\d+) (\d+) \? \* ([A-Z,\-]+) \*\)", expression or "")
    if not match:
        return expression or "?"
    minute, hour, days = match.groups()
    order = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
    listed = days.split(",")
    if len(listed) > 2 and all(d in order for d in listed):
        indexes = [order.index(d) for d in listed]
        if indexes == list(range(indexes[0], indexes[-1] + 1)):
            days = f"{listed[0].title()}-{listed[-1].title()}"
    elif days == "*":
        days = "daily"
    return f"{int(hour):02d}:{int(minute):02d} {days if '-' in days or days == 'daily' else days.title()}"


def _title(kind: str, name: str) -> str:
    return kind if name == kind else f"{kind} {name}"


def _ingress(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for r in resources if r["type"] == SECURITY_GROUP for rule in r["inputs"].get("ingress") or []]


def _sources(rule: dict[str, Any]) -> str:
    return ", ".join((rule.get("cidrBlocks") or []) + (rule.get("ipv6CidrBlocks") or [])) or "?"


class _Builder:
    def __init__(self, plan: Any):
        self.stack, resources, self.outputs, self.config = _resources(plan)
        self.pic = Picture()
        self.by_urn = {r["urn"]: r for r in resources}
        self.components = [r for r in resources if r["type"].startswith("devprod:")]
        self.children: dict[str, list[dict[str, Any]]] = {}
        for r in resources:
            self.children.setdefault(r.get("parent") or "", []).append(r)
        self.subnets: dict[str, str] = {}  # subnet resource id placeholder / name -> node id
        self.internet: str | None = None
        self.ssm: str | None = None
        self.bucket: str | None = None
        self.document: str | None = None
        self.source_stage: str | None = None
        self.release_stage: str | None = None
        self.workflow: str | None = None

    def kids(self, component: dict[str, Any], type_: str | None = None) -> list[dict[str, Any]]:
        found = self.children.get(component["urn"], [])
        return [r for r in found if type_ is None or r["type"] == type_]

    def internet_node(self) -> str:
        if self.internet is None:
            self.internet = self.pic.add(Node("internet", ["internet"], "circle"))
        return self.internet

    def ssm_node(self) -> str:
        if self.ssm is None:
            self.ssm = self.pic.add(Node("ssm_sessions", ["SSM Session Manager", "(no inbound port)"], "stadium"))
        return self.ssm

    # -------------------------------------------------------------- parts

    def network(self, component: dict[str, Any]) -> None:
        members = self.pic.group(component["name"], _title("network", component["name"]))
        for vpc in self.kids(component, "aws:ec2/vpc:Vpc"):
            self.pic.add(Node(node_id(vpc["name"]), ["VPC", vpc["inputs"].get("cidrBlock", "")], owners=[vpc["name"]],
                              component=component["name"]), members)
        for subnet in sorted(self.kids(component, "aws:ec2/subnet:Subnet"), key=lambda r: r["name"]):
            inputs = subnet["inputs"]
            sid = self.pic.add(Node(node_id(subnet["name"]), [f"subnet {inputs.get('availabilityZone', '?')}",
                                                               inputs.get("cidrBlock", "")],
                                    owners=[subnet["name"]], component=component["name"]), members)
            self.subnets[f"{subnet['name']}-computed-id"] = sid
            self.subnets[subnet["name"]] = sid
        if not self.kids(component, "aws:ec2/vpc:Vpc"):
            self.pic.add(Node(node_id(component["name"]), [f"existing VPC ({component['name']})"],
                              owners=[component["name"]], component=component["name"]), members)

    def developer(self, component: dict[str, Any], members: list[str]) -> None:
        name = component["name"]
        boxes = self.kids(component, INSTANCE)
        box = boxes[0]["inputs"] if boxes else {}
        ssh_rules = [r for r in _ingress(self.kids(component)) if r.get("fromPort") == 22]
        access = f"ssh :22 from {_sources(ssh_rules[0])}" if ssh_rules else "ssm (no open port)"
        schedule = []
        for item in sorted(self.kids(component, SCHEDULE), key=lambda r: r["name"]):
            verb = "stop" if item["name"].endswith("-stop") else "start" if item["name"].endswith("-start") else "run"
            zone = item["inputs"].get("scheduleExpressionTimezone", "")
            schedule.append(f"{verb} {_cron_text(item['inputs'].get('scheduleExpression', ''))} {zone}".strip())
        idle = set()
        # The idle stop: a parameter of the box's State Manager association (today), or a
        # CloudWatch CPU alarm (plans from before it moved onto the box).
        for association in self.kids(component, "aws:ssm/association:Association"):
            minutes = str((association["inputs"].get("parameters") or {}).get("idleMinutes") or "0")
            if minutes.isdigit() and int(minutes) > 0:
                idle.add(int(minutes))
        for alarm in self.kids(component, ALARM):
            periods, period = alarm["inputs"].get("evaluationPeriods"), alarm["inputs"].get("period")
            if alarm["inputs"].get("metricName") == "CPUUtilization" and periods and period:
                idle.add(int(periods) * int(period) // 60)
        schedule.extend(f"idle stop after {minutes} min" for minutes in sorted(idle))
        volumes = self.kids(component, VOLUME)
        home = f", home {volumes[0]['inputs'].get('size')} GiB" if volumes else ""
        text = [f"{name}: {box.get('instanceType', '?')}{home}", f"access: {access}",
                "; ".join(schedule) if schedule else "always on"]
        nid = self.pic.add(Node(node_id("dev", name), text, owners=[r["name"] for r in self.kids(component)],
                                component=name), members)
        if ssh_rules:
            self.pic.edge(self.internet_node(), nid, f"ssh :22 from {_sources(ssh_rules[0])}")
        else:
            self.pic.edge(self.ssm_node(), nid, "ssh over SSM")
        self.pic.edge(nid, self.subnets.get(box.get("subnetId", "")), None, dotted=True)

    def production(self, component: dict[str, Any]) -> None:
        name = component["name"]
        members = self.pic.group(name, _title("production", name))
        hosts = self.kids(component, INSTANCE)
        rules = [r for r in _ingress(self.kids(component))]
        port = rules[0].get("fromPort") if rules else "?"
        production = getattr(self.config, "production", None)
        slots = getattr(production, "slot_ports", None)
        proxy = self.pic.add(Node(node_id(name, "proxy"), [f"nginx :{port}", "switches blue / green"],
                                  owners=[], component=name), members)
        slot_text = ["app slots", f"blue 127.0.0.1:{slots[0]} / green :{slots[1]}"] if slots else \
            ["app slots", "blue / green on loopback"]
        app = self.pic.add(Node(node_id(name, "slots"), slot_text, "round", owners=[], component=name), members)
        for host in hosts or [{"name": f"{name}-host", "inputs": {}}]:
            inputs = host["inputs"]
            flags = ["no SSH, admin through SSM"]
            if inputs.get("disableApiTermination"):
                flags.append("termination protected")
            hid = self.pic.add(Node(node_id(host["name"]), [f"host {host['name']}: {inputs.get('instanceType', '?')}",
                                                              ", ".join(flags)],
                                    owners=[host["name"], f"{name}-sg", f"{name}-eip"], component=name), members)
            self.pic.edge(hid, self.subnets.get(inputs.get("subnetId", "")), None, dotted=True)
            self.pic.edge(proxy, hid, "runs on", dotted=True)
        domain = getattr(production, "domain", None)
        if domain:
            # Issue #15: the hosts admit only the HTTPS load balancer (its own component).
            lb = self.pic.add(Node(node_id(name, "lb"), [f"HTTPS load balancer {domain}", ":443 TLS 1.2+, :80 redirects"],
                                   owners=[f"{name}-lb"], component=name), members)
            self.pic.edge(self.internet_node(), lb, f":443 from {', '.join(production.allowed_cidrs)}")
            self.pic.edge(lb, proxy, f":{port}, health {production.health_path}")
        for rule in [] if domain else rules:
            self.pic.edge(self.internet_node(), proxy, f":{rule.get('fromPort')} from {_sources(rule)}")
        self.pic.edge(proxy, app, "current release")
        # The deploy document (the host-tools document only installs helpers at boot).
        for doc in [d for d in self.kids(component, "aws:ssm/document:Document") if d["name"] == f"{name}-deploy"]:
            self.document = self.pic.add(Node(node_id(doc["name"]), ["SSM document", f"{doc['name']} (deploy.sh)"],
                                              owners=[doc["name"]], component=name), members)
            self.pic.edge(self.document, app, "deploy.sh: gate, switch, drain")

    def artifacts(self, component: dict[str, Any]) -> None:
        buckets = self.kids(component, "aws:s3/bucket:Bucket")
        owners = [r["name"] for r in self.kids(component)]
        self.bucket = self.pic.add(Node(node_id(component["name"]), ["artifact bucket",
                                                                      "source/, releases/ (immutable)"],
                                        "cylinder", owners=owners or [b["name"] for b in buckets],
                                        component=component["name"]))

    def pipeline(self, component: dict[str, Any]) -> None:
        name = component["name"]
        pipelines = self.kids(component, "aws:codepipeline/pipeline:Pipeline")
        if not pipelines:
            return
        inputs = pipelines[0]["inputs"]
        members = self.pic.group(name, f"CodePipeline {inputs.get('name', name)} ({inputs.get('pipelineType', '?')}, "
                                       f"{inputs.get('executionMode', '?')})")
        previous = None
        for stage in inputs.get("stages") or []:
            actions = stage.get("actions") or []
            text = [f"{stage.get('name')}"] + [f"{a.get('provider')}: {a.get('name')}" for a in actions]
            owners = [pipelines[0]["name"]]
            for action in actions:
                if action.get("provider") == "CodeBuild":
                    owners += [r["name"] for r in self.kids(component, "aws:codebuild/project:Project")]
                if action.get("provider") == "Lambda":
                    owners += [r["name"] for r in self.kids(component, "aws:lambda/function:Function")]
            sid = self.pic.add(Node(node_id(name, "stage", str(stage.get("name"))), text, owners=owners,
                                    component=name), members)
            self.pic.edge(previous, sid)
            previous = sid
            providers = {a.get("provider") for a in actions}
            if "S3" in providers:
                self.source_stage = sid
            if "Lambda" in providers:
                self.release_stage = sid
        if self.bucket:
            self.pic.edge(self.bucket, self.source_stage, "source object version")
            self.pic.edge(self.release_stage, self.bucket, "publish release once", dotted=True)
        if self.document:
            self.pic.edge(self.release_stage, self.document, "SendCommand + checksum")
        alerts = self.kids(component, "aws:sns/topic:Topic")
        if alerts:
            aid = self.pic.add(Node(node_id(alerts[0]["name"]), ["alerts (SNS)", "failed executions"], "stadium",
                                    owners=[r["name"] for r in alerts + self.kids(component, "aws:sns/topicSubscription:TopicSubscription")],
                                    component=name), members)
            self.pic.edge(previous, aid, "on failure", dotted=True)

    def github(self, component: dict[str, Any]) -> None:
        name = component["name"]
        kids = self.kids(component)
        repository = (self.outputs.get("pipeline") or {}).get("repository") or next(
            (r["inputs"].get("repository") for r in kids if r["inputs"].get("repository")), "?")
        members = self.pic.group(name, f"GitHub {repository}")
        protection = [r for r in kids if r["type"] == "github:index/branchProtection:BranchProtection"]
        checks = [c for p in protection for s in p["inputs"].get("requiredStatusChecks") or [] for c in s.get("contexts") or []]
        branch = protection[0]["inputs"].get("pattern") if protection else (self.outputs.get("pipeline") or {}).get("branch")
        text = [f"branch {branch or '?'}"]
        if protection:
            text.append("protected: review" + (f", check {', '.join(checks)}" if checks else ""))
        repo = self.pic.add(Node(node_id(name, "branch"), text, owners=[r["name"] for r in protection],
                                 component=name), members)
        workflow_files = [r for r in kids if r["type"] == "github:index/repositoryFile:RepositoryFile"]
        environments = [r["inputs"].get("environment") for r in kids
                        if r["type"] == "github:index/repositoryEnvironment:RepositoryEnvironment"]
        wtext = [f"Actions: {workflow_files[0]['inputs'].get('file', 'workflow') if workflow_files else 'workflow'}"]
        if environments:
            wtext.append(f"environment {', '.join(environments)}, OIDC role")
        self.workflow = self.pic.add(Node(node_id(name, "workflow"), wtext,
                                          owners=[r["name"] for r in workflow_files + [k for k in kids if k["type"] in (
                                              "github:index/repositoryEnvironment:RepositoryEnvironment",
                                              "github:index/repositoryPullRequest:RepositoryPullRequest",
                                              "github:index/branch:Branch")]], component=name), members)
        variables = [r["inputs"].get("variableName") for r in kids if r["type"] == "github:index/actionsVariable:ActionsVariable"]
        if variables:
            vid = self.pic.add(Node(node_id(name, "variables"), ["Actions variables", ", ".join(sorted(variables))],
                                    owners=[r["name"] for r in kids if r["type"] == "github:index/actionsVariable:ActionsVariable"],
                                    component=name), members)
            self.pic.edge(vid, self.workflow, None, dotted=True)
        self.pic.edge(repo, self.workflow, "push")

    def ci(self, component: dict[str, Any]) -> None:
        roles = sorted(r["name"].removeprefix(f"{component['name']}-").removesuffix("-role")
                       for r in self.kids(component, "aws:iam/role:Role"))
        self.pic.add(Node(node_id(component["name"]), ["CI roles (OIDC)", ", ".join(roles) or "?"], "stadium",
                          owners=[r["name"] for r in self.kids(component)], component=component["name"]))

    def other(self, component: dict[str, Any]) -> None:
        self.pic.add(Node(node_id(component["name"]), [component["name"], component["type"].split(":")[-1]],
                          owners=[r["name"] for r in self.kids(component)], component=component["name"]))

    def build(self) -> Picture:
        order = [NETWORK, ARTIFACTS, PRODUCTION, DEVELOPER, PIPELINE, GITHUB, CI]
        top = [c for c in self.components if c.get("parent") not in {x["urn"] for x in self.components}]
        ranked = sorted(top, key=lambda c: (order.index(c["type"]) if c["type"] in order else len(order), c["name"]))
        developers: list[str] | None = None
        for component in ranked:
            kind = component["type"]
            if kind == NETWORK:
                self.network(component)
            elif kind == DEVELOPER:
                if developers is None:
                    developers = self.pic.group("developers", "developer boxes")
                self.developer(component, developers)
            elif kind == PRODUCTION:
                self.production(component)
            elif kind == ARTIFACTS:
                self.artifacts(component)
            elif kind == PIPELINE:
                self.pipeline(component)
            elif kind == GITHUB:
                self.github(component)
            elif kind == CI:
                self.ci(component)
            else:
                self.other(component)
        if self.workflow and self.bucket:
            self.pic.edge(self.workflow, self.bucket, "upload source, start pipeline")
        return self.pic


# ------------------------------------------------------------------ diff marks


def changes_by_name(changes: Iterable[Any], head: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, str]:
    """{resource or component name: kind} from plan-diff changes (anything with .urn and .kind, or dicts).

    Each changed resource is named, and so is its component: a component
    added or removed whole takes that kind; one with any changed child is
    "update". The plans are `devprod plan --json` shapes (head, and base for removals).
    """
    resources = {r["urn"]: r for plan in (base or {}, head) for r in plan.get("resources", [])}
    found: dict[str, str] = {}
    parents: set[str] = set()
    for change in changes:
        urn = change["urn"] if isinstance(change, Mapping) else change.urn
        kind = change["kind"] if isinstance(change, Mapping) else change.kind
        resource = resources.get(urn)
        name = resource["name"] if resource else urn.rsplit("::", 1)[-1]
        found[name] = _worse(found.get(name), kind)
        parent = resources.get((resource or {}).get("parent") or "")
        if parent and parent["type"].startswith("devprod:"):
            parents.add(parent["name"])
    for name in parents:
        found.setdefault(name, "update")  # added or removed whole keeps its own kind
    return found


def _worse(a: str | None, b: str) -> str:
    return b if a is None or SEVERITY.get(b, 0) > SEVERITY.get(a, 0) else a


def _mark(node: Node, marks: Mapping[str, str]) -> str | None:
    """A box is added or removed only with its first owner (what it draws); a part it also
    stands for (a host's address or security group) added or removed only changes it."""
    first = marks.get(node.owners[0]) if node.owners else None
    if first in ("add", "remove"):
        return CLASS_OF[first]
    kinds = [("update" if marks[o] in ("add", "remove") else marks[o]) for o in node.owners if o in marks]
    if kinds:
        worst: str | None = None
        for k in kinds:
            worst = _worse(worst, k)
        return CLASS_OF.get(worst or "")
    component_kind = marks.get(node.component or "")
    if component_kind in ("add", "remove"):
        return CLASS_OF[component_kind]
    return None


# ------------------------------------------------------------------ text


def mermaid(plan: Any, diff: Mapping[str, str] | None = None) -> str:
    """The flowchart: `plan` is a Plan or its JSON; `diff` maps resource or component names to add/update/
    change/replace/remove (see `changes_by_name`). Removed components that the plan no longer holds are
    drawn apart, struck through by their class."""
    builder = _Builder(plan)
    pic = builder.build()
    marks = {k: v for k, v in (diff or {}).items() if v in CLASS_OF}
    present = {c["name"] for c in builder.components} | {o for n in pic.nodes.values() for o in n.owners}
    components = {c["name"] for c in builder.components}
    # A removed resource of a component that stays marks that component (below), not a box of its own.
    gone = sorted(name for name, kind in marks.items() if kind == "remove" and name not in present
                  and not any(name.startswith(f"{c}-") for c in components))
    removed_components = [n for n in gone if not any(n.startswith(f"{other}-") for other in gone if other != n)]
    if removed_components:
        members = pic.group("removed", "removed by this change")
        for name in removed_components:
            pic.add(Node(node_id("removed", name), [f"{name} (removed)"], owners=[name], component=name), members)
    lines = ["flowchart LR"]
    grouped = {m for _, _, members in pic.groups for m in members}
    for nid, node in pic.nodes.items():
        if nid not in grouped:
            lines.append(f"  {node.render()}")
    for gid, title, members in pic.groups:
        if not members:
            continue
        lines.append(f"  subgraph {gid}[{label(title)}]")
        for member in members:
            lines.append(f"    {pic.nodes[member].render()}")
        lines.append("  end")
    for a, b, text, dotted in pic.edges:
        arrow = "-.->" if dotted else "-->"
        lines.append(f"  {a} {arrow}|{label(text)}| {b}" if text else f"  {a} {arrow} {b}")
    classes: dict[str, list[str]] = {}
    marked_components: set[str] = set()
    for nid, node in pic.nodes.items():
        mark = _mark(node, marks)
        if mark:
            classes.setdefault(mark, []).append(nid)
            marked_components.add(node.component or "")
    # A component changed only in parts no node stands for: its first node says so.
    for name in sorted(components):
        if marks.get(name) in ("update", "change") and name not in marked_components:
            first = next((nid for nid, node in pic.nodes.items() if node.component == name), None)
            if first:
                classes.setdefault("changed", []).append(first)
    if classes:
        lines.append(f"  subgraph legend[{label('legend')}]")
        for c in CLASS_DEFS:
            if c in classes:
                lines.append(f"    legend_{c}[{label(LEGEND[c])}]")
        lines.append("  end")
        for c, style in CLASS_DEFS.items():
            if c in classes:
                lines.append(f"  classDef {c} {style}")
                lines.append(f"  class {','.join(classes[c] + [f'legend_{c}'])} {c}")
    return "\n".join(lines) + "\n"


def markdown(plan: Any, diff: Mapping[str, str] | None = None, title: str | None = None) -> str:
    """The flowchart in a ```mermaid block (what GitHub renders), under an optional heading."""
    head = f"#### {title}\n\n" if title else ""
    return f"{head}```mermaid\n{mermaid(plan, diff)}```\n"
