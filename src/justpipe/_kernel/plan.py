"""ExecutionPlan: the immutable IR a run executes (compiled once per frozen definition + start).

Everything a run needs to know about the graph is precomputed here, as plain tuples
and ints, so per-event work never inspects the definition: node indexes, call
modes, injection plans, static successors with their barrier slots, parents for
barrier payloads, roots. The plan holds no backend objects; each run builds its
`_core.Readiness` from the plan's arrays, so backends can be switched between runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from justpipe._kernel.registry import (
    _BaseStep,
    _MapStep,
    _PipelineRegistry,
    _SubPipelineStep,
    _SwitchStep,
)
from justpipe._kernel.validation import compute_roots
from justpipe.types import BarrierType, InjectionSource, NodeKind

__all__ = [
    "CALL_ASYNC",
    "CALL_STREAM",
    "CALL_SYNC",
    "ExecutionPlan",
    "MapPlan",
    "NodePlan",
    "SubPlan",
    "SwitchPlan",
    "compile_plan",
]

CALL_ASYNC = 0  # coroutine function: `await func(**kw)`
CALL_STREAM = 1  # async generator function: every item is a TOKEN
CALL_SYNC = 2  # anything else: call, then await the result if it is awaitable

Injection = tuple[tuple[str, InjectionSource], ...]


@dataclass(frozen=True, slots=True)
class NodePlan:
    index: int
    name: str
    step: _BaseStep
    kind: NodeKind
    func: Callable[..., Any]
    call_mode: int
    direct: bool  # a coroutine function without timeout: awaited inline, no invoker round trip
    injection: Injection
    item_param: str | None  # first UNKNOWN parameter: receives the map item
    handler: Callable[..., Any] | None
    handler_injection: Injection
    timeout: float | None
    successors: tuple[int, ...]
    parents: tuple[str, ...]  # static `to=` parents, for BARRIER_WAIT payloads
    barrier_timeout: float | None  # effective: ALL barriers with >= 2 parent slots only
    remote: bool  # runs on an executor (bound per run: `executor` below, by name or instance)
    executor: Any  # `@pipe.step(executor=...)`: an Executor, a name, or None
    on_result: Callable[..., Any] | None  # `@pipe.step(on_result=...)`
    on_result_injection: tuple[tuple[str, str], ...]  # parameter -> state/context/token/item/result


@dataclass(frozen=True, slots=True)
class MapPlan(NodePlan):
    """A `@pipe.map` node: its worker step and how items are fed to it."""

    each: str  # the worker step's name
    worker: int  # index of the `each` node (-1: not registered, reported per item)
    max_concurrency: int | None
    max_map_items: int  # cap on items materialised from an async generator


@dataclass(frozen=True, slots=True)
class SwitchPlan(NodePlan):
    """A `@pipe.switch` node: a routing table, or a router function, and a default."""

    routes: dict[Any, Any] | None  # value -> target; None: `router` decides
    router: Callable[[Any], Any] | None
    default: Any


@dataclass(frozen=True, slots=True)
class SubPlan(NodePlan):
    """A `@pipe.sub` node: the child pipeline it runs."""

    pipeline: Any  # a Pipe (typed Any: the kernel does not import the public API)


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    nodes: tuple[NodePlan, ...]
    index: dict[str, int]
    roots: tuple[int, ...]
    successor_slots: tuple[tuple[tuple[int, int], ...], ...]
    slot_counts: tuple[int, ...]
    any_flags: tuple[bool, ...]
    step_names: str  # "a, b, c" for not-found messages
    offloads: bool = False  # some step runs on an executor (bound per run)

    def node(self, name: str) -> NodePlan | None:
        i = self.index.get(name)
        return None if i is None else self.nodes[i]


def _call_mode(func: Callable[..., Any], step: _BaseStep) -> int:
    if step.kind is not NodeKind.STEP:
        # a map/switch/sub body's return value is data (an async generator of map items
        # included), never a token stream
        return CALL_ASYNC if inspect.iscoroutinefunction(func) else CALL_SYNC
    if step.is_streaming or inspect.isasyncgenfunction(func):
        return CALL_STREAM
    if inspect.iscoroutinefunction(func):
        return CALL_ASYNC
    return CALL_SYNC


def _injection(meta: dict[str, InjectionSource]) -> tuple[Injection, str | None]:
    items = tuple(meta.items())
    item_param = next((p for p, src in items if src is InjectionSource.UNKNOWN), None)
    return tuple((p, s) for p, s in items if s is not InjectionSource.UNKNOWN), item_param


def _slots(route_sets: list[set[str]], parents: list[str]) -> dict[str, int]:
    """Barrier slot per parent; alternative routes of one switch share a slot (spec §9.1)."""
    if len(parents) < 2 or not route_sets:
        return {p: i for i, p in enumerate(parents)}
    group = {p: p for p in parents}

    def find(p: str) -> str:
        while group[p] != p:
            p = group[p]
        return p

    for routes in route_sets:
        siblings = [p for p in parents if p in routes]
        for other in siblings[1:]:
            group[find(other)] = find(siblings[0])
    slot_of_root: dict[str, int] = {}
    result: dict[str, int] = {}
    for p in parents:
        result[p] = slot_of_root.setdefault(find(p), len(slot_of_root))
    return result


def compile_plan(reg: _PipelineRegistry, start: str | None) -> ExecutionPlan:
    names = list(reg.steps)
    index = {name: i for i, name in enumerate(names)}
    parents: dict[str, list[str]] = {name: [] for name in names}
    for src, dsts in reg.topology.items():
        for dst in dict.fromkeys(dsts):
            parents[dst].append(src)
    route_sets = [set(s.get_targets()) for s in reg.steps.values() if isinstance(s, _SwitchStep)]
    slot_maps = {name: _slots(route_sets, parents[name]) for name in names}
    slot_counts = tuple(len(set(slot_maps[n].values())) for n in names)
    any_flags = tuple(reg.steps[n].barrier_type is BarrierType.ANY for n in names)
    successor_slots = tuple(
        tuple((index[d], slot_maps[d][n]) for d in dict.fromkeys(reg.topology.get(n, ())))
        for n in names
    )
    nodes = tuple(
        _node_plan(reg, i, name, parents[name], slot_counts[i], successor_slots[i], index)
        for i, name in enumerate(names)
    )
    roots = [start] if start is not None else compute_roots(reg.steps, reg.topology)
    return ExecutionPlan(
        nodes=nodes,
        index=index,
        roots=tuple(index[r] for r in roots),
        successor_slots=successor_slots,
        slot_counts=slot_counts,
        any_flags=any_flags,
        step_names=", ".join(names),
        offloads=any(node.remote for node in nodes),
    )


def _node_plan(
    reg: _PipelineRegistry,
    i: int,
    name: str,
    parents: list[str],
    slot_count: int,
    successors: tuple[tuple[int, int], ...],
    index: dict[str, int],
) -> NodePlan:
    step = reg.steps[name]
    func = step.func
    injection, item_param = _injection(reg.injection_metadata[name])
    handler_injection: Injection = ()
    if step.on_error is not None:
        handler_injection = tuple(reg.error_injection.get(name, {}).items())
    barrier_timeout = step.barrier_timeout
    if step.barrier_type is not BarrierType.ALL or slot_count < 2:
        barrier_timeout = None
    call_mode = _call_mode(func, step)
    common: dict[str, Any] = {
        "index": i,
        "name": name,
        "step": step,
        "kind": step.kind,
        "func": func,
        "call_mode": call_mode,
        "direct": call_mode == CALL_ASYNC and step.timeout is None and step.executor is None,
        "injection": injection,
        "item_param": item_param,
        "handler": step.on_error,
        "handler_injection": handler_injection,
        "timeout": step.timeout,
        "successors": tuple(v for v, _ in successors),
        "parents": tuple(parents),
        "barrier_timeout": barrier_timeout,
        "remote": step.executor is not None,
        "executor": step.executor,
        "on_result": step.on_result,
        "on_result_injection": step.on_result_injection,
    }
    if isinstance(step, _MapStep):
        return MapPlan(
            **common,
            each=step.each,
            worker=index.get(step.each, -1),
            max_concurrency=step.max_concurrency,
            max_map_items=step.max_map_items,
        )
    if isinstance(step, _SwitchStep):
        routes = step.routes()
        return SwitchPlan(
            **common,
            routes=routes,
            router=None if routes is not None else step.to,
            default=step.default,
        )
    if isinstance(step, _SubPipelineStep):
        return SubPlan(**common, pipeline=step.pipeline)
    return NodePlan(**common)
