"""``justpipe list``: recent runs across pipelines, as a table."""

from __future__ import annotations

from justpipe.cli import formatting
from justpipe.cli.formatting import (
    EXIT_OK,
    format_duration,
    format_label,
    format_start,
    rich_cell,
    rich_console,
    short_id,
)
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
from justpipe.storage.status import RunStatus
from justpipe.types import PipelineTerminalStatus

__all__ = ["list_command"]

FULL_ID_WIDTH = 34
SHORT_ID_WIDTH = 15
RULE_OVERHANG = 6
"""The rule under the plain header is this much longer than the header (upstream layout)."""


def list_command(
    registry: PipelineRegistry,
    pipeline: str | None,
    status: PipelineTerminalStatus | RunStatus | str | None,
    limit: int,
    full: bool,
) -> int:
    """Print up to `limit` runs, newest first, optionally filtered by pipeline and status.

    `status`: any status of the model (``running``, ``suspended``, ``interrupted``, how a
    run ended, ``damaged``), as every tool shows it.
    """
    runs = registry.list_all_runs(pipeline_name=pipeline, status=status, limit=limit)
    if not runs:
        print("No runs found")
        return EXIT_OK
    if formatting.HAS_RICH:
        _print_rich_table(runs, full)
    else:
        _print_plain_table(runs, full)
    _print_damage(runs)
    print(f"\nShowing {len(runs)} run(s)")
    if len(runs) >= limit:
        print(f"(Limited to {limit}, use --limit to show more)")
    if not full:
        print("\nTip: Use run ID prefix (min 4 chars) in other commands")
        print(f"   Example: justpipe show {runs[0].run.run_id[:8]}")
    return EXIT_OK


def _display_id(run_id: str, full: bool) -> str:
    return run_id if full else short_id(run_id) + "..."


def _duration_seconds(item: AnnotatedRun) -> float | None:
    duration = item.run.duration
    return None if duration is None else duration.total_seconds()


def _print_damage(runs: list[AnnotatedRun]) -> None:
    """Say what is wrong with each damaged row the table shows."""
    damaged = [item for item in runs if item.run.damage is not None]
    if damaged:
        print("\nDamaged rows (shown as far as they could be read):")
    for item in damaged:
        print(f"  {short_id(item.run.run_id)}  {item.pipeline_name}: {item.run.damage}")


def _print_rich_table(runs: list[AnnotatedRun], full: bool) -> None:
    from rich.table import Table

    table = Table(show_header=True, header_style="bold magenta")
    table.add_column("Run ID", style="cyan", no_wrap=full)
    table.add_column("Pipeline", style="green")
    table.add_column("Status")
    table.add_column("Started", style="dim")
    table.add_column("Duration", justify="right")
    for item in runs:
        table.add_row(
            rich_cell(_display_id(item.run.run_id, full)),
            rich_cell(item.pipeline_name),
            format_label(item.status),
            format_start(item.run),
            format_duration(_duration_seconds(item)),
        )
    rich_console().print(table)


def _print_plain_table(runs: list[AnnotatedRun], full: bool) -> None:
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
            f"{item.status.value:<14} "
            f"{format_start(item.run):<20} "
            f"{format_duration(_duration_seconds(item)):>10}"
        )
