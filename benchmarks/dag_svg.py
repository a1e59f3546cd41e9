"""Building the DAG widget's SVG for a 500-step flow (target: under 1 s).

Measured: the whole build as ``flow.show()`` does it the first time (the flow's graph,
Graphviz's layout through ``dot``, drawing every node in its state); a redraw after a
state change (the layout is cached: what the live view pays per update); and the layered
layout used when ``dot`` is missing. The reference is ``dot`` rendering the same graph
straight to SVG through the ``graphviz`` package.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.report import Quantity, Row
from benchmarks.timing import median, timed

if TYPE_CHECKING:
    import nbflow as nf

STEPS = 500
MAX_BUILD_S = 1.0
MAX_REDRAW_S = 0.05


@dataclass(frozen=True)
class DagResult:
    """Seconds per repetition of each measurement."""

    steps: int
    edges: int
    engine: str
    build_s: list[float]
    redraw_s: list[float]
    layered_s: list[float]
    dot_svg_s: list[float]

    @property
    def description(self) -> str:
        """One line for the report."""
        return (
            f"DAG SVG: a {self.steps}-step flow with {self.edges} dependencies (each step reads "
            f"up to two of the 20 before it), every step in a state; median of "
            f"{len(self.build_s)}"
        )


def big_flow(steps: int = STEPS, seed: int = 5) -> nf.Flow:
    """A flow of ``steps`` steps, each reading up to two of the 20 steps before it."""
    import nbflow
    from nbflow.definition.step import Step

    rng = random.Random(seed)
    flow = nbflow.Flow("bench-dag", store="memory://")
    for i in range(steps):
        inputs = sorted(rng.sample(range(max(0, i - 20), i), k=min(i, 2)))
        args = ", ".join(f"s{j:03d}" for j in inputs)
        namespace: dict[str, Callable[..., int]] = {}
        exec(f"def f({args}):\n    return 1", namespace)
        flow.add_step(Step.from_function(namespace["f"], name=f"s{i:03d}"))
    return flow


def run_dag_svg(repeats: int, steps: int = STEPS, log: Callable[[str], None] = print) -> DagResult:
    """Measure the DAG SVG of a ``steps``-step flow ``repeats`` times."""
    import graphviz

    from nbflow.widgets import layout as dag_layout
    from nbflow.widgets.states import DagSpec, NodeInfo, NodeState
    from nbflow.widgets.svg import draw, render_svg

    flow = big_flow(steps)
    spec = DagSpec.from_graph(flow.graph())
    states = list(NodeState)
    rng = random.Random(1)

    def infos() -> dict[str, NodeInfo]:
        return {n: NodeInfo(rng.choice(states), rng.uniform(0.1, 5000)) for n in spec.nodes}

    def build() -> str:
        dag_layout.layout.cache_clear()
        return render_svg(DagSpec.from_graph(flow.graph()), infos())

    def dot_svg() -> bytes:
        g = graphviz.Digraph(graph_attr={"rankdir": "LR"}, node_attr={"shape": "box"})
        for n in spec.nodes:
            g.node(n, f"{n}\\ncompleted · 12 ms")
        for a, b in spec.edges:
            g.edge(a, b)
        return g.pipe(format="svg")

    build_s, redraw_s, layered_s, dot_s = [], [], [], []
    for i in range(repeats):
        log(f"  DAG SVG {i + 1}/{repeats}")
        build_s.append(timed(build)[0])
        placed = dag_layout.layout(spec)
        redraw_s.append(timed(lambda placed=placed: draw(placed, infos()))[0])
        layered_s.append(
            timed(lambda: draw(dag_layout.layered_layout(spec), infos()))[0]  # no dot needed
        )
        dot_s.append(timed(dot_svg)[0])
    engine = dag_layout.layout(spec).engine
    dag_layout.layout.cache_clear()
    return DagResult(steps, len(spec.edges), engine, build_s, redraw_s, layered_s, dot_s)


def dag_rows(result: DagResult) -> list[Row]:
    """Build, redraw and fallback times against their targets; dot -Tsvg as reference."""
    build, dot = median(result.build_s), median(result.dot_svg_s)
    redraw, layered = median(result.redraw_s), median(result.layered_s)
    n = result.steps
    return [
        Row(
            f"DAG SVG, {n} steps: build ({result.engine} layout + draw)",
            Quantity(build, "s"),
            "graphviz dot -Tsvg alone",
            Quantity(dot, "s"),
            target=f"< {MAX_BUILD_S:g} s",
            met=build < MAX_BUILD_S,
        ),
        Row(
            f"DAG SVG, {n} steps: redraw after a state change",
            Quantity(redraw, "s"),
            target=f"< {MAX_REDRAW_S * 1e3:g} ms",
            met=redraw < MAX_REDRAW_S,
        ),
        Row(
            f"DAG SVG, {n} steps: without dot (layered layout + draw)",
            Quantity(layered, "s"),
            target=f"< {MAX_BUILD_S:g} s",
            met=layered < MAX_BUILD_S,
        ),
    ]
