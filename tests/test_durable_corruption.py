"""Random corruptions of stored checkpoint rows: a resume refuses them, or runs correctly.

Three checkpoints (a suspended step, a map interrupted half-way with its items kept beside
the document, a suspend inside a sub-pipeline), unsigned and signed, in memory and in
SQLite, are mutated at random (the JSON text, a value anywhere in the document, a tag,
a class key, a column, a part, a counter, the signature) and resumed. Whatever the
mutation:

* the resume raises a `DurableError`, emitting nothing: then the stored rows are byte
  for byte what they were, and no lease is left (a second resume right after is refused
  the same way, not with `RunLeasedError`); or
* it runs: its stream is well formed (START first, one root FINISH last, every step
  start closed), and a signed checkpoint was not changed (a change of anything the
  signature covers is always refused);
* never a raw exception, never a hang.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import WATCHDOG_S, root_finish
from justpipe import Event, EventType, Pipe, Suspend
from justpipe.durable import (
    Checkpoint,
    CheckpointSignatureError,
    Durable,
    DurableError,
    InMemoryCheckpointStore,
    RunLeasedError,
    SQLiteCheckpointStore,
    StateSerializer,
    resume_value,
)

pytestmark = pytest.mark.filterwarnings("ignore::justpipe.types.PipelineValidationWarning")

KEY = b"corruption-test-key-0123456789"


class Label(pydantic.BaseModel):
    text: str


@dataclass
class Part:
    name: str
    size: tuple[int, int] = (0, 0)
    label: Label | None = None


@dataclass
class Job:
    parts: list[Part] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    answer: Any = None


# --------------------------------------------------------------------------- the pipelines


def ask_pipe(durable: Durable) -> Pipe[Job, None]:
    """take -> ask (suspends) -> finish."""
    pipe: Pipe[Job, None] = Pipe(Job, name="ask", durable=durable)

    @pipe.step(to="ask")
    async def take(s: Job) -> None:
        s.log.append("take")

    @pipe.step(to="finish")
    async def ask(s: Job) -> Suspend:
        return Suspend("a question")

    @pipe.step
    async def finish(s: Job) -> None:
        s.answer = resume_value()
        s.log.append("finish")

    return pipe


def map_pipe(durable: Durable) -> Pipe[Job, None]:
    """parts (12 items) -> work each -> after; interrupted half-way."""
    pipe: Pipe[Job, None] = Pipe(Job, name="map", durable=durable)

    @pipe.map(each="work", to="after", max_concurrency=2)
    async def parts(s: Job) -> list[Part]:
        return [Part(f"p{i}", (i, i + 1), Label(text=str(i))) for i in range(12)]

    @pipe.step
    async def work(s: Job, item: Part) -> None:
        s.log.append(item.name)
        await asyncio.sleep(0)

    @pipe.step
    async def after(s: Job) -> None:
        s.answer = len(s.log)

    return pipe


def sub_pipe(durable: Durable) -> Pipe[Job, None]:
    """first -> nested (child: prep -> ask, suspends -> after) -> last."""
    child: Pipe[Job, None] = Pipe(Job, name="child")

    @child.step(to="ask")
    async def prep(s: Job) -> None:
        s.log.append("prep")

    @child.step(to="after")
    async def ask(s: Job) -> Suspend:
        return Suspend("inner question")

    @child.step
    async def after(s: Job) -> None:
        s.log.append("after")

    pipe: Pipe[Job, None] = Pipe(Job, name="parent", durable=durable)

    @pipe.step(to="nested")
    async def first(s: Job) -> None:
        s.parts.append(Part("x", (1, 2), Label(text="y")))

    @pipe.sub(pipeline=child, to="last")
    async def nested(s: Job) -> Job:
        return s

    @pipe.step
    async def last(s: Job) -> None:
        s.log.append("last")

    return pipe


SCENARIOS: dict[str, Callable[[Durable], Pipe[Job, None]]] = {
    "ask": ask_pipe,
    "map": map_pipe,
    "sub": sub_pipe,
}


@dataclass(frozen=True)
class Stored:
    """A run's rows as a store holds them: the checkpoint, its counters, its parts."""

    checkpoint: Checkpoint
    counters: dict[str, Any]
    parts: dict[str, Any]


