"""What only the PostgreSQL store has: its schema and migrations, a server that is wrong,
missing or goes away, and its connection pool. A real server throughout (tests/pg.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extras import require
from justpipe import EventType, Pipe, Suspend
from justpipe.types import PipelineTerminalStatus
from pg import PostgresServer, StoreView, fresh_database_name, open_run_store, start_server

psycopg = require("psycopg", "postgres")

from justpipe.durable import Checkpoint, Durable, RunLeasedError  # noqa: E402
from justpipe.durable.postgres import PostgresCheckpointStore  # noqa: E402
from justpipe.storage import pgschema  # noqa: E402
from justpipe.storage.pgpool import PostgresPool  # noqa: E402
from justpipe.storage.postgres import (  # noqa: E402
    PostgresBackend,
    PostgresDatabase,
    close_shared_databases,
)
from justpipe.storage.url import StorageUnavailableError  # noqa: E402

pytestmark = pytest.mark.backend_agnostic  # the store does not touch justpipe._core

CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def connect(url: str) -> Any:
    from justpipe.storage.url import parse_storage_url

    return psycopg.connect(**parse_storage_url(url).connect_kwargs(), autocommit=True)  # type: ignore[union-attr]


def tables(url: str) -> set[str]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'justpipe'"
        )
        return {row[0] for row in rows}


def version(url: str) -> int:
    with connect(url) as conn:
        return int(conn.execute("SELECT version FROM justpipe.schema_version").fetchone()[0])


# --------------------------------------------------------------------------- schema


def test_the_schema_is_created_on_first_use_and_versioned(postgres_url: str) -> None:
    assert tables(postgres_url) == set()

    with PostgresBackend(postgres_url, "h") as store:
        store.append_events("r", [])

    assert tables(postgres_url) == {
        "schema_version",
        "pipelines",
        "runs",
        "events",
        "run_leases",
        "durable_checkpoints",
        "durable_counters",
        "durable_parts",
        "durable_leases",
    }
    assert version(postgres_url) == pgschema.SCHEMA_VERSION == 1


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from justpipe.storage.postgres import PostgresBackend

url, go, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
while not go.exists():
    time.sleep(0.001)
with PostgresBackend(url, "h", pipeline_name="p") as store:
    store.append_events(name, [])
print("opened")
"""


def test_processes_opening_a_new_database_at_once_all_succeed(
    postgres_url: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, postgres_url, str(go), f"run{n}"],
            env=CHILD_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(6)
    ]
    time.sleep(1.0)  # every child imported justpipe and waits for the go
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "opened", err

    assert version(postgres_url) == pgschema.SCHEMA_VERSION
    assert len(StoreView(postgres_url).runs()) == 6


