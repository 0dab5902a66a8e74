"""Runs paged, counted and summed in the store (cli/paging.py) give what reading every run
would: the same pages, totals and statistics, on SQLite and on PostgreSQL.

The store holds settled runs of every ending, runs with the same start time, and every
kind of unsettled row: a run still going (live lease), one whose process died, durable
runs suspended and interrupted, a finished durable run, and rows whose times cannot be
read. The reference is the registry's whole read (`runs_of`), sorted as the tools sort.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from justpipe.cli import paging
from justpipe.cli.registry import AnnotatedRun, PipelineInfo, PipelineRegistry, open_registry
from justpipe.durable import Checkpoint, SQLiteCheckpointStore
from justpipe.storage import RunRecord
from justpipe.storage.status import RunStatus
from justpipe.storage.url import parse_storage_url
from justpipe.types import PipelineTerminalStatus as Ended
from pg import StoreView, open_run_store

pytestmark = pytest.mark.backend_agnostic

HASH = "c" * 16
NOW = time.time()
ENDINGS = [Ended.SUCCESS] * 5 + [Ended.FAILED] * 3 + [Ended.TIMEOUT, Ended.CANCELLED]


def event(run_id: str, seq: int, kind: str, ts: float) -> str:
    return json.dumps({"type": kind, "stage": "system", "timestamp": ts, "seq": seq})


def finished(run_id: str, start: float, status: Ended, step: str | None = None) -> RunRecord:
    return RunRecord(
        run_id,
        datetime.fromtimestamp(start, tz=UTC),
        datetime.fromtimestamp(start + 1.5, tz=UTC),
        timedelta(seconds=1.5 + start % 7),
        status,
        error_message=f"{step} broke" if step else None,
        error_step=step,
    )


def fill(url: str) -> None:
    """Settled runs of every ending (some sharing a start time) and every unsettled kind."""
    with open_run_store(url, HASH) as store:
        for n in range(60):
            status = ENDINGS[n % len(ENDINGS)]
            start = NOW - 3600 * (n // 2) - 100  # two runs per start time
            step = ("a", "b", None)[n % 3] if status is Ended.FAILED else None
            run = finished(f"settled{n:04d}", start, status, step)
            store.save_run(run, [event(run.run_id, 1, "start", start)])
        store.save_run(finished("old0000", NOW - 30 * 86400, Ended.FAILED, "a"), [])
        store.append_events("going0000", [event("going0000", 1, "start", NOW - 50)])
        store.append_events("died00000", [event("died00000", 1, "start", NOW - 5000)])
        for damaged in ("damaged01", "damaged02"):
            store.save_run(finished(damaged, NOW - 7000, Ended.SUCCESS), [])
    view = StoreView(url)
    view.execute(
        "UPDATE run_leases SET owner = ? WHERE run_id = ?",
        (f"{socket.gethostname()}:0", "died00000"),
    )
    if view.postgres:  # a start no date can hold, a duration no timedelta can
        view.execute("UPDATE justpipe.runs SET start_time = 1e300 WHERE run_id = ?", ("damaged01",))
        view.execute(
            "UPDATE justpipe.runs SET duration_s = 'NaN' WHERE run_id = ?", ("damaged02",)
        )
    else:
        view.execute("UPDATE runs SET start_time = 'yesterday' WHERE run_id = ?", ("damaged01",))
        view.execute("UPDATE runs SET end_time = 1e300 WHERE run_id = ?", ("damaged02",))
    checkpoints = checkpoint_store(url)
    for run_id, status, start in (
        ("waiting00", "suspended", NOW - 10_000),
        ("stopped00", "running", NOW - 20_000),
        ("durable00", "finished", NOW - 30_000),
    ):
        owner = f"{socket.gethostname()}:0:x"  # a process that does not exist
        checkpoints.acquire(run_id, owner, 30.0)
        document = json.dumps({"status": status, "end": "success", "suspended": []})
        checkpoint = Checkpoint(run_id, "paged", HASH, status, 1, document)
        checkpoints.save(checkpoint, owner, [event(run_id, 1, "start", start)])
        if status == "finished":
            with open_run_store(url, HASH) as store:
                store.save_run(finished(run_id, start, Ended.SUCCESS), [])
    checkpoints.close()


def checkpoint_store(url: str) -> Any:
    """The checkpoint store beside the pipeline's runs (its runs.db, or the database)."""
    if url.startswith("sqlite:"):
        return SQLiteCheckpointStore(Path(url[len("sqlite://") :]) / HASH / "runs.db")
    from justpipe.durable.postgres import PostgresCheckpointStore

    return PostgresCheckpointStore(url)


@pytest.fixture
def registry(storage_url: str, tmp_path: Path) -> Iterator[PipelineRegistry]:
    fill(storage_url)
    if storage_url.startswith("sqlite:"):
        root = Path(storage_url[len("sqlite://") :])
        (root / HASH / "pipeline.json").write_text(json.dumps({"name": "paged"}))
    opened = open_registry(parse_storage_url(storage_url))
    yield opened
    opened.close()


