"""Eager task start on Python 3.11 (pure-Python twin of `_eager.pyx`).

Python 3.12 can start a task eagerly (``asyncio.Task(..., eager_start=True)``): its
coroutine runs synchronously, as that task, until its first real suspension, so a
step that never suspends costs no event-loop round trip, and a successor scheduled
by the run's loop runs while the loop is still draining the channel. 3.11 has no
such option; `start_eagerly` gives the same semantics with a normal task:

1. the task is created around a `Shell` (so ``current_task()``, cancellation and
   the copied contextvars context are the task's own from the first instruction:
   ``asyncio.timeout()`` or a ``TaskGroup`` opened before the first suspension bind
   to the right task);
2. the coroutine's first step runs at once, inside that context and with the task
   swapped in as the loop's current task (as 3.12's eager start does);
3. the task's own first step only hands over what that eager step produced: the
   future it waits on (the task now waits on it, from the next loop iteration on),
   or its return value or exception. In those two cases the step is run at once
   (on asyncio's own loops, whose ready queue we can see), so the task is done
   when `start_eagerly` returns, exactly like a 3.12 eager task that never
   suspended. From then on the shell forwards every `send`/`throw`.

`justpipe._core` imports this module (and its compiled twin) on 3.11 only. It needs
two private asyncio functions, `asyncio.tasks._enter_task` and `_leave_task`, to swap
the loop's current task; they are looked up defensively, so that if a release renames
them, `import justpipe` still works and `start_eagerly` starts tasks the ordinary way
(`EAGER` is then False).

A task cancelled before its first step gets the cancellation where the coroutine
is suspended (the future it waited on is cancelled first, as `Task.cancel()` does);
a coroutine that already finished eagerly finishes with its result, like a 3.12
task that is done before anyone could cancel it.
"""

from __future__ import annotations

import asyncio
import contextvars
from asyncio import tasks as _tasks
from collections import deque
from collections.abc import Coroutine
from typing import Any

__all__ = ["EAGER", "Shell", "start_eagerly"]

_enter_task: Any = getattr(_tasks, "_enter_task", None)
_leave_task: Any = getattr(_tasks, "_leave_task", None)
EAGER: bool = callable(_enter_task) and callable(_leave_task)
"""Whether `start_eagerly` runs first steps eagerly here (False: it starts tasks normally)."""
# (no module-level aliases of asyncio's public names: timed, `start_eagerly` was no faster
# with them, about 4.0 us per call either way on 3.11)

# Shell states
FRESH = 0  # the coroutine never ran
SUSPENDED = 1  # its eager step suspended on `value` (a future, or None for a bare yield)
RETURNED = 2  # its eager step returned `value`
RAISED = 3  # its eager step raised `value`
RUNNING = 4  # the task drives it: plain forwarding


class Shell:
    """The coroutine protocol around a coroutine whose first step may already have run."""

    __slots__ = ("_coro", "_state", "_value")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._state = FRESH
        self._value: Any = None

    @property
    def returned(self) -> bool:
        """The eager step ran the coroutine to its end: the task only hands over the result."""
        return self._state == RETURNED

    def first_step(self) -> None:
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

    # An exception passing through `send`/`throw` keeps their frames in its traceback;
    # the `finally` clauses drop the locals that refer back to it (the exception, the
    # shell), or every failed or cancelled step would leave a reference cycle.

    def send(self, value: Any) -> Any:
        state = self._state
        if state == RUNNING:
            return self._coro.send(value)
        self._state = RUNNING
        held = self._value
        self._value = None
        try:
            if state == SUSPENDED:
                return held  # the task waits on that future now
            if state == RETURNED:
                raise StopIteration(held)
            if state == RAISED:
                raise held
            return self._coro.send(value)  # FRESH
        finally:
            held = self = None  # type: ignore[assignment]

    def __next__(self) -> Any:
        return self.send(None)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        state = self._state
        self._state = RUNNING
        held = self._value
        self._value = None
        coro = self._coro
        try:
            if state == RETURNED:
                raise StopIteration(held)  # finished before the task ever ran
            if state == RAISED:
                raise held
            if state == SUSPENDED and asyncio.isfuture(held) and _is_cancellation(typ):
                held.cancel()  # what Task.cancel() does to the future a task waits on
            if val is None and tb is None:
                return coro.throw(typ)
            return coro.throw(typ, val, tb)
        finally:
            typ = val = tb = held = coro = self = None  # type: ignore[assignment]

    def close(self) -> None:
        self._state = RUNNING
        self._value = None
        self._coro.close()

    def __await__(self) -> Shell:
        return self

    def __iter__(self) -> Shell:
        return self

    def __repr__(self) -> str:
        return repr(self._coro)


def _is_cancellation(typ: Any) -> bool:
    if isinstance(typ, type):
        return issubclass(typ, asyncio.CancelledError)
    return isinstance(typ, asyncio.CancelledError)


def start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any]:
    """A task for `coro` whose first step has already run (see the module docstring).

    When that step finished the coroutine (returned or raised) and the loop keeps its
    ready queue where asyncio's own loops do, the task's pending first step is run at
    once as well, so the task is done on return, as a 3.12 eager task would be. (On
    other loops, uvloop for one, that step stays scheduled: the task is done one
    iteration later.)
    """
    shell = Shell(coro)
    context = contextvars.copy_context()
    ready = getattr(loop, "_ready", None)
    task: asyncio.Task[Any]
    if type(ready) is deque and loop.get_task_factory() is None:
        # asyncio's own loop: what `loop.create_task` does, without its Python wrapper
        task = asyncio.Task(shell, loop=loop, context=context)
    else:
        task = loop.create_task(shell, context=context)
    if not EAGER:
        return task  # the shell is FRESH: the task runs the coroutine from its start
    step = ready[-1] if type(ready) is deque and ready else None  # the task's first step
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
                context.run(step._callback, *step._args)  # the task hands its outcome over
                step.cancel()  # and the loop skips the queued copy
        finally:
            if current is not None:
                _enter_task(loop, current)
    try:
        return task
    finally:
        # A step that raised in `first_step` keeps that frame in its exception's traceback,
        # and the frame's f_back is this one: no local here may lead back to the task (task
        # -> exception -> traceback -> frames -> task would be a cycle per failed step).
        task = step = current = shell = None  # type: ignore[assignment]


def _steps(handle: Any, task: asyncio.Task[Any]) -> bool:
    """Whether `handle` is the scheduled step of `task` (and can be run here)."""
    callback = getattr(handle, "_callback", None)
    return getattr(callback, "__self__", None) is task and hasattr(handle, "_args")
