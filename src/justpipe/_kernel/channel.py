"""The run's control channel: one FIFO of event records and completion records.

Producers (step tasks) `await put()` and wait while the channel holds
`maxsize` items, which is the backpressure `queue_size` promises. The consumer
(the runner's loop) never waits for space: what it emits itself goes in with
`put_nowait()`, so no `queue_size` can deadlock a run (upstream bug B1).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["_ControlChannel"]


class _ControlChannel:
    __slots__ = ("_items", "_maxsize", "_loop", "_consumer", "_putters", "max_depth")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[tuple[Any, ...]] = deque()
        self._maxsize = maxsize if maxsize > 0 else 0
        self._loop = asyncio.get_running_loop()
        self._consumer: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: tuple[Any, ...]) -> None:
        items = self._items
        items.append(item)
        if len(items) > self.max_depth:
            self.max_depth = len(items)
        waiter = self._consumer
        if waiter is not None:
            self._consumer = None
            if not waiter.done():
                waiter.set_result(None)

    async def put(self, item: tuple[Any, ...]) -> None:
        """Append as a producer: wait while the channel is full."""
        if self._maxsize:
            while len(self._items) >= self._maxsize:
                putter = self._loop.create_future()
                self._putters.append(putter)
                try:
                    await putter
                except BaseException:
                    putter.cancel()
                    self._wake_putter()
                    raise
        self.put_nowait(item)

    def pop(self) -> tuple[Any, ...] | None:
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._putters:
            self._wake_putter()
        return item

    def _wake_putter(self) -> None:
        putters = self._putters
        while putters:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                return

    async def wait(self) -> None:
        """Consumer: wait until an item arrives or `kick()` is called."""
        if self._items:
            return
        waiter = self._loop.create_future()
        self._consumer = waiter
        try:
            await waiter
        finally:
            self._consumer = None

    def kick(self) -> None:
        """Wake the consumer without an item (a task ended, a deadline passed)."""
        waiter = self._consumer
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> list[tuple[Any, ...]]:
        rest = list(self._items)
        self._items.clear()
        while self._putters:
            self._wake_putter()
        return rest
