"""The in-memory backend: the reference implementation of the store interface, for tests
and throwaway runs (``nf.open_store(":memory:")``).

Layer: store. Its modules may import ``nbflow.store`` (the interface, records, fold),
``nbflow.values`` and ``nbflow.errors``; nothing above the store. ``store.py`` is the class,
``sql.py`` its read-only SQL.
"""
