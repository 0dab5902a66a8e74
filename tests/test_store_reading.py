"""Stores are read defensively and never written by reading (issue 20, defects 3 and 4).

A real run store is written by persisted pipelines, then damaged the way the issue
found it: a ``pipeline.json`` nested too deeply to parse, run rows whose times no date
can hold, an event with such a time. Every CLI command and dashboard page must still
work, show the damaged rows as damaged (with the reason) and never hide the others.
Reading must not change a store (journal mode, schema, bytes), must work on a read-only
file system (a real read-only mount when this process may mount one), and a run in a
locked store reads as "store unavailable", not "not found".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extras import require

require("click", "cli")
require("starlette", "dashboard")
require("jinja2", "dashboard")
require("httpx", "dashboard")

from starlette.testclient import TestClient  # noqa: E402

from justpipe import Pipe  # noqa: E402
from justpipe.cli import formatting  # noqa: E402
from justpipe.cli import registry as registry_module  # noqa: E402
from justpipe.cli.registry import PipelineRegistry  # noqa: E402
from justpipe.dashboard.api import DashboardRegistry  # noqa: E402
from justpipe.dashboard.server import create_app  # noqa: E402
from status_fixtures import (  # noqa: E402
    ORIGIN,
    cli,
    list_status,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
    monkeypatch.setattr(formatting, "HAS_RICH", False)
    return root


# Times no datetime can hold: year 0, year 10000, far beyond, and text.
BAD_STARTS = {
    "badyear0": -62167219200.0,
    "badyear10000": 253402300800.0,
    "bad1e300": 1e300,
    "badtext": "yesterday",
}
DEEP_JSON = "[" * 100_000 + "]" * 100_000


def persist_runs(root: Path, name: str, count: int = 2) -> tuple[Path, list[str]]:
    """Run a real persisted pipeline `count` times; its runs.db and the run ids."""
    os.environ["JUSTPIPE_STORAGE_PATH"] = str(root)
    pipe: Pipe[Any, Any] = Pipe(name=name, persist=True)

    @pipe.step(to="work")
    async def load(state: dict[str, Any]) -> None:
        state["n"] = 1

    @pipe.step
    async def work(state: dict[str, Any]) -> None:
        state["n"] += 1

    async def go() -> str:
        run_id = ""
        async for event in pipe.run({}):
            run_id = run_id or event.run_id
        return run_id

    ids = [asyncio.run(go()) for _ in range(count)]
    (db,) = (root / pipe.describe()["pipeline_hash"]).glob("runs.db")
    return db, ids


def run_id_of(label: str) -> str:
    return label + "0" * (32 - len(label))


def damage_rows(db: Path, good_run: str) -> None:
    """Add run rows with unreadable times, and an event whose time no date can hold."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        for label, start in BAD_STARTS.items():
            conn.execute(
                "INSERT INTO runs (run_id, start_time, status) VALUES (?, ?, 'success')",
                (run_id_of(label), start),
            )
        conn.execute(
            "INSERT INTO runs (run_id, start_time, end_time, duration_s, status)"
            " VALUES (?, 1.0e9, 1.0e300, 1.0e300, 'failed')",
            (run_id_of("badend"),),
        )
        event = {"type": "step_start", "stage": "late", "seq": 999, "timestamp": 1e300}
        conn.execute(
            "INSERT INTO events (run_id, seq, timestamp, data) VALUES (?, 999, 1e300, ?)",
            (good_run, json.dumps(event)),
        )


def dashboard_urls(client: TestClient) -> list[str]:
    pipelines = client.get("/api/pipelines").json()
    urls = ["/", "/api/pipelines", "/api/health", "/search?q=ba", "/api/runs/search?q=ba"]
    for pipeline in pipelines:
        urls += [
            f"/pipelines/{pipeline['hash']}",
            f"/api/pipelines/{pipeline['hash']}",
            f"/api/pipelines/{pipeline['hash']}/runs?limit=100",
            f"/api/stats/{pipeline['hash']}",
        ]
        for run in client.get(f"/api/pipelines/{pipeline['hash']}/runs?limit=100").json():
            urls += [f"/runs/{run['run_id']}", f"/api/runs/{run['run_id']}"]
    return urls


