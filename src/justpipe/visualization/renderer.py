"""The renderer contract and the read-only view of a definition it receives (spec §18.1).

`Pipe.graph(renderer)` hands a renderer the pipe's registered step objects and its
`to=` topology. `StepView` and `PipelineView` name the attributes of those objects
that visualization code may rely on, so renderers and the AST builder never depend on
the kernel's concrete step classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from justpipe.types import BarrierType, NodeKind

__all__ = ["GraphRenderer", "PipelineView", "RegistryView", "StepView"]


class StepView(Protocol):
    """What every registered step exposes (kind-specific extras are read by kind).

    MAP steps also have ``each: str``; SWITCH steps ``to`` (routing dict or router
    callable) and ``default: str | None``; SUB steps ``pipeline`` (a `PipelineView`).
    """

    @property
    def name(self) -> str: ...

    @property
    def barrier_type(self) -> BarrierType: ...

    @property
    def original_func(self) -> Callable[..., Any]: ...

    def get_kind(self) -> NodeKind: ...

    def get_targets(self) -> list[str]: ...


class RegistryView(Protocol):
    @property
    def steps(self) -> Mapping[str, StepView]: ...


class PipelineView(Protocol):
    """The parts of a `Pipe` needed to draw it (used for sub-pipelines)."""

    @property
    def registry(self) -> RegistryView: ...

    @property
    def topology(self) -> Mapping[str, Sequence[str]]: ...


@runtime_checkable
class GraphRenderer(Protocol):
    """Anything with this `render` method can be passed to `Pipe.graph(renderer=...)`."""

    def render(
        self,
        steps: Mapping[str, StepView],
        topology: Mapping[str, Sequence[str]],
        startup_hooks: list[Callable[..., Any]] | None = None,
        shutdown_hooks: list[Callable[..., Any]] | None = None,
    ) -> str: ...
