"""StateDiffTracker (spec §13.2): snapshots, diffs, summary and JSON export.

The pinned reports were produced by justpipe 0.12.0 on the same inputs.
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import collect
from justpipe import Pipe
from justpipe.observability import ObserverMeta, StateDiffTracker
from justpipe.types import Event, EventType

META = ObserverMeta("pipe", "run-1", 0.0)
RULE = "=" * 60


@dataclass
class State:
    a: int = 1
    items: list[int] = field(default_factory=list)


class Obj:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


async def run(
    tracker: StateDiffTracker, start: Any, *steps: tuple[str, Any], end: Any = None
) -> None:
    await tracker.on_pipeline_start(start, None, META)
    for stage, state in steps:
        await tracker.on_event(state, None, META, Event(EventType.STEP_END, stage, None))
    if end is not None:
        await tracker.on_pipeline_end(end, None, META, 1.0)


# --------------------------------------------------------------------------- snapshots


async def test_snapshots_are_deep_copies_taken_at_start_steps_and_end() -> None:
    tracker = StateDiffTracker()
    state = State()
    await tracker.on_pipeline_start(state, None, META)
    state.items.append(1)
    await tracker.on_event(state, None, META, Event(EventType.STEP_END, "s1", None))
    state.a = 5
    await tracker.on_pipeline_end(state, None, META, 1.0)
    state.items.append(2)
    assert tracker.get_all_snapshots() == {
        "__start__": State(1, []),
        "s1": State(1, [1]),
        "__end__": State(5, [1]),
    }
    assert tracker.initial_state == State(1, [])
    assert tracker.get_snapshot("nope") is None


async def test_only_step_end_takes_a_snapshot_and_repeats_keep_first_order() -> None:
    tracker = StateDiffTracker()
    await tracker.on_pipeline_start({"n": 0}, None, META)
    for kind in EventType:
        await tracker.on_event({"n": 1}, None, META, Event(kind, "a", None))
    await tracker.on_event({"n": 2}, None, META, Event(EventType.STEP_END, "b", None))
    await tracker.on_event({"n": 3}, None, META, Event(EventType.STEP_END, "a", None))
    assert tracker.step_order == ["a", "b"]
    assert tracker.snapshots == {"__start__": {"n": 0}, "a": {"n": 3}, "b": {"n": 2}}


async def test_states_that_cannot_be_copied_are_skipped() -> None:
    tracker = StateDiffTracker()
    locked = Obj(lock=threading.Lock())
    await run(tracker, locked, ("s", locked), end=locked)
    assert (tracker.snapshots, tracker.step_order, tracker.initial_state) == ({}, [], None)
    assert tracker.summary() == "No state snapshots captured"


async def test_each_run_starts_with_fresh_snapshots() -> None:
    """Deliberate difference: upstream kept the previous run's step snapshots."""
    tracker = StateDiffTracker()
    await run(tracker, {"a": 1}, ("old", {"a": 2}))
    await run(tracker, {"a": 1}, ("new", {"a": 3}))
    assert list(tracker.snapshots) == ["__start__", "new"]
    assert tracker.step_order == ["new"]


async def test_pipeline_error_takes_no_end_snapshot() -> None:
    tracker = StateDiffTracker()
    await run(tracker, {"a": 1})
    await tracker.on_pipeline_error({"a": 2}, None, META, ValueError("x"))
    assert list(tracker.snapshots) == ["__start__"]


# --------------------------------------------------------------------------- diff


async def test_diff_lists_added_removed_and_changed_fields() -> None:
    tracker = StateDiffTracker(max_value_length=10)
    before = {"a": 1, "c": "hello", "gone": 1.5, "same": [1]}
    after = {"a": 2, "c": "hello world long", "same": [1], "new": "abcdefghijklmnop", "new2": 3}
    await run(tracker, before, ("s1", after))
    assert tracker.diff("__start__", "s1") == (
        f"\nState Changes: __start__ \u2192 s1\n{RULE}\n\n"
        "Added:\n  + new: abcdefg...\n  + new2: 3\n\n"
        "Removed:\n  - gone: 1.5\n\n"
        "Changed:\n  ~ a:\n      1\n    \u2192 2\n  ~ c:\n      hello\n    \u2192 hello w...\n"
    )


