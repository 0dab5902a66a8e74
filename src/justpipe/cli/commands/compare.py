"""``justpipe compare RUN1 RUN2``: how a run differs from a baseline run."""

from __future__ import annotations

from dataclasses import replace

from justpipe.cli.formatting import EXIT_FAILURE, EXIT_OK, resolve_or_exit
from justpipe.cli.registry import PipelineRegistry
from justpipe.observability.compare import compare_runs, format_comparison

__all__ = ["compare_command"]


def compare_command(registry: PipelineRegistry, run1_id: str, run2_id: str) -> int:
    """Print the comparison of run 2 against run 1 (the baseline)."""
    first = resolve_or_exit(registry, run1_id)
    if first is None:
        return EXIT_FAILURE
    second = resolve_or_exit(registry, run2_id)
    if second is None:
        return EXIT_FAILURE
    (item1, backend1), (item2, backend2) = first, second
    comparison = compare_runs(
        item1.run,
        backend1.get_events(item1.run.run_id),
        item2.run,
        backend2.get_events(item2.run.run_id),
        item1.pipeline_name,
        item2.pipeline_name,
    )
    # the statuses every tool shows (a suspended run is not "success"); one pipeline hash
    # means one definition, so a step missing from a run did not run there
    comparison = replace(
        comparison,
        status1=item1.status.value,
        status2=item2.status.value,
        status_same=item1.status is item2.status,
        same_definition=item1.pipeline_hash == item2.pipeline_hash,
    )
    print(format_comparison(comparison))
    return EXIT_OK
