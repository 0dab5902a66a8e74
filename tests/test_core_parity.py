"""Differential tests: the compiled and the pure twins give identical results.

Random operation sequences are applied to one instance of each twin and every result
(including the type and message of any exception) must match. Skipped when the compiled
core is not importable, except under CI / JUSTPIPE_REQUIRE_EXTENSIONS=1 where that fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from justpipe.types import Event, EventType, NodeKind

pytestmark = pytest.mark.backend_agnostic

Twins = tuple[SimpleNamespace, SimpleNamespace]
PARITY = settings(deadline=None, max_examples=150)


def outcome(call: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What `call(*args)` did: ("ok", result) or ("raise", (exception type, message))."""
    try:
        return ("ok", call(*args))
    except Exception as exc:
        return ("raise", (type(exc).__name__, str(exc)))


def same_outcomes(compiled: Any, pure: Any, ops: list[tuple[Any, ...]]) -> None:
    """Apply each `(method, *args)` to both objects; all outcomes must be equal."""
    for step, (method, *args) in enumerate(ops):
        got = outcome(getattr(compiled, method), *args)
        want = outcome(getattr(pure, method), *args)
        assert got == want, f"step {step}: {method}{tuple(args)}: compiled {got} != pure {want}"


# --------------------------------------------------------------------------- JoinTable

slot_counts = st.lists(
    st.one_of(st.integers(0, 4), st.integers(60, 70), st.integers(100, 200)), min_size=1, max_size=6
)


@st.composite
def join_scenarios(draw: st.DrawFn) -> tuple[list[int], list[bool], list[tuple[Any, ...]]]:
    counts = draw(slot_counts)
    flags = draw(st.lists(st.booleans(), min_size=len(counts), max_size=len(counts)))
    node = st.integers(-1, len(counts))  # includes out-of-range nodes
    biggest = max(counts)
    slot = st.integers(-1, biggest)
    marks = st.tuples(st.just("mark"), node, slot)
    # arrivals concentrated on few slots, so duplicates and completed waves are common
    dense = st.tuples(st.just("mark"), node, st.integers(0, 3))
    controls = st.tuples(st.just("disable"), node)
    ops = draw(
        st.lists(
            st.one_of(marks, dense, dense, controls),
            max_size=300,
        )
    )
    return counts, flags, ops


@PARITY
@given(scenario=join_scenarios())
def test_join_table_twins_agree(twins: Twins, scenario: Any) -> None:
    counts, flags, ops = scenario
    compiled, pure = twins
    same_outcomes(compiled.JoinTable(counts, flags), pure.JoinTable(counts, flags), ops)


@settings(deadline=None, max_examples=40)
@given(slots=st.integers(1, 130), any_join=st.booleans(), order=st.randoms())
def test_join_table_twins_agree_on_whole_waves(
    twins: Twins, slots: int, any_join: bool, order: Any
) -> None:
    compiled, pure = twins
    arrivals = [s for _ in range(3) for s in order.sample(range(slots), slots)]
    ops: list[tuple[Any, ...]] = [("mark", 0, s) for s in arrivals]
    same_outcomes(compiled.JoinTable([slots], [any_join]), pure.JoinTable([slots], [any_join]), ops)


@st.composite
def restore_args(draw: st.DrawFn, counts: list[int]) -> tuple[Any, ...]:
    """Arguments of `JoinTable.restore`: mostly valid snapshots, some of every bad kind."""
    nodes, biggest = len(counts), min(max(counts), 8)
    node = st.integers(-1, nodes)  # includes out-of-range nodes
    slots = st.lists(st.integers(-1, biggest), max_size=5)
    arrivals = st.one_of(
        st.dictionaries(node, slots, max_size=4),
        st.dictionaries(node, st.lists(st.integers(0, 2), max_size=3), max_size=4),
        st.integers(0, nodes - 1).map(lambda n: {n: list(range(counts[n]))}),  # whole waves
        st.just([(0, [0])]),  # not a dict
        st.just({0: 1}),  # slots not iterable
        st.just({"0": [0]}),  # a node that is not an int
        st.just({0: [0.5]}),  # a slot that is not an int
    )
    disabled = st.one_of(st.lists(node, max_size=3), st.just(None), st.just(["x"]))
    return (draw(arrivals),) if draw(st.booleans()) else (draw(arrivals), draw(disabled))


