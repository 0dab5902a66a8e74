"""The run store on PostgreSQL: every pipeline's runs in one database (``justpipe[postgres]``).

`PostgresDatabase` is one database (a pool of connections, the schema of
`justpipe.storage.pgschema` created or migrated on first use); `PostgresBackend` is one
pipeline's runs in it, with the same protocol and the same behaviour as `SQLiteBackend`
(the ``running`` row of an unfinished run, events keeping their JSON ``seq`` and stored
once per ``seq``, the ``run_leases`` heartbeat), so persistence, the CLI and the
dashboard use either. ``JUSTPIPE_STORAGE_URL=postgresql://...`` makes them all use
`shared_database`: one `PostgresDatabase` per URL and process, closed at exit.

Errors name the server (host, port, database), never the password: a server that cannot
be reached, refuses the login or drops the connection raises `StorageUnavailableError`
(a ``ConnectionError``); a statement the server refuses raises `StorageQueryError` (its
``sqlstate`` kept). Both are `justpipe.storage.url.StorageError`, which the tools report
as a store they cannot read; `save_run` over a finished run raises
`RunAlreadyStoredError` (a ``psycopg.IntegrityError``), as SQLite's raises
``sqlite3.IntegrityError``.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

import psycopg
from psycopg.rows import dict_row

from justpipe.durable.store import Lease, lease_is_live
from justpipe.storage.interface import (
    RunRecord,
    StoredEvent,
    epoch_of,
    is_run_id_prefix,
    utc_from_epoch,
    validate_paging,
)
from justpipe.storage.listing import Dialect, RunListing
from justpipe.storage.pgpool import ConnectionSource, PostgresPool, unavailable
from justpipe.storage.pgschema import ensure_schema, readable_schema
from justpipe.storage.segments import DurableRun, durable_run_of
from justpipe.storage.serialize import dumps_jsonable, parse_event_object
from justpipe.storage.sqlite import (
    RUNNING_STATUS,
    RunLease,
    _row_to_event,
    _row_to_run,
    lease_owner,
)
from justpipe.storage.url import PostgresLocation, StorageQueryError, StorageUnavailableError
from justpipe.types import EventType, PipelineTerminalStatus

__all__ = [
    "CHANGES_CHANNEL",
    "PostgresBackend",
    "PostgresDatabase",
    "RunAlreadyStoredError",
    "events_cte",
    "events_param",
    "notify_expression",
    "placeholder_cte",
    "shared_database",
]

_RUN_COLUMNS = (
    "run_id, start_time, end_time, duration_s, status, error_message, error_step, run_meta"
)
DURABLE_TABLES = ("durable_checkpoints", "durable_counters", "durable_parts", "durable_leases")
"""The tables of a durable run's checkpoint (`justpipe.durable.postgres`), keyed by run_id."""
_EVENT_COLUMNS = "seq, timestamp, event_type, step_name, data"
_STATUS_VALUES = [member.value for member in PipelineTerminalStatus]

CHANGES_CHANNEL = "justpipe_runs"
"""Every write that changes a run notifies this channel (``NOTIFY``, sent on commit) with
``"<pipeline_hash> <run_id>"``: the dashboard's live pages listen instead of polling."""

# the notification of a write, as an expression of its statement's final SELECT
_NOTIFY = f"pg_notify('{CHANGES_CHANNEL}', %(pipeline)s || ' ' || %(run_id)s)"

def notify_expression() -> str:
    """The SQL expression that notifies the change of run %(run_id)s of %(pipeline)s."""
    return _NOTIFY


# Each write is one statement (its CTEs run together, atomically, in one round trip, and
# their rows become visible together, so an event's run row may be inserted beside it).
# Parameters by name: run_id, pipeline, now, events (event JSON texts, one binary array).


