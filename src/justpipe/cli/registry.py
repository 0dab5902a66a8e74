"""Finds the pipelines under a storage root and the runs stored for each of them.

Layout (spec §15.4): one directory per pipeline, ``<root>/<pipeline_hash>/``, holding
``runs.db`` and ``pipeline.json`` (the pipeline's ``describe()`` dict, which gives the
name). This is the read side every tool (CLI, dashboard) goes through:

* stores are opened read-only (``SQLiteBackend(read_only=True)``): reading never writes,
  and a store on a read-only file system can be read; only cleanup opens one for writing
  (:meth:`PipelineRegistry.get_writable_backend`);
* every file and row is read on its own: a ``pipeline.json`` that cannot be used names
  the pipeline by its hash and says why (``PipelineInfo.damage``), a run row that cannot
  be read comes back as a ``damaged`` run with the reason (``RunRecord.damage``), and a
  store that cannot be opened (corrupt, locked) is skipped and described in
  ``PipelineRegistry.problems``; none of them hides the others;
* every run carries its status from the one status model (``justpipe.storage.status``):
  the row, its lease and, for a durable run, its checkpoint.

Another kind of store implements the same reading by overriding ``list_pipelines``,
``get_backend``, ``get_writable_backend``, ``description`` and ``durable_runs``
(``cli.pgregistry.PostgresRegistry``, which also offers ``change_feed`` for the
dashboard's live pages); `open_registry` picks the kind from a storage location.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from justpipe.storage.interface import MAX_QUERY_LIMIT, RunRecord, StorageBackend
from justpipe.storage.persistence import PIPELINE_JSON, RUNS_DB
from justpipe.storage.readonly import read_description
from justpipe.storage.segments import DurableRun, read_durable_runs
from justpipe.storage.sqlite import RunLease, SQLiteBackend, lease_state
from justpipe.storage.status import (
    RunStatus,
    is_unfinished,
    parse_status,
    run_status,
    shown_error,
)
from justpipe.storage.url import (
    PostgresLocation,
    SQLiteLocation,
    StorageError,
    StorageLocation,
)
from justpipe.types import PipelineTerminalStatus

__all__ = [
    "AnnotatedRun",
    "PipelineInfo",
    "PipelineRegistry",
    "StoreUnavailableError",
    "open_registry",
]

AMBIGUOUS_IDS_SHOWN = 5

StoreError = (sqlite3.Error, OSError, StorageError)
"""What reading or writing one pipeline's store can raise (SQLite, files, PostgreSQL)."""

StatusFilter = PipelineTerminalStatus | RunStatus | str | None
"""A status to filter runs on: any value of the status model (or its text)."""


class StoreUnavailableError(LookupError):
    """A run was not found in the stores that could be read, and some could not be."""


@dataclass(frozen=True)
class PipelineInfo:
    """A pipeline found under the storage root; `path` is its ``runs.db``.

    `damage`: why its ``pipeline.json`` could not be used (it is then named by its hash).
    """

    name: str
    hash: str
    path: Path
    damage: str | None = None


@dataclass(frozen=True)
class AnnotatedRun:
    """A stored run with the pipeline it belongs to and its status as every tool shows it.

    `liveness`: the lease state (``live``, ``dead``, ``unknown``) of a run without an end
    record, else None. `durable`: the checkpoint of a durable run, else None. `status` is
    worked out from the three (``storage.status.run_status``).
    """

    run: RunRecord
    pipeline_name: str
    pipeline_hash: str
    liveness: str | None = None
    durable: DurableRun | None = None
    status: RunStatus = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", run_status(self.run, self.liveness, self.durable))

    @property
    def error(self) -> str | None:
        """The error to show with the run's status (none while it goes on or waits)."""
        return shown_error(self.run, self.status, self.liveness)


def wanted_status(status: StatusFilter) -> RunStatus | None:
    """The status a filter names (``ValueError`` for an unknown one)."""
    if status is None:
        return None
    if isinstance(status, (PipelineTerminalStatus, RunStatus)):
        return RunStatus(status.value)
    return parse_status(status)


