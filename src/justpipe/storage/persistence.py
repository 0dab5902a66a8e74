"""Automatic persistence of runs (`Pipe(persist=True)` / `JUSTPIPE_PERSIST`, spec §15.4).

The kernel calls :func:`create_persistence_observer` once per persisted run and attaches
the returned observer. Everything here is best effort: a persistence problem is logged
as a warning on the ``justpipe.persistence`` logger and never changes the run.

Where: the store `justpipe.storage.url.resolve_storage` names. SQLite (the default):
``<storage root>/<pipeline_hash>/runs.db`` (an :class:`SQLiteBackend`) next to
``pipeline.json`` (the pipe's ``describe()`` snapshot, read by the CLI and dashboard).
PostgreSQL (``JUSTPIPE_STORAGE_URL=postgresql://...``): the pipeline's runs in that
database (a `PostgresBackend`), its ``describe()`` snapshot in the ``pipelines`` table.
A store that cannot be used at all when a run starts (a bad URL, the driver missing, a
server that refuses the login or cannot be reached the first time this process opens
it) fails the run there, before anything runs; after that, a store that goes away only
costs warnings.

Beyond upstream, a run is registered (status ``running``) as soon as it starts, so a
run whose process dies is still listed afterwards, and a flush that fails keeps its
events buffered for the next write instead of dropping them. While the run goes on, its
lease in the store is renewed every ``heartbeat_interval`` seconds (a background task
that stops with the run, or when the task driving the run is gone), so readers tell a
live run from one whose process died.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.storage.interface import RunRecord, StorageBackend
from justpipe.storage.serialize import dumps_jsonable, event_to_json
from justpipe.storage.sqlite import HEARTBEAT_INTERVAL_S, SQLiteBackend
from justpipe.storage.url import (
    DEFAULT_STORAGE_DIR,
    STORAGE_PATH_ENV,
    PostgresLocation,
    SQLiteLocation,
    StorageLocation,
    resolve_storage,
)
from justpipe.types import Event, EventType, PipelineEndData, PipelineTerminalStatus

__all__ = [
    "PersistenceObserver",
    "PipelineStore",
    "create_persistence_observer",
    "resolve_storage_path",
]

_log = logging.getLogger("justpipe.persistence")

RUNS_DB = "runs.db"
PIPELINE_JSON = "pipeline.json"
_CACHE_ATTRIBUTE = "_persistence_cache"


class PersistablePipe(Protocol):
    """What persistence needs from a Pipe."""

    flush_interval: int | None

    def describe(self) -> dict[str, Any]: ...


def resolve_storage_path() -> Path:
    """The SQLite storage root: ``sqlite:///PATH`` in ``$JUSTPIPE_STORAGE_URL``, else
    ``$JUSTPIPE_STORAGE_PATH`` (``~`` expanded), else ``~/.justpipe``.

    For a PostgreSQL URL (no directory), the path it would be without the URL.
    """
    location = resolve_storage()
    if isinstance(location, SQLiteLocation):
        return location.root
    return Path(os.environ.get(STORAGE_PATH_ENV) or DEFAULT_STORAGE_DIR).expanduser()


@dataclass
class PipelineStore:
    """One pipeline's store; opens its backend once, on first use.

    Cached on the Pipe (per storage location), so every persisted run of that Pipe shares
    one backend (one SQLite connection, or the database's pool). :meth:`open_backend`
    blocks; call it from a worker thread.
    """

    location: StorageLocation
    pipeline_hash: str
    description: dict[str, Any]
    _backend: StorageBackend | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def directory(self) -> Path:
        """The pipeline's SQLite directory (``<root>/<pipeline_hash>``)."""
        assert isinstance(self.location, SQLiteLocation)
        return self.location.root / self.pipeline_hash

    def open_backend(self) -> StorageBackend:
        """Return the shared backend, creating the directory and database if needed.

        Also (re)writes ``pipeline.json`` when it is missing (PostgreSQL: records the
        pipeline). A failure is raised and the next call tries again.
        """
        location = self.location
        if isinstance(location, PostgresLocation):
            return self._open_postgres(location)
        with self._lock:
            if self._backend is None:
                self._backend = SQLiteBackend(self.directory / RUNS_DB)
        self._ensure_description()
        return self._backend

    def check_reachable(self) -> None:
        """Fail now if the store cannot be used at all (a PostgreSQL database this process
        never reached: wrong URL, password, host; the driver missing); see the module
        docstring. A database reached before is not checked again: its failures warn."""
        location = self.location
        if isinstance(location, PostgresLocation):
            from justpipe.storage.postgres import shared_database

            database = shared_database(location)
            if not database.opened:
                database.open()

    def _open_postgres(self, location: PostgresLocation) -> StorageBackend:
        from justpipe.storage.postgres import PostgresBackend, shared_database

        database = shared_database(location)
        with self._lock:
            if self._backend is None:
                self._backend = PostgresBackend(database, self.pipeline_hash)
        name = str(self.description.get("name") or self.pipeline_hash)
        database.register_pipeline(self.pipeline_hash, name, self.description)
        return self._backend

    def _ensure_description(self) -> None:
        target = self.directory / PIPELINE_JSON
        if target.exists():
            return
        text = dumps_jsonable(self.description, indent=2)
        # Write-then-rename, so a concurrent reader or writer never sees half a file.
        fd, temporary = tempfile.mkstemp(prefix=".pipeline-", suffix=".json", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class PersistenceObserver(Observer):
    """Buffers one run's events as JSON and writes the run when it ends.

    `open_backend` is called (in a worker thread) when the run starts. With
    `flush_interval` N, every N buffered events are written with ``append_events``;
    otherwise everything is written by ``save_run`` at the end.
    """

    def __init__(
        self,
        open_backend: Callable[[], StorageBackend],
        *,
        flush_interval: int | None = None,
        heartbeat_interval: float | None = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self._open_backend = open_backend
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat: asyncio.Task[None] | None = None
        self._flush_interval = flush_interval if flush_interval and flush_interval > 0 else None
        self._backend: StorageBackend | None = None
        self._run_id: str | None = None
        self._started_at = 0.0
        self._buffer: list[str] = []
        self._next_flush_at = 0
        self._finish: Event | None = None

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self._reset()
        self._run_id = meta.run_id
        self._started_at = meta.started_at if meta.started_at is not None else time.time()
        if self._run_id is None:
            _log.warning("Not persisting a run without a run id (pipe %r)", meta.pipe_name)
            return
        try:
            backend = await asyncio.to_thread(self._open_backend)
            # Registers the run as 'running' so it is listed even if this process dies.
            await asyncio.to_thread(backend.append_events, self._run_id, [])
        except Exception as exc:  # persistence must never affect the run
            _log.warning("Not persisting run %s: cannot open the run store: %s", self._run_id, exc)
            return
        self._backend = backend
        self._start_heartbeat(backend, self._run_id)

    def _start_heartbeat(self, backend: StorageBackend, run_id: str) -> None:
        beat = getattr(backend, "beat", None)
        driver = asyncio.current_task()
        if not callable(beat) or not self._heartbeat_interval or driver is None:
            return
        self._heartbeat = asyncio.get_running_loop().create_task(
            _renew_lease(beat, run_id, driver, self._heartbeat_interval),
            name=f"justpipe-heartbeat-{run_id}",
        )

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        if self._backend is None:
            return
        try:
            self._buffer.append(event_to_json(event))
        except Exception as exc:
            _log.warning(
                "Failed to serialize %s event of run %s: %s", event.type, self._run_id, exc
            )
        if event.type is EventType.FINISH and event.parent_run_id is None:
            self._finish = event
        if self._flush_interval is not None and len(self._buffer) >= self._next_flush_at:
            await self._flush()

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        await self._save(error=None, duration_s=duration_s)

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        await self._save(error=error, duration_s=None)

    def _reset(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        self._backend = None
        self._run_id = None
        self._buffer = []
        self._next_flush_at = self._flush_interval or 0
        self._finish = None

    async def _flush(self) -> None:
        backend, run_id, batch = self._backend, self._run_id, self._buffer
        if backend is None or run_id is None or not batch:
            return
        self._buffer = []
        try:
            await asyncio.to_thread(backend.append_events, run_id, batch)
        except Exception as exc:
            self._buffer = batch + self._buffer
            _log.warning(
                "Failed to flush %d events of run %s (kept for the next write): %s",
                len(batch),
                run_id,
                exc,
            )
        # After a failure, wait for another interval's worth of events before retrying.
        self._next_flush_at = len(self._buffer) + (self._flush_interval or 0)

    async def _save(self, *, error: Exception | None, duration_s: float | None) -> None:
        backend, run_id, events = self._backend, self._run_id, self._buffer
        finish = self._finish
        self._reset()
        if backend is None or run_id is None:
            return
        record = _run_record(run_id, self._started_at, finish, error, duration_s)
        try:
            await asyncio.to_thread(backend.save_run, record, events)
        except Exception as exc:
            _log.warning("Failed to persist run %s (%d events lost): %s", run_id, len(events), exc)


async def _renew_lease(
    beat: Callable[[str], object], run_id: str, driver: asyncio.Task[Any], interval: float
) -> None:
    """Renew the run's lease every `interval` seconds while `driver` (the run) lives.

    A run abandoned without an end callback (its consumer stopped iterating) stops
    beating when its driving task ends, so its lease expires like a dead process's.
    """
    while not driver.done():
        await asyncio.sleep(interval)
        if driver.done():
            return
        try:
            await asyncio.to_thread(beat, run_id)
        except Exception as exc:
            _log.warning("Failed to renew the lease of run %s: %s", run_id, exc)


def create_persistence_observer(pipe: PersistablePipe) -> Observer:
    """Return a fresh persistence observer for one run of `pipe`.

    The pipeline's storage (location, hash, ``describe()`` snapshot, backend) is worked
    out on the first call and cached on the pipe. If describing the pipeline fails, a
    warning is logged and an observer that records nothing is returned.
    A store that cannot be used at all (see the module docstring) raises here, so the
    run fails before it starts.
    """
    store = _pipeline_store(pipe)
    if store is None:
        return Observer()
    store.check_reachable()
    return PersistenceObserver(store.open_backend, flush_interval=pipe.flush_interval)


def _pipeline_store(pipe: PersistablePipe) -> PipelineStore | None:
    location = resolve_storage()  # (a bad JUSTPIPE_STORAGE_URL raises: the run fails)
    cached = getattr(pipe, _CACHE_ATTRIBUTE, None)
    if isinstance(cached, PipelineStore) and cached.location == location:
        return cached
    try:
        description = pipe.describe()
        pipeline_hash = str(description["pipeline_hash"])
    except Exception as exc:
        _log.warning("Not persisting runs of %r: cannot describe the pipeline: %s", pipe, exc)
        return None
    store = PipelineStore(location, pipeline_hash, description)
    setattr(pipe, _CACHE_ATTRIBUTE, store)
    return store


def _run_record(
    run_id: str,
    started_at: float,
    finish: Event | None,
    error: Exception | None,
    duration_s: float | None,
) -> RunRecord:
    """Build the stored record from the run's FINISH payload (and the error callback)."""
    end = datetime.now(UTC)
    status = PipelineTerminalStatus.SUCCESS
    error_message: str | None = None
    error_step: str | None = None
    run_meta: str | None = None
    if finish is not None and isinstance(finish.payload, PipelineEndData):
        outcome = finish.payload
        status, duration_s = outcome.status, outcome.duration_s
        error_message, error_step = outcome.error, outcome.failed_step
    if finish is not None and finish.meta:
        run_meta = dumps_jsonable(finish.meta)
    if error is not None and status is PipelineTerminalStatus.SUCCESS:
        status, error_message = PipelineTerminalStatus.FAILED, str(error)
    if duration_s is None:
        duration_s = max(0.0, end.timestamp() - started_at)
    return RunRecord(
        run_id=run_id,
        start_time=datetime.fromtimestamp(started_at, tz=UTC),
        end_time=end,
        duration=timedelta(seconds=duration_s),
        status=status,
        error_message=error_message,
        error_step=error_step,
        run_meta=run_meta,
    )