def events_cte(run: str) -> str:
    """Stores %(events)s for the run that the CTE `run` yields (no row there: nothing).

    `seq` and `timestamp` come from each event's JSON (like the SQLite store: no decoding
    in Python; `json_to_record` reads the four fields in one parse of each text, and its
    `json` columns keep a value's JSON form, so only a JSON integer is a seq); an event
    without an integer seq is numbered after the run's highest stored one. An event
    stored before under the same seq is kept (a retried flush, or a checkpoint that
    wrote it first).
    """
    return f"""INSERT INTO justpipe.events (run_id, seq, timestamp, event_type, step_name, data)
    SELECT {run}.run_id,
           CASE WHEN f.seq::text ~ '^-?[0-9]{{1,18}}$' THEN f.seq::text::bigint
                ELSE (SELECT COALESCE(MAX(seq), 0) FROM justpipe.events
                      WHERE run_id = %(run_id)s) + e.n END,
           CASE WHEN f."timestamp"::text ~ '^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$'
                THEN f."timestamp"::text::double precision ELSE 0 END,
           f.type, f.stage, e.d
    FROM {run}, unnest(%(events)b::text[]) WITH ORDINALITY AS e(d, n),
         LATERAL json_to_record(e.d::json) AS f(seq json, "timestamp" json, type text, stage text)
    ON CONFLICT (run_id, seq) DO NOTHING"""


def placeholder_cte(source: str) -> str:
    """A 'running' row for a run first seen through its events (append_events, a
    checkpoint), if `source` yields a row; it starts at the first event's timestamp,
    else %(now)s. Returns the run id when it inserted one."""
    return f"""INSERT INTO justpipe.runs (run_id, pipeline_hash, start_time, status, created_at)
    SELECT %(run_id)s, %(pipeline)s,
           COALESCE((SELECT CASE WHEN json_typeof(e.d::json -> 'timestamp') = 'number'
                                 THEN (e.d::json ->> 'timestamp')::double precision END
                     FROM unnest(%(events)b::text[]) WITH ORDINALITY AS e(d, n) WHERE n = 1),
                    %(now)s),
           '{RUNNING_STATUS}', %(now)s
    FROM {source}
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id"""


# The run whose events these are: the placeholder just inserted, or the stored row.
_TARGET_RUN = """SELECT run_id FROM placeholder
    UNION ALL SELECT run_id FROM justpipe.runs WHERE run_id = %(run_id)s"""

# An unfinished run's events; its 'running' row if new; this process's lease on it
# (renewed), while the run is 'running'. Parameters: run_id, pipeline, now, events, owner.
_APPEND_EVENTS = f"""
WITH placeholder AS ({placeholder_cte("(SELECT 1) AS always")}),
run AS ({_TARGET_RUN}),
events AS ({events_cte("run")}),
lease AS (
    INSERT INTO justpipe.run_leases (run_id, owner, heartbeat)
    SELECT run_id, %(owner)s, %(now)s FROM placeholder
    UNION ALL SELECT run_id, %(owner)s, %(now)s FROM justpipe.runs
    WHERE run_id = %(run_id)s AND status = '{RUNNING_STATUS}'
    ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, heartbeat = excluded.heartbeat
)
SELECT {_NOTIFY}
"""

# A finished run's row: a new one, or the 'running' row it completes (a durable run's
# resumed segment completes the row its first segment wrote: the run started when that
# one did, and its duration sums its segments'), and its events. 0: it was already
# finished, and nothing was written.
_SAVE_RUN = f"""
WITH run AS (
    INSERT INTO justpipe.runs AS r (run_id, pipeline_hash, start_time, end_time, duration_s,
        status, error_message, error_step, run_meta, created_at)
    VALUES (%(run_id)s, %(pipeline)s, %(start)s, %(end)s, %(duration)s, %(status)s,
        %(error)s, %(step)s, %(meta)s, %(now)s)
    ON CONFLICT (run_id) DO UPDATE SET start_time = LEAST(r.start_time, excluded.start_time),
        end_time = excluded.end_time,
        duration_s = COALESCE(r.duration_s, 0) + excluded.duration_s,
        status = excluded.status, error_message = excluded.error_message,
        error_step = excluded.error_step, run_meta = excluded.run_meta
    WHERE r.status = '{RUNNING_STATUS}'
    RETURNING run_id
),
events AS ({events_cte("run")})
SELECT (SELECT count(*) FROM run) AS saved, {_NOTIFY}
"""