class PipelineRegistry:
    """Read access (and deletes, for cleanup) across every pipeline under `storage_dir`.

    `timeout`: how long a read waits for a store another process holds locked.
    """

    def __init__(self, storage_dir: str | Path, *, timeout: float = 5.0) -> None:
        self.storage_dir = Path(storage_dir).expanduser()
        self.location: StorageLocation = SQLiteLocation(self.storage_dir)
        self.timeout = timeout
        self.problems: list[str] = []
        self._backends: dict[str, StorageBackend] = {}

    @property
    def where(self) -> str:
        """Where the runs are read from, as pages and messages show it (never a password)."""
        return str(self.storage_dir)

    def close(self) -> None:
        """Close the stores this registry opened."""
        for backend in self._backends.values():
            close = getattr(backend, "close", None)
            if callable(close):
                close()
        self._backends.clear()

    # -- pipelines ------------------------------------------------------------------

    def list_pipelines(self) -> list[PipelineInfo]:
        """Pipelines with a ``runs.db``, sorted by hash (the directory name)."""
        if not self.storage_dir.is_dir():
            return []
        pipelines = []
        for directory in sorted(self.storage_dir.iterdir()):
            db_path = directory / RUNS_DB
            if directory.is_dir() and db_path.is_file():
                pipelines.append(_pipeline_info(directory, db_path))
        return pipelines

    def get_backend(self, pipeline_hash: str) -> StorageBackend:
        """The store of the pipeline with this hash, opened read-only (once, then reused)."""
        backend = self._backends.get(pipeline_hash)
        if backend is None:
            path = self.storage_dir / pipeline_hash / RUNS_DB
            backend = SQLiteBackend(path, timeout=self.timeout, read_only=True)
            self._backends[pipeline_hash] = backend
        return backend

    def get_writable_backend(self, pipeline_hash: str) -> StorageBackend:
        """The store of the pipeline with this hash, opened for writing (cleanup only)."""
        return SQLiteBackend(self.storage_dir / pipeline_hash / RUNS_DB, timeout=self.timeout)

    def description(self, info: PipelineInfo) -> dict[str, object] | None:
        """The pipeline's ``describe()`` document (its ``pipeline.json``), if readable."""
        described, _ = read_description(info.path.parent / PIPELINE_JSON)
        return described

    def readable_pipelines(
        self, pipeline_name: str | None = None
    ) -> Iterator[tuple[PipelineInfo, StorageBackend]]:
        """Each pipeline (optionally only those named `pipeline_name`) with its open store.

        Stores that cannot be opened are skipped and recorded in ``problems``.
        """
        for info in self.list_pipelines():
            if pipeline_name is not None and info.name != pipeline_name:
                continue
            try:
                backend = self.get_backend(info.hash)
            except StoreError as exc:
                self.note_problem(info, exc)
                continue
            yield info, backend

    def note_problem(self, info: PipelineInfo, error: BaseException) -> None:
        """Record that `info`'s store could not be used (each message once)."""
        message = f"skipped pipeline {describe_pipeline(info)}: {error}"
        if message not in self.problems:
            self.problems.append(message)

    # -- runs -----------------------------------------------------------------------

    def list_all_runs(
        self,
        pipeline_name: str | None = None,
        status: StatusFilter = None,
        limit: int | None = 100,
    ) -> list[AnnotatedRun]:
        """Runs of every pipeline (or those named `pipeline_name`), newest first.

        `status`: only runs with this status (any status of the model: ``running``,
        ``suspended``... as well as how runs ended). ``limit=None`` returns every run.
        Damaged rows come last (their start time cannot be read).
        """
        from justpipe.cli.paging import runs_page

        wanted = wanted_status(status)
        found: list[AnnotatedRun] = []
        for info, backend in self.readable_pipelines(pipeline_name):
            try:
                if wanted is not None and limit is not None:  # paged in the store
                    found.extend(runs_page(self, info, {wanted}, limit, 0)[0])
                    continue
                runs = _fetch_runs(backend, limit if wanted is None else None)
                found.extend(self.annotate(info, backend, runs))
            except StoreError as exc:
                self.note_problem(info, exc)
        found.sort(key=lambda item: item.run.start_time, reverse=True)
        if wanted is not None:
            found = [item for item in found if item.status is wanted]
        return found if limit is None else found[:limit]

    def annotate(
        self, info: PipelineInfo, backend: StorageBackend, runs: Iterable[RunRecord]
    ) -> list[AnnotatedRun]:
        """`runs` of one pipeline with their status: leases and checkpoints read at once."""
        runs = list(runs)
        leases = _leases(backend, runs)
        durable = self.durable_runs(info.hash, [run.run_id for run in runs]) if runs else {}
        return [
            AnnotatedRun(
                run,
                info.name,
                info.hash,
                liveness=lease_state(leases.get(run.run_id)) if is_unfinished(run) else None,
                durable=durable.get(run.run_id),
            )
            for run in runs
        ]

    def resolve_run(self, run_id_prefix: str) -> tuple[AnnotatedRun, StorageBackend] | None:
        """The run with exactly this id, else the only run whose id starts with it.

        Returns None when nothing matches; raises ``ValueError`` (``Ambiguous run ID
        prefix ...``) when several runs do, and :class:`StoreUnavailableError` when
        nothing matches in the stores that could be read and some were busy (locked by
        another process: the run may be there; a corrupt store is only noted in
        ``problems``, as it will not become readable by asking again).
        """
        if not run_id_prefix:
            return None
        searched = []
        unreadable: list[str] = []
        for info, backend in self._pipelines_noting(unreadable):
            try:
                run = backend.get_run(run_id_prefix)
                if run is not None:
                    return self.annotate(info, backend, [run])[0], backend
            except StoreError as exc:
                self._unreadable(info, exc, unreadable)
                continue
            searched.append((info, backend))
        matches: list[tuple[AnnotatedRun, StorageBackend]] = []
        for info, backend in searched:
            try:
                runs = backend.find_runs_by_prefix(run_id_prefix, limit=MAX_QUERY_LIMIT)
                matches.extend((item, backend) for item in self.annotate(info, backend, runs))
            except StoreError as exc:
                self._unreadable(info, exc, unreadable)
        if len(matches) > 1:
            raise ValueError(_ambiguity_message(run_id_prefix, [m[0].run for m in matches]))
        if not matches and unreadable:
            raise StoreUnavailableError(
                f"Run {run_id_prefix!r} is not in the stores that could be read, and "
                f"{len(unreadable)} could not be read now: {'; '.join(unreadable)}"
            )
        return matches[0] if matches else None

    def _pipelines_noting(
        self, unreadable: list[str]
    ) -> Iterator[tuple[PipelineInfo, StorageBackend]]:
        for info in self.list_pipelines():
            try:
                backend = self.get_backend(info.hash)
            except StoreError as exc:
                self._unreadable(info, exc, unreadable)
                continue
            yield info, backend

    def _unreadable(self, info: PipelineInfo, error: BaseException, busy: list[str]) -> None:
        self.note_problem(info, error)
        if is_busy(error):
            busy.append(f"{describe_pipeline(info)}: {error}")

    def durable_runs(
        self, pipeline_hash: str, run_ids: list[str] | None = None
    ) -> dict[str, DurableRun]:
        """The durable runs (of `run_ids`, or all) whose checkpoints the pipeline's store holds.

        Empty for a store without durable runs (or one whose durable tables cannot be
        read: its runs then show as plain runs).
        """
        try:
            path = self.storage_dir / pipeline_hash / RUNS_DB
            return read_durable_runs(path, run_ids, timeout=self.timeout)
        except StoreError:
            return {}

    def all_runs_of(self, backend: StorageBackend) -> list[RunRecord]:
        """Every run `backend` holds, newest first."""
        return _fetch_runs(backend, None)

    def runs_of(self, info: PipelineInfo) -> list[AnnotatedRun]:
        """Every run of one pipeline with its status, newest first (``StoreError`` raised)."""
        backend = self.get_backend(info.hash)
        return self.annotate(info, backend, _fetch_runs(backend, None))


