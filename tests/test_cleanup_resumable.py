"""Cleanup keeps what can still be resumed (issue 19), in the CLI and the dashboard.

Suspended and interrupted durable runs are deleted only when the user asks for them
(``--include-resumable``, ``include_resumable=true``); previews label every run with
its real status; a run kept so can be resumed and keeps all its segments; a run deleted
on request takes its checkpoint with it (no resume into half a history).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from extras import require

require("click", "cli")
require("starlette", "dashboard")
require("jinja2", "dashboard")
require("httpx", "dashboard")

from justpipe.cli import formatting  # noqa: E402
from justpipe.durable import UnknownRunError  # noqa: E402
from status_fixtures import (  # noqa: E402
    ORIGIN,
    cli,
    client_for,
    job_pipe,
    make_jobs,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
    monkeypatch.setattr(formatting, "HAS_RICH", False)
    return root


@pytest.fixture
def jobs(store: Path) -> dict[str, list[str]]:
    return make_jobs()


def stored_rows(root: Path) -> dict[str, int]:
    """Run id -> number of stored events, and the durable checkpoints' run ids."""
    (db,) = root.glob("*/runs.db")
    with sqlite3.connect(db) as conn:
        runs = dict(
            conn.execute(
                "SELECT r.run_id, COUNT(e.id) FROM runs r"
                " LEFT JOIN events e USING (run_id) GROUP BY r.run_id"
            )
        )
    return runs


def checkpoints(root: Path) -> set[str]:
    (db,) = root.glob("*/runs.db")
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT run_id FROM durable_checkpoints")}


def resume(run_id: str) -> list[Any]:
    async def go() -> list[Any]:
        return [event async for event in job_pipe().resume(run_id, value="yes")]

    return asyncio.run(go())


def test_cli_cleanup_keeps_suspended_and_interrupted_runs(
    store: Path, jobs: dict[str, list[str]]
) -> None:
    resumable = {*jobs["suspend"], *jobs["stop"]}
    preview = cli("cleanup", "--keep", "0", "--dry-run")
    assert "Found 2 run(s) to clean up" in preview
    assert "success            1 run(s)" in preview and "failed             1 run(s)" in preview
    assert "Kept: 1 interrupted, 2 suspended (resumable" in preview
    assert not any(run_id[:12] in preview for run_id in resumable)
    cli("cleanup", "--keep", "0", "--yes")
    assert set(stored_rows(store)) == resumable
    # what was kept goes on, with every segment stored (before: only the second)
    suspended = jobs["suspend"][0]
    before = stored_rows(store)[suspended]
    events = resume(suspended)
    assert events[-1].payload.status.value == "success"
    assert stored_rows(store)[suspended] == before + len(events)
    shown = cli("show", suspended)
    assert "Status: success" in shown and "suspended (first: waiting for approval)" in shown


def test_cli_cleanup_deletes_resumable_runs_only_when_asked(
    store: Path, jobs: dict[str, list[str]]
) -> None:
    refused = cli("cleanup", "--status", "suspended", "--yes", code=1)
    assert "--include-resumable" in refused
    assert "running runs are never deleted" in cli("cleanup", "--status", "running", code=1)
    preview = cli("cleanup", "--keep", "0", "--include-resumable", "--dry-run")
    assert "suspended          2 run(s)" in preview and "interrupted        1 run(s)" in preview
    assert "success            2" not in preview  # suspended runs are not labelled success
    cli("cleanup", "--keep", "0", "--status", "suspended", "--include-resumable", "--yes")
    remaining = set(stored_rows(store))
    assert remaining.isdisjoint(jobs["suspend"]) and jobs["stop"][0] in remaining
    # the checkpoint went with the run: no resume into half a history
    assert checkpoints(store).isdisjoint(jobs["suspend"])
    with pytest.raises(UnknownRunError):
        resume(jobs["suspend"][0])


def test_dashboard_cleanup_keeps_resumable_runs_unless_asked(
    store: Path, jobs: dict[str, list[str]]
) -> None:
    resumable = {*jobs["suspend"], *jobs["stop"]}
    with client_for(store) as client:
        pipeline = client.get("/api/pipelines").json()[0]["hash"]
        url = f"/api/pipelines/{pipeline}/cleanup?keep=0"
        preview = client.post(url).json()
        assert preview["count"] == 2 and preview["kept_resumable"] == 3
        assert {run["status"] for run in preview["runs"]} == {"success", "failed"}
        token = client.app.state.csrf_token  # type: ignore[attr-defined]
        headers = {"origin": ORIGIN, "x-csrf-token": token}
        assert client.post(url + "&dry_run=false", headers=headers).json()["deleted"] == 2
        assert set(stored_rows(store)) == resumable
        refused = client.post(url + "&status=suspended&dry_run=false", headers=headers)
        assert refused.status_code == 400 and "include_resumable" in refused.json()["error"]
        every = client.post(url + "&include_resumable=true").json()
        assert {run["status"] for run in every["runs"]} == {"suspended", "interrupted"}
        done = client.post(url + "&include_resumable=true&dry_run=false", headers=headers)
        assert done.json()["deleted"] == 3
    assert stored_rows(store) == {} and checkpoints(store) == set()


def test_dashboard_cleanup_page_offers_and_passes_the_resumable_option(
    store: Path, jobs: dict[str, list[str]]
) -> None:
    with client_for(store) as client:
        pipeline = client.get("/api/pipelines").json()[0]["hash"]
        assert 'name="include_resumable"' in client.get(f"/pipelines/{pipeline}").text
        token = client.app.state.csrf_token  # type: ignore[attr-defined]
        form = {"csrf_token": token, "keep": "0"}
        preview = client.post(f"/pipelines/{pipeline}/cleanup", data=form).text
        assert "Kept: 3 resumable run(s)" in preview
        assert 'name="include_resumable" value="false"' in preview
        confirmed = {**form, "confirm": "yes", "include_resumable": "false"}
        done = client.post(
            f"/pipelines/{pipeline}/cleanup", data=confirmed, headers={"origin": ORIGIN}
        )
        assert "Deleted 2 run(s)" in done.text
    assert set(stored_rows(store)) == {*jobs["suspend"], *jobs["stop"]}
