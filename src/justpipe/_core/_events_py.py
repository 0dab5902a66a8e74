"""Event construction for one run's stream: every event is built once, with its final `seq`.

Pure-Python twin of `_events.pyx`; both must behave identically (tests/test_core_parity.py).

Publishing is the hot path, and a frozen dataclass's `__init__` is slow: it calls
`object.__setattr__` once per field. The factory makes the same object without it: a bare
instance from `object.__new__`, whose instance dict is then filled in field order. The result
is indistinguishable from `Event(...)` (equality, repr, `dataclasses.replace`, `asdict`, pickle)
as long as the class is a plain dataclass: no `__post_init__`, no custom `__new__`, not
`slots=True`, with exactly the fields of `EVENT_FIELDS`, which `check_event_class` verifies.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, Generic, TypeVar

from justpipe._core._ids_py import check_seed

__all__ = ["EVENT_FIELDS", "EventFactory", "RecordBuilder", "check_event_class"]

E = TypeVar("E")

EVENT_FIELDS: Final = (
    "type",
    "stage",
    "payload",
    "timestamp",
    "run_id",
    "origin_run_id",
    "parent_run_id",
    "seq",
    "node_kind",
    "invocation_id",
    "parent_invocation_id",
    "owner_invocation_id",
    "attempt",
    "scope",
    "meta",
)
"""The fields of `justpipe.types.Event`, in declaration order."""

# Kept: timed on 3.11, `build` took 6-19% longer with `object.__new__` looked up per call.
_new = object.__new__


_CHECKED: set[type] = set()


def check_event_class(event_cls: type) -> None:
    """Raise TypeError unless instances of `event_cls` can be built by filling their dict.

    A class that passed is remembered: every run builds a factory, the check runs once.
    """
    if event_cls in _CHECKED:
        return
    _check_event_class(event_cls)
    _CHECKED.add(event_cls)


def _check_event_class(event_cls: type) -> None:
    names = check_plain_dataclass(event_cls)
    if names != EVENT_FIELDS:
        raise TypeError(f"{event_cls.__name__} has fields {names}, expected {EVENT_FIELDS}")


def check_plain_dataclass(event_cls: type) -> tuple[str, ...]:
    """Its field names, or TypeError unless instances can be built by filling their dict."""
    if not dataclasses.is_dataclass(event_cls):
        raise TypeError(f"{event_cls!r} is not a dataclass")
    names = tuple(f.name for f in dataclasses.fields(event_cls))
    if getattr(event_cls, "__post_init__", None) is not None:
        raise TypeError(f"{event_cls.__name__} defines __post_init__, which the factory would skip")
    if event_cls.__new__ is not object.__new__:
        raise TypeError(f"{event_cls.__name__} overrides __new__")
    if not event_cls.__dictoffset__:
        raise TypeError(f"{event_cls.__name__} instances have no __dict__ (slots=True?)")
    return names


class RecordBuilder(Generic[E]):
    """Builds instances of a plain frozen dataclass (the FINISH payload and its metrics).

    `RecordBuilder(cls)(v1, v2, ...)` equals `cls(v1, v2, ...)` with every field given
    positionally, in declaration order, but skips the frozen `__init__` (one
    `object.__setattr__` per field), the way `EventFactory` builds events.
    """

    __slots__ = ("_cls", "_names")

    def __init__(self, cls: type[E]) -> None:
        self._names = check_plain_dataclass(cls)
        self._cls = cls

    def __call__(self, *values: Any) -> E:
        names = self._names
        if len(values) != len(names):
            raise TypeError(
                f"{self._cls.__name__} needs {len(names)} values {names}, got {len(values)}"
            )
        record = _new(self._cls)
        fields = record.__dict__
        for name, value in zip(names, values, strict=True):
            fields[name] = value
        return record


class EventFactory(Generic[E]):
    """Builds the events of one run's stream, numbering them 1, 2, 3, ... (`seq`).

    `EventFactory(event_cls, run_id)`: `event_cls` is `justpipe.types.Event` (or a class
    with the same fields, see `check_event_class`); `run_id` is the id of the stream.
    """

    __slots__ = ("_cls", "_run_id", "_seq")

    def __init__(self, event_cls: type[E], run_id: str) -> None:
        check_event_class(event_cls)
        self._cls = event_cls
        self._run_id = run_id
        self._seq = 0

    def build(
        self,
        type: Any,
        stage: str,
        payload: Any,
        timestamp: float,
        node_kind: Any,
        invocation_id: str | None,
        parent_invocation_id: str | None,
        owner_invocation_id: str | None,
        attempt: int,
        scope: tuple[str, ...],
        meta: dict[str, Any] | None,
    ) -> E:
        """A native event of this run.

        `run_id` and `origin_run_id` are the factory's run id, `parent_run_id` is None and
        `seq` is the next number; the other fields are the arguments.
        """
        self._seq += 1
        run_id = self._run_id
        event = _new(self._cls)
        event.__dict__.update(
            type=type,
            stage=stage,
            payload=payload,
            timestamp=timestamp,
            run_id=run_id,
            origin_run_id=run_id,
            parent_run_id=None,
            seq=self._seq,
            node_kind=node_kind,
            invocation_id=invocation_id,
            parent_invocation_id=parent_invocation_id,
            owner_invocation_id=owner_invocation_id,
            attempt=attempt,
            scope=scope,
            meta=meta,
        )
        return event

    def snapshot(self) -> int:
        """The `seq` of the last event built (a durable run's checkpoint keeps it)."""
        return self._seq

    def restore(self, seq: int) -> None:
        """Continue numbering after `seq` (a resumed durable run: same run, seq goes on)."""
        self._seq = check_seed("EventFactory.restore(seq)", seq)

    def forward(
        self,
        child: Any,
        stage: str,
        parent_invocation_id: str | None,
        owner_invocation_id: str | None,
        scope: tuple[str, ...],
    ) -> E:
        """Re-emit an event of a child pipeline's stream into this one.

        `type`, `payload`, `timestamp`, `node_kind`, `invocation_id`, `attempt` and `meta` come
        from `child`; `origin_run_id` is `child.origin_run_id or child.run_id`, `parent_run_id`
        is `child.run_id`, `run_id` is the factory's and `seq` the next number; `stage`,
        `parent_invocation_id`, `owner_invocation_id` and `scope` are the arguments.
        """
        child_run_id = child.run_id
        origin_run_id = child.origin_run_id
        self._seq += 1
        event = _new(self._cls)
        event.__dict__.update(
            type=child.type,
            stage=stage,
            payload=child.payload,
            timestamp=child.timestamp,
            run_id=self._run_id,
            origin_run_id=origin_run_id or child_run_id,
            parent_run_id=child_run_id,
            seq=self._seq,
            node_kind=child.node_kind,
            invocation_id=child.invocation_id,
            parent_invocation_id=parent_invocation_id,
            owner_invocation_id=owner_invocation_id,
            attempt=child.attempt,
            scope=scope,
            meta=child.meta,
        )
        return event