_BASELINES: dict[tuple[str, bool], Stored] = {}


def durable(store: Any, signed: bool) -> Durable:
    key = {"signing_key": KEY} if signed else {}
    return Durable(store=store, serializer=StateSerializer(**key))


async def first_segment(scenario: str, signed: bool) -> Stored:
    store = InMemoryCheckpointStore()
    pipe = SCENARIOS[scenario](durable(store, signed))
    stream = pipe.run(Job(parts=[Part("a", (1, 2), Label(text="l"))]))
    run_id, ends = "", 0
    async for event in stream:
        run_id = event.run_id
        ends += event.type is EventType.STEP_END and event.stage == "work"
        if ends == 5:  # (the map: its consumer goes away half-way)
            break
    await stream.aclose()
    found = store.load(run_id)
    assert found is not None and found.status in ("suspended", "running")
    return Stored(
        replace(found, attempts=None, parts=None),
        dict(found.attempts or {}),
        dict(found.parts or {}),
    )


def baseline(scenario: str, signed: bool) -> Stored:
    key = (scenario, signed)
    if key not in _BASELINES:
        _BASELINES[key] = asyncio.run(first_segment(scenario, signed))
    return _BASELINES[key]


# --------------------------------------------------------------------------- the stores


class Rows:
    """A fresh store holding given rows, and a byte-exact snapshot of what it holds."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        if kind == "memory":
            self.store: Any = InMemoryCheckpointStore()
        else:
            self.db = tmp / "runs.db"
            self.db.unlink(missing_ok=True)
            self.store = SQLiteCheckpointStore(self.db)

    def put(self, stored: Stored) -> None:
        cp = stored.checkpoint
        if self.kind == "memory":
            self.store._checkpoints[cp.run_id] = cp
            self.store._counters[cp.run_id] = dict(stored.counters)
            self.store._parts[cp.run_id] = dict(stored.parts)
            return
        with sqlite3.connect(self.db) as conn:
            conn.execute(
                "INSERT INTO durable_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cp.run_id, cp.pipe_name, cp.pipeline_hash, cp.status, cp.segment, cp.data, 1.0),
            )
            conn.executemany(
                "INSERT INTO durable_counters VALUES (?, ?, ?)",
                [(cp.run_id, name, count) for name, count in stored.counters.items()],
            )
            conn.executemany(
                "INSERT INTO durable_parts VALUES (?, ?, ?)",
                [(cp.run_id, key, text) for key, text in stored.parts.items()],
            )

    def snapshot(self, run_id: str) -> Any:
        if self.kind == "memory":
            s = self.store
            return (
                s._checkpoints.get(run_id),
                dict(s._counters.get(run_id, {})),
                dict(s._parts.get(run_id, {})),
            )
        with sqlite3.connect(self.db) as conn:
            return tuple(
                conn.execute(
                    f"SELECT * FROM {table} WHERE run_id = ? ORDER BY 2", (run_id,)
                ).fetchall()
                for table in ("durable_checkpoints", "durable_counters", "durable_parts")
            )


# --------------------------------------------------------------------------- mutations

NAMES = ["take", "ask", "finish", "parts", "work", "after", "first", "nested", "last", "ghost"]
TAGS = ["dataclass", "pydantic", "tuple", "dict", "pickle", "nope"]
KEYS = [
    "test_durable_corruption:Job",
    "test_durable_corruption:Part",
    "test_durable_corruption:Label",
    "tempfile:_TemporaryFileCloser",
    "os:system",
    "builtins:dict",
]
WORDS = ["suspended", "running", "finished", "attr", "key", "map:x", "__jp__", "", *NAMES]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS + TAGS + KEYS)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["__jp__", "type", "fields", "items", "step", "x"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (the root included)."""
    found = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*at, index))
    return found


