"""`SQLiteCheckpointStore`: checkpoints and leases in a run store's SQLite file.

The store adds four tables of its own to the file (``durable_checkpoints``,
``durable_counters``, ``durable_parts`` and ``durable_leases``) and touches no other
table, so the run store (`SQLiteBackend`), upstream's tools and older versions read the
file as before; opening an existing run store only creates the four tables (``CREATE
TABLE IF NOT EXISTS``, one transaction). ``durable_counters`` holds a run's attempt
counters, one row per step name: a save upserts only the counts that changed since the
run's previous checkpoint (see `justpipe.durable.store`), so its cost does not grow with
the names the run has seen. ``durable_parts`` holds what a checkpoint writes once and
then refers to (a map's items), one row per key.

Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with
``synchronous=NORMAL``: a committed checkpoint survives the process being killed, and
a reader never sees half of one. A save checks, inside its transaction, that the
writer still holds the run's lease.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from justpipe.durable.store import (
    Checkpoint,
    CorruptCheckpointError,
    Lease,
    LeaseLostError,
    RunLeasedError,
    lease_is_live,
    leased_message,
)
from justpipe.storage.sqlite import _INSERT_EVENT, _INSERT_PLACEHOLDER, SQLiteBackend

__all__ = ["SQLiteCheckpointStore", "file_has_table", "find_checkpoint_file", "move_run"]

_TABLES = (
    """CREATE TABLE IF NOT EXISTS durable_checkpoints (
        run_id TEXT PRIMARY KEY,
        pipe_name TEXT NOT NULL,
        pipeline_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        segment INTEGER NOT NULL,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS durable_counters (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS durable_parts (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS durable_leases (
        run_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL
    )""",
)


class SQLiteCheckpointStore:
    """Checkpoints in a SQLite file (by default the pipeline's run store, ``runs.db``)."""

    def __init__(self, db_path: str | Path, *, timeout: float = 10.0) -> None:
        self.db_path = Path(db_path)
        self._timeout = timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._run_store_ready = False
        if str(self.db_path) != ":memory:":
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def __repr__(self) -> str:
        return f"SQLiteCheckpointStore({str(self.db_path)!r})"

    # ------------------------------------------------------------------ connection

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        conn = sqlite3.connect(
            self.db_path, timeout=self._timeout, check_same_thread=False, isolation_level=None
        )
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                with self._write() as conn:
                    for ddl in _TABLES:
                        conn.execute(ddl)
                return
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ the protocol

    saves_events = True
    """`save()` also takes the run's events published since the last checkpoint."""

    keeps_attempts = True
    """`save()` upserts `Checkpoint.attempts` (the changed counts) into ``durable_counters``."""

    keeps_parts = True
    """`save()` upserts (or deletes) `Checkpoint.parts` in ``durable_parts``."""

    def save(self, checkpoint: Checkpoint, owner: str, events: Sequence[str] = ()) -> None:
        """Write the checkpoint and `events` (event JSON, see `storage.serialize`) at once.

        The events go into the run store's tables of the same file (``runs``/``events``,
        the run's row created ``running`` if needed), in the checkpoint's transaction: a
        crash leaves the run store exactly the events the checkpoint has seen. So do the
        changed attempt counts (`checkpoint.attempts`), into ``durable_counters``.
        """
        if events and not self._run_store_ready:
            SQLiteBackend(self.db_path, timeout=self._timeout).close()  # creates its schema
            self._run_store_ready = True
        with self._write() as conn:
            row = conn.execute(
                "SELECT owner FROM durable_leases WHERE run_id = ?", (checkpoint.run_id,)
            ).fetchone()
            if row is None or row[0] != owner:
                raise LeaseLostError(
                    f"run {checkpoint.run_id!r}: this process ({owner}) no longer holds its "
                    f"lease (held by {row[0] if row else 'nobody'}); not checkpointing."
                )
            conn.execute(
                "INSERT INTO durable_checkpoints (run_id, pipe_name, pipeline_hash, status,"
                " segment, data, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET pipe_name = excluded.pipe_name,"
                " pipeline_hash = excluded.pipeline_hash, status = excluded.status,"
                " segment = excluded.segment, data = excluded.data,"
                " updated_at = excluded.updated_at",
                (
                    checkpoint.run_id,
                    checkpoint.pipe_name,
                    checkpoint.pipeline_hash,
                    checkpoint.status,
                    checkpoint.segment,
                    checkpoint.data,
                    time.time(),
                ),
            )
            changed = checkpoint.attempts
            if changed:
                run_id = checkpoint.run_id
                conn.executemany(
                    "INSERT INTO durable_counters (run_id, name, count) VALUES (?, ?, ?)"
                    " ON CONFLICT (run_id, name) DO UPDATE SET count = excluded.count",
                    [(run_id, name, count) for name, count in changed.items()],
                )
            parts = checkpoint.parts
            if parts:
                run_id = checkpoint.run_id
                conn.executemany(
                    "INSERT INTO durable_parts (run_id, key, data) VALUES (?, ?, ?)"
                    " ON CONFLICT (run_id, key) DO UPDATE SET data = excluded.data",
                    [(run_id, key, text) for key, text in parts.items() if text is not None],
                )
                conn.executemany(
                    "DELETE FROM durable_parts WHERE run_id = ? AND key = ?",
                    [(run_id, key) for key, text in parts.items() if text is None],
                )
            if events:
                run_id = checkpoint.run_id
                conn.execute(
                    _INSERT_PLACEHOLDER, {"run_id": run_id, "first": events[0], "now": time.time()}
                )
                conn.executemany(
                    _INSERT_EVENT, ({"run_id": run_id, "seq": 0, "data": data} for data in events)
                )

    def load(self, run_id: str) -> Checkpoint | None:
        """The run's checkpoint, with all its attempt counts (one read transaction)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")  # the checkpoint and its counters as one snapshot
            try:
                row = conn.execute(
                    "SELECT run_id, pipe_name, pipeline_hash, status, segment, data, updated_at"
                    " FROM durable_checkpoints WHERE run_id = ?",
                    (run_id,),
                ).fetchone()
                counts = conn.execute(
                    "SELECT name, count FROM durable_counters WHERE run_id = ?", (run_id,)
                ).fetchall()
                parts = conn.execute(
                    "SELECT key, data FROM durable_parts WHERE run_id = ?", (run_id,)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        if row is None:
            return None
        return _checkpoint(row, counts, parts)

    def acquire(self, run_id: str, owner: str, ttl_s: float) -> None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT owner, expires_at FROM durable_leases WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None and row[0] != owner:
                held = Lease(run_id, str(row[0]), float(row[1]))
                if lease_is_live(held):
                    raise RunLeasedError(leased_message(run_id, held))
            conn.execute(
                "INSERT INTO durable_leases (run_id, owner, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at",
                (run_id, owner, time.time() + ttl_s),
            )

    def release(self, run_id: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM durable_leases WHERE run_id = ? AND owner = ?", (run_id, owner)
            )

    def lease(self, run_id: str) -> Lease | None:
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT owner, expires_at FROM durable_leases WHERE run_id = ?", (run_id,))
                .fetchone()
            )
        return None if row is None else Lease(run_id, str(row[0]), float(row[1]))

    # ------------------------------------------------------------------ the run store beside

    def reopen_run(self, run_id: str) -> None:
        """Mark the run store's row of `run_id` as running again (a resumed segment).

        The persistence of the next segment then appends its events to the same run and
        completes the row when that segment ends. No-op when the file has no such row.
        """
        with self._write() as conn:
            if not _has_table(conn, "runs"):
                return
            conn.execute(
                "UPDATE runs SET status = 'running', end_time = NULL,"
                " error_message = NULL, error_step = NULL WHERE run_id = ?",
                (run_id,),
            )

    def stored_seq(self, run_id: str) -> int:
        """The highest `seq` the run store holds for the run (0: none, or no run store)."""
        with self._lock:
            conn = self._connection()
            if not _has_table(conn, "events"):
                return 0
            row = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events"
                " WHERE run_id = ? AND typeof(seq) = 'integer'",
                (run_id,),
            ).fetchone()
        return int(row[0])


def _checkpoint(
    row: Sequence[Any], counts: Sequence[tuple[str, int]], parts: Sequence[tuple[str, str]]
) -> Checkpoint:
    """A row of ``durable_checkpoints`` (with its counters and parts) as a `Checkpoint`.

    The file is untrusted input: a column of the wrong type (SQLite keeps what it is given)
    is a `CorruptCheckpointError` naming it, not a raw ``ValueError`` out of `load`.
    """
    run_id = row[0]
    texts = dict(zip(("run_id", "pipe_name", "pipeline_hash", "status"), row[:4], strict=True))
    for column, value in (*texts.items(), ("data", row[5])):
        if type(value) is not str:
            raise CorruptCheckpointError(
                f"run {run_id!r}: its checkpoint row's {column} is a {type(value).__name__}, "
                "not text"
            )
    if type(row[4]) is not int:
        raise CorruptCheckpointError(
            f"run {run_id!r}: its checkpoint row's segment is {row[4]!r}, not an integer"
        )
    for name, count in counts:
        if type(name) is not str or type(count) is not int:
            raise CorruptCheckpointError(
                f"run {run_id!r}: its attempt counter {name!r} is {count!r}, not an integer"
            )
    for key, text in parts:
        if type(key) is not str or type(text) is not str:
            raise CorruptCheckpointError(f"run {run_id!r}: its part {key!r} is not text")
    return Checkpoint(
        run_id,
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        float(row[6]) if isinstance(row[6], (int, float)) else 0.0,
        dict(counts),
        dict(parts),
    )


_CHECKPOINT_TABLES = ("durable_checkpoints", "durable_counters", "durable_parts")
_RUN_STORE_TABLES = (("runs", ()), ("events", ("id",)))  # (table, columns not copied)


def move_run(
    source: Path, target: Path, run_id: str, lease: tuple[str, float] | None = None
) -> None:
    """Move run `run_id` from the SQLite file `source` into `target` (a forced resume).

    Moved: its run-store rows (``runs``, ``events``), and, when `lease` is given (the owner
    that holds the run's lease, and its ttl), its checkpoint, counters and parts too, the
    lease being taken in `target`. Two transactions: the copy into `target`, then the
    removal from `source`; a crash between them leaves a copy behind, never no run.
    `target`'s tables must exist (its `SQLiteCheckpointStore`, and a `SQLiteBackend` when
    `source` has run-store rows).
    """
    if source.resolve() == target.resolve():
        return
    conn = sqlite3.connect(target, timeout=10.0, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS source", (str(source),))
        moved = [t for t in _CHECKPOINT_TABLES if lease is not None and _has(conn, "source", t)]
        copied = [(t, skip) for t, skip in _RUN_STORE_TABLES if _has(conn, "source", t)]
        with _transaction(conn):
            for table in moved:
                conn.execute(
                    f"INSERT OR REPLACE INTO main.{table}"
                    f" SELECT * FROM source.{table} WHERE run_id = ?",
                    (run_id,),
                )
            if lease is not None:
                owner, ttl_s = lease
                conn.execute(
                    "INSERT OR REPLACE INTO main.durable_leases (run_id, owner, expires_at)"
                    " VALUES (?, ?, ?)",
                    (run_id, owner, time.time() + ttl_s),
                )
            for table, skip in copied:
                columns = ", ".join(_common_columns(conn, table, skip))
                conn.execute(
                    f"INSERT OR IGNORE INTO main.{table} ({columns})"
                    f" SELECT {columns} FROM source.{table} WHERE run_id = ? ORDER BY rowid",
                    (run_id,),
                )
        with _transaction(conn):
            gone = [*moved, *(["durable_leases"] if moved else [])]
            gone += [t for t in ("events", "run_leases", "runs") if _has(conn, "source", t)]
            for table in gone:
                conn.execute(f"DELETE FROM source.{table} WHERE run_id = ?", (run_id,))
    finally:
        conn.close()


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _has(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    row = conn.execute(
        f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def _common_columns(conn: sqlite3.Connection, table: str, skip: Sequence[str]) -> list[str]:
    """The (not generated) columns `table` has in both files, minus `skip`."""

    def columns(schema: str) -> list[str]:
        return [str(r[1]) for r in conn.execute(f"PRAGMA {schema}.table_info({table})")]

    there = set(columns("main"))
    return [c for c in columns("source") if c in there and c not in skip]


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def file_has_table(db_path: Path, table: str) -> bool:
    """Whether the SQLite file at `db_path` exists and has `table` (read-only look)."""
    if not db_path.is_file():
        return False
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return False
    try:
        return _has_table(conn, table)
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def find_checkpoint_file(root: Path, run_id: str, file_name: str) -> Path | None:
    """The ``<root>/<pipeline_hash>/<file_name>`` that holds a checkpoint of `run_id`."""
    if not root.is_dir():
        return None
    for candidate in sorted(root.glob(f"*/{file_name}")):
        try:
            conn = sqlite3.connect(f"file:{candidate}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error:
            continue
        try:
            if not _has_table(conn, "durable_checkpoints"):
                continue
            row = conn.execute(
                "SELECT 1 FROM durable_checkpoints WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None:
                return candidate
        except sqlite3.Error:
            continue
        finally:
            conn.close()
    return None
