"""Records and the backend protocol shared by every run store (spec §15.1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from justpipe.types import EventType, PipelineTerminalStatus

__all__ = ["MAX_QUERY_LIMIT", "RunRecord", "StorageBackend", "StoredEvent"]

MAX_QUERY_LIMIT = 10_000
"""The largest ``limit`` the tools (CLI, dashboard) ask a backend for in one query."""


@dataclass(frozen=True)
class RunRecord:
    """One persisted run: timing, terminal status and the failure that ended it, if any.

    ``run_meta`` is the JSON text of the run-scope meta snapshot (the FINISH event's
    ``meta``), or ``None`` when the run wrote none.
    """

    run_id: str
    start_time: datetime
    end_time: datetime | None
    duration: timedelta | None
    status: PipelineTerminalStatus
    error_message: str | None = None
    error_step: str | None = None
    run_meta: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """One persisted event; ``data`` is the full event JSON (see ``storage.serialize``)."""

    seq: int
    timestamp: datetime
    event_type: EventType
    step_name: str
    data: str


class StorageBackend(Protocol):
    """A synchronous run store; async callers go through ``asyncio.to_thread``."""

    def save_run(self, run: RunRecord, events: list[str]) -> None:
        """Store the finished run together with (the rest of) its serialized events."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run with exactly this id, or ``None``."""
        ...

    def list_runs(
        self,
        status: PipelineTerminalStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Return runs, newest ``start_time`` first, optionally only those with ``status``.

        A negative ``limit`` or ``offset`` raises ``ValueError``.
        """
        ...

    def get_events(self, run_id: str, event_type: EventType | None = None) -> list[StoredEvent]:
        """Return the run's events in ascending ``seq``, optionally of one type only."""
        ...

    def find_runs_by_prefix(self, run_id_prefix: str, limit: int = 10) -> list[RunRecord]:
        """Return runs whose id starts with ``run_id_prefix``, newest first."""
        ...

    def append_events(self, run_id: str, events: list[str]) -> None:
        """Store events of a run that is still going (periodic flushes)."""
        ...

    def delete_run(self, run_id: str) -> bool:
        """Delete the run and its events; return whether the run existed."""
        ...
