"""The scenarios as justpipe pipelines (run on whichever `justpipe._core` backend is active).

Every pipeline is built once per benchmark, outside the timed region, and its
consumer does what the floor's consumer does: read each event and count it.
The steps themselves are trivial coroutines, so what is timed is the
orchestration: tasks, events, barriers, the control channel, the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from workloads import (
    RUN_STEPS,
    Workload,
    events_fanout_map,
    events_long_chain,
    events_many_small_runs,
    events_sub_pipeline_fanout,
    events_token_stream,
    events_wide_dag,
)

from justpipe import Pipe

__all__ = ["PipelineWorkloads", "drain"]

StepFn = Callable[[], Coroutine[Any, Any, None]]


async def drain(pipe: Pipe[Any, Any]) -> int:
    """Consume one run's events; return how many there were."""
    count = 0
    async for _event in pipe.run(None):
        count += 1
    return count


def _noop_step() -> StepFn:
    """A fresh trivial coroutine function (each registered step gets its own object)."""

    async def step() -> None:
        return None

    return step


def _chain(pipe: Pipe[Any, Any], length: int, prefix: str = "s") -> None:
    for i in range(length):
        nxt = f"{prefix}{i + 1}" if i + 1 < length else None
        pipe.step(f"{prefix}{i}", to=nxt)(_noop_step())


def _fanout_pipe(n: int, max_concurrency: int | None) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="fanout_map")

    @pipe.map(each="worker", max_concurrency=max_concurrency)
    async def fan() -> list[int]:
        return list(range(n))

    @pipe.step
    async def worker(item: int) -> None:
        return None

    return pipe


def _lazy_map_pipe(n: int, max_concurrency: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="lazy_map")

    @pipe.map(each="worker", max_concurrency=max_concurrency)
    async def fan() -> Any:
        return (i for i in range(n))

    @pipe.step
    async def worker(item: int) -> None:
        return None

    return pipe


def _wide_pipe(width: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="wide_dag")
    branches = [f"p{i}" for i in range(width)]
    pipe.step("root", to=branches)(_noop_step())
    for name in branches:
        pipe.step(name, to="join")(_noop_step())
    pipe.step("join")(_noop_step())
    return pipe


def _chain_pipe(length: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="long_chain")
    _chain(pipe, length)
    return pipe


def _token_pipe(tokens: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="token_stream")

    @pipe.step
    async def stream() -> AsyncIterator[int]:
        for i in range(tokens):
            yield i

    return pipe


def _sub_fanout_pipe(n: int) -> Pipe[Any, Any]:
    child: Pipe[Any, Any] = Pipe(name="child")
    _chain(child, 2, prefix="c")
    pipe: Pipe[Any, Any] = Pipe(name="sub_pipeline_fanout")

    @pipe.map(each="run_child")
    async def fan() -> list[int]:
        return list(range(n))

    @pipe.sub(pipeline=child)
    async def run_child(item: int) -> int:
        return item

    return pipe


class PipelineWorkloads:
    """Builds each scenario as a Pipe; `run()` streams one run (or many) and counts events."""

    def fanout_map(self, n: int, max_concurrency: int | None) -> Workload:
        pipe = _fanout_pipe(n, max_concurrency)
        return Workload(lambda: drain(pipe), events_fanout_map(n), n)

    def lazy_map(self, n: int, max_concurrency: int) -> Workload:
        pipe = _lazy_map_pipe(n, max_concurrency)
        return Workload(lambda: drain(pipe), events_fanout_map(n), n)

    def wide_dag(self, width: int) -> Workload:
        pipe = _wide_pipe(width)
        return Workload(lambda: drain(pipe), events_wide_dag(width), width + 2)

    def long_chain(self, length: int) -> Workload:
        pipe = _chain_pipe(length)
        return Workload(lambda: drain(pipe), events_long_chain(length), length)

    def token_stream(self, tokens: int) -> Workload:
        pipe = _token_pipe(tokens)
        return Workload(lambda: drain(pipe), events_token_stream(tokens), tokens)

    def many_small_runs(self, runs: int) -> Workload:
        pipe = _chain_pipe(RUN_STEPS)

        async def run_all() -> int:
            total = 0
            for _ in range(runs):
                total += await drain(pipe)
            return total

        return Workload(run_all, events_many_small_runs(runs), runs)

    def sub_pipeline_fanout(self, n: int) -> Workload:
        pipe = _sub_fanout_pipe(n)
        return Workload(lambda: drain(pipe), events_sub_pipeline_fanout(n), n)
