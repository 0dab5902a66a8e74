"""A store written by someone else, or by an attacker, is read defensively (issue 20).

Beside a real persisted pipeline, the store holds rows and files no justpipe writes:
run rows with a NULL or binary run id, a negative duration, terminal escape sequences
and rich markup in names and messages, run meta nested too deeply to parse; events whose
JSON holds numbers no float can hold (``1e400``), nests 900 deep or is not an object; a
foreign ``runs.db`` without constraints (NULL and text ``seq``, NULL and binary
``data``); a pipeline named with rich markup; a ``pipeline.json`` that is a FIFO. Every
CLI command and dashboard page must still answer (never a traceback or a 500, never a
hang), list the good runs, and never pass a store's control characters to the terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from extras import require

require("click", "cli")
require("starlette", "dashboard")
require("jinja2", "dashboard")
require("httpx", "dashboard")

from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from justpipe.cli import formatting  # noqa: E402
from justpipe.cli.main import cli as cli_group  # noqa: E402
from justpipe.cli.registry import PipelineRegistry  # noqa: E402
from justpipe.dashboard.server import create_app  # noqa: E402
from status_fixtures import ORIGIN  # noqa: E402
from test_store_reading import persist_runs, run_id_of  # noqa: E402

ESCAPES = "\x1b[2J\x1b]0;pwned\x07"
"""Clear the screen and set the terminal's title: what a store must not do to a terminal."""
MARKUP = "[/bold][link=http://x]"
"""Rich markup that does not parse: it made rich raise MarkupError."""
DEEP = "[" * 100_000 + "]" * 100_000
FOREIGN = "f" * 16
MARKED = "e" * 16


def hostile_event(run_id: str, seq: int, data: str) -> tuple[str, int, float, str]:
    return (run_id, seq, 1.7e9 + seq, data)


def add_hostile_rows(db: Path, good_run: str) -> None:
    """Odd run rows and events in a real store (its own schema, its NOT NULLs kept)."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        insert = (
            "INSERT INTO runs (run_id, start_time, end_time, duration_s, status,"
            " error_message, error_step, run_meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        conn.execute(insert, (None, 1.7e9, None, None, "success", None, None, None))
        conn.execute(insert, (b"\xff\xfe", 1.7e9, None, None, "success", None, None, None))
        conn.execute(
            insert, (run_id_of("negative"), 1.7e9, 1.7e9 - 5, -5.0, "success", None, None, None)
        )
        conn.execute(
            insert,
            (
                run_id_of("escapes"),
                1.7e9,
                1.7e9 + 1,
                1.0,
                "failed",
                f"{MARKUP} boom {ESCAPES}",
                f"{MARKUP}step{ESCAPES}",
                json.dumps({f"k{MARKUP}": ESCAPES}),
            ),
        )
        conn.execute(
            insert, (run_id_of("deepmeta"), 1.7e9, 1.7e9 + 1, 1.0, "success", None, None, DEEP)
        )
        events = [
            '{"type": "step_start", "stage": "huge", "payload": {"x": 1e400}, "timestamp": 1e400}',
            json.dumps(
                {"type": "step_end", "stage": "deep", "payload": json.loads("[" * 900 + "]" * 900)}
            ),
            json.dumps({"type": "step_error", "stage": 5, "payload": ESCAPES, "invocation_id": 7}),
            json.dumps(["not", "an", "object"]),
        ]
        conn.executemany(
            "INSERT INTO events (run_id, seq, timestamp, data) VALUES (?, ?, ?, ?)",
            [hostile_event(good_run, 1000 + n, data) for n, data in enumerate(events)],
        )


def add_foreign_store(root: Path) -> None:
    """A runs.db with justpipe's table names and none of its constraints."""
    directory = root / FOREIGN
    directory.mkdir(parents=True)
    (directory / "pipeline.json").write_text(json.dumps({"name": "foreign", "nodes": "x"}))
    with contextlib.closing(sqlite3.connect(directory / "runs.db")) as conn, conn:
        conn.executescript(
            """
            CREATE TABLE runs (run_id, start_time, end_time, duration_s, status,
                error_message, error_step, run_meta);
            CREATE TABLE events (id INTEGER PRIMARY KEY, run_id, seq, timestamp, data,
                event_type, step_name);
            INSERT INTO runs VALUES ('foreign-1', 1.7e9, 1.7e9 + 1, 1, 'success',
                NULL, NULL, NULL);
            INSERT INTO runs VALUES ('foreign-2', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
            INSERT INTO events (run_id, seq, timestamp, data, event_type, step_name)
                VALUES ('foreign-1', 1, 1.7e9, '{not json', 'step_start', 'a'),
                       ('foreign-1', 'x', 'y', NULL, 'step_end', NULL),
                       ('foreign-1', NULL, NULL, x'ff00', 'finish', 7),
                       ('foreign-1', 2.5, 1.7e9, '{"type": "step_end"}', 'step_end', 'a'),
                       ('foreign-1', 3, 1.7e9, NULL, 'step_end', 'a'),
                       ('foreign-1', 4, 1.7e9, x'ff00', 'step_end', 'a');
            """
        )


