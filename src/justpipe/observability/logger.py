"""EventLogger: one formatted line per selected event, handed to a sink (spec §13.2)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

from justpipe.observability._run_end import root_end_status
from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.types import Event, EventType, PipelineTerminalStatus

__all__ = ["EventLogger", "LogLevel", "LogRecord", "LogSink", "StreamLogSink"]


class LogLevel:
    """Numeric log levels: an event is logged when it belongs to the level's set."""

    DEBUG = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


@dataclass(frozen=True)
class LogRecord:
    """What a sink receives: the raw event facts plus the formatted ``message``."""

    timestamp: float
    relative_time: str
    event_type: EventType
    stage: str
    payload: Any
    message: str


LogSink = Callable[[LogRecord], None]

_TYPE_WIDTH = 16
_MAX_INLINE_TEXT = 100  # string payloads this long or longer are left out of the line
_HIDDEN_PAYLOAD_KEYS = frozenset({"trace_id"})

_INFO_TYPES = frozenset(
    {
        EventType.START,
        EventType.FINISH,
        EventType.STEP_START,
        EventType.STEP_END,
        EventType.STEP_ERROR,
        EventType.BARRIER_WAIT,
        EventType.BARRIER_RELEASE,
        EventType.MAP_START,
        EventType.MAP_COMPLETE,
        EventType.SUSPEND,
    }
)
_WARNING_TYPES = frozenset({EventType.STEP_ERROR, EventType.BARRIER_WAIT, EventType.SUSPEND})
_ERROR_TYPES = frozenset({EventType.STEP_ERROR})
_TYPES_BY_LEVEL: dict[int, frozenset[EventType]] = {
    LogLevel.DEBUG: frozenset(EventType),
    LogLevel.INFO: _INFO_TYPES,
    LogLevel.WARNING: _WARNING_TYPES,
    LogLevel.ERROR: _ERROR_TYPES,
}


