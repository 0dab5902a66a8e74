"""Text helpers shared by the CLI commands: durations, statuses, times, ids, run meta.

Every time the CLI prints is in UTC (stored times are UTC; upstream prints them so too).
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from justpipe.cli.registry import StoreUnavailableError
from justpipe.types import PipelineTerminalStatus

if TYPE_CHECKING:
    from justpipe.cli.registry import AnnotatedRun, PipelineRegistry
    from justpipe.storage.interface import RunRecord, StorageBackend

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "HAS_RICH",
    "format_duration",
    "format_label",
    "format_start",
    "format_status",
    "format_timestamp",
    "parse_run_meta",
    "resolve_or_exit",
    "short_id",
]

EXIT_OK = 0
EXIT_FAILURE = 1
"""Exit status of a command that could not do its job (unknown run id, unreadable store...)."""

HAS_RICH = importlib.util.find_spec("rich") is not None
"""Whether tables are drawn with rich; tests switch it off to get the plain layout."""

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

_STATUS_COLOURS = {
    PipelineTerminalStatus.SUCCESS: "green",
    PipelineTerminalStatus.FAILED: "red",
}


def format_duration(seconds: float | None) -> str:
    """Render a duration as every command does: ``-``, ``12ms``, ``1.5s``, ``2.0m``, ``1.2h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def format_status(status: PipelineTerminalStatus) -> str:
    """The status value wrapped in rich markup: green success, red failed, yellow otherwise."""
    colour = _STATUS_COLOURS.get(status, "yellow")
    return f"[{colour}]{status.value}[/{colour}]"


_LABEL_COLOURS = {
    "success": "green",
    "failed": "red",
    "damaged": "red",
    "suspended": "cyan",
    "running": "blue",
}


def format_label(label: str) -> str:
    """A status of the model (``running``, ``suspended``, ``success``...) in rich markup,
    coloured like `format_status` (yellow for those without a colour of their own)."""
    colour = _LABEL_COLOURS.get(str(label), "yellow")
    return f"[{colour}]{label}[/{colour}]"


def format_timestamp(moment: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC (a naive datetime is read as UTC); ``-`` for None."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def format_start(run: RunRecord) -> str:
    """A run's start time as `format_timestamp` gives it; ``?`` when it could not be read."""
    if run.damage is not None and "start_time" in run.damage:
        return "?"
    return format_timestamp(run.start_time)


def short_id(run_id: str, length: int = 12) -> str:
    """The first `length` characters of a run id, as shown in listings."""
    return run_id[:length]


def parse_run_meta(run_meta: str | None) -> Any:
    """Decode a run's stored meta JSON; text that is not JSON comes back unchanged.

    Returns None when the run stored no meta.
    """
    if not run_meta:
        return None
    try:
        return json.loads(run_meta)
    except ValueError:
        return run_meta


def resolve_or_exit(
    registry: PipelineRegistry, run_id: str
) -> tuple[AnnotatedRun, StorageBackend] | None:
    """Find the run `run_id` names (a full id or a unique prefix) or say why not.

    Prints ``Run not found: <id>``, ``Error: Ambiguous run ID prefix ...`` or, when the
    run may be in a store that could not be read, ``Error: Run ... could not be read``,
    and returns None; the caller then ends with ``EXIT_FAILURE``.
    """
    try:
        found = registry.resolve_run(run_id)
    except (ValueError, StoreUnavailableError) as exc:
        print(f"Error: {exc}")
        return None
    if found is None:
        print(f"Run not found: {run_id}")
    return found
