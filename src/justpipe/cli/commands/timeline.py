"""``justpipe timeline RUN_ID``: when each step of a run ran, as ASCII, HTML or Mermaid."""

from __future__ import annotations

import sys
from pathlib import Path

from justpipe.cli.formatting import EXIT_FAILURE, EXIT_OK, resolve_or_exit
from justpipe.cli.registry import PipelineRegistry
from justpipe.observability.timeline import TimelineVisualizer
from justpipe.storage.interface import RunRecord, StoredEvent
from justpipe.storage.readonly import parse_stored_json

__all__ = ["timeline_command"]

MERMAID_LIVE_URL = "https://mermaid.live"


def timeline_command(registry: PipelineRegistry, run_id: str, fmt: str = "ascii") -> int:
    """Print the run's timeline (ascii) or write ``timeline_<id>.html`` / ``.mmd`` in the CWD."""
    found = resolve_or_exit(registry, run_id)
    if found is None:
        return EXIT_FAILURE
    item, backend = found
    events = backend.get_events(item.run.run_id)
    if not events:
        print("No events found for this run")
        return EXIT_OK
    visualizer = _replay(events, item.run, item.pipeline_name)
    if fmt == "ascii":
        print(visualizer.render_ascii())
        return EXIT_OK
    if fmt == "html":
        path = Path(f"timeline_{item.run.run_id[:8]}.html")
        if not _write(path, visualizer.render_html()):
            return EXIT_FAILURE
        print(f"HTML timeline saved to: {path}")
        print("Open in your browser to view.")
        return EXIT_OK
    mermaid = visualizer.render_mermaid()
    path = Path(f"timeline_{item.run.run_id[:8]}.mmd")
    if not _write(path, mermaid):
        return EXIT_FAILURE
    print(f"Mermaid diagram saved to: {path}")
    print(f"\nView online at: {MERMAID_LIVE_URL}")
    print(f"\n{mermaid}")
    return EXIT_OK


def _replay(events: list[StoredEvent], run: RunRecord, pipeline_name: str) -> TimelineVisualizer:
    """Feed stored events to a visualizer, pairing starts and ends per invocation.

    The chart spans the run's recorded start and end (the last event for a run that
    has no end record).
    """
    visualizer = TimelineVisualizer()
    visualizer.pipeline_name = pipeline_name
    visualizer.pipeline_start = run.start_time.timestamp()
    end = run.end_time if run.end_time is not None else events[-1].timestamp
    visualizer.pipeline_end = end.timestamp()
    for event in events:
        visualizer.process_event(
            event.event_type,
            event.step_name,
            event.timestamp.timestamp(),
            invocation_id=_invocation_id(event),
        )
    return visualizer


def _invocation_id(event: StoredEvent) -> str | None:
    data = parse_stored_json(event.data)
    value = data.get("invocation_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _write(path: Path, text: str) -> bool:
    """Write `text` to `path`; on failure say why (on stderr) and return False."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"Error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True