@st.composite
def snapshot_scenarios(draw: st.DrawFn) -> tuple[list[int], list[bool], list[tuple[Any, ...]]]:
    counts, flags, ops = draw(join_scenarios())
    extra = st.one_of(
        st.just(("snapshot",)),
        st.builds(lambda args: ("restore", *args), restore_args(counts)),
        st.just(("round_trip",)),
    )
    mixed = list(ops[:60])
    for _ in range(draw(st.integers(0, 12))):
        mixed.insert(draw(st.integers(0, len(mixed))), draw(extra))
    mixed.append(("snapshot",))
    return counts, flags, mixed


class _RoundTrip:
    """A JoinTable plus `round_trip()`: restore what it snapshots (must change nothing)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def round_trip(self) -> Any:
        before = self.table.snapshot()
        self.table.restore(*before)
        if self.table.snapshot() != before:  # (pytest.fail: not caught by `outcome`)
            pytest.fail(f"restore(*snapshot()) changed the snapshot {before}")
        return before


@PARITY
@given(scenario=snapshot_scenarios())
def test_join_table_snapshot_and_restore_twins_agree(twins: Twins, scenario: Any) -> None:
    """Snapshots, restores (good and bad) and round trips between marks: same outcomes."""
    counts, flags, ops = scenario
    compiled, pure = twins
    tables = (_RoundTrip(twin.JoinTable(counts, flags)) for twin in (compiled, pure))
    same_outcomes(*tables, ops)


@PARITY
@given(scenario=join_scenarios(), data=st.data())
def test_a_restored_join_table_behaves_as_the_one_it_was_snapshot_from(
    twins: Twins, scenario: Any, data: st.DataObject
) -> None:
    """The point of a snapshot: a fresh table restored from it answers every later mark as
    the original does (the waves' numbering is not part of the state)."""
    counts, flags, ops = scenario
    cut = data.draw(st.integers(0, len(ops)))
    for twin in twins:
        original = twin.JoinTable(counts, flags)
        for method, *args in ops[:cut]:
            outcome(getattr(original, method), *args)
        restored = twin.JoinTable(counts, flags)
        restored.restore(*original.snapshot())
        same_outcomes(restored, original, ops[cut:])


def test_a_join_table_snapshot_names_the_current_wave_only(twins: Twins) -> None:
    for twin in twins:
        table = twin.JoinTable([3, 2, 1], [False, True, False])
        assert table.snapshot() == ({}, ())
        table.mark(0, 2)
        table.mark(0, 0)
        table.mark(1, 1)
        table.disable(2)
        assert table.snapshot() == ({0: (0, 2), 1: (1,)}, (2,))
        table.mark(0, 1)  # the wave is complete: it fires and a new one begins, empty
        assert table.snapshot() == ({1: (1,)}, (2,))
        with pytest.raises(ValueError, match="all 3 slots arrived"):
            table.restore({0: [0, 1, 2]})
        assert table.snapshot() == ({1: (1,)}, (2,)), "a refused restore changes nothing"
        table.restore({0: [1, 1]})
        assert table.snapshot() == ({0: (1,)}, ())
        assert table.mark(0, 1) == twin.IGNORED and table.mark(0, 0) == twin.PROGRESS


@pytest.mark.parametrize(
    ("counts", "flags"), [([1, 2], [False]), ([1, -1], [True, True]), ([], [])]
)
def test_join_table_twins_agree_on_construction(twins: Twins, counts: Any, flags: Any) -> None:
    compiled, pure = twins
    assert outcome(lambda: compiled.JoinTable(counts, flags).mark(0, 0)) == outcome(
        lambda: pure.JoinTable(counts, flags).mark(0, 0)
    )


# --------------------------------------------------------------------------- Readiness


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[tuple[int, int]]], list[int], list[bool]]:
    """A random DAG (edges go from lower to higher index) with one slot per parent edge."""
    nodes = draw(st.integers(1, 12))
    parents: list[list[int]] = [[] for _ in range(nodes)]
    successors: list[list[tuple[int, int]]] = [[] for _ in range(nodes)]
    for v in range(1, nodes):
        chosen = draw(st.lists(st.integers(0, v - 1), unique=True, max_size=v))
        for u in chosen:
            successors[u].append((v, len(parents[v])))
            parents[v].append(u)
    for row in successors:
        draw(st.randoms()).shuffle(row)  # successor order is the caller's, not sorted
    flags = draw(st.lists(st.booleans(), min_size=nodes, max_size=nodes))
    return successors, [len(p) for p in parents], flags


