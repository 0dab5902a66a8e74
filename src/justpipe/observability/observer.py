"""The observer contract: four async callbacks per run (spec §13.1)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from justpipe.types import Event

__all__ = ["Observer", "ObserverMeta", "ObserverProtocol", "validate_observer"]

_REQUIRED_HOOKS = ("on_pipeline_start", "on_event", "on_pipeline_end", "on_pipeline_error")


@dataclass(frozen=True, slots=True)
class ObserverMeta:
    """Identity of the run an observer callback belongs to."""

    pipe_name: str
    run_id: str | None = None
    started_at: float | None = None
    # a durable run's segment (1: its first run, 2: its first resume...); 1 for other runs
    segment: int = 1


@runtime_checkable
class ObserverProtocol(Protocol):
    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None: ...

    async def on_event(
        self, state: Any, context: Any, meta: ObserverMeta, event: Event
    ) -> None: ...

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None: ...

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None: ...


class Observer:
    """Base class with no-op hooks; override the ones you need (all must stay ``async def``)."""

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        return None

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        return None

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        return None

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        return None


def validate_observer(observer: object) -> None:
    """Raise TypeError unless `observer` has the four hooks, each an ``async def``."""
    missing = [name for name in _REQUIRED_HOOKS if not callable(getattr(observer, name, None))]
    cls = type(observer).__name__
    if missing:
        raise TypeError(
            f"Observer {cls} is missing required hooks: {', '.join(missing)}. "
            "Subclass justpipe.observability.Observer or define all four as async methods."
        )
    for name in _REQUIRED_HOOKS:
        if not inspect.iscoroutinefunction(getattr(observer, name)):
            raise TypeError(
                f"{cls}.{name} must be declared with async def "
                "(observers are awaited inline with event delivery)."
            )
