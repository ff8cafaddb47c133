"""Offline plan: run a Pulumi program under recording mocks, with no engine and no cloud.

Pulumi's own test mechanism (`pulumi.runtime.set_mocks`) stands in for the
engine. A monitor subclass records each RegisterResource request, so that
resource options (protect, ignoreChanges, retainOnDelete, deleteBeforeReplace)
are visible, which the stock mocks do not expose. Provider-computed values
(ids, ARNs, addresses, AMI ids) are placeholders that contain the word
"computed" and the documentation account id 123456789012.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import hashlib
import json
import re
import runpy
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pulumi
from google.protobuf import struct_pb2
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime._context import wrap_with_context
from pulumi.runtime import resource as pulumi_resource
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import resource_pb2, source_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.main import CParser as _C_PARSER

from devprod import offline_sdk
from devprod.errors import BadInput

PLACEHOLDER_ACCOUNT = "123456789012"
AMI_PLACEHOLDER = "ami-computed-from-ssm:"
SECRET = "[secret]"
RESOURCE_REFERENCE = "<resource reference>"
PLACEHOLDER_NOTE = (
    "values containing 'computed' and the account id 123456789012 (used unless "
    "devprod:accountId names one) are placeholders for what AWS computes at `pulumi up`"
)


@dataclass
class RecordedResource:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    options: dict[str, Any]
    # What the mocks computed (id, name, arn): how other resources refer to
    # this one. Used by the stack rules; not part of the JSON contract.
    computed: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "inputs": self.inputs,
            "options": self.options,
        }


def component_labels(resources: list[dict[str, Any]]) -> dict[str, str]:
    """URN -> the top-level component it belongs to ('DeveloperInstance alice'), or 'stack'
    for a resource the program creates outside any component. Used to group diffs and costs."""
    by_urn = {r["urn"]: r for r in resources}
    parents = {r.get("parent") for r in resources}
    labels: dict[str, str] = {}
    for resource in resources:
        top = resource
        while (top.get("parent") or "") in by_urn:
            top = by_urn[top["parent"]]
        is_component = top["urn"] in parents or not top["type"].startswith(("aws:", "github:"))
        labels[resource["urn"]] = f"{top['type'].split(':')[-1]} {top['name']}" if is_component else "stack"
    return labels


@dataclass
class Plan:
    project: str
    stack: str
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    # The validated StackConfig the plan ran with (not part of the JSON contract).
    config: Any = field(default=None, repr=False)
    # One-line notes for stderr (an empty roster); not part of the JSON contract.
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "project": self.project,
            "placeholders": PLACEHOLDER_NOTE,
            "resources": [r.to_json() for r in self.resources],
            "outputs": self.outputs,
        }

    def of_type(self, type_: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> RecordedResource:
        for r in self.resources:
            if r.name == name:
                return r
        raise KeyError(f"no resource named {name!r} in the plan")

    def children_of(self, urn: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.parent == urn]

    def stack_resources(self) -> list[Any]:
        """The resources as the stack rules see them: inputs, and how others refer to each."""
        from policy.stack_rules import StackResource, refs_of

        return [
            StackResource(
                urn=r.urn,
                type=r.type,
                name=r.name,
                props=r.inputs,
                refs=refs_of({**r.computed, **{k: v for k, v in r.inputs.items() if k in ("name", "arn")}}),
            )
            for r in self.resources
            if r.custom
        ]

    def violations(self) -> list[dict[str, str]]:
        """Every rule on every resource, then the stack rules: {urn, name, message} each."""
        from policy.rules import violations
        from policy.stack_rules import StackContext, stack_violations

        allowed = frozenset(getattr(self.config, "instance_role_policies", ()) or ())
        found = [
            {"urn": r.urn, "name": r.name, "message": m}
            for r in self.resources
            for m in violations(r.type, r.inputs, r.options)
        ]
        found += [
            {"urn": f.urn, "name": f.name, "message": f.message}
            for f in stack_violations(self.stack_resources(), StackContext(allowed_managed_policies=allowed))
        ]
        return found


def _plain(value: Any) -> Any:
    """Wire values to JSON: secrets become [secret], assets their text or path."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return SECRET
        return {k: _plain(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, pulumi.StringAsset):
        return {"asset": "text", "text": value.text}
    if isinstance(value, pulumi.FileAsset):
        # By content, as Pulumi diffs assets: a checkout elsewhere is no change.
        return {"asset": "file", "sha256": hashlib.sha256(Path(value.path).read_bytes()).hexdigest()}
    if isinstance(value, pulumi.AssetArchive):
        return {"archive": {name: _plain(asset) for name, asset in sorted(value.assets.items())}}
    if isinstance(value, pulumi.Resource):
        return RESOURCE_REFERENCE
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire has only doubles; 50 GiB is not 50.0
    return value


def _service_of(type_: str) -> str:
    module = type_.split(":")[1].split("/")[0] if ":" in type_ else type_
    return {"cloudwatch": "cloudwatch", "ebs": "ec2", "scheduler": "scheduler"}.get(module, module)


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers resource registrations and invokes with labelled placeholders."""

    def __init__(self, region: str = "eu-central-1", account: str = PLACEHOLDER_ACCOUNT):
        self.region = region
        self.account = account

    # ARN shapes per type, so that policies built from them read like real ones.
    _ARN_FORMATS = {
        "aws:iam/role:Role": "arn:aws:iam::{account}:role/{name}",
        "aws:iam/instanceProfile:InstanceProfile": "arn:aws:iam::{account}:instance-profile/{name}",
        "aws:iam/openIdConnectProvider:OpenIdConnectProvider": "arn:aws:iam::{account}:oidc-provider/{url}",
        "aws:s3/bucket:Bucket": "arn:aws:s3:::{bucket}",
        "aws:sns/topic:Topic": "arn:aws:sns:{region}:{account}:{name}",
        "aws:codepipeline/pipeline:Pipeline": "arn:aws:codepipeline:{region}:{account}:{name}",
        "aws:codebuild/project:Project": "arn:aws:codebuild:{region}:{account}:project/{name}",
        "aws:ssm/document:Document": "arn:aws:ssm:{region}:{account}:document/{name}",
        "aws:cloudwatch/logGroup:LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}",
        "aws:cloudwatch/eventRule:EventRule": "arn:aws:events:{region}:{account}:rule/{name}",
        "aws:lambda/function:Function": "arn:aws:lambda:{region}:{account}:function:{name}",
        "aws:lb/targetGroup:TargetGroup": "arn:aws:elasticloadbalancing:{region}:{account}:targetgroup/{name}/0123456789abcdef",
    }

    def _arn(self, type_: str, name: str, inputs: dict[str, Any]) -> str:
        physical = inputs.get("name") or f"{name}-computed"
        template = self._ARN_FORMATS.get(type_)
        if template:
            return template.format(
                account=self.account,
                region=self.region,
                name=physical,
                bucket=inputs.get("bucket") or f"{name}-computed",
                url=str(inputs.get("url", "")).removeprefix("https://"),
            )
        service = _service_of(type_)
        kind = type_.split(":")[-1].lower()
        return f"arn:aws:{service}:{self.region}:{self.account}:{kind}/{physical}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = args.inputs
        # Only what the provider would compute: the SDK fills every other
        # output from the inputs, so echoing them back would only cost time.
        state: dict[str, Any] = {}
        if "arn" not in inputs:
            state["arn"] = self._arn(args.typ, args.name, inputs)
        if "name" not in inputs:
            state["name"] = f"{args.name}-computed"
        resource_id = f"{args.name}-computed-id"
        if args.typ == "aws:kms/key:Key":
            state["keyId"] = f"{args.name}-computed"
        if args.typ == "aws:ec2/instance:Instance":
            resource_id = f"i-computed-{args.name}"
            state.update(privateIp="computed-private-ip", publicIp="computed-public-ip")
        elif args.typ == "aws:ec2/eip:Eip":
            state["publicIp"] = f"computed-eip-{args.name}"
        elif args.typ == "aws:acm/certificate:Certificate":
            state["domainValidationOptions"] = [{
                "domainName": inputs.get("domainName"), "resourceRecordName": f"_computed.{inputs.get('domainName')}.",
                "resourceRecordType": "CNAME", "resourceRecordValue": "_computed.acm-validations.aws."}]
        elif args.typ == "aws:lb/loadBalancer:LoadBalancer":
            state.update(dnsName=f"{args.name}-computed.elb.amazonaws.com", zoneId="ZCOMPUTEDELBZONE",
                         arnSuffix=f"app/{args.name}-computed/0123")
        elif args.typ == "aws:lb/targetGroup:TargetGroup":
            state["arnSuffix"] = f"targetgroup/{args.name}-computed/0123"
        elif args.typ == "aws:route53/record:Record":
            state["fqdn"] = inputs.get("name")
        elif args.typ == "aws:ebs/volume:Volume":
            resource_id = f"vol-computed-{args.name}"
        elif args.typ == "aws:ssm/association:Association":
            state["associationId"] = f"{args.name}-computed"
        elif args.typ == "aws:s3/bucketV2:BucketV2" or args.typ == "aws:s3/bucket:Bucket":
            state["bucket"] = inputs.get("bucket") or f"{args.name}-computed"
            resource_id = state["bucket"]
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        token = args.token
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account,
                "arn": f"arn:aws:iam::{self.account}:user/computed",
                "userId": "computed",
                "id": self.account,
            }
        if token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:ssm/getParameter:getParameter":
            return {
                "name": args.args.get("name"),
                # Names its parameter: another OS or architecture reads another
                # parameter, so the plan diff sees the image change (a new image
                # behind the same parameter cannot be seen offline).
                "value": f"{AMI_PLACEHOLDER}{args.args.get('name')}",
                "type": "String",
                "id": args.args.get("name"),
            }
        return dict(args.args)


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """MockMonitor that also keeps every registration request's options.

    RegisterResource is the stock mock's, done without its two detours: the inputs are
    read once, straight into the recorded form (the stock mock deserializes them into SDK
    objects, which the recorder then converted again: a fifth of a plan's CPU in all), and
    the provider's answer is a Struct of plain values built directly (the stock mock runs
    the SDK's async serializer on a private event loop, once per resource). The mocks see
    the recorded inputs too: a secret name is `[secret]` in a computed ARN, not the SDK's
    wrapper object.
    """

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.recorded: list[RecordedResource] = []

    # The stock mock's Invoke and ReadResource serialize their answer on the calling
    # thread's event loop. A plan calls the monitor on its own loop's thread (see
    # `_answered_inline`), where that loop is already running: they run on a thread of
    # their own, as the SDK's thread pool would run them. A stack makes a handful.
    def Invoke(self, request):  # noqa: N802 - gRPC method name
        return _off_the_loop(super().Invoke, request)

    def ReadResource(self, request):  # noqa: N802 - gRPC method name
        return _off_the_loop(super().ReadResource, request)

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        inputs = _recorded_inputs(request.object)
        args = pulumi.runtime.MockResourceArgs(
            typ=request.type, name=request.name, inputs=inputs, provider=request.provider,
            resource_id=request.importId, custom=bool(request.custom))
        resource_id, state = self.mocks.new_resource(args)
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, resource_id, state)
        answer = struct_pb2.Struct()
        answer.update({key: value for key, value in state.items() if value is not None})
        self.recorded.append(
            RecordedResource(
                urn=urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=bool(request.custom),
                inputs=inputs,
                options={
                    "protect": bool(request.protect),
                    "ignoreChanges": list(request.ignoreChanges),
                    "retainOnDelete": bool(request.retainOnDelete),
                    "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                },
                computed={**state, "id": resource_id} if request.custom else {},
            )
        )
        return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id or "", object=answer)


def _off_the_loop(method: Callable[[Any], Any], request: Any) -> Any:
    """`method(request)` on a thread with an event loop of its own (closed after), in the
    caller's context (the SDK's settings live in context variables); the caller waits."""
    context = contextvars.copy_context()

    def call() -> Any:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return context.run(method, request)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as helper:
        return helper.submit(call).result()


def _recorded_inputs(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A request's inputs in their recorded form: what `_plain(rpc.deserialize_properties(
    struct))` gives, in one pass over the wire values. An input holding a secret records
    as the marker; the others as `_recorded_map` keeps them."""
    fields = struct.fields  # by key: protobuf's items() is a Python generator per item
    recorded = {}
    for key in fields:
        value = _recorded(fields[key])
        if value is not None and not key.startswith("__"):
            recorded[key] = SECRET if value is _SECRET_INSIDE else value
    return recorded


# Stands for a value that holds a secret: the SDK makes a list or map holding a secret
# secret as a whole, up to the input (so the whole input records as [secret]).
_SECRET_INSIDE = object()


def _recorded(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        return None if text == rpc.UNKNOWN else text  # unknown: absent, as the SDK reads it offline
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() else number  # the wire has only doubles
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        items = [_recorded(item) for item in value.list_value.values]
        # `in` compares by identity first; the items are plain wire values, whose == never
        # answers True for the marker.
        return _SECRET_INSIDE if _SECRET_INSIDE in items else items
    if kind == "struct_value":
        return _recorded_map(value.struct_value)
    return None


def _recorded_map(struct: struct_pb2.Struct) -> Any:
    """A map as the record keeps it: not the fields that read as None (the SDK leaves them
    out), nor the internal `__` ones; the marker if any field holds a secret, internal
    ones too. A string, the commonest field, is read here rather than through `_recorded`
    (a call per field)."""
    fields = struct.fields
    if rpc._special_sig_key in fields:
        return _special(struct)
    kept, secret = {}, False
    for key in fields:
        value = fields[key]
        if value.WhichOneof("kind") == "string_value":
            item = value.string_value
            if item == rpc.UNKNOWN:
                continue
        else:
            item = _recorded(value)
            if item is None:
                continue
            if item is _SECRET_INSIDE:
                secret = True  # read on: a later field's error is still raised, as before
        if not key.startswith("__"):
            kept[key] = item
    return _SECRET_INSIDE if secret else kept


def _special(struct: struct_pb2.Struct) -> Any:
    """A secret, resource reference, asset or archive. The first two are read here: the SDK
    would rebuild a referenced resource on this (the monitor's) thread, whose event loop
    never runs, and the plan would wait for it forever. Assets and archives: the SDK's own
    reading, then ours."""
    signature = struct.fields[rpc._special_sig_key].string_value
    if signature == rpc._special_secret_sig:
        return _SECRET_INSIDE
    if signature == rpc._special_resource_sig:
        return RESOURCE_REFERENCE
    return _plain(rpc.deserialize_property(struct))


async def _resolve(value: Any) -> Any:
    if isinstance(value, pulumi.Output):
        if await value.is_secret():
            return SECRET
        return await _resolve(await value.future())
    if isinstance(value, dict):
        return {k: await _resolve(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [await _resolve(v) for v in value]
    return value


def _no_stack_trace() -> Any:
    return source_pb2.StackTrace()


def release_leftovers() -> None:
    """Free what earlier offline plans left behind (see `_offline_runtime`) now, not later.

    `gc.freeze` freezes the whole heap, not only the plan's; nothing else in devprod
    freezes, so unfreezing here undoes only what a plan did."""
    global _leftovers_frozen
    if _leftovers_frozen:
        _leftovers_frozen = False
        gc.unfreeze()
        gc.collect()


# True while the leftovers of an offline plan sit in the collector's permanent generation.
_leftovers_frozen = False


# The code of the wrapper the SDK puts around each of its monitor calls (`pulumi.runtime.
# _context.wrap_with_context`), which tells them apart from any other call for the pool.
# An SDK without it leaves every call to the pool: slower, the same plan (a test fails).
_MONITOR_CALL = next((code for code in wrap_with_context.__code__.co_consts
                      if isinstance(code, types.CodeType) and code.co_name == "wrapper"), None)


@contextmanager
def _answered_inline(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """The monitor's answers computed where the SDK asks for them, not on a thread pool.

    The SDK hands every monitor call to `loop.run_in_executor(None, ...)`, so that a gRPC
    round trip to the engine does not block the event loop. The offline monitor answers
    in-process in microseconds, and the hand-off cost more than the answer: a thread woken
    per call, the GIL passed back and forth, a pipe written to wake the loop, and the
    answer read on another core (a quarter of a plan's CPU at 400 developers). While the
    block runs, such a call runs at once on the loop's thread and returns a settled
    future; an exception from it settles the future as the pool would.

    Only the SDK's monitor calls: it wraps each (and nothing else) in `wrap_with_context`
    before handing it over. Anything else (`asyncio.to_thread`, a name lookup, a program's
    own blocking work) and a call naming an executor still go to the pool, where they may
    wait for the loop. So does a monitor call made while another is being answered: an
    answer that ran the loop (as the stock mock's serializer does) would otherwise nest
    one answer in the next, a stack frame deeper for every resource."""
    pooled = loop.run_in_executor
    answering = False

    def run_in_executor(executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future:
        nonlocal answering
        if executor is not None or answering or getattr(func, "__code__", None) is not _MONITOR_CALL:
            return pooled(executor, func, *args)
        answer = loop.create_future()
        answering = True
        try:
            answer.set_result(func(*args))
        except Exception as exn:  # noqa: BLE001 - the pool hands any error to the awaiter
            answer.set_exception(exn)
        finally:
            answering = False
        return answer

    before = vars(loop).get("run_in_executor")  # None: the class's method
    loop.run_in_executor = run_in_executor  # type: ignore[method-assign]
    try:
        yield
    finally:
        if before is None:
            del loop.run_in_executor
        else:
            loop.run_in_executor = before  # type: ignore[method-assign]


@contextmanager
def _offline_runtime(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Costs an offline plan does not need, lifted only while it runs (`pulumi up` never
    goes through here): the SDK's per-resource work in `devprod.offline_sdk`, the thread
    pool it hands every monitor call to (`_answered_inline`, on `loop`), and

    - the SDK walks the Python stack on every registration so that the engine can point a
      diagnostic at the line that created the resource; no engine reads it offline (about
      1 ms a resource);
    - the cyclic garbage collector: a plan allocates millions of long-lived Outputs,
      futures and tasks and frees almost nothing until it ends, so each full collection
      walks the whole growing heap for nothing (half the CPU time at 100 developers).

    When the run ends, its Outputs, tasks and resources are garbage, but garbage in
    reference cycles: the first collection after `gc.enable()` walked and freed 1.6
    million objects at 400 developers, 3.3 s of CPU (a fifth of the plan; superlinear,
    0.7 s at 100). The CLI plans once and exits, so that work buys nothing: the leftovers
    are frozen (`gc.freeze`: moved out of the collector's reach, O(1)) instead. The next
    offline plan in the same process, or `release_leftovers()`, frees them, so a long-lived
    caller (the test suite, a diff planning twice) holds at most one plan's leftovers.
    """
    release_leftovers()
    original = pulumi_resource._get_stack_trace
    collecting = gc.isenabled()
    pulumi_resource._get_stack_trace = _no_stack_trace
    gc.disable()
    try:
        with offline_sdk.installed(), _answered_inline(loop):
            yield
    finally:
        pulumi_resource._get_stack_trace = original
        _freeze_leftovers()
        if collecting:
            gc.enable()


def _freeze_leftovers() -> None:
    global _leftovers_frozen
    gc.freeze()
    _leftovers_frozen = True


def record(
    program: Callable[[], None],
    *,
    project: str,
    stack: str,
    config: dict[str, str] | None = None,
    secret_keys: list[str] | None = None,
    region: str = "eu-central-1",
    account: str = PLACEHOLDER_ACCOUNT,
) -> Plan:
    """Run `program` under recording mocks and return what it registered and exported."""
    pulumi.runtime.set_all_config(dict(config or {}), list(secret_keys or []))
    loop = _ensure_event_loop()  # the SDK needs one set on this thread (asyncio.run leaves none)
    monitor = RecordingMonitor(RecordingMocks(region=region, account=account))
    # A fresh root stack per run, so exports of an earlier run do not leak in.
    pulumi_settings.ROOT.set(None)
    plan = Plan(project=project, stack=stack)

    async def outputs() -> None:
        root = pulumi_settings.get_root_resource()
        plan.outputs = await _resolve(dict(root.outputs))  # type: ignore[union-attr]

    def body() -> None:
        program()
        _sync_await(outputs())

    with _offline_runtime(loop):  # the root stack registers in set_mocks
        pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor)
        pulumi_settings.SETTINGS.rpc_manager.clear()
        # Nor the outstanding Outputs of an earlier run that failed (the SDK would await them).
        pulumi_settings.SETTINGS.outputs.clear()
        _sync_await(run_pulumi_func(body))
    # Registration order depends on the event loop; URN order is stable for diffs.
    plan.resources = sorted(monitor.recorded, key=lambda r: r.urn)
    return plan


# ---------------------------------------------------------------- stack files


def find_project_dir(start: Path | None = None) -> Path:
    """The folder holding Pulumi.yaml: upward from `start`, else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "Pulumi.yaml").is_file():
        return checkout
    raise FileNotFoundError(f"no Pulumi.yaml in {here} or above")


class YamlFileError(BadInput):
    """A stack or project file that is not valid YAML: `FILE:LINE:COLUMN: problem`."""


# Texts for the pure parser alone: a `%YAML` directive (libyaml would not pass its version
# on); tabs, NEL and the Unicode line and paragraph separators, and an alias in a flow
# collection, which libyaml reads where the pure parser refuses (`a:\tb`, `[*b:]`).
_PURE_ONLY = re.compile("%YAML|[\t\x85\u2028\u2029]|\\*")


# Deeper documents are the pure parser's to read: libyaml reads any depth, while the pure
# parser runs out of Python stack somewhere past a few hundred levels. A stack file has six.
_PURE_DEPTH = 50


def _deeper_than(document: Any, limit: int) -> bool:
    stack = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= limit:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def parse_yaml(path: Path, text: str, yaml: YAML | None = None) -> Any:
    """Load YAML text of `path`; a syntax error (tab, unclosed bracket, duplicate key) becomes one line.

    Without a loader of the caller's, libyaml reads it (ruamel.yaml.clib: a tenth of the
    pure parser's time, a 400-developer roster in 0.02 s instead of 0.13 s), with ruamel's
    own constructor and YAML 1.2 resolver, so the values are the same. The pure parser,
    which `onboard` and `offboard` use, stays the reference: it words every error and reads
    whatever libyaml refuses, and it alone reads a text where libyaml would accept what it
    refuses (`_PURE_ONLY`, or more than `_PURE_DEPTH` levels deep), so that `plan` never
    reads a file the roster commands refuse.
    """
    if yaml is None and _C_PARSER is not None and not _PURE_ONLY.search(text):
        try:
            document = YAML(typ="safe").load(text)
        except (YAMLError, UnicodeError):
            pass  # the pure parser's reading, and its words, below
        else:
            if not _deeper_than(document, _PURE_DEPTH):
                return document
    try:
        return (yaml or YAML(typ="safe", pure=True)).load(text)
    except RecursionError:
        raise YamlFileError(f"{path.name}: nested too deeply to read") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path.name
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise YamlFileError(f"{where}: {problem or 'not valid YAML'}") from None
    except YAMLError as exc:
        raise YamlFileError(f"{path.name}: {str(exc).splitlines()[0]}") from None


def read_yaml(path: Path) -> Any:
    return parse_yaml(path, path.read_text())


def stack_file(project_dir: Path, stack: str) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def load_stack_raw(project_dir: Path, stack: str, text: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The stack file's config map as Python values, and which keys are secrets."""
    path = stack_file(project_dir, stack)
    if text is None and not path.is_file():
        raise FileNotFoundError(f"{path.name} not found in {project_dir}")
    document = parse_yaml(path, path.read_text() if text is None else text) or {}
    if not isinstance(document, dict):
        raise YamlFileError(f"{path.name}: a stack file is a mapping with a config: key, not a {type(document).__name__}")
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise YamlFileError(f"{path.name}: config: must map keys to values, not a {type(config).__name__}")
    raw = dict(config)
    secrets = [k for k, v in raw.items() if isinstance(v, dict) and set(v) == {"secure"}]
    for key in secrets:
        raw[key] = SECRET
    return raw, secrets


def to_pulumi_config(raw: dict[str, Any]) -> dict[str, str]:
    """Pulumi passes every config value as a string; objects and lists as JSON."""
    out = {}
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            out[key] = json.dumps(value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = "" if value is None else str(value)
    return out


def project_name(project_dir: Path) -> str:
    return str((read_yaml(project_dir / "Pulumi.yaml") or {}).get("name", "devprod"))


def _installed_program() -> None:
    from components.program import main

    main()


def scope(config: Any) -> str:
    """What a stack config declares, in a few words: '120 developers, production, pipeline'."""
    count = len(getattr(config, "developers", ()))
    parts = [f"{count} developer{'s' if count != 1 else ''}"] if count else []
    parts += [name for name in ("production", "pipeline") if getattr(config, name, None) is not None]
    return ", ".join(parts) or "no developers, production or pipeline"


def _roster_warnings(raw: dict[str, Any], config: Any, stack: str) -> list[str]:
    declares_dev = any(key in raw for key in ("devprod:developers", "devprod:devDefaults"))
    declares_other = config.production is not None or config.pipeline is not None
    if config.developers or (declares_other and not declares_dev):
        return []
    return [f"Pulumi.{stack}.yaml: devprod:developers is empty: no developer boxes are planned "
            "(add one with `devprod onboard NAME --ssh-key FILE`)"]


def _rollout_warnings(config: Any, stack: str) -> list[str]:
    """A batch that is every host: nothing leaves the load balancer before its switch
    (devprod.rollout), and one failure reaches every host."""
    production, pipeline = config.production, config.pipeline
    if production is None or pipeline is None or production.hosts < 2 or pipeline.batch < production.hosts:
        return []
    out = " none leaves the load balancer first and" if production.load_balanced else ""
    return [f"Pulumi.{stack}.yaml: pipeline.batch {pipeline.batch} is at least production.hosts "
            f"{production.hosts}: every host switches at once,{out} a failing release reaches all of "
            f"them; a batch below {production.hosts} rolls"]


def plan_stack(project_dir: Path, stack: str, progress: Callable[[str], None] | None = None,
               stack_text: str | None = None) -> Plan:
    """Validate the stack file, then run `__main__.py` under recording mocks.

    Raises ConfigError (from components.config) before anything registers. `progress`
    hears one line once the config is valid; `stack_text` stands in for the stack file
    (a base version of it, planned with this program).
    """
    raw, secrets = load_stack_raw(project_dir, stack, stack_text)
    project = project_name(project_dir)
    from components.config import parse_stack_config

    parsed = parse_stack_config(raw, project=project, stack=stack)
    if progress is not None:
        progress(f"planning {stack}: {scope(parsed)}")
    main_file = project_dir / "__main__.py"
    plan = record(
        # The project's entry point when it has one (what `pulumi up` runs);
        # else the installed program, for a folder holding only stack files.
        (lambda: runpy.run_path(str(main_file), run_name="__main__")) if main_file.is_file() else _installed_program,
        project=project,
        stack=stack,
        config=to_pulumi_config(raw),
        secret_keys=secrets,
        region=parsed.region,
        # The stack names its account: plan as that account (the program refuses any other).
        account=parsed.account_id or PLACEHOLDER_ACCOUNT,
    )
    plan.config = parsed
    plan.warnings = _roster_warnings(raw, parsed, stack) + _rollout_warnings(parsed, stack)
    return plan
