"""A durable run's attempt counters: saved as deltas beside the checkpoint, merged on load.

A store that keeps the counters (`keeps_attempts`: `InMemoryCheckpointStore`,
`SQLiteCheckpointStore`) receives with each checkpoint only the counts that changed since
the previous one and loads them all back; a store that implements only the original
protocol gets every count inside the document. Either way a resumed run numbers its
attempts on from where the run was, also for steps that ran before the resume.

The `every_save_is_whole` fixture checks, after every checkpoint written in a test, that
the counts the store holds equal every count of the run (no increment escapes the delta).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import Event, EventType, Pipe, Retry, Suspend
from justpipe.durable import (
    Checkpoint,
    CheckpointStore,
    Durable,
    InMemoryCheckpointStore,
    LeaseLostError,
    SQLiteCheckpointStore,
    SuspendedEndData,
)
from justpipe.durable.checkpointer import Checkpointer
from justpipe.durable.store import Lease
from justpipe.types import PipelineTerminalStatus

SUCCESS = PipelineTerminalStatus.SUCCESS


class OldProtocolStore:
    """A store implementing only the original protocol (no `keeps_attempts`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.checkpoints: dict[str, Checkpoint] = {}
        self.leases: dict[str, Lease] = {}
        self.given: list[Checkpoint] = []

    def save(self, checkpoint: Checkpoint, owner: str) -> None:
        with self._lock:
            lease = self.leases.get(checkpoint.run_id)
            if lease is None or lease.owner != owner:
                raise LeaseLostError("lost")
            self.given.append(checkpoint)
            # what a store written before `Checkpoint.attempts` existed would keep
            self.checkpoints[checkpoint.run_id] = Checkpoint(
                checkpoint.run_id,
                checkpoint.pipe_name,
                checkpoint.pipeline_hash,
                checkpoint.status,
                checkpoint.segment,
                checkpoint.data,
            )

    def load(self, run_id: str) -> Checkpoint | None:
        with self._lock:
            return self.checkpoints.get(run_id)

    def acquire(self, run_id: str, owner: str, ttl_s: float) -> None:
        with self._lock:
            self.leases[run_id] = Lease(run_id, owner, 1e12)

    def release(self, run_id: str, owner: str) -> None:
        with self._lock:
            self.leases.pop(run_id, None)

    def lease(self, run_id: str) -> Lease | None:
        with self._lock:
            return self.leases.get(run_id)


STORES = ("memory", "sqlite", "old")


def make_store(kind: str, tmp_path: Path) -> CheckpointStore:
    if kind == "memory":
        return InMemoryCheckpointStore()
    if kind == "sqlite":
        return SQLiteCheckpointStore(tmp_path / "runs.db")
    return OldProtocolStore()


def counts_of(store: Any, run_id: str) -> dict[str, int]:
    """Every attempt count the store would give a resume of the run."""
    saved = store.load(run_id)
    assert saved is not None
    data = json.loads(saved.data)
    if getattr(store, "keeps_attempts", False):
        assert data["attempts"] is None, "kept beside the document, not in it"
        assert saved.attempts is not None
        return dict(saved.attempts)
    assert saved.attempts is None
    return dict(data["attempts"])


@pytest.fixture(autouse=True)
def every_save_is_whole(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """After each checkpoint: the store's counts are the run's counts, every one of them."""
    checked: list[int] = []
    write = Checkpointer.write

    def checking(self: Checkpointer, status: str, end: Any = None) -> None:
        before = self.writes
        write(self, status, end)
        if self.writes > before and type(self) is Checkpointer:
            assert counts_of(self.store, self.run_id) == self.run.attempts.snapshot()
            checked.append(1)

    monkeypatch.setattr(Checkpointer, "write", checking)
    return checked


def starts(events: list[Event], name: str) -> list[int]:
    return [e.attempt for e in events if e.type is EventType.STEP_START and e.stage == name]


@dataclass
class Loop:
    n: int = 0
    asked: bool = False
    log: list[str] = field(default_factory=list)


def loop_pipe(store: Any, every: int = 1) -> Pipe[Loop, None]:
    """prepare -> work -> check, which returns work (a loop), ask or done.

    ask suspends; its continuation, again, returns work: the loop goes on after the resume.
    """
    pipe: Pipe[Loop, None] = Pipe(
        Loop, name="loop", durable=Durable(store=store, checkpoint_every=every)
    )

    @pipe.step(to="work")
    async def prepare(s: Loop) -> None:
        s.log.append("prepare")

    @pipe.step(to="check")
    async def work(s: Loop) -> None:
        s.n += 1
        s.log.append(f"work{s.n}")

    @pipe.step
    async def check(s: Loop) -> str:  # a returned step name: the loop, at run time
        if s.n == 3 and not s.asked:
            s.asked = True
            return "ask"
        return "work" if s.n < 6 else "done"

    @pipe.step(to="again")
    async def ask(s: Loop) -> Any:
        return Suspend("go on?")

    @pipe.step
    async def again(s: Loop) -> str:
        return "work"

    @pipe.step
    async def done(s: Loop) -> None:
        s.log.append("done")

    return pipe


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("every", [1, 3, 0])
async def test_a_loop_numbers_its_attempts_on_across_a_resume(
    kind: str, every: int, tmp_path: Path, every_save_is_whole: list[int]
) -> None:
    store = make_store(kind, tmp_path)
    pipe = loop_pipe(store, every)
    first = await collect(pipe, Loop(), start="prepare")
    assert isinstance(end_data(first), SuspendedEndData)
    run_id = first[-1].run_id
    assert starts(first, "work") == [1, 2, 3] and starts(first, "check") == [1, 2, 3]
    assert counts_of(store, run_id) == {"prepare": 1, "work": 3, "check": 3, "ask": 1}

    second = await run_with_watchdog(drain(pipe.resume(run_id)))
    assert end_data(second).status is SUCCESS
    assert starts(second, "work") == [4, 5, 6], "the loop's attempts go on after the resume"
    assert starts(second, "check") == [4, 5, 6]
    assert starts(second, "prepare") == []
    # what ran before the resume only is still counted: a third segment would go on too
    assert counts_of(store, run_id) == {
        "prepare": 1,
        "work": 6,
        "check": 6,
        "ask": 1,
        "again": 1,
        "done": 1,
    }
    assert every_save_is_whole, "the fixture checked the saves"


class Recording(InMemoryCheckpointStore):
    """Keeps every checkpoint it was given (with its changed counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[Checkpoint] = []

    def save(self, checkpoint: Checkpoint, owner: str) -> None:
        self.given.append(checkpoint)
        super().save(checkpoint, owner)


def chain(n: int, store: Any) -> Pipe[dict[str, Any], None]:
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name=f"chain{n}", durable=store)
    for i in range(n):

        async def step(s: dict[str, Any]) -> None:
            pass

        pipe.step(f"s{i}", to=f"s{i + 1}" if i + 1 < n else None)(step)
    return pipe


async def test_each_checkpoint_saves_only_the_changed_counts() -> None:
    store = Recording()
    events = await collect(chain(40, store), {})
    assert end_data(events).status is SUCCESS
    sizes = [len(c.attempts or {}) for c in store.given]
    assert len(store.given) == 40 + 3  # start, roots, one per completion, FINISH
    # the completed step and the one it scheduled, never the names seen before
    assert max(sizes) <= 2, sizes
    assert all('"attempts":null' in c.data for c in store.given)
    loaded = store.load(events[-1].run_id)
    assert loaded is not None and loaded.attempts == {f"s{i}": 1 for i in range(40)}


async def test_a_store_of_the_old_protocol_gets_every_count_in_the_document() -> None:
    store = OldProtocolStore()
    events = await collect(chain(5, store), {})
    assert end_data(events).status is SUCCESS
    last = json.loads(store.given[-1].data)
    assert last["attempts"] == {f"s{i}": 1 for i in range(5)}
    assert all(c.attempts is None for c in store.given)


@dataclass
class Flaky:
    calls: int = 0
    log: list[str] = field(default_factory=list)


@pytest.mark.filterwarnings("ignore:Pipeline uses @pipe.map with a mutable state")
@pytest.mark.parametrize("kind", STORES)
async def test_retries_and_map_workers_are_counted_across_an_interruption(
    kind: str, tmp_path: Path
) -> None:
    """Retries, a map's workers, and a segment closed mid-run by its consumer."""
    store = make_store(kind, tmp_path)
    pipe: Pipe[Flaky, None] = Pipe(Flaky, name="flaky", durable=store)
    gate = {"open": False}

    async def again(s: Flaky) -> Any:
        return Retry()

    @pipe.step(to="fan", on_error=again)
    async def flaky(s: Flaky) -> None:
        s.calls += 1
        if s.calls < 3:
            raise RuntimeError("not yet")

    @pipe.map(each="item", to="slow")
    async def fan(s: Flaky) -> list[int]:
        return [1, 2, 3, 4]

    @pipe.step
    async def item(s: Flaky, item: int) -> None:
        await asyncio.sleep(0.01 * item)  # checkpoints are written while workers run
        s.log.append(f"item{item}")

    @pipe.step
    async def slow(s: Flaky) -> None:
        while not gate["open"]:
            await asyncio.sleep(0.005)
        s.log.append("slow")

    stream = pipe.run(Flaky())
    first: list[Event] = []
    async for event in stream:
        first.append(event)
        if event.type is EventType.STEP_START and event.stage == "slow":
            break
    await stream.aclose()
    run_id = first[0].run_id
    assert starts(first, "flaky") == [1, 2, 3]
    assert counts_of(store, run_id) == {"flaky": 3, "fan": 1, "item": 4, "slow": 1}

    gate["open"] = True
    second = await run_with_watchdog(drain(pipe.resume(run_id)))
    assert end_data(second).status is SUCCESS
    assert starts(second, "slow") == [2], "the interrupted step runs again, as attempt 2"
    assert counts_of(store, run_id) == {"flaky": 3, "fan": 1, "item": 4, "slow": 2}
