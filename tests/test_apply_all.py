"""`apply_all` against what it stands for, `Output.all(*values).apply(lambda v: fn(*v))`.

Every combination of known and unknown (a preview), secret and not, plain values and
Outputs: the same value, known and secret flags and dependencies, and `fn` runs only
when every value is known.
"""

from __future__ import annotations

import asyncio
import itertools

import pulumi
import pytest

from components.common import apply_all


class Marker:
    """Stands for a resource in an Output's dependency set (the sets are only unioned)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def output(value: str, known: bool, secret: bool, resource: Marker) -> pulumi.Output[str]:
    def done(result):
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future

    return pulumi.Output({resource}, done(value if known else None), done(known), done(secret))


async def facets(out: pulumi.Output) -> tuple:
    return (await out.future(with_unknowns=True), await out.is_known(), await out.is_secret(),
            sorted(map(repr, await out.resources())))


def cases():
    shapes = [("known", True, False), ("unknown", False, False), ("secret", True, True), ("unknown secret", False, True)]
    for first, second in itertools.product(shapes, repeat=2):
        yield pytest.param(first, second, id=f"{first[0]}+{second[0]}")


@pytest.mark.parametrize("first, second", list(cases()))
def test_two_outputs_and_a_plain_value_as_output_all_gives_them(first, second):
    async def both():
        calls = []

        def fn(a, b, c):
            calls.append((a, b, c))
            return f"{a}/{b}/{c}"

        def inputs():
            return (output("acct", first[1], first[2], Marker("r1")), "plain",
                    output("i-1", second[1], second[2], Marker("r2")))

        ours = await facets(apply_all(fn, *inputs()))
        ours_calls, calls[:] = list(calls), []
        sdks = await facets(pulumi.Output.all(*inputs()).apply(lambda v: fn(*v)))
        return ours, ours_calls, sdks, list(calls)

    ours, ours_calls, sdks, sdk_calls = asyncio.run(both())
    assert ours == sdks
    assert ours_calls == sdk_calls  # fn ran (once) exactly when the SDK's did
    if first[1] and second[1]:
        assert ours[0] == "acct/plain/i-1" and ours_calls == [("acct", "plain", "i-1")]
    else:
        assert ours[1] is False and ours_calls == []
    assert ours[2] is (first[2] or second[2])
    assert ours[3] == ["r1", "r2"]


def test_plain_values_only_give_a_known_output():
    async def run():
        return await facets(apply_all(lambda a, b: a + b, "x", "y"))

    assert asyncio.run(run()) == ("xy", True, False, [])


def test_an_exception_in_fn_fails_the_output_as_apply_does():
    async def run():
        out = apply_all(lambda a: 1 / 0, output("x", True, False, Marker("r")))
        with pytest.raises(ZeroDivisionError):
            await out.future()

    asyncio.run(run())


def test_a_plan_that_stops_first_leaves_no_never_awaited_coroutine_behind():
    """A plan that fails part-way leaves Outputs nobody awaited: no RuntimeWarning may follow
    (the suite's collection of an earlier plan's leftovers printed two)."""
    import gc
    import warnings

    from pulumi.runtime import settings

    async def run():
        never = asyncio.get_running_loop().create_future()
        apply_all(lambda a, b: a + b, pulumi.Output({Marker("r")}, never, never), output("x", True, False, Marker("s")))
        await asyncio.sleep(0)  # it starts, waits on the input that never comes; then the run ends

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(run())
        settings.SETTINGS.outputs.clear()  # as the next offline plan does before it starts
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


@pytest.mark.parametrize("holder", ["nested", "returned"])
def test_an_output_inside_a_value_or_returned_by_fn_is_refused_not_passed_through(holder):
    """Output.all unwraps an Output inside a value (and keeps its secret flag); apply_all would
    pass it through into a policy's text, so it says so instead."""
    async def run():
        inner = output("b", True, True, Marker("i"))
        if holder == "nested":
            out = apply_all(lambda v: str(v), output("a", True, False, Marker("o")).apply(lambda a: [a, inner]))
        else:
            out = apply_all(lambda a: inner, output("a", True, False, Marker("o")))
        with pytest.raises(TypeError, match="apply_all takes plain values"):
            await out.future()

    asyncio.run(run())


