"""Output properties made on first read (devprod/offline_sdk.py) plan exactly what the SDK's
own eager properties plan, and resolve each property read to what the SDK gives it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import json
import random
import re
import threading
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from google.protobuf import json_format, struct_pb2
from pulumi import _types
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import rpc
from pulumi.runtime._context import wrap_with_context
from pulumi.runtime.sync_await import _sync_await

from devprod import offline_sdk
from devprod import plan as plan_module
from devprod.plan import record, release_leftovers
from tests.conftest import STACKS, write_stack
from benchmarks.plan_scale import roster


@pytest.fixture(autouse=True)
def _no_leftovers():
    release_leftovers()
    yield
    release_leftovers()


def _requests(monkeypatch) -> list[dict]:
    """Every RegisterResourceRequest of the next plans, whole but for the source position
    (the plan does not capture it)."""
    seen: list[dict] = []
    original = plan_module.RecordingMonitor.RegisterResource

    def register(self, request):
        fields = json_format.MessageToDict(request)
        fields.pop("stackTrace", None)
        fields.pop("sourcePosition", None)
        # Sets to the engine, listed in the order of a set of resources (by id(), so by where
        # they sit in memory): the same plan lists them in another order from run to run.
        fields["dependencies"] = sorted(fields.get("dependencies", []))
        for urns in fields.get("propertyDependencies", {}).values():
            urns["urns"] = sorted(urns.get("urns", []))
        seen.append(fields)
        return original(self, request)

    monkeypatch.setattr(plan_module.RecordingMonitor, "RegisterResource", register)
    return seen


def _plan_both_ways(tmp_path, monkeypatch, stack: str, text: str) -> tuple[str, str]:
    write_stack(tmp_path, stack, text)
    requests = _requests(monkeypatch)
    lazy = plan_module.plan_stack(tmp_path, stack)
    lazy_requests = sorted(requests, key=lambda r: (r["type"], r["name"]))
    release_leftovers()
    requests.clear()
    monkeypatch.setattr(offline_sdk, "installed", contextlib.nullcontext)
    monkeypatch.setattr(plan_module, "_answered_inline", _pooled)
    eager = plan_module.plan_stack(tmp_path, stack)
    eager_requests = sorted(requests, key=lambda r: (r["type"], r["name"]))
    dump = lambda plan, reqs: json.dumps([plan.to_json(), plan.violations(), reqs], sort_keys=True)  # noqa: E731
    return dump(lazy, lazy_requests), dump(eager, eager_requests)


@pytest.mark.parametrize("stack", ["dev", "prod", "prod3"])
def test_every_registration_and_the_plan_are_byte_identical_with_the_sdks_eager_properties(
        tmp_path, monkeypatch, stack):
    lazy, eager = _plan_both_ways(tmp_path, monkeypatch, stack, (STACKS / f"Pulumi.{stack}.yaml").read_text())
    assert lazy == eager
    assert len(lazy) > 100_000  # a whole stack, not an empty plan


def test_a_generated_roster_plans_the_same_both_ways(tmp_path, monkeypatch):
    lazy, eager = _plan_both_ways(tmp_path, monkeypatch, "bench", roster(7))
    assert lazy == eager and "dev0006" in lazy


def test_the_sdks_functions_are_back_after_a_plan_and_after_a_failing_one():
    def sdk_functions() -> tuple:
        return (pulumi.get, rpc.transfer_properties, rpc.serialize_property, rpc.resolve_outputs,
                rpc.resolve_outputs_due_to_exception, _types.unwrap_type, _types.unwrap_optional_type,
                _types.resource_types, _types.resource_pulumi_to_py_names, rpc.serialize_properties,
                rpc._add_dependency, rpc.declare_dependency, vars(pulumi.ResourceOptions)["merge"],
                sdk_resource.create_urn, _types.input_type_types, _types.input_type_py_to_pulumi_names,
                rpc.contains_unknowns)

    sdk = sdk_functions()

    def broken() -> None:
        assert pulumi.get is offline_sdk.get and rpc.resolve_outputs is offline_sdk.resolve_outputs
        assert pulumi.ResourceOptions.merge is offline_sdk.merge
        assert rpc.contains_unknowns is offline_sdk.contains_unknowns
        raise RuntimeError("boom")

    with pytest.raises(Exception):
        record(broken, project="devprod", stack="test")
    record(lambda: None, project="devprod", stack="test")
    assert sdk_functions() == sdk


async def _state(output: pulumi.Output) -> tuple:
    data = await output._data
    return (data.value, data.is_known, data.is_secret, sorted(r._name for r in data.resources))


def _observe(lazy: bool) -> dict:
    """Properties read before registration, after it, and through an apply, from a role with a
    secret input, each as (value, known, secret, resources)."""
    seen: dict = {}

    def program() -> None:
        role = aws.iam.Role("role", assume_role_policy=pulumi.Output.secret("{}"),
                            tags={"team": "a"}, description=None)
        early = {"arn": role.arn, "policy": role.assume_role_policy, "tags": role.tags,
                 "unique_id": role.unique_id}

        def later(_: str) -> pulumi.Output:
            return pulumi.Output.all(arn=role.arn, name=role.name, description=role.description,
                                     max_session=role.max_session_duration)

        late = role.urn.apply(later)
        assert isinstance(role.arn, pulumi.Output) and role.arn is role.arn  # made once, then kept

        async def collect() -> None:
            for key, output in early.items():
                seen[f"early {key}"] = await _state(output)
            seen["late"] = await _state(late)

        pulumi.Output.from_input(collect())

    context = contextlib.nullcontext() if lazy else _sdk_properties()
    with context:
        record(program, project="devprod", stack="test")
    return seen


@contextlib.contextmanager
def _sdk_properties():
    """record() the SDK's own way: eager properties, and the monitor asked on the SDK's
    thread pool; everything else as in a plan."""
    original, inline = offline_sdk.installed, plan_module._answered_inline
    offline_sdk.installed = contextlib.nullcontext
    plan_module._answered_inline = _pooled
    try:
        yield
    finally:
        offline_sdk.installed, plan_module._answered_inline = original, inline


def _pooled(loop):
    """In place of `_answered_inline`: monitor calls stay on the SDK's thread pool."""
    return contextlib.nullcontext()


def test_a_property_read_before_or_after_registration_resolves_as_the_sdk_resolves_it():
    lazy, eager = _observe(lazy=True), _observe(lazy=False)
    assert lazy == eager
    assert lazy["early policy"][0] == "{}" and lazy["early policy"][2] is True  # secret stays secret
    assert lazy["early unique_id"][:2] == (None, True)  # absent output: None, known (not a preview)
    assert lazy["early arn"][0].startswith("arn:aws:iam::123456789012:role/")
    assert lazy["early tags"][0] == {"team": "a"}



