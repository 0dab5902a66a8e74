"""Records and the backend protocol shared by every run store (spec §15.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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

    ``damage`` is set by a store that could not read part of the row (a timestamp no
    date can hold, a duration that is not a number...): it says what, and the fields it
    concerns hold a stand-in (the epoch for a start time, ``None`` otherwise). Readers
    show such a run as damaged instead of failing on it.
    """

    run_id: str
    start_time: datetime
    end_time: datetime | None
    duration: timedelta | None
    status: PipelineTerminalStatus
    error_message: str | None = None
    error_step: str | None = None
    run_meta: str | None = None
    damage: str | None = None


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


# Helpers shared by the backends (not part of the public surface).

_EVENT_TYPES = {member.value: member for member in EventType}
_RUN_ID_PREFIX = re.compile(r"[A-Za-z0-9_-]+")


def is_run_id_prefix(text: str) -> bool:
    """Whether `text` can start a run id (ASCII letters, digits, ``_``, ``-``; non-empty)."""
    return _RUN_ID_PREFIX.fullmatch(text) is not None


def validate_paging(limit: int, offset: int) -> None:
    """Reject negative paging arguments instead of guessing what they mean."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


def parse_event_type(value: object) -> EventType | None:
    """Return the EventType named by a stored ``type`` value, or None if it names none."""
    return _EVENT_TYPES.get(value) if isinstance(value, str) else None


EPOCH = datetime.fromtimestamp(0, tz=UTC)
"""What an unreadable stored time reads as (a damaged row's start, an event's time)."""


_FIRST_EPOCH = datetime(1, 1, 2, tzinfo=UTC).timestamp()
_LAST_EPOCH = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def readable_epoch(value: object) -> float:
    """A stored time as epoch seconds a datetime can hold; anything else (non-numbers,
    NaN, year 0 or 10000...) reads as 0, the epoch. Cheap: no datetime is built."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if _FIRST_EPOCH <= seconds <= _LAST_EPOCH:
            return seconds
    return 0.0


def utc_from_epoch(value: object) -> datetime:
    """Read a stored epoch (seconds) as an aware UTC datetime; what no date can hold
    (non-numbers, NaN, year 0 or 10000...) reads as the epoch, never raises."""
    try:
        return read_epoch(value, "time")
    except ValueError:
        return EPOCH


def read_epoch(value: object, column: str) -> datetime:
    """A stored epoch (seconds) as an aware UTC datetime; ``ValueError`` saying why not.

    Refuses what no datetime can hold (year 0, 10000, 1e300, NaN) and non-numbers,
    naming `column` and the stored value.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{column} is not a number: {_shown(value)}")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{column} {_shown(value)} is not a date (out of range)") from None


def read_seconds(value: object, column: str) -> timedelta:
    """A stored number of seconds (>= 0) as a timedelta; ``ValueError`` saying why not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{column} is not a number: {_shown(value)}")
    if value < 0:
        raise ValueError(f"{column} {_shown(value)} is negative")
    try:
        return timedelta(seconds=value)
    except (OverflowError, ValueError):
        raise ValueError(f"{column} {_shown(value)} is out of range") from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def epoch_of(moment: datetime) -> float:
    """Return epoch seconds of `moment`, reading a naive datetime as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
