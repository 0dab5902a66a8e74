"""The CLI over PostgreSQL: ``--storage-url`` (before or after the command) and
``JUSTPIPE_STORAGE_URL``; every command reads (and cleanup deletes) the database's runs,
a wrong URL is one ``Error:`` line naming the server, and no output shows a password.
``justpipe dashboard --storage-url`` is served by a real process too.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from extras import require
from justpipe import Pipe, Suspend
from justpipe.cli.main import cli
from pg import PostgresServer

require("psycopg", "postgres")

pytestmark = pytest.mark.backend_agnostic


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def persist(url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Three runs of a plain pipeline (one failing) and a suspended durable run."""
    monkeypatch.setenv("JUSTPIPE_STORAGE_URL", url)
    plain: Pipe[dict[str, Any], None] = Pipe(dict, name="shop", persist=True)

    @plain.step
    async def pay(state: dict[str, Any]) -> None:
        if state.get("fail"):
            raise RuntimeError("card declined")

    waiting: Pipe[dict[str, Any], None] = Pipe(dict, name="approval", durable=True)

    @waiting.step
    async def ask(state: dict[str, Any]) -> Any:
        return Suspend("a human decides")

    async def run_all() -> dict[str, Any]:
        ids = []
        for state in ({}, {}, {"fail": True}):
            ids.append([e async for e in plain.run(state)][-1].run_id)
        suspended = [e async for e in waiting.run({})][-1].run_id
        return {"plain": ids, "suspended": suspended}

    found = asyncio.run(run_all())
    monkeypatch.delenv("JUSTPIPE_STORAGE_URL")
    return found


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_every_read_command_reads_the_database(
    postgres_server: PostgresServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    runs = persist(postgres_url, monkeypatch)
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "not-here"))
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> str:
        if where == "before":
            result = invoke("--storage-url", postgres_url, *args)
        elif where == "after":
            result = invoke(*args, "--storage-url", postgres_url)
        else:
            result = invoke(*args, env={"JUSTPIPE_STORAGE_URL": postgres_url})
        assert result.exit_code == 0, result.output
        assert postgres_server.password not in result.output
        return result.output

    listed = run("list", "--full")
    assert all(run_id in listed for run_id in [*runs["plain"], runs["suspended"]])
    assert runs["suspended"] in run("list", "--status", "suspended", "--full")
    assert runs["plain"][2] in run("list", "--status", "failed", "--full")
    assert "shop" in run("pipelines") and "approval" in run("pipelines")
    assert "Suspended" in run("stats")
    shown = run("show", runs["plain"][2][:10])
    assert "card declined" in shown and "Status: failed" in shown
    assert "Durable:" in run("show", runs["suspended"])
    assert "pay" in run("timeline", runs["plain"][0])
    assert "Duration" in run("compare", runs["plain"][0], runs["plain"][1])
    run("export", runs["plain"][0], "-o", "out.json")
    exported = json.loads((tmp_path / "out.json").read_text())
    assert exported["run"]["id"] == runs["plain"][0] and exported["events"]
    assert not (tmp_path / "not-here").exists() or not any((tmp_path / "not-here").iterdir())


def test_cleanup_deletes_from_the_database_and_keeps_the_suspended_run(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = persist(postgres_url, monkeypatch)
    result = invoke("cleanup", "--keep", "0", "--yes", "--storage-url", postgres_url)
    assert result.exit_code == 0, result.output
    listed = invoke("list", "--full", "--storage-url", postgres_url).output
    assert runs["suspended"] in listed
    assert not any(run_id in listed for run_id in runs["plain"])


@pytest.mark.parametrize("wrong", ["password", "port", "database", "scheme"])
def test_a_wrong_url_is_one_error_line_naming_the_server_without_the_password(
    postgres_server: PostgresServer, postgres_url: str, wrong: str
) -> None:
    dbname = postgres_url.rsplit("/", 1)[1]
    secret = "s3cret-" + postgres_server.password[-6:]
    url = {
        "password": postgres_server.url(dbname, password=secret),
        "port": postgres_server.url(dbname, password=secret, port=1),
        "database": postgres_server.url("nosuchdb", password=secret),
        "scheme": f"mysql://justpipe_test:{secret}@127.0.0.1/{dbname}",
    }[wrong]
    result = invoke("list", "--storage-url", url)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert secret not in result.output
    if wrong != "scheme":
        host, port = "127.0.0.1", 1 if wrong == "port" else postgres_server.port
        database = "nosuchdb" if wrong == "database" else dbname
        assert f"host {host}, port {port}, database {database}" in result.output


def test_the_dashboard_serves_the_database(
    postgres_server: PostgresServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    require("starlette", "dashboard")
    from test_dashboard_cli import serve

    runs = persist(postgres_url, monkeypatch)
    with serve(tmp_path / "empty", "--storage-url", postgres_url) as served:
        assert postgres_server.password not in served.preamble
        with urllib.request.urlopen(served.url + "api/pipelines") as response:
            names = {pipeline["name"] for pipeline in json.load(response)}
        with urllib.request.urlopen(served.url + f"runs/{runs['suspended']}") as response:
            page = response.read().decode()
    assert names == {"shop", "approval"}
    assert "suspended" in page and postgres_server.password not in page
    assert os.environ.get("JUSTPIPE_STORAGE_URL") is None