@pytest.fixture
def damaged(store: Path) -> dict[str, Any]:
    db, good = persist_runs(store, "good")
    damage_rows(db, good[0])
    nested_db, nested_runs = persist_runs(store, "nested", count=1)
    (nested_db.parent / "pipeline.json").write_text(DEEP_JSON)
    return {"db": db, "good": good, "nested": nested_db.parent.name, "nested_run": nested_runs[0]}


# -- one bad file or row hides nothing -------------------------------------------------


def test_the_cli_reads_around_damaged_rows_and_a_deeply_nested_pipeline_json(
    damaged: dict[str, Any],
) -> None:
    listing = cli("list", "-n", "50")
    for run_id in damaged["good"]:
        assert list_status(listing, run_id) == "success"
    for label in (*BAD_STARTS, "badend"):
        assert list_status(listing, run_id_of(label)) == "damaged"
    assert "bad1e300" in listing and "start_time 1e+300 is not a date (out of range)" in listing
    assert "start_time is not a number: 'yesterday'" in listing
    assert "end_time 1e+300 is not a date" in listing
    nested = damaged["nested"]
    assert list_status(listing, damaged["nested_run"]) == "success"
    assert nested[:20] in listing  # the pipeline is named by its hash
    assert "nested too deeply" in cli("pipelines")
    assert "Damaged Rows:      5" in cli("stats")
    shown = cli("show", run_id_of("bad1e300"))
    assert "Status: damaged" in shown and "Started: ?" in shown
    assert "Status: success" in cli("show", damaged["good"][0])  # its 1e300 event is read
    assert list_status(cli("list", "-s", "damaged", "-n", "50"), run_id_of("badtext"))
    export = damaged["db"].parent / "export.json"
    cli("export", run_id_of("badend"), "-o", str(export))
    assert json.loads(export.read_text())["run"]["damage"].startswith("end_time")


def test_the_dashboard_reads_around_damaged_rows_and_a_deeply_nested_pipeline_json(
    damaged: dict[str, Any],
) -> None:
    root = damaged["db"].parent.parent
    with TestClient(create_app(PipelineRegistry(root)), base_url=ORIGIN) as client:
        urls = dashboard_urls(client)
        for url in urls:
            assert client.get(url).status_code == 200, url
        by_hash = {p["hash"]: p for p in client.get("/api/pipelines").json()}
        nested = by_hash[damaged["nested"]]
        assert nested["name"] == damaged["nested"] and "nested too deeply" in nested["damage"]
        assert nested["total_runs"] == 1 and nested["error"] is None
        good = next(p for p in by_hash.values() if p["name"] == "good")
        assert good["total_runs"] == 7 and good["status_counts"]["damaged"] == 5
        assert (good["success_count"], good["ended_count"]) == (2, 2)
        bad = client.get(f"/api/runs/{run_id_of('bad1e300')}").json()
        assert bad["status"] == "damaged" and "1e+300" in bad["damage"]
        assert bad["start_time"] is None
        assert "damaged" in client.get("/").text
        assert "nested too deeply" in client.get("/").text
        for tab in ("timeline", "events", "metrics", "steps"):
            page = client.get(f"/runs/{damaged['good'][0]}?tab={tab}")
            assert page.status_code == 200, tab
    assert len([url for url in urls if url.startswith("/runs/")]) == 8


# -- reading never writes --------------------------------------------------------------


