"""Building and validating a flow's DAG (a pure function of its steps)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from nbflow.definition.step import Step
from nbflow.errors import CycleError, DefinitionError, MissingDependencyError, UnknownStepError


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: shared per definition
class FlowGraph:
    """A validated DAG of steps, with their run parameters and a run order."""

    dag: nx.DiGraph
    steps: Mapping[str, Step]
    order: tuple[str, ...]  # a topological order, stable with the definition order
    params: Mapping[str, Any]  # every run parameter -> its default

    def ancestors(self, names: Collection[str]) -> set[str]:
        """The steps ``names`` need, themselves included."""
        out = set(names)
        for name in names:
            out |= nx.ancestors(self.dag, name)
        return out

    def descendants(self, names: Collection[str]) -> set[str]:
        """The steps that need any of ``names`` (themselves excluded unless downstream)."""
        out: set[str] = set()
        for name in names:
            out |= nx.descendants(self.dag, name)
        return out

    def subgraph(self, names: Collection[str]) -> FlowGraph:
        """The graph restricted to ``names`` (closed under ancestors by the caller)."""
        keep = set(names)
        return FlowGraph(
            dag=self.dag.subgraph(keep).copy(),
            steps={n: s for n, s in self.steps.items() if n in keep},
            order=tuple(n for n in self.order if n in keep),
            params={
                p: v for p, v in self.params.items() if any(p in self.steps[n].params for n in keep)
            },
        )

    def params_of(self, step: str) -> tuple[str, ...]:
        """The run parameters ``step`` reads."""
        return tuple(self.steps[step].params)


def build_graph(steps: Mapping[str, Step], targets: Collection[str] | None = None) -> FlowGraph:
    """Validate ``steps`` and build their DAG; with ``targets``, keep only what they need.

    Raises MissingDependencyError for an input that names no step, DefinitionError for a
    step named like a run parameter or a parameter with conflicting defaults, and
    CycleError naming the steps of a cycle.
    """
    dag = nx.DiGraph()
    params: dict[str, Any] = {}
    declared_by: dict[str, str] = {}
    for name, step in steps.items():
        dag.add_node(name)
        for p, default in step.params.items():
            if p in steps:
                raise DefinitionError(
                    f"step {p!r} has the same name as a run parameter of step {name!r}: rename "
                    "one of them (a parameter named like a step is read as that step's output)."
                )
            if p in params and not _same(params[p], default):
                raise DefinitionError(
                    f"run parameter {p!r} has default {params[p]!r} in step {declared_by[p]!r} "
                    f"but {default!r} in step {name!r}: give it one default, or rename one."
                )
            params.setdefault(p, default)
            declared_by.setdefault(p, name)
    for name, step in steps.items():
        for dep in step.upstream:
            if dep not in steps:
                raise MissingDependencyError(name, dep, steps)
            dag.add_edge(dep, name)
    position = {name: i for i, name in enumerate(steps)}
    try:
        order = tuple(nx.lexicographical_topological_sort(dag, key=position.__getitem__))
    except nx.NetworkXUnfeasible:  # a cycle: name its steps (looked for only now)
        raise CycleError([edge[0] for edge in nx.find_cycle(dag)]) from None
    graph = FlowGraph(dag=dag, steps=dict(steps), order=order, params=params)
    if targets is not None:
        for t in targets:
            if t not in steps:
                raise UnknownStepError(t, steps)
        graph = graph.subgraph(graph.ancestors(targets))
    return graph


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # e.g. arrays, whose == is elementwise
        return a is b
