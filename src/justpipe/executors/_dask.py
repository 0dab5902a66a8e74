"""DaskExecutor: steps as tasks on a Dask cluster (``pip install 'justpipe[dask]'``).

A call is one `Client.submit` with `retries=0` and `pure=False` (every invocation runs,
nothing is deduplicated by key). `async def` steps run on a persistent event loop per
Dask worker thread.

The cluster: an existing `distributed.Client` (used as it is, never closed by justpipe),
a scheduler `address` (justpipe opens and closes its own client), or, with neither, a
`distributed.LocalCluster(**cluster_kwargs)` started on first use and closed by
`aclose()`. A LocalCluster started here sets ``allowed-failures`` to 0
(`DaskExecutor.SCHEDULER_CONFIG`), so a task whose worker dies fails at once
(`WorkerLostError`) instead of being rerun by the scheduler; set it on clusters you start
yourself to get the same. Dask also fails the tasks that were only queued on the dead
worker: each call logs an event when it starts running, and a call whose worker died
before that event reached the scheduler is submitted again (at most `MAX_RESUBMITS`
times). A call that dies within milliseconds of starting may so run a second time.

Stopping: cancelling a call cancels its Dask future and the local await ends at once, but
Dask cannot interrupt a task that is already running: a plain function runs to its end
on the worker (its result is dropped); an `async def` step stops there at its `timeout=`
(the worker enforces it too), otherwise it also runs to its end.

Streaming (async generator steps) is not supported: `stream()` raises `TypeError`; run
such steps on `ProcessExecutor` or `RayExecutor`, or return a list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from justpipe._checks import check_name
from justpipe._timeouts import within_timeout
from justpipe.executors import _remote
from justpipe.executors.base import CallInfo, Executor, TraceHook, WorkerLostError
from justpipe.logs import EXECUTORS

__all__ = ["DaskExecutor"]

_log = logging.getLogger(EXECUTORS)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "DaskExecutor needs Dask's distributed scheduler: pip install 'justpipe[dask]' "
            "(or pip install distributed)"
        ) from exc
    return distributed


def _dask_call(payload: bytes) -> bytes:
    """The Dask task: run one call on this worker (errors come back encoded)."""
    import distributed

    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker (a synchronous scheduler)
        address = "local"
    else:
        address = worker.address
        worker.log_event(DaskExecutor.STARTED_TOPIC, worker.get_current_task())
    return _remote.run_call(payload, f"dask worker {address} (pid {os.getpid()})")


class DaskExecutor(Executor):
    """Runs steps as Dask tasks: on `client`, on the scheduler at `address`, or on a
    LocalCluster(**cluster_kwargs) started on first use."""

    name = "dask"
    supports_streaming = False
    #: The scheduler setting of a LocalCluster started here (set it on your own clusters
    #: for the same failure semantics): a task whose worker dies fails at once instead of
    #: being rerun elsewhere.
    SCHEDULER_CONFIG: ClassVar[dict[str, Any]] = {"distributed.scheduler.allowed-failures": 0}
    #: The topic of the event a call logs when it starts running on a worker: a call
    #: whose worker died before it started (it was only queued there) is resubmitted.
    STARTED_TOPIC: ClassVar[str] = "justpipe-started"
    MAX_RESUBMITS: ClassVar[int] = 3

    def __init__(
        self,
        client: Any = None,
        address: str | None = None,
        *,
        trace_hook: TraceHook | None = None,
        **cluster_kwargs: Any,
    ) -> None:
        super().__init__(trace_hook=trace_hook)
        if client is not None and address is not None:
            raise ValueError(
                "DaskExecutor takes a client or an address, not both: pass client= to use "
                "your distributed.Client, or address= to let the executor connect."
            )
        if address is not None:
            check_name(address, "DaskExecutor(address=...)")
        if client is not None and not callable(getattr(client, "submit", None)):
            raise TypeError(
                "DaskExecutor(client=...) must be a distributed.Client, got "
                f"{type(client).__name__}: {client!r}. Pass address='tcp://host:8786' for a "
                "scheduler address."
            )
        self._given_client = client
        self._address = address
        self._cluster_kwargs = cluster_kwargs
        self._client: Any = None
        self._cluster: Any = None
        self._capacity = 0
        self._inflight: set[Any] = set()
        self._distributed: Any = None

    @property
    def client(self) -> Any:
        """The `distributed.Client` in use (None before start)."""
        return self._client

    @property
    def capacity(self) -> int:
        """The cluster's worker threads (read when the executor started)."""
        if not self.started:
            raise RuntimeError("DaskExecutor.capacity is known once the executor has started")
        return self._capacity

    async def _start(self) -> None:
        self._distributed = _import_distributed()
        await asyncio.to_thread(self._connect)

    def _connect(self) -> None:
        distributed = self._distributed
        if self._given_client is not None:
            client = self._given_client
        elif self._address is not None:
            client = distributed.Client(self._address)
        else:
            import dask

            kwargs: dict[str, Any] = {"processes": True, "dashboard_address": ":0"}
            kwargs.update(self._cluster_kwargs)

            with dask.config.set(self.SCHEDULER_CONFIG):
                self._cluster = distributed.LocalCluster(**kwargs)
            client = distributed.Client(self._cluster)
        self._client = client
        if getattr(client, "asynchronous", False):
            raise TypeError(
                "DaskExecutor needs a synchronous distributed.Client (the default); an "
                "asynchronous client is bound to one event loop"
            )
        self._capacity = max(1, sum(client.nthreads().values()))

    async def _close(self) -> None:
        inflight, self._inflight = list(self._inflight), set()
        client, cluster = self._client, self._cluster
        owns_client = client is not None and client is not self._given_client
        self._client = self._cluster = None

        def stop() -> None:
            if client is not None and inflight:
                with contextlib.suppress(Exception):
                    client.cancel(inflight, force=True)
            if owns_client:
                client.close()
            if cluster is not None:
                cluster.close()

        await asyncio.to_thread(stop)

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo) -> Any:
        payload = _remote.dumps_call(fn, kwargs, info, self.trace_hook, self.name)
        await self.start()
        return await within_timeout(self._call(payload, info), info.step, info.timeout)

    async def _call(self, payload: bytes, info: CallInfo) -> Any:
        from distributed.scheduler import KilledWorker

        client = self._client
        generation = self._generation
        resubmits = 0
        while True:
            key = f"justpipe-{info.step}-{uuid.uuid4().hex}"
            future = client.submit(_dask_call, payload, key=key, pure=False, retries=0)
            self._inflight.add(future)
            done = False
            try:
                data = await self._result(future)
                done = True
            except KilledWorker as exc:
                done = True
                # Dask fails every task its dead worker held, queued ones too: a call that
                # never started there is submitted again, a started one is lost
                if resubmits < self.MAX_RESUBMITS and not await self._started_on_worker(key):
                    resubmits += 1
                    _log.warning(
                        "DaskExecutor: the worker holding step '%s' died before the call "
                        "started (%s); submitting it again (%d of %d)",
                        info.step,
                        exc,
                        resubmits,
                        self.MAX_RESUBMITS,
                    )
                    continue
                raise WorkerLostError(info.step, f"Dask reported KilledWorker: {exc}") from None
            except Exception as exc:
                done = True
                if self._generation != generation:
                    raise self._closed_error(info.step) from exc
                raise
            finally:
                self._inflight.discard(future)
                if not done:
                    # fire and forget: Future.cancel() waits for the scheduler
                    asyncio.get_running_loop().run_in_executor(None, _cancel_quietly, future)
            return _remote.decode(data, info, self.name)[1]

    async def _started_on_worker(self, key: str) -> bool:
        client = self._client

        def started() -> bool:
            events = client.get_events(self.STARTED_TOPIC)
            return any(msg == key for _, msg in events)

        # the worker's event may still be on its way to the scheduler
        await asyncio.sleep(0.05)
        return await asyncio.to_thread(started)

    async def _result(self, future: Any) -> bytes:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def wake(_: Any) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                loop.call_soon_threadsafe(_set_done, finished)

        future.add_done_callback(wake)
        await finished
        return await asyncio.to_thread(future.result)

    def stream(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], *, info: CallInfo
    ) -> AsyncIterator[Any]:
        raise TypeError(
            f"Step '{info.step}' streams its results (it is a generator), and the Dask "
            "executor cannot stream items back. Run it on ProcessExecutor or RayExecutor, "
            "or make it return a list instead of yielding."
        )


def _set_done(finished: asyncio.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)


def _cancel_quietly(future: Any) -> None:
    with contextlib.suppress(Exception):
        future.cancel()
