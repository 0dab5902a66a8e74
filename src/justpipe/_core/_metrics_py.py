"""Runtime metrics (spec §11), recorded from every published event before observers run.

Pure twin of `_metrics.pyx`. `record()` is called once per published event; it returns
True for the events the publisher must look at further (STEP_ERROR and CANCELLED).
"""

from __future__ import annotations

from typing import Any

from justpipe._core._events_py import RecordBuilder
from justpipe.types import (
    BarrierMetrics,
    Event,
    EventType,
    MapMetrics,
    QueueMetrics,
    RuntimeMetrics,
    StepTiming,
    TaskMetrics,
)

__all__ = ["MetricsRecorder"]

# Kept: enum members are slow to look up on 3.11 (`EventType.X` goes through the enum
# metaclass); timed, `record` took 46-90% longer with `EventType.X` in its branches.
_START = EventType.STEP_START
_END = EventType.STEP_END
_ERROR = EventType.STEP_ERROR
_TOKEN = EventType.TOKEN
_CANCELLED = EventType.CANCELLED

# the snapshot's dataclasses, built without their frozen __init__ (fields in order)
_runtime = RecordBuilder(RuntimeMetrics)
_queue = RecordBuilder(QueueMetrics)
_tasks = RecordBuilder(TaskMetrics)
_timing = RecordBuilder(StepTiming)
_barrier_metrics = RecordBuilder(BarrierMetrics)
_maps = RecordBuilder(MapMetrics)


class MetricsRecorder:
    __slots__ = (
        "counts",
        "_open",
        "_timings",
        "_barriers",
        "_barrier_open",
        "maps_started",
        "maps_completed",
        "workers_started",
        "active_workers",
        "peak_workers",
    )

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}  # keyed by the enum's value: Enum.__hash__ is slow
        self._open: dict[Any, float] = {}
        self._timings: dict[str, list[float]] = {}  # stage -> [count, total, min, max]
        self._barriers: dict[
            str, list[float]
        ] = {}  # stage -> [waits, releases, timeouts, total, max]
        self._barrier_open: dict[str, float] = {}
        self.maps_started = 0
        self.maps_completed = 0
        self.workers_started = 0
        self.active_workers = 0
        self.peak_workers = 0

    def record(self, event: Event) -> bool:
        """Count one published event; True if it is a STEP_ERROR or a CANCELLED."""
        etype = event.type
        counts = self.counts
        key = etype._value_
        counts[key] = counts.get(key, 0) + 1
        if etype is _TOKEN:
            return False
        if etype is _START:
            self._open[event.invocation_id or event.stage] = event.timestamp
        elif etype is _END:
            self._close_step(event)
        elif etype is _ERROR:
            self._open.pop(event.invocation_id or event.stage, None)
            if event.stage in self._barrier_open:
                self._barrier(event.stage)[2] += 1
                del self._barrier_open[event.stage]
            return True
        elif etype is _CANCELLED:
            return True
        elif etype is EventType.BARRIER_WAIT:
            self._barrier(event.stage)[0] += 1
            self._barrier_open[event.stage] = event.timestamp
        elif etype is EventType.BARRIER_RELEASE:
            self._release(event)
        elif etype is EventType.MAP_START:
            self.maps_started += 1
        elif etype is EventType.MAP_COMPLETE:
            self.maps_completed += 1
        return False

    def _close_step(self, event: Event) -> None:
        started = self._open.pop(event.invocation_id or event.stage, None)
        if started is None:
            return
        framework = (event.meta or {}).get("framework") if event.meta else None
        duration = framework.get("duration_s") if isinstance(framework, dict) else None
        if not isinstance(duration, (int, float)):
            duration = max(0.0, event.timestamp - started)
        t = self._timings.get(event.stage)
        if t is None:
            self._timings[event.stage] = [1, duration, duration, duration]
        else:
            t[0] += 1
            t[1] += duration
            if duration < t[2]:
                t[2] = duration
            if duration > t[3]:
                t[3] = duration

    def _barrier(self, stage: str) -> list[float]:
        b = self._barriers.get(stage)
        if b is None:
            b = self._barriers[stage] = [0, 0, 0, 0.0, 0.0]
        return b

    def _release(self, event: Event) -> None:
        b = self._barrier(event.stage)
        b[1] += 1
        opened = self._barrier_open.pop(event.stage, None)
        if opened is not None:
            waited = max(0.0, event.timestamp - opened)
            b[3] += waited
            b[4] = max(b[4], waited)

    def worker_entered(self) -> None:
        self.workers_started += 1
        self.active_workers += 1
        if self.active_workers > self.peak_workers:
            self.peak_workers = self.active_workers

    def worker_left(self) -> None:
        self.active_workers -= 1

    def snapshot(self, max_depth: int, started: int, completed: int, peak: int) -> RuntimeMetrics:
        counts = self.counts
        return _runtime(
            _queue(max_depth),
            _tasks(started, completed, peak),
            {
                stage: _timing(int(c), tot, mn, mx)
                for stage, (c, tot, mn, mx) in self._timings.items()
            },
            {
                stage: _barrier_metrics(int(w), int(r), int(t), tot, mx)
                for stage, (w, r, t, tot, mx) in self._barriers.items()
            },
            _maps(self.maps_started, self.maps_completed, self.workers_started, self.peak_workers),
            dict(counts),
            counts.get(_TOKEN.value, 0),
            counts.get(EventType.SUSPEND.value, 0),
        )
