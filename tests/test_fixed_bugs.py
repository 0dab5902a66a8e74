"""Upstream bugs we fix (spec §21): one test per "fix" item, pinning our behaviour.

B1 no deadlock at any queue size · B3 Raise · B4 the Retry() cap · B5 no dropped events ·
B6 map event order · B7 cleanup inside aclose() · B8 observers learn of a client close ·
B10 very long chains validate and run. (B9, B20, B21 live with storage and observers.)
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from helpers import collect, end_data, index_of, of_type, pairs, run_with_watchdog
from justpipe import Event, EventType, Pipe, Raise, Retry
from justpipe.observability import Observer, ObserverMeta
from justpipe.types import PipelineTerminalStatus

# --------------------------------------------------------------------------- B1 no deadlock


def map_of(n: int, *, fail: bool = False, tokens: int = 0) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.map("fan", each="work", to="after")(lambda s: list(range(n)))

    if tokens:

        @pipe.step
        async def work(s: Any, item: int) -> Any:
            for i in range(tokens):
                yield (item, i)

    else:

        @pipe.step
        async def work(s: Any, item: int) -> None:
            s["done"] = s.get("done", 0) + 1
            if fail:
                raise ValueError(f"item {item}")

    pipe.step("after")(lambda s: s.update(after=True))
    return pipe


@pytest.mark.parametrize(
    ("items", "queue_size"), [(20, 10), (20, 1), (1000, 1000), (1000, 10), (1000, 1)]
)
async def test_b1_map_larger_than_the_queue_does_not_deadlock(items: int, queue_size: int) -> None:
    state: dict[str, Any] = {}
    events = await collect(map_of(items), state, queue_size=queue_size, watchdog=30)
    assert state == {"done": items, "after": True}
    assert len(of_type(events, EventType.MAP_WORKER)) == items
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


@pytest.mark.parametrize("queue_size", [1, 10])
async def test_b1_many_failing_workers_do_not_deadlock(queue_size: int) -> None:
    events = await collect(map_of(200, fail=True), queue_size=queue_size, watchdog=30)
    assert len(of_type(events, EventType.STEP_ERROR)) == 200
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_b1_default_queue_size_with_a_thousand_items() -> None:
    state: dict[str, Any] = {}
    await collect(map_of(1000), state, watchdog=30)
    assert state["done"] == 1000


# --------------------------------------------------------------------------- B3 Raise


async def test_b3_raise_from_a_handler_is_reported_once_as_step_error() -> None:
    handler_calls: list[int] = []

    def handler(error: Exception) -> Any:
        handler_calls.append(1)
        return Raise(KeyError("escalated"))

    pipe: Pipe[Any, Any] = Pipe()

    @pipe.step(to="b", on_error=handler)
    async def a(s: Any) -> None:
        raise ValueError("original")

    pipe.step("b")(lambda s: None)
    events = await collect(pipe)
    assert handler_calls == [1], "the local handler is not re-entered"
    a_events = [(t, s) for t, s in pairs(events) if s == "a"]
    assert a_events == [("step_start", "a"), ("step_error", "a")], "no STEP_END before the error"
    error = of_type(events, EventType.STEP_ERROR)[0]
    assert error.payload == "'escalated'"
    assert error.invocation_id == of_type(events, EventType.STEP_START)[0].invocation_id
    data = end_data(events)
    assert (data.status, data.failed_step) == (PipelineTerminalStatus.FAILED, "a")


# --------------------------------------------------------------------------- B4 Retry cap


async def test_b4_retry_cap_warns_reports_step_error_and_fails() -> None:
    pipe: Pipe[Any, Any] = Pipe(max_retries=3)

    @pipe.step
    async def loop(s: Any) -> Any:
        return Retry()

    with pytest.warns(UserWarning, match=r"exceeded max retries \(3\)"):
        events = await collect(pipe)
    starts = of_type(events, EventType.STEP_START)
    (error,) = of_type(events, EventType.STEP_ERROR)
    assert error.stage == "loop"
    assert error.invocation_id == starts[-1].invocation_id
    assert end_data(events).status is PipelineTerminalStatus.FAILED


async def test_b4_retry_cap_from_an_error_handler() -> None:
    pipe: Pipe[Any, Any] = Pipe(max_retries=2)

    @pipe.step(on_error=lambda: Retry())
    async def flaky(s: Any) -> None:
        raise ConnectionError("down")

    with pytest.warns(UserWarning, match="exceeded max retries"):
        events = await collect(pipe)
    assert len(of_type(events, EventType.STEP_START)) == 2
    assert len(of_type(events, EventType.STEP_ERROR)) == 1
    assert end_data(events).status is PipelineTerminalStatus.FAILED


# --------------------------------------------------------------------------- B5 no dropped events


def assert_every_invocation_closed(events: list[Event]) -> None:
    opened = {e.invocation_id for e in of_type(events, EventType.STEP_START)}
    closing = (EventType.STEP_END, EventType.STEP_ERROR, EventType.CANCELLED)
    closed = {e.invocation_id for e in events if e.type in closing and e.invocation_id}
    assert opened == closed


@pytest.mark.parametrize("queue_size", [1, 3, 0])
async def test_b5_every_token_and_step_event_is_delivered(queue_size: int) -> None:
    events = await collect(map_of(30, tokens=5), queue_size=queue_size, watchdog=30)
    assert len(of_type(events, EventType.TOKEN)) == 150
    assert_every_invocation_closed(events)
    assert events[-1].type is EventType.FINISH


async def test_b5_events_after_a_raise_are_not_lost() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("root", to=["bad", "slow"])(lambda s: None)
    pipe.step("bad", on_error=lambda: Raise())(lambda s: 1 / 0)

    @pipe.step(to="tail")
    async def slow(s: Any) -> Any:
        for i in range(3):
            await asyncio.sleep(0.001)
            yield i

    pipe.step("tail")(lambda s: s.update(tail=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state, queue_size=1)
    assert [e.payload for e in of_type(events, EventType.TOKEN)] == [0, 1, 2]
    assert state == {"tail": True}
    assert_every_invocation_closed(events)


async def test_b5_successor_spawned_after_the_last_task_still_runs() -> None:
    pipe: Pipe[Any, Any] = Pipe()
    pipe.step("a", to="b", on_error=lambda: Raise())(lambda s: 1 / 0)
    pipe.step("b")(lambda s: s.update(b=True))
    state: dict[str, Any] = {}
    events = await collect(pipe, state, queue_size=1)
    assert pairs(events) == [
        ("start", "system"),
        ("step_start", "a"),
        ("step_error", "a"),
        ("step_start", "b"),
        ("step_end", "b"),
        ("finish", "system"),
    ]


# --------------------------------------------------------------------------- B6 map order


@pytest.mark.parametrize("items", [0, 1, 3])
async def test_b6_map_start_workers_complete_then_owner_end(items: int) -> None:
    events = await collect(map_of(items))
    kinds = [(t, s) for t, s in pairs(events) if s in ("fan", "after") or t == "map_worker"]
    expected = (
        [("step_start", "fan"), ("map_start", "fan")]
        + [("map_worker", f"work[{i}]") for i in range(items)]
        + [("map_complete", "fan"), ("step_end", "fan"), ("step_start", "after")]
    )
    assert kinds[: len(expected)] == expected
    worker_ends = [
        i for i, e in enumerate(events) if e.type is EventType.STEP_END and e.stage == "work"
    ]
    assert len(worker_ends) == items
    complete = index_of(events, EventType.MAP_COMPLETE, "fan")
    assert all(i < complete for i in worker_ends), "MAP_COMPLETE after the last worker's end"


# --------------------------------------------------------------------------- B7 / B8 client close


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ends: list[float] = []
        self.errors: list[BaseException] = []

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        self.events.append(event)

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        self.ends.append(duration_s)

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: BaseException
    ) -> None:
        self.errors.append(error)


def closable_pipe(log: list[str]) -> tuple[Pipe[Any, Any], Recorder]:
    pipe: Pipe[Any, Any] = Pipe()
    recorder = Recorder()
    pipe.add_observer(recorder)

    @pipe.on_shutdown
    async def down() -> None:
        await asyncio.sleep(0)
        log.append("shutdown")

    pipe.step("root", to=["talker", "sleeper"])(lambda s: None)

    @pipe.step
    async def talker(s: Any) -> Any:
        for i in range(1000):
            await asyncio.sleep(0)
            yield i

    @pipe.step
    async def sleeper(s: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            log.append("sleeper cancelled")
            raise

    return pipe, recorder


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """Collect everything reported to the event loop's exception handler."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield reported
    finally:
        loop.set_exception_handler(previous)


