"""A pipeline's runs paged, counted and summed in its store, not loaded whole.

The dashboard's list pages (every pipeline's summary, a pipeline's runs with status
filters and pages, its statistics) and ``justpipe list --status`` read through here. A
store with a `storage.listing.RunListing` (``backend.listing()``: SQLite and PostgreSQL)
answers for its *settled* rows in SQL; its few *unsettled* rows (still going, durable and
waiting, unreadable) are read whole and given their status in Python
(`PipelineRegistry.annotate`), then merged in. Any other store is read whole.

Merging a page: settled rows come from SQL newest first; the `u` unsettled rows that
match are known, with their start times. Page ``[a, b)`` of the merged list needs at most
the settled rows ``[a - u, b)``: the rows before them cannot reach the page, as at most
`u` unsettled rows come before any settled one. Settled rows sort before unsettled ones
that started at the same moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from justpipe.cli.registry import AnnotatedRun, PipelineInfo, PipelineRegistry
from justpipe.storage.interface import StorageBackend
from justpipe.storage.listing import RunListing
from justpipe.storage.status import ENDED, RunStatus

__all__ = ["RunsSummary", "Window", "runs_page", "summary", "window"]

FAILURES = (RunStatus.FAILED, RunStatus.TIMEOUT)
"""Statuses the statistics count as failures."""
RECENT_FAILURES = 10
TREND_RUNS = 500
"""The duration trend shows this many of the window's newest runs (with a duration)."""


@dataclass
class RunsSummary:
    """How many runs of each status a pipeline has, their durations, its newest run."""

    statuses: Counter[RunStatus] = field(default_factory=Counter)
    durations: int = 0
    duration_sum: float = 0.0
    duration_min: float | None = None
    duration_max: float | None = None
    newest: AnnotatedRun | None = None

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def add_duration(self, count: int, total: float, low: float | None, high: float | None) -> None:
        self.durations += count
        self.duration_sum += total
        if low is not None:
            self.duration_min = low if self.duration_min is None else min(self.duration_min, low)
        if high is not None:
            self.duration_max = high if self.duration_max is None else max(self.duration_max, high)

    def add_run(self, item: AnnotatedRun) -> None:
        self.statuses[item.status] += 1
        duration = item.run.duration
        if duration is not None:
            seconds = duration.total_seconds()
            self.add_duration(1, seconds, seconds, seconds)


@dataclass
class Window(RunsSummary):
    """A pipeline's runs since a moment (damaged rows left out), for its statistics."""

    daily: dict[str, Counter[RunStatus]] = field(default_factory=dict)
    failing_steps: Counter[str | None] = field(default_factory=Counter)
    recent_failures: list[AnnotatedRun] = field(default_factory=list)
    trend: list[AnnotatedRun] = field(default_factory=list)
    """The newest `TREND_RUNS` runs with a duration, newest first."""


def runs_page(
    registry: PipelineRegistry,
    info: PipelineInfo,
    wanted: set[RunStatus] | None,
    limit: int,
    offset: int,
) -> tuple[list[AnnotatedRun], int]:
    """Runs ``[offset, offset + limit)`` of the pipeline (those with a status in `wanted`,
    or all), newest first, and how many match in total (``StoreError`` raised)."""
    backend = registry.get_backend(info.hash)
    listing = _listing(backend)
    if listing is None:
        everything = registry.runs_of(info)
        matching = [item for item in everything if not wanted or item.status in wanted]
        return matching[offset : offset + limit], len(matching)
    unsettled = [
        item for item in _unsettled(registry, info, backend, listing)
        if not wanted or item.status in wanted
    ]  # fmt: skip
    statuses = None if not wanted else [status.value for status in wanted if status in ENDED]
    total = listing.count(statuses) + len(unsettled)
    start = max(0, offset - len(unsettled))
    settled = listing.runs(statuses, offset + limit - start, start)
    if start > 0 and not settled:
        return [], total  # beyond the last run
    before = 0
    if start > 0:
        first = _key(settled[0].start_time)
        before = sum(1 for item in unsettled if _key(item.run.start_time) > first)
        unsettled = unsettled[before:]
    merged = _merge(registry.annotate(info, backend, settled), unsettled)
    skip = offset - (start + before)
    return merged[skip : skip + limit], total


