"""The dashboard over HTTP: every route's shape and errors, security, pages, streams.

Runs against the ASGI app in-process (Starlette's TestClient) on a store built by
running real pipelines (`test_dashboard_fixtures.build_store`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from extras import require

require("starlette", "dashboard")
require("jinja2", "dashboard")
require("httpx", "dashboard")

from starlette.testclient import TestClient  # noqa: E402

from justpipe.cli.registry import PipelineRegistry  # noqa: E402
from justpipe.dashboard.api import DashboardRegistry  # noqa: E402
from justpipe.dashboard.pages import RUN_TABS  # noqa: E402
from justpipe.dashboard.security import CONTENT_SECURITY_POLICY  # noqa: E402
from justpipe.dashboard.server import _serve_file, create_app  # noqa: E402
from justpipe.storage import RunRecord  # noqa: E402
from justpipe.storage.persistence import PIPELINE_JSON, RUNS_DB  # noqa: E402
from justpipe.storage.sqlite import SQLiteBackend  # noqa: E402
from justpipe.types import PipelineTerminalStatus  # noqa: E402
from test_dashboard_fixtures import (  # noqa: E402
    BROKEN_BYTES,
    TWIN_RUNS,
    XSS_IMG,
    XSS_SCRIPT,
    XSS_STEP,
    Store,
    build_store,
)

pytestmark = pytest.mark.backend_agnostic  # the dashboard never touches justpipe._core

ORIGIN = "http://127.0.0.1:8741"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(tmp_path_factory.mktemp("dashboard-store"))


@pytest.fixture(scope="module")
def client(store: Store) -> Iterator[TestClient]:
    registry = PipelineRegistry(store.root)
    with TestClient(create_app(registry, poll_interval=0.02), base_url=ORIGIN) as test_client:
        yield test_client
    registry.close()


def get_json(client: TestClient, url: str, status: int = 200) -> Any:
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


# -- JSON API ------------------------------------------------------------------------


def test_health(client: TestClient) -> None:
    body = get_json(client, "/api/health")
    assert body["status"] == "ok"
    assert body["total_pipelines"] == 5
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


def test_pipelines_summarise_runs_and_report_an_unreadable_store(
    client: TestClient, store: Store
) -> None:
    by_hash = {p["hash"]: p for p in get_json(client, "/api/pipelines")}
    orders = by_hash[store.orders_hash]
    assert orders["name"] == "orders"
    assert orders["total_runs"] == 4
    assert orders["success_count"] == 3
    assert orders["success_rate"] == 75.0
    assert orders["last_run_status"] == "failed"
    assert orders["avg_duration_seconds"] > 0
    assert orders["error"] is None
    assert by_hash[store.live_hash]["running_count"] == 1
    broken = by_hash[store.broken_hash]
    assert broken["name"] == "broken"
    assert "not" in broken["error"] and broken["total_runs"] == 0


def test_pipeline_detail_has_the_described_graph(client: TestClient, store: Store) -> None:
    body = get_json(client, f"/api/pipelines/{store.orders_hash}")
    assert body["topology"]["name"] == "orders"
    assert set(body["visual_ast"]["nodes"]) == {"load", "fan", "work", "done"}


def test_unknown_objects_are_404_with_a_json_error(client: TestClient) -> None:
    for url in (
        "/api/pipelines/0000000000000000",
        "/api/pipelines/0000000000000000/runs",
        "/api/stats/0000000000000000",
        "/api/runs/zzzz-no-such-run",
        "/api/runs/zzzz-no-such-run/events",
        "/api/runs/zzzz-no-such-run/timeline",
        "/api/runs/zzzz-no-such-run/export",
        "/api/runs/zzzz-no-such-run/stream",
        "/api/no/such/route",
    ):
        body = get_json(client, url, 404)
        assert body["error"], url


def test_runs_filter_by_several_statuses_and_page(client: TestClient, store: Store) -> None:
    url = f"/api/pipelines/{store.orders_hash}/runs"
    runs = get_json(client, url)
    assert [r["run_id"] for r in runs] == [store.failed_run, *reversed(store.order_runs)]
    assert set(runs[0]) >= {
        "run_id", "pipeline_name", "pipeline_hash", "status", "start_time", "end_time",
        "duration_seconds", "error_message", "error_step", "run_meta",
    }  # fmt: skip
    assert [r["status"] for r in get_json(client, url + "?status=failed")] == ["failed"]
    assert len(get_json(client, url + "?status=failed,success")) == 4
    page = get_json(client, url + "?limit=2&offset=1")
    assert [r["run_id"] for r in page] == [r["run_id"] for r in runs[1:3]]
    live = get_json(client, f"/api/pipelines/{store.live_hash}/runs?status=running")
    assert [r["run_id"] for r in live] == [store.live_run]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=x", "status=bogus"])
def test_runs_reject_bad_parameters(client: TestClient, store: Store, query: str) -> None:
    body = get_json(client, f"/api/pipelines/{store.orders_hash}/runs?{query}", 400)
    assert body["error"]


def test_run_by_full_id_and_unique_prefix(client: TestClient, store: Store) -> None:
    full = get_json(client, f"/api/runs/{store.failed_run}")
    assert full["status"] == "failed"
    assert full["error_step"] == "done"
    assert full["error_message"] == "payment service refused the order"
    assert get_json(client, f"/api/runs/{store.failed_run[:10]}") == full


def test_ambiguous_prefix_is_409_with_the_candidates(client: TestClient) -> None:
    body = get_json(client, "/api/runs/twin0000", 409)
    assert "Ambiguous" in body["error"]
    assert sorted(c["run_id"] for c in body["candidates"]) == sorted(TWIN_RUNS)
    assert body["total"] == 2


def test_live_and_dead_runs_are_told_apart(client: TestClient, store: Store) -> None:
    live = get_json(client, f"/api/runs/{store.live_run}")
    assert (live["status"], live["liveness"], live["error_message"]) == ("running", "live", None)
    dead = get_json(client, f"/api/runs/{store.dead_run}")
    assert (dead["status"], dead["liveness"]) == ("failed", "dead")
    assert "died" in dead["error_message"]


def test_events_in_order_filtered_and_paged(client: TestClient, store: Store) -> None:
    events = get_json(client, f"/api/runs/{store.failed_run}/events")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event_type"] == "start"
    assert events[-1]["event_type"] == "finish"
    assert events[-1]["data"]["payload"]["status"] == "failed"
    errors = get_json(client, f"/api/runs/{store.failed_run}/events?type=step_error")
    assert [(e["event_type"], e["step_name"]) for e in errors] == [("step_error", "done")]
    page = get_json(client, f"/api/runs/{store.failed_run}/events?offset=2&limit=3")
    assert [e["seq"] for e in page] == [3, 4, 5]
    assert get_json(client, f"/api/runs/{store.failed_run}/events?type=nope", 400)["allowed"]


def test_timeline_has_one_span_per_invocation(client: TestClient, store: Store) -> None:
    spans = get_json(client, f"/api/runs/{store.order_runs[0]}/timeline")
    workers = [s for s in spans if s["step_name"] == "work"]
    assert sorted(s["worker_index"] for s in workers) == [0, 1, 2, 3, 4]
    assert len({s["invocation_id"] for s in workers}) == 5
    fan = next(s for s in spans if s["step_name"] == "fan")
    assert all(s["owner_invocation_id"] == fan["invocation_id"] for s in workers)
    assert [s["step_name"] for s in spans if s["owner_invocation_id"] == s["invocation_id"]] == [
        "load", "fan", "done",
    ]  # fmt: skip
    for span in spans:
        assert set(span) >= {"step_name", "start_time", "end_time", "duration_seconds", "status"}
        assert span["status"] == "success"
    critical = [s["step_name"] for s in spans if s["critical"]]
    assert critical[0] == "load" and critical[-1] == "done" and "work" in critical
    # the worker that ended last is the one on the critical path
    last = max(workers, key=lambda s: s["end_time"])
    assert [s["worker_index"] for s in workers if s["critical"]] == [last["worker_index"]]


def test_failed_run_timeline_marks_the_error(client: TestClient, store: Store) -> None:
    spans = get_json(client, f"/api/runs/{store.failed_run}/timeline")
    done = next(s for s in spans if s["step_name"] == "done")
    assert done["status"] == "error"
    assert done["error"] == "payment service refused the order"


def test_search_from_two_characters_by_id_prefix_or_pipeline_name(
    client: TestClient, store: Store
) -> None:
    assert get_json(client, "/api/runs/search?q=o") == []
    by_name = get_json(client, "/api/runs/search?q=or&limit=50")
    assert {r["run_id"] for r in by_name} >= {store.failed_run, *store.order_runs}
    prefix = store.failed_run[:2]
    by_id = get_json(client, f"/api/runs/search?q={prefix}")
    assert store.failed_run in {r["run_id"] for r in by_id}
    assert len(get_json(client, "/api/runs/search?q=or&limit=2")) == 2
    get_json(client, "/api/runs/search?q=or&limit=51", 400)


def test_compare_reports_status_change_and_first_divergence(
    client: TestClient, store: Store
) -> None:
    body = get_json(client, f"/api/compare?run1={store.order_runs[0]}&run2={store.failed_run}")
    assert body["status_same"] is False and body["pipeline_same"] is True
    assert (body["run1"]["status"], body["run2"]["status"]) == ("success", "failed")
    assert set(body["step_timing_diff"]) == {"load", "fan", "work", "done"}
    divergence = body["first_divergence"]
    assert divergence is not None
    assert divergence["run2"]["event_type"] == "step_error"
    assert divergence["run1"]["event_type"] == "step_end"
    done = next(s for s in body["step_timings"] if s["step_name"] == "done")
    assert (done["run1_status"], done["run2_status"]) == ("success", "error")
    # the failed step is a status change, not a "removed" step (issue 20)
    assert body["step_status_changes"] == {"done": ["succeeded", "failed"]}
    assert body["same_definition"] is True
    page = client.get(f"/compare?run1={store.order_runs[0]}&run2={store.failed_run}").text
    assert "done: succeeded → failed" in page
    assert "<dt>Not run in the other</dt><dd>none</dd>" in page
    same = get_json(client, f"/api/compare?run1={store.order_runs[0]}&run2={store.order_runs[0]}")
    assert same["first_divergence"] is None
    get_json(client, f"/api/compare?run1={store.order_runs[0]}", 400)
    get_json(client, f"/api/compare?run1={store.order_runs[0]}&run2=zz-missing", 404)


def test_stats_shape_and_bounds(client: TestClient, store: Store) -> None:
    stats = get_json(client, f"/api/stats/{store.orders_hash}?days=7")
    assert stats["total_runs"] == 4 and stats["days"] == 7
    assert stats["status_counts"] == {"success": 3, "failed": 1}
    assert stats["failure_hotspots"] == [{"step_name": "done", "failures": 1}]
    assert stats["recent_errors"][0]["run_id"] == store.failed_run
    assert len(stats["daily_activity"]) == 7
    assert stats["daily_activity"][-1]["total"] == 4
    assert len(stats["duration_trend"]) == 4
    for days in (0, 366, "x"):
        get_json(client, f"/api/stats/{store.orders_hash}?days={days}", 400)


def test_stats_count_every_run_of_the_window_not_only_the_recent_ones(tmp_path: Path) -> None:
    directory = tmp_path / "aaaaaaaaaaaaaaaa"
    now = datetime.now(UTC)
    with SQLiteBackend(directory / RUNS_DB) as backend:
        for index in range(120):
            start = now - timedelta(hours=index)
            backend.save_run(
                RunRecord(
                    f"r{index:04d}", start, start, timedelta(seconds=1),
                    PipelineTerminalStatus.SUCCESS,
                ),
                [],
            )  # fmt: skip
    registry = PipelineRegistry(tmp_path)
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        stats = get_json(client, "/api/stats/aaaaaaaaaaaaaaaa?days=30")
        assert stats["total_runs"] == 120
        assert get_json(client, "/api/stats/aaaaaaaaaaaaaaaa?days=2")["total_runs"] == 48
    registry.close()


def test_export_is_a_json_download(client: TestClient, store: Store) -> None:
    response = client.get(f"/api/runs/{store.failed_run}/export")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    body = response.json()
    assert body["run"]["run_id"] == store.failed_run
    assert body["event_count"] == len(body["events"]) > 0


# -- cleanup -------------------------------------------------------------------------


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[tuple[Store, TestClient]]:
    store = build_store(tmp_path)
    registry = PipelineRegistry(tmp_path)
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        yield store, client
    registry.close()


def csrf_of(client: TestClient) -> str:
    page = client.get("/").text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def test_cleanup_dry_run_lists_and_keeps_everything(own_store: tuple[Store, TestClient]) -> None:
    store, client = own_store
    url = f"/api/pipelines/{store.orders_hash}/cleanup?keep=1&dry_run=true"
    body = client.post(url).json()
    assert body["count"] == 3 and body["dry_run"] is True
    assert [r["run_id"] for r in body["runs"]] == list(reversed(store.order_runs))
    assert len(get_json(client, f"/api/pipelines/{store.orders_hash}/runs")) == 4


def test_cleanup_needs_a_same_origin_request_with_the_csrf_token(
    own_store: tuple[Store, TestClient],
) -> None:
    store, client = own_store
    url = f"/api/pipelines/{store.orders_hash}/cleanup?keep=1&dry_run=false"
    token = csrf_of(client)
    assert client.post(url).status_code == 403
    assert client.post(url, headers={"origin": ORIGIN}).status_code == 403
    forged = {"origin": "http://evil.example", "x-csrf-token": token}
    assert client.post(url, headers=forged).status_code == 403
    wrong = {"origin": ORIGIN, "x-csrf-token": "not-the-token"}
    assert client.post(url, headers=wrong).status_code == 403
    assert len(get_json(client, f"/api/pipelines/{store.orders_hash}/runs")) == 4
    response = client.post(url, headers={"origin": ORIGIN, "x-csrf-token": token})
    assert response.status_code == 200
    assert response.json()["deleted"] == 3
    remaining = get_json(client, f"/api/pipelines/{store.orders_hash}/runs")
    assert [r["run_id"] for r in remaining] == [store.failed_run]


def test_cleanup_never_deletes_a_live_run(own_store: tuple[Store, TestClient]) -> None:
    store, client = own_store
    token = csrf_of(client)
    url = f"/api/pipelines/{store.live_hash}/cleanup?keep=0&dry_run=false"
    body = client.post(url, headers={"origin": ORIGIN, "x-csrf-token": token}).json()
    assert body["deleted"] == 3  # the dead run and the two finished twins
    runs = get_json(client, f"/api/pipelines/{store.live_hash}/runs")
    assert [r["run_id"] for r in runs] == [store.live_run]


def test_cleanup_page_previews_then_deletes_only_when_confirmed(
    own_store: tuple[Store, TestClient],
) -> None:
    store, client = own_store
    token = csrf_of(client)
    url = f"/pipelines/{store.orders_hash}/cleanup"
    preview = client.post(url, data={"keep": "1", "csrf_token": token}, headers={"origin": ORIGIN})
    assert preview.status_code == 200
    assert "3 run(s) would be deleted" in preview.text
    assert len(get_json(client, f"/api/pipelines/{store.orders_hash}/runs")) == 4
    forged = client.post(
        url,
        data={"keep": "1", "confirm": "yes", "csrf_token": token},
        headers={"origin": "http://evil.example"},
    )
    assert forged.status_code == 403
    done = client.post(
        url,
        data={"keep": "1", "confirm": "yes", "csrf_token": token},
        headers={"origin": ORIGIN},
    )
    assert "Deleted 3 run(s)" in done.text
    assert len(get_json(client, f"/api/pipelines/{store.orders_hash}/runs")) == 1


# -- security ------------------------------------------------------------------------


def assert_security_headers(response: Any) -> None:
    headers = response.headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "access-control-allow-origin" not in headers


def test_every_kind_of_response_carries_the_security_headers(
    client: TestClient, store: Store
) -> None:
    cross_site = {"origin": "http://evil.example"}
    for url in (
        "/",
        "/api/pipelines",
        f"/runs/{store.failed_run}",
        "/static/app.js",
        "/api/runs/missing-run",
        "/nope",
    ):
        assert_security_headers(client.get(url, headers=cross_site))
    preflight = client.options(
        "/api/pipelines", headers={**cross_site, "access-control-request-method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8741", "127.0.0.1.evil.example"])
def test_foreign_host_headers_are_refused(client: TestClient, host: str) -> None:
    response = client.get("/api/health", headers={"host": host})
    assert response.status_code == 421
    assert_security_headers(response)


@pytest.mark.parametrize("host", ["localhost:8741", "127.0.0.1", "[::1]:8741"])
def test_loopback_host_headers_are_served(client: TestClient, host: str) -> None:
    assert client.get("/api/health", headers={"host": host}).status_code == 200


def test_a_token_guards_every_request_when_set(store: Store) -> None:
    registry = PipelineRegistry(store.root)
    app = create_app(registry, token="s3cret", allowed_hosts=["dash.example"])
    with TestClient(app, base_url="http://dash.example") as client:
        assert client.get("/api/health").status_code == 401
        assert client.get("/api/health?token=wrong").status_code == 401
        assert (
            client.get("/api/health", headers={"authorization": "Bearer s3cret"}).status_code == 200
        )
        first = client.get("/?token=s3cret")
        assert first.status_code == 200
        assert "HttpOnly" in first.headers["set-cookie"]
        assert client.get("/api/health").status_code == 200  # the cookie now carries it
    registry.close()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../api.py",
        "/static/%2e%2e/api.py",
        "/static/..%2fapi.py",
        "/static/%2e%2e%2fserver.py",
        "/static//etc/passwd",
        "/static/templates/../../server.py",
    ],
)
def test_static_files_never_leave_the_package_folder(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "create_app" not in response.text


def test_static_root_excludes_sibling_folders_with_the_same_prefix(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("index")
    secret = tmp_path / "site-secret"
    secret.mkdir()
    (secret / "key.txt").write_text("secret")
    assert _serve_file(site.resolve(), "../site-secret/key.txt") is None
    assert _serve_file(site.resolve(), "/etc/passwd") is None
    assert _serve_file(site.resolve(), "index.html") is not None
    registry = PipelineRegistry(tmp_path / "empty")
    with TestClient(create_app(registry, static_dir=site), base_url=ORIGIN) as client:
        assert client.get("/anything/here").text == "index"  # SPA fallback
        assert "secret" not in client.get("/../site-secret/key.txt").text
        assert "secret" not in client.get("/%2e%2e/site-secret/key.txt").text


# -- unreadable stores -----------------------------------------------------------------


def test_a_corrupt_store_gives_an_error_panel_and_is_never_modified(
    client: TestClient, store: Store
) -> None:
    path = store.root / store.broken_hash / RUNS_DB
    page = client.get(f"/pipelines/{store.broken_hash}")
    assert page.status_code == 200
    assert "cannot be read" in page.text and 'role="alert"' in page.text
    assert client.get("/").status_code == 200
    body = get_json(client, f"/api/pipelines/{store.broken_hash}/runs", 503)
    assert body["pipeline_hash"] == store.broken_hash
    assert path.read_bytes() == BROKEN_BYTES
    assert sorted(p.name for p in path.parent.iterdir()) == [PIPELINE_JSON, RUNS_DB]


def test_a_locked_store_gives_an_error_panel_and_is_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "cccccccccccccccc"
    directory.mkdir()
    path = directory / RUNS_DB
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")  # a rollback-journal file, locked exclusively
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (1)")
    before = path.read_bytes()
    registry = DashboardRegistry(tmp_path, timeout=0.2)
    try:
        with TestClient(create_app(registry), base_url=ORIGIN) as client:
            page = client.get("/pipelines/cccccccccccccccc")
            assert page.status_code == 200
            assert "locked" in page.text
            listing = get_json(client, "/api/pipelines")
            assert "locked" in listing[0]["error"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        registry.close()
    assert path.read_bytes() == before


# -- pages ---------------------------------------------------------------------------


def page_urls(store: Store) -> list[str]:
    run = store.failed_run
    return [
        "/",
        "/?name=ord",
        f"/pipelines/{store.orders_hash}",
        f"/pipelines/{store.orders_hash}?status=failed&days=30",
        f"/pipelines/{store.hostile_hash}",
        f"/pipelines/{store.broken_hash}",
        f"/pipelines/{store.live_hash}",
        *(f"/runs/{run}?tab={tab}" for tab in ("timeline", "events", "metrics", "steps")),
        f"/runs/{run}?tab=events&type=step_error&group=step",
        f"/runs/{store.order_runs[0]}?tab=timeline&expand={store.order_runs[0]}:2",
        *(f"/runs/{store.hostile_run}?tab={tab}" for tab in ("timeline", "events", "steps")),
        f"/runs/{store.live_run}",
        f"/runs/{store.dead_run}",
        f"/compare?run1={store.order_runs[0]}&run2={run}",
        f"/compare?run1={store.hostile_run}&run2={run}",
        "/search?q=or",
        "/search?q=host",
    ]


class _AttributeCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [(tag, name) for name, _ in attrs if name.lower().startswith("on")]


def event_handler_attributes(html: str) -> list[tuple[str, str]]:
    """Inline event handlers (``onclick=`` ...) on real tags, which the CSP would block."""
    collector = _AttributeCollector()
    collector.feed(html)
    return collector.handlers


def test_every_page_renders_without_inline_script(client: TestClient, store: Store) -> None:
    for url in page_urls(store):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("text/html")
        assert_security_headers(response)
        for tag in re.findall(r"<script\b[^>]*>", response.text):
            assert 'src="/static/' in tag, (url, tag)
        assert event_handler_attributes(response.text) == [], url


def test_user_data_is_escaped_everywhere(client: TestClient, store: Store) -> None:
    for url in page_urls(store):
        text = client.get(url).text
        assert XSS_SCRIPT not in text, url
        assert XSS_IMG not in text, url
        assert "<img" not in text, url
    hostile = client.get(f"/runs/{store.hostile_run}?tab=events").text
    assert "&lt;script&gt;window.__xss" in hostile
    assert "bad input &lt;script&gt;" in client.get(f"/runs/{store.hostile_run}").text
    steps = client.get(f"/runs/{store.hostile_run}?tab=steps").text
    assert "fetch&lt;img src=x onerror=" in steps
    assert XSS_STEP not in steps


def test_run_page_shows_the_failure_autopsy(client: TestClient, store: Store) -> None:
    text = client.get(f"/runs/{store.failed_run}").text
    assert "Failure autopsy" in text
    assert "payment service refused the order" in text
    assert ">done</a>" in text
    # the type and traceback come from the kernel's STEP_ERROR framework meta
    assert "RuntimeError" in text
    assert "raise RuntimeError(&#34;payment service refused the order&#34;)" in text or (
        "raise RuntimeError(&quot;payment service refused the order&quot;)" in text
    )
    assert client.get(f"/runs/{store.order_runs[0]}").text.count("Failure autopsy") == 0


def test_timeline_folds_map_workers_until_expanded(client: TestClient, store: Store) -> None:
    run = store.order_runs[0]
    folded = client.get(f"/runs/{run}?tab=timeline").text
    assert "5 \N{MULTIPLICATION SIGN} work" in folded
    assert "work</a>[3]" not in folded
    expanded = client.get(f"/runs/{run}?tab=timeline&expand={run}:2").text
    assert all(f"work</a>[{i}]" in expanded for i in range(5))


def test_events_tab_pages_to_a_deep_linked_seq(client: TestClient, store: Store) -> None:
    text = client.get(f"/runs/{store.failed_run}?tab=events&seq=3").text
    assert 'id="e3"' in text


def test_ambiguous_run_page_lists_the_candidates(client: TestClient) -> None:
    response = client.get("/runs/twin0000")
    assert response.status_code == 409
    assert all(twin in response.text for twin in TWIN_RUNS)


def test_fragments_render_only_the_live_region(client: TestClient, store: Store) -> None:
    fragment = client.get(f"/runs/{store.failed_run}?tab=events&fragment=1").text
    assert "<html" not in fragment and 'id="e1"' in fragment
    runs = client.get(f"/pipelines/{store.orders_hash}?fragment=runs").text
    assert "<html" not in runs and store.failed_run[:12] in runs
    assert "<html" not in client.get("/?fragment=1").text


def test_unknown_page_is_a_404_page(client: TestClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Page not found" in response.text


# -- live streams (server-sent events) -------------------------------------------------


def sse_messages(lines: Iterator[str], stop: str | None = "end") -> Iterator[dict[str, Any]]:
    message: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if "event" in message:
                yield message
                if message.get("event") == stop:
                    return
            message = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        message[key] = json.loads(value) if key == "data" else value


def test_stream_of_a_finished_run_sends_every_event_then_end(
    client: TestClient, store: Store
) -> None:
    expected = len(get_json(client, f"/api/runs/{store.failed_run}/events"))
    with client.stream("GET", f"/api/runs/{store.failed_run}/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = list(sse_messages(response.iter_lines()))
    events = [m for m in messages if m.get("event") == "event"]
    assert [int(m["id"]) for m in events] == list(range(1, expected + 1))
    assert messages[-1]["event"] == "end"
    assert messages[-1]["data"]["status"] == "failed"


def test_stream_resumes_after_last_event_id(client: TestClient, store: Store) -> None:
    headers = {"last-event-id": "5"}
    with client.stream("GET", f"/api/runs/{store.failed_run}/stream", headers=headers) as response:
        messages = list(sse_messages(response.iter_lines()))
    ids = [int(m["id"]) for m in messages if m.get("event") == "event"]
    assert ids[0] == 6


def test_stream_of_a_live_run_follows_it_until_it_ends(tmp_path: Path) -> None:
    store = build_store(tmp_path)
    registry = PipelineRegistry(tmp_path)
    backend = SQLiteBackend(tmp_path / store.live_hash / RUNS_DB)
    app = create_app(registry, poll_interval=0.01)
    with (
        TestClient(app, base_url=ORIGIN) as client,
        client.stream("GET", f"/api/runs/{store.live_run}/stream") as response,
    ):
        messages = sse_messages(response.iter_lines())
        seen = [next(messages), next(messages)]
        assert [int(m["id"]) for m in seen] == [1, 2]
        assert next(messages) == {
            "event": "status",
            "data": {"status": "running", "liveness": "live"},
        }
        later = json.dumps(
            {"type": "step_end", "stage": "slow", "timestamp": time.time(), "seq": 3}
        )
        backend.append_events(store.live_run, [later])
        grown = next(messages)
        assert (grown["event"], grown["id"]) == ("event", "3")
        start = datetime.now(UTC)
        backend.save_run(
            RunRecord(store.live_run, start, start, timedelta(0), PipelineTerminalStatus.SUCCESS),
            [],
        )
        rest = list(messages)
    assert rest[-1] == {"event": "end", "data": {"status": "success", "last_seq": 3}}
    backend.close()
    registry.close()


# -- analysis (pure) -------------------------------------------------------------------


def span(
    key: str, start: float, end: float, owner: str | None = None, worker: int | None = None
) -> Any:
    from justpipe.dashboard.analysis import Span

    return Span(
        key=key, step_name=key.split("#")[0], kind="step", start=start, end=end,
        status="success", invocation_id=key, owner_invocation_id=owner or key,
        worker_index=worker,
    )  # fmt: skip


def test_critical_path_follows_the_map_worker_that_ended_last() -> None:
    from justpipe.dashboard.analysis import mark_critical_path

    spans = [
        span("load", 0.0, 1.0),
        span("side", 0.5, 1.2),  # a parallel branch that ended before the map but is shorter
        span("fan", 1.0, 9.0),
        span("work#0", 1.1, 1.2, owner="fan", worker=0),  # ends right after load started
        span("work#1", 1.1, 8.9, owner="fan", worker=1),
        span("work#2", 1.1, 5.0, owner="fan", worker=2),
        span("done", 9.0, 10.0),
    ]
    path = mark_critical_path(spans, 10.0)
    assert [s.key for s in path] == ["load", "fan", "work#1", "done"]
    assert [s.key for s in spans if s.critical] == ["load", "fan", "work#1", "done"]


def test_critical_path_of_a_chain_with_a_retry() -> None:
    from justpipe.dashboard.analysis import mark_critical_path

    spans = [
        span("a", 0, 1),
        span("b#1", 1, 2),
        span("b#2", 2, 5),
        span("c", 5, 6),
        span("x", 0, 3),
    ]
    assert [s.key for s in mark_critical_path(spans, 6)] == ["a", "b#1", "b#2", "c"]


def test_concurrency_counts_overlapping_invocations() -> None:
    from justpipe.dashboard.analysis import concurrency

    spans = [span("a", 0, 4), span("b", 1, 3), span("c", 2, 5)]
    assert concurrency(spans, 5) == [(0, 1), (1, 2), (2, 3), (3, 2), (4, 1), (5, 0)]


def test_large_run_pages_fold_workers_and_load_token_payloads_on_demand(tmp_path: Path) -> None:
    from test_dashboard_fixtures import add_large_run

    run_id = add_large_run(tmp_path, 3000, 400)
    registry = PipelineRegistry(tmp_path)
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        timeline = client.get(f"/runs/{run_id}?tab=timeline").text
        assert "400 \N{MULTIPLICATION SIGN} work" in timeline
        assert timeline.count('class="span ') == 4  # load, fan, stream, done
        events = client.get(f"/runs/{run_id}?tab=events&type=token").text
        assert events.count('class="ev t-token"') == 200  # one page
        tokens = get_json(client, f"/api/runs/{run_id}/events?type=token")
        first, last_token = tokens[0]["data"]["payload"], tokens[-1]["data"]["payload"]
        assert f"&#34;{first}&#34;" in events  # decoded from the store for this page
        assert f"&#34;{last_token}&#34;" not in events
        last = client.get(f"/runs/{run_id}?tab=events&seq=2999").text
        assert 'id="e2999"' in last and "page 15 of 15" in last
    registry.close()


def test_graph_draws_parallel_groups_switch_labels_and_sub_pipelines(
    client: TestClient, store: Store
) -> None:
    text = client.get(f"/pipelines/{store.routing_hash}").text
    assert text.count('class="par-group"') == 1  # split -> left, right
    labels = re.findall(r'<text class="edge-label"[^>]*>([^<]*)</text>', text)
    assert sorted(labels) == ["default", "long", "short"]
    for name in ("split", "left", "right", "join", "clean", "route", "speak", "done"):
        assert f'data-name="{name}"' in text
    # the sub-pipeline's own steps are drawn inside it, coloured by the forwarded events
    assert re.search(r'class="node k-step st-success"[^>]*\s+data-name="clean:strip"', text)
    assert re.search(r'class="node k-switch st-success"[^>]*\s+data-name="route"', text)


def test_forwarded_sub_pipeline_steps_are_their_own_spans(client: TestClient, store: Store) -> None:
    spans = get_json(client, f"/api/runs/{store.routing_run}/timeline")
    names = [s["step_name"] for s in spans]
    assert {"clean:strip", "clean:lower", "speak"} <= set(names)
    assert names.index("left") < names.index("join") < names.index("clean")
    assert all(s["status"] == "success" for s in spans)


def test_run_list_stream_says_when_runs_change(tmp_path: Path) -> None:
    store = build_store(tmp_path)
    registry = PipelineRegistry(tmp_path)
    backend = SQLiteBackend(tmp_path / store.live_hash / RUNS_DB)
    app = create_app(registry, poll_interval=0.01)
    url = f"/api/stream/runs?pipeline={store.live_hash}"
    with TestClient(app, base_url=ORIGIN) as client, client.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = sse_messages(response.iter_lines(), stop=None)
        assert next(messages) == {"event": "runs", "data": {"pipeline": store.live_hash}}
        backend.append_events("brand-new-run", [])  # a run starts
        assert next(messages)["event"] == "runs"
    backend.close()
    registry.close()


ODD_EVENTS = [
    {"type": "start", "stage": None, "payload": [1, 2]},
    {"type": "step_start", "stage": "a", "invocation_id": 7, "attempt": "x", "scope": "s"},
    {"type": "step_start", "stage": "b", "invocation_id": "b:1", "scope": [None, 3]},
    {"type": "token", "stage": "b", "payload": {"deep": [[[[{"x": None}]]]]}},
    {"type": "step_error", "stage": "b", "invocation_id": "b:1", "meta": "not a dict"},
    {"type": "step_end", "stage": "zz", "invocation_id": "never-started"},
    {"type": "barrier_release", "stage": "j"},
    {"type": "map_worker", "stage": "w[notanumber]"},
    {"type": "no_such_type", "stage": "q"},
    {
        "type": "finish",
        "stage": "system",
        "meta": [],
        "payload": {
            "status": "failed",
            "errors": "not a list",
            "metrics": {
                "tasks": 5,
                "queue": None,
                "step_latency": {"a": {"count": "x", "total_s": "y"}, "b": 3},
                "maps": [],
            },
        },
    },
]


def test_odd_and_partial_event_data_never_breaks_a_page(tmp_path: Path) -> None:
    directory = tmp_path / "dddddddddddddddd"
    (directory).mkdir()
    (directory / PIPELINE_JSON).write_text(
        json.dumps({"name": "odd", "visual_ast": {"nodes": {"a": "x"}, "edges": [1, None]}})
    )
    events = [
        json.dumps({**e, "seq": i, "timestamp": 100.0 + i}) for i, e in enumerate(ODD_EVENTS, 1)
    ]
    events.append(json.dumps({"type": "step_end", "stage": "a", "seq": 99, "timestamp": "later"}))
    start = datetime.now(UTC)
    with SQLiteBackend(directory / RUNS_DB) as backend:
        backend.save_run(
            RunRecord("odd-run", start, start, timedelta(seconds=1), PipelineTerminalStatus.FAILED,
                      error_message="x", error_step="b", run_meta="{not json"),
            events,
        )  # fmt: skip
        backend.append_events("half-run", [json.dumps({"type": "step_start", "stage": "a"})])
    registry = PipelineRegistry(tmp_path)
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        urls = [
            "/",
            "/pipelines/dddddddddddddddd",
            "/search?q=odd",
            "/compare?run1=odd-run&run2=half-run",
            *(f"/runs/{run}?tab={tab}" for run in ("odd-run", "half-run") for tab in RUN_TABS),
            "/runs/odd-run?tab=events&group=step",
            "/runs/odd-run?tab=steps&step=b",
        ]
        for url in urls:
            assert client.get(url).status_code == 200, url
        for url in (
            "/api/pipelines",
            "/api/pipelines/dddddddddddddddd",
            "/api/pipelines/dddddddddddddddd/runs",
            "/api/stats/dddddddddddddddd",
            "/api/runs/odd-run",
            "/api/runs/odd-run/events",
            "/api/runs/odd-run/timeline",
            "/api/runs/half-run/timeline",
            "/api/compare?run1=odd-run&run2=half-run",
        ):
            assert client.get(url).status_code == 200, url
    registry.close()


def test_stream_of_a_run_deleted_while_watched_ends_with_a_problem(tmp_path: Path) -> None:
    store = build_store(tmp_path)
    registry = PipelineRegistry(tmp_path)
    backend = SQLiteBackend(tmp_path / store.live_hash / RUNS_DB)
    app = create_app(registry, poll_interval=0.01)
    with (
        TestClient(app, base_url=ORIGIN) as client,
        client.stream("GET", f"/api/runs/{store.live_run}/stream") as response,
    ):
        messages = sse_messages(response.iter_lines(), stop="problem")
        assert next(messages)["id"] == "1"
        backend.delete_run(store.live_run)
        rest = list(messages)
    assert rest[-1]["event"] == "problem"
    assert "not found" in rest[-1]["data"]["error"]
    backend.close()
    registry.close()
