"""Durable runs against a store an attacker (or a careless operator) can write.

A checkpoint row is untrusted input: it must never decide which code or class runs
(decoding rebuilds only the classes the pipeline declares or the serializer registers,
and imports nothing), a signed store refuses rows changed without the key, and every
refusal happens before anything runs, leaves the row as it was and gives the lease back.
Random corruptions are in tests/test_durable_corruption.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import pydantic
import pytest

from helpers import collect, drain, end_data, run_with_watchdog
from justpipe import Event, EventType, Pipe, Suspend
from justpipe.durable import (
    CheckpointSignatureError,
    CorruptCheckpointError,
    Durable,
    DurableError,
    InMemoryCheckpointStore,
    MissingStepsError,
    PipelineChangedError,
    SQLiteCheckpointStore,
    StateSerializationError,
    StateSerializer,
    UndeclaredTypeError,
    resume_value,
)
from justpipe.storage.segments import read_durable_runs
from justpipe.storage.sqlite import SQLiteBackend
from justpipe.types import PipelineTerminalStatus

SUCCESS = PipelineTerminalStatus.SUCCESS
KEY = b"k" * 32


@dataclass
class When:
    day: int = 0


class Tag(pydantic.BaseModel):
    label: str


@dataclass
class Item:
    name: str
    when: When | None = None
    tags: list[Tag] = field(default_factory=list)


@dataclass
class Order:
    items: list[Item] = field(default_factory=list)
    by_name: dict[str, Item] = field(default_factory=dict)
    pair: tuple[When, int] | None = None
    extra: Any = None
    log: list[str] = field(default_factory=list)


@dataclass
class Unrelated:
    secret: str = ""


@dataclass
class Deep:
    n: int = 0


class Inner(pydantic.BaseModel):
    deep: Optional[Deep] = None  # noqa: UP045 (the typing spelling is what is tested)


@dataclass
class Leaf:
    n: int = 0


@dataclass
class Either:
    n: int = 0


@dataclass
class Root:
    a: dict[str, list[tuple[Leaf, ...]]] = field(default_factory=dict)
    b: Inner | None = None
    c: Union[int, Either] = 0  # noqa: UP007
    d: Any = None


def order_pipe(
    store: Any, name: str = "order", *, rename: bool = False, extra: bool = False
) -> Pipe[Any, None]:
    """take -> ask (suspends) -> finish (-> extra): `rename` calls the suspending step
    differently, `extra` adds a step at the end (both change the definition's hash)."""
    pipe: Pipe[Any, None] = Pipe(Order, name=name, durable=store)

    @pipe.step(to="ask_again" if rename else "ask")
    async def take(s: Any) -> None:
        s.log.append("take")

    async def ask(s: Any) -> Suspend:
        s.log.append("ask")
        return Suspend("a human decides")

    pipe.step("ask_again" if rename else "ask", to="finish")(ask)

    @pipe.step(to="extra" if extra else None)
    async def finish(s: Any) -> None:
        s.log.append(f"finish {resume_value()}")

    if extra:

        @pipe.step("extra")
        async def extra_step(s: Any) -> None:
            s.log.append("extra")

    return pipe


def sample_order() -> Order:
    first = Item("a", When(3), [Tag(label="x")])
    return Order(items=[first, Item("b")], by_name={"a": first}, pair=(When(5), 1))


async def suspended_run(pipe: Pipe[Any, None], state: Any = None) -> str:
    events = await collect(pipe, sample_order() if state is None else state)
    assert end_data(events).status is SUCCESS
    return events[-1].run_id


async def refused(
    pipe: Pipe[Any, None], run_id: str, error: type[BaseException], match: str, **options: Any
) -> None:
    """`resume(run_id, **options)` raises `error` (its text matching `match`), emitting nothing."""
    got, raised, message = await outcome(pipe, run_id, **options)
    assert issubclass(raised, error), f"{raised.__name__}: {message}"
    assert re.search(match, message), message
    assert got == [], "a refused resume emits nothing"


async def outcome(
    pipe: Pipe[Any, None], run_id: str, **options: Any
) -> tuple[list[Event], type, str]:
    """What `resume(run_id)` emitted and raised: the error's type and text only, so that
    nothing the resume built stays referenced (by a traceback) once this returns."""
    got: list[Event] = []
    try:
        async for event in pipe.resume(run_id, **options):
            got.append(event)
    except Exception as exc:
        return got, type(exc), str(exc)
    return got, type(None), ""


async def settled() -> None:
    """Let the loop finalize what a resume left behind (async generators), then collect."""
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()


def row(db: Path, run_id: str) -> tuple[Any, ...]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT * FROM durable_checkpoints WHERE run_id = ?", (run_id,)
        ).fetchone()
        parts = conn.execute(
            "SELECT key, data FROM durable_parts WHERE run_id = ? ORDER BY key", (run_id,)
        ).fetchall()
    return (found, parts)


