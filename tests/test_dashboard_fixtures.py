"""A run store for the dashboard tests, built by running real pipelines (no tests here).

`build_store(root)` persists, under `root`:

* ``routing``: every graph shape (parallel join, switch, sub-pipeline, streaming,
  a retried step);
* ``orders``: load -> fan (a map over 5 items, worker ``work``) -> done; three
  successful runs and one that fails in ``done``;
* ``hostile``: a pipeline whose step names, state, step meta, run meta and error
  message are HTML/JS payloads (nothing of it may execute in the browser);
* ``live``: one run still going (its lease renewed by this process) and one whose
  process died (its lease names a process that does not exist);
* ``broken``: a ``runs.db`` that is not a database (its bytes must stay unchanged).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from justpipe import Meta, Pipe
from justpipe.storage import RunRecord
from justpipe.storage.persistence import PIPELINE_JSON, RUNS_DB
from justpipe.storage.sqlite import SQLiteBackend
from justpipe.types import PipelineTerminalStatus
from pg import StoreView

XSS_SCRIPT = "<script>window.__xss = (window.__xss || 0) + 1</script>"
XSS_IMG = '<img src=x onerror="window.__xss = (window.__xss || 0) + 1">'
XSS_STEP = f"fetch{XSS_IMG}"
TWIN_RUNS = ("twin0000aaaa000000000000000000001", "twin0000bbbb000000000000000000001")
"""Two finished runs whose ids share the prefix ``twin0000``: an ambiguous prefix."""
BROKEN_BYTES = b"this is not a SQLite database, and must stay exactly like this\n" * 4


@dataclass
class Store:
    root: Path
    url: str | None = None
    orders_hash: str = ""
    hostile_hash: str = ""
    live_hash: str = ""
    broken_hash: str = "b" * 16
    order_runs: list[str] = field(default_factory=list)
    failed_run: str = ""
    hostile_run: str = ""
    routing_hash: str = ""
    routing_run: str = ""
    live_run: str = ""
    dead_run: str = ""


@dataclass
class Ctx:
    meta: Meta | None = None


def orders_pipe(fail: bool = False) -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name="orders", persist=True)

    @pipe.step(to="fan")
    async def load(state: dict[str, Any]) -> None:
        state["items"] = [1, 2, 3, 4, 5]

    @pipe.map(each="work", to="done")
    async def fan(state: dict[str, Any]) -> list[int]:
        return list(state["items"])

    @pipe.step
    async def work(item: int, state: dict[str, Any]) -> None:
        await asyncio.sleep(0.001 * item)

    @pipe.step
    async def done(state: dict[str, Any]) -> None:
        if fail:
            raise RuntimeError("payment service refused the order")

    return pipe


def hostile_pipe() -> Pipe[Any, Any]:
    pipe: Pipe[Any, Any] = Pipe(name=f"hostile {XSS_SCRIPT}", persist=True)

    @pipe.step(XSS_STEP, to="explode")
    async def fetch(state: dict[str, Any], ctx: Ctx) -> None:
        state["html"] = XSS_SCRIPT
        state["img"] = XSS_IMG
        assert ctx.meta is not None
        ctx.meta.step.set("note", XSS_IMG)
        ctx.meta.run.set("owner", XSS_SCRIPT)

    @pipe.step
    async def explode(state: dict[str, Any]) -> None:
        raise ValueError(f"bad input {XSS_SCRIPT} {XSS_IMG}")

    return pipe


def routing_pipe() -> Pipe[Any, Any]:
    """Every graph shape: a parallel fan-out and join, a switch, a sub-pipeline, a
    streaming step and a step that succeeds on its second attempt (retries)."""
    cleaner: Pipe[Any, Any] = Pipe(name="cleaner")

    @cleaner.step(to="lower")
    async def strip(state: dict[str, Any]) -> None:
        state["text"] = state["text"].strip()

    @cleaner.step
    async def lower(state: dict[str, Any]) -> None:
        state["text"] = state["text"].lower()

    pipe: Pipe[Any, Any] = Pipe(name="routing", persist=True)
    attempts: list[int] = []

    @pipe.step(to=["left", "right"])
    async def split(state: dict[str, Any]) -> None:
        state["text"] = "  Hello Routing  "

    @pipe.step(to="join")
    async def left(state: dict[str, Any]) -> None:
        await asyncio.sleep(0.002)

    @pipe.step(to="join", retries=2, retry_wait_min=0, retry_wait_max=0)
    async def right(state: dict[str, Any]) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("flaky upstream, first attempt")

    @pipe.step(to="clean")
    async def join(state: dict[str, Any]) -> None:
        pass

    @pipe.sub(pipeline=cleaner, to="route")
    async def clean(state: dict[str, Any]) -> dict[str, Any]:
        return state

    @pipe.switch(to={"long": "speak", "short": "done"}, default="done")
    async def route(state: dict[str, Any]) -> str:
        return "long" if len(state["text"]) > 5 else "short"

    @pipe.step(to="done")
    async def speak(state: dict[str, Any]) -> Any:
        for word in state["text"].split():
            yield word

    @pipe.step
    async def done(state: dict[str, Any]) -> None:
        pass

    return pipe


async def _drain(pipe: Pipe[Any, Any], state: Any, context: Any = None) -> str:
    run_id = ""
    async for event in pipe.run(state, context):
        run_id = event.run_id
    return run_id


def _hash_of(pipe: Pipe[Any, Any]) -> str:
    return str(pipe.describe()["pipeline_hash"])


async def _build(store: Store) -> None:
    for _ in range(3):
        store.order_runs.append(await _drain(orders_pipe(), {}))
        time.sleep(0.002)  # distinct start times keep "newest first" unambiguous
    store.failed_run = await _drain(orders_pipe(fail=True), {})
    store.orders_hash = _hash_of(orders_pipe())
    routing = routing_pipe()
    store.routing_run = await _drain(routing, {})
    store.routing_hash = _hash_of(routing)
    hostile = hostile_pipe()
    store.hostile_run = await _drain(hostile, {}, Ctx())
    store.hostile_hash = _hash_of(hostile)


def _event(run_id: str, seq: int, kind: str, stage: str, ts: float, **extra: Any) -> str:
    data = {
        "type": kind,
        "stage": stage,
        "timestamp": ts,
        "run_id": run_id,
        "seq": seq,
        "node_kind": "step",
        "invocation_id": extra.pop("invocation_id", None),
        "attempt": 1,
        "scope": [],
        "meta": None,
        "payload": extra.pop("payload", None),
    }
    return json.dumps(data)


def live_backend(store: Store) -> Any:
    """The live pipeline's run store (SQLite under the root, or the PostgreSQL database)."""
    if store.url is None or store.url.startswith("sqlite:"):
        return SQLiteBackend(store.root / store.live_hash / RUNS_DB)
    from justpipe.storage.postgres import PostgresBackend

    described = {"name": "live", "nodes": {}}
    return PostgresBackend(store.url, store.live_hash, pipeline_name="live", description=described)


