"""What the dashboard works out from a run's stored events: spans, critical path, autopsy.

Everything here is pure Python over already-parsed event dicts (the stored event JSON,
see ``justpipe.storage.serialize``), so it is tested without a server.

A *span* is one invocation: from its STEP_START to the STEP_END / STEP_ERROR /
CANCELLED carrying the same ``invocation_id``. Map workers and retries are separate
invocations, so each gets its own span (upstream merged every worker of a step into
one bar by step name). Events without invocation ids (files written by older
versions) pair up by step name instead. A barrier's BARRIER_WAIT..BARRIER_RELEASE is
a span of kind ``barrier``.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from justpipe.storage.interface import StoredEvent
from justpipe.storage.readonly import parse_stored_json

__all__ = [
    "Span",
    "autopsy",
    "build_spans",
    "concurrency",
    "first_divergence",
    "full_event",
    "mark_critical_path",
    "parse_event",
    "parse_row",
    "step_summaries",
]

_WORKER_STAGE = re.compile(r"^(?P<name>.*)\[(?P<index>\d+)\]$")
_CRITICAL_SLACK_S = 0.0005
"""How far a successor may start before its predecessor's end and still follow it."""


@dataclass
class Span:
    """One invocation (or barrier wait) of a run; times are epoch seconds."""

    key: str
    step_name: str
    kind: str
    start: float
    end: float | None
    status: str
    attempt: int | None = None
    invocation_id: str | None = None
    parent_invocation_id: str | None = None
    owner_invocation_id: str | None = None
    worker_index: int | None = None
    start_seq: int = 0
    end_seq: int | None = None
    error: str | None = None
    critical: bool = False
    meta: Any = None

    @property
    def is_worker(self) -> bool:
        return self.worker_index is not None

    def duration(self, until: float) -> float:
        return max(0.0, (self.end if self.end is not None else until) - self.start)

    def to_dict(self, origin: float, until: float) -> dict[str, Any]:
        """Upstream's timeline keys (step_name, times, duration, status) plus ours."""
        end = self.end if self.end is not None else until
        return {
            "step_name": self.step_name,
            "start_time": _iso(self.start),
            "end_time": _iso(end),
            "duration_seconds": round(self.duration(until), 6),
            "status": self.status,
            "kind": self.kind,
            "invocation_id": self.invocation_id,
            "parent_invocation_id": self.parent_invocation_id,
            "owner_invocation_id": self.owner_invocation_id,
            "attempt": self.attempt,
            "worker_index": self.worker_index,
            "offset_seconds": round(self.start - origin, 6),
            "start_seq": self.start_seq,
            "end_seq": self.end_seq,
            "error": self.error,
            "critical": self.critical,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def parse_event(event: StoredEvent) -> dict[str, Any]:
    """The stored event as a dict; unreadable JSON becomes the row's own columns."""
    data = parse_stored_json(event.data)
    if not isinstance(data, dict):
        data = {}
    data.setdefault("type", event.event_type.value)
    data.setdefault("stage", event.step_name)
    data["seq"] = event.seq
    data["timestamp"] = event.timestamp.timestamp()
    return data


RAW = "_raw"
"""Key of an event dict whose JSON is not decoded yet (see :func:`full_event`)."""

LAZY_TYPES = ("token",)
"""Event types nothing but the event list looks into: their JSON is read and decoded
only when shown, which is most of the cost of opening a run with many tokens."""


def parse_row(
    seq: int, timestamp: float, kind: str, stage: str, data: str | None
) -> dict[str, Any]:
    """A raw stored row as an event dict; without `data` it is marked to be loaded later.

    `timestamp` is the row's column (as ``SQLiteBackend.get_event_data`` reads it: a time
    no date can hold is 0), never the JSON's own ``timestamp``.
    """
    if data is None or kind in LAZY_TYPES:
        return {"type": kind, "stage": stage, "seq": seq, "timestamp": timestamp, RAW: data}
    parsed = parse_stored_json(data)
    event: dict[str, Any] = parsed if isinstance(parsed, dict) else {"type": kind, "stage": stage}
    event["seq"] = seq
    event["timestamp"] = timestamp
    return event


def full_event(event: dict[str, Any], data: str | None = None) -> dict[str, Any]:
    """The event with its JSON decoded (from `data` when it was not loaded)."""
    if RAW not in event:
        return event
    raw = event[RAW] if event[RAW] is not None else data
    parsed = parse_stored_json(raw)
    decoded: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    decoded.update(type=event["type"], stage=event["stage"], seq=event["seq"])
    decoded["timestamp"] = event["timestamp"]
    return decoded


_ENDS = {"step_end": "success", "step_error": "error", "cancelled": "cancelled"}


def build_spans(events: Iterable[dict[str, Any]]) -> list[Span]:
    """One span per invocation and per barrier wait, in start order."""
    spans: list[Span] = []
    open_spans: dict[str, Span] = {}
    worker_queue: dict[str, list[int]] = defaultdict(list)
    for event in events:
        kind = event.get("type")
        stage = str(event.get("stage") or "")
        ts = float(event.get("timestamp") or 0.0)
        seq = int(event.get("seq") or 0)
        invocation = event.get("invocation_id")
        key = invocation if isinstance(invocation, str) else f"stage:{stage}"
        if kind == "map_worker":
            match = _WORKER_STAGE.match(stage)
            if match:
                worker_queue[match["name"]].append(int(match["index"]))
        elif kind == "step_start":
            worker_index = _worker_index(event, stage, worker_queue)
            span = Span(
                key=key,
                step_name=stage,
                kind=str(event.get("node_kind") or "step"),
                start=ts,
                end=None,
                status="running",
                attempt=_int_or_none(event.get("attempt")),
                invocation_id=invocation if isinstance(invocation, str) else None,
                parent_invocation_id=_str_or_none(event.get("parent_invocation_id")),
                owner_invocation_id=_str_or_none(event.get("owner_invocation_id")),
                worker_index=worker_index,
                start_seq=seq,
            )
            open_spans[key] = span
            spans.append(span)
        elif kind in _ENDS:
            span_or_none = open_spans.pop(key, None)
            if span_or_none is None:
                continue
            span_or_none.end, span_or_none.end_seq = ts, seq
            span_or_none.status = _ENDS[str(kind)]
            span_or_none.meta = event.get("meta")
            if kind != "step_end":
                span_or_none.error = _text(event.get("payload"))
        elif kind == "barrier_wait":
            span = Span(f"barrier:{stage}:{seq}", stage, "barrier", ts, None, "running")
            span.start_seq = seq
            open_spans[f"barrier:{stage}"] = span
            spans.append(span)
        elif kind == "barrier_release":
            barrier = open_spans.pop(f"barrier:{stage}", None)
            if barrier is not None:
                barrier.end, barrier.end_seq, barrier.status = ts, seq, "success"
    return spans


def _worker_index(event: dict[str, Any], stage: str, queue: dict[str, list[int]]) -> int | None:
    """The map index of a worker invocation, from its scope (``work[3]``) when present."""
    scope = event.get("scope")
    if isinstance(scope, list) and scope:
        match = _WORKER_STAGE.match(str(scope[-1]))
        if match and match["name"] == stage:
            return int(match["index"])
    owner = event.get("owner_invocation_id")
    if owner is not None and owner != event.get("invocation_id") and queue.get(stage):
        return queue[stage].pop(0)
    return None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def mark_critical_path(spans: Sequence[Span], until: float) -> list[Span]:
    """Mark and return the chain of invocations that decided the run's length.

    Walks back from the invocation that ended last: a map owner's predecessor is its
    worker that ended last; a worker's is whatever ended last before its map started;
    any other invocation's is whatever ended last before it started. Barrier waits
    are not links. O(n log n) plus a short scan per link.
    """
    candidates = [s for s in spans if s.kind != "barrier"]
    if not candidates:
        return []

    def end_of(span: Span) -> float:
        return span.end if span.end is not None else until

    by_end = sorted(candidates, key=end_of)
    ends = [end_of(s) for s in by_end]
    owners = {s.invocation_id: s for s in candidates if s.invocation_id and not s.is_worker}
    workers: dict[str, list[Span]] = defaultdict(list)
    for span in candidates:
        if span.is_worker and span.owner_invocation_id:
            workers[span.owner_invocation_id].append(span)
    current = by_end[-1]
    path = [current]
    seen = {current.key}
    while True:
        inner = [s for s in workers.get(current.invocation_id or "", []) if s.key not in seen]
        if inner:
            nxt: Span | None = max(inner, key=end_of)
        else:
            anchor = current
            if current.is_worker and current.owner_invocation_id in owners:
                anchor = owners[current.owner_invocation_id]
            index = bisect.bisect_right(ends, anchor.start + _CRITICAL_SLACK_S)
            nxt = None
            while index > 0:
                index -= 1
                span = by_end[index]
                if span.key in seen or span.invocation_id == current.owner_invocation_id:
                    continue
                if span.start > anchor.start:  # started after: ran alongside, not before
                    continue
                if span.is_worker and span.owner_invocation_id == anchor.invocation_id:
                    continue
                nxt = span
                break
            if nxt is None:
                break
        assert nxt is not None
        path.append(nxt)
        seen.add(nxt.key)
        current = nxt
    for span in path:
        span.critical = True
    path.sort(key=lambda span: span.start)
    return path


def concurrency(spans: Sequence[Span], until: float) -> list[tuple[float, int]]:
    """(time, active invocations) after every change, barrier waits excluded."""
    changes: list[tuple[float, int]] = []
    for span in spans:
        if span.kind == "barrier":
            continue
        changes.append((span.start, 1))
        changes.append((span.end if span.end is not None else until, -1))
    changes.sort(key=lambda item: (item[0], item[1]))
    points: list[tuple[float, int]] = []
    active = 0
    for moment, delta in changes:
        active += delta
        if points and points[-1][0] == moment:
            points[-1] = (moment, active)
        else:
            points.append((moment, active))
    return points


@dataclass
class StepSummary:
    """Every invocation of one step name, folded: what the step inspector shows."""

    name: str
    kind: str
    invocations: int = 0
    errors: int = 0
    attempts: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    status: str = "pending"
    last_error: str | None = None
    meta: Any = None
    durations: list[float] = field(default_factory=list)


def step_summaries(spans: Sequence[Span], until: float) -> dict[str, StepSummary]:
    """One summary per step name in first-start order; the latest outcome is the status."""
    summaries: dict[str, StepSummary] = {}
    for span in spans:
        if span.kind == "barrier":
            continue
        summary = summaries.setdefault(span.step_name, StepSummary(span.step_name, span.kind))
        duration = span.duration(until)
        summary.invocations += 1
        summary.attempts = max(summary.attempts, span.attempt or 0)
        summary.total_s += duration
        summary.max_s = max(summary.max_s, duration)
        summary.durations.append(duration)
        if span.status == "error":
            summary.errors += 1
            summary.last_error = span.error
        if span.meta is not None:
            summary.meta = span.meta
        if summary.status != "error" or span.status == "running":
            summary.status = span.status
    return summaries


def autopsy(run: dict[str, Any], events: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Why a failed run failed: step, kind, source, error type and message, traceback, time."""
    if run.get("status") not in ("failed", "timeout", "cancelled"):
        return None
    finish = next((e for e in reversed(events) if e.get("type") == "finish"), None)
    payload = finish.get("payload") if finish else None
    outcome = payload if isinstance(payload, dict) else {}
    recorded = outcome.get("errors")
    errors: list[Any] = recorded if isinstance(recorded, list) else []
    failed_step = outcome.get("failed_step") or run.get("error_step")
    error_event = next(
        (
            e
            for e in events
            if e.get("type") in ("step_error", "timeout", "cancelled")
            and (failed_step is None or e.get("stage") == failed_step)
        ),
        None,
    )
    message = outcome.get("error") or run.get("error_message")
    if message is None and error_event is not None:
        message = _text(error_event.get("payload"))
    framework: dict[str, Any] = {}
    meta = error_event.get("meta") if error_event else None
    if isinstance(meta, dict) and isinstance(meta.get("framework"), dict):
        framework = meta["framework"]
    start = events[0].get("timestamp") if events else None
    failed_at = error_event.get("timestamp") if error_event else None
    return {
        "status": run.get("status"),
        "failed_step": failed_step,
        "failure_kind": outcome.get("failure_kind"),
        "failure_source": outcome.get("failure_source"),
        "reason": outcome.get("reason"),
        "error_type": framework.get("error_type") or _error_type(errors),
        "error_message": message,
        "traceback": framework.get("traceback"),
        "time_to_failure_seconds": (
            round(float(failed_at) - float(start), 6)
            if isinstance(failed_at, (int, float)) and isinstance(start, (int, float))
            else None
        ),
        "failed_seq": error_event.get("seq") if error_event else None,
        "errors": errors,
    }


def _error_type(errors: list[Any]) -> str | None:
    for record in errors:
        if isinstance(record, dict) and isinstance(record.get("error_type"), str):
            return str(record["error_type"])
    return None


def first_divergence(
    events1: Sequence[dict[str, Any]], events2: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """The first position where the two runs' event orders differ (type and step).

    Map worker stages are compared without their index order mattering less: the
    comparison is exact, as the order is what a reader wants to see diverge.
    """
    for index in range(max(len(events1), len(events2))):
        one = events1[index] if index < len(events1) else None
        two = events2[index] if index < len(events2) else None
        if _signature(one) != _signature(two):
            return {"index": index, "run1": _brief(one), "run2": _brief(two)}
    return None


def _signature(event: dict[str, Any] | None) -> tuple[str, str] | None:
    if event is None:
        return None
    return str(event.get("type")), str(event.get("stage"))


def _brief(event: dict[str, Any] | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {
        "seq": event.get("seq"),
        "event_type": event.get("type"),
        "step_name": event.get("stage"),
    }


def failure_hotspots(error_steps: Iterable[str | None]) -> list[dict[str, Any]]:
    """Steps that failed runs most often, most frequent first."""
    counts = Counter(step or "(run level)" for step in error_steps)
    return [{"step_name": step, "failures": n} for step, n in counts.most_common(10)]
