"""``justpipe show RUN_ID``: one run's outcome, event breakdown, step sequence and meta."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from justpipe.cli.formatting import (
    EXIT_FAILURE,
    EXIT_OK,
    format_duration,
    format_timestamp,
    parse_run_meta,
    resolve_or_exit,
)
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
from justpipe.storage.interface import StoredEvent
from justpipe.storage.segments import (
    INTERRUPTED,
    DurableRun,
    Segment,
    durable_label,
    event_dicts,
    segments_from_events,
)
from justpipe.types import EventType

__all__ = ["show_command"]

RULE = "=" * 60


def show_command(registry: PipelineRegistry, run_id: str) -> int:
    """Print the details of the run `run_id` names (a full id or a unique prefix)."""
    found = resolve_or_exit(registry, run_id)
    if found is None:
        return EXIT_FAILURE
    item, backend = found
    events = backend.get_events(item.run.run_id)
    durable = registry.durable_of(item)
    _print_summary(item, durable)
    if durable is not None:
        _print_segments(segments_from_events(event_dicts(events), durable))
    print(f"\nEvents: {len(events)} total")
    _print_event_breakdown(events)
    _print_step_sequence(events)
    _print_run_meta(item.run.run_meta)
    print()
    return EXIT_OK


def _print_summary(item: AnnotatedRun, durable: DurableRun | None = None) -> None:
    run = item.run
    print(f"\nRun: {run.run_id}")
    print(RULE)
    print(f"Pipeline: {item.pipeline_name}")
    print(f"Status: {durable_label(run.status.value, durable)}")
    if durable is not None:
        print(f"Durable: segment {durable.segment}, checkpoint {durable.checkpoint_status}")
        if durable.status == INTERRUPTED:
            print("  (its last segment did not end: resume it with pipe.resume(run_id))")
    print(f"Started: {format_timestamp(run.start_time)}")
    if run.end_time is not None:
        print(f"Ended: {format_timestamp(run.end_time)}")
    if run.duration is not None:
        print(f"Duration: {format_duration(run.duration.total_seconds())}")
    if run.error_message:
        print(f"\nError: {run.error_message}")


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
    starts = [event.step_name for event in events if event.event_type is EventType.STEP_START]
    if not starts:
        return
    print("\nStep Sequence:")
    for number, step in enumerate(starts, start=1):
        print(f"  {number}. {step}")


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
