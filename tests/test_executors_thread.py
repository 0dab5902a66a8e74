"""ThreadExecutor: blocking steps on threads, so they overlap and the event loop stays free.

A plain `def` step that blocks holds the event loop: two parallel 0.3 s steps take
0.6 s. On a ThreadExecutor they overlap. Overlap is asserted on the intervals each step
records (start < other's end), never on wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from helpers import collect, end_data, of_type
from justpipe import EventType, Pipe
from justpipe.executors import CallInfo, ThreadExecutor
from justpipe.types import DefinitionError, PipelineTerminalStatus


@dataclass
class Timings:
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    threads: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def blocking(name: str, seconds: float) -> Any:
    def step(state: Timings) -> None:
        began = time.perf_counter()
        time.sleep(seconds)  # a blocking call: a driver, requests, file I/O
        with state.lock:
            state.spans[name] = (began, time.perf_counter())
            state.threads[name] = threading.current_thread().name

    step.__name__ = name
    return step


def fork_join(executor: Any) -> Pipe[Timings, None]:
    """start -> (left, right) -> join, the two middle steps blocking for 0.3 s."""
    pipe: Pipe[Timings, None] = Pipe(Timings, name="blocking")

    @pipe.step(to=["left", "right"])
    async def start(state: Timings) -> None:
        pass

    options = {} if executor is None else {"executor": executor}
    pipe.step("left", to="join", **options)(blocking("left", 0.3))
    pipe.step("right", to="join", **options)(blocking("right", 0.3))

    @pipe.step
    async def join(state: Timings) -> None:
        pass

    return pipe


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


async def test_two_blocking_steps_overlap_on_threads() -> None:
    async with ThreadExecutor(2) as pool:
        state = Timings()
        events = await collect(fork_join(pool), state)
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert overlap(state.spans["left"], state.spans["right"]), state.spans
    assert state.threads["left"] != state.threads["right"]
    assert all(name.startswith("justpipe-thread") for name in state.threads.values())


async def test_in_the_event_loop_the_same_steps_run_one_after_the_other() -> None:
    """The baseline the executor exists for (sync steps block the loop)."""
    state = Timings()
    await collect(fork_join(None), state)
    assert not overlap(state.spans["left"], state.spans["right"]), state.spans


async def test_the_step_gets_the_state_itself_and_no_copy_warning() -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, executors={"io": ThreadExecutor(1)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "pickled copy" warning for threads

        @pipe.step(executor="io")
        def fill(state: dict[str, Any]) -> None:
            state["filled_in"] = threading.current_thread().name

    state: dict[str, Any] = {}
    events = await collect(pipe, state)
    assert state["filled_in"].startswith("justpipe-thread")
    (end,) = [e for e in of_type(events, EventType.STEP_END) if e.stage == "fill"]
    framework = end.meta["framework"]  # type: ignore[index]
    assert framework["executor"] == "thread"
    assert framework["worker"] == f"thread {state['filled_in']}"
    await pipe.executors["io"].aclose()


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def test_context_variables_follow_the_call_into_the_thread() -> None:
    pool = ThreadExecutor(1)
    request_id.set("req-7")
    seen = await pool.call(request_id.get, {}, info=CallInfo("read"))
    assert seen == "req-7"
    await pool.aclose()


async def test_async_steps_run_on_the_threads_own_loop() -> None:
    async def where() -> tuple[str, int]:
        await asyncio.sleep(0)
        return threading.current_thread().name, id(asyncio.get_running_loop())

    pool = ThreadExecutor(1)
    first = await pool.call(where, {}, info=CallInfo("where"))
    second = await pool.call(where, {}, info=CallInfo("where"))
    assert first[0].startswith("justpipe-thread")
    assert first == second  # one persistent loop per worker thread
    assert first[1] != id(asyncio.get_running_loop())
    await pool.aclose()


async def test_the_step_timeout_applies_and_the_error_type_is_kept() -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, allow_multi_root=True)
    pool = ThreadExecutor(2)

    @pipe.step(executor=pool, timeout=0.05)
    def slow(state: dict[str, Any]) -> None:
        time.sleep(0.5)

    @pipe.step(executor=pool)
    def fails(state: dict[str, Any]) -> None:
        raise KeyError("missing")

    events = await collect(pipe, {})
    errors = {e.stage: e for e in of_type(events, EventType.STEP_ERROR)}
    assert str(errors["slow"].payload).startswith("Step 'slow' timed out after 0.05s")
    assert errors["fails"].meta["framework"]["error_type"] == "KeyError"  # type: ignore[index]
    await pool.aclose()


async def test_an_unbounded_map_keeps_at_most_capacity_calls_in_flight() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(item: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    pipe: Pipe[dict[str, Any], None] = Pipe(dict)
    pool = ThreadExecutor(2)

    @pipe.map(each="work")
    async def items(state: dict[str, Any]) -> list[int]:
        return list(range(8))

    pipe.step("work", executor=pool)(work)
    events = await collect(pipe, {})
    assert end_data(events).status is PipelineTerminalStatus.SUCCESS
    assert peak == 2
    await pool.aclose()


async def test_aclose_fails_the_calls_in_flight() -> None:
    pool = ThreadExecutor(1)
    release = threading.Event()

    def wait_for_release() -> None:
        release.wait(5)

    call = asyncio.ensure_future(pool.call(wait_for_release, {}, info=CallInfo("hold")))
    queued = asyncio.ensure_future(pool.call(wait_for_release, {}, info=CallInfo("queued")))
    await asyncio.sleep(0.05)
    await pool.aclose()
    for task, step in ((call, "hold"), (queued, "queued")):
        with pytest.raises(RuntimeError, match=f"closed while step '{step}'"):
            await task
    release.set()


async def test_a_streaming_step_is_refused_before_the_run_starts() -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict)

    @pipe.step(executor=ThreadExecutor(1))
    async def tokens(state: dict[str, Any]) -> AsyncIterator[str]:
        yield "a"

    with pytest.raises(DefinitionError, match="cannot stream"):
        await collect(pipe, {})
