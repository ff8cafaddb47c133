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
import textwrap
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Callable

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
    # The provider creates a new association for another document (UpdateAssociation is not sent a name).
    "aws:ssm/association:Association": frozenset({"name"}),
    # Issue #15: the HTTPS load balancer and the live-release parameter.
    "aws:lb/loadBalancer:LoadBalancer": frozenset({"name", "internal", "loadBalancerType"}),
    "aws:lb/targetGroup:TargetGroup": frozenset({"name", "port", "protocol", "vpcId", "targetType"}),
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": frozenset({"targetGroupArn", "targetId", "port"}),
    "aws:acm/certificate:Certificate": frozenset({"domainName", "validationMethod"}),
    "aws:ssm/parameter:Parameter": frozenset({"name"}),
}
# userData only forces a replacement when the resource asks for that.
CONDITIONAL = {("aws:ec2/instance:Instance", "userData"): "userDataReplaceOnChange"}
DATA_BEARING = frozenset({"aws:ec2/instance:Instance", "aws:ebs/volume:Volume", "aws:s3/bucket:Bucket"})
MARKDOWN_LIMIT = 60_000
WIDTH = 80


# A base planned by a devprod whose mocks gave every image this one value
# cannot tell images apart: its ami is not compared.
LEGACY_AMI_PLACEHOLDER = "ami-computed-from-ssm-parameter"
IGNORED_NOTE = "ignored by the running box: replace to apply"


@dataclass
class Change:
    urn: str
    name: str
    type: str
    kind: str  # add | remove | update | replace
    properties: list[str] = field(default_factory=list)
    replace_reasons: list[str] = field(default_factory=list)
    retained: bool = False
    # A removed resource with `protect`: `pulumi up` refuses to delete it until unprotected.
    protected: bool = False
    # Why a removal is intended (its developer left the roster), when it is.
    expected: str | None = None
    # The top-level component it belongs to ('DeveloperInstance alice', 'Network network', 'stack').
    component: str = "stack"
    # What to review in an addition: instance type, sizes, schedule, ingress, options.
    key_properties: list[str] = field(default_factory=list)
    # For an update or replacement: property path -> [before, after].
    values: dict[str, list[Any]] = field(default_factory=dict)
    # Properties that changed but that the resource ignores (ignoreChanges): a
    # running box keeps its image and first-boot script until it is replaced.
    ignored: list[str] = field(default_factory=list)

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


def _without_carried_settings(user_data: Any) -> Any:
    """User data without the settings a running box receives another way (its key, through the association)."""
    from components.developer_instance import USER_DATA_SETTINGS_CARRIED_BY_ASSOCIATION as carried

    if not isinstance(user_data, str):
        return user_data
    return "\n".join(l for l in user_data.split("\n") if not l.startswith(tuple(f"{k}=" for k in carried)))


def _ignored_changes(before: dict[str, Any], after: dict[str, Any], ignored: set[str]) -> list[str]:
    """The ignored properties whose value differs in a way a running resource would miss."""
    found = []
    for name in sorted(ignored):
        old, new = before["inputs"].get(name), after["inputs"].get(name)
        if name == "ami" and LEGACY_AMI_PLACEHOLDER in (old, new):
            continue
        if name == "userData":
            old, new = _without_carried_settings(old), _without_carried_settings(new)
        if old != new:
            found.append(name)
    return found


def _update(urn: str, before: dict[str, Any], after: dict[str, Any], component: str) -> Change | None:
    ignored = set(after["options"].get("ignoreChanges") or [])
    a, b = _flatten(before["inputs"]), _flatten(after["inputs"])
    changed = sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p) and _top(p) not in ignored)
    missed = _ignored_changes(before, after, ignored)
    if not changed and missed:
        return Change(urn, after["name"], after["type"], "ignored", component=component, ignored=missed,
                      values={p: [before["inputs"].get(p), after["inputs"].get(p)] for p in missed})
    if not changed:
        return None
    reasons = []
    for top in sorted({_top(p) for p in changed}):
        if top not in REPLACE_INPUTS.get(after["type"], ()):
            continue
        flag = CONDITIONAL.get((after["type"], top))
        if flag and not after["inputs"].get(flag):
            continue
        reasons.append(top)
    return Change(urn, after["name"], after["type"], "replace" if reasons else "update", changed, reasons,
                  retained=bool(reasons) and bool(before["options"].get("retainOnDelete")),
                  component=component, values={p: [a.get(p), b.get(p)] for p in changed}, ignored=missed)


