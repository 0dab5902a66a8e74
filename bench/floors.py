"""Raw-asyncio floors: hand-written programs doing the same work as each pipeline.

A floor is what a careful programmer would write with asyncio alone to get the
same observable behaviour the pipeline gives its consumer, and nothing more:

* every step (and every map item) runs as its own task, in one TaskGroup per run;
* each step puts a start and an end notification on the run's bounded
  ``asyncio.Queue`` (``maxsize`` = justpipe's default ``queue_size``, so the
  producers feel the same backpressure), and so do the run itself (start /
  finish), a map (map start, one per item dispatched, map complete) and a
  streaming step (one notification per token);
* the consumer reads every notification one by one until the run's finish
  notification, exactly as ``async for event in pipe.run(...)`` does;
* successors start only after their predecessor has finished (a join only
  after all of its parents).

So each floor delivers the same number of notifications as the pipeline
delivers events (the benchmarks check both counts). A notification is a small
slotted object (kind, stage, payload, timestamp) built once: the floor pays for
one object, one ``time.time()`` and one queue round trip per event, as the
pipeline must at least. What the floor does NOT do is the framework's own
bookkeeping: run and invocation ids, lineage, attempts, metrics, observers,
event hooks, error handling, validation. The ratio pipeline/floor is the price
of that bookkeeping plus any inefficiency; the targets say how much of it we
accept.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

from workloads import (
    QUEUE_SIZE,
    RUN_STEPS,
    Workload,
    events_fanout_map,
    events_long_chain,
    events_many_small_runs,
    events_sub_pipeline_fanout,
    events_token_stream,
    events_wide_dag,
)

__all__ = ["FLOOR_QUEUE_SIZE", "FloorWorkloads", "Note"]

# The floors' queue bound: justpipe's default queue_size, so both apply the same
# backpressure. JUSTPIPE_BENCH_FLOOR_QUEUE=0 gives an unbounded floor, to see what
# the bound itself costs (asyncio.Queue allocates a future per blocked put).
FLOOR_QUEUE_SIZE = int(os.environ.get("JUSTPIPE_BENCH_FLOOR_QUEUE", QUEUE_SIZE))

# notification kinds (the event types the pipeline would emit)
START, FINISH, STEP_START, STEP_END, TOKEN = "start", "finish", "step_start", "step_end", "token"
MAP_START, MAP_WORKER, MAP_COMPLETE = "map_start", "map_worker", "map_complete"

_time = time.time


class Note:
    """One notification for the consumer: the floor's equivalent of an Event."""

    __slots__ = ("kind", "payload", "stage", "timestamp")

    def __init__(self, kind: str, stage: str, payload: Any = None) -> None:
        self.kind = kind
        self.stage = stage
        self.payload = payload
        self.timestamp = _time()


Queue = asyncio.Queue[Note]


async def noop() -> None:
    """The trivial step body (the pipelines' steps are the same empty coroutine)."""


async def worker(item: int) -> None:
    """The trivial map worker."""


async def consume(queue: Queue) -> int:
    """The consumer: read notifications one by one until the run's finish; count them."""
    count = 0
    get = queue.get
    while True:
        note = await get()
        count += 1
        if note.kind is FINISH and note.stage == "system":
            return count


