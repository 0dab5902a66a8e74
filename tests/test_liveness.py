"""Liveness: busy work never starves a run, whatever `queue_size` is.

Steps that never suspend (a map worker doing pure computation, an async generator
that never awaits, a chain of instant steps) must still let the event loop run, so
that the run's timeout, a CancellationToken cancelled from elsewhere, `aclose()`,
the consumer and other runs on the loop make progress; and a bounded map keeps the
channel's backlog (its memory) proportional to `max_concurrency` also with an
unbounded channel (`queue_size=0`). Each test's workload would take many seconds
(or buffer hundreds of thousands of events) if the loop were starved, so a starved
run shows up as a wrong outcome or a broken bound, never as a timing assertion.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from helpers import collect, end_data, of_type, run_with_watchdog
from justpipe import EventType, Pipe
from justpipe.types import CancellationToken, PipelineTerminalStatus, Stop

QUEUE_SIZES = [pytest.param(0, id="queue_size=0"), pytest.param(None, id="default-queue")]
ITEMS = 300_000  # far more than a 0.2 s timeout lets through, even on a fast machine
BACKLOG_ITEMS = 30_000  # enough for an unbounded backlog to dwarf the bound


def _pipe(queue_size: int | None) -> Pipe[Any, Any]:
    return Pipe(name="busy") if queue_size is None else Pipe(name="busy", queue_size=queue_size)


def busy_map(
    queue_size: int | None, source: str, limit: int | None = 8, items: int = ITEMS
) -> Pipe[Any, Any]:
    """A map whose worker never suspends, over a sized list or a lazy generator."""
    pipe = _pipe(queue_size)

    @pipe.map(each="work", max_concurrency=limit)
    async def fan(s: Any) -> Any:
        if source == "list":
            return list(range(items))
        return (i for i in range(items))

    @pipe.step
    async def work(s: Any, item: int) -> None:
        s["done"] = s.get("done", 0) + 1

    return pipe


@pytest.mark.parametrize("queue_size", QUEUE_SIZES)
@pytest.mark.parametrize(
    ("source", "limit"),
    [("list", 8), ("generator", 8), ("list", None)],
    ids=["sized-pool", "lazy-pool", "unbounded"],
)
async def test_run_timeout_ends_a_map_whose_workers_never_suspend(
    queue_size: int | None, source: str, limit: int | None
) -> None:
    state: dict[str, int] = {}
    events = await collect(
        busy_map(queue_size, source, limit), state, timeout=0.2, watchdog=120
    )
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT
    assert state.get("done", 0) < ITEMS
    assert of_type(events, EventType.TIMEOUT)


@pytest.mark.parametrize("queue_size", QUEUE_SIZES)
async def test_run_timeout_ends_a_chain_of_instant_steps(queue_size: int | None) -> None:
    pipe = _pipe(queue_size)
    state = {"n": 0}

    @pipe.step
    async def again(s: Any) -> str | None:
        s["n"] += 1
        return "again" if s["n"] < ITEMS else None

    events = await collect(pipe, state, timeout=0.2, watchdog=120)
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT
    assert state["n"] < ITEMS


@pytest.mark.parametrize("queue_size", QUEUE_SIZES)
async def test_run_timeout_ends_a_token_stream_that_never_suspends(
    queue_size: int | None,
) -> None:
    pipe = _pipe(queue_size)

    @pipe.step
    async def talk(s: Any) -> AsyncIterator[int]:
        for i in range(ITEMS * 10):
            yield i

    events = await collect(pipe, timeout=0.2, watchdog=120)
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT
    assert len(of_type(events, EventType.TOKEN)) < ITEMS * 10


@pytest.mark.parametrize("queue_size", QUEUE_SIZES)
async def test_a_token_cancelled_by_another_task_stops_busy_workers(
    queue_size: int | None,
) -> None:
    pipe = _pipe(queue_size)
    state = {"done": 0}

    @pipe.map(each="work", max_concurrency=8)
    async def fan(s: Any) -> Iterator[int]:
        return iter(range(ITEMS))

    @pipe.step
    async def work(s: Any, item: int, token: CancellationToken) -> None:
        await token.checkpoint()
        s["done"] += 1

    async def cancel_soon() -> None:
        await asyncio.sleep(0.05)
        pipe.cancellation_token.cancel("enough")

    canceller = asyncio.get_running_loop().create_task(cancel_soon())
    events = await collect(pipe, state, watchdog=120)
    await canceller
    assert end_data(events).status is PipelineTerminalStatus.CANCELLED
    assert state["done"] < ITEMS


@pytest.mark.parametrize("queue_size", QUEUE_SIZES)
async def test_the_consumer_can_close_a_run_of_busy_workers(queue_size: int | None) -> None:
    pipe = busy_map(queue_size, "generator")
    state: dict[str, int] = {}

    async def first_events() -> int:
        seen = 0
        stream = pipe.run(state)
        async for _ in stream:
            seen += 1
            if seen == 100:
                break
        await stream.aclose()
        return seen

    assert await run_with_watchdog(first_events(), 120) == 100
    assert state.get("done", 0) < ITEMS


@pytest.mark.parametrize("queue_size", QUEUE_SIZES)
async def test_another_task_runs_while_busy_workers_run(queue_size: int | None) -> None:
    """A worker stops the run once a task outside it has had a turn."""
    pipe = _pipe(queue_size)
    ticked = asyncio.Event()
    state = {"done": 0}

    @pipe.map(each="work", max_concurrency=8)
    async def fan(s: Any) -> Iterator[int]:
        return itertools.islice(itertools.count(), ITEMS)

    @pipe.step
    async def work(s: Any, item: int) -> Any:
        s["done"] += 1
        return Stop if ticked.is_set() else None

    async def tick() -> None:
        await asyncio.sleep(0)
        ticked.set()

    ticker = asyncio.get_running_loop().create_task(tick())
    await collect(pipe, state, watchdog=120)
    await ticker
    assert state["done"] < ITEMS


@pytest.mark.parametrize("source", ["list", "generator"])
async def test_a_bounded_map_keeps_the_backlog_bounded_with_an_unbounded_channel(
    source: str,
) -> None:
    """queue_size=0 and a consumer that yields after every event: the channel stays small."""
    pipe = busy_map(0, source, limit=8, items=BACKLOG_ITEMS)
    state: dict[str, int] = {}

    async def slow_consumer() -> list[Any]:
        events = []
        async for event in pipe.run(state):
            if event.type is EventType.FINISH:
                events.append(event)
            await asyncio.sleep(0)
        return events

    events = await run_with_watchdog(slow_consumer(), 300)
    data = end_data(events)
    assert data.status is PipelineTerminalStatus.SUCCESS
    assert state["done"] == BACKLOG_ITEMS
    assert data.metrics is not None
    # 8 workers: the pool waits past 16 records per worker (+64); a few records per live
    # worker may be in flight beyond that; a sized map also has its MAP_WORKER fan-out,
    # which is emitted up front by design (bounded by the items, as in 0.12)
    bound = 16 * 8 + 64 + 8 * 4
    if source == "list":
        assert data.metrics.queue.max_depth <= BACKLOG_ITEMS + bound
    else:
        assert data.metrics.queue.max_depth <= bound
