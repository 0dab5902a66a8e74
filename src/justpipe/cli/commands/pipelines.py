"""``justpipe pipelines``: every pipeline with stored runs, and how it has been doing."""

from __future__ import annotations

from dataclasses import dataclass

from justpipe.cli import formatting
from justpipe.cli.formatting import EXIT_OK, format_timestamp, rich_cell, rich_console
from justpipe.cli.paging import summary
from justpipe.cli.registry import PipelineInfo, PipelineRegistry, StoreError
from justpipe.storage.status import success_rate

__all__ = ["pipelines_command"]


@dataclass(frozen=True)
class _PipelineRow:
    name: str
    hash: str
    runs: int
    last_run: str
    success_rate: str


def pipelines_command(registry: PipelineRegistry) -> int:
    """Print one row per pipeline: name, hash, run count, last run, success rate."""
    infos = registry.list_pipelines()
    rows = [row for info in infos if (row := _summarise(registry, info)) is not None]
    if not rows:
        print("No pipelines found")
        return EXIT_OK
    if formatting.HAS_RICH:
        _print_rich_table(rows)
    else:
        _print_plain_table(rows)
    for info in infos:
        if info.damage is not None:
            print(f"\nNote: pipeline {info.hash} is named by its hash: {info.damage}")
    print(f"\n{len(rows)} pipeline(s) found")
    return EXIT_OK


def _summarise(registry: PipelineRegistry, info: PipelineInfo) -> _PipelineRow | None:
    """The row for one pipeline, or None (recorded as a problem) if its store is unreadable."""
    try:
        counted = summary(registry, info)  # counted in the store, not read whole
    except StoreError as exc:
        registry.note_problem(info, exc)
        return None
    if not counted.total:
        return _PipelineRow(info.name, info.hash, 0, "-", "-")
    _, _, rate = success_rate(counted.statuses.elements())
    newest = counted.newest  # (a row whose start cannot be read sorts last)
    readable = newest is not None and newest.run.damage is None
    return _PipelineRow(
        name=info.name,
        hash=info.hash[:16],
        runs=counted.total,
        last_run=format_timestamp(newest.run.start_time) if newest and readable else "?",
        success_rate="-" if rate is None else f"{rate:.1f}%",
    )


def _print_rich_table(rows: list[_PipelineRow]) -> None:
    from rich.table import Table

    table = Table(show_header=True, header_style="bold magenta")
    table.add_column("Pipeline", style="green")
    table.add_column("Hash", style="cyan")
    table.add_column("Runs", justify="right")
    table.add_column("Last Run", style="dim")
    table.add_column("Success Rate", justify="right")
    for row in rows:
        table.add_row(
            rich_cell(row.name), rich_cell(row.hash), str(row.runs), row.last_run, row.success_rate
        )
    rich_console().print(table)


def _print_plain_table(rows: list[_PipelineRow]) -> None:
    header = f"{'Pipeline':<30} {'Hash':<18} {'Runs':>5}  {'Last Run':<20} {'Success Rate':>12}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.name:<30} {row.hash:<18} {row.runs:>5}  "
            f"{row.last_run:<20} {row.success_rate:>12}"
        )
