"""The interface between justpipe's kernel and an engine that runs step functions elsewhere.

An `Executor` runs one step invocation at a time per `call()`/`stream()`: the kernel
builds the step's keyword arguments as usual, hands them over with a `CallInfo`, and gets
back the function's return value (or its streamed items) exactly as if the function had
run in the event loop, so events, lineage, retries and error handling stay in the
orchestrator and the event stream does not change.

The contract every executor keeps:

* **Lazy and reusable.** Constructing an executor starts nothing; the first `call()`/
  `stream()` (or `await start()`, or `async with`) starts the engine, later runs reuse
  it, `await aclose()` stops what the executor started (never an engine it was handed).
  An executor is not bound to one event loop: runs on successive loops may share it.
* **Functions.** `fn` may be a plain function, an `async def` (run on a *persistent*
  event loop in the worker, one per worker thread, never `asyncio.run` per call) or, for
  `stream()`, an async (or plain) generator function. `fn`, the keyword arguments and the
  result travel pickled (with cloudpickle where it is installed, so lambdas and closures
  work); anything that cannot be pickled raises `TypeError` naming the step, the value's
  type and the fix, before anything is sent.
* **Failures.** An exception raised by `fn` is re-raised locally with its original type;
  the remote traceback is attached as a note (`add_note`). The engines' own retries are
  off: justpipe owns retries. A worker that dies while running a call fails that call
  only, with `WorkerLostError`; the engine replaces the worker.
* **Timeouts and cancellation.** `info.timeout` bounds the whole call (raising the
  step's timeout error, `justpipe._timeouts.timeout_error`). Cancelling the awaiting
  task cancels the remote work: cooperatively first, then by force after the
  executor's grace period where the engine allows it (see each executor for what may
  keep running).
* **Placement.** `info.on_placed`, when set, is called in the event loop with a
  `Placement` (executor name, worker id) once the executor knows where the call ran,
  before `call()` returns or raises (`stream()`: before its first item).
* **Tracing.** `info.carrier` (a dict of strings, e.g. W3C trace headers) is shipped to
  the worker, where the executor's `trace_hook(info)` (default: none) is entered as a
  context manager around `fn`; a hook is how OpenTelemetry context crosses the process
  boundary.

The kernel's side of the contract: check `supports_streaming` before a run whose steps
stream; without a step's `max_concurrency`, bound in-flight calls with `limiter()`
(a semaphore of `capacity`).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal

from justpipe._checks import check_callable, check_seconds

__all__ = [
    "CallInfo",
    "CapacityLimiter",
    "Executor",
    "Placement",
    "TraceHook",
    "WorkerLostError",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """Where a call ran: the executor's name and the engine's id of the worker."""

    executor: str
    worker: str


@dataclasses.dataclass(frozen=True, slots=True)
class CallInfo:
    """What an executor knows about one invocation besides the function and its arguments.

    Everything but `on_placed` is shipped to the worker (and given to the trace hook).
    """

    step: str
    invocation_id: str = ""
    attempt: int = 1
    timeout: float | None = None
    carrier: Mapping[str, str] | None = None
    on_placed: Callable[[Placement], None] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    def shipped(self) -> CallInfo:
        """The copy sent to the worker (without the local callback)."""
        if self.on_placed is None:
            return self
        carrier = dict(self.carrier) if self.carrier is not None else None
        return CallInfo(self.step, self.invocation_id, self.attempt, self.timeout, carrier)


TraceHook = Callable[[CallInfo], AbstractContextManager[Any]]
"""Entered around the function in the worker; must be picklable (module-level)."""


class WorkerLostError(RuntimeError):
    """The worker running a call died (killed, crashed, out of memory) before it answered.

    Only that call fails; the executor replaces the worker. `step` names the step and
    `detail` says what happened to the worker.
    """

    def __init__(self, step: str, detail: str) -> None:
        detail = detail.rstrip(". ")
        super().__init__(
            f"Step '{step}' lost its worker: {detail}. The call did not complete; other "
            "calls are unaffected and the worker was replaced. Add retries to the step "
            "if it should run again."
        )
        self.step = step
        self.detail = detail


class Executor(abc.ABC):
    """Runs step functions somewhere else: a process pool, a Dask cluster, Ray.

    Subclasses implement `_start`, `_close`, `call`, `stream` and `capacity`. See the
    module docstring for the contract.
    """

    name: str = "executor"
    supports_streaming: bool = True
    #: Whether the function receives pickled copies of its arguments (every engine that
    #: runs it in another process); False for `ThreadExecutor`, which passes the objects.
    copies_arguments: bool = True

    def __init__(self, *, trace_hook: TraceHook | None = None) -> None:
        check_callable(
            trace_hook,
            f"{type(self).__name__}(trace_hook=...)",
            shape="(CallInfo) -> context manager, e.g. otel.worker_trace_hook",
        )
        self.trace_hook = trace_hook
        self._started = False
        self._starting: asyncio.Future[None] | None = None
        self._generation = 0  # counts aclose() calls: a call sees if it was closed under it
        self._limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def started(self) -> bool:
        return self._started

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many calls may run at once (workers or worker slots); valid after start."""

    async def start(self) -> None:
        """Start the engine (idempotent); every `call()`/`stream()` does it on first use."""
        if self._started:
            return
        task = self._starting
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = self._starting = asyncio.ensure_future(self._start())
        try:
            # shielded: one caller's cancellation does not abort the start for the others
            await asyncio.shield(task)
        except BaseException:
            if task.done():
                self._starting = None
            raise
        self._starting = None
        self._started = True

    async def aclose(self) -> None:
        """Stop what this executor started; in-flight calls fail. It may be started again."""
        if not self._started:
            return
        self._started = False
        self._generation += 1
        self._limiters = weakref.WeakKeyDictionary()
        await self._close()

    async def __aenter__(self) -> Executor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def limiter(self) -> asyncio.Semaphore:
        """A semaphore of `capacity` for this event loop: the bound of in-flight calls for
        callers without their own `max_concurrency` (one per loop, shared by its runs).

        Valid before the executor started: its first `acquire()` starts the executor
        (the engine's capacity is known only then) and opens the slots.
        """
        loop = asyncio.get_running_loop()
        sem = self._limiters.get(loop)
        if sem is None:
            sem = self._limiters[loop] = CapacityLimiter(self)
        return sem

    def _closed_error(self, step: str) -> RuntimeError:
        return RuntimeError(
            f"the {type(self).__name__} was closed while step '{step}' was running or waiting"
        )

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo) -> Any:
        """Run `fn(**kwargs)` on a worker and return its result (awaited if a coroutine)."""

    @abc.abstractmethod
    def stream(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo
    ) -> AsyncIterator[Any]:
        """Run the generator function `fn(**kwargs)` on a worker, yielding its items in
        order; closing the iterator early cancels the remote generator."""

    def __repr__(self) -> str:
        state = "started" if self._started else "not started"
        return f"<{type(self).__name__} {state}>"