# A role's properties as registration returned them: (names read, the fields returned, whether
# the quick way answers; else the SDK's own way does). The inputs: _ROLE_INPUTS.
_SECRET = {rpc._special_sig_key: rpc._special_secret_sig, "value": "hidden"}
_ASSET = {rpc._special_sig_key: rpc._special_asset_sig, "path": "/x"}
_ROLE_INPUTS = {"name": "input-name", "assumeRolePolicy": "{}", "path": "/in", "maxSessionDuration": 3600.0,
                "tags": {"team": "a"}}
_READS = {
    "one string": ({"arn"}, {"arn": "arn:a", "name": "n"}, True),
    # A Struct lists its fields in its own order (here uniqueId before name), not sorted.
    "two, in the order returned": ({"unique_id", "name"}, {"uniqueId": "AROA1", "name": "n", "arn": "arn:a",
                                                           "path": "/", "description": "d"}, True),
    "returned and inputs, each in its order": ({"arn", "path", "name", "assume_role_policy"}, {"arn": "arn:a"}, True),
    "only among the inputs": ({"name"}, {"arn": "arn:a"}, True),
    "in both: what was returned wins": ({"name", "path"}, {"name": "returned", "path": "/out"}, True),
    "in both, one more among the inputs": ({"name", "assume_role_policy"}, {"name": "returned"}, True),
    "a number declared a whole number": ({"max_session_duration"}, {"maxSessionDuration": 3600.0}, False),
    "an input that is a number": ({"max_session_duration"}, {"arn": "arn:a"}, False),
    "an input that is a map": ({"arn", "tags"}, {"arn": "arn:a"}, False),
    "an unknown": ({"arn"}, {"arn": rpc.UNKNOWN, "name": "n"}, False),
    "a null": ({"arn"}, {"arn": None, "name": "n"}, False),
    "a map": ({"tags"}, {"tags": {"team": "a"}}, False),
    # The SDK's way, in the order the SDK resolves them: as this Struct lists them, which a
    # Struct holding only these two would not (protobuf's map orders by its own table).
    "a list and a map, the SDK's way": (
        {"managed_policy_arns", "tags"},
        dict.fromkeys(["managedPolicyArns", "tags", "description", "assumeRolePolicy", "maxSessionDuration", "arn",
                       "uniqueId", "name", "forceDetachPolicies", "namePrefix", "tagsAll", "createDate", "path"], "x")
        | {"managedPolicyArns": ["arn:p"], "tags": {"team": "a"}, "maxSessionDuration": 3600.0,
           "forceDetachPolicies": False, "tagsAll": {"team": "a"}}, False),
    "a secret": ({"arn"}, {"arn": _SECRET}, False),
    "a secret whole": ({"arn"}, _SECRET, False),
    "an asset whole": ({"path"}, _ASSET, False),
    "in neither": ({"description"}, {"arn": "arn:a"}, False),
    "one returned, one in neither": ({"arn", "description"}, {"arn": "arn:a"}, False),
    "one string, one not": ({"arn", "tags"}, {"arn": "arn:a", "tags": {"team": "a"}}, False),
}


def _settled(resolve, *arguments) -> Any:
    """What a resolver gives: the properties in the order resolved, or the error."""
    try:
        return list(resolve(*arguments).items())
    except Exception as exn:  # noqa: BLE001 - the error is what is compared
        return f"{type(exn).__name__}: {exn}"


@pytest.mark.parametrize("case", sorted(_READS))
def test_properties_read_resolve_as_the_sdk_resolves_them(case):
    """A plan's deferred resolving of the properties read (`resolve_outputs`' settle, the quick
    way `_plain_string_reads` or the SDK's on the fields read) answers what the SDK's
    resolve_outputs answers on whole Structs: values, known and secret flags, dependencies
    and order, or the same error; the quick way answers only where it can."""
    wanted, fields, quick = _READS[case]
    seen: dict = {}

    def sdk(role, inputs, outputs, deps) -> dict:
        resolved: dict = {}
        keepers = {name: functools.partial(offline_sdk._keep, resolved, name) for name in sorted(wanted)}
        offline_sdk._SDK_RESOLVE(role, inputs, outputs, deps, keepers, True, True, False)
        return resolved

    def program() -> None:
        role = aws.iam.Role("role", assume_role_policy="{}")
        inputs, outputs = _wire(**_ROLE_INPUTS), _wire(**fields)
        deps = {"arn": {_Dep("a")}, "name": {_Dep("b")}, "uniqueId": {_Dep("c")}, "assumeRolePolicy": set()}
        names = _types.resource_pulumi_to_py_names(aws.iam.Role)
        seen["quick"] = offline_sdk._plain_string_reads(role, inputs, outputs, deps, set(wanted), names)
        lazy = offline_sdk.LazyProperties(role, set(wanted))
        offline_sdk.resolve_outputs(role, inputs, outputs, deps, offline_sdk.LazyResolvers(lazy), True, True, False)
        seen["ours"] = _settled(lazy.settle, sorted(wanted))
        seen["sdk"] = _settled(sdk, role, inputs, outputs, deps)

    record(program, project="devprod", stack="test")
    assert seen["ours"] == seen["sdk"]
    assert (seen["quick"] is not None) == quick
    if quick:
        assert list(seen["quick"].items()) == seen["sdk"]

