"""ProcessExecutor: steps on a pool of local worker processes (standard library only).

The pool is justpipe's own: `max_workers` `multiprocessing` processes, each with a duplex
pipe and a persistent event loop, running one call at a time. It is not
`concurrent.futures.ProcessPoolExecutor`, because that pool breaks as a whole when one
worker dies (every pending future fails with `BrokenProcessPool`); here a dead worker fails
only the call it was running (`WorkerLostError`) and is replaced at once.

Stopping: cancelling a call (a step or run timeout, `Stop`, closing the run, `aclose()`)
sends a cancel to the worker, which cancels an `async def` step at its next `await`. A
plain function cannot be interrupted: if the worker has not stopped after `cancel_grace`
seconds it is killed (SIGKILL) and a new one started. After `aclose()` no worker process
remains.

Workers start as fresh interpreters, the way multiprocessing's `spawn` method starts
them (the parent's sys.path, working directory and main module), but as plain child
processes on a socket pair, so no forkserver or resource-tracker process is started
and nothing outlives `aclose()` (on Windows, or with `mp_context=`, multiprocessing
starts them). A worker inherits neither the parent's threads nor its event loop, and
functions are found by import (module-level functions need nothing else; lambdas and
closures need cloudpickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from multiprocessing import spawn
from multiprocessing.connection import Connection
from typing import Any

from justpipe._checks import check_count
from justpipe._timeouts import stream_within_timeout, within_timeout
from justpipe.executors import _remote, _worker
from justpipe.executors.base import (
    CallInfo,
    Executor,
    Placement,
    TraceHook,
    WorkerLostError,
    check_grace,
)
from justpipe.logs import EXECUTORS

__all__ = ["ProcessExecutor"]

_log = logging.getLogger(EXECUTORS)

_START_TIMEOUT = 60.0


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


_CAN_PASS_FDS = os.name == "posix"
_BOOTSTRAP = "from justpipe.executors._worker import bootstrap; bootstrap()"


class _Subprocess:
    """A worker started with `subprocess` (the `multiprocessing.Process` calls we use)."""

    __slots__ = ("popen",)

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


def _launch_subprocess(index: int) -> tuple[_Subprocess, Connection]:
    """Start a worker the way multiprocessing's spawn does (a fresh interpreter that gets
    the parent's sys.path, working directory and main module), but as a plain child
    process on a socket pair: no forkserver or resource-tracker process is started, so
    nothing of the pool outlives `aclose()`."""
    parent_sock, child_sock = socket.socketpair()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        popen = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(child_sock.fileno()), str(index)],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        child_sock.close()
    conn = Connection(parent_sock.detach())
    preparation = spawn.get_preparation_data(f"justpipe-process-worker-{index}")
    if "authkey" in preparation:  # an AuthenticationString refuses to be pickled
        preparation["authkey"] = bytes(preparation["authkey"])
    conn.send(preparation)
    return _Subprocess(popen), conn


def _describe_exit(pid: int | None, code: int | None) -> str:
    if code is None:
        return f"worker process {pid} stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (out of memory, or killed)" if -code == getattr(signal, "SIGKILL", 9) else ""
        return f"worker process {pid} was killed by {name}{why}"
    return f"worker process {pid} exited with code {code}"


class _Call:
    __slots__ = ("cid", "info", "loop", "future", "queue", "cancelled", "killer")

    def __init__(self, cid: int, info: CallInfo, loop: asyncio.AbstractEventLoop, stream: bool):
        self.cid = cid
        self.info = info
        self.loop = loop
        self.future: asyncio.Future[tuple[str, Any]] | None = None
        self.queue: asyncio.Queue[tuple[str, Any]] | None = None
        if stream:
            self.queue = asyncio.Queue()
        else:
            self.future = loop.create_future()
        self.cancelled = False
        self.killer: threading.Timer | None = None

    def deliver(self, kind: str, data: Any) -> None:
        """From any thread: hand a message to the caller's loop."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            self.loop.call_soon_threadsafe(self._deliver, kind, data)

    def _deliver(self, kind: str, data: Any) -> None:
        if self.queue is not None:
            self.queue.put_nowait((kind, data))
        elif self.future is not None and not self.future.done():
            self.future.set_result((kind, data))


