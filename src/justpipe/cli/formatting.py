"""Text helpers shared by the CLI commands: durations, statuses, times, ids, run meta.

Every time the CLI prints is in UTC (stored times are UTC; upstream prints them so too).

What a store holds is shown, never obeyed: while a command runs, its output streams
escape control characters (:func:`printable_output`), so a run's error message or a
pipeline's name cannot clear the screen, set the terminal's title or move the cursor;
rich tables get their cells through :func:`rich_cell`, which also escapes rich markup.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, cast

from justpipe.cli.registry import StoreUnavailableError
from justpipe.storage.readonly import parse_stored_json
from justpipe.types import PipelineTerminalStatus

if TYPE_CHECKING:
    from rich.console import Console

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
    "printable",
    "printable_output",
    "resolve_or_exit",
    "rich_cell",
    "rich_console",
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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Control characters but tab and newline: escape sequences start with one (ESC, CSI)."""


def printable(text: object) -> str:
    """`text` with its control characters shown as ``\\xNN`` instead of sent to the
    terminal (a stored ``"\\x1b[2J"`` would clear the screen)."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", str(text))


def rich_cell(text: object) -> str:
    """`text` for a rich table cell: printable, and its ``[...]`` shown, not read as markup
    (a pipeline named ``[/bold]`` made rich raise)."""
    from rich.markup import escape

    return escape(printable(text))


class _PrintableStream:
    """A text stream that writes what it is given through :func:`printable`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def printable_output() -> Iterator[None]:
    """While the block runs, ``sys.stdout`` and ``sys.stderr`` escape control characters."""
    saved = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, _PrintableStream(sys.stdout))
    sys.stderr = cast(TextIO, _PrintableStream(sys.stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def rich_console() -> Console:
    """A rich console on standard output; its colours pass :func:`printable_output` (the
    cells it draws went through :func:`rich_cell`)."""
    from rich.console import Console

    stream = sys.stdout
    if isinstance(stream, _PrintableStream):
        stream = stream.stream
    return Console(file=stream)


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
    return parse_stored_json(run_meta, default=run_meta)


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
