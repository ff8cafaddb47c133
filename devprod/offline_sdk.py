"""The SDK's per-resource work that an offline plan does more cheaply, or not at all.

A plan of 100 developers registers 1,600 resources through the Pulumi SDK, and most of
its CPU time was the SDK's work per resource for real pulumi_aws classes, work whose
result an offline plan never looks at. While `devprod.plan.record` runs a plan (`pulumi
up` never goes through it), `installed()` puts these in place of the SDK's functions:

- Output properties made when read. For each output property of a resource (an
  `aws.ec2.Instance` has about 70) the SDK makes four futures and an Output whose
  constructor starts a task, then translates and resolves every property once the
  resource registers. A plan reads a few properties of some resources (an ARN, a name)
  and none of most. `transfer_properties` only notes the names; `pulumi.get`, which
  every generated getter calls, makes a property's Output on first read with one future
  (as the SDK makes `urn` and `id`); `resolve_outputs` keeps what registration returned
  and runs the SDK's own `resolve_outputs` on the fields of the properties read, when
  they are read (the commonest read, a string such as an ARN or a name, returned or
  given as an input, is answered as the SDK answers it without copying the Structs:
  about 130,000 instructions a read); a failed registration fails every property read,
  before or after.
  A property that is not a getter of the class (a plain attribute) is made at once.
- Inputs: the SDK's serializer walks a dozen checks (some through ABCs) for every value
  of every input before it finds what the value is. `serialize_property` returns a
  string, number, bool or None as it is, and takes a list, a map or an Output holding a
  plain value straight to the SDK's branch for it (written out here); everything else
  goes to the SDK. `serialize_properties` leaves out the None inputs (the SDK serializes
  each to None, then leaves it out) and fills the Struct without protobuf's isinstance
  ladder per value.
- Options and dependencies: `ResourceOptions.merge`, which every generated constructor
  calls, copies one object instead of five; the dependency walk runs no import
  statement per resource and takes a custom resource (the commonest) without its queue,
  and the cycle check walks with a stack, not nested generators, and not at all from a
  resource that depends on nothing.
- The mock URN: for every registration the SDK joins the URN that a test without a
  monitor would be answered with (six Outputs, four tasks); a plan has a monitor and
  never reads it. `create_urn` joins the same string into an Output already resolved.
- The unknown-value check that every resolved Output runs (`contains_unknowns`): the SDK
  defines its walker anew on each call, a reference cycle the plan's paused collector
  never frees (12 MB at 200 developers); the same walk from a function defined once.
- Type and name tables: `unwrap_type`, `resource_types`, an input type's tables and the
  name tables are pure functions of a type or class that the SDK recomputes for every
  property; they are computed once per object.

What the program and the recorded plan see is the same: each property read resolves to
the value, known and secret flags and dependencies the SDK gives it, in the SDK's order,
or fails with the same exception; every registration request is the same; a copy of a
resource shares its Outputs. Classes that keep the SDK's own way: components, and any
class with an enum among its output types (a value the enum refuses must fail the plan
even if nobody reads it; pulumi_aws and pulumi_github declare none). What differs, and
why it does not matter to devprod's program: `vars(resource)` or `resource.__dict__`
lists only the properties read so far (a test checks that components/ never looks there),
and a property first read after the plan has ended is None. `tests/test_offline_sdk.py`
plans every test stack both ways and compares every request and the plan byte for byte,
plus the cases an adversarial review found. The SDK is pinned to one minor version
(pyproject.toml), since these stand in for some of its internals.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import os
import typing
import warnings
from collections import abc
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import pulumi
from google.protobuf import struct_pb2
from pulumi import _types
from pulumi.output import Output, _map2_input, _OutputData
from pulumi.resource import _collapse_providers, _merge_lists
from pulumi.resource_hooks import ResourceHookBinding
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import known_types, resource_cycle_breaker, rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import resource_pb2

# The attribute under which a resource keeps its LazyProperties (not an output name).
SLOT = "_devprod_lazy_properties"


class LazyProperties:
    """One resource's output properties, each an Output only once it is read."""

    __slots__ = ("res", "names", "loop", "outputs", "settle", "failed")

    def __init__(self, res: Any, names: set[str]) -> None:
        self.res = res
        self.names = names
        self.loop = asyncio.get_event_loop()  # the plan's: a read from another thread uses it too
        self.outputs: dict[str, Output] = {}  # the properties read so far, in the order read
        # Once registered: the SDK's resolve_outputs for some properties, deferred.
        self.settle: Optional[Callable[[list[str]], dict[str, tuple]]] = None
        self.failed: Optional[BaseException] = None

    def read(self, name: str) -> Output:
        """The property's one Output (a copy of the resource shares it, as it shares the SDK's)."""
        output = self.outputs.get(name)
        if output is not None:
            return output
        output = object.__new__(Output)
        output._data = self.loop.create_future()
        self.outputs[name] = self.res.__dict__[name] = output
        if self.failed is not None:
            output._data.set_exception(self.failed)
        elif self.settle is not None:
            try:
                self._resolve([name])
            except Exception as exn:  # noqa: BLE001 - it fails the Output, as it would the SDK's
                output._data.set_exception(exn)
                _keep_for_exit(output._data)
        return output

    def registered(self, settle: Callable[[list[str]], dict[str, tuple]]) -> None:
        """Registration returned. A failure to translate what was read raises here, inside the
        SDK's registration, which then fails every property, as with the SDK's own."""
        self.settle = settle
        if self.outputs:
            self._resolve(list(self.outputs))

    def fail(self, exn: BaseException) -> None:
        self.failed = exn
        for output in self.outputs.values():
            if not output._data.done():
                output._data.set_exception(exn)

    def _resolve(self, names: list[str]) -> None:
        resolved = self.settle(names)  # type: ignore[misc]
        for name in resolved:  # in the order the SDK resolved them, so callbacks run in its order
            _settle(self.res, self.outputs[name]._data, *resolved[name])


