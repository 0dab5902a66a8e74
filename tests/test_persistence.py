"""Automatic persistence and the event JSON format (spec §15.4, §21 B8)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from justpipe import Pipe
from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.storage import InMemoryBackend, RunRecord, SQLiteBackend, StoredEvent
from justpipe.storage.persistence import (
    PersistenceObserver,
    create_persistence_observer,
    resolve_storage_path,
)
from justpipe.storage.serialize import event_to_dict, event_to_json, to_jsonable
from justpipe.types import (
    Event,
    EventType,
    FailureKind,
    FailureReason,
    FailureRecord,
    FailureSource,
    NodeKind,
    PipelineEndData,
    PipelineTerminalStatus,
)

RUN_ID = "0123456789abcdef0123456789abcdef"
STARTED_AT = 1_700_000_000.0
Status = PipelineTerminalStatus


class Color(enum.Enum):
    RED = "red"


class Pair(enum.Enum):
    ONE_TWO = (1, 2)


@dataclasses.dataclass
class State:
    count: int = 0
    color: Color = Color.RED
    items: list[Any] = dataclasses.field(default_factory=lambda: [Color.RED, {"c": Color.RED}])
    when: datetime = datetime(2024, 1, 1)
    tags: set[int] = dataclasses.field(default_factory=lambda: {1})
    raw: bytes = b"x"
    pair: tuple[int, int] = (1, 2)


@dataclasses.dataclass
class WithLock:
    lock: Any = dataclasses.field(default_factory=threading.Lock)


class BrokenStr:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "BrokenStr()"


# -- event JSON format -----------------------------------------------------------------------


def test_event_json_has_the_documented_keys_in_order() -> None:
    event = Event(
        EventType.STEP_END,
        "a",
        payload={"k": 1},
        timestamp=12.5,
        run_id="r",
        origin_run_id="o",
        parent_run_id=None,
        seq=3,
        node_kind=NodeKind.MAP,
        invocation_id="r:2",
        parent_invocation_id="r:1",
        owner_invocation_id="r:1",
        attempt=2,
        scope=("w[0]",),
        meta={"framework": {"status": "success"}},
    )

    assert event_to_json(event) == (
        '{"type": "step_end", "stage": "a", "timestamp": 12.5, "run_id": "r", '
        '"origin_run_id": "o", "parent_run_id": null, "seq": 3, "node_kind": "map", '
        '"invocation_id": "r:2", "parent_invocation_id": "r:1", "owner_invocation_id": "r:1", '
        '"attempt": 2, "scope": ["w[0]"], "meta": {"framework": {"status": "success"}}, '
        '"payload": {"k": 1}}'
    )


def test_dataclass_payload_converts_fields_enums_and_containers_like_upstream() -> None:
    assert to_jsonable(State()) == {
        "count": 0,
        "color": "red",
        "items": ["red", {"c": "red"}],
        "when": "2024-01-01 00:00:00",
        "tags": "{1}",
        "raw": "b'x'",
        "pair": [1, 2],
    }


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (Color.RED, "red"),
        (Pair.ONE_TWO, [1, 2]),
        ((1, "x"), [1, "x"]),
        ({1: "a", None: "b"}, {1: "a", None: "b"}),
        ({"a": (Color.RED, {1, 2})}, {"a": ["red", "{1, 2}"]}),
        (frozenset(), "frozenset()"),
        (ValueError("bad"), "bad"),
        (10**30, 10**30),
        (True, True),
        (None, None),
    ],
)
def test_payload_conversion_rules(payload: Any, expected: Any) -> None:
    assert to_jsonable(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [{(1, 2): "a"}, {Color.RED: 1}, {"a": 1, "d": {(1,): 2}}, [1, {(1,): 2}]],
)
def test_payload_with_a_key_json_cannot_hold_becomes_its_text(payload: Any) -> None:
    assert to_jsonable(payload) == str(payload)


def test_cyclic_payload_becomes_its_text() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)

    assert to_jsonable(cycle) == "[[...]]"


def test_dataclass_with_uncopyable_field_converts_field_by_field() -> None:
    converted = to_jsonable(WithLock())

    assert set(converted) == {"lock"}
    assert "lock" in converted["lock"]


def test_value_whose_str_raises_falls_back_to_repr() -> None:
    assert to_jsonable({"a": BrokenStr()}) == {"a": "BrokenStr()"}


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_become_text_so_the_json_is_valid(number: float) -> None:
    text = event_to_json(Event(EventType.TOKEN, "a", payload=[number], timestamp=1.0))

    assert json.loads(text)["payload"] == [str(number)]
    assert "NaN" not in text
    assert "Infinity" not in text


def test_finish_payload_serializes_enums_records_and_metrics() -> None:
    outcome = PipelineEndData(
        status=Status.FAILED,
        duration_s=0.5,
        error="boom",
        reason=FailureReason.STEP_ERROR,
        failure_kind=FailureKind.STEP,
        failure_source=FailureSource.USER_CODE,
        failed_step="b",
        errors=[
            FailureRecord(
                FailureKind.STEP, FailureSource.USER_CODE, FailureReason.STEP_ERROR, "boom", "b"
            )
        ],
    )

    payload = event_to_dict(Event(EventType.FINISH, "system", payload=outcome))["payload"]

    assert payload == {
        "status": "failed",
        "duration_s": 0.5,
        "error": "boom",
        "reason": "step_error",
        "failure_kind": "step",
        "failure_source": "user_code",
        "failed_step": "b",
        "errors": [
            {
                "kind": "step",
                "source": "user_code",
                "reason": "step_error",
                "error": "boom",
                "step": "b",
            }
        ],
        "metrics": None,
    }


def test_meta_is_converted_with_the_payload_rules() -> None:
    event = Event(EventType.STEP_START, "a", meta={"c": Color.RED, "t": (1, 2), "s": {3}})

    assert event_to_dict(event)["meta"] == {"c": "red", "t": [1, 2], "s": "{3}"}


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=3),
    st.sampled_from([Color.RED, Pair.ONE_TWO, FailureReason.STEP_ERROR]),
    st.frozensets(st.integers(), max_size=2),
    st.builds(State, count=st.integers()),
)
json_keys = st.one_of(
    st.text(max_size=3), st.integers(), st.none(), st.sampled_from([Color.RED, (1, 2)])
)
payloads = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(json_keys, children, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(payload=payloads, meta=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), payloads)))
def test_event_json_equals_encoding_the_converted_dict(payload: Any, meta: Any) -> None:
    event = Event(EventType.TOKEN, "a", payload=payload, timestamp=1.0, meta=meta)

    text = event_to_json(event)

    assert text == json.dumps(event_to_dict(event), allow_nan=False)
    assert json.loads(text)["type"] == "token"


# -- storage path ----------------------------------------------------------------------------


def test_storage_path_comes_from_the_environment_with_tilde_expanded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", "~/runs")

    assert resolve_storage_path() == tmp_path / "runs"


@pytest.mark.parametrize("value", [None, ""])
def test_storage_path_defaults_to_dot_justpipe_in_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if value is None:
        monkeypatch.delenv("JUSTPIPE_STORAGE_PATH", raising=False)
    else:
        monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", value)

    assert resolve_storage_path() == tmp_path / ".justpipe"


# -- the observer, driven by hand-made events ---------------------------------------------------

META = ObserverMeta(pipe_name="demo", run_id=RUN_ID, started_at=STARTED_AT)


def ev(event_type: EventType, seq: int, stage: str = "a", **fields: Any) -> Event:
    return Event(
        event_type,
        stage,
        run_id=RUN_ID,
        origin_run_id=RUN_ID,
        seq=seq,
        timestamp=STARTED_AT + seq,
        **fields,
    )


def finish(seq: int, status: Status = Status.SUCCESS, **fields: Any) -> Event:
    meta = fields.pop("meta", None)
    outcome = PipelineEndData(status=status, duration_s=0.25, **fields)
    return ev(EventType.FINISH, seq, "system", payload=outcome, meta=meta)


async def drive(observer: Observer, events: list[Event], *, error: Exception | None = None) -> None:
    await observer.on_pipeline_start(None, None, META)
    for event in events:
        await observer.on_event(None, None, META, event)
    if error is None:
        await observer.on_pipeline_end(None, None, META, 0.25)
    else:
        await observer.on_pipeline_error(None, None, META, error)


def stored_types(events: list[StoredEvent]) -> list[EventType]:
    return [e.event_type for e in events]


async def test_successful_run_is_saved_with_its_events_and_outcome() -> None:
    store = InMemoryBackend()
    events = [ev(EventType.START, 1, "system"), ev(EventType.STEP_START, 2), finish(3)]

    await drive(PersistenceObserver(lambda: store), events)

    run = store.get_run(RUN_ID)
    assert run is not None
    assert run.status is Status.SUCCESS
    assert run.start_time == datetime.fromtimestamp(STARTED_AT, tz=UTC)
    assert run.duration is not None
    assert run.duration.total_seconds() == 0.25
    assert run.end_time is not None
    assert run.end_time >= run.start_time
    assert run.error_message is None
    assert run.error_step is None
    assert run.run_meta is None
    stored = store.get_events(RUN_ID)
    assert stored_types(stored) == [EventType.START, EventType.STEP_START, EventType.FINISH]
    assert [e.data for e in stored] == [event_to_json(e) for e in events]


async def test_failed_run_records_error_and_failed_step_from_finish() -> None:
    store = InMemoryBackend()
    end = finish(3, Status.FAILED, error="boom", failed_step="b")

    await drive(
        PersistenceObserver(lambda: store),
        [ev(EventType.START, 1, "system"), end],
        error=ValueError("boom"),
    )

    run = store.get_run(RUN_ID)
    assert run is not None
    assert (run.status, run.error_message, run.error_step) == (Status.FAILED, "boom", "b")


async def test_error_callback_after_successful_finish_marks_the_run_failed() -> None:
    store = InMemoryBackend()

    await drive(PersistenceObserver(lambda: store), [finish(1)], error=RuntimeError("late failure"))

    run = store.get_run(RUN_ID)
    assert run is not None
    assert (run.status, run.error_message) == (Status.FAILED, "late failure")


async def test_run_meta_is_the_json_of_the_finish_meta() -> None:
    store = InMemoryBackend()
    meta = {"data": {"k": "v", "obj": {1, 2}}, "tags": ["t1"]}

    await drive(PersistenceObserver(lambda: store), [finish(1, meta=meta)])

    run = store.get_run(RUN_ID)
    assert run is not None
    assert run.run_meta is not None
    assert json.loads(run.run_meta) == {"data": {"k": "v", "obj": "{1, 2}"}, "tags": ["t1"]}


@pytest.mark.parametrize("status", [Status.CLIENT_CLOSED, Status.CANCELLED, Status.TIMEOUT])
async def test_runs_ended_early_are_saved_with_their_status(status: Status) -> None:
    store = InMemoryBackend()

    await drive(
        PersistenceObserver(lambda: store), [ev(EventType.START, 1, "system"), finish(2, status)]
    )

    run = store.get_run(RUN_ID)
    assert run is not None
    assert run.status is status


async def test_forwarded_child_finish_does_not_decide_the_run_status() -> None:
    store = InMemoryBackend()
    child_finish = dataclasses.replace(
        finish(2, Status.FAILED, error="child"), stage="sub:system", parent_run_id="child-run"
    )

    await drive(PersistenceObserver(lambda: store), [child_finish, finish(3)])

    run = store.get_run(RUN_ID)
    assert run is not None
    assert run.status is Status.SUCCESS
    assert stored_types(store.get_events(RUN_ID)) == [EventType.FINISH, EventType.FINISH]


async def test_flush_interval_writes_events_before_the_run_ends(tmp_path: Path) -> None:
    with SQLiteBackend(tmp_path / "runs.db") as store:
        observer = PersistenceObserver(lambda: store, flush_interval=2)
        await observer.on_pipeline_start(None, None, META)
        for seq in (1, 2, 3):
            await observer.on_event(None, None, META, ev(EventType.TOKEN, seq))

        assert [e.seq for e in store.get_events(RUN_ID)] == [1, 2]

        await observer.on_event(None, None, META, finish(4))
        await observer.on_pipeline_end(None, None, META, 0.25)

        assert [e.seq for e in store.get_events(RUN_ID)] == [1, 2, 3, 4]
        run = store.get_run(RUN_ID)
        assert run is not None
        assert run.status is Status.SUCCESS


async def test_started_run_is_listed_as_unfinished_until_it_ends(tmp_path: Path) -> None:
    with SQLiteBackend(tmp_path / "runs.db") as store:
        observer = PersistenceObserver(lambda: store)
        await observer.on_pipeline_start(None, None, META)

        (listed,) = store.list_runs()
        assert (listed.run_id, listed.status) == (RUN_ID, Status.FAILED)
        assert listed.error_message is not None
        assert "did not finish" in listed.error_message

        await observer.on_event(None, None, META, finish(1))
        await observer.on_pipeline_end(None, None, META, 0.25)

        run = store.get_run(RUN_ID)
        assert run is not None
        assert run.status is Status.SUCCESS


class FlakyBackend(InMemoryBackend):
    """Fails the first `failures` append_events calls that carry events."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def append_events(self, run_id: str, events: list[str]) -> None:
        if events and self.failures > 0:
            self.failures -= 1
            raise OSError("disk hiccup")
        super().append_events(run_id, events)