def set_data(db: Path, run_id: str, data: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE durable_checkpoints SET data = ? WHERE run_id = ?", (data, run_id))


def edit_document(db: Path, run_id: str, edit: Any) -> None:
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute(
            "SELECT data FROM durable_checkpoints WHERE run_id = ?", (run_id,)
        ).fetchone()
    document = json.loads(text)
    edit(document)
    set_data(db, run_id, json.dumps(document, separators=(",", ":")))


# --------------------------------------------------------------------------- the attacks


async def test_a_crafted_tag_cannot_build_a_class_that_deletes_a_file(tmp_path: Path) -> None:
    """The issue's attack: tempfile's closer, built with a chosen name, unlinks it when freed."""
    db = tmp_path / "runs.db"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = SQLiteCheckpointStore(db)
    pipe = order_pipe(store)
    run_id = await suspended_run(pipe)

    closer = "tempfile:_TemporaryFileCloser"
    harmless = {"__jp__": "dataclass", "type": closer, "fields": {"close_called": True}}
    attack = {
        "__jp__": "dataclass",
        "type": closer,
        "fields": {"file": harmless, "name": str(victim), "delete": True},
    }
    edit_document(db, run_id, lambda d: d["state"]["fields"].__setitem__("extra", attack))
    before = row(db, run_id)

    got, error, message = await outcome(pipe, run_id)
    await settled()  # (whatever the resume built is freed now: a closer would unlink here)
    assert victim.read_text() == "precious", "the crafted checkpoint deleted a file"
    assert error is UndeclaredTypeError
    assert re.match(r"state\.extra: .*'tempfile:_TemporaryFileCloser'", message)
    assert got == [], "refused before anything runs"
    assert row(db, run_id) == before, "the refused row is left byte for byte"
    assert store.lease(run_id) is None, "the lease is given back"


async def test_a_checkpoint_cannot_import_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    module = f"jp_evil_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n\n"
        "class Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    db = tmp_path / "runs.db"
    pipe = order_pipe(SQLiteCheckpointStore(db))
    run_id = await suspended_run(pipe)
    tag = {"__jp__": "dataclass", "type": f"{module}:Thing", "fields": {}}

    def plant(document: dict[str, Any]) -> None:
        document["state"]["fields"]["items"][1]["fields"]["when"] = tag

    edit_document(db, run_id, plant)
    got, error, message = await outcome(pipe, run_id)
    assert not marker.exists(), "decoding imported a module (its import-time code ran)"
    assert module not in sys.modules
    assert error is UndeclaredTypeError
    assert re.match(r"state\.items\[1\]\.when: the checkpoint names", message)
    assert got == []


async def test_a_declared_class_cannot_get_fields_it_does_not_have(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    pipe = order_pipe(SQLiteCheckpointStore(db))
    run_id = await suspended_run(pipe)

    def plant(document: dict[str, Any]) -> None:
        document["state"]["fields"]["items"][0]["fields"]["when"]["fields"]["__class__"] = 1

    edit_document(db, run_id, plant)
    await refused(pipe, run_id, CorruptCheckpointError, r"state\.items\[0\]\.when\.__class__: ")


# --------------------------------------------------------------------------- what may be rebuilt


async def test_what_the_state_type_declares_round_trips_without_registration() -> None:
    store = InMemoryCheckpointStore()
    pipe = order_pipe(store)
    run_id = await suspended_run(pipe)
    done = await run_with_watchdog(drain(pipe.resume(run_id, value="ok")))
    assert end_data(done).status is SUCCESS
    classes = {cls.__name__ for cls in pipe.durable.serializer.for_types(Order).types}
    assert classes == {"Order", "Item", "When", "Tag"}


def test_annotations_reach_through_containers_unions_and_models() -> None:
    found = {cls.__name__ for cls in StateSerializer().for_types(Root).types}
    assert found == {"Root", "Leaf", "Inner", "Deep", "Either"}


async def test_an_undeclared_class_in_an_any_field_is_refused_at_the_first_checkpoint() -> None:
    pipe = order_pipe(InMemoryCheckpointStore())
    ran: list[str] = []
    pipe.on_startup(lambda: ran.append("startup"))
    with pytest.raises(
        StateSerializationError, match=r"state\.extra: its class .*Unrelated.*types=\[Unrelated\]"
    ):
        await drain(pipe.run(Order(extra=Unrelated("x"))))
    assert ran == []


@pytest.mark.parametrize("how", ["types", "register"])
async def test_a_registered_class_round_trips(how: str) -> None:
    serializer = StateSerializer(types=[Unrelated]) if how == "types" else StateSerializer()
    if how == "register":
        assert serializer.register(Unrelated) is Unrelated
    store = InMemoryCheckpointStore()
    pipe = order_pipe(Durable(store=store, serializer=serializer))
    run_id = await suspended_run(pipe, Order(extra=Unrelated("kept")))
    done = await run_with_watchdog(drain(pipe.resume(run_id)))
    assert end_data(done).status is SUCCESS


async def test_a_plain_dict_state_rebuilds_only_json_and_registered_classes() -> None:
    def dict_pipe(serializer: StateSerializer) -> Pipe[dict[str, Any], None]:
        pipe: Pipe[dict[str, Any], None] = Pipe(
            dict,
            name="plain",
            durable=Durable(store=InMemoryCheckpointStore(), serializer=serializer),
        )

        @pipe.step(to="after")
        async def ask(s: dict[str, Any]) -> Suspend:
            return Suspend("?")

        @pipe.step
        async def after(s: dict[str, Any]) -> None:
            s["seen"] = type(s["when"]).__name__

        return pipe

    with pytest.raises(StateSerializationError, match=r"state\['when'\]: its class"):
        await drain(dict_pipe(StateSerializer()).run({"when": When(1)}))
    pipe = dict_pipe(StateSerializer(types=[When]))
    first = await collect(pipe, {"when": When(1), "n": [1, 2.5, "x", None, True]})
    done = await run_with_watchdog(drain(pipe.resume(first[-1].run_id)))
    assert end_data(done).status is SUCCESS


def test_decoding_names_the_place_of_what_it_refuses() -> None:
    codec = StateSerializer().for_types(Order)
    good = codec.encode(sample_order())
    cases: list[tuple[Any, type[BaseException], str]] = [
        ({"__jp__": "nope"}, CorruptCheckpointError, r"^state: unknown value tag 'nope'"),
        ({"__jp__": "tuple", "items": 3}, CorruptCheckpointError, r"^state: a 'tuple' value"),
        ({"__jp__": "pickle", "data": "gA=="}, UndeclaredTypeError, "does not allow pickle"),
        ({"x": float("nan")}, CorruptCheckpointError, r"^state\['x'\]: a non-finite float"),
    ]
    for data, error, match in cases:
        with pytest.raises(error, match=match):
            codec.decode(data)
    broken = json.loads(json.dumps(good))
    broken["fields"]["items"][0]["fields"]["tags"][0]["data"]["label"] = 7
    with pytest.raises(CorruptCheckpointError, match=r"^state\.items\[0\]\.tags\[0\]: not a valid"):
        codec.decode(broken)
    kind = json.loads(json.dumps(good))
    kind["fields"]["pair"]["items"][0]["__jp__"] = "pydantic"
    with pytest.raises(CorruptCheckpointError, match=r"^state\.pair\[0\]: a pydantic value"):
        codec.decode(kind)
    missing = json.loads(json.dumps(good))
    del missing["fields"]["items"][1]["fields"]["name"]
    with pytest.raises(CorruptCheckpointError, match=r"state\.items\[1\]\.name: missing"):
        codec.decode(missing)
    del missing["fields"]["items"][1]  # a field with a default may be missing
    assert codec.decode(missing).items[0].name == "a"


def test_nesting_deeper_than_the_limit_is_refused_both_ways() -> None:
    deep: list[Any] = []
    for _ in range(400):
        deep = [deep]
    with pytest.raises(StateSerializationError, match="nested more than 200"):
        StateSerializer().dumps(deep)
    text = "[" * 5000 + "]" * 5000
    with pytest.raises(CorruptCheckpointError, match=r"nested too deeply|nested more than"):
        StateSerializer().loads(text)
    with pytest.raises(CorruptCheckpointError, match="nested more than 200"):
        StateSerializer().loads("[" * 300 + "]" * 300)


def test_serializer_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match=r"types=\.\.\.\)\[0\] must be a dataclass"):
        StateSerializer(types=[int])
    with pytest.raises(TypeError, match=r"register\(cls\) must be a dataclass"):
        StateSerializer().register("When")  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"signing_key=\.\.\.\) must be bytes or str"):
        StateSerializer(signing_key=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"signing_key=\.\.\.\) must be at least 16 bytes"):
        StateSerializer(signing_key="short")
    with pytest.raises(TypeError, match=r"verify_keys=\.\.\.\) must be a list"):
        StateSerializer(signing_key=KEY, verify_keys=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"verify_keys=\.\.\.\)\[1\] must be at least"):
        StateSerializer(signing_key=KEY, verify_keys=[KEY, b"x"])
    with pytest.raises(ValueError, match="needs signing_key"):
        StateSerializer(verify_keys=[KEY])
    assert "k" * 16 not in repr(StateSerializer(signing_key=KEY)), "the key is never shown"


