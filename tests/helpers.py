"""Shared helpers for the behavioural tests: run a pipeline, read and normalise its trace.

Every run goes through `collect()`, which puts a watchdog around the whole
stream so that a hang fails the test instead of hanging the suite. Traces are
compared with `normalise()`: run ids and invocation ids become structural labels
(`R0`, `R1`, … and `I1`, `I2`, … in order of first appearance), durations become
`"D"` and the state object becomes `"<S>"`, so two runs of the same pipeline
give equal traces whatever their ids and timings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, NamedTuple, TypeVar

from justpipe import Event, EventType, Pipe
from justpipe.types import PipelineEndData

__all__ = [
    "FIX_HINTS",
    "WATCHDOG_S",
    "NormEvent",
    "assert_helpful",
    "collect",
    "drain",
    "end_data",
    "first_index",
    "index_of",
    "normalise",
    "of_type",
    "pairs",
    "root_finish",
    "run_with_watchdog",
    "shape",
    "stages",
    "types",
]

WATCHDOG_S = 10.0
T = TypeVar("T")


async def run_with_watchdog(awaitable: Awaitable[T], timeout: float = WATCHDOG_S) -> T:
    """Await `awaitable`; fail the test (instead of hanging) if it takes longer than `timeout`."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"watchdog: still running after {timeout}s (hang?)") from None


