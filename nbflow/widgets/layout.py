"""Placing a DAG's nodes and edges: Graphviz's ``dot``, or a layered layout without it.

A layout depends only on the DAG's shape, so it is computed once per shape (and cached)
and a state change only redraws colors and captions (:mod:`nbflow.widgets.svg`). Nodes
have fixed sizes, so captions can change without moving anything.

Graphviz is imported here only, when a layout is first needed. When the ``dot`` binary is
missing, :func:`layered_layout` places the steps in columns by dependency depth; the
widget's front end then lays the same graph out again with dagre (vendored, see
``nbflow/widgets/vendor/``), which routes every edge between the boxes. The Python
layered layout stays what a page without JavaScript (an exported SVG) shows.
"""

from __future__ import annotations

import functools
import itertools
import math
import shlex
from dataclasses import dataclass

import networkx as nx

from nbflow.widgets.states import DagSpec

NAME_FONT = 12.0  # px, bold
CAPTION_FONT = 10.0  # px
NODE_HEIGHT = 40.0
CAPTION_CHARS = 18  # room kept for "completed · 999 ms" so captions never move nodes
GROUP_CAPTION_CHARS = 24  # "500 steps · 499/500 done"
ICON_ROOM = 16.0  # the state's icon, left of the name
RANK_GAP = 44.0  # between columns
NODE_GAP = 14.0  # between nodes of a column
MARGIN = 8.0
ARROW = 9.0  # arrowhead length
PX_PER_INCH = 72.0

#: Shown once per session with a layout made without Graphviz.
NO_DOT_NOTE = (
    "Graphviz's `dot` program was not found, so DAGs are laid out in the browser (dagre). "
    "For Graphviz's layout install it: `apt-get install graphviz`, `brew install graphviz` "
    "or `conda install -c conda-forge graphviz`."
)