# --------------------------------------------------------------------------- signed checkpoints


def signed_store(kind: str, tmp_path: Path) -> Any:
    return (
        InMemoryCheckpointStore()
        if kind == "memory"
        else SQLiteCheckpointStore(tmp_path / "runs.db")
    )


def tamper(store: Any, run_id: str, edit: Any) -> None:
    """Change the stored document text (`edit(text) -> text`), as someone without the key."""
    if isinstance(store, InMemoryCheckpointStore):
        saved = store._checkpoints[run_id]
        store._checkpoints[run_id] = type(saved)(**{**saved.__dict__, "data": edit(saved.data)})
    else:
        with sqlite3.connect(store.db_path) as conn:
            (text,) = conn.execute(
                "SELECT data FROM durable_checkpoints WHERE run_id = ?", (run_id,)
            ).fetchone()
            conn.execute(
                "UPDATE durable_checkpoints SET data = ? WHERE run_id = ?", (edit(text), run_id)
            )


def signed(store: Any, key: bytes = KEY, **options: Any) -> Durable:
    return Durable(store=store, serializer=StateSerializer(signing_key=key, **options))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_signed_run_resumes_and_a_changed_row_is_refused(kind: str, tmp_path: Path) -> None:
    store = signed_store(kind, tmp_path)
    pipe = order_pipe(signed(store))
    run_id = await suspended_run(pipe)
    text = store.load(run_id).data
    assert text.startswith('{"signature":"hmac-sha256:')
    assert json.loads(text)["status"] == "suspended", "still one JSON document for readers"

    tamper(store, run_id, lambda t: t.replace('"label":"x"', '"label":"y"'))
    await refused(pipe, run_id, CheckpointSignatureError, "matches none of this serializer's keys")
    tamper(store, run_id, lambda t: t.replace('"label":"y"', '"label":"x"'))
    done = await run_with_watchdog(drain(pipe.resume(run_id, value="ok")))
    assert end_data(done).status is SUCCESS


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_unsigned_or_foreign_rows_are_refused_when_a_key_is_set(
    kind: str, tmp_path: Path
) -> None:
    store = signed_store(kind, tmp_path)
    run_id = await suspended_run(order_pipe(store))  # written without a key
    await refused(order_pipe(signed(store)), run_id, CheckpointSignatureError, "is not signed")
    other = await suspended_run(order_pipe(signed(store, b"o" * 32)))
    await refused(order_pipe(signed(store)), other, CheckpointSignatureError, "matches none")
    # key rotation: the old key still verifies, and the next checkpoint is signed anew
    rotated = order_pipe(signed(store, KEY, verify_keys=[b"o" * 32]))
    done = await run_with_watchdog(drain(rotated.resume(other, value="ok")))
    assert end_data(done).status is SUCCESS


