"""No queue size deadlocks a run (issue 6.2, spec §21 B1/B5).

Every queue size — 1, 2, 10, the default (1000) and unbounded (0) — against maps of 0
to 5,000 items (sized and lazy, bounded and unbounded concurrency), wide ALL/ANY joins,
token streams, sub-pipelines and a slow consumer. Each run is under a watchdog: a
deadlock fails the test with the last events seen instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from justpipe import Event, EventType, Pipe
from justpipe.types import BarrierType, PipelineTerminalStatus

from .invariants import check_events

WATCHDOG_S = 30.0
QUEUE_SIZES = [1, 2, 10, None, 0]  # None: the Pipe's default (1000); 0: unbounded
QUEUE_IDS = ["q1", "q2", "q10", "qdefault", "unbounded"]
MAP_SIZES = [0, 1, 7, 5000]


async def drain(stream: AsyncIterator[Event], slow: bool = False) -> list[Event]:
    events: list[Event] = []

    async def consume() -> None:
        async for event in stream:
            events.append(event)
            if slow:
                await asyncio.sleep(0)

    try:
        await asyncio.wait_for(consume(), WATCHDOG_S)
    except TimeoutError:
        tail = ", ".join(f"{e.seq} {e.type.value} {e.stage}" for e in events[-5:])
        raise AssertionError(f"deadlock: no end after {WATCHDOG_S}s, {len(events)} events; "
                             f"last: {tail}") from None
    return events


def run(pipe: Pipe[Any, Any], state: Any, queue_size: int | None, slow: bool = False
        ) -> list[Event]:
    events = asyncio.run(drain(pipe.run(state, queue_size=queue_size), slow))
    check_events(events)
    finish = events[-1].payload
    assert finish.status is PipelineTerminalStatus.SUCCESS, finish
    return events


def count(events: list[Event], etype: EventType, stage: str | None = None) -> int:
    return sum(e.type is etype and (stage is None or e.stage == stage) for e in events)


# ---------------------------------------------------------------------- maps


def _items(kind: str, n: int) -> Any:
    if kind.startswith("list"):
        return list(range(n))
    if kind.startswith("gen"):
        return (i for i in range(n))
    return _async_items(n)


async def _async_items(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


MAP_KINDS = {  # name -> max_concurrency; the prefix says what the map function returns
    "list-unbounded": None,
    "list-bounded": 4,
    "gen-unbounded": None,  # materialised
    "gen-lazy": 4,
    "agen-unbounded": None,  # drained, then fanned out
    "agen-lazy": 4,
}


def map_pipe(kind: str, n: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name=f"map-{kind}")

    @pipe.map(each="work", to="after", max_concurrency=MAP_KINDS[kind])
    async def fan_out() -> Any:
        return _items(kind, n)

    @pipe.step()
    async def work(item: int, state: Counter[str]) -> None:
        state["done"] += 1
        if item % 3 == 0:
            await asyncio.sleep(0)

    @pipe.step()
    async def after(state: Counter[str]) -> None:
        state["after"] += 1

    return pipe


@pytest.mark.parametrize("queue_size", QUEUE_SIZES, ids=QUEUE_IDS)
@pytest.mark.parametrize("n", MAP_SIZES)
@pytest.mark.parametrize("kind", list(MAP_KINDS))
def test_maps_finish_at_every_queue_size(kind: str, n: int, queue_size: int | None) -> None:
    state: Counter[str] = Counter()
    events = run(map_pipe(kind, n), state, queue_size)
    assert state == Counter(done=n, after=1) if n else state == Counter(after=1)
    assert count(events, EventType.STEP_END, "work") == n
    assert count(events, EventType.MAP_WORKER) == n
    assert count(events, EventType.MAP_COMPLETE) == 1


@pytest.mark.parametrize("queue_size", [1, 0], ids=["q1", "unbounded"])
def test_a_slow_consumer_does_not_deadlock_a_lazy_map(queue_size: int) -> None:
    state: Counter[str] = Counter()
    run(map_pipe("gen-lazy", 2000), state, queue_size, slow=True)
    assert state["done"] == 2000


# ---------------------------------------------------------------------- joins


def join_pipe(width: int, barrier: BarrierType, timeout: float | None = None) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name=f"join-{barrier.value}")
    branches = [f"b{i}" for i in range(width)]

    async def root() -> None:
        return None

    async def branch(state: Counter[str]) -> None:
        state["branch"] += 1

    async def join(state: Counter[str]) -> None:
        state["join"] += 1

    pipe.step("root", to=branches)(root)
    for name in branches:
        pipe.step(name, to="join")(branch)
    pipe.step("join", barrier_type=barrier, barrier_timeout=timeout)(join)
    return pipe


@pytest.mark.parametrize("queue_size", QUEUE_SIZES, ids=QUEUE_IDS)
@pytest.mark.parametrize("barrier", [BarrierType.ALL, BarrierType.ANY], ids=["all", "any"])
def test_wide_joins_fire_exactly_once_at_every_queue_size(
    barrier: BarrierType, queue_size: int | None
) -> None:
    state: Counter[str] = Counter()
    events = run(join_pipe(500, barrier), state, queue_size)
    assert state == Counter(branch=500, join=1)
    assert count(events, EventType.STEP_START, "join") == 1


@pytest.mark.parametrize("queue_size", [1, 0], ids=["q1", "unbounded"])
def test_a_wide_all_join_with_a_barrier_timeout_releases_at_every_queue_size(
    queue_size: int
) -> None:
    state: Counter[str] = Counter()
    events = run(join_pipe(300, BarrierType.ALL, timeout=WATCHDOG_S), state, queue_size)
    assert state == Counter(branch=300, join=1)
    assert count(events, EventType.BARRIER_RELEASE) == 1


# ---------------------------------------------------------------------- token streams


def streams_pipe(streamers: int, tokens: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="streams")
    names = [f"s{i}" for i in range(streamers)]

    def streamer(name: str) -> Callable[..., Any]:
        async def stream() -> AsyncIterator[str]:
            for i in range(tokens):
                yield f"{name}:{i}"

        return stream

    async def root() -> None:
        return None

    async def join(state: Counter[str]) -> None:
        state["join"] += 1

    pipe.step("root", to=names)(root)
    for name in names:
        pipe.step(name, to="join")(streamer(name))
    pipe.step("join")(join)
    return pipe


@pytest.mark.parametrize("queue_size", QUEUE_SIZES, ids=QUEUE_IDS)
@pytest.mark.parametrize(("streamers", "tokens"), [(1, 5000), (10, 300)])
def test_token_streams_arrive_whole_and_in_order(
    streamers: int, tokens: int, queue_size: int | None
) -> None:
    state: Counter[str] = Counter()
    events = run(streams_pipe(streamers, tokens), state, queue_size)
    assert state["join"] == 1
    for i in range(streamers):
        got = [e.payload for e in events if e.type is EventType.TOKEN and e.stage == f"s{i}"]
        assert got == [f"s{i}:{k}" for k in range(tokens)]


# ---------------------------------------------------------------------- sub-pipelines


def child_pipe(tokens: int, items: int) -> Pipe[Any, Any]:
    child: Pipe[Any, Any] = Pipe(name="child", queue_size=1)

    @child.step(to="fan_out")
    async def talk() -> AsyncIterator[int]:
        for i in range(tokens):
            yield i

    @child.map(each="work", max_concurrency=3)
    async def fan_out() -> Any:
        return (i for i in range(items))

    @child.step()
    async def work(item: int) -> None:
        return None

    return child


@pytest.mark.parametrize("queue_size", QUEUE_SIZES, ids=QUEUE_IDS)
def test_nested_sub_pipelines_with_tiny_queues_forward_everything(queue_size: int | None) -> None:
    inner = child_pipe(200, 200)
    middle: Pipe[Any, Any] = Pipe(name="middle", queue_size=2)

    @middle.sub(pipeline=inner)
    async def call_inner(state: Any) -> Any:
        return state

    outer: Pipe[Any, Any] = Pipe(name="outer")

    @outer.sub(pipeline=middle, to="done")
    async def call_middle(state: Any) -> Any:
        return state

    @outer.step()
    async def done() -> None:
        return None

    events = run(outer, None, queue_size)
    tokens = [e.payload for e in events if e.type is EventType.TOKEN]
    assert tokens == list(range(200))
    assert count(events, EventType.STEP_END, "call_middle:call_inner:work") == 200
    assert count(events, EventType.STEP_START, "done") == 1
