"""The pipeline definition: registered steps, hooks, middleware and observers.

`_PipelineRegistry` is what the decorators of `Pipe` write to. It checks every
argument at registration time (bad input raises `DefinitionError`/`TypeError`
naming the step and the fix) and freezes after the first run that validates.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from justpipe._checks import check_flag, check_seconds
from justpipe._kernel.injection import (
    HOOK_UNKNOWN_ALLOWED,
    STEP_UNKNOWN_ALLOWED,
    analyze,
    resolve_name,
)
from justpipe.types import (
    BarrierType,
    DefinitionError,
    Event,
    HookSpec,
    InjectionSource,
    NodeKind,
    StepContext,
    Stop,
)

if TYPE_CHECKING:
    from justpipe.observability.observer import ObserverProtocol

__all__ = [
    "DEFAULT_MAX_MAP_ITEMS",
    "_BaseStep",
    "_MapStep",
    "_PipelineRegistry",
    "_StandardStep",
    "_SubPipelineStep",
    "_SwitchStep",
]

DEFAULT_MAX_MAP_ITEMS = 100_000

Middleware = Callable[[Callable[..., Any], StepContext], Callable[..., Any]]
EventHook = Callable[[Event], Event]


# --------------------------------------------------------------------------- steps


class _BaseStep:
    """One registered node. Attribute names follow justpipe 0.12 so external code keeps working."""

    kind: NodeKind = NodeKind.STEP

    def __init__(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        to: list[str],
        barrier_type: BarrierType,
        barrier_timeout: float | None,
        on_error: Callable[..., Any] | None,
        timeout: float | None,
        retries: int | dict[str, Any],
        extra: dict[str, Any],
        pipe_name: str,
    ) -> None:
        self.name = name
        self.to: Any = to
        self.barrier_type = barrier_type
        self.barrier_timeout = barrier_timeout
        self.on_error = on_error
        self.timeout = timeout
        self.retries = retries
        self.extra = extra
        self.pipe_name = pipe_name
        self._original_func = func
        self._active_func = func
        self._wrapped_func: Callable[..., Any] | None = None
        self._wrapped_key: tuple[Any, ...] | None = None
        self.is_streaming = inspect.isasyncgenfunction(func)
        # `@pipe.step(executor=..., on_result=...)` (standard steps only)
        self.executor: Any = None  # an Executor, or the name of one bound at run start
        self.on_result: Callable[..., Any] | None = None
        self.on_result_injection: tuple[tuple[str, str], ...] = ()
        self._proxy: tuple[Callable[..., Any], Callable[..., Any]] | None = None

    # -- compatibility surface
    def get_kind(self) -> NodeKind:
        return self.kind

    def get_targets(self) -> list[str]:
        return list(self.to)

    @property
    def original_func(self) -> Callable[..., Any]:
        return self._original_func

    @property
    def func(self) -> Callable[..., Any]:
        """The function that runs (with middleware applied once the pipe has run)."""
        return self._wrapped_func or self._active_func

    def set_active_func(self, func: Callable[..., Any]) -> None:
        """Swap the function that runs (used by TestPipe); middleware is re-applied lazily."""
        self._active_func = func
        self.is_streaming = inspect.isasyncgenfunction(func)
        self._wrapped_func = None
        self._wrapped_key = None

    def wrap_middleware(self, middleware: list[Middleware]) -> None:
        key = (self._active_func, *middleware)
        if self._wrapped_key == key:
            return
        ctx = StepContext(
            name=self.name, kwargs=self.extra, pipe_name=self.pipe_name, retries=self.retries
        )
        wrapped = self._active_func if self.executor is None else self._offload_proxy()
        for mw in middleware:
            wrapped = mw(wrapped, ctx)
        self._wrapped_func = wrapped
        self._wrapped_key = key

    def _offload_proxy(self) -> Callable[..., Any]:
        """The local stand-in that middleware wraps when the step runs on an executor."""
        from justpipe._kernel.offload import offload_proxy

        func = self._active_func
        if self._proxy is None or self._proxy[0] is not func:
            self._proxy = (func, offload_proxy(self.name, func))
        return self._proxy[1]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind.value}>"


class _StandardStep(_BaseStep):
    kind = NodeKind.STEP


class _MapStep(_BaseStep):
    kind = NodeKind.MAP
    DEFAULT_MAX_ITEMS = DEFAULT_MAX_MAP_ITEMS

    def __init__(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        each: str,
        max_concurrency: int | None,
        max_map_items: int | None,
        **common: Any,
    ) -> None:
        super().__init__(name, func, **common)
        self.each = each
        self.max_concurrency = max_concurrency
        self.max_map_items = max_map_items if max_map_items is not None else DEFAULT_MAX_MAP_ITEMS
        self.max_map_items_explicit = max_map_items is not None

    def get_targets(self) -> list[str]:
        return [self.each, *self.to]


class _SwitchStep(_BaseStep):
    kind = NodeKind.SWITCH

    def __init__(
        self, name: str, func: Callable[..., Any], *, default: str | None, **common: Any
    ) -> None:
        super().__init__(name, func, **common)
        self.default = default

    def get_targets(self) -> list[str]:
        targets: list[str] = []
        if isinstance(self.to, dict):
            targets = [v for v in self.to.values() if isinstance(v, str)]
        if self.default is not None:
            targets.append(self.default)
        return targets

    def routes(self) -> dict[Any, Any] | None:
        return self.to if isinstance(self.to, dict) else None


class _SubPipelineStep(_BaseStep):
    kind = NodeKind.SUB

    def __init__(
        self, name: str, func: Callable[..., Any], *, pipeline: Any, **common: Any
    ) -> None:
        super().__init__(name, func, **common)
        self.pipeline = pipeline


# --------------------------------------------------------------------------- argument checks


@contextmanager
def _naming(step: str) -> Iterator[None]:
    """A parameter check's TypeError/ValueError, as the DefinitionError of step `step`."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise DefinitionError(str(exc), step_name=step) from None