def add_live_pipeline(store: Store) -> None:
    """A pipeline with one run still going (live lease) and one whose process died."""
    store.live_hash = "1" * 16
    if store.url is None or store.url.startswith("sqlite:"):
        directory = store.root / store.live_hash
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PIPELINE_JSON).write_text(json.dumps({"name": "live", "nodes": {}}))
    now = time.time()
    store.live_run = "live0000run0000000000000000000001"
    store.dead_run = "dead0000run0000000000000000000001"
    with live_backend(store) as backend:
        backend.append_events(
            store.live_run,
            [
                _event(store.live_run, 1, "start", "system", now),
                _event(store.live_run, 2, "step_start", "slow", now, invocation_id="x:1"),
            ],
        )
        backend.append_events(
            store.dead_run, [_event(store.dead_run, 1, "start", "system", now - 5)]
        )
        StoreView(store.url or f"sqlite://{store.root}").execute(
            "UPDATE run_leases SET owner = ? WHERE run_id = ?",
            (f"{socket.gethostname()}:0", store.dead_run),
        )
        for twin in TWIN_RUNS:
            backend.save_run(
                RunRecord(
                    twin,
                    datetime.fromtimestamp(now - 60, tz=UTC),
                    datetime.fromtimestamp(now - 59, tz=UTC),
                    timedelta(seconds=1),
                    PipelineTerminalStatus.SUCCESS,
                ),
                [_event(twin, 1, "start", "system", now - 60)],
            )


