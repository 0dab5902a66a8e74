"""Thousands of consecutive runs in one process leak nothing (issue 6.4).

One Pipe is run again and again: steps, a bounded map with a handled failure and a
Retry(), a switch, a sub-pipeline that streams tokens, a join, an observer, a run
timeout that never fires, and every 50th run a consumer that leaves early with
``aclose()``. After a warm-up, neither the number of live tasks nor the resident memory
may grow (< 15 MB), and the loop's exception handler must never be called (no "Task
exception was never retrieved", no un-awaited close).

Measured per backend on the 2-core CI-class machine: 1.3-1.8 ms a run, so the 10,000
runs take 8-18 s and stay in the default run; ``slow`` adds a 50,000-run variant (39-46 s).
"""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from justpipe import Event, EventType, Pipe, Retry
from justpipe.observability import Observer
from justpipe.observability.observer import ObserverMeta
from justpipe.types import PipelineTerminalStatus

WARM_UP = 300
RSS_BOUND_MB = 15.0
WATCHDOG_S = 600.0
CLOSE_EVERY = 50


class Tally(Observer):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self.calls["start"] += 1

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        self.calls["event"] += 1

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        self.calls["end"] += 1

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        self.calls["error"] += 1


def mixed_pipe(tally: Tally) -> Pipe[Any, Any]:
    child: Pipe[Any, Any] = Pipe(name="soak-child")

    @child.step(to="talk")
    async def prepare(state: Counter[str]) -> None:
        state["child"] += 1

    @child.step()
    async def talk() -> Any:
        for i in range(3):
            yield i

    pipe: Pipe[Any, Any] = Pipe(name="soak")
    pipe.add_observer(tally)

    @pipe.step(to=["fan_out", "route"])
    async def begin(state: Counter[str]) -> None:
        state["runs"] += 1

    def recover(error: Exception, state: Counter[str]) -> Any:
        state["recovered"] += 1
        return Retry() if state["recovered"] % 2 else None

    @pipe.map(each="work", to="join", max_concurrency=2)
    async def fan_out() -> list[int]:
        return [1, 2, 3]

    @pipe.step(on_error=recover)
    async def work(item: int, state: Counter[str]) -> None:
        if item == 2:
            raise ValueError("handled")
        await asyncio.sleep(0)

    @pipe.switch(to={"sub": "call_child", "other": "unused"})
    async def route() -> str:
        return "sub"

    @pipe.sub(pipeline=child, to="join")
    async def call_child(state: Counter[str]) -> Counter[str]:
        return state

    @pipe.step()
    async def unused() -> None:
        return None

    @pipe.step()
    async def join(state: Counter[str]) -> None:
        state["joined"] += 1

    return pipe


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def one_run(pipe: Pipe[Any, Any], state: Counter[str], close_early: bool) -> None:
    stream = pipe.run(state, timeout=60.0)
    try:
        async for event in stream:
            if close_early and event.type is EventType.MAP_WORKER:
                return
            if event.type is EventType.FINISH and event.stage == "system":
                assert event.payload.status is PipelineTerminalStatus.SUCCESS, event.payload
    finally:
        await stream.aclose()


async def soak(runs: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    tally = Tally()
    pipe = mixed_pipe(tally)
    state: Counter[str] = Counter()
    baseline_tasks = len(asyncio.all_tasks())
    task_peak = 0
    base_rss = 0.0
    for i in range(runs):
        if i == WARM_UP:
            gc.collect()
            base_rss = rss_mb()
        await one_run(pipe, state, close_early=i % CLOSE_EVERY == CLOSE_EVERY - 1)
        task_peak = max(task_peak, len(asyncio.all_tasks()) - baseline_tasks)
    gc.collect()
    await asyncio.sleep(0)
    return {
        "state": state, "observer": tally.calls, "task_growth": task_peak,
        "rss_growth": rss_mb() - base_rss, "loop_errors": loop_errors,
    }


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
@pytest.mark.parametrize(
    "runs", [10_000, pytest.param(50_000, marks=pytest.mark.slow)], ids=["10k", "50k"]
)
def test_consecutive_runs_leak_no_tasks_memory_or_exceptions(runs: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. a coroutine never awaited
        report = asyncio.run(asyncio.wait_for(soak(runs), WATCHDOG_S))
    closed = runs // CLOSE_EVERY
    state, observer = report["state"], report["observer"]
    assert report["loop_errors"] == []
    assert report["task_growth"] == 0, "a run left tasks alive after its stream ended"
    assert report["rss_growth"] < RSS_BOUND_MB, f"RSS grew {report['rss_growth']:.1f} MB"
    assert state["runs"] == runs
    assert state["joined"] == runs - closed  # an ALL join of the map and the sub-pipeline
    assert observer["start"] == runs
    assert observer["end"] == runs  # closed runs end as CLIENT_CLOSED, without an error
    assert observer["error"] == 0
