"""A durable run's segments, as the run store, the CLI and the dashboard show them.

Real durable pipelines checkpoint into a real SQLite run store under a temporary
``JUSTPIPE_STORAGE_PATH``: a review pipeline that suspends in ``review`` and finishes
when resumed, and the same pipeline killed (SIGKILL, in a child process running this
file) in the middle of a segment. Then `justpipe.storage.segments` must cut the stored
events into the right segments, and ``justpipe list`` / ``show`` / ``export`` and the
dashboard must show ``suspended``, ``interrupted`` and the segments table.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve()
ORIGIN = "http://127.0.0.1:8741"
REASON = "needs a human"


@dataclass
class Doc:
    done: list[str] = field(default_factory=list)
    answer: Any = None


def build() -> Any:
    from justpipe import Pipe, Suspend
    from justpipe.durable import resume_value

    pipe: Any = Pipe(Doc, name="segments-review", durable=True)

    @pipe.step(to="review")
    async def draft(s: Doc) -> None:
        s.done.append("draft")

    @pipe.step(to="publish")
    async def review(s: Doc) -> Any:
        if os.environ.get("SEGMENTS_KILL_IN_REVIEW"):
            os.kill(os.getpid(), signal.SIGKILL)
        s.done.append("review")
        return Suspend(REASON)

    @pipe.step
    async def publish(s: Doc) -> None:
        s.answer = resume_value()
        s.done.append("publish")

    return pipe


async def _drain(stream: Any) -> list[Any]:
    return [event async for event in stream]


def run_until_suspended(pipe: Any) -> tuple[str, list[Any]]:
    events = asyncio.run(_drain(pipe.run(Doc())))
    return events[0].run_id, events


def resume(pipe: Any, run_id: str, value: Any = "yes") -> list[Any]:
    return asyncio.run(_drain(pipe.resume(run_id, value=value)))


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
    return root


@pytest.fixture
def plain_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from justpipe.cli import formatting

    monkeypatch.setattr(formatting, "HAS_RICH", False)


def db_file(root: Path) -> Path:
    files = list(root.glob("*/runs.db"))
    assert len(files) == 1, files
    return files[0]


def stored(root: Path, run_id: str) -> tuple[list[Any], dict[str, Any]]:
    """The run's stored events (as the segments function reads them) and durable runs."""
    from justpipe.storage.segments import event_dicts, read_durable_runs
    from justpipe.storage.sqlite import SQLiteBackend

    with SQLiteBackend(db_file(root)) as backend:
        events = event_dicts(backend.get_events(run_id))
    return events, read_durable_runs(db_file(root))


def segments(root: Path, run_id: str) -> list[Any]:
    from justpipe.storage.segments import segments_from_events

    events, durable = stored(root, run_id)
    return segments_from_events(events, durable.get(run_id))