class _Worker:
    __slots__ = ("index", "process", "conn", "pid", "call", "retired")

    def __init__(self, index: int, process: Any, conn: Any) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.pid: int | None = process.pid
        self.call: _Call | None = None
        self.retired = False

    @property
    def placement(self) -> Placement:
        return Placement("process", f"worker-{self.index} (pid {self.pid})")


class ProcessExecutor(Executor):
    """Runs steps on `max_workers` local processes (default: the usable CPUs)."""

    name = "process"
    supports_streaming = True

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: multiprocessing.context.BaseContext | None = None,
        cancel_grace: float = 1.0,
        trace_hook: TraceHook | None = None,
    ) -> None:
        super().__init__(trace_hook=trace_hook)
        check_count(max_workers, "ProcessExecutor(max_workers=...)", minimum=1, allow_none=True)
        check_grace(cancel_grace, "ProcessExecutor(cancel_grace=...)")
        if mp_context is not None and not isinstance(
            mp_context, multiprocessing.context.BaseContext
        ):
            raise TypeError(
                "ProcessExecutor(mp_context=...) must be a multiprocessing context, e.g. "
                f"multiprocessing.get_context('spawn'), got {type(mp_context).__name__}: "
                f"{mp_context!r}."
            )
        self._max_workers = max_workers or _default_workers()
        self._context = mp_context
        self.cancel_grace = cancel_grace
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._idle: deque[_Worker] = deque()
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._cids = itertools.count(1)
        self._closing = False
        self._start_error: RuntimeError | None = None
        self._readers: list[threading.Thread] = []

    @property
    def capacity(self) -> int:
        return self._max_workers

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (empty before start and after aclose)."""
        with self._lock:
            return [w.pid for w in self._workers.values() if w.pid is not None]

    # ------------------------------------------------------------------ pool

    async def _start(self) -> None:
        self._closing = False
        self._start_error = None
        if self._context is None and not _CAN_PASS_FDS:
            self._context = multiprocessing.get_context("spawn")
        await asyncio.to_thread(self._spawn_all)

    def _spawn_all(self) -> None:
        # all start at once (a spawned worker takes a while to import), then each is awaited
        launched = [self._launch(index) for index in range(self._max_workers)]
        try:
            for index, (process, conn) in enumerate(launched):
                self._release(self._adopt(index, process, conn))
        except BaseException:
            with self._lock:
                self._closing = True  # no replacements for the workers stopped here
            for process, conn in launched:
                if process.is_alive():
                    process.kill()
                    process.join(timeout=5)
                with contextlib.suppress(OSError):
                    conn.close()
            self._stop_workers(list(self._workers.values()))
            raise

    def _spawn(self, index: int) -> _Worker:
        return self._adopt(index, *self._launch(index))

    def _launch(self, index: int) -> tuple[Any, Any]:
        if self._context is None:
            return _launch_subprocess(index)
        ctx: Any = self._context
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_worker.main,
            args=(child_conn, index),
            name=f"justpipe-process-worker-{index}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return process, parent_conn

    def _adopt(self, index: int, process: Any, parent_conn: Any) -> _Worker:
        # the worker says "ready" once it runs: a worker that cannot start (say, a main
        # module that starts the pool again on import) is an error, not a respawn loop
        try:
            ready = parent_conn.poll(_START_TIMEOUT) and parent_conn.recv()[1] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            process.kill()
            process.join(timeout=5)
            parent_conn.close()
            raise RuntimeError(
                f"ProcessExecutor: worker process {index} did not start "
                f"({_describe_exit(process.pid, process.exitcode)}); see its output above. "
                "With the spawn (default) and forkserver start methods a script must start "
                "pipelines under `if __name__ == '__main__':`, and the step's module must "
                "import cleanly in a fresh process."
            )
        worker = _Worker(index, process, parent_conn)
        with self._lock:
            self._workers[index] = worker
        reader = threading.Thread(
            target=self._read, args=(worker,), name=f"justpipe-pool-reader-{index}", daemon=True
        )
        self._readers = [t for t in self._readers if t.is_alive()]
        self._readers.append(reader)
        reader.start()
        return worker

    def _read(self, worker: _Worker) -> None:
        """One thread per worker: route its messages, then handle its death."""
        conn = worker.conn
        while True:
            try:
                cid, kind, data = conn.recv()
            except (EOFError, OSError):
                break
            call = worker.call
            if call is None or call.cid != cid:
                continue  # a late answer to a call that was given up
            if kind in ("done", "cancelled"):
                if call.killer is not None:
                    call.killer.cancel()
                worker.call = None
                self._release(worker)
            call.deliver(kind, data)
        self._lost(worker)

    def _lost(self, worker: _Worker) -> None:
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        call, worker.call = worker.call, None
        if call is not None:
            if call.killer is not None:
                call.killer.cancel()
            if not call.cancelled:
                detail = _describe_exit(worker.pid, code)
                call.deliver("lost", WorkerLostError(call.info.step, detail))
        with contextlib.suppress(OSError):
            worker.conn.close()
        with self._lock:
            if self._workers.get(worker.index) is worker:
                del self._workers[worker.index]
            with contextlib.suppress(ValueError):
                self._idle.remove(worker)
            replace = not self._closing and not worker.retired
        if replace:
            _log.warning(
                "ProcessExecutor: %s; starting a new worker-%d",
                _describe_exit(worker.pid, code),
                worker.index,
            )
            try:
                fresh = self._spawn(worker.index)
            except RuntimeError as exc:
                _log.error(
                    "ProcessExecutor: a new worker-%d could not start: %s", worker.index, exc
                )
                self._broken(exc)
                return
            with self._lock:
                closed_meanwhile = self._closing
            if closed_meanwhile:  # aclose() ran while it started: it must not outlive it
                fresh.retired = True
                _stop_process(fresh)
                return
            self._release(fresh)

    def _broken(self, exc: RuntimeError) -> None:
        """No replacement worker could start: fail the waiters once no worker is left."""
        with self._lock:
            self._start_error = exc
            if self._workers:
                return
            waiters, self._waiters = list(self._waiters), deque()
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):
                waiter.get_loop().call_soon_threadsafe(_fail_waiter, waiter, exc)

    def _release(self, worker: _Worker) -> None:
        """Hand an idle worker to the first live waiter, or park it."""
        while True:
            with self._lock:
                if self._closing or worker.retired:
                    return
                if not self._waiters:
                    self._idle.append(worker)
                    return
                waiter = self._waiters.popleft()
            if waiter.done():
                continue
            try:
                waiter.get_loop().call_soon_threadsafe(self._hand, waiter, worker)
                return
            except RuntimeError:  # that loop is closed
                continue

    def _hand(self, waiter: asyncio.Future[_Worker], worker: _Worker) -> None:
        if waiter.done():
            self._release(worker)
        else:
            waiter.set_result(worker)

    async def _acquire(self, step: str) -> _Worker:
        with self._lock:
            if self._closing:
                raise self._closed_error(step)
            if not self._workers and self._start_error is not None:
                raise self._start_error
            if self._idle:
                return self._idle.popleft()
            waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())
            raise

    async def _dispatch(
        self, payload: bytes, info: CallInfo, stream: bool
    ) -> tuple[_Worker, _Call]:
        """Send the call to an idle worker (a worker found dead is skipped)."""
        loop = asyncio.get_running_loop()
        while True:
            generation = self._generation
            try:
                worker = await self._acquire(info.step)
            except _PoolClosed:
                if self._generation != generation:
                    raise self._closed_error(info.step) from None
                raise
            call = _Call(next(self._cids), info, loop, stream)
            worker.call = call
            try:
                worker.conn.send((_worker.CALL, call.cid, payload, stream))
            except (OSError, ValueError):
                # the worker died while idle: its reader replaces it; nothing ran
                worker.call = None
                call.cancelled = True
                continue
            if info.on_placed is not None:
                info.on_placed(worker.placement)
            return worker, call

    def _cancel(self, worker: _Worker, call: _Call) -> None:
        """Ask the worker to stop the call; kill it if it has not after the grace period."""
        call.cancelled = True
        if worker.call is not call:
            return
        try:
            worker.conn.send((_worker.CANCEL, call.cid))
        except (OSError, ValueError):
            return
        killer = threading.Timer(self.cancel_grace, self._kill_if_running, (worker, call))
        killer.daemon = True
        call.killer = killer
        killer.start()

    def _kill_if_running(self, worker: _Worker, call: _Call) -> None:
        if worker.call is call:
            worker.process.kill()  # its reader sees the pipe close and starts a new one

    # ------------------------------------------------------------------ calls

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo) -> Any:
        payload = _remote.dumps_call(fn, kwargs, info, self.trace_hook, self.name)
        await self.start()
        return await within_timeout(self._call(payload, info), info.step, info.timeout)

    async def _call(self, payload: bytes, info: CallInfo) -> Any:
        worker, call = await self._dispatch(payload, info, stream=False)
        assert call.future is not None
        try:
            kind, data = await call.future
        except asyncio.CancelledError:
            self._cancel(worker, call)
            raise
        if kind == "lost" or kind == "closed":
            raise data
        if kind == "cancelled":  # the function raised CancelledError itself
            raise asyncio.CancelledError
        return _remote.decode(data, info)[1]

    async def stream(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo
    ) -> AsyncIterator[Any]:
        payload = _remote.dumps_call(fn, kwargs, info, self.trace_hook, self.name)
        await self.start()
        items = stream_within_timeout(self._stream(payload, info), info.step, info.timeout)
        async with contextlib.aclosing(items):
            async for item in items:
                yield item

    async def _stream(self, payload: bytes, info: CallInfo) -> AsyncIterator[Any]:
        worker, call = await self._dispatch(payload, info, stream=True)
        queue = call.queue
        assert queue is not None
        finished = False
        consumed = 0
        try:
            while True:
                kind, data = await queue.get()
                if kind == "item":
                    yield _remote.decode(data, info)[1]
                    consumed += 1
                    if consumed == _worker.WINDOW // 2:
                        consumed = 0
                        # if the worker died, its reader delivers "lost"
                        with contextlib.suppress(OSError, ValueError):
                            worker.conn.send((_worker.CREDIT, call.cid, _worker.WINDOW // 2))
                    continue
                finished = True
                if kind == "lost" or kind == "closed":
                    raise data
                if kind == "cancelled":
                    raise asyncio.CancelledError
                _remote.decode(data, info)
                return
        finally:
            if not finished:
                self._cancel(worker, call)

    # ------------------------------------------------------------------ close

    async def _close(self) -> None:
        with self._lock:
            self._closing = True
            workers = list(self._workers.values())
            self._idle.clear()
            waiters, self._waiters = list(self._waiters), deque()
        closed = _PoolClosed("the pool was closed")
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):
                waiter.get_loop().call_soon_threadsafe(_fail_waiter, waiter, closed)
        for worker in workers:
            worker.retired = True
            call = worker.call
            if call is not None:
                call.cancelled = True
                call.deliver("closed", self._closed_error(call.info.step))
        await asyncio.to_thread(self._stop_workers, workers)

    def _stop_workers(self, workers: list[_Worker]) -> None:
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send((_worker.STOP,))
        for worker in workers:
            _stop_process(worker)
        for reader in self._readers:
            reader.join(timeout=5)
        self._readers = []
        with self._lock:
            self._workers.clear()


def _stop_process(worker: _Worker) -> None:
    with contextlib.suppress(OSError, ValueError):
        worker.conn.send((_worker.STOP,))
    worker.process.join(timeout=2)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=5)


class _PoolClosed(RuntimeError):
    """A waiter's wake-up when the pool closes (the caller turns it into its own error)."""


def _fail_waiter(waiter: asyncio.Future[Any], exc: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(exc)
