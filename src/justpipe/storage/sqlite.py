"""The embedded default run store: one SQLite file per pipeline (spec §15.3).

The schema is upstream's (same tables, columns, generated columns and index names) plus
one change: ``idx_events_run_seq`` is UNIQUE, so an event stored twice (a retried
flush) is kept once. Where we depart from upstream, and why:

* One connection per backend instance, reused for every operation and guarded by a
  lock, because persistence writes arrive from ``asyncio.to_thread`` workers
  (``check_same_thread=False``). A process forked while holding an instance opens its
  own connection and never touches the inherited one.
* Writes run in ``BEGIN IMMEDIATE`` transactions and wait up to ``timeout`` seconds
  for another writer (``busy_timeout``), so several processes can share a store.
  ``synchronous=NORMAL`` in WAL mode keeps every committed write across a process
  crash; only an OS crash can lose the last commits.
* A run row that never got its end record (status ``running``, written by
  ``append_events``) reads back as FAILED with an explanatory ``error_message``
  instead of raising; unknown or NULL statuses read as FAILED too.
* Every row is read on its own: a run row with a value no date or duration can hold
  (year 0, 10000, 1e300, text) comes back with ``RunRecord.damage`` saying what,
  instead of making the whole listing fail; an event's unreadable time reads as the
  epoch.
* ``SQLiteBackend(path, read_only=True)`` is how the tools (CLI, dashboard) open a store
  they only read: through ``storage.readonly.connect_read_only``, with no journal-mode
  switch and no schema creation or migration (an older file's missing columns read as
  NULL), so reading never changes the file, and a store on a read-only file system
  can be read.
* Events keep the ``seq`` from their JSON; only events without one are numbered,
  after the run's highest stored ``seq``. Rows whose ``type`` is unknown are skipped
  on read, like the in-memory store does.
* A run that is still going holds a *lease*: a row in the extra ``run_leases`` table
  naming the process that writes it (``host:pid``) and when it last wrote or beat
  (:meth:`SQLiteBackend.beat`). Readers (the dashboard) tell a live run from one whose
  process died with :func:`lease_state`. The table is separate from ``runs``, so
  upstream's tools read our files unchanged; older files get it when first opened for writing,
  and a file without it reads as having no leases.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from justpipe.storage.interface import (
    EPOCH,
    RunRecord,
    StoredEvent,
    epoch_of,
    is_run_id_prefix,
    parse_event_type,
    read_epoch,
    read_seconds,
    readable_epoch,
    utc_from_epoch,
    validate_paging,
)
from justpipe.storage.readonly import connect_read_only
from justpipe.storage.serialize import parse_event_object
from justpipe.storage.status import UNFINISHED_RUN_MESSAGE
from justpipe.types import EventType, PipelineTerminalStatus

if TYPE_CHECKING:
    from justpipe.storage.listing import RunListing

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "LEASE_TIMEOUT_S",
    "UNFINISHED_RUN_MESSAGE",
    "RunLease",
    "SQLiteBackend",
    "lease_state",
]

_log = logging.getLogger("justpipe.storage")

RUNNING_STATUS = "running"
"""Status of a run row created by ``append_events`` and not yet completed by ``save_run``."""


_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    start_time REAL NOT NULL,
    end_time REAL,
    duration_s REAL,
    status TEXT,
    error_message TEXT,
    error_step TEXT,
    run_meta TEXT,
    created_at REAL DEFAULT (unixepoch())
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    data TEXT NOT NULL,
    event_type TEXT GENERATED ALWAYS AS (json_extract(data, '$.type')) STORED,
    step_name TEXT GENERATED ALWAYS AS (json_extract(data, '$.stage')) STORED,
    node_kind TEXT GENERATED ALWAYS AS (json_extract(data, '$.node_kind')) STORED,
    attempt INTEGER GENERATED ALWAYS AS (json_extract(data, '$.attempt')) STORED
);
CREATE TABLE IF NOT EXISTS run_leases (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    heartbeat REAL NOT NULL
);
"""

DURABLE_TABLES = ("durable_checkpoints", "durable_counters", "durable_parts", "durable_leases")
"""The tables a durable run's checkpoint lives in (``justpipe.durable.sqlite``), per run_id."""

