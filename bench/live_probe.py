"""The dashboard's live pages over PostgreSQL: LISTEN/NOTIFY against polling (issue 21).

    python bench/live_probe.py                  # 40 events, 10 idle streams, 10 s
    python bench/live_probe.py --events 100 --streams 20 --idle 20

A PostgreSQL server (this probe starts it on 127.0.0.1) holds a pipeline with running
runs. The dashboard is served by uvicorn (in this process, one thread) twice over the
same database: once polling the store every 0.5 s (the dashboard's default, as over
SQLite), once woken by LISTEN/NOTIFY (the default over PostgreSQL: a recheck every 2 s
for what no write announces). For each:

* latency: a writer appends one event to a followed run every 100 ms; the time from its
  commit to the event arriving on the run's SSE stream (``/api/runs/<id>/stream``);
* idle cost: `--streams` streams follow runs that do not change, for `--idle` seconds;
  the statements the dashboard sent the database in that time (counted as it sends them:
  each read is one) and this process's CPU time (the dashboard and the idle readers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

PIPELINE_HASH = "e" * 16


def serve(registry: Any, poll: float) -> tuple[Any, str]:
    import uvicorn

    from justpipe.dashboard.server import create_app
    from pg import free_port

    port = free_port()
    config = uvicorn.Config(
        create_app(registry, poll_interval=poll),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def follow(base: str, run_id: str, arrived: dict[int, float], stop: threading.Event) -> None:
    import httpx

    with httpx.stream("GET", f"{base}/api/runs/{run_id}/stream", timeout=None) as response:
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("id: "):
                arrived[int(line[4:])] = time.monotonic()


STATEMENTS = [0]


def count_statements() -> None:
    """Count every statement the stores send (`PostgresDatabase.query` and `.write`)."""
    from justpipe.storage.postgres import PostgresDatabase

    for name in ("query", "write"):
        original = getattr(PostgresDatabase, name)

        def counted(self: Any, *args: Any, _original: Any = original) -> Any:
            STATEMENTS[0] += 1
            return _original(self, *args)

        setattr(PostgresDatabase, name, counted)


def measure(
    label: str, registry: Any, poll: float, url: str, args: argparse.Namespace
) -> dict[str, float]:
    from justpipe.storage.postgres import PostgresBackend

    backend = PostgresBackend(url, PIPELINE_HASH, pipeline_name="live")
    server, base = serve(registry, poll)
    stop = threading.Event()
    # latency: one followed run, one event per 100 ms
    followed = f"{label}-follow".ljust(32, "0")
    backend.append_events(followed, [_event(1)])
    arrived: dict[int, float] = {}
    reader = threading.Thread(target=follow, args=(base, followed, arrived, stop), daemon=True)
    reader.start()
    while 1 not in arrived:
        time.sleep(0.01)
    sent: dict[int, float] = {}
    for seq in range(2, args.events + 2):
        backend.append_events(followed, [_event(seq)])
        sent[seq] = time.monotonic()
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while len(arrived) < args.events + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    delays = [arrived[seq] - sent[seq] for seq in sent if seq in arrived]
    # idle: streams of runs that do not change
    idle_runs = [f"{label}-idle{n:03d}".ljust(32, "0") for n in range(args.streams)]
    for run_id in idle_runs:
        backend.append_events(run_id, [_event(1)])
        backend.beat(run_id)
    seen: list[dict[int, float]] = [{} for _ in idle_runs]
    for run_id, got in zip(idle_runs, seen, strict=True):
        threading.Thread(target=follow, args=(base, run_id, got, stop), daemon=True).start()
    while not all(seen):
        time.sleep(0.02)
    time.sleep(1.0)
    before, cpu = STATEMENTS[0], time.process_time()
    time.sleep(args.idle)
    after, cpu_after = STATEMENTS[0], time.process_time()
    stop.set()
    server.should_exit = True
    backend.close()
    return {
        "median_ms": statistics.median(delays) * 1e3,
        "p95_ms": sorted(delays)[int(len(delays) * 0.95) - 1] * 1e3,
        "lost": args.events - len(delays),
        "statements_per_s": (after - before) / args.idle,
        "cpu_per_s": (cpu_after - cpu) / args.idle,
    }


def _event(seq: int) -> str:
    return json.dumps({"type": "token", "stage": "s", "timestamp": time.time(), "seq": seq})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()

    from justpipe.cli.pgregistry import PostgresRegistry
    from justpipe.storage.url import PostgresLocation, parse_storage_url
    from pg import fresh_database_name, start_server

    class Polling(PostgresRegistry):
        change_feed = None  # type: ignore[assignment]  # the dashboard then polls

    server = start_server(durable=True)
    results = {}
    try:
        url = server.create_database(fresh_database_name())
        location = parse_storage_url(url)
        assert isinstance(location, PostgresLocation)
        count_statements()
        for label, registry, poll in (
            ("polling", Polling(location), 0.5),
            ("notify", PostgresRegistry(location), 0.5),
        ):
            results[label] = measure(label, registry, poll, url, args)
            registry.close()
    finally:
        server.destroy()
    print(
        f"## Live pages over PostgreSQL: LISTEN/NOTIFY against polling every 0.5 s\n\n"
        f"{args.events} events 100 ms apart on one followed run; {args.streams} idle streams "
        f"for {args.idle:g} s.\n"
    )
    print("| | event to page, median | p95 | lost | idle: statements/s | idle: CPU s/s |")
    print("|---|--:|--:|--:|--:|--:|")
    for label, row in results.items():
        print(
            f"| {label} | {row['median_ms']:.0f} ms | {row['p95_ms']:.0f} ms | {row['lost']:.0f}"
            f" | {row['statements_per_s']:.1f} | {row['cpu_per_s']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
