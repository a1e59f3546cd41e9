"""A DataFrame's table, checked when it is loaded: changed rows are found at once, not
only by ``nbflow check``.

When a frame's table is written, its row count and a digest of its rows (the sum of
DuckDB's hash of each row, so any changed, added or removed row changes it) go into the
value's meta; loading the table compares both. The row count is free (the Arrow table
read back has it); the digest is one more scan of the table, at DuckDB's speed: for 10
million rows of four columns (three numbers, one text) on two cores, 0.06-0.23 s, which
made a load ~20% slower than DuckDB's own read into pandas and a write ~10% slower
(benchmarks/dataframes.py prints it). DuckDB's hash may differ between its versions, so
the version that computed the digest is kept with it: under another one only the row
count is compared. Tables written before this check have neither, and load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

from nbflow.errors import CorruptStoreError

#: The meta key of a frame's digest. Not part of the value's content hash: it describes
#: how the value is stored, like its table's schema.
DIGEST_KEY = "table_digest"


def table_digest(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, Any]:
    """The row count and digest of ``table`` (a name nbflow made, safe in SQL)."""
    # Every column, unpacked into hash(): no name a frame's column could shadow.
    query = f"SELECT count(*), sum(hash(*COLUMNS(*)))::VARCHAR FROM {table}"
    rows, digest = con.execute(query).fetchall()[0]
    return {"rows": int(rows), "sum": digest or "0", "duckdb": duckdb.__version__}


def check_table(con: duckdb.DuckDBPyConnection, table: str, recorded: object, rows: int) -> None:
    """Raise CorruptStoreError if ``table`` (read back with ``rows`` rows) is not what
    its ``recorded`` digest says was written."""
    if not isinstance(recorded, Mapping):
        return  # written before tables were checked
    if recorded.get("rows") != rows:
        raise CorruptStoreError(
            f"its table has {rows} rows where {recorded.get('rows')} were written: it was "
            "changed after nbflow wrote it"
        )
    if recorded.get("duckdb") != duckdb.__version__:
        return  # another DuckDB's hash: the row count is all that can be compared
    now = table_digest(con, table)
    if now["sum"] != recorded.get("sum"):
        raise CorruptStoreError(
            f"its table has the {rows} rows written, but with other content: it was "
            "changed after nbflow wrote it"
        )


def without_digest(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` as the value was encoded (what decoding and copying see)."""
    return {k: v for k, v in meta.items() if k != DIGEST_KEY}