async def test_failed_flush_keeps_events_for_a_later_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyBackend(failures=1)
    events = [ev(EventType.TOKEN, seq) for seq in (1, 2, 3)] + [finish(4)]

    with caplog.at_level(logging.WARNING, logger="justpipe.persistence"):
        await drive(PersistenceObserver(lambda: store, flush_interval=1), events)

    assert "kept for the next write" in caplog.text
    assert [e.seq for e in store.get_events(RUN_ID)] == [1, 2, 3, 4]
    assert [json.loads(e.data)["seq"] for e in store.get_events(RUN_ID)] == [1, 2, 3, 4]


class BrokenBackend(InMemoryBackend):
    def save_run(self, run: RunRecord, events: list[str]) -> None:
        raise OSError("read-only file system")


async def test_failed_save_is_logged_as_a_warning_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="justpipe.persistence"):
        await drive(PersistenceObserver(BrokenBackend), [finish(1)])

    assert f"Failed to persist run {RUN_ID} (1 events lost): read-only file system" in caplog.text


async def test_store_that_cannot_open_disables_the_observer_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def cannot_open() -> InMemoryBackend:
        raise PermissionError("denied")

    with caplog.at_level(logging.WARNING, logger="justpipe.persistence"):
        await drive(PersistenceObserver(cannot_open), [finish(1)])

    assert "cannot open the run store: denied" in caplog.text


