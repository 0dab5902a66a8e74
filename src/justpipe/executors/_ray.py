"""RayExecutor: steps as Ray tasks (``pip install 'justpipe[ray]'``).

A call is one Ray task (`num_cpus=1` unless `task_options` say otherwise) with Ray's own
retries off (`max_retries=0`, `retry_exceptions=False`): justpipe owns retries. A streamed
step is a Ray streaming generator (`num_returns="streaming"`), its items come back in
order with Ray's generator backpressure. `async def` steps run on a persistent event loop
of the Ray worker process.

Stopping: cancelling a call asks Ray to cancel the task (`ray.cancel`, which interrupts
a running task with KeyboardInterrupt and cancels an `async def` step's coroutine); if the
task has not ended after `cancel_grace` seconds it is force-cancelled
(`ray.cancel(force=True)` kills its worker process; Ray starts another). A worker that
dies fails only its call, with `WorkerLostError`.

Ray is started off the event loop (`ray.init` blocks for seconds) on first use, unless it
is already initialised in this process, in which case that session is used and
`aclose()` leaves it running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from justpipe._checks import check_name
from justpipe._timeouts import stream_within_timeout, within_timeout
from justpipe.executors import _remote
from justpipe.executors.base import CallInfo, Executor, TraceHook, WorkerLostError, check_grace

__all__ = ["RayExecutor"]

_STREAM_WINDOW = 64  # streamed items Ray may hold before the generator waits


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "RayExecutor needs Ray: pip install 'justpipe[ray]' (or pip install ray)"
        ) from exc
    return ray


def _where() -> str:
    import ray

    ctx = ray.get_runtime_context()
    return (
        f"ray worker {ctx.get_worker_id()[:12]} on node {ctx.get_node_id()[:12]} "
        f"(pid {os.getpid()})"
    )


def _ray_call(payload: bytes) -> bytes:
    """The Ray task: run one call on this worker (errors come back encoded)."""
    return _remote.run_call(payload, _where())


def _ray_stream(payload: bytes) -> Iterator[bytes]:
    """The Ray streaming generator: PLACED, ITEM..., then OK or ERR."""
    yield from _remote.run_stream(payload, _where())


class RayExecutor(Executor):
    """Runs steps as Ray tasks on an initialised Ray, a cluster at `address`, or a local
    Ray started on first use with `init_kwargs` (passed to `ray.init`)."""

    name = "ray"
    supports_streaming = True

    def __init__(
        self,
        address: str | None = None,
        *,
        cancel_grace: float = 1.0,
        task_options: dict[str, Any] | None = None,
        trace_hook: TraceHook | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__(trace_hook=trace_hook)
        if address is not None:
            check_name(address, "RayExecutor(address=...)")
        check_grace(cancel_grace, "RayExecutor(cancel_grace=...)")
        if task_options is not None and not isinstance(task_options, dict):
            raise TypeError(
                "RayExecutor(task_options=...) must be a dict of Ray task options, e.g. "
                f"{{'num_cpus': 2}}, got {type(task_options).__name__}: {task_options!r}."
            )
        self._address = address
        self._init_kwargs = init_kwargs
        self._task_options = dict(task_options or {})
        self.cancel_grace = cancel_grace
        self._ray: Any = None
        self._owns_ray = False
        self._capacity = 0
        self._call_task: Any = None
        self._stream_task: Any = None
        self._inflight: set[Any] = set()
        self._owner: tuple[threading.Thread, threading.Event] | None = None

    @property
    def capacity(self) -> int:
        """The cluster's CPUs (read when the executor started)."""
        if not self.started:
            raise RuntimeError("RayExecutor.capacity is known once the executor has started")
        return self._capacity

    async def _start(self) -> None:
        ray = self._ray = _import_ray()
        self._owns_ray = False
        if not await asyncio.to_thread(ray.is_initialized):
            await self._init(ray)
            self._owns_ray = True
        cpus = await asyncio.to_thread(lambda: ray.cluster_resources().get("CPU", 1))
        self._capacity = max(1, int(cpus))
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0, "retry_exceptions": False}
        options.update(self._task_options)
        self._call_task = ray.remote(_ray_call).options(**options)
        self._stream_task = ray.remote(_ray_stream).options(
            num_returns="streaming", _generator_backpressure_num_objects=_STREAM_WINDOW, **options
        )

    async def _init(self, ray: Any) -> None:
        """`ray.init` on a thread of its own that lives until `aclose()`.

        Not on the event loop (it blocks for seconds), and not on a pool thread: Ray's
        local processes are started with PR_SET_PDEATHSIG, so they are killed when the
        *thread* that started them exits.
        """
        kwargs: dict[str, Any] = {"include_dashboard": False}
        kwargs.update(self._init_kwargs)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        stop = threading.Event()

        def owner() -> None:
            try:
                ray.init(address=self._address, **kwargs)
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            stop.wait()
            ray.shutdown()

        thread = threading.Thread(target=owner, name="justpipe-ray-owner", daemon=True)
        thread.start()
        await asyncio.wrap_future(ready)
        self._owner = (thread, stop)

    async def _close(self) -> None:
        ray = self._ray
        inflight, self._inflight = list(self._inflight), set()
        owner, self._owner = self._owner, None
        self._owns_ray = False

        def stop() -> None:
            for ref in inflight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if owner is not None:  # the owner thread shuts Ray down and exits
                thread, event = owner
                event.set()
                thread.join(timeout=60)

        await asyncio.to_thread(stop)

    # ------------------------------------------------------------------ cancellation

    def _cancel(self, ref: Any) -> None:
        """Cancel cooperatively now; force after the grace period if still running."""
        ray = self._ray
        try:
            ray.cancel(ref)
        except Exception:
            return

        def force() -> None:
            try:
                ready, _ = ray.wait([ref], timeout=0) if not _is_stream(ref) else ([], None)
                if not ready and ray.is_initialized():
                    ray.cancel(ref, force=True)
            except Exception:
                pass
            finally:
                self._inflight.discard(ref)

        timer = threading.Timer(self.cancel_grace, force)
        timer.daemon = True
        timer.start()

    def _lost(self, exc: BaseException, info: CallInfo) -> BaseException:
        """Ray's errors for a dead worker become WorkerLostError; a task error its cause."""
        ray = self._ray
        exceptions = ray.exceptions
        lost_types = tuple(
            getattr(exceptions, name)
            for name in (
                "WorkerCrashedError",
                "OutOfMemoryError",
                "NodeDiedError",
                "LocalRayletDiedError",
                "ObjectLostError",
            )
            if hasattr(exceptions, name)
        )
        if isinstance(exc, lost_types):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return WorkerLostError(info.step, f"Ray reported {type(exc).__name__}: {first}")
        if isinstance(exc, exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                cause.add_note(f"Remote traceback (step '{info.step}', ray):\n{exc}")
                return cause
        return exc

    # ------------------------------------------------------------------ calls

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo) -> Any:
        payload = _remote.dumps_call(fn, kwargs, info, self.trace_hook, self.name)
        await self.start()
        return await within_timeout(self._call(payload, info), info.step, info.timeout)

    async def _call(self, payload: bytes, info: CallInfo) -> Any:
        generation = self._generation
        ref = self._call_task.remote(payload)
        self._inflight.add(ref)
        done = False
        try:
            data = await ref
            done = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            done = True
            if self._generation != generation:
                raise self._closed_error(info.step) from exc
            raise self._lost(exc, info) from None
        finally:
            if done:
                self._inflight.discard(ref)
            else:
                self._cancel(ref)
        return _remote.decode(data, info, self.name)[1]

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
        generation = self._generation
        gen = self._stream_task.remote(payload)
        self._inflight.add(gen)
        finished = False
        placed: str | None = self.name  # on_placed hears the first message (PLACED) only
        try:
            while True:
                try:
                    try:
                        ref = await gen.__anext__()
                    except StopAsyncIteration:
                        finished = True
                        raise WorkerLostError(
                            info.step, "the Ray generator ended without its last message"
                        ) from None
                    data = await ref
                except (asyncio.CancelledError, WorkerLostError):
                    raise
                except Exception as exc:
                    finished = True
                    if self._generation != generation:
                        raise self._closed_error(info.step) from exc
                    raise self._lost(exc, info) from None
                tag, value = _remote.decode(data, info, placed)
                placed = None
                if tag == _remote.ITEM:
                    yield value
                elif tag == _remote.OK:
                    finished = True
                    return
        finally:
            if finished:
                self._inflight.discard(gen)
            else:
                self._cancel(gen)


def _is_stream(ref: Any) -> bool:
    return hasattr(ref, "__anext__")