# Renews (or takes) the lease of a run that is still 'running'; finished runs get none.
_UPSERT_LEASE = f"""
INSERT INTO justpipe.run_leases (run_id, owner, heartbeat)
SELECT run_id, %(owner)s, %(now)s FROM justpipe.runs
WHERE run_id = %(run_id)s AND status = '{RUNNING_STATUS}'
ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, heartbeat = excluded.heartbeat
RETURNING 1
"""


# A pipeline's durable runs: the checkpoint row, two fields of its document, the lease.
_DURABLE_COLUMNS = """c.run_id, c.status, c.segment, c.updated_at, l.owner, l.expires_at,
    extract(epoch FROM clock_timestamp())::double precision AS now"""
_DURABLE_FROM = """FROM justpipe.durable_checkpoints c
    LEFT JOIN justpipe.durable_leases l USING (run_id)
    WHERE c.pipeline_hash = %(pipeline)s{where}"""
_DURABLE_RUNS = f"""SELECT {_DURABLE_COLUMNS}, c.data::json ->> 'end' AS end,
    CASE WHEN c.status = 'suspended' THEN (c.data::json -> 'suspended')::text END AS suspended
    {_DURABLE_FROM}"""
_DURABLE_ROWS = f"SELECT {_DURABLE_COLUMNS}, c.data {_DURABLE_FROM}"


