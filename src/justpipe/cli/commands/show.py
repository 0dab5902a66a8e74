"""``justpipe show RUN_ID``: one run's outcome, event breakdown, step sequence and meta."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from justpipe.cli.formatting import (
    EXIT_FAILURE,
    EXIT_OK,
    format_duration,
    format_start,
    format_timestamp,
    parse_run_meta,
    resolve_or_exit,
)
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
from justpipe.storage.interface import StoredEvent
from justpipe.storage.readonly import parse_stored_json
from justpipe.storage.segments import Segment, event_dicts, segments_from_events
from justpipe.storage.status import RunStatus
from justpipe.types import EventType

__all__ = ["show_command"]

RULE = "=" * 60
ERROR_WIDTH = 160


def show_command(registry: PipelineRegistry, run_id: str) -> int:
    """Print the details of the run `run_id` names (a full id or a unique prefix)."""
    found = resolve_or_exit(registry, run_id)
    if found is None:
        return EXIT_FAILURE
    item, backend = found
    events = backend.get_events(item.run.run_id)
    _print_summary(item)
    _print_step_errors(item, events)
    if item.durable is not None:
        _print_segments(segments_from_events(event_dicts(events), item.durable))
    print(f"\nEvents: {len(events)} total")
    _print_event_breakdown(events)
    _print_step_sequence(events)
    _print_run_meta(item.run.run_meta)
    print()
    return EXIT_OK


def _print_summary(item: AnnotatedRun) -> None:
    run, durable = item.run, item.durable
    print(f"\nRun: {run.run_id}")
    print(RULE)
    print(f"Pipeline: {item.pipeline_name}")
    print(f"Status: {item.status.value}")
    if item.status is RunStatus.RUNNING and durable is None:
        print("  (a live process is executing it)")
    if durable is not None:
        print(f"Durable: segment {durable.segment}, checkpoint {durable.checkpoint_status}")
        if item.status is RunStatus.INTERRUPTED:
            print("  (its last segment did not end: resume it with pipe.resume(run_id))")
    if run.damage is not None:
        print(f"Damaged: {run.damage}")
    print(f"Started: {format_start(run)}")
    if run.end_time is not None:
        # a suspended run's row ends with its last segment: the run itself goes on
        label = "Suspended at" if item.status is RunStatus.SUSPENDED else "Ended"
        print(f"{label}: {format_timestamp(run.end_time)}")
    if run.duration is not None:
        print(f"Duration: {format_duration(run.duration.total_seconds())}")
    error = item.error
    if error and item.status is not RunStatus.DAMAGED:
        where = f" in step '{run.error_step}'" if run.error_step else ""
        print(f"\nError{where}: {error}")


def _print_step_errors(item: AnnotatedRun, events: list[StoredEvent]) -> None:
    """Each step that failed, with its error type and text; identical ones counted once.

    The run's own error (above) already names the step that ended it; this lists every
    failure, e.g. map workers that failed while the run went on.
    """
    failures = [_step_error(event) for event in events if event.event_type is EventType.STEP_ERROR]
    if not failures:
        return
    counted = Counter(failures)
    print(f"\nStep Errors: {len(failures)}")
    for (step, text), count in counted.items():
        times = f" (x{count})" if count > 1 else ""
        print(f"  {step}{times}: {text}")


def _step_error(event: StoredEvent) -> tuple[str, str]:
    """``(step, "Type: message")`` of a STEP_ERROR event, as far as it was stored."""
    data: Any = parse_stored_json(event.data)
    data = data if isinstance(data, dict) else {}
    payload = data.get("payload")
    message = " ".join(str(payload).split()) if payload is not None else "error not recorded"
    meta = data.get("meta")
    framework = meta.get("framework") if isinstance(meta, dict) else None
    kind = framework.get("error_type") if isinstance(framework, dict) else None
    text = f"{kind}: {message}" if isinstance(kind, str) and kind else message
    return event.step_name, text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 3] + "..."


def _print_segments(segments: list[Segment]) -> None:
    """One line per segment: number, start, duration, seq range, events, how it ended."""
    if not segments:
        return
    print("\nSegments:")
    print(f"  {'#':>3}  {'Started':<19}  {'Duration':>8}  {'Seq':<13}  {'Events':>6}  Ended")
    for segment in segments:
        seqs = f"{segment.first_seq}-{segment.last_seq}"
        print(
            f"  {segment.number:>3}  {format_timestamp(_utc(segment.started)):<19}  "
            f"{format_duration(segment.duration_s):>8}  {seqs:<13}  {segment.events:>6}  "
            f"{segment.describe_end()}"
        )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _print_event_breakdown(events: list[StoredEvent]) -> None:
    """Count per event type, most common first (ties in order of first appearance)."""
    if not events:
        return
    print("\nEvent Breakdown:")
    for event_type, count in Counter(event.event_type.value for event in events).most_common():
        print(f"  {event_type:<20} {count:>6,}")


def _print_step_sequence(events: list[StoredEvent]) -> None:
    """Steps in the order they started; consecutive starts of one step on one line."""
    starts = [event.step_name for event in events if event.event_type is EventType.STEP_START]
    if not starts:
        return
    print("\nStep Sequence:")
    for number, (step, group) in enumerate(groupby(starts), start=1):
        count = sum(1 for _ in group)
        print(f"  {number}. {step}" + (f" (x{count})" if count > 1 else ""))


def _print_run_meta(run_meta: str | None) -> None:
    meta = parse_run_meta(run_meta)
    if meta is None:
        return
    if not isinstance(meta, dict):
        print(f"\nUser Meta: {meta}")
        return
    print("\nUser Meta:")
    for key, value in meta.items():
        print(f"  {key}: {value}")