def cli(*args: str) -> str:
    from click.testing import CliRunner

    from justpipe.cli.main import cli as group

    result = CliRunner().invoke(group, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def list_status(output: str, run_id: str) -> str:
    """The Status column of the run's row in the plain ``justpipe list`` table."""
    row = next(line for line in output.splitlines() if line.startswith(run_id[:12]))
    return row.split()[2]


def segment_lines(output: str) -> list[list[str]]:
    """The rows of ``justpipe show``'s Segments table, split on whitespace."""
    lines = output.splitlines()
    start = lines.index("Segments:")
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


# --------------------------------------------------------------------------- the read side


def test_a_suspended_then_resumed_run_has_two_contiguous_segments(store: Path) -> None:
    pipe = build()
    run_id, first = run_until_suspended(pipe)
    assert first[-1].type.value == "finish"
    cut = segments(store, run_id)
    assert len(cut) == 1
    assert cut[0].ended == "suspended"
    assert cut[0].suspended_steps == ("review",) and cut[0].reasons == (REASON,)
    _, durable = stored(store, run_id)
    assert durable[run_id].status == "suspended" and durable[run_id].segment == 1
    assert durable[run_id].suspended == (("review", REASON),)

    second = resume(pipe, run_id)
    cut = segments(store, run_id)
    assert [s.number for s in cut] == [1, 2]
    one, two = cut
    assert (one.first_seq, one.last_seq) == (first[0].seq, first[-1].seq) == (1, len(first))
    assert (two.first_seq, two.last_seq) == (second[0].seq, second[-1].seq)
    assert two.first_seq == one.last_seq + 1, "seq goes on across the segments"
    assert one.events == len(first) and two.events == len(second)
    assert (one.ended, one.end_status) == ("suspended", "success")
    assert one.describe_end() == f"suspended (review: {REASON})"
    assert (two.ended, two.end_status, two.describe_end()) == ("finished", "success", "finished")
    assert one.started <= one.finished_at <= two.started <= two.finished_at
    _, durable = stored(store, run_id)
    assert durable[run_id].status == "finished" and durable[run_id].segment == 2


def test_plain_runs_and_files_without_the_durable_tables_have_no_durable_run(
    store: Path, tmp_path: Path
) -> None:
    from justpipe import Pipe
    from justpipe.storage.segments import read_durable_runs
    from justpipe.storage.sqlite import SQLiteBackend

    plain: Any = Pipe(Doc, name="segments-plain", persist=True)

    @plain.step
    async def only(s: Doc) -> None:
        s.done.append("only")

    events = asyncio.run(_drain(plain.run(Doc())))
    assert events[-1].type.value == "finish"
    assert read_durable_runs(db_file(store)) == {}  # no durable_checkpoints table
    with sqlite3.connect(db_file(store)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "durable_checkpoints" not in tables, "reading must not create the tables"
    old = tmp_path / "old.db"
    SQLiteBackend(old).close()
    assert read_durable_runs(old) == {}
    assert read_durable_runs(tmp_path / "missing.db") == {}


def test_sub_pipeline_starts_do_not_begin_segments() -> None:
    from justpipe.storage.segments import segments_from_events

    def ev(seq: int, kind: str, **extra: Any) -> dict[str, Any]:
        return {"type": kind, "seq": seq, "timestamp": float(seq), "stage": "system", **extra}

    events = [
        ev(1, "start"),
        ev(2, "start", parent_run_id="child", stage="sub:inner"),
        ev(3, "finish", parent_run_id="child", payload={"status": "success"}),
        ev(4, "finish", payload={"status": "failed"}),
    ]
    (only,) = segments_from_events(events)
    assert (only.first_seq, only.last_seq, only.events) == (1, 4, 4)
    assert (only.ended, only.end_status, only.describe_end()) == ("finished", "failed", "failed")


# --------------------------------------------------------------------------- the CLI


@pytest.mark.usefixtures("plain_cli")
def test_the_cli_shows_suspended_then_the_segments_after_resume(store: Path) -> None:
    pipe = build()
    run_id, first = run_until_suspended(pipe)

    assert list_status(cli("list"), run_id) == "suspended"
    shown = cli("show", run_id[:8])
    assert "Status: suspended\n" in shown
    assert "Durable: segment 1, checkpoint suspended" in shown
    rows = segment_lines(shown)
    assert len(rows) == 1
    assert rows[0][0] == "1" and rows[0][4] == f"1-{len(first)}"
    assert " ".join(rows[0][6:]) == f"suspended (review: {REASON})"
    assert run_id[:12] not in cli("list", "--status", "success")
    assert list_status(cli("list", "--status", "suspended"), run_id) == "suspended"
    assert run_id[:12] not in cli("list", "--status", "interrupted")

    second = resume(pipe, run_id)
    assert run_id[:12] not in cli("list", "--status", "suspended")
    assert list_status(cli("list"), run_id) == "success"
    shown = cli("show", run_id)
    assert "Status: success\n" in shown
    rows = segment_lines(shown)
    assert [row[0] for row in rows] == ["1", "2"]
    assert rows[1][4] == f"{second[0].seq}-{second[-1].seq}"
    assert rows[1][5] == str(len(second)) and rows[1][6:] == ["finished"]
    assert f"Events: {len(first) + len(second)} total" in shown


@pytest.mark.usefixtures("plain_cli")
def test_export_of_a_durable_run_carries_its_segments(store: Path, tmp_path: Path) -> None:
    pipe = build()
    run_id, _ = run_until_suspended(pipe)
    resume(pipe, run_id)
    target = tmp_path / "run.json"
    out = cli("export", run_id[:8], "-o", str(target))
    assert "Status: success" in out
    document = json.loads(target.read_text())
    assert document["durable"]["status"] == "finished" and document["durable"]["segment"] == 2
    assert [s["ended"] for s in document["segments"]] == ["suspended", "finished"]
    assert document["segments"][0]["reasons"] == [REASON]
    assert document["segments"][1]["first_seq"] == document["segments"][0]["last_seq"] + 1


@pytest.mark.usefixtures("plain_cli")
def test_a_run_in_progress_shows_running(store: Path) -> None:
    from justpipe import Pipe

    pipe: Any = Pipe(Doc, name="segments-live", durable=True)
    seen: dict[str, str] = {}

    @pipe.step(to="second")
    async def first(s: Doc) -> None:
        s.done.append("first")

    @pipe.step
    async def second(s: Doc) -> None:
        run_id = seen["run_id"]
        seen["list"] = list_status(cli("list"), run_id)
        seen["show"] = cli("show", run_id)

    async def go() -> None:
        async for event in pipe.run(Doc()):
            seen.setdefault("run_id", event.run_id)

    asyncio.run(go())
    assert seen["list"] == "running"
    assert "Status: running\n" in seen["show"]
    assert segment_lines(seen["show"])[0][6:] == ["running"]


def child_env(root: Path, core_backend: str) -> dict[str, str]:
    import justpipe

    env = dict(os.environ)
    env["JUSTPIPE_STORAGE_PATH"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(justpipe.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    )
    env.pop("SEGMENTS_KILL_IN_REVIEW", None)
    if core_backend == "python":
        env["JUSTPIPE_NO_EXTENSIONS"] = "1"
    return env


def launch(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE), *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.usefixtures("plain_cli")
def test_a_killed_run_shows_interrupted_then_resumes_in_another_process(
    store: Path, core_backend: str
) -> None:
    env = child_env(store, core_backend)
    killed = launch(env, "run", SEGMENTS_KILL_IN_REVIEW="1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = killed.stdout.split()[1]

    assert list_status(cli("list"), run_id) == "interrupted"
    assert list_status(cli("list", "--status", "interrupted"), run_id) == "interrupted"
    shown = cli("show", run_id)
    assert "Status: interrupted\n" in shown
    assert "resume it with pipe.resume(run_id)" in shown
    (row,) = segment_lines(shown)
    assert row[0] == "1" and row[6:] == ["interrupted"]
    (cut,) = segments(store, run_id)
    assert cut.ended == "interrupted" and cut.first_seq == 1

    # resumed in a fresh process: `review` runs again (at-least-once) and suspends
    resumed = launch(env, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert list_status(cli("list"), run_id) == "suspended"
    one, two = segments(store, run_id)
    assert one.ended == "interrupted" and two.ended == "suspended"
    assert two.first_seq == one.last_seq + 1
    assert two.reasons == (REASON,)

    # and finished here
    third = resume(build(), run_id, "ok")
    one, two, three = segments(store, run_id)
    assert three.ended == "finished" and three.first_seq == two.last_seq + 1
    assert three.last_seq == third[-1].seq
    rows = segment_lines(cli("show", run_id))
    assert [row[6] for row in rows] == ["interrupted", "suspended", "finished"]
    assert list_status(cli("list"), run_id) == "success"


# --------------------------------------------------------------------------- the dashboard


def test_the_dashboard_shows_the_segments_and_the_durable_status(store: Path) -> None:
    from extras import require

    require("starlette", "dashboard")
    require("jinja2", "dashboard")
    require("httpx", "dashboard")
    from starlette.testclient import TestClient

    from justpipe.cli.registry import PipelineRegistry
    from justpipe.dashboard.server import create_app

    pipe = build()
    done_id, _ = run_until_suspended(pipe)
    resume(pipe, done_id)
    waiting_id, _ = run_until_suspended(pipe)

    registry = PipelineRegistry(store)
    try:
        with TestClient(create_app(registry), base_url=ORIGIN) as client:
            (pipeline,) = client.get("/api/pipelines").json()
            # the suspended run is not (yet) a success, nor a finished run
            assert (pipeline["total_runs"], pipeline["success_count"]) == (2, 1)
            assert pipeline["success_rate"] == 100.0
            assert pipeline["last_run_status"] == "suspended"
            stats = client.get(f"/api/stats/{pipeline['hash']}").json()
            assert stats["status_counts"] == {"success": 1, "suspended": 1}
            runs = client.get(f"/api/pipelines/{pipeline['hash']}/runs").json()
            statuses = {row["run_id"]: row["status"] for row in runs}
            assert statuses == {done_id: "success", waiting_id: "suspended"}
            only = client.get(f"/api/pipelines/{pipeline['hash']}/runs?status=suspended").json()
            assert [row["run_id"] for row in only] == [waiting_id]

            page = client.get(f"/pipelines/{pipeline['hash']}").text
            assert 'class="badge s-suspended">suspended<' in page

            detail = client.get(f"/api/runs/{done_id}").json()
            assert detail["durable"]["status"] == "finished"
            assert [s["ended"] for s in detail["segments"]] == ["suspended", "finished"]
            assert detail["segments"][0]["description"] == f"suspended (review: {REASON})"

            html = client.get(f"/runs/{done_id}").text
            assert '<h2 id="segments-h">Segments</h2>' in html
            table = html[
                html.index('id="segments-h"') : html.index(
                    "</table>", html.index('id="segments-h"')
                )
            ]
            assert table.count("<tr class=") == 2
            assert 'class="badge s-suspended">suspended<' in table
            assert f"review: {REASON}" in table
            assert 'class="badge s-finished">finished<' in table
            assert '#e8">8</a>' in table

            waiting = client.get(f"/runs/{waiting_id}").text
            assert 'id="run-status" class="badge big s-suspended"' in waiting
    finally:
        registry.close()


# --------------------------------------------------------------------------- the child


def child(action: str, run_id: str | None) -> int:
    pipe = build()

    async def go() -> None:
        stream = pipe.run(Doc()) if action == "run" else pipe.resume(run_id, value="child")
        async for event in stream:
            if event.type.value == "start":
                print("RUN", event.run_id, flush=True)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    # run through the module's own name, so the checkpointed state's class is
    # `test_durable_segments:Doc` in every process (not `__main__:Doc`)
    import test_durable_segments

    sys.exit(test_durable_segments.child(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
