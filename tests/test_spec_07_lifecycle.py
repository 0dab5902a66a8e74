"""What `pipe.run()` does, in order, and how abnormal exits behave (spec §7)."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from helpers import collect, end_data, of_type, pairs, run_with_watchdog
from justpipe import Event, EventType, Pipe
from justpipe.observability import Observer, ObserverMeta
from justpipe.types import FailureKind, FailureReason, FailureSource, PipelineTerminalStatus


class Recorder(Observer):
    """Records every observer callback in order, sharing a log with hooks and steps."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.metas: list[ObserverMeta] = []
        self.events: list[Event] = []
        self.errors: list[BaseException] = []
        self.durations: list[float] = []

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self.log.append("observer:start")
        self.metas.append(meta)

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        self.events.append(event)

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        self.log.append("observer:end")
        self.durations.append(duration_s)

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: BaseException
    ) -> None:
        self.log.append("observer:error")
        self.errors.append(error)


def lifecycle_pipe(log: list[str], *, step_error: bool = False) -> tuple[Pipe[Any, Any], Recorder]:
    pipe: Pipe[Any, Any] = Pipe()
    recorder = Recorder(log)
    pipe.add_observer(recorder)

    @pipe.on_startup
    def up() -> None:
        log.append("startup")

    @pipe.on_shutdown
    def down() -> None:
        log.append("shutdown")

    @pipe.step
    async def work(s: Any) -> None:
        log.append("step")
        if step_error:
            raise ValueError("broken")

    return pipe, recorder


# --------------------------------------------------------------------------- normal order


async def test_run_does_nothing_until_first_anext() -> None:
    log: list[str] = []
    pipe, _ = lifecycle_pipe(log)
    stream = pipe.run({})
    await asyncio.sleep(0)
    assert log == []
    await stream.aclose()


async def test_observer_start_then_startup_hooks_then_start_event() -> None:
    log: list[str] = []
    pipe, _ = lifecycle_pipe(log)
    async for event in pipe.run({}):
        log.append(f"event:{event.type.value}")
    # Where `observer:end` falls relative to the consumer seeing FINISH is not pinned:
    # we tell observers before yielding FINISH, so a consumer that stops there loses nothing.
    log.remove("observer:end")
    assert log == [
        "observer:start",
        "startup",
        "event:start",
        "step",
        "event:step_start",
        "event:step_end",
        "shutdown",
        "event:finish",
    ]


async def test_run_id_is_uuid4_hex_shared_by_all_events_and_fresh_per_run() -> None:
    log: list[str] = []
    pipe, recorder = lifecycle_pipe(log)
    first = await collect(pipe)
    second = await collect(pipe)
    run_ids = {e.run_id for e in first}
    assert len(run_ids) == 1
    (run_id,) = run_ids
    assert re.fullmatch(r"[0-9a-f]{32}", run_id or "")
    assert {e.run_id for e in second} != run_ids
    assert [m.run_id for m in recorder.metas] == [first[0].run_id, second[0].run_id]


async def test_observer_meta_carries_pipe_name_and_start_time() -> None:
    log: list[str] = []
    pipe, recorder = lifecycle_pipe(log)
    await collect(pipe)
    (meta,) = recorder.metas
    assert meta.pipe_name == "Pipe"
    assert isinstance(meta.started_at, float)


async def test_observers_see_every_yielded_event() -> None:
    log: list[str] = []
    pipe, recorder = lifecycle_pipe(log)
    events = await collect(pipe)
    assert recorder.events == events


async def test_successful_run_ends_with_on_pipeline_end_and_duration() -> None:
    log: list[str] = []
    pipe, recorder = lifecycle_pipe(log)
    events = await collect(pipe)
    assert log[-1] == "observer:end"
    assert recorder.durations == [end_data(events).duration_s]
    assert recorder.errors == []


async def test_failed_run_ends_with_on_pipeline_error() -> None:
    log: list[str] = []
    pipe, recorder = lifecycle_pipe(log, step_error=True)
    events = await collect(pipe)
    assert log[-1] == "observer:error"
    assert [str(e) for e in recorder.errors] == ["broken"]
    assert end_data(events).status is PipelineTerminalStatus.FAILED


# --------------------------------------------------------------------------- startup failures


async def test_startup_failure_skips_later_hooks_and_execution_but_runs_shutdown() -> None:
    log: list[str] = []
    pipe, _ = lifecycle_pipe(log)

    @pipe.on_startup
    def broken() -> None:
        raise RuntimeError("no db")

    @pipe.on_startup
    def never() -> None:
        log.append("never")

    events = await collect(pipe)
    assert pairs(events) == [("step_error", "startup"), ("finish", "system")]
    assert events[0].payload == "no db"
    assert log == ["observer:start", "startup", "shutdown", "observer:error"]
    data = end_data(events)
    assert (data.status, data.failure_kind, data.failure_source, data.reason) == (
        PipelineTerminalStatus.FAILED,
        FailureKind.STARTUP,
        FailureSource.USER_CODE,
        FailureReason.STARTUP_HOOK_ERROR,
    )
    assert data.error == "Startup hook failed: no db"
    assert data.failed_step is None


async def test_empty_pipe_reports_no_steps_and_still_runs_hooks() -> None:
    log: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_startup(lambda: log.append("startup"))
    pipe.on_shutdown(lambda: log.append("shutdown"))
    events = await collect(pipe)
    assert pairs(events) == [("step_error", "system"), ("finish", "system")]
    assert events[0].payload == "No steps registered"
    assert log == ["startup", "shutdown"]
    data = end_data(events)
    assert (data.failure_kind, data.failure_source, data.reason, data.error) == (
        FailureKind.VALIDATION,
        FailureSource.FRAMEWORK,
        FailureReason.NO_STEPS,
        "No steps registered",
    )


