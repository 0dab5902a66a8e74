"""A real PostgreSQL server for the tests, started by the suite itself.

`PostgresServer` runs Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, or
``$JUSTPIPE_PG_BINDIR``): ``initdb`` into a temporary directory owned by the ``postgres``
user (the suite runs as root here; as any other user, the directory is that user's),
listening on 127.0.0.1 on a free port only, with a password-authenticated role
(scram-sha-256, no trust entry), and stopped (its directory removed) at the end.

Fixtures (loaded by conftest.py through ``pytest_plugins``):

* ``postgres_server``: one server for the session, started on first use;
* ``postgres_url``: a fresh, empty database on it for one test (its URL, the role's
  password included), dropped afterwards;
* ``store_kind`` / ``storage_url``: the same test on both stores, SQLite and PostgreSQL
  (``storage_url`` is ``sqlite:///<tmp>`` or a fresh database's URL).

Without the server binaries or psycopg, the PostgreSQL tests are skipped with the reason;
under ``make test`` (``JUSTPIPE_EXTRAS_REQUIRED=1``) or CI they fail instead:
``scripts/install-postgres`` installs the server there.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extras import REQUIRED_ENV, extras_required, require

BINDIR_ENV = "JUSTPIPE_PG_BINDIR"
ROLE = "justpipe_test"
SERVICE_USER = "postgres"
START_TIMEOUT_S = 30


def find_bindir() -> Path | None:
    """The directory of initdb/pg_ctl: ``$JUSTPIPE_PG_BINDIR``, else Debian's newest."""
    configured = os.environ.get(BINDIR_ENV)
    if configured:
        return Path(configured) if (Path(configured) / "initdb").is_file() else None
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: (
            int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throw-away PostgreSQL cluster (see the module docstring)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(12)  # long, unique: greppable in outputs
        self.admin_password = "adm-" + secrets.token_hex(12)
        self.root = Path(tempfile.mkdtemp(prefix="justpipe-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_service = os.geteuid() == 0
        self.running = False

    # -- life -----------------------------------------------------------------------

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        if self._as_service:
            shutil.chown(self.root, SERVICE_USER)
            shutil.chown(pwfile, SERVICE_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        pwfile.unlink()

    def start(self, *, durable: bool = False) -> None:
        """Start it; `durable` keeps the server's default durability (fsync on: benchmarks),
        else it is off (a test server need not survive an OS crash)."""
        settings = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=300",
        ]
        if not durable:
            settings += ["-c fsync=off", "-c full_page_writes=off"]
        options = " ".join(settings)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_service:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}\n{log}")

    # -- databases ------------------------------------------------------------------

    def url(self, dbname: str, *, password: str | None = None, port: int | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{ROLE}:{secret}@127.0.0.1:{port or self.port}/{dbname}"

    def admin(self) -> Any:
        """A superuser connection (autocommit) to the ``postgres`` database."""
        psycopg = require("psycopg", "postgres")
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            dbname="postgres",
            user="postgres",
            password=self.admin_password,
            autocommit=True,
        )

    def create_role(self) -> None:
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{self.password}'")

    def create_database(self, name: str) -> str:
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {ROLE} STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unavailable(reason: str) -> None:
    """Skip a PostgreSQL test, or fail it where the set-up must provide the server."""
    if extras_required() or os.environ.get("CI", "").lower() in {"1", "true", "yes", "on"}:
        pytest.fail(f"{reason}; {REQUIRED_ENV}=1 (or CI) demands it", pytrace=False)
    pytest.skip(reason)


def start_server(*, durable: bool = False) -> PostgresServer:
    """A new, running server with the test role (skips or fails when that is impossible)."""
    require("psycopg", "postgres")
    bindir = find_bindir()
    if bindir is None:
        unavailable(
            "no PostgreSQL server binaries (apt-get install postgresql, or set "
            f"{BINDIR_ENV}); scripts/install-postgres installs them"
        )
    assert bindir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            unavailable(
                f"running as root, and no {SERVICE_USER!r} user to run the server as "
                "(initdb refuses root): apt-get install postgresql creates it"
            )
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start(durable=durable)
        server.create_role()
    except Exception:
        server.destroy()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_server()
    yield server
    server.destroy()


def fresh_database_name() -> str:
    return "t_" + secrets.token_hex(6)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for one test; the process's shared pools are closed after it."""
    from justpipe.storage.postgres import close_shared_databases

    name = fresh_database_name()
    url = postgres_server.create_database(name)
    yield url
    close_shared_databases()
    deadline = time.monotonic() + 10
    while True:
        try:
            postgres_server.drop_database(name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


STORE_KINDS = ("sqlite", "postgres")


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres``: a test using it runs once on each store."""
    return str(request.param)


@pytest.fixture
def storage_url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store of a `store_kind` test, as a URL (``sqlite:///...`` or ``postgresql://...``)."""
    if store_kind == "sqlite":
        yield f"sqlite://{tmp_path / 'store'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def use_storage_url(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`storage_url` set as ``JUSTPIPE_STORAGE_URL`` for the test (persistence, durable...)."""
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", storage_url)
    return storage_url


class StoreView:
    """Read what a store at `url` holds, the same way for SQLite and PostgreSQL (tests only).

    SQLite: the ``runs.db`` files under the URL's directory (one per pipeline, checked
    with ``PRAGMA integrity_check``); PostgreSQL: the ``justpipe`` schema's tables.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = not url.startswith("sqlite:")

    def _rows(self, sqlite_sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.postgres:
            psycopg = require("psycopg", "postgres")
            from justpipe.storage.url import PostgresLocation, parse_storage_url

            location = parse_storage_url(self.url)
            assert isinstance(location, PostgresLocation)
            with psycopg.connect(**location.connect_kwargs()) as conn:
                return [tuple(row) for row in conn.execute(_in_schema(sqlite_sql), params)]
        import sqlite3

        root = Path(self.url[len("sqlite://") :])
        found: list[tuple[Any, ...]] = []
        for path in sorted(root.glob("*/runs.db")):
            with contextlib.closing(sqlite3.connect(path)) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                table = sqlite_sql.split(" FROM ")[1].split()[0]
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                    found.extend(conn.execute(sqlite_sql, params).fetchall())
        return found

    def checkpoint(self, run_id: str) -> dict[str, Any]:
        """The run's checkpoint document, with ``row_status`` (the row's status column)."""
        import json

        rows = self._rows(
            "SELECT status, data FROM durable_checkpoints WHERE run_id = ?", (run_id,)
        )
        assert len(rows) == 1, rows
        data: dict[str, Any] = json.loads(rows[0][1])
        data["row_status"] = rows[0][0]
        return data

    def seqs(self, run_id: str) -> list[int]:
        rows = self._rows("SELECT seq FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
        return [int(row[0]) for row in rows]

    def event_types(self, run_id: str) -> list[str]:
        rows = self._rows("SELECT event_type FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
        return [str(row[0]) for row in rows]

    def run_status(self, run_id: str) -> str | None:
        rows = self._rows("SELECT status FROM runs WHERE run_id = ? ", (run_id,))
        return None if not rows else str(rows[0][0])

    def lease_expiry(self, run_id: str) -> list[float]:
        """When the run's checkpoint lease expires (epoch seconds), if it has one."""
        rows = self._rows("SELECT expires_at FROM durable_leases WHERE run_id = ?", (run_id,))
        return [float(row[0]) for row in rows]

    def runs(self) -> list[tuple[str, str]]:
        """``(run_id, status)`` of every run the store holds, by run id."""
        rows = self._rows("SELECT run_id, status FROM runs ORDER BY run_id", ())
        return sorted((str(row[0]), str(row[1])) for row in rows)

    def execute(self, sqlite_sql: str, params: tuple[Any, ...]) -> None:
        """Run one write on every pipeline file (SQLite) or the database (PostgreSQL)."""
        if self.postgres:
            psycopg = require("psycopg", "postgres")
            from justpipe.storage.url import PostgresLocation, parse_storage_url

            location = parse_storage_url(self.url)
            assert isinstance(location, PostgresLocation)
            with psycopg.connect(**location.connect_kwargs()) as conn:
                conn.execute(_in_schema(sqlite_sql), params)
            return
        import sqlite3

        for path in sorted(Path(self.url[len("sqlite://") :]).glob("*/runs.db")):
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                conn.execute(sqlite_sql, params)


_TABLES = ("runs", "events", "run_leases", "durable_checkpoints", "durable_leases")


def _in_schema(sqlite_sql: str) -> str:
    """A SQLite statement of the tests as PostgreSQL's: its tables in the justpipe schema."""
    statement = sqlite_sql.replace("?", "%s")
    for table in _TABLES:
        statement = statement.replace(f" {table} ", f" justpipe.{table} ")
    return statement


def open_run_store(url: str, pipeline_hash: str) -> Any:
    """The run store (a StorageBackend) of one pipeline at `url` (close it after use)."""
    if url.startswith("sqlite:"):
        from justpipe.storage import SQLiteBackend

        return SQLiteBackend(Path(url[len("sqlite://") :]) / pipeline_hash / "runs.db")
    from justpipe.storage.postgres import PostgresBackend

    return PostgresBackend(url, pipeline_hash)


def open_checkpoint_store(url: str, tmp_path: Path) -> Any:
    """A checkpoint store at `url`: its SQLite file under `tmp_path`, or the database."""
    if url.startswith("sqlite:"):
        from justpipe.durable import SQLiteCheckpointStore

        return SQLiteCheckpointStore(tmp_path / "checkpoints" / "runs.db")
    from justpipe.durable.postgres import PostgresCheckpointStore

    return PostgresCheckpointStore(url)
