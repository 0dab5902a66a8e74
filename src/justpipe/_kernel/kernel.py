"""_Kernel: spawns and tracks the run's tasks (the role of an `asyncio.TaskGroup`).

A real TaskGroup cannot span the runner's `yield`s: on a child failure it would
cancel whatever task happens to be iterating the stream, outside the generator.
The kernel keeps TaskGroup's guarantees explicitly instead: every task is tracked,
an unexpected exception in one cancels the others and is re-raised by the runner,
and nothing outlives the run (`shutdown()` cancels and awaits the rest).

On Python 3.12+ tasks start eagerly: a step runs synchronously until its first
real suspension, and one that never suspends costs no event-loop round trip.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

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
    )

    def __init__(self, on_idle: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_idle = on_idle
        self.active = 0
        self.started = 0
        self.peak_active = 0
        self.error: BaseException | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.started += 1
        self.active += 1
        if self.active > self.peak_active:
            self.peak_active = self.active
        if _EAGER:
            task: asyncio.Task[None] = asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg]
            if task.done():
                self._finished(task)
                return
        else:
            task = self._loop.create_task(coro)
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
