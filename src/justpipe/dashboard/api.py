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

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from justpipe.cli import paging
from justpipe.cli.commands.cleanup import select_runs_to_delete
from justpipe.cli.registry import (
    AnnotatedRun,
    PipelineInfo,
    PipelineRegistry,
    StoreError,
    StoreUnavailableError,
)
from justpipe.dashboard import analysis
from justpipe.observability.compare import compare_runs
from justpipe.storage.interface import MAX_QUERY_LIMIT, RunRecord, StorageBackend, StoredEvent
from justpipe.storage.readonly import parse_stored_json
from justpipe.storage.segments import DurableRun, Segment, segments_from_events
from justpipe.storage.status import (
    RESUMABLE,
    RunStatus,
    cutoff_days_ago,
    may_delete,
    parse_status,
    success_rate,
)
from justpipe.types import EventType

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
CLEANUP_PREVIEW = 20
FAILURES = (RunStatus.FAILED, RunStatus.TIMEOUT)
"""Statuses the charts and hotspots count as failures."""


STORE_TIMEOUT_S = 1.0
"""How long the dashboard waits for a store another process holds locked."""


class DashboardRegistry(PipelineRegistry):
    """A registry whose stores wait at most `timeout` seconds for a lock.

    The CLI waits 5 s for a locked store; a page (and the live streams, which poll)
    should report it quickly instead, and try again on the next request.
    """

    def __init__(self, storage_dir: str | Path, *, timeout: float = STORE_TIMEOUT_S) -> None:
        super().__init__(storage_dir, timeout=timeout)


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
    """A run (with its status) and the pipeline and store it came from."""

    item: AnnotatedRun
    info: PipelineInfo
    backend: StorageBackend

    @property
    def run(self) -> RunRecord:
        return self.item.run

    @property
    def liveness(self) -> str | None:
        return self.item.liveness

    @property
    def status(self) -> RunStatus:
        return self.item.status


