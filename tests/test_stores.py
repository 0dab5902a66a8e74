"""What holds on SQLite holds on PostgreSQL: the same tests on both stores (`store_kind`).

The checkpoint store's protocol (leases, the lease check of a save, the counters and
parts kept beside the document, the events written with a checkpoint), durable runs
and persisted runs through ``JUSTPIPE_STORAGE_URL``, and several processes writing at
once. The PostgreSQL store is a real server (tests/pg.py). Killed and resumed durable
runs across processes are in tests/test_durable_process.py (parametrised the same way).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import Pipe, Suspend
from justpipe.durable import (
    Checkpoint,
    LeaseLostError,
    PipelineChangedError,
    RunFinishedError,
    RunLeasedError,
    resume_value,
)
from justpipe.types import EventType, PipelineTerminalStatus
from pg import StoreView, open_checkpoint_store, open_run_store

pytestmark = pytest.mark.backend_agnostic  # the stores do not touch justpipe._core

SUCCESS = PipelineTerminalStatus.SUCCESS
HERE = Path(__file__).resolve().parent


@pytest.fixture
def checkpoints(storage_url: str, tmp_path: Path) -> Iterator[Any]:
    store = open_checkpoint_store(storage_url, tmp_path)
    yield store
    store.close()


def me(tag: str = "a") -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


def checkpoint(
    run_id: str = "r",
    data: str = "{}",
    *,
    status: str = "running",
    attempts: dict[str, int] | None = None,
    parts: dict[str, str | None] | None = None,
) -> Checkpoint:
    return Checkpoint(run_id, "pipe", "hash", status, 1, data, attempts=attempts, parts=parts)


# --------------------------------------------------------------------------- checkpoint stores


def test_a_lease_is_taken_refused_renewed_released_and_taken_over_once_expired(
    checkpoints: Any,
) -> None:
    checkpoints.acquire("r", me(), 30.0)
    with pytest.raises(RunLeasedError, match="being executed by another live process"):
        checkpoints.acquire("r", me("other"), 30.0)
    with pytest.raises(LeaseLostError, match="no longer holds its lease"):
        checkpoints.save(checkpoint(), "someone else")
    checkpoints.acquire("r", me(), 30.0)  # renewing one's own lease
    lease = checkpoints.lease("r")
    assert lease is not None and lease.owner == me()
    assert 25 < lease.expires_at - time.time() <= 31
    checkpoints.release("r", me("other"))  # not the owner's: kept
    assert checkpoints.lease("r") is not None
    checkpoints.release("r", me())
    assert checkpoints.lease("r") is None
    checkpoints.acquire("r", "otherhost:1:b", -1.0)  # another host's, already expired
    checkpoints.acquire("r", me(), 30.0)
    lease = checkpoints.lease("r")
    assert lease is not None and lease.owner == me()


def test_another_hosts_live_lease_is_respected_and_a_dead_local_owner_is_not(
    checkpoints: Any,
) -> None:
    checkpoints.acquire("r", "otherhost:1:b", 30.0)
    with pytest.raises(RunLeasedError):
        checkpoints.acquire("r", me(), 30.0)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    checkpoints.acquire("s", f"{socket.gethostname()}:{dead}:c", 30.0)
    checkpoints.acquire("s", me(), 30.0)  # its process is gone: the lease is dead at once


def test_a_save_keeps_the_latest_checkpoint_and_merges_counts_and_parts(
    checkpoints: Any,
) -> None:
    assert checkpoints.load("r") is None
    checkpoints.acquire("r", me(), 30.0)
    checkpoints.save(
        checkpoint(data='{"n": 1}', attempts={"a": 1, "b": 2}, parts={"p": "[1]"}), me()
    )
    checkpoints.save(
        checkpoint(data='{"n": 2}', attempts={"b": 3, "c": 1}, parts={"p": None, "q": "[2]"}),
        me(),
    )

    loaded = checkpoints.load("r")

    assert loaded is not None
    assert (loaded.run_id, loaded.pipe_name, loaded.pipeline_hash) == ("r", "pipe", "hash")
    assert (loaded.status, loaded.segment, loaded.data) == ("running", 1, '{"n": 2}')
    assert dict(loaded.attempts) == {"a": 1, "b": 3, "c": 1}
    assert dict(loaded.parts) == {"q": "[2]"}
    assert loaded.updated_at == pytest.approx(time.time(), abs=60)
    assert type(checkpoints).keeps_attempts is True
    assert type(checkpoints).keeps_parts is True


def test_a_refused_save_writes_nothing(checkpoints: Any) -> None:
    checkpoints.acquire("r", me(), 30.0)
    checkpoints.save(checkpoint(data='{"n": 1}', attempts={"a": 1}), me())
    checkpoints.acquire("r", me(), -1.0)  # renewed as already expired...
    checkpoints.acquire("r", me("new"), 30.0)  # ...so another owner takes the run over

    with pytest.raises(LeaseLostError):
        checkpoints.save(checkpoint(data='{"n": 9}', attempts={"a": 9}), me())

    loaded = checkpoints.load("r")
    assert loaded is not None and loaded.data == '{"n": 1}' and dict(loaded.attempts) == {"a": 1}


def test_events_saved_with_a_checkpoint_are_in_the_run_store_once(
    checkpoints: Any, storage_url: str
) -> None:
    assert type(checkpoints).saves_events is True
    events = [
        json.dumps({"type": "start", "stage": "system", "timestamp": 5.0, "seq": 1}),
        json.dumps({"type": "step_start", "stage": "a", "timestamp": 6.0, "seq": 2}),
    ]
    checkpoints.acquire("r", me(), 30.0)
    checkpoints.save(checkpoint(), me(), events)
    checkpoints.save(checkpoint(), me(), events[1:])  # a duplicate is kept once

    assert checkpoints.stored_seq("r") == 2
    if storage_url.startswith("sqlite:"):
        from justpipe.storage import SQLiteBackend

        run_store: Any = SQLiteBackend(checkpoints.db_path)
    else:
        run_store = open_run_store(storage_url, "hash")
    with run_store:
        run = run_store.get_run("r")
        assert run is not None and run.error_message is not None  # 'running': unfinished
        assert run.start_time.timestamp() == 5.0
        assert [e.seq for e in run_store.get_events("r")] == [1, 2]


def test_of_many_concurrent_acquirers_exactly_one_wins(checkpoints: Any) -> None:
    gate = threading.Barrier(8)
    won: list[str] = []
    refused: list[str] = []

    def contend(n: int) -> None:
        owner = me(f"t{n}")
        gate.wait()
        try:
            checkpoints.acquire("contended", owner, 30.0)
            won.append(owner)
        except RunLeasedError:
            refused.append(owner)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(won) == 1 and len(refused) == 7
    lease = checkpoints.lease("contended")
    assert lease is not None and lease.owner == won[0]


# --------------------------------------------------------------------------- through the URL


@dataclass
class Doc:
    log: list[str] = field(default_factory=list)
    answer: Any = None


def review_pipe(*, extra: bool = False) -> Pipe[Doc, None]:
    pipe: Pipe[Doc, None] = Pipe(Doc, name="review", durable=True)

    @pipe.step(to="publish")
    async def review(s: Doc) -> Any:
        s.log.append("review")
        return Suspend("needs a human")

    @pipe.step(to="extra" if extra else None)
    async def publish(s: Doc) -> None:
        s.answer = resume_value()
        s.log.append("publish")

    if extra:

        @pipe.step("extra")
        async def extra_step(s: Doc) -> None:
            s.log.append("extra")

    return pipe


async def test_a_durable_run_suspends_and_resumes_as_one_run_in_the_store(
    use_storage_url: str,
) -> None:
    pipe = review_pipe()
    first = await collect(pipe, Doc())
    run_id = first[-1].run_id
    second = await run_with_watchdog(drain(review_pipe().resume(run_id, value="ok")))
    assert end_data(second).status is SUCCESS

    with open_run_store(use_storage_url, str(pipe.describe()["pipeline_hash"])) as store:
        (run,) = store.list_runs()
        assert run.run_id == run_id and run.status is SUCCESS
        seqs = [event.seq for event in store.get_events(run_id)]
    assert seqs == list(range(1, len(first) + len(second) + 1)), "one run, both segments"
    saved = StoreView(use_storage_url).checkpoint(run_id)
    assert saved["row_status"] == "finished" and saved["state"]["fields"]["answer"] == "ok"

    with pytest.raises(RunFinishedError):
        await drain(review_pipe().resume(run_id))
    again = await collect(review_pipe(), Doc())
    with pytest.raises(PipelineChangedError, match="different pipeline definition"):
        await drain(review_pipe(extra=True).resume(again[-1].run_id))


async def test_a_forced_resume_by_a_changed_pipeline_files_the_run_under_it(
    use_storage_url: str,
) -> None:
    first = await collect(review_pipe(), Doc())
    run_id = first[-1].run_id
    changed = review_pipe(extra=True)
    second = await run_with_watchdog(drain(changed.resume(run_id, value="ok", force=True)))
    assert end_data(second).status is SUCCESS

    old_hash = str(review_pipe().describe()["pipeline_hash"])
    new_hash = str(changed.describe()["pipeline_hash"])
    with open_run_store(use_storage_url, new_hash) as store:
        run = store.get_run(run_id)
        assert run is not None and run.status is SUCCESS
        assert len(store.get_events(run_id)) == len(first) + len(second)
    with open_run_store(use_storage_url, old_hash) as store:
        assert store.get_run(run_id) is None, "listed once, under the pipeline that ended it"


async def test_persisted_runs_are_listed_with_their_events(use_storage_url: str) -> None:
    pipe: Pipe[dict[str, int], None] = Pipe(dict, name="listed", persist=True, flush_interval=2)

    @pipe.step(to="b")
    async def a(state: dict[str, int]) -> Any:
        for n in range(3):
            yield n

    @pipe.step
    async def b(state: dict[str, int]) -> None:
        raise ValueError("b failed")

    events = [await collect(pipe, {}) for _ in range(3)]

    with open_run_store(use_storage_url, str(pipe.describe()["pipeline_hash"])) as store:
        runs = store.list_runs()
        assert [run.run_id for run in runs] == [e[-1].run_id for e in reversed(events)]
        assert all(run.status is PipelineTerminalStatus.FAILED for run in runs)
        assert runs[0].error_step == "b" and "b failed" in (runs[0].error_message or "")
        stored = store.get_events(runs[0].run_id)
        assert [e.event_type for e in stored] == [e.type for e in events[-1]]
        assert store.get_leases() == {}  # finished runs hold no lease


# --------------------------------------------------------------------------- processes

# Runs `count` persisted runs of one pipeline (one hash: one runs.db, or one database).
PIPE_WRITER = """
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

WRITERS = 8
RUNS_EACH = 15


def test_eight_processes_persisting_at_once_lose_and_duplicate_nothing(
    use_storage_url: str,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", PIPE_WRITER, str(RUNS_EACH)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(WRITERS)
    ]
    hashes = set()
    for writer in writers:
        stdout, stderr = writer.communicate(timeout=240)
        assert writer.returncode == 0, stderr.decode()
        assert b"Failed" not in stderr and b"Not persisting" not in stderr, stderr.decode()
        hashes.add(stdout.decode().strip())

    (pipeline_hash,) = hashes
    with open_run_store(use_storage_url, pipeline_hash) as store:
        runs = store.list_runs(limit=1000)
        assert len(runs) == WRITERS * RUNS_EACH
        assert len({run.run_id for run in runs}) == len(runs)
        assert all(run.status is SUCCESS for run in runs)
        for run in runs:
            stored = store.get_events(run.run_id)
            kinds = [event.event_type for event in stored]
            assert kinds[0] is EventType.START and kinds[-1] is EventType.FINISH
            assert kinds.count(EventType.TOKEN) == 3
            assert [event.seq for event in stored] == list(range(1, len(stored) + 1))