def other_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


async def first_token(stream: AsyncIterator[Event]) -> None:
    async for event in stream:
        if event.type is EventType.TOKEN:
            return


async def test_b7_aclose_cleans_up_before_returning() -> None:
    log: list[str] = []
    pipe, _ = closable_pipe(log)
    with loop_errors() as reported:
        stream = pipe.run({})
        await run_with_watchdog(first_token(stream))
        await run_with_watchdog(stream.aclose())
        assert sorted(log) == ["shutdown", "sleeper cancelled"]
        assert other_tasks() == [], "no task of the run outlives aclose()"
        del stream
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
    assert reported == []


async def test_b7_break_without_aclose_cleans_up_when_the_generator_is_dropped() -> None:
    log: list[str] = []
    pipe, _ = closable_pipe(log)
    with loop_errors() as reported:
        got: list[Event] = []

        async def consume() -> None:
            async for event in pipe.run({}):
                got.append(event)
                if event.type is EventType.TOKEN:
                    break

        await run_with_watchdog(consume())
        gc.collect()

        async def wait_for_shutdown() -> None:
            while "shutdown" not in log:
                await asyncio.sleep(0.001)

        await run_with_watchdog(wait_for_shutdown())
        for _ in range(5):
            await asyncio.sleep(0)
        assert other_tasks() == []
    assert reported == []
    assert EventType.FINISH not in [e.type for e in got]


