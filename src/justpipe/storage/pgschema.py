"""The PostgreSQL schema of the run store and the durable checkpoint store, and its migrations.

Everything lives in one schema, ``justpipe``, of the database the URL names, so it sits
beside an application's own tables without touching them (``pg_dump -n justpipe``
backs it up alone). Its version is the one row of ``justpipe.schema_version``.

`ensure_schema` runs when a process first opens the database: when the version is the
current one it only reads that row; otherwise it takes a transaction-scoped advisory
lock (so two processes starting at once queue: the first migrates, the second finds
the work done), creates the schema if needed and applies each missing migration, in
order, in that one transaction. A database migrated by a newer justpipe (a version this
one does not know) is refused rather than written with an older layout.

Unlike the SQLite layout (one file per pipeline), one database holds every pipeline:
``pipelines`` has each one's name and ``describe()`` document (SQLite's
``pipeline.json``), and ``runs`` says which pipeline each run belongs to.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from justpipe.storage.url import StorageError

__all__ = [
    "MIGRATIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SchemaTooNewError",
    "ensure_schema",
    "readable_schema",
]

SCHEMA = "justpipe"

# Migrations, in order: (version, what it does, statements). Never edit a released one:
# append the next (ALTER TABLE ...), and the databases at an older version catch up.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "runs, events, run leases, pipelines; durable checkpoints, counters, parts, leases",
        (
            """CREATE TABLE justpipe.pipelines (
                pipeline_hash TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE justpipe.runs (
                id BIGINT GENERATED ALWAYS AS IDENTITY,
                run_id TEXT PRIMARY KEY,
                pipeline_hash TEXT NOT NULL,
                start_time DOUBLE PRECISION NOT NULL,
                end_time DOUBLE PRECISION,
                duration_s DOUBLE PRECISION,
                status TEXT,
                error_message TEXT,
                error_step TEXT,
                run_meta TEXT,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX runs_by_time ON justpipe.runs (pipeline_hash, start_time DESC, id DESC)",
            """CREATE INDEX runs_by_status
                ON justpipe.runs (pipeline_hash, status, start_time DESC, id DESC)""",
            "CREATE INDEX runs_by_id_prefix ON justpipe.runs (lower(run_id) text_pattern_ops)",
            """CREATE TABLE justpipe.events (
                run_id TEXT NOT NULL REFERENCES justpipe.runs (run_id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                timestamp DOUBLE PRECISION NOT NULL,
                event_type TEXT,
                step_name TEXT,
                data TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
            "CREATE INDEX events_by_type ON justpipe.events (run_id, event_type)",
            """CREATE TABLE justpipe.run_leases (
                run_id TEXT PRIMARY KEY REFERENCES justpipe.runs (run_id) ON DELETE CASCADE,
                owner TEXT NOT NULL,
                heartbeat DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE justpipe.durable_checkpoints (
                run_id TEXT PRIMARY KEY,
                pipe_name TEXT NOT NULL,
                pipeline_hash TEXT NOT NULL,
                status TEXT NOT NULL,
                segment INTEGER NOT NULL,
                data TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE INDEX durable_checkpoints_by_pipeline
                ON justpipe.durable_checkpoints (pipeline_hash)""",
            """CREATE TABLE justpipe.durable_counters (
                run_id TEXT NOT NULL,
                name TEXT NOT NULL,
                count BIGINT NOT NULL,
                PRIMARY KEY (run_id, name)
            )""",
            """CREATE TABLE justpipe.durable_parts (
                run_id TEXT NOT NULL,
                key TEXT NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (run_id, key)
            )""",
            """CREATE TABLE justpipe.durable_leases (
                run_id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1][0]
"""The version this justpipe writes and reads."""

# one key for every justpipe process: migrations of a database never run side by side
_MIGRATION_LOCK = 0x6A75_7374_7069_7065  # "justpipe"


class SchemaTooNewError(StorageError, RuntimeError):
    """The database was migrated by a newer justpipe than this one."""


def ensure_schema(conn: psycopg.Connection[Any]) -> int:
    """Create or migrate the schema (see the module docstring); return the version found."""
    found = _current_version(conn)
    if found == SCHEMA_VERSION:
        return found
    if found is not None and found > SCHEMA_VERSION:
        raise _too_new(found)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS justpipe.schema_version ("
            " one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),"
            " version INTEGER NOT NULL,"
            " migrated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT version FROM justpipe.schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise _too_new(version)
        for number, _, statements in MIGRATIONS:
            if number > version:
                for statement in statements:
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO justpipe.schema_version (one, version) VALUES (TRUE, %s)"
            " ON CONFLICT (one) DO UPDATE SET version = excluded.version, migrated_at = now()",
            (SCHEMA_VERSION,),
        )
    return version


def readable_schema(conn: psycopg.Connection[Any]) -> bool:
    """For a reader that must not write (the CLI, the dashboard): whether the schema is
    there to read (False: no justpipe process wrote to this database yet). A schema newer
    than this justpipe knows raises `SchemaTooNewError`; nothing is created or migrated."""
    found = _current_version(conn)
    if found is not None and found > SCHEMA_VERSION:
        raise _too_new(found)
    return found is not None


def _current_version(conn: psycopg.Connection[Any]) -> int | None:
    """The schema's version, or None when there is no schema (or no version row) yet."""
    exists = conn.execute("SELECT to_regclass('justpipe.schema_version')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute("SELECT version FROM justpipe.schema_version").fetchone()
    return None if row is None else int(row[0])


def _too_new(version: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"the database's justpipe schema is at version {version}, newer than this justpipe "
        f"knows ({SCHEMA_VERSION}): upgrade justpipe in this process (pip install -U "
        "'justpipe[postgres]'), or point it at another database."
    )
