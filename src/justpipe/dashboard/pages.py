"""Server-rendered pages: Jinja2 templates (autoescaped) fed by :class:`DashboardAPI`.

Every value from the store (names, payloads, errors, metadata) reaches the HTML
through Jinja2's autoescaping or as SVG attributes it escapes; no page contains
inline script (the CSP forbids it), the behaviour lives in ``static/*.js`` modules.
Big runs stay light: events are paged, map workers are folded under their map
until expanded, and the waterfall shows one page of rows at a time.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request

from justpipe.dashboard import analysis
from justpipe.dashboard.api import (
    BadRequest,
    DashboardAPI,
    DashboardError,
    FoundRun,
    RunAnalysis,
    serialize_run,
)
from justpipe.dashboard.dag import layout_dag
from justpipe.storage.segments import Segment
from justpipe.storage.status import RunStatus
from justpipe.types import EventType

__all__ = ["Pages"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
RUNS_PER_PAGE = 20
EVENTS_PER_PAGE = 200
ROWS_PER_PAGE = 150
WORKERS_PER_PAGE = 100
STAT_WINDOWS = (7, 14, 30, 90)
RUN_TABS = ("timeline", "events", "metrics", "steps")
STATUS_FILTERS = tuple(status.value for status in RunStatus)
"""Every status of the model (``storage.status``) filters the runs list."""


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms" if seconds < 0.01 else f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _when(iso: Any) -> str:
    if not isinstance(iso, str):
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every value from the store is user data
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = _duration
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    env.filters["short"] = lambda run_id: str(run_id)[:12]
    return env


class Pages:
    """Renders every page; each method takes the request and returns HTML."""

    def __init__(self, api: DashboardAPI, csrf_token: str) -> None:
        self.api = api
        self.csrf_token = csrf_token
        self.env = _environment()

    def render(self, template: str, **context: Any) -> str:
        context.setdefault("csrf_token", self.csrf_token)
        return self.env.get_template(template).render(**context)

    def error_page(self, error: DashboardError) -> str:
        return self.render("error.jinja", title="Error", error=error)

    # -- pipelines ------------------------------------------------------------------

    def pipelines_page(self, request: Request) -> str:
        summaries = self.api.pipelines()
        name_filter = request.query_params.get("name", "")
        if name_filter:
            summaries = [s for s in summaries if name_filter.lower() in s["name"].lower()]
        template = (
            "pipelines_table.jinja" if request.query_params.get("fragment") else "pipelines.jinja"
        )
        return self.render(
            template,
            title="Pipelines",
            page="pipelines",
            pipelines=summaries,
            name_filter=name_filter,
            storage_dir=self.api.registry.where,
        )

    def pipeline_page(self, request: Request) -> str:
        pipeline_hash = request.path_params["pipeline_hash"]
        detail = self.api.pipeline(pipeline_hash)
        context: dict[str, Any] = {
            "title": detail["name"],
            "page": "pipeline",
            "pipeline": detail,
            "windows": STAT_WINDOWS,
            "status_filters": STATUS_FILTERS,
        }
        if detail["error"]:
            return self.render("pipeline.jinja", **context)
        statuses = [s for s in request.query_params.get("status", "").split(",") if s]
        page = max(1, _int(request.query_params.get("page"), 1))
        days = _int(request.query_params.get("days"), 7)
        if days not in STAT_WINDOWS:
            days = 7
        runs, total = self.api.runs_page(
            pipeline_hash, statuses, RUNS_PER_PAGE, (page - 1) * RUNS_PER_PAGE
        )
        context.update(
            runs=runs,
            total=total,
            statuses=statuses,
            page_number=page,
            pages=max(1, -(-total // RUNS_PER_PAGE)),
            days=days,
        )
        if request.query_params.get("fragment") == "runs":
            return self.render("runs_table.jinja", **context)
        stats = self.api.stats(pipeline_hash, days)
        context.update(stats=stats, charts=_stat_charts(stats))
        context["dag"] = self._dag(detail)
        return self.render("pipeline.jinja", **context)

    def _dag(self, detail: dict[str, Any]) -> dict[str, Any] | None:
        ast = detail.get("visual_ast")
        if not isinstance(ast, dict):
            return None
        statuses: dict[str, str] = {}
        latest, _ = self.api.runs_page(detail["hash"], None, 1, 0)
        if latest:
            try:
                found = self.api.find_run(latest[0]["run_id"])
                result = self.api.analysis(found)
                summaries = analysis.step_summaries(result.spans, result.until)
                statuses = {name: summary.status for name, summary in summaries.items()}
            except DashboardError:
                statuses = {}
        nodes_info = (detail.get("topology") or {}).get("nodes") or {}
        return layout_dag(ast, statuses, nodes_info)

    def cleanup_page(
        self, pipeline_hash: str, options: dict[str, Any], result: dict[str, Any]
    ) -> str:
        detail = self.api.pipeline(pipeline_hash)
        return self.render(
            "cleanup.jinja",
            title=f"Clean up {detail['name']}",
            page="pipeline",
            pipeline=detail,
            options=options,
            result=result,
        )

    # -- runs -----------------------------------------------------------------------

    def run_page(self, request: Request) -> str:
        found = self.api.find_run(request.path_params["run_id"])
        tab = request.query_params.get("tab", "timeline")
        if tab not in RUN_TABS:
            tab = "timeline"
        run = serialize_run(found.item)
        result = self.api.analysis(found)
        segments = self.api.segments(found, result.events)
        context: dict[str, Any] = {
            "title": f"Run {found.run.run_id[:12]}",
            "page": "run",
            "run": run,
            "tab": tab,
            "tabs": RUN_TABS,
            "event_count": len(result.events),
            "autopsy": analysis.autopsy(run, result.events),
            "last_seq": result.events[-1].get("seq", 0) if result.events else 0,
            "segments": [_segment_row(segment) for segment in segments],
        }
        builders = {
            "timeline": self._timeline_tab,
            "events": self._events_tab,
            "metrics": self._metrics_tab,
            "steps": self._steps_tab,
        }
        context.update(builders[tab](request, found, result))
        if request.query_params.get("fragment") == "1":
            return self.render(f"tab_{tab}.jinja", **context)
        return self.render("run.jinja", **context)

    def _timeline_tab(
        self, request: Request, found: FoundRun, result: RunAnalysis
    ) -> dict[str, Any]:
        expanded = request.query_params.get("expand")
        worker_page = max(1, _int(request.query_params.get("wpage"), 1))
        page = max(1, _int(request.query_params.get("page"), 1))
        total = max(result.until - result.origin, 1e-9)
        workers: dict[str, list[analysis.Span]] = defaultdict(list)
        rows: list[dict[str, Any]] = []
        for span in result.spans:
            if span.is_worker and span.owner_invocation_id:
                workers[span.owner_invocation_id].append(span)
        for span in result.spans:
            if span.is_worker and span.owner_invocation_id:
                continue
            rows.append(_bar(span, result, total))
            owned = workers.get(span.invocation_id or "", [])
            if not owned:
                continue
            durations = [w.duration(result.until) for w in owned]
            is_open = expanded == span.invocation_id
            rows.append(
                {
                    "fold": True,
                    "owner": span.invocation_id,
                    "count": len(owned),
                    "target": owned[0].step_name,
                    "open": is_open,
                    "min": min(durations),
                    "median": statistics.median(durations),
                    "max": max(durations),
                    "errors": sum(1 for w in owned if w.status == "error"),
                    "critical": any(w.critical for w in owned),
                    "worker_pages": max(1, -(-len(owned) // WORKERS_PER_PAGE)),
                    "worker_page": worker_page,
                    **_extent(owned, result, total),
                }
            )
            if is_open:
                start = (worker_page - 1) * WORKERS_PER_PAGE
                for worker in owned[start : start + WORKERS_PER_PAGE]:
                    rows.append({**_bar(worker, result, total), "nested": True})
        pages = max(1, -(-len(rows) // ROWS_PER_PAGE))
        page = min(page, pages)
        shown = rows[(page - 1) * ROWS_PER_PAGE : page * ROWS_PER_PAGE]
        return {
            "rows": shown,
            "row_page": page,
            "row_pages": pages,
            "expanded": expanded,
            "total_seconds": result.until - result.origin,
            "critical_path": [
                {"step_name": s.step_name, "seconds": s.duration(result.until), "seq": s.start_seq}
                for s in result.critical_path
            ],
            "concurrency": _concurrency_chart(result, total),
            "span_count": len(result.spans),
        }

    def _events_tab(self, request: Request, found: FoundRun, result: RunAnalysis) -> dict[str, Any]:
        params = request.query_params
        wanted_type = params.get("type", "")
        wanted_step = params.get("step", "")
        group = params.get("group") == "step"
        if wanted_type and wanted_type not in {member.value for member in EventType}:
            raise BadRequest(f"Unknown event type: {wanted_type}")
        events = result.events
        if wanted_type:
            events = [e for e in events if e.get("type") == wanted_type]
        if wanted_step:
            events = [e for e in events if e.get("stage") == wanted_step]
        pages = max(1, -(-len(events) // EVENTS_PER_PAGE))
        page = _int(params.get("page"), 1)
        around = _int(params.get("seq"), 0)
        if around:
            index = next((i for i, e in enumerate(events) if e.get("seq") == around), 0)
            page = index // EVENTS_PER_PAGE + 1
        page = min(max(1, page), pages)
        shown = events[(page - 1) * EVENTS_PER_PAGE : page * EVENTS_PER_PAGE]
        rows = [_event_row(e, result.origin) for e in self.api.full_events(found, shown)]
        groups: dict[str, list[dict[str, Any]]] = {}
        if group:
            for row in rows:
                groups.setdefault(row["stage"], []).append(row)
        type_counts: dict[str, int] = defaultdict(int)
        for event in result.events:
            type_counts[str(event.get("type"))] += 1
        return {
            "events": rows,
            "groups": groups,
            "group": group,
            "event_page": page,
            "event_pages": pages,
            "matching": len(events),
            "wanted_type": wanted_type,
            "wanted_step": wanted_step,
            "type_counts": dict(sorted(type_counts.items())),
        }

    def _metrics_tab(
        self, request: Request, found: FoundRun, result: RunAnalysis
    ) -> dict[str, Any]:
        payload = result.finish.get("payload") if result.finish else None
        metrics = payload.get("metrics") if isinstance(payload, dict) else None
        if not isinstance(metrics, dict):
            return {"metrics": None}
        recorded = metrics.get("step_latency")
        latency: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        rows: list[dict[str, Any]] = []
        for name, values in latency.items():
            if not isinstance(values, dict):
                continue
            count, total = _number(values.get("count")), _number(values.get("total_s"))
            rows.append(
                {
                    "name": str(name),
                    "count": count,
                    "total_s": total,
                    "min_s": _number(values.get("min_s")),
                    "max_s": _number(values.get("max_s")),
                    "avg_s": total / count if total is not None and count else None,
                }
            )
        rows.sort(key=lambda row: -(row["total_s"] or 0))
        return {
            "metrics": metrics,
            "latency": rows,
            "finish_meta": result.finish.get("meta") if result.finish else None,
        }

    def _steps_tab(self, request: Request, found: FoundRun, result: RunAnalysis) -> dict[str, Any]:
        summaries = analysis.step_summaries(result.spans, result.until)
        selected = request.query_params.get("step") or next(iter(summaries), "")
        summary = summaries.get(selected)
        events: list[dict[str, Any]] = []
        if summary is not None:
            own = [e for e in result.events if e.get("stage") == selected][:EVENTS_PER_PAGE]
            events = [_event_row(e, result.origin) for e in self.api.full_events(found, own)]
        return {
            "summaries": list(summaries.values()),
            "selected": selected,
            "summary": summary,
            "step_events": events,
        }

    # -- compare and search ---------------------------------------------------------

    def compare_page(self, request: Request) -> str:
        run1 = request.query_params.get("run1", "").strip()
        run2 = request.query_params.get("run2", "").strip()
        comparison = None
        error = None
        if run1 and run2:
            try:
                comparison = self.api.compare(run1, run2)
            except DashboardError as exc:
                error = exc
        return self.render(
            "compare.jinja",
            title="Compare runs",
            page="compare",
            run1=run1,
            run2=run2,
            comparison=comparison,
            error=error,
        )

    def search_page(self, request: Request) -> str:
        query = request.query_params.get("q", "").strip()
        results = self.api.search(query, 50) if query else []
        return self.render(
            "search.jinja",
            title="Search",
            page="search",
            query=query,
            results=results,
            too_short=0 < len(query) < 2,
        )


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _segment_row(segment: Segment) -> dict[str, Any]:
    return {
        "number": segment.number,
        "started": datetime.fromtimestamp(segment.started, tz=UTC).isoformat(),
        "seconds": segment.duration_s,
        "first_seq": segment.first_seq,
        "last_seq": segment.last_seq,
        "events": segment.events,
        "ended": segment.ended,
        "detail": segment.detail,
    }


def _bar(span: analysis.Span, result: RunAnalysis, total: float) -> dict[str, Any]:
    duration = span.duration(result.until)
    x = (span.start - result.origin) / total * 1000
    return {
        "fold": False,
        "name": span.step_name,
        "worker_index": span.worker_index,
        "attempt": span.attempt,
        "kind": span.kind,
        "status": span.status,
        "critical": span.critical,
        "seconds": duration,
        "offset": span.start - result.origin,
        "x": round(x, 3),
        "width": round(max(duration / total * 1000, 1.5), 3),
        "seq": span.start_seq,
        "error": span.error,
        "invocation_id": span.invocation_id,
    }


def _extent(spans: list[analysis.Span], result: RunAnalysis, total: float) -> dict[str, Any]:
    start = min(s.start for s in spans)
    end = max(s.end if s.end is not None else result.until for s in spans)
    return {
        "x": round((start - result.origin) / total * 1000, 3),
        "width": round(max((end - start) / total * 1000, 1.5), 3),
    }


def _concurrency_chart(result: RunAnalysis, total: float) -> dict[str, Any]:
    points = result.concurrency
    peak = max((active for _, active in points), default=0)
    if not points or peak == 0:
        return {"peak": 0, "points": ""}
    coords: list[str] = []
    previous = 0
    for moment, active in points:
        x = round((moment - result.origin) / total * 1000, 2)
        coords.append(f"{x},{100 - previous / peak * 100:.2f}")
        coords.append(f"{x},{100 - active / peak * 100:.2f}")
        previous = active
    coords.append(f"1000,{100 - previous / peak * 100:.2f}")
    return {"peak": peak, "points": " ".join(coords)}


def _event_row(event: dict[str, Any], origin: float) -> dict[str, Any]:
    ts = float(event.get("timestamp") or 0.0)
    payload = event.get("payload")
    return {
        "seq": event.get("seq"),
        "type": str(event.get("type")),
        "stage": str(event.get("stage") or ""),
        "relative": ts - origin,
        "absolute": datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S.%f")[:-3],
        "invocation_id": _text_or_none(event.get("invocation_id")),
        "attempt": _number(event.get("attempt")),
        "summary": _summary(payload),
        "payload": _pretty(payload),
        "meta": _pretty(event.get("meta")) if event.get("meta") is not None else None,
    }


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> int | float | None:
    """`value` when it is a real number (stored data may hold anything)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _summary(payload: Any) -> str:
    if payload is None:
        return ""
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _stat_charts(stats: dict[str, Any]) -> dict[str, Any]:
    daily = stats["daily_activity"]
    most = max((day["total"] for day in daily), default=0) or 1
    width = 1000 / max(1, len(daily))
    bars = []
    for index, day in enumerate(daily):
        failed = day.get("failed", 0) + day.get("timeout", 0)
        height = day["total"] / most * 90
        failed_height = failed / most * 90
        bars.append(
            {
                "x": round(index * width + width * 0.1, 2),
                "width": round(width * 0.8, 2),
                "y": round(100 - height, 2),
                "height": round(height, 2),
                "fy": round(100 - failed_height, 2),
                "fheight": round(failed_height, 2),
                "date": day["date"],
                "total": day["total"],
                "failed": failed,
            }
        )
    trend = stats["duration_trend"]
    count = len(trend)
    if count == 1:
        trend = trend * 2  # one run: a flat line rather than nothing
    slowest = max((point["duration_seconds"] for point in trend), default=0) or 1
    step = 1000 / max(1, len(trend) - 1)
    points = " ".join(
        f"{round(i * step, 2)},{round(100 - p['duration_seconds'] / slowest * 95, 2)}"
        for i, p in enumerate(trend)
    )
    return {"daily": bars, "trend": points, "slowest": slowest, "trend_count": count}
