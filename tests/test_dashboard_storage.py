"""The run store's leases: how the dashboard tells a live run from one whose process died."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from justpipe import Pipe
from justpipe.storage import RunRecord, SQLiteBackend
from justpipe.storage.persistence import PersistenceObserver
from justpipe.storage.sqlite import RunLease, lease_owner, lease_state
from justpipe.types import PipelineTerminalStatus

pytestmark = pytest.mark.backend_agnostic

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ev(seq: int, ts: float = 1.0) -> str:
    return json.dumps({"type": "step_start", "stage": "a", "timestamp": ts, "seq": seq})


def test_append_events_takes_a_lease_for_this_process(tmp_path: Path) -> None:
    with SQLiteBackend(tmp_path / "runs.db") as store:
        before = time.time()
        store.append_events("r1", [ev(1)])
        leases = store.get_leases()
        assert list(leases) == ["r1"]
        lease = leases["r1"]
        assert lease.owner == lease_owner()
        assert lease.heartbeat.timestamp() >= before - 1
        assert lease_state(lease) == "live"


def test_beat_renews_and_finished_runs_have_no_lease(tmp_path: Path) -> None:
    with SQLiteBackend(tmp_path / "runs.db") as store:
        store.append_events("r1", [])
        first = store.get_leases(["r1"])["r1"].heartbeat
        time.sleep(0.01)
        assert store.beat("r1") is True
        assert store.get_leases(["r1"])["r1"].heartbeat > first
        store.save_run(
            RunRecord("r1", BASE, BASE, timedelta(0), PipelineTerminalStatus.SUCCESS), []
        )
        assert store.get_leases() == {}
        assert store.beat("r1") is False
        assert store.beat("missing") is False
        assert store.get_leases([]) == {}


def test_delete_run_removes_its_lease(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteBackend(path) as store:
        store.append_events("r1", [])
        assert store.delete_run("r1")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM run_leases").fetchone()[0] == 0
    conn.close()


def test_lease_state_stale_dead_pid_and_unknown() -> None:
    now = time.time()
    fresh = datetime.fromtimestamp(now, tz=UTC)
    assert lease_state(None) == "unknown"
    assert lease_state(RunLease("r", lease_owner(), fresh), now=now) == "live"
    stale = datetime.fromtimestamp(now - 60, tz=UTC)
    assert lease_state(RunLease("r", lease_owner(), stale), now=now) == "dead"
    host = lease_owner().rpartition(":")[0]
    # pid 0 is never a user process: a same-host owner that does not exist is dead
    assert lease_state(RunLease("r", f"{host}:0", fresh), now=now) == "dead"
    assert lease_state(RunLease("r", "elsewhere:1", fresh), now=now) == "live"


def test_older_file_without_the_lease_table_gets_it_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteBackend(path) as store:
        store.append_events("old", [ev(1)])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE run_leases")
    conn.close()
    with SQLiteBackend(path) as store:
        assert store.get_run("old") is not None
        assert store.get_leases() == {}  # nothing tells whether it lives
        store.beat("old")
        assert "old" in store.get_leases()


def test_read_only_old_file_reads_as_having_no_leases(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteBackend(path) as store:
        store.append_events("old", [ev(1)])
        conn = store._connection()
        conn.execute("DROP TABLE run_leases")
        assert store.get_leases() == {}
        assert [e.seq for e in store.get_events_after("old", 0)] == [1]


def test_events_after_and_count(tmp_path: Path) -> None:
    with SQLiteBackend(tmp_path / "runs.db") as store:
        store.append_events("r", [ev(i) for i in range(1, 8)])
        assert [e.seq for e in store.get_events_after("r", 3, limit=2)] == [4, 5]
        assert store.get_events_after("r", 7) == []
        assert store.count_events("r") == 7


async def test_a_persisted_run_renews_its_lease_while_it_runs(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "runs.db")
    observer = PersistenceObserver(lambda: store, flush_interval=1, heartbeat_interval=0.01)
    pipe = Pipe(name="lease")
    seen: list[float] = []
    release = asyncio.Event()

    @pipe.step
    async def slow(state: dict[str, int]) -> None:
        # wait for two renewals, observed through the store, not through time
        while len(seen) < 2:
            await asyncio.sleep(0.01)
            leases = await asyncio.to_thread(store.get_leases)
            for lease in leases.values():
                stamp = lease.heartbeat.timestamp()
                if not seen or stamp > seen[-1]:
                    seen.append(stamp)
        release.set()

    pipe.add_observer(observer)
    async for _ in pipe.run({}):
        pass
    assert release.is_set()
    assert len(seen) >= 2
    assert store.get_leases() == {}  # finished: the lease no longer counts
    assert observer._heartbeat is None
    store.close()


def test_event_data_rows_can_leave_some_types_for_later(tmp_path: Path) -> None:
    token = json.dumps({"type": "token", "stage": "s", "timestamp": 2.0, "seq": 2, "payload": "t"})
    with SQLiteBackend(tmp_path / "runs.db") as store:
        store.append_events("r", [ev(1), token, ev(3)])
        rows = store.get_event_data("r", without_data=["token"])
        assert [(seq, kind, data is None) for seq, _, kind, _, data in rows] == [
            (1, "step_start", False),
            (2, "token", True),
            (3, "step_start", False),
        ]
        assert store.get_event_json("r", [2, 3, 99]) == {2: token, 3: ev(3)}
        assert [row[4] for row in store.get_event_data("r")][1] == token


async def test_heartbeat_stops_when_the_task_driving_the_run_ends(tmp_path: Path) -> None:
    from justpipe.observability.observer import ObserverMeta

    store = SQLiteBackend(tmp_path / "runs.db")
    observer = PersistenceObserver(lambda: store, heartbeat_interval=0.01)

    async def abandoned_run() -> None:
        meta = ObserverMeta(pipe_name="p", run_id="r-abandoned", started_at=time.time())
        await observer.on_pipeline_start({}, None, meta)

    await asyncio.create_task(abandoned_run())  # no end callback ever comes
    heartbeat = observer._heartbeat
    assert heartbeat is not None
    await asyncio.wait_for(heartbeat, timeout=30)  # ends by itself
    assert heartbeat.done() and not heartbeat.cancelled()
    assert "r-abandoned" in store.get_leases()  # the lease stays, and will expire
    store.close()
