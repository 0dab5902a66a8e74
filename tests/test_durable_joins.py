"""A durable run's joins across a resume: a half-arrived ALL join's `barrier_timeout`.

The checkpoint keeps the parents that arrived in a join's current wave; a resume restores
them and starts the join's timeout watcher again (a whole `barrier_timeout` from the
resume, with its BARRIER_WAIT), as the first arrival did in the stopped segment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import EventType, Pipe, Suspend
from justpipe.durable import InMemoryCheckpointStore, SuspendedEndData
from justpipe.types import PipelineTerminalStatus

TIMEOUT = 0.3
SLOW = 1.5  # the missing parent, after the resume: far longer than the join's timeout


@dataclass
class Log:
    ran: list[str] = field(default_factory=list)


def join_pipe(store: Any, delay: dict[str, float]) -> Pipe[Log, None]:
    """a -> join <- c; b suspends, its continuation c takes `delay["c"]`: join waits on both."""
    pipe: Pipe[Log, None] = Pipe(Log, name="joins", durable=store, allow_multi_root=True)

    @pipe.step(to="join")
    async def a(s: Log) -> None:
        s.ran.append("a")

    @pipe.step(to="c")
    async def b(s: Log) -> Any:
        await asyncio.sleep(0.05)  # a arrives at the join first: its wave (and watcher) starts
        return Suspend("ask")

    @pipe.step(to="join")
    async def c(s: Log) -> None:
        await asyncio.sleep(delay["c"])
        s.ran.append("c")

    @pipe.step(barrier_timeout=TIMEOUT)
    async def join(s: Log) -> None:
        s.ran.append("join")

    return pipe


async def test_a_restored_half_arrived_join_times_out_after_the_resume() -> None:
    store = InMemoryCheckpointStore()
    pipe = join_pipe(store, {"c": SLOW})
    first = await collect(pipe, Log())
    assert isinstance(end_data(first), SuspendedEndData)
    assert [e.stage for e in first if e.type is EventType.BARRIER_WAIT] == ["join"]
    run_id = first[-1].run_id

    loop = asyncio.get_running_loop()
    started = loop.time()
    second = await run_with_watchdog(drain(pipe.resume(run_id)))
    types = [(e.type, e.stage) for e in second]
    assert (EventType.BARRIER_WAIT, "join") in types, "the watcher is armed again"
    errors = [e for e in second if e.type is EventType.STEP_ERROR]
    assert [(e.stage, e.payload) for e in errors] == [
        ("join", f"Barrier timeout for step 'join' after {TIMEOUT}s")
    ]
    assert (EventType.STEP_START, "join") not in types, "the join never runs"
    error_at = types.index((EventType.STEP_ERROR, "join"))
    assert error_at < types.index((EventType.STEP_END, "c")), "timed out before c arrived"
    data = end_data(second)
    assert (data.status, data.failed_step) == (PipelineTerminalStatus.FAILED, "join")
    assert loop.time() - started >= TIMEOUT


async def test_a_restored_join_whose_parent_arrives_in_time_runs() -> None:
    """The re-armed watcher is released (BARRIER_RELEASE) when the join fires in time."""
    store = InMemoryCheckpointStore()
    delay = {"c": SLOW}
    pipe = join_pipe(store, delay)
    first = await collect(pipe, Log())
    run_id = first[-1].run_id
    delay["c"] = 0.0
    second = await run_with_watchdog(drain(pipe.resume(run_id)))
    types = [(e.type, e.stage) for e in second]
    assert end_data(second).status is PipelineTerminalStatus.SUCCESS
    assert (EventType.STEP_START, "join") in types
    assert types.index((EventType.BARRIER_WAIT, "join")) < types.index(
        (EventType.BARRIER_RELEASE, "join")
    )
    assert not [e for e in second if e.type is EventType.STEP_ERROR]
