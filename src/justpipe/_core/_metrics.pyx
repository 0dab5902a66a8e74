"""Runtime metrics of one run (compiled twin of `_metrics_py.py`, which documents it)."""

from justpipe.types import (
    BarrierMetrics,
    EventType,
    MapMetrics,
    QueueMetrics,
    RuntimeMetrics,
    StepTiming,
    TaskMetrics,
)

from justpipe._core._events import RecordBuilder

__all__ = ["MetricsRecorder"]

cdef object _runtime = RecordBuilder(RuntimeMetrics)
cdef object _queue = RecordBuilder(QueueMetrics)
cdef object _tasks = RecordBuilder(TaskMetrics)
cdef object _timing = RecordBuilder(StepTiming)
cdef object _barrier_metrics = RecordBuilder(BarrierMetrics)
cdef object _maps = RecordBuilder(MapMetrics)

# Kept as C statics: an `EventType.X` lookup per event costs what the pure twin measured
# (`record` 46-90% slower without its aliases on 3.11), whoever runs it.
cdef object _START = EventType.STEP_START
cdef object _END = EventType.STEP_END
cdef object _ERROR = EventType.STEP_ERROR
cdef object _TOKEN = EventType.TOKEN
cdef object _CANCELLED = EventType.CANCELLED
cdef object _WAIT = EventType.BARRIER_WAIT
cdef object _RELEASE = EventType.BARRIER_RELEASE
cdef object _MAP_START = EventType.MAP_START
cdef object _MAP_COMPLETE = EventType.MAP_COMPLETE
cdef object _TOKEN_KEY = EventType.TOKEN.value
cdef object _SUSPEND_KEY = EventType.SUSPEND.value


cdef class MetricsRecorder:
    cdef public dict counts
    cdef dict _open
    cdef dict _timings
    cdef dict _barriers
    cdef dict _barrier_open
    cdef public long maps_started
    cdef public long maps_completed
    cdef public long workers_started
    cdef public long active_workers
    cdef public long peak_workers

    def __init__(self):
        self.counts = {}
        self._open = {}
        self._timings = {}
        self._barriers = {}
        self._barrier_open = {}
        self.maps_started = 0
        self.maps_completed = 0
        self.workers_started = 0
        self.active_workers = 0
        self.peak_workers = 0

    def record(self, event):
        """Count one published event; True if it is a STEP_ERROR or a CANCELLED."""
        etype = event.type
        key = etype._value_
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if etype is _TOKEN:
            return False
        if etype is _START:
            self._open[event.invocation_id or event.stage] = event.timestamp
        elif etype is _END:
            self._close_step(event)
        elif etype is _ERROR:
            self._open.pop(event.invocation_id or event.stage, None)
            stage = event.stage
            if stage in self._barrier_open:
                self._barrier(stage)[2] += 1
                del self._barrier_open[stage]
            return True
        elif etype is _CANCELLED:
            return True
        elif etype is _WAIT:
            self._barrier(event.stage)[0] += 1
            self._barrier_open[event.stage] = event.timestamp
        elif etype is _RELEASE:
            self._release(event)
        elif etype is _MAP_START:
            self.maps_started += 1
        elif etype is _MAP_COMPLETE:
            self.maps_completed += 1
        return False

    cdef void _close_step(self, event) except *:
        started = self._open.pop(event.invocation_id or event.stage, None)
        if started is None:
            return
        meta = event.meta
        framework = meta.get("framework") if meta else None
        duration = framework.get("duration_s") if isinstance(framework, dict) else None
        if not isinstance(duration, (int, float)):
            duration = max(0.0, event.timestamp - started)
        stage = event.stage
        t = self._timings.get(stage)
        if t is None:
            self._timings[stage] = [1, duration, duration, duration]
        else:
            t[0] += 1
            t[1] += duration
            if duration < t[2]:
                t[2] = duration
            if duration > t[3]:
                t[3] = duration

    cdef list _barrier(self, stage):
        b = self._barriers.get(stage)
        if b is None:
            b = [0, 0, 0, 0.0, 0.0]
            self._barriers[stage] = b
        return b

    cdef void _release(self, event) except *:
        b = self._barrier(event.stage)
        b[1] += 1
        opened = self._barrier_open.pop(event.stage, None)
        if opened is not None:
            waited = max(0.0, event.timestamp - opened)
            b[3] += waited
            b[4] = max(b[4], waited)

    def worker_entered(self):
        self.workers_started += 1
        self.active_workers += 1
        if self.active_workers > self.peak_workers:
            self.peak_workers = self.active_workers

    def worker_left(self):
        self.active_workers -= 1

    def snapshot(self, max_depth, started, completed, peak):
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
            counts.get(_TOKEN_KEY, 0),
            counts.get(_SUSPEND_KEY, 0),
        )