# -- create_persistence_observer with a stand-in pipe -----------------------------------------


class StandInPipe:
    """What the kernel hands over: describe() and flush_interval."""

    def __init__(
        self, flush_interval: int | None = None, pipeline_hash: str = "abcdef0123456789"
    ) -> None:
        self.flush_interval = flush_interval
        self.describe_calls = 0
        self.pipeline_hash = pipeline_hash

    def describe(self) -> dict[str, Any]:
        self.describe_calls += 1
        return {"name": "demo", "pipeline_hash": self.pipeline_hash, "metadata": {"obj": {1}}}


async def test_observer_stores_runs_under_the_pipeline_hash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    pipe = StandInPipe()

    await drive(create_persistence_observer(pipe), [ev(EventType.START, 1, "system"), finish(2)])

    directory = tmp_path / "abcdef0123456789"
    with SQLiteBackend(directory / "runs.db") as store:
        run = store.get_run(RUN_ID)
        assert run is not None
        assert run.status is Status.SUCCESS
        assert len(store.get_events(RUN_ID)) == 2
    description = (directory / "pipeline.json").read_text()
    assert json.loads(description) == {
        "name": "demo",
        "pipeline_hash": "abcdef0123456789",
        "metadata": {"obj": "{1}"},
    }
    assert description.startswith('{\n  "name": "demo"')