def _keep_for_exit(data: asyncio.Future) -> None:
    """A failed Output where the SDK keeps its failed ones: among the outputs it awaits before
    the program ends, so the plan fails with the error."""
    with pulumi_settings.SETTINGS.lock:
        pulumi_settings.SETTINGS.outputs.add(data)


def _keep(resolved: dict[str, tuple], name: str, *arguments: Any) -> None:
    resolved[name] = arguments


def _settle(res: Any, data: asyncio.Future, value: Any, is_known: bool, is_secret: bool,
          deps: Optional[set[Any]], failed: Optional[BaseException]) -> None:
    """What the SDK's resolver for one property does, into the one future."""
    if failed is not None:
        data.set_exception(failed)
        return
    resources = set(deps) if deps else set()
    resources.add(res)
    data.set_result(_OutputData(resources=resources, value=value, is_known=is_known, is_secret=is_secret))


class LazyResolvers(dict):
    """What `transfer_properties` returns: empty, so SDK code that walks it finds nothing."""

    def __init__(self, lazy: LazyProperties) -> None:
        super().__init__()
        self.lazy = lazy


def transfer_properties(res: Any, props: Any, custom: bool) -> dict[str, Any]:
    # A component reads its own attributes directly, not through pulumi.get; a class with an
    # enum among its output types may have a value the SDK refuses to translate, and that
    # must fail the plan whether or not anything reads it: both keep the SDK's own way.
    if not custom or _has_enum_outputs(type(res)):
        return _SDK_TRANSFER(res, props, custom)
    names, plain = _property_names(type(res), props)
    lazy = LazyProperties(res, names)
    res.__dict__[SLOT] = lazy
    for name in plain:
        lazy.read(name)  # read as a plain attribute, not through a getter: made now, as the SDK does
    return LazyResolvers(lazy)


# Per class: (the property names its last resource passed, its output names, those that are
# plain attributes). Every resource of a generated class passes the same names, so they
# share one set instead of a copy each (an instance has about 70).
_NAMES: dict[type, tuple[frozenset[str], frozenset[str], tuple[str, ...]]] = {}


def _property_names(cls: type, props: Any) -> tuple[frozenset[str], tuple[str, ...]]:
    known = _NAMES.get(cls)
    if known is not None and known[0] == props.keys():
        return known[1], known[2]
    names = frozenset(name for name in props if name not in ("urn", "id"))
    plain = tuple(names - _getters(cls))
    _NAMES[cls] = (frozenset(props), names, plain)
    return names, plain


@functools.lru_cache(maxsize=None)
def _has_enum_outputs(cls: type) -> bool:
    """Whether an output property's declared type is, or holds, an enum (pulumi_aws's and
    pulumi_github's resources declare none)."""
    def holds_enum(typ: Any) -> bool:
        if isinstance(typ, type) and issubclass(typ, enum.Enum):
            return True
        return any(holds_enum(arg) for arg in typing.get_args(typ))

    try:
        return any(holds_enum(typ) for typ in _SDK_TYPES(cls).values())
    except Exception:  # noqa: BLE001 - annotations the SDK cannot read: take the SDK's way
        return True


