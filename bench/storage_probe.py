"""What the stores cost: SQLite beside PostgreSQL (issue 21).

    python bench/storage_probe.py                  # both parts, active core backend
    python bench/storage_probe.py --steps 100 --repeat 5
    python bench/storage_probe.py --part runs      # part 2 only

Part 1, a durable checkpoint per completion: a chain of N steps that never suspend
(bench/durable_probe.py's), small state (a dict of a few ints) and ~1 MB state (1,000
strings of 1 KB), ``persist=False``, in the full mode (a checkpoint after every
completion), every 10th and the cheap mode (start and end only), into SQLite (a temporary
directory: WAL, synchronous=NORMAL) and PostgreSQL (a server this probe starts on
127.0.0.1 with the server's default durability: fsync on, synchronous_commit on; and the
same server with ``synchronous_commit=off`` for justpipe's connections, given in the URL).
The figure is the durable run's wall time minus a plain run's, per completion.

Part 2, a persisted run's write cost: the same chain, not durable, ``persist=True`` through
``JUSTPIPE_STORAGE_URL`` (``sqlite:///<tmp>`` or the server's), written at the end of the
run (no flush_interval) or every 10 events (``flush_interval=10``), small and 1 MB states
(the state travels in the START and FINISH events). The figure is the persisted run's
wall time minus a plain run's, per run and per stored event.

Every pipe is built once and run once untimed first; then the best of `--repeat` runs.
Wall-clock, so numbers vary with the machine: on a shared machine, take the best of several.
The PostgreSQL server is Debian's (tests/pg.py starts it as the tests do).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from durable_probe import best, big_state, chain, small_state  # noqa: E402

from justpipe import Pipe  # noqa: E402
from justpipe.durable import Durable  # noqa: E402

# libpq's `options`: commits that do not wait for the WAL flush (survive this process, not
# the server's OS crash: what SQLite's synchronous=NORMAL promises); see docs/storage.md
ASYNC_COMMIT = "?options=-c%20synchronous_commit%3Doff"

STATES: tuple[tuple[str, Callable[[], Any]], ...] = (("small", small_state), ("1 MB", big_state))


def checkpoint_stores(sqlite_root: str, postgres_url: str) -> dict[str, Callable[[], Any]]:
    """A fresh checkpoint store of each kind (one per pipe)."""
    from justpipe.durable import SQLiteCheckpointStore
    from justpipe.durable.postgres import PostgresCheckpointStore
    from justpipe.storage.postgres import PostgresDatabase

    database = PostgresDatabase(postgres_url)
    relaxed = PostgresDatabase(postgres_url + ASYNC_COMMIT)
    counter = iter(range(1_000_000))
    return {
        "SQLite": lambda: SQLiteCheckpointStore(Path(sqlite_root) / f"c{next(counter)}.db"),
        "PostgreSQL": lambda: PostgresCheckpointStore(database),
        "PostgreSQL, async commit": lambda: PostgresCheckpointStore(relaxed),
    }


def per_completion(args: argparse.Namespace, sqlite_root: str, postgres_url: str) -> None:
    n = args.steps
    print(f"## A durable checkpoint per completion ({n}-step chain, best of {args.repeat})\n")
    print("| state | store | mode | run (ms) | extra per completion (us) |")
    print("|---|---|---|---:|---:|")
    stores = checkpoint_stores(sqlite_root, postgres_url)
    for label, state in STATES:
        plain = best(n, lambda: chain(n, None), state, args.repeat)
        print(f"| {label} | - | plain | {plain * 1e3:.1f} | - |")
        for store_name, store in stores.items():
            for mode, every in (("full", 1), ("every 10", 10), ("cheap", 0)):

                def make(every: int = every, store: Any = store) -> Pipe[Any, None]:
                    return chain(n, Durable(store=store(), checkpoint_every=every))

                elapsed = best(n, make, state, args.repeat)
                extra = (elapsed - plain) / n * 1e6
                print(f"| {label} | {store_name} | {mode} | {elapsed * 1e3:.1f} | {extra:.1f} |")
    print()


def persisted(n: int, flush: int | None) -> Pipe[Any, None]:
    pipe = chain(n, None)
    pipe.persist = True
    pipe.flush_interval = flush
    return pipe


def persisted_runs(args: argparse.Namespace, sqlite_root: str, postgres_url: str) -> None:
    n = args.steps
    events = 2 * n + 2  # START, a STEP_START and STEP_END per step, FINISH
    print(
        f"## A persisted run's write cost ({n}-step chain, {events} events,"
        f" best of {args.repeat})\n"
    )
    print("| state | store | written | run (ms) | extra per run (ms) | extra per event (us) |")
    print("|---|---|---|---:|---:|---:|")
    urls = {
        "SQLite": f"sqlite://{sqlite_root}/runs",
        "PostgreSQL": postgres_url,
        "PostgreSQL, async commit": postgres_url + ASYNC_COMMIT,
    }
    for label, state in STATES:
        plain = best(n, lambda: chain(n, None), state, args.repeat)
        print(f"| {label} | - | not persisted | {plain * 1e3:.1f} | - | - |")
        for store_name, url in urls.items():
            os.environ["JUSTPIPE_STORAGE_URL"] = url
            for written, flush in (("at the end", None), ("every 10 events", 10)):
                elapsed = best(n, lambda flush=flush: persisted(n, flush), state, args.repeat)
                extra = elapsed - plain
                print(
                    f"| {label} | {store_name} | {written} | {elapsed * 1e3:.1f} "
                    f"| {extra * 1e3:.2f} | {extra / events * 1e6:.1f} |"
                )
            del os.environ["JUSTPIPE_STORAGE_URL"]
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--part", choices=("all", "checkpoints", "runs"), default="all")
    args = parser.parse_args()

    import justpipe._core as core
    from pg import fresh_database_name, start_server

    server = start_server(durable=True)
    try:
        postgres_url = server.create_database(fresh_database_name())
        with tempfile.TemporaryDirectory() as sqlite_root:
            print(f"justpipe core: {core.BACKEND}; Python {sys.version.split()[0]}; ", end="")
            print("PostgreSQL: a local server (127.0.0.1), fsync on\n")
            if args.part in ("all", "checkpoints"):
                per_completion(args, sqlite_root, postgres_url)
            if args.part in ("all", "runs"):
                persisted_runs(args, sqlite_root, postgres_url)
    finally:
        from justpipe.storage.postgres import close_shared_databases

        close_shared_databases()
        server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