async def test_diff_of_equal_snapshots() -> None:
    tracker = StateDiffTracker()
    await run(tracker, {"a": 1}, ("s", {"a": 1}))
    assert (
        tracker.diff("__start__", "s")
        == f"\nState Changes: __start__ \u2192 s\n{RULE}\n\nNo changes detected\n"
    )


async def test_diff_names_a_missing_snapshot() -> None:
    tracker = StateDiffTracker()
    await run(tracker, None, ("s", {"a": 1}))
    assert tracker.diff("zz", "s") == "No snapshot found for zz"
    assert tracker.diff("s", "zz") == "No snapshot found for zz"
    assert tracker.diff("__start__", "s") == "No snapshot found for __start__"


async def test_diff_compares_object_fields() -> None:
    tracker = StateDiffTracker()
    await run(tracker, Obj(a=1, b=[1]), ("s", Obj(a=2, c=1)))
    assert tracker.diff("__start__", "s") == (
        f"\nState Changes: __start__ \u2192 s\n{RULE}\n\n"
        "Added:\n  + c: 1\n\n"
        "Removed:\n  - b: list(1 items)\n\n"
        "Changed:\n  ~ a:\n      1\n    \u2192 2\n"
    )


@pytest.mark.parametrize(
    ("before", "after", "shown"),
    [
        (5, 6, "Before: 5\nAfter:  6"),
        (6, 6, "Before: 6\nAfter:  6"),
        ({"a": 1}, Obj(a=2), "Before: dict(1 keys)\nAfter:  Obj"),
        (Obj(a=2), {"a": 1}, "Before: Obj\nAfter:  dict(1 keys)"),
    ],
)
async def test_diff_of_different_shapes_shows_before_and_after(
    before: Any, after: Any, shown: str
) -> None:
    tracker = StateDiffTracker()
    await run(tracker, before, ("s", after))
    assert (
        tracker.diff("__start__", "s") == f"\nState Changes: __start__ \u2192 s\n{RULE}\n\n{shown}"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (123, "123"),
        (1.25, "1.25"),
        (None, "None"),
        (False, "False"),
        ("abc", "abc"),
        ([1, 2, 3], "list(3 items)"),
        ((1,), "tuple(1 items)"),
        ({1, 2}, "set(2 items)"),
        (frozenset([1]), "frozenset"),
        ({"k": 1}, "dict(1 keys)"),
        (collections.OrderedDict(a=1), "dict(1 keys)"),
        (collections.deque([1]), "deque"),
        (b"abc", "bytes"),
        (EventType.START, "EventType"),
        (Obj(x=1), "Obj"),
    ],
)
async def test_value_rendering(value: Any, shown: str) -> None:
    tracker = StateDiffTracker()
    await run(tracker, {}, ("s", {"v": value}))
    assert tracker.diff("__start__", "s").endswith(f"Added:\n  + v: {shown}\n")


@pytest.mark.parametrize(
    ("limit", "shown"),
    [(200, "abcdef"), (6, "abcdef"), (5, "ab..."), (4, "a..."), (3, "..."), (0, "...")],
)
async def test_long_values_are_truncated_to_the_limit(limit: int, shown: str) -> None:
    tracker = StateDiffTracker(max_value_length=limit)
    await run(tracker, {}, ("s", {"v": "abcdef"}))
    assert tracker.diff("__start__", "s").endswith(f"  + v: {shown}\n")


async def test_values_that_cannot_be_compared_count_as_changed() -> None:
    class NoCompare:
        def __eq__(self, other: object) -> bool:
            raise TypeError("ambiguous")

        def __deepcopy__(self, memo: dict[int, Any]) -> NoCompare:
            return self

        __hash__ = object.__hash__

    shared = NoCompare()
    tracker = StateDiffTracker()
    await run(tracker, {"x": NoCompare()}, ("s", {"x": shared}), ("t", {"x": shared}))
    assert "~ x:" in tracker.diff("__start__", "s")
    assert "No changes detected" in tracker.diff("s", "t")


# --------------------------------------------------------------------------- summary


