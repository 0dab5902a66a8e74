"""Build a `VisualAST` from registered steps and their topology (spec §18.2).

Every pass is a plain loop over steps and edges, and nested sub-pipelines are expanded
from an explicit work list, so neither a 100,000-step chain nor deep nesting touches
the recursion limit. A sub-pipeline that (directly or indirectly) contains itself is
drawn once; the repeated reference stays a plain SUB node without a cluster.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from justpipe._kernel.injection import resolve_name
from justpipe.types import BarrierType, NodeKind
from justpipe.visualization.ast import (
    ParallelGroup,
    VisualAST,
    VisualEdge,
    VisualNode,
    VisualNodeKind,
)
from justpipe.visualization.renderer import PipelineView, StepView

__all__ = ["_PipelineASTBuilder"]

#: Route value meaning "end the run"; never a node of its own.
STOP_NAME = "Stop"
DYNAMIC_LABEL = "dynamic"
DEFAULT_LABEL = "default"

_KIND_BY_NODE_KIND = {
    NodeKind.MAP: VisualNodeKind.MAP,
    NodeKind.SWITCH: VisualNodeKind.SWITCH,
    NodeKind.SUB: VisualNodeKind.SUB,
}


def _return_literals(func: Callable[..., Any]) -> frozenset[str]:
    """Every string literal that `func`'s source returns directly (`return "name"`).

    Nested functions count too. Anything without retrievable or parseable source
    (builtins, partials, callable instances, REPL code) yields nothing.
    """
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return frozenset()
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return frozenset()
    return frozenset(
        node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Return)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


class _FunctionFacts:
    """Facts about step functions, computed once per build however many steps share one."""

    def __init__(self) -> None:
        self._literals: dict[object, frozenset[str]] = {}
        self._streaming: dict[object, bool] = {}

    @staticmethod
    def _key(func: Callable[..., Any]) -> object:
        return getattr(func, "__code__", None) or id(func)

    def literals(self, func: Callable[..., Any]) -> frozenset[str]:
        key = self._key(func)
        found = self._literals.get(key)
        if found is None:
            found = self._literals[key] = _return_literals(func)
        return found

    def is_streaming(self, func: Callable[..., Any]) -> bool:
        key = self._key(func)
        found = self._streaming.get(key)
        if found is None:
            found = self._streaming[key] = inspect.isasyncgenfunction(func)
        return found


@dataclass
class _PendingSub:
    """A SUB node whose child pipeline still has to be turned into a `sub_graph`."""

    node: VisualNode
    pipeline: PipelineView
    ancestors: frozenset[int]


class _FlatBuild:
    """One pipeline level: nodes, flags, edges and parallel groups (no nesting)."""

    def __init__(
        self,
        steps: Mapping[str, StepView],
        topology: Mapping[str, Sequence[str]],
        facts: _FunctionFacts,
    ) -> None:
        self.steps = steps
        self.topology = topology
        self.facts = facts
        self.step_targets = {name: step.get_targets() for name, step in steps.items()}
        self.all_targets = self._collect_targets()
        names = set(steps) | set(topology) | self.all_targets
        names.discard(STOP_NAME)
        self.ids = {name: f"n{index}" for index, name in enumerate(sorted(names))}

    def _collect_targets(self) -> set[str]:
        targets: set[str] = set()
        for successors in self.topology.values():
            targets.update(successors)
        for step_targets in self.step_targets.values():
            targets.update(step_targets)
        return targets

    # -- flags

    def entry_names(self) -> set[str]:
        entries = {name for name in self.topology if name not in self.all_targets}
        if entries:
            return entries
        if self.topology:
            return {next(iter(self.topology))}
        return set(self.steps)

    def map_workers(self) -> set[str]:
        return {
            _as_map(step).each for step in self.steps.values() if step.get_kind() is NodeKind.MAP
        }

    def nodes(self) -> dict[str, VisualNode]:
        entries = self.entry_names()
        workers = self.map_workers()
        non_terminal = set(self.topology)
        non_terminal.update(name for name, targets in self.step_targets.items() if targets)
        connected = non_terminal | self.all_targets | entries
        nodes: dict[str, VisualNode] = {}
        for name, node_id in self.ids.items():
            step = self.steps.get(name)
            nodes[name] = VisualNode(
                id=node_id,
                name=name,
                kind=self._visual_kind(step),
                is_entry=name in entries,
                is_terminal=name not in non_terminal and name not in workers,
                is_isolated=step is not None and name not in connected,
                is_map_target=name in workers,
                barrier_type=step.barrier_type if step is not None else BarrierType.ALL,
            )
        return nodes

    def _visual_kind(self, step: StepView | None) -> VisualNodeKind:
        if step is None:
            return VisualNodeKind.STEP
        kind = step.get_kind()
        if kind is NodeKind.STEP:  # the common case first: enum hashing is slow
            streaming = self.facts.is_streaming(step.original_func)
            return VisualNodeKind.STREAMING if streaming else VisualNodeKind.STEP
        return _KIND_BY_NODE_KIND.get(kind, VisualNodeKind.STEP)

    # -- edges

    def edges(self) -> list[VisualEdge]:
        edges = [
            VisualEdge(source, target)
            for source, successors in self.topology.items()
            for target in successors
            if target != STOP_NAME
        ]
        for name, step in self.steps.items():
            edges.extend(_routing_edges(name, step))
        edges.extend(self._dynamic_edges({(edge.source, edge.target) for edge in edges}))
        return edges

    def _dynamic_edges(self, existing: set[tuple[str, str]]) -> Iterable[VisualEdge]:
        for name, step in self.steps.items():
            literals = self.facts.literals(step.original_func)
            for target in sorted(literals):
                if target in self.ids and (name, target) not in existing:
                    existing.add((name, target))
                    yield VisualEdge(name, target, label=DYNAMIC_LABEL)

    def parallel_groups(self) -> list[ParallelGroup]:
        groups = []
        for source, successors in self.topology.items():
            members = [target for target in successors if target != STOP_NAME]
            if len(members) > 1:
                groups.append(ParallelGroup(f"parallel_{self.ids[source]}", source, members))
        return groups

    def pending_subs(
        self, nodes: Mapping[str, VisualNode], ancestors: frozenset[int]
    ) -> list[_PendingSub]:
        pending = []
        for name, step in self.steps.items():
            if step.get_kind() is not NodeKind.SUB:
                continue
            child = _as_sub(step).pipeline
            if id(child.registry.steps) not in ancestors:
                pending.append(_PendingSub(nodes[name], child, ancestors))
        return pending

    def to_ast(self, startup_hooks: list[str], shutdown_hooks: list[str]) -> VisualAST:
        return VisualAST(
            nodes=self.nodes(),
            edges=self.edges(),
            parallel_groups=self.parallel_groups(),
            startup_hooks=startup_hooks,
            shutdown_hooks=shutdown_hooks,
        )


class _MapView(StepView, Protocol):
    each: str


class _SwitchView(StepView, Protocol):
    to: Any
    default: str | None


class _SubView(StepView, Protocol):
    pipeline: PipelineView


def _as_map(step: StepView) -> _MapView:
    return cast(_MapView, step)


def _as_sub(step: StepView) -> _SubView:
    return cast(_SubView, step)


def _routing_edges(name: str, step: StepView) -> list[VisualEdge]:
    """Map fan-out edges and labelled switch routes of one step (Stop routes omitted)."""
    kind = step.get_kind()
    if kind is NodeKind.MAP:
        return [VisualEdge(name, _as_map(step).each, is_map_edge=True)]
    if kind is not NodeKind.SWITCH:
        return []
    switch = cast(_SwitchView, step)
    edges = []
    if isinstance(switch.to, dict):
        edges = [
            VisualEdge(name, target, label=str(key))
            for key, target in switch.to.items()
            if isinstance(target, str) and target != STOP_NAME
        ]
    if switch.default is not None and switch.default != STOP_NAME:
        edges.append(VisualEdge(name, switch.default, label=DEFAULT_LABEL))
    return edges


class _PipelineASTBuilder:
    """Turns registered steps into a `VisualAST`; sub-pipelines are embedded without hooks."""

    @classmethod
    def build(
        cls,
        steps: Mapping[str, StepView],
        topology: Mapping[str, Sequence[str]],
        startup_hooks: list[Callable[..., Any]] | None = None,
        shutdown_hooks: list[Callable[..., Any]] | None = None,
    ) -> VisualAST:
        facts = _FunctionFacts()
        root = _FlatBuild(steps, topology, facts)
        result = root.to_ast(
            [resolve_name(hook) for hook in startup_hooks or []],
            [resolve_name(hook) for hook in shutdown_hooks or []],
        )
        pending = root.pending_subs(result.nodes, frozenset({id(steps)}))
        while pending:
            item = pending.pop()
            child_steps = item.pipeline.registry.steps
            child = _FlatBuild(child_steps, item.pipeline.topology, facts)
            item.node.sub_graph = child.to_ast([], [])
            ancestors = item.ancestors | {id(child_steps)}
            pending.extend(child.pending_subs(item.node.sub_graph.nodes, ancestors))
        return result

    @staticmethod
    def _find_dynamic_returns(func: Callable[..., Any], known_steps: Collection[str]) -> set[str]:
        """The names in `known_steps` that `func` returns as a string literal."""
        return {literal for literal in _return_literals(func) if literal in known_steps}
