"""``justpipe cleanup``: delete old runs, newest ``--keep`` runs always spared.

Only the runs listed in the plan are deleted, one by one by id, after confirmation
(or ``--yes``); a run that cannot be deleted is reported and the rest go on. What can
still go on is kept (statuses as every tool shows them, ``justpipe.storage.status``):
running runs always, suspended and interrupted durable runs unless
``--include-resumable``, damaged rows unless ``--status damaged``.
"""

from __future__ import annotations

import sys
from collections import Counter

from justpipe.cli.formatting import EXIT_FAILURE, EXIT_OK, format_start, short_id
from justpipe.cli.registry import (
    AnnotatedRun,
    PipelineRegistry,
    StatusFilter,
    StoreError,
    wanted_status,
)
from justpipe.storage.interface import StorageBackend
from justpipe.storage.status import RESUMABLE, RunStatus, cutoff_days_ago, may_delete

__all__ = ["cleanup_command"]

LISTED_RUNS = 10
CONFIRMING_ANSWERS = ("y", "yes")


def cleanup_command(
    registry: PipelineRegistry,
    older_than: int | None,
    status: StatusFilter,
    keep: int,
    dry_run: bool,
    assume_yes: bool = False,
    include_resumable: bool = False,
) -> int:
    """Delete runs beyond the newest `keep` that match `older_than` (days) and `status`.

    Suspended and interrupted durable runs are deleted only with `include_resumable`.
    """
    wanted = wanted_status(status)
    if wanted is RunStatus.RUNNING:
        print("Error: running runs are never deleted")
        return EXIT_FAILURE
    if wanted in RESUMABLE and not include_resumable:
        print(
            f"Error: {wanted} runs can still be resumed; add --include-resumable "
            "to delete them (they can then no longer be resumed)"
        )
        return EXIT_FAILURE
    all_runs = registry.list_all_runs(limit=None)
    if not all_runs:
        print("No runs found")
        return EXIT_OK
    doomed = select_runs_to_delete(all_runs, older_than, wanted, keep, include_resumable)
    kept = _kept_resumable(all_runs[keep:], doomed, include_resumable)
    if not doomed:
        print("No runs to clean up")
        _print_kept(kept)
        return EXIT_OK
    _print_plan(doomed, dry_run)
    _print_kept(kept)
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
    status: StatusFilter,
    keep: int,
    include_resumable: bool = False,
) -> list[AnnotatedRun]:
    """Runs after the newest `keep` (counted over all runs) that match both filters and
    may be deleted (``storage.status.may_delete``)."""
    wanted = wanted_status(status)
    cutoff = None if older_than is None else cutoff_days_ago(older_than)
    return [
        item
        for item in runs_newest_first[keep:]
        if (cutoff is None or item.run.start_time < cutoff)
        and (wanted is None or item.status is wanted)
        and may_delete(item.status, wanted, include_resumable)
    ]


def _kept_resumable(
    candidates: list[AnnotatedRun], doomed: list[AnnotatedRun], include_resumable: bool
) -> Counter[RunStatus]:
    if include_resumable:
        return Counter()
    chosen = {id(item) for item in doomed}
    return Counter(
        item.status for item in candidates if item.status in RESUMABLE and id(item) not in chosen
    )


def _print_kept(kept: Counter[RunStatus]) -> None:
    if not kept:
        return
    counts = ", ".join(f"{count} {status.value}" for status, count in sorted(kept.items()))
    print(f"\nKept: {counts} (resumable; --include-resumable deletes them too)")


def _print_plan(doomed: list[AnnotatedRun], dry_run: bool) -> None:
    print(f"Found {len(doomed)} run(s) to clean up")
    if dry_run:
        print("\nDRY RUN - No files will be deleted")
    print("\nRuns to delete by status:")
    for status_value, count in Counter(item.status.value for item in doomed).most_common():
        print(f"  {status_value:<15} {count:>4} run(s)")
    by_start = sorted(doomed, key=lambda item: item.run.start_time)
    print(f"\nDate range: {format_start(by_start[0].run)} to {format_start(by_start[-1].run)}")
    if len(doomed) > LISTED_RUNS:
        print(f"\nShowing first {LISTED_RUNS} of {len(doomed)} runs:")
    else:
        print("\nRuns to delete:")
    for item in doomed[:LISTED_RUNS]:
        print(
            f"  {short_id(item.run.run_id)}  {item.pipeline_name:<20}  "
            f"{item.status.value:<15} {format_start(item.run)}"
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
    writers: dict[str, StorageBackend] = {}
    for item in doomed:
        if item.pipeline_hash in broken:
            failed += 1
            continue
        try:
            writer = writers.get(item.pipeline_hash)
            if writer is None:
                writer = writers[item.pipeline_hash] = registry.get_writable_backend(
                    item.pipeline_hash
                )
            deleted += writer.delete_run(item.run.run_id)
        except StoreError as exc:
            failed += 1
            broken.add(item.pipeline_hash)
            print(
                f"Could not delete run {item.run.run_id}: {exc}\n"
                f"Skipping the other runs of pipeline '{item.pipeline_name}'.",
                file=sys.stderr,
            )
    for writer in writers.values():
        close = getattr(writer, "close", None)
        if callable(close):
            close()
    if failed:
        print(f"{failed} run(s) were not deleted.", file=sys.stderr)
    return deleted, failed