@PARITY
@given(dag=dags(), data=st.data())
def test_readiness_twins_agree(twins: Twins, dag: Any, data: st.DataObject) -> None:
    successors, counts, flags = dag
    compiled_cls, pure_cls = twins[0].Readiness, twins[1].Readiness
    compiled, pure = compiled_cls(successors, counts, flags), pure_cls(successors, counts, flags)
    nodes = len(counts)
    node = st.integers(-1, nodes)
    op = st.one_of(
        st.tuples(st.just("complete"), node),
        st.tuples(st.just("complete"), st.integers(0, nodes - 1)),
        st.tuples(st.just("table.disable"), node),
    )
    for name, *args in data.draw(st.lists(op, max_size=100)):
        if name.startswith("table."):
            method = name.removeprefix("table.")
            got = outcome(getattr(compiled.table, method), *args)
            want = outcome(getattr(pure.table, method), *args)
        else:
            got = outcome(compiled.complete, *args)
            want = outcome(pure.complete, *args)
        assert got == want, f"{name}{tuple(args)}"


@pytest.mark.parametrize(
    ("successors", "counts"),
    [([[(2, 0)], []], [0, 1]), ([[(1, 3)], []], [0, 1]), ([[]], [0, 1]), ([[(1, 0)], []], [0, -1])],
)
def test_readiness_twins_agree_on_invalid_edges(twins: Twins, successors: Any, counts: Any) -> None:
    compiled, pure = twins
    flags = [False] * len(counts)
    assert outcome(lambda: compiled.Readiness(successors, counts, flags)) == outcome(
        lambda: pure.Readiness(successors, counts, flags)
    )


# --------------------------------------------------------------------------- ids


@PARITY
@given(
    run_id=st.text(max_size=10), calls=st.integers(0, 50), names=st.lists(st.sampled_from("abc"))
)
def test_id_twins_agree(twins: Twins, run_id: str, calls: int, names: list[str]) -> None:
    compiled, pure = twins
    ids = compiled.InvocationIds(run_id), pure.InvocationIds(run_id)
    attempts = compiled.AttemptCounter(), pure.AttemptCounter()
    assert [ids[0].next() for _ in range(calls)] == [ids[1].next() for _ in range(calls)]
    assert [attempts[0].next(n) for n in names] == [attempts[1].next(n) for n in names]


# --------------------------------------------------------------------------- EventFactory

optional_text = st.none() | st.text(max_size=5)
values = st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=3)
build_args = st.tuples(
    st.sampled_from(EventType),
    st.text(max_size=8),
    values,
    st.floats(allow_nan=False),
    st.sampled_from(NodeKind),
    optional_text,
    optional_text,
    optional_text,
    st.integers(1, 5),
    st.lists(st.text(max_size=3), max_size=3).map(tuple),
    st.none() | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
events = st.builds(
    Event,
    type=st.sampled_from(EventType),
    stage=st.text(max_size=8),
    payload=values,
    timestamp=st.floats(allow_nan=False),
    run_id=optional_text,
    origin_run_id=optional_text,
    parent_run_id=optional_text,
    seq=st.none() | st.integers(0, 99),
    node_kind=st.sampled_from(NodeKind),
    invocation_id=optional_text,
    attempt=st.integers(1, 5),
    scope=st.lists(st.text(max_size=3), max_size=3).map(tuple),
)
forward_args = st.tuples(
    st.text(max_size=8),
    optional_text,
    optional_text,
    st.lists(st.text(max_size=3), max_size=2).map(tuple),
)
factory_ops = st.lists(
    st.one_of(
        st.tuples(st.just("build"), build_args),
        st.tuples(
            st.just("forward"),
            st.tuples(events).flatmap(lambda e: forward_args.map(lambda a: (*e, *a))),
        ),
    ),
    max_size=30,
)


BUILD_LAST = (EventType.FINISH, "system", None, 0.0, NodeKind.SYSTEM, None, None, None, 1, (), None)


@PARITY
@given(run_id=st.text(max_size=8), ops=factory_ops)
def test_event_factory_twins_agree(
    twins: Twins, run_id: str, ops: list[tuple[str, tuple[Any, ...]]]
) -> None:
    compiled, pure = twins
    factories = compiled.EventFactory(Event, run_id), pure.EventFactory(Event, run_id)
    for method, args in ops:
        made = [getattr(f, method)(*args) for f in factories]
        assert made[0] == made[1]
        assert repr(made[0]) == repr(made[1])
        assert type(made[0]) is type(made[1]) is Event
        assert list(vars(made[0]).items()) == list(vars(made[1]).items())
        rebuilt = dataclasses.replace(made[0])
        assert rebuilt == made[0]
    last = [f.build(*BUILD_LAST) for f in factories]
    assert last[0].seq == last[1].seq == len(ops) + 1
