"""Durable runs in one process: checkpoints, suspend -> resume, rejections, the serializer.

Real processes (a resume in another process, SIGKILL mid-run) are in
tests/test_durable_process.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import pytest

from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import Event, EventType, Pipe, Retry, Suspend
from justpipe.durable import (
    Checkpoint,
    Durable,
    InMemoryCheckpointStore,
    LeaseLostError,
    PipelineChangedError,
    RunFinishedError,
    RunLeasedError,
    SQLiteCheckpointStore,
    StateSerializationError,
    StateSerializer,
    SuspendedEndData,
    UndeclaredTypeError,
    UnknownRunError,
    done_indices,
    resume_value,
)
from justpipe.storage.sqlite import SQLiteBackend
from justpipe.types import BarrierType, PipelineEndData, PipelineTerminalStatus

SUCCESS = PipelineTerminalStatus.SUCCESS


@dataclass
class Doc:
    log: list[str] = field(default_factory=list)
    answer: Any = None


@dataclass
class Point:
    x: int
    y: tuple[int, int]


class Model(pydantic.BaseModel):
    name: str
    tags: list[str]


def review_pipe(
    store: Any, *, suspend: bool = True, extra: bool = False, every: int | None = None
) -> Pipe[Doc, None]:
    """draft -> review (suspends unless answered) -> publish -> archive (-> extra)."""
    if every is not None:
        store = Durable(store=store, checkpoint_every=every)
    pipe: Pipe[Doc, None] = Pipe(Doc, name="review", durable=store)

    @pipe.step(to="review")
    async def draft(s: Doc) -> None:
        s.log.append("draft")

    @pipe.step(to="publish")
    async def review(s: Doc) -> Any:
        s.log.append("review")
        if suspend:
            return Suspend("needs a human")
        return None

    @pipe.step(to="archive")
    async def publish(s: Doc) -> None:
        s.answer = resume_value() if suspend else "yes"
        s.log.append("publish")

    @pipe.step(to="extra" if extra else None)
    async def archive(s: Doc) -> None:
        s.log.append("archive")

    if extra:

        @pipe.step("extra")
        async def extra_step(s: Doc) -> None:
            s.log.append("extra")

    return pipe


def shape(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type.value, e.stage, e.attempt) for e in events]


def checkpoint_data(store: Any, run_id: str) -> dict[str, Any]:
    found = store.load(run_id)
    assert found is not None
    return json.loads(found.data)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- suspend -> resume


async def test_suspend_then_resume_continues_the_same_run() -> None:
    store = InMemoryCheckpointStore()
    pipe = review_pipe(store)
    first = await collect(pipe, Doc())
    suspended = end_data(first)
    assert isinstance(suspended, SuspendedEndData) and suspended.status is SUCCESS
    run_id = first[-1].run_id
    assert (suspended.run_id, suspended.segment) == (run_id, 1)
    assert (suspended.suspended_steps, suspended.reasons) == (("review",), ("needs a human",))
    assert [e.type for e in first].count(EventType.SUSPEND) == 1
    saved = store.load(run_id)
    assert saved is not None and saved.status == "suspended"

    second = await run_with_watchdog(drain(pipe.resume(run_id, value="approved")))
    assert end_data(second).status is SUCCESS
    assert not isinstance(end_data(second), SuspendedEndData)
    assert {e.run_id for e in first + second} == {run_id}
    seqs = [e.seq for e in first + second]
    assert seqs == list(range(1, len(seqs) + 1)), "seq goes on across segments"
    final = checkpoint_data(store, run_id)
    assert final["status"] == "finished" and final["end"] == "success"
    assert final["state"]["fields"] == {
        "log": ["draft", "review", "publish", "archive"],
        "answer": "approved",
    }

    # both segments equal one uninterrupted run, apart from the suspend itself (SUSPEND, the
    # first segment's FINISH, the second's START)
    plain = await collect(review_pipe(InMemoryCheckpointStore(), suspend=False), Doc())
    joined = [e for e in first if e.type not in (EventType.SUSPEND, EventType.FINISH)]
    joined += [e for e in second if e.type is not EventType.START]
    assert shape(joined) == shape(plain)
    ids = [int(e.invocation_id.rsplit(":", 1)[1]) for e in joined if e.invocation_id]
    assert ids == sorted(ids), "invocation ids go on across segments"


async def test_a_run_started_at_a_given_step_resumes_with_that_start() -> None:
    store = InMemoryCheckpointStore()
    pipe = review_pipe(store)
    first = await collect(pipe, Doc(), start="review")
    assert checkpoint_data(store, first[-1].run_id)["start"] == "review"
    second = await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="ok")))
    assert [e.stage for e in second if e.type is EventType.STEP_START] == ["publish", "archive"]
    assert checkpoint_data(store, first[-1].run_id)["state"]["fields"]["log"] == [
        "review",
        "publish",
        "archive",
    ]


async def test_two_questions_three_segments_and_an_interruption_between() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="twice", durable=store)

    @pipe.step(to="second_question")
    async def first_question(s: Doc) -> Suspend:
        return Suspend("first")  # never runs again: its successor reads the answer

    @pipe.step(to="use_both")
    async def second_question(s: Doc) -> Suspend:
        s.log.append(f"first answer: {resume_value()}")
        return Suspend("second")

    @pipe.step(to="slow")
    async def use_both(s: Doc) -> None:
        s.log.append(f"second answer: {resume_value()}")

    @pipe.step
    async def slow(s: Doc) -> None:
        await asyncio.sleep(0)
        s.log.append("slow")

    one = await collect(pipe, Doc())
    run_id = one[-1].run_id
    two = await run_with_watchdog(drain(pipe.resume(run_id, value="A")))
    assert end_data(two).segment == 2  # type: ignore[attr-defined]
    # the third segment's consumer goes away after use_both: a crash, as far as the run knows
    stream = pipe.resume(run_id, value="B")
    three = []
    async for event in stream:
        three.append(event)
        if event.type is EventType.STEP_END and event.stage == "use_both":
            break
    await stream.aclose()
    assert checkpoint_data(store, run_id)["status"] == "running"
    four = await run_with_watchdog(drain(pipe.resume(run_id, value="C")))
    assert end_data(four).status is SUCCESS
    seqs = [e.seq for e in one + two + three + four]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # use_both's completion was still queued when the consumer left (it saw the STEP_END):
    # it was in flight, so it runs again in segment 4 (at least once), with that value
    assert checkpoint_data(store, run_id)["state"]["fields"]["log"] == [
        "first answer: A",
        "second answer: B",
        "second answer: C",
        "slow",
    ]
    assert checkpoint_data(store, run_id)["segment"] == 4


async def test_the_resumed_segment_reads_the_value_and_the_first_does_not() -> None:
    seen: list[Any] = []
    pipe: Pipe[Doc, None] = Pipe(Doc, name="value", durable=InMemoryCheckpointStore())

    @pipe.step(to="after")
    async def ask(s: Doc) -> Any:
        seen.append(("ask", resume_value()))
        return Suspend("question")

    @pipe.step
    async def after(s: Doc) -> None:
        seen.append(("after", resume_value()))

    first = await collect(pipe, Doc())
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value={"ok": True})))
    assert seen == [("ask", None), ("after", {"ok": True})]
    assert resume_value() is None  # nothing leaks into the consumer once the stream ended


async def test_a_plain_run_that_suspends_still_ends_success() -> None:
    pipe = review_pipe(None)
    events = await collect(pipe, Doc())
    assert end_data(events).status is SUCCESS
    assert type(end_data(events)) is PipelineEndData
    assert pipe.durable is None


async def test_a_half_arrived_join_keeps_its_arrivals_across_a_suspend() -> None:
    runs: list[str] = []
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="join", durable=store)

    @pipe.step(to=["left", "right"])
    async def fork(s: Doc) -> None:
        runs.append("fork")

    @pipe.step(to="join")
    async def left(s: Doc) -> Any:
        runs.append("left")
        if resume_value() is None:
            return Suspend("left waits")
        return None

    @pipe.step(to="join")
    async def right(s: Doc) -> None:
        runs.append("right")

    @pipe.step
    async def join(s: Doc) -> None:
        runs.append("join")

    first = await collect(pipe, Doc())
    run_id = first[-1].run_id
    data = checkpoint_data(store, run_id)
    assert data["arrivals"] == {"join": [1]}, "right arrived at the join before the suspend"
    assert [entry["step"] for entry in data["suspended"]] == ["left"]
    await run_with_watchdog(drain(pipe.resume(run_id, value="go")))
    assert runs == ["fork", "left", "right", "join"], "nothing ran twice; the join ran once"


async def test_an_any_join_that_fired_before_a_suspend_does_not_fire_again() -> None:
    runs: list[str] = []
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="any", durable=store)

    @pipe.step(to=["left", "right"])
    async def fork(s: Doc) -> None:
        pass

    @pipe.step(to="join")
    async def left(s: Doc) -> Any:
        runs.append("left")
        return Suspend("later") if resume_value() is None else None

    @pipe.step(to="join")
    async def right(s: Doc) -> None:
        runs.append("right")

    @pipe.step(barrier_type=BarrierType.ANY, to="tail")
    async def join(s: Doc) -> None:
        runs.append("join")

    @pipe.step
    async def tail(s: Doc) -> None:
        runs.append("tail")

    first = await collect(pipe, Doc())
    data = checkpoint_data(store, first[-1].run_id)
    assert data["arrivals"] == {"join": [1]}  # right's arrival fired the join's wave
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="go")))
    # right's arrival fired the join while the suspend was stopping the run (held); on
    # resume the held join runs once, and left's arrival completes the wave without firing
    assert sorted(runs) == ["join", "left", "right", "tail"]


async def test_steps_refused_while_a_suspend_stops_the_run_run_on_resume() -> None:
    runs: list[str] = []
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="held", durable=store)

    @pipe.step(to=["ask", "slow"])
    async def fork(s: Doc) -> None:
        pass

    @pipe.step
    async def ask(s: Doc) -> Any:
        runs.append("ask")
        return Suspend("q")

    @pipe.step(to="tail")
    async def slow(s: Doc) -> None:
        runs.append("slow")

    @pipe.step
    async def tail(s: Doc) -> None:
        runs.append("tail")

    first = await collect(pipe, Doc())
    held = [e["step"] for e in checkpoint_data(store, first[-1].run_id)["frontier"]]
    assert held == ["tail"]
    assert "tail" not in runs
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id)))
    assert runs.count("tail") == 1 and runs.count("slow") == 1 and runs.count("ask") == 1


async def test_attempt_and_invocation_counters_go_on_after_a_resume() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="counters", durable=store)
    calls = {"n": 0}

    async def again(s: Doc) -> Any:
        return Retry()

    @pipe.step(to="ask", on_error=again)
    async def flaky(s: Doc) -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("not yet")

    @pipe.step(to="flaky2")
    async def ask(s: Doc) -> Any:
        return Suspend("q")

    @pipe.step
    async def flaky2(s: Doc) -> None:
        pass

    first = await collect(pipe, Doc())
    data = checkpoint_data(store, first[-1].run_id)
    saved = store.load(first[-1].run_id)
    assert saved is not None and saved.attempts is not None  # kept beside the document
    assert saved.attempts["flaky"] == 3 and data["invocations"] == 4
    second = await run_with_watchdog(drain(pipe.resume(first[-1].run_id)))
    starts = [e for e in second if e.type is EventType.STEP_START]
    assert [(e.stage, e.invocation_id.rsplit(":", 1)[1]) for e in starts] == [("flaky2", "5")]


# --------------------------------------------------------------------------- when it checkpoints


@pytest.mark.parametrize(
    ("every", "first_writes", "resume_writes"), [(0, 2, 2), (1, 4, 5), (2, 3, 4)]
)
async def test_checkpoint_every(every: int, first_writes: int, resume_writes: int) -> None:
    # always: when the segment starts, and at its FINISH (suspended or finished); with
    # checkpoint_every=N also once the roots (or the frontier) are scheduled and after every
    # N completions while the run is not stopping (review's Suspend stops it)
    store = InMemoryCheckpointStore()
    pipe = review_pipe(store, every=every)
    first = await collect(pipe, Doc())
    assert store.saves == first_writes
    await run_with_watchdog(drain(pipe.resume(first[-1].run_id, value="x")))
    assert store.saves - first_writes == resume_writes


# --------------------------------------------------------------------------- rejections


async def test_resuming_a_finished_run_is_refused() -> None:
    store = InMemoryCheckpointStore()
    pipe = review_pipe(store, suspend=False)
    events = await collect(pipe, Doc())
    with pytest.raises(RunFinishedError, match="already finished"):
        await drain(pipe.resume(events[-1].run_id))


async def test_resuming_an_unknown_run_is_refused() -> None:
    pipe = review_pipe(InMemoryCheckpointStore())
    with pytest.raises(UnknownRunError, match="no durable run 'nope'"):
        await drain(pipe.resume("nope"))


async def test_resuming_with_a_changed_pipeline_is_refused_unless_forced() -> None:
    store = InMemoryCheckpointStore()
    first = await collect(review_pipe(store), Doc())
    run_id = first[-1].run_id
    changed = review_pipe(store, extra=True)
    with pytest.raises(PipelineChangedError, match="force=True"):
        await drain(changed.resume(run_id))
    forced = await run_with_watchdog(drain(changed.resume(run_id, force=True)))
    assert end_data(forced).status is SUCCESS
    assert checkpoint_data(store, run_id)["state"]["fields"]["log"][-1] == "extra"


async def test_a_run_leased_by_another_live_process_is_refused() -> None:
    store = InMemoryCheckpointStore()
    pipe = review_pipe(store)
    first = await collect(pipe, Doc())
    run_id = first[-1].run_id
    # a live owner: this host, a pid that exists (ours), another nonce
    store.acquire(run_id, f"{socket.gethostname()}:{os.getpid()}:other", 60.0)
    with pytest.raises(RunLeasedError, match="another live process"):
        await drain(pipe.resume(run_id))
    # a dead owner (a pid that does not exist) does not protect the run
    store.release(run_id, f"{socket.gethostname()}:{os.getpid()}:other")
    store.acquire(run_id, f"{socket.gethostname()}:999999999:gone", 60.0)
    done = await run_with_watchdog(drain(pipe.resume(run_id)))
    assert end_data(done).status is SUCCESS


def test_resume_with_start_or_on_a_plain_pipe_is_refused() -> None:
    pipe = review_pipe(InMemoryCheckpointStore())
    with pytest.raises(ValueError, match=r"start=\.\.\.\) is not allowed"):
        pipe.resume("abc", start="publish")
    with pytest.raises(ValueError, match="is not durable"):
        review_pipe(None).resume("abc")
    with pytest.raises(TypeError, match="CheckpointStore"):
        Pipe(Doc, durable="yes")
    with pytest.raises(ValueError, match="checkpoint_every"):
        Pipe(Doc, durable=Durable(checkpoint_every=-1))
    with pytest.raises(TypeError, match="StateSerializer"):
        Durable(serializer="pickle")  # type: ignore[arg-type]


async def test_unserializable_state_fails_at_the_first_checkpoint_naming_the_field() -> None:
    @dataclass
    class Bad:
        tags: set[str] = field(default_factory=set)

    pipe: Pipe[Bad, None] = Pipe(Bad, name="bad", durable=InMemoryCheckpointStore())
    ran: list[str] = []

    @pipe.step
    async def only(s: Bad) -> None:
        ran.append("only")

    with pytest.raises(StateSerializationError, match=r"state\.tags: a builtins\.set"):
        await drain(pipe.run(Bad()))
    assert ran == []


async def test_a_checkpoint_write_after_losing_the_lease_stops_the_run() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="stolen", durable=store)

    @pipe.step(to="second")
    async def first(s: Doc) -> None:
        run_id = next(iter(store._leases))
        store._leases[run_id] = store._leases[run_id].__class__(run_id, "thief", 1e18)

    @pipe.step
    async def second(s: Doc) -> None:
        pass

    with pytest.raises(ExceptionGroup) as info:
        await drain(pipe.run(Doc()))
    assert info.group_contains(LeaseLostError)


# --------------------------------------------------------------------------- the serializer


def test_serializer_round_trips_json_dataclasses_tuples_and_models() -> None:
    # a serializer on its own rebuilds only the classes registered on it (a durable Pipe
    # adds what its state type declares)
    codec = StateSerializer(types=[Point, Model])
    value = {
        "n": 1,
        "f": 2.5,
        "s": "x",
        "none": None,
        "list": [1, [2, 3]],
        "point": Point(1, (2, 3)),
        "model": Model(name="a", tags=["b"]),
        "tricky": {"__jp__": "user data"},
    }
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert isinstance(back["point"].y, tuple)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"when": {1, 2}}, r"state\['when'\]: a builtins\.set"),
        ([b"raw"], r"state\[0\]: a builtins\.bytes"),
        ({1: "int key"}, "its key 1 is a int"),
        (float("nan"), "non-finite"),
    ],
)
def test_serializer_names_what_it_cannot_store(value: Any, where: str) -> None:
    with pytest.raises(StateSerializationError, match=where):
        StateSerializer().dumps(value)


def test_pickle_is_only_used_when_allowed() -> None:
    value = {"tags": {"a", "b"}}
    text = StateSerializer(allow_pickle=True).dumps(value)
    assert StateSerializer(allow_pickle=True).loads(text) == value
    with pytest.raises(UndeclaredTypeError, match=r"state\['tags'\]: .*does not allow pickle"):
        StateSerializer().loads(text)


def test_a_cycle_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(StateSerializationError, match="cycle"):
        StateSerializer().dumps(loop)


# --------------------------------------------------------------------------- the SQLite store


def test_sqlite_store_adds_its_tables_to_an_existing_run_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with SQLiteBackend(db) as backend:
        backend.append_events("r1", [])
    store = SQLiteCheckpointStore(db)
    store.acquire("r1", "me:1:a", 30.0)
    store.save(Checkpoint("r1", "p", "h", "running", 1, "{}"), "me:1:a")
    with SQLiteBackend(db) as backend:  # the run store still reads (and writes) the file
        assert backend.get_run("r1") is not None
        backend.append_events("r2", [])
    loaded = store.load("r1")
    assert loaded is not None and loaded.status == "running" and loaded.data == "{}"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sqlite_store_leases(tmp_path: Path) -> None:
    store = SQLiteCheckpointStore(tmp_path / "runs.db")
    me = f"{socket.gethostname()}:{os.getpid()}:a"
    store.acquire("r", me, 30.0)
    with pytest.raises(RunLeasedError):
        SQLiteCheckpointStore(tmp_path / "runs.db").acquire("r", f"{me}x", 30.0)
    with pytest.raises(LeaseLostError):
        store.save(Checkpoint("r", "p", "h", "running", 1, "{}"), "someone else")
    store.acquire("r", me, 30.0)  # renewing one's own lease is fine
    store.release("r", me)
    assert store.lease("r") is None
    store.acquire("r", "otherhost:1:b", -1.0)  # already expired
    store.acquire("r", me, 30.0)
    lease = store.lease("r")
    assert lease is not None and lease.owner == me


async def test_durable_true_uses_the_run_store_under_the_storage_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    pipe = review_pipe(True)
    first = await collect(pipe, Doc())
    run_id = first[-1].run_id
    files = list(tmp_path.glob("*/runs.db"))
    assert len(files) == 1
    with SQLiteBackend(files[0]) as backend:
        record = backend.get_run(run_id)
        assert record is not None and record.status is SUCCESS  # upstream's statuses
    second = await run_with_watchdog(drain(review_pipe(True).resume(run_id, value="ok")))
    assert end_data(second).status is SUCCESS
    with SQLiteBackend(files[0]) as backend:
        record = backend.get_run(run_id)
        assert record is not None and record.status is SUCCESS
        seqs = [event.seq for event in backend.get_events(run_id)]
    assert seqs == list(range(1, len(first) + len(second) + 1)), "one run, both segments"

    changed = review_pipe(True, extra=True)
    with pytest.raises(RunFinishedError):
        await drain(review_pipe(True).resume(run_id))
    again = await collect(review_pipe(True), Doc())
    with pytest.raises(PipelineChangedError, match="different pipeline definition"):
        await drain(changed.resume(again[-1].run_id))


# --------------------------------------------------------------------------- maps


@pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")
@pytest.mark.parametrize("max_concurrency", [None, 4])
async def test_an_interrupted_map_resumes_with_its_remaining_items_only(
    max_concurrency: int | None,
) -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[Doc, None] = Pipe(Doc, name="map", durable=store)
    calls: dict[str, int] = {}
    ran: list[int] = []

    @pipe.map(each="square", to="total", max_concurrency=max_concurrency)
    async def numbers(s: Doc) -> list[int]:
        calls["numbers"] = calls.get("numbers", 0) + 1
        return list(range(40))

    @pipe.step
    async def square(s: Doc, item: int) -> None:
        ran.append(item)
        s.log.append(str(item * item))
        await asyncio.sleep(0)

    @pipe.step
    async def total(s: Doc) -> None:
        calls["total"] = calls.get("total", 0) + 1
        s.answer = sorted(int(x) for x in set(s.log))

    stream = pipe.run(Doc())
    ends = 0
    run_id = ""
    async for event in stream:  # the consumer goes away in the middle of the map
        run_id = event.run_id
        if event.type is EventType.STEP_END and event.stage == "square":
            ends += 1
            if ends == 15:
                break
    await stream.aclose()
    saved = checkpoint_data(store, run_id)
    assert saved["status"] == "running"
    (entry,) = [e for e in saved["frontier"] if e["step"] == "numbers"]
    done = done_indices(entry["map"])
    assert 0 < len(done) < 40

    second = await run_with_watchdog(drain(pipe.resume(run_id)))
    assert end_data(second).status is SUCCESS
    assert calls == {"numbers": 1, "total": 1}, "the source is not called again"
    assert all(ran.count(i) == 1 for i in done), "checkpointed items never run again"
    assert set(ran) == set(range(40))
    workers = [e for e in second if e.type is EventType.MAP_WORKER]
    assert sorted(e.payload["index"] for e in workers) == sorted(set(range(40)) - done)
    (complete,) = [e for e in second if e.type is EventType.MAP_COMPLETE]
    assert complete.payload["item_count"] == 40
    final = checkpoint_data(store, run_id)["state"]["fields"]
    assert final["answer"] == [i * i for i in range(40)]
