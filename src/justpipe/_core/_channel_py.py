"""The run's control channel (pure twin of `_channel.pyx`).

One FIFO per run of event records and completion records.

Producers (step tasks) `await put()` and wait while the channel holds
`maxsize` items, which is the backpressure `queue_size` promises; once blocked,
producers are released together when the channel has drained to half of
`maxsize` (hysteresis: one wake-up per half-queue instead of one per item, and
exactly asyncio.Queue's interleaving for sizes 1 and 2). The consumer
(the runner's loop) never waits for space: what it emits itself goes in with
`put_nowait()`, so no `queue_size` can deadlock a run (upstream bug B1).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["ControlChannel"]


class ControlChannel:
    __slots__ = (
        "_items",
        "_maxsize",
        "_low",
        "_loop",
        "_consumer",
        "_putters",
        "_granted",
        "max_depth",
    )

    def __init__(self, maxsize: int) -> None:
        self._items: deque[tuple[Any, ...]] = deque()
        self._maxsize = maxsize if maxsize > 0 else 0
        self._low = self._maxsize // 2
        self._loop = asyncio.get_running_loop()
        self._consumer: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._granted = 0  # slots promised to released producers that have not used them yet
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

    def offer(self, item: tuple[Any, ...]) -> bool:
        """Append if there is room right now (no coroutine needed); False if `put` must wait."""
        items = self._items
        if self._maxsize and (self._putters or len(items) + self._granted >= self._maxsize):
            return False
        items.append(item)
        if len(items) > self.max_depth:
            self.max_depth = len(items)
        waiter = self._consumer
        if waiter is not None:
            self._consumer = None
            if not waiter.done():
                waiter.set_result(None)
        return True

    async def put(self, item: tuple[Any, ...]) -> None:
        """Append as a producer: wait (in FIFO order) while the channel is full."""
        items = self._items
        if self._maxsize and (self._putters or len(items) + self._granted >= self._maxsize):
            # wait inline (no nested coroutine: a blocked producer is one frame less)
            putter = self._loop.create_future()
            self._putters.append(putter)
            try:
                await putter
            except BaseException:
                if putter.done() and not putter.cancelled():
                    self._granted -= 1  # released but cancelled before using the slot
                    self._release()
                else:
                    putter.cancel()
                raise
            self._granted -= 1
        items.append(item)
        if len(items) > self.max_depth:
            self.max_depth = len(items)
        waiter = self._consumer
        if waiter is not None:
            self._consumer = None
            if not waiter.done():
                waiter.set_result(None)

    def pop(self) -> tuple[Any, ...] | None:
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._putters and len(items) + self._granted <= self._low:
            self._release()
        return item

    def _release(self) -> None:
        """Grant the free slots to the oldest blocked producers."""
        room = self._maxsize - len(self._items) - self._granted
        putters = self._putters
        while putters and room > 0:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                self._granted += 1
                room -= 1

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
        """Drop every queued record (returned) and release every blocked producer."""
        rest = list(self._items)
        self._items.clear()
        putters = self._putters
        while putters:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                self._granted += 1
        return rest