def add_broken_pipeline(store: Store) -> None:
    directory = store.root / store.broken_hash
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RUNS_DB).write_bytes(BROKEN_BYTES)
    (directory / PIPELINE_JSON).write_text(json.dumps({"name": "broken"}))


def build_store(root: Path, url: str | None = None) -> Store:
    """Persist every fixture run under `root` (sets and restores JUSTPIPE_STORAGE_PATH), or
    into the store of `url` (JUSTPIPE_STORAGE_URL: ``sqlite://<root>`` or a PostgreSQL
    database), then without the broken pipeline (a database has no file to break)."""
    store = Store(root, url=url)
    variable, value = (
        ("JUSTPIPE_STORAGE_PATH", str(root)) if url is None else ("JUSTPIPE_STORAGE_URL", url)
    )
    previous = os.environ.get(variable)
    os.environ[variable] = value
    try:
        asyncio.run(_build(store))
    finally:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
    add_live_pipeline(store)
    if url is None:
        add_broken_pipeline(store)
    return store


def renew(store: Store) -> None:
    """Renew the live run's lease (its "process" is the test process)."""
    with live_backend(store) as backend:
        backend.beat(store.live_run)


def sqlite_rows(path: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def add_large_run(root: Path, events: int, workers: int, pipeline_hash: str = "f" * 16) -> str:
    """Store one finished run of about `events` events with a map of `workers` workers.

    load -> fan (map: `workers` workers of ``work``) -> stream (TOKEN events fill up
    to `events`) -> done. Written directly (no pipeline run), so building 100k events
    takes a second.
    """
    directory = root / pipeline_hash
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PIPELINE_JSON).write_text(json.dumps({"name": f"large-{events}"}))
    run_id = f"large{events:08d}".ljust(32, "0")
    t = time.time() - 120
    out: list[str] = []

    def emit(kind: str, stage: str, inv: str | None, **extra: Any) -> None:
        nonlocal t
        t += 0.0005
        out.append(
            json.dumps(
                {
                    "type": kind, "stage": stage, "timestamp": t, "run_id": run_id,
                    "seq": len(out) + 1, "node_kind": extra.pop("node_kind", "step"),
                    "invocation_id": inv, "owner_invocation_id": extra.pop("owner", inv),
                    "parent_invocation_id": extra.pop("parent", None),
                    "attempt": extra.pop("attempt", 1), "scope": extra.pop("scope", []),
                    "meta": None, "payload": extra.pop("payload", None),
                }
            )
        )  # fmt: skip

    emit("start", "system", None, node_kind="system", payload={})
    emit("step_start", "load", f"{run_id}:1")
    emit("step_end", "load", f"{run_id}:1", payload={"items": workers})
    owner = f"{run_id}:2"
    emit("step_start", "fan", owner, node_kind="map")
    emit("map_start", "fan", owner, node_kind="map", payload={"target": "work"})
    for index in range(workers):
        emit("map_worker", f"work[{index}]", owner, node_kind="map", payload={"index": index})
    for index in range(workers):
        inv = f"{run_id}:{3 + index}"
        scope = [f"work[{index}]"]
        emit("step_start", "work", inv, owner=owner, parent=owner, scope=scope)
        emit("step_end", "work", inv, owner=owner, parent=owner, scope=scope, payload={})
    emit("map_complete", "fan", owner, node_kind="map", payload={})
    emit("step_end", "fan", owner, node_kind="map", payload={})
    stream = f"{run_id}:{3 + workers}"
    emit("step_start", "stream", stream)
    while len(out) < events - 4:
        emit("token", "stream", None, node_kind="system", payload=f"token {len(out)}")
    emit("step_end", "stream", stream, payload={})
    done = f"{run_id}:{4 + workers}"
    emit("step_start", "done", done)
    emit("step_end", "done", done, payload={})
    emit("finish", "system", None, node_kind="system", payload={"status": "success"})
    start = datetime.fromtimestamp(json.loads(out[0])["timestamp"], tz=UTC)
    end = datetime.fromtimestamp(t, tz=UTC)
    with SQLiteBackend(directory / RUNS_DB) as backend:
        backend.save_run(
            RunRecord(run_id, start, end, end - start, PipelineTerminalStatus.SUCCESS), out
        )
    return run_id
