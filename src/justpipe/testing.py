"""Testing harness: mock steps and hooks, run a pipeline, inspect its events (spec §14)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from unittest.mock import AsyncMock

from justpipe.pipe import Pipe
from justpipe.types import Event, EventType, HookSpec

__all__ = ["TestPipe", "TestResult"]

S = TypeVar("S")
C = TypeVar("C")


@dataclass
class TestResult(Generic[S]):
    """Every event of one run, and the state as the last step left it."""

    __test__ = False

    events: list[Event] = field(default_factory=list)
    final_state: Any = None

    def filter(self, event_type: EventType) -> list[Event]:
        return [e for e in self.events if e.type is event_type]

    @property
    def step_starts(self) -> list[str]:
        return [e.stage for e in self.events if e.type is EventType.STEP_START]

    @property
    def tokens(self) -> list[Any]:
        return [e.payload for e in self.events if e.type is EventType.TOKEN]

    def was_called(self, stage: str) -> bool:
        return any(e.stage == stage for e in self.events)

    def find_error(self, stage: str | None = None) -> str | None:
        for e in self.events:
            if e.type is EventType.STEP_ERROR and (stage is None or e.stage == stage):
                return str(e.payload)
        return None


def _mock_wrapper(mock: AsyncMock) -> Callable[..., Any]:
    """An async function awaiting `mock`; it streams when the side effect is an async generator."""
    side = mock.side_effect
    if inspect.isasyncgenfunction(side):

        async def stream(**kwargs: Any) -> Any:
            mock(**kwargs).close()  # records the call; the side effect itself streams below
            async for item in side(**kwargs):
                yield item

        return stream

    async def call(**kwargs: Any) -> Any:
        return await mock(**kwargs)

    return call


class TestPipe(Generic[S, C]):
    """Wraps a Pipe for tests: replace steps/hooks with mocks, run, restore."""

    __test__ = False

    def __init__(self, pipe: Pipe[Any, Any]) -> None:
        self.pipe = pipe
        self._steps: dict[str, Callable[..., Any]] = {}
        self._startup: list[HookSpec] | None = None
        self._error_hook: HookSpec | None = None
        self._error_hook_saved = False

    def mock(self, step_name: str, return_value: Any = None, side_effect: Any = None) -> AsyncMock:
        steps = self.pipe.registry.steps
        step = steps.get(step_name)
        if step is None:
            close = difflib.get_close_matches(step_name, list(steps), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"Step '{step_name}' not found. Available: {', '.join(steps)}.{hint}")
        mock = AsyncMock(return_value=return_value, side_effect=side_effect)
        self._steps.setdefault(step_name, step._active_func)
        step.set_active_func(_mock_wrapper(mock))
        self.pipe.registry.touch()
        return mock

    def mock_startup(self, return_value: Any = None, side_effect: Any = None) -> AsyncMock:
        reg = self.pipe.registry
        if self._startup is None:
            self._startup = list(reg.startup_hooks)
        mock = AsyncMock(return_value=return_value, side_effect=side_effect)
        reg.startup_hooks[:] = [
            HookSpec(func=_mock_wrapper(mock), injection_metadata=h.injection_metadata)
            for h in self._startup
        ]
        reg.touch()
        return mock

    def mock_on_error(self, return_value: Any = None, side_effect: Any = None) -> AsyncMock:
        reg = self.pipe.registry
        hook = reg.error_hook if not self._error_hook_saved else self._error_hook
        if hook is None:
            raise ValueError(
                "No global error hook registered: add one with @pipe.on_error before mocking it."
            )
        if not self._error_hook_saved:
            self._error_hook, self._error_hook_saved = hook, True
        mock = AsyncMock(return_value=return_value, side_effect=side_effect)
        reg.error_hook = HookSpec(
            func=_mock_wrapper(mock), injection_metadata=hook.injection_metadata
        )
        reg.touch()
        return mock

    def restore(self) -> None:
        reg = self.pipe.registry
        for name, func in self._steps.items():
            reg.steps[name].set_active_func(func)
        if self._startup is not None:
            reg.startup_hooks[:] = self._startup
        if self._error_hook_saved:
            reg.error_hook = self._error_hook
        self._steps.clear()
        self._startup = None
        self._error_hook = None
        self._error_hook_saved = False
        reg.touch()

    def __enter__(self) -> TestPipe[S, C]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    async def run(self, state: S, context: C | None = None, **kwargs: Any) -> TestResult[S]:
        result: TestResult[S] = TestResult(events=[], final_state=state)
        own = self.pipe.registry.steps
        async for event in self.pipe.run(state, context, **kwargs):
            result.events.append(event)
            if event.type is EventType.START or (
                event.type is EventType.STEP_END and event.stage in own
            ):
                result.final_state = event.payload
        return result
