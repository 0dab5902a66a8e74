"""Storage contract (spec §15.1-15.3) on every backend (in memory, SQLite, PostgreSQL), then
InMemoryBackend specifics (§15.2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from justpipe.storage import InMemoryBackend, RunRecord, SQLiteBackend, StorageBackend
from justpipe.storage.interface import MAX_QUERY_LIMIT
from justpipe.types import EventType, PipelineTerminalStatus

if TYPE_CHECKING:
    from justpipe.storage.postgres import PostgresBackend

pytestmark = pytest.mark.backend_agnostic  # storage does not touch justpipe._core

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event_json(
    event_type: str, stage: str = "a", *, seq: int | None = None, ts: float = 1.0
) -> str:
    data: dict[str, object] = {"type": event_type, "stage": stage, "timestamp": ts}
    if seq is not None:
        data["seq"] = seq
    return json.dumps(data)


def make_run(
    run_id: str,
    *,
    minutes: int = 0,
    status: PipelineTerminalStatus = PipelineTerminalStatus.SUCCESS,
    **extra: str | None,
) -> RunRecord:
    start = BASE + timedelta(minutes=minutes)
    return RunRecord(
        run_id=run_id,
        start_time=start,
        end_time=start + timedelta(seconds=2),
        duration=timedelta(seconds=2),
        status=status,
        **extra,
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    if request.param == "memory":
        yield InMemoryBackend()
        return
    store: SQLiteBackend | PostgresBackend
    if request.param == "sqlite":
        store = SQLiteBackend(tmp_path / "store" / "runs.db")
    else:
        url = request.getfixturevalue("postgres_url")  # (skips when PostgreSQL cannot run)
        from justpipe.storage.postgres import PostgresBackend

        store = PostgresBackend(url, "a-pipeline-hash")
    yield store
    store.close()


def test_max_query_limit_is_ten_thousand() -> None:
    assert MAX_QUERY_LIMIT == 10_000


def test_saved_run_reads_back_with_all_fields(backend: StorageBackend) -> None:
    run = make_run(
        "r1",
        status=PipelineTerminalStatus.FAILED,
        error_message="boom",
        error_step="b",
        run_meta='{"data": {"k": 1}}',
    )
    backend.save_run(run, [])

    assert backend.get_run("r1") == run


def test_unknown_run_id_reads_as_none_and_no_events(backend: StorageBackend) -> None:
    assert backend.get_run("missing") is None
    assert backend.get_events("missing") == []
    assert backend.delete_run("missing") is False


def test_list_runs_is_newest_first_with_limit_and_offset(backend: StorageBackend) -> None:
    for minutes, run_id in [(1, "old"), (3, "newest"), (2, "middle")]:
        backend.save_run(make_run(run_id, minutes=minutes), [])

    assert [r.run_id for r in backend.list_runs()] == ["newest", "middle", "old"]
    assert [r.run_id for r in backend.list_runs(limit=2, offset=1)] == ["middle", "old"]
    assert backend.list_runs(limit=0) == []


def test_list_runs_filters_by_status(backend: StorageBackend) -> None:
    backend.save_run(make_run("ok", minutes=1), [])
    backend.save_run(make_run("bad", minutes=2, status=PipelineTerminalStatus.FAILED), [])

    failed = backend.list_runs(status=PipelineTerminalStatus.FAILED)
    assert [r.run_id for r in failed] == ["bad"]
    assert backend.list_runs(status=PipelineTerminalStatus.TIMEOUT) == []


@pytest.mark.parametrize("kwargs", [{"limit": -1}, {"offset": -1}])
def test_negative_paging_arguments_are_rejected(
    backend: StorageBackend, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        backend.list_runs(**kwargs)


def test_events_read_back_in_order_with_type_stage_and_utc_timestamp(
    backend: StorageBackend,
) -> None:
    events = [
        event_json("start", "system", seq=1, ts=100.0),
        event_json("step_start", "a", seq=2, ts=100.5),
        event_json("finish", "system", seq=3, ts=101.0),
    ]
    backend.save_run(make_run("r1"), events)

    stored = backend.get_events("r1")

    assert [(e.seq, e.event_type, e.step_name) for e in stored] == [
        (1, EventType.START, "system"),
        (2, EventType.STEP_START, "a"),
        (3, EventType.FINISH, "system"),
    ]
    assert stored[1].timestamp == datetime.fromtimestamp(100.5, tz=UTC)
    assert [e.data for e in stored] == events


def test_events_without_seq_are_numbered_by_position(backend: StorageBackend) -> None:
    backend.save_run(make_run("r1"), [event_json("start"), event_json("finish")])

    assert [e.seq for e in backend.get_events("r1")] == [1, 2]


def test_missing_timestamp_and_stage_default_to_epoch_and_empty(backend: StorageBackend) -> None:
    backend.save_run(make_run("r1"), ['{"type": "token"}'])

    (event,) = backend.get_events("r1")
    assert event.timestamp == datetime.fromtimestamp(0, tz=UTC)
    assert event.step_name == ""


def test_get_events_filters_by_type(backend: StorageBackend) -> None:
    backend.save_run(
        make_run("r1"),
        [event_json("start", seq=1), event_json("token", seq=2), event_json("token", seq=3)],
    )

    tokens = backend.get_events("r1", EventType.TOKEN)

    assert [(e.seq, e.event_type) for e in tokens] == [(2, EventType.TOKEN), (3, EventType.TOKEN)]


def test_events_with_unknown_or_missing_type_are_skipped_on_read(backend: StorageBackend) -> None:
    backend.save_run(
        make_run("r1"),
        [event_json("start"), event_json("bogus"), '{"stage": "x"}', event_json("finish")],
    )

    assert [e.event_type for e in backend.get_events("r1")] == [EventType.START, EventType.FINISH]


@pytest.mark.parametrize(
    ("bad", "error", "fragment"),
    [
        ("not json", json.JSONDecodeError, "event #2 of run 'r1' is not valid JSON"),
        ("[1, 2]", TypeError, "event #2 of run 'r1' must be a JSON object"),
        ('{"type": "start"', json.JSONDecodeError, "event #2 of run 'r1' is not valid JSON"),
    ],
)
def test_invalid_event_json_rejects_the_whole_save(
    backend: StorageBackend, bad: str, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        backend.save_run(make_run("r1"), [event_json("start"), bad])

    assert backend.get_run("r1") is None
    assert backend.get_events("r1") == []


def test_append_events_adds_events_of_an_unfinished_run(backend: StorageBackend) -> None:
    backend.append_events("r1", [event_json("start", seq=1), event_json("step_start", seq=2)])
    backend.append_events("r1", [event_json("step_end", seq=3)])

    types = [e.event_type for e in backend.get_events("r1")]
    assert types == [EventType.START, EventType.STEP_START, EventType.STEP_END]


def test_save_after_append_completes_the_run_and_keeps_all_events(
    backend: StorageBackend,
) -> None:
    backend.append_events("r1", [event_json("start", seq=1)])
    backend.save_run(make_run("r1", error_message="x"), [event_json("finish", seq=2)])

    run = backend.get_run("r1")
    assert run is not None
    assert run.status is PipelineTerminalStatus.SUCCESS
    assert run.error_message == "x"
    assert [e.seq for e in backend.get_events("r1")] == [1, 2]


def test_delete_run_removes_run_and_events(backend: StorageBackend) -> None:
    backend.save_run(make_run("r1"), [event_json("start")])
    backend.save_run(make_run("r2"), [event_json("start")])

    assert backend.delete_run("r1") is True

    assert backend.get_run("r1") is None
    assert backend.get_events("r1") == []
    assert backend.get_run("r2") is not None
    assert len(backend.get_events("r2")) == 1


def test_find_runs_by_prefix_matches_start_of_id_newest_first(backend: StorageBackend) -> None:
    backend.save_run(make_run("abc111", minutes=1), [])
    backend.save_run(make_run("abc222", minutes=2), [])
    backend.save_run(make_run("xabc", minutes=3), [])

    assert [r.run_id for r in backend.find_runs_by_prefix("abc")] == ["abc222", "abc111"]
    assert [r.run_id for r in backend.find_runs_by_prefix("abc", limit=1)] == ["abc222"]
    assert backend.find_runs_by_prefix("zzz") == []


@pytest.mark.parametrize("prefix", ["", "%", "a%", "a b", "a'; DROP TABLE runs; --"])
def test_find_runs_by_prefix_with_unsafe_characters_matches_nothing(
    backend: StorageBackend, prefix: str
) -> None:
    backend.save_run(make_run("abc"), [])

    assert backend.find_runs_by_prefix(prefix) == []
    assert backend.get_run("abc") is not None


def test_underscore_in_prefix_is_literal(backend: StorageBackend) -> None:
    backend.save_run(make_run("a_1"), [])
    backend.save_run(make_run("ab1"), [])

    assert [r.run_id for r in backend.find_runs_by_prefix("a_")] == ["a_1"]


# -- InMemoryBackend specifics ---------------------------------------------------------


def test_memory_save_run_overwrites_record_and_extends_events() -> None:
    store = InMemoryBackend()
    store.save_run(make_run("r1"), [event_json("start")])
    store.save_run(make_run("r1", status=PipelineTerminalStatus.FAILED), [event_json("finish")])

    run = store.get_run("r1")
    assert run is not None
    assert run.status is PipelineTerminalStatus.FAILED
    assert [e.event_type for e in store.get_events("r1")] == [EventType.START, EventType.FINISH]


def test_memory_numbers_events_by_position_counting_skipped_entries() -> None:
    store = InMemoryBackend()
    store.save_run(
        make_run("r1"),
        [event_json("start", seq=10), event_json("bogus"), event_json("finish", seq=30)],
    )

    assert [e.seq for e in store.get_events("r1")] == [1, 3]


def test_memory_append_without_save_leaves_the_run_unlisted() -> None:
    store = InMemoryBackend()
    store.append_events("r1", [event_json("start")])

    assert store.get_run("r1") is None
    assert store.list_runs() == []
    assert len(store.get_events("r1")) == 1


def test_memory_sorts_naive_start_times_as_utc() -> None:
    store = InMemoryBackend()
    naive = RunRecord(
        "naive", datetime(2024, 5, 1, 13, 0), None, None, PipelineTerminalStatus.SUCCESS
    )
    store.save_run(naive, [])
    store.save_run(make_run("aware"), [])  # 12:00 UTC

    assert [r.run_id for r in store.list_runs()] == ["naive", "aware"]
