"""The counters a durable run checkpoints and seeds: both `_core` twins agree.

`InvocationIds`, `AttemptCounter` (and its `snapshot(names)`) and `EventFactory`: their
`snapshot()` / `restore()` (what a resumed run continues from; `JoinTable`'s are in
tests/test_core_parity.py), in the style of
tests/test_core_parity.py: random operation sequences on one instance of each twin, every
outcome (result, or exception type and message) equal. Skipped when the compiled core is
not importable (failed under CI).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from justpipe.types import Event, EventType, NodeKind

pytestmark = pytest.mark.backend_agnostic

Twins = tuple[SimpleNamespace, SimpleNamespace]
PARITY = settings(deadline=None, max_examples=100)

seeds = st.one_of(
    st.integers(0, 10**6), st.integers(-3, -1), st.just(True), st.just(1.5), st.just("3")
)


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", call(*args))
    except Exception as exc:
        return ("raise", (type(exc).__name__, str(exc)))


def same(compiled: Any, pure: Any, ops: list[tuple[Any, ...]]) -> None:
    for step, (method, *args) in enumerate(ops):
        got = outcome(getattr(compiled, method), *args)
        want = outcome(getattr(pure, method), *args)
        assert got == want, f"step {step}: {method}{tuple(args)}: {got} != {want}"


@PARITY
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("next")),
            st.tuples(st.just("snapshot")),
            st.tuples(st.just("restore"), seeds),
        ),
        max_size=40,
    )
)
def test_invocation_ids_snapshot_and_restore(twins: Twins, ops: list[tuple[Any, ...]]) -> None:
    compiled, pure = twins
    same(compiled.InvocationIds("run"), pure.InvocationIds("run"), ops)


names = st.sampled_from(["a", "b", "c"])
name_lists = st.one_of(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=5),
    st.just(("a", "a")),
    st.just([1, None]),
    st.just([["a"]]),
    st.just(5),
    st.just(None),
)
count_maps = st.one_of(
    st.dictionaries(names, st.integers(0, 50), max_size=3),
    st.just({"a": -1}),
    st.just({1: 2}),
    st.just({"a": "2"}),
    st.just([("a", 1)]),
)


@PARITY
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("next"), names),
            st.tuples(st.just("snapshot")),
            st.tuples(st.just("snapshot"), name_lists),
            st.tuples(st.just("restore"), count_maps),
        ),
        max_size=40,
    )
)
def test_attempt_counter_snapshot_and_restore(twins: Twins, ops: list[tuple[Any, ...]]) -> None:
    compiled, pure = twins
    same(compiled.AttemptCounter(), pure.AttemptCounter(), ops)


def test_a_snapshot_is_a_copy(twins: Twins) -> None:
    for twin in twins:
        counter = twin.AttemptCounter()
        counter.next("a")
        counter.snapshot()["a"] = 99
        counter.snapshot(["a"])["a"] = 99
        assert counter.next("a") == 2


def test_a_snapshot_of_some_names(twins: Twins) -> None:
    """`snapshot(names)`: those names' counts only, the uncounted ones left out."""
    for twin in twins:
        counter = twin.AttemptCounter()
        counter.restore({"a": 3, "b": 1})
        counter.next("c")
        assert counter.snapshot({"a", "c", "zz"}) == {"a": 3, "c": 1}
        assert counter.snapshot([]) == {}
        assert counter.snapshot(None) == {"a": 3, "b": 1, "c": 1}


@PARITY
@given(
    ops=st.lists(st.one_of(st.just(("build",)), st.tuples(st.just("restore"), seeds)), max_size=30)
)
def test_event_factory_snapshot_and_restore(twins: Twins, ops: list[tuple[Any, ...]]) -> None:
    compiled, pure = twins
    factories = (compiled.EventFactory(Event, "run"), pure.EventFactory(Event, "run"))
    for step, (method, *args) in enumerate(ops):
        results = []
        for factory in factories:
            if method == "build":
                results.append(("ok", factory.build(*_record()).seq))
            else:
                results.append(outcome(factory.restore, *args))
            results[-1] = (results[-1], outcome(factory.snapshot))
        assert results[0] == results[1], f"step {step}: {method}{tuple(args)}"


def _record() -> tuple[Any, ...]:
    return (EventType.STEP_START, "s", None, 0.0, NodeKind.STEP, "i", None, "i", 1, (), None)
