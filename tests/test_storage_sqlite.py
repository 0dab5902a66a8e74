"""SQLiteBackend specifics (spec §15.3, §21 B9): schema, migration, sharing, bad files."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from justpipe.storage import RunRecord, SQLiteBackend
from justpipe.storage.sqlite import UNFINISHED_RUN_MESSAGE
from justpipe.types import EventType, PipelineTerminalStatus

pytestmark = pytest.mark.backend_agnostic  # storage does not touch justpipe._core

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event_json(event_type: str, *, seq: int | None = None, ts: float = 1.0) -> str:
    data: dict[str, object] = {"type": event_type, "stage": "a", "timestamp": ts}
    if seq is not None:
        data["seq"] = seq
    return json.dumps(data)


def make_run(
    run_id: str, status: PipelineTerminalStatus = PipelineTerminalStatus.SUCCESS
) -> RunRecord:
    return RunRecord(run_id, BASE, BASE + timedelta(seconds=1), timedelta(seconds=1), status)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "runs.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteBackend]:
    backend = SQLiteBackend(db_path)
    yield backend
    backend.close()


def raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None)


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_xinfo({table})")]


def indexes(conn: sqlite3.Connection) -> dict[str, bool]:
    return {row[1]: bool(row[2]) for row in conn.execute("PRAGMA index_list(events)")} | {
        row[1]: bool(row[2]) for row in conn.execute("PRAGMA index_list(runs)")
    }


# -- schema -----------------------------------------------------------------------------


def test_construction_creates_parent_directories_and_a_wal_database(
    store: SQLiteBackend, db_path: Path
) -> None:
    assert db_path.is_file()
    conn = raw(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_schema_has_upstream_tables_columns_and_generated_columns(
    store: SQLiteBackend, db_path: Path
) -> None:
    conn = raw(db_path)
    assert columns(conn, "runs") == [
        "run_id", "start_time", "end_time", "duration_s", "status",
        "error_message", "error_step", "run_meta", "created_at",
    ]  # fmt: skip
    assert columns(conn, "events") == [
        "id", "run_id", "seq", "timestamp", "data",
        "event_type", "step_name", "node_kind", "attempt",
    ]  # fmt: skip
    conn.close()


def test_schema_indexes_include_a_unique_run_seq_key(store: SQLiteBackend, db_path: Path) -> None:
    conn = raw(db_path)
    found = indexes(conn)
    conn.close()
    assert found["idx_events_run_seq"] is True
    for name in ("idx_runs_time", "idx_runs_status", "idx_events_type", "idx_events_step"):
        assert found[name] is False


def test_generated_columns_are_filled_from_the_event_json(
    store: SQLiteBackend, db_path: Path
) -> None:
    data = json.dumps(
        {
            "type": "step_end",
            "stage": "s",
            "timestamp": 5.0,
            "seq": 1,
            "node_kind": "map",
            "attempt": 3,
        }
    )
    store.save_run(make_run("r1"), [data])

    conn = raw(db_path)
    row = conn.execute(
        "SELECT event_type, step_name, node_kind, attempt, timestamp FROM events"
    ).fetchone()
    conn.close()
    assert row == ("step_end", "s", "map", 3, 5.0)


def test_times_are_stored_as_epoch_seconds(store: SQLiteBackend, db_path: Path) -> None:
    store.save_run(make_run("r1"), [])

    conn = raw(db_path)
    row = conn.execute("SELECT start_time, end_time, duration_s, status FROM runs").fetchone()
    conn.close()
    assert row == (BASE.timestamp(), BASE.timestamp() + 1, 1.0, "success")


def test_naive_datetimes_are_stored_and_read_as_utc(store: SQLiteBackend) -> None:
    naive = RunRecord("r1", datetime(2024, 5, 1, 12, 0), None, None, PipelineTerminalStatus.SUCCESS)
    store.save_run(naive, [])

    run = store.get_run("r1")
    assert run is not None
    assert run.start_time == BASE
    assert run.start_time.tzinfo is not None


# -- events and seq (B9) --------------------------------------------------------------------


def test_events_keep_the_seq_from_their_json(store: SQLiteBackend) -> None:
    store.save_run(make_run("r1"), [event_json("start", seq=4), event_json("finish", seq=9)])

    assert [e.seq for e in store.get_events("r1")] == [4, 9]


def test_events_without_seq_are_numbered_after_the_highest_stored(store: SQLiteBackend) -> None:
    store.append_events("r1", [event_json("start", seq=1), event_json("token", seq=2)])
    store.save_run(make_run("r1"), [event_json("token"), event_json("finish")])

    assert [e.seq for e in store.get_events("r1")] == [1, 2, 3, 4]


def test_appending_an_already_stored_seq_keeps_one_copy(store: SQLiteBackend) -> None:
    batch = [event_json("start", seq=1), event_json("step_start", seq=2)]
    store.append_events("r1", batch)
    store.append_events("r1", batch)
    store.append_events("r1", [event_json("step_end", seq=3)])

    assert [e.seq for e in store.get_events("r1")] == [1, 2, 3]


def test_same_seq_in_different_runs_is_allowed(store: SQLiteBackend) -> None:
    store.save_run(make_run("r1"), [event_json("start", seq=1)])
    store.save_run(make_run("r2"), [event_json("start", seq=1)])

    assert len(store.get_events("r1")) == len(store.get_events("r2")) == 1


def test_non_string_event_is_rejected_and_nothing_stored(store: SQLiteBackend) -> None:
    with pytest.raises(TypeError, match="must be a JSON string"):
        store.append_events("r1", [event_json("start"), b'{"type": "start"}'])  # type: ignore[list-item]

    assert store.get_run("r1") is None
    assert store.get_events("r1") == []


def test_malformed_json_in_append_stores_nothing(store: SQLiteBackend) -> None:
    with pytest.raises(json.JSONDecodeError, match="event #2 of run 'r1'"):
        store.append_events("r1", [event_json("start", seq=1), "{broken"])

    assert store.get_run("r1") is None
    assert store.get_events("r1") == []


# -- runs that never finished (B9) --------------------------------------------------------


def test_unfinished_run_reads_as_failed_with_an_explanation(store: SQLiteBackend) -> None:
    store.append_events("r1", [event_json("start", seq=1, ts=BASE.timestamp())])

    run = store.get_run("r1")

    assert run is not None
    assert run.status is PipelineTerminalStatus.FAILED
    assert run.error_message == UNFINISHED_RUN_MESSAGE
    assert run.start_time == BASE
    assert run.end_time is None
    assert run.duration is None


def test_unfinished_run_is_listed_and_counts_as_failed(store: SQLiteBackend) -> None:
    store.save_run(make_run("done"), [])
    store.append_events("open", [])

    assert {r.run_id for r in store.list_runs()} == {"done", "open"}
    assert [r.run_id for r in store.list_runs(status=PipelineTerminalStatus.FAILED)] == ["open"]
    assert [r.run_id for r in store.find_runs_by_prefix("op")] == ["open"]


@pytest.mark.parametrize("status", [None, "exploded"])
def test_null_or_unknown_status_reads_as_failed(
    store: SQLiteBackend, db_path: Path, status: str | None
) -> None:
    conn = raw(db_path)
    conn.execute("INSERT INTO runs (run_id, start_time, status) VALUES ('r1', 0, ?)", (status,))
    conn.close()

    run = store.get_run("r1")
    assert run is not None
    assert run.status is PipelineTerminalStatus.FAILED
    assert [r.run_id for r in store.list_runs(status=PipelineTerminalStatus.FAILED)] == ["r1"]


def test_saving_over_a_finished_run_raises_and_keeps_the_original(store: SQLiteBackend) -> None:
    store.save_run(make_run("r1"), [event_json("start", seq=1)])

    with pytest.raises(sqlite3.IntegrityError, match="'r1' is already stored"):
        store.save_run(make_run("r1", PipelineTerminalStatus.FAILED), [event_json("finish", seq=2)])

    run = store.get_run("r1")
    assert run is not None
    assert run.status is PipelineTerminalStatus.SUCCESS
    assert [e.event_type for e in store.get_events("r1")] == [EventType.START]


# -- prefixes -----------------------------------------------------------------------------------


def test_prefix_search_ignores_ascii_case_like_upstream(store: SQLiteBackend) -> None:
    store.save_run(make_run("abcdef"), [])

    assert [r.run_id for r in store.find_runs_by_prefix("ABC")] == ["abcdef"]


# -- connection sharing -------------------------------------------------------------------------


def test_in_memory_database_keeps_data_between_operations() -> None:
    with SQLiteBackend(":memory:") as store:
        store.save_run(make_run("r1"), [event_json("start")])

        assert store.get_run("r1") is not None
        assert len(store.get_events("r1")) == 1


def test_two_instances_on_one_file_see_each_others_runs(db_path: Path) -> None:
    with SQLiteBackend(db_path) as first, SQLiteBackend(db_path) as second:
        first.save_run(make_run("r1"), [event_json("start")])
        second.append_events("r2", [event_json("start", seq=1)])

        assert first.get_run("r2") is not None
        assert second.get_run("r1") is not None


def test_closed_backend_reconnects_on_next_use(store: SQLiteBackend) -> None:
    store.save_run(make_run("r1"), [])
    store.close()

    assert store.get_run("r1") is not None


def test_concurrent_threads_sharing_one_backend_lose_nothing(store: SQLiteBackend) -> None:
    def persist(worker: int) -> None:
        for n in range(20):
            run_id = f"w{worker}-{n}"
            store.append_events(run_id, [event_json("start", seq=1)])
            store.save_run(make_run(run_id), [event_json("finish", seq=2)])

    threads = [threading.Thread(target=persist, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    runs = store.list_runs(limit=1000)
    assert len(runs) == 160
    assert all(r.status is PipelineTerminalStatus.SUCCESS for r in runs)
    assert all(len(store.get_events(r.run_id)) == 2 for r in runs)


# -- bad files and paths --------------------------------------------------------------------------


def test_corrupt_file_raises_a_clear_error_and_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)

    with pytest.raises(sqlite3.DatabaseError, match=r"runs\.db.*not a database.*left untouched"):
        SQLiteBackend(path)

    assert path.read_bytes() == garbage


def test_directory_in_place_of_the_file_raises_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "runs.db").mkdir()

    with pytest.raises(sqlite3.OperationalError, match=r"run store .*runs\.db: cannot open"):
        SQLiteBackend(tmp_path / "runs.db")


def test_unwritable_storage_path_raises_a_clear_os_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")

    with pytest.raises(OSError, match="cannot create the run store directory"):
        SQLiteBackend(blocker / "sub" / "runs.db")


def test_locked_store_reports_the_lock_and_loses_nothing(db_path: Path) -> None:
    with SQLiteBackend(db_path, timeout=0.05) as store:
        store.save_run(make_run("before"), [event_json("start", seq=1)])
        holder = raw(db_path)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(sqlite3.OperationalError, match="another process held a write lock"):
                store.save_run(make_run("during"), [event_json("start", seq=1)])
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        store.save_run(make_run("after"), [])
        assert {r.run_id for r in store.list_runs()} == {"before", "after"}
        assert len(store.get_events("before")) == 1


# -- migration of older files ----------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, start_time REAL NOT NULL, end_time REAL, duration_s REAL,
    status TEXT, error_message TEXT, user_meta TEXT, created_at REAL DEFAULT (unixepoch())
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, timestamp REAL NOT NULL, data TEXT NOT NULL,
    event_type TEXT GENERATED ALWAYS AS (json_extract(data, '$.type')) STORED,
    step_name TEXT GENERATED ALWAYS AS (json_extract(data, '$.stage')) STORED,
    node_kind TEXT GENERATED ALWAYS AS (json_extract(data, '$.node_kind')) STORED,
    attempt INTEGER GENERATED ALWAYS AS (json_extract(data, '$.attempt')) STORED
);
CREATE INDEX idx_events_run_seq ON events(run_id, seq);
INSERT INTO runs (run_id, start_time, status, user_meta) VALUES ('old', 100, 'success', '{"k": 1}');
"""