def _check_seconds(step: str, option: str, value: Any) -> None:
    with _naming(step):
        check_seconds(value, f"Step '{step}' has {option}=, which")


def _normalize_to(step: str, to: Any) -> list[str]:
    if to is None or (isinstance(to, (list, tuple)) and not to):
        return []
    if isinstance(to, dict):
        raise DefinitionError(
            f"Step '{step}' uses a dictionary for 'to='. Steps, maps and subs only support "
            "linear transitions (a step name, a function, or a list of them). "
            "Use @pipe.switch(to={...}) for conditional routing.",
            step_name=step,
        )
    items = to if isinstance(to, (list, tuple)) else [to]
    names: list[str] = []
    for item in items:
        if not (isinstance(item, str) or callable(item)):
            raise DefinitionError(
                f"Step '{step}' has invalid 'to=' type: {type(item).__name__}. "
                "Expected a step name (str), a function, or a list of them; leave to= out "
                "(or pass None) for a step without successors.",
                step_name=step,
            )
        _refuse_empty_name(step, "to=", item)
        names.append(resolve_name(item))
    return names


def _refuse_empty_name(step: str, option: str, value: Any) -> None:
    if isinstance(value, str) and not value:
        raise DefinitionError(
            f"Step '{step}' has {option}'': an empty step name names no step. Pass the "
            f"step's name or function (e.g. {option}'save'), or leave it out.",
            step_name=step,
        )


def _check_barrier_type(step: str, barrier_type: Any) -> BarrierType:
    if barrier_type is None:
        return BarrierType.ALL
    if isinstance(barrier_type, BarrierType):
        return barrier_type
    raise DefinitionError(
        f"Step '{step}' has invalid barrier_type={barrier_type!r}: use BarrierType.ALL or "
        "BarrierType.ANY (from justpipe.types).",
        step_name=step,
    )


