"""Draw and inspect pipeline definitions (spec §18).

`Pipe.graph()` renders Mermaid text by default; any object with a matching `render`
method (`GraphRenderer`) can produce another format from the same step objects, and
`VisualAST` is the renderer-neutral model that `Pipe.describe()` also exports.
"""

# `_PipelineASTBuilder` and `_MermaidRenderer` are private but stay importable from here
# for code written against justpipe 0.12 (the redundant aliases mark them re-exported).
from justpipe.visualization.ast import (
    ParallelGroup,
    VisualAST,
    VisualEdge,
    VisualNode,
    VisualNodeKind,
)
from justpipe.visualization.builder import _PipelineASTBuilder as _PipelineASTBuilder
from justpipe.visualization.mermaid import (
    MermaidRenderer,
    MermaidTheme,
    generate_mermaid_graph,
)
from justpipe.visualization.mermaid import (
    _MermaidRenderer as _MermaidRenderer,
)
from justpipe.visualization.renderer import GraphRenderer

__all__ = [
    "GraphRenderer",
    "MermaidRenderer",
    "MermaidTheme",
    "ParallelGroup",
    "VisualAST",
    "VisualEdge",
    "VisualNode",
    "VisualNodeKind",
    "generate_mermaid_graph",
]
