"""Behaviour of the `justpipe._core` classes, run on the active backend (so on both twins)."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from justpipe import _core
from justpipe._core import _barrier_py
from justpipe.types import Event, EventType, NodeKind

IGNORED, FIRST, PROGRESS, FIRED = _core.IGNORED, _core.FIRST, _core.PROGRESS, _core.FIRED


def test_mark_results_are_the_documented_codes() -> None:
    assert (IGNORED, FIRST, PROGRESS, FIRED) == (0, 1, 2, 3)


# --------------------------------------------------------------------------- JoinTable: ALL


def test_all_barrier_waits_for_every_parent() -> None:
    table = _core.JoinTable([3], [False])
    assert table.mark(0, 1) == FIRST
    assert table.mark(0, 2) == PROGRESS
    assert table.mark(0, 0) == FIRED


def test_all_barrier_starts_a_new_wave_after_firing() -> None:
    table = _core.JoinTable([2], [False])
    assert [table.mark(0, 0), table.mark(0, 1)] == [FIRST, FIRED]
    assert [table.mark(0, 1), table.mark(0, 0)] == [FIRST, FIRED]
    assert [table.mark(0, 0), table.mark(0, 0), table.mark(0, 1)] == [FIRST, IGNORED, FIRED]


def test_all_barrier_ignores_a_parent_arriving_twice_in_one_wave() -> None:
    table = _core.JoinTable([3], [False])
    assert table.mark(0, 0) == FIRST
    assert table.mark(0, 0) == IGNORED
    assert table.mark(0, 1) == PROGRESS
    assert table.mark(0, 1) == IGNORED
    assert table.mark(0, 2) == FIRED


def test_all_barrier_with_one_parent_fires_on_every_arrival() -> None:
    table = _core.JoinTable([1], [False])
    assert [table.mark(0, 0) for _ in range(3)] == [FIRED, FIRED, FIRED]


# --------------------------------------------------------------------------- JoinTable: ANY


def test_any_barrier_fires_on_the_first_parent_of_a_wave_only() -> None:
    table = _core.JoinTable([3], [True])
    assert table.mark(0, 2) == FIRED
    assert table.mark(0, 0) == PROGRESS
    assert table.mark(0, 0) == IGNORED
    assert table.mark(0, 1) == PROGRESS  # the set is complete: the next wave starts
    assert table.mark(0, 1) == FIRED


def test_any_barrier_ignores_a_parent_arriving_twice_in_one_wave() -> None:
    table = _core.JoinTable([2], [True])
    assert table.mark(0, 0) == FIRED
    assert table.mark(0, 0) == IGNORED
    assert table.mark(0, 1) == PROGRESS
    assert table.mark(0, 1) == FIRED


def test_any_barrier_with_one_parent_fires_on_every_arrival() -> None:
    table = _core.JoinTable([1], [True])
    assert [table.mark(0, 0) for _ in range(3)] == [FIRED, FIRED, FIRED]


# --------------------------------------------------------------------------- JoinTable: control


def test_disabled_node_ignores_every_arrival_and_others_are_unaffected() -> None:
    table = _core.JoinTable([2, 2], [False, True])
    assert table.mark(0, 0) == FIRST
    table.disable(0)
    assert [table.mark(0, 1), table.mark(0, 0), table.mark(0, 1)] == [IGNORED] * 3
    assert table.mark(1, 1) == FIRED


def test_nodes_are_independent() -> None:
    table = _core.JoinTable([2, 2, 0], [False, False, False])
    assert table.mark(0, 0) == FIRST
    assert table.mark(1, 1) == FIRST
    assert table.mark(1, 0) == FIRED
    assert table.mark(0, 0) == IGNORED  # node 0 is still in its first wave
    assert table.mark(0, 1) == FIRED


def test_join_with_more_than_64_parents_tracks_each_one() -> None:
    parents = 65
    table = _core.JoinTable([parents], [False])
    results = [table.mark(0, slot) for slot in reversed(range(1, parents))]
    assert results == [FIRST] + [PROGRESS] * (parents - 2)
    assert table.mark(0, 64) == IGNORED
    assert table.mark(0, 0) == FIRED


def test_ten_thousand_parent_join_counts_every_arrival() -> None:
    parents = 10_000
    table = _core.JoinTable([parents, 1], [False, False])
    for slot in range(parents - 1):
        assert table.mark(0, slot) == (FIRST if slot == 0 else PROGRESS)
        assert table.mark(0, slot) == IGNORED
    assert table.mark(0, parents - 1) == FIRED
    assert table.mark(0, parents - 1) == FIRST  # a new wave: every slot counts again
    assert table.mark(1, 0) == FIRED


def _lines_per_mark(table: Any, node: int, slots: Iterator[int]) -> set[int]:
    """How many Python lines each `mark()` executes (the pure twin's work per arrival)."""
    counts: list[int] = []
    executed = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal executed
        if event == "line":
            executed += 1
        return tracer

    previous = sys.gettrace()
    for slot in slots:
        executed = 0
        sys.settrace(tracer)
        try:
            table.mark(node, slot)
        finally:
            sys.settrace(previous)
        counts.append(executed)
    return set(counts)


@pytest.mark.backend_agnostic
def test_pure_mark_does_the_same_work_for_3_or_10000_parents() -> None:
    small = _barrier_py.JoinTable([3], [False])
    large = _barrier_py.JoinTable([10_000], [False])
    small_work = _lines_per_mark(small, 0, iter([0, 1]))  # FIRST, PROGRESS
    large_work = _lines_per_mark(large, 0, iter(range(9_999)))  # FIRST, PROGRESS x 9998
    assert large_work == small_work
    assert _lines_per_mark(small, 0, iter([2])) == _lines_per_mark(large, 0, iter([9_999]))


# --------------------------------------------------------------------------- JoinTable: errors


@pytest.mark.parametrize("node", [-1, 3, 2**70])
def test_disabling_a_node_out_of_range_raises_index_error(node: int) -> None:
    table = _core.JoinTable([1, 2, 0], [False, False, False])
    with pytest.raises(IndexError):
        table.disable(node)


@pytest.mark.parametrize(("node", "slot"), [(-1, 0), (3, 0), (0, 1), (1, -1), (1, 2), (1, 2**70)])
def test_mark_out_of_range_raises_index_error(node: int, slot: int) -> None:
    table = _core.JoinTable([1, 2, 0], [False, False, False])
    with pytest.raises(IndexError):
        table.mark(node, slot)


def test_a_root_has_no_slot_to_mark() -> None:
    table = _core.JoinTable([0], [False])
    with pytest.raises(IndexError):
        table.mark(0, 0)


def test_join_table_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="any_flags"):
        _core.JoinTable([1, 2], [False])
    with pytest.raises(ValueError, match="negative"):
        _core.JoinTable([1, -2], [False, False])


