"""Moving runs between stores: export folders, imports, and trust.

``archives`` writes and reads an export folder (``run.json``, ``events.jsonl``,
``values/``, ``manifest.json``); ``json_text`` is its strict JSON; ``values`` writes each
value once per content hash and reads it back verified. This layer sits above the facades
and below the widgets: it may import the store, values, engine and ``nbflow.api``.
"""

from nbflow.transfer.archives import export_run, import_run, mark_trusted

__all__ = ["export_run", "import_run", "mark_trusted"]