def serialize_run(item: AnnotatedRun) -> dict[str, Any]:
    """A run as upstream serialized it, with the status of the one model, plus ``liveness``
    (live/dead/unknown for a run without an end record, else None) and ``damage``.

    A durable run also carries ``durable`` (its status, the checkpoint's status and
    segment); its ``status`` is ``suspended``, ``running`` or ``interrupted`` until it
    finishes.
    """
    run = item.run
    unreadable_start = run.damage is not None and "start_time" in run.damage
    return {
        "run_id": run.run_id,
        "pipeline_name": item.pipeline_name,
        "pipeline_hash": item.pipeline_hash,
        "status": item.status.value,
        "start_time": None if unreadable_start else run.start_time.isoformat(),
        "end_time": run.end_time.isoformat() if run.end_time else None,
        "duration_seconds": run.duration.total_seconds() if run.duration else None,
        "error_message": item.error,
        "error_step": run.error_step,
        "run_meta": _parse_json(run.run_meta),
        "liveness": item.liveness,
        "damage": run.damage,
        **({} if item.durable is None else {"durable": serialize_durable(item.durable)}),
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
    """Stored JSON as its value; text that cannot be used is shown as it is."""
    return parse_stored_json(text, default=text)


def _unavailable(info: PipelineInfo, exc: BaseException, **details: Any) -> StoreUnavailable:
    return StoreUnavailable(
        f"The run store of pipeline '{info.name}' cannot be read: {exc}",
        pipeline_hash=info.hash,
        **details,
    )


class DashboardAPI:
    """Read (and clean up) every pipeline under a registry's storage root."""

    def __init__(self, registry: PipelineRegistry) -> None:
        self.registry = registry

    # -- pipelines ------------------------------------------------------------------

    def list_pipelines(self) -> list[PipelineInfo]:
        """The registry's pipelines; a store that cannot list them is a StoreUnavailable."""
        try:
            return self.registry.list_pipelines()
        except StoreError as exc:
            where = self.registry.where
            raise StoreUnavailable(f"The run store {where} cannot be read: {exc}") from exc

    def find_pipeline(self, pipeline_hash: str) -> PipelineInfo:
        for info in self.list_pipelines():
            if info.hash == pipeline_hash:
                return info
        raise NotFound(f"Pipeline not found: {pipeline_hash}")

    def backend(self, info: PipelineInfo) -> StorageBackend:
        """The pipeline's store; a store that cannot be opened is a StoreUnavailable."""
        try:
            return self.registry.get_backend(info.hash)
        except StoreError as exc:
            raise _unavailable(info, exc) from exc

    def all_runs(self, info: PipelineInfo) -> list[AnnotatedRun]:
        """Every run of the pipeline with its status, newest first."""
        try:
            return self.registry.runs_of(info)
        except StoreError as exc:
            raise _unavailable(info, exc) from exc

    def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline with its run summary; an unreadable store carries ``error``."""
        return [self._summary(info) for info in self.list_pipelines()]

    def _summary(self, info: PipelineInfo) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "name": info.name,
            "hash": info.hash,
            "total_runs": 0,
            "success_count": 0,
            "ended_count": 0,
            "success_rate": 0.0,
            "avg_duration_seconds": None,
            "last_run_time": None,
            "last_run_status": None,
            "running_count": 0,
            "status_counts": {},
            "error": None,
            "damage": info.damage,
        }
        try:
            counted = paging.summary(self.registry, info)
        except StoreError as exc:
            summary["error"] = str(_unavailable(info, exc))
            return summary
        statuses = counted.statuses
        successes, ended, rate = success_rate(statuses.elements())
        newest = counted.newest
        summary.update(
            total_runs=counted.total,
            success_count=successes,
            ended_count=ended,
            success_rate=rate or 0.0,
            avg_duration_seconds=(
                round(counted.duration_sum / counted.durations, 3) if counted.durations else None
            ),
            last_run_time=newest.run.start_time.isoformat() if newest else None,
            last_run_status=newest.status.value if newest else None,
            running_count=statuses[RunStatus.RUNNING],
            status_counts={status.value: n for status, n in statuses.items() if n},
        )
        return summary

    def pipeline(self, pipeline_hash: str) -> dict[str, Any]:
        info = self.find_pipeline(pipeline_hash)
        detail = self._summary(info)
        try:
            description = self.registry.description(info)
        except StoreError as exc:
            raise _unavailable(info, exc) from exc
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
        """One page of the pipeline's runs (newest first) and how many match in total,
        paged in the store (``cli.paging``)."""
        info = self.find_pipeline(pipeline_hash)
        wanted = _wanted_statuses(statuses)
        try:
            page, total = paging.runs_page(self.registry, info, wanted, limit, offset)
        except StoreError as exc:
            raise _unavailable(info, exc) from exc
        return [serialize_run(item) for item in page], total

    # -- runs -----------------------------------------------------------------------

    def find_run(self, run_id: str) -> FoundRun:
        """The run with this id, or the only one whose id starts with it.

        Not found while some store could not be read: StoreUnavailable (the run may be
        there), not NotFound.
        """
        if not run_id:
            raise NotFound("Run not found: (empty id)")
        try:
            found = self.registry.resolve_run(run_id)
        except StoreUnavailableError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except ValueError:
            raise self._ambiguity(run_id) from None
        if found is None:
            raise NotFound(f"Run not found: {run_id}")
        item, backend = found
        return FoundRun(item, self.find_pipeline(item.pipeline_hash), backend)

    def _ambiguity(self, run_id: str) -> Ambiguous:
        matches: list[AnnotatedRun] = []
        for info, backend in self.registry.readable_pipelines():
            try:
                runs = backend.find_runs_by_prefix(run_id, limit=MAX_QUERY_LIMIT)
                matches.extend(self.registry.annotate(info, backend, runs))
            except StoreError:
                continue
        matches.sort(key=lambda item: item.run.start_time, reverse=True)
        return Ambiguous(
            f"Ambiguous run ID prefix '{run_id}' matches {len(matches)} runs",
            candidates=[serialize_run(item) for item in matches[:20]],
            total=len(matches),
        )

    def run(self, run_id: str) -> dict[str, Any]:
        """The run; a durable run also with ``durable`` and its ``segments``."""
        found = self.find_run(run_id)
        run = serialize_run(found.item)
        durable = found.item.durable
        if durable is not None:
            segments = self.segments(found, self.parsed_events(found))
            run["segments"] = [serialize_segment(segment) for segment in segments]
        return run

    # -- durable runs ---------------------------------------------------------------

    def durable_status(self, found: FoundRun) -> RunStatus:
        """The run's status read again from its store (the live streams poll it)."""
        try:
            return self.registry.annotate(found.info, found.backend, [found.run])[0].status
        except StoreError as exc:
            raise _unavailable(found.info, exc) from exc

    def segments(self, found: FoundRun, events: list[dict[str, Any]]) -> list[Segment]:
        """The run's segments (from its parsed events), for a durable run; else none."""
        durable = found.item.durable
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
            raise _unavailable(found.info, exc) from exc

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
            raise _unavailable(found.info, exc) from exc

    def full_events(self, found: FoundRun, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`events` with every JSON decoded, loading what was left in the store."""
        missing = [e["seq"] for e in events if e.get(analysis.RAW, "") is None]
        loaded: dict[int, str] = {}
        get_json = getattr(found.backend, "get_event_json", None)
        if missing and callable(get_json):
            try:
                loaded = get_json(found.run.run_id, missing)
            except StoreError as exc:
                raise _unavailable(found.info, exc) from exc
        return [analysis.full_event(e, loaded.get(e["seq"])) for e in events]

    def analysis(self, found: FoundRun) -> RunAnalysis:
        """The run worked out for the run page; kept for finished runs looked at lately."""
        count = getattr(found.backend, "count_events", None)
        key = None
        if found.run.end_time is not None and callable(count):
            try:
                counted = int(count(found.run.run_id))
            except StoreError as exc:
                raise _unavailable(found.info, exc) from exc
            key = (self.registry.where, found.info.hash, found.run.run_id, counted)
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
        found: dict[str, AnnotatedRun] = {}
        lowered = query.lower()
        for info, backend in self.registry.readable_pipelines():
            try:
                by_id = backend.find_runs_by_prefix(query, limit=limit)
                by_name = backend.list_runs(limit=limit) if lowered in info.name.lower() else []
                items = self.registry.annotate(info, backend, [*by_id, *by_name])
            except StoreError:
                continue
            for item in items:
                found.setdefault(item.run.run_id, item)
        ordered = sorted(found.values(), key=lambda item: item.run.start_time, reverse=True)
        return [serialize_run(item) for item in ordered[:limit]]

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
            "status_same": one.status is two.status,
            "pipeline_same": comparison.pipeline_same,
            "step_timing_diff": comparison.step_timing_diff,
            "new_steps": comparison.new_steps,
            "removed_steps": comparison.removed_steps,
            "event_count_diff": comparison.event_count_diff,
            "step_status_changes": comparison.step_status_changes,
            "same_definition": one.info.hash == two.info.hash,
            "run1": serialize_run(one.item),
            "run2": serialize_run(two.item),
            "step_timings": _step_timings(parsed1, parsed2),
            "first_divergence": analysis.first_divergence(parsed1, parsed2),
        }

    def stats(self, pipeline_hash: str, days: int = 7) -> dict[str, Any]:
        """Outcomes, durations, daily activity and failures of every run in the window
        (counted in the store, ``cli.paging.window``); the duration trend shows the
        window's newest ``TREND_RUNS`` runs."""
        info = self.find_pipeline(pipeline_hash)
        now = datetime.now(UTC)
        try:
            found = paging.window(self.registry, info, cutoff_days_ago(days, now))
        except StoreError as exc:
            raise _unavailable(info, exc) from exc
        counts = found.statuses
        successes, ended, rate = success_rate(counts.elements())
        daily: dict[str, dict[str, int]] = {}
        for offset in range(min(days, 366) - 1, -1, -1):
            daily[(now - timedelta(days=offset)).date().isoformat()] = {}
        for day, by_status in sorted(found.daily.items()):
            into = daily.setdefault(day, {})
            for status, n in by_status.items():
                into[status.value] = into.get(status.value, 0) + n
        return {
            "total_runs": found.total,
            "days": days,
            "status_counts": {status.value: n for status, n in counts.items() if n},
            "success_count": successes,
            "ended_count": ended,
            "failed_count": counts[RunStatus.FAILED],
            "success_rate": rate or 0.0,
            "duration_stats": (
                {
                    "avg": round(found.duration_sum / found.durations, 3),
                    "min": round(found.duration_min or 0.0, 3),
                    "max": round(found.duration_max or 0.0, 3),
                    "total": round(found.duration_sum, 3),
                }
                if found.durations
                else None
            ),
            "daily_activity": [
                {"date": day, "total": sum(by.values()), **by} for day, by in daily.items()
            ],
            "duration_trend": [
                {
                    "run_id": item.run.run_id,
                    "start_time": item.run.start_time.isoformat(),
                    "duration_seconds": item.run.duration.total_seconds(),
                    "status": item.status.value,
                }
                for item in reversed(found.trend)
                if item.run.duration is not None
            ],
            "failure_hotspots": analysis.failure_hotspots(found.failing_steps.elements()),
            "recent_errors": [
                {
                    "run_id": item.run.run_id,
                    "start_time": item.run.start_time.isoformat(),
                    "error_message": item.error,
                    "error_step": item.run.error_step,
                }
                for item in found.recent_failures
            ],
        }

    def cleanup(
        self,
        pipeline_hash: str,
        older_than_days: int | None = None,
        status: str | None = None,
        keep: int = 10,
        dry_run: bool = True,
        include_resumable: bool = False,
    ) -> dict[str, Any]:
        """Delete (or with `dry_run`, list) runs beyond the newest `keep` matching the filters.

        Runs that are still going are never deleted; suspended and interrupted durable runs
        only with `include_resumable` (``storage.status.may_delete``, as in the CLI).
        """
        info = self.find_pipeline(pipeline_hash)
        wanted = _wanted_statuses([status] if status else None)
        chosen = next(iter(wanted), None)
        if chosen is not None and not may_delete(chosen, chosen, include_resumable):
            raise BadRequest(
                f"{chosen} runs are not deleted"
                + (" (add include_resumable=true)" if chosen is not RunStatus.RUNNING else "")
            )
        if keep < 0 or (older_than_days is not None and older_than_days < 0):
            raise BadRequest("keep and older_than_days must be >= 0")
        runs = self.all_runs(info)
        doomed = select_runs_to_delete(runs, older_than_days, chosen, keep, include_resumable)
        kept = [i for i in runs[keep:] if i.status in RESUMABLE and not include_resumable]
        result: dict[str, Any] = {
            "count": len(doomed),
            "runs": [serialize_run(item) for item in doomed[:CLEANUP_PREVIEW]],
            "kept_resumable": len(kept),
            "include_resumable": include_resumable,
            "dry_run": dry_run,
        }
        if dry_run:
            return result
        deleted = 0
        try:
            writer = self.registry.get_writable_backend(info.hash)
            try:
                for item in doomed:
                    deleted += bool(writer.delete_run(item.run.run_id))
            finally:
                close = getattr(writer, "close", None)
                if callable(close):
                    close()
        except StoreError as exc:
            raise _unavailable(info, exc, deleted=deleted) from exc
        result["deleted"] = deleted
        return result

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "timestamp": datetime.now(UTC).isoformat(),
            "total_pipelines": len(self.list_pipelines()),
        }


def _wanted_statuses(statuses: list[str] | None) -> set[RunStatus]:
    """The statuses a filter names; BadRequest listing the valid ones for an unknown one."""
    wanted: set[RunStatus] = set()
    for text in statuses or []:
        try:
            wanted.add(parse_status(text))
        except ValueError:
            raise BadRequest(
                f"Unknown status: {text}", allowed=[status.value for status in RunStatus]
            ) from None
    return wanted


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
        if found.status is not RunStatus.RUNNING:
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


_ANALYSES: OrderedDict[tuple[str, str, str, int], RunAnalysis] = OrderedDict()
_ANALYSES_KEPT = 4
"""Finished runs never change (same store, pipeline, id and event count): their analysis is
reused."""
