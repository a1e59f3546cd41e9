"""Lineage: a run's thread (the run it descends from and all forks of it) as a tree."""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx
import pandas as pd

if TYPE_CHECKING:
    from nbflow.api.run import Run
    from nbflow.store.base import Store

#: Columns of ``flow.lineage(run)``.
LINEAGE_COLUMNS = [
    "run_id",
    "parent_run_id",
    "fork_from_step",
    "fork_from_version",
    "thread_id",
    "status",
    "created_at",
    "params",
    "depth",
]


def thread_tree(store: Store, run: Run | str) -> nx.DiGraph:
    """The runs of ``run``'s thread as a tree: edges go from parent to fork, and carry
    the fork point (``from_step``, ``at_version``); nodes carry the run records."""
    run_id = run if isinstance(run, str) else run.id
    thread = store.get_run(run_id).thread_id or run_id
    tree = nx.DiGraph()
    for record in store.list_runs(thread_id=thread):
        tree.add_node(record.run_id, record=record)
    for node, data in tree.nodes(data=True):
        record = data["record"]
        if record.parent_run_id is not None and record.parent_run_id in tree:
            tree.add_edge(
                record.parent_run_id,
                node,
                from_step=record.fork_from_step,
                at_version=record.fork_from_version,
            )
    return tree


def lineage_frame(store: Store, run: Run | str) -> pd.DataFrame:
    """One row per run of the thread, parents before forks, with its depth in the tree."""
    from nbflow.store import frames

    tree = thread_tree(store, run)
    roots = [n for n in tree if tree.in_degree(n) == 0]
    depth: dict[str, int] = {}
    for root in roots:
        for node, d in nx.single_source_shortest_path_length(tree, root).items():
            depth[node] = d
    records = sorted(
        (tree.nodes[n]["record"] for n in tree), key=lambda r: (depth[r.run_id], r.created_at)
    )
    runs = frames.runs_frame(records)
    runs["depth"] = pd.Series([depth[r.run_id] for r in records], dtype="int64")
    return runs[LINEAGE_COLUMNS].reset_index(drop=True)
