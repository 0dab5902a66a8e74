"""ThreadExecutor: blocking steps on a pool of threads of this process (standard library).

A plain `def` step runs in the event loop's thread and blocks it: two parallel steps
that each wait 0.3 s on a blocking call take 0.6 s, and no other step, event or timeout
gets a turn meanwhile. On a `ThreadExecutor` each call runs on a worker thread, so
blocking calls (a database driver, `requests`, file I/O, C code that releases the GIL)
overlap and the event loop stays free.

Unlike the other executors nothing is pickled: the function receives the run's own
state and context objects (not copies), so it can change them, and steps running at the
same time see each other's changes: guard shared data with a lock, or return values and
merge them with `on_result=`, which runs in the event loop one call at a time. Context
variables are copied into the worker thread, as `asyncio.to_thread` does.

`async def` steps run on a persistent event loop of their worker thread. Stopping: a
cancelled `async def` call is cancelled at its next `await`; a plain function cannot be
interrupted, so it runs to its end in its thread (its result is dropped) and holds that
thread until then. Async generator steps cannot run here (`supports_streaming` is
False): keep them in the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from justpipe._checks import check_count
from justpipe._timeouts import within_timeout
from justpipe.executors import _remote
from justpipe.executors.base import CallInfo, Executor, Placement, TraceHook

__all__ = ["ThreadExecutor"]


def _default_workers() -> int:
    """As `concurrent.futures.ThreadPoolExecutor`: enough threads for I/O-bound work."""
    return min(32, (os.cpu_count() or 1) + 4)


class _Running:
    """One call on its worker thread: where it runs, and its coroutine (an `async def`
    step) for cancelling it from the event loop."""

    __slots__ = ("lock", "where", "loop", "task", "cancelled")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.where: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.loop is not None and self.task is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)


class ThreadExecutor(Executor):
    """Runs steps on `max_workers` threads of this process (default: as
    `concurrent.futures.ThreadPoolExecutor`, min(32, CPUs + 4))."""

    name = "thread"
    supports_streaming = False
    copies_arguments = False

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        thread_name_prefix: str = "justpipe-thread",
        trace_hook: TraceHook | None = None,
    ) -> None:
        super().__init__(trace_hook=trace_hook)
        check_count(max_workers, "ThreadExecutor(max_workers=...)", minimum=1, allow_none=True)
        if not isinstance(thread_name_prefix, str):
            raise TypeError(
                "ThreadExecutor(thread_name_prefix=...) must be a string, got "
                f"{type(thread_name_prefix).__name__}: {thread_name_prefix!r}."
            )
        self._max_workers = max_workers if max_workers is not None else _default_workers()
        self._prefix = thread_name_prefix
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: set[tuple[asyncio.Future[Any], _Running]] = set()

    @property
    def capacity(self) -> int:
        return self._max_workers

    async def _start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._max_workers, thread_name_prefix=self._prefix
        )

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        inflight, self._inflight = list(self._inflight), set()
        for waiting, running in inflight:  # their callers fail now (see _call)
            running.cancel()
            waiting.get_loop().call_soon_threadsafe(waiting.cancel)
        if pool is not None:
            # queued calls are dropped; a running plain function finishes in its thread
            pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo) -> Any:
        await self.start()
        return await within_timeout(self._call(fn, kwargs, info), info.step, info.timeout)

    async def _call(self, fn: Callable[..., Any], kwargs: dict[str, Any], info: CallInfo) -> Any:
        pool = self._pool
        generation = self._generation
        running = _Running()
        if pool is None:  # closed while this call waited for the start
            raise self._closed_error(info.step)
        # context variables follow the call into the thread, as with asyncio.to_thread
        context = contextvars.copy_context()
        try:
            future = pool.submit(context.run, self._run, fn, kwargs, info, running)
        except RuntimeError as exc:  # shut down meanwhile
            raise self._closed_error(info.step) from exc
        waiting = asyncio.wrap_future(future)
        entry = (waiting, running)
        self._inflight.add(entry)
        try:
            return await waiting
        except asyncio.CancelledError:
            running.cancel()
            if self._generation != generation and not _cancelling():
                raise self._closed_error(info.step) from None  # aclose() gave up on it
            raise
        finally:
            self._inflight.discard(entry)
            if running.where is not None and info.on_placed is not None:
                info.on_placed(Placement(self.name, running.where))

    def _run(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], info: CallInfo, running: _Running
    ) -> Any:
        """On the worker thread: the function, inside the trace hook; a coroutine it
        returns runs on this thread's own event loop, within the step's timeout."""
        running.where = f"thread {threading.current_thread().name}"
        with _remote.hook_context(self.trace_hook, info):
            result = fn(**kwargs)
            if asyncio.iscoroutine(result):
                result = _await_here(result, info, running)
        return result

    def stream(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo
    ) -> AsyncIterator[Any]:
        raise TypeError(
            f"Step '{info.step}' streams its results (it is an async generator), and the "
            "ThreadExecutor cannot stream: keep it in the event loop (no executor=), or "
            "make it return a list."
        )


def _await_here(coro: Any, info: CallInfo, running: _Running) -> Any:
    """Run an `async def` step's coroutine on this worker thread's persistent loop."""
    loop = _remote.worker_loop()
    task = loop.create_task(within_timeout(coro, info.step, info.timeout))
    with running.lock:
        running.loop, running.task = loop, task
        if running.cancelled:
            task.cancel()
    return loop.run_until_complete(task)


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (not just an awaited future)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