def test_an_empty_join_table_is_valid() -> None:
    table = _core.JoinTable([], [])
    with pytest.raises(IndexError):
        table.disable(0)


# --------------------------------------------------------------------------- Readiness


def diamond() -> Any:
    """0 -> 1, 0 -> 2, 1 -> 3, 2 -> 3 with node 3 an ALL join of two parents."""
    return _core.Readiness(
        [[(1, 0), (2, 0)], [(3, 0)], [(3, 1)], []],
        [0, 1, 1, 2],
        [False, False, False, False],
    )


def test_complete_reports_fired_successors_in_order() -> None:
    assert diamond().complete(0) == [1, 2]


def test_complete_reports_the_first_arrival_at_an_all_join_as_inverted_index() -> None:
    readiness = diamond()
    assert readiness.complete(1) == [~3]
    assert readiness.complete(1) == []  # duplicate arrival: IGNORED is left out
    assert readiness.complete(2) == [3]


def test_complete_leaves_out_progress_arrivals() -> None:
    readiness = _core.Readiness([[(3, 0)], [(3, 1)], [(3, 2)], []], [0, 0, 0, 3], [False] * 4)
    assert [readiness.complete(u) for u in (0, 1, 2)] == [[~3], [], [3]]


def test_complete_fires_an_any_join_once_per_wave() -> None:
    readiness = _core.Readiness([[(2, 0)], [(2, 1)], []], [0, 0, 2], [False, False, True])
    assert [readiness.complete(u) for u in (1, 0, 0)] == [[2], [], [2]]


def test_readiness_exposes_its_join_table() -> None:
    readiness = diamond()
    assert readiness.complete(1) == [~3]
    readiness.table.disable(3)
    assert readiness.complete(2) == []
    assert readiness.complete(1) == []


def test_complete_of_a_sink_is_empty() -> None:
    assert diamond().complete(3) == []


@pytest.mark.parametrize("node", [-1, 4])
def test_complete_of_an_unknown_node_raises_index_error(node: int) -> None:
    with pytest.raises(IndexError):
        diamond().complete(node)


@pytest.mark.parametrize(
    "successors",
    [
        [[(2, 0)], []],  # no node 2
        [[(1, 1)], []],  # node 1 has one slot
        [[(1, -1)], []],
        [[(1, 0)]],  # one row for two nodes
    ],
)
def test_readiness_rejects_edges_that_do_not_fit_the_nodes(successors: Any) -> None:
    with pytest.raises(ValueError, match=r"node|slot"):
        _core.Readiness(successors, [0, 1], [False, False])


