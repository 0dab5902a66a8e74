"""TimelineVisualizer: when each step ran, as ASCII, HTML or a Mermaid Gantt chart (§13.2)."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any

from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.types import Event, EventType

__all__ = ["TimelineEvent", "TimelineVisualizer"]

_RECORDED_TYPES = frozenset(
    {
        EventType.STEP_START,
        EventType.STEP_END,
        EventType.STEP_ERROR,
        EventType.BARRIER_WAIT,
        EventType.BARRIER_RELEASE,
    }
)
_STEP_ENDINGS = frozenset({EventType.STEP_END, EventType.STEP_ERROR})

_NO_EVENTS = "No events to display"
_NAME_COLUMN = 28
_MAX_NAME = 25  # longer names are cut to 22 characters plus "..."
_DURATION_COLUMN = 8
_FIXED_COLUMNS = 45  # everything on a row except the bar (name, gaps, duration, margin)
_AXIS_LABEL_GAP = 10
_BAR = "\u2588"
_MINUTE = 60.0
_HOUR = 3600.0
_BOTTLENECK_MARK = " \u2190 Bottleneck"


@dataclass(slots=True)
class TimelineEvent:
    """One recorded event; ``duration`` is set on a STEP_END that closed a known start."""

    timestamp: float
    event_type: EventType
    stage: str
    duration: float | None = None
    invocation_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Slot:
    """One finished invocation: a row of the chart."""

    stage: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def _invocation_key(stage: str, invocation_id: str | None) -> str:
    """Starts and ends pair up per invocation; events without an id pair up per stage."""
    return invocation_id if invocation_id is not None else stage


class TimelineVisualizer(Observer):
    """Record step and barrier events of a run and render when each step ran.

    Each finished invocation is one row, so concurrent map workers of the same step
    each get their own bar. The longest step is tagged as the bottleneck.
    """

    def __init__(self, width: int = 80) -> None:
        if isinstance(width, bool) or not isinstance(width, int):
            raise TypeError(f"width must be an int number of columns, got {width!r}")
        if width < 0:
            raise ValueError(f"width must be >= 0, got {width}")
        self.width = width
        self.events: list[TimelineEvent] = []
        self.step_start_times: dict[str, float] = {}
        self.step_end_times: dict[str, float] = {}
        self.pipeline_start: float | None = None
        self.pipeline_end: float | None = None
        self.pipeline_name = "Pipeline"

    # ------------------------------------------------------------------ recording

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self.events = []
        self.step_start_times = {}
        self.step_end_times = {}
        self.pipeline_start = time.time()
        self.pipeline_end = None
        self.pipeline_name = meta.pipe_name

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        self.process_event(
            event.type, event.stage, event.timestamp, invocation_id=event.invocation_id
        )

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        self.pipeline_end = time.time()

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        self.pipeline_end = time.time()

    def process_event(
        self,
        event_type: EventType,
        stage: str,
        timestamp: float,
        *,
        invocation_id: str | None = None,
    ) -> None:
        """Record one event (the CLI feeds stored events through here).

        Pass `invocation_id` when known so that overlapping invocations of one stage
        pair up correctly. A STEP_END without a recorded start is ignored.
        """
        if event_type not in _RECORDED_TYPES:
            return
        key = _invocation_key(stage, invocation_id)
        duration: float | None = None
        if event_type is EventType.STEP_START:
            self.step_start_times[key] = timestamp
        elif event_type is EventType.STEP_END:
            started = self.step_start_times.pop(key, None)
            if started is None:
                return
            duration = timestamp - started
            self.step_end_times[stage] = timestamp
        self.events.append(TimelineEvent(timestamp, event_type, stage, duration, invocation_id))

    # ------------------------------------------------------------------ rendering

    def render_ascii(self, max_steps: int = 20) -> str:
        """A text chart: one row per finished invocation (at most `max_steps` rows)."""
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        if not self.events:
            return _NO_EVENTS
        total = self._total_duration()
        bar_width = max(0, self.width - _FIXED_COLUMNS)
        slots = self._slots()
        shown = slots[:max_steps]
        bottleneck = _bottleneck(shown)
        lines = ["", f"{self.pipeline_name} - Execution Timeline ({_format_duration(total)})", ""]
        for slot in shown:
            mark = _BOTTLENECK_MARK if slot.stage == bottleneck else ""
            bar = self._ascii_bar(slot, total, bar_width)
            lines.append(
                f"{_short_name(slot.stage):<{_NAME_COLUMN}} {bar:<{bar_width}} "
                f"{_format_duration(slot.duration):>{_DURATION_COLUMN}}{mark}"
            )
        if len(slots) > len(shown):
            lines.append(f"... and {len(slots) - len(shown)} more steps")
        axis_gap = " " * max(0, bar_width - _AXIS_LABEL_GAP)
        lines += ["", f"{'':<{_NAME_COLUMN}}0{axis_gap}{_format_duration(total)}", ""]
        return "\n".join(lines)

    def render_html(self) -> str:
        """A standalone HTML page with one bar per finished invocation."""
        if not self.events:
            return f"<p>{_NO_EVENTS}</p>"
        total = self._total_duration()
        slots = self._slots()
        bottleneck = _bottleneck(slots)
        rows = "".join(self._html_row(slot, total, slot.stage == bottleneck) for slot in slots)
        name = html.escape(self.pipeline_name)
        return _HTML_PAGE.format(
            name=name,
            header=f"{name} - Execution Timeline ({_format_duration(total)})",
            rows=rows,
            total=_format_duration(total),
        )

    def render_mermaid(self) -> str:
        """A Mermaid Gantt chart; task times are milliseconds since the pipeline start."""
        if not self.events:
            return f"gantt\n    title {_NO_EVENTS}"
        lines = [
            "gantt",
            f"    title {self.pipeline_name} Execution Timeline",
            "    dateFormat X",
            "    axisFormat %S",
            "",
            "    section Execution",
        ]
        origin = self.pipeline_start
        if origin is not None:
            for slot in self._slots():
                start_ms = int((slot.start - origin) * 1000)
                end_ms = int((slot.end - origin) * 1000)
                # ':' separates a Mermaid task name from its data.
                lines.append(f"    {slot.stage.replace(':', '_')}: {start_ms}, {end_ms}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ helpers

    def _total_duration(self) -> float:
        if self.pipeline_start is None or self.pipeline_end is None:
            return 0.0
        return self.pipeline_end - self.pipeline_start

    def _offset(self, timestamp: float) -> float:
        return timestamp - self.pipeline_start if self.pipeline_start is not None else 0.0

    def _slots(self) -> list[_Slot]:
        """Pair starts with their ends per invocation; rows ordered by start time."""
        open_starts: dict[str, float] = {}
        slots: list[_Slot] = []
        for event in self.events:
            key = _invocation_key(event.stage, event.invocation_id)
            if event.event_type is EventType.STEP_START:
                open_starts[key] = event.timestamp
            elif event.event_type in _STEP_ENDINGS:
                started = open_starts.pop(key, None)
                if started is not None:
                    slots.append(_Slot(event.stage, started, event.timestamp))
        slots.sort(key=lambda slot: slot.start)
        return slots

    def _span(self, slot: _Slot, total: float) -> tuple[float, float]:
        """Where the slot starts and ends, as fractions of the pipeline's duration."""
        return self._offset(slot.start) / total, self._offset(slot.end) / total

    def _ascii_bar(self, slot: _Slot, total: float, bar_width: int) -> str:
        if total <= 0:
            return _BAR
        start, end = self._span(slot, total)
        length = max(1, int((end - start) * bar_width))
        return " " * int(start * bar_width) + _BAR * length

    def _html_row(self, slot: _Slot, total: float, is_bottleneck: bool) -> str:
        start, end = self._span(slot, total) if total > 0 else (0.0, 0.0)
        fill_class = "step-bar-fill bottleneck" if is_bottleneck else "step-bar-fill"
        return _HTML_ROW.format(
            name=html.escape(slot.stage),
            fill_class=fill_class,
            left=start * 100,
            width=(end - start) * 100,
            duration=_format_duration(slot.duration),
        )


