"""The facades: the user's API, composing the definitions, the engine and a store.

:class:`~nbflow.api.flow.Flow` (steps, ``run``, ``status``, ``show``) and
:class:`~nbflow.api.run.Run` (a run's outputs, history, forks) live here, with what they
need at their level: launching and forking runs (:mod:`~nbflow.api.launch`,
:mod:`~nbflow.api.fork`), views of a run at a version (:mod:`~nbflow.api.history`),
lineage, status, the notebook loader, event hooks, progress listeners, and the registry
through which the widgets display Flows and Runs (:mod:`~nbflow.api.display`).

This layer may import the engine, the graph and definitions, the store interface, values
and errors; never the widgets, transfer, diff, copying or the CLI (they build on it).
"""
