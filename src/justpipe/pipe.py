"""`Pipe`: decorate async functions to build the graph, then stream a run with `pipe.run()`."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NewType, TypeVar, cast, get_origin, overload

from justpipe._checks import check_count, check_flag, check_name, check_seconds
from justpipe._kernel.injection import analyze_on_result, resolve_name
from justpipe._kernel.plan import ExecutionPlan, compile_plan
from justpipe._kernel.registry import Middleware, _PipelineRegistry
from justpipe._kernel.runner import _PipelineRunner
from justpipe._kernel.validation import validate
from justpipe.middleware import tenacity_retry_middleware
from justpipe.observability.observer import ObserverProtocol
from justpipe.outcome import (
    RunFailed,
    RunOutcome,
    StateCapture,
    collect_outcome,
    observing_next_run,
    run_sync,
    take_run_observers,
)
from justpipe.types import (
    BarrierType,
    CancellationToken,
    DefinitionError,
    Event,
    FailureClassificationConfig,
    NodeKind,
    PipelineValidationWarning,
    StepInfo,
)

__all__ = ["Pipe"]

StateT = TypeVar("StateT")
ContextT = TypeVar("ContextT")
F = TypeVar("F", bound=Callable[..., Any])

_TRUTHY = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


@dataclass(slots=True)
class _RunSetup:
    registry: _PipelineRegistry
    plan: ExecutionPlan
    observers: list[ObserverProtocol]
    pipe_name: str
    token: CancellationToken
    max_retries: int
    failure_config: FailureClassificationConfig
    metadata: dict[str, Any]
    executors: dict[str, Any]


class Pipe(Generic[StateT, ContextT]):
    """A pipeline: steps registered with decorators, run as a stream of events."""

    def __init__(
        self,
        state_type: Any = None,
        context_type: Any = None,
        *,
        name: str = "Pipe",
        strict: bool = True,
        allow_multi_root: bool = False,
        middleware: list[Middleware] | None = None,
        queue_size: int = 1000,
        max_map_items: int | None = None,
        debug: bool | None = None,
        cancellation_token: CancellationToken | None = None,
        failure_classification: FailureClassificationConfig | None = None,
        metadata: dict[str, Any] | None = None,
        persist: bool | None = None,
        flush_interval: int | None = None,
        max_retries: int = 100,
        executors: dict[str, Any] | None = None,
        durable: Any = None,
    ) -> None:
        _check_options(
            name=name,
            strict=strict,
            allow_multi_root=allow_multi_root,
            queue_size=queue_size,
            max_map_items=max_map_items,
            debug=debug,
            cancellation_token=cancellation_token,
            failure_classification=failure_classification,
            metadata=metadata,
            persist=persist,
            flush_interval=flush_interval,
            max_retries=max_retries,
        )
        _check_type_option("state_type", state_type)
        _check_type_option("context_type", context_type)
        self.name = name
        self.strict = strict
        self.allow_multi_root = allow_multi_root
        self.queue_size = _channel_size(queue_size)
        self.state_type: type = type(None) if state_type is None else state_type
        self.context_type: type = type(None) if context_type is None else context_type
        self.max_map_items = max_map_items
        self.max_retries = max_retries
        self.flush_interval = flush_interval
        self.metadata: dict[str, Any] = dict(metadata or {})
        # name -> Executor, for steps with executor="name" (run(executors=...) rebinds per run)
        self.executors: dict[str, Any] = _check_executors("Pipe(executors=...)", executors)
        self.cancellation_token = cancellation_token or CancellationToken()
        self.failure_classification = failure_classification or FailureClassificationConfig()
        self.persist = _env_flag("JUSTPIPE_PERSIST") if persist is None else bool(persist)
        # durable runs (justpipe.durable, docs/durable.md): a `Durable`, None for plain runs
        self.durable: Any = None
        if durable is not None and durable is not False:
            from justpipe.durable.api import as_durable

            self.durable = as_durable(durable)
            if self.durable.store is None and persist is None:
                self.persist = True  # the default store is the run store: keep the run too
        self.registry = _PipelineRegistry(name, self.state_type, self.context_type)
        self.registry.middleware.extend(
            [tenacity_retry_middleware] if middleware is None else _check_middleware(middleware)
        )
        self._validated: dict[tuple[int, str | None, bool, bool], list[str]] = {}
        self._plans: dict[tuple[int, str | None], ExecutionPlan] = {}
        if _env_flag("JUSTPIPE_DEBUG") if debug is None else debug:
            from justpipe.observability.logger import EventLogger

            self.add_observer(
                EventLogger(level="INFO", sink=EventLogger.stderr_sink(), use_colors=True)
            )

    # ------------------------------------------------------------------ registration

    @property
    def middleware(self) -> list[Middleware]:
        return self.registry.middleware

    def _register(self, kind: NodeKind, func: Any, name: Any, **kw: Any) -> Any:
        step = self.registry.build_step(kind, func, name, **kw)
        injection = self.registry.analyze_step(func, step.name)
        if step.on_error is not None:
            self.registry.error_injection[step.name] = self.registry.analyze_handler(
                step.on_error, ""
            )
        if step.on_result is not None:
            step.on_result_injection = analyze_on_result(
                step.on_result,
                name=step.name,
                state_type=self.registry.state_type,
                context_type=self.registry.context_type,
            )
        if step.executor is not None and _copies_arguments(step.executor, self.executors):
            _warn_copies(step.name, injection)
        self.registry.add_step(step, injection)
        return func

    @overload
    def step(self, name: F) -> F: ...

    @overload
    def step(
        self,
        name: str | None = None,
        to: Any = None,
        barrier_timeout: float | None = None,
        barrier_type: BarrierType | None = None,
        on_error: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        name: str | Callable[..., Any] | None = None,
        to: Any = None,
        barrier_timeout: float | None = None,
        barrier_type: BarrierType | None = None,
        on_error: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Register a step: `@pipe.step`, `@pipe.step("name", to=...)` or `pipe.step(func)`."""
        if (
            callable(name)
            and to is None
            and not kwargs
            and barrier_timeout is None
            and barrier_type is None
            and on_error is None
        ):
            return self._register(NodeKind.STEP, name, None)

        def decorator(func: F) -> F:
            self._register(
                NodeKind.STEP,
                func,
                name,
                to=to,
                barrier_timeout=barrier_timeout,
                barrier_type=barrier_type,
                on_error=on_error,
                options=kwargs,
            )
            return func

        return decorator

    def map(
        self,
        name: str | Callable[..., Any] | None = None,
        each: Any = None,
        to: Any = None,
        barrier_timeout: float | None = None,
        barrier_type: BarrierType | None = None,
        on_error: Callable[..., Any] | None = None,
        max_concurrency: int | None = None,
        **kwargs: Any,
    ) -> Callable[[F], F]:
        """Register a map: the function returns items; `each` runs once per item."""
        self._assert_factory_name("map", name)

        def decorator(func: F) -> F:
            self._register(
                NodeKind.MAP,
                func,
                name,
                to=to,
                barrier_timeout=barrier_timeout,
                barrier_type=barrier_type,
                on_error=on_error,
                options=kwargs,
                each=each,
                max_concurrency=max_concurrency,
                max_map_items=self.max_map_items,
            )
            return func

        return decorator

    def switch(
        self,
        name: str | Callable[..., Any] | None = None,
        to: Any = None,
        default: Any = None,
        barrier_timeout: float | None = None,
        barrier_type: BarrierType | None = None,
        on_error: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Callable[[F], F]:
        """Register a switch: its return value picks the next step via `to` (dict or router)."""
        self._assert_factory_name("switch", name)

        def decorator(func: F) -> F:
            self._register(
                NodeKind.SWITCH,
                func,
                name,
                routes=to,
                default=default,
                barrier_timeout=barrier_timeout,
                barrier_type=barrier_type,
                on_error=on_error,
                options=kwargs,
            )
            return func

        return decorator

    def sub(
        self,
        name: str | Callable[..., Any] | None = None,
        pipeline: Pipe[Any, Any] | None = None,
        to: Any = None,
        barrier_timeout: float | None = None,
        barrier_type: BarrierType | None = None,
        on_error: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Callable[[F], F]:
        """Register a sub-pipeline step: the function returns the child run's state."""
        self._assert_factory_name("sub", name)

        def decorator(func: F) -> F:
            self._register(
                NodeKind.SUB,
                func,
                name,
                to=to,
                barrier_timeout=barrier_timeout,
                barrier_type=barrier_type,
                on_error=on_error,
                options=kwargs,
                pipeline=pipeline,
            )
            return func

        return decorator

    @staticmethod
    def _assert_factory_name(what: str, name: Any) -> None:
        if callable(name) and not isinstance(name, str):
            example = {
                "map": "@pipe.map(each='worker')",
                "switch": "@pipe.switch(to={'yes': 'accept', 'no': 'reject'})",
                "sub": "@pipe.sub(pipeline=child_pipe)",
            }[what]
            raise DefinitionError(
                f"@pipe.{what} needs arguments: write it with parentheses, e.g. {example}.",
                step_name=resolve_name(name),
            )

    def on_startup(self, func: F) -> F:
        self.registry.on_startup(func)
        return func

    def on_shutdown(self, func: F) -> F:
        self.registry.on_shutdown(func)
        return func

    def on_error(self, func: F) -> F:
        self.registry.on_error(func)
        return func

    def add_middleware(self, middleware: Middleware) -> None:
        self.registry.add_middleware(middleware)

    def add_event_hook(self, hook: Callable[[Event], Event]) -> None:
        self.registry.add_event_hook(hook)

    def add_observer(self, observer: ObserverProtocol) -> None:
        self.registry.add_observer(observer)

    # ------------------------------------------------------------------ introspection

    @property
    def topology(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.registry.topology.items()}

    def steps(self) -> Iterator[StepInfo]:
        from justpipe._kernel.introspection import step_infos

        return step_infos(self)

    def describe(self) -> dict[str, Any]:
        from justpipe._kernel.introspection import describe

        return describe(self)

    def graph(self, renderer: Any = None) -> str:
        from justpipe._kernel.introspection import render_graph

        return render_graph(self, renderer)

    # ------------------------------------------------------------------ validation and runs

    def validate(
        self,
        start: str | Callable[..., Any] | None = None,
        strict: bool | None = None,
        allow_multi_root: bool | None = None,
    ) -> None:
        """Check the graph (spec §6): DefinitionError for problems, warnings for doubts."""
        check_flag(strict, "validate(strict=...)", allow_none=True)
        check_flag(allow_multi_root, "validate(allow_multi_root=...)", allow_none=True)
        self._validate(start, strict, allow_multi_root, stacklevel=3)

    def _validate(
        self, start: Any, strict: bool | None, allow_multi_root: bool | None, stacklevel: int
    ) -> None:
        start_name = resolve_name(start) if start is not None else None
        strict = self.strict if strict is None else strict
        multi = self.allow_multi_root if allow_multi_root is None else allow_multi_root
        key = (self.registry.version, start_name, strict, multi)
        found = self._validated.get(key)
        if found is None:
            found = validate(self.registry, start_name, strict, multi)
            self._validated = {key: found}
        for message in found:
            warnings.warn(message, PipelineValidationWarning, stacklevel=stacklevel)

    def run(
        self,
        state: StateT,
        context: ContextT | None = None,
        start: str | Callable[..., Any] | None = None,
        queue_size: int | None = None,
        timeout: float | None = None,
        *,
        executors: dict[str, Any] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Run the pipeline; iterate the returned async generator for its events.

        `executors` binds executor names for this run (before `Pipe(executors=...)`).
        Nothing happens until the first ``__anext__()``: validation errors surface there.
        """
        queue_size, timeout = _check_run_args("run", start, queue_size, timeout)
        bound = _check_executors("run(executors=...)", executors) if executors is not None else {}
        if self.durable is not None:
            from justpipe.durable.api import durable_run

            args = {
                "state": state,
                "context": context,
                "start": start,
                "queue_size": queue_size,
                "timeout": timeout,
                "executors": bound,
            }
            return durable_run(self, args)
        return _PipelineRunner(self, state, context, start, queue_size, timeout, bound).stream()

    def resume(
        self,
        run_id: str,
        value: Any = None,
        *,
        context: ContextT | None = None,
        force: bool = False,
        queue_size: int | None = None,
        timeout: float | None = None,
        executors: dict[str, Any] | None = None,
        start: Any = None,
    ) -> AsyncGenerator[Event, None]:
        """Continue durable run `run_id` (suspended, or whose process died) in this process.

        Returns the same kind of event stream as `run()`: the same `run_id`, `seq` going on
        from the last checkpoint. `value` is what `justpipe.durable.resume_value()` returns
        in the steps of this segment (the human's answer to a `Suspend`). The run's state
        comes from its checkpoint; `context` is this segment's. Refused before anything
        runs: an unknown or finished run, a changed pipeline (unless `force=True`), a run
        another live process executes. See docs/durable.md.
        """
        if self.durable is None:
            raise ValueError(
                f"Pipe {self.name!r} is not durable: resume() continues durable runs only. "
                "Create it with Pipe(..., durable=True) (or durable=<CheckpointStore>)."
            )
        if start is not None:
            raise ValueError(
                f"resume({run_id!r}, start=...) is not allowed: a durable run resumes where its "
                "checkpoint stopped (its pending steps and the suspending step's successors). "
                "To run from a given step, use a new run: pipe.run(state, start=...)."
            )
        _check_run_id("resume(run_id)", run_id)
        check_flag(force, "resume(force=...)")
        queue_size, timeout = _check_run_args("resume", None, queue_size, timeout)
        bound = _check_executors("resume(executors=...)", executors)
        from justpipe.durable.api import durable_resume

        args = {
            "context": context,
            "start": None,
            "queue_size": queue_size,
            "timeout": timeout,
            "executors": bound,
        }
        return durable_resume(self, run_id, value, force, args)

    async def execute(
        self,
        state: StateT | None = None,
        context: ContextT | None = None,
        *,
        resume: str | None = None,
        value: Any = None,
        force: bool = False,
        start: str | Callable[..., Any] | None = None,
        queue_size: int | None = None,
        timeout: float | None = None,
        executors: dict[str, Any] | None = None,
        raise_on_failure: bool = False,
    ) -> RunOutcome:
        """Run the pipeline to its end (or, with `resume=run_id`, go on with a durable run)
        and return how it ended: status, final state, run id, the failing step and error.

        The events are consumed here; use `run()` to see them. With `raise_on_failure`,
        a run that did not succeed raises `RunFailed` (its `.outcome` is the outcome).
        `resume`, `value` and `force` are those of `resume()`; the other arguments those
        of `run()`.
        """
        check_flag(raise_on_failure, "execute(raise_on_failure=...)")
        check_flag(force, "execute(force=...)")
        if resume is not None:
            _check_run_id("execute(resume=...)", resume)
        # run()/resume() check these again, naming themselves: name execute() first
        _check_run_args("execute", start, queue_size, timeout)
        if executors is not None:
            _check_executors("execute(executors=...)", executors)
        capture: StateCapture | None = None
        if resume is None:
            if value is not None or force:
                raise ValueError(
                    "execute(value=..., force=...) belong to a resumed run: pass "
                    "resume=<run id> too, or leave them out to start a new run."
                )
            run_state = cast(StateT, state)  # None is a state too (steps that take none)
            events = self.run(run_state, context, start, queue_size, timeout, executors=executors)
        else:
            if state is not None:
                raise ValueError(
                    f"execute(state, resume={resume!r}): a resumed run continues with the "
                    "state of its checkpoint; leave state out (pass value= for the answer "
                    "its Suspend waits for)."
                )
            events = self.resume(
                resume,
                value,
                context=context,
                force=force,
                queue_size=queue_size,
                timeout=timeout,
                executors=executors,
                start=start,
            )
            capture = StateCapture()
        if capture is None:
            outcome = await collect_outcome(self.name, events, state, None)
        else:
            with observing_next_run(capture):
                outcome = await collect_outcome(self.name, events, None, capture)
        if raise_on_failure and not outcome.ok:
            raise RunFailed(outcome)
        return outcome

    def execute_sync(
        self,
        state: StateT | None = None,
        context: ContextT | None = None,
        *,
        resume: str | None = None,
        value: Any = None,
        force: bool = False,
        start: str | Callable[..., Any] | None = None,
        queue_size: int | None = None,
        timeout: float | None = None,
        executors: dict[str, Any] | None = None,
        raise_on_failure: bool = False,
    ) -> RunOutcome:
        """`execute()` for scripts: runs its own event loop (`asyncio.run`). Refused inside
        a running event loop, where `await pipe.execute(...)` is the way."""
        return run_sync(
            self.execute(
                state,
                context,
                resume=resume,
                value=value,
                force=force,
                start=start,
                queue_size=queue_size,
                timeout=timeout,
                executors=executors,
                raise_on_failure=raise_on_failure,
            ),
            "execute",
        )

    def _prepare_run(self, start: Any) -> _RunSetup:
        start_name = resolve_name(start) if start is not None else None
        # warnings point at the consumer's `async for` (validate <- _prepare_run <- runner)
        self._validate(start_name, None, None, stacklevel=5)
        reg = self.registry
        reg.finalize()
        reg.freeze()
        key = (reg.version, start_name)
        plan = self._plans.get(key)
        if plan is None:
            plan = compile_plan(reg, start_name) if reg.steps else _EMPTY_PLAN
            if len(self._plans) > 32:
                self._plans.clear()
            self._plans[key] = plan
        observers: list[ObserverProtocol] = [*reg.observers, *take_run_observers()]
        if self.persist:
            from justpipe.storage.persistence import create_persistence_observer

            observers.append(create_persistence_observer(self))
        return _RunSetup(
            registry=reg,
            plan=plan,
            observers=observers,
            pipe_name=self.name,
            token=self.cancellation_token,
            max_retries=self.max_retries,
            failure_config=self.failure_classification,
            metadata=self.metadata,
            executors=self.executors,
        )

    def __repr__(self) -> str:
        return f"Pipe(name={self.name!r}, steps={len(self.registry.steps)})"


_EMPTY_PLAN = ExecutionPlan(
    nodes=(), index={}, roots=(), successor_slots=(), slot_counts=(), any_flags=(), step_names=""
)


def _check_options(**options: Any) -> None:
    """`Pipe(...)`'s own options (the executors, middleware and durable ones apart)."""
    check_name(options["name"], "Pipe(name=...)")
    for flag in ("strict", "allow_multi_root"):
        check_flag(options[flag], f"Pipe({flag}=...)")
    for flag in ("debug", "persist"):
        check_flag(options[flag], f"Pipe({flag}=...)", allow_none=True)
    check_count(options["queue_size"], "Pipe(queue_size=...)", minimum=0)
    check_count(options["max_map_items"], "Pipe(max_map_items=...)", minimum=1, allow_none=True)
    check_count(options["flush_interval"], "Pipe(flush_interval=...)", minimum=1, allow_none=True)
    check_count(options["max_retries"], "Pipe(max_retries=...)", minimum=1)
    token = options["cancellation_token"]
    if token is not None and not isinstance(token, CancellationToken):
        raise TypeError(
            f"Pipe(cancellation_token=...) must be a CancellationToken, got {type(token).__name__}"
        )
    failure_classification = options["failure_classification"]
    if failure_classification is not None and not isinstance(
        failure_classification, FailureClassificationConfig
    ):
        raise TypeError(
            "Pipe(failure_classification=...) must be a FailureClassificationConfig, got "
            f"{type(failure_classification).__name__}"
        )
    metadata = options["metadata"]
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"Pipe(metadata=...) must be a dict, got {type(metadata).__name__}")


def _check_type_option(option: str, value: Any) -> None:
    """`state_type` / `context_type`: a class or a typing construct, not an instance."""
    if value is None or isinstance(value, (type, TypeVar, NewType)):
        return
    if value is Any or get_origin(value) is not None:
        return
    if isinstance(value, str):
        raise TypeError(
            f"Pipe({option}=...) must be a type, got the string {value!r}. To name the "
            f"pipeline, use Pipe(name={value!r}) (the first positional argument is the "
            "state's type, e.g. Pipe(dict, name=...))."
        )
    raise TypeError(
        f"Pipe({option}=...) must be a type (the class of the {option.split('_')[0]}), got "
        f"an instance of {type(value).__name__}: {value!r}. Pass the class, e.g. "
        f"Pipe({type(value).__name__}); the {option.split('_')[0]} itself goes to "
        "pipe.run(state, context)."
    )


def _channel_size(queue_size: int) -> int:
    """A `queue_size` beyond what the channel can count is as good as unbounded.

    0.12's asyncio.Queue took any int; the compiled channel counts in a C `ssize_t`,
    so larger bounds (which no run can reach) become the largest one it can hold.
    """
    return min(queue_size, sys.maxsize)


def _check_middleware(middleware: Any) -> list[Middleware]:
    if not isinstance(middleware, (list, tuple)) or not all(callable(m) for m in middleware):
        raise TypeError(
            f"Pipe(middleware=...) must be a list of callables (func, StepContext) -> func, "
            f"got {middleware!r}. Pass [] for none, or omit it to keep the retry middleware."
        )
    return list(middleware)


def _copies_arguments(executor: Any, known: dict[str, Any]) -> bool:
    """Whether a step's executor (or the one its name is bound to now) gets pickled
    copies; a name bound only later, at run(), is assumed to, as every remote one does."""
    found = known.get(executor) if isinstance(executor, str) else executor
    return bool(getattr(found, "copies_arguments", True))


def _warn_copies(step: str, injection: dict[str, Any]) -> None:
    """An offloaded step that takes state or context gets copies: say so, once."""
    from justpipe.types import InjectionSource

    copied = (InjectionSource.STATE, InjectionSource.CONTEXT)
    taken = [p for p, src in injection.items() if src in copied]
    if taken:
        warnings.warn(
            f"Step '{step}' runs on an executor: its {', '.join(taken)} argument is a pickled "
            "copy, and changes to it do not come back. Return the value and merge it in the "
            "event loop with on_result=.",
            UserWarning,
            stacklevel=4,
        )


def _check_executors(where: str, executors: Any) -> dict[str, Any]:
    if executors is None:
        return {}
    if not isinstance(executors, dict):
        raise TypeError(
            f"{where} must be a dict of name -> Executor, got {type(executors).__name__}: "
            'e.g. {"cpu": ProcessExecutor()}.'
        )
    from justpipe.executors.base import Executor

    for name, executor in executors.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{where}: executor names must be non-empty strings, got {name!r}.")
        if not isinstance(executor, Executor):
            raise TypeError(
                f"{where}: {name!r} is {type(executor).__name__}, not an Executor: use "
                "justpipe.executors.ThreadExecutor(), ProcessExecutor(), DaskExecutor() or "
                "RayExecutor()."
            )
    return dict(executors)


def _check_run_id(subject: str, run_id: Any) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(
            f"{subject} must be the id of a durable run (a non-empty str: the run_id of its "
            f"events or of `justpipe list`), got {run_id!r}"
        )


def _check_run_args(
    call: str, start: Any, queue_size: Any, timeout: Any
) -> tuple[int | None, float | None]:
    """`run()`/`resume()` arguments, checked when called; returns the channel size to use."""
    if start is not None and not callable(start):
        check_name(start, f"{call}(start=...)")
    if queue_size is not None:
        check_count(queue_size, f"{call}(queue_size=...)", minimum=0)
        queue_size = _channel_size(queue_size)
    check_seconds(timeout, f"{call}(timeout=...)")
    return queue_size, timeout
