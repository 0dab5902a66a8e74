"""The dashboard's list pages over a big store: SQLite beside PostgreSQL (issue 21).

    python bench/dashboard_list_probe.py               # 20,000 runs, both stores
    python bench/dashboard_list_probe.py --runs 5000 --repeat 3

One pipeline with `--runs` runs spread over the last 6 days (90% success, 8% failed in one
of three steps, 2% timeout; 4 events each), 10 runs still going (a live lease) and 10
durable runs suspended, written through the stores' own `save_run` / `append_events`
(and checkpoint store), into SQLite (a temporary directory) and PostgreSQL (a server this
probe starts on 127.0.0.1). Then each list request is timed in-process through the
dashboard's ASGI app (Starlette's TestClient: routing, the store, rendering; no network):
the pipelines page, the pipeline page (its first page of runs and its 7-day statistics),
a page of runs deep in the list, a status filter, and the same through the JSON API.
Best of `--repeat`, after one untimed request.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

PIPELINE_HASH = "b" * 16
STEPS = ("load", "score", "store")


def _event(run_id: str, seq: int, kind: str, stage: str, ts: float, payload: Any = None) -> str:
    data = {"type": kind, "stage": stage, "timestamp": ts, "run_id": run_id, "seq": seq}
    return json.dumps(data | {"payload": payload})


def fill(backend: Any, checkpoints: Any, runs: int) -> None:
    """`runs` finished runs, 10 unfinished with a live lease, 10 durable ones suspended."""
    from justpipe.durable import Checkpoint
    from justpipe.storage import RunRecord
    from justpipe.types import PipelineTerminalStatus as Status

    rng = random.Random(21)
    now = time.time()
    for n in range(runs):
        start = now - rng.uniform(60, 6 * 86400)
        roll = rng.random()
        status = Status.SUCCESS if roll < 0.9 else Status.FAILED if roll < 0.98 else Status.TIMEOUT
        duration = rng.uniform(0.05, 3.0)
        step = rng.choice(STEPS) if status is Status.FAILED else None
        run_id = f"run{n:08d}".ljust(32, "0")
        record = RunRecord(
            run_id,
            datetime.fromtimestamp(start, tz=UTC),
            datetime.fromtimestamp(start + duration, tz=UTC),
            timedelta(seconds=duration),
            status,
            error_message=f"{step} failed" if step else None,
            error_step=step,
        )
        events = [
            _event(run_id, 1, "start", "system", start),
            _event(run_id, 2, "step_start", "load", start + 0.01),
            _event(run_id, 3, "step_end", "load", start + duration / 2),
            _event(run_id, 4, "finish", "system", start + duration, {"status": status.value}),
        ]
        backend.save_run(record, events)
    for n in range(10):
        run_id = f"live{n:08d}".ljust(32, "0")
        backend.append_events(run_id, [_event(run_id, 1, "start", "system", now - n)])
    for n in range(10):
        run_id = f"wait{n:08d}".ljust(32, "0")
        owner = "bench:1:a"
        checkpoints.acquire(run_id, owner, 30.0)
        document = json.dumps({"status": "suspended", "suspended": [{"step": "ask"}]})
        checkpoint = Checkpoint(run_id, "listed", PIPELINE_HASH, "suspended", 1, document)
        checkpoints.save(checkpoint, owner, [_event(run_id, 1, "start", "system", now - 99 - n)])
        checkpoints.release(run_id, owner)


def timed(request: Callable[[], Any], repeat: int) -> float:
    request()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = request()
        best = min(best, time.perf_counter() - t0)
        assert response.status_code == 200, response.text[:300]
    return best


def measure(label: str, registry: Any, runs: int, repeat: int) -> list[tuple[str, str, float]]:
    from starlette.testclient import TestClient

    from justpipe.dashboard.server import create_app

    deep = (runs // 2) // 20
    urls = [
        ("pipelines page", "/"),
        ("pipeline page (runs page 1, 7-day stats)", f"/pipelines/{PIPELINE_HASH}"),
        (
            f"pipeline page, runs page {deep}",
            f"/pipelines/{PIPELINE_HASH}?page={deep}&fragment=runs",
        ),
        ("pipeline page, failed runs", f"/pipelines/{PIPELINE_HASH}?status=failed&fragment=runs"),
        ("API: pipelines", "/api/pipelines"),
        ("API: runs, offset 10,000", f"/api/pipelines/{PIPELINE_HASH}/runs?limit=20&offset=10000"),
        ("API: runs, status=running", f"/api/pipelines/{PIPELINE_HASH}/runs?status=running"),
        ("API: 7-day stats", f"/api/stats/{PIPELINE_HASH}?days=7"),
    ]
    found = []
    with TestClient(create_app(registry), base_url="http://127.0.0.1:8741") as client:
        for name, url in urls:
            found.append((label, name, timed(lambda url=url: client.get(url), repeat)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from justpipe.cli.registry import open_registry
    from justpipe.durable import SQLiteCheckpointStore
    from justpipe.durable.postgres import PostgresCheckpointStore
    from justpipe.storage import SQLiteBackend
    from justpipe.storage.postgres import PostgresBackend, PostgresDatabase
    from justpipe.storage.url import parse_storage_url
    from pg import fresh_database_name, start_server

    server = start_server(durable=True)
    results: list[tuple[str, str, float]] = []
    try:
        url = server.create_database(fresh_database_name())
        with tempfile.TemporaryDirectory() as root:
            db = Path(root) / PIPELINE_HASH / "runs.db"
            with SQLiteBackend(db) as backend:
                fill(backend, SQLiteCheckpointStore(db), args.runs)
            (db.parent / "pipeline.json").write_text(json.dumps({"name": "listed"}))
            sqlite_url = f"sqlite://{root}"
            fast = PostgresDatabase(url + "?options=-c%20synchronous_commit%3Doff")
            backend = PostgresBackend(fast, PIPELINE_HASH, pipeline_name="listed")
            fill(backend, PostgresCheckpointStore(fast), args.runs)
            fast.close()
            for label, where in (("SQLite", sqlite_url), ("PostgreSQL", url)):
                registry = open_registry(parse_storage_url(where), timeout=1.0)
                results += measure(label, registry, args.runs, args.repeat)
                registry.close()
    finally:
        server.destroy()
    print(f"## Dashboard list pages at {args.runs:,} runs (best of {args.repeat}, ms)\n")
    print("| request | SQLite | PostgreSQL |")
    print("|---|--:|--:|")
    by_name: dict[str, dict[str, float]] = {}
    for label, name, seconds in results:
        by_name.setdefault(name, {})[label] = seconds
    for name, row in by_name.items():
        print(f"| {name} | {row['SQLite'] * 1e3:,.0f} | {row['PostgreSQL'] * 1e3:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