def add_marked_pipeline(root: Path, source: Path) -> None:
    """A copy of a real store whose pipeline.json names it with markup and escapes."""
    directory = root / MARKED
    directory.mkdir()
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(directory / "runs.db")) as dst,
    ):
        src.backup(dst)
    (directory / "pipeline.json").write_text(json.dumps({"name": f"{MARKUP}evil{ESCAPES}"}))


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    root = tmp_path / "store"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
    db, good = persist_runs(root, "good")
    add_hostile_rows(db, good[0])
    add_foreign_store(root)
    add_marked_pipeline(root, db)
    return {"root": root, "good": good}


def invoke(*args: str) -> str:
    """Run a CLI command; it must end by itself (exit 0 or 1), never with a traceback."""
    result = CliRunner().invoke(cli_group, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        result.output,
        result.exception,
    )
    assert result.exit_code in (0, 1), (args, result.output)
    for control in ("\x1b", "\x07", "\x00"):
        assert control not in result.output, (args, result.output)
    return result.output


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_every_cli_command_reads_a_hostile_store(
    hostile: dict[str, Any], rich: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: MarkupError (list, pipelines), RecursionError (show, export of deep meta),
    TypeError (timeline, export of a NULL event), raw escape sequences (show, stats)."""
    monkeypatch.setattr(formatting, "HAS_RICH", rich)
    monkeypatch.setenv("COLUMNS", "200")
    listing = invoke("list", "-n", "100")
    for run_id in hostile["good"]:
        assert run_id[:12] in listing
    assert "foreign-1" in listing
    assert "evil" in invoke("pipelines")
    invoke("stats")
    invoke("cleanup", "--dry-run", "--keep", "0")
    runs = [*hostile["good"], "foreign-1", "foreign-2", *map(run_id_of, ("negative", "escapes"))]
    runs.append(run_id_of("deepmeta"))
    for run_id in runs:
        invoke("show", run_id)
        invoke("timeline", run_id)
        invoke("export", run_id, "-o", str(tmp_path / "export.json"))
        json.loads((tmp_path / "export.json").read_text())
    shown = invoke("show", run_id_of("escapes"))
    assert "\\x1b[2J" in shown  # shown escaped, not obeyed
    invoke("compare", hostile["good"][0], "foreign-1")
    invoke("compare", run_id_of("escapes"), hostile["good"][1])


def test_damaged_ids_and_negative_durations_read_as_damaged(hostile: dict[str, Any]) -> None:
    registry = PipelineRegistry(hostile["root"])
    try:
        runs = {item.run.run_id: item for item in registry.list_all_runs(limit=None)}
    finally:
        registry.close()
    assert "None" not in runs  # a NULL run id is not the text 'None'
    missing = runs[""]
    assert missing.status.value == "damaged" and "run_id" in (missing.run.damage or "")
    binary = next(item for run_id, item in runs.items() if run_id.startswith("\ufffd"))
    assert binary.status.value == "damaged" and "run_id" in (binary.run.damage or "")
    negative = runs[run_id_of("negative")]
    assert negative.status.value == "damaged" and "negative" in (negative.run.damage or "")


def dashboard_urls(good: list[str]) -> list[str]:
    urls = ["/", "/api/pipelines", f"/pipelines/{FOREIGN}", f"/pipelines/{MARKED}"]
    for run_id in [*good, "foreign-1", "foreign-2", run_id_of("escapes"), run_id_of("deepmeta")]:
        urls += [f"/runs/{run_id}", f"/api/runs/{run_id}", f"/api/runs/{run_id}/events"]
        urls += [f"/api/runs/{run_id}/timeline", f"/api/runs/{run_id}/export"]
        urls += [f"/runs/{run_id}?tab={tab}" for tab in ("events", "metrics", "steps")]
    urls += [
        f"/compare?run1={good[0]}&run2=foreign-1",
        f"/api/compare?run1={good[0]}&run2=foreign-1",
    ]
    return urls


def test_every_dashboard_page_reads_a_hostile_store(hostile: dict[str, Any]) -> None:
    """Before: 500 for the good run's events (1e400 is no JSON number) and for every page
    of the foreign run (int(None) of a NULL seq, bytes that are not JSON)."""
    registry = PipelineRegistry(hostile["root"])
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        for url in dashboard_urls(hostile["good"]):
            response = client.get(url)
            assert response.status_code == 200, (url, response.text[:300])
        events = client.get(f"/api/runs/{hostile['good'][0]}/events").json()
        huge = next(event for event in events if event["step_name"] == "huge")
        assert huge["data"]["payload"] == {"x": "1e400"}  # kept as its text
    registry.close()


def test_a_fifo_as_pipeline_json_does_not_hang_the_tools(hostile: dict[str, Any]) -> None:
    """Before: every command blocked for ever opening it (waiting for a writer)."""
    fifo_dir = hostile["root"] / ("a" * 16)
    fifo_dir.mkdir()
    (fifo_dir / "runs.db").write_bytes((hostile["root"] / MARKED / "runs.db").read_bytes())
    os.mkfifo(fifo_dir / "pipeline.json")
    command = "from justpipe.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", command, "pipelines"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JUSTPIPE_STORAGE_PATH": str(hostile["root"])},
    )
    assert "not a regular file" in done.stdout, done.stdout + done.stderr
    assert "good" in done.stdout


def test_symlinks_in_the_store_neither_hide_nor_hang_anything(
    hostile: dict[str, Any], tmp_path: Path
) -> None:
    """Links are followed (a pipeline's store may live on another disk); what they lead
    to is read like any file: a device is not a regular file, a loop or a dangling link
    cannot be read, and none of them hides the other pipelines."""
    root: Path = hostile["root"]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "runs.db").write_bytes((root / MARKED / "runs.db").read_bytes())
    (outside / "pipeline.json").write_text(json.dumps({"name": "moved"}))
    (root / ("1" * 16)).symlink_to(outside, target_is_directory=True)
    for name, target in (("2", "/dev/zero"), ("3", "pipeline.json"), ("4", "/nonexistent")):
        directory = root / (name * 16)
        directory.mkdir()
        (directory / "runs.db").write_bytes((root / MARKED / "runs.db").read_bytes())
        (directory / "pipeline.json").symlink_to(target)  # "3": a link to itself
    (root / ("5" * 16)).mkdir()
    (root / ("5" * 16) / "runs.db").symlink_to("/nonexistent/runs.db")
    listing = invoke("pipelines")
    assert "moved" in listing and "good" in listing
    assert "not a regular file" in listing
    assert "cannot be read" in listing
    registry = PipelineRegistry(root)
    with TestClient(create_app(registry), base_url=ORIGIN) as client:
        for pipeline in client.get("/api/pipelines").json():
            assert client.get(f"/pipelines/{pipeline['hash']}").status_code == 200
        assert client.get("/").status_code == 200
    registry.close()
