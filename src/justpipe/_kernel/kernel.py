"""_Kernel: spawns and tracks the run's tasks (the role of an `asyncio.TaskGroup`).

A real TaskGroup cannot span the runner's `yield`s: on a child failure it would
cancel whatever task happens to be iterating the stream, outside the generator.
The kernel keeps TaskGroup's guarantees explicitly instead: every task is tracked,
an unexpected exception in one cancels the others and is re-raised by the runner,
and nothing outlives the run (`shutdown()` cancels and awaits the rest).

Tasks start eagerly: a step runs synchronously, as its own task, until its first
real suspension, so one that never suspends costs no extra event-loop round trip
and a successor the run's loop schedules runs while the loop drains the channel
(3.12+: `eager_start=True`; 3.11: `_core.start_eagerly`, which gives the same
semantics). `eager_left` bounds how many tasks start eagerly before the loop must
let the event loop run again: the runner refills it whenever it waits, so a long
chain of steps that never suspend still lets timers (the run timeout) and other
tasks in.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from justpipe import _core

__all__ = ["_Kernel"]

_EAGER = sys.version_info >= (3, 12)


class _Kernel:
    __slots__ = (
        "_loop",
        "_tasks",
        "_on_idle",
        "active",
        "started",
        "peak_active",
        "error",
        "eager_left",
        "_start_eagerly",
    )

    def __init__(self, on_idle: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_idle = on_idle
        self.active = 0
        self.started = 0
        self.peak_active = 0
        self.error: BaseException | None = None
        self.eager_left = 0  # eager starts left before the loop must let the event loop run
        self._start_eagerly = _core.start_eagerly

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.started += 1
        self.active += 1
        if self.active > self.peak_active:
            self.peak_active = self.active
        task: asyncio.Task[None]
        if self.eager_left <= 0:
            task = self._loop.create_task(coro)
        elif _EAGER:
            self.eager_left -= 1
            if self._loop.get_task_factory() is None:
                task = asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg]
            else:
                # A task factory set on the loop must see every task, but through 3.13 it
                # cannot be asked for an eager one: `loop.create_task(coro, *, name, context)`
                # takes no other keyword and calls `factory(loop, coro[, context=])`. So the
                # task goes through the factory and starts as the factory decides (normally,
                # or eagerly under `asyncio.eager_task_factory`, hence the `done()` below).
                task = self._loop.create_task(coro)
            if task.done():
                self._finished(task)
                return
        else:
            self.eager_left -= 1
            task = self._start_eagerly(self._loop, coro)
            if task.done():  # finished in its eager step, like a 3.12 eager task
                self._finished(task)
                return
            if task.get_coro().returned:  # type: ignore[union-attr]
                # finished, but on a loop without asyncio's ready queue (uvloop) the task
                # only hands its result over in the next iteration (`settle()` waits for
                # that before the run ends)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                self.active -= 1
                return
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.active -= 1
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and self.error is None:
                self.error = exc
                self.cancel_all()
        if self.active == 0 or self.error is not None:
            self._on_idle()

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def settle(self) -> None:
        """Let tasks that already finished eagerly hand their results over (one iteration)."""
        while any(not task.done() for task in self._tasks):
            await asyncio.sleep(0)

    async def shutdown(self) -> None:
        """Cancel every live task and wait until all of them have finished."""
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    @property
    def live(self) -> int:
        return len(self._tasks)
