"""Runtime bugs the reliability suite found, one small test each (filed in /tmp/kernel-bugs.md).

A bug still open is a strict xfail: it fails loudly (XPASS) the moment the bug is
fixed; then drop its marker and the matching entry of `invariants.KNOWN_BUGS`, which
lets the fuzz tolerate that bug meanwhile. Fixed bugs stay here as regression tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from justpipe import Event, EventType, Pipe, Skip, Stop
from justpipe.observability import Observer
from justpipe.observability.observer import ObserverMeta

WATCHDOG_S = 10.0


class Calls(Observer):
    """Records observer callbacks next to the user's own calls, in one list."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self.log.append("observer start")

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        self.log.append(f"event {event.type.value}")

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        self.log.append("observer end")

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        self.log.append("observer error")


def one_step_pipe(log: list[str]) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="known")
    pipe.add_observer(Calls(log))

    @pipe.step()
    async def a() -> None:
        log.append("a")

    return pipe


async def cancel_consumer_after(pipe: Pipe[Any, Any], delay: float) -> None:
    async def consume() -> None:
        async for _ in pipe.run(None):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WATCHDOG_S)


def test_cancelling_the_consumer_during_shutdown_hooks_still_runs_them_all() -> None:
    log: list[str] = []
    pipe = one_step_pipe(log)

    @pipe.on_shutdown
    async def first() -> None:
        log.append("first shutdown")
        await asyncio.sleep(0.05)

    @pipe.on_shutdown
    async def second() -> None:
        log.append("second shutdown")

    asyncio.run(cancel_consumer_after(pipe, 0.01))
    assert log.count("first shutdown") == 1
    assert log.count("second shutdown") == 1


def test_cancelling_the_consumer_during_startup_still_shuts_down() -> None:
    log: list[str] = []
    pipe = one_step_pipe(log)

    @pipe.on_startup
    async def slow_startup() -> None:
        log.append("startup")
        await asyncio.sleep(0.05)

    @pipe.on_shutdown
    async def shutdown() -> None:
        log.append("shutdown")

    asyncio.run(cancel_consumer_after(pipe, 0.01))
    assert log.count("shutdown") == 1
    assert log[-1] == "observer end"


def test_closing_at_a_shutdown_error_still_tells_observers_how_the_run_ended() -> None:
    log: list[str] = []
    pipe = one_step_pipe(log)

    @pipe.on_shutdown
    async def failing_shutdown() -> None:
        raise RuntimeError("close fail")

    async def main() -> None:
        stream = pipe.run(None)
        async for event in stream:
            if event.type is EventType.STEP_ERROR:
                break
        await stream.aclose()

    asyncio.run(main())
    assert log.count("event finish") == 1
    assert log[-2] == "event finish"
    assert log[-1] in ("observer end", "observer error")


def test_finish_metrics_count_the_shutdown_hook_error() -> None:
    pipe = one_step_pipe([])

    @pipe.on_shutdown
    async def failing_shutdown() -> None:
        raise RuntimeError("close fail")

    async def main() -> list[Event]:
        return [event async for event in pipe.run(None)]

    events = asyncio.run(main())
    published = {e.type.value for e in events[:-1]}
    assert "step_error" in published
    assert events[-1].payload.metrics.events.get("step_error") == 1


def test_lazy_map_source_is_closed_when_the_run_times_out() -> None:
    closed: list[bool] = []
    sources: list[Any] = []  # keeps the generator alive: only the runtime may close it

    async def source() -> Any:
        try:
            for i in range(100):
                yield i
        finally:
            closed.append(True)

    pipe: Pipe[Any, Any] = Pipe(name="lazy")

    @pipe.map(each="work", max_concurrency=2)
    async def fan_out() -> Any:
        sources.append(source())
        return sources[-1]

    @pipe.step()
    async def work(item: int) -> Any:
        await asyncio.sleep(10)
        return Stop

    async def main() -> list[bool]:
        async for _ in pipe.run(None, timeout=0.05):
            pass
        return list(closed)  # before asyncio.run() finalises leftover async generators

    assert asyncio.run(asyncio.wait_for(main(), WATCHDOG_S)) == [True]


def test_a_fast_timed_join_reports_its_wait_before_its_release() -> None:
    pipe: Pipe[Any, Any] = Pipe(name="join")

    @pipe.step(to=["left", "right"])
    async def start() -> None:
        return None

    @pipe.step(to="join")
    async def left() -> None:
        return None

    @pipe.step(to="join")
    async def right() -> None:
        return None

    @pipe.step(barrier_timeout=5.0)
    async def join() -> None:
        return None

    async def main() -> list[Event]:
        return [event async for event in pipe.run(None)]

    events = asyncio.run(asyncio.wait_for(main(), WATCHDOG_S))
    kinds = [e.type for e in events if e.stage == "join"]
    assert kinds.index(EventType.BARRIER_WAIT) < kinds.index(EventType.BARRIER_RELEASE)
    barrier = events[-1].payload.metrics.barriers["join"]
    assert (barrier.waits, barrier.releases) == (1, 1)


def test_each_wave_of_a_timed_join_waits_once_and_ends_once() -> None:
    """`middle` runs twice (statically, then routed from `detour`): the second wave of
    `join` never completes and times out; each wave has exactly one BARRIER_WAIT."""
    pipe: Pipe[Any, Any] = Pipe(name="waves")

    @pipe.step(to=["left", "middle", "detour"])
    async def start() -> None:
        return None

    @pipe.step(to="join")
    async def left() -> None:
        return None

    @pipe.step(to="join")
    async def middle() -> None:
        return None

    @pipe.step()
    async def detour() -> str:
        return "middle"

    @pipe.step(barrier_timeout=0.05)
    async def join() -> None:
        return None

    async def main() -> list[Event]:
        return [event async for event in pipe.run(None)]

    events = asyncio.run(asyncio.wait_for(main(), WATCHDOG_S))
    barrier = [e.type for e in events if e.stage == "join" and e.type in (
        EventType.BARRIER_WAIT, EventType.BARRIER_RELEASE, EventType.STEP_ERROR)]
    assert barrier == [EventType.BARRIER_WAIT, EventType.BARRIER_RELEASE,
                       EventType.BARRIER_WAIT, EventType.STEP_ERROR]


def test_a_swallowed_barrier_timeout_does_not_run_the_joins_successors() -> None:
    ran: list[str] = []
    pipe: Pipe[Any, Any] = Pipe(name="swallowed")

    @pipe.step(to=["skipper", "other"])
    async def start() -> None:
        return None

    @pipe.step(to="join")
    async def skipper() -> Skip:
        return Skip()  # the ALL join never completes

    @pipe.step(to="join")
    async def other() -> None:
        return None

    def swallow(error: Exception) -> None:
        ran.append(f"handler: {error}")

    @pipe.step(to="after", barrier_timeout=0.05, on_error=swallow)
    async def join() -> None:
        ran.append("join")

    @pipe.step()
    async def after() -> None:
        ran.append("after")

    async def main() -> list[Event]:
        return [event async for event in pipe.run(None)]

    asyncio.run(asyncio.wait_for(main(), WATCHDOG_S))
    assert ran == ["handler: Barrier timeout for step 'join' after 0.05s"]  # as upstream
