"""The control channel's records: their one definition, and the builders that make them.

Records are plain tuples (a tuple literal is the cheapest object Python builds, and
the compiled dispatcher unpacks it straight into `EventFactory.build`), told apart
by length. This module is the only place that writes their layout; everything else
builds them through the functions below, so a swapped field does not type-check.

  EVENT_LEN (11)  an event of this run: `EVENT_FIELDS`, the parameters of
                  `_core.EventFactory.build` in order (a test holds both twins to it)
  FORWARD_LEN (5) an event of a sub-pipeline's stream, re-stamped into this run:
                  (child event, stage, parent invocation, owner invocation, scope)
  DONE_LEN (3)    a completion: (invocation, outcome, value)
  0 / 1           the markers START_ROOTS and FINISH_MARK

The lengths are also the `_core` dispatchers' (`_core._dispatch_py`), which tell the
records apart without a tag.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from justpipe.types import Event, EventType, NodeKind, StepStatus

if TYPE_CHECKING:
    from justpipe._kernel.context import _Invocation
    from justpipe._kernel.outcomes import Outcome

__all__ = [
    "DONE_LEN",
    "EVENT_FIELDS",
    "EVENT_LEN",
    "FINISH_MARK",
    "FORWARD_LEN",
    "START_ROOTS",
    "Completion",
    "EventRecord",
    "ForwardRecord",
    "completion",
    "event_record",
    "forward_record",
    "invocation_meta",
    "map_worker_record",
    "step_record",
    "system_record",
]

EVENT_FIELDS = (
    "type",
    "stage",
    "payload",
    "timestamp",
    "node_kind",
    "invocation_id",
    "parent_invocation_id",
    "owner_invocation_id",
    "attempt",
    "scope",
    "meta",
)
EVENT_LEN, FORWARD_LEN, DONE_LEN = len(EVENT_FIELDS), 5, 3

EventRecord = tuple[
    EventType,  # type
    str,  # stage
    Any,  # payload
    float,  # timestamp
    NodeKind,  # node_kind
    "str | None",  # invocation_id
    "str | None",  # parent_invocation_id
    "str | None",  # owner_invocation_id
    int,  # attempt
    tuple[str, ...],  # scope
    "dict[str, Any] | None",  # meta
]
ForwardRecord = tuple[Event, str, "str | None", "str | None", tuple[str, ...]]
Completion = tuple["_Invocation", "Outcome", Any]

START_ROOTS: tuple[()] = ()  # schedule the roots (queued right after START)
FINISH_MARK: tuple[None] = (None,)  # publish FINISH (queued after the shutdown hooks)

# Hot-path aliases: a module global costs ~30 ns to read, an enum member's class attribute
# ~200 ns on 3.11 (timeit, docs/performance.md); only names read per event or per step.
_time = time.time
_SYSTEM = NodeKind.SYSTEM


def event_record(
    etype: EventType,
    stage: str,
    payload: Any,
    kind: NodeKind,
    invocation_id: str | None,
    parent_invocation_id: str | None,
    owner_invocation_id: str | None,
    attempt: int,
    scope: tuple[str, ...],
    meta: dict[str, Any] | None,
) -> EventRecord:
    """Any event record, every field given (the timestamp is now)."""
    return (
        etype,
        stage,
        payload,
        _time(),
        kind,
        invocation_id,
        parent_invocation_id,
        owner_invocation_id,
        attempt,
        scope,
        meta,
    )


def step_record(
    etype: EventType,
    inv: _Invocation,
    payload: Any = None,
    meta: dict[str, Any] | None = None,
) -> EventRecord:
    """An event of invocation `inv`, carrying its stage, kind, ids, attempt and scope."""
    return (
        etype,
        inv.name,
        payload,
        _time(),
        inv.kind,
        inv.inv_id,
        inv.parent_id,
        inv.owner_id,
        inv.attempt,
        inv.scope,
        meta,
    )


def map_worker_record(
    inv: _Invocation, target: str, owner: str, index: int, total: int | None
) -> EventRecord:
    """MAP_WORKER for item `index` of map invocation `inv` (`total`: None for a lazy map)."""
    return (
        EventType.MAP_WORKER,
        f"{target}[{index}]",
        {"index": index, "total": total, "target": target, "owner": owner},
        _time(),
        NodeKind.MAP,
        inv.inv_id,
        inv.parent_id,
        inv.owner_id,
        inv.attempt,
        inv.scope,
        None,
    )


def system_record(
    etype: EventType, stage: str, payload: Any, kind: NodeKind = _SYSTEM
) -> EventRecord:
    """An event that belongs to no invocation (run events, tokens, barriers)."""
    return (etype, stage, payload, _time(), kind, None, None, None, 1, (), None)


def forward_record(
    child: Event,
    stage: str,
    parent_invocation_id: str | None,
    owner_invocation_id: str | None,
    scope: tuple[str, ...],
) -> ForwardRecord:
    """A sub-pipeline's event, to be re-stamped into this run's stream."""
    return (child, stage, parent_invocation_id, owner_invocation_id, scope)


def completion(inv: _Invocation, outcome: Outcome, value: Any) -> Completion:
    """An invocation's result, handed to the orchestrator after its events."""
    return (inv, outcome, value)


def invocation_meta(
    inv: _Invocation, duration_s: float, scoped: dict[str, Any] | None, status: StepStatus
) -> dict[str, Any] | None:
    """The `meta` of an invocation's STEP_END / STEP_ERROR: its step meta plus `framework`."""
    if inv.inv_id is None or (inv.kind is NodeKind.SUB and status is StepStatus.SUCCESS):
        return None  # barrier-timeout errors and sub owners carry no step meta
    meta: dict[str, Any] = scoped if scoped is not None else {}
    framework = meta["framework"] = {
        "duration_s": round(duration_s, 6),
        "attempt": inv.attempt,
        "status": status,
    }
    placement = inv.placement
    if placement is not None:  # offloaded: which executor and worker ran it
        framework["executor"] = placement.executor
        framework["worker"] = placement.worker
    return meta