async def test_pipeline_storage_is_computed_once_and_cached_on_the_pipe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    pipe = StandInPipe(flush_interval=5)

    first, second = create_persistence_observer(pipe), create_persistence_observer(pipe)

    assert first is not second
    assert pipe.describe_calls == 1
    assert isinstance(first, PersistenceObserver)
    assert isinstance(second, PersistenceObserver)
    assert first._open_backend() is second._open_backend()
    assert second._flush_interval == 5


async def test_unwritable_storage_path_only_warns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(blocker))

    with caplog.at_level(logging.WARNING, logger="justpipe.persistence"):
        await drive(create_persistence_observer(StandInPipe()), [finish(1)])

    assert "cannot create the run store directory" in caplog.text
    assert blocker.read_text() == "x"


async def test_corrupt_store_only_warns_and_is_left_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    database = tmp_path / "abcdef0123456789" / "runs.db"
    database.parent.mkdir()
    database.write_bytes(b"garbage" * 50)

    with caplog.at_level(logging.WARNING, logger="justpipe.persistence"):
        await drive(create_persistence_observer(StandInPipe()), [finish(1)])

    assert "not a database" in caplog.text
    assert database.read_bytes() == b"garbage" * 50


def test_pipe_that_cannot_describe_itself_gets_an_inert_observer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Undescribable(StandInPipe):
        def describe(self) -> dict[str, Any]:
            raise RuntimeError("no describe yet")

    with caplog.at_level(logging.WARNING, logger="justpipe.persistence"):
        observer = create_persistence_observer(Undescribable())

    assert type(observer) is Observer
    assert "cannot describe the pipeline: no describe yet" in caplog.text