async def test_b8_observers_learn_of_a_client_close() -> None:
    log: list[str] = []
    pipe, recorder = closable_pipe(log)
    stream = pipe.run({})
    await run_with_watchdog(first_token(stream))
    await run_with_watchdog(stream.aclose())
    finish = recorder.events[-1]
    assert finish.type is EventType.FINISH
    assert finish.payload.status is PipelineTerminalStatus.CLIENT_CLOSED
    assert len(recorder.ends) == 1
    assert recorder.errors == []


async def test_b8_consumer_never_sees_the_client_closed_finish() -> None:
    log: list[str] = []
    pipe, recorder = closable_pipe(log)
    seen: list[Event] = []
    stream = pipe.run({})
    async for event in stream:
        seen.append(event)
        if event.type is EventType.TOKEN:
            break
    await run_with_watchdog(stream.aclose())
    assert EventType.FINISH not in [e.type for e in seen]
    assert recorder.events[: len(seen)] == seen


# --------------------------------------------------------------------------- B10 long chains


def chain_of(n: int) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe()

    async def step(s: Any) -> None:
        s["count"] = s.get("count", 0) + 1

    for i in range(n):
        pipe.step(f"s{i}", to=f"s{i + 1}" if i + 1 < n else None)(step)
    return pipe


async def test_b10_chain_deeper_than_the_recursion_limit_validates_and_runs() -> None:
    pipe = chain_of(2500)
    pipe.validate()
    state: dict[str, Any] = {}
    events = await collect(pipe, state, watchdog=60)
    assert state == {"count": 2500}
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS


def test_b10_cycle_at_the_end_of_a_long_chain_is_found() -> None:
    from justpipe import DefinitionError

    pipe: Pipe[Any, Any] = Pipe()
    for i in range(3000):
        pipe.step(f"s{i}", to=f"s{i + 1}")(lambda s: None)
    pipe.step("s3000", to="s2999")(lambda s: None)
    with pytest.raises(DefinitionError, match="Circular dependency detected: s2999 -> s3000"):
        pipe.validate()


@pytest.mark.slow
async def test_b10_hundred_thousand_step_chain_validates_and_runs() -> None:
    pipe = chain_of(100_000)
    pipe.validate()
    state: dict[str, Any] = {}
    events = await collect(pipe, state, watchdog=600)
    assert state == {"count": 100_000}
    assert len(events) == 200_002