@functools.lru_cache(maxsize=None)
def _getters(cls: type) -> frozenset[str]:
    """The properties a resource class declares (each getter calls `pulumi.get`)."""
    return frozenset(name for name in dir(cls) if isinstance(getattr(cls, name, None), property))


def get(self: Any, name: str) -> Any:
    """`pulumi.get`: a resource's output property becomes an Output when first read."""
    if not isinstance(self, pulumi.CustomResource):
        return _SDK_GET(self, name)
    found = self.__dict__.get(name)  # what the SDK's get returns for a resource
    if found is None:
        lazy = self.__dict__.get(SLOT)
        if lazy is not None and name in lazy.names:
            return lazy.read(name)
    return found


def resolve_outputs(res: Any, serialized_props: Any, outputs: Any, deps: Any, resolvers: Any, custom: bool,
                    transform_using_type_metadata: bool = False, keep_unknowns: bool = False,
                    resolve_missing_as_unknown: bool = False) -> None:
    """`rpc.resolve_outputs`, put off: the SDK's runs when properties are read, on those only."""
    arguments = (custom, transform_using_type_metadata, keep_unknowns)
    if not isinstance(resolvers, LazyResolvers):
        return _SDK_RESOLVE(res, serialized_props, outputs, deps, resolvers, *arguments,
                            resolve_missing_as_unknown=resolve_missing_as_unknown)

    def settle(names: list[str]) -> dict[str, tuple]:
        translate, wanted = _output_names(res, transform_using_type_metadata), set(names)
        # The quick way knows only the type's name table (a generated class; a translator
        # function may do anything) and a `pulumi up`'s resolving (a preview's differs).
        if type(translate) is dict and not pulumi_settings.is_dry_run():
            strings = _plain_string_reads(res, serialized_props, outputs, deps, wanted, translate)
            if strings is not None:
                return strings
        resolved: dict[str, tuple] = {}
        keepers = {name: functools.partial(_keep, resolved, name) for name in names}
        _SDK_RESOLVE(res, _only(serialized_props, wanted, translate), _only(outputs, wanted, translate), deps,
                     keepers, *arguments, resolve_missing_as_unknown=resolve_missing_as_unknown)
        return resolved

    resolvers.lazy.registered(settle)


def _plain_string_reads(res: Any, inputs: Any, outputs: Any, deps: Any, wanted: set[str], translate: dict[str, str]
                  ) -> Optional[dict[str, tuple]]:
    """What the SDK's resolve_outputs gives the properties read, in the common case, without
    its copies of the Structs: after a `pulumi up` (not a preview), every property read is a
    string field of what registration returned or, failing that, of the inputs, declared a
    string (or nothing). The SDK would deserialize it to itself, translate it to itself and
    resolve it known, not secret, with the dependencies of the input of that name; in the
    order it gathers them: what registration returned, in its order (a later field named
    alike wins), then the inputs it lacks, in theirs (the first wins). None for anything
    else (a null, unknown or non-string field, a secret, another declared type, a property
    in neither): the SDK's own way then."""
    if not (isinstance(outputs, struct_pb2.Struct) and isinstance(inputs, struct_pb2.Struct)) \
            or rpc._special_sig_key in outputs or rpc._special_sig_key in inputs:
        return None  # not property bags, or a whole value (an asset, a secret): the SDK's way
    types, found = _types.resource_types(type(res)), {}
    for given, first_wins in ((outputs, False), (inputs, True)):
        if len(found) == len(wanted):
            break
        fields = given.fields
        for key in fields:
            name = translate.get(key) or key
            if name not in wanted or (first_wins and name in found):
                continue
            field = fields[key]
            if field.WhichOneof("kind") != "string_value" or field.string_value == rpc.UNKNOWN \
                    or not _a_string(types.get(key)):
                return None
            found[name] = field.string_value
    if len(found) < len(wanted):
        return None
    named_deps = {}
    for key, resources in deps.items():
        name = translate.get(key) or key
        if name in wanted:
            named_deps[name] = resources
    return {name: (value, True, False, named_deps.get(name), None) for name, value in found.items()}