async def test_a_maps_items_kept_beside_the_document_are_signed_too() -> None:
    store = InMemoryCheckpointStore()
    pipe: Pipe[dict[str, Any], None] = Pipe(dict, name="signedmap", durable=signed(store))

    @pipe.map(each="work", to="after")
    async def numbers(s: dict[str, Any]) -> list[int]:
        return list(range(20))

    @pipe.step
    async def work(s: dict[str, Any], item: int) -> None:
        s[str(item)] = item
        await asyncio.sleep(0)

    @pipe.step
    async def after(s: dict[str, Any]) -> None:
        s["total"] = sum(v for k, v in s.items() if k.isdigit())

    stream = pipe.run({})
    run_id, ends = "", 0
    async for event in stream:  # the consumer goes away in the middle of the map
        run_id = event.run_id
        ends += event.type is EventType.STEP_END and event.stage == "work"
        if ends == 5:
            break
    await stream.aclose()
    (key,) = store._parts[run_id]
    good = store._parts[run_id][key]
    assert good.startswith('{"signature":"hmac-sha256:') and good.endswith("}")
    store._parts[run_id][key] = good.replace(",19]", ",99]")
    await refused(pipe, run_id, CheckpointSignatureError, f"part '{key}'")
    store._parts[run_id][key] = good
    done = await run_with_watchdog(drain(pipe.resume(run_id)))
    assert end_data(done).status is SUCCESS


