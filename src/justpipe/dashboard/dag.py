"""Lays out ``describe()``'s visual AST as an SVG-ready graph (layers top to bottom).

Layer of a node = its shortest distance from an entry node (cycle-safe: routing
back-edges do not push nodes down); isolated nodes and unreachable ones go in a
last row. Sub-pipelines are laid out recursively and drawn inside their node's box.
Coordinates only: the template draws the shapes and escapes every name.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["layout_dag"]

NODE_W = 150
NODE_H = 40
GAP_X = 30
GAP_Y = 60
PAD = 20


def layout_dag(
    ast: dict[str, Any],
    statuses: dict[str, str],
    nodes_info: dict[str, Any],
    prefix: str = "",
) -> dict[str, Any]:
    """Nodes with positions and the run status of their step, edges as SVG paths."""
    found = ast.get("nodes")
    raw_nodes: dict[str, dict[str, Any]] = {
        str(name): node
        for name, node in (found.items() if isinstance(found, dict) else [])
        if isinstance(node, dict)
    }
    names = sorted(str(name) for name in raw_nodes)
    listed = ast.get("edges")
    edges = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    successors: dict[str, list[str]] = {name: [] for name in names}
    for edge in edges:
        source, target = str(edge.get("source")), str(edge.get("target"))
        if source in successors and target in successors:
            successors[source].append(target)
    entries = [n for n in names if raw_nodes[n].get("is_entry")] or names[:1]
    layer: dict[str, int] = {}
    queue = deque(entries)
    for entry in entries:
        layer[entry] = 0
    while queue:
        current = queue.popleft()
        for nxt in successors[current]:
            if nxt not in layer:
                layer[nxt] = layer[current] + 1
                queue.append(nxt)
    last = max(layer.values(), default=-1) + 1
    for name in names:
        layer.setdefault(name, last)
    rows: dict[int, list[str]] = {}
    for name in names:
        rows.setdefault(layer[name], []).append(name)
    sizes: dict[str, tuple[int, int]] = {}
    subs: dict[str, dict[str, Any]] = {}
    for name in names:
        node = raw_nodes[name]
        sub = node.get("sub_graph")
        if isinstance(sub, dict) and sub.get("nodes"):
            # forwarded child events are staged "<sub step>:<child step>"
            inner_statuses = {
                key[len(name) + 1 :]: value
                for key, value in statuses.items()
                if key.startswith(f"{name}:")
            }
            inner = layout_dag(sub, inner_statuses, {}, prefix=f"{prefix}{name}:")
            subs[name] = inner
            sizes[name] = (max(NODE_W, inner["width"]), NODE_H + inner["height"])
        else:
            sizes[name] = (NODE_W, NODE_H)
    width = max(
        (sum(sizes[n][0] for n in row) + GAP_X * (len(row) - 1) for row in rows.values()),
        default=NODE_W,
    )
    positions: dict[str, tuple[float, float]] = {}
    y = float(PAD)
    for index in sorted(rows):
        row = rows[index]
        row_width = sum(sizes[n][0] for n in row) + GAP_X * (len(row) - 1)
        x = PAD + (width - row_width) / 2
        for name in row:
            positions[name] = (x, y)
            x += sizes[name][0] + GAP_X
        y += max(sizes[n][1] for n in row) + GAP_Y
    nodes = []
    for name in names:
        node = raw_nodes[name]
        x, y0 = positions[name]
        w, h = sizes[name]
        described = nodes_info.get(name)
        info: dict[str, Any] = described if isinstance(described, dict) else {}
        nodes.append(
            {
                "name": name,
                "path": prefix + name,
                "kind": str(node.get("kind", "step")),
                "x": round(x, 1),
                "y": round(y0, 1),
                "w": w,
                "h": h,
                "cx": round(x + w / 2, 1),
                "status": statuses.get(name, "none"),
                "entry": bool(node.get("is_entry")),
                "terminal": bool(node.get("is_terminal")),
                "map_target": bool(node.get("is_map_target")),
                "barrier": str(node.get("barrier_type", "all")),
                "targets": ", ".join(str(t) for t in info.get("targets") or []),
                "timeout": info.get("timeout"),
                "retries": info.get("retries"),
                "sub": subs.get(name),
            }
        )
    drawn_edges = []
    for edge in edges:
        source, target = str(edge.get("source")), str(edge.get("target"))
        if source not in positions or target not in positions:
            continue
        sx, sy = positions[source]
        tx, ty = positions[target]
        start = (sx + sizes[source][0] / 2, sy + sizes[source][1])
        end = (tx + sizes[target][0] / 2, ty)
        if layer[target] <= layer[source]:  # a loop back up: leave from the side
            start = (sx + sizes[source][0], sy + sizes[source][1] / 2)
            end = (tx + sizes[target][0], ty + sizes[target][1] / 2)
            bend = max(start[0], end[0]) + 40
            d = _curve(start, (bend, start[1]), (bend, end[1]), end)
        else:
            mid = (start[1] + end[1]) / 2
            d = _curve(start, (start[0], mid), (end[0], mid), end)
        drawn_edges.append(
            {
                "d": d,
                "map": bool(edge.get("is_map_edge")),
                "label": edge.get("label"),
                "lx": round((start[0] + end[0]) / 2, 1),
                "ly": round((start[1] + end[1]) / 2, 1),
            }
        )
    groups = []
    listed_groups = ast.get("parallel_groups")
    for group in listed_groups if isinstance(listed_groups, list) else []:
        if not isinstance(group, dict):
            continue
        listed_ids = group.get("node_ids")
        node_ids = listed_ids if isinstance(listed_ids, list) else []
        members = [str(m) for m in node_ids if str(m) in positions]
        if len(members) < 2:
            # node_ids may be ids (n0, n1) rather than names
            by_id = {str(raw_nodes[n].get("id")): n for n in names}
            members = [by_id[str(m)] for m in node_ids if str(m) in by_id]
        if len(members) < 2:
            continue
        xs = [positions[m][0] for m in members]
        ys = [positions[m][1] for m in members]
        x2 = max(positions[m][0] + sizes[m][0] for m in members)
        y2 = max(positions[m][1] + sizes[m][1] for m in members)
        groups.append(
            {"x": min(xs) - 8, "y": min(ys) - 8, "w": x2 - min(xs) + 16, "h": y2 - min(ys) + 16}
        )
    return {
        "nodes": nodes,
        "edges": drawn_edges,
        "groups": groups,
        "width": round(width + 2 * PAD + 60, 1),
        "height": round(y - GAP_Y + PAD, 1),
    }


Point = tuple[float, float]


def _curve(start: Point, control1: Point, control2: Point, end: Point) -> str:
    """An SVG cubic Bezier path."""
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (control1, control2, end))
    return f"M{start[0]:.1f},{start[1]:.1f} C{points}"
