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
from justpipe.durable import InMemoryCheckpointStore, SuspendedEndData, resume_value

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
        assert again and [e for e in first if e.type is EventType.MAP_COMPLETE] == []
        assert [e.type for e in second].count(EventType.MAP_COMPLETE) == 1
    data = json.loads(store.load(run_id).data)  # type: ignore[union-attr]
    assert data["status"] == "finished" and data["state"]["total"] == 45


async def test_a_lazy_source_is_read_once_and_its_map_resumes_its_remaining_items() -> None:
    store = InMemoryCheckpointStore()
    pipe, ran = suspending_map(store, 2, lazy=True)
    first = await collect(pipe, {})
    (start,) = [e for e in first if e.type is EventType.MAP_START]
    assert start.payload["item_count"] == 10, "read whole in a durable run"
    (entry,) = json.loads(store.load(first[-1].run_id).data)["frontier"]  # type: ignore[union-attr]
    assert entry["map"]["items"] == list(range(10))
    ran.clear()
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="ok")))
    assert "numbers" not in ran and ran[-1] == "after"


async def test_a_lazy_map_of_a_plain_run_stays_lazy() -> None:
    pipe, _ = suspending_map(None, 2, lazy=True)
    assert pipe.durable is None
    events = await collect(pipe, {})
    (start,) = [e for e in events if e.type is EventType.MAP_START]
    assert start.payload["item_count"] is None