def compare(base: dict[str, Any], head: dict[str, Any]) -> PlanDiff:
    from devprod.plan import component_labels
    from devprod.plan_view import key_properties

    old = {r["urn"]: r for r in base.get("resources", [])}
    new = {r["urn"]: r for r in head.get("resources", [])}
    old_labels, new_labels = component_labels(list(old.values())), component_labels(list(new.values()))
    changes: list[Change] = []
    for urn in sorted(new.keys() - old.keys()):
        r = new[urn]
        changes.append(Change(urn, r["name"], r["type"], "add", component=new_labels[urn],
                              key_properties=key_properties(r["type"], r["inputs"], r.get("options") or {})))
    for urn in sorted(old.keys() - new.keys()):
        r = old[urn]
        changes.append(Change(urn, r["name"], r["type"], "remove", retained=bool(r["options"].get("retainOnDelete")),
                              protected=bool(r["options"].get("protect")),
                              expected=_offboarded(r, old, new), component=old_labels[urn]))
    for urn in sorted(old.keys() & new.keys()):
        change = _update(urn, old[urn], new[urn], new_labels[urn])
        if change is not None:
            changes.append(change)
    return PlanDiff(head.get("stack", "?"), base.get("base", "base"), changes)


# ---------------------------------------------------------------- markdown

MARKS = {"add": "+", "update": "~", "replace": "±", "remove": "−", "ignored": "!"}
ORDER = ("replace", "remove", "update", "ignored", "add")


def _money(amount: float, currency: str) -> str:
    return f"{'+' if amount >= 0 else '−'}{abs(amount):.2f} {currency}"


def _wrapped(text: str, first: str = "", rest: str = "") -> list[str]:
    """Markdown that stays readable in an 80-column terminal: list items continue indented,
    quotes continue quoted."""
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False, break_long_words=False) or [first.rstrip()]


def _notices(diff: PlanDiff) -> list[str]:
    """The lines a reviewer must not miss: replacements, data loss, expected and retained removals."""
    lines: list[str] = []
    for change in diff.of("replace"):
        # A retained resource is not deleted on replacement: a new one is created and the old one stays
        # in AWS, outside the stack (for a home volume: a new, empty home).
        what = ("AWS creates a new one and the old one stays in AWS, outside the stack (retainOnDelete)"
                if change.retained else "AWS deletes and recreates it")
        lines += _wrapped(f"**Replacement**: `{change.name}` ({change.type.split(':')[-1]}) because "
                          f"{', '.join(change.replace_reasons)} changed; {what}.", "> ", "> ")
    for change in diff.risky:
        if change.kind == "remove":
            lines += _wrapped(f"**Data loss**: `{change.name}` ({change.type.split(':')[-1]}) is deleted and not "
                              "retained.", "> ", "> ")
    for change in [c for c in diff.changes if c.ignored]:
        lines += _wrapped(f"**Ignored by the running box: replace to apply**: `{change.name}` "
                          f"({change.type.split(':')[-1]}): {', '.join(change.ignored)} changed; "
                          f"`pulumi up` leaves the box as it is (ignoreChanges).", "> ", "> ")
    for change in diff.of("remove"):
        if change.retained:
            # Retained is not deleted: an expected removal of a retained volume must not read "deleted".
            why = f" as expected and is **retained** in AWS (retainOnDelete): {change.expected}." if change.expected \
                else " but is **retained** in AWS (retainOnDelete)."
            lines += _wrapped(f"`{change.name}` leaves the stack{why}", "> ", "> ")
        if change.protected:
            lines += _wrapped(f"**Protected**: `pulumi up` refuses to remove `{change.name}` until you run "
                              f"`pulumi state unprotect '{change.urn}'` (the volume stays in AWS either way).", "> ", "> ")
        elif change.expected and change.type in DATA_BEARING and not change.retained:
            lines += _wrapped(f"`{change.name}` is deleted as expected: {change.expected}.", "> ", "> ")
    return lines