def _check_retries(step: str, retries: Any) -> int | dict[str, Any]:
    if retries is None:
        return 0
    if isinstance(retries, dict):
        _check_retry_arguments(step, retries)
        return retries
    if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
        return retries
    raise DefinitionError(
        f"Step '{step}' has invalid retries={retries!r}: expected an int >= 0 or a dict of "
        "tenacity.retry() arguments.",
        step_name=step,
    )


def _check_retry_arguments(step: str, retries: dict[Any, Any]) -> None:
    """A `retries={...}` dict holds tenacity.retry() arguments (checked when tenacity is
    installed; without it the step runs without retries, with a warning)."""
    from justpipe.middleware import tenacity_parameters

    known = tenacity_parameters()
    if known is None:
        return
    unknown = [key for key in retries if key not in known]
    if unknown:
        raise DefinitionError(
            f"Step '{step}' has retries={{...}} with {', '.join(map(repr, unknown))}, which "
            f"tenacity.retry() does not take: use its arguments ({', '.join(sorted(known))}), "
            "e.g. retries={'stop': tenacity.stop_after_attempt(3)}, or retries=<int>.",
            step_name=step,
        )
    for key, value in retries.items():
        if key in ("reraise", "enabled"):
            with _naming(step):
                check_flag(value, f"Step '{step}' has retries={{{key!r}: ...}}, which")
        elif key in _TENACITY_CALLS and value is not None and not callable(value):
            raise DefinitionError(
                f"Step '{step}' has retries={{{key!r}: {value!r}}}: tenacity calls {key}, so "
                "pass a tenacity object or a function, e.g. "
                "retries={'stop': tenacity.stop_after_attempt(3)}.",
                step_name=step,
            )


# the tenacity.retry() arguments that tenacity calls
_TENACITY_CALLS = frozenset(
    ("sleep", "stop", "wait", "retry", "before", "after", "before_sleep", "retry_error_callback")
)


def _check_retry_options(step: str, extra: dict[str, Any]) -> None:
    """The options of the default retry middleware, when given (they are kept in `extra`)."""
    with _naming(step):
        for option in ("retry_wait_min", "retry_wait_max"):
            if option in extra:
                check_seconds(
                    extra[option],
                    f"Step '{step}' has {option}=, which",
                    allow_none=False,
                    allow_zero=True,
                )
        if "retry_reraise" in extra:
            check_flag(extra["retry_reraise"], f"Step '{step}' has retry_reraise=, which")


def _check_on_error(step: str, handler: Any) -> None:
    if handler is not None and not callable(handler):
        raise DefinitionError(
            f"Step '{step}' has a non-callable on_error={handler!r}: pass a function "
            "(error, state, ...) -> result.",
            step_name=step,
        )


def _check_executor(step: str, executor: Any) -> Any:
    if executor is None or isinstance(executor, str):
        if isinstance(executor, str) and not executor:
            raise DefinitionError(
                f"Step '{step}' has executor='': name an executor of Pipe(executors={{...}}) "
                "or run(executors={...}), or pass an Executor instance.",
                step_name=step,
            )
        return executor
    from justpipe.executors.base import Executor

    if isinstance(executor, Executor):
        return executor
    raise TypeError(
        f"Step '{step}' has executor={executor!r} ({type(executor).__name__}): pass an "
        "Executor (justpipe.executors.ThreadExecutor(), ProcessExecutor(), DaskExecutor(), "
        "RayExecutor()) or "
        "the name of one given to Pipe(executors={...}) or run(executors={...})."
    )


def _check_on_result(step: str, on_result: Any) -> Callable[..., Any] | None:
    if on_result is None:
        return None
    if callable(on_result):
        handler: Callable[..., Any] = on_result
        return handler
    raise TypeError(
        f"Step '{step}' has a non-callable on_result={on_result!r}: pass a function "
        "(state, item, result) -> None run in the event loop with each value the step returns."
    )


def _check_func(func: Any, what: str) -> None:
    if not callable(func):
        raise TypeError(
            f"{what} must decorate a function (async def, def or async generator), "
            f"got {type(func).__name__}: {func!r}"
        )