@dataclass(frozen=True)
class Box:
    """A node's center and size, in px."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class EdgePath:
    """An edge drawn as an SVG path ending in an arrowhead polygon."""

    tail: str
    head: str
    path: str
    arrow: str


@dataclass(frozen=True)
class Layout:
    """Where everything goes; ``engine`` is ``"dot"`` or ``"layered"``."""

    width: float
    height: float
    nodes: dict[str, Box]
    edges: tuple[EdgePath, ...]
    engine: str

    @property
    def note(self) -> str:
        """The note to show with this layout ('' for Graphviz's)."""
        return NO_DOT_NOTE if self.engine == "layered" else ""


def node_width(name: str) -> float:
    """A node's width: room for its icon, its name in bold and the longest caption (a
    folded group's name has a space, which no step's has, and a longer caption)."""
    caption = GROUP_CAPTION_CHARS if " " in name else CAPTION_CHARS
    return max(len(name) * NAME_FONT * 0.62, caption * CAPTION_FONT * 0.58) + 20.0 + ICON_ROOM


@functools.lru_cache(maxsize=64)
def layout(spec: DagSpec) -> Layout:
    """Lay ``spec`` out with Graphviz's ``dot``, or the layered layout if it is missing."""
    if not spec.nodes:
        return Layout(2 * MARGIN, 2 * MARGIN, {}, (), "empty")
    try:
        return dot_layout(spec)
    except DotUnavailable:
        return layered_layout(spec)


class DotUnavailable(Exception):
    """Graphviz's ``dot`` could not be run (not installed, or it failed)."""


def dot_layout(spec: DagSpec) -> Layout:
    """Ask ``dot`` (through the ``graphviz`` package) where nodes and edges go."""
    import graphviz
    from graphviz.backend.execute import ExecutableNotFound

    ids = {name: f"n{i}" for i, name in enumerate(spec.nodes)}
    names = {v: k for k, v in ids.items()}
    graph = graphviz.Digraph(
        graph_attr={
            "rankdir": "LR",
            "nodesep": f"{NODE_GAP / PX_PER_INCH:.3f}",
            "ranksep": f"{RANK_GAP / PX_PER_INCH:.3f}",
            "margin": "0",
        },
        node_attr={"shape": "box", "fixedsize": "true", "label": ""},
        edge_attr={"arrowsize": f"{ARROW / 10:.2f}"},
    )
    for name in spec.nodes:
        graph.node(
            ids[name],
            width=f"{node_width(name) / PX_PER_INCH:.3f}",
            height=f"{NODE_HEIGHT / PX_PER_INCH:.3f}",
        )
    for tail, head in spec.edges:
        graph.edge(ids[tail], ids[head])
    try:
        plain = graph.pipe(format="plain", encoding="utf-8")
    except ExecutableNotFound as exc:
        raise DotUnavailable(str(exc)) from None
    except Exception as exc:  # dot crashed or printed something unexpected
        raise DotUnavailable(repr(exc)) from None
    return _parse_plain(plain, names)


def _parse_plain(plain: str, names: dict[str, str]) -> Layout:
    """Read ``dot -Tplain`` output (inches, origin bottom left) into a Layout in px."""
    height_in = 0.0
    width_in = 0.0
    nodes: dict[str, Box] = {}
    edges: list[EdgePath] = []
    for line in plain.splitlines():
        parts = shlex.split(line)
        if not parts:
            continue
        kind = parts[0]
        if kind == "graph":
            width_in, height_in = float(parts[2]), float(parts[3])
        elif kind == "node":
            x, y, w, h = (float(v) for v in parts[2:6])
            nodes[names[parts[1]]] = Box(
                _px(x), _px(height_in - y), w * PX_PER_INCH, h * PX_PER_INCH
            )
        elif kind == "edge":
            count = int(parts[3])
            coords = [float(v) for v in parts[4 : 4 + 2 * count]]
            points = [
                (_px(coords[i]), _px(height_in - coords[i + 1])) for i in range(0, len(coords), 2)
            ]
            edges.append(_edge(names[parts[1]], names[parts[2]], points))
    return Layout(
        width_in * PX_PER_INCH + 2 * MARGIN,
        height_in * PX_PER_INCH + 2 * MARGIN,
        nodes,
        tuple(edges),
        "dot",
    )


def _px(inches: float) -> float:
    return inches * PX_PER_INCH + MARGIN


def _edge(tail: str, head: str, points: list[tuple[float, float]]) -> EdgePath:
    """A B-spline path (dot's control points: 1 + 3k) and an arrowhead past its end."""
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for i in range(1, len(points) - 2, 3):
        (x1, y1), (x2, y2), (x3, y3) = points[i : i + 3]
        d += f" C{x1:.1f},{y1:.1f} {x2:.1f},{y2:.1f} {x3:.1f},{y3:.1f}"
    end = points[-1]
    before = next((p for p in reversed(points[:-1]) if p != end), (end[0] - 1, end[1]))
    return EdgePath(tail, head, d, _arrowhead(before, end))


def _arrowhead(before: tuple[float, float], end: tuple[float, float]) -> str:
    """A triangle whose base is centered on ``end``, pointing away from ``before``."""
    dx, dy = end[0] - before[0], end[1] - before[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    tip = (end[0] + ux * ARROW, end[1] + uy * ARROW)
    half = ARROW * 0.4
    left = (end[0] - uy * half, end[1] + ux * half)
    right = (end[0] + uy * half, end[1] - ux * half)
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in (tip, left, right))


def layered_layout(spec: DagSpec, sweeps: int = 4) -> Layout:
    """Columns by dependency depth, ordered to cross few edges; no Graphviz needed.

    An edge spanning several columns passes through a virtual point in each column
    between, so it is routed between the nodes rather than through them.
    """
    dag = nx.DiGraph()
    dag.add_nodes_from(spec.nodes)
    dag.add_edges_from(spec.edges)
    position = {n: i for i, n in enumerate(spec.nodes)}
    layers = [sorted(g, key=position.__getitem__) for g in nx.topological_generations(dag)]
    rank = {n: r for r, layer in enumerate(layers) for n in layer}
    # Long edges become chains through virtual nodes (named with a leading space, which
    # no step name has).
    chains: dict[tuple[str, str], list[str]] = {}
    ordered = nx.DiGraph()
    ordered.add_nodes_from(spec.nodes)
    for tail, head in spec.edges:
        chain = [tail]
        for r in range(rank[tail] + 1, rank[head]):
            virtual = f" {tail}>{head}@{r}"
            layers[r].append(virtual)
            rank[virtual] = r
            chain.append(virtual)
        chain.append(head)
        nx.add_path(ordered, chain)
        chains[(tail, head)] = chain
    _order_layers(ordered, layers, rank, sweeps)

    def size(n: str) -> tuple[float, float]:
        return (8.0, 8.0) if n.startswith(" ") else (node_width(n), NODE_HEIGHT)

    widths = [max(size(n)[0] for n in layer) for layer in layers]
    heights = [sum(size(n)[1] for n in layer) + (len(layer) - 1) * NODE_GAP for layer in layers]
    column_height = max(heights)
    boxes: dict[str, Box] = {}
    x = MARGIN
    for layer, width, height in zip(layers, widths, heights, strict=True):
        y = MARGIN + (column_height - height) / 2
        for n in layer:
            w, h = size(n)
            boxes[n] = Box(x + width / 2, y + h / 2, w, h)
            y += h + NODE_GAP
        x += width + RANK_GAP
    edges = [
        _chain_edge(tail, head, [boxes[n] for n in chain]) for (tail, head), chain in chains.items()
    ]
    nodes = {n: boxes[n] for n in spec.nodes}
    return Layout(x - RANK_GAP + MARGIN, column_height + 2 * MARGIN, nodes, tuple(edges), "layered")


def _order_layers(
    dag: nx.DiGraph, layers: list[list[str]], rank: dict[str, int], sweeps: int
) -> None:
    """Barycenter sweeps: order each column by the mean row of its neighbours in the
    column before (going right) or after (going left)."""
    row = {n: i for layer in layers for i, n in enumerate(layer)}
    for sweep in range(sweeps):
        forward = sweep % 2 == 0
        sequence = range(1, len(layers)) if forward else range(len(layers) - 2, -1, -1)
        for r in sequence:
            near = r - 1 if forward else r + 1

            def barycenter(n: str, near: int = near, forward: bool = forward) -> float:
                others = dag.predecessors(n) if forward else dag.successors(n)
                rows = [row[o] for o in others if rank[o] == near]
                return sum(rows) / len(rows) if rows else row[n]

            layers[r].sort(key=barycenter)
            row.update({n: i for i, n in enumerate(layers[r])})


def _chain_edge(tail: str, head: str, boxes: list[Box]) -> EdgePath:
    """A smooth path from ``tail``'s right side through virtual points to ``head``."""
    first, last = boxes[0], boxes[-1]
    points = [(first.x + first.width / 2, first.y)]
    points += [(b.x, b.y) for b in boxes[1:-1]]
    points.append((last.x - last.width / 2 - ARROW, last.y))
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for (x1, y1), (x2, y2) in itertools.pairwise(points):
        bend = max((x2 - x1) / 2, 6.0)
        d += f" C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    end = points[-1]
    return EdgePath(tail, head, d, _arrowhead((end[0] - 1, end[1]), end))