def test_the_cli_reads_a_signed_checkpoint_as_before(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    pipe = order_pipe(signed(SQLiteCheckpointStore(db)))
    run_id = asyncio.run(suspended_run(pipe))
    found = read_durable_runs(db)[run_id]
    assert found.checkpoint_status == "suspended"
    assert found.suspended == (("ask", "a human decides"),)


# --------------------------------------------------------------------------- refusals


async def test_a_refused_resume_leaves_no_lease_behind(tmp_path: Path) -> None:
    """The issue's case: a non-integer segment used to leak the lease (RunLeasedError, 30 s)."""
    db = tmp_path / "runs.db"
    store = SQLiteCheckpointStore(db)
    pipe = order_pipe(store)
    run_id = await suspended_run(pipe)
    edit_document(db, run_id, lambda d: d.__setitem__("segment", "1"))
    before = row(db, run_id)
    for _ in range(2):  # the second is refused the same way, not RunLeasedError
        await refused(pipe, run_id, CorruptCheckpointError, "segment is '1' in the document")
    assert row(db, run_id) == before
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE durable_checkpoints SET segment = 'x' WHERE run_id = ?", (run_id,))
    await refused(pipe, run_id, CorruptCheckpointError, "segment is 'x', not an integer")
    assert store.lease(run_id) is None


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (
            lambda d: d["frontier"].append({"step": 3}),
            CorruptCheckpointError,
            r"frontier\[0\]\.step: expected str, got int 3",
        ),
        (
            lambda d: d["suspended"][0].__setitem__("step", "nowhere"),
            CorruptCheckpointError,
            r"suspended\[0\]\.step: 'nowhere' names no step",
        ),
        (
            lambda d: d.__setitem__("suspended", {"step": "ask"}),
            CorruptCheckpointError,
            r"suspended: expected list, got dict",
        ),
        (lambda d: d.__setitem__("seq", -1), CorruptCheckpointError, r"seq: -1 is not an integer"),
        (lambda d: d.__setitem__("seq", 2**70), CorruptCheckpointError, r"seq: "),
        (
            lambda d: d.__setitem__("arrivals", {"ghost": [0]}),
            CorruptCheckpointError,
            r"arrivals\['ghost'\]: 'ghost' names no step",
        ),
        (lambda d: d.__setitem__("disabled", 5), CorruptCheckpointError, r"disabled: "),
        (
            lambda d: d.__setitem__("disabled", ["ghost"]),
            CorruptCheckpointError,
            r"disabled\[0\]: 'ghost' names no step",
        ),
        (
            lambda d: d.__setitem__("status", "finished"),
            CorruptCheckpointError,
            "status is 'finished' in the document but 'suspended'",
        ),
        (lambda d: d.__setitem__("format", 99), DurableError, "has format 99"),
    ],
)
async def test_a_malformed_checkpoint_is_refused_before_anything_runs(
    edit: Any, error: type[BaseException], match: str, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    store = SQLiteCheckpointStore(db)
    pipe = order_pipe(store)
    run_id = await suspended_run(pipe)
    edit_document(db, run_id, edit)
    before = row(db, run_id)
    await refused(pipe, run_id, error, match)
    assert row(db, run_id) == before
    assert store.lease(run_id) is None


async def test_text_that_is_not_json_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    pipe = order_pipe(SQLiteCheckpointStore(db))
    run_id = await suspended_run(pipe)
    for text, match in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        ("[" * 100_000, "nested too deeply|not valid JSON"),
        ('{"format": NaN}', "not valid JSON"),
    ]:
        set_data(db, run_id, text)
        await refused(pipe, run_id, CorruptCheckpointError, match)


# --------------------------------------------------------------------------- force=True


