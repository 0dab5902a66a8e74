"""Runtime metrics on the FINISH payload (spec §11)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from helpers import collect, end_data, of_type
from justpipe import Event, EventType, Pipe, Suspend
from justpipe.types import RuntimeMetrics, StepTiming


def metrics_of(events: list[Event]) -> RuntimeMetrics:
    metrics = end_data(events).metrics
    assert isinstance(metrics, RuntimeMetrics)
    return metrics


def mixed_pipe() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work", to="talk")(lambda s: [1, 2, 3])

    @pipe.step
    async def work(s: Any, item: int) -> None:
        await asyncio.sleep(0)

    @pipe.step(to="broken")
    async def talk(s: Any) -> Any:
        yield "a"
        yield "b"

    pipe.step("broken")(lambda s: 1 / 0)
    return pipe


async def test_event_counts_match_the_stream_without_the_finish() -> None:
    events = await collect(mixed_pipe())
    metrics = metrics_of(events)
    expected = Counter(e.type.value for e in events[:-1])
    assert metrics.events == dict(expected)
    assert metrics.tokens == 2
    assert metrics.suspends == 0


async def test_forwarded_child_events_are_counted() -> None:
    child: Pipe[Any, Any] = Pipe()
    child.step("c")(lambda s: None)
    pipe: Pipe[Any, Any] = Pipe()
    pipe.sub("sb", pipeline=child)(lambda s: s)
    events = await collect(pipe)
    metrics = metrics_of(events)
    assert metrics.events == {"start": 2, "step_start": 2, "step_end": 2, "finish": 1}


async def test_suspends_are_counted() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(lambda s: Suspend("x"))
    assert metrics_of(await collect(pipe)).suspends == 1


async def test_step_latency_per_stage_from_start_end_pairs() -> None:
    events = await collect(mixed_pipe())
    latency = metrics_of(events).step_latency
    assert set(latency) == {"fan", "work", "talk"}, "STEP_ERROR does not count"
    assert (latency["work"].count, latency["fan"].count, latency["talk"].count) == (3, 1, 1)
    work_durations = [
        e.meta["framework"]["duration_s"]
        for e in of_type(events, EventType.STEP_END)
        if e.stage == "work" and e.meta
    ]
    timing = latency["work"]
    assert timing.total_s == pytest.approx(sum(work_durations), abs=1e-6)
    assert timing.min_s == pytest.approx(min(work_durations), abs=1e-6)
    assert timing.max_s == pytest.approx(max(work_durations), abs=1e-6)
    assert timing.min_s <= timing.avg_s <= timing.max_s


async def test_failed_only_step_has_no_latency_entry() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a")(lambda s: 1 / 0)
    assert metrics_of(await collect(pipe)).step_latency == {}


def test_step_timing_average_of_an_empty_timing() -> None:
    assert StepTiming(count=0, total_s=0.0, min_s=0.0, max_s=0.0).avg_s == 0.0


async def test_map_metrics() -> None:
    events = await collect(mixed_pipe())
    maps = metrics_of(events).maps
    assert (maps.maps_started, maps.maps_completed, maps.workers_started) == (1, 1, 3)
    assert 1 <= maps.peak_workers <= 3


async def test_peak_workers_is_one_with_max_concurrency_one() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work", max_concurrency=1)(lambda s: list(range(5)))

    @pipe.step
    async def work(s: Any, item: int) -> None:
        await asyncio.sleep(0.001)

    maps = metrics_of(await collect(pipe)).maps
    assert (maps.peak_workers, maps.workers_started) == (1, 5)


async def test_peak_workers_counts_concurrent_workers() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work", max_concurrency=3)(lambda s: list(range(9)))

    @pipe.step
    async def work(s: Any, item: int) -> None:
        await asyncio.sleep(0.002)

    assert metrics_of(await collect(pipe)).maps.peak_workers == 3


def barrier_pipe(timeout: float, delay: float) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["fast", "slow"])(lambda s: None)
    pipe.step("fast", to="join")(lambda s: None)

    @pipe.step(to="join")
    async def slow(s: Any) -> None:
        await asyncio.sleep(delay)

    pipe.step("join", barrier_timeout=timeout)(lambda s: None)
    return pipe


async def test_barrier_metrics_for_a_release() -> None:
    barriers = metrics_of(await collect(barrier_pipe(1.0, 0.01))).barriers
    join = barriers["join"]
    assert (join.waits, join.releases, join.timeouts) == (1, 1, 0)
    assert join.max_wait_s >= 0
    assert join.total_wait_s >= join.max_wait_s - 1e-9


async def test_barrier_metrics_for_a_timeout() -> None:
    barriers = metrics_of(await collect(barrier_pipe(0.03, 0.2))).barriers
    join = barriers["join"]
    assert (join.waits, join.releases, join.timeouts) == (1, 0, 1)


async def test_queue_and_task_metrics_are_consistent() -> None:
    events = await collect(mixed_pipe())
    metrics = metrics_of(events)
    assert metrics.queue.max_depth >= 1
    tasks = metrics.tasks
    assert tasks.started >= 1
    assert tasks.completed >= 1
    assert 1 <= tasks.peak_active <= tasks.started


async def test_tasks_started_counts_every_map_worker() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work", max_concurrency=1)(lambda s: [1, 2, 3])
    pipe.step("work")(lambda s, item: None)
    tasks = metrics_of(await collect(pipe)).tasks
    assert tasks.started >= tasks.completed >= 4


async def test_metrics_are_fresh_for_every_run() -> None:
    pipe = mixed_pipe()
    first = metrics_of(await collect(pipe))
    second = metrics_of(await collect(pipe))
    assert first.events == second.events
    assert first.step_latency["work"].count == second.step_latency["work"].count == 3