def _with_document_fields(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with the ``end`` and ``suspended`` fields of its document (none if unreadable)."""
    try:
        document = json.loads(row.pop("data"))
    except (TypeError, ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        document = {}
    end = document.get("end")
    suspended = document.get("suspended") if row["status"] == "suspended" else None
    return row | {"end": end, "suspended": None if suspended is None else json.dumps(suspended)}


class RunAlreadyStoredError(psycopg.IntegrityError):
    """``save_run`` for an id whose run is already complete."""


class PostgresDatabase:
    """One PostgreSQL database as the store of every pipeline's runs and checkpoints.

    `source`: a ``postgresql://`` URL or `PostgresLocation` (a `PostgresPool` of
    `max_size` connections is made, and closed by `close()`), or a pool to borrow (a
    `PostgresPool`, a ``psycopg_pool.ConnectionPool``: anything whose ``connection()``
    lends a psycopg connection; its owner closes it). Nothing connects until first use,
    which creates or migrates the schema.
    """

    def __init__(
        self,
        source: str | PostgresLocation | ConnectionSource,
        *,
        max_size: int = 4,
        create: bool = True,
    ) -> None:
        if isinstance(source, (str, PostgresLocation)):
            self.pool: ConnectionSource = PostgresPool(source, max_size=max_size)
            self._owns_pool = True
        elif callable(getattr(source, "connection", None)):
            self.pool = source
            self._owns_pool = False
        else:
            raise TypeError(
                "PostgresDatabase needs a postgresql:// URL or a connection pool (an object "
                f"whose connection() lends a psycopg connection), got {type(source).__name__}"
            )
        location = getattr(self.pool, "location", None)
        self.location = location if isinstance(location, PostgresLocation) else None
        self._server = self.location.server if self.location is not None else "the pool's server"
        self._create = create
        self._ready = False
        self._ready_lock = threading.Lock()
        self._pipelines: set[tuple[str, bool]] = set()  # recorded by this process

    def __repr__(self) -> str:
        where = self.location.display if self.location is not None else repr(self.pool)
        return f"PostgresDatabase({where!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def opened(self) -> bool:
        """Whether the database was reached (and its schema made current) by this object."""
        return self._ready

    def close(self) -> None:
        """Close the pool, if this object made it (a borrowed pool is its owner's to close)."""
        close = getattr(self.pool, "close", None)
        if self._owns_pool and callable(close):
            close()

    def open(self) -> None:
        """Connect and create or migrate the schema, once (raises when that fails).

        Made with ``create=False`` (the tools that only read), it creates and migrates
        nothing: a database without the schema is empty (`has_schema` False, asked again
        at the next call, as a writer may create it meanwhile).
        """
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            with self._connection("open the store") as conn:
                self._learn_server(conn)
                if self._create:
                    ensure_schema(conn)
                    self._ready = True
                else:
                    self._ready = readable_schema(conn)

    @property
    def has_schema(self) -> bool:
        """Whether the database holds justpipe's schema (connects on first use)."""
        self.open()
        return self._ready

    def backend(self, pipeline_hash: str) -> PostgresBackend:
        """The run store of one pipeline in this database."""
        return PostgresBackend(self, pipeline_hash)

    # -- pipelines ------------------------------------------------------------------

    def register_pipeline(
        self, pipeline_hash: str, name: str, description: Any = None, *, known: bool = True
    ) -> None:
        """Record a pipeline (its name and ``describe()`` document), so the tools list it.

        Once per pipeline and process. A pipeline first recorded without its document
        (`known` False: by a writer that only had its hash and name) gets it later.
        """
        key = (pipeline_hash, known)
        if key in self._pipelines or (pipeline_hash, True) in self._pipelines:
            return
        text = description if isinstance(description, str) else dumps_jsonable(description or {})
        self.write(
            "register pipeline " + repr(name),
            "INSERT INTO justpipe.pipelines AS p (pipeline_hash, name, description, created_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (pipeline_hash) DO UPDATE"
            " SET name = excluded.name, description = excluded.description"
            " WHERE %s AND p.description = '{}'",
            (pipeline_hash, name, text, time.time(), known),
        )
        self._pipelines.add(key)

    def move_run(self, run_id: str, pipeline_hash: str, name: str) -> None:
        """File a run under another pipeline (a forced resume by a changed definition)."""
        self.register_pipeline(pipeline_hash, name, known=False)
        self.write(
            "move run " + repr(run_id),
            "UPDATE justpipe.runs SET pipeline_hash = %s WHERE run_id = %s",
            (pipeline_hash, run_id),
        )

    def pipelines(self) -> list[tuple[str, str]]:
        """``(pipeline_hash, name)`` of every pipeline the database knows, by hash."""
        if not self.has_schema:
            return []
        rows = self.query(
            "list pipelines",
            "SELECT pipeline_hash, name FROM justpipe.pipelines ORDER BY pipeline_hash",
            (),
        )
        return [(str(row["pipeline_hash"]), str(row["name"])) for row in rows]

    def description(self, pipeline_hash: str) -> dict[str, Any] | None:
        """A pipeline's ``describe()`` document (None: unknown, or not a JSON object)."""
        rows = self.query(
            "read pipeline " + repr(pipeline_hash),
            "SELECT description FROM justpipe.pipelines WHERE pipeline_hash = %s",
            (pipeline_hash,),
        )
        if not rows:
            return None
        try:
            found = json.loads(rows[0]["description"])
        except (TypeError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    # -- connections and transactions -----------------------------------------------

    @contextmanager
    def transaction(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one transaction, committed at the end of the block."""
        self.open()
        with self._connection(action) as conn, conn.transaction():
            yield conn

    def write(self, action: str, statement: str, params: Any) -> tuple[Any, ...] | None:
        """One statement, its own transaction (autocommit); its first row, if any."""
        self.open()
        with self._connection(action) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchone() if cursor.description is not None else None

    def query(self, action: str, statement: str, params: Any) -> list[dict[str, Any]]:
        """Rows of one read, as dicts."""
        self.open()
        with self._connection(action) as conn, conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()

    @contextmanager
    def _connection(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except (StorageUnavailableError, RunAlreadyStoredError):
            raise
        except psycopg.Error as exc:
            raise self._explained(exc, action) from exc

    def _learn_server(self, conn: psycopg.Connection[Any]) -> None:
        if self.location is None:
            info = conn.info
            self._server = f"host {info.host}, port {info.port}, database {info.dbname}"

    def _explained(self, exc: psycopg.Error, action: str) -> Exception:
        """The error to raise: the store and the action named, the password never."""
        if _connection_lost(exc):
            if self.location is not None:
                return unavailable(self.location, f"cannot {action}", exc)
            return StorageUnavailableError(
                f"PostgreSQL run store at {self._server}: cannot {action}: {exc}"
            )
        text = f"PostgreSQL run store at {self._server}: cannot {action}: {exc}"
        if self.location is not None:
            text = self.location.redact(text)
        return StorageQueryError(text, exc.sqlstate)


def _data_error(exc: StorageQueryError) -> bool:
    """A value the server could not read (class 22: malformed JSON, a number too big...)."""
    return (exc.sqlstate or "").startswith("22")


def _connection_lost(exc: psycopg.Error) -> bool:
    """The server is gone, refused us, or is shutting down (not a problem of the request)."""
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in {"57P01", "57P02", "57P03", "53300"}


class PostgresBackend:
    """One pipeline's runs in a PostgreSQL database (the run store protocol, as SQLite's).

    `source`: a `PostgresDatabase`, or what builds one (a ``postgresql://`` URL: this
    backend then owns its pool and `close()` closes it; or a connection pool).
    `pipeline_hash` scopes every read, count and delete to that pipeline's runs;
    `pipeline_name` and `description` are recorded for it (the dashboard's pipeline list),
    unless already recorded.
    """

    def __init__(
        self,
        source: str | PostgresLocation | ConnectionSource | PostgresDatabase,
        pipeline_hash: str,
        *,
        pipeline_name: str | None = None,
        description: Any = None,
    ) -> None:
        if not isinstance(pipeline_hash, str) or not pipeline_hash:
            raise ValueError(f"PostgresBackend needs the pipeline's hash, got {pipeline_hash!r}")
        self._owns_database = not isinstance(source, PostgresDatabase)
        self.database = source if isinstance(source, PostgresDatabase) else PostgresDatabase(source)
        self.pipeline_hash = pipeline_hash
        self._name = pipeline_name or pipeline_hash
        if pipeline_name is not None or description is not None:
            self.database.register_pipeline(pipeline_hash, self._name, description)
        else:
            self.database.open()

    def __repr__(self) -> str:
        return f"PostgresBackend({self.database!r}, {self.pipeline_hash!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database's pool if this backend made it from a URL."""
        if self._owns_database:
            self.database.close()

    # -- writes ---------------------------------------------------------------------

    def save_run(self, run: RunRecord, events: list[str]) -> None:
        """Store the run and its events in one transaction (see `SQLiteBackend.save_run`).

        A ``running`` row (an unfinished run's, or a durable run's earlier segment) is
        completed; any other row with the same id raises `RunAlreadyStoredError`.
        """
        params = _run_values(run) | {
            "pipeline": self.pipeline_hash,
            "now": time.time(),
            "events": events_param(run.run_id, events),
        }
        self.database.register_pipeline(self.pipeline_hash, self._name, known=False)
        saved = self._write("save run " + repr(run.run_id), _SAVE_RUN, params, events)
        if saved is None or saved[0] == 0:
            where = self.database.location.display if self.database.location else "the store"
            raise RunAlreadyStoredError(f"run {run.run_id!r} is already stored in {where}")

    def append_events(self, run_id: str, events: list[str]) -> None:
        """Store events of an unfinished run, creating its ``running`` row if needed.

        Events already stored under the same ``seq`` are ignored, so a retried flush
        does not duplicate anything. The run's lease is renewed (this process's).
        """
        params = {
            "run_id": run_id,
            "pipeline": self.pipeline_hash,
            "now": time.time(),
            "events": events_param(run_id, events),
            "owner": lease_owner(),
        }
        self.database.register_pipeline(self.pipeline_hash, self._name, known=False)
        self._write("append events to run " + repr(run_id), _APPEND_EVENTS, params, events)

    def beat(self, run_id: str) -> bool:
        """Renew this process's lease on an unfinished run; False if the run is not running."""
        params = {"run_id": run_id, "owner": lease_owner(), "now": time.time()}
        renewed = self._write("renew the lease of run " + repr(run_id), _UPSERT_LEASE, params, ())
        return renewed is not None

    def delete_run(self, run_id: str) -> bool:
        """Delete the run, its events and its lease; return whether the run existed.

        A durable run's checkpoint (its ``durable_*`` rows) goes with it, in the same
        transaction: a deleted run cannot be resumed into half a history.
        """
        with self.database.transaction("delete run " + repr(run_id)) as conn:
            cursor = conn.execute(
                "DELETE FROM justpipe.runs WHERE run_id = %s AND pipeline_hash = %s",
                (run_id, self.pipeline_hash),
            )
            if cursor.rowcount == 0:
                return False
            for table in DURABLE_TABLES:
                conn.execute(f"DELETE FROM justpipe.{table} WHERE run_id = %s", (run_id,))
            conn.execute(f"SELECT {_NOTIFY}", {"pipeline": self.pipeline_hash, "run_id": run_id})
            return True

    # -- reads ----------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._query(
            "read run " + repr(run_id),
            f"SELECT {_RUN_COLUMNS} FROM justpipe.runs WHERE run_id = %s AND pipeline_hash = %s",
            (run_id, self.pipeline_hash),
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
            f"SELECT {_RUN_COLUMNS} FROM justpipe.runs WHERE pipeline_hash = %s{where}"
            " ORDER BY start_time DESC, id DESC LIMIT %s OFFSET %s",
            (self.pipeline_hash, *params, limit, offset),
        )
        return [_row_to_run(row) for row in rows]

    def count_runs(self) -> int:
        """How many runs of this pipeline the store holds."""
        rows = self._query(
            "count runs",
            "SELECT COUNT(*) AS n FROM justpipe.runs WHERE pipeline_hash = %s",
            (self.pipeline_hash,),
        )
        return int(rows[0]["n"])

    def find_runs_by_prefix(self, run_id_prefix: str, limit: int = 10) -> list[RunRecord]:
        """Runs whose id starts with the prefix (ASCII case-insensitive), newest first.

        Prefixes with characters outside ``[A-Za-z0-9_-]`` match nothing.
        """
        validate_paging(limit, 0)
        if not is_run_id_prefix(run_id_prefix):
            return []
        pattern = _escape_like(run_id_prefix.lower()) + "%"
        rows = self._query(
            "find runs by prefix " + repr(run_id_prefix),
            f"SELECT {_RUN_COLUMNS} FROM justpipe.runs"
            " WHERE lower(run_id) LIKE %s AND pipeline_hash = %s"
            " ORDER BY start_time DESC, id DESC LIMIT %s",
            (pattern, self.pipeline_hash, limit),
        )
        return [_row_to_run(row) for row in rows]

    def get_events(self, run_id: str, event_type: EventType | None = None) -> list[StoredEvent]:
        statement = f"SELECT {_EVENT_COLUMNS} FROM justpipe.events WHERE run_id = %s"
        params: tuple[object, ...] = (run_id,)
        if event_type is not None:
            statement += " AND event_type = %s"
            params += (event_type.value,)
        rows = self._query(
            "read events of run " + repr(run_id), statement + " ORDER BY seq", params
        )
        return [event for event in map(_row_to_event, rows) if event is not None]

    def get_events_after(
        self, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Up to `limit` events of the run with ``seq > after_seq``, in ``seq`` order."""
        validate_paging(limit, 0)
        rows = self._query(
            "read events of run " + repr(run_id),
            f"SELECT {_EVENT_COLUMNS} FROM justpipe.events WHERE run_id = %s AND seq > %s"
            " ORDER BY seq LIMIT %s",
            (run_id, after_seq, limit),
        )
        return [event for event in map(_row_to_event, rows) if event is not None]

    def get_event_data(
        self, run_id: str, without_data: Sequence[str] = ()
    ) -> list[tuple[int, float, str, str, str | None]]:
        """``(seq, timestamp, type, step, data)`` of every event, in ``seq`` order.

        ``data`` is None for the types in `without_data` (see `SQLiteBackend.get_event_data`).
        """
        rows = self._query(
            "read events of run " + repr(run_id),
            "SELECT seq, timestamp, event_type, step_name,"
            " CASE WHEN event_type = ANY(%s) THEN NULL ELSE data END AS data"
            " FROM justpipe.events WHERE run_id = %s ORDER BY seq",
            (list(without_data), run_id),
        )
        return [
            (
                int(row["seq"]),
                float(row["timestamp"]),
                str(row["event_type"] or ""),
                str(row["step_name"] or ""),
                row["data"],
            )
            for row in rows
        ]

    def get_event_json(self, run_id: str, seqs: Sequence[int]) -> dict[int, str]:
        """The stored JSON of the run's events with these ``seq`` numbers."""
        rows = self._query(
            "read events of run " + repr(run_id),
            "SELECT seq, data FROM justpipe.events WHERE run_id = %s AND seq = ANY(%s)",
            (run_id, sorted({int(seq) for seq in seqs})),
        )
        return {int(row["seq"]): str(row["data"]) for row in rows}

    def count_events(self, run_id: str) -> int:
        """How many events the run has stored."""
        rows = self._query(
            "count events of run " + repr(run_id),
            "SELECT COUNT(*) AS n FROM justpipe.events WHERE run_id = %s",
            (run_id,),
        )
        return int(rows[0]["n"])

    def get_leases(self, run_ids: Sequence[str] | None = None) -> dict[str, RunLease]:
        """Leases of this pipeline's runs that are still ``running`` (of `run_ids`, or all)."""
        statement = (
            "SELECT l.run_id, l.owner, l.heartbeat FROM justpipe.run_leases l"
            " JOIN justpipe.runs r USING (run_id)"
            f" WHERE r.status = '{RUNNING_STATUS}' AND r.pipeline_hash = %s"
        )
        params: tuple[object, ...] = (self.pipeline_hash,)
        if run_ids is not None:
            wanted = list(dict.fromkeys(run_ids))
            if not wanted:
                return {}
            statement += " AND l.run_id = ANY(%s)"
            params += (wanted,)
        rows = self._query("read run leases", statement, params)
        return {
            str(row["run_id"]): RunLease(
                str(row["run_id"]), str(row["owner"]), utc_from_epoch(row["heartbeat"])
            )
            for row in rows
        }

    def listing(self) -> RunListing:
        """This pipeline's runs listed in SQL (pages, counts, statistics: `storage.listing`)."""
        dialect = Dialect(
            runs="justpipe.runs",
            columns=_RUN_COLUMNS,
            checkpoints="justpipe.durable_checkpoints",
            scope="pipeline_hash = %s",
            scope_params=(self.pipeline_hash,),
            mark="%s",
            number="TRUE",
            day="to_char(to_timestamp(start_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            tiebreak="id",
        )
        return RunListing(dialect, self._query)

    def durable_runs(self, run_ids: Sequence[str] | None = None) -> dict[str, DurableRun]:
        """The durable runs of this pipeline (of `run_ids`, or all) with their checkpoints
        and whether a live process holds their lease (timed by the server's clock)."""
        wanted = None if run_ids is None else list(dict.fromkeys(run_ids))
        if wanted is not None and not wanted:
            return {}
        where = " AND c.run_id = ANY(%(ids)s)" if wanted is not None else ""
        params = {"pipeline": self.pipeline_hash, "ids": wanted}
        try:
            rows = self._query("read durable runs", _DURABLE_RUNS.format(where=where), params)
        except StorageQueryError as exc:  # a checkpoint that is not JSON: read each in Python
            if not _data_error(exc):
                raise
            rows = self._query("read durable runs", _DURABLE_ROWS.format(where=where), params)
            rows = [_with_document_fields(row) for row in rows]
        found: dict[str, DurableRun] = {}
        for row in rows:
            live = False
            if row["owner"] is not None:
                lease = Lease(str(row["run_id"]), str(row["owner"]), float(row["expires_at"]))
                live = lease_is_live(lease, now=float(row["now"]))
            found[str(row["run_id"])] = durable_run_of(
                row["run_id"],
                row["status"],
                row["segment"],
                row["updated_at"],
                row["end"],
                row["suspended"],
                live,
            )
        return found

    # -- plumbing -------------------------------------------------------------------

    def _write(
        self, action: str, statement: str, params: Any, events: Sequence[str]
    ) -> tuple[Any, ...] | None:
        """One write statement; a batch with malformed event JSON is reported by its event."""
        try:
            return self.database.write(action, statement, params)
        except StorageQueryError as exc:
            bad = _first_bad_event(params["run_id"], events) if _data_error(exc) else None
            if bad is not None:
                raise bad from None
            raise

    def _query(self, action: str, statement: str, params: Any) -> list[dict[str, Any]]:
        return self.database.query(action, statement, params)


def events_param(run_id: str, events: Sequence[str]) -> list[str]:
    """The batch as the statements' %(events)s, refusing an entry that is not a JSON
    object text before anything is stored."""
    for index, data in enumerate(events):
        if not isinstance(data, str) or not data.lstrip().startswith("{"):
            parse_event_object(run_id, index, data)
    return list(events)


def _first_bad_event(run_id: str, events: Sequence[str]) -> Exception | None:
    for index, data in enumerate(events):
        try:
            parse_event_object(run_id, index, data)
        except (TypeError, ValueError) as exc:
            return exc
    return None


def _run_values(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "start": epoch_of(run.start_time),
        "end": None if run.end_time is None else epoch_of(run.end_time),
        "duration": None if run.duration is None else run.duration.total_seconds(),
        "status": run.status.value,
        "error": run.error_message,
        "step": run.error_step,
        "meta": run.run_meta,
    }


def _status_filter(status: PipelineTerminalStatus | None) -> tuple[str, tuple[object, ...]]:
    """The condition for a status; FAILED also covers rows that read back as FAILED."""
    if status is None:
        return "", ()
    if status is not PipelineTerminalStatus.FAILED:
        return " AND status = %s", (status.value,)
    others = [value for value in _STATUS_VALUES if value != status.value]
    return " AND (status IS NULL OR status <> ALL(%s))", (others,)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- one database per URL and process ------------------------------------------------

_SHARED: dict[PostgresLocation, PostgresDatabase] = {}
_SHARED_LOCK = threading.Lock()


def shared_database(location: PostgresLocation) -> PostgresDatabase:
    """This process's `PostgresDatabase` for `location` (made on first use, closed at exit)."""
    with _SHARED_LOCK:
        database = _SHARED.get(location)
        if database is None:
            database = _SHARED[location] = PostgresDatabase(location)
        return database


@atexit.register
def close_shared_databases() -> None:
    """Close every shared database's pool (at exit; tests call it between servers)."""
    with _SHARED_LOCK:
        databases = list(_SHARED.values())
        _SHARED.clear()
    for database in databases:
        database.close()