HEARTBEAT_INTERVAL_S = 2.0
"""How often a persisting process renews the lease of a run it is executing."""

LEASE_TIMEOUT_S = 15.0
"""A lease not renewed for this long belongs to a process that is gone (or hung)."""

# Renews (or takes) the lease of a run that is still 'running'; finished runs get none.
_UPSERT_LEASE = f"""
INSERT INTO run_leases (run_id, owner, heartbeat)
SELECT run_id, :owner, :now FROM runs WHERE run_id = :run_id AND status = '{RUNNING_STATUS}'
ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, heartbeat = excluded.heartbeat
"""

_PLAIN_INDEXES = {
    "idx_runs_time": "CREATE INDEX idx_runs_time ON runs(start_time DESC)",
    "idx_runs_status": "CREATE INDEX idx_runs_status ON runs(status, start_time DESC)",
    "idx_events_type": "CREATE INDEX idx_events_type ON events(run_id, event_type)",
    "idx_events_step": "CREATE INDEX idx_events_step ON events(run_id, step_name, event_type)",
}
_SEQ_INDEX = "idx_events_run_seq"
_CREATE_SEQ_INDEX = f"CREATE UNIQUE INDEX {_SEQ_INDEX} ON events(run_id, seq)"

# Takes seq and timestamp from the event JSON inside SQLite, so storing an event needs
# no decode in Python. Named parameters (numbered ones with a sequence are deprecated
# since 3.12): run_id, seq (the fallback), data (the event JSON).
_INSERT_EVENT = """
INSERT OR IGNORE INTO events (run_id, seq, timestamp, data)
SELECT :run_id,
       CASE WHEN json_type(:data, '$.seq') = 'integer' THEN json_extract(:data, '$.seq')
            ELSE :seq END,
       CASE WHEN json_type(:data, '$.timestamp') IN ('integer', 'real')
            THEN json_extract(:data, '$.timestamp') ELSE 0 END,
       :data
"""

# A 'running' row for a run seen first through append_events; its start time is the
# first event's timestamp, else now. Parameters: run_id, first (event JSON or NULL), now.
_INSERT_PLACEHOLDER = f"""
INSERT OR IGNORE INTO runs (run_id, start_time, status)
VALUES (:run_id,
        CASE WHEN json_type(:first, '$.timestamp') IN ('integer', 'real')
             THEN json_extract(:first, '$.timestamp') ELSE :now END,
        '{RUNNING_STATUS}')
"""

_RUN_COLUMNS = (
    "run_id, start_time, end_time, duration_s, status, error_message, error_step, run_meta"
)
_RUN_COLUMN_NAMES = tuple(name.strip() for name in _RUN_COLUMNS.split(","))
_EVENT_COLUMNS = "seq, timestamp, event_type, step_name, data"
_STATUSES = {member.value: member for member in PipelineTerminalStatus}

# Connections inherited through fork(): kept referenced so the child never closes them
# (closing would drop POSIX locks that the child's own connection holds on the file).
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []


class NamedRow(Protocol):
    """A row read by column name (``sqlite3.Row``; a dict row of the PostgreSQL store)."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True)
class RunLease:
    """Who is executing an unfinished run (``host:pid``) and when it last showed life."""

    run_id: str
    owner: str
    heartbeat: datetime

    @property
    def host(self) -> str:
        return self.owner.rpartition(":")[0]

    @property
    def pid(self) -> int | None:
        text = self.owner.rpartition(":")[2]
        return int(text) if text.isdigit() else None


def lease_owner() -> str:
    """This process, as a lease owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_state(
    lease: RunLease | None, *, now: float | None = None, timeout: float = LEASE_TIMEOUT_S
) -> str:
    """``live``, ``dead`` or ``unknown`` for an unfinished run with this lease.

    ``dead``: the lease was not renewed for `timeout` seconds, or its owner ran on this
    host and that process no longer exists. ``unknown``: no lease (a run written by an
    older version or by upstream), so nothing tells whether its process lives.
    """
    if lease is None:
        return "unknown"
    current = time.time() if now is None else now
    if current - lease.heartbeat.timestamp() > timeout:
        return "dead"
    if lease.host == socket.gethostname() and lease.pid is not None and not _pid_alive(lease.pid):
        return "dead"
    return "live"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


