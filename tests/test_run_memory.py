"""A finished run's objects are freed by reference counting, not left to the cyclic GC.

Every run builds a small object graph (channel, kernel, orchestrator, publisher,
metrics, ...). If any of it forms a reference cycle, each run leaves garbage that
only the cyclic collector can free: more collections, later frees, more memory
between collections. The runner breaks the one back-reference (the barrier manager's
callback into the orchestrator) when the run ends.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import collect, end_data
from justpipe import Pipe
from justpipe.types import PipelineTerminalStatus


def mixed_pipe() -> Pipe[Any, Any]:
    """Root -> map (one worker retried) + switch -> timed join -> streamed sub-pipeline."""
    child: Pipe[Any, Any] = Pipe(name="child")

    @child.step(to="c2")
    async def c1(s: Any) -> None:
        pass

    @child.step
    async def c2(s: Any) -> Any:
        yield "token"

    pipe: Pipe[Any, Any] = Pipe(name="mixed")

    @pipe.step(to=["fan", "pick"])
    async def root(s: Any) -> None:
        pass

    @pipe.map(each="work", to="join")
    async def fan(s: Any) -> list[int]:
        return [1, 2, 3]

    @pipe.step(retries=1, retry_wait_min=0, retry_wait_max=0)
    async def work(s: Any, item: int) -> None:
        await asyncio.sleep(0)
        if item == 2 and s.setdefault("failed once", False) is False:
            s["failed once"] = True
            raise ValueError("two, once")

    @pipe.switch(to={"a": "side"}, default="side")
    async def pick(s: Any) -> str:
        return "a"

    @pipe.step(to="join")
    async def side(s: Any) -> None:
        pass

    @pipe.step(barrier_timeout=5, to="nested")
    async def join(s: Any) -> None:
        pass

    @pipe.sub(pipeline=child)
    async def nested(s: Any) -> dict[str, Any]:
        return {}

    return pipe


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_finished_runs_leave_no_reference_cycles(saved_garbage: list[Any]) -> None:
    pipe = mixed_pipe()
    for _ in range(3):  # warm-up: plan compiled, caches filled
        assert end_data(await collect(pipe, {})).status is PipelineTerminalStatus.SUCCESS
    gc.collect()
    saved_garbage.clear()
    for _ in range(5):
        assert end_data(await collect(pipe, {})).status is PipelineTerminalStatus.SUCCESS
    gc.collect()
    mine = Counter(
        type(obj).__qualname__
        for obj in saved_garbage
        if type(obj).__module__.startswith("justpipe")
    )
    assert mine == Counter(), f"justpipe objects freed only by the cyclic GC: {dict(mine)}"