def write_old_store(path: Path, *seqs: int) -> None:
    conn = raw(path)
    conn.executescript(OLD_SCHEMA)
    for seq in seqs:
        conn.execute(
            "INSERT INTO events (run_id, seq, timestamp, data) VALUES ('old', ?, 1, ?)",
            (seq, event_json("token", seq=seq)),
        )
    conn.close()


def test_older_file_is_migrated_without_losing_data(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    write_old_store(path, 1, 2)

    with SQLiteBackend(path) as store:
        run = store.get_run("old")
        assert run is not None
        assert run.run_meta == '{"k": 1}'
        assert [e.seq for e in store.get_events("old")] == [1, 2]
        store.save_run(
            RunRecord("new", BASE, None, None, PipelineTerminalStatus.FAILED, error_step="b"), []
        )
        assert store.get_run("new") == RunRecord(
            "new", BASE, None, None, PipelineTerminalStatus.FAILED, error_step="b"
        )

    conn = raw(path)
    assert "run_meta" in columns(conn, "runs")
    assert "user_meta" not in columns(conn, "runs")
    assert indexes(conn)["idx_events_run_seq"] is True
    conn.close()


def test_upstream_file_gets_the_unique_seq_index(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    write_old_store(path, 1, 2)
    conn = raw(path)
    conn.execute("ALTER TABLE runs RENAME COLUMN user_meta TO run_meta")
    conn.execute("ALTER TABLE runs ADD COLUMN error_step TEXT")
    for ddl in (
        "CREATE INDEX idx_runs_time ON runs(start_time DESC)",
        "CREATE INDEX idx_runs_status ON runs(status, start_time DESC)",
        "CREATE INDEX idx_events_type ON events(run_id, event_type)",
        "CREATE INDEX idx_events_step ON events(run_id, step_name, event_type)",
    ):
        conn.execute(ddl)
    conn.close()

    with SQLiteBackend(path) as store:
        store.append_events("old", [event_json("token", seq=2)])
        assert [e.seq for e in store.get_events("old")] == [1, 2]

    conn = raw(path)
    assert indexes(conn)["idx_events_run_seq"] is True
    conn.close()


def test_older_file_with_duplicate_seqs_keeps_every_row_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.db"
    write_old_store(path, 1, 1, 2)

    with caplog.at_level(logging.WARNING, logger="justpipe.storage"), SQLiteBackend(path) as store:
        assert [e.seq for e in store.get_events("old")] == [1, 1, 2]

    assert "duplicate (run_id, seq)" in caplog.text
    conn = raw(path)
    assert indexes(conn)["idx_events_run_seq"] is False
    conn.close()


def test_opening_a_current_store_twice_changes_nothing(db_path: Path) -> None:
    with SQLiteBackend(db_path) as store:
        store.save_run(make_run("r1"), [event_json("start", seq=1)])
    before = schema_sql(db_path)

    with SQLiteBackend(db_path) as store:
        assert store.get_run("r1") is not None

    assert schema_sql(db_path) == before


def schema_sql(db_path: Path) -> list[tuple[str]]:
    conn = raw(db_path)
    try:
        return conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()
