"""Groups of steps a big DAG can fold into one node: user-given or found by name.

A group is either given (``@flow.step(group="loaders")``) or found: three or more steps
whose names differ only in their numbers (``load_0`` … ``load_39``, ``s3_part1_clean`` …)
and of which none depends on another (a fan-out). Folding such a set into one node can
never create a cycle; a user-given group that would is left unfolded.

Pure functions over :class:`~nbflow.widgets.states.DagSpec`: the widget folds the groups
the user collapsed, lays the folded DAG out and draws each folded group as one node in
its members' most telling state.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import networkx as nx

from nbflow.widgets.states import DagSpec, NodeInfo, NodeState

MIN_MEMBERS = 3  # fewer steps than this are not worth a group
_NUMBER = re.compile(r"\d+")
# A folded group shows the state that most needs attention among its members.
_PRIORITY = (
    NodeState.FAILED,
    NodeState.RUNNING,
    NodeState.QUEUED,
    NodeState.STALE,
    NodeState.SKIPPED,
    NodeState.NEVER_RUN,
    NodeState.COMPLETED,
    NodeState.CACHED,
)


@dataclass(frozen=True)
class Group:
    """Steps shown as one node when collapsed; ``key`` names it (``load_*``, ``loaders``)."""

    key: str
    members: tuple[str, ...]

    @property
    def node(self) -> str:
        """The folded node's name, ``load_* (40)``: never a step's (it has a space)."""
        return f"{self.key} ({len(self.members)})"


@functools.lru_cache(maxsize=64)
def find_groups(spec: DagSpec) -> dict[str, Group]:
    """The spec's foldable groups by key: given groups first, then name patterns (cached
    per shape, like the layout: a live run redraws the same shape many times; do not
    change the dict returned)."""
    dag = nx.DiGraph()
    dag.add_nodes_from(spec.nodes)
    dag.add_edges_from(spec.edges)
    groups: dict[str, Group] = {}
    grouped: set[str] = set()
    given: dict[str, list[str]] = {}
    for step, name in spec.groups:
        given.setdefault(name, []).append(step)
    for name, members in given.items():
        if len(members) >= 2 and _folds_acyclic(dag, members):
            groups[name] = Group(name, tuple(members))
            grouped.update(members)
    patterns: dict[str, list[str]] = {}
    for step in spec.nodes:
        if step not in grouped and _NUMBER.search(step):
            patterns.setdefault(_NUMBER.sub("*", step), []).append(step)
    for key, members in patterns.items():
        if len(members) >= MIN_MEMBERS and key not in groups and _independent(dag, members):
            groups[key] = Group(key, tuple(members))
    return groups


def _independent(dag: nx.DiGraph, members: list[str]) -> bool:
    """No member depends, even indirectly, on another (a fan-out, not a chain)."""
    inside = set(members)
    return all(not (nx.descendants(dag, m) & inside) for m in members)


def _folds_acyclic(dag: nx.DiGraph, members: list[str]) -> bool:
    folded = nx.quotient_graph(dag, [set(members)] + [{n} for n in dag if n not in members])
    return nx.is_directed_acyclic_graph(nx.DiGraph(folded.edges))


def fold(spec: DagSpec, groups: Collection[Group]) -> DagSpec:
    """``spec`` with each of ``groups`` drawn as one node, placed where its first member was."""
    owner = {m: g.node for g in groups for m in g.members}
    nodes: list[str] = []
    for step in spec.nodes:
        shown = owner.get(step, step)
        if shown not in nodes:
            nodes.append(shown)
    edges: list[tuple[str, str]] = []
    for tail, head in spec.edges:
        edge = (owner.get(tail, tail), owner.get(head, head))
        if edge[0] != edge[1] and edge not in edges:
            edges.append(edge)
    return DagSpec(tuple(nodes), tuple(edges))


def group_info(group: Group, infos: Mapping[str, NodeInfo]) -> NodeInfo:
    """How a folded group is drawn: its members' most telling state and their counts."""
    counts: dict[NodeState, int] = {}
    for member in group.members:
        state = (infos.get(member) or NodeInfo()).state
        counts[state] = counts.get(state, 0) + 1
    state = next(s for s in _PRIORITY if s in counts)
    done = counts.get(NodeState.COMPLETED, 0) + counts.get(NodeState.CACHED, 0)
    total = len(group.members)
    word = state.label if len(counts) == 1 else f"{done}/{total} done"
    detail = ", ".join(f"{n} {s.label}" for s, n in sorted(counts.items(), key=lambda c: -c[1]))
    return NodeInfo(state, label=f"{total} steps · {word}", detail=f"{detail}; click to expand")
