"""The one status model of a stored run, shared by the CLI, the dashboard and its JSON API.

A run store row says how a run *ended* (``success``, ``failed``...) or that it has not
ended yet (``running``, written when it started). That alone cannot tell a live run
from one whose process died, nor a durable run waiting for ``resume()`` from one that
finished, so every tool reads a run's status through :func:`run_status`, from the row,
its lease in the run store (is a live process still writing it?) and, for a durable
run, its checkpoint. The statuses, and which of them count as *ended*, are documented
once, in ``docs/statuses.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from justpipe.storage.segments import FINISHED, DurableRun

if TYPE_CHECKING:
    from justpipe.storage.interface import RunRecord

__all__ = [
    "ENDED",
    "RESUMABLE",
    "RunStatus",
    "cutoff_days_ago",
    "is_unfinished",
    "may_delete",
    "parse_status",
    "run_status",
    "shown_error",
    "success_rate",
]

UNFINISHED_RUN_MESSAGE = (
    "Run did not finish: no end record was stored "
    "(it is still running, or its process ended before recording the outcome)"
)
"""The error a row without an end record reads back with (``RunRecord.error_message``)."""

DIED_MESSAGE = "The process running this run died or stopped reporting before it finished"


class RunStatus(StrEnum):
    """What a stored run is doing, or how it ended, as every tool shows it."""

    RUNNING = "running"
    """Not ended; a live process holds its lease (plain runs: the run store's lease,
    durable runs: the checkpoint's)."""
    SUSPENDED = "suspended"
    """A durable run waiting for ``pipe.resume()`` (a step returned ``Suspend``)."""
    INTERRUPTED = "interrupted"
    """A durable run whose process died or whose consumer stopped: ``resume()`` goes on."""
    SUCCESS = "success"
    FAILED = "failed"
    """Ended by an error; also a plain run whose process died before recording its end."""
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    CLIENT_CLOSED = "client_closed"
    DAMAGED = "damaged"
    """A row that could not be read (e.g. a timestamp no date can hold); the reason is
    shown beside it."""


ENDED = frozenset(
    {
        RunStatus.SUCCESS,
        RunStatus.FAILED,
        RunStatus.TIMEOUT,
        RunStatus.CANCELLED,
        RunStatus.CLIENT_CLOSED,
    }
)
"""Runs that ended: the denominator of every success rate."""

RESUMABLE = frozenset({RunStatus.SUSPENDED, RunStatus.INTERRUPTED})
"""Durable runs that ``resume()`` can still continue: cleanup keeps them unless asked."""


def is_unfinished(run: RunRecord) -> bool:
    """Whether the row never got its end record (it was written when the run started)."""
    return run.end_time is None and run.error_message == UNFINISHED_RUN_MESSAGE


def run_status(run: RunRecord, liveness: str | None, durable: DurableRun | None) -> RunStatus:
    """The status of `run` given its lease state and its durable checkpoint.

    `liveness`: ``live``, ``dead`` or ``unknown`` for a row without an end record (see
    ``storage.sqlite.lease_state``), None for one that ended. `durable`: the run's
    checkpoint, None for a plain run. A durable run that has not finished shows its
    checkpoint's status (suspended, running, interrupted); every other run shows the row's
    status, except that a row without an end record is ``running`` while its lease is live
    (and ``failed`` once its process is gone).
    """
    if run.damage is not None:
        return RunStatus.DAMAGED
    if durable is not None and durable.status != FINISHED:
        return RunStatus(durable.status)
    if liveness == "live" and is_unfinished(run):
        return RunStatus.RUNNING
    return RunStatus(run.status.value)


def shown_error(run: RunRecord, status: RunStatus, liveness: str | None) -> str | None:
    """The error text to show beside `status`: none while a run goes on or waits."""
    if status is RunStatus.DAMAGED:
        return run.damage
    if status not in ENDED:
        return None
    if liveness == "dead" and is_unfinished(run):
        return DIED_MESSAGE
    return run.error_message


def success_rate(statuses: Iterable[RunStatus]) -> tuple[int, int, float | None]:
    """``(successes, ended, percent)`` over the runs that ended (``None``: none ended).

    Running, suspended, interrupted and damaged runs are left out: they have no outcome.
    """
    successes = ended = 0
    for status in statuses:
        if status in ENDED:
            ended += 1
            successes += status is RunStatus.SUCCESS
    return successes, ended, (round(successes / ended * 100, 1) if ended else None)


def may_delete(status: RunStatus, wanted: RunStatus | None, include_resumable: bool) -> bool:
    """Whether cleanup may delete a run with `status` (`wanted`: the status it was asked
    for): never a running one, a resumable one only with `include_resumable`, a damaged
    row only when asked for by status."""
    if status is RunStatus.RUNNING:
        return False
    if status in RESUMABLE:
        return include_resumable
    if status is RunStatus.DAMAGED:
        return wanted is RunStatus.DAMAGED
    return True


def parse_status(text: str) -> RunStatus:
    """The status named by `text` (any case); ``ValueError`` listing the valid ones."""
    try:
        return RunStatus(text.strip().lower())
    except ValueError:
        valid = ", ".join(status.value for status in RunStatus)
        raise ValueError(f"unknown status {text!r}: use one of {valid}") from None


def cutoff_days_ago(days: int, now: datetime | None = None) -> datetime:
    """The moment `days` days before `now`; the earliest date when that is before year 1.

    So "older than 10**11 days" matches no run instead of overflowing.
    """
    current = datetime.now(UTC) if now is None else now
    try:
        return current - timedelta(days=days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)
