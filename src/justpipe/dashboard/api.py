"""DashboardAPI: the run store, as the JSON the dashboard serves (spec §17).

Pure Python over a :class:`PipelineRegistry`; the server (``server.py``) maps its
errors to HTTP statuses. Shapes keep upstream's keys (``run_id``, ``pipeline_name``,
``duration_seconds``, ...) and add ours next to them. Departures from upstream:

* An ambiguous run-id prefix raises :class:`Ambiguous` (HTTP 409) listing the
  candidates, instead of an unhandled error (HTTP 500).
* Search starts at 2 characters (upstream: 3).
* Stats cover every run of the window, not only the 50 most recent runs.
* Timeline spans are per invocation: map workers and retries are separate bars.
* A run that is still going reads as ``running`` when its lease is live; one whose
  process died stays ``failed`` with ``liveness: "dead"``.
* A store that cannot be read (corrupt, locked) is reported on its pipeline
  (``error``) instead of failing every request; the file is never written to.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from justpipe.cli.registry import PipelineInfo, PipelineRegistry, StoreError
from justpipe.dashboard import analysis
from justpipe.observability.compare import compare_runs
from justpipe.storage.interface import MAX_QUERY_LIMIT, RunRecord, StorageBackend, StoredEvent
from justpipe.storage.persistence import PIPELINE_JSON, RUNS_DB
from justpipe.storage.segments import (
    DurableRun,
    Segment,
    durable_label,
    segments_from_events,
)
from justpipe.storage.sqlite import (
    UNFINISHED_RUN_MESSAGE,
    RunLease,
    SQLiteBackend,
    lease_state,
)
from justpipe.types import EventType, PipelineTerminalStatus

__all__ = [
    "Ambiguous",
    "BadRequest",
    "DashboardAPI",
    "DashboardError",
    "DashboardRegistry",
    "NotFound",
    "StoreUnavailable",
]

MIN_SEARCH_LENGTH = 2
RUNNING = "running"
# statuses of runs that have not ended (not in a success rate's denominator)
_NOT_ENDED = frozenset({RUNNING, "suspended", "interrupted"})
DURABLE_STATUSES = ("suspended", "interrupted")
"""Statuses only durable runs have (the runs list filters on them too)."""
CLEANUP_PREVIEW = 20


STORE_TIMEOUT_S = 1.0
"""How long the dashboard waits for a store another process holds locked."""


class DashboardRegistry(PipelineRegistry):
    """A registry whose stores wait at most `timeout` seconds for a lock.

    The CLI waits 5 s for a locked store; a page (and the live streams, which poll)
    should report it quickly instead, and try again on the next request.
    """

    def __init__(self, storage_dir: str | Path, *, timeout: float = STORE_TIMEOUT_S) -> None:
        super().__init__(storage_dir)
        self.timeout = timeout

    def get_backend(self, pipeline_hash: str) -> StorageBackend:
        backend = self._backends.get(pipeline_hash)
        if backend is None:
            db_path = self.storage_dir / pipeline_hash / RUNS_DB
            backend = SQLiteBackend(db_path, timeout=self.timeout)
            self._backends[pipeline_hash] = backend
        return backend


class DashboardError(Exception):
    """A request the API cannot answer; ``status`` is the HTTP status to send."""

    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.message, **self.details}


class NotFound(DashboardError):
    status = 404


class BadRequest(DashboardError):
    status = 400


class Ambiguous(DashboardError):
    status = 409


class StoreUnavailable(DashboardError):
    status = 503


@dataclass(frozen=True)
class FoundRun:
    """A run with the pipeline and store it came from, and its liveness."""

    run: RunRecord
    info: PipelineInfo
    backend: StorageBackend
    liveness: str | None

    @property
    def status(self) -> str:
        if self.liveness == "live":
            return RUNNING
        return self.run.status.value


def is_unfinished(run: RunRecord) -> bool:
    """A row written by ``append_events`` that never got its end record."""
    return run.end_time is None and run.error_message == UNFINISHED_RUN_MESSAGE


def _leases(backend: StorageBackend, runs: list[RunRecord]) -> dict[str, RunLease]:
    unfinished = [run.run_id for run in runs if is_unfinished(run)]
    get_leases = getattr(backend, "get_leases", None)
    if not unfinished or not callable(get_leases):
        return {}
    leases: dict[str, RunLease] = get_leases(unfinished)
    return leases


def liveness_of(run: RunRecord, leases: dict[str, RunLease]) -> str | None:
    return lease_state(leases.get(run.run_id)) if is_unfinished(run) else None


def serialize_run(
    run: RunRecord,
    info: PipelineInfo,
    liveness: str | None = None,
    durable: DurableRun | None = None,
) -> dict[str, Any]:
    """A run as upstream serialized it, plus ``liveness`` (live/dead/unknown, or None).

    A durable run (`durable`, its checkpoint) also carries ``durable`` (its status, the
    checkpoint's status and segment), and its ``status`` is ``suspended``, ``running`` or
    ``interrupted`` until it finishes.
    """
    status = RUNNING if liveness == "live" else run.status.value
    if durable is not None:
        status = durable_label(status, durable)
    error_message = run.error_message
    if liveness == "dead":
        error_message = "The process running this run died or stopped reporting before it finished"
    return {
        "run_id": run.run_id,
        "pipeline_name": info.name,
        "pipeline_hash": info.hash,
        "status": status,
        "start_time": run.start_time.isoformat(),
        "end_time": run.end_time.isoformat() if run.end_time else None,
        "duration_seconds": run.duration.total_seconds() if run.duration else None,
        "error_message": error_message if status != RUNNING else None,
        "error_step": run.error_step,
        "run_meta": _parse_json(run.run_meta),
        "liveness": liveness,
        **({} if durable is None else {"durable": serialize_durable(durable)}),
    }


def serialize_durable(durable: DurableRun) -> dict[str, Any]:
    return {
        "status": durable.status,
        "checkpoint_status": durable.checkpoint_status,
        "segment": durable.segment,
        "lease_live": durable.lease_live,
        "suspended": [{"step": step, "reason": reason} for step, reason in durable.suspended],
    }


def serialize_segment(segment: Segment) -> dict[str, Any]:
    return {**segment.to_dict(), "description": segment.describe_end()}


def serialize_event(event: StoredEvent, parsed: dict[str, Any] | None = None) -> dict[str, Any]:
    data = parsed if parsed is not None else _parse_json(event.data)
    return {
        "seq": event.seq,
        "event_type": event.event_type.value,
        "step_name": event.step_name,
        "timestamp": event.timestamp.isoformat(),
        "data": data,
    }


def _parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return text


class DashboardAPI:
    """Read (and clean up) every pipeline under a registry's storage root."""

    def __init__(self, registry: PipelineRegistry) -> None:
        self.registry = registry

    # -- pipelines ------------------------------------------------------------------

    def find_pipeline(self, pipeline_hash: str) -> PipelineInfo:
        for info in self.registry.list_pipelines():
            if info.hash == pipeline_hash:
                return info
        raise NotFound(f"Pipeline not found: {pipeline_hash}")

    def backend(self, info: PipelineInfo) -> StorageBackend:
        """The pipeline's store; a store that cannot be opened is a StoreUnavailable."""
        try:
            return self.registry.get_backend(info.hash)
        except StoreError as exc:
            raise StoreUnavailable(
                f"The run store of pipeline '{info.name}' cannot be read: {exc}",
                pipeline_hash=info.hash,
            ) from exc

    def all_runs(self, info: PipelineInfo) -> list[RunRecord]:
        backend = self.backend(info)
        try:
            return self.registry.all_runs_of(backend)
        except StoreError as exc:
            raise StoreUnavailable(
                f"The run store of pipeline '{info.name}' cannot be read: {exc}",
                pipeline_hash=info.hash,
            ) from exc

    def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline with its run summary; an unreadable store carries ``error``."""
        return [self._summary(info) for info in self.registry.list_pipelines()]

    def _summary(self, info: PipelineInfo) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "name": info.name,
            "hash": info.hash,
            "total_runs": 0,
            "success_count": 0,
            "success_rate": 0.0,
            "avg_duration_seconds": None,
            "last_run_time": None,
            "last_run_status": None,
            "running_count": 0,
            "error": None,
        }
        try:
            runs = self.all_runs(info)
            leases = _leases(self.backend(info), runs)
        except (StoreUnavailable, *StoreError) as exc:
            summary["error"] = str(exc)
            return summary
        statuses = self._statuses(info, runs, leases)
        finished = [s for s in statuses if s not in _NOT_ENDED]
        successes = statuses.count(PipelineTerminalStatus.SUCCESS.value)
        durations = [run.duration.total_seconds() for run in runs if run.duration is not None]
        summary.update(
            total_runs=len(runs),
            success_count=successes,
            success_rate=round(successes / len(finished) * 100, 1) if finished else 0.0,
            avg_duration_seconds=round(sum(durations) / len(durations), 3) if durations else None,
            last_run_time=runs[0].start_time.isoformat() if runs else None,
            last_run_status=statuses[0] if statuses else None,
            running_count=statuses.count(RUNNING),
        )
        return summary

    def _statuses(
        self, info: PipelineInfo, runs: list[RunRecord], leases: dict[str, RunLease]
    ) -> list[str]:
        """Each run's status as shown: ``running`` while live; a durable run's until it ends
        (``suspended``, ``interrupted``: neither a success nor finished)."""
        durable = self.durable_runs(info, [run.run_id for run in runs])
        return [
            durable_label(
                RUNNING if liveness_of(run, leases) == "live" else run.status.value,
                durable.get(run.run_id),
            )
            for run in runs
        ]

    def pipeline(self, pipeline_hash: str) -> dict[str, Any]:
        info = self.find_pipeline(pipeline_hash)
        detail = self._summary(info)
        description = read_description(info.path.parent / PIPELINE_JSON)
        detail["topology"] = description
        detail["visual_ast"] = description.get("visual_ast") if description else None
        return detail

    def runs(
        self,
        pipeline_hash: str,
        statuses: list[str] | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        return self.runs_page(pipeline_hash, statuses, limit, offset)[0]

    def runs_page(
        self,
        pipeline_hash: str,
        statuses: list[str] | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the pipeline's runs (newest first) and how many match in total."""
        info = self.find_pipeline(pipeline_hash)
        wanted = set(statuses or [])
        valid = {s.value for s in PipelineTerminalStatus} | {RUNNING, *DURABLE_STATUSES}
        unknown = wanted - valid
        if unknown:
            raise BadRequest(f"Unknown status: {', '.join(sorted(unknown))}", allowed=sorted(valid))
        runs = self.all_runs(info)
        leases = _leases(self.backend(info), runs)
        durable = self.durable_runs(info, [run.run_id for run in runs])
        rows = [
            serialize_run(run, info, liveness_of(run, leases), durable.get(run.run_id))
            for run in runs
        ]
        if wanted:
            rows = [row for row in rows if row["status"] in wanted]
        return rows[offset : offset + limit], len(rows)

    # -- runs -----------------------------------------------------------------------

    def find_run(self, run_id: str) -> FoundRun:
        """The run with this id, or the only one whose id starts with it."""
        if not run_id:
            raise NotFound("Run not found: (empty id)")
        searched: list[tuple[PipelineInfo, StorageBackend]] = []
        for info, backend in self.registry.readable_pipelines():
            try:
                run = backend.get_run(run_id)
            except StoreError:
                continue
            if run is not None:
                return self._found(run, info, backend)
            searched.append((info, backend))
        matches: list[tuple[RunRecord, PipelineInfo, StorageBackend]] = []
        for info, backend in searched:
            try:
                runs = backend.find_runs_by_prefix(run_id, limit=MAX_QUERY_LIMIT)
            except StoreError:
                continue
            matches.extend((run, info, backend) for run in runs)
        if not matches:
            raise NotFound(f"Run not found: {run_id}")
        if len(matches) > 1:
            matches.sort(key=lambda item: item[0].start_time, reverse=True)
            raise Ambiguous(
                f"Ambiguous run ID prefix '{run_id}' matches {len(matches)} runs",
                candidates=[serialize_run(run, info) for run, info, _ in matches[:20]],
                total=len(matches),
            )
        return self._found(*matches[0])

    def _found(self, run: RunRecord, info: PipelineInfo, backend: StorageBackend) -> FoundRun:
        leases = _leases(backend, [run])
        return FoundRun(run, info, backend, liveness_of(run, leases))

    def run(self, run_id: str) -> dict[str, Any]:
        """The run; a durable run also with ``durable`` and its ``segments``."""
        found = self.find_run(run_id)
        durable = self.durable_of(found)
        run = serialize_run(found.run, found.info, found.liveness, durable)
        if durable is not None:
            segments = self.segments(found, durable, self.parsed_events(found))
            run["segments"] = [serialize_segment(segment) for segment in segments]
        return run

    # -- durable runs ---------------------------------------------------------------

    def durable_runs(self, info: PipelineInfo, run_ids: list[str]) -> dict[str, DurableRun]:
        """The checkpoints of those runs that are durable (none for plain runs)."""
        durable_runs = getattr(self.registry, "durable_runs", None)
        if not run_ids or not callable(durable_runs):
            return {}
        found: dict[str, DurableRun] = durable_runs(info.hash, run_ids)
        return found

    def durable_of(self, found: FoundRun) -> DurableRun | None:
        """The run's checkpoint, or None for a plain run."""
        return self.durable_runs(found.info, [found.run.run_id]).get(found.run.run_id)

    def segments(
        self, found: FoundRun, durable: DurableRun | None, events: list[dict[str, Any]]
    ) -> list[Segment]:
        """The run's segments (from its parsed events), for a durable run; else none."""
        if durable is None:
            return []
        return segments_from_events(events, durable)

    def events(
        self,
        run_id: str,
        event_type: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        found = self.find_run(run_id)
        stored = self.stored_events(found, event_type)
        end = None if limit is None else offset + limit
        return [serialize_event(event) for event in stored[offset:end]]

    def stored_events(self, found: FoundRun, event_type: str | None = None) -> list[StoredEvent]:
        kind: EventType | None = None
        if event_type:
            try:
                kind = EventType(event_type.lower())
            except ValueError:
                raise BadRequest(
                    f"Unknown event type: {event_type}",
                    allowed=[member.value for member in EventType],
                ) from None
        try:
            return found.backend.get_events(found.run.run_id, kind)
        except StoreError as exc:
            raise StoreUnavailable(str(exc), pipeline_hash=found.info.hash) from exc

    def parsed_events(self, found: FoundRun) -> list[dict[str, Any]]:
        """Every event of the run as a dict, in ``seq`` order."""
        get_rows = getattr(found.backend, "get_event_data", None)
        try:
            if callable(get_rows):
                rows: list[tuple[int, float, str, str, str | None]] = get_rows(
                    found.run.run_id, analysis.LAZY_TYPES
                )
                return [analysis.parse_row(*row) for row in rows]
            return [analysis.parse_event(event) for event in self.stored_events(found)]
        except StoreError as exc:
            raise StoreUnavailable(str(exc), pipeline_hash=found.info.hash) from exc

    def full_events(self, found: FoundRun, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`events` with every JSON decoded, loading what was left in the store."""
        missing = [e["seq"] for e in events if e.get(analysis.RAW, "") is None]
        loaded: dict[int, str] = {}
        get_json = getattr(found.backend, "get_event_json", None)
        if missing and callable(get_json):
            try:
                loaded = get_json(found.run.run_id, missing)
            except StoreError as exc:
                raise StoreUnavailable(str(exc), pipeline_hash=found.info.hash) from exc
        return [analysis.full_event(e, loaded.get(e["seq"])) for e in events]

    def analysis(self, found: FoundRun) -> RunAnalysis:
        """The run worked out for the run page; kept for finished runs looked at lately."""
        count = getattr(found.backend, "count_events", None)
        key = None
        if found.run.end_time is not None and callable(count):
            key = (str(found.info.path), found.run.run_id, int(count(found.run.run_id)))
            cached = _ANALYSES.get(key)
            if cached is not None:
                _ANALYSES.move_to_end(key)
                return cached
        result = RunAnalysis.build(found, self.parsed_events(found))
        if key is not None:
            _ANALYSES[key] = result
            while len(_ANALYSES) > _ANALYSES_KEPT:
                _ANALYSES.popitem(last=False)
        return result

    def timeline(self, run_id: str) -> list[dict[str, Any]]:
        found = self.find_run(run_id)
        result = self.analysis(found)
        return [span.to_dict(result.origin, result.until) for span in result.spans]

    def search(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Runs whose id starts with `query`, or of pipelines whose name contains it."""
        query = query.strip()
        if len(query) < MIN_SEARCH_LENGTH:
            return []
        found: dict[str, tuple[RunRecord, PipelineInfo, StorageBackend]] = {}
        lowered = query.lower()
        for info, backend in self.registry.readable_pipelines():
            try:
                by_id = backend.find_runs_by_prefix(query, limit=limit)
                by_name = backend.list_runs(limit=limit) if lowered in info.name.lower() else []
            except StoreError:
                continue
            for run in [*by_id, *by_name]:
                found.setdefault(run.run_id, (run, info, backend))
        ordered = sorted(found.values(), key=lambda item: item[0].start_time, reverse=True)
        return [
            serialize_run(run, info, liveness_of(run, _leases(backend, [run])))
            for run, info, backend in ordered[:limit]
        ]

    def compare(self, run1_id: str, run2_id: str) -> dict[str, Any]:
        one, two = self.find_run(run1_id), self.find_run(run2_id)
        events1, events2 = self.stored_events(one), self.stored_events(two)
        comparison = compare_runs(one.run, events1, two.run, events2, one.info.name, two.info.name)
        parsed1 = [analysis.parse_event(event) for event in events1]
        parsed2 = [analysis.parse_event(event) for event in events2]
        return {
            "run1_id": comparison.run1_id,
            "run2_id": comparison.run2_id,
            "pipeline1_name": comparison.pipeline1_name,
            "pipeline2_name": comparison.pipeline2_name,
            "duration_diff": comparison.duration_diff,
            "status_same": comparison.status_same,
            "pipeline_same": comparison.pipeline_same,
            "step_timing_diff": comparison.step_timing_diff,
            "new_steps": comparison.new_steps,
            "removed_steps": comparison.removed_steps,
            "event_count_diff": comparison.event_count_diff,
            "run1": serialize_run(one.run, one.info, one.liveness),
            "run2": serialize_run(two.run, two.info, two.liveness),
            "step_timings": _step_timings(parsed1, parsed2),
            "first_divergence": analysis.first_divergence(parsed1, parsed2),
        }

    def stats(self, pipeline_hash: str, days: int = 7) -> dict[str, Any]:
        """Outcomes, durations, daily activity and failures of every run in the window."""
        info = self.find_pipeline(pipeline_hash)
        now = datetime.now(UTC)
        cutoff = now - timedelta(days=days)
        runs = [run for run in self.all_runs(info) if run.start_time >= cutoff]
        leases = _leases(self.backend(info), runs)
        statuses = self._statuses(info, runs, leases)
        counts = Counter(statuses)
        total = len(runs)
        successes = counts.get(PipelineTerminalStatus.SUCCESS.value, 0)
        durations = [run.duration.total_seconds() for run in runs if run.duration is not None]
        daily: dict[str, dict[str, int]] = {}
        for offset in range(days - 1, -1, -1):
            daily[(now - timedelta(days=offset)).date().isoformat()] = {}
        for run, status in zip(runs, statuses, strict=True):
            day = daily.setdefault(run.start_time.date().isoformat(), {})
            day[status] = day.get(status, 0) + 1
        failed = [run for run, s in zip(runs, statuses, strict=True) if s in ("failed", "timeout")]
        return {
            "total_runs": total,
            "days": days,
            "status_counts": dict(counts),
            "success_count": successes,
            "failed_count": counts.get(PipelineTerminalStatus.FAILED.value, 0),
            "success_rate": round(successes / total * 100, 1) if total else 0.0,
            "duration_stats": (
                {
                    "avg": round(sum(durations) / len(durations), 3),
                    "min": round(min(durations), 3),
                    "max": round(max(durations), 3),
                    "total": round(sum(durations), 3),
                }
                if durations
                else None
            ),
            "daily_activity": [
                {"date": day, "total": sum(by.values()), **by} for day, by in daily.items()
            ],
            "duration_trend": [
                {
                    "run_id": run.run_id,
                    "start_time": run.start_time.isoformat(),
                    "duration_seconds": run.duration.total_seconds(),
                    "status": status,
                }
                for run, status in reversed(list(zip(runs, statuses, strict=True)))
                if run.duration is not None
            ],
            "failure_hotspots": analysis.failure_hotspots(run.error_step for run in failed),
            "recent_errors": [
                {
                    "run_id": run.run_id,
                    "start_time": run.start_time.isoformat(),
                    "error_message": run.error_message,
                    "error_step": run.error_step,
                }
                for run in failed[:10]
            ],
        }

    def cleanup(
        self,
        pipeline_hash: str,
        older_than_days: int | None = None,
        status: str | None = None,
        keep: int = 10,
        dry_run: bool = True,
    ) -> dict[str, Any]:
        """Delete (or with `dry_run`, list) runs beyond the newest `keep` matching the filters.

        Runs that are still going are never deleted.
        """
        info = self.find_pipeline(pipeline_hash)
        wanted: PipelineTerminalStatus | None = None
        if status:
            try:
                wanted = PipelineTerminalStatus(status.lower())
            except ValueError:
                raise BadRequest(f"Unknown status: {status}") from None
        if keep < 0 or (older_than_days is not None and older_than_days < 0):
            raise BadRequest("keep and older_than_days must be >= 0")
        runs = self.all_runs(info)
        backend = self.backend(info)
        leases = _leases(backend, runs)
        cutoff = (
            None if older_than_days is None else datetime.now(UTC) - timedelta(days=older_than_days)
        )
        doomed = [
            run
            for run in runs[keep:]
            if (cutoff is None or run.start_time < cutoff)
            and (wanted is None or run.status is wanted)
            and liveness_of(run, leases) != "live"
        ]
        result: dict[str, Any] = {
            "count": len(doomed),
            "runs": [serialize_run(run, info) for run in doomed[:CLEANUP_PREVIEW]],
            "dry_run": dry_run,
        }
        if dry_run:
            return result
        deleted = 0
        try:
            for run in doomed:
                deleted += bool(backend.delete_run(run.run_id))
        except StoreError as exc:
            raise StoreUnavailable(str(exc), pipeline_hash=info.hash, deleted=deleted) from exc
        result["deleted"] = deleted
        return result

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "timestamp": datetime.now(UTC).isoformat(),
            "total_pipelines": len(self.registry.list_pipelines()),
        }


@dataclass
class RunAnalysis:
    """A run's events worked out for the run page: spans, critical path, concurrency."""

    events: list[dict[str, Any]]
    spans: list[analysis.Span]
    origin: float
    until: float
    critical_path: list[analysis.Span]
    concurrency: list[tuple[float, int]]
    finish: dict[str, Any] | None

    @classmethod
    def build(cls, found: FoundRun, events: list[dict[str, Any]]) -> RunAnalysis:
        spans = analysis.build_spans(events)
        # the events' own clock: the stored start/end also cover the store's set-up
        origin = found.run.start_time.timestamp()
        if events:
            origin = float(events[0].get("timestamp") or origin)
        last = float(events[-1].get("timestamp") or origin) if events else origin
        until = last if events or found.run.end_time is None else found.run.end_time.timestamp()
        if found.liveness != "live":
            for span in spans:
                if span.end is None:
                    span.status = "incomplete"
        until = max(until, last)
        for span in spans:
            span.critical = False
        critical = analysis.mark_critical_path(spans, until)
        finish = next((e for e in reversed(events) if e.get("type") == "finish"), None)
        return cls(
            events, spans, origin, until, critical, analysis.concurrency(spans, until), finish
        )


def _step_timings(
    events1: list[dict[str, Any]], events2: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per step: total invocation time, invocations and status in each run."""
    until1 = float(events1[-1]["timestamp"]) if events1 else 0.0
    until2 = float(events2[-1]["timestamp"]) if events2 else 0.0
    one = analysis.step_summaries(analysis.build_spans(events1), until1)
    two = analysis.step_summaries(analysis.build_spans(events2), until2)
    rows = []
    for name in [*one, *(n for n in two if n not in one)]:
        a, b = one.get(name), two.get(name)
        rows.append(
            {
                "step_name": name,
                "run1_seconds": round(a.total_s, 6) if a else None,
                "run2_seconds": round(b.total_s, 6) if b else None,
                "diff_seconds": round(b.total_s - a.total_s, 6) if a and b else None,
                "run1_status": a.status if a else None,
                "run2_status": b.status if b else None,
                "run1_invocations": a.invocations if a else 0,
                "run2_invocations": b.invocations if b else 0,
            }
        )
    return rows


_ANALYSES: OrderedDict[tuple[str, str, int], RunAnalysis] = OrderedDict()
_ANALYSES_KEPT = 4
"""Finished runs never change (same file, id and event count): their analysis is reused."""


def read_description(path: Path) -> dict[str, Any] | None:
    """The pipeline's ``pipeline.json`` (its ``describe()``), or None when unreadable."""
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return described if isinstance(described, dict) else None