async def test_a_forced_resume_onto_a_pipeline_without_the_suspending_step_is_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    store = SQLiteCheckpointStore(db)
    run_id = await suspended_run(order_pipe(store))
    renamed = order_pipe(store, rename=True)
    before = row(db, run_id)
    await refused(renamed, run_id, PipelineChangedError, "different pipeline definition")
    missing = r"'ask' \(at suspended\[0\]\.step\).*same names"
    await refused(renamed, run_id, MissingStepsError, missing, force=True)
    assert row(db, run_id) == before
    assert store.lease(run_id) is None


async def test_a_forced_resume_keeps_the_run_in_one_store_and_one_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path))
    first = order_pipe(True)
    run_id = await suspended_run(first)
    (old_db,) = tmp_path.glob("*/runs.db")

    changed = order_pipe(True, extra=True)
    done = await run_with_watchdog(drain(changed.resume(run_id, value="ok", force=True)))
    assert end_data(done).status is SUCCESS
    new_db = next(p for p in tmp_path.glob("*/runs.db") if p != old_db)
    with SQLiteBackend(old_db) as backend:
        assert backend.get_run(run_id) is None, "the run left its old store"
    assert read_durable_runs(old_db) == {}
    with SQLiteBackend(new_db) as backend:
        record = backend.get_run(run_id)
        assert record is not None and record.status is SUCCESS
        seqs = [event.seq for event in backend.get_events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1)), "both segments, in one row"
    assert read_durable_runs(new_db)[run_id].checkpoint_status == "finished"
    # and it is resumed from there afterwards, without force: it is finished
    with pytest.raises(DurableError, match="already finished"):
        await drain(changed.resume(run_id))


# --------------------------------------------------------------------------- the docs


def test_the_docs_examples_of_registration_and_signing_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/durable.md's python blocks of "What can be serialized" and "Security", in order."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "durable.md").read_text()
    section = text[text.index("## What can be serialized") : text.index("## Stores")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2
    namespace: dict[str, Any] = {"__name__": "durable_docs"}
    for index, block in enumerate(blocks):
        code = compile(block, f"docs/durable.md[block {index}]", "exec", dont_inherit=True)
        exec(code, namespace)
    assert "refused: run" in capsys.readouterr().out


async def test_a_forced_resume_with_a_store_of_your_own_moves_the_run_row_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(tmp_path / "runs"))
    store = SQLiteCheckpointStore(tmp_path / "checkpoints.db")
    first = order_pipe(Durable(store=store))
    first.persist = True
    run_id = await suspended_run(first)
    changed = order_pipe(Durable(store=store), extra=True)
    changed.persist = True
    done = await run_with_watchdog(drain(changed.resume(run_id, value="ok", force=True)))
    assert end_data(done).status is SUCCESS
    runs = {p.parent.name: p for p in (tmp_path / "runs").glob("*/runs.db")}
    assert len(runs) == 2
    found = []
    for db in runs.values():
        with SQLiteBackend(db) as backend:
            record = backend.get_run(run_id)
            if record is not None:
                found.append((record.status, [e.seq for e in backend.get_events(run_id)]))
    ((status, seqs),) = found  # one row, in the changed pipeline's run store
    assert status is SUCCESS and seqs == list(range(1, len(seqs) + 1))


def test_a_maps_items_are_declared_by_its_source_and_its_worker() -> None:
    from justpipe.durable.api import declared_types

    pipe: Pipe[dict[str, Any], None] = Pipe(
        dict, name="declares", durable=InMemoryCheckpointStore()
    )

    @pipe.map(each="work")
    async def source(s: dict[str, Any]) -> list[When]:
        return []

    @pipe.step
    async def work(s: dict[str, Any], item: Item) -> None:
        pass

    found = {cls.__name__ for cls in StateSerializer().for_types(*declared_types(pipe)).types}
    assert found == {"When", "Item", "Tag"}


def test_reachability_does_not_depend_on_when_temporaries_are_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resolved annotations (``list[L]``) are new objects each time: an id seen before may
    belong to one already freed, so a walk keyed by ids alone skipped classes at random."""
    import types

    roots = []
    for i in range(200):
        module = types.ModuleType(f"jp_reach_{i}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        source = (
            "from __future__ import annotations\n"
            "from dataclasses import dataclass, field\n"
            "@dataclass\nclass L:\n    n: int = 0\n"
            "@dataclass\nclass R:\n"
            "    a: list[L] = field(default_factory=list)\n"
            "    b: dict[str, tuple[L, ...]] = field(default_factory=dict)\n"
        )
        exec(compile(source, module.__name__, "exec", dont_inherit=True), module.__dict__)
        roots.append(module.R)
    assert len(StateSerializer().for_types(*roots).types) == 2 * len(roots)
