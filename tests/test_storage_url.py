"""JUSTPIPE_STORAGE_URL: its forms, its errors (never showing a password), and that it wins."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from justpipe import Pipe
from justpipe.storage.persistence import resolve_storage_path
from justpipe.storage.url import (
    PostgresLocation,
    SQLiteLocation,
    StorageURLError,
    parse_storage_url,
    redact_url,
    resolve_storage,
)

pytestmark = pytest.mark.backend_agnostic  # no kernel involved


def test_a_postgresql_url_names_user_host_port_database_and_parameters() -> None:
    location = parse_storage_url("postgresql://ann:s%40cret@db.example:6543/runs?sslmode=require")

    assert location == PostgresLocation(
        "db.example", 6543, "runs", "ann", "s@cret", (("sslmode", "require"),)
    )
    assert isinstance(location, PostgresLocation)
    assert location.display == "postgresql://ann@db.example:6543/runs"
    assert location.server == "host db.example, port 6543, database runs"
    assert "s@cret" not in repr(location)
    assert location.connect_kwargs() == {
        "sslmode": "require",
        "host": "db.example",
        "port": "6543",
        "dbname": "runs",
        "user": "ann",
        "password": "s@cret",
    }


def test_postgres_scheme_and_default_port() -> None:
    location = parse_storage_url("postgres://ann@localhost/runs")

    assert isinstance(location, PostgresLocation)
    assert (location.port, location.password) == (5432, "")


@pytest.mark.parametrize("url", ["sqlite:///srv/runs", "sqlite:////srv/runs"])
def test_a_sqlite_url_is_a_storage_directory(url: str) -> None:
    assert parse_storage_url(url) == SQLiteLocation(Path("/srv/runs"))


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://a:hunter22@h/db", "not a storage URL justpipe knows"),
        ("/just/a/path", "not a storage URL justpipe knows"),
        ("sqlite://relative/path", "sqlite:///ABSOLUTE/PATH"),
        ("sqlite:///a?mode=ro", "no host and no query"),
        ("postgresql://a:hunter22@/db", "must name a host and a database"),
        ("postgresql://a:hunter22@h:5432", "must name a host and a database"),
        ("postgresql://a:hunter22@h:port/db", "Port could not be cast"),
        ("postgresql://a:hunter22@h/db?password=x", "give 'password' in the URL itself"),
    ],
)
def test_an_unusable_url_is_refused_saying_why_and_never_showing_the_password(
    url: str, fragment: str
) -> None:
    with pytest.raises(StorageURLError, match=fragment) as caught:
        parse_storage_url(url)

    assert "hunter22" not in str(caught.value)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://ann:pw@h:1/db") == "postgresql://ann:***@h:1/db"
    assert redact_url("postgresql://ann@h/db") == "postgresql://ann@h/db"


def test_the_url_wins_over_the_path_and_the_path_over_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUSTPIPE_STORAGE_PATH", raising=False)
    assert resolve_storage() == SQLiteLocation(Path("~/.justpipe").expanduser())
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "by-path"))
    assert resolve_storage() == SQLiteLocation(tmp_path / "by-path")
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", f"sqlite://{tmp_path / 'by-url'}")
    assert resolve_storage() == SQLiteLocation(tmp_path / "by-url")
    assert resolve_storage_path() == tmp_path / "by-url"
    assert resolve_storage("postgresql://u@h/d") == PostgresLocation("h", 5432, "d", "u")


def test_sqlite_url_and_path_persist_to_the_same_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_once() -> str:
        pipe: Pipe[dict[str, int], None] = Pipe(dict, name="same-place", persist=True)

        @pipe.step
        async def only(state: dict[str, int]) -> None:
            state["n"] = 1

        async def drain() -> None:
            async for _ in pipe.run({}):
                pass

        asyncio.run(drain())
        return str(pipe.describe()["pipeline_hash"])

    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "runs"))
    pipeline_hash = run_once()
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", f"sqlite://{tmp_path / 'runs'}")
    run_once()

    from justpipe.storage import SQLiteBackend

    with SQLiteBackend(tmp_path / "runs" / pipeline_hash / "runs.db") as store:
        assert len(store.list_runs()) == 2
    assert not (tmp_path / "elsewhere").exists()


async def test_a_bad_url_fails_a_persisted_run_at_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", "postgresql://ann:hunter22@h:x/db")
    pipe: Pipe[dict[str, int], None] = Pipe(dict, name="bad-url", persist=True)
    ran: list[str] = []

    @pipe.step
    async def only(state: dict[str, int]) -> None:
        ran.append("only")

    with pytest.raises(StorageURLError, match="JUSTPIPE_STORAGE_URL") as caught:
        async for _ in pipe.run({}):
            pass

    assert ran == []
    assert "hunter22" not in str(caught.value)