def open_registry(location: StorageLocation, *, timeout: float = 5.0) -> PipelineRegistry:
    """The registry of the runs at `location`: SQLite files under a directory, or a
    PostgreSQL database (``justpipe.cli.pgregistry``, which needs the postgres extra)."""
    if isinstance(location, PostgresLocation):
        try:
            from justpipe.cli.pgregistry import PostgresRegistry
        except ImportError as exc:
            raise ImportError(
                f"reading runs from {location.display} needs the PostgreSQL driver: "
                f"pip install 'justpipe[postgres]' ({exc})"
            ) from None
        return PostgresRegistry(location, timeout=timeout)
    return PipelineRegistry(location.root, timeout=timeout)


def is_busy(error: BaseException) -> bool:
    """Whether `error` says the store is locked by another process (try again later)."""
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def describe_pipeline(info: PipelineInfo) -> str:
    """``'name'`` or ``'name' (hash)``, as messages name a pipeline."""
    return f"'{info.name}'" if info.name == info.hash else f"'{info.name}' ({info.hash})"


def _pipeline_info(directory: Path, db_path: Path) -> PipelineInfo:
    """The pipeline in `directory`, named by its ``pipeline.json`` (else by its hash)."""
    described, damage = read_description(directory / PIPELINE_JSON)
    name = described.get("name") if described is not None else None
    if not isinstance(name, str) or not name:
        name = directory.name
    return PipelineInfo(name, directory.name, db_path, damage)


def _leases(backend: StorageBackend, runs: list[RunRecord]) -> dict[str, RunLease]:
    """The run store's leases of those `runs` that have no end record."""
    unfinished = [run.run_id for run in runs if is_unfinished(run)]
    get_leases = getattr(backend, "get_leases", None)
    if not unfinished or not callable(get_leases):
        return {}
    leases: dict[str, RunLease] = get_leases(unfinished)
    return leases


def _fetch_runs(backend: StorageBackend, limit: int | None) -> list[RunRecord]:
    """Newest-first runs of one store: `limit` of them, or all when `limit` is None."""
    if limit is not None:
        return backend.list_runs(limit=limit)
    runs: list[RunRecord] = []
    while True:
        page = backend.list_runs(limit=MAX_QUERY_LIMIT, offset=len(runs))
        runs.extend(page)
        if len(page) < MAX_QUERY_LIMIT:
            return runs


def _ambiguity_message(prefix: str, runs: list[RunRecord]) -> str:
    """Name the first few matches; full ids when their 12-character forms look alike."""
    runs = sorted(runs, key=lambda run: run.start_time, reverse=True)
    ids = [run.run_id for run in runs[:AMBIGUOUS_IDS_SHOWN]]
    short = [run_id[:12] for run_id in ids]
    shown = short if len(set(short)) == len(short) else ids
    more = f" (and {len(runs) - len(ids)} more)" if len(runs) > len(ids) else ""
    return f"Ambiguous run ID prefix '{prefix}' matches {len(runs)} runs: {', '.join(shown)}{more}"
