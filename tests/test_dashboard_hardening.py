"""The dashboard under hostile input: no 500s, security headers on every response, and a
request body refused as it streams past its limit (issue 20, defect 5).

In-process tests call the ASGI app (Starlette's TestClient, or the app itself with a
hand-made ``receive`` where the test must see how much of a body was read); the body
limit is also checked against a real ``justpipe dashboard`` process (uvicorn) over a
socket, with its memory read from /proc.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from extras import require

require("click", "cli")
require("starlette", "dashboard")
require("jinja2", "dashboard")
require("httpx", "dashboard")

from starlette.testclient import TestClient  # noqa: E402

from justpipe.cli.registry import PipelineRegistry  # noqa: E402
from justpipe.dashboard.security import CONTENT_SECURITY_POLICY  # noqa: E402
from justpipe.dashboard.server import MAX_FORM_BYTES, create_app  # noqa: E402
from status_fixtures import ORIGIN, cli, make_jobs  # noqa: E402
from test_dashboard_cli import serve  # noqa: E402

pytestmark = pytest.mark.backend_agnostic  # the dashboard never touches justpipe._core

CHUNK = 64 * 1024
BIG_BODY = 60 * 1024 * 1024


def assert_secure(response: Any) -> None:
    assert response.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, (
        response.status_code,
        dict(response.headers),
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
    make_jobs()
    return root


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    app = create_app(PipelineRegistry(root), poll_interval=0.01)
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as test_client:
        yield test_client


def pipeline_hash(client: TestClient) -> str:
    return str(client.get("/api/pipelines").json()[0]["hash"])


# -- tokens that are not ASCII ---------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"authorization": "Bearer sécret".encode()}, ""),
        ({}, "?token=s%C3%A9cret"),
        ({"cookie": "justpipe_dashboard_token=sécret".encode()}, ""),
    ],
)
def test_a_non_ascii_access_token_is_refused_not_a_500(
    root: Path, headers: dict[str, Any], query: str
) -> None:
    """Before: hmac.compare_digest raised TypeError before authentication (HTTP 500)."""
    app = create_app(PipelineRegistry(root), token="s3cret", allowed_hosts=["dash.example"])
    with TestClient(app, base_url="http://dash.example", raise_server_exceptions=False) as c:
        response = c.get("/api/health" + query, headers=headers)
        assert response.status_code == 401
        assert_secure(response)


def test_a_non_ascii_csrf_token_is_refused_not_a_500(client: TestClient) -> None:
    url = f"/api/pipelines/{pipeline_hash(client)}/cleanup?dry_run=false&keep=0"
    response = client.post(url, headers={"origin": ORIGIN, "x-csrf-token": "é".encode()})
    assert response.status_code == 403
    assert_secure(response)
    form = client.post(
        f"/pipelines/{pipeline_hash(client)}/cleanup",
        content="confirm=yes&keep=0&csrf_token=%C3%A9",
        headers={"origin": ORIGIN, "content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 403
    assert_secure(form)


# -- numbers out of range ----------------------------------------------------------------


@pytest.mark.parametrize("days", ["99999999999", "1e23", "-1", "10" * 40])
def test_cleanup_with_an_absurd_age_is_a_400(client: TestClient, days: str) -> None:
    """Before: older_than_days=99999999999 overflowed timedelta (HTTP 500)."""
    response = client.post(f"/api/pipelines/{pipeline_hash(client)}/cleanup?older_than_days={days}")
    assert response.status_code == 400, response.text
    assert "older_than_days" in response.json()["error"]
    assert_secure(response)


def test_the_cli_cleanup_with_an_absurd_age_finds_nothing_that_old(root: Path) -> None:
    output = cli("cleanup", "--older-than", "99999999999", "--keep", "0", "--dry-run")
    assert output.startswith("No runs to clean up")


@pytest.mark.parametrize("after", ["1e23", "100000000000000000000000", "-5", "x"])
def test_a_stream_after_a_seq_no_store_can_hold_is_a_400(client: TestClient, after: str) -> None:
    run_id = client.get(f"/api/pipelines/{pipeline_hash(client)}/runs").json()[0]["run_id"]
    response = client.get(f"/api/runs/{run_id}/stream?after={after}")
    assert response.status_code == 400, response.text
    assert_secure(response)
    header = client.get(f"/api/runs/{run_id}/stream", headers={"last-event-id": after})
    assert header.status_code == 400
    assert_secure(header)


# -- security headers on every response --------------------------------------------------


def test_an_unexpected_error_is_a_500_with_the_security_headers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: Starlette's own 500 response, outside the middleware, carried none."""

    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.api, "health", broken)  # type: ignore[attr-defined]
    response = client.get("/api/health")
    assert response.status_code == 500
    assert "a bug" not in response.text
    assert_secure(response)


