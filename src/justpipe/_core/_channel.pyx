"""The run's control channel (compiled twin of `_channel_py.py`, which documents it)."""

import asyncio
from collections import deque

__all__ = ["ControlChannel"]


cdef class ControlChannel:
    cdef object _items
    cdef Py_ssize_t _maxsize
    cdef Py_ssize_t _low
    cdef object _loop
    cdef object _consumer
    cdef object _putters
    cdef Py_ssize_t _granted
    cdef public Py_ssize_t max_depth

    def __init__(self, maxsize):
        cdef Py_ssize_t size = maxsize
        self._items = deque()
        self._maxsize = size if size > 0 else 0
        self._low = self._maxsize // 2
        self._loop = asyncio.get_running_loop()
        self._consumer = None
        self._putters = deque()
        self._granted = 0
        self.max_depth = 0

    def __len__(self):
        return len(self._items)

    cdef inline void _append(self, item):
        cdef Py_ssize_t size
        self._items.append(item)
        size = len(self._items)
        if size > self.max_depth:
            self.max_depth = size
        waiter = self._consumer
        if waiter is not None:
            self._consumer = None
            if not waiter.done():
                waiter.set_result(None)

    cdef inline bint _full(self):
        return self._maxsize != 0 and (
            len(self._putters) != 0 or len(self._items) + self._granted >= self._maxsize
        )

    def put_nowait(self, item):
        self._append(item)

    def offer(self, item):
        """Append if there is room right now; False if `put` must wait."""
        if self._full():
            return False
        self._append(item)
        return True

    async def put(self, item):
        """Append as a producer: wait (in FIFO order) while the channel is full."""
        if self._full():
            putter = self._loop.create_future()
            self._putters.append(putter)
            try:
                await putter
            except BaseException:
                if putter.done() and not putter.cancelled():
                    self._granted -= 1
                    self._release()
                else:
                    putter.cancel()
                raise
            self._granted -= 1
        self._append(item)

    def pop(self):
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._putters and len(items) + self._granted <= self._low:
            self._release()
        return item

    cdef void _release(self):
        cdef Py_ssize_t room = self._maxsize - len(self._items) - self._granted
        putters = self._putters
        while putters and room > 0:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                self._granted += 1
                room -= 1

    async def wait(self):
        """Consumer: wait until an item arrives or `kick()` is called."""
        if self._items:
            return
        waiter = self._loop.create_future()
        self._consumer = waiter
        try:
            await waiter
        finally:
            self._consumer = None

    def kick(self):
        """Wake the consumer without an item (a task ended, a deadline passed)."""
        waiter = self._consumer
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self):
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
