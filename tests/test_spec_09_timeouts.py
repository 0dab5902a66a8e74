"""Run timeouts and step timeouts (spec §9.7)."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import collect, end_data, of_type, pairs
from justpipe import EventType, Pipe
from justpipe.types import FailureKind, FailureReason, FailureSource, PipelineTerminalStatus


async def test_run_timeout_cancels_running_steps_and_reports_timeout() -> None:
    cancelled: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["x", "y"])(lambda s: None)

    for name in ("x", "y"):

        async def sleeper(s: Any, name: str = name) -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(name)
                raise

        pipe.step(name)(sleeper)
    events = await collect(pipe, timeout=0.05)
    assert sorted(cancelled) == ["x", "y"]
    data = end_data(events)
    assert (data.status, data.reason, data.failure_kind, data.failure_source) == (
        PipelineTerminalStatus.TIMEOUT,
        FailureReason.TIMEOUT,
        FailureKind.NONE,
        FailureSource.NONE,
    )
    assert data.error is None
    assert data.failed_step is None
    assert of_type(events, EventType.STEP_END)[-1].stage == "root"


async def test_run_timeout_does_not_cover_startup_hooks() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.on_startup
    async def slow_start() -> None:
        await asyncio.sleep(0.15)

    pipe.step("a")(lambda s: None)
    events = await collect(pipe, timeout=0.1)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_run_timeout_does_not_cover_shutdown_hooks() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.on_shutdown
    async def slow_stop() -> None:
        await asyncio.sleep(0.15)

    pipe.step("a")(lambda s: None)
    events = await collect(pipe, timeout=0.1)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_run_timeout_applies_to_the_whole_run_not_each_step() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    for name, nxt in (("a", "b"), ("b", "c"), ("c", None)):

        async def step(s: Any) -> None:
            await asyncio.sleep(0.3)

        pipe.step(name, to=nxt)(step)
    # each step is well inside the timeout, the three together are not (150 ms margins
    # either side, so a loaded machine does not change the outcome)
    events = await collect(pipe, timeout=0.75)
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT
    assert [p[1] for p in pairs(events) if p[0] == "step_end"] == ["a", "b"]


async def test_events_already_produced_before_the_timeout_are_delivered() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step
    async def talk(s: Any) -> Any:
        yield "early"
        await asyncio.sleep(5)

    events = await collect(pipe, timeout=0.05)
    assert [e.payload for e in of_type(events, EventType.TOKEN)] == ["early"]
    assert pairs(events)[-2:] == [("timeout", "system"), ("finish", "system")]


async def test_timeout_keeps_recorded_failures() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["bad", "slow"])(lambda s: None)
    pipe.step("bad")(lambda s: 1 / 0)

    @pipe.step
    async def slow(s: Any) -> None:
        await asyncio.sleep(5)

    data = end_data(await collect(pipe, timeout=0.05))
    assert data.status is PipelineTerminalStatus.TIMEOUT
    assert [(r.kind, r.step) for r in data.errors] == [(FailureKind.STEP, "bad")]


async def test_step_timeout_fails_only_that_invocation() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="after", timeout=0.03)
    async def slow(s: Any) -> None:
        await asyncio.sleep(5)

    pipe.step("after")(lambda s: s.update(after=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.payload.startswith("Step 'slow' timed out after 0.03s")
    assert state == {"after": True}
    assert end_data(events).failed_step == "slow"


async def test_step_timeout_bounds_a_streaming_step() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(timeout=0.03)
    async def talk(s: Any) -> Any:
        yield 1
        await asyncio.sleep(5)
        yield 2

    events = await collect(pipe)
    assert [e.payload for e in of_type(events, EventType.TOKEN)] == [1]
    assert of_type(events, EventType.STEP_ERROR)[0].payload.startswith("Step 'talk' timed out")


async def test_step_timeout_applies_to_each_map_worker() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work")(lambda s: [0.0, 5.0])

    @pipe.step(timeout=0.03)
    async def work(s: Any, delay: float) -> None:
        await asyncio.sleep(delay)

    events = await collect(pipe)
    assert [e.scope for e in of_type(events, EventType.STEP_ERROR)] == [("work[1]",)]


async def test_fast_step_with_timeout_succeeds() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", timeout=5)(lambda s: None)
    assert end_data(await collect(pipe)).status is PipelineTerminalStatus.SUCCESS
