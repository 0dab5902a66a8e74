"""Cooperative cancellation with the pipe's CancellationToken (spec §9.10, §9.2)."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import collect, end_data, of_type, pairs, stages
from justpipe import EventType, Pipe
from justpipe.types import (
    CancellationToken,
    FailureKind,
    FailureReason,
    FailureSource,
    PipelineCancelled,
    PipelineTerminalStatus,
)


def checkpointing(**options: Any) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(**options)

    @pipe.step(to="b")
    async def a(s: Any, cancellation_token: CancellationToken) -> None:
        s.setdefault("ran", []).append("a")
        await cancellation_token.checkpoint()

    @pipe.step
    async def b(s: Any) -> None:
        s.setdefault("ran", []).append("b")

    return pipe


async def test_cancel_before_run_cancels_at_the_first_checkpoint() -> None:
    pipe = checkpointing()
    pipe.cancellation_token.cancel("maintenance")
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert state == {"ran": ["a"]}
    (cancelled,) = of_type(events, EventType.CANCELLED)
    assert (cancelled.stage, cancelled.payload) == ("a", "maintenance")
    assert cancelled.node_kind.value == "step"
    assert cancelled.invocation_id is not None
    data = end_data(events)
    assert (data.status, data.reason, data.failure_kind, data.failure_source, data.error) == (
        PipelineTerminalStatus.CANCELLED,
        FailureReason.CANCELLED,
        FailureKind.NONE,
        FailureSource.NONE,
        None,
    )


async def test_steps_that_never_checkpoint_ignore_cancellation() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to="b")(lambda s: s.update(a=True))
    pipe.step("b")(lambda s: s.update(b=True))
    pipe.cancellation_token.cancel()
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert state == {"a": True, "b": True}
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_default_reason_is_cancelled() -> None:
    pipe = checkpointing()
    pipe.cancellation_token.cancel()
    events = await collect(pipe)
    assert of_type(events, EventType.CANCELLED)[0].payload == "Cancelled"


async def test_cancel_from_outside_while_running() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    reached = asyncio.Event()

    @pipe.step
    async def loop(s: Any, cancel: CancellationToken) -> None:
        reached.set()
        while True:
            await cancel.checkpoint()
            await asyncio.sleep(0.001)

    async def canceller() -> None:
        await reached.wait()
        pipe.cancellation_token.cancel("operator")

    task = asyncio.create_task(canceller())
    events = await collect(pipe)
    await task
    assert of_type(events, EventType.CANCELLED)[0].payload == "operator"
    assert end_data(events).status is PipelineTerminalStatus.CANCELLED


async def test_cancellation_refuses_new_spawns_but_running_steps_finish() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["canceller", "worker"])(lambda s: None)

    @pipe.step(to="after_cancel")
    async def canceller(s: Any, cancel: CancellationToken) -> None:
        cancel.cancel("stop")
        await cancel.checkpoint()

    @pipe.step(to="after_worker")
    async def worker(s: Any) -> None:
        await asyncio.sleep(0.01)
        s["worker"] = True

    pipe.step("after_cancel")(lambda s: s.update(after_cancel=True))
    pipe.step("after_worker")(lambda s: s.update(after_worker=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert state == {"worker": True}
    assert "worker" in stages(events, EventType.STEP_END)
    assert end_data(events).status is PipelineTerminalStatus.CANCELLED


async def test_token_is_injected_into_hooks_and_local_handlers() -> None:
    seen: list[Any] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_startup(lambda cancel: seen.append(("startup", cancel)))

    def handler(error: Exception, token: CancellationToken) -> None:
        seen.append(("handler", token))

    @pipe.step(on_error=handler)
    async def a(s: Any) -> None:
        raise ValueError("x")

    await collect(pipe)
    assert seen == [("startup", pipe.cancellation_token), ("handler", pipe.cancellation_token)]


async def test_local_handler_can_swallow_cancellation() -> None:
    handled: list[str] = []
    pipe2: Pipe[Any, Any] = Pipe()

    @pipe2.step(to="b", on_error=lambda error: handled.append(str(error)))
    async def a(s: Any, cancel: CancellationToken) -> None:
        await cancel.checkpoint()

    pipe2.step("b")(lambda s: s.update(b=True))
    pipe2.cancellation_token.cancel("soft")
    state: dict[str, Any] = {}
    events = await collect(pipe2, state)
    assert handled == ["soft"]
    assert state == {"b": True}
    assert of_type(events, EventType.CANCELLED) == []
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


async def test_map_workers_each_report_their_own_cancellation() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work", to="after")(lambda s: [1, 2, 3])

    @pipe.step
    async def work(s: Any, item: int, cancel: CancellationToken) -> None:
        cancel.cancel("enough")
        await cancel.checkpoint()

    pipe.step("after")(lambda s: s.update(after=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    cancelled = of_type(events, EventType.CANCELLED)
    assert [e.scope for e in cancelled] == [("work[0]",), ("work[1]",), ("work[2]",)]
    assert "after" not in state
    assert end_data(events).status is PipelineTerminalStatus.CANCELLED


async def test_pipeline_cancelled_raised_directly_behaves_like_a_checkpoint() -> None:
    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b")
    async def a(s: Any) -> None:
        raise PipelineCancelled("manual")

    pipe.step("b")(lambda s: s.update(b=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "a"),
        ("cancelled", "a"),
        ("finish", "system"),
    ]
    assert state == {}


async def test_cancelled_token_keeps_cancelling_later_runs() -> None:
    pipe = checkpointing()
    pipe.cancellation_token.cancel("once")
    for _ in range(3):
        events = await collect(pipe)
        assert end_data(events).status is PipelineTerminalStatus.CANCELLED