def everything(registry: PipelineRegistry, info: PipelineInfo) -> list[AnnotatedRun]:
    """The reference: every run read whole, newest first (unreadable starts last)."""
    runs = registry.runs_of(info)
    return sorted(runs, key=lambda item: item.run.start_time.timestamp(), reverse=True)


def ids(items: list[AnnotatedRun]) -> list[str]:
    return [item.run.run_id for item in items]


FILTERS: list[set[RunStatus] | None] = [
    None,
    {RunStatus.SUCCESS},
    {RunStatus.FAILED},
    {RunStatus.RUNNING},
    {RunStatus.SUSPENDED, RunStatus.INTERRUPTED},
    {RunStatus.DAMAGED},
    {RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.SUSPENDED},
    {RunStatus.CLIENT_CLOSED},
]


def test_every_page_of_every_filter_is_the_page_of_the_whole_list(
    registry: PipelineRegistry,
) -> None:
    (info,) = registry.list_pipelines()
    whole = everything(registry, info)
    statuses = Counter(item.status for item in whole)
    assert statuses[RunStatus.RUNNING] == 1 and statuses[RunStatus.DAMAGED] == 2
    assert statuses[RunStatus.SUSPENDED] == 1 and statuses[RunStatus.INTERRUPTED] == 1
    for wanted in FILTERS:
        matching = [item for item in whole if not wanted or item.status in wanted]
        for limit in (1, 3, 7, 20):
            for offset in range(0, len(matching) + limit, limit):
                page, total = paging.runs_page(registry, info, wanted, limit, offset)
                assert total == len(matching), (wanted, limit, offset)
                expected = matching[offset : offset + limit]
                assert ids(page) == ids(expected), (wanted, limit, offset)
                assert [i.status for i in page] == [i.status for i in expected]


def test_the_summary_counts_and_sums_what_the_whole_list_holds(
    registry: PipelineRegistry,
) -> None:
    (info,) = registry.list_pipelines()
    whole = everything(registry, info)
    found = paging.summary(registry, info)
    assert found.statuses == Counter(item.status for item in whole)
    durations = [i.run.duration.total_seconds() for i in whole if i.run.duration is not None]
    assert found.durations == len(durations)
    assert found.duration_sum == pytest.approx(sum(durations))
    assert found.newest is not None and found.newest.run.run_id == whole[0].run.run_id


@pytest.mark.parametrize("days", [1, 7, 90])
def test_a_window_counts_what_the_whole_list_holds_since_its_start(
    registry: PipelineRegistry, days: int
) -> None:
    (info,) = registry.list_pipelines()
    since = datetime.now(UTC) - timedelta(days=days)
    runs = [
        item
        for item in everything(registry, info)
        if item.run.start_time >= since and item.status is not RunStatus.DAMAGED
    ]
    found = paging.window(registry, info, since)
    assert found.statuses == Counter(item.status for item in runs)
    durations = [i.run.duration.total_seconds() for i in runs if i.run.duration is not None]
    assert found.duration_min == pytest.approx(min(durations))
    assert found.duration_max == pytest.approx(max(durations))
    assert found.duration_sum == pytest.approx(sum(durations))
    daily: dict[str, Counter[RunStatus]] = {}
    for item in runs:
        daily.setdefault(item.run.start_time.date().isoformat(), Counter())[item.status] += 1
    assert found.daily == daily
    failures = [i for i in runs if i.status in paging.FAILURES]
    assert found.failing_steps == Counter(i.run.error_step for i in failures)
    assert ids(found.recent_failures) == ids(failures[: paging.RECENT_FAILURES])
    timed = [i for i in runs if i.run.duration is not None]
    assert ids(found.trend) == ids(timed[: paging.TREND_RUNS])


def test_list_with_a_status_is_paged_in_the_store(registry: PipelineRegistry) -> None:
    (info,) = registry.list_pipelines()
    failed = [i for i in everything(registry, info) if i.status is RunStatus.FAILED]
    listed = registry.list_all_runs(status=RunStatus.FAILED, limit=4)
    assert ids(listed) == ids(failed[:4])
    assert ids(registry.list_all_runs(status="interrupted", limit=5)) == ["stopped00"]


def test_a_store_without_listing_is_read_whole(tmp_path: Path) -> None:
    class Plain(PipelineRegistry):
        def get_backend(self, pipeline_hash: str) -> Any:
            from justpipe.storage import InMemoryBackend

            backend = InMemoryBackend()
            for n in range(5):
                backend.save_run(finished(f"r{n}", NOW - n, Ended.SUCCESS), [])
            return backend

    info = PipelineInfo("plain", HASH, tmp_path)
    registry = Plain(tmp_path)
    page, total = paging.runs_page(registry, info, None, 2, 1)
    assert (ids(page), total) == (["r1", "r2"], 5)
    assert paging.summary(registry, info).statuses == Counter({RunStatus.SUCCESS: 5})