def check_grace(value: Any, subject: str) -> None:
    """`cancel_grace=`: seconds >= 0 that a thread timer can wait."""
    check_seconds(value, subject, allow_none=False, allow_zero=True, maximum=threading.TIMEOUT_MAX)


class CapacityLimiter(asyncio.Semaphore):
    """`Executor.limiter()`: a semaphore of the executor's `capacity` slots, usable before
    the executor has started.

    An engine's capacity (Dask's worker threads, Ray's CPUs) is known only once it is
    running, so the semaphore starts with no slots; the first `acquire()` starts the
    executor (shared with every other caller, as `start()` is) and then opens `capacity`
    slots. An executor that is already running opens them at once.
    """

    def __init__(self, executor: Executor) -> None:
        super().__init__(0)
        self._executor = executor
        self._opened = False
        if executor.started:
            self._open()

    def _open(self) -> None:
        self._opened = True
        for _ in range(self._executor.capacity):
            self.release()

    def locked(self) -> bool:
        # before the start nobody holds a slot: acquire() waits for the start, not a slot
        return self._opened and super().locked()

    async def acquire(self) -> Literal[True]:
        if not self._opened:
            await self._executor.start()
            if not self._opened:  # the first caller back from the start opens the slots
                self._open()
        return await super().acquire()
