"""Keeping ``store.sql`` read-only."""

from __future__ import annotations

import duckdb

from nbflow.errors import StoreError

# EXPLAIN is left out: EXPLAIN ANALYZE executes the statement it explains.
_READ_ONLY = {duckdb.StatementType.SELECT}


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but one SELECT statement, before it runs."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise StoreError(f"the SQL query does not parse: {exc}") from None
    if len(statements) != 1:
        raise StoreError(
            f"store.sql runs one statement at a time; this query has {len(statements)}."
        )
    kind = statements[0].type
    if kind not in _READ_ONLY:
        raise StoreError(
            f"store.sql is read-only: a {kind.name} statement is not allowed. "
            "Only SELECT queries can be run."
        )