def test_a_newer_migration_is_applied_once_keeping_the_data(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PostgresBackend(postgres_url, "h") as store:
        store.append_events("kept", [])
    newer = (
        *pgschema.MIGRATIONS,
        (2, "a column for the test", ("ALTER TABLE justpipe.runs ADD COLUMN note TEXT",)),
    )
    monkeypatch.setattr(pgschema, "MIGRATIONS", newer)
    monkeypatch.setattr(pgschema, "SCHEMA_VERSION", 2)

    for _ in range(2):  # the second open finds the work done
        with PostgresBackend(postgres_url, "h") as store:
            assert store.get_run("kept") is not None

    assert version(postgres_url) == 2
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT note FROM justpipe.runs").fetchall() == [(None,)]


def test_a_database_of_a_newer_justpipe_is_refused_untouched(postgres_url: str) -> None:
    with PostgresBackend(postgres_url, "h") as store:
        store.append_events("kept", [])
    with connect(postgres_url) as conn:
        conn.execute("UPDATE justpipe.schema_version SET version = 99")

    with pytest.raises(pgschema.SchemaTooNewError, match="version 99, newer than this"):
        PostgresBackend(postgres_url, "h")

    assert version(postgres_url) == 99
    assert StoreView(postgres_url).runs() == [("kept", "running")]


@pytest.fixture
def pg_only_url(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", postgres_url)
    return postgres_url


async def test_a_persisted_pipeline_is_recorded_once_with_its_description(
    pg_only_url: str,
) -> None:
    pipe: Pipe[dict[str, int], None] = Pipe(dict, name="described", persist=True)

    @pipe.step
    async def only(state: dict[str, int]) -> None:
        state["n"] = 1

    for _ in range(2):
        async for _ in pipe.run({}):
            pass

    database = PostgresDatabase(pg_only_url)
    try:
        pipeline_hash = str(pipe.describe()["pipeline_hash"])
        assert database.pipelines() == [(pipeline_hash, "described")]
        assert database.description(pipeline_hash) == pipe.describe()
    finally:
        database.close()


def test_saving_over_a_finished_run_raises_and_keeps_the_original(postgres_url: str) -> None:
    from datetime import UTC, datetime

    from justpipe.storage import RunRecord
    from justpipe.storage.postgres import RunAlreadyStoredError

    run = RunRecord(
        "r1", datetime(2024, 5, 1, tzinfo=UTC), None, None, PipelineTerminalStatus.SUCCESS
    )
    with PostgresBackend(postgres_url, "h") as store:
        store.save_run(run, ['{"type": "start", "seq": 1}'])
        failed = RunRecord("r1", run.start_time, None, None, PipelineTerminalStatus.FAILED)
        with pytest.raises(RunAlreadyStoredError, match="already stored"):
            store.save_run(failed, ['{"type": "finish", "seq": 2}'])

        assert store.get_run("r1") == run
        assert [event.seq for event in store.get_events("r1")] == [1]
        assert isinstance(RunAlreadyStoredError("x"), psycopg.IntegrityError)


def test_deleting_a_run_deletes_its_checkpoint(postgres_url: str) -> None:
    checkpoints = PostgresCheckpointStore(postgres_url)
    store = PostgresBackend(postgres_url, "hash")
    checkpoints.acquire("r", "me:1:a", 30.0)
    checkpoint = Checkpoint("r", "p", "hash", "suspended", 1, "{}", attempts={"a": 1})
    checkpoints.save(checkpoint, "me:1:a", ['{"type": "start", "seq": 1}'])
    checkpoints.acquire("other", "me:1:a", 30.0)
    checkpoints.save(Checkpoint("other", "p", "hash", "suspended", 1, "{}"), "me:1:a")

    assert store.delete_run("r") is True

    assert checkpoints.load("r") is None and checkpoints.lease("r") is None
    assert checkpoints.load("other") is not None
    assert store.delete_run("r") is False
    store.close()
    checkpoints.close()


# --------------------------------------------------------------------------- a wrong server


def wrong_urls(server: PostgresServer, dbname: str) -> list[tuple[str, str]]:
    return [
        (server.url(dbname, password="not-the-" + server.password), "password authentication"),
        (server.url("no_such_database"), "no_such_database"),
        (server.url(dbname, port=free_closed_port()), "Connection refused"),
    ]


def free_closed_port() -> int:
    from pg import free_port

    return free_port()


def server_named(message: str, url: str) -> None:
    from justpipe.storage.url import PostgresLocation, parse_storage_url

    location = parse_storage_url(url)
    assert isinstance(location, PostgresLocation)
    assert f"host {location.host}, port {location.port}, database {location.dbname}" in message
    assert location.password not in message


def pipe_of(kind: str) -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(
        dict, name="wrong-" + kind, persist=True, durable=True if kind == "durable" else None
    )

    @pipe.step
    async def only(state: dict[str, Any]) -> None:
        state["ran"] = True

    return pipe


@pytest.mark.parametrize("kind", ["persisted", "durable"])
async def test_a_wrong_url_fails_the_run_at_its_start_naming_the_server_not_the_password(
    postgres_server: PostgresServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    dbname = postgres_url.rsplit("/", 1)[1]
    for url, reason in wrong_urls(postgres_server, dbname):
        close_shared_databases()
        monkeypatch.setenv("JUSTPIPE_STORAGE_URL", url)
        state: dict[str, Any] = {}
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG), pytest.raises(StorageUnavailableError) as caught:
            async for _ in pipe_of(kind).run(state):
                pass

        assert time.monotonic() - started < 10
        assert state == {}, "nothing ran"
        message = str(caught.value)
        server_named(message, url)
        assert reason in message
        assert postgres_server.password not in caplog.text


async def test_a_wrong_password_fails_a_resume_naming_the_server(
    postgres_server: PostgresServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", postgres_url)
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="asks", durable=True)

    @pipe.step
    async def ask(state: dict[str, Any]) -> Any:
        return Suspend("a question")

    events = [event async for event in pipe.run({})]
    close_shared_databases()
    wrong = postgres_server.url(postgres_url.rsplit("/", 1)[1], password="wrong-password")
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", wrong)

    with pytest.raises(StorageUnavailableError, match="password authentication") as caught:
        async for _ in pipe.resume(events[-1].run_id):
            pass
    server_named(str(caught.value), wrong)


# ------------------------------------------------------------------- a server that goes away


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of its own, which the test stops and starts again."""
    server = start_server()
    yield server
    close_shared_databases()
    server.destroy()


async def test_the_database_going_away_mid_run_warns_and_the_next_run_persists(
    own_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = own_server.create_database(fresh_database_name())
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", url)
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="outage", persist=True, flush_interval=1)
    stop_here = asyncio.Event()
    go_on = asyncio.Event()

    @pipe.step
    async def work(state: dict[str, Any]) -> Any:
        if state.get("outage"):
            stop_here.set()
            await go_on.wait()
        for n in range(3):
            yield n

    async def outage() -> None:
        await stop_here.wait()
        await asyncio.to_thread(own_server.stop)
        go_on.set()

    with caplog.at_level(logging.WARNING):
        stopper = asyncio.create_task(outage())
        events = [event async for event in pipe.run({"outage": True})]
        await stopper

    assert [event.type for event in events].count(EventType.FINISH) == 1
    assert events[-1].type is EventType.FINISH
    assert "Failed to flush" in caplog.text and "Failed to persist run" in caplog.text
    assert own_server.password not in caplog.text

    own_server.start()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        after = [event async for event in pipe.run({})]
    assert caplog.text == ""
    with open_run_store(url, str(pipe.describe()["pipeline_hash"])) as store:
        run = store.get_run(after[-1].run_id)
        assert run is not None and run.status is PipelineTerminalStatus.SUCCESS
        assert len(store.get_events(after[-1].run_id)) == len(after)
        lost = store.get_run(events[-1].run_id)  # registered before the outage: unfinished
        assert lost is not None and lost.error_message is not None


async def test_a_durable_run_outlives_the_database_and_resumes_from_its_last_checkpoint(
    own_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = own_server.create_database(fresh_database_name())
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", url)
    ran: list[str] = []
    stop_here = asyncio.Event()
    go_on = asyncio.Event()

    def build() -> Pipe[dict[str, Any], None]:
        pipe: Pipe[dict[str, Any], None] = Pipe(
            dict, name="durable-outage", durable=Durable(lease_ttl_s=1.0)
        )

        @pipe.step(to="b")
        async def a(state: dict[str, Any]) -> None:
            ran.append("a")
            if state.get("outage"):
                stop_here.set()
                await go_on.wait()

        @pipe.step
        async def b(state: dict[str, Any]) -> None:
            ran.append("b")

        return pipe

    async def outage() -> None:
        await stop_here.wait()
        await asyncio.to_thread(own_server.stop)
        go_on.set()

    with caplog.at_level(logging.WARNING):
        stopper = asyncio.create_task(outage())
        events = [event async for event in build().run({"outage": True})]
        await stopper
    assert [event.type for event in events].count(EventType.FINISH) == 1
    assert "Checkpoint of durable run" in caplog.text and "not released" in caplog.text
    assert own_server.password not in caplog.text

    own_server.start()
    run_id = events[-1].run_id
    await asyncio.sleep(1.2)  # the lease it could not release expires
    resumed = [event async for event in build().resume(run_id)]
    # its last checkpoint was written as `a` started: `a` runs again, then `b`
    assert [e.stage for e in resumed if e.type is EventType.STEP_START] == ["a", "b"]
    assert ran == ["a", "b", "a", "b"]
    assert StoreView(url).checkpoint(run_id)["row_status"] == "finished"


# --------------------------------------------------------------------------- the pool


def backends_of(url: str) -> int:
    """Connections the pools of this process hold to `url`'s database (the server's view)."""
    dbname = url.rsplit("/", 1)[1]
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND application_name = 'justpipe' AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchone()
    return int(row[0])


def test_the_pool_is_bounded_and_closed(postgres_url: str) -> None:
    pool = PostgresPool(postgres_url, max_size=2, timeout=30)
    database = PostgresDatabase(pool)
    store = PostgresBackend(database, "h")
    peak = 0
    lock = threading.Lock()

    def hammer(n: int) -> None:
        nonlocal peak
        for k in range(10):
            store.append_events(f"r{n}", [f'{{"type": "token", "seq": {k + 1}}}'])
            with lock:
                peak = max(peak, pool.size)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert peak <= 2 and backends_of(postgres_url) <= 2
    assert all(store.count_events(f"r{n}") == 10 for n in range(8))
    pool.close()
    assert pool.size == 0 and backends_of(postgres_url) == 0
    with pytest.raises(StorageUnavailableError, match="pool was closed"):
        store.get_run("r0")


def test_a_borrowed_pool_is_left_open_and_an_owned_one_closed(postgres_url: str) -> None:
    with PostgresPool(postgres_url) as pool:
        PostgresCheckpointStore(pool).close()
        assert pool.size == 1 and not pool.closed  # borrowed: the owner closes it
    assert pool.closed
    owned = PostgresCheckpointStore(postgres_url)
    owned.close()
    assert backends_of(postgres_url) == 0


async def test_a_psycopg_pool_can_be_borrowed_by_both_stores(postgres_url: str) -> None:
    psycopg_pool = require("psycopg_pool", "postgres")
    from justpipe.storage.url import parse_storage_url

    location = parse_storage_url(postgres_url)
    conninfo = psycopg.conninfo.make_conninfo("", **location.connect_kwargs())  # type: ignore[union-attr]
    with psycopg_pool.ConnectionPool(conninfo, min_size=1, max_size=2) as pool:
        checkpoints = PostgresCheckpointStore(pool)  # schema created through the pool
        pipe: Pipe[dict[str, Any], None] = Pipe(
            dict, name="borrowed", durable=Durable(store=checkpoints)
        )

        @pipe.step(to="b")
        async def a(state: dict[str, Any]) -> Any:
            return Suspend("wait")

        @pipe.step
        async def b(state: dict[str, Any]) -> None:
            state["done"] = True

        run_id = [event async for event in pipe.run({})][-1].run_id
        async for _ in pipe.resume(run_id):
            pass
        saved = checkpoints.load(run_id)
        assert saved is not None and saved.status == "finished"
        checkpoints.acquire("x", "otherhost:1:a", 30.0)
        with pytest.raises(RunLeasedError):
            checkpoints.acquire("x", "otherhost:2:b", 30.0)
        store = PostgresBackend(pool, "h")
        store.append_events("r", ['{"type": "start", "seq": 1}'])
        store.close()  # borrowed: the pool stays open
        assert store.count_events("r") == 1 and not pool.closed
    assert version(postgres_url) == pgschema.SCHEMA_VERSION


def test_a_forked_child_uses_connections_of_its_own(postgres_url: str) -> None:
    store = PostgresBackend(postgres_url, "h")
    store.append_events("parent", [])
    with store.database.pool.connection() as conn:
        parents = conn.info.backend_pid  # the parent's one connection, idle in the pool
    pid = os.fork()
    if pid == 0:  # the child: write through the inherited store, close it, leave
        code = 0
        try:
            store.append_events("child", [])
            store.close()  # closes the child's connections, never the parent's
            gc.collect()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with connect(postgres_url) as conn:  # the child never closed the parent's connection
        alive = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = %s", (parents,))
        assert alive.fetchall() == [(parents,)]
    store.append_events("parent-again", [])
    assert [run for run, _ in StoreView(postgres_url).runs()] == ["child", "parent", "parent-again"]
    store.close()
