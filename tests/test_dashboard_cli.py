"""``justpipe dashboard``: a real uvicorn process, its URL, its guards.

`serve()` starts ``python -m justpipe.cli.main dashboard --port 0 --no-open`` (any free
loopback port), waits for the line announcing the URL and yields it; the browser
tests (test_dashboard_e2e.py) use it too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import justpipe
from extras import require

pytestmark = pytest.mark.backend_agnostic

STARTUP_LINES = 50


def server_environment(root: Path) -> dict[str, str]:
    """The environment of a dashboard process: this test run's justpipe, store `root`."""
    env = {**os.environ, "JUSTPIPE_STORAGE_PATH": str(root), "PYTHONUNBUFFERED": "1"}
    # the justpipe these tests import (the installed build under make test, else src/)
    package_root = str(Path(justpipe.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    preamble: str
    """Everything printed (stdout and stderr) up to and including the URL line."""


@contextmanager
def serve(root: Path, *args: str) -> Iterator[Served]:
    """Run the dashboard on `root` until the block ends; yield its URL and output."""
    env = server_environment(root)
    command = [sys.executable, "-c", "from justpipe.cli.main import main; main()"]
    process = subprocess.Popen(
        [*command, "dashboard", "--port", "0", "--no-open", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = ""
        seen: list[str] = []
        assert process.stdout is not None
        for _ in range(STARTUP_LINES):
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].strip()
                break
        assert url, "the dashboard did not announce its URL:\n" + "".join(seen)
        yield Served(url, process, "".join(seen))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serves_on_loopback_and_prints_the_url(tmp_path: Path) -> None:
    require("uvicorn", "dashboard")
    httpx = require("httpx", "dashboard")
    with serve(tmp_path) as served:
        assert served.url.startswith("http://127.0.0.1:")
        assert "Warning" not in served.preamble
        response = httpx.get(served.url + "api/health", timeout=10)
        assert response.status_code == 200
        assert response.json()["total_pipelines"] == 0
        page = httpx.get(served.url, timeout=10)
        assert "No persisted runs yet" in page.text


def test_a_non_loopback_host_warns_and_requires_the_token(tmp_path: Path) -> None:
    require("uvicorn", "dashboard")
    httpx = require("httpx", "dashboard")
    with serve(tmp_path, "--host", "0.0.0.0") as served:
        assert "Warning: serving on 0.0.0.0" in served.preamble
        assert "?token=" in served.url
        base, token = served.url.split("?token=", 1)
        base = base.replace("localhost", "127.0.0.1")
        assert httpx.get(base + "api/health", timeout=10).status_code == 401
        authorised = httpx.get(
            base + "api/health", headers={"authorization": f"Bearer {token}"}, timeout=10
        )
        assert authorised.status_code == 200


def test_a_given_token_is_used(tmp_path: Path) -> None:
    require("uvicorn", "dashboard")
    httpx = require("httpx", "dashboard")
    with serve(tmp_path, "--host", "0.0.0.0", "--token", "t0k") as served:
        assert served.url.endswith("?token=t0k")
        base = served.url.split("?", 1)[0].replace("localhost", "127.0.0.1")
        assert httpx.get(base + "api/health?token=t0k", timeout=10).status_code == 200


def test_a_port_in_use_fails_with_a_message(tmp_path: Path) -> None:
    require("uvicorn", "dashboard")
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = server_environment(tmp_path)
        result = subprocess.run(
            [sys.executable, "-c", "from justpipe.cli.main import main; main()",
             "dashboard", "--port", str(port), "--no-open"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"could not listen on 127.0.0.1:{port}" in result.stderr
