"""Compare two offline plans: what is added, removed, changed (per property), and what AWS must replace.

The base plan comes from a saved `devprod plan --json` file or from the program
and stack file at a git ref (run in a subprocess, so the two versions of
`components` never share one interpreter).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from devprod.errors import BadInput

# Inputs AWS cannot change in place: a change means delete-and-create.
REPLACE_INPUTS: dict[str, frozenset[str]] = {
    "aws:ec2/instance:Instance": frozenset(
        {"ami", "keyName", "subnetId", "availabilityZone", "associatePublicIpAddress", "privateIp", "tenancy", "userData"}
    ),
    "aws:ebs/volume:Volume": frozenset({"availabilityZone", "encrypted", "kmsKeyId", "snapshotId", "outpostArn"}),
    "aws:ec2/volumeAttachment:VolumeAttachment": frozenset({"deviceName", "instanceId", "volumeId"}),
    "aws:ec2/subnet:Subnet": frozenset({"cidrBlock", "availabilityZone", "vpcId"}),
    "aws:ec2/vpc:Vpc": frozenset({"cidrBlock"}),
    "aws:ec2/securityGroup:SecurityGroup": frozenset({"name", "description", "vpcId"}),
    "aws:s3/bucket:Bucket": frozenset({"bucket", "bucketPrefix"}),
    "aws:iam/role:Role": frozenset({"name", "path"}),
    "aws:cloudwatch/logGroup:LogGroup": frozenset({"name"}),
    "aws:codepipeline/pipeline:Pipeline": frozenset({"name"}),
    "aws:ssm/document:Document": frozenset({"name", "documentType"}),
}
# userData only forces a replacement when the resource asks for that.
CONDITIONAL = {("aws:ec2/instance:Instance", "userData"): "userDataReplaceOnChange"}
DATA_BEARING = frozenset({"aws:ec2/instance:Instance", "aws:ebs/volume:Volume", "aws:s3/bucket:Bucket"})
MARKDOWN_LIMIT = 60_000


@dataclass
class Change:
    urn: str
    name: str
    type: str
    kind: str  # add | remove | update | replace
    properties: list[str] = field(default_factory=list)
    replace_reasons: list[str] = field(default_factory=list)
    retained: bool = False
    # Why a removal is intended (its developer left the roster), when it is.
    expected: str | None = None

    @property
    def data_loss(self) -> bool:
        if self.type not in DATA_BEARING or self.expected:
            return False
        return (self.kind == "remove" and not self.retained) or self.kind == "replace"


@dataclass
class PlanDiff:
    stack: str
    base: str
    changes: list[Change]

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def risky(self) -> list[Change]:
        return [c for c in self.changes if c.data_loss]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else key))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for index, inner in enumerate(value):
            out.update(_flatten(inner, f"{prefix}[{index}]"))
        return out or {prefix: []}
    return {prefix: value}


DEVELOPER_COMPONENT = "devprod:compute:DeveloperInstance"


def _offboarded(resource: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """A box removed with its whole DeveloperInstance (the developer left the roster) is the
    intended way to delete it; the home volume is retained, so no developer data goes. A box
    removed while its developer stays, or a volume that is not retained, is still data loss."""
    parent = old.get(resource.get("parent") or "")
    if parent is None or parent["type"] != DEVELOPER_COMPONENT or parent["urn"] in new:
        return None
    if resource["type"] == "aws:ebs/volume:Volume" and not resource["options"].get("retainOnDelete"):
        return None
    return f"developer {parent['name']} left the roster; their home volume is retained"


def _top(path: str) -> str:
    return path.split(".")[0].split("[")[0]


def compare(base: dict[str, Any], head: dict[str, Any]) -> PlanDiff:
    old = {r["urn"]: r for r in base.get("resources", [])}
    new = {r["urn"]: r for r in head.get("resources", [])}
    changes: list[Change] = []
    for urn in sorted(new.keys() - old.keys()):
        r = new[urn]
        changes.append(Change(urn, r["name"], r["type"], "add"))
    for urn in sorted(old.keys() - new.keys()):
        r = old[urn]
        changes.append(Change(urn, r["name"], r["type"], "remove", retained=bool(r["options"].get("retainOnDelete")),
                              expected=_offboarded(r, old, new)))
    for urn in sorted(old.keys() & new.keys()):
        before, after = old[urn], new[urn]
        ignored = set(after["options"].get("ignoreChanges") or [])
        a, b = _flatten(before["inputs"]), _flatten(after["inputs"])
        changed = sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p) and _top(p) not in ignored)
        if not changed:
            continue
        reasons = []
        for top in sorted({_top(p) for p in changed}):
            if top not in REPLACE_INPUTS.get(after["type"], ()):
                continue
            flag = CONDITIONAL.get((after["type"], top))
            if flag and not after["inputs"].get(flag):
                continue
            reasons.append(top)
        kind = "replace" if reasons else "update"
        changes.append(Change(urn, after["name"], after["type"], kind, changed, reasons))
    return PlanDiff(head.get("stack", "?"), base.get("base", "base"), changes)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(diff: PlanDiff, base_label: str, cost_delta: float | None = None, currency: str = "USD") -> str:
    adds, updates, replaces, removes = (diff.of(k) for k in ("add", "update", "replace", "remove"))
    lines = [f"### devprod plan: `{diff.stack}` against `{base_label}`", ""]
    summary = f"**{len(adds)} to add, {len(updates)} to change in place, {len(replaces)} to replace, {len(removes)} to remove**"
    if cost_delta is not None:
        summary += f" · estimated monthly cost {'+' if cost_delta >= 0 else '−'}{abs(cost_delta):.2f} {currency}"
    lines.append(summary)
    if not diff.changes:
        lines += ["", "No changes."]
    for change in replaces:
        lines.append(f"> **Replacement**: `{change.name}` ({change.type.split(':')[-1]}) because {', '.join(change.replace_reasons)} changed; AWS deletes and recreates it.")
    for change in diff.risky:
        if change.kind == "remove":
            lines.append(f"> **Data loss**: `{change.name}` ({change.type.split(':')[-1]}) is deleted and not retained.")
    for change in removes:
        if change.retained:
            lines.append(f"> `{change.name}` leaves the stack but is **retained** in AWS (retainOnDelete).")
        elif change.expected and change.type in DATA_BEARING:
            lines.append(f"> `{change.name}` is deleted as expected: {change.expected}.")
    if not diff.changes:
        return "\n".join(lines) + "\n"
    lines += ["", "| | resource | type | changed |", "|---|---|---|---|"]
    marks = {"add": "+", "update": "~", "replace": "±", "remove": "−"}
    body = []
    for change in sorted(diff.changes, key=lambda c: ("replace", "remove", "update", "add").index(c.kind)):
        details = ", ".join(change.properties[:8]) + (" …" if len(change.properties) > 8 else "")
        body.append(f"| {marks[change.kind]} | `{_cell(change.name)}` | {change.type.split(':')[-1]} | {_cell(details)} |")
    text = "\n".join(lines)
    for index, row in enumerate(body):
        if len(text) + len(row) + 200 > MARKDOWN_LIMIT:
            text += f"\n\n… {len(body) - index} more rows left out to stay under {MARKDOWN_LIMIT} characters."
            break
        text += "\n" + row
    return text + "\n"


# ---------------------------------------------------------------- base plans

# Run in the base tree with PYTHONPATH naming it first, so the base's own
# program (components, policy and, once it has one, devprod) is what plans it.
_PLAN_AT = """
import json
from pathlib import Path
from devprod.plan import plan_stack
print(json.dumps(plan_stack(Path({tree!r}), {stack!r}).to_json()))
"""


class BaseError(BadInput):
    pass


def plan_at_ref(project_dir: Path, ref: str, stack: str) -> dict[str, Any]:
    """Plan `stack` with the program and stack file as they were at git `ref`."""
    archive = subprocess.run(["git", "-C", str(project_dir), "archive", "--format=tar", ref],
                             capture_output=True)
    if archive.returncode != 0:
        raise BaseError(f"git archive {ref}: {archive.stderr.decode().strip() or 'failed'}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.FilterError as exc:
            raise BaseError(f"git archive {ref}: refusing to unpack it ({exc})") from None
        tree = Path(tmp)
        if not (tree / f"Pulumi.{stack}.yaml").is_file() or not (tree / "__main__.py").is_file():
            return {"stack": stack, "resources": [], "outputs": {}}
        code = _PLAN_AT.format(tree=str(tree), stack=stack)
        # A base from before the package moved to the top level keeps it under scripts/.
        path = os.pathsep.join([str(tree), str(tree / "scripts"), str(Path(__file__).resolve().parents[1])])
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp,
                                env={**os.environ, "PYTHONPATH": path})
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BaseError(f"planning {stack} at {ref} failed: {last}")
        return json.loads(result.stdout)


def load_base(project_dir: Path, base: str, stack: str) -> dict[str, Any]:
    path = Path(base)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise BaseError(f"--diff {base}: no such file")
        try:
            plan = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BaseError(f"--diff {base}: not a saved plan (`devprod plan {stack} --json`): {exc}") from None
        if not isinstance(plan, dict) or not isinstance(plan.get("resources"), list):
            raise BaseError(f"--diff {base}: not a saved plan: it has no resources list")
        if plan.get("stack") != stack:
            raise BaseError(f"--diff {base}: a plan of stack {plan.get('stack')!r}, not {stack!r}")
        return plan
    return plan_at_ref(project_dir, base, stack)
