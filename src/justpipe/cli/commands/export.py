"""``justpipe export RUN_ID``: a run and all its events as one JSON document."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from justpipe.cli.formatting import EXIT_FAILURE, EXIT_OK, parse_run_meta, resolve_or_exit
from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
from justpipe.storage.interface import StoredEvent
from justpipe.storage.readonly import parse_stored_json
from justpipe.storage.segments import DurableRun, event_dicts, segments_from_events

__all__ = ["export_command"]


def export_command(
    registry: PipelineRegistry, run_id: str, output: str | None = None, fmt: str = "json"
) -> int:
    """Write the run to `output` (default ``run_<id[:8]>.json``) and print a summary."""
    found = resolve_or_exit(registry, run_id)
    if found is None:
        return EXIT_FAILURE
    item, backend = found
    events = backend.get_events(item.run.run_id)
    path = Path(output) if output else Path(f"run_{item.run.run_id[:8]}.json")
    document = _export_document(item, events)
    if item.durable is not None:
        document.update(_durable_part(item.durable, events))
    try:
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    except OSError as exc:
        print(f"Error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"Run exported to: {path}")
    print(f"  Run ID: {item.run.run_id}")
    print(f"  Pipeline: {item.pipeline_name}")
    print(f"  Events: {len(events)}")
    print(f"  Status: {item.status.value}")
    return EXIT_OK


def _export_document(item: AnnotatedRun, events: list[StoredEvent]) -> dict[str, Any]:
    run = item.run
    return {
        "run": {
            "id": run.run_id,
            "pipeline_name": item.pipeline_name,
            "pipeline_hash": item.pipeline_hash,
            "status": item.status.value,
            "start_time": run.start_time.isoformat(),
            "end_time": run.end_time.isoformat() if run.end_time is not None else None,
            "duration_seconds": run.duration.total_seconds() if run.duration is not None else None,
            "error_message": item.error,
            "error_step": run.error_step,
            "run_meta": parse_run_meta(run.run_meta),
            **({"damage": run.damage} if run.damage is not None else {}),
        },
        "events": [_export_event(event) for event in events],
        "event_count": len(events),
        "exported_at": datetime.now(UTC).isoformat(),
    }


def _durable_part(durable: DurableRun, events: list[StoredEvent]) -> dict[str, Any]:
    """What a durable run's export adds: its durable status and its segments."""
    segments = segments_from_events(event_dicts(events), durable)
    return {
        "durable": {
            "status": durable.status,
            "checkpoint_status": durable.checkpoint_status,
            "segment": durable.segment,
            "lease_live": durable.lease_live,
            "end": durable.end,
        },
        "segments": [segment.to_dict() for segment in segments],
    }


def _export_event(event: StoredEvent) -> dict[str, Any]:
    data = parse_stored_json(event.data)
    return {
        "seq": event.seq,
        "event_type": event.event_type.value,
        "step_name": event.step_name,
        "timestamp": event.timestamp.isoformat(),
        "data": data,
    }
