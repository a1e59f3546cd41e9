"""A DuckDB store whose file cannot be written (a read-only file system or folder, a file
without write permission) is opened for reading instead of being called damaged: reads
work, and each write says the store is read-only (ReadOnlyStoreError)."""

from __future__ import annotations

import duckdb

from nbflow.errors import ReadOnlyStoreError

# How the OS (through DuckDB) and DuckDB itself say a file cannot be written.
_OS_REFUSALS = ("Read-only file system", "Permission denied", "Operation not permitted")
_DUCKDB_REFUSAL = "attached in read-only mode"


def write_refusal(exc: BaseException) -> str | None:
    """Why ``exc`` says the store's file cannot be written, or None if it says other."""
    text = str(exc)
    for refusal in _OS_REFUSALS:
        if refusal in text:
            return refusal
    if _DUCKDB_REFUSAL in text:
        return "its file cannot be written"
    return None


def is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con``'s database was opened for reading only."""
    rows = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return bool(rows and rows[0][0])


def raise_if_read_only(exc: duckdb.Error, where: str, known: str | None = None) -> None:
    """Raise ReadOnlyStoreError for a write DuckDB refused because the file cannot be
    written (seen on writes); ``known`` is why, when the store knew it at open."""
    reason = write_refusal(exc)
    if reason is not None:
        raise ReadOnlyStoreError(where, "this", known or reason) from None
