"""The PostgreSQL backend, for teams: the same records as the DuckDB store, in a database
many machines share (``pip install "nbflow[postgres]"``).

Layer: store. Its modules may import ``nbflow.store`` (the interface, records, fold and the
helpers the SQL backends share), ``nbflow.values``, ``nbflow.errors`` and ``nbflow.json_text``;
nothing above the store. ``store.py`` is the class; the other modules are its parts, with
the same names as the DuckDB backend's where they do the same job.
"""
