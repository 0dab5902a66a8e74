"""The channel records have one layout, and both core backends read it the same way.

`justpipe._kernel.records` is the one place that writes the record layout; the
`_core` dispatcher (compiled and pure) tells records apart by length and unpacks an
event record straight into `EventFactory.build`. These tests hold both to it: a
record built by the builders becomes an event whose fields are the ones the layout
names, on the active backend, and the dispatcher routes each kind of record.
"""

from __future__ import annotations

import asyncio
from typing import Any

from justpipe import _core
from justpipe._core import _dispatch_py
from justpipe._kernel import records
from justpipe._kernel.context import _Invocation
from justpipe._kernel.outcomes import Outcome
from justpipe.types import Event, EventType, NodeKind


def test_record_lengths_are_the_dispatchers() -> None:
    assert (records.EVENT_LEN, records.FORWARD_LEN, records.DONE_LEN) == (
        _dispatch_py.EVENT_LEN,
        _dispatch_py.FORWARD_LEN,
        _dispatch_py.DONE_LEN,
    )
    assert len(records.START_ROOTS) == 0
    assert len(records.FINISH_MARK) == 1


def test_an_event_record_builds_the_event_its_layout_names() -> None:
    values: dict[str, Any] = {
        "type": EventType.STEP_END,
        "stage": "s",
        "payload": {"p": 1},
        "kind": NodeKind.MAP,
        "invocation_id": "i1",
        "parent_invocation_id": "i0",
        "owner_invocation_id": "i9",
        "attempt": 3,
        "scope": ("a", "b[2]"),
        "meta": {"m": True},
    }
    record = records.event_record(
        values["type"],
        values["stage"],
        values["payload"],
        values["kind"],
        values["invocation_id"],
        values["parent_invocation_id"],
        values["owner_invocation_id"],
        values["attempt"],
        values["scope"],
        values["meta"],
    )
    assert len(record) == records.EVENT_LEN
    event = _core.EventFactory(Event, "run").build(*record)
    values["node_kind"] = values.pop("kind")
    for field in records.EVENT_FIELDS:
        if field == "timestamp":
            assert event.timestamp == record[3]
        else:
            assert getattr(event, field) == values[field], field
    assert (event.run_id, event.origin_run_id, event.parent_run_id, event.seq) == (
        "run",
        "run",
        None,
        1,
    )


def test_a_step_record_carries_its_invocations_lineage() -> None:
    inv = _Invocation(None, "work", "i7", "i3", "i2", 2, ("fan", "work[4]"))
    event = _core.EventFactory(Event, "run").build(
        *records.step_record(EventType.STEP_START, inv)
    )
    assert (event.stage, event.invocation_id, event.parent_invocation_id) == ("work", "i7", "i3")
    assert (event.owner_invocation_id, event.attempt, event.scope) == ("i2", 2, ("fan", "work[4]"))
    assert event.node_kind is NodeKind.STEP


async def test_the_dispatcher_routes_each_kind_of_record() -> None:
    channel = _core.ControlChannel(0)
    factory = _core.EventFactory(Event, "run")
    completed: list[Any] = []
    dispatcher = _core.Dispatcher(
        channel, factory, None, lambda event: False, lambda event: None, completed.append
    )
    inv = _Invocation(None, "x", "i1", None, "i1", 1, ())
    done = records.completion(inv, Outcome.OK, None)
    channel.put_nowait(records.START_ROOTS)
    channel.put_nowait(done)
    channel.put_nowait(records.system_record(EventType.START, "system", None))
    channel.put_nowait(records.FINISH_MARK)
    assert dispatcher.next() == _dispatch_py.START
    event = dispatcher.next()
    assert completed == [done]
    assert isinstance(event, Event) and event.type is EventType.START
    assert dispatcher.next() == _dispatch_py.FINISH
    assert dispatcher.next() is None
    await asyncio.sleep(0)
