"""Maps in durable runs: a worker that suspends, lazy sources, what a resumed map runs.

SIGKILL in the middle of a sized or lazy map is in tests/test_durable_process.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import EventType, Pipe, Suspend
from justpipe.durable import (
    Checkpoint,
    InMemoryCheckpointStore,
    SuspendedEndData,
    done_indices,
    resume_value,
)

pytestmark = pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")


def suspending_map(
    store: InMemoryCheckpointStore | None, limit: int | None, *, lazy: bool = False
) -> tuple[Pipe[dict[str, Any], None], list[Any]]:
    """numbers (10 items) -> work (item 3 suspends until resumed) ; then after."""
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name=f"map{limit}{lazy}", durable=store)
    ran: list[Any] = []

    if lazy:

        @pipe.map(each="work", to="after", max_concurrency=limit)
        async def numbers(s: dict[str, Any]) -> Any:
            ran.append("numbers")
            for i in range(10):
                yield i

    else:

        @pipe.map(each="work", to="after", max_concurrency=limit)
        async def numbers(s: dict[str, Any]) -> list[int]:
            ran.append("numbers")
            return list(range(10))

    @pipe.step
    async def work(s: dict[str, Any], item: int) -> Any:
        ran.append(item)
        s[str(item)] = item
        await asyncio.sleep(0.001)
        if item == 3 and resume_value() is None:
            return Suspend("item 3 needs a look")
        return None

    @pipe.step
    async def after(s: dict[str, Any]) -> None:
        ran.append("after")
        s["total"] = sum(v for k, v in s.items() if k.isdigit())

    return pipe, ran


@pytest.mark.parametrize("limit", [None, 2])
async def test_a_map_worker_that_suspends_is_resumed_with_the_rest_of_its_map(
    limit: int | None,
) -> None:
    store = InMemoryCheckpointStore()
    pipe, ran = suspending_map(store, limit)
    first = await collect(pipe, {})
    payload = end_data(first)
    assert isinstance(payload, SuspendedEndData)
    assert payload.suspended_steps == ("work",) and payload.reasons == ("item 3 needs a look",)
    assert "after" not in ran
    run_id = first[-1].run_id
    started = [i for i in ran if isinstance(i, int)]
    ran.clear()

    second = await run_with_watchdog(drain(pipe.resume(run_id, value="seen")))
    assert type(end_data(second)) is not SuspendedEndData
    # every item ran exactly once over both segments (item 3's suspend is its completion),
    # the map's source once, and its successor once, after the map completed
    again = [i for i in ran if isinstance(i, int)]
    assert sorted(started + again) == list(range(10))
    assert "numbers" not in ran and ran[-1] == "after" and ran.count("after") == 1
    if limit is not None:  # the pool stopped handing out items: the rest run on resume
        assert again
        # the first segment's stream is a plain run's (MAP_COMPLETE, the map's STEP_END),
        # the resumed map is a new attempt of the map that completes again
        for segment in (first, second):
            assert [e.type for e in segment if e.stage == "numbers"][-2:] == [
                EventType.MAP_COMPLETE,
                EventType.STEP_END,
            ]
    data = json.loads(store.load(run_id).data)  # type: ignore[union-attr]
    assert data["status"] == "finished" and data["state"]["total"] == 45


async def test_a_lazy_source_is_read_once_and_its_map_resumes_its_remaining_items() -> None:
    store = InMemoryCheckpointStore()
    pipe, ran = suspending_map(store, 2, lazy=True)
    first = await collect(pipe, {})
    (start,) = [e for e in first if e.type is EventType.MAP_START]
    # read whole (the checkpoint keeps the items), its events a lazy map's, as in a plain run
    assert start.payload["item_count"] is None
    workers = [e.payload["total"] for e in first if e.type is EventType.MAP_WORKER]
    assert workers and set(workers) == {None}
    saved = store.load(first[-1].run_id)
    assert saved is not None and saved.parts is not None
    (entry,) = json.loads(saved.data)["frontier"]
    assert json.loads(saved.parts[entry["map"]["items_part"]]) == list(range(10))
    ran.clear()
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="ok")))
    assert "numbers" not in ran and ran[-1] == "after"


async def test_a_lazy_map_of_a_plain_run_stays_lazy() -> None:
    pipe, _ = suspending_map(None, 2, lazy=True)
    assert pipe.durable is None
    events = await collect(pipe, {})
    (start,) = [e for e in events if e.type is EventType.MAP_START]
    assert start.payload["item_count"] is None


class RecordingStore(InMemoryCheckpointStore):
    """Keeps every saved checkpoint (document size, parts) for the tests to look at."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[Checkpoint] = []

    def save(self, checkpoint: Checkpoint, owner: str) -> None:
        super().save(checkpoint, owner)
        self.saved.append(checkpoint)


class DocumentOnlyStore(RecordingStore):
    """A store of the first protocol: everything inside the document."""

    keeps_attempts = False
    keeps_parts = False


def big_map(store: Any, items: int) -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name=f"big{items}", durable=store)

    @pipe.map(each="work", max_concurrency=8)
    async def numbers(s: dict[str, Any]) -> list[str]:
        return [f"item-{i:05d}-" + "x" * 40 for i in range(items)]

    @pipe.step
    async def work(s: dict[str, Any], item: str) -> None:
        await asyncio.sleep(0)

    return pipe


async def test_a_maps_items_are_saved_once_and_each_checkpoint_stays_small() -> None:
    store = RecordingStore()
    await collect(big_map(store, 2000), {})
    with_parts = [c for c in store.saved if c.parts]
    added = [key for c in with_parts for key, text in (c.parts or {}).items() if text]
    dropped = [key for c in with_parts for key, text in (c.parts or {}).items() if text is None]
    assert len(added) == 1 and dropped == added, "written once, dropped when the map closed"
    # ~2,000 worker completions, each a checkpoint; none re-writes the ~100 KB of items
    assert len(store.saved) > 2000
    assert max(len(c.data) for c in store.saved) < 5_000
    final = store.load(store.saved[-1].run_id)
    assert final is not None and final.parts == {}


async def test_a_store_without_parts_gets_the_items_in_the_document() -> None:
    store = DocumentOnlyStore()
    pipe, ran = suspending_map(store, 2)  # type: ignore[arg-type]
    first = await collect(pipe, {})
    saved = store.load(first[-1].run_id)
    assert saved is not None
    (entry,) = json.loads(saved.data)["frontier"]
    assert entry["map"]["items"] == list(range(10)) and "items_part" not in entry["map"]
    assert all(c.parts is None and c.attempts is None for c in store.saved)
    ran.clear()
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="ok")))
    assert "numbers" not in ran and ran[-1] == "after"


def test_map_progress_keeps_a_low_watermark_and_the_few_done_above_it() -> None:
    from justpipe.durable.checkpointer import _MapProgress

    progress = _MapProgress()
    for index in [0, 2, 3, 1, 7, 4]:
        progress.add(index)
    assert (progress.below, progress.rest) == (5, {7})
    assert progress.saved() == {"below": 5, "done": [7]}
    assert done_indices(progress.saved()) == {0, 1, 2, 3, 4, 7} == progress.indices()
    again = _MapProgress.restore(progress.saved())
    assert (again.below, again.rest) == (5, {7})
    assert done_indices({"done": [3, 1]}) == {1, 3}  # a checkpoint without `below`
