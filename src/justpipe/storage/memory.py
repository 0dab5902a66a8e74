"""A process-local run store for tests and tooling (spec §15.2)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from justpipe.storage.interface import (
    RunRecord,
    StoredEvent,
    is_run_id_prefix,
    parse_event_type,
    utc_from_epoch,
    validate_paging,
)
from justpipe.storage.serialize import parse_event_object
from justpipe.types import EventType, PipelineTerminalStatus

__all__ = ["InMemoryBackend"]


class InMemoryBackend:
    """Keeps runs and their serialized events in dicts; safe to share between threads.

    Events are numbered by their position among everything stored for the run, and
    entries whose ``type`` is missing or unknown are skipped when read (upstream
    behaviour kept for drop-in use).
    """

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def save_run(self, run: RunRecord, events: list[str]) -> None:
        """Store or overwrite the run; its events are added to those already stored."""
        _check_events(run.run_id, events)
        with self._lock:
            self._runs[run.run_id] = run
            self._events.setdefault(run.run_id, []).extend(events)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def list_runs(
        self,
        status: PipelineTerminalStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        validate_paging(limit, offset)
        with self._lock:
            runs = [r for r in self._runs.values() if status is None or r.status == status]
        runs.sort(key=_start_sort_key, reverse=True)
        return runs[offset : offset + limit]

    def get_events(self, run_id: str, event_type: EventType | None = None) -> list[StoredEvent]:
        with self._lock:
            stored = list(self._events.get(run_id, ()))
        events = []
        for position, data in enumerate(stored, start=1):
            event = _to_stored_event(position, data)
            if event is not None and (event_type is None or event.event_type == event_type):
                events.append(event)
        return events

    def find_runs_by_prefix(self, run_id_prefix: str, limit: int = 10) -> list[RunRecord]:
        """Runs whose id starts with the prefix, newest first.

        Like the SQLite store, a prefix with characters outside ``[A-Za-z0-9_-]``
        (including the empty prefix) matches nothing.
        """
        validate_paging(limit, 0)
        if not is_run_id_prefix(run_id_prefix):
            return []
        with self._lock:
            runs = [r for r in self._runs.values() if r.run_id.startswith(run_id_prefix)]
        runs.sort(key=_start_sort_key, reverse=True)
        return runs[:limit]

    def append_events(self, run_id: str, events: list[str]) -> None:
        _check_events(run_id, events)
        with self._lock:
            self._events.setdefault(run_id, []).extend(events)

    def delete_run(self, run_id: str) -> bool:
        with self._lock:
            self._events.pop(run_id, None)
            return self._runs.pop(run_id, None) is not None


def _check_events(run_id: str, events: list[str]) -> None:
    """Refuse a batch with any non-JSON-object entry before storing any of it."""
    for index, data in enumerate(events):
        parse_event_object(run_id, index, data)


def _start_sort_key(run: RunRecord) -> datetime:
    """Sort naive and aware start times together, reading naive ones as UTC."""
    start = run.start_time
    return start if start.tzinfo is not None else start.replace(tzinfo=UTC)


def _to_stored_event(position: int, data: str) -> StoredEvent | None:
    parsed: Any = json.loads(data)
    if not isinstance(parsed, dict):
        return None
    event_type = parse_event_type(parsed.get("type"))
    if event_type is None:
        return None
    stage = parsed.get("stage", "")
    return StoredEvent(
        seq=position,
        timestamp=utc_from_epoch(parsed.get("timestamp", 0)),
        event_type=event_type,
        step_name=stage if isinstance(stage, str) else str(stage),
        data=data,
    )
