"""Observers: the callback contract and the built-in ones (spec §13)."""

from justpipe.observability.barrier import BarrierDebugger, BarrierDebugRecord, BarrierDebugSink
from justpipe.observability.compare import RunComparison, compare_runs, format_comparison
from justpipe.observability.logger import EventLogger, LogRecord, LogSink, StreamLogSink
from justpipe.observability.observer import (
    Observer,
    ObserverMeta,
    ObserverProtocol,
    validate_observer,
)
from justpipe.observability.state import StateDiffTracker
from justpipe.observability.timeline import TimelineVisualizer

__all__ = [
    "BarrierDebugRecord",
    "BarrierDebugSink",
    "BarrierDebugger",
    "EventLogger",
    "LogRecord",
    "LogSink",
    "Observer",
    "ObserverMeta",
    "ObserverProtocol",
    "RunComparison",
    "StateDiffTracker",
    "StreamLogSink",
    "TimelineVisualizer",
    "compare_runs",
    "format_comparison",
    "validate_observer",
]
