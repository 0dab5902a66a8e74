"""Finds the pipelines under a storage root and the runs stored for each of them.

Layout (spec §15.4): one directory per pipeline, ``<root>/<pipeline_hash>/``, holding
``runs.db`` and ``pipeline.json`` (the pipeline's ``describe()`` dict, which gives the
name). A pipeline whose store cannot be read (a corrupt or locked file) is skipped and
described in ``PipelineRegistry.problems``, so one bad file never hides the others.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from justpipe.storage.interface import MAX_QUERY_LIMIT, RunRecord, StorageBackend
from justpipe.storage.persistence import PIPELINE_JSON, RUNS_DB
from justpipe.storage.segments import DurableRun, read_durable_runs
from justpipe.storage.sqlite import SQLiteBackend
from justpipe.types import PipelineTerminalStatus

__all__ = ["AnnotatedRun", "PipelineInfo", "PipelineRegistry"]

AMBIGUOUS_IDS_SHOWN = 5

StoreError = (sqlite3.Error, OSError)
"""What reading or writing one pipeline's store can raise."""


@dataclass(frozen=True)
class PipelineInfo:
    """A pipeline found under the storage root; `path` is its ``runs.db``."""

    name: str
    hash: str
    path: Path


@dataclass(frozen=True)
class AnnotatedRun:
    """A stored run together with the pipeline it belongs to."""

    run: RunRecord
    pipeline_name: str
    pipeline_hash: str


class PipelineRegistry:
    """Read access (and deletes, for cleanup) across every pipeline under `storage_dir`."""

    def __init__(self, storage_dir: str | Path) -> None:
        self.storage_dir = Path(storage_dir).expanduser()
        self.problems: list[str] = []
        self._backends: dict[str, StorageBackend] = {}

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
                pipelines.append(PipelineInfo(_pipeline_name(directory), directory.name, db_path))
        return pipelines

    def get_backend(self, pipeline_hash: str) -> StorageBackend:
        """The store of the pipeline with this hash (opened once, then reused)."""
        backend = self._backends.get(pipeline_hash)
        if backend is None:
            backend = SQLiteBackend(self.storage_dir / pipeline_hash / RUNS_DB)
            self._backends[pipeline_hash] = backend
        return backend

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
        where = f"'{info.name}'" if info.name == info.hash else f"'{info.name}' ({info.hash})"
        message = f"skipped pipeline {where}: {error}"
        if message not in self.problems:
            self.problems.append(message)

    # -- runs -----------------------------------------------------------------------

    def list_all_runs(
        self,
        pipeline_name: str | None = None,
        status: PipelineTerminalStatus | None = None,
        limit: int | None = 100,
    ) -> list[AnnotatedRun]:
        """Runs of every pipeline (or those named `pipeline_name`), newest first.

        ``limit=None`` returns every stored run.
        """
        per_pipeline = []
        for info, backend in self.readable_pipelines(pipeline_name):
            try:
                runs = _fetch_runs(backend, status, limit)
            except StoreError as exc:
                self.note_problem(info, exc)
                continue
            per_pipeline.append([AnnotatedRun(run, info.name, info.hash) for run in runs])
        merged = heapq.merge(*per_pipeline, key=lambda item: item.run.start_time, reverse=True)
        runs_newest_first = list(merged)
        return runs_newest_first if limit is None else runs_newest_first[:limit]

    def resolve_run(self, run_id_prefix: str) -> tuple[AnnotatedRun, StorageBackend] | None:
        """The run with exactly this id, else the only run whose id starts with it.

        Returns None when nothing matches; raises ``ValueError`` (``Ambiguous run ID
        prefix ...``) when several runs do.
        """
        if not run_id_prefix:
            return None
        searched = []
        for info, backend in self.readable_pipelines():
            try:
                run = backend.get_run(run_id_prefix)
            except StoreError as exc:
                self.note_problem(info, exc)
                continue
            if run is not None:
                return AnnotatedRun(run, info.name, info.hash), backend
            searched.append((info, backend))
        matches: list[tuple[AnnotatedRun, StorageBackend]] = []
        for info, backend in searched:
            try:
                runs = backend.find_runs_by_prefix(run_id_prefix, limit=MAX_QUERY_LIMIT)
            except StoreError as exc:
                self.note_problem(info, exc)
                continue
            matches.extend((AnnotatedRun(run, info.name, info.hash), backend) for run in runs)
        if len(matches) > 1:
            raise ValueError(_ambiguity_message(run_id_prefix, [m[0].run for m in matches]))
        return matches[0] if matches else None

    def durable_runs(
        self, pipeline_hash: str, run_ids: list[str] | None = None
    ) -> dict[str, DurableRun]:
        """The durable runs (of `run_ids`, or all) whose checkpoints the pipeline's store holds.

        Empty for a store without durable runs (or one whose durable tables cannot be
        read: its runs then show as plain runs).
        """
        try:
            path = self.storage_dir / pipeline_hash / RUNS_DB
            return read_durable_runs(path, run_ids, timeout=getattr(self, "timeout", 5.0))
        except StoreError:
            return {}

    def durable_of(self, item: AnnotatedRun) -> DurableRun | None:
        """The durable run of `item`, or None for a plain run."""
        return self.durable_runs(item.pipeline_hash, [item.run.run_id]).get(item.run.run_id)

    def all_runs_of(self, backend: StorageBackend) -> list[RunRecord]:
        """Every run `backend` holds, newest first."""
        return _fetch_runs(backend, None, None)


def _pipeline_name(directory: Path) -> str:
    """The name recorded in ``pipeline.json``, or the directory name when unreadable."""
    try:
        described = json.loads((directory / PIPELINE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return directory.name
    name = described.get("name") if isinstance(described, dict) else None
    return name if isinstance(name, str) and name else directory.name


def _fetch_runs(
    backend: StorageBackend, status: PipelineTerminalStatus | None, limit: int | None
) -> list[RunRecord]:
    """Newest-first runs of one store: `limit` of them, or all when `limit` is None."""
    if limit is not None:
        return backend.list_runs(status=status, limit=limit)
    runs: list[RunRecord] = []
    while True:
        page = backend.list_runs(status=status, limit=MAX_QUERY_LIMIT, offset=len(runs))
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