def _bottleneck(slots: list[_Slot]) -> str | None:
    """The stage of the longest row (the first one on ties); all its rows get tagged."""
    if not slots:
        return None
    return max(slots, key=lambda slot: slot.duration).stage


def _short_name(stage: str) -> str:
    return stage if len(stage) <= _MAX_NAME else stage[: _MAX_NAME - 3] + "..."


def _format_duration(seconds: float) -> str:
    """``850ms``, ``2.5s``, ``1.5m`` or ``2.0h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < _MINUTE:
        return f"{seconds:.1f}s"
    if seconds < _HOUR:
        return f"{seconds / _MINUTE:.1f}m"
    return f"{seconds / _HOUR:.1f}h"


_HTML_ROW = """
            <div class="step">
                <div class="step-name">{name}</div>
                <div class="step-bar">
                    <div class="{fill_class}" style="left: {left:.2f}%; width: {width:.2f}%;"></div>
                </div>
                <div class="step-duration">{duration}</div>
            </div>"""

_HTML_PAGE = """<!DOCTYPE html>
<html>
<head>
    <title>{name} - Timeline</title>
    <style>
        body {{ font-family: monospace; padding: 20px; background: #f5f5f5; }}
        .timeline {{ background: white; padding: 20px; border-radius: 8px; }}
        .header {{ font-size: 18px; font-weight: bold; margin-bottom: 20px; }}
        .step {{ margin: 10px 0; display: flex; align-items: center; }}
        .step-name {{ width: 200px; font-size: 14px; }}
        .step-bar {{ flex: 1; height: 24px; background: #e0e0e0; position: relative; }}
        .step-bar-fill {{ height: 100%; background: #4caf50; position: absolute; }}
        .step-bar-fill.bottleneck {{ background: #ff9800; }}
        .step-duration {{ width: 80px; text-align: right; font-size: 14px; margin-left: 10px; }}
        .axis {{ margin-top: 20px; display: flex; justify-content: space-between; color: #666; }}
    </style>
</head>
<body>
    <div class="timeline">
        <div class="header">{header}</div>
        {rows}
        <div class="axis">
            <span>0s</span>
            <span>{total}</span>
        </div>
    </div>
</body>
</html>"""
