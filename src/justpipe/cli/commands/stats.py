"""``justpipe stats``: outcomes, durations, activity and recent errors over the last days.

Days are calendar days in UTC, like every time the CLI prints. Statuses and the success
rate follow the one status model (``justpipe.storage.status``, docs/statuses.md): the
rate counts only runs that ended. Sections without data are left out.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime

from justpipe.cli.formatting import EXIT_OK, format_duration, short_id
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
from justpipe.storage.status import ENDED, RunStatus, cutoff_days_ago, success_rate

__all__ = ["stats_command"]

RULE = "=" * 60
STATUS_ICONS = {
    RunStatus.RUNNING: "▶",
    RunStatus.SUSPENDED: "⏸",
    RunStatus.INTERRUPTED: "↯",
    RunStatus.SUCCESS: "✓",
    RunStatus.FAILED: "✗",
    RunStatus.TIMEOUT: "⏱",
    RunStatus.CANCELLED: "◌",
    RunStatus.CLIENT_CLOSED: "◦",
    RunStatus.DAMAGED: "?",
}
FAILURES = (RunStatus.FAILED, RunStatus.TIMEOUT)
TOP_PIPELINES = 5
RECENT_ERRORS = 3
ERROR_TEXT_WIDTH = 50
OUTLIER_FACTOR = 3
OUTLIER_MIN_RUNS = 3
"""A pipeline needs this many timed runs before one of them can be called an outlier."""
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
    cutoff = cutoff_days_ago(days, now)
    runs = [item for item in all_runs if item.run.start_time >= cutoff]
    damaged = [item for item in all_runs if item.status is RunStatus.DAMAGED]
    if not runs and not damaged:
        print(f"No runs found in the last {days} day(s)")
        return EXIT_OK
    runs = [item for item in runs if item.status is not RunStatus.DAMAGED]
    statuses = Counter(item.status for item in runs)
    # a suspended or interrupted run's duration is only its segments' so far: not a run's
    durations = [
        item.run.duration.total_seconds()
        for item in runs
        if item.run.duration is not None and item.status in ENDED
    ]
    _print_header(pipeline, days)
    print(f"\nTotal Runs:        {len(runs)}")
    _print_status_breakdown(statuses, len(runs))
    _print_success_rate(statuses)
    _print_durations(durations)
    _print_top_pipelines(runs)
    _print_daily_activity(runs, days, now.date())
    _print_recent_errors([item for item in runs if item.status in FAILURES], now)
    _print_damaged(damaged)
    print(f"\n{RULE}")
    _print_warnings(statuses, runs)
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


def _print_status_breakdown(statuses: Counter[RunStatus], total: int) -> None:
    if not total:
        return
    print("\nStatus Breakdown:")
    for status in RunStatus:
        count = statuses[status]
        if count:
            label = status.value.replace("_", " ").capitalize()
            share = _percent(count, total)
            print(f"  {STATUS_ICONS[status]} {label:<15} {count:>5} ({share:5.1f}%)")


def _print_success_rate(statuses: Counter[RunStatus]) -> None:
    """Successes among the runs that ended: the rule every tool uses."""
    succeeded, ended, rate = success_rate(statuses.elements())
    if rate is None:
        return
    print(f"\nSuccess Rate:      {rate:.1f}% ({succeeded}/{ended} that ended)")


def _print_durations(durations: list[float]) -> None:
    if not durations:
        return
    print(f"\nDuration Statistics ({len(durations)} run(s) that ended):")
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
    """One bar per day that had runs; the days without any are counted, not drawn."""
    if not runs:
        return
    per_day = Counter(item.run.start_time.astimezone(UTC).date() for item in runs)
    active = sorted((day for day in per_day if 0 <= (today - day).days < days), reverse=True)
    peak = max((per_day[day] for day in active), default=0)
    print(f"\nDaily Activity (last {days} days):")
    for day in active:
        back = (today - day).days
        label = "Today" if back == 0 else "Yesterday" if back == 1 else day.isoformat()
        count = per_day[day]
        print(f"  {label:<12} {count:>4} {'█' * _bar_length(count, peak)}")
    idle = days - len(active)
    if idle:
        print(f"  ({idle} day(s) without runs)")


def _bar_length(count: int, peak: int) -> int:
    if peak <= MAX_BAR * RUNS_PER_BAR_BLOCK:
        return max(1, count // RUNS_PER_BAR_BLOCK)
    return max(1, round(count * MAX_BAR / peak))


def _print_recent_errors(failed: list[AnnotatedRun], now: datetime) -> None:
    if not failed:
        return
    print(f"\nRecent Errors:     {len(failed)} error(s)")
    print("\nMost Recent Errors:")
    for item in failed[:RECENT_ERRORS]:
        ago = _time_ago(item.run.start_time, now)
        step = f"[{item.run.error_step}] " if item.run.error_step else ""
        print(
            f"  {short_id(item.run.run_id)}  {item.pipeline_name:<20}  "
            f"{ago:<10}{step}{_error_text(item.error)}"
        )


def _print_damaged(damaged: list[AnnotatedRun]) -> None:
    if not damaged:
        return
    print(f"\nDamaged Rows:      {len(damaged)} (not counted above: their times cannot be read)")
    for item in damaged[:RECENT_ERRORS]:
        print(f"  {short_id(item.run.run_id)}  {item.pipeline_name:<20}  {item.run.damage}")


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


def _print_warnings(statuses: Counter[RunStatus], runs: list[AnnotatedRun]) -> None:
    failures = sum(statuses[status] for status in FAILURES)
    successes = statuses[RunStatus.SUCCESS]
    if failures > successes:
        print("\nWarning: High error rate detected!")
        print(f"   {failures} errors vs {successes} successes")
    for name, slowest, average in _outliers(runs):
        print(f"\nWarning: Performance outlier in pipeline '{name}'!")
        print(f"   Slowest run: {format_duration(slowest)} vs its avg: {format_duration(average)}")


def _outliers(runs: list[AnnotatedRun]) -> list[tuple[str, float, float]]:
    """``(pipeline, slowest, average)`` for each pipeline whose slowest run took more than
    OUTLIER_FACTOR times its own average (runs of different pipelines are not compared)."""
    per_pipeline: dict[str, list[float]] = defaultdict(list)
    for item in runs:
        if item.run.duration is not None:
            per_pipeline[item.pipeline_name].append(item.run.duration.total_seconds())
    found = []
    for name, durations in per_pipeline.items():
        if len(durations) < OUTLIER_MIN_RUNS:
            continue
        average = sum(durations) / len(durations)
        if max(durations) > OUTLIER_FACTOR * average:
            found.append((name, max(durations), average))
    return found
