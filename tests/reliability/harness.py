"""Build a real `Pipe` from a spec, run it under a watchdog and record everything.

`execute(spec)` returns a `RunRecord`: the events the consumer received, what the
observers saw (per run id, children included), how often hooks ran, which step
returned `Retry()`, the tasks left alive after the stream was done or closed,
and the calls made to the loop's exception handler. `invariants.check_run`
judges the record; nothing here asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from justpipe import Pipe, Raise, Retry, Skip, Stop, Suspend
from justpipe.observability import Observer
from justpipe.observability.observer import ObserverMeta
from justpipe.types import CancellationToken, Event, _Next

from .strategies import Action, NodeSpec, PipeSpec, RunSpec

__all__ = ["Recorder", "RecordingObserver", "RunRecord", "build_pipe", "execute", "run_sync"]

WATCHDOG_S = 20.0  # one run (consumption + close) must end well within this
FINALIZER_WAIT_S = 5.0  # `break` without aclose: the loop's asyncgen finalizer closes the run


class FuzzError(Exception):
    """The exception every scripted failure raises."""


# ---------------------------------------------------------------------- instrumentation


@dataclass
class ObservedRun:
    pipe_name: str
    starts: int = 0
    events: list[Event] = field(default_factory=list)
    terminals: list[str] = field(default_factory=list)  # "end" / "error", in call order


class RecordingObserver(Observer):
    """Records every callback per run id (observers are shared by all runs of a pipe)."""

    def __init__(self, runs: dict[str, ObservedRun]) -> None:
        self.runs = runs

    def _run(self, meta: ObserverMeta) -> ObservedRun:
        assert meta.run_id is not None
        return self.runs.setdefault(meta.run_id, ObservedRun(meta.pipe_name))

    async def on_pipeline_start(self, state: Any, context: Any, meta: ObserverMeta) -> None:
        self._run(meta).starts += 1

    async def on_event(self, state: Any, context: Any, meta: ObserverMeta, event: Event) -> None:
        self._run(meta).events.append(event)

    async def on_pipeline_end(
        self, state: Any, context: Any, meta: ObserverMeta, duration_s: float
    ) -> None:
        self._run(meta).terminals.append("end")

    async def on_pipeline_error(
        self, state: Any, context: Any, meta: ObserverMeta, error: Exception
    ) -> None:
        self._run(meta).terminals.append("error")


@dataclass
class Recorder:
    """Side effects of the user code of one example, keyed by prefixed stage."""

    calls: Counter[str] = field(default_factory=Counter)
    retry_returns: Counter[str] = field(default_factory=Counter)
    stop_requests: int = 0
    startups: Counter[str] = field(default_factory=Counter)  # pipe name -> calls
    shutdowns: Counter[str] = field(default_factory=Counter)
    observed: dict[str, ObservedRun] = field(default_factory=dict)

    def next_action(self, key: str, script: tuple[Action, ...]) -> Action:
        n = self.calls[key]
        self.calls[key] += 1
        return script[n % len(script)]


@dataclass
class RunRecord:
    spec: RunSpec
    events: list[Event]
    recorder: Recorder
    completed: bool  # the consumer iterated the stream to its end
    raised: BaseException | None  # what the consumer's iteration raised, if anything
    leftover_tasks: list[asyncio.Task[Any]]
    loop_errors: list[dict[str, Any]]
    warnings: list[warnings.WarningMessage]

    @property
    def root_run_id(self) -> str | None:
        roots = [r for r, o in self.recorder.observed.items() if o.pipe_name == "root"]
        return roots[0] if len(roots) == 1 else None


# ---------------------------------------------------------------------- building


def build_pipe(
    spec: PipeSpec, rec: Recorder, stage_prefix: str = "", durable: Any = None
) -> Pipe[Any, Any]:
    """A real Pipe behaving as `spec` says, reporting to `rec` (`durable`: the root's)."""
    pipe: Pipe[Any, Any] = Pipe(name=spec.name, max_retries=spec.max_retries, durable=durable)
    pipe.add_observer(RecordingObserver(rec.observed))
    _add_hooks(pipe, spec, rec)
    if spec.global_handler is not None:
        pipe.on_error(_global_handler(spec.global_handler, rec, stage_prefix))
    for node in spec.nodes:
        _register(pipe, node, rec, stage_prefix)
    return pipe


def _add_hooks(pipe: Pipe[Any, Any], spec: PipeSpec, rec: Recorder) -> None:
    """One startup hook, two shutdown hooks (the first yields to the loop, may fail)."""

    async def startup() -> None:
        rec.startups[spec.name] += 1
        await asyncio.sleep(0)
        if spec.startup_fails:
            raise FuzzError(f"startup of {spec.name}")

    async def first_shutdown() -> None:
        rec.shutdowns[spec.name + "#1"] += 1
        await asyncio.sleep(0)
        if spec.shutdown_fails:
            raise FuzzError(f"shutdown of {spec.name}")

    def second_shutdown() -> None:
        rec.shutdowns[spec.name + "#2"] += 1

    pipe.on_startup(startup)
    pipe.on_shutdown(first_shutdown)
    pipe.on_shutdown(second_shutdown)


def _register(pipe: Pipe[Any, Any], node: NodeSpec, rec: Recorder, prefix: str) -> None:
    options: dict[str, Any] = {
        "to": list(node.to) or None,
        "barrier_timeout": node.barrier_timeout,
        "barrier_type": _barrier(node),
        "on_error": _local_handler(node, rec, prefix) if node.handler is not None else None,
    }
    if node.timeout is not None:
        options["timeout"] = node.timeout
    if node.retries:
        options.update(retries=node.retries, retry_wait_min=0, retry_wait_max=0)
    key = prefix + node.name
    if node.kind in ("step", "worker"):
        pipe.step(node.name, **options)(_step_fn(node, rec, key))
    elif node.kind == "stream":
        pipe.step(node.name, **options)(_stream_fn(node, rec, key))
    elif node.kind == "map":
        pipe.map(node.name, each=node.each, max_concurrency=node.max_concurrency,
                 **options)(_map_fn(node, rec, key))
    elif node.kind == "switch":
        del options["to"]
        routes = {k: (Stop if target == "Stop" else target) for k, target in node.routes}
        pipe.switch(node.name, to=routes, default=node.default, **options)(
            _switch_fn(node, rec, key))
    else:
        assert node.child is not None
        child = build_pipe(node.child, rec, f"{key}:")
        pipe.sub(node.name, pipeline=child, **options)(_sub_fn(node, rec, key))


def _barrier(node: NodeSpec) -> Any:
    from justpipe.types import BarrierType

    return BarrierType.ANY if node.barrier_any else BarrierType.ALL


async def _perform(action: Action, cancel: CancellationToken, rec: Recorder, key: str) -> Any:
    """Do what a step action says; return the step's result."""
    kind = action.kind
    if kind == "sleep" or kind == "slow":
        await asyncio.sleep(action.arg / 1000)
    elif kind == "raise":
        raise FuzzError(f"{key} failed")
    elif kind == "retry":
        rec.retry_returns[key] += 1
        return Retry()
    elif kind == "skip":
        return Skip()
    elif kind == "stop":
        rec.stop_requests += 1
        return Stop
    elif kind == "suspend":
        rec.stop_requests += 1
        return Suspend(f"{key} suspended")
    elif kind == "cancel":
        rec.stop_requests += 1
        cancel.cancel(f"{key} cancelled")
        await cancel.checkpoint()
    elif kind == "checkpoint":
        await cancel.checkpoint()
    elif kind == "route":
        return action.arg
    elif kind == "raise_obj":
        return Raise(FuzzError(f"{key} raised via Raise"))
    elif kind == "ignored":
        return 42
    return None


def _step_fn(node: NodeSpec, rec: Recorder, key: str) -> Callable[..., Any]:
    if node.kind == "worker":
        async def worker(item: Any, state: Any, cancel: CancellationToken) -> Any:
            return await _perform(rec.next_action(key, node.script), cancel, rec, key)

        return worker

    async def step(state: Any, cancel: CancellationToken) -> Any:
        return await _perform(rec.next_action(key, node.script), cancel, rec, key)

    return step


def _stream_fn(node: NodeSpec, rec: Recorder, key: str) -> Callable[..., Any]:
    async def stream(state: Any, cancel: CancellationToken) -> AsyncGenerator[Any, None]:
        action = rec.next_action(key, node.script)
        tokens, arg = action.arg
        for i in range(tokens):
            yield f"{key}#{i}"
        result = await _perform(Action(action.kind, arg), cancel, rec, key)
        if isinstance(result, Suspend):
            yield result
        elif isinstance(result, str):
            yield _Next(result)

    return stream


def _map_fn(node: NodeSpec, rec: Recorder, key: str) -> Callable[..., Any]:
    async def mapper(state: Any, cancel: CancellationToken) -> Any:
        action = rec.next_action(key, node.script)
        if action.kind != "items":
            return await _perform(action, cancel, rec, key)
        container, n = action.arg
        return _items(container, n, key)

    return mapper


def _items(container: str, n: int, key: str) -> Any:
    if container == "list":
        return list(range(n))
    if container == "gen":
        return (i for i in range(n))
    if container == "gen_raise":
        return _failing_gen(n, key)
    if container == "agen":
        return _agen(n)
    return 42  # not iterable: the map step fails


def _failing_gen(n: int, key: str) -> Any:
    yield from range(n)
    raise FuzzError(f"{key} items failed")


async def _agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def _switch_fn(node: NodeSpec, rec: Recorder, key: str) -> Callable[..., Any]:
    async def switch(state: Any, cancel: CancellationToken) -> Any:
        action = rec.next_action(key, node.script)
        if action.kind == "key":
            if dict(node.routes).get(action.arg) == "Stop":
                rec.stop_requests += 1  # routed to Stop: the run is stopping
            return action.arg
        return await _perform(action, cancel, rec, key)

    return switch


def _sub_fn(node: NodeSpec, rec: Recorder, key: str) -> Callable[..., Any]:
    async def sub(state: Any) -> Any:
        action = rec.next_action(key, node.script)
        if action.kind == "raise":
            raise FuzzError(f"{key} failed")
        return state

    return sub


def _handler_result(action: Action, error: Exception, rec: Recorder, key: str) -> Any:
    kind = action.kind
    if kind == "swallow":
        return None
    if kind == "skip":
        return Skip()
    if kind == "retry":
        rec.retry_returns[key] += 1
        return Retry()
    if kind == "reraise":
        raise error
    if kind == "raise_obj":
        return Raise(error)
    if kind == "raise_new":
        raise FuzzError(f"handler of {key} failed")
    if kind == "route":
        return action.arg
    if kind == "stop":
        rec.stop_requests += 1
        return Stop
    rec.stop_requests += 1
    return Suspend(f"handler of {key} suspended")


def _local_handler(node: NodeSpec, rec: Recorder, prefix: str) -> Callable[..., Any]:
    assert node.handler is not None
    script = node.handler
    key = prefix + node.name

    async def on_error(error: Exception, state: Any) -> Any:
        return _handler_result(rec.next_action(f"{key}!local", script), error, rec, key)

    return on_error


def _global_handler(script: tuple[Action, ...], rec: Recorder, prefix: str) -> Callable[..., Any]:
    def on_error(error: Exception, step_name: str, state: Any) -> Any:
        key = prefix + str(step_name)
        return _handler_result(rec.next_action(f"{prefix}!global", script), error, rec, key)

    return on_error


# ---------------------------------------------------------------------- running


def run_sync(spec: RunSpec, durable: Any = None) -> RunRecord:
    """Run one example in a fresh event loop (no state leaks between examples).

    `durable`: the root pipe's `durable=` (a durable run of the same graph).
    """
    gc.freeze()  # older objects: the collection at the end then only scans this run's
    try:
        if durable is None:
            return asyncio.run(execute(spec))
        rec = Recorder()
        return asyncio.run(execute(spec, build_pipe(spec.pipe, rec, durable=durable), rec))
    finally:
        gc.unfreeze()


def _collect_garbage_of_this_run() -> None:
    """Collect now, so that an un-retrieved task exception is reported to this loop."""
    gc.collect()


async def execute(spec: RunSpec, pipe: Pipe[Any, Any] | None = None,
                  rec: Recorder | None = None) -> RunRecord:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    rec = rec if rec is not None else Recorder()
    pipe = pipe if pipe is not None else build_pipe(spec.pipe, rec)
    before = asyncio.all_tasks()
    events: list[Event] = []
    raised: BaseException | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            async with asyncio.timeout(WATCHDOG_S):
                completed = await _consume(pipe, spec, events)
                if spec.consumer.mode == "break_gc":
                    await _await_finalizer(rec, before)
        except TimeoutError as exc:
            raise AssertionError(
                f"watchdog: the run did not end within {WATCHDOG_S}s after {len(events)} "
                f"events; last: {_short(events[-3:])}"
            ) from exc
        except asyncio.CancelledError as exc:
            raise AssertionError("the test task itself was cancelled") from exc
        except Exception as exc:
            completed, raised = False, exc
        leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
        _collect_garbage_of_this_run()
    return RunRecord(spec, events, rec, completed, raised, leftover, loop_errors, list(caught))


async def _consume(pipe: Pipe[Any, Any], spec: RunSpec, events: list[Event]) -> bool:
    """Iterate the stream as the consumer spec says; True if it was iterated to its end."""
    consumer = spec.consumer
    stop = _stop_condition(consumer.stop_type, consumer.stop_k)
    if consumer.mode == "break_gc":  # no reference to the generator may survive here
        return await _break_and_forget(
            pipe.run({"fuzz": True}, queue_size=spec.queue_size, timeout=spec.timeout),
            events, stop)
    gen = pipe.run({"fuzz": True}, queue_size=spec.queue_size, timeout=spec.timeout)
    if consumer.mode == "full":
        async for event in gen:
            events.append(event)
        return True
    if consumer.mode == "aclose":
        try:
            while True:
                event = await gen.__anext__()
                events.append(event)
                if stop(event):
                    return False
        except StopAsyncIteration:
            return True
        finally:
            await gen.aclose()
    if consumer.mode == "break_aclosing":
        async with contextlib.aclosing(gen) as stream:
            async for event in stream:
                events.append(event)
                if stop(event):
                    return False
        return True
    return await _cancel_consumer_task(gen, events, stop)


async def _break_and_forget(gen: Any, events: list[Event], stop: Callable[[Event], bool]) -> bool:
    async for event in gen:
        events.append(event)
        if stop(event):
            break
    else:
        return True
    del gen  # the loop's async-generator finalizer now schedules gen.aclose()
    return False


async def _await_finalizer(rec: Recorder, before: set[asyncio.Task[Any]]) -> None:
    """After `break` without aclose, wait (bounded) for the finalizer to close the run: the
    root observer's end/error callback is the last thing a closing run does."""
    gc.collect()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINALIZER_WAIT_S
    while loop.time() < deadline:
        ended = any(o.terminals for o in rec.observed.values() if o.pipe_name == "root")
        if ended and not [t for t in asyncio.all_tasks() - before if not t.done()]:
            return
        await asyncio.sleep(0.001)


async def _cancel_consumer_task(gen: Any, events: list[Event],
                                stop: Callable[[Event], bool]) -> bool:
    """The consumer task is cancelled while it waits for the next event."""
    async def consumer() -> bool:
        async for event in gen:
            events.append(event)
            if stop(event):
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
        return True

    task = asyncio.ensure_future(consumer())
    try:
        return await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
        return False


def _stop_condition(stop_type: str | None, k: int) -> Callable[[Event], bool]:
    seen = 0

    def stop(event: Event) -> bool:
        nonlocal seen
        if stop_type is None or event.type.value == stop_type:
            seen += 1
        return seen == k

    return stop


def _short(events: list[Event]) -> str:
    return ", ".join(f"{e.seq} {e.type.value} {e.stage}" for e in events)
