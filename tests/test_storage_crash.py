"""Crash and multi-process safety of the SQLite store (spec §21 B8/B9, reliability issue).

Child processes are real interpreters; the parent only synchronises on marker files
and process exit, never on elapsed time.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from justpipe.storage import SQLiteBackend
from justpipe.storage.sqlite import UNFINISHED_RUN_MESSAGE
from justpipe.types import EventType, PipelineTerminalStatus

pytestmark = [
    pytest.mark.backend_agnostic,  # children use the default core; storage does not touch it
    pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL and fork"),
]

CHILD_TIMEOUT_S = 60.0

# Drives the persistence observer with hand-made events: flushes every 2 events, writes
# the marker once `flushed` events are stored, then blocks until it is killed.
OBSERVER_CHILD = """
import asyncio, sys
from pathlib import Path
from justpipe.observability.observer import ObserverMeta
from justpipe.storage import SQLiteBackend
from justpipe.storage.persistence import PersistenceObserver
from justpipe.types import Event, EventType

db, marker, flushed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
run_id = "killed0123456789abcdef0123456789"
meta = ObserverMeta("crash", run_id, 1_700_000_000.0)

async def main():
    store = SQLiteBackend(db)
    observer = PersistenceObserver(lambda: store, flush_interval=2)
    await observer.on_pipeline_start(None, None, meta)
    start = Event(EventType.START, "system", run_id=run_id, seq=1)
    await observer.on_event(None, None, meta, start)
    for seq in range(2, flushed + 2):
        event = Event(EventType.TOKEN, "a", payload=seq, run_id=run_id, seq=seq)
        await observer.on_event(None, None, meta, event)
    marker.write_text("flushed")
    await asyncio.Event().wait()

asyncio.run(main())
"""

# Helpers shared by the writer children: `n` token events and a finished-run record.
WRITER_HELPERS = """
import json
from datetime import datetime, timezone
from justpipe.storage import RunRecord
from justpipe.types import PipelineTerminalStatus

def tokens(n, pad=""):
    return [
        json.dumps({"type": "token", "stage": "a", "timestamp": 1.0, "seq": s, "pad": pad})
        for s in range(1, n + 1)
    ]

def finished(run_id):
    now = datetime.now(timezone.utc)
    return RunRecord(run_id, now, None, None, PipelineTerminalStatus.SUCCESS)
"""

# Writes complete runs (append + save, like the observer) in a tight loop until killed.
HAMMER_CHILD = (
    WRITER_HELPERS
    + """
import sys
from pathlib import Path
from justpipe.storage import SQLiteBackend

db, marker = Path(sys.argv[1]), Path(sys.argv[2])
store = SQLiteBackend(db)
n = 0
while True:
    run_id = f"run{n:08d}"
    events = tokens(10, pad="x" * 200)
    store.append_events(run_id, events[:5])
    store.save_run(finished(run_id), events[5:])
    n += 1
    if n == 20:
        marker.write_text("busy")
"""
)

# Persists `count` complete runs whose ids start with `prefix`.
WRITER_CHILD = (
    WRITER_HELPERS
    + """
import sys
from pathlib import Path
from justpipe.storage import SQLiteBackend

db, prefix, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
store = SQLiteBackend(db)
for n in range(count):
    run_id = f"{prefix}{n:05d}"
    events = tokens(6)
    store.append_events(run_id, events[:3])
    store.save_run(finished(run_id), events[3:])
store.close()
"""
)


def child_env() -> dict[str, str]:
    """Let the child import justpipe exactly as this process does."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def spawn(program: str, *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(program), *map(str, args)],
        env=child_env(),
        stderr=subprocess.PIPE,
    )


