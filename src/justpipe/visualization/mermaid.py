"""Mermaid flowchart output (spec §18.3).

The text layout is a compatibility contract: tools diff `pipe.graph()` output, so the
order of sections, the blank lines and the indentation follow justpipe 0.12 exactly.
Everything is ordered by node name, never by registration or set order, so the same
definition always renders to the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from justpipe.types import BarrierType
from justpipe.visualization.ast import VisualAST, VisualEdge, VisualNode, VisualNodeKind
from justpipe.visualization.builder import _PipelineASTBuilder
from justpipe.visualization.renderer import GraphRenderer, StepView

__all__ = ["MermaidRenderer", "MermaidTheme", "_MermaidRenderer", "generate_mermaid_graph"]

INDENT = 4
#: Class statements are emitted at this indent at every nesting level (as upstream does).
CLASS_INDENT = 4
ISOLATED_CLASS = "isolated"


@dataclass
class MermaidTheme:
    """Colours of the `classDef` lines and the flow direction of the chart."""

    direction: str = "TD"
    step_fill: str = "#e3f2fd"
    step_stroke: str = "#1976d2"
    step_color: str = "#0d47a1"
    streaming_fill: str = "#fff3e0"
    streaming_stroke: str = "#f57c00"
    streaming_color: str = "#e65100"
    map_fill: str = "#e8f5e9"
    map_stroke: str = "#388e3c"
    map_color: str = "#1b5e20"
    switch_fill: str = "#f3e5f5"
    switch_stroke: str = "#7b1fa2"
    switch_color: str = "#4a148c"
    sub_fill: str = "#f1f8e9"
    sub_stroke: str = "#558b2f"
    sub_color: str = "#33691e"
    isolated_fill: str = "#fce4ec"
    isolated_stroke: str = "#c2185b"
    isolated_color: str = "#880e4f"
    start_end_fill: str = "#e8f5e9"
    start_end_stroke: str = "#388e3c"
    start_end_color: str = "#1b5e20"

    def render_header(self) -> str:
        return f"graph {self.direction}"

    def render_styles(self) -> list[str]:
        return [
            "%% Styling",
            "classDef default fill:#f8f9fa,stroke:#dee2e6,stroke-width:1px;",
            self._class_def("step", self.step_fill, self.step_stroke, self.step_color),
            self._class_def(
                "streaming", self.streaming_fill, self.streaming_stroke, self.streaming_color
            ),
            self._class_def("map", self.map_fill, self.map_stroke, self.map_color),
            self._class_def("switch", self.switch_fill, self.switch_stroke, self.switch_color),
            self._class_def("sub", self.sub_fill, self.sub_stroke, self.sub_color),
            self._class_def(
                ISOLATED_CLASS,
                self.isolated_fill,
                self.isolated_stroke,
                self.isolated_color,
                extra="stroke-dasharray: 5 5,",
            ),
            self._class_def(
                "startEnd",
                self.start_end_fill,
                self.start_end_stroke,
                self.start_end_color,
                width=3,
            ),
        ]

    @staticmethod
    def _class_def(
        name: str, fill: str, stroke: str, color: str, *, width: int = 2, extra: str = ""
    ) -> str:
        return (
            f"classDef {name} fill:{fill},stroke:{stroke},stroke-width:{width}px,"
            f"{extra}color:{color};"
        )


#: A request, yielded by `_MermaidRenderer._content`, to render a nested sub-graph.
_ChildRequest = tuple[VisualAST, str, int]


class _MermaidRenderer:
    """Lays out one `VisualAST` as Mermaid text.

    Nested sub-pipeline clusters are rendered by a stack of generators instead of
    recursion: `_content` yields a request for each child graph at the point where its
    text belongs, and `render` drives the stack.
    """

    def __init__(self, ast: VisualAST, theme: MermaidTheme | None = None) -> None:
        self.ast = ast
        self.theme = theme if theme is not None else MermaidTheme()
        self._lines: list[str] = []

    def render(self) -> str:
        self._lines = [self.theme.render_header()]
        stack: list[Generator[_ChildRequest, None, None]] = [self._content(self.ast, "", INDENT)]
        while stack:
            request = next(stack[-1], None)
            if request is None:
                stack.pop()
            else:
                stack.append(self._content(*request))
        self._add("")
        for line in self.theme.render_styles():
            self._add(line)
        return "\n".join(self._lines)

    # -- primitives

    def _add(self, line: str, indent: int = INDENT) -> None:
        self._lines.append(" " * indent + line if line else "")

    @staticmethod
    def _format_label(name: str) -> str:
        return name.replace('"', "&quot;").replace("_", " ").title()

    def _render_node(self, node: VisualNode, id_prefix: str, is_isolated: bool = False) -> str:
        """One node definition in the shape of its kind."""
        node_id = id_prefix + node.id
        label = self._format_label(node.name)
        if node.barrier_type is BarrierType.ANY:
            label += " (Any)"
        if node.is_map_target:
            text = f'{node_id}@{{ shape: procs, label: "{label}" }}'
        elif node.kind is VisualNodeKind.SWITCH:
            text = f'{node_id}{{"{label}"}}'
        elif node.kind is VisualNodeKind.MAP:
            text = f'{node_id}[["{label}"]]'
        elif node.kind is VisualNodeKind.SUB:
            text = f'{node_id}[/"{label}" /]'
        elif node.kind is VisualNodeKind.STREAMING:
            text = f'{node_id}(["{label} ⚡"])'
        else:
            text = f'{node_id}["{label}"]'
        return text + ":::isolated" if is_isolated else text

    # -- one graph level

    def _content(
        self, ast: VisualAST, prefix: str, indent: int
    ) -> Generator[_ChildRequest, None, None]:
        if not ast.nodes:
            self._add(f"{prefix}Empty[No steps registered]", indent)
            return
        _check_references(ast)
        if ast.startup_hooks:
            self._render_hooks(ast.startup_hooks, prefix, indent, "startup")
            self._add(f"{prefix}startup --> {prefix}Start", indent)
        self._add(f'{prefix}Start(["▶ Start"])', indent)
        self._render_parallel_groups(ast, prefix, indent)
        self._render_main_nodes(ast, prefix, indent)
        self._render_end(ast, prefix, indent)
        self._add("")
        self._render_start_connections(ast, prefix, indent)
        self._render_edges(ast, prefix, indent)
        self._render_isolated_nodes(ast, prefix, indent)
        self._apply_classes(ast, prefix)
        for node in _sorted_by_name(ast.nodes.values()):
            if node.kind is VisualNodeKind.SUB and node.sub_graph is not None:
                node_id = prefix + node.id
                label = self._format_label(node.name)
                self._add("")
                self._add(f'subgraph cluster_{node_id} ["{label} (Impl)"]', indent)
                self._add("direction TB", indent + INDENT)
                yield node.sub_graph, f"{node_id}_", indent + INDENT
                self._add("end", indent)
                self._add(f"{node_id} -.- {node_id}_Start", indent)

    def _render_hooks(self, hooks: Sequence[str], prefix: str, indent: int, kind: str) -> None:
        title = "Startup Hooks" if kind == "startup" else "Shutdown Hooks"
        inner = indent + INDENT
        self._add(f"subgraph {prefix}{kind}[{title}]", indent)
        self._add("direction TB", inner)
        for index, hook in enumerate(hooks):
            self._add(f"{prefix}{kind}_{index}> {self._format_label(hook)} ]", inner)
            if index:
                self._add(f"{prefix}{kind}_{index - 1} --> {prefix}{kind}_{index}", inner)
        self._add("end", indent)

    def _render_parallel_groups(self, ast: VisualAST, prefix: str, indent: int) -> None:
        for group in ast.parallel_groups:
            self._add("")
            self._add(f"subgraph {prefix}{group.id}[Parallel]", indent)
            self._add("direction LR", indent + INDENT)
            for name in sorted(group.node_ids):
                self._add(self._render_node(ast.nodes[name], prefix), indent + INDENT)
            self._add("end", indent)

    def _render_main_nodes(self, ast: VisualAST, prefix: str, indent: int) -> None:
        grouped = {name for group in ast.parallel_groups for name in group.node_ids}
        self._add("")
        for node in _sorted_by_name(ast.nodes.values()):
            if node.name not in grouped and not node.is_isolated:
                self._add(self._render_node(node, prefix), indent)

    def _render_end(self, ast: VisualAST, prefix: str, indent: int) -> None:
        terminals = [
            node
            for node in _sorted_by_name(ast.nodes.values())
            if node.is_terminal and not node.is_isolated
        ]
        if not terminals:
            return
        self._add(f'{prefix}End(["■ End"])', indent)
        for node in terminals:
            self._add(f"{prefix}{node.id} --> {prefix}End", indent)
        if ast.shutdown_hooks:
            self._render_hooks(ast.shutdown_hooks, prefix, indent, "shutdown")
            self._add(f"{prefix}End --> {prefix}shutdown", indent)

    def _render_start_connections(self, ast: VisualAST, prefix: str, indent: int) -> None:
        for node in _sorted_by_name(ast.nodes.values()):
            if node.is_entry:
                self._add(f"{prefix}Start --> {prefix}{node.id}", indent)

    def _render_edges(self, ast: VisualAST, prefix: str, indent: int) -> None:
        for edge in sorted(ast.edges, key=lambda edge: (edge.source, edge.target)):
            source = prefix + ast.nodes[edge.source].id
            target = prefix + ast.nodes[edge.target].id
            self._add(*_edge_line(edge, source, target, indent))

    def _render_isolated_nodes(self, ast: VisualAST, prefix: str, indent: int) -> None:
        isolated = [node for node in _sorted_by_name(ast.nodes.values()) if node.is_isolated]
        if not isolated:
            return
        self._add("")
        self._add(f"subgraph {prefix}utilities[Utilities]", indent)
        self._add("direction TB", indent + INDENT)
        for node in isolated:
            self._add(self._render_node(node, prefix, is_isolated=True), indent + INDENT)
        self._add("end", indent)

    def _apply_classes(self, ast: VisualAST, prefix: str) -> None:
        buckets: dict[str, list[str]] = {}
        for node in ast.nodes.values():
            bucket = ISOLATED_CLASS if node.is_isolated else node.kind.value
            buckets.setdefault(bucket, []).append(prefix + node.id)
        for bucket in sorted(buckets):
            self._add(f"class {','.join(sorted(buckets[bucket]))} {bucket};", CLASS_INDENT)
        self._add(f"class {prefix}Start,{prefix}End startEnd;", CLASS_INDENT)


def _sorted_by_name(nodes: Iterable[VisualNode]) -> list[VisualNode]:
    return sorted(nodes, key=lambda node: node.name)


def _edge_line(edge: VisualEdge, source: str, target: str, indent: int) -> tuple[str, int]:
    """The Mermaid arrow for one edge and its indent (labelled arrows sit one space deeper)."""
    if edge.is_map_edge:
        return f"{source} -. map .-> {target}", indent
    if edge.label:
        return f'{source} -- "{edge.label}" --> {target}', indent + 1
    return f"{source} --> {target}", indent


def _check_references(ast: VisualAST) -> None:
    """Fail with a readable message when an edge or group names a node the AST lacks."""
    references = [name for edge in ast.edges for name in (edge.source, edge.target)]
    references.extend(name for group in ast.parallel_groups for name in group.node_ids)
    for name in references:
        if name not in ast.nodes:
            raise ValueError(
                f"VisualAST refers to node {name!r}, which is not in its nodes "
                f"(known: {', '.join(sorted(ast.nodes)) or 'none'})"
            )


def generate_mermaid_graph(
    steps: Mapping[str, StepView],
    topology: Mapping[str, Sequence[str]],
    startup_hooks: list[Callable[..., Any]] | None = None,
    shutdown_hooks: list[Callable[..., Any]] | None = None,
    *,
    theme: MermaidTheme | None = None,
    direction: str = "TD",
) -> str:
    """Mermaid text for a definition; `theme.direction` wins over `direction` when given."""
    ast = _PipelineASTBuilder.build(steps, topology, startup_hooks, shutdown_hooks)
    effective = theme if theme is not None else MermaidTheme(direction=direction)
    return _MermaidRenderer(ast, effective).render()


class MermaidRenderer(GraphRenderer):
    """The default `Pipe.graph()` renderer."""

    def __init__(self, theme: MermaidTheme | None = None, direction: str = "TD") -> None:
        self.theme = theme
        self.direction = direction

    def render(
        self,
        steps: Mapping[str, StepView],
        topology: Mapping[str, Sequence[str]],
        startup_hooks: list[Callable[..., Any]] | None = None,
        shutdown_hooks: list[Callable[..., Any]] | None = None,
    ) -> str:
        return generate_mermaid_graph(
            steps,
            topology,
            startup_hooks,
            shutdown_hooks,
            theme=self.theme,
            direction=self.direction,
        )
