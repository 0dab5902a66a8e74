"""``justpipe list``: recent runs across pipelines, as a table."""

from __future__ import annotations

from justpipe.cli import formatting
from justpipe.cli.formatting import (
    EXIT_OK,
    format_duration,
    format_label,
    format_status,
    format_timestamp,
    short_id,
)
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
from justpipe.storage.segments import durable_label
from justpipe.types import PipelineTerminalStatus

__all__ = ["list_command"]

FULL_ID_WIDTH = 34
SHORT_ID_WIDTH = 15
RULE_OVERHANG = 6
"""The rule under the plain header is this much longer than the header (upstream layout)."""


def list_command(
    registry: PipelineRegistry,
    pipeline: str | None,
    status: PipelineTerminalStatus | str | None,
    limit: int,
    full: bool,
) -> int:
    """Print up to `limit` runs, newest first, optionally filtered by pipeline and status.

    `status` a str: a durable run's state (``suspended``, ``interrupted``, ``running``),
    which the run store's status column does not hold: every run is read and labelled.
    """
    if isinstance(status, str):
        every = registry.list_all_runs(pipeline_name=pipeline, limit=None)
        labels = _durable_labels(registry, every)
        runs = [item for item in every if labels.get(item.run.run_id) == status][:limit]
    else:
        runs = registry.list_all_runs(pipeline_name=pipeline, status=status, limit=limit)
        labels = _durable_labels(registry, runs)
    if isinstance(status, PipelineTerminalStatus):  # a suspended run is stored `success`
        runs = [item for item in runs if labels.get(item.run.run_id, status.value) == status.value]
    if not runs:
        print("No runs found")
        return EXIT_OK
    if formatting.HAS_RICH:
        _print_rich_table(runs, full, labels)
    else:
        _print_plain_table(runs, full, labels)
    print(f"\nShowing {len(runs)} run(s)")
    if len(runs) >= limit:
        print(f"(Limited to {limit}, use --limit to show more)")
    if not full:
        print("\nTip: Use run ID prefix (min 4 chars) in other commands")
        print(f"   Example: justpipe show {runs[0].run.run_id[:8]}")
    return EXIT_OK


def _durable_labels(registry: PipelineRegistry, runs: list[AnnotatedRun]) -> dict[str, str]:
    """The status to show for each durable run (``suspended``, ``interrupted``...)."""
    by_pipeline: dict[str, list[AnnotatedRun]] = {}
    for item in runs:
        by_pipeline.setdefault(item.pipeline_hash, []).append(item)
    labels: dict[str, str] = {}
    for pipeline_hash, items in by_pipeline.items():
        found = registry.durable_runs(pipeline_hash, [item.run.run_id for item in items])
        for item in items:
            durable = found.get(item.run.run_id)
            if durable is not None:
                labels[item.run.run_id] = durable_label(item.run.status.value, durable)
    return labels


def _display_id(run_id: str, full: bool) -> str:
    return run_id if full else short_id(run_id) + "..."


def _duration_seconds(item: AnnotatedRun) -> float | None:
    duration = item.run.duration
    return None if duration is None else duration.total_seconds()


def _print_rich_table(runs: list[AnnotatedRun], full: bool, labels: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold magenta")
    table.add_column("Run ID", style="cyan", no_wrap=full)
    table.add_column("Pipeline", style="green")
    table.add_column("Status")
    table.add_column("Started", style="dim")
    table.add_column("Duration", justify="right")
    for item in runs:
        table.add_row(
            _display_id(item.run.run_id, full),
            item.pipeline_name,
            _rich_status(item, labels),
            format_timestamp(item.run.start_time),
            format_duration(_duration_seconds(item)),
        )
    Console().print(table)


def _rich_status(item: AnnotatedRun, labels: dict[str, str]) -> str:
    label = labels.get(item.run.run_id)
    return format_status(item.run.status) if label is None else format_label(label)


def _print_plain_table(runs: list[AnnotatedRun], full: bool, labels: dict[str, str]) -> None:
    id_width = FULL_ID_WIDTH if full else SHORT_ID_WIDTH
    header = (
        f"{'Run ID':<{id_width}} {'Pipeline':<20} {'Status':<14} {'Started':<20} {'Duration':>10}"
    )
    print(header)
    print("-" * (len(header) + RULE_OVERHANG))
    for item in runs:
        print(
            f"{_display_id(item.run.run_id, full):<{id_width}} "
            f"{item.pipeline_name[:20]:<20} "
            f"{labels.get(item.run.run_id, item.run.status.value):<14} "
            f"{format_timestamp(item.run.start_time):<20} "
            f"{format_duration(_duration_seconds(item)):>10}"
        )