async def test_summary_counts_changes_per_step() -> None:
    tracker = StateDiffTracker()
    start = {"a": 1, "b": 2, "gone": 0}
    s1 = {"a": 2, "b": 2, "n1": 1, "n2": 2, "n3": 3, "n4": 4}
    await run(tracker, start, ("s1", s1), ("same", s1), ("s2", {"x": 1}))
    assert tracker.summary() == (
        f"\nState Changes Summary\n{RULE}\n\n"
        "s1:\n  Changes: +4, -1, ~1\n    + n1\n    + n2\n    + n3\n    ~ a\n\n"
        "s2:\n  Changes: +1, -6\n    + x\n"
    )


async def test_summary_skips_snapshots_of_another_shape() -> None:
    tracker = StateDiffTracker()
    await run(tracker, {"a": 1}, ("obj", Obj(a=2)), ("num", 7), ("s", {"a": 3}))
    assert tracker.summary() == f"\nState Changes Summary\n{RULE}\n\ns:\n  Changes: ~1\n    ~ a\n"


async def test_summary_without_comparable_snapshots_is_just_the_header() -> None:
    tracker = StateDiffTracker()
    await run(tracker, None, ("a", {"x": 1}), ("b", {"x": 2}))
    assert tracker.summary() == f"\nState Changes Summary\n{RULE}\n"


# --------------------------------------------------------------------------- export


async def test_export_json_uses_str_for_values_json_cannot_express() -> None:
    tracker = StateDiffTracker()
    await run(
        tracker, {"l": [1, {"b": 2}], "t": (1, 2), "s": {3}, "b": b"x", "n": None}, ("s", State())
    )
    assert json.loads(tracker.export_json()) == {
        "__start__": {"l": [1, {"b": 2}], "t": [1, 2], "s": "{3}", "b": "b'x'", "n": None},
        "s": "State(a=1, items=[])",
    }
    assert tracker.export_json().startswith('{\n  "__start__": {\n    "l": [')


async def test_export_json_survives_keys_and_cycles_json_rejects() -> None:
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    tracker = StateDiffTracker()
    await run(tracker, {(1, 2): "tuple key"}, ("s", cyclic))
    exported = json.loads(tracker.export_json())
    assert exported["__start__"] == "{(1, 2): 'tuple key'}"
    assert exported["s"] == "{'name': 'loop', 'self': {...}}"


def test_export_of_nothing_is_an_empty_object() -> None:
    assert StateDiffTracker().export_json() == "{}"


def test_bad_max_value_length_is_rejected() -> None:
    with pytest.raises(TypeError, match="max_value_length"):
        StateDiffTracker(max_value_length="200")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_value_length"):
        StateDiffTracker(max_value_length=-1)


# --------------------------------------------------------------------------- real runs


async def test_real_run_is_snapshotted_after_every_step() -> None:
    pipe: Pipe[Any, Any] = Pipe(name="state")

    @pipe.step(to="b")
    async def a(state: dict[str, Any]) -> None:
        state["items"].append(1)

    @pipe.step()
    async def b(state: dict[str, Any]) -> None:
        state["done"] = True

    tracker = StateDiffTracker()
    pipe.add_observer(tracker)
    await collect(pipe, {"items": []})
    assert tracker.get_all_snapshots() == {
        "__start__": {"items": []},
        "a": {"items": [1]},
        "b": {"items": [1], "done": True},
        "__end__": {"items": [1], "done": True},
    }
    assert tracker.summary().endswith(
        "a:\n  Changes: ~1\n    ~ items\n\nb:\n  Changes: +1\n    + done\n"
    )


# --------------------------------------------------------------------------- any state


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


_ODD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=300)
    | st.binary(max_size=20)
    | st.sampled_from([object(), _Unprintable(), float("nan"), 10**400]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(start=_ODD_VALUES, after=_ODD_VALUES)
async def test_no_state_makes_the_tracker_raise(start: Any, after: Any) -> None:
    tracker = StateDiffTracker(max_value_length=20)
    await run(tracker, start, ("s", after), end=after)
    for text in (tracker.diff("__start__", "s"), tracker.summary(), tracker.export_json()):
        assert isinstance(text, str)
