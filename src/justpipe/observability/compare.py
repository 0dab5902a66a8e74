"""compare_runs: what changed between two stored runs, step by step (spec §13.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from justpipe.storage.interface import RunRecord, StoredEvent
from justpipe.storage.readonly import parse_stored_json
from justpipe.types import EventType

__all__ = ["RunComparison", "compare_runs", "format_comparison"]

_RULE = "=" * 60
_SHOWN_ID_LENGTH = 16
_STEP_COLUMN = 30
_SIGNIFICANT_S = 0.001  # step timing changes below one millisecond are not listed

STEP_SUCCEEDED = "succeeded"
STEP_FAILED = "failed"
STEP_UNFINISHED = "unfinished"
"""Started and never ended (the run was cancelled, timed out or its process died)."""
STEP_NOT_RUN = "not run"


@dataclass
class RunComparison:
    """Differences of run 2 against run 1 (the baseline); times in seconds.

    `status1`/`status2`: each run's status as shown (``success``, ``failed``, or a status
    of the tools' model such as ``suspended``), so a change can say from what to what.

    `step_status_changes`: ``{step: (outcome in run 1, outcome in run 2)}`` for the steps
    that failed or did not finish in one run and not in the other (outcomes:
    ``succeeded``, ``failed``, ``unfinished``, ``not run``). Such a step has no
    STEP_START -> STEP_END time in the run where it failed, so `new_steps` and
    `removed_steps` (upstream's fields, kept as they were) list it; the report says what
    happened instead.

    `same_definition`: both runs come from one pipeline definition (the same pipeline
    hash), so a step missing from one run did not run there rather than being added or
    removed; the report then says "not run in run N".
    """

    run1_id: str
    run2_id: str
    pipeline1_name: str
    pipeline2_name: str
    duration_diff: float
    status_same: bool
    pipeline_same: bool
    step_timing_diff: dict[str, float]
    new_steps: list[str]
    removed_steps: list[str]
    event_count_diff: int
    status1: str | None = None
    status2: str | None = None
    step_status_changes: dict[str, tuple[str, str]] = field(default_factory=dict)
    same_definition: bool = False


def compare_runs(
    run1: RunRecord,
    events1: Sequence[StoredEvent],
    run2: RunRecord,
    events2: Sequence[StoredEvent],
    pipeline1_name: str = "",
    pipeline2_name: str = "",
) -> RunComparison:
    """Compare run 2 with run 1: duration, status, per-step time and event count.

    A step missing from one run counts as taking 0 s there. A step that failed (or did
    not finish) in one run and not in the other is listed in ``step_status_changes``.
    """
    times1 = _build_step_times(events1)
    times2 = _build_step_times(events2)
    steps = [*times1, *(step for step in times2 if step not in times1)]
    return RunComparison(
        run1_id=run1.run_id,
        run2_id=run2.run_id,
        pipeline1_name=pipeline1_name,
        pipeline2_name=pipeline2_name,
        duration_diff=_seconds(run2.duration) - _seconds(run1.duration),
        status_same=run1.status == run2.status,
        pipeline_same=pipeline1_name == pipeline2_name,
        step_timing_diff={step: times2.get(step, 0.0) - times1.get(step, 0.0) for step in steps},
        new_steps=[step for step in times2 if step not in times1],
        removed_steps=[step for step in times1 if step not in times2],
        event_count_diff=len(events2) - len(events1),
        status1=run1.status.value,
        status2=run2.status.value,
        step_status_changes=_status_changes(_step_outcomes(events1), _step_outcomes(events2)),
    )


def format_comparison(comparison: RunComparison) -> str:
    """A plain-text report of `comparison` (the CLI's ``compare`` output)."""
    c = comparison
    pipeline = c.pipeline1_name
    if not c.pipeline_same:
        pipeline = f"{c.pipeline1_name} \u2192 {c.pipeline2_name}"
    lines = [
        "Run Comparison",
        _RULE,
        "",
        f"Run 1 (baseline): {c.run1_id[:_SHOWN_ID_LENGTH]}...",
        f"Run 2 (compare):  {c.run2_id[:_SHOWN_ID_LENGTH]}...",
        "",
        f"Pipeline: {pipeline}",
        f"Status:   {_describe_status(c)}",
        "",
        f"Duration change: {_describe_duration_change(c.duration_diff)}",
        "",
    ]
    if c.step_status_changes:
        lines += ["Step Status Changes:", "", *_status_lines(c), ""]
    if c.step_timing_diff:
        changes = _step_lines(c)
        if changes:
            lines += ["Step Timing Differences:", "", *changes, ""]
        else:
            lines += ["Step Timing Differences: none of 1 ms or more", ""]
    lines.append(f"Event Count Difference: {c.event_count_diff:+d} events")
    return "\n".join(lines)


def _describe_status(c: RunComparison) -> str:
    if c.status_same:
        return "same"
    if c.status1 is None or c.status2 is None:
        return "changed"
    return f"changed ({c.status1} \u2192 {c.status2})"


def _describe_duration_change(diff: float) -> str:
    if diff == 0:
        return "none"
    return f"{diff:+.3f}s ({'slower' if diff > 0 else 'faster'})"


def _status_lines(c: RunComparison) -> list[str]:
    return [
        f"  ! {step:<{_STEP_COLUMN}} {before} \u2192 {after}"
        for step, (before, after) in c.step_status_changes.items()
    ]


def _step_lines(c: RunComparison) -> list[str]:
    """Biggest changes first (ties keep run order); sub-millisecond changes left out.

    Steps listed under their status change are not repeated as new or removed.
    """
    new, removed = set(c.new_steps), set(c.removed_steps)
    added = "(not run in run 1)" if c.same_definition else "(new step)"
    dropped = "(not run in run 2)" if c.same_definition else "(removed)"
    ordered = sorted(c.step_timing_diff.items(), key=lambda item: -abs(item[1]))
    lines = []
    for step, diff in ordered:
        if step in c.step_status_changes and (step in new or step in removed):
            continue
        if step in new:
            lines.append(f"  + {step:<{_STEP_COLUMN}} {added}")
        elif step in removed:
            lines.append(f"  - {step:<{_STEP_COLUMN}} {dropped}")
        elif abs(diff) >= _SIGNIFICANT_S:
            lines.append(f"  ~ {step:<{_STEP_COLUMN}} {diff:+.3f}s")
    return lines


def _build_step_times(events: Sequence[StoredEvent]) -> dict[str, float]:
    """Seconds per step name from STEP_START -> STEP_END pairs (the last pair wins).

    Starts and ends are paired per invocation (the ``invocation_id`` in the stored
    event JSON), so concurrent map workers of one step do not overwrite each other's
    start; events without an id pair up per step name.
    """
    open_starts: dict[str, float] = {}
    times: dict[str, float] = {}
    for event in events:
        if event.event_type is EventType.STEP_START:
            open_starts[_invocation_key(event)] = event.timestamp.timestamp()
        elif event.event_type is EventType.STEP_END:
            started = open_starts.pop(_invocation_key(event), None)
            if started is not None:
                times[event.step_name] = event.timestamp.timestamp() - started
    return times


def _step_outcomes(events: Sequence[StoredEvent]) -> dict[str, str]:
    """How each step that started went, in first-start order: ``failed`` when any of its
    invocations raised (STEP_ERROR), else ``succeeded`` when one ended, else
    ``unfinished``."""
    outcomes: dict[str, str] = {}
    for event in events:
        step, kind = event.step_name, event.event_type
        if kind is EventType.STEP_ERROR:
            outcomes[step] = STEP_FAILED
        elif kind is EventType.STEP_END and outcomes.get(step) != STEP_FAILED:
            outcomes[step] = STEP_SUCCEEDED
        elif kind is EventType.STEP_START:
            outcomes.setdefault(step, STEP_UNFINISHED)
    return outcomes


def _status_changes(
    outcomes1: dict[str, str], outcomes2: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """Steps that failed or did not finish in one run and not in the other."""
    changes: dict[str, tuple[str, str]] = {}
    for step in [*outcomes1, *(name for name in outcomes2 if name not in outcomes1)]:
        pair = (outcomes1.get(step, STEP_NOT_RUN), outcomes2.get(step, STEP_NOT_RUN))
        troubled = {STEP_FAILED, STEP_UNFINISHED}.intersection(pair)
        if pair[0] != pair[1] and troubled:
            changes[step] = pair
    return changes


def _invocation_key(event: StoredEvent) -> str:
    data = parse_stored_json(event.data)
    invocation_id = data.get("invocation_id") if isinstance(data, dict) else None
    return invocation_id if isinstance(invocation_id, str) else event.step_name


def _seconds(duration: timedelta | float | None) -> float:
    if isinstance(duration, timedelta):
        return duration.total_seconds()
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return float(duration)
    return 0.0