class StreamLogSink:
    """A sink that writes each record's message as one line to `stream` and flushes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, record: LogRecord) -> None:
        self._stream.write(record.message + "\n")
        self._stream.flush()


class EventLogger(Observer):
    """Log selected events of each run as ``[HH:MM:SS.mmm] TYPE stage (details)`` lines.

    Times are relative to the first logged event of the current run. Nothing is
    written without a `sink`; ``EventLogger.stderr_sink()`` gives one for stderr.
    """

    LEVEL_MAP: ClassVar[dict[str, int]] = {
        "DEBUG": LogLevel.DEBUG,
        "INFO": LogLevel.INFO,
        "WARNING": LogLevel.WARNING,
        "ERROR": LogLevel.ERROR,
    }
    COLORS: ClassVar[dict[str, str]] = {
        "RESET": "\033[0m",
        "BOLD": "\033[1m",
        "RED": "\033[91m",
        "GREEN": "\033[92m",
        "YELLOW": "\033[93m",
        "BLUE": "\033[94m",
        "MAGENTA": "\033[95m",
        "CYAN": "\033[96m",
        "GRAY": "\033[90m",
    }
    _TYPE_COLORS: ClassVar[dict[EventType, str]] = {
        EventType.START: "BOLD",
        EventType.FINISH: "BOLD",
        EventType.SUSPEND: "YELLOW",
        EventType.STEP_START: "CYAN",
        EventType.STEP_END: "GREEN",
        EventType.STEP_ERROR: "RED",
        EventType.BARRIER_WAIT: "YELLOW",
        EventType.BARRIER_RELEASE: "GREEN",
        EventType.MAP_START: "CYAN",
        EventType.MAP_COMPLETE: "GREEN",
    }
    # Event types whose stage is highlighted too (in the type's colour).
    _STAGE_HIGHLIGHT: ClassVar[frozenset[EventType]] = frozenset(
        {
            EventType.START,
            EventType.FINISH,
            EventType.SUSPEND,
            EventType.STEP_ERROR,
            EventType.BARRIER_WAIT,
        }
    )

    def __init__(
        self, level: str = "INFO", sink: LogSink | None = None, use_colors: bool = False
    ) -> None:
        if not isinstance(level, str):
            raise TypeError(f"EventLogger level must be a level name such as 'INFO', got {level!r}")
        if sink is not None and not callable(sink):
            raise TypeError(f"EventLogger sink must be callable, got {type(sink).__name__}")
        self.level = self.LEVEL_MAP.get(level.upper(), LogLevel.INFO)
        self.sink = sink
        self.use_colors = use_colors
        self.start_time: float | None = None
        self._end_status: PipelineTerminalStatus | None = None

    @staticmethod
    def stderr_sink() -> StreamLogSink:
        """A sink writing to ``sys.stderr`` (as looked up at call time)."""
        return StreamLogSink(sys.stderr)

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self.start_time = None
        self._end_status = None

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        status = root_end_status(event)
        if status is not None:
            self._end_status = status
        if event.type not in _TYPES_BY_LEVEL[self.level]:
            return
        if self.start_time is None:
            self.start_time = event.timestamp
        self._emit(
            LogRecord(
                timestamp=event.timestamp,
                relative_time=self._relative(event.timestamp),
                event_type=event.type,
                stage=event.stage,
                payload=event.payload,
                message=self._format_event(event),
            )
        )

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        if self.level > LogLevel.INFO:
            return
        if self._end_status is PipelineTerminalStatus.CLIENT_CLOSED:
            text = f"Pipeline closed by client after {_seconds(duration_s)}s"
        else:
            text = f"Pipeline completed in {_seconds(duration_s)}s"
        if self.start_time is None:
            timestamp, relative = time.time(), _format_relative(0.0)
        else:
            timestamp = self.start_time + _as_float(duration_s)
            relative = self._relative(timestamp)
        self._emit(
            LogRecord(
                timestamp=timestamp,
                relative_time=relative,
                event_type=EventType.FINISH,
                stage="system",
                payload={"duration_s": duration_s},
                message=self._colorize(text, "GREEN"),
            )
        )

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        timestamp = time.time()
        self._emit(
            LogRecord(
                timestamp=timestamp,
                relative_time=self._relative(timestamp),
                event_type=EventType.STEP_ERROR,
                stage="system",
                payload={"error": _safe_str(error)},
                message=self._colorize(f"Pipeline failed: {_safe_str(error)}", "RED"),
            )
        )

    # ------------------------------------------------------------------ formatting

    def _emit(self, record: LogRecord) -> None:
        if self.sink is not None:
            self.sink(record)

    def _relative(self, timestamp: float) -> str:
        if self.start_time is None:
            return _format_relative(0.0)
        return _format_relative(timestamp - self.start_time)

    def _colorize(self, text: str, color: str) -> str:
        if not self.use_colors:
            return text
        return f"{self.COLORS[color]}{text}{self.COLORS['RESET']}"

    def _format_event(self, event: Event) -> str:
        color = self._TYPE_COLORS.get(event.type)
        type_name = event.type.name.ljust(_TYPE_WIDTH)
        stage = event.stage
        if color is not None:
            type_name = self._colorize(type_name, color)
            if event.type in self._STAGE_HIGHLIGHT:
                stage = self._colorize(stage, color)
        clock = self._colorize(self._relative(event.timestamp), "GRAY")
        return f"[{clock}] {type_name} {stage}{_format_payload(event.payload)}"


def _format_relative(seconds: float) -> str:
    """``HH:MM:SS.mmm``; hours grow past 99 and negative offsets keep a leading ``-``."""
    hours = int(seconds // 3600)
    minutes = int((seconds % 3600) // 60)
    return f"{hours:02d}:{minutes:02d}:{seconds % 60:06.3f}"


def _format_payload(payload: Any) -> str:
    """`` (k=v, ...)`` for dicts, `` (text)`` for short strings, else nothing.

    A payload whose rendering fails is left out rather than breaking the run's logging.
    """
    try:
        if isinstance(payload, dict):
            items = [f"{k}={v}" for k, v in payload.items() if k not in _HIDDEN_PAYLOAD_KEYS]
            return f" ({', '.join(items)})" if items else ""
        if isinstance(payload, str) and len(payload) < _MAX_INLINE_TEXT:
            return f" ({payload})"
    except Exception:
        return ""
    return ""


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _seconds(duration_s: Any) -> str:
    """Two-decimal seconds; a value that is not a number is shown as it is."""
    try:
        return f"{float(duration_s):.2f}"
    except (TypeError, ValueError):
        return _safe_str(duration_s)


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