# -- end to end with real runs ------------------------------------------------------------------


def store_of(pipe: Pipe[Any, Any], root: Path) -> SQLiteBackend:
    return SQLiteBackend(root / pipe.describe()["pipeline_hash"] / "runs.db")


def two_step_pipe(**options: Any) -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="persisted", **options)

    @pipe.step(to="shout")
    async def greet(state: dict[str, Any]) -> None:
        state["text"] = "hello"

    @pipe.step()
    async def shout(state: dict[str, Any]) -> Any:
        if state.get("fail"):
            raise ValueError("shout failed")
        yield state["text"].upper()

    return pipe


async def collect(pipe: Pipe[Any, Any], state: Any) -> list[Event]:
    return [event async for event in pipe.run(state)]


@pytest.fixture
def storage_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(root))
    monkeypatch.delenv("JUSTPIPE_PERSIST", raising=False)
    return root


async def test_persisted_run_stores_every_yielded_event_as_json(storage_root: Path) -> None:
    pipe = two_step_pipe(persist=True)

    events = await collect(pipe, {})

    with store_of(pipe, storage_root) as store:
        (run,) = store.list_runs()
        assert run.status is Status.SUCCESS
        assert run.error_message is None
        stored = store.get_events(run.run_id)
    assert run.run_id == events[0].run_id
    assert [e.seq for e in stored] == [e.seq for e in events]
    assert [without_payload(e.data) for e in stored] == [
        without_payload(event_to_json(e)) for e in events
    ]
    assert stored_types(stored)[-1] is EventType.FINISH


async def test_state_payloads_are_snapshots_taken_when_the_event_happened(
    storage_root: Path,
) -> None:
    pipe = two_step_pipe(persist=True)

    await collect(pipe, {})

    with store_of(pipe, storage_root) as store:
        (run,) = store.list_runs()
        start = store.get_events(run.run_id, EventType.START)
        ends = store.get_events(run.run_id, EventType.STEP_END)
    assert json.loads(start[0].data)["payload"] == {}
    assert [json.loads(e.data)["payload"] for e in ends] == [{"text": "hello"}] * 2


