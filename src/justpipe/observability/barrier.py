"""BarrierDebugger: report barriers that wait too long or never release (spec §13.2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from justpipe.observability._run_end import root_end_status
from justpipe.observability.observer import Observer, ObserverMeta
from justpipe.types import Event, EventType, PipelineTerminalStatus

__all__ = ["BarrierDebugRecord", "BarrierDebugSink", "BarrierDebugger"]


@dataclass(frozen=True)
class BarrierDebugRecord:
    """One finding: ``kind`` is ``slow``, ``hang``, ``unresolved`` or ``error_state``."""

    kind: str
    barrier_name: str
    wait_time_s: float
    expected_count: int
    completed_count: int
    waiting_for: tuple[str, ...]
    message: str


BarrierDebugSink = Callable[[BarrierDebugRecord], None]


@dataclass(frozen=True, slots=True)
class _Running:
    """One live invocation (or map worker slot) of a stage."""

    started: float
    owner: str | None


class BarrierDebugger(Observer):
    """Watch BARRIER_WAIT/RELEASE and step activity; send findings to `sink`.

    * ``slow``: a barrier released more than `warn_after` seconds after it started waiting;
    * ``hang``: a step or map worker started while a barrier had waited longer than
      `warn_after`; the message says, per awaited parent, how long ago it became
      active (measured with `clock`) or that it never started;
    * ``unresolved``: barriers still waiting when the run ends;
    * ``error_state``: barriers still waiting when the run fails.

    Each barrier is reported as slow or hanging at most once per run.

    ``worker_activity`` maps a stage to the start time of its most recent invocation
    that is still running. Invocations are told apart by ``invocation_id``, so one
    map worker finishing does not hide its siblings that are still at work.
    """

    def __init__(
        self,
        warn_after: float,
        clock: Callable[[], float],
        sink: BarrierDebugSink | None = None,
    ) -> None:
        if isinstance(warn_after, bool) or not isinstance(warn_after, (int, float)):
            raise TypeError(f"warn_after must be a number of seconds, got {warn_after!r}")
        if not callable(clock):
            raise TypeError("clock must be a callable returning the current time in seconds")
        if sink is not None and not callable(sink):
            raise TypeError(f"BarrierDebugger sink must be callable, got {type(sink).__name__}")
        self.warn_after = warn_after
        self._clock = clock
        self.sink = sink
        self.waiting_barriers: dict[str, dict[str, Any]] = {}
        self.worker_activity: dict[str, float] = {}
        self.warned_barriers: set[str] = set()
        self._running: dict[str, dict[str | None, _Running]] = {}
        self._end_status: PipelineTerminalStatus | None = None

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self._reset()

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        kind = event.type
        if kind is EventType.BARRIER_WAIT:
            self.waiting_barriers[event.stage] = _wait_info(event.payload, event.timestamp)
        elif kind is EventType.BARRIER_RELEASE:
            self._on_release(event.stage, event.timestamp)
        elif kind is EventType.STEP_START or kind is EventType.MAP_WORKER:
            self._mark_running(event)
            self._check_waiting_barriers(event.timestamp)
        elif kind is EventType.STEP_END or kind is EventType.STEP_ERROR:
            self._mark_done(event.stage, event.invocation_id)
        elif kind is EventType.MAP_COMPLETE:
            self._mark_done(event.stage, event.invocation_id)
            target = event.payload.get("target") if isinstance(event.payload, dict) else None
            if isinstance(target, str):
                self._clear_workers(target, event.owner_invocation_id or event.invocation_id)
        else:
            status = root_end_status(event)
            if status is not None:
                self._end_status = status

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        if self._end_status is PipelineTerminalStatus.CLIENT_CLOSED:
            ending = "Pipeline closed by client with unresolved barrier"
        else:
            ending = "Pipeline completed with unresolved barrier"
        for name, info in self.waiting_barriers.items():
            self._emit("unresolved", name, info, duration_s, f"{ending}: {name}")
        self._reset()

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        for name, info in self.waiting_barriers.items():
            count = len(info["waiting_for"])
            message = f"Pipeline failed with waiting barrier: {name}; waiting_for={count}"
            self._emit("error_state", name, info, 0.0, message)
        self._reset()

    # ------------------------------------------------------------------ barriers

    def _on_release(self, name: str, timestamp: float) -> None:
        info = self.waiting_barriers.pop(name, None)
        if info is None:
            return
        wait = timestamp - info["start_time"]
        if wait > self.warn_after and name not in self.warned_barriers:
            self.warned_barriers.add(name)
            message = f"SLOW BARRIER: {name} waited {wait:.1f}s (threshold: {self.warn_after:.1f}s)"
            self._emit("slow", name, info, wait, message)

    def _check_waiting_barriers(self, now: float) -> None:
        for name, info in list(self.waiting_barriers.items()):
            if name in self.warned_barriers:
                continue
            wait = now - info["start_time"]
            if wait > self.warn_after:
                self.warned_barriers.add(name)
                message = (
                    f"BARRIER HANG DETECTED: {name}; wait={wait:.1f}s; "
                    f"{self._describe_parents(info['waiting_for'])}"
                )
                self._emit("hang", name, info, wait, message)

    def _describe_parents(self, parents: list[str]) -> str:
        if not parents:
            return "no worker detail"
        details = []
        for parent in parents:
            started = self.worker_activity.get(parent)
            if started is None:
                details.append(f"{parent}: never started")
            else:
                details.append(f"{parent}: inactive {self._clock() - started:.1f}s")
        return ", ".join(details)

    # ------------------------------------------------------------------ activity

    def _mark_running(self, event: Event) -> None:
        # MAP_WORKER events carry the map owner's ids; their indexed stage tells them apart.
        running = self._running.setdefault(event.stage, {})
        running[event.invocation_id] = _Running(event.timestamp, event.owner_invocation_id)
        self._refresh(event.stage)

    def _mark_done(self, stage: str, invocation_id: str | None) -> None:
        running = self._running.get(stage)
        if running:
            key = invocation_id if invocation_id in running else None
            running.pop(key, None)
            self._refresh(stage)
        else:
            self.worker_activity.pop(stage, None)

    def _clear_workers(self, target: str, owner: str | None) -> None:
        """Forget the map's workers: stages ``target`` and ``target[i]`` of this map."""
        prefix = target + "["
        for stage in list(self.worker_activity.keys() | self._running.keys()):
            if stage != target and not stage.startswith(prefix):
                continue
            running = self._running.get(stage, {})
            for key in [k for k, run in running.items() if _same_owner(run.owner, owner)]:
                del running[key]
            self._refresh(stage)

    def _refresh(self, stage: str) -> None:
        running = self._running.get(stage)
        if running:
            self.worker_activity[stage] = max(run.started for run in running.values())
        else:
            self._running.pop(stage, None)
            self.worker_activity.pop(stage, None)

    # ------------------------------------------------------------------ output

    def _emit(
        self, kind: str, name: str, info: dict[str, Any], wait_time: float, message: str
    ) -> None:
        if self.sink is None:
            return
        self.sink(
            BarrierDebugRecord(
                kind=kind,
                barrier_name=name,
                wait_time_s=wait_time,
                expected_count=info["expected_count"],
                completed_count=info["completed_count"],
                waiting_for=tuple(info["waiting_for"]),
                message=message,
            )
        )

    def _reset(self) -> None:
        self.waiting_barriers.clear()
        self.worker_activity.clear()
        self.warned_barriers.clear()
        self._running.clear()
        self._end_status = None


def _same_owner(recorded: str | None, completing: str | None) -> bool:
    """Whether a worker belongs to the completing map; unknown owners match anything."""
    return recorded is None or completing is None or recorded == completing


def _wait_info(payload: Any, timestamp: float) -> dict[str, Any]:
    """The BARRIER_WAIT payload as tracked, tolerating missing or malformed fields."""
    data: dict[Any, Any] = payload if isinstance(payload, dict) else {}
    return {
        "start_time": timestamp,
        "expected_count": _count(data.get("expected_count", 0)),
        "completed_count": _count(data.get("completed_count", 0)),
        "waiting_for": _names(data.get("waiting_for", [])),
        "timeout": data.get("timeout", 0),
    }


def _count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(item) for item in value]
    return []
