"""The dashboard's ASGI app: JSON API, server-rendered pages, live streams, static files.

``create_app(registry)`` returns a Starlette application; serve it with uvicorn
(``justpipe dashboard`` does). Store access is synchronous SQLite, so every handler
that touches a store runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from justpipe.cli.registry import PipelineRegistry, StoreError
from justpipe.dashboard import pages
from justpipe.dashboard.api import BadRequest, DashboardAPI, DashboardError, serialize_event
from justpipe.dashboard.security import (
    LOOPBACK_NAMES,
    SecurityMiddleware,
    same_origin,
    tokens_match,
)
from justpipe.storage.status import RunStatus

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 16_384
STREAM_BATCH = 500
KEEPALIVE_EVERY = 15
"""Polls between SSE comment lines that keep idle proxies from closing the stream."""
RECHECK_S = 2.0
"""Over PostgreSQL (LISTEN), how long a live stream waits at most without a change."""

Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    registry: PipelineRegistry,
    static_dir: str | Path | None = None,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    poll_interval: float = 0.5,
) -> Starlette:
    """The dashboard over `registry`'s storage root.

    `static_dir`: a folder of front-end files served for paths no route claims (with
    ``index.html`` as the fallback), as upstream's built UI was; the dashboard's own
    assets are always served from the package under ``/static/``.
    `token`: require this access token on every request (for non-loopback binds).
    `allowed_hosts`: the host names clients may use (default: the loopback names).
    """
    api = DashboardAPI(registry)
    pause = _Pause(registry, poll_interval)
    csrf_token = secrets.token_urlsafe(32)
    extra_static = Path(static_dir).resolve() if static_dir is not None else None
    renderer = pages.Pages(api, csrf_token)

    def json_route(compute: Callable[[Request], Any]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                result = await asyncio.to_thread(compute, request)
            except DashboardError as exc:
                return JSONResponse(exc.to_dict(), status_code=exc.status)
            return JSONResponse(result, headers={"cache-control": "no-store"})

        return handler

    def page_route(render: Callable[[Request], str | Response]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                result = await asyncio.to_thread(render, request)
            except DashboardError as exc:
                body = renderer.error_page(exc)
                return HTMLResponse(body, status_code=exc.status)
            if isinstance(result, Response):
                return result
            return HTMLResponse(result, headers={"cache-control": "no-store"})

        return handler

    def cleanup_allowed(request: Request, presented: str | None) -> bool:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return (
            same_origin(headers, request.url.scheme)
            and presented is not None
            and tokens_match(presented, csrf_token)
        )

    async def api_cleanup(request: Request) -> Response:
        query = request.query_params
        try:
            options = _cleanup_options(query)
        except DashboardError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        if not options["dry_run"] and not cleanup_allowed(
            request, request.headers.get(CSRF_HEADER)
        ):
            return JSONResponse(
                {"error": "Cleanup needs a same-origin request with the CSRF token"},
                status_code=403,
            )
        pipeline_hash = request.path_params["pipeline_hash"]
        try:
            result = await asyncio.to_thread(api.cleanup, pipeline_hash, **options)
        except DashboardError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return JSONResponse(result)

    async def page_cleanup(request: Request) -> Response:
        pipeline_hash = request.path_params["pipeline_hash"]
        raw = await read_body(request, MAX_FORM_BYTES)
        if raw is None:
            return HTMLResponse(
                renderer.error_page(
                    DashboardError(f"Form too large (more than {MAX_FORM_BYTES} bytes)")
                ),
                status_code=413,
                headers={"connection": "close"},
            )
        # a plain urlencoded form (no multipart parser needed for a few short fields)
        fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        confirmed = fields.get("confirm") == "yes"
        if confirmed and not cleanup_allowed(request, fields.get("csrf_token")):
            return HTMLResponse(
                renderer.error_page(
                    DashboardError("Cleanup refused: not a same-origin request with a valid token")
                ),
                status_code=403,
            )
        try:
            options = _cleanup_options(fields)
            options["dry_run"] = not confirmed
            result = await asyncio.to_thread(api.cleanup, pipeline_hash, **options)
            body = await asyncio.to_thread(renderer.cleanup_page, pipeline_hash, options, result)
        except DashboardError as exc:
            return HTMLResponse(renderer.error_page(exc), status_code=exc.status)
        return HTMLResponse(body)

    async def run_stream(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            found = await asyncio.to_thread(api.find_run, run_id)
        except DashboardError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        try:
            after = _seq(request.headers.get("last-event-id"), "Last-Event-ID")
            if after is None:
                after = _seq(request.query_params.get("after"), "after") or 0
        except DashboardError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return StreamingResponse(
            _tail_run(api, found.run.run_id, after, pause, request),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def runs_stream(request: Request) -> Response:
        pipeline_hash = request.query_params.get("pipeline")
        return StreamingResponse(
            _watch_runs(api, pipeline_hash, pause, request),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def export(request: Request) -> Response:
        try:
            return await asyncio.to_thread(_export, api, request)
        except DashboardError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)

    async def static(request: Request) -> Response:
        return _serve_file(STATIC_DIR, request.path_params["path"]) or _not_found(request)

    async def fallback(request: Request) -> Response:
        if extra_static is not None and not request.url.path.startswith("/api/"):
            path = request.path_params["path"]
            found = _serve_file(extra_static, path) or _serve_file(extra_static, "index.html")
            if found is not None:
                return found
        return _not_found(request)

    def _not_found(request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "Not found", "detail": "Not found"}, status_code=404)
        return HTMLResponse(renderer.error_page(DashboardError("Page not found")), status_code=404)

    q = _query
    routes = [
        Route("/api/health", json_route(lambda r: api.health())),
        Route("/api/pipelines", json_route(lambda r: api.pipelines())),
        Route(
            "/api/pipelines/{pipeline_hash}",
            json_route(lambda r: api.pipeline(r.path_params["pipeline_hash"])),
        ),
        Route(
            "/api/pipelines/{pipeline_hash}/runs",
            json_route(
                lambda r: api.runs(
                    r.path_params["pipeline_hash"],
                    _statuses(r.query_params.get("status")),
                    q(r, "limit", 20, 1, 1000),
                    q(r, "offset", 0, 0, None),
                )
            ),
        ),
        Route("/api/pipelines/{pipeline_hash}/cleanup", api_cleanup, methods=["POST"]),
        Route(
            "/api/runs/search",
            json_route(lambda r: api.search(r.query_params.get("q", ""), q(r, "limit", 10, 1, 50))),
        ),
        Route("/api/runs/{run_id}", json_route(lambda r: api.run(r.path_params["run_id"]))),
        Route(
            "/api/runs/{run_id}/events",
            json_route(
                lambda r: api.events(
                    r.path_params["run_id"],
                    r.query_params.get("type") or None,
                    q(r, "offset", 0, 0, None),
                    q(r, "limit", None, 1, None),
                )
            ),
        ),
        Route(
            "/api/runs/{run_id}/timeline",
            json_route(lambda r: api.timeline(r.path_params["run_id"])),
        ),
        Route("/api/runs/{run_id}/export", export),
        Route("/api/runs/{run_id}/stream", run_stream),
        Route("/api/stream/runs", runs_stream),
        Route(
            "/api/compare",
            json_route(lambda r: api.compare(_required(r, "run1"), _required(r, "run2"))),
        ),
        Route(
            "/api/stats/{pipeline_hash}",
            json_route(
                lambda r: api.stats(r.path_params["pipeline_hash"], q(r, "days", 7, 1, 365))
            ),
        ),
        Route("/", page_route(renderer.pipelines_page)),
        Route("/pipelines/{pipeline_hash}", page_route(renderer.pipeline_page)),
        Route("/pipelines/{pipeline_hash}/cleanup", page_cleanup, methods=["POST"]),
        Route("/runs/{run_id}", page_route(renderer.run_page)),
        Route("/compare", page_route(renderer.compare_page)),
        Route("/search", page_route(renderer.search_page)),
        Route("/static/{path:path}", static),
        Route("/{path:path}", fallback),
    ]
    app = Starlette(routes=routes)
    hosts = set(allowed_hosts) if allowed_hosts is not None else set(LOOPBACK_NAMES)
    app.add_middleware(SecurityMiddleware, allowed_hosts=hosts, token=token)
    app.state.api = api
    app.state.csrf_token = csrf_token
    return app


def _export(api: DashboardAPI, request: Request) -> Response:
    found = api.find_run(request.path_params["run_id"])
    events = api.stored_events(found)
    run = api.run(found.run.run_id)
    body = {
        "run": run,
        "events": [serialize_event(event) for event in events],
        "event_count": len(events),
        "exported_at": datetime.now(UTC).isoformat(),
    }
    name = f"run_{found.run.run_id[:8]}.json"
    return Response(
        json.dumps(body, indent=2),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def _serve_file(root: Path, relative: str) -> FileResponse | None:
    """The file `relative` under `root`, or None; never anything outside `root`."""
    if "\x00" in relative:
        return None
    try:
        target = (root / relative).resolve()
    except (OSError, ValueError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return FileResponse(target)


MAX_SEQ = 2**63 - 1
"""The largest ``seq`` a store can hold (SQLite's INTEGER)."""


def _seq(value: str | None, name: str) -> int | None:
    """An event ``seq`` from a request (None when absent); 400 for anything else."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_SEQ)):
        raise BadRequest(f"{name} must be an event seq (0 to {MAX_SEQ}), got {value[:40]!r}")
    number = int(text)
    if number > MAX_SEQ:
        raise BadRequest(f"{name} must be an event seq (0 to {MAX_SEQ}), got {value[:40]!r}")
    return number


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is larger than `limit` bytes.

    A declared ``Content-Length`` above the limit is refused before anything is read;
    otherwise the body is read chunk by chunk and reading stops at the first chunk that
    passes the limit, so a large body is never held in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            return None
    return bytes(received)


def _query(request: Request, name: str, default: Any, low: int, high: int | None) -> Any:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise BadRequest(f"{name} must be {bounds}, got {value}")
    return value


MAX_DAYS = 1_000_000
"""The largest ``older_than_days`` cleanup takes (no run is that old)."""
MAX_KEEP = 10**9


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise BadRequest(f"Missing query parameter: {name}")
    return value


def _statuses(raw: str | None) -> list[str] | None:
    if not raw:
        return None
    return [part.strip().lower() for part in raw.split(",") if part.strip()]


def _cleanup_options(values: Any) -> dict[str, Any]:
    def number(name: str, high: int) -> int | None:
        raw = values.get(name)
        if raw in (None, ""):
            return None
        text = str(raw).strip()
        if text.isascii() and text.isdigit() and len(text) <= len(str(high)):
            value = int(text)
            if value <= high:
                return value
        raise BadRequest(f"{name} must be an integer from 0 to {high}, got {str(raw)[:40]!r}")

    def flag(name: str, default: bool) -> bool:
        raw = values.get(name)
        if raw in (None, ""):
            return default
        return str(raw).lower() not in ("false", "0", "no", "off")

    keep = number("keep", MAX_KEEP)
    return {
        "older_than_days": number("older_than_days", MAX_DAYS),
        "status": values.get("status") or None,
        "keep": 10 if keep is None else keep,
        "dry_run": flag("dry_run", True),
        "include_resumable": flag("include_resumable", False),
    }


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


class _Pause:
    """How a live stream waits before it looks at the store again.

    Over PostgreSQL, until a write announces a change of what it watches (``LISTEN``,
    `storage.pgchanges`), or `RECHECK_S` at most (what no write announces: a process
    that died); elsewhere, and while the database cannot be listened to, `poll` seconds.
    """

    def __init__(self, registry: PipelineRegistry, poll: float) -> None:
        make = getattr(registry, "change_feed", None)
        self.feed = make() if callable(make) else None
        self.poll = poll

    def mark(self, key: str) -> int:
        return self.feed.mark(key) if self.feed is not None else 0

    async def wait(self, key: str, mark: int) -> None:
        if self.feed is None:
            await asyncio.sleep(self.poll)
            return
        await self.feed.wait(key, mark, RECHECK_S if self.feed.listening else self.poll)


async def _tail_run(
    api: DashboardAPI, run_id: str, after: int, pause: _Pause, request: Request
) -> AsyncIterator[str]:
    """Every event stored after `after`, then new ones as they are stored, then ``end``.

    A run that disappears (deleted) or a store that breaks ends the stream with a
    ``problem`` message instead.

    Event ids are the events' ``seq``, so a reconnecting EventSource resumes after the
    last one it got (``Last-Event-ID``).
    """
    yield "retry: 1000\n\n"
    last_status: str | None = None
    idle = 0
    key = f"run:{run_id}"
    while True:
        mark = pause.mark(key)
        try:
            found = await asyncio.to_thread(api.find_run, run_id)
            get_after = getattr(found.backend, "get_events_after", None)
            if callable(get_after):
                batch = await asyncio.to_thread(get_after, run_id, after, STREAM_BATCH)
            else:
                everything = await asyncio.to_thread(found.backend.get_events, run_id)
                batch = [e for e in everything if e.seq > after][:STREAM_BATCH]
        except DashboardError as exc:
            yield _sse("problem", exc.to_dict())
            return
        except StoreError as exc:  # the store went away or broke mid-stream
            yield _sse("problem", {"error": str(exc)})
            return
        for event in batch:
            after = event.seq
            yield _sse("event", serialize_event(event), event.seq)
        if len(batch) == STREAM_BATCH:
            continue
        status = found.status.value
        if status != last_status:
            last_status = status
            yield _sse("status", {"status": status, "liveness": found.liveness})
        if status != RunStatus.RUNNING:
            yield _sse("end", {"status": status, "last_seq": after})
            return
        if await request.is_disconnected():
            return
        idle += 1
        if idle % KEEPALIVE_EVERY == 0:
            yield ": keep-alive\n\n"
        await pause.wait(key, mark)


async def _watch_runs(
    api: DashboardAPI, pipeline_hash: str | None, pause: _Pause, request: Request
) -> AsyncIterator[str]:
    """A ``runs`` message whenever a run starts, ends or is deleted."""
    yield "retry: 2000\n\n"
    previous: object = None
    idle = 0
    key = "all" if pipeline_hash is None else f"pipeline:{pipeline_hash}"
    while True:
        mark = pause.mark(key)
        fingerprint = await asyncio.to_thread(_runs_fingerprint, api, pipeline_hash)
        if fingerprint != previous:
            previous = fingerprint
            yield _sse("runs", {"pipeline": pipeline_hash})
        if await request.is_disconnected():
            return
        idle += 1
        if idle % KEEPALIVE_EVERY == 0:
            yield ": keep-alive\n\n"
        await pause.wait(key, mark)


def _runs_fingerprint(api: DashboardAPI, pipeline_hash: str | None) -> object:
    """What changes when a run starts, ends or is deleted, read cheaply per store."""
    marks: list[object] = []
    try:
        pipelines = api.list_pipelines()
    except DashboardError as exc:
        return [str(exc)]
    for info in pipelines:
        if pipeline_hash is not None and info.hash != pipeline_hash:
            continue
        try:
            backend = api.backend(info)
            newest = backend.list_runs(limit=1)
            count = getattr(backend, "count_runs", None)
            leases = getattr(backend, "get_leases", None)
            marks.append(
                (
                    info.hash,
                    count() if callable(count) else None,
                    [(run.run_id, run.status.value, run.end_time) for run in newest],
                    sorted(leases()) if callable(leases) else None,
                )
            )
        except (DashboardError, *StoreError) as exc:
            marks.append((info.hash, str(exc)))
    return marks