def _route_target(step: str, value: Any) -> Any:
    if value is Stop or isinstance(value, Stop):
        return Stop
    if isinstance(value, str) or callable(value):
        if isinstance(value, str) and not value:
            raise DefinitionError(
                f"Step '{step}' (switch) routes to '': an empty step name names no step. "
                "Use a step's name or function, or Stop to end the branch.",
                step_name=step,
            )
        return resolve_name(value)
    raise DefinitionError(
        f"Step '{step}' has invalid routing target type: {type(value).__name__}. "
        "Switch routes must map to a step name (str), a function, or Stop.",
        step_name=step,
    )


# --------------------------------------------------------------------------- registry


class _PipelineRegistry:
    """Mutable definition of one pipeline until the first validated run freezes it."""

    def __init__(self, pipe_name: str, state_type: type, context_type: type) -> None:
        self.pipe_name = pipe_name
        self.state_type = state_type
        self.context_type = context_type
        self.steps: dict[str, _BaseStep] = {}
        self.topology: dict[str, list[str]] = {}
        self.injection_metadata: dict[str, dict[str, InjectionSource]] = {}
        self.error_injection: dict[str, dict[str, InjectionSource]] = {}
        self.startup_hooks: list[HookSpec] = []
        self.shutdown_hooks: list[HookSpec] = []
        self.error_hook: HookSpec | None = None
        self.middleware: list[Middleware] = []
        self.event_hooks: list[EventHook] = []
        self.observers: list[ObserverProtocol] = []
        self._frozen = False
        self.version = 0  # bumped on every change; keys the plan cache
        self._finalized: tuple[int, tuple[Middleware, ...]] | None = None

    # -- freezing
    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        self._frozen = True

    def _assert_mutable(self, what: str) -> None:
        if self._frozen:
            raise RuntimeError(
                f"Cannot {what}: pipeline '{self.pipe_name}' definition is frozen after first run. "
                "Register everything before calling run(), or build a new Pipe."
            )

    def touch(self) -> None:
        self.version += 1

    # -- steps
    def add_step(self, step: _BaseStep, injection: dict[str, InjectionSource]) -> None:
        self._assert_mutable(f"register step '{step.name}'")
        existing = self.steps.get(step.name)
        if existing is not None:
            old = getattr(existing.original_func, "__name__", "?")
            new = getattr(step.original_func, "__name__", "?")
            both = (
                f" Previously registered by function '{old}', now by '{new}'." if old != new else ""
            )
            raise DefinitionError(
                f"Step '{step.name}' is already registered.{both} Step names must be unique "
                "within a pipeline: rename one with @pipe.step('unique_name') or remove the "
                "duplicate decorator.",
                step_name=step.name,
            )
        self.steps[step.name] = step
        self.injection_metadata[step.name] = injection
        if step.kind is not NodeKind.SWITCH and step.to:
            self.topology[step.name] = list(step.to)
        self.touch()

    def analyze_step(self, func: Callable[..., Any], name: str) -> dict[str, InjectionSource]:
        return analyze(
            func,
            name=name,
            state_type=self.state_type,
            context_type=self.context_type,
            allowed_unknown=STEP_UNKNOWN_ALLOWED,
        )

    def analyze_handler(self, func: Callable[..., Any], owner: str) -> dict[str, InjectionSource]:
        return analyze(
            func,
            name=resolve_name(func) if owner == "" else owner,
            state_type=self.state_type,
            context_type=self.context_type,
            allowed_unknown=HOOK_UNKNOWN_ALLOWED,
            role="hook or error handler",
        )

    def build_step(
        self,
        kind: NodeKind,
        func: Any,
        name: Any,
        *,
        to: Any = None,
        barrier_timeout: Any = None,
        barrier_type: Any = None,
        on_error: Any = None,
        options: dict[str, Any] | None = None,
        each: Any = None,
        max_concurrency: Any = None,
        max_map_items: int | None = None,
        routes: Any = None,
        default: Any = None,
        pipeline: Any = None,
    ) -> _BaseStep:
        """Check every argument and build the step object (not yet registered)."""
        _check_func(func, f"@pipe.{_DECORATOR[kind]}")
        if isinstance(name, str) and not name:
            raise DefinitionError(
                f"@pipe.{_DECORATOR[kind]}('') gives {resolve_name(func)!r} an empty name: pass "
                "a name (e.g. @pipe.step('load')) or leave it out to use the function's name.",
                step_name=resolve_name(func),
            )
        step_name = resolve_name(name if name is not None else func)
        extra = dict(options or {})
        timeout = extra.pop("timeout", None)
        executor = extra.pop("executor", None)
        on_result = extra.pop("on_result", None)
        if kind is not NodeKind.STEP and (executor is not None or on_result is not None):
            option = "executor" if executor is not None else "on_result"
            raise DefinitionError(
                f"Step '{step_name}' (@pipe.{_DECORATOR[kind]}) does not take {option}=: "
                "pass it to a @pipe.step (for a map, to its worker step, the one named by "
                "each=).",
                step_name=step_name,
            )
        retries = _check_retries(step_name, extra.pop("retries", 0))
        _check_retry_options(step_name, extra)
        _check_seconds(step_name, "timeout", timeout)
        _check_seconds(step_name, "barrier_timeout", barrier_timeout)
        _check_on_error(step_name, on_error)
        common: dict[str, Any] = {
            "to": [] if kind is NodeKind.SWITCH else _normalize_to(step_name, to),
            "barrier_type": _check_barrier_type(step_name, barrier_type),
            "barrier_timeout": barrier_timeout,
            "on_error": on_error,
            "timeout": timeout,
            "retries": retries,
            "extra": extra,
            "pipe_name": self.pipe_name,
        }
        if kind is NodeKind.MAP:
            return _MapStep(
                step_name,
                func,
                each=self._check_each(step_name, each),
                max_concurrency=self._check_concurrency(step_name, max_concurrency),
                max_map_items=max_map_items,
                **common,
            )
        if kind is NodeKind.SWITCH:
            step: _BaseStep = _SwitchStep(
                step_name, func, default=self._check_default(step_name, default), **common
            )
            step.to = self._check_routes(step_name, routes)
            return step
        if kind is NodeKind.SUB:
            return _SubPipelineStep(
                step_name, func, pipeline=self._check_pipeline(step_name, pipeline), **common
            )
        step = _StandardStep(step_name, func, **common)
        step.executor = _check_executor(step_name, executor)
        step.on_result = _check_on_result(step_name, on_result)
        return step

    @staticmethod
    def _check_each(step: str, each: Any) -> str:
        if each is None:
            raise DefinitionError(
                f"Step '{step}' (map) requires 'each': the name (or function) of the worker "
                "step run once per item, e.g. @pipe.map(each='process_item').",
                step_name=step,
            )
        if not (isinstance(each, str) or callable(each)):
            raise DefinitionError(
                f"Step '{step}' (map) has invalid 'each' type: {type(each).__name__}. "
                "Expected a step name (str) or a function.",
                step_name=step,
            )
        _refuse_empty_name(step, "each=", each)
        return resolve_name(each)

    @staticmethod
    def _check_concurrency(step: str, value: Any) -> int | None:
        if value is None or value == 0:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise DefinitionError(
            f"Step '{step}' (map) has invalid max_concurrency={value!r}: expected an int > 0 "
            "(or None for unbounded).",
            step_name=step,
        )

    @staticmethod
    def _check_routes(step: str, routes: Any) -> Any:
        if routes is None:
            raise DefinitionError(
                f"Step '{step}' (switch) requires a 'to' parameter (dict or callable): a routing "
                "table {return_value: step} or a function mapping the return value to a step.",
                step_name=step,
            )
        if isinstance(routes, dict):
            return {key: _route_target(step, value) for key, value in routes.items()}
        if callable(routes):
            return routes
        raise DefinitionError(
            f"Step '{step}' is a switch but 'to' is {type(routes).__name__}. The 'to' parameter "
            "of @pipe.switch must be a dictionary (routing table) or a callable (router).",
            step_name=step,
        )

    @staticmethod
    def _check_default(step: str, default: Any) -> str | None:
        if default is None:
            return None
        if isinstance(default, str) or callable(default):
            _refuse_empty_name(step, "default=", default)
            return resolve_name(default)
        raise DefinitionError(
            f"Step '{step}' (switch) has invalid default={default!r}: expected a step name or "
            "function.",
            step_name=step,
        )

    @staticmethod
    def _check_pipeline(step: str, pipeline: Any) -> Any:
        if pipeline is None:
            raise DefinitionError(
                f"Step '{step}' (sub) requires 'pipeline': the Pipe to run, e.g. "
                "@pipe.sub(pipeline=child_pipe).",
                step_name=step,
            )
        if not (hasattr(pipeline, "run") and hasattr(pipeline, "registry")):
            raise DefinitionError(
                f"Step '{step}' (sub) has invalid pipeline={pipeline!r}: expected a justpipe "
                "Pipe instance.",
                step_name=step,
            )
        return pipeline

    # -- hooks
    def _hook(self, func: Any, what: str) -> HookSpec:
        _check_func(func, f"@pipe.{what}")
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            raise DefinitionError(
                f"@pipe.{what} got {resolve_name(func)!r}, a generator function: a hook is "
                "called once and its result is not iterated, so its body would never run. "
                "Define it with def or async def, without yield.",
                step_name=resolve_name(func),
            )
        return HookSpec(func=func, injection_metadata=self.analyze_handler(func, ""))

    def on_startup(self, func: Any) -> None:
        self._assert_mutable("add a startup hook")
        self.startup_hooks.append(self._hook(func, "on_startup"))
        self.touch()

    def on_shutdown(self, func: Any) -> None:
        self._assert_mutable("add a shutdown hook")
        self.shutdown_hooks.append(self._hook(func, "on_shutdown"))
        self.touch()

    def on_error(self, func: Any) -> None:
        self._assert_mutable("set the error handler")
        self.error_hook = self._hook(func, "on_error")
        self.touch()

    # -- middleware, event hooks, observers
    def add_middleware(self, middleware: Middleware) -> None:
        self._assert_mutable("add middleware")
        if not callable(middleware):
            raise TypeError(
                f"Middleware must be a callable (func, StepContext) -> func, got {middleware!r}"
            )
        self.middleware.append(middleware)
        self.touch()

    def add_event_hook(self, hook: EventHook) -> None:
        self._assert_mutable("add an event hook")
        if not callable(hook):
            raise TypeError(f"Event hooks must be callables Event -> Event, got {hook!r}")
        self.event_hooks.append(hook)
        self.touch()

    def add_observer(self, observer: ObserverProtocol) -> None:
        from justpipe.observability.observer import validate_observer

        self._assert_mutable("add an observer")
        validate_observer(observer)
        self.observers.append(observer)
        self.touch()

    # -- finalisation
    def finalize(self) -> None:
        """Apply middleware to every step whose wrapper is missing or stale.

        Called before every run: O(1) when nothing changed since the last call. A
        middleware list mutated in place (`pipe.middleware.append(...)`) counts as a
        change (it bumps `version`, so cached plans holding the old wrappers are not used).
        """
        middleware = tuple(self.middleware)
        if self._finalized == (self.version, middleware):
            return
        if self._finalized is not None and self._finalized[1] != middleware:
            self.touch()
        for step in self.steps.values():
            step.wrap_middleware(self.middleware)
        self._finalized = (self.version, middleware)


_DECORATOR = {
    NodeKind.STEP: "step",
    NodeKind.MAP: "map",
    NodeKind.SWITCH: "switch",
    NodeKind.SUB: "sub",
}