# --------------------------------------------------------------------------- ids


def test_invocation_ids_are_run_id_colon_counter() -> None:
    ids = _core.InvocationIds("run-7")
    assert [ids.next(), ids.next()] == ["run-7:1", "run-7:2"]


def test_attempts_are_counted_per_name() -> None:
    attempts = _core.AttemptCounter()
    assert [attempts.next("a"), attempts.next("b"), attempts.next("a")] == [1, 1, 2]
    assert [attempts.next("c"), attempts.next("b")] == [1, 2]


# --------------------------------------------------------------------------- EventFactory

BUILD_ARGS = (
    EventType.TOKEN,
    "stage",
    {"k": [1]},
    123.5,
    NodeKind.STEP,
    "r:1",
    "r:0",
    "r:0",
    2,
    ("outer",),
    {"m": 1},
)


def test_built_event_equals_the_dataclass_constructed_one() -> None:
    factory = _core.EventFactory(Event, "r")
    event = factory.build(*BUILD_ARGS)
    expected = Event(
        type=EventType.TOKEN,
        stage="stage",
        payload={"k": [1]},
        timestamp=123.5,
        run_id="r",
        origin_run_id="r",
        parent_run_id=None,
        seq=1,
        node_kind=NodeKind.STEP,
        invocation_id="r:1",
        parent_invocation_id="r:0",
        owner_invocation_id="r:0",
        attempt=2,
        scope=("outer",),
        meta={"m": 1},
    )
    assert type(event) is Event
    assert event == expected
    assert repr(event) == repr(expected)
    assert dataclasses.asdict(event) == dataclasses.asdict(expected)
    assert list(vars(event)) == [f.name for f in dataclasses.fields(Event)]
    assert pickle.loads(pickle.dumps(event)) == expected
    assert dataclasses.replace(event, stage="other") == dataclasses.replace(expected, stage="other")


def test_built_event_is_frozen_and_hashes_like_the_dataclass() -> None:
    factory = _core.EventFactory(Event, "r")
    event = factory.build(
        EventType.START, "s", None, 1.0, NodeKind.SYSTEM, None, None, None, 1, (), None
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.stage = "x"  # type: ignore[misc]
    expected = Event(EventType.START, "s", None, 1.0, "r", "r", None, 1)
    assert hash(event) == hash(expected)


def test_factory_numbers_events_in_order() -> None:
    factory = _core.EventFactory(Event, "r")
    child = Event(EventType.TOKEN, "c", run_id="child", seq=7)
    events = [
        factory.build(*BUILD_ARGS),
        factory.forward(child, "s", None, None, ()),
        factory.build(*BUILD_ARGS),
    ]
    assert [e.seq for e in events] == [1, 2, 3]


def test_forward_re_parents_a_child_event() -> None:
    factory = _core.EventFactory(Event, "parent")
    child = Event(
        EventType.STEP_END,
        "inner",
        payload=5,
        timestamp=9.0,
        run_id="child",
        origin_run_id="child",
        seq=41,
        node_kind=NodeKind.STEP,
        invocation_id="child:3",
        parent_invocation_id="child:1",
        owner_invocation_id="child:1",
        attempt=2,
        scope=("in",),
        meta={"a": 1},
    )
    event = factory.forward(child, "sub", "parent:4", "parent:2", ("sub",))
    assert event == Event(
        EventType.STEP_END,
        "sub",
        payload=5,
        timestamp=9.0,
        run_id="parent",
        origin_run_id="child",
        parent_run_id="child",
        seq=1,
        node_kind=NodeKind.STEP,
        invocation_id="child:3",
        parent_invocation_id="parent:4",
        owner_invocation_id="parent:2",
        attempt=2,
        scope=("sub",),
        meta={"a": 1},
    )


def test_forward_keeps_the_origin_of_an_already_forwarded_event() -> None:
    factory = _core.EventFactory(Event, "top")
    grandchild = Event(EventType.TOKEN, "x", run_id="mid", origin_run_id="leaf")
    assert factory.forward(grandchild, "x", None, None, ()).origin_run_id == "leaf"
    no_origin = Event(EventType.TOKEN, "x", run_id="mid")
    assert factory.forward(no_origin, "x", None, None, ()).origin_run_id == "mid"


def test_factory_refuses_a_class_it_cannot_build() -> None:
    @dataclasses.dataclass(frozen=True)
    class Other:
        type: Any
        stage: str

    with pytest.raises(TypeError):
        _core.EventFactory(Other, "r")
    with pytest.raises(TypeError):
        _core.EventFactory(dict, "r")
