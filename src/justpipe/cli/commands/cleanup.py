"""``justpipe cleanup``: delete old runs, newest ``--keep`` runs always spared.

Only the runs listed in the plan are deleted, one by one by id, after confirmation
(or ``--yes``); a run that cannot be deleted is reported and the rest go on.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

from justpipe.cli.formatting import EXIT_FAILURE, EXIT_OK, format_timestamp, short_id
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry, StoreError
from justpipe.types import PipelineTerminalStatus

__all__ = ["cleanup_command"]

LISTED_RUNS = 10
CONFIRMING_ANSWERS = ("y", "yes")


def cleanup_command(
    registry: PipelineRegistry,
    older_than: int | None,
    status: PipelineTerminalStatus | None,
    keep: int,
    dry_run: bool,
    assume_yes: bool = False,
) -> int:
    """Delete runs beyond the newest `keep` that match `older_than` (days) and `status`."""
    all_runs = registry.list_all_runs(limit=None)
    if not all_runs:
        print("No runs found")
        return EXIT_OK
    doomed = select_runs_to_delete(all_runs, older_than, status, keep)
    if not doomed:
        print("No runs to clean up")
        return EXIT_OK
    _print_plan(doomed, dry_run)
    if dry_run:
        print("\nDRY RUN - Use without --dry-run to actually delete these runs")
        return EXIT_OK
    if not assume_yes and not _confirmed(len(doomed)):
        return EXIT_OK
    print("\nDeleting runs...")
    deleted, failed = _delete(registry, doomed)
    print(f"\nDeleted {deleted} run(s)")
    print(f"\nRemaining: {len(registry.list_all_runs(limit=None))} run(s)")
    return EXIT_FAILURE if failed else EXIT_OK


def select_runs_to_delete(
    runs_newest_first: list[AnnotatedRun],
    older_than: int | None,
    status: PipelineTerminalStatus | None,
    keep: int,
) -> list[AnnotatedRun]:
    """Runs after the newest `keep` (counted over all runs) that match both filters."""
    cutoff = None if older_than is None else datetime.now(UTC) - timedelta(days=older_than)
    return [
        item
        for item in runs_newest_first[keep:]
        if (cutoff is None or item.run.start_time < cutoff)
        and (status is None or item.run.status is status)
    ]


def _print_plan(doomed: list[AnnotatedRun], dry_run: bool) -> None:
    print(f"Found {len(doomed)} run(s) to clean up")
    if dry_run:
        print("\nDRY RUN - No files will be deleted")
    print("\nRuns to delete by status:")
    for status_value, count in Counter(item.run.status.value for item in doomed).most_common():
        print(f"  {status_value:<15} {count:>4} run(s)")
    start_times = [item.run.start_time for item in doomed]
    print(
        f"\nDate range: {format_timestamp(min(start_times))} to "
        f"{format_timestamp(max(start_times))}"
    )
    if len(doomed) > LISTED_RUNS:
        print(f"\nShowing first {LISTED_RUNS} of {len(doomed)} runs:")
    else:
        print("\nRuns to delete:")
    for item in doomed[:LISTED_RUNS]:
        print(
            f"  {short_id(item.run.run_id)}  {item.pipeline_name:<20}  "
            f"{item.run.status.value:<15} {format_timestamp(item.run.start_time)}"
        )
    if len(doomed) > LISTED_RUNS:
        print(f"  ... and {len(doomed) - LISTED_RUNS} more")


def _confirmed(count: int) -> bool:
    """Ask on stdin; anything but y/yes (or no answer at all) cancels."""
    try:
        answer = input(f"\nDelete {count} run(s)? [y/N]: ")
    except (EOFError, KeyboardInterrupt):
        print("\nCancelled")
        return False
    if answer.strip().lower() not in CONFIRMING_ANSWERS:
        print("Cancelled")
        return False
    return True


def _delete(registry: PipelineRegistry, doomed: list[AnnotatedRun]) -> tuple[int, int]:
    """Delete each run by id; return (deleted, not deleted because of an error).

    After a store fails once (typically: locked by a writer for longer than the wait),
    its remaining runs are left alone instead of waiting on the same lock again.
    """
    deleted = failed = 0
    broken: set[str] = set()
    for item in doomed:
        if item.pipeline_hash in broken:
            failed += 1
            continue
        try:
            deleted += registry.get_backend(item.pipeline_hash).delete_run(item.run.run_id)
        except StoreError as exc:
            failed += 1
            broken.add(item.pipeline_hash)
            print(
                f"Could not delete run {item.run.run_id}: {exc}\n"
                f"Skipping the other runs of pipeline '{item.pipeline_name}'.",
                file=sys.stderr,
            )
    if failed:
        print(f"{failed} run(s) were not deleted.", file=sys.stderr)
    return deleted, failed
