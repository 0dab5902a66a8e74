"""``justpipe stats``: outcomes, durations, activity and recent errors over the last days.

Days are calendar days in UTC, like every time the CLI prints.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from justpipe.cli.formatting import EXIT_OK, format_duration, short_id
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
from justpipe.types import PipelineTerminalStatus

__all__ = ["stats_command"]

RULE = "=" * 60
STATUS_ICONS = {
    PipelineTerminalStatus.SUCCESS: "✓",
    PipelineTerminalStatus.FAILED: "✗",
    PipelineTerminalStatus.TIMEOUT: "⏱",
    PipelineTerminalStatus.CANCELLED: "◌",
    PipelineTerminalStatus.CLIENT_CLOSED: "◦",
}
TOP_PIPELINES = 5
RECENT_ERRORS = 3
ERROR_TEXT_WIDTH = 50
OUTLIER_FACTOR = 3
RUNS_PER_BAR_BLOCK = 2
MAX_BAR = 50
"""Bars are one block per two runs; a busier day scales every bar to fit MAX_BAR blocks."""


def stats_command(registry: PipelineRegistry, pipeline: str | None, days: int = 7) -> int:
    """Print statistics of the runs (of `pipeline`, or all) started in the last `days` days."""
    all_runs = registry.list_all_runs(pipeline_name=pipeline, limit=None)
    if not all_runs:
        print("No runs found")
        return EXIT_OK
    now = datetime.now(UTC)
    runs = [item for item in all_runs if item.run.start_time >= now - timedelta(days=days)]
    if not runs:
        print(f"No runs found in the last {days} day(s)")
        return EXIT_OK
    statuses = Counter(item.run.status for item in runs)
    durations = [
        item.run.duration.total_seconds() for item in runs if item.run.duration is not None
    ]
    failed = [item for item in runs if item.run.status is PipelineTerminalStatus.FAILED]
    _print_header(pipeline, days)
    print(f"\nTotal Runs:        {len(runs)}")
    _print_status_breakdown(statuses, len(runs))
    _print_success_rate(statuses, len(runs))
    _print_durations(durations)
    _print_top_pipelines(runs)
    _print_daily_activity(runs, days, now.date())
    _print_recent_errors(failed, now)
    print(f"\n{RULE}")
    _print_warnings(statuses, durations)
    print("\nUse 'justpipe list' to see recent runs")
    print("Use 'justpipe compare' to analyze performance differences")
    print()
    return EXIT_OK


def _print_header(pipeline: str | None, days: int) -> None:
    print(f"\n{RULE}")
    print(f"Pipeline Statistics: {pipeline}" if pipeline else "Overall Pipeline Statistics")
    print(f"Last {days} day(s)")
    print(RULE)


def _percent(part: int, whole: int) -> float:
    return part / whole * 100 if whole else 0.0


def _print_status_breakdown(statuses: Counter[PipelineTerminalStatus], total: int) -> None:
    print("\nStatus Breakdown:")
    for status in PipelineTerminalStatus:
        count = statuses[status]
        if count:
            label = status.value.capitalize()
            share = _percent(count, total)
            print(f"  {STATUS_ICONS[status]} {label:<15} {count:>5} ({share:5.1f}%)")


def _print_success_rate(statuses: Counter[PipelineTerminalStatus], total: int) -> None:
    """Successes among all runs, the same measure as the ``pipelines`` command's column."""
    succeeded = statuses[PipelineTerminalStatus.SUCCESS]
    print(f"\nSuccess Rate:      {_percent(succeeded, total):.1f}% ({succeeded}/{total})")


def _print_durations(durations: list[float]) -> None:
    if not durations:
        return
    print("\nDuration Statistics:")
    print(f"  Average:         {format_duration(sum(durations) / len(durations))}")
    print(f"  Minimum:         {format_duration(min(durations))}")
    print(f"  Maximum:         {format_duration(max(durations))}")
    print(f"  Total:           {format_duration(sum(durations))}")


def _print_top_pipelines(runs: list[AnnotatedRun]) -> None:
    per_pipeline = Counter(item.pipeline_name for item in runs)
    if len(per_pipeline) < 2:
        return
    print("\nTop Pipelines:")
    for name, count in per_pipeline.most_common(TOP_PIPELINES):
        print(f"  {name:<30} {count:>6} ({_percent(count, len(runs)):5.1f}%)")


def _print_daily_activity(runs: list[AnnotatedRun], days: int, today: date) -> None:
    per_day = Counter(item.run.start_time.astimezone(UTC).date() for item in runs)
    dates = [today - timedelta(days=back) for back in range(days)]
    peak = max((per_day[day] for day in dates), default=0)
    print(f"\nDaily Activity (last {days} days):")
    for back, day in enumerate(dates):
        label = "Today" if back == 0 else "Yesterday" if back == 1 else day.isoformat()
        count = per_day[day]
        print(f"  {label:<12} {count:>4} {'█' * _bar_length(count, peak)}")


def _bar_length(count: int, peak: int) -> int:
    if peak <= MAX_BAR * RUNS_PER_BAR_BLOCK:
        return count // RUNS_PER_BAR_BLOCK
    return round(count * MAX_BAR / peak)


def _print_recent_errors(failed: list[AnnotatedRun], now: datetime) -> None:
    if not failed:
        return
    print(f"\nRecent Errors:     {len(failed)} error(s)")
    print("\nMost Recent Errors:")
    for item in failed[:RECENT_ERRORS]:
        ago = _time_ago(item.run.start_time, now)
        print(
            f"  {short_id(item.run.run_id)}  {item.pipeline_name:<20}  "
            f"{ago:<10}{_error_text(item.run.error_message)}"
        )


def _error_text(message: str | None) -> str:
    """The error on one line, cut to ERROR_TEXT_WIDTH characters."""
    text = " ".join((message or "").split()) or "Unknown error"
    if len(text) > ERROR_TEXT_WIDTH:
        return text[: ERROR_TEXT_WIDTH - 3] + "..."
    return text


def _time_ago(moment: datetime, now: datetime) -> str:
    minutes = max(0, int((now - moment).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes}m ago"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}h ago"
    return f"{hours // 24}d ago"


def _print_warnings(statuses: Counter[PipelineTerminalStatus], durations: list[float]) -> None:
    failures = statuses[PipelineTerminalStatus.FAILED]
    successes = statuses[PipelineTerminalStatus.SUCCESS]
    if failures > successes:
        print("\nWarning: High error rate detected!")
        print(f"   {failures} errors vs {successes} successes")
    if durations:
        average = sum(durations) / len(durations)
        slowest = max(durations)
        if slowest > OUTLIER_FACTOR * average:
            print("\nWarning: Performance outlier detected!")
            print(f"   Slowest run: {format_duration(slowest)} vs avg: {format_duration(average)}")