def wait_for_marker(marker: Path, child: subprocess.Popen[bytes]) -> None:
    """Wait until the child wrote `marker`; fail with its stderr if it exited first."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not marker.exists():
        if child.poll() is not None:
            stderr = child.stderr.read().decode() if child.stderr else ""
            pytest.fail(f"child exited with {child.returncode} before {marker.name}:\n{stderr}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"child did not write {marker.name} within {CHILD_TIMEOUT_S}s")
        time.sleep(0.01)


def kill(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=CHILD_TIMEOUT_S)
    if child.stderr:
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


@contextmanager
def opened(db: Path) -> Iterator[SQLiteBackend]:
    store = SQLiteBackend(db)
    try:
        yield store
    finally:
        store.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_run_killed_mid_flight_keeps_flushed_events_and_reads_as_unfinished(
    tmp_path: Path,
) -> None:
    db, marker = tmp_path / "runs.db", tmp_path / "flushed"
    child = spawn(OBSERVER_CHILD, db, marker, 5)  # START + 5 tokens: 3 flushes of 2
    wait_for_marker(marker, child)

    kill(child)

    assert integrity(db) == "ok"
    with opened(db) as store:
        (run,) = store.list_runs()
        assert run.run_id == "killed0123456789abcdef0123456789"
        assert run.status is PipelineTerminalStatus.FAILED
        assert run.error_message == UNFINISHED_RUN_MESSAGE
        events = store.get_events(run.run_id)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        assert [e.event_type for e in events] == [EventType.START] + [EventType.TOKEN] * 5


def test_store_killed_during_heavy_writes_opens_cleanly_with_whole_runs(tmp_path: Path) -> None:
    db, marker = tmp_path / "runs.db", tmp_path / "busy"
    child = spawn(HAMMER_CHILD, db, marker)
    wait_for_marker(marker, child)

    kill(child)

    assert integrity(db) == "ok"
    with opened(db) as store:
        runs = store.list_runs(limit=100_000)
        finished = [r for r in runs if r.status is PipelineTerminalStatus.SUCCESS]
        unfinished = [r for r in runs if r.status is not PipelineTerminalStatus.SUCCESS]
        assert len(finished) >= 20
        assert len(unfinished) <= 1
        for run in finished:
            assert [e.seq for e in store.get_events(run.run_id)] == list(range(1, 11))
        for run in unfinished:
            assert run.error_message == UNFINISHED_RUN_MESSAGE
            assert [e.seq for e in store.get_events(run.run_id)] == [1, 2, 3, 4, 5]
        store.save_run(dataclasses.replace(finished[0], run_id="after-crash"), [])
        assert store.get_run("after-crash") is not None


def test_two_processes_persisting_into_one_store_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "shared" / "runs.db"
    writers = [spawn(WRITER_CHILD, db, prefix, 150) for prefix in ("left", "right")]

    for writer in writers:
        _, stderr = writer.communicate(timeout=CHILD_TIMEOUT_S * 2)
        assert writer.returncode == 0, stderr.decode()

    with opened(db) as store:
        runs = store.list_runs(limit=1000)
        assert len(runs) == 300
        assert {r.run_id[:4] for r in runs} == {"left", "righ"}
        assert all(r.status is PipelineTerminalStatus.SUCCESS for r in runs)
        assert all([e.seq for e in store.get_events(r.run_id)] == [1, 2, 3, 4, 5, 6] for r in runs)


def _write_in_forked_child(store: SQLiteBackend) -> None:
    store.append_events("from-child", ['{"type": "start", "stage": "system", "seq": 1}'])


def test_backend_inherited_through_fork_writes_through_its_own_connection(
    tmp_path: Path,
) -> None:
    with opened(tmp_path / "runs.db") as store:
        store.append_events("from-parent", ['{"type": "start", "stage": "system", "seq": 1}'])
        child = multiprocessing.get_context("fork").Process(
            target=_write_in_forked_child, args=(store,)
        )
        child.start()
        child.join(timeout=CHILD_TIMEOUT_S)

        assert child.exitcode == 0
        assert {r.run_id for r in store.list_runs()} == {"from-parent", "from-child"}
        store.append_events("from-parent", ['{"type": "token", "stage": "a", "seq": 2}'])
        assert [e.seq for e in store.get_events("from-parent")] == [1, 2]


# A real persisted Pipe whose step streams three tokens, then blocks; the consumer
# writes the marker once it has received the last token (observers see an event
# before the consumer does, so by then that token is flushed).
PIPE_CHILD = """
import asyncio, sys
from pathlib import Path
from justpipe import EventType, Pipe

marker = Path(sys.argv[1])
pipe = Pipe(dict, name="crashing", persist=True, flush_interval=1)

@pipe.step()
async def stream(state):
    for n in range(3):
        yield n
    await asyncio.Event().wait()

async def main():
    async for event in pipe.run({}):
        if event.type is EventType.TOKEN and event.payload == 2:
            marker.write_text(pipe.describe()["pipeline_hash"])

asyncio.run(main())
"""


def test_persisted_pipe_killed_mid_run_is_listed_with_its_flushed_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "storage"))
    marker = tmp_path / "streamed"
    child = spawn(PIPE_CHILD, marker)
    wait_for_marker(marker, child)

    kill(child)

    directory = tmp_path / "storage" / marker.read_text()
    assert integrity(directory / "runs.db") == "ok"
    assert '"name": "crashing"' in (directory / "pipeline.json").read_text()
    with opened(directory / "runs.db") as store:
        (run,) = store.list_runs()
        assert run.status is PipelineTerminalStatus.FAILED
        assert run.error_message == UNFINISHED_RUN_MESSAGE
        types = [e.event_type for e in store.get_events(run.run_id)]
    assert types == [EventType.START, EventType.STEP_START] + [EventType.TOKEN] * 3


# Runs `count` persisted runs of one pipeline (same hash, so the same runs.db).
PIPE_WRITER_CHILD = """
import asyncio, sys
from justpipe import Pipe

count = int(sys.argv[1])
pipe = Pipe(dict, name="shared", persist=True, flush_interval=2)

@pipe.step()
async def stream(state):
    for n in range(3):
        yield n

async def main():
    for _ in range(count):
        async for _ in pipe.run({}):
            pass
    print(pipe.describe()["pipeline_hash"])

asyncio.run(main())
"""


def test_two_processes_running_persisted_pipes_into_one_store_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "storage"))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", PIPE_WRITER_CHILD, "40"],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]

    hashes = set()
    for writer in writers:
        stdout, stderr = writer.communicate(timeout=CHILD_TIMEOUT_S * 2)
        assert writer.returncode == 0, stderr.decode()
        assert b"Failed" not in stderr
        hashes.add(stdout.decode().strip())

    (pipeline_hash,) = hashes
    with opened(tmp_path / "storage" / pipeline_hash / "runs.db") as store:
        runs = store.list_runs(limit=1000)
        assert len(runs) == 80
        assert all(r.status is PipelineTerminalStatus.SUCCESS for r in runs)
        for run in runs:
            types = [e.event_type for e in store.get_events(run.run_id)]
            assert types[0] is EventType.START
            assert types[-1] is EventType.FINISH
            assert types.count(EventType.TOKEN) == 3
