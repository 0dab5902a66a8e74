"""Durable runs end as plain runs do: every failure is an event, every event is kept (issue 19).

* A map whose worker returns `Stop` with `queue_size=1` lost its MAP_COMPLETE and the
  map's STEP_END in a durable run (the map was kept open as if the run had suspended).
* A state that becomes unserializable mid-run raised `StateSerializationError` out of the
  stream (no FINISH, the run row left `running`): it is now the completing step's
  STEP_ERROR, naming the field and its type; the run ends with one FINISH (failed), its
  run row and its checkpoint say failed, and it cannot be resumed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import collect, pairs, run_with_watchdog
from justpipe import EventType, Pipe, Stop, Suspend
from justpipe.durable import InMemoryCheckpointStore, RunFinishedError
from justpipe.storage.sqlite import SQLiteBackend
from justpipe.types import Event, PipelineEndData, PipelineTerminalStatus


def stopping_map(durable: Any) -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="stopmap", durable=durable)

    @pipe.map(each="work", to="after", max_concurrency=1)
    async def items(s: dict[str, Any]) -> list[int]:
        return [0, 1, 2]

    @pipe.step
    async def work(s: dict[str, Any], item: int) -> Any:
        return Stop

    @pipe.step
    async def after(s: dict[str, Any]) -> None:
        pass

    return pipe


def unpaired_starts(events: list[Event]) -> list[str]:
    """STEP_STARTs (by invocation) that got no STEP_END / STEP_ERROR / CANCELLED."""
    open_ = {e.invocation_id: e.stage for e in events if e.type is EventType.STEP_START}
    for e in events:
        if e.type in (EventType.STEP_END, EventType.STEP_ERROR, EventType.CANCELLED):
            open_.pop(e.invocation_id, None)
    return sorted(open_.values())


@pytest.mark.parametrize("queue_size", [1, 0, None])
async def test_regression_durable_stop_in_a_map_worker_with_queue_size_1_keeps_every_event(
    queue_size: int | None,
) -> None:
    plain = await collect(stopping_map(None), queue_size=queue_size)
    durable = await collect(stopping_map(InMemoryCheckpointStore()), queue_size=queue_size)
    assert unpaired_starts(plain) == [] and unpaired_starts(durable) == []
    assert [e.type for e in durable].count(EventType.MAP_COMPLETE) == 1
    assert pairs(durable) == pairs(plain)
    payload = durable[-1].payload
    assert isinstance(payload, PipelineEndData)
    assert payload.status is PipelineTerminalStatus.SUCCESS


def tagging(durable: Any, *, every: int | None = None) -> Pipe[dict[str, Any], None]:
    from justpipe.durable import Durable

    if every is not None:
        durable = Durable(store=durable, checkpoint_every=every)
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="tagging", durable=durable)

    @pipe.step(to="tag")
    async def prepare(s: dict[str, Any]) -> None:
        s["tags"] = ["a"]

    @pipe.step(to="publish")
    async def tag(s: dict[str, Any]) -> None:
        s["tags"] = {"a", "b"}  # a set: JSON has none

    @pipe.step
    async def publish(s: dict[str, Any]) -> None:
        s["published"] = True

    return pipe


def the_failure(events: list[Event], stage: str) -> Event:
    (error,) = [e for e in events if e.type is EventType.STEP_ERROR]
    assert error.stage == stage
    assert "state['tags']" in str(error.payload) and "builtins.set" in str(error.payload)
    finishes = [e for e in events if e.type is EventType.FINISH]
    assert finishes == [events[-1]]
    payload = events[-1].payload
    assert isinstance(payload, PipelineEndData)
    assert payload.status is PipelineTerminalStatus.FAILED and payload.failed_step == stage
    return error


@pytest.mark.parametrize("every", [1, 2])
async def test_regression_a_state_that_cannot_be_saved_fails_the_step_that_made_it(
    every: int,
) -> None:
    store = InMemoryCheckpointStore()
    events = await collect(tagging(store, every=every))
    the_failure(events, "tag")
    # nothing the failed decision scheduled ran; the step's own events were published
    assert [e.stage for e in events if e.type is EventType.STEP_START] == ["prepare", "tag"]
    run_id = events[-1].run_id
    saved = store.load(run_id)
    assert saved is not None and saved.status == "finished"
    data = json.loads(saved.data)
    assert data["end"] == "failed" and "state['tags']" in data["note"]
    # the last state that could be saved: after `prepare` (every completion saved) or as
    # the run began (every second one: `tag`'s completion was the first to save)
    assert data["state"] == ({"tags": ["a"]} if every == 1 else {})
    with pytest.raises(RunFinishedError):
        await run_with_watchdog(tagging(store, every=every).resume(run_id).__anext__())


async def test_in_the_cheap_mode_the_run_fails_when_it_ends() -> None:
    """`checkpoint_every=0` saves when the run ends: the last step to complete is named."""
    store = InMemoryCheckpointStore()
    events = await collect(tagging(store, every=0))
    the_failure(events, "publish")
    assert [e.stage for e in events if e.type is EventType.STEP_END] == [
        "prepare",
        "tag",
        "publish",
    ]
    saved = store.load(events[-1].run_id)
    assert saved is not None and saved.status == "finished"
    assert json.loads(saved.data)["state"] == {}, "the state as the segment started"


async def test_a_suspended_run_whose_state_cannot_be_saved_fails_instead(tmp_path: Path) -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="bad-suspend", durable=store)

    @pipe.step(to="later")
    async def ask(s: dict[str, Any]) -> Suspend:
        s["when"] = object()
        return Suspend("a human")

    @pipe.step
    async def later(s: dict[str, Any]) -> None:
        pass

    events = await collect(pipe)
    (error,) = [e for e in events if e.type is EventType.STEP_ERROR]
    assert error.stage == "ask" and "state['when']" in str(error.payload)
    payload = events[-1].payload
    assert isinstance(payload, PipelineEndData)
    assert payload.status is PipelineTerminalStatus.FAILED
    saved = store.load(events[-1].run_id)
    assert saved is not None and saved.status == "finished"


async def test_the_run_row_of_a_run_whose_state_cannot_be_saved_says_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    events = await collect(tagging(True))
    the_failure(events, "tag")
    (db,) = tmp_path.glob("*/runs.db")
    with SQLiteBackend(db) as backend:
        row = backend.get_run(events[-1].run_id)
    assert row is not None and row.status is PipelineTerminalStatus.FAILED


async def test_a_sub_pipeline_whose_state_cannot_be_saved_fails_its_own_step() -> None:
    child: Pipe[dict[str, Any], None] = Pipe(dict, name="child")

    @child.step
    async def spoil(s: dict[str, Any]) -> None:
        s["tags"] = {"x"}

    store = InMemoryCheckpointStore()
    parent: Pipe[dict[str, Any], None] = Pipe(dict, name="parent", durable=store)

    @parent.sub(pipeline=child, to="after")
    async def inner(s: dict[str, Any]) -> dict[str, Any]:
        return s  # the child shares the parent's state

    @parent.step
    async def after(s: dict[str, Any]) -> None:
        pass

    events = await collect(parent)
    errors = [e for e in events if e.type is EventType.STEP_ERROR]
    assert [e.stage for e in errors] == ["inner:spoil"]
    assert "state['tags']" in str(errors[0].payload)
    assert [e for e in events if e.type is EventType.FINISH and e.stage == "system"] == [
        events[-1]
    ]
    payload = events[-1].payload
    assert isinstance(payload, PipelineEndData)
    assert payload.status is PipelineTerminalStatus.FAILED
    saved = store.load(events[-1].run_id)
    assert saved is not None and saved.status == "finished"
