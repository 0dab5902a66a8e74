"""The dashboard over PostgreSQL: every page and route as over SQLite, live pages through
LISTEN/NOTIFY, and never a password in what it serves.

The same runs (test_dashboard_fixtures.build_store: real pipelines, a live run, a dead
one, an ambiguous prefix) are persisted into a SQLite directory and into a real
PostgreSQL database (tests/pg.py); every route is asked of both and must answer alike.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from extras import require

require("starlette", "dashboard")
require("jinja2", "dashboard")
require("httpx", "dashboard")
require("psycopg", "postgres")

from starlette.testclient import TestClient  # noqa: E402

from justpipe.cli.registry import PipelineRegistry, open_registry  # noqa: E402
from justpipe.dashboard.server import create_app  # noqa: E402
from justpipe.storage import RunRecord  # noqa: E402
from justpipe.storage.postgres import close_shared_databases  # noqa: E402
from justpipe.storage.url import parse_storage_url  # noqa: E402
from justpipe.types import PipelineTerminalStatus  # noqa: E402
from pg import PostgresServer, fresh_database_name  # noqa: E402
from test_dashboard import sse_messages  # noqa: E402
from test_dashboard_fixtures import Store, build_store, live_backend  # noqa: E402

pytestmark = pytest.mark.backend_agnostic

ORIGIN = "http://127.0.0.1:8741"
RUN_ID = re.compile(r"[0-9a-f]{32}|live0000run0+1|dead0000run0+1|twin0000[ab]{4}0+1")


@pytest.fixture(scope="module")
def stores(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Store]]:
    url = postgres_server.create_database(fresh_database_name())
    root = tmp_path_factory.mktemp("sqlite-store")
    built = {
        "sqlite": build_store(root, url=f"sqlite://{root}"),
        "postgres": build_store(tmp_path_factory.mktemp("unused"), url=url),
    }
    close_shared_databases()
    yield built
    close_shared_databases()


def registry_of(store: Store) -> PipelineRegistry:
    return open_registry(parse_storage_url(store.url or f"sqlite://{store.root}"))


@pytest.fixture(scope="module")
def clients(stores: dict[str, Store]) -> Iterator[dict[str, TestClient]]:
    registries = {kind: registry_of(store) for kind, store in stores.items()}
    opened = {
        kind: TestClient(create_app(registry, poll_interval=0.02), base_url=ORIGIN)
        for kind, registry in registries.items()
    }
    for client in opened.values():
        client.__enter__()
    yield opened
    for client in opened.values():
        client.__exit__(None, None, None)
    for registry in registries.values():
        registry.close()


def urls_of(client: TestClient, store: Store) -> list[str]:
    """Every page and GET route of the dashboard, for the runs this store holds."""
    hashes = [store.orders_hash, store.routing_hash, store.hostile_hash, store.live_hash]
    urls = ["/", "/?fragment=1&name=ord", "/api/health", "/api/pipelines", "/search?q=or"]
    urls += ["/api/runs/search?q=tw", "/api/runs/twin0000", "/static/app.js", "/nowhere"]
    for pipeline_hash in hashes:
        urls += [
            f"/pipelines/{pipeline_hash}",
            f"/pipelines/{pipeline_hash}?status=failed,success&page=1&days=30",
            f"/pipelines/{pipeline_hash}?fragment=runs",
            f"/api/pipelines/{pipeline_hash}",
            f"/api/pipelines/{pipeline_hash}/runs?limit=2&offset=1",
            f"/api/pipelines/{pipeline_hash}/runs?status=running,failed",
            f"/api/stats/{pipeline_hash}?days=30",
        ]
    runs = [*store.order_runs, store.failed_run, store.routing_run, store.hostile_run]
    for run_id in [*runs, store.dead_run]:
        urls += [f"/runs/{run_id}?tab={tab}" for tab in ("timeline", "events", "metrics", "steps")]
        urls += [f"/api/runs/{run_id}{tail}" for tail in ("", "/events?limit=5", "/timeline")]
        urls += [f"/api/runs/{run_id}/export", f"/api/runs/{run_id}/stream"]
        urls += [f"/runs/{run_id[:8]}"]
    urls += [
        f"/compare?run1={store.order_runs[0]}&run2={store.failed_run}",
        f"/api/compare?run1={store.order_runs[0]}&run2={store.failed_run}",
        "/api/pipelines/0000000000000000/runs",
        "/api/runs/zzzz-no-such-run",
        f"/api/pipelines/{store.orders_hash}/runs?status=bogus",
    ]
    return urls


def shape(value: Any) -> Any:
    """What must match between the stores: keys, lengths and the values that are not ids,
    times or durations."""
    if isinstance(value, dict):
        skip = {"timestamp", "start_time", "end_time", "duration_seconds", "avg", "min", "max"}
        return {k: shape(v) for k, v in value.items() if k not in skip and "time" not in k}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, str):
        return RUN_ID.sub("<run>", value) if len(value) < 200 else "<text>"
    if isinstance(value, float):
        return "<number>"
    return value


def titles(page: str) -> list[str]:
    """The page's title and headings, ids and numbers left out."""
    found = re.findall(r"<(?:title|h1|h2)[^>]*>(.*?)</", page, re.S)
    return [re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", text).strip() for text in found]


def test_every_route_answers_over_postgresql_as_over_sqlite(
    stores: dict[str, Store], clients: dict[str, TestClient]
) -> None:
    pages = {kind: urls_of(clients[kind], stores[kind]) for kind in stores}
    assert len(pages["sqlite"]) == len(pages["postgres"]) > 100
    for sqlite_url, postgres_url in zip(pages["sqlite"], pages["postgres"], strict=True):
        one = clients["sqlite"].get(sqlite_url)
        two = clients["postgres"].get(postgres_url)
        assert (one.status_code, postgres_url) == (two.status_code, postgres_url)
        kind = one.headers.get("content-type", "")
        assert two.headers.get("content-type", "") == kind, postgres_url
        if kind.startswith("application/json") and "/export" not in sqlite_url:
            assert shape(two.json()) == shape(one.json()), postgres_url
        if kind.startswith("text/html"):
            assert titles(two.text) == titles(one.text), postgres_url


def test_summaries_and_filters_over_postgresql(
    stores: dict[str, Store], clients: dict[str, TestClient]
) -> None:
    store, client = stores["postgres"], clients["postgres"]
    by_hash = {p["hash"]: p for p in client.get("/api/pipelines").json()}
    orders = by_hash[store.orders_hash]
    assert (orders["name"], orders["total_runs"], orders["success_count"]) == ("orders", 4, 3)
    assert orders["last_run_status"] == "failed" and orders["error"] is None
    live = client.get(f"/api/pipelines/{store.live_hash}/runs?status=running").json()
    assert [run["run_id"] for run in live] == [store.live_run]
    dead = client.get(f"/api/runs/{store.dead_run}").json()
    assert (dead["status"], dead["liveness"]) == ("failed", "dead")
    ambiguous = client.get("/api/runs/twin0000")
    assert ambiguous.status_code == 409 and len(ambiguous.json()["candidates"]) == 2
    detail = client.get(f"/api/pipelines/{store.orders_hash}").json()
    assert set(detail["visual_ast"]["nodes"]) == {"load", "fan", "work", "done"}


def test_cleanup_over_postgresql_deletes_only_what_was_asked(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database(fresh_database_name())
    store = build_store(tmp_path, url=url)
    registry = registry_of(store)
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        page = client.get(f"/pipelines/{store.orders_hash}").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        response = client.post(
            f"/api/pipelines/{store.orders_hash}/cleanup?keep=1&dry_run=false",
            headers={"x-csrf-token": token.group(1), "origin": ORIGIN},
        )
        assert response.status_code == 200 and response.json()["deleted"] == 3
        left = client.get(f"/api/pipelines/{store.orders_hash}/runs").json()
        assert [run["run_id"] for run in left] == [store.failed_run]
    registry.close()
    close_shared_databases()


def test_no_page_or_route_shows_the_password(
    postgres_server: PostgresServer, stores: dict[str, Store], clients: dict[str, TestClient]
) -> None:
    client = clients["postgres"]
    for url in urls_of(client, stores["postgres"]):
        response = client.get(url)
        assert postgres_server.password not in response.text, url
        assert postgres_server.password not in str(response.headers), url


def test_a_database_that_cannot_be_reached_is_a_503_naming_it_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    wrong = postgres_server.url("postgres", password="wrong-" + postgres_server.password[:4])
    registry = open_registry(parse_storage_url(wrong))
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        for url in ("/api/pipelines", "/api/health", "/", "/pipelines/0000000000000000"):
            response = client.get(url)
            assert response.status_code == 503, url
            assert "password authentication failed" in response.text
            assert f"port {postgres_server.port}" in response.text
            assert "wrong-" not in response.text
    registry.close()


def test_a_live_run_is_pushed_through_listen_notify(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database(fresh_database_name())
    store = build_store(tmp_path, url=url)
    registry = registry_of(store)
    # a poll interval of a minute: only a notification can bring the next event in time
    app = create_app(registry, poll_interval=60.0)
    with (
        TestClient(app, base_url=ORIGIN) as client,
        client.stream("GET", f"/api/runs/{store.live_run}/stream") as response,
        live_backend(store) as backend,
    ):
        messages = sse_messages(response.iter_lines())
        assert [int(next(messages)["id"]) for _ in range(2)] == [1, 2]
        assert next(messages)["event"] == "status"
        time.sleep(0.3)  # the stream waits on its notification now
        later = {"type": "step_end", "stage": "slow", "timestamp": time.time(), "seq": 3}
        sent = time.monotonic()
        backend.append_events(store.live_run, [json.dumps(later)])
        grown = next(messages)
        assert (grown["event"], grown["id"]) == ("event", "3")
        assert time.monotonic() - sent < 1.5, "pushed, not polled (RECHECK_S is 2 s)"
        start = datetime.now(UTC)
        ended = PipelineTerminalStatus.SUCCESS
        record = RunRecord(store.live_run, start, start, timedelta(0), ended)
        backend.save_run(record, [])
        rest = list(messages)
    assert rest[-1] == {"event": "end", "data": {"status": "success", "last_seq": 3}}
    registry.close()
    close_shared_databases()


def test_the_run_list_stream_is_told_of_a_new_run(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database(fresh_database_name())
    store = build_store(tmp_path, url=url)
    registry = registry_of(store)
    app = create_app(registry, poll_interval=60.0)
    stream = f"/api/stream/runs?pipeline={store.live_hash}"
    with (
        TestClient(app, base_url=ORIGIN) as client,
        client.stream("GET", stream) as response,
        live_backend(store) as backend,
    ):
        messages = sse_messages(response.iter_lines(), stop=None)
        assert next(messages) == {"event": "runs", "data": {"pipeline": store.live_hash}}
        time.sleep(0.3)
        sent = time.monotonic()
        backend.append_events("brand-new-run", [])
        assert next(messages)["event"] == "runs"
        assert time.monotonic() - sent < 1.5
    registry.close()
    close_shared_databases()
