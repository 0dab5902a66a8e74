"""Graph validation (spec §6), with iterative algorithms so 100,000-step chains validate.

`validate()` returns the warnings it would issue instead of issuing them, so the
result can be cached per frozen definition and the warnings replayed on every run.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from typing import Any

from justpipe._kernel.registry import _BaseStep, _MapStep, _PipelineRegistry, _SwitchStep
from justpipe.types import BarrierType, DefinitionError

__all__ = ["adjacency", "compute_roots", "validate"]


def adjacency(steps: dict[str, _BaseStep], topology: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every static edge: `to=` edges plus map `each` and switch routes, de-duplicated."""
    adj: dict[str, list[str]] = {}
    for name, step in steps.items():
        seen: dict[str, None] = dict.fromkeys(topology.get(name, ()))
        seen.update(dict.fromkeys(step.get_targets()))
        adj[name] = list(seen)
    return adj


def compute_roots(steps: dict[str, _BaseStep], topology: dict[str, list[str]]) -> list[str]:
    targets: set[str] = set()
    for dsts in topology.values():
        targets.update(dsts)
    for step in steps.values():
        targets.update(step.get_targets())
    return [name for name in steps if name not in targets]


def _names(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def _suggest(missing: str, steps: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(missing, list(steps), n=1)
    return close[0] if close else None


def _check_topology_targets(reg: _PipelineRegistry) -> None:
    for src, dsts in reg.topology.items():
        for dst in dsts:
            if dst in reg.steps:
                continue
            close = _suggest(dst, reg.steps)
            hint = (
                f"Did you mean '{close}'?"
                if close
                else f"Did you forget to define step '{dst}' with @pipe.step()?"
            )
            raise DefinitionError(
                f"Step '{src}' targets unknown step '{dst}'. Available steps: "
                f"{_names(reg.steps)}. {hint}",
                step_name=src,
            )


def _check_map(reg: _PipelineRegistry, step: _MapStep) -> None:
    worker = reg.steps.get(step.each)
    if worker is None:
        raise DefinitionError(
            f"Step '{step.name}' (map) targets unknown step '{step.each}'. Available steps: "
            f"{_names(reg.steps)}. Define step '{step.each}' with @pipe.step() to use it as the "
            "map worker.",
            step_name=step.name,
        )
    if reg.topology.get(step.each):
        raise DefinitionError(
            f"Step '{step.each}' defines transitions (to={reg.topology[step.each]}) but is the "
            f"worker of map '{step.name}', whose workers never follow 'to=' edges.\n"
            f"Fix: remove 'to=' from '{step.each}' and continue after the map with "
            f"@pipe.map(..., to=...), or use a sub-pipeline (@pipe.sub) to run a sequence of "
            "steps per item.",
            step_name=step.each,
        )


def _check_switch(reg: _PipelineRegistry, step: _SwitchStep) -> None:
    if step.default is not None and step.default not in reg.steps:
        raise DefinitionError(
            f"Step '{step.name}' (switch) has unknown default route '{step.default}'. "
            f"Available steps: {_names(reg.steps)}. Define step '{step.default}' or fix the "
            "default= parameter.",
            step_name=step.name,
        )
    routes = step.routes() or {}
    for target in routes.values():
        if isinstance(target, str) and target not in reg.steps:
            close = _suggest(target, reg.steps)
            hint = f" Did you mean '{close}'?" if close else ""
            raise DefinitionError(
                f"Step '{step.name}' (switch) routes to unknown step '{target}'. Available "
                f"steps: {_names(reg.steps)}.{hint} Define step '{target}' or fix the routing "
                "table.",
                step_name=step.name,
            )


def _find_cycle(adj: dict[str, list[str]], starts: Iterable[str]) -> list[str] | None:
    """Iterative DFS; returns the cycle path (first node repeated at the end) if any."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    parent: dict[str, str] = {}
    for root in starts:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, Any]] = [(root, iter(adj.get(root, ())))]
        while stack:
            node, children = stack[-1]
            advanced = False
            for child in children:
                mark = state.get(child)
                if mark == 1:
                    return _cycle_path(parent, node, child)
                if mark is None:
                    state[child] = 1
                    parent[child] = node
                    stack.append((child, iter(adj.get(child, ()))))
                    advanced = True
                    break
            if not advanced:
                state[node] = 2
                stack.pop()
    return None


def _cycle_path(parent: dict[str, str], node: str, back_to: str) -> list[str]:
    path = [node]
    while path[-1] != back_to:
        path.append(parent[path[-1]])
    path.reverse()
    path.append(back_to)
    return path


def _reachable(adj: dict[str, list[str]], starts: Iterable[str]) -> set[str]:
    seen = set(starts)
    todo = list(seen)
    while todo:
        for child in adj.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _start_scope_problems(
    reg: _PipelineRegistry, adj: dict[str, list[str]], start: str
) -> list[str]:
    reach = _reachable(adj, [start])
    parents: dict[str, list[str]] = {}
    for src, dsts in adj.items():
        for dst in dsts:
            parents.setdefault(dst, []).append(src)
    problems: list[str] = []
    for name, step in reg.steps.items():
        ps = parents.get(name, [])
        if name not in reach or len(ps) < 2 or step.barrier_type is not BarrierType.ALL:
            continue
        missing = [p for p in ps if p not in reach]
        if missing:
            problems.append(
                f"Step '{name}' requires ALL parents [{_names(ps)}], but run(start='{start}') "
                f"cannot reach parent(s): {_names(missing)}. This step will never execute in "
                f"this run. Fix: start from a step that reaches all of its parents, make "
                f"'{name}' barrier_type=BarrierType.ANY, or validate with strict=False to only "
                "warn."
            )
    return problems


def _is_mutable_dataclass(tp: Any) -> bool:
    return (
        isinstance(tp, type) and dataclasses.is_dataclass(tp) and not tp.__dataclass_params__.frozen  # type: ignore[attr-defined]
    )


def validate(
    reg: _PipelineRegistry, start: str | None, strict: bool, allow_multi_root: bool
) -> list[str]:
    """Raise DefinitionError for the first problem; return the warnings to issue."""
    warnings: list[str] = []
    if not reg.steps:
        return warnings
    _check_topology_targets(reg)
    for step in reg.steps.values():
        if isinstance(step, _MapStep):
            _check_map(reg, step)
        elif isinstance(step, _SwitchStep):
            _check_switch(reg, step)
    roots = compute_roots(reg.steps, reg.topology)
    if not roots and start is None:
        raise DefinitionError(
            "Circular dependency detected or no entry points found in the pipeline: every step "
            "is the target of another step. Remove one 'to=' edge to create an entry point, or "
            "pass start= to run()."
        )
    if start is not None and start not in reg.steps:
        raise DefinitionError(
            f"run(start=...) references unknown step '{start}'. Available steps: "
            f"{_names(reg.steps)}. Pass a registered step name or its function.",
            step_name=start,
        )
    if start is None and len(roots) > 1:
        msg = (
            f"Multiple root steps detected: {_names(roots)}. run() without start= runs all "
            "roots concurrently, in no fixed order."
        )
        if not strict:
            warnings.append(msg)
        elif not allow_multi_root:
            raise DefinitionError(
                msg + " Pass start=... or set Pipe(allow_multi_root=True) to opt in."
            )
    adj = adjacency(reg.steps, reg.topology)
    cycle = _find_cycle(adj, [start] if start is not None else roots)
    if cycle is not None:
        raise DefinitionError(
            f"Circular dependency detected: {' -> '.join(cycle)}. Remove one of these edges to "
            "break the cycle (use a switch or a returned step name to loop at run time).",
            step_name=cycle[0],
        )
    if start is None:
        reached = _reachable(adj, roots)
        unreachable = [n for n in reg.steps if n not in reached]
        if unreachable:
            raise DefinitionError(
                f"Unreachable steps detected: {_names(unreachable)}. They are not connected to "
                "any entry point: connect them with 'to=' or remove them."
            )
    else:
        for problem in _start_scope_problems(reg, adj, start):
            if strict:
                raise DefinitionError(problem)
            warnings.append(problem)
    if any(isinstance(s, _MapStep) for s in reg.steps.values()) and _is_mutable_dataclass(
        reg.state_type
    ):
        warnings.append(
            "Pipeline uses @pipe.map with a mutable state dataclass: map workers share the same "
            "state object concurrently. Consider a frozen dataclass or synchronising access."
        )
    return warnings