def _output_names(res: Any, transform_using_type_metadata: bool) -> Callable[[str], str] | dict[str, str]:
    """How the SDK's resolve_outputs names an engine property (Pulumi name to Python name):
    the resource's translator, or the type's table (a name it lacks stays as it is)."""
    if not transform_using_type_metadata:
        return res.translate_output_property
    return _types.resource_pulumi_to_py_names(type(res))


def _only(struct: Any, names: set[str], translate: Callable[[str], str] | dict[str, str]) -> Any:
    """The fields of a property Struct that become the named Python properties, in the
    Struct's own order: the order the SDK resolves them in (a copy into a smaller Struct
    would list them in that Struct's order) and, of two named alike, the one it keeps.
    Every field is translated on its own, so the others change nothing about these."""
    if not isinstance(struct, struct_pb2.Struct) or rpc._special_sig_key in struct:
        return struct  # not a property bag, or a whole value (an asset, a secret): keep it whole
    if type(translate) is dict:
        return _Fields(struct, [key for key in struct.fields if (translate.get(key) or key) in names])
    return _Fields(struct, [key for key in struct.fields if translate(key) in names])


class _Fields:
    """Some fields of a Struct as the SDK's resolve_outputs reads a Struct (`in`, `[]` and
    `items()`, as `Struct` itself answers them), without copying them out."""

    __slots__ = ("struct", "keys")

    def __init__(self, struct: struct_pb2.Struct, keys: list[str]) -> None:
        self.struct, self.keys = struct, keys

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys:
            raise KeyError(key)
        return self.struct[key]

    def items(self) -> list[tuple[str, Any]]:
        return [(key, self.struct[key]) for key in self.keys]


def resolve_outputs_due_to_exception(resolvers: Any, exn: Exception) -> None:
    if isinstance(resolvers, LazyResolvers):
        resolvers.lazy.fail(exn)
    else:
        _SDK_FAIL(resolvers, exn)