def summary(registry: PipelineRegistry, info: PipelineInfo) -> RunsSummary:
    """Every run of the pipeline counted by status, with durations and the newest run."""
    backend = registry.get_backend(info.hash)
    listing = _listing(backend)
    result = RunsSummary()
    if listing is None:
        everything = registry.runs_of(info)
        for item in everything:
            result.add_run(item)
        result.newest = everything[0] if everything else None
        return result
    unsettled = _unsettled(registry, info, backend, listing)
    for status, totals in listing.totals().items():
        result.statuses[RunStatus(status)] += totals.count
        result.add_duration(
            totals.durations, totals.duration_sum, totals.duration_min, totals.duration_max
        )
    for item in unsettled:
        result.add_run(item)
    newest = registry.annotate(info, backend, listing.runs(None, 1, 0))
    merged = _merge(newest, unsettled[:1])
    result.newest = merged[0] if merged else None
    return result


def window(registry: PipelineRegistry, info: PipelineInfo, since: datetime) -> Window:
    """The pipeline's runs started at `since` or later, damaged rows left out, summed up."""
    backend = registry.get_backend(info.hash)
    listing = _listing(backend)
    result = Window()
    if listing is None:
        runs = [
            item
            for item in registry.runs_of(info)
            if item.run.start_time >= since and item.status is not RunStatus.DAMAGED
        ]
        _add_runs(result, runs, runs)
        return result
    moment = since.timestamp()
    unsettled = [
        item for item in _unsettled(registry, info, backend, listing)
        if item.run.start_time >= since and item.status is not RunStatus.DAMAGED
    ]  # fmt: skip
    for status, totals in listing.totals(moment).items():
        result.statuses[RunStatus(status)] += totals.count
        result.add_duration(
            totals.durations, totals.duration_sum, totals.duration_min, totals.duration_max
        )
    for day, status, count in listing.daily(moment):
        result.daily.setdefault(day, Counter())[RunStatus(status)] += count
    failures = [status.value for status in FAILURES]
    for step, count in listing.failing_steps(failures, moment):
        result.failing_steps[step] += count
    failed = listing.runs(failures, RECENT_FAILURES, 0, moment)
    timed = listing.runs(None, TREND_RUNS, 0, moment, with_duration=True)
    _add_runs(
        result,
        unsettled,
        _merge(registry.annotate(info, backend, failed), unsettled),
        _merge(registry.annotate(info, backend, timed), unsettled),
    )
    return result


def _add_runs(
    result: Window,
    runs: Sequence[AnnotatedRun],
    failures_from: Iterable[AnnotatedRun],
    trend_from: Iterable[AnnotatedRun] | None = None,
) -> None:
    """Count `runs` in (statuses, durations, days, failing steps); take the recent
    failures from `failures_from` and the trend from `trend_from` (both newest first)."""
    for item in runs:
        result.add_run(item)
        day = item.run.start_time.date().isoformat()
        result.daily.setdefault(day, Counter())[item.status] += 1
        if item.status in FAILURES:
            result.failing_steps[item.run.error_step] += 1
    result.recent_failures = [i for i in failures_from if i.status in FAILURES][:RECENT_FAILURES]
    timed = trend_from if trend_from is not None else failures_from
    result.trend = [i for i in timed if i.run.duration is not None][:TREND_RUNS]


def _unsettled(
    registry: PipelineRegistry, info: PipelineInfo, backend: StorageBackend, listing: RunListing
) -> list[AnnotatedRun]:
    """The unsettled runs with their status, newest first (an unreadable start: last)."""
    items = registry.annotate(info, backend, listing.unsettled())
    items.sort(key=lambda item: _key(item.run.start_time), reverse=True)
    return items


def _listing(backend: StorageBackend) -> RunListing | None:
    make = getattr(backend, "listing", None)
    return make() if callable(make) else None


def _key(moment: datetime) -> float:
    return moment.timestamp()


def _merge(settled: list[AnnotatedRun], unsettled: list[AnnotatedRun]) -> list[AnnotatedRun]:
    """Two newest-first lists as one; a settled run first when both started at once."""
    merged: list[AnnotatedRun] = []
    i = j = 0
    while i < len(settled) and j < len(unsettled):
        if _key(settled[i].run.start_time) >= _key(unsettled[j].run.start_time):
            merged.append(settled[i])
            i += 1
        else:
            merged.append(unsettled[j])
            j += 1
    return merged + settled[i:] + unsettled[j:]