def set_at(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return root


def get_at(root: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        root = root[step]
    return root


def edit_text(draw: Any, text: str) -> str:
    how = draw(st.sampled_from(["truncate", "insert", "delete", "deep"]))
    at = draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))
    if how == "truncate":
        return text[:at]
    if how == "insert":
        return text[:at] + draw(st.sampled_from(list('{}[],:"0x\\'))) + text[at:]
    if how == "delete":
        return text[:at] + text[at + 1 :]
    depth = draw(st.sampled_from([150, 250, 3000]))
    return "[" * depth + text + "]" * depth


def edit_document(draw: Any, text: str) -> str:
    """A JSON-level change somewhere in the document (or of its text)."""
    signed = text.startswith('{"signature":')
    document = json.loads(text)
    where = draw(st.sampled_from(paths(document)))
    how = draw(st.sampled_from(["replace", "delete", "tag", "key", "wrap", "text"]))
    target = get_at(document, where)
    if how == "replace":
        document = set_at(document, where, draw(json_values))
    elif how == "delete" and where:
        parent = get_at(document, where[:-1])
        del parent[where[-1]]
    elif how == "tag" and isinstance(target, dict):
        target["__jp__"] = draw(st.sampled_from(TAGS))
    elif how == "key" and isinstance(target, dict):
        target["type" if "type" in target else draw(st.sampled_from(["x", "type"]))] = draw(
            st.sampled_from(KEYS)
        )
    elif how == "wrap":
        wrapped: Any = target
        for _ in range(draw(st.sampled_from([1, 250]))):
            wrapped = [wrapped]
        document = set_at(document, where, wrapped)
    else:
        return edit_text(draw, text)
    out = json.dumps(document, separators=(",", ":"))
    stripped = signed and out.startswith('{"signature":') and "," in out
    if stripped and draw(st.booleans()):  # the key ordering kept, the signature dropped
        out = "{" + out[out.index(",") + 1 :]
    return out


@st.composite
def mutations(draw: Any, stored: Stored) -> tuple[str, Stored]:
    """(what was changed, the changed rows)."""
    cp = stored.checkpoint
    what = draw(
        st.sampled_from(
            ["document", "document", "document", "column", "part", "counter", "signature"]
        )
    )
    if what == "document":
        return what, replace(stored, checkpoint=replace(cp, data=edit_document(draw, cp.data)))
    if what == "column":
        column = draw(st.sampled_from(["status", "segment", "pipeline_hash", "pipe_name"]))
        value = draw(
            st.sampled_from(["finished", "suspended", "running", "bogus", "../x", "0" * 16])
            | st.integers(min_value=-2, max_value=3)
        )
        return what, replace(stored, checkpoint=replace(cp, **{column: value}))
    if what == "part" and stored.parts:
        key = draw(st.sampled_from(sorted(stored.parts)))
        parts = dict(stored.parts)
        change = draw(st.sampled_from(["edit", "drop", "retag"]))
        if change == "drop":
            del parts[key]
        elif change == "retag":
            parts[draw(st.sampled_from([key + "x", "map:other"]))] = parts.pop(key)
        else:
            text = parts[key]
            body = text if text.startswith("[") else text[text.index(',"part":') + 8 : -1]
            new = edit_document_list(draw, body)
            parts[key] = (
                new if text.startswith("[") or draw(st.booleans()) else text.replace(body, new)
            )
        return what, replace(stored, parts=parts)
    if what == "counter" and stored.counters:
        name = draw(st.sampled_from(sorted(stored.counters)))
        value = draw(st.sampled_from([-1, 0, 2**63 - 1, "x", 1.5]) | st.integers(0, 5))
        return what, replace(stored, counters={**stored.counters, name: value})
    if what == "signature" and cp.data.startswith('{"signature":"hmac-sha256:'):
        at = len('{"signature":"hmac-sha256:') + draw(st.integers(0, 63))
        flipped = "0" if cp.data[at] != "0" else "1"
        return what, replace(
            stored, checkpoint=replace(cp, data=cp.data[:at] + flipped + cp.data[at + 1 :])
        )
    return "nothing", stored


