"""Definitions: steps (their options and parameters), the names a step reads, and the
parsing of ``%%step`` cells into steps. Pure: nothing here runs a step or writes a store.

Layer: definition. It may import ``nbflow.errors``, ``nbflow.arguments``,
``nbflow.json_text``, ``nbflow.values`` and the store's records; never the graph, the
engine, the facades (``nbflow.api``) or anything above.
"""