class Failing(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("test:index:Failing", name, {"value": name, "out": None})

    @property
    @pulumi.getter
    def out(self) -> pulumi.Output[str]:
        return pulumi.get(self, "out")


def _failing_registration(lazy: bool) -> list[str]:
    """A provider error: every property read, before or after, fails with the same error."""
    errors: list[str] = []

    class Refusing(plan_module.RecordingMocks):
        def new_resource(self, args):
            if args.typ == "test:index:Failing":
                raise RuntimeError(f"refused {args.name}")
            return super().new_resource(args)

    def program() -> None:
        resource = Failing("f")
        early = resource.out

        async def collect() -> None:
            for output in (early, resource.value):  # value: read after the failure
                try:
                    await output._data
                except Exception as exn:  # noqa: BLE001 - the error is what is compared
                    errors.append(str(exn).splitlines()[0])

        pulumi.Output.from_input(collect())

    original = plan_module.RecordingMocks
    plan_module.RecordingMocks = Refusing
    try:
        with (contextlib.nullcontext() if lazy else _sdk_properties()), pytest.raises(Exception, match="refused f"):
            record(program, project="devprod", stack="test")
    finally:
        plan_module.RecordingMocks = original
    return errors


def test_a_failed_registration_fails_every_property_read_before_and_after_as_the_sdk_does():
    lazy, eager = _failing_registration(lazy=True), _failing_registration(lazy=False)
    assert lazy == eager and len(lazy) == 2 and all("refused f" in error for error in lazy)


class Shifting(pulumi.CustomResource):
    """A class whose resources pass different property names (generated classes never do)."""

    def __init__(self, name: str, props: dict) -> None:
        super().__init__("test:index:Shifting", name, props)


def _shifting_attributes(lazy: bool) -> list[list[str]]:
    made: list[Shifting] = []

    def program() -> None:
        for name, extra in (("s1", "alpha"), ("s2", "alpha"), ("s3", "beta"), ("s4", "alpha")):
            made.append(Shifting(name, {"value": name, extra: None}))

    with contextlib.nullcontext() if lazy else _sdk_properties():
        record(program, project="devprod", stack="test")
    return [sorted(k for k in vars(r) if k in ("alpha", "beta", "value")) for r in made]


def test_resources_of_one_class_get_their_own_property_names_as_with_the_sdk():
    """The names are kept per class while they stay the same; a resource passing others gets
    its own, not the last one's."""
    lazy, eager = _shifting_attributes(lazy=True), _shifting_attributes(lazy=False)
    assert lazy == eager == [["alpha", "value"], ["alpha", "value"], ["beta", "value"], ["alpha", "value"]]


def test_resources_passing_the_same_names_share_one_set_of_them():
    made: list[Shifting] = []
    record(lambda: made.extend(Shifting(n, {"value": n}) for n in ("t1", "t2")), project="devprod", stack="test")
    first, second = (vars(r)[offline_sdk.SLOT].names for r in made)
    assert first is second and first == {"value"}


def test_components_and_input_types_keep_the_sdks_behaviour():
    seen = {}

    class Box(pulumi.ComponentResource):
        def __init__(self, name: str) -> None:
            super().__init__("test:index:Box", name, {"size": 3})

    def program() -> None:
        box = Box("b")
        seen["component attribute"] = isinstance(box.__dict__.get("size"), pulumi.Output)
        args = aws.ec2.InstanceRootBlockDeviceArgs(volume_size=20)
        seen["input type"] = args.volume_size

    record(program, project="devprod", stack="test")
    assert seen == {"component attribute": True, "input type": 20}


def test_a_type_is_unwrapped_once_per_type_object_hashable_or_not():
    calls = []
    remembered = offline_sdk._remembered(lambda typ: calls.append(typ) or f"unwrapped {typ}")
    assert remembered(str) == remembered(str) == "unwrapped <class 'str'>" and calls == [str]
    unhashable = [str]
    assert remembered(unhashable) == remembered(unhashable) and len(calls) == 2
    assert remembered([int]) == "unwrapped [<class 'int'>]" and len(calls) == 3  # another object


class Colour(str, __import__("enum").Enum):
    RED = "red"


def _both_serializers(value, typ=None, transformer=None, **options) -> tuple:
    """(SDK's, ours) outcome of serializing `value` (or what a callable makes on the loop) on a
    private event loop: the result, its type and its deps' names, or the error."""
    import asyncio

    async def outcome(serialize) -> tuple:
        deps: list = []
        made = value() if callable(value) else value
        try:
            result = await serialize(made, deps, "p", input_transformer=transformer, typ=typ, **options)
        except Exception as exn:  # noqa: BLE001 - the error is what is compared
            return ("raised", type(exn).__name__, str(exn))
        return (result, type(result), [getattr(d, "_name", d) for d in deps])

    async def both() -> tuple:
        return await outcome(offline_sdk._SDK_SERIALIZE), await outcome(offline_sdk.serialize_property)

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(both())
    finally:
        loop.close()


@pytest.mark.parametrize("value", ["text", "", 0, 7, 1.5, True, False, None, Colour.RED, [1, "a"], {"a": None}])
@pytest.mark.parametrize("typ", [None, str, pulumi.Input[str], dict])
def test_a_plain_value_is_serialized_as_the_sdk_serializes_it(value, typ):
    """The same value, type and dependencies, or the same error (a list where a str is declared),
    also as a protobuf Value."""
    for options in ({}, {"return_protobuf_value": True}):
        sdk, fast = _both_serializers(value, typ, **options)
        assert fast == sdk, options


class StockMonitor(plan_module.RecordingMonitor):
    """The recorder as it was: the stock mock's RegisterResource (SDK deserialization, the
    SDK's async serializer for the answer), then the SDK objects converted to the record."""

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        response = pulumi_mocks.MockMonitor.RegisterResource(self, request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        registration = self.resources[response.urn]
        self.recorded.append(plan_module.RecordedResource(
            urn=response.urn, type=request.type, name=request.name, parent=request.parent,
            custom=bool(request.custom), inputs=plan_module._plain(rpc.deserialize_properties(request.object)),
            options={"protect": bool(request.protect), "ignoreChanges": list(request.ignoreChanges),
                     "retainOnDelete": bool(request.retainOnDelete),
                     "deleteBeforeReplace": bool(request.deleteBeforeReplace)},
            computed={**registration.state, "id": registration.id} if request.custom else {}))
        return response


@pytest.mark.parametrize("stack", ["dev", "prod3"])
def test_the_recorder_records_what_the_stock_mock_and_the_sdks_deserializer_record(tmp_path, monkeypatch, stack):
    write_stack(tmp_path, stack, (STACKS / f"Pulumi.{stack}.yaml").read_text())
    requests = _requests(monkeypatch)
    direct = plan_module.plan_stack(tmp_path, stack)
    direct_requests = sorted(requests, key=lambda r: (r["type"], r["name"]))
    release_leftovers()
    monkeypatch.setattr(plan_module, "RecordingMonitor", StockMonitor)
    requests = _requests(monkeypatch)
    stock = plan_module.plan_stack(tmp_path, stack)
    stock_requests = sorted(requests, key=lambda r: (r["type"], r["name"]))
    assert len(direct.resources) > 50
    for mine, theirs in zip(direct.resources, stock.resources):
        assert (mine.urn, mine.inputs, mine.options, mine.computed) == (theirs.urn, theirs.inputs, theirs.options, theirs.computed)
    assert json.dumps([direct.to_json(), direct.violations(), direct_requests], sort_keys=True) == \
        json.dumps([stock.to_json(), stock.violations(), stock_requests], sort_keys=True)


def _wire(**fields) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(fields)
    return struct


def test_every_kind_of_wire_value_records_as_the_sdks_deserializer_and_the_old_recorder_record_it(tmp_path):
    sig = rpc._special_sig_key
    secret = {sig: rpc._special_secret_sig, "value": "hunter2"}
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    wire = _wire(
        text="a", empty="", unknown=rpc.UNKNOWN, whole=50.0, fraction=0.5, yes=True, nothing=None,
        listed=["a", 1.0, None, rpc.UNKNOWN, {"k": "v"}], nested={"a": {"b": [1.0, 2.5]}, "__internal": "x"},
        __defaults=[], secret=secret, secret_in_list=["a", secret], secret_in_map={"a": {"b": secret}},
        secret_under_internal_key={"__hidden": secret, "shown": "x"},
        text_asset={sig: rpc._special_asset_sig, "text": "echo hi"},
        file_asset={sig: rpc._special_asset_sig, "path": str(script)},
        archive={sig: rpc._special_archive_sig, "assets": {"run.sh": {sig: rpc._special_asset_sig, "text": "x"}}},
    )
    old = plan_module._plain(rpc.deserialize_properties(wire))
    new = plan_module._recorded_inputs(wire)
    assert new == old
    assert new["secret_in_list"] == new["secret_in_map"] == new["secret_under_internal_key"] == plan_module.SECRET
    assert new["whole"] == 50 and type(new["whole"]) is int and "unknown" not in new and "nothing" not in new
    assert new["listed"] == ["a", 1, None, None, {"k": "v"}]


# ------------------------------------------------- findings of the adversarial review


def _both_ways(program) -> tuple[dict, dict]:
    """What a program observes, with the stand-ins and with the SDK's own property handling."""
    results = []
    for lazy in (True, False):
        seen: dict = {}
        with (contextlib.nullcontext() if lazy else _sdk_properties()):
            plan = record(lambda: program(seen), project="devprod", stack="test")
        release_leftovers()
        results.append({"seen": seen, "plan": json.dumps(plan.to_json(), sort_keys=True)})
    return results[0], results[1]


def test_a_copy_of_a_resource_read_twice_shares_one_output_and_the_plan_finishes():
    import copy

    def program(seen: dict) -> None:
        role = aws.iam.Role("role", assume_role_policy="{}")
        twin = copy.copy(role)
        first, second = twin.arn, twin.arn
        seen["same"] = first is second
        aws.iam.InstanceProfile("profile", role=first.apply(lambda arn: arn.split("/")[-1]))

    lazy, eager = _both_ways(program)
    assert lazy == eager and lazy["seen"]["same"] is True


def test_callbacks_on_one_resources_properties_run_in_the_sdks_order():
    def program(seen: dict) -> None:
        role = aws.iam.Role("role", assume_role_policy="{}", description="d", path="/")
        order = seen["order"] = []
        for name in ("unique_id", "arn", "path", "name", "description", "assume_role_policy"):
            getattr(role, name).apply(lambda _, n=name: order.append(n))

    lazy, eager = _both_ways(program)
    assert lazy == eager and len(lazy["seen"]["order"]) == 6


def test_a_property_read_on_another_thread_is_an_output_as_with_the_sdk():
    import concurrent.futures

    def program(seen: dict) -> None:
        roles = [aws.iam.Role(f"role{i}", assume_role_policy="{}") for i in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            arns = list(pool.map(lambda r: r.arn, roles))
        seen["kinds"] = [type(arn).__name__ for arn in arns]
        pulumi.export("arns", pulumi.Output.all(*arns))

    lazy, eager = _both_ways(program)
    assert lazy == eager and lazy["seen"]["kinds"] == ["Output", "Output"]


def test_a_resource_passed_as_an_input_is_recorded_as_a_reference_and_the_plan_finishes(tmp_path):
    """The SDK would rebuild the referenced resource on the monitor's thread, whose loop never
    runs: the plan used to wait forever. A subprocess, so that a hang fails the test."""
    script = tmp_path / "plan.py"
    script.write_text(
        "import json, pulumi_aws as aws\n"
        "from devprod.plan import record\n"
        "def program():\n"
        "    role = aws.iam.Role('role', assume_role_policy='{}')\n"
        "    aws.iam.RolePolicyAttachment('attach', role=role, policy_arn='arn:aws:iam::aws:policy/x')\n"
        "plan = record(program, project='devprod', stack='test')\n"
        "print(json.dumps(plan.named('attach').inputs, sort_keys=True))\n")
    import subprocess
    import sys

    from tests.conftest import ROOT
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["role"] == plan_module.RESOURCE_REFERENCE


class Paint(pulumi.CustomResource):
    """A hand-written resource with an enum output type, given a value the enum refuses."""

    def __init__(self, name: str, colour: str) -> None:
        super().__init__("test:index:Paint", name, {"colour": colour, "label": name})

    @property
    @pulumi.getter
    def colour(self) -> pulumi.Output[Colour]:
        return pulumi.get(self, "colour")

    @property
    @pulumi.getter
    def label(self) -> pulumi.Output[str]:
        return pulumi.get(self, "label")


@pytest.mark.parametrize("lazy", [True, False])
def test_a_value_the_sdk_cannot_translate_fails_the_plan_even_unread(lazy):
    def program() -> None:
        pulumi.export("label", Paint("p", "purple").label)

    with (contextlib.nullcontext() if lazy else _sdk_properties()), pytest.raises(Exception, match="not a valid Colour"):
        record(program, project="devprod", stack="test")


def test_installed_puts_back_whatever_was_in_place_before():
    def stand_in(self, name):
        return _types.get(self, name)

    original = pulumi.get
    pulumi.get = stand_in
    try:
        with offline_sdk.installed():
            assert pulumi.get is offline_sdk.get
        assert pulumi.get is stand_in
    finally:
        pulumi.get = original


def test_the_program_never_reads_a_resource_through_its_attribute_dict():
    """Properties become Outputs when read through their getters; `vars()` or `__dict__` of a
    resource would show only those read so far (devprod/offline_sdk.py)."""
    from tests.conftest import ROOT
    offenders = [f"{path.name}:{number}" for path in sorted((ROOT / "components").glob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if "vars(" in line or "__dict__" in line]
    assert offenders == []


@pytest.mark.parametrize("value", [
    {}, [], {"a": {}}, {"a": []}, [[]], [{}], {"a": None}, None, 0, 1, -2, 2.5, True, False, "", "x",
    {"b": [1, {"c": [True, None]}]}, 10**20, (1, 2), {"a": (1,)}, Colour.RED, [Colour.RED], object(), [object()],
])
def test_a_struct_field_is_filled_as_protobuf_fills_it(value):
    """The same bytes and the same oneof (an empty map is still a map), or the same error."""
    def fill(setter) -> tuple:
        struct = struct_pb2.Struct()
        try:
            setter(struct)
        except Exception as exn:  # noqa: BLE001 - the error is what is compared
            return ("raised", type(exn).__name__, re.sub(" at 0x[0-9a-f]+", "", str(exn)))
        return (struct.SerializeToString(deterministic=True), struct.fields["k"].WhichOneof("kind"))

    def protobufs(struct) -> None:
        struct["k"] = value

    assert fill(lambda struct: offline_sdk._set(struct, "k", value)) == fill(protobufs)


def test_the_cycle_check_answers_as_the_sdks_on_random_graphs():
    """Edges declared in a random order between 12 nodes, 400 times: the same answer each
    time and the same recorded edges as `resource_cycle_breaker.declare_dependency`."""
    import random

    from pulumi.runtime import resource_cycle_breaker as sdk_breaker

    class Node:
        pass

    edges_of = lambda nodes: [sorted(nodes.index(m) for m in getattr(n, sdk_breaker._DEPENDENCIES_PROPERTY, ()))  # noqa: E731
                              for n in nodes]
    rng = random.Random(7)
    for _ in range(20):
        ours, theirs = [Node() for _ in range(12)], [Node() for _ in range(12)]
        for _ in range(20):
            a, b = rng.randrange(12), rng.randrange(12)
            assert offline_sdk.declare_dependency(ours[a], ours[b]) == sdk_breaker.declare_dependency(theirs[a], theirs[b])
        assert edges_of(ours) == edges_of(theirs)


def test_a_dependency_cycle_fails_the_plan_with_the_sdks_words(monkeypatch):
    def program() -> None:
        first = aws.s3.Bucket("first")
        second = aws.s3.Bucket("second", opts=pulumi.ResourceOptions(depends_on=[first]))
        offline_sdk.declare_dependency(first, second)  # as if first depended on second already
        aws.s3.Bucket("third", opts=pulumi.ResourceOptions(depends_on=[first], parent=second))

    def outcome() -> str:
        try:
            record(program, project="devprod", stack="test")
        except Exception as exn:  # noqa: BLE001 - the message is what is compared
            return str(exn)
        return "planned"

    ours = outcome()
    release_leftovers()
    monkeypatch.setattr(offline_sdk, "installed", contextlib.nullcontext)
    assert ours == outcome() and "circular dependency" in ours



class _CustomComponent(pulumi.CustomResource, pulumi.ComponentResource):
    """Both at once: the SDK expands it to its children, as a component."""


def _twin_graph(rng: random.Random) -> list:
    """Eight resources as the dependency walk sees them: custom ones with a URN, local
    components (with some of the others as children; one may be custom too) and remote
    ones; some edges declared."""
    from pulumi.runtime import resource_cycle_breaker as sdk_breaker

    nodes: list = []
    for i in range(8):
        kind = rng.choice(["custom", "custom", "component", "remote", "both"])
        made = object.__new__({"custom": pulumi.CustomResource, "both": _CustomComponent}.get(kind, pulumi.ComponentResource))
        made._name, made._type = f"r{i}", f"test:index:{kind}"
        made._remote = kind == "remote"
        made._childResources = {}
        made.__dict__["urn"] = pulumi.Output.from_input(f"urn:{i}" if rng.random() > 0.1 else "")
        nodes.append(made)
    for i, node in enumerate(nodes):
        if isinstance(node, pulumi.ComponentResource):
            # Later ones only (a parent is made before its children), in a fixed order (a
            # set's order would differ between the twins).
            node._childResources = dict.fromkeys(n for n in nodes[i + 1:] if rng.random() < 0.3)
    for _ in range(4):
        sdk_breaker._add_dep(rng.choice(nodes), rng.choice(nodes))
    return nodes


@pytest.mark.parametrize("on_cycles", ["true", "false"])
def test_dependencies_expand_and_refuse_cycles_as_the_sdks_do(on_cycles, monkeypatch):
    """`_add_dependency` against the SDK's on twin random graphs: the same URNs in the same
    order, the same edges declared, the same error where a dependency closes a cycle (or,
    told to skip cycles, the same skipping)."""
    from pulumi.runtime import resource_cycle_breaker as sdk_breaker

    monkeypatch.setenv(rpc.ERROR_ON_DEPENDENCY_CYCLES_VAR, on_cycles)
    sdk_add = rpc._add_dependency
    assert sdk_add is not offline_sdk._add_dependency  # outside a plan: the SDK's

    async def walk(add, nodes, pairs) -> list:
        seen = []
        for a, b in pairs:
            deps: dict = {}
            try:
                await add(deps, nodes[b], nodes[a] if a is not None else None)
                seen.append([deps[urn]._name for urn in deps])
            except Exception as exn:  # noqa: BLE001 - the message is what is compared
                seen.append(f"{type(exn).__name__}: {exn}")
        seen.append([sorted(int(n._name[1:]) for n in getattr(node, sdk_breaker._DEPENDENCIES_PROPERTY, ()))
                     for node in nodes])
        return seen

    async def both(seed: int) -> tuple:
        rng = random.Random(seed)
        pairs = [(rng.choice([None, *range(8)]), rng.randrange(8)) for _ in range(12)]
        return (await walk(offline_sdk._add_dependency, _twin_graph(random.Random(seed)), pairs),
                await walk(sdk_add, _twin_graph(random.Random(seed)), pairs))

    for seed in range(60):
        ours, theirs = asyncio.run(both(seed))
        assert ours == theirs, seed

def _options_matrix() -> list:
    """Options as programs and generated constructors pass them: absent, the provider's
    defaults, parents, lists on one side or both, providers as a list and as a map (one key
    that is not its provider's package), hooks, a dependency list and a single dependency."""
    from pulumi.resource_hooks import ResourceHookBinding

    parent = pulumi.ComponentResource("test:index:Parent", "parent")
    bucket = aws.s3.Bucket("bucket", opts=pulumi.ResourceOptions(parent=parent))
    provider = aws.Provider("eu", region="eu-west-1")
    return [
        None,
        pulumi.ResourceOptions(),
        aws._utilities.get_resource_opts_defaults(),
        pulumi.ResourceOptions(parent=parent, protect=True, ignore_changes=["tags"], version="1.0.0"),
        pulumi.ResourceOptions(depends_on=[bucket], aliases=["old"], retain_on_delete=True,
                               additional_secret_outputs=["password"], delete_before_replace=False),
        pulumi.ResourceOptions(depends_on=bucket, replace_on_changes=["*"], ignore_changes=["name"]),
        pulumi.ResourceOptions(providers=[provider], custom_timeouts=pulumi.CustomTimeouts(create="5m")),
        pulumi.ResourceOptions(providers={"not-aws": provider}, provider=provider),
        pulumi.ResourceOptions(hooks=ResourceHookBinding(before_create=[lambda args: None])),
        pulumi.ResourceOptions(deleted_with=bucket, replace_with=[bucket], hide_diffs=["tags"], import_="i-1",
                               env_var_mappings={"A": "B"}, plugin_download_url="https://example.com"),
    ]


async def _merged_state(merged: pulumi.ResourceOptions) -> dict:
    """Every attribute of merged options, Outputs and hook bindings read out."""
    state = {}
    for name, value in vars(merged).items():
        if isinstance(value, pulumi.Output):
            value = ("output", [getattr(r, "_name", r) for r in await value.future()])
        elif name == "hooks" and value is not None:
            value = ("hooks", {k: len(v) if v is not None else None for k, v in vars(value).items()})
        elif name == "depends_on" and isinstance(value, list):
            value = [getattr(r, "_name", r) for r in value]
        state[name] = value
    return state


def test_resource_options_merge_as_the_sdk_merges_them(recwarn):
    """Every pair from the matrix, both ways round: the same attributes, values and warnings,
    and neither input changed."""
    import copy as copying

    outcomes: dict = {}

    def program() -> None:
        matrix = _options_matrix()
        for merge in (offline_sdk._SDK_MERGE, offline_sdk.merge):
            for i, first in enumerate(matrix):
                for j, second in enumerate(matrix):
                    before = [copying.copy(vars(o)) if o is not None else None for o in (first, second)]
                    merged = merge(first, second)
                    after = [vars(o) if o is not None else None for o in (first, second)]
                    assert before == after
                    outcomes.setdefault((i, j), []).append(_merged_state(merged))

        async def settle() -> None:
            for key, (sdk, ours) in outcomes.items():
                outcomes[key] = (await sdk, await ours)

        from pulumi.runtime.sync_await import _sync_await
        _sync_await(settle())

    record(program, project="devprod", stack="test")
    assert len(outcomes) == 100
    for key, (sdk, ours) in outcomes.items():
        assert ours == sdk, key
    warned = [str(w.message) for w in recwarn if "disagrees" in str(w.message)]
    assert len(warned) % 2 == 0 and warned[: len(warned) // 2] == warned[len(warned) // 2:]


@pytest.mark.parametrize("parent", [None, "", "urn:pulumi:test::devprod::pulumi:pulumi:Stack::devprod-test",
                                    "urn:pulumi:test::devprod::a:b:C$d:e:F::child"])
@pytest.mark.parametrize("project_and_stack", [(None, None), ("other", "prod")])
def test_a_mock_urn_is_the_sdks(parent, project_and_stack):
    """The same value, known and not secret, with no resources, for plain parts; an Output
    part goes the SDK's way."""
    seen: dict = {}

    def program() -> None:
        async def state(output: pulumi.Output) -> tuple:
            data = await output._data
            return (data.value, data.is_known, data.is_secret, data.resources)

        from pulumi.runtime.sync_await import _sync_await
        for label, create in (("sdk", offline_sdk._SDK_CREATE_URN), ("ours", offline_sdk.create_urn)):
            seen[label] = _sync_await(state(create("box", "aws:ec2/instance:Instance", parent, *project_and_stack)))
            seen[label + " output"] = _sync_await(state(create(pulumi.Output.from_input("box"), "t:m:T", parent)))

    record(program, project="devprod", stack="test")
    assert seen["ours"] == seen["sdk"] and seen["ours"][1] is True
    assert seen["ours output"] == seen["sdk output"]


def test_options_missing_an_attribute_merge_as_the_sdk_merges_them():
    broken = pulumi.ResourceOptions(protect=True)
    del broken.__dict__["protect"]
    for first, second in ((broken, None), (None, broken)):
        outcomes = []
        for merge in (offline_sdk._SDK_MERGE, offline_sdk.merge):
            try:
                outcomes.append(vars(merge(first, second)))
            except Exception as exn:  # noqa: BLE001 - the error is what is compared
                outcomes.append((type(exn).__name__, str(exn)))
        assert outcomes[0] == outcomes[1] and outcomes[0][0] == "AttributeError"


@pytest.mark.parametrize("shape", ["known", "unknown", "secret", "unknown secret", "with resources", "list inside"])
def test_an_output_input_is_serialized_as_the_sdk_serializes_it(shape, monkeypatch):
    """Known or not, secret or not, with resources, or holding a list (the SDK's way)."""
    import typing

    from pulumi.runtime import settings as settings_module

    def output() -> pulumi.Output:
        return _resolved(["a", "b"] if shape == "list inside" else "v", known="unknown" not in shape,
                         secret="secret" in shape, deps=["dep"] if shape == "with resources" else ())

    monkeypatch.setattr(settings_module, "monitor_supports_feature", lambda feature: True)
    sdk, ours = _both_serializers(output, typing.Optional[typing.Any])
    assert ours == sdk


@pytest.mark.parametrize("typ", ["none", "dict", "Dict", "Mapping", "dict[int, str]", "Mapping[str, int]", "Mapping[str, Any]"])
def test_a_map_with_a_resource_translator_is_serialized_as_the_sdk_serializes_it(typ):
    import typing

    declared = {"none": None, "dict": dict, "Dict": typing.Dict, "Mapping": typing.Mapping,  # noqa: UP006
                "dict[int, str]": dict[int, str], "Mapping[str, int]": typing.Mapping[str, int],
                "Mapping[str, Any]": typing.Mapping[str, typing.Any]}[typ]
    sdk, ours = _both_serializers({"a_b": 1, "c": [1, {"d_e": 2}]}, declared, str.upper)
    assert ours == sdk


def _sdk_and_ours(outcome) -> tuple:
    """`outcome` of the SDK's serialize_properties and of ours, each on a private event loop."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        return (loop.run_until_complete(outcome(offline_sdk._SDK_SERIALIZE_ALL)),
                loop.run_until_complete(outcome(offline_sdk.serialize_properties)))
    finally:
        loop.close()


def test_a_bad_input_and_an_unknown_argument_fail_as_the_sdks_do():
    async def outcome(serialize_all) -> str:
        try:
            await serialize_all({"ok": "x", "bad": object()}, {})
        except Exception as exn:  # noqa: BLE001 - the error is what is compared
            return f"{type(exn).__name__}: {exn}".split(" at 0x")[0]
        return "serialized"

    sdk, ours = _sdk_and_ours(outcome)
    assert ours == sdk and "While processing input: 'bad'" in ours
    assert _both_serializers("x", bogus=1)[1][1] == "TypeError"


def test_two_inputs_named_alike_leave_the_last_whole_as_the_sdk_does():
    import asyncio

    async def struct(serialize_all, inputs: dict) -> bytes:
        result = await serialize_all(inputs, {}, None, lambda k: "aB" if k in ("a_b", "aB") else k)
        return result.SerializeToString(deterministic=True)

    loop = asyncio.new_event_loop()
    try:
        for inputs in ({"a_b": [1], "aB": [2]}, {"a_b": {"x": 1}, "aB": {"y": 2}}, {"a_b": "s", "aB": [3]}):
            assert loop.run_until_complete(struct(offline_sdk.serialize_properties, inputs)) == \
                loop.run_until_complete(struct(offline_sdk._SDK_SERIALIZE_ALL, inputs)), inputs
    finally:
        loop.close()


class _Odd(dict):
    """A map whose values read differently through [] than through iteration."""

    def __getitem__(self, key):
        return pulumi.UNKNOWN if key == "hidden" else super().__getitem__(key)


def _unknown_cases() -> list:
    looped: list = [1, "a"]
    looped.append(looped)
    cyclic: dict = {"x": "y"}
    cyclic["self"] = cyclic
    shared = ["s"]
    return [None, "", "text", 0, 1.5, True, pulumi.UNKNOWN, [pulumi.UNKNOWN], {"a": {"b": [1, pulumi.UNKNOWN]}},
            {"a": [1, 2], "b": {"c": "d"}}, (pulumi.UNKNOWN,), {pulumi.UNKNOWN: 1}, looped, cyclic,
            [shared, shared], _Odd(hidden="known"), _Odd(seen="known"), [looped, pulumi.UNKNOWN],
            type("Str", (str,), {})("sub"), pulumi.Output.from_input("x")]


class _Strict(dict):
    """A map that refuses to read its key "b": only a walk in the keys' order answers."""

    def __getitem__(self, key):
        if key == "b":
            raise KeyError("read out of order")
        return super().__getitem__(key)


class _Odd_Meta(type):
    def __eq__(cls, other):  # noqa: N805 - a metaclass
        return True

    __hash__ = None  # type: ignore[assignment]


def _answer(contains_unknowns, value):
    try:
        return contains_unknowns(value)
    except Exception as exn:  # noqa: BLE001 - the error is what is compared
        return type(exn).__name__


@pytest.mark.parametrize("value", [*_unknown_cases(), _Strict(a=pulumi.UNKNOWN, b=1),
                                   _Odd_Meta("Listy", (list,), {})([pulumi.UNKNOWN])],
                         ids=lambda v: type(v).__name__)
def test_unknowns_are_found_where_the_sdk_finds_them(value):
    assert _answer(offline_sdk.contains_unknowns, value) == _answer(rpc.contains_unknowns, value)


def test_a_plan_runs_the_unknown_check_in_place_of_the_sdks(tmp_path, monkeypatch):
    calls = []
    original = offline_sdk.contains_unknowns
    monkeypatch.setattr(offline_sdk, "contains_unknowns", lambda val: calls.append(val) or original(val))
    write_stack(tmp_path, "bench", roster(2))
    plan_module.plan_stack(tmp_path, "bench")
    assert len(calls) > 100  # every resolved Output asks


def test_looking_for_unknowns_leaves_no_garbage_for_the_cyclic_collector():
    """The SDK's walker is a new function in a reference cycle on every call, which only the
    cyclic collector frees (and a plan runs without it)."""
    value = {"a": ["b", {"c": "d"}]}

    def cyclic_garbage_after(contains_unknowns) -> int:
        gc.collect()
        gc.disable()
        try:
            for _ in range(200):
                contains_unknowns(value)
                contains_unknowns("plain")
            return gc.collect()
        finally:
            gc.enable()

    assert cyclic_garbage_after(rpc.contains_unknowns) >= 400  # what it replaces leaks each call
    assert cyclic_garbage_after(offline_sdk.contains_unknowns) == 0


def _Dep(name: str) -> pulumi.CustomResource:  # noqa: N802 - stands for a class
    """A resource as the serializers see one (a name and a URN), never registered."""
    made = object.__new__(pulumi.CustomResource)
    made._name = name
    made.__dict__["urn"] = pulumi.Output.from_input(f"urn:pulumi:test::devprod::test:index:Dep::{name}")
    return made


def _resolved(value, *, known=True, secret=False, deps=(), fail=None, later=False) -> pulumi.Output:
    """An Output on the running loop: resolved now, or on the loop's next turn (`later`)."""
    import asyncio

    from pulumi.output import _OutputData

    made = object.__new__(pulumi.Output)
    made._data = asyncio.get_running_loop().create_future()

    def settle() -> None:
        if fail is not None:
            made._data.set_exception(fail)
        else:
            made._data.set_result(_OutputData(resources={_Dep(d) for d in deps}, value=value, is_known=known,
                                              is_secret=secret))

    if later:
        asyncio.get_running_loop().call_soon(settle)
    else:
        settle()
    return made


def _inputs_cases() -> dict:
    return {
        "plain nested": lambda: {"a_b": [1, {"c_d": "x"}], "e": {"f": [True, None]}, "g": None},
        "resolved outputs inside": lambda: {
            "tags": {"Name": _resolved("n", deps=["a"]), "Owner": "o"},
            "ids": [_resolved("i-1", deps=["b"]), "i-2", _resolved("i-3", deps=["d"]), _resolved("i-4", deps=["c"])],
            "user_data": _resolved("#!/bin/sh", secret=True, deps=["e"]),
            "ami": _resolved(None, known=False, deps=["f"]),
            "nested": [{"x_y": _resolved("z", known=False, secret=True)}]},
        "an output not resolved yet": lambda: {
            "first": [_resolved("a", deps=["a"]), _resolved("b", deps=["b"], later=True)],
            "second": {"k": _resolved("c", deps=["c"])}},
        "an output holding a list": lambda: {"l": [_resolved(["p", "q"], deps=["a"])], "m": "n"},
        "a failed output": lambda: {"ok": "x", "bad": [_resolved("v", fail=ValueError("boom"))]},
        "a str subclass and a tuple": lambda: {"s": type("Str", (str,), {})("t"), "t": ("u", "v")},
    }


@pytest.mark.parametrize("case", list(_inputs_cases()))
@pytest.mark.parametrize("translator,keep", [(None, False), (str.upper, False), (None, True)])
def test_a_resources_inputs_serialize_as_the_sdk_serializes_them(case, translator, keep, monkeypatch):
    """The same Struct and each property's dependencies in order, or the same error, for whole
    inputs holding Outputs resolved, pending, failed, secret or unknown, in lists and maps."""
    from pulumi.runtime import settings as settings_module

    monkeypatch.setattr(settings_module, "monitor_supports_feature", lambda feature: True)

    async def outcome(serialize_all) -> tuple:
        deps: dict = {}
        try:
            struct = await serialize_all(_inputs_cases()[case](), deps, None, translator, keep_output_values=keep)
        except Exception as exn:  # noqa: BLE001 - the error is what is compared
            return ("raised", type(exn).__name__, re.sub(" at 0x[0-9a-f]+", "", str(exn)))
        return (struct.SerializeToString(deterministic=True),
                {key: [d._name for d in found] for key, found in deps.items()})

    sdk, ours = _sdk_and_ours(outcome)
    assert ours == sdk
    assert sdk[0] != "raised" or case == "a failed output"


def _threads_asked(monkeypatch, program) -> dict[str, set[int]]:
    """The threads on which the monitor answered each kind of call during record(program)."""
    asked: dict[str, set[int]] = {}
    for method in ("RegisterResource", "RegisterResourceOutputs", "Invoke"):
        original = getattr(pulumi_mocks.MockMonitor, method)

        def spy(self, request, method=method, original=original):
            asked.setdefault(method, set()).add(threading.get_ident())
            return original(self, request)

        monkeypatch.setattr(pulumi_mocks.MockMonitor, method, spy)
    monkeypatch.setattr(plan_module.RecordingMonitor, "RegisterResource",
                        lambda self, request, original=plan_module.RecordingMonitor.RegisterResource: (
                            asked.setdefault("RegisterResource", set()).add(threading.get_ident())
                            or original(self, request)))
    record(program, project="devprod", stack="test")
    return asked


def test_a_plan_asks_the_monitor_on_its_own_thread_and_invokes_on_another(monkeypatch):
    """No thread pool per registration: the offline monitor answers on the plan's thread.
    Invoke serializes its answer on an event loop, so it runs on a thread of its own."""
    def program() -> None:
        Shifting("one", {"value": "one"})
        pulumi.export("image", aws.ssm.get_parameter_output(name="/some/image").value)

    # On a thread of its own, so that the loop is new: no pool from an earlier test.
    seen: dict = {}

    def plan() -> None:
        seen["asked"] = _threads_asked(monkeypatch, program)
        seen["thread"], seen["loop"] = threading.get_ident(), asyncio.get_event_loop()

    pools_before = {t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")}
    planner = threading.Thread(target=plan)
    planner.start()
    planner.join()
    asked, loop = seen["asked"], seen["loop"]
    assert asked["RegisterResource"] == {seen["thread"]}
    assert asked["RegisterResourceOutputs"] == {seen["thread"]}
    assert seen["thread"] not in asked["Invoke"]
    assert "run_in_executor" not in vars(loop)  # the loop's own method again
    assert loop._default_executor is None  # the SDK's pool was never started
    loop.close()
    pools_after = {t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")}
    assert pools_after <= pools_before  # the invoke's helper thread is gone


def test_the_invokes_answer_and_context_are_the_ones_the_pool_gives(monkeypatch):
    def program() -> None:
        pulumi.export("image", aws.ssm.get_parameter_output(name="/some/image").value)
        pulumi.export("account", aws.get_caller_identity_output().account_id)

    inline = record(program, project="devprod", stack="test").outputs
    with _sdk_properties():
        pooled = record(program, project="devprod", stack="test").outputs
    assert inline == pooled == {"image": f"{plan_module.AMI_PLACEHOLDER}/some/image",
                                "account": plan_module.PLACEHOLDER_ACCOUNT}


def test_a_call_naming_an_executor_still_goes_to_it():
    threads: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as named:
        async def ask() -> None:
            threads.append(await asyncio.get_running_loop().run_in_executor(named, threading.get_ident))

        record(lambda: pulumi.Output.from_input(ask()), project="devprod", stack="test")
    assert threads and threads[0] != threading.get_ident()


def test_the_loop_gets_its_own_method_back_after_a_failing_plan():
    loop = asyncio.get_event_loop()

    def broken() -> None:
        assert "run_in_executor" in vars(loop)
        raise RuntimeError("boom")

    with pytest.raises(Exception, match="boom"):
        record(broken, project="devprod", stack="test")
    assert "run_in_executor" not in vars(loop)


def _random_wire_value(rng: random.Random, depth: int) -> Any:
    sig = rpc._special_sig_key
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(["a", "", rpc.UNKNOWN, "__x", 1.0, 2.5, 0.0, -3.0, 1e300, True, False, None])
    if roll < 0.62:
        return {sig: rpc._special_secret_sig, "value": _random_wire_value(rng, depth + 1)}
    if roll < 0.8:
        return [_random_wire_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ("k", "__k", "m", "__defaults", "z")
    return {f"{rng.choice(keys)}{i}": _random_wire_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


def test_random_wire_values_record_as_the_sdks_deserializer_reads_them():
    """Maps, lists, secrets at any depth, unknowns and internal keys, mixed: 400 requests."""
    rng = random.Random(13)
    for _ in range(400):
        wire = _wire(**{f"{rng.choice(('a', '__b', 'c'))}{i}": _random_wire_value(rng, 0)
                        for i in range(rng.randint(0, 6))})
        assert plan_module._recorded_inputs(wire) == plan_module._plain(rpc.deserialize_properties(wire)), wire


def test_only_the_sdks_monitor_calls_are_answered_inline_the_programs_own_go_to_the_pool():
    """`asyncio.to_thread` in a plan runs on a thread of the pool, and may wait for the loop
    (answered inline, it would block the loop it waits for)."""
    seen: dict = {}

    async def work() -> None:
        loop = asyncio.get_running_loop()

        async def on_the_loop() -> int:
            return threading.get_ident()

        def elsewhere() -> tuple[int, int]:
            waited = asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(timeout=10)
            return threading.get_ident(), waited

        seen["worker"], seen["loop"] = await asyncio.to_thread(elsewhere)

    record(lambda: pulumi.Output.from_input(work()), project="devprod", stack="test")
    assert seen["loop"] == threading.get_ident() != seen["worker"]


@pytest.mark.parametrize("stack", ["one", "two"])
def test_a_resource_read_from_the_provider_gets_the_plans_stack_in_its_urn(stack):
    """ReadResource is answered on a helper thread in a copy of the caller's context, where
    the SDK keeps the project and stack."""
    plan = record(lambda: pulumi.export("urn", aws.s3.Bucket.get("imported", "bucket-id").urn),
                  project="devprod", stack=stack)
    assert plan.outputs["urn"] == f"urn:pulumi:{stack}::devprod::pulumi:pulumi:Stack$aws:s3/bucket:Bucket::imported"


def test_the_helper_threads_event_loops_are_closed(monkeypatch):
    made: list = []
    original = asyncio.new_event_loop

    def new_event_loop():
        made.append(original())
        return made[-1]

    monkeypatch.setattr(plan_module.asyncio, "new_event_loop", new_event_loop)

    def program() -> None:
        for name in ("/one", "/two"):
            pulumi.export(name, aws.ssm.get_parameter_output(name=name).value)

    record(program, project="devprod", stack="test")
    assert len(made) == 2 and all(loop.is_closed() for loop in made)


def test_an_answer_that_runs_the_loop_does_not_nest_the_next_answers(monkeypatch):
    """A mock that runs the event loop while answering (as the stock mock's serializer does)
    would nest each inline answer in the one before: 300 resources, 300 nested answers."""
    class LoopingMocks(plan_module.RecordingMocks):
        def new_resource(self, args):
            _sync_await(asyncio.sleep(0))
            return super().new_resource(args)

    monkeypatch.setattr(plan_module, "RecordingMocks", LoopingMocks)
    plan = record(lambda: [Shifting(f"n{i}", {"value": str(i)}) for i in range(300)], project="devprod", stack="test")
    assert len(plan.resources) == 300


def test_the_sdks_monitor_call_wrapper_is_known():
    """A future SDK whose wrapper is not found would plan the same, on the pool, slower."""
    assert plan_module._MONITOR_CALL is not None
    assert wrap_with_context(lambda: None).__code__ is plan_module._MONITOR_CALL


def test_a_monitor_call_that_raised_leaves_the_next_answered_inline():
    loop = asyncio.new_event_loop()
    threads: list[int] = []

    def failing() -> None:
        raise ValueError("refused")

    async def ask() -> None:
        with pytest.raises(ValueError, match="refused"):
            await loop.run_in_executor(None, wrap_with_context(failing))
        threads.append(await loop.run_in_executor(None, wrap_with_context(threading.get_ident)))

    try:
        with plan_module._answered_inline(loop):
            loop.run_until_complete(ask())
    finally:
        loop.close()
    assert threads == [threading.get_ident()]