def _remembered(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A pure function of a type or class, computed once per object (the SDK asks again for
    every property of every resource: 119,000 times for 6,400 resources, 8% of a plan).
    Keyed by identity, not by hash: hashing a typing generic walks its arguments in
    Python. The entry keeps the type alive, so its id is not reused while remembered."""
    seen: dict[int, tuple[Any, Any]] = {}

    def remembered(typ: Any) -> Any:
        entry = seen.get(id(typ))
        if entry is not None and entry[0] is typ:
            return entry[1]
        result = function(typ)
        seen[id(typ)] = (typ, result)
        return result

    return remembered


def _leaves_a_string(typ: Any) -> bool:
    """Whether the SDK's translation leaves a string of this declared type as it is."""
    typ = _SDK_UNWRAP_OPTIONAL(typ) if typ else typ
    return typ is None or typ is Any or typ is str


_a_string = _remembered(_leaves_a_string)  # by identity: hashing a typing generic is slow


# Exact types (not subclasses: a str enum is one) that the SDK's serialize_property returns
# unchanged, whatever the property's type, recording no dependency: each passes all its
# checks (sequence, unknown, resource, asset, archive, awaitable, output, input type,
# mapping, protobuf Value) and comes out as it went in.
_AS_IS = frozenset({str, int, float, bool, type(None)})


async def serialize_property(value: Any, *args: Any, **kwargs: Any) -> Any:
    """`rpc.serialize_property`, which walks a dozen isinstance checks (some through ABCs)
    for every value of every input before it finds what the value is. A plain value is
    returned at once, as the SDK would; a list, a map or an Output goes straight to the
    SDK's branch for it (written out below), unless the call asks for what they leave out
    (a protobuf Value, output values kept) or the Output holds more than a plain value."""
    kind = type(value)
    if (kwargs and not kwargs.keys() <= _OPTIONS) or len(args) > 8:
        pass  # an argument the SDK's function does not take: its own TypeError, below
    elif kind in _AS_IS:
        if not (kwargs.get("return_protobuf_value") or (len(args) > 7 and args[7])):
            return value
    elif kind in _BRANCHES:
        call = _Call(*args, **kwargs)
        if not (call.return_protobuf_value or call.keep_output_values):
            return await _BRANCHES[kind](value, call)
    return await _SDK_SERIALIZE(value, *args, **kwargs)


class _Call(typing.NamedTuple):
    """`rpc.serialize_property`'s arguments after the value, with its defaults."""

    deps: Optional[list]
    property_key: Optional[str]
    resource_obj: Any = None
    input_transformer: Optional[Callable[[str], str]] = None
    typ: Any = None
    keep_output_values: bool = False
    exclude_resource_refs_from_deps: bool = False
    return_protobuf_value: bool = False

    def declared(self) -> Any:
        """The declared type as the SDK reads it: unwrapped, and Any as no type at all."""
        typ = _types.unwrap_type(self.typ) if self.typ else self.typ
        return None if typ is Any else typ

    async def member(self, value: Any, key: Optional[str], typ: Any) -> Any:
        """The SDK's recursion into a member of a list or map (a plain one as it is)."""
        if type(value) in _AS_IS:
            return value
        return await serialize_property(value, self.deps, key, self.resource_obj, self.input_transformer,
                                        typ, self.keep_output_values, self.exclude_resource_refs_from_deps)


async def _list(value: list, call: _Call) -> list:
    """The SDK's sequence branch: each item with the declared element type."""
    element_type = rpc._get_list_element_type(call.declared())
    return [await call.member(item, call.property_key, element_type) for item in value]


async def _map(value: dict, call: _Call) -> dict:
    """The SDK's mapping branch: keys named as the declared input type names them (or as
    the resource's translator does when nothing is declared), each value with its type."""
    typ, translate = call.declared(), call.input_transformer
    names: Optional[dict] = None  # an input type's: its Python names to Pulumi names, and
    types: dict = {}  # Pulumi names to declared types
    each = None  # Mapping[str, X]: X, for every key
    if typ is not None:
        case = _types.reduce_discriminated_union(typ, value, _types._py_name_for)
        typ = typ if case is None else case
        if _types.is_input_type(typ):
            names, types = _types.input_type_py_to_pulumi_names(typ), _types.input_type_types(typ)
        elif typ is dict or rpc.get_origin(typ) in _MAPPINGS:
            arguments = rpc.get_args(typ)  # keys as given for Mapping[str, X], else as the resource names them
            if len(arguments) == 2 and arguments[0] is str:
                translate, each = None, arguments[1]
        else:
            translate = None
    serialized = {}
    for key in value:
        if names is not None:  # as the SDK names it
            name = names.get(key) or key
            member_type = types.get(name)
        else:
            name = key if translate is None else translate(key)
            member_type = each
        serialized[name] = await call.member(value[key], key, member_type)
    return serialized


async def _output(value: Output, call: _Call) -> Any:
    """The SDK's Output branch for an Output holding a plain value: its resources become
    dependencies; unknown or secret, it says so as the SDK does to a monitor that takes
    secrets. Anything else inside (a list, an Unknown) goes to the SDK: the value is
    already there, so the SDK's await returns at once, as it does here."""
    data = await value._data
    if type(data.value) not in _AS_IS:
        return await _SDK_SERIALIZE(value, *call)
    if call.deps is not None:
        call.deps.extend(data.resources)
    result = data.value if data.is_known else rpc.UNKNOWN
    if data.is_secret and pulumi_settings.monitor_supports_feature(_SECRETS):
        return {rpc._special_sig_key: rpc._special_secret_sig, "value": result}
    return result


_MAPPINGS = (dict, typing.Dict, abc.Mapping, typing.Mapping)  # noqa: UP006 - the SDK checks these
_SECRETS = resource_pb2.RESOURCE_MONITOR_FEATURE_SECRETS
_BRANCHES = {list: _list, dict: _map, Output: _output}
_OPTIONS = frozenset(_Call._fields)


async def serialize_properties(inputs: Any, property_deps: dict[str, list], resource_obj: Any = None,
                               input_transformer: Optional[Callable[[str], str]] = None, typ: Any = None,
                               keep_output_values: bool = False, exclude_resource_refs_from_deps: bool = False) -> Any:
    """`rpc.serialize_properties` for a plain dict of inputs, as the SDK does it, less its
    detours: the inputs that are None are left out before (the SDK serializes each to None,
    one coroutine apiece, then leaves it out: a generated resource passes every input it
    declares, about 70 for an instance), a plain value is not sent through a coroutine, and
    the Struct is filled by `_fill` instead of protobuf's isinstance ladder per value."""
    if type(inputs) is not dict:
        return await _SDK_SERIALIZE_ALL(inputs, property_deps, resource_obj, input_transformer, typ,
                                        keep_output_values, exclude_resource_refs_from_deps)
    # Names and types from the input type, as the SDK takes them (looked up here, not
    # through a function per key: a plan serializes about 150 inputs per developer).
    py_to_pulumi = types = None
    if typ is not None:
        py_to_pulumi, types = _types.input_type_py_to_pulumi_names(typ), _types.input_type_types(typ)
    struct = struct_pb2.Struct()
    for key, value in inputs.items():
        if value is None:
            continue
        deps: list = []
        name = None if py_to_pulumi is None else py_to_pulumi.get(key) or key
        try:
            result = value if type(value) in _AS_IS else await serialize_property(
                value, deps, key, resource_obj, input_transformer,
                None if types is None else types.get(name), keep_output_values,
                exclude_resource_refs_from_deps)
        except ValueError as e:  # the SDK's words, so an error reads the same
            raise ValueError(f"While processing input: {key!r}, type {type(key)}, value {value!r}\n"
                             f"ValueError has risen: {e}") from e
        except AssertionError as e:
            raise AssertionError(f"While processing input: {key!r}, type {type(key)}, value {value!r}\n"
                                 f"AssertionError has risen: {e}") from e
        if result is not None:
            if name is None:  # no input type: the resource's translator names it, after serializing
                name = key if input_transformer is None else input_transformer(key)
            _set(struct, name, result)
            property_deps[name] = deps
    return struct


def _set(struct: struct_pb2.Struct, name: str, value: Any) -> None:
    """`struct[name] = value`: the fast way for plain values, else protobuf's own way, which
    overwrites whatever the fast way had started."""
    if name in struct.fields:  # two inputs named alike: the last wins whole, as in protobuf
        struct[name] = value
        return
    try:
        _fill(struct.fields[name], value)
    except _Unusual:
        struct[name] = value


class _Unusual(Exception):
    """A value `_fill` leaves to protobuf (a subclass, a tuple, a Struct)."""


def _fill(target: struct_pb2.Value, value: Any) -> None:
    """What protobuf's `_SetStructValue` does for exact plain types, without its isinstance
    ladder (bool is checked before the numbers there; exact types cannot be confused here)."""
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int or kind is float:
        target.number_value = value
    elif value is None:
        target.null_value = 0
    elif kind is dict:
        if not value:
            target.struct_value.Clear()  # marks it a map, as protobuf's Clear-then-update does
        fields = target.struct_value.fields
        for key, item in value.items():
            _fill(fields[key], item)
    elif kind is list:
        if not value:
            target.list_value.Clear()
        values = target.list_value.values
        for item in value:
            _fill(values.add(), item)
    else:
        raise _Unusual


async def _add_dependency(deps: dict[str, Any], res: Any, from_resource: Any) -> None:
    """`rpc._add_dependency`, the same walk in the same order (a local component stands for
    its children; each edge goes through the cycle check), without the import statement the
    SDK runs for every resource it visits. The walk checks the whole graph before awaiting
    any URN, as the SDK's does (awaiting part way through can deadlock against a cycle)."""
    if isinstance(res, pulumi.CustomResource) and not isinstance(res, pulumi.ComponentResource):
        # The commonest: no children to stand for it, no queue needed.
        awaitable = [res] if _declare(from_resource, res) else []
    else:
        awaitable = _walked(res, from_resource)
    for res in awaitable:
        urn = await res.urn.future()
        if urn:
            deps[urn] = res


def _walked(res: Any, from_resource: Any) -> list[Any]:
    """The resources `res` stands for, each edge to them declared: a local component's
    children in its place, breadth first."""
    pending, awaitable = collections.deque([(res, from_resource)]), []
    while pending:
        res, from_resource = pending.popleft()
        if not isinstance(res, pulumi.Resource):
            raise TypeError(f"'depends_on' was passed a value {res} that was not a Resource.")
        if not _declare(from_resource, res):
            continue
        if isinstance(res, pulumi.ComponentResource) and not res._remote:
            pending.extend((child, from_resource) for child in res._childResources.copy())
        else:
            awaitable.append(res)
    return awaitable


def _declare(from_resource: Any, res: Any) -> bool:
    """The SDK's step for one edge: False when it would close a cycle and the SDK is told to
    skip those, the SDK's error when it is not; True otherwise (and with no `from_resource`)."""
    if not from_resource or declare_dependency(from_resource, res):
        return True
    if os.getenv(rpc.ERROR_ON_DEPENDENCY_CYCLES_VAR, "true").lower() != "true":
        return False
    raise RuntimeError(
        "We have detected a circular dependency involving a resource of type"
        + f" {res._type} named {res._name}.\n"
        + "Please review any `depends_on`, `parent` or other dependency relationships between your "
        + "resources to ensure no cycles have been introduced in your program.")


def declare_dependency(from_resource: Any, to_resource: Any) -> bool:
    """`resource_cycle_breaker.declare_dependency`: records the edge unless `from_resource`
    is reachable from `to_resource` already. The SDK walks with nested generators; this
    walks with a stack, over the same sets, to the same answer."""
    if _reachable(to_resource, from_resource):
        return False
    setattr(from_resource, _EDGES, getattr(from_resource, _EDGES, set()) | {to_resource})
    return True


def _reachable(start: Any, goal: Any) -> bool:
    if start is goal:
        return True
    if not getattr(start, _EDGES, None):
        return False  # it depends on nothing (most dependencies do not): no walk to make
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node is goal:
            return True
        for nxt in getattr(node, _EDGES, ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


_EDGES = resource_cycle_breaker._DEPENDENCIES_PROPERTY


def merge(opts1: Any, opts2: Any) -> Any:
    """`ResourceOptions.merge`, which every generated constructor calls (the provider's
    defaults under the caller's options) and which copies five objects to do it: both
    options, two empty hook bindings made to be merged, and their copies. Here only the
    result is a copy; the source is read, never changed, as the SDK reads its copy of it;
    two absent hook bindings merge to a new empty one, as the SDK's do. Subclasses, and
    hooks that are there, and options missing an attribute go the SDK's way."""
    opts1 = pulumi.ResourceOptions() if opts1 is None else opts1
    source = pulumi.ResourceOptions() if opts2 is None else opts2
    if type(opts1) is not pulumi.ResourceOptions or type(source) is not pulumi.ResourceOptions or not (
            _FIELDS <= opts1.__dict__.keys() and _FIELDS <= source.__dict__.keys()):
        return _SDK_MERGE(opts1, opts2)
    dest = object.__new__(pulumi.ResourceOptions)
    merged, given = dest.__dict__, source.__dict__
    merged.update(opts1.__dict__)  # what copy.copy does for this class
    dest.providers = _merge_lists(_providers(dest.providers), _providers(source.providers))
    if dest.depends_on is None and source.depends_on is None:
        dest.depends_on = []  # what the SDK's join of two empty lists gives, without its six calls
    else:
        dest.depends_on = _map2_input(dest._depends_on_list(), source._depends_on_list(), _concatenate)
    for name in _LISTS:  # `_merge_lists` inline: the one that is None gives way, else both
        first, second = merged[name], given[name]
        merged[name] = first if second is None else second if first is None else first + second
    for name in _SCALARS:
        if given[name] is not None:
            merged[name] = given[name]
    if dest.hooks is None and source.hooks is None:
        dest.hooks = ResourceHookBinding()
    else:
        dest.hooks = ResourceHookBinding.merge(dest.hooks, source.hooks)
    _collapse_providers(dest)
    return dest


def _providers(providers: Any) -> Any:
    """The SDK's `expand_providers`: a map of providers as its list, warning of a key that
    is not its provider's package."""
    if providers is None or type(providers) is list:
        return providers  # the usual cases, without the ABC check below
    if isinstance(providers, abc.Mapping):
        for key, provider in providers.items():
            if key != provider.package:
                message = f"Provider map key {key} disagrees with associated provider {provider.package}. Key will be ignored."
                warnings.warn(message, UserWarning)
                pulumi.log.warn(message)
        return list(providers.values())
    return providers


def _concatenate(first: list, second: list) -> list:
    return first + second


# What `ResourceOptions.merge` concatenates, and what it takes from the source unless None.
_LISTS = ("ignore_changes", "replace_on_changes", "aliases", "additional_secret_outputs", "transformations",
          "transforms", "state_migrations", "replace_with", "hide_diffs")
_SCALARS = ("replacement_trigger", "parent", "protect", "delete_before_replace", "version", "plugin_download_url",
            "custom_timeouts", "id", "import_", "urn", "provider", "retain_on_delete", "deleted_with",
            "env_var_mappings")
_FIELDS = frozenset(_LISTS + _SCALARS)


def create_urn(name: Any, type_: Any, parent: Any = None, project: Optional[str] = None,
               stack: Optional[str] = None) -> Output:
    """`runtime.resource.create_urn`, which the SDK calls for every registration to make the
    URN a monitor-less test would be answered with (a plan has a monitor, so nothing reads
    it), through six Outputs and four tasks. With a plain name, type and parent URN the URN
    is the same string, joined here, in an Output that is already resolved (known, not
    secret, no resources, as the SDK's would resolve). Anything else: the SDK's way."""
    if type(name) is not str or type(type_) is not str or (parent is not None and type(parent) is not str):
        return _SDK_CREATE_URN(name, type_, parent, project, stack)
    if parent is not None:
        prefix = parent[0:parent.rfind("::")] + "$"
    else:
        stack = pulumi_settings.get_stack() if stack is None else stack
        project = pulumi_settings.get_project() if project is None else project
        prefix = "urn:pulumi:" + stack + "::" + project + "::"
    output = object.__new__(Output)
    output._data = asyncio.get_event_loop().create_future()
    output._data.set_result(_OutputData(resources=set(), value=prefix + type_ + "::" + name, is_known=True,
                                        is_secret=False))
    return output


def contains_unknowns(val: Any) -> bool:
    """`rpc.contains_unknowns`, which defines its recursive walker anew on every call (a
    function, its cells and a `set[int]` annotation, in a reference cycle that only the
    cyclic collector frees: 150 calls a developer, every Output resolved). The same walk,
    in the same order, from a function defined once; a plain value answers at once."""
    kind = type(val)  # compared by identity: a metaclass's __eq__ or __hash__ never runs
    if kind is str or kind is int or kind is float or kind is bool or val is None:
        return False
    return _unknown_inside(val, set())


def _unknown_inside(val: Any, seen_ids: set[int]) -> bool:
    if known_types.is_unknown(val):
        return True
    if id(val) in seen_ids:
        return False
    seen_ids.add(id(val))
    if isinstance(val, dict):
        return any(_unknown_inside(val[k], seen_ids) for k in val)
    if isinstance(val, list):
        return any(_unknown_inside(x, seen_ids) for x in val)
    return False


def _stand_ins() -> list[tuple[Any, str, Any]]:
    """(module, name, stand-in) for every SDK function replaced while a plan runs."""
    return [
        (pulumi, "get", get),
        (_types, "unwrap_type", _remembered(_SDK_UNWRAP)),
        (_types, "unwrap_optional_type", _remembered(_SDK_UNWRAP_OPTIONAL)),
        # Tables of a resource class, read from its annotations: the SDK's callers only read them.
        (_types, "resource_types", _remembered(_SDK_TYPES)),
        (_types, "resource_pulumi_to_py_names", _remembered(_SDK_NAMES)),
        # Tables of an input type (a nested args class), asked again for every map of that type.
        (_types, "input_type_py_to_pulumi_names", _remembered(_SDK_INPUT_NAMES)),
        (_types, "input_type_types", _remembered(_SDK_INPUT_TYPES)),
        (rpc, "transfer_properties", transfer_properties),
        (rpc, "serialize_property", serialize_property),
        (rpc, "serialize_properties", serialize_properties),
        (rpc, "resolve_outputs", resolve_outputs),
        (rpc, "resolve_outputs_due_to_exception", resolve_outputs_due_to_exception),
        (rpc, "_add_dependency", _add_dependency),
        (sdk_resource, "create_urn", create_urn),
        (pulumi.ResourceOptions, "merge", merge),
        (rpc, "declare_dependency", declare_dependency),
        (rpc, "contains_unknowns", contains_unknowns),
    ]


@contextmanager
def installed() -> Iterator[None]:
    """The stand-ins in place while the block runs; afterwards, whatever was there before."""
    replaced = [(module, name, getattr(module, name)) for module, name, _ in _stand_ins()]
    for module, name, stand_in in _stand_ins():
        setattr(module, name, stand_in)
    try:
        yield
    finally:
        for module, name, before in replaced:
            setattr(module, name, before)


_SDK_GET = _types.get
_SDK_UNWRAP = _types.unwrap_type
_SDK_UNWRAP_OPTIONAL = _types.unwrap_optional_type
_SDK_TYPES = _types.resource_types
_SDK_NAMES = _types.resource_pulumi_to_py_names
_SDK_INPUT_NAMES = _types.input_type_py_to_pulumi_names
_SDK_INPUT_TYPES = _types.input_type_types
_SDK_TRANSFER = rpc.transfer_properties
_SDK_SERIALIZE = rpc.serialize_property
_SDK_SERIALIZE_ALL = rpc.serialize_properties
_SDK_RESOLVE = rpc.resolve_outputs
_SDK_FAIL = rpc.resolve_outputs_due_to_exception
_SDK_MERGE = pulumi.ResourceOptions.merge
_SDK_CREATE_URN = sdk_resource.create_urn
