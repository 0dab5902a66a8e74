"""One status model: the CLI, the dashboard pages, the JSON API and `stats` agree.

Real pipelines persist into a real SQLite run store under a temporary
``JUSTPIPE_STORAGE_PATH``; the CLI runs through click's runner, the dashboard through
Starlette's TestClient. Every status a run can have (running, suspended, interrupted,
success, failed) must read the same everywhere, and every success rate must be the one
rule of docs/statuses.md: successes among the runs that ended.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from extras import require

require("click", "cli")
require("starlette", "dashboard")
require("jinja2", "dashboard")
require("httpx", "dashboard")

from justpipe import Pipe  # noqa: E402
from justpipe.cli import formatting  # noqa: E402
from status_fixtures import (  # noqa: E402
    STATUSES,
    cli,
    client_for,
    list_status,
    make_jobs,
    stored_root,
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


# -- a live persisted run --------------------------------------------------------------


def test_a_live_persisted_run_is_running_in_every_tool(store: Path) -> None:
    """Before: `list`/`show` said failed / "did not finish", `list -s running` found
    nothing, while the dashboard said running."""
    pipe: Pipe[Any, Any] = Pipe(name="live-plain", persist=True, flush_interval=1)
    seen: dict[str, Any] = {}

    @pipe.step
    async def look(state: dict[str, Any]) -> None:
        run_id = seen["run_id"]
        seen["list"] = list_status(cli("list"), run_id)
        seen["running"] = cli("list", "-s", "running")
        seen["failed"] = cli("list", "-s", "failed")
        seen["show"] = cli("show", run_id)
        seen["stats"] = cli("stats")
        with client_for(store) as client:
            seen["api"] = client.get(f"/api/runs/{run_id}").json()
            pipeline = seen["api"]["pipeline_hash"]
            seen["api_runs"] = client.get(f"/api/pipelines/{pipeline}/runs").json()
            seen["page"] = client.get(f"/runs/{run_id}").text

    async def go() -> None:
        async for event in pipe.run({}):
            seen.setdefault("run_id", event.run_id)

    asyncio.run(go())
    run_id = seen["run_id"]
    assert seen["list"] == "running"
    assert run_id[:12] in seen["running"]
    assert run_id[:12] not in seen["failed"]
    assert "Status: running\n" in seen["show"]
    assert "did not finish" not in seen["show"] and "Error" not in seen["show"]
    assert re.search(r"Running +1 \(100\.0%\)", seen["stats"]), seen["stats"]
    assert "Success Rate" not in seen["stats"]  # nothing has ended yet
    assert seen["api"]["status"] == "running" and seen["api"]["error_message"] is None
    assert [row["status"] for row in seen["api_runs"]] == ["running"]
    assert "s-running" in seen["page"]
    assert list_status(cli("list"), run_id) == "success"  # and once it ended


# -- durable runs: one status, one success rate ----------------------------------------


def test_every_tool_shows_the_same_status_for_each_run(jobs: dict[str, list[str]]) -> None:
    store = stored_root()
    expected = {
        **dict.fromkeys(jobs["suspend"], "suspended"),
        jobs["ok"][0]: "success",
        jobs["fail"][0]: "failed",
        jobs["stop"][0]: "interrupted",
    }
    listing = cli("list", "-n", "50")
    assert {run_id: list_status(listing, run_id) for run_id in expected} == expected
    with client_for(store) as client:
        pipeline = client.get("/api/pipelines").json()[0]["hash"]
        rows = client.get(f"/api/pipelines/{pipeline}/runs?limit=50").json()
        assert {row["run_id"]: row["status"] for row in rows} == expected
        for run_id, status in expected.items():
            assert client.get(f"/api/runs/{run_id}").json()["status"] == status
            assert f"Status: {status}\n" in cli("show", run_id)
            assert f"  Status: {status}\n" in cli("export", run_id, "-o", str(store / "x.json"))


def test_the_success_rate_is_successes_among_runs_that_ended_everywhere(
    jobs: dict[str, list[str]],
) -> None:
    """Before: CLI `stats` said 60% (suspended counted as success, interrupted as failed),
    the dashboard's stats 20% (over every run), its home 50%."""
    store = stored_root()
    stats = cli("stats")
    assert "Success Rate:      50.0% (1/2 that ended)" in stats
    assert re.search(r"Suspended +2 ", stats) and re.search(r"Interrupted +1 ", stats)
    assert re.search(r"jobs +\S+ +5 +\S+ \S+ +50\.0%", cli("pipelines")), cli("pipelines")
    with client_for(store) as client:
        (summary,) = client.get("/api/pipelines").json()
        detail = client.get(f"/api/pipelines/{summary['hash']}").json()
        api_stats = client.get(f"/api/stats/{summary['hash']}").json()
        page = client.get(f"/pipelines/{summary['hash']}").text
        home = client.get("/").text
    for body in (summary, detail, api_stats):
        assert (body["success_rate"], body["success_count"], body["ended_count"]) == (50.0, 1, 2)
    assert api_stats["status_counts"] == {
        "suspended": 2,
        "success": 1,
        "failed": 1,
        "interrupted": 1,
    }
    assert "50.0%" in home and "50.0%" in page


def test_the_pipeline_page_filters_on_suspended_and_interrupted(
    jobs: dict[str, list[str]],
) -> None:
    store = stored_root()
    with client_for(store) as client:
        pipeline = client.get("/api/pipelines").json()[0]["hash"]
        page = client.get(f"/pipelines/{pipeline}").text
        assert "?status=suspended&amp;" in page and "?status=interrupted&amp;" in page
        suspended = client.get(f"/pipelines/{pipeline}?status=suspended").text
        interrupted = client.get(f"/pipelines/{pipeline}?status=interrupted").text
    assert all(run_id[:12] in suspended for run_id in jobs["suspend"])
    assert jobs["stop"][0][:12] not in suspended
    assert jobs["stop"][0][:12] in interrupted
    assert jobs["ok"][0][:12] not in interrupted


@pytest.mark.parametrize("status", STATUSES)
def test_list_takes_every_status(jobs: dict[str, list[str]], status: str) -> None:
    output = cli("list", "-s", status)
    wanted = {
        "suspended": jobs["suspend"],
        "success": jobs["ok"],
        "failed": jobs["fail"],
        "interrupted": jobs["stop"],
    }.get(status, [])
    if not wanted:
        assert output == "No runs found\n"
    for run_id in wanted:
        assert list_status(output, run_id) == status
