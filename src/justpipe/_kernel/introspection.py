"""What a pipeline definition looks like from outside: hash, snapshot, step list, graph.

`Pipe.describe()`, `Pipe.steps()`, `Pipe.graph()` and persistence delegate here
(spec §15.4, §18). Everything reads the definition only; nothing here runs steps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, cast

from justpipe._kernel.injection import resolve_name
from justpipe.types import HookSpec, NodeKind, StepInfo
from justpipe.visualization.builder import _PipelineASTBuilder
from justpipe.visualization.mermaid import MermaidRenderer
from justpipe.visualization.renderer import GraphRenderer, PipelineView, StepView

__all__ = ["describe", "pipeline_hash", "render_graph", "step_infos"]

HASH_LENGTH = 16


class _DescribedStep(StepView, Protocol):
    @property
    def timeout(self) -> float | None: ...

    @property
    def retries(self) -> int | dict[str, Any]: ...

    @property
    def barrier_timeout(self) -> float | None: ...

    @property
    def on_error(self) -> Callable[..., Any] | None: ...


class _SubStep(StepView, Protocol):
    @property
    def pipeline(self) -> _HashedPipe: ...


class _HashedPipe(PipelineView, Protocol):
    @property
    def name(self) -> str: ...


class _Registry(Protocol):
    @property
    def steps(self) -> Mapping[str, _DescribedStep]: ...

    @property
    def startup_hooks(self) -> Sequence[HookSpec]: ...

    @property
    def shutdown_hooks(self) -> Sequence[HookSpec]: ...

    @property
    def error_hook(self) -> HookSpec | None: ...


class IntrospectablePipe(Protocol):
    """The parts of `Pipe` this module reads."""

    @property
    def name(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...

    @property
    def topology(self) -> Mapping[str, Sequence[str]]: ...

    @property
    def registry(self) -> _Registry: ...


def pipeline_hash(pipe: _HashedPipe) -> str:
    """Identity of a definition's shape: name, step names and kinds, and `to=` edges.

    SHA-256 of a canonical JSON document, first 16 hex digits; it names the pipeline's
    persistence directory, so the document layout must never change.
    """
    document = {
        "name": pipe.name,
        "steps": sorted(
            [name, step.get_kind().value] for name, step in pipe.registry.steps.items()
        ),
        "edges": sorted(
            [source, target] for source, targets in pipe.topology.items() for target in targets
        ),
    }
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:HASH_LENGTH]


def step_infos(pipe: IntrospectablePipe) -> Iterator[StepInfo]:
    """One `StepInfo` per registered step, in registration order."""
    topology = pipe.topology
    for name, step in pipe.registry.steps.items():
        yield StepInfo(
            name=name,
            timeout=step.timeout,
            retries=step.retries,
            barrier_timeout=step.barrier_timeout,
            has_error_handler=step.on_error is not None,
            targets=_targets(step, topology),
            kind=step.get_kind(),
            sub_pipeline_hash=_sub_pipeline_hash(step),
        )


def describe(pipe: IntrospectablePipe) -> dict[str, Any]:
    """A JSON-serialisable snapshot of the definition (spec §18.4)."""
    registry = pipe.registry
    topology = {source: list(targets) for source, targets in pipe.topology.items()}
    return {
        "name": pipe.name,
        "pipeline_hash": pipeline_hash(pipe),
        "nodes": {name: _describe_step(step, topology) for name, step in registry.steps.items()},
        "topology": topology,
        "roots": _describe_roots(registry.steps, topology),
        "metadata": dict(pipe.metadata),
        "hooks": _describe_hooks(registry),
        "visual_ast": _PipelineASTBuilder.build(
            registry.steps,
            topology,
            [hook.func for hook in registry.startup_hooks],
            [hook.func for hook in registry.shutdown_hooks],
        ).to_dict(),
    }


def render_graph(pipe: IntrospectablePipe, renderer: object | None = None) -> str:
    """`Pipe.graph()`: the definition drawn by `renderer` (Mermaid by default)."""
    chosen = MermaidRenderer() if renderer is None else _check_renderer(renderer)
    registry = pipe.registry
    return chosen.render(
        registry.steps,
        pipe.topology,
        startup_hooks=[hook.func for hook in registry.startup_hooks],
        shutdown_hooks=[hook.func for hook in registry.shutdown_hooks],
    )


def _check_renderer(renderer: object) -> GraphRenderer:
    if not callable(getattr(renderer, "render", None)):
        raise TypeError(
            f"graph(renderer=...) needs an object with a render(steps, topology, "
            f"startup_hooks=None, shutdown_hooks=None) -> str method (see "
            f"justpipe.visualization.GraphRenderer); {type(renderer).__name__} has no "
            f"callable 'render'"
        )
    return cast(GraphRenderer, renderer)


def _targets(step: StepView, topology: Mapping[str, Sequence[str]]) -> list[str]:
    return sorted({*topology.get(step.name, ()), *step.get_targets()})


def _sub_pipeline_hash(step: StepView) -> str | None:
    if step.get_kind() is not NodeKind.SUB:
        return None
    return pipeline_hash(cast(_SubStep, step).pipeline)


def _describe_step(step: _DescribedStep, topology: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Kind and targets always; the other options only when set (as justpipe 0.12 does)."""
    node: dict[str, Any] = {"kind": step.get_kind().value, "targets": _targets(step, topology)}
    if step.timeout is not None:
        node["timeout"] = step.timeout
    if step.retries:
        node["retries"] = step.retries
    if step.barrier_timeout is not None:
        node["barrier_timeout"] = step.barrier_timeout
    if step.on_error is not None:
        node["has_error_handler"] = True
    sub_hash = _sub_pipeline_hash(step)
    if sub_hash is not None:
        node["sub_pipeline_hash"] = sub_hash
    return node


def _describe_roots(
    steps: Mapping[str, StepView], topology: Mapping[str, Sequence[str]]
) -> list[str]:
    """Steps no `to=` edge points at (map `each` and switch routes are ignored, §21 B15)."""
    targeted = {target for targets in topology.values() for target in targets}
    return [name for name in steps if name not in targeted]


def _describe_hooks(registry: _Registry) -> dict[str, Any]:
    hooks: dict[str, Any] = {}
    if registry.startup_hooks:
        hooks["startup"] = [resolve_name(hook.func) for hook in registry.startup_hooks]
    if registry.shutdown_hooks:
        hooks["shutdown"] = [resolve_name(hook.func) for hook in registry.shutdown_hooks]
    if registry.error_hook is not None:
        hooks["on_error"] = resolve_name(registry.error_hook.func)
    return hooks
