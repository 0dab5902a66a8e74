"""`PostgresCheckpointStore`: durable checkpoints and leases in a PostgreSQL database.

The same protocol and tables as `SQLiteCheckpointStore` (``durable_checkpoints``,
``durable_counters``, ``durable_parts``, ``durable_leases``, in the ``justpipe``
schema, see `justpipe.storage.pgschema`), and the same promises, made by the server:

* every `save` is one transaction: the checkpoint, its changed attempt counts, its new
  or dropped parts and (a persisted run) its events since the previous checkpoint into
  the run store's tables of the same database, all or nothing;
* ``save`` checks that the writer still holds the run's lease under a row lock (``SELECT
  ... FOR UPDATE`` on the lease row): a process whose lease was taken over cannot write;
* ``acquire`` takes that same row lock (creating the row first when the run has none,
  ``INSERT ... ON CONFLICT DO NOTHING``, so two first acquirers queue on its key): of two
  processes resuming one run, the second waits for the first's transaction, then finds
  its live lease and gets `RunLeasedError`. Exactly one wins, on any number of hosts;
* leases are timed by the database server's clock (``clock_timestamp()``), so hosts
  whose clocks disagree still agree on when a lease expires; a lease whose owner ran on
  this host in a process that is gone is dead at once, as with SQLite;
* `load` reads the checkpoint, every attempt count and every part in one statement (one
  snapshot), so it never mixes two checkpoints.

What a row holds is typed by the schema (text, integers, no NULLs); the checkpoint
document inside it is decoded and checked by the resume, as from any store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Self

from justpipe.durable.store import (
    Checkpoint,
    Lease,
    LeaseLostError,
    RunLeasedError,
    lease_is_live,
    leased_message,
)
from justpipe.storage.pgpool import ConnectionSource
from justpipe.storage.postgres import (
    PostgresDatabase,
    events_cte,
    events_param,
    notify_expression,
    placeholder_cte,
)
from justpipe.storage.url import PostgresLocation

__all__ = ["PostgresCheckpointStore"]

# A checkpoint is one statement (its CTEs run together, atomically, in one round trip).
# It writes only while `owner` holds the run's lease, under a row lock on the lease (an
# acquirer taking the run over waits for this statement, and a save waits for a takeover
# to commit, then finds another owner): every part below is written FROM `held`, so
# without the lease nothing is, and the result (0) says so.
_HELD = """SELECT run_id FROM justpipe.durable_leases
    WHERE run_id = %(run_id)s AND owner = %(owner)s FOR UPDATE"""

_CHECKPOINT = """INSERT INTO justpipe.durable_checkpoints
        (run_id, pipe_name, pipeline_hash, status, segment, data, updated_at)
    SELECT run_id, %(pipe)s, %(pipeline)s, %(status)s, %(segment)s, %(data)s,
           extract(epoch FROM clock_timestamp())
    FROM held
    ON CONFLICT (run_id) DO UPDATE SET pipe_name = excluded.pipe_name,
        pipeline_hash = excluded.pipeline_hash, status = excluded.status,
        segment = excluded.segment, data = excluded.data, updated_at = excluded.updated_at
    RETURNING 1"""

_COUNTERS = """INSERT INTO justpipe.durable_counters (run_id, name, count)
    SELECT held.run_id, c.name, c.count
    FROM held, unnest(%(names)b::text[], %(counts)b::bigint[]) AS c(name, count)
    ON CONFLICT (run_id, name) DO UPDATE SET count = excluded.count"""

_KEPT_PARTS = """INSERT INTO justpipe.durable_parts (run_id, key, data)
    SELECT held.run_id, p.key, p.data
    FROM held, unnest(%(keys)b::text[], %(texts)b::text[]) AS p(key, data)
    ON CONFLICT (run_id, key) DO UPDATE SET data = excluded.data"""

_DROPPED_PARTS = """DELETE FROM justpipe.durable_parts
    WHERE run_id IN (SELECT run_id FROM held) AND key = ANY(%(dropped)b::text[])"""

_RUN = """SELECT run_id FROM placeholder
    UNION ALL SELECT run_id FROM justpipe.runs
    WHERE run_id = %(run_id)s AND EXISTS (SELECT 1 FROM held)"""


def _save_statement(checkpoint: Checkpoint, has_events: bool) -> str:
    """The one statement of a save: only the parts this checkpoint has."""
    ctes = [("held", _HELD), ("checkpoint", _CHECKPOINT)]
    if checkpoint.attempts:
        ctes.append(("counters", _COUNTERS))
    parts = checkpoint.parts or {}
    if any(text is not None for text in parts.values()):
        ctes.append(("kept", _KEPT_PARTS))
    if any(text is None for text in parts.values()):
        ctes.append(("dropped", _DROPPED_PARTS))
    if has_events:
        ctes += [("placeholder", placeholder_cte("held")), ("run", _RUN)]
        ctes.append(("events", events_cte("run")))
    body = ",\n".join(f"{name} AS ({query})" for name, query in ctes)
    # (a checkpoint with events changes the run as the tools show it: say so)
    notify = f", {notify_expression()}" if has_events else ""
    return f"WITH {body}\nSELECT (SELECT count(*) FROM checkpoint) AS written{notify}"


_LOAD = """
SELECT c.run_id, c.pipe_name, c.pipeline_hash, c.status, c.segment, c.data, c.updated_at,
       ARRAY(SELECT name FROM justpipe.durable_counters WHERE run_id = c.run_id
             ORDER BY name) AS names,
       ARRAY(SELECT count FROM justpipe.durable_counters WHERE run_id = c.run_id
             ORDER BY name) AS counts,
       ARRAY(SELECT key FROM justpipe.durable_parts WHERE run_id = c.run_id ORDER BY key) AS keys,
       ARRAY(SELECT data FROM justpipe.durable_parts WHERE run_id = c.run_id
             ORDER BY key) AS texts
