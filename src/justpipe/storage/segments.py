"""Durable runs as the run store holds them: their segments and durable status (read side).

A durable run (``Pipe(..., durable=True)``) has one ``run_id`` and one or more *segments*:
its first ``pipe.run()``, then each ``pipe.resume()``. Every segment is a whole event
stream (START ... FINISH) and ``seq`` goes on across them, so the run store's ``events``
rows of the run hold all the segments one after the other; a segment begins at each
top-level START (a sub-pipeline's forwarded START has ``parent_run_id`` set and is not
one). The checkpoint store beside the run store (the ``durable_checkpoints`` and
``durable_leases`` tables of the same SQLite file, see `justpipe.durable.sqlite`) says
where the run stands now.

Nothing here writes: the tables are read through a read-only connection, and a file
without the durable tables (an older version, or a run store no durable run used) reads
as holding no durable run, so plain runs look exactly as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from justpipe.storage.readonly import connect_read_only, parse_stored_json

if TYPE_CHECKING:
    from justpipe.durable.store import Lease
    from justpipe.storage.interface import StoredEvent

__all__ = [
    "DurableRun",
    "Segment",
    "durable_label",
    "durable_run_of",
    "event_dicts",
    "read_durable_runs",
    "segments_from_events",
]

CHECKPOINTS_TABLE = "durable_checkpoints"
LEASES_TABLE = "durable_leases"

# a segment's ending
SUSPENDED = "suspended"
FINISHED = "finished"
INTERRUPTED = "interrupted"
RUNNING = "running"

_SUCCESS = "success"
_CHUNK = 500


@dataclass(frozen=True)
class DurableRun:
    """A durable run's checkpoint row (and lease): where the run stands now.

    `checkpoint_status` is what the checkpoint says (``running``, ``suspended`` or
    ``finished``), `end` the end status of a finished run (``success``, ``failed``...),
    `suspended` the ``(step, reason)`` pairs of a suspended one, `lease_live` whether a
    live process holds the run's lease.
    """

    run_id: str
    checkpoint_status: str
    segment: int
    updated_at: float
    lease_live: bool = False
    end: str | None = None
    suspended: tuple[tuple[str, str], ...] = ()

    @property
    def status(self) -> str:
        """``suspended``, ``running`` (a live process holds it), ``interrupted`` (its
        process died, or its consumer stopped: resumable) or ``finished``."""
        if self.checkpoint_status == SUSPENDED:
            return SUSPENDED
        if self.checkpoint_status == RUNNING:
            return RUNNING if self.lease_live else INTERRUPTED
        return FINISHED


def durable_label(plain_status: str, durable: DurableRun | None) -> str:
    """The status to show for a run: its durable status, unless it finished (or is plain).

    A plain run, and a durable run that finished, keep `plain_status` (the run store's
    ``success``, ``failed``...); a suspended, running or interrupted durable run shows that.
    """
    if durable is None:
        return plain_status
    status = durable.status
    return plain_status if status == FINISHED else status


@dataclass(frozen=True)
class Segment:
    """One segment of a durable run, as its stored events show it.

    `ended`: ``finished`` (its FINISH is a plain end; `end_status` says how: ``success``,
    ``failed``...), ``suspended`` (`suspended_steps` and `reasons` say why), ``running``
    (the last segment, a live process is executing it) or ``interrupted`` (no FINISH was
    stored: its process died, or its consumer stopped; a later segment resumed it, or
    ``pipe.resume()`` can). `started`/`finished_at` are epoch seconds (the START's and the
    last event's timestamps).
    """

    number: int
    first_seq: int
    last_seq: int
    started: float
    finished_at: float
    events: int
    ended: str
    end_status: str | None = None
    suspended_steps: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return max(0.0, self.finished_at - self.started)

    @property
    def detail(self) -> str:
        """Why it ended so: the suspended steps and reasons, a status other than success."""
        if self.ended == SUSPENDED:
            return _why(self.suspended_steps, self.reasons)
        if self.ended == FINISHED and self.end_status not in (None, _SUCCESS):
            return str(self.end_status)
        return ""

    def describe_end(self) -> str:
        """``finished``, ``failed``..., ``suspended (review: needs a human)``, ``interrupted``."""
        detail = self.detail
        if self.ended == SUSPENDED:
            return f"{SUSPENDED} ({detail})" if detail else SUSPENDED
        return detail or self.ended

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.number,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "started": self.started,
            "ended_at": self.finished_at,
            "duration_seconds": self.duration_s,
            "events": self.events,
            "ended": self.ended,
            "end_status": self.end_status,
            "suspended_steps": list(self.suspended_steps),
            "reasons": list(self.reasons),
        }


@dataclass
class _Open:
    number: int
    first_seq: int
    started: float
    last_seq: int = 0
    last_time: float = 0.0
    events: int = 0
    finish: Mapping[str, Any] | None = field(default=None)


def event_dicts(events: Iterable[StoredEvent]) -> list[dict[str, Any]]:
    """Stored events as the dicts `segments_from_events` reads (only START/FINISH decoded)."""
    out: list[dict[str, Any]] = []
    for event in events:
        kind = event.event_type.value
        item: dict[str, Any] = {}
        if kind in ("start", "finish"):
            parsed = parse_stored_json(event.data)
            if isinstance(parsed, dict):
                item = parsed
        item["type"] = kind
        item.setdefault("stage", event.step_name)
        item["seq"] = event.seq
        item["timestamp"] = event.timestamp.timestamp()
        out.append(item)
    return out


def _is_top_level(event: Mapping[str, Any]) -> bool:
    stage = event.get("stage")
    return event.get("parent_run_id") is None and not (
        isinstance(stage, str) and stage.startswith("sub:")
    )


def segments_from_events(
    events: Iterable[Mapping[str, Any]], durable: DurableRun | None = None
) -> list[Segment]:
    """The segments of a run from its stored events, in ``seq`` order.

    Each event is a dict with at least ``type``, ``seq`` and ``timestamp`` (START and FINISH
    also with ``parent_run_id`` and ``payload``, as stored). `durable` (the run's checkpoint,
    if any) tells a last segment without FINISH that is still ``running`` from one that was
    ``interrupted``, and names the suspended steps when the FINISH was not stored. Events
    before the first top-level START belong to no segment; no START: no segments.
    """
    done: list[_Open] = []
    current: _Open | None = None
    for event in events:
        kind = event.get("type")
        seq = _int(event.get("seq"))
        moment = _float(event.get("timestamp"))
        if kind == "start" and _is_top_level(event):
            if current is not None:
                done.append(current)
            current = _Open(len(done) + 1, seq, moment)
        if current is None:
            continue
        current.last_seq = max(current.last_seq, seq)
        current.last_time = max(current.last_time, moment)
        current.events += 1
        if kind == "finish" and _is_top_level(event):
            current.finish = event
    if current is not None:
        done.append(current)
    return [_close(item, item is done[-1], durable) for item in done]


def _close(item: _Open, last: bool, durable: DurableRun | None) -> Segment:
    base = Segment(
        number=item.number,
        first_seq=item.first_seq,
        last_seq=item.last_seq,
        started=item.started,
        finished_at=max(item.last_time, item.started),
        events=item.events,
        ended=INTERRUPTED,
    )
    payload = item.finish.get("payload") if item.finish is not None else None
    if isinstance(payload, Mapping):
        status = payload.get("status")
        end_status = None if status is None else str(status)
        steps = payload.get("suspended_steps")
        if isinstance(steps, list):
            reasons = payload.get("reasons")
            return replace(
                base,
                ended=SUSPENDED,
                end_status=end_status,
                suspended_steps=tuple(str(step) for step in steps),
                reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
            )
        return replace(base, ended=FINISHED, end_status=end_status)
    if item.finish is not None:  # a FINISH whose payload was not kept
        return replace(base, ended=FINISHED)
    if last and durable is not None:
        status = durable.status
        if status == SUSPENDED:
            steps = tuple(step for step, _ in durable.suspended)
            reasons = tuple(reason for _, reason in durable.suspended)
            return replace(base, ended=SUSPENDED, suspended_steps=steps, reasons=reasons)
        if status == RUNNING:
            return replace(base, ended=RUNNING)
        if status == FINISHED:
            return replace(base, ended=FINISHED, end_status=durable.end)
    return base


def read_durable_runs(
    db_path: str | Path, run_ids: Sequence[str] | None = None, *, timeout: float = 5.0
) -> dict[str, DurableRun]:
    """The durable runs (of `run_ids`, or all) whose checkpoint the run store file holds.

    A file without the ``durable_checkpoints`` table (older files, stores no durable run
    used) or that does not exist gives ``{}``. Opened read-only; ``sqlite3.Error`` from a
    corrupt or locked file propagates, as the run store's own reads do.
    """
    path = Path(db_path)
    if not path.is_file():
        return {}
    wanted = None if run_ids is None else list(dict.fromkeys(run_ids))
    if wanted is not None and not wanted:
        return {}
    conn = connect_read_only(path, timeout=timeout)
    try:
        if not _has_table(conn, CHECKPOINTS_TABLE):
            return {}
        with_leases = _has_table(conn, LEASES_TABLE)
        rows = _checkpoint_rows(conn, wanted)
        leases = _lease_rows(conn, [row[0] for row in rows]) if with_leases and rows else {}
    finally:
        conn.close()
    found: dict[str, DurableRun] = {}
    for run_id, status, segment, updated_at, end, suspended in rows:
        live = _live(leases.get(str(run_id)))
        found[str(run_id)] = durable_run_of(
            run_id, status, segment, updated_at, end, suspended, live
        )
    return found


def durable_run_of(
    run_id: Any,
    status: Any,
    segment: Any,
    updated_at: Any,
    end: Any,
    suspended: Any,
    lease_live: bool,
) -> DurableRun:
    """A checkpoint row as read from a store (any values: a row is untrusted input).

    `end`: the document's ``end``; `suspended`: its ``suspended`` list as JSON text (the
    other shapes read as none).
    """
    return DurableRun(
        run_id=str(run_id),
        checkpoint_status=str(status),
        segment=_int(segment),
        updated_at=_float(updated_at),
        lease_live=lease_live,
        end=None if end is None else str(end),
        suspended=_suspended(suspended),
    )


_SELECT_CHECKPOINTS = (
    "SELECT run_id, status, segment, updated_at,"
    " CASE WHEN json_valid(data) THEN json_extract(data, '$.end') END,"
    " CASE WHEN json_valid(data) AND status = 'suspended'"
    " THEN json_extract(data, '$.suspended') END"
    f" FROM {CHECKPOINTS_TABLE}"
)


def _checkpoint_rows(conn: sqlite3.Connection, wanted: list[str] | None) -> list[tuple[Any, ...]]:
    if wanted is None:
        return [tuple(row) for row in conn.execute(_SELECT_CHECKPOINTS)]
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        sql = f"{_SELECT_CHECKPOINTS} WHERE run_id IN ({marks})"
        rows.extend(tuple(row) for row in conn.execute(sql, chunk))
    return rows


def _lease_rows(conn: sqlite3.Connection, run_ids: list[str]) -> dict[str, Lease]:
    from justpipe.durable.store import Lease

    leases: dict[str, Lease] = {}
    for start in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT run_id, owner, expires_at FROM {LEASES_TABLE} WHERE run_id IN ({marks})"
        for run_id, owner, expires_at in conn.execute(sql, chunk):
            leases[str(run_id)] = Lease(str(run_id), str(owner), _float(expires_at))
    return leases


def _live(lease: Lease | None) -> bool:
    if lease is None:
        return False
    from justpipe.durable.store import lease_is_live

    return lease_is_live(lease)


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def _suspended(text: Any) -> tuple[tuple[str, str], ...]:
    items = parse_stored_json(text)
    if not isinstance(items, list):
        return ()
    return tuple(
        (str(item.get("step", "?")), str(item.get("reason") or ""))
        for item in items
        if isinstance(item, dict)
    )


def _why(steps: Sequence[str], reasons: Sequence[str]) -> str:
    parts = []
    for index, step in enumerate(steps):
        reason = reasons[index] if index < len(reasons) else ""
        parts.append(f"{step}: {reason}" if reason else step)
    if not steps:
        parts = [reason for reason in reasons if reason]
    return "; ".join(parts)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0
