"""The store layer: the interface every backend implements, the records it exchanges, the
fold of events into state, and one package per backend (``duckdb/``, ``postgres/``,
``memory/``), opened by :func:`nbflow.store.open.open_store`.

Layer: store. It may import ``nbflow.values``, ``nbflow.errors``, ``nbflow.json_text`` and
``nbflow.arguments``; never the definition, the engine, the facades or anything above.
The interface (:mod:`~nbflow.store.base`) is built from parts: ``core`` (primitives, runs,
events, values), ``leasing`` and ``maintenance`` (gc, check); ``records``, ``fold`` and
``frames`` are the data every layer above reads.
"""
