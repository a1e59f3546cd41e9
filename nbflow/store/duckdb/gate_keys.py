"""Where the DuckDB store keeps its gate keys: the store id in ``nbflow_meta``, the
secret in ``<store file>.gate-secret`` (mode 0600) beside it, not in the file itself, so
a copy of the store file given to someone cannot sign tokens. An in-memory database keeps
both in the object."""

from __future__ import annotations

from nbflow.store.duckdb.part import DuckDBPart
from nbflow.store.gate_keys import GateKeys, new_secret, new_store_id, secret_file


class DuckDBGateKeys(DuckDBPart):
    """The gate keys of :class:`~nbflow.store.duckdb.store.DuckDBStore`."""

    def _load_gate_keys(self) -> GateKeys:
        if self.path == ":memory:":
            return GateKeys(new_store_id(), new_secret().encode())
        with self._lock:
            rows = self._execute("SELECT value FROM nbflow_meta WHERE key = 'store_id'")
            if rows:
                store_id = str(rows[0][0])
            else:
                refuse = getattr(self, "_refuse_writes", None)
                if refuse is not None:
                    refuse("creating the store's id for gate tokens")
                store_id = new_store_id()
                self._execute(
                    "INSERT INTO nbflow_meta VALUES ('store_id', ?) ON CONFLICT DO NOTHING",
                    [store_id],
                )
                store_id = str(
                    self._execute("SELECT value FROM nbflow_meta WHERE key = 'store_id'")[0][0]
                )
        return GateKeys(store_id, secret_file(self.path + ".gate-secret"))
