"""The engine: planning a run (parameters, fingerprints, its definition), the runner that
executes steps and records their events, executors (inline, threads, processes, Dask),
cache keys, and the mechanics of forks and resumes.

Layer: engine. It takes a graph, a store and listeners, and may import ``nbflow.graph``,
``nbflow.definition``, the store interface and the layers below; never ``nbflow.api``
(Flow, Run), the widgets or the CLI. Live progress reaches a display only through the
listeners the facades pass down.
"""
