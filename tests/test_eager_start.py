"""Steps start eagerly (3.12 `eager_start`, 3.11 `_core.start_eagerly`): what must still hold.

A step's first instructions run inside the loop's iteration, before any event-loop
round trip. These tests pin the semantics that must not change because of it: the
step runs as its own task (so `asyncio.timeout()` and `TaskGroup` bind to it), in its
own copy of the context, cancellation reaches it wherever it is suspended, and a
chain of steps that never suspend still lets the event loop (and the run timeout) in.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from helpers import collect, end_data, of_type
from justpipe import EventType, Pipe
from justpipe.types import PipelineTerminalStatus

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def test_a_step_runs_as_its_own_task_not_as_the_consumer() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    seen: dict[str, Any] = {}

    @pipe.step(to="second")
    async def first(s: Any) -> None:
        seen["first"] = asyncio.current_task()

    @pipe.step
    async def second(s: Any) -> None:
        seen["second"] = asyncio.current_task()
        await asyncio.sleep(0)
        seen["second, resumed"] = asyncio.current_task()

    consumer = asyncio.current_task()
    await collect(pipe)
    assert seen["first"] is not None and seen["second"] is not None
    assert consumer not in (seen["first"], seen["second"])
    assert seen["first"] is not seen["second"]
    assert seen["second"] is seen["second, resumed"]
    assert asyncio.current_task() is consumer


async def test_a_timeout_opened_before_the_first_suspension_cancels_the_step_only() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    outcome: list[str] = []

    @pipe.step(to="after")
    async def slow(s: Any) -> None:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            outcome.append("timed out in the step")

    @pipe.step
    async def after(s: Any) -> None:
        outcome.append("after")

    events = await collect(pipe)
    assert outcome == ["timed out in the step", "after"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_a_task_group_opened_by_a_step_has_the_step_as_parent() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    outcome: list[str] = []

    @pipe.step
    async def fan(s: Any) -> None:
        async def boom() -> None:
            raise ValueError("child failed")

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(boom())
                await asyncio.sleep(5)
        except ExceptionGroup as eg:
            outcome.append(type(eg.exceptions[0]).__name__)

    events = await collect(pipe)
    assert outcome == ["ValueError"]
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_context_variables_set_by_a_step_stay_in_that_step() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    seen: list[str] = []

    @pipe.step(to="b")
    async def a(s: Any) -> None:
        seen.append(var.get())
        var.set("set by a")
        seen.append(var.get())

    @pipe.step
    async def b(s: Any) -> None:
        seen.append(var.get())

    token = var.set("consumer")
    try:
        await collect(pipe)
        assert var.get() == "consumer"
    finally:
        var.reset(token)
    assert seen == ["consumer", "set by a", "consumer"]


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_cancellation_reaches_a_step_suspended_in_its_first_step(how: str) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    cleaned: list[str] = []
    started = asyncio.Event()

    @pipe.step
    async def waits(s: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise
        finally:
            cleaned.append("finally")

    stream = pipe.run(None)
    if how == "aclose":
        async for event in stream:
            if event.type is EventType.STEP_START:
                break
        await stream.aclose()
    else:

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cleaned == ["cancelled", "finally"]


async def test_a_chain_that_never_suspends_still_lets_the_run_timeout_in() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    calls = 0

    @pipe.step
    async def spin(s: Any) -> str:
        nonlocal calls
        calls += 1
        return "spin"  # routes to itself forever, never awaiting anything

    events = await collect(pipe, timeout=0.05)
    assert of_type(events, EventType.TIMEOUT)
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT
    assert calls > 1


async def test_other_tasks_run_while_a_chain_of_instant_steps_executes() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    ticks: list[int] = []
    chain = [f"s{i}" for i in range(2_000)]
    for here, there in zip(chain, [*chain[1:], None], strict=True):

        async def body(s: Any) -> None:
            pass

        pipe.step(here, to=there)(body)

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        events = await collect(pipe)
    finally:
        task.cancel()
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert len(ticks) > 2  # the loop ran other tasks during the chain, not only after it


def test_a_run_on_a_debug_loop_leaves_no_complaints() -> None:
    """Debug mode checks every callback; eager starts must not trip any of them."""
    pipe: Pipe[Any, Any] = Pipe()
    names = [f"s{i}" for i in range(300)]  # beyond the eager budget: both start paths
    suspended: list[str] = []

    def make(name: str, suspend: bool) -> Any:
        async def body(s: Any) -> None:
            if suspend:  # some steps suspend: their task finishes later, not eagerly
                await asyncio.sleep(0)
                suspended.append(name)

        return body

    for index, (here, there) in enumerate(zip(names, [*names[1:], None], strict=True)):
        pipe.step(here, to=there)(make(here, index % 50 == 0))

    complaints: list[Any] = []

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: complaints.append(context))
        events = await collect(pipe)
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return [events, leftover]

    events, leftover = asyncio.run(main(), debug=True)
    assert complaints == []
    assert leftover == []
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert len(of_type(events, EventType.STEP_END)) == 300
    assert suspended == [f"s{i}" for i in range(0, 300, 50)]