async def drain(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


async def collect(
    pipe: Pipe[Any, Any],
    state: Any = None,
    context: Any = None,
    *,
    watchdog: float = WATCHDOG_S,
    **run_kwargs: Any,
) -> list[Event]:
    """Every event of one run of `pipe` (state defaults to a fresh dict)."""
    if state is None:
        state = {}
    return await run_with_watchdog(drain(pipe.run(state, context, **run_kwargs)), watchdog)


# --------------------------------------------------------------------------- reading traces


def types(events: Iterable[Event]) -> list[EventType]:
    return [e.type for e in events]


def stages(events: Iterable[Event], etype: EventType) -> list[str]:
    return [e.stage for e in events if e.type is etype]


def pairs(events: Iterable[Event]) -> list[tuple[str, str]]:
    """`(type value, stage)` per event: the shape of a trace."""
    return [(e.type.value, e.stage) for e in events]


def of_type(events: Iterable[Event], etype: EventType) -> list[Event]:
    return [e for e in events if e.type is etype]


def index_of(events: list[Event], etype: EventType, stage: str, nth: int = 0) -> int:
    """Position of the `nth` event of that type and stage (AssertionError when absent)."""
    found = [i for i, e in enumerate(events) if e.type is etype and e.stage == stage]
    assert len(found) > nth, f"no {etype.value} #{nth} for {stage!r} in {pairs(events)}"
    return found[nth]


def first_index(events: list[Event], etype: EventType) -> int:
    for i, e in enumerate(events):
        if e.type is etype:
            return i
    raise AssertionError(f"no {etype.value} in {pairs(events)}")


def root_finish(events: list[Event]) -> Event:
    """The run's own FINISH: the last event, stage `system`, not forwarded from a child."""
    assert events, "no events"
    last = events[-1]
    assert last.type is EventType.FINISH, f"last event is not FINISH: {pairs(events)[-3:]}"
    assert last.stage == "system"
    assert last.parent_run_id is None
    roots = [e for e in events if e.type is EventType.FINISH and e.parent_run_id is None]
    assert roots == [last], "exactly one root FINISH, and it comes last"
    return last


def end_data(events: list[Event]) -> PipelineEndData:
    payload = root_finish(events).payload
    assert isinstance(payload, PipelineEndData)
    return payload


# --------------------------------------------------------------------------- normalising


class NormEvent(NamedTuple):
    type: str
    stage: str
    payload: Any
    node_kind: str
    run_id: str | None
    origin_run_id: str | None
    parent_run_id: str | None
    seq: int | None
    invocation_id: str | None
    parent_invocation_id: str | None
    owner_invocation_id: str | None
    attempt: int
    scope: tuple[str, ...]
    meta: Any


class _Labels:
    """Gives each distinct id a stable label in order of first appearance."""

    def __init__(self, prefix: str, start: int) -> None:
        self._prefix = prefix
        self._next = start
        self._seen: dict[str, str] = {}

    def __call__(self, value: str | None) -> str | None:
        if value is None:
            return None
        label = self._seen.get(value)
        if label is None:
            label = f"{self._prefix}{self._next}"
            self._next += 1
            self._seen[value] = label
        return label


def _norm_payload(payload: Any, state: Any, inv: _Labels) -> Any:
    if payload is state and state is not None:
        return "<S>"
    if isinstance(payload, PipelineEndData):
        return (
            payload.status.value,
            payload.reason.value if payload.reason is not None else None,
            payload.failure_kind.value,
            payload.failure_source.value,
            payload.failed_step,
            payload.error,
            tuple((r.kind.value, r.source.value, r.reason.value, r.step) for r in payload.errors),
        )
    if isinstance(payload, dict):
        out = dict(payload)
        if "owner_invocation_id" in out:
            out["owner_invocation_id"] = inv(out["owner_invocation_id"])
        if "duration" in out:
            out["duration"] = "D"
        return out
    return payload


def _norm_meta(meta: Any) -> Any:
    if not isinstance(meta, dict) or "framework" not in meta:
        return meta
    framework = dict(meta["framework"])
    framework["duration_s"] = "D"
    return {**meta, "framework": framework}


def normalise(events: Iterable[Event], state: Any = None) -> list[NormEvent]:
    """The trace with ids as structural labels and timings/state replaced by placeholders."""
    runs = _Labels("R", 0)
    invs = _Labels("I", 1)
    out: list[NormEvent] = []
    for e in events:
        out.append(
            NormEvent(
                type=e.type.value,
                stage=e.stage,
                payload=_norm_payload(e.payload, state, invs),
                node_kind=e.node_kind.value,
                run_id=runs(e.run_id),
                origin_run_id=runs(e.origin_run_id),
                parent_run_id=runs(e.parent_run_id),
                seq=e.seq,
                invocation_id=invs(e.invocation_id),
                parent_invocation_id=invs(e.parent_invocation_id),
                owner_invocation_id=invs(e.owner_invocation_id),
                attempt=e.attempt,
                scope=tuple(e.scope),
                meta=_norm_meta(e.meta),
            )
        )
    return out


def shape(events: Iterable[Event]) -> list[str]:
    """One line per event in the Appendix A notation: `type stage kind inv/parent/owner aN scope`.

    Ids are structural labels (`I1`, `I2` … by first appearance, `-` for none), so the
    lines compare equal across runs and backends.
    """
    lines: list[str] = []
    for e in normalise(events):
        ids = "/".join(
            x or "-" for x in (e.invocation_id, e.parent_invocation_id, e.owner_invocation_id)
        )
        scope = ",".join(e.scope)
        lines.append(f"{e.type} {e.stage} {e.node_kind} {ids} a{e.attempt} ({scope})")
    return lines


# --------------------------------------------------------------------------- error messages

FIX_HINTS = (
    "Fix",
    "fix",
    "use ",
    "Use ",
    "pass ",
    "Pass ",
    "add ",
    "Add ",
    "rename",
    "remove",
    "Remove",
    "Define",
    "define",
    "set ",
    "expected",
    "Expected",
    "e.g.",
    "Did you mean",
    "write ",
    "must ",
    "requires a",
    "requires '",
    "connect",
    "annotate",
    "Subclass",
    "Keep one",
    "Make the",
    "Install",
    "Register",
    "raise ",
)


def assert_helpful(message: str, culprit: str | None) -> None:
    """The message names the culprit (step, option or type) and tells the user what to do."""
    if culprit is not None:
        assert culprit in message, f"{culprit!r} not named in: {message}"
    assert any(hint in message for hint in FIX_HINTS), f"no fix hint in: {message}"