def without_payload(data: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(data)
    parsed.pop("payload")
    return parsed


async def test_pipeline_json_holds_the_describe_snapshot(storage_root: Path) -> None:
    pipe = two_step_pipe(persist=True)

    await collect(pipe, {})

    description = storage_root / pipe.describe()["pipeline_hash"] / "pipeline.json"
    assert json.loads(description.read_text()) == json.loads(json.dumps(pipe.describe()))


async def test_failed_run_is_stored_with_error_and_failed_step(storage_root: Path) -> None:
    pipe = two_step_pipe(persist=True)

    await collect(pipe, {"fail": True})

    with store_of(pipe, storage_root) as store:
        (run,) = store.list_runs()
    assert (run.status, run.error_message, run.error_step) == (
        Status.FAILED,
        "shout failed",
        "shout",
    )


async def test_every_run_of_a_pipe_goes_to_one_store(storage_root: Path) -> None:
    pipe = two_step_pipe(persist=True)

    first = await collect(pipe, {})
    second = await collect(pipe, {})

    with store_of(pipe, storage_root) as store:
        stored_ids = {r.run_id for r in store.list_runs()}
    assert stored_ids == {first[0].run_id, second[0].run_id}


@pytest.mark.parametrize(("flag", "persisted"), [("1", True), ("yes", True), ("0", False)])
async def test_justpipe_persist_environment_switches_persistence(
    storage_root: Path, monkeypatch: pytest.MonkeyPatch, flag: str, persisted: bool
) -> None:
    monkeypatch.setenv("JUSTPIPE_PERSIST", flag)
    pipe = two_step_pipe()

    await collect(pipe, {})

    assert (storage_root / pipe.describe()["pipeline_hash"] / "runs.db").exists() is persisted


async def test_client_close_is_persisted_as_client_closed(storage_root: Path) -> None:
    pipe = two_step_pipe(persist=True)

    async with contextlib.aclosing(pipe.run({})) as stream:
        async for event in stream:
            if event.type is EventType.STEP_START:
                break

    with store_of(pipe, storage_root) as store:
        (run,) = store.list_runs()
        stored = store.get_events(run.run_id)
    assert run.status is Status.CLIENT_CLOSED
    assert stored_types(stored)[0] is EventType.START
    assert stored_types(stored)[-1] is EventType.FINISH


async def test_consumer_cancellation_is_persisted_as_cancelled(storage_root: Path) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="blocked", persist=True)
    started = asyncio.Event()

    @pipe.step()
    async def wait_forever(state: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    consumer = asyncio.create_task(collect(pipe, {}))
    await started.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    with store_of(pipe, storage_root) as store:
        (run,) = store.list_runs()
    assert run.status is Status.CANCELLED


async def test_flush_interval_stores_events_while_the_run_is_going(storage_root: Path) -> None:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="flushing", persist=True, flush_interval=1)
    seen_mid_run: list[tuple[int | None, int]] = []

    @pipe.step()
    async def produce(state: dict[str, Any]) -> Any:
        for n in range(3):
            yield n

    async for event in pipe.run({}):
        if event.type is EventType.TOKEN:
            with store_of(pipe, storage_root) as store:
                seen_mid_run.append((event.seq, len(store.get_events(event.run_id or ""))))

    # Observers see each event before the consumer does, so the store already holds it.
    assert len(seen_mid_run) == 3
    assert all(stored == seq for seq, stored in seen_mid_run)


async def test_unwritable_storage_path_leaves_the_run_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(blocker))
    pipe = two_step_pipe(persist=True)

    with caplog.at_level(logging.WARNING, logger="justpipe.persistence"):
        events = await collect(pipe, {})

    assert events[-1].type is EventType.FINISH
    assert events[-1].payload.status is Status.SUCCESS
    assert "cannot create the run store directory" in caplog.text


async def test_concurrent_runs_of_one_pipe_are_all_stored(storage_root: Path) -> None:
    pipe = two_step_pipe(persist=True)

    streams = await asyncio.gather(*(collect(pipe, {}) for _ in range(5)))

    with store_of(pipe, storage_root) as store:
        runs = store.list_runs()
        assert {r.run_id for r in runs} == {events[0].run_id for events in streams}
        for events in streams:
            assert len(store.get_events(events[0].run_id or "")) == len(events)
