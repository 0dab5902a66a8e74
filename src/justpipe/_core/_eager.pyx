"""Eager task start on Python 3.11 (compiled twin of `_eager_py.py`, which documents it)."""

import asyncio
import contextvars
from asyncio import tasks as _tasks
from collections import deque
from collections.abc import Coroutine

__all__ = ["EAGER", "Shell", "start_eagerly"]

# private asyncio names, looked up defensively (see `_eager_py`): missing, tasks start normally
cdef object _enter_task = getattr(_tasks, "_enter_task", None)
cdef object _leave_task = getattr(_tasks, "_leave_task", None)
cdef bint _EAGER = callable(_enter_task) and callable(_leave_task)
EAGER = _EAGER
# asyncio's public names are looked up where used: with C-level aliases `start_eagerly`
# timed the same (3.9-4.7 us per call either way, within the noise)

cdef enum:
    FRESH = 0
    SUSPENDED = 1
    RETURNED = 2
    RAISED = 3
    RUNNING = 4


cdef class Shell:
    """The coroutine protocol around a coroutine whose first step may already have run."""

    cdef object _coro
    cdef int _state
    cdef object _value

    def __init__(self, coro):
        self._coro = coro
        self._state = FRESH
        self._value = None

    @property
    def returned(self):
        """The eager step ran the coroutine to its end: the task only hands over the result."""
        return self._state == RETURNED

    def first_step(self):
        """Run the coroutine's first step now (only from `start_eagerly`)."""
        try:
            self._value = self._coro.send(None)
            self._state = SUSPENDED
        except StopIteration as stop:
            self._value = stop.value
            self._state = RETURNED
        except BaseException as exc:
            self._value = exc
            self._state = RAISED

    # The pure twin drops its locals in `finally` clauses (in `send`, `throw` and
    # `start_eagerly`) so that a failed step's traceback holds no frame that leads back to
    # the exception. Nothing to drop here: the frames Cython adds to a traceback carry
    # neither locals nor f_back. tests/test_core_eager.py checks both twins for cycles.

    def send(self, value):
        cdef int state = self._state
        if state == RUNNING:
            return self._coro.send(value)
        self._state = RUNNING
        held = self._value
        self._value = None
        if state == SUSPENDED:
            return held
        if state == RETURNED:
            raise StopIteration(held)
        if state == RAISED:
            raise held
        return self._coro.send(value)

    def __next__(self):
        return self.send(None)

    def throw(self, typ, val=None, tb=None):
        cdef int state = self._state
        self._state = RUNNING
        held = self._value
        self._value = None
        if state == RETURNED:
            raise StopIteration(held)
        if state == RAISED:
            raise held
        if state == SUSPENDED and asyncio.isfuture(held) and _is_cancellation(typ):
            held.cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self):
        self._state = RUNNING
        self._value = None
        self._coro.close()

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __repr__(self):
        return repr(self._coro)


Coroutine.register(Shell)


cdef bint _is_cancellation(typ):
    if isinstance(typ, type):
        return issubclass(typ, asyncio.CancelledError)
    return isinstance(typ, asyncio.CancelledError)


def start_eagerly(loop, coro):
    """A task for `coro` whose first step has already run (see `_eager_py`)."""
    cdef Shell shell = Shell(coro)
    context = contextvars.copy_context()
    ready = getattr(loop, "_ready", None)
    if type(ready) is deque and loop.get_task_factory() is None:
        task = asyncio.Task(shell, loop=loop, context=context)
    else:
        task = loop.create_task(shell, context=context)
    if not _EAGER:
        return task
    step = ready[len(ready) - 1] if type(ready) is deque and ready else None  # (no wraparound)
    current = asyncio.current_task(loop)
    if current is not None:
        _leave_task(loop, current)
    _enter_task(loop, task)
    try:
        context.run(shell.first_step)
    finally:
        _leave_task(loop, task)
        try:
            state = shell._state
            if step is not None and (state == RETURNED or state == RAISED) and _steps(step, task):
                context.run(step._callback, *step._args)
                step.cancel()
        finally:
            if current is not None:
                _enter_task(loop, current)
    return task


cdef bint _steps(handle, task):
    callback = getattr(handle, "_callback", None)
    return getattr(callback, "__self__", None) is task and hasattr(handle, "_args")