def edit_document_list(draw: Any, text: str) -> str:
    items = json.loads(text)
    where = draw(st.sampled_from(paths(items)))
    if draw(st.booleans()):
        return edit_text(draw, text)
    return json.dumps(set_at(items, where, draw(json_values)), separators=(",", ":"))


# --------------------------------------------------------------------------- the property


def well_formed(events: list[Event]) -> None:
    assert events[0].type is EventType.START
    root_finish(events)
    open_steps: dict[Any, int] = {}
    for event in events:
        key = (event.run_id, event.invocation_id)
        if event.type is EventType.STEP_START:
            open_steps[key] = open_steps.get(key, 0) + 1
        elif event.type in (EventType.STEP_END, EventType.STEP_ERROR):
            open_steps[key] = open_steps.get(key, 0) - 1
    assert all(n == 0 for n in open_steps.values()), "every STEP_START is closed"


async def resume_once(
    pipe: Pipe[Job, None], run_id: str
) -> tuple[list[Event], BaseException | None]:
    events: list[Event] = []
    try:
        async with asyncio.timeout(WATCHDOG_S):
            async for event in pipe.resume(run_id, value="ok"):
                events.append(event)
    except TimeoutError:
        raise AssertionError(
            f"resume hung; got {[(e.type.value, e.stage) for e in events]}"
        ) from None
    except Exception as exc:
        return events, exc
    return events, None


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_corrupt_checkpoint_is_refused_or_resumed_correctly(
    kind: str, tmp_path: Path, data: Any
) -> None:
    scenario = data.draw(st.sampled_from(sorted(SCENARIOS)), label="scenario")
    signed = data.draw(st.booleans(), label="signed")
    original = baseline(scenario, signed)
    what, mutated = data.draw(mutations(original), label="mutation")
    rows = Rows(kind, tmp_path)
    rows.put(mutated)
    run_id = original.checkpoint.run_id
    before = rows.snapshot(run_id)
    pipe = SCENARIOS[scenario](durable(rows.store, signed))

    events, error = asyncio.run(resume_once(pipe, run_id))
    if error is not None:
        assert isinstance(error, DurableError), f"a raw {type(error).__name__}: {error}"
        assert events == [], "a refused resume emits nothing"
        assert rows.snapshot(run_id) == before, "a refused row is left as it was"
        assert rows.store.lease(run_id) is None, "no lease is left behind"
        again, second = asyncio.run(resume_once(pipe, run_id))
        assert not isinstance(second, RunLeasedError)
        assert type(second) is type(error) and again == []
        return
    changed = mutated != original
    if signed and changed and what not in ("counter",):
        raise AssertionError(f"a signed checkpoint changed ({what}) was resumed")
    well_formed(events)


def test_every_mutation_kind_is_refused_when_signed(tmp_path: Path) -> None:
    """A change the signature covers, made without the key, is refused as such."""
    original = baseline("ask", True)
    cp = original.checkpoint
    changed = replace(
        original, checkpoint=replace(cp, data=cp.data.replace('"a question"', '"b question"'))
    )
    rows = Rows("sqlite", tmp_path)
    rows.put(changed)
    pipe = ask_pipe(durable(rows.store, True))
    events, error = asyncio.run(resume_once(pipe, cp.run_id))
    assert isinstance(error, CheckpointSignatureError) and events == []


def test_the_unchanged_baselines_resume(tmp_path: Path) -> None:
    last = {"ask": "finish", "map": "after", "sub": "last"}
    for scenario in sorted(SCENARIOS):
        for signed in (False, True):
            original = baseline(scenario, signed)
            rows = Rows("sqlite", tmp_path)
            rows.put(original)
            pipe = SCENARIOS[scenario](durable(rows.store, signed))
            events, error = asyncio.run(resume_once(pipe, original.checkpoint.run_id))
            assert error is None, f"{scenario}: {error!r}"
            well_formed(events)
            ended = [e.stage for e in events if e.type is EventType.STEP_END]
            assert ended[-1] == last[scenario]