def _item(change: Change) -> list[str]:
    from devprod.plan_view import elide, phrase, plain

    what = f"- `{MARKS[change.kind]}` `{change.name}` {change.type.split(':')[-1]}"
    if change.kind == "add":
        detail = phrase(change.key_properties)
    elif change.kind == "remove":
        detail = "leaves the stack, retained in AWS" if change.retained else "deleted"
    elif change.kind == "ignored":
        detail = f"{IGNORED_NOTE} ({_ignored_detail(change)})"
    else:
        shown = [f"{path} {elide(plain(before), 24)} → {elide(plain(after), 24)}"
                 for path, (before, after) in list(change.values.items())[:3]]
        more = len(change.values) - len(shown)
        detail = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        if change.kind == "replace":
            detail = f"replaced ({', '.join(change.replace_reasons)}): {detail}"
        if change.ignored:
            detail += f"; {IGNORED_NOTE}: {', '.join(change.ignored)}"
    return _wrapped(f"{what}: {detail}" if detail else what, "", "  ")


def _ignored_detail(change: Change) -> str:
    """The ignored properties, with before -> after when short enough to read (a script is not)."""
    from devprod.plan_view import elide, plain

    parts = []
    for name in change.ignored:
        before, after = change.values.get(name, [None, None])
        if not all(isinstance(v, str) and "\n" not in v for v in (before, after)):
            parts.append(name)
            continue
        # Image placeholders share a long prefix (the parameter's path): show from where they differ.
        cut = os.path.commonprefix([before, after]).rfind("/") + 1
        shown = [("…" if cut else "") + elide(plain(v[cut:]), 36) for v in (before, after)]
        parts.append(f"{name} {shown[0]} → {shown[1]}")
    return "; ".join(parts)


def _group_title(label: str, changes: list[Change], cost: Any) -> str:
    counts = {k: sum(1 for c in changes if c.kind == k) for k in ORDER}
    words = {"add": "to add", "update": "to change", "replace": "to replace", "remove": "to remove",
             "ignored": "ignored by the running box"}
    parts = [f"{n} {words[k]}" for k, n in counts.items() if n] or ["no resource changes"]
    if cost is not None:
        parts.append(f"{_money(cost.of(label), cost.currency)} a month")
    return f"#### {label}: {', '.join(parts)}"


def _groups(diff: PlanDiff, cost: Any) -> list[list[str]]:
    by_label: dict[str, list[Change]] = {}
    for change in diff.changes:
        by_label.setdefault(change.component, []).append(change)
    for label in (cost.changed_components() if cost is not None else []):
        by_label.setdefault(label, [])
    blocks = []
    for label in sorted(by_label, key=lambda l: (l == "stack", l)):
        changes = sorted(by_label[label], key=lambda c: (ORDER.index(c.kind), c.name))
        # Why the removals are expected, once per component rather than on every line.
        reasons = sorted({c.expected for c in changes if c.expected})
        why = _wrapped(f"Removed as expected: {'; '.join(reasons)}.") + [""] if reasons else []
        blocks.append(["", _group_title(label, changes, cost), "", *why] + [line for c in changes for line in _item(c)])
    return blocks


def markdown(diff: PlanDiff, base_label: str, cost: Any = None) -> str:
    """The diff as markdown (the PR summary), grouped by component, lines within 80 columns.
    `cost` is a cost.CostChange, or None when the cost was not asked for."""
    adds, updates, replaces, removes = (diff.of(k) for k in ("add", "update", "replace", "remove"))
    ignored = [c for c in diff.changes if c.ignored]
    from devprod.plan_view import elide

    title = f"### devprod plan: `{diff.stack}` against ``"
    lines = [title[:-1] + elide(base_label, WIDTH - len(title)) + "`", "",
             f"**{len(adds)} to add, {len(updates)} to change in place, {len(replaces)} to replace, "
             f"{len(removes)} to remove**"]
    lines += [f"**{len(ignored)} {IGNORED_NOTE}**"] if ignored else []
    if cost is not None:
        lines += _wrapped(f"Estimated monthly cost {_money(cost.delta, cost.currency)} (from {cost.base:.2f} to "
                          f"{cost.head:.2f} {cost.currency}).")
    notices = _notices(diff)
    lines += [""] + notices if notices else []
    if not diff.changes:
        lines += ["", "No changes."]
    text = "\n".join(lines)
    body = [line for block in _groups(diff, cost) for line in block]
    for index, line in enumerate(body):
        if len(text) + len(line) + 200 > MARKDOWN_LIMIT:
            left = sum(1 for rest in body[index:] if rest.startswith("- "))
            text += f"\n\n… {left} more changes left out to stay under {MARKDOWN_LIMIT} characters."
            break
        text += "\n" + line
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