def digest(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def read_everything(root: Path, run_ids: list[str]) -> None:
    """Every CLI read command and every dashboard page over the store at `root`."""
    for command in (("list",), ("pipelines",), ("stats",)):
        cli(*command)
    for run_id in run_ids:
        cli("show", run_id)
        cli("timeline", run_id)
    registry = PipelineRegistry(root)
    try:
        with TestClient(create_app(registry), base_url=ORIGIN) as client:
            for url in dashboard_urls(client):
                assert client.get(url).status_code == 200, url
    finally:
        registry.close()


def test_reading_keeps_a_rollback_journal_store_as_it_is(store: Path) -> None:
    """Before: the dashboard switched a store it only reads to WAL."""
    db, ids = persist_runs(store, "journal")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    before = digest(db.parent)
    read_everything(store, ids)
    assert digest(db.parent) == before  # no -wal/-shm either
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_reading_never_migrates_an_older_store(store: Path) -> None:
    """An upstream-era file (user_meta, no error_step, no run_leases) is read as it is."""
    directory = store / "0123456789abcdef"
    directory.mkdir(parents=True)
    (directory / "pipeline.json").write_text(json.dumps({"name": "old"}))
    db = directory / "runs.db"
    run_id = run_id_of("old")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executescript(
            """
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, start_time REAL NOT NULL,
                end_time REAL, duration_s REAL, status TEXT, error_message TEXT,
                user_meta TEXT);
            CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
                seq INTEGER NOT NULL, timestamp REAL NOT NULL, data TEXT NOT NULL,
                event_type TEXT GENERATED ALWAYS AS (json_extract(data, '$.type')) STORED,
                step_name TEXT GENERATED ALWAYS AS (json_extract(data, '$.stage')) STORED);
            """
        )
        conn.execute(
            "INSERT INTO runs VALUES (?, 1.7e9, 1.7e9 + 1, 1.0, 'success', NULL, ?)",
            (run_id, json.dumps({"owner": "me"})),
        )
        conn.execute(
            "INSERT INTO events (run_id, seq, timestamp, data) VALUES (?, 1, 1.7e9, ?)",
            (run_id, json.dumps({"type": "start", "stage": "system", "timestamp": 1.7e9})),
        )
    before = digest(directory)
    read_everything(store, [run_id])
    assert "owner: me" in cli("show", run_id)
    assert digest(directory) == before


@contextlib.contextmanager
def read_only_copy(store: Path, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """`store` copied onto a file system mounted read-only; yields (root, how).

    A real tmpfs mount remounted read-only when this process may mount; otherwise (not
    root) a directory and files without write permission; root without mounts skips.
    """
    mount = tmp_path / "ro-mount"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode == 0:
        try:
            shutil.copytree(store, mount / "store")
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            yield mount / "store", "mount"
        finally:
            gc.collect()  # connections of stores read from it
            if subprocess.run(["umount", str(mount)], check=False).returncode:
                subprocess.run(["umount", "-l", str(mount)], check=False)
        return
    if os.geteuid() == 0:
        pytest.skip("cannot mount here, and root ignores file permissions")
    copy = mount / "store"
    shutil.copytree(store, copy)
    paths = sorted(copy.rglob("*"), reverse=True)
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    copy.chmod(0o555)
    try:
        yield copy, "chmod"
    finally:
        for path in [copy, *paths]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_store_on_a_read_only_file_system_is_readable(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "unable to open database file" from the CLI and the dashboard."""
    db, ids = persist_runs(store, "archived")
    with read_only_copy(store, tmp_path) as (root, how):
        monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
        copied = root / db.parent.name
        before = digest(copied)
        if how == "mount":
            with pytest.raises(OSError, match="Read-only file system"):
                (copied / "probe").write_text("x")
        for run_id in ids:
            assert list_status(cli("list"), run_id) == "success"
        read_everything(root, ids)
        assert digest(copied) == before


# -- a locked store is unavailable, not empty ------------------------------------------


def test_a_run_in_a_locked_store_is_unavailable_not_missing(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the dashboard answered 404 "Run not found" and the CLI "Run not found"."""
    db, ids = persist_runs(store, "locked")
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("PRAGMA journal_mode = DELETE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("DELETE FROM events WHERE seq = 1")  # held, never committed
        original = registry_module.PipelineRegistry.__init__
        monkeypatch.setattr(
            registry_module.PipelineRegistry,
            "__init__",
            lambda self, root, timeout=0.2: original(self, root, timeout=timeout),
        )
        registry = DashboardRegistry(store, timeout=0.2)
        with TestClient(create_app(registry), base_url=ORIGIN) as client:
            response = client.get(f"/api/runs/{ids[0]}")
            assert response.status_code == 503, response.text
            assert "locked" in response.json()["error"]
            assert client.get(f"/runs/{ids[0]}").status_code == 503
            assert client.get("/api/runs/zzzz-not-there").status_code == 503
        shown = cli("show", ids[0], code=1)
        assert "could not be read now" in shown and "Run not found" not in shown
        holder.execute("ROLLBACK")
    assert "Status: success" in cli("show", ids[0])
