"""Where the PostgreSQL store keeps its gate keys: a one-row table, created on first use,
that only the role owning it (the one that created the store's tables) may read: every
privilege on it is revoked from PUBLIC, so other roles sharing the database can neither
read the secret nor sign tokens."""

from __future__ import annotations

from typing import Any

import psycopg

from nbflow.store.gate_keys import GateKeys, new_secret, new_store_id
from nbflow.store.postgres.part import PostgresPart

_CREATE = """
CREATE TABLE IF NOT EXISTS nbflow_gate_keys (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    store_id TEXT NOT NULL,
    secret TEXT NOT NULL
)
"""


class PostgresGateKeys(PostgresPart):
    """The gate keys of :class:`~nbflow.store.postgres.store.PostgresStore`."""

    def _load_gate_keys(self) -> GateKeys:
        def work(con: psycopg.Connection[Any]) -> tuple[str, str]:
            exists = con.execute("SELECT to_regclass('nbflow_gate_keys')").fetchone()
            if exists is not None and exists[0] is not None:
                row = con.execute("SELECT store_id, secret FROM nbflow_gate_keys").fetchone()
                if row is not None:
                    return row[0], row[1]
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(hashtext('nbflow gate keys'))")
                con.execute(_CREATE)
                con.execute("REVOKE ALL ON nbflow_gate_keys FROM PUBLIC")
                con.execute(
                    "INSERT INTO nbflow_gate_keys (store_id, secret) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [new_store_id(), new_secret()],
                )
                row = con.execute("SELECT store_id, secret FROM nbflow_gate_keys").fetchone()
            assert row is not None
            return row[0], row[1]

        store_id, secret = self._run(work, retry=False)
        return GateKeys(store_id, secret.encode("ascii"))
