"""How an invocation ended (`Outcome`), and the return-value table that decides it.

A step's return value is interpreted as the contract's table says (§9.3): None goes
on, a step name routes, `Stop`/`Suspend` stop the run, `Skip` suppresses the
successors, `Retry` runs a new attempt, `Raise` fails; anything else is ignored
with a warning. The orchestrator reads the outcome of each completion to decide
what runs next.
"""

from __future__ import annotations

import warnings
from enum import IntEnum
from typing import Any

from justpipe.types import Raise, Retry, Skip, Stop, Suspend, _Next

__all__ = [
    "ENDS_NORMALLY",
    "ChildSuspended",
    "Outcome",
    "ignored_value_warning",
    "interpret",
    "is_control",
]


class Outcome(IntEnum):
    OK = 0  # went on: the static successors run
    ROUTE = 1  # returned a step (name): that step runs
    STOP = 2  # Stop: the run stops (successors do not run)
    SKIP = 3  # Skip: this invocation's successors do not run
    FAIL = 4  # reported as STEP_ERROR
    CANCELLED = 5  # PipelineCancelled: reported as CANCELLED, the run stops
    SUSPEND = 6  # Suspend: SUSPEND is published, the run stops
    RETRY = 7  # Retry (or a handler's): a new attempt runs in the same task
    RAISE = 8  # Raise, or retries exhausted: the error is final (→ FAIL or CANCELLED)
    MAP_FED = 9  # a map's feeder handed out its last item (value: the map's bookkeeping)
    DROPPED = 10  # nothing follows (a retry refused while stopping, a timed-out join)
    FEEDING = 11  # a map handed its items to its feeder, whose MAP_FED completes it later


# outcomes after which the invocation publishes its STEP_END
ENDS_NORMALLY = frozenset({Outcome.OK, Outcome.ROUTE, Outcome.STOP, Outcome.SKIP, Outcome.SUSPEND})


class ChildSuspended:
    """The SUSPEND value of a durable run's sub-pipeline step whose child run suspended.

    The child's own SUSPEND event was forwarded already; the step publishes none of its
    own, and the parent's checkpoint keeps the child's to resume it inside the step.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_OK = Outcome.OK  # read per step (a global, not an enum attribute lookup)


_CONTROL_TYPES = (str, _Next, Stop, Suspend, Skip, Retry, Raise)


def is_control(result: Any) -> bool:
    """Whether a step's return value is one the table acts on (not data for `on_result=`)."""
    return result is Stop or isinstance(result, _CONTROL_TYPES)


def interpret(name: str, result: Any, error: BaseException | None) -> tuple[Outcome, Any]:
    """Apply the return-value table (§9.3) to what step (or handler) `name` returned."""
    if result is None:
        return _OK, None
    if isinstance(result, str):
        return Outcome.ROUTE, result
    if isinstance(result, _Next):
        return (Outcome.ROUTE, result.target) if result.target is not None else (_OK, None)
    if result is Stop or isinstance(result, Stop):
        return Outcome.STOP, None
    if isinstance(result, Suspend):
        return Outcome.SUSPEND, result
    if isinstance(result, Skip):
        return Outcome.SKIP, None
    if isinstance(result, Retry):
        return Outcome.RETRY, None
    if isinstance(result, Raise):
        return Outcome.RAISE, result.exception or error or RuntimeError(
            f"Step '{name}' returned Raise() without an exception."
        )
    ignored_value_warning(name, result)
    return _OK, None


def ignored_value_warning(name: str, result: Any) -> None:
    warnings.warn(
        f"Step '{name}' returned {type(result).__name__} ({_short(result)}), which will "
        "be ignored. A step may return a step name (str), Stop, Suspend, Skip or Retry. "
        "To pass data, mutate state or the context; to stream, yield.",
        UserWarning,
        stacklevel=3,
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