def test_a_failed_value_fails_the_output_without_running_fn_even_while_another_waits():
    """As Output.all's gather: the first failure settles it; a value still to come does not
    hold it back, and fn never runs."""
    async def run():
        loop = asyncio.get_running_loop()
        never, broken = loop.create_future(), loop.create_future()
        broken.set_exception(KeyError("no such subnet"))
        calls = []
        out = apply_all(lambda *v: calls.append(v), pulumi.Output({Marker("r")}, never, never),
                        pulumi.Output({Marker("s")}, broken, broken))
        with pytest.raises(KeyError, match="no such subnet"):
            await asyncio.wait_for(out.future(), timeout=5)
        return calls

    assert asyncio.run(run()) == []


def test_a_value_that_never_comes_leaves_the_output_waiting_not_settled():
    async def run():
        never = asyncio.get_running_loop().create_future()
        out = apply_all(lambda a, b: a + b, pulumi.Output({Marker("r")}, never, never), "x")
        for _ in range(5):
            await asyncio.sleep(0)
        return out._data.done()

    assert asyncio.run(run()) is False


@pytest.mark.parametrize("raised", ["StopIteration", "BaseException"])
def test_fn_raising_what_a_future_cannot_hold_fails_the_output_as_a_task_would(raised):
    """`next(...)` with no match raises StopIteration, which a future refuses to hold: left
    there, the Output would never settle and the program would wait for it forever."""
    class Abort(BaseException):
        pass

    def fn(a):
        if raised == "StopIteration":
            return next(p for p in a.split(":") if p == "nope")
        raise Abort("stop")

    async def run():
        failures = []
        for make in (lambda: apply_all(fn, output("a:b", True, False, Marker("r"))),
                     lambda: pulumi.Output.all(output("a:b", True, False, Marker("r"))).apply(lambda v: fn(*v))):
            try:
                await asyncio.wait_for(make().future(), timeout=5)
            except BaseException as error:  # noqa: BLE001 - the kind of failure is what is compared
                failures.append(type(error).__name__)
        return failures

    ours, sdks = asyncio.run(run())
    assert ours == sdks == ("RuntimeError" if raised == "StopIteration" else "Abort")


def test_a_list_holding_an_output_is_unwrapped_as_output_all_unwraps_it():
    async def run():
        def inputs():
            return ([output("a", True, True, Marker("x")), "b"],)

        return (await facets(apply_all(lambda v: str(v), *inputs())),
                await facets(pulumi.Output.all(*inputs()).apply(lambda v: str(v[0]))))

    ours, sdks = asyncio.run(run())
    assert ours == sdks == ("['a', 'b']", True, True, ["x"])


def bare(data: asyncio.Future) -> pulumi.Output:
    """An Output over a future no task awaits, as the offline plan makes a property's."""
    out = object.__new__(pulumi.Output)
    out._data = data
    return out


def test_a_second_failure_is_retrieved_not_logged_as_never_retrieved():
    import gc

    async def run():
        loop = asyncio.get_running_loop()
        logged = []
        loop.set_exception_handler(lambda _, context: logged.append(context.get("message")))
        first, second = loop.create_future(), loop.create_future()
        out = apply_all(lambda a, b: a + b, bare(first), bare(second))
        first.set_exception(KeyError("first"))
        second.set_exception(KeyError("second"))
        with pytest.raises(KeyError, match="first"):
            await out.future()
        await asyncio.sleep(0)
        del first, second, out
        gc.collect()
        return logged

    assert asyncio.run(run()) == []


def test_one_value_settled_and_one_still_to_come_leave_the_output_waiting():
    async def run():
        never = asyncio.get_running_loop().create_future()
        out = apply_all(lambda a, b: a + b, output("x", True, False, Marker("s")),
                        pulumi.Output({Marker("r")}, never, never))
        for _ in range(5):
            await asyncio.sleep(0)
        return out._data.done()

    assert asyncio.run(run()) is False


def test_fn_returning_a_coroutine_is_refused_and_the_coroutine_closed():
    import warnings

    async def later():
        return "x"

    async def run():
        out = apply_all(lambda a: later(), output("a", True, False, Marker("o")))
        with pytest.raises(TypeError, match="apply_all takes plain values"):
            await out.future()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(run())
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
