"""The DuckDB backend (the default store): one file holds flows, runs, events, step
executions and values, DataFrames as native tables.

Layer: store. Its modules may import ``nbflow.store`` (the interface, records, fold and the
helpers the SQL backends share), ``nbflow.values``, ``nbflow.errors`` and ``nbflow.json_text``;
nothing above the store. ``store.py`` is the class; the other modules are its parts, with
the same names as the PostgreSQL backend's where they do the same job.
"""