# What a plan reads besides the stack file: when none of it differs between the base ref
# and the working tree, the base is this program with the base's stack file.
PROGRAM_PATHS = ("__main__.py", "Pulumi.yaml", "components", "policy", "devprod", "scripts")


def _git(project_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(project_dir), *args], capture_output=True, text=True)


def _runs_this_checkout(project_dir: Path) -> bool:
    """True when the imported program is the project's own files (not an installed copy)."""
    import components

    here = Path(components.__file__).resolve().parent
    return here == (project_dir / "components").resolve() and (project_dir / "devprod").resolve() == Path(__file__).resolve().parent


def same_program_at(project_dir: Path, ref: str) -> bool:
    """Whether the program at git `ref` is the one running now (only stack files differ)."""
    top = _git(project_dir, "rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != project_dir.resolve():
        return False
    if not _runs_this_checkout(project_dir):
        return False
    if _git(project_dir, "diff", "--quiet", ref, "--", *PROGRAM_PATHS).returncode != 0:
        return False
    untracked = _git(project_dir, "ls-files", "--others", "--exclude-standard", "--", *PROGRAM_PATHS)
    return untracked.returncode == 0 and not untracked.stdout.strip()


def plan_stack_text_at(project_dir: Path, ref: str, stack: str, head: dict[str, Any]) -> dict[str, Any]:
    """The base plan when only the stack file may differ: this program, the base's stack file.
    An unchanged stack file is no second plan at all."""
    from components.config import ConfigError
    from devprod.plan import plan_stack

    shown = _git(project_dir, "show", f"{ref}:Pulumi.{stack}.yaml")
    if shown.returncode != 0:
        return {"stack": stack, "resources": [], "outputs": {}}
    current = (project_dir / f"Pulumi.{stack}.yaml").read_text()
    if shown.stdout == current:
        return head
    try:
        return plan_stack(project_dir, stack, stack_text=shown.stdout).to_json()
    except ConfigError as exc:
        raise BaseError(f"planning {stack} at {ref} failed: Pulumi.{stack}.yaml there is invalid: "
                        f"{exc.problems[0]}") from None
    except BadInput as exc:
        raise BaseError(f"planning {stack} at {ref} failed: {exc}") from None


def _check_saved(base: str, plan: Any, stack: str) -> dict[str, Any]:
    if not isinstance(plan, dict) or not isinstance(plan.get("resources"), list):
        raise BaseError(f"--diff {base}: not a saved plan: it has no resources list")
    if plan.get("stack") != stack:
        raise BaseError(f"--diff {base}: a plan of stack {plan.get('stack')!r}, not {stack!r}")
    for index, resource in enumerate(plan["resources"]):
        missing = [k for k in ("urn", "type", "name", "inputs", "options") if not isinstance(resource, dict) or k not in resource]
        if missing:
            raise BaseError(f"--diff {base}: not a saved plan: resources[{index}] has no {', '.join(missing)}")
    return plan


def load_base(project_dir: Path, base: str, stack: str, head: dict[str, Any] | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The base plan: a saved `--json` file, or the plan at a git ref (announced on `progress`)."""
    path = Path(base)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise BaseError(f"--diff {base}: no such file")
        try:
            plan = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BaseError(f"--diff {base}: not a saved plan (`devprod plan {stack} --json`): {exc}") from None
        return _check_saved(base, plan, stack)
    say = progress or (lambda _line: None)
    started = time.perf_counter()
    if head is not None and same_program_at(project_dir, base):
        say(f"planning {stack} at {base}: same program, its Pulumi.{stack}.yaml")
        plan = plan_stack_text_at(project_dir, base, stack, head)
    else:
        say(f"planning {stack} at {base} in a separate process (the program differs)")
        plan = plan_at_ref(project_dir, base, stack)
    say(f"planned {stack} at {base} in {time.perf_counter() - started:.1f} s")
    return plan