async def run_step(queue: Queue, name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A step as the pipeline runs it: start notification, the body, end notification."""
    await queue.put(Note(STEP_START, name))
    await body()
    await queue.put(Note(STEP_END, name))


# ---------------------------------------------------------------------- fanout_map


async def fanout_map(n: int, max_concurrency: int | None) -> int:
    """One map over n items, one task per item.

    The map step is a task: start notification, builds the item list, a map-start
    notification, one notification per item dispatched (MAP_WORKER), then one
    task per item; with ``max_concurrency`` each item task first acquires a
    semaphore (a task-per-item loop with a semaphore). Each item task runs the
    worker between its start and end notifications; the last one to finish
    sends map-complete, the map's end and the run's finish.
    """
    queue: Queue = asyncio.Queue(FLOOR_QUEUE_SIZE)
    put = queue.put
    remaining = n
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def finish_map() -> None:
        await put(Note(MAP_COMPLETE, "fan", n))
        await put(Note(STEP_END, "fan"))
        await put(Note(FINISH, "system"))

    async def item_task(index: int, item: int) -> None:
        nonlocal remaining
        if sem is None:
            await run_item(item)
        else:
            async with sem:
                await run_item(item)
        remaining -= 1
        if remaining == 0:
            await finish_map()

    async def run_item(item: int) -> None:
        await put(Note(STEP_START, "worker"))
        await worker(item)
        await put(Note(STEP_END, "worker"))

    async with asyncio.TaskGroup() as tg:

        async def map_step() -> None:
            await put(Note(STEP_START, "fan"))
            items = list(range(n))
            await put(Note(MAP_START, "fan", n))
            for i in range(n):
                await put(Note(MAP_WORKER, "worker", i))
            for i, item in enumerate(items):
                tg.create_task(item_task(i, item))

        queue.put_nowait(Note(START, "system"))
        tg.create_task(map_step())
        return await consume(queue)


async def lazy_map(n: int, max_concurrency: int) -> int:
    """A map over a generator of n items with at most k running: a fixed pool of k tasks.

    The memory-conscious hand-written version (a task per item would hold n
    tasks): k tasks pull items from the shared generator; before running an
    item a task sends its dispatch notification, then the item's start and end.
    The last task to find the generator empty sends map-complete, the map's end
    and the run's finish.
    """
    queue: Queue = asyncio.Queue(FLOOR_QUEUE_SIZE)
    put = queue.put
    live = max_concurrency

    async def pool_task(source: Iterator[tuple[int, int]]) -> None:
        nonlocal live
        for index, item in source:
            await put(Note(MAP_WORKER, "worker", index))
            await put(Note(STEP_START, "worker"))
            await worker(item)
            await put(Note(STEP_END, "worker"))
        live -= 1
        if live == 0:
            await put(Note(MAP_COMPLETE, "fan", n))
            await put(Note(STEP_END, "fan"))
            await put(Note(FINISH, "system"))

    async with asyncio.TaskGroup() as tg:

        async def map_step() -> None:
            await put(Note(STEP_START, "fan"))
            source = enumerate(i for i in range(n))
            await put(Note(MAP_START, "fan", None))
            for _ in range(max_concurrency):
                tg.create_task(pool_task(source))

        queue.put_nowait(Note(START, "system"))
        tg.create_task(map_step())
        return await consume(queue)


# ---------------------------------------------------------------------- graphs


async def wide_dag(width: int) -> int:
    """root -> width parallel steps -> one join that waits for all of them.

    Each step is a task. The root spawns the branches after its end
    notification; each branch counts itself done after its end notification and
    the last one spawns the join (an ALL barrier as a counter); the join's end
    is followed by the run's finish.
    """
    queue: Queue = asyncio.Queue(FLOOR_QUEUE_SIZE)
    remaining = width

    async with asyncio.TaskGroup() as tg:

        async def join() -> None:
            await run_step(queue, "join", noop)
            await queue.put(Note(FINISH, "system"))

        async def branch(name: str) -> None:
            nonlocal remaining
            await run_step(queue, name, noop)
            remaining -= 1
            if remaining == 0:
                tg.create_task(join())

        async def root() -> None:
            await run_step(queue, "root", noop)
            for i in range(width):
                tg.create_task(branch(f"p{i}"))

        queue.put_nowait(Note(START, "system"))
        tg.create_task(root())
        return await consume(queue)


async def long_chain(length: int) -> int:
    """length steps in a line; each is a task spawned by its predecessor after its end."""
    queue: Queue = asyncio.Queue(FLOOR_QUEUE_SIZE)
    names = [f"s{i}" for i in range(length)]

    async with asyncio.TaskGroup() as tg:

        async def step(i: int) -> None:
            await run_step(queue, names[i], noop)
            if i + 1 < length:
                tg.create_task(step(i + 1))
            else:
                await queue.put(Note(FINISH, "system"))

        queue.put_nowait(Note(START, "system"))
        tg.create_task(step(0))
        return await consume(queue)


# ---------------------------------------------------------------------- streaming


async def token_stream(tokens: int) -> int:
    """One step task draining an async generator; each token is its own notification."""
    queue: Queue = asyncio.Queue(FLOOR_QUEUE_SIZE)
    put = queue.put

    async def generate() -> AsyncIterator[int]:
        for i in range(tokens):
            yield i

    async def stream_step() -> None:
        await put(Note(STEP_START, "stream"))
        async for token in generate():
            await put(Note(TOKEN, "stream", token))
        await put(Note(STEP_END, "stream"))
        await put(Note(FINISH, "system"))

    async with asyncio.TaskGroup() as tg:
        queue.put_nowait(Note(START, "system"))
        tg.create_task(stream_step())
        return await consume(queue)


# ---------------------------------------------------------------------- runs


async def many_small_runs(runs: int) -> int:
    """runs x a complete 3-step chain run (own queue, own TaskGroup, own consumer)."""
    total = 0
    for _ in range(runs):
        total += await long_chain(RUN_STEPS)
    return total


async def child_run(queue: Queue, prefix: str) -> None:
    """A 2-step child run whose notifications are forwarded, as they arrive, to `queue`.

    The child has its own queue, TaskGroup and consumer (it is a complete run);
    each child notification is re-issued to the parent queue as a new one with
    the stage prefixed by the sub step's name, as the pipeline forwards child
    events.
    """
    child: Queue = asyncio.Queue(FLOOR_QUEUE_SIZE)
    async with asyncio.TaskGroup() as tg:

        async def c1() -> None:
            await run_step(child, "c0", noop)
            tg.create_task(c2())

        async def c2() -> None:
            await run_step(child, "c1", noop)
            await child.put(Note(FINISH, "system"))

        child.put_nowait(Note(START, "system"))
        tg.create_task(c1())
        while True:
            note = await child.get()
            await queue.put(Note(note.kind, prefix + note.stage, note.payload))
            if note.kind is FINISH:
                break


async def sub_pipeline_fanout(n: int) -> int:
    """A map over n items whose workers each run a 2-step child run (see `child_run`)."""
    queue: Queue = asyncio.Queue(FLOOR_QUEUE_SIZE)
    put = queue.put
    remaining = n

    async def item_task(item: int) -> None:
        nonlocal remaining
        await put(Note(STEP_START, "run_child"))
        await child_run(queue, "run_child:")
        await put(Note(STEP_END, "run_child"))
        remaining -= 1
        if remaining == 0:
            await put(Note(MAP_COMPLETE, "fan", n))
            await put(Note(STEP_END, "fan"))
            await put(Note(FINISH, "system"))

    async with asyncio.TaskGroup() as tg:

        async def map_step() -> None:
            await put(Note(STEP_START, "fan"))
            items = list(range(n))
            await put(Note(MAP_START, "fan", n))
            for i in range(n):
                await put(Note(MAP_WORKER, "run_child", i))
            for item in items:
                tg.create_task(item_task(item))

        queue.put_nowait(Note(START, "system"))
        tg.create_task(map_step())
        return await consume(queue)


class FloorWorkloads:
    """The floors as workloads, sized and counted like the pipelines."""

    def fanout_map(self, n: int, max_concurrency: int | None) -> Workload:
        return Workload(lambda: fanout_map(n, max_concurrency), events_fanout_map(n), n)

    def lazy_map(self, n: int, max_concurrency: int) -> Workload:
        return Workload(lambda: lazy_map(n, max_concurrency), events_fanout_map(n), n)

    def wide_dag(self, width: int) -> Workload:
        return Workload(lambda: wide_dag(width), events_wide_dag(width), width + 2)

    def long_chain(self, length: int) -> Workload:
        return Workload(lambda: long_chain(length), events_long_chain(length), length)

    def token_stream(self, tokens: int) -> Workload:
        return Workload(lambda: token_stream(tokens), events_token_stream(tokens), tokens)

    def many_small_runs(self, runs: int) -> Workload:
        return Workload(lambda: many_small_runs(runs), events_many_small_runs(runs), runs)

    def sub_pipeline_fanout(self, n: int) -> Workload:
        return Workload(lambda: sub_pipeline_fanout(n), events_sub_pipeline_fanout(n), n)