# --------------------------------------------------------------------------- shutdown


async def test_every_shutdown_hook_runs_and_each_failure_is_reported() -> None:
    log: list[str] = []
    pipe, _ = lifecycle_pipe(log)

    @pipe.on_shutdown
    def first_bad() -> None:
        raise RuntimeError("close fail")

    @pipe.on_shutdown
    def second_bad() -> None:
        log.append("after-bad")
        raise RuntimeError("flush fail")

    events = await collect(pipe)
    assert [(t, s) for t, s in pairs(events)][-3:] == [
        ("step_error", "shutdown"),
        ("step_error", "shutdown"),
        ("finish", "system"),
    ]
    assert [e.payload for e in of_type(events, EventType.STEP_ERROR)] == [
        "close fail",
        "flush fail",
    ]
    assert log[1:5] == ["startup", "step", "shutdown", "after-bad"]
    data = end_data(events)
    assert (data.status, data.failure_kind, data.reason) == (
        PipelineTerminalStatus.FAILED,
        FailureKind.SHUTDOWN,
        FailureReason.SHUTDOWN_HOOK_ERROR,
    )
    assert data.error == "Shutdown hook failed: close fail"
    assert [r.kind for r in data.errors] == [FailureKind.SHUTDOWN, FailureKind.SHUTDOWN]


async def test_shutdown_hook_errors_have_system_kind_and_no_ids() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_shutdown(lambda: 1 / 0)
    pipe.step("a")(lambda s: None)
    events = await collect(pipe)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.node_kind.value == "system"
    assert error.invocation_id is None


async def test_shutdown_runs_after_a_run_timeout() -> None:
    log: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_shutdown(lambda: log.append("shutdown"))

    @pipe.step
    async def slow(s: Any) -> None:
        await asyncio.sleep(5)

    events = await collect(pipe, timeout=0.05)
    assert log == ["shutdown"]
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT


async def test_timeout_then_shutdown_errors_then_finish() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_shutdown(lambda: 1 / 0)

    @pipe.step
    async def slow(s: Any) -> None:
        await asyncio.sleep(5)

    events = await collect(pipe, timeout=0.05)
    assert pairs(events)[-3:] == [
        ("timeout", "system"),
        ("step_error", "shutdown"),
        ("finish", "system"),
    ]
    assert end_data(events).status is PipelineTerminalStatus.TIMEOUT


# --------------------------------------------------------------------------- observers


class Broken(Observer):
    async def on_event(self, *args: Any) -> None:
        raise RuntimeError("observer bug")


async def test_observer_errors_are_logged_and_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.add_observer(Broken())
    pipe.step("a")(lambda s: None)
    with caplog.at_level(logging.ERROR):
        events = await collect(pipe)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert any(
        "Observer Broken.on_event error: observer bug" in r.getMessage() for r in caplog.records
    )


async def test_observers_are_called_in_registration_order() -> None:
    log: list[str] = []

    class Named(Observer):
        def __init__(self, name: str) -> None:
            self.name = name

        async def on_event(self, state: Any, context: Any, meta: Any, event: Event) -> None:
            if event.type is EventType.START:
                log.append(self.name)

    pipe: Pipe[Any, Any] = Pipe()
    pipe.add_observer(Named("first"))
    pipe.add_observer(Named("second"))
    pipe.step("a")(lambda s: None)
    await collect(pipe)
    assert log == ["first", "second"]


async def test_timeout_and_cancellation_end_with_on_pipeline_end() -> None:
    log: list[str] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.add_observer(Recorder(log))

    @pipe.step
    async def slow(s: Any) -> None:
        await asyncio.sleep(5)

    await collect(pipe, timeout=0.05)
    assert log == ["observer:start", "observer:end"]


# --------------------------------------------------------------------------- abnormal exits


async def test_client_close_delivers_no_finish_and_runs_shutdown() -> None:
    log: list[str] = []
    pipe, _ = lifecycle_pipe(log)
    got: list[Event] = []
    stream = pipe.run({})
    async for event in stream:
        got.append(event)
        if event.type is EventType.START:
            break
    await run_with_watchdog(stream.aclose())
    assert pairs(got) == [("start", "system")]
    assert "shutdown" in log


async def test_consumer_cancellation_propagates_and_runs_shutdown_without_finish() -> None:
    log: list[str] = []
    started = asyncio.Event()
    got: list[Event] = []
    pipe: Pipe[Any, Any] = Pipe()
    pipe.on_shutdown(lambda: log.append("shutdown"))

    @pipe.step
    async def slow(s: Any) -> None:
        started.set()
        await asyncio.sleep(5)

    async def consume() -> None:
        async for event in pipe.run({}):
            got.append(event)

    task = asyncio.create_task(consume())
    await run_with_watchdog(started.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run_with_watchdog(task)
    assert log == ["shutdown"]
    assert EventType.FINISH not in [e.type for e in got]


async def test_internal_error_still_yields_finish_then_raises() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    calls: list[str] = []
    pipe.on_shutdown(lambda: calls.append("shutdown"))
    pipe.add_event_hook(lambda e: None if e.type is EventType.STEP_END else e)  # type: ignore[arg-type,return-value]
    pipe.step("a")(lambda s: None)
    got: list[Event] = []

    async def consume() -> None:
        async for event in pipe.run({}):
            got.append(event)

    with pytest.raises(ExceptionGroup):
        await consume()
    assert got[-1].type is EventType.FINISH
    assert end_data(got).failure_kind is FailureKind.INFRA
    assert calls == ["shutdown"]
