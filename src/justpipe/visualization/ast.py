"""The renderer-neutral picture of a pipeline (spec §18.1).

`_PipelineASTBuilder` turns the registered steps into these dataclasses once; every
renderer then only has to lay them out. Nodes are keyed by step name, edges and
parallel groups refer to nodes by name, and `VisualNode.id` is the short, stable
identifier (`n0`, `n1`, ...) that renderers use in their output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from justpipe.types import BarrierType

__all__ = ["ParallelGroup", "VisualAST", "VisualEdge", "VisualNode", "VisualNodeKind"]


class VisualNodeKind(Enum):
    """How a node is drawn; STREAMING marks a plain step written as an async generator."""

    STEP = "step"
    STREAMING = "streaming"
    MAP = "map"
    SWITCH = "switch"
    SUB = "sub"


@dataclass
class VisualNode:
    id: str
    name: str
    kind: VisualNodeKind
    is_entry: bool = False
    is_terminal: bool = False
    is_isolated: bool = False
    is_map_target: bool = False
    barrier_type: BarrierType = BarrierType.ALL
    metadata: dict[str, Any] = field(default_factory=dict)
    sub_graph: VisualAST | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self._flat_dict()
        if self.sub_graph is not None:
            data["sub_graph"] = self.sub_graph.to_dict()
        return data

    def _flat_dict(self) -> dict[str, Any]:
        """Every field except `sub_graph` (and `metadata`, which is not serialised)."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "is_entry": self.is_entry,
            "is_terminal": self.is_terminal,
            "is_isolated": self.is_isolated,
            "is_map_target": self.is_map_target,
            "barrier_type": self.barrier_type.value,
        }


@dataclass
class VisualEdge:
    source: str
    target: str
    label: str | None = None
    is_map_edge: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "target": self.target,
            "is_map_edge": self.is_map_edge,
        }
        if self.label is not None:
            data["label"] = self.label
        return data


@dataclass
class ParallelGroup:
    """Targets that one source starts together (a source with more than one `to=`)."""

    id: str
    source_id: str
    node_ids: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source_id": self.source_id, "node_ids": list(self.node_ids)}


@dataclass
class VisualAST:
    nodes: dict[str, VisualNode]
    edges: list[VisualEdge]
    parallel_groups: list[ParallelGroup]
    startup_hooks: list[str] = field(default_factory=list)
    shutdown_hooks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, nested sub-graphs included.

        Built with an explicit work list rather than recursion, so arbitrarily deep
        sub-pipeline nesting cannot exhaust the interpreter stack.
        """
        root: dict[str, Any] = {}
        pending: list[tuple[VisualAST, dict[str, Any]]] = [(self, root)]
        while pending:
            ast, out = pending.pop()
            nodes: dict[str, Any] = {}
            for key, node in ast.nodes.items():
                node_dict = node._flat_dict()
                if node.sub_graph is not None:
                    child: dict[str, Any] = {}
                    node_dict["sub_graph"] = child
                    pending.append((node.sub_graph, child))
                nodes[key] = node_dict
            out["nodes"] = nodes
            out["edges"] = [edge.to_dict() for edge in ast.edges]
            out["parallel_groups"] = [group.to_dict() for group in ast.parallel_groups]
            out["startup_hooks"] = list(ast.startup_hooks)
            out["shutdown_hooks"] = list(ast.shutdown_hooks)
        return root