FROM justpipe.durable_checkpoints c WHERE c.run_id = %s
"""

_DB_NOW = "extract(epoch FROM clock_timestamp())::double precision"


class PostgresCheckpointStore:
    """Checkpoints of durable runs in a PostgreSQL database (see the module docstring).

    `source`: a ``postgresql://`` URL (the store makes, and `close()` closes, its own
    pool), a connection pool (a `justpipe.storage.pgpool.PostgresPool`, a
    ``psycopg_pool.ConnectionPool``...), or a `PostgresDatabase`. The schema is created
    or migrated when the store is made.
    """

    saves_events = True
    """`save()` also takes the run's events published since the last checkpoint."""

    keeps_attempts = True
    """`save()` upserts `Checkpoint.attempts` (the changed counts) into ``durable_counters``."""

    keeps_parts = True
    """`save()` upserts (or deletes) `Checkpoint.parts` in ``durable_parts``."""

    def __init__(
        self, source: str | PostgresLocation | ConnectionSource | PostgresDatabase
    ) -> None:
        self._owns_database = not isinstance(source, PostgresDatabase)
        self.database = source if isinstance(source, PostgresDatabase) else PostgresDatabase(source)
        self.database.open()

    def __repr__(self) -> str:
        return f"PostgresCheckpointStore({self.database!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def location(self) -> PostgresLocation | None:
        return self.database.location

    def close(self) -> None:
        """Close the pool, if this store made it from a URL."""
        if self._owns_database:
            self.database.close()

    # ------------------------------------------------------------------ the protocol

    def save(self, checkpoint: Checkpoint, owner: str, events: Sequence[str] = ()) -> None:
        """Write the checkpoint, its counts, its parts and `events`, all or nothing."""
        run_id = checkpoint.run_id
        attempts = checkpoint.attempts or {}
        parts = checkpoint.parts or {}
        kept = {key: text for key, text in parts.items() if text is not None}
        params = {
            "run_id": run_id,
            "owner": owner,
            "pipe": checkpoint.pipe_name,
            "pipeline": checkpoint.pipeline_hash,
            "status": checkpoint.status,
            "segment": checkpoint.segment,
            "data": checkpoint.data,
            "names": list(attempts),
            "counts": list(attempts.values()),
            "keys": list(kept),
            "texts": list(kept.values()),
            "dropped": [key for key, text in parts.items() if text is None],
            "events": events_param(run_id, events),
            "now": time.time(),
        }
        if events:  # the run store gets the run: the tools list it under its pipeline
            self.database.register_pipeline(
                checkpoint.pipeline_hash, checkpoint.pipe_name, known=False
            )
        statement = _save_statement(checkpoint, bool(events))
        written = self.database.write("checkpoint run " + repr(run_id), statement, params)
        if written is None or written[0] == 0:
            holder = self.lease(run_id)
            raise LeaseLostError(
                f"run {run_id!r}: this process ({owner}) no longer holds its lease (held "
                f"by {holder.owner if holder else 'nobody'}); not checkpointing."
            )

    def load(self, run_id: str) -> Checkpoint | None:
        """The run's checkpoint with all its attempt counts and parts (one snapshot)."""
        rows = self.database.query("load the checkpoint of run " + repr(run_id), _LOAD, (run_id,))
        if not rows:
            return None
        row = rows[0]
        names, counts = row["names"], row["counts"]
        keys, texts = row["keys"], row["texts"]
        return Checkpoint(
            str(row["run_id"]),
            str(row["pipe_name"]),
            str(row["pipeline_hash"]),
            str(row["status"]),
            int(row["segment"]),
            str(row["data"]),
            float(row["updated_at"]),
            {str(name): int(count) for name, count in zip(names, counts, strict=True)},
            {str(key): str(text) for key, text in zip(keys, texts, strict=True)},
        )

    def acquire(self, run_id: str, owner: str, ttl_s: float) -> None:
        """Take the run's lease (row-locked), or raise `RunLeasedError` if another holds it."""
        with self.database.transaction("take the lease of run " + repr(run_id)) as conn:
            created = conn.execute(
                "INSERT INTO justpipe.durable_leases (run_id, owner, expires_at)"
                f" VALUES (%s, %s, {_DB_NOW} + %s) ON CONFLICT (run_id) DO NOTHING",
                (run_id, owner, ttl_s),
            ).rowcount
            if created:
                return
            row = conn.execute(
                f"SELECT owner, expires_at, {_DB_NOW} FROM justpipe.durable_leases"
                " WHERE run_id = %s FOR UPDATE",
                (run_id,),
            ).fetchone()
            if row is None:  # released between the two statements: take it
                conn.execute(
                    "INSERT INTO justpipe.durable_leases (run_id, owner, expires_at)"
                    f" VALUES (%s, %s, {_DB_NOW} + %s)",
                    (run_id, owner, ttl_s),
                )
                return
            held = Lease(run_id, str(row[0]), float(row[1]))
            if held.owner != owner and lease_is_live(held, now=float(row[2])):
                raise RunLeasedError(leased_message(run_id, _local_expiry(held, float(row[2]))))
            conn.execute(
                f"UPDATE justpipe.durable_leases SET owner = %s, expires_at = {_DB_NOW} + %s"
                " WHERE run_id = %s",
                (owner, ttl_s, run_id),
            )

    def release(self, run_id: str, owner: str) -> None:
        with self.database.transaction("release the lease of run " + repr(run_id)) as conn:
            conn.execute(
                "DELETE FROM justpipe.durable_leases WHERE run_id = %s AND owner = %s",
                (run_id, owner),
            )

    def lease(self, run_id: str) -> Lease | None:
        """The run's lease, its expiry in this host's clock (the server's, shifted)."""
        rows = self.database.query(
            "read the lease of run " + repr(run_id),
            f"SELECT owner, expires_at, {_DB_NOW} AS now FROM justpipe.durable_leases"
            " WHERE run_id = %s",
            (run_id,),
        )
        if not rows:
            return None
        row = rows[0]
        return _local_expiry(
            Lease(run_id, str(row["owner"]), float(row["expires_at"])), float(row["now"])
        )

    # ------------------------------------------------------------------ the run store beside

    def reopen_run(self, run_id: str) -> None:
        """Mark the run store's row of `run_id` as running again (a resumed segment)."""
        self.database.write(
            "reopen run " + repr(run_id),
            "WITH reopened AS (UPDATE justpipe.runs SET status = 'running', end_time = NULL,"
            " error_message = NULL, error_step = NULL WHERE run_id = %(run_id)s"
            " RETURNING pipeline_hash AS pipeline)"
            f" SELECT {notify_expression().replace('%(pipeline)s', 'pipeline')} FROM reopened",
            {"run_id": run_id},
        )

    def stored_seq(self, run_id: str) -> int:
        """The highest `seq` the run store holds for the run (0: none)."""
        rows = self.database.query(
            "read the events of run " + repr(run_id),
            "SELECT COALESCE(MAX(seq), 0) AS top FROM justpipe.events WHERE run_id = %s",
            (run_id,),
        )
        return int(rows[0]["top"])


def _local_expiry(lease: Lease, server_now: float) -> Lease:
    """`lease` with its expiry moved from the server's clock to this host's."""
    return Lease(lease.run_id, lease.owner, lease.expires_at - server_now + time.time())