class SQLiteBackend:
    """Run store backed by one SQLite file; instances and processes may share the file.

    Construction creates parent directories and the schema (migrating older files).
    A file that is not a SQLite database raises ``sqlite3.DatabaseError`` and is left
    untouched. ``timeout`` is how long a write waits for another writer.

    ``read_only=True`` opens an existing file for reading only (see the module's notes):
    nothing is created or migrated, and every write raises ``sqlite3.OperationalError``.
    """

    def __init__(
        self, db_path: str | Path, *, timeout: float = 5.0, read_only: bool = False
    ) -> None:
        self._db_path = Path(db_path)
        self._timeout = timeout
        self._read_only = read_only
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._finalizer: weakref.finalize[..., SQLiteBackend] | None = None
        self._run_select: str | None = None
        if read_only:
            self._run_columns()  # a file that is missing or not a database fails here
            return
        self._ensure_parent_dir()
        self._open_schema()

    @property
    def read_only(self) -> bool:
        """Whether this backend was opened for reading only."""
        return self._read_only

    def _open_schema(self) -> None:
        """Create or check the schema, retrying while another process holds the file.

        SQLite answers a journal-mode switch or a schema read that races with another
        process's first write with an immediate "database is locked", without waiting
        for its busy timeout: retry until `timeout` has passed.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                with self._failure_context("open"):
                    self._init_schema(self._connection())
                return
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    @property
    def db_path(self) -> Path:
        """Path of the SQLite file."""
        return self._db_path

    def close(self) -> None:
        """Release the connection; using the backend again reconnects."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._conn = None
            self._finalizer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteBackend({str(self._db_path)!r})"

    # -- writes ---------------------------------------------------------------------

    def save_run(self, run: RunRecord, events: list[str]) -> None:
        """Store the run and its events in one transaction.

        A ``running`` placeholder row (from ``append_events``) is completed; any other
        existing row with the same id raises ``sqlite3.IntegrityError``. Invalid event
        JSON raises ``json.JSONDecodeError`` and nothing of the call is stored.
        """
        with self._write("save run " + repr(run.run_id), run.run_id, events) as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
            values = _run_values(run)
            if row is None:
                conn.execute(
                    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values
                )
            elif row[0] == RUNNING_STATUS:
                # (a durable run's resumed segment completes the row its first segment wrote:
                # the run started when that one did, and its duration sums its segments')
                conn.execute(
                    "UPDATE runs SET start_time = MIN(COALESCE(start_time, ?), ?),"
                    " end_time = ?, duration_s = COALESCE(duration_s, 0) + ?, status = ?,"
                    " error_message = ?, error_step = ?, run_meta = ? WHERE run_id = ?",
                    (values[1], *values[1:], run.run_id),
                )
            else:
                raise RunAlreadyStored(f"run {run.run_id!r} is already stored in {self._db_path}")
            self._insert_events(conn, run.run_id, events)

    def append_events(self, run_id: str, events: list[str]) -> None:
        """Store events of an unfinished run, creating its ``running`` row if needed.

        Events already stored under the same ``seq`` are ignored, so a retried flush
        does not duplicate anything.
        """
        with self._write("append events to run " + repr(run_id), run_id, events) as conn:
            now = time.time()
            conn.execute(
                _INSERT_PLACEHOLDER,
                {"run_id": run_id, "first": events[0] if events else None, "now": now},
            )
            self._insert_events(conn, run_id, events)
            conn.execute(_UPSERT_LEASE, {"run_id": run_id, "owner": lease_owner(), "now": now})

    def beat(self, run_id: str) -> bool:
        """Renew this process's lease on an unfinished run; False if the run is not running."""
        with self._write("renew the lease of run " + repr(run_id), run_id, []) as conn:
            cursor = conn.execute(
                _UPSERT_LEASE, {"run_id": run_id, "owner": lease_owner(), "now": time.time()}
            )
            return cursor.rowcount > 0

    def get_leases(self, run_ids: Sequence[str] | None = None) -> dict[str, RunLease]:
        """Leases of runs that are still ``running`` (of `run_ids`, or all of them)."""
        sql = (
            "SELECT l.run_id, l.owner, l.heartbeat FROM run_leases l JOIN runs r USING (run_id)"
            f" WHERE r.status = '{RUNNING_STATUS}'"
        )
        params: tuple[object, ...] = ()
        if run_ids is not None:
            wanted = list(dict.fromkeys(run_ids))
            if not wanted:
                return {}
            sql += f" AND l.run_id IN ({', '.join('?' * len(wanted))})"
            params = tuple(wanted)
        try:
            rows = self._query("read run leases", sql, params)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a file this version could not migrate
                return {}
            raise
        return {row[0]: RunLease(row[0], str(row[1]), utc_from_epoch(row[2])) for row in rows}

    def get_events_after(
        self, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Up to `limit` events of the run with ``seq > after_seq``, in ``seq`` order."""
        validate_paging(limit, 0)
        rows = self._query(
            "read events of run " + repr(run_id),
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? AND seq > ?"
            " ORDER BY seq, id LIMIT ?",
            (run_id, after_seq, limit),
        )
        return [event for event in map(_row_to_event, rows) if event is not None]

    def get_event_data(
        self, run_id: str, without_data: Sequence[str] = ()
    ) -> list[tuple[int, float, str, str, str | None]]:
        """``(seq, timestamp, type, step, data)`` of every event of the run, in ``seq`` order.

        The raw rows, for readers that parse the JSON themselves and only when needed
        (the dashboard): no ``StoredEvent`` or datetime is built per event, and events
        whose type is in `without_data` come without their JSON (``None``; fetch it
        later with :meth:`get_event_json`). A time no date can hold reads as 0.
        """
        skip = list(dict.fromkeys(without_data))
        data = "data"
        if skip:
            data = f"CASE WHEN event_type IN ({', '.join('?' * len(skip))}) THEN NULL ELSE data END"
        rows = self._query(
            "read events of run " + repr(run_id),
            f"SELECT seq, timestamp, event_type, step_name, {data} FROM events"
            " WHERE run_id = ? ORDER BY seq, id",
            (*skip, run_id),
        )
        return [
            (row[0], readable_epoch(row[1]), str(row[2] or ""), str(row[3] or ""), _text(row[4]))
            for row in rows
            if _is_seq(row[0])
        ]

    def get_event_json(self, run_id: str, seqs: Sequence[int]) -> dict[int, str]:
        """The stored JSON of the run's events with these ``seq`` numbers."""
        wanted = sorted(set(seqs))
        found: dict[int, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._query(
                "read events of run " + repr(run_id),
                f"SELECT seq, data FROM events WHERE run_id = ? AND seq IN"
                f" ({', '.join('?' * len(chunk))})",
                (run_id, *chunk),
            )
            found.update((row[0], _text(row[1]) or "null") for row in rows if _is_seq(row[0]))
        return found

    def count_runs(self) -> int:
        """How many runs the store holds."""
        return int(self._query("count runs", "SELECT COUNT(*) FROM runs", ())[0][0])

    def count_events(self, run_id: str) -> int:
        """How many events the run has stored."""
        rows = self._query(
            "count events of run " + repr(run_id),
            "SELECT COUNT(*) FROM events WHERE run_id = ?",
            (run_id,),
        )
        return int(rows[0][0])

    def delete_run(self, run_id: str) -> bool:
        """Delete the run and its events; return whether the run existed.

        A durable run's checkpoint in the same file (its ``durable_*`` rows) goes with it,
        in the same transaction: a deleted run cannot be resumed into half a history.
        """
        with self._write("delete run " + repr(run_id), run_id, []) as conn:
            conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
            for table in ("run_leases", *DURABLE_TABLES):
                if _has_table(conn, table):
                    conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    # -- reads ----------------------------------------------------------------------

    def listing(self) -> RunListing:
        """This store's runs listed in SQL (pages, counts, statistics: `storage.listing`)."""
        from justpipe.storage.listing import Dialect, RunListing

        with self._lock, self._failure_context("read the store's tables"):
            durable = _has_table(self._connection(), "durable_checkpoints")
        dialect = Dialect(
            runs="runs",
            columns=self._run_columns(),
            checkpoints="durable_checkpoints" if durable else None,
            scope="1 = 1",
            scope_params=(),
            mark="?",
            number="typeof({c}) IN ('integer', 'real')",
            day="date(start_time, 'unixepoch')",
            tiebreak="rowid",
        )
        return RunListing(dialect, self._query)

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._query(
            "read run " + repr(run_id),
            f"SELECT {self._run_columns()} FROM runs WHERE run_id = ?",
            (run_id,),
        )
        return _row_to_run(rows[0]) if rows else None

    def list_runs(
        self,
        status: PipelineTerminalStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        validate_paging(limit, offset)
        where, params = _status_filter(status)
        rows = self._query(
            "list runs",
            f"SELECT {self._run_columns()} FROM runs {where}"
            " ORDER BY start_time DESC, rowid DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_row_to_run(row) for row in rows]

    def get_events(self, run_id: str, event_type: EventType | None = None) -> list[StoredEvent]:
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ?"
        params: tuple[object, ...] = (run_id,)
        if event_type is not None:
            sql += " AND event_type = ?"
            params += (event_type.value,)
        rows = self._query("read events of run " + repr(run_id), sql + " ORDER BY seq, id", params)
        return [event for event in map(_row_to_event, rows) if event is not None]

    def find_runs_by_prefix(self, run_id_prefix: str, limit: int = 10) -> list[RunRecord]:
        """Runs whose id starts with the prefix (ASCII case-insensitive), newest first.

        Prefixes with characters outside ``[A-Za-z0-9_-]`` match nothing.
        """
        validate_paging(limit, 0)
        if not is_run_id_prefix(run_id_prefix):
            return []
        pattern = _escape_like(run_id_prefix) + "%"
        rows = self._query(
            "find runs by prefix " + repr(run_id_prefix),
            f"SELECT {self._run_columns()} FROM runs WHERE run_id LIKE ? ESCAPE '\\'"
            " ORDER BY start_time DESC, rowid DESC LIMIT ?",
            (pattern, limit),
        )
        return [_row_to_run(row) for row in rows]

    def _run_columns(self) -> str:
        """The select list of a run row; columns an older file lacks read as NULL."""
        if self._run_select is None:
            with self._lock, self._failure_context("read the runs table"):
                present = _column_names(self._connection(), "runs")
            if not present:
                raise sqlite3.OperationalError(
                    f"run store {self._db_path}: no runs table (not a justpipe run store)"
                )
            self._run_select = ", ".join(
                _select_column(name, present) for name in _RUN_COLUMN_NAMES
            )
        return self._run_select

    # -- connection and transactions ------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """Return this process's connection, opening it on first use (call under the lock)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            _INHERITED_CONNECTIONS.append(self._conn)
            if self._finalizer is not None:
                self._finalizer.detach()
        if self._read_only:
            conn = connect_read_only(self._db_path, timeout=self._timeout, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._conn, self._pid = conn, os.getpid()
            self._finalizer = weakref.finalize(self, conn.close)
            return conn
        conn = sqlite3.connect(
            self._db_path, timeout=self._timeout, check_same_thread=False, isolation_level=None
        )
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        self._finalizer = weakref.finalize(self, conn.close)
        return conn

    @contextmanager
    def _write(
        self, action: str, run_id: str, events: Sequence[str]
    ) -> Iterator[sqlite3.Connection]:
        """Run the body in an IMMEDIATE transaction; roll back on any error."""
        with self._lock, self._failure_context(action, run_id, events):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")

    def _query(self, action: str, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        with self._lock, self._failure_context(action):
            return self._connection().execute(sql, params).fetchall()

    @contextmanager
    def _failure_context(
        self, action: str, run_id: str = "", events: Sequence[str] = ()
    ) -> Iterator[None]:
        """Re-raise SQLite errors with the file, the action and a hint, same class.

        Malformed event JSON is reported as ``json.JSONDecodeError`` naming the event.
        """
        try:
            yield
        except RunAlreadyStored:
            raise
        except sqlite3.Error as exc:
            bad_event = _first_bad_event(run_id, events) if "JSON" in str(exc) else None
            if bad_event is not None:
                raise bad_event from None
            raise _explained(exc, action, self._db_path, self._timeout) from exc

    def _insert_events(self, conn: sqlite3.Connection, run_id: str, events: list[str]) -> None:
        if not events:
            return
        for index, data in enumerate(events):
            if not isinstance(data, str) or not data.lstrip().startswith("{"):
                parse_event_object(run_id, index, data)
        top = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        conn.executemany(
            _INSERT_EVENT,
            (
                {"run_id": run_id, "seq": top + position, "data": data}
                for position, data in enumerate(events, start=1)
            ),
        )

    def _ensure_parent_dir(self) -> None:
        if str(self._db_path) == ":memory:":
            return
        parent = self._db_path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise type(exc)(
                exc.errno, f"cannot create the run store directory {parent}: {exc.strerror}"
            ) from exc

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        """Create or migrate the schema; a store that is already current is only read."""
        with self._lock:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            if _schema_is_current(conn):
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _TABLES.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                _migrate_runs_columns(conn)
                existing = _index_names(conn)
                for name, ddl in _PLAIN_INDEXES.items():
                    if name not in existing:
                        conn.execute(ddl)
                self._make_seq_index_unique(conn)
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")

    def _make_seq_index_unique(self, conn: sqlite3.Connection) -> None:
        """Create the unique (run_id, seq) index, or upgrade the old plain one.

        Files written by upstream can hold duplicate (run_id, seq) pairs; those keep
        the plain index (nothing is deleted) and a warning says why.
        """
        unique = _index_is_unique(conn, _SEQ_INDEX)
        if unique:
            return
        conn.execute("SAVEPOINT seq_index")
        try:
            if unique is not None:
                conn.execute(f"DROP INDEX {_SEQ_INDEX}")
            conn.execute(_CREATE_SEQ_INDEX)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO seq_index")
            _log.warning(
                "%s holds events with duplicate (run_id, seq); keeping the non-unique "
                "index %s, so repeated appends are not de-duplicated in this file",
                self._db_path,
                _SEQ_INDEX,
            )
        conn.execute("RELEASE seq_index")


def _schema_is_current(conn: sqlite3.Connection) -> bool:
    """Whether nothing needs creating or migrating (files kept with a plain seq index retry)."""
    columns = _column_names(conn, "runs")
    if not columns or "run_meta" not in columns or "error_step" not in columns:
        return False
    if not _column_names(conn, "events") or not _column_names(conn, "run_leases"):
        return False
    return (
        _index_names(conn).issuperset(_PLAIN_INDEXES) and _index_is_unique(conn, _SEQ_INDEX) is True
    )


def _migrate_runs_columns(conn: sqlite3.Connection) -> None:
    """Bring an older ``runs`` table up to date (rename user_meta, add new columns)."""
    columns = _column_names(conn, "runs")
    if "user_meta" in columns and "run_meta" not in columns:
        conn.execute("ALTER TABLE runs RENAME COLUMN user_meta TO run_meta")
        columns = _column_names(conn, "runs")
    for column in ("run_meta", "error_step"):
        if column not in columns:
            conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")


def _select_column(name: str, present: set[str]) -> str:
    if name in present:
        return name
    if name == "run_meta" and "user_meta" in present:  # upstream's older name
        return "user_meta AS run_meta"
    return f"NULL AS {name}"


def _column_names(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    return bool(_column_names(conn, table))


def _index_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {row[0] for row in rows}


def _index_is_unique(conn: sqlite3.Connection, name: str) -> bool | None:
    """True/False for an existing index's uniqueness, None when it does not exist."""
    for row in conn.execute("PRAGMA index_list(events)"):
        if row[1] == name:
            return bool(row[2])
    return None


class RunAlreadyStored(sqlite3.IntegrityError):
    """``save_run`` for an id whose run is already complete."""


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back unless SQLite already did (it does on some I/O and full-disk errors)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _first_bad_event(run_id: str, events: Sequence[str]) -> Exception | None:
    for index, data in enumerate(events):
        try:
            parse_event_object(run_id, index, data)
        except (TypeError, ValueError) as exc:
            return exc
    return None


def _explained(exc: sqlite3.Error, action: str, path: Path, timeout: float) -> sqlite3.Error:
    text = str(exc)
    hint = ""
    if "locked" in text or "busy" in text:
        hint = f"; another process held a write lock for more than {timeout:g}s"
    elif "not a database" in text or "malformed" in text:
        hint = "; the file is not an intact SQLite database and was left untouched"
    elif "readonly" in text:
        hint = "; the file or its directory is not writable"
    elif "unable to open" in text:
        hint = "; check that the path is a writable file location, not a directory"
    explained = type(exc)(f"run store {path}: cannot {action}: {text}{hint}")
    explained.sqlite_errorcode = exc.sqlite_errorcode
    explained.sqlite_errorname = exc.sqlite_errorname
    return explained


def _run_values(run: RunRecord) -> tuple[object, ...]:
    return (
        run.run_id,
        epoch_of(run.start_time),
        None if run.end_time is None else epoch_of(run.end_time),
        None if run.duration is None else run.duration.total_seconds(),
        run.status.value,
        run.error_message,
        run.error_step,
        run.run_meta,
    )


def _status_filter(status: PipelineTerminalStatus | None) -> tuple[str, tuple[object, ...]]:
    """WHERE clause for a status; FAILED also covers rows that read back as FAILED."""
    if status is None:
        return "", ()
    if status is not PipelineTerminalStatus.FAILED:
        return "WHERE status = ?", (status.value,)
    others = tuple(value for value in _STATUSES if value != status.value)
    marks = ", ".join("?" * len(others))
    return f"WHERE status IS NULL OR status NOT IN ({marks})", others


def _row_to_run(row: NamedRow) -> RunRecord:
    """One run row; what cannot be read is named in ``damage``, the rest is kept."""
    problems: list[str] = []
    run_id = _text(row["run_id"])
    if run_id is None:
        run_id = ""
        problems.append("run_id is missing (NULL)")
    elif not isinstance(row["run_id"], (str, int)):
        problems.append(f"run_id is not text: {row['run_id']!r}"[:80])
    raw_status = row["status"]
    status = _STATUSES.get(raw_status, PipelineTerminalStatus.FAILED)
    error_message = _text(row["error_message"])
    if raw_status == RUNNING_STATUS and error_message is None:
        error_message = UNFINISHED_RUN_MESSAGE
    try:
        start_time = read_epoch(row["start_time"], "start_time")
    except ValueError as exc:
        start_time = EPOCH
        problems.append(str(exc))
    end_time = _optional(row["end_time"], "end_time", read_epoch, problems)
    duration = _optional(row["duration_s"], "duration_s", read_seconds, problems)
    return RunRecord(
        run_id=run_id,
        start_time=start_time,
        end_time=end_time,
        duration=duration,
        status=status,
        error_message=error_message,
        error_step=_text(row["error_step"]),
        run_meta=_text(row["run_meta"]),
        damage="; ".join(problems) or None,
    )


_T = TypeVar("_T")


def _optional(
    value: object, column: str, read: Callable[[object, str], _T], problems: list[str]
) -> _T | None:
    if value is None:
        return None
    try:
        return read(value, column)
    except ValueError as exc:
        problems.append(str(exc))
        return None


def _text(value: object) -> str | None:
    """A stored text column; a blob or number there is shown as text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _is_seq(value: object) -> bool:
    """Whether a stored ``seq`` is one (an integer; a foreign file may hold anything)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _row_to_event(row: NamedRow) -> StoredEvent | None:
    """One event row, or None for a row that is not an event: an unknown type, or a
    ``seq`` that is not an integer (only a foreign file holds one; events are ordered,
    paged and streamed by it). JSON that is NULL or a BLOB reads as its text (or ``null``)."""
    event_type = parse_event_type(row["event_type"])
    if event_type is None or not _is_seq(row["seq"]):
        return None
    step_name = row["step_name"]
    return StoredEvent(
        seq=row["seq"],
        timestamp=utc_from_epoch(row["timestamp"]),
        event_type=event_type,
        step_name="" if step_name is None else str(step_name),
        data=_text(row["data"]) or "null",
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