def test_every_kind_of_response_carries_the_security_headers(client: TestClient) -> None:
    pipeline = pipeline_hash(client)
    run_id = client.get(f"/api/pipelines/{pipeline}/runs").json()[0]["run_id"]
    responses = {
        200: client.get("/"),
        400: client.get(f"/api/pipelines/{pipeline}/runs?limit=0"),
        403: client.post(f"/api/pipelines/{pipeline}/cleanup?dry_run=false"),
        404: client.get("/api/runs/zzzz-none"),
        421: client.get("/api/health", headers={"host": "evil.example"}),
        413: client.post(
            f"/pipelines/{pipeline}/cleanup",
            content=b"x" * (MAX_FORM_BYTES + 1),
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
    }
    for status, response in responses.items():
        assert response.status_code == status
        assert_secure(response)
    assert_secure(client.get("/static/app.js"))
    with client.stream("GET", f"/api/runs/{run_id}/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert_secure(stream)


# -- the body limit, as the body streams ---------------------------------------------------


async def _post_in_chunks(
    app: Any, path: str, total: int, headers: list[tuple[bytes, bytes]]
) -> tuple[int, int]:
    """POST `total` bytes to the ASGI `app` in CHUNK pieces; (status, bytes it read)."""
    read = 0
    status = 0
    responded = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal read
        if responded.is_set() or read >= total:
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}
        size = min(CHUNK, total - read)
        read += size
        return {"type": "http.request", "body": b"x" * size, "more_body": read < total}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            responded.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8741"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8741),
    }
    await app(scope, receive, send)
    return status, read


def test_a_big_form_is_refused_as_it_streams_not_after_reading_it(root: Path) -> None:
    """Before: the whole body was read first (a 60 MB body: RSS 68 -> 186 MB)."""
    app = create_app(PipelineRegistry(root))
    path = "/pipelines/0000000000000000/cleanup"
    form = [(b"content-type", b"application/x-www-form-urlencoded")]
    status, read = asyncio.run(_post_in_chunks(app, path, BIG_BODY, form))
    assert status == 413
    assert read <= MAX_FORM_BYTES + CHUNK  # it stopped at the first chunk past the limit
    declared = [*form, (b"content-length", str(BIG_BODY).encode())]
    status, read = asyncio.run(_post_in_chunks(app, path, BIG_BODY, declared))
    assert (status, read) == (413, 0)  # refused on the declared length, nothing read


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def post_chunked(url: str, path: str, total: int) -> tuple[int, str]:
    """Send a chunked POST of `total` bytes until the server answers; (bytes sent, status line)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
        sent = 0
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += CHUNK
        else:
            sock.sendall(b"0\r\n\r\n")
        deadline = time.monotonic() + 10
        answer = b""
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return sent, answer.split(b"\r\n", 1)[0].decode("latin-1")


def test_a_real_server_refuses_a_60_mb_form_early_without_growing(root: Path) -> None:
    """Measured before the fix: all 60 MiB sent before the answer, peak RSS 38 -> 158 MiB;
    after: answered once ~3 MiB were in flight (socket buffers), peak RSS 38 -> 39 MiB."""
    with serve(root) as served:
        before = _peak_rss_kib(served.process.pid)
        sent, status_line = post_chunked(
            served.url, "/pipelines/0000000000000000/cleanup", BIG_BODY
        )
        after = _peak_rss_kib(served.process.pid)
    assert " 413 " in status_line, status_line
    assert sent < BIG_BODY // 4, sent  # the answer came long before the body was sent
    assert after - before < 20 * 1024, (before, after)


# -- every response of a real server ------------------------------------------------------


def _request(url: str, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    """One request to the served dashboard; (status, headers). A stream is not read."""
    import http.client

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers
    finally:
        connection.close()


def test_a_real_server_sends_the_security_headers_on_every_response(root: Path) -> None:
    """Every route and method of a `justpipe dashboard` process (uvicorn): pages, the
    API, static files, streams, HEAD, 404 for unknown paths, 405 for other methods, 401
    without the token."""
    registry = PipelineRegistry(root)
    try:
        (item, *_) = registry.list_all_runs()
    finally:
        registry.close()
    run_id, pipeline = item.run.run_id, item.pipeline_hash
    gets = [
        "/",
        f"/pipelines/{pipeline}",
        f"/runs/{run_id}",
        f"/compare?run1={run_id}&run2={run_id}",
        "/search?q=jo",
        "/static/app.js",
        "/static/dashboard.css",
        "/api/health",
        "/api/pipelines",
        f"/api/pipelines/{pipeline}",
        f"/api/pipelines/{pipeline}/runs",
        f"/api/runs/{run_id}",
        f"/api/runs/{run_id}/events",
        f"/api/runs/{run_id}/timeline",
        f"/api/runs/{run_id}/export",
        f"/api/compare?run1={run_id}&run2={run_id}",
        f"/api/stats/{pipeline}",
        "/api/runs/search?q=jo",
        f"/api/runs/{run_id}/stream",
        "/api/stream/runs",
    ]
    expected: list[tuple[str, str, int]] = [("GET", path, 200) for path in gets]
    expected += [("HEAD", path, 200) for path in gets if "stream" not in path]
    expected += [(method, "/api/health", 405) for method in ("POST", "PUT", "DELETE", "PATCH")]
    expected += [("OPTIONS", "/", 405), ("POST", "/static/app.js", 405)]
    expected += [("GET", path, 404) for path in ("/nope", "/api/nope", "/static/nope.js")]
    expected += [("HEAD", "/nope", 404), ("GET", "/runs/zzzz-none", 404)]
    expected += [("GET", f"/api/stats/{pipeline}?days=0", 400)]
    with serve(root, "--token", "s3cret") as served:
        for method, path, status in expected:
            answered, headers = _request(served.url, method, path, token="s3cret")
            assert answered == status, (method, path, answered)
            assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, (method, path)
            assert headers["x-frame-options"] == "DENY", (method, path)
        answered, headers = _request(served.url, "GET", "/api/health")
        assert answered == 401
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
