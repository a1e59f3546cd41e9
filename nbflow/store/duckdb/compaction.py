"""Giving a DuckDB store's freed space back: copy the live data, swap the copy in.

DuckDB reuses freed blocks but never shrinks a file, so gc copies the database into a new
file beside it (``<store>.compact``) and renames it over the store. That is only done
while this process holds the file alone (:meth:`FileGuard.exclusive`): a process with the
old file open would go on writing into a file nobody reads again. When the file cannot be
had alone in a few seconds, compaction is skipped and the reason reported; nothing is
lost, the space is given back by a later gc. A crash at any point leaves the old file or
the new one, never half of either; a copy a crash left behind is removed at the next open.

The copy replaces the store only once it is known to hold everything the store holds:
every table's rows (their content, for the tables of runs and events) are compared in
the copy, in the store as it was copied, and in the store read again from disk, alone,
just before the swap. A difference (a commit that reached the file some other way, a log
DuckDB left beside it) keeps the store as it is and reports why.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from nbflow.errors import StoreMaintenanceWarning

if TYPE_CHECKING:
    from nbflow.store.duckdb.part import DuckDBPart

COMPACT_SUFFIX = ".compact"
COMPACT_WAIT_S = 10.0  # at most this long for other users to give the file back
#: What DuckDB may keep beside a database file: its log, and the logs of a checkpoint or
#: a recovery under way (spelled both ways across DuckDB versions).
LOG_SUFFIXES = (".wal", ".wal.checkpoint", ".wal.recovery", ".checkpoint.wal", ".recovery.wal")

# A table's rows, as a count and an order-free digest; {} is a catalog name (quoted).
_TABLES = (
    "SELECT schema_name, table_name FROM duckdb_tables() "
    "WHERE database_name = ? AND NOT temporary ORDER BY ALL"
)


def compact(store: DuckDBPart) -> str | None:
    """Compact ``store``'s file; None when done, else why it was skipped.

    The caller holds ``store._lock`` and has checked that the store is open.
    """
    from nbflow.store.duckdb.connection import ask_for_file, stop_asking

    guard = store._guard
    if guard is None:  # in memory: nothing to give back
        return None
    store.release_connection()
    wait = min(store.busy_timeout, COMPACT_WAIT_S)
    try:
        with guard.exclusive(wait, ask=lambda: ask_for_file(store.uri)) as alone:
            if not alone:
                return (
                    f"another process kept the store open for the {wait:g} s gc waited; "
                    "the freed space is reused by later writes and given back by a later gc"
                )
            return _copy_and_swap(store)
    finally:
        stop_asking(store.uri)


def _copy_and_swap(store: DuckDBPart) -> str | None:
    from nbflow.values.duckdb_tables import quote_identifier

    target = Path(store.path)
    tmp = target.with_name(target.name + COMPACT_SUFFIX)
    for leftover in (tmp, *(Path(str(tmp) + s) for s in LOG_SUFFIXES)):
        leftover.unlink(missing_ok=True)
    try:
        con = store._connect()  # alone with the file: no shared hold needed
    except duckdb.IOException as exc:  # held by something that is not an nbflow store
        return f"the file is held outside nbflow ({exc})"
    try:
        con.execute("CHECKPOINT")
        database = con.execute("SELECT current_database()").fetchall()[0][0]
        con.execute("ATTACH ? AS nbflow_compact", [str(tmp)])
        try:
            con.execute(f"SET threads = {store._threads:d}")
            # A database name (the file's stem) cannot be a parameter: quoted.
            con.execute(f"COPY FROM DATABASE {quote_identifier(database)} TO nbflow_compact")
            copied = contents(con, "nbflow_compact")
            source = contents(con, database)
        finally:
            con.execute("DETACH nbflow_compact")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    why = _unsafe_to_swap(store.path, str(tmp), source, copied)
    if why is not None:
        tmp.unlink(missing_ok=True)
        return f"{why}; the file was left as it is"
    _fsync(tmp)
    os.replace(tmp, target)
    _fsync(target.parent)
    return None


def _unsafe_to_swap(
    path: str, tmp: str, source: dict[str, tuple[int, int]], copied: dict[str, tuple[int, int]]
) -> str | None:
    """Why the copy must not replace the store, or None: it holds all the store holds,
    read again from disk now (the caller holds the file alone and has closed it)."""
    # A log left beside the store would be replayed into the new file, or hold commits
    # the copy lacks.
    logs = [
        f for base in (path, tmp) for f in (base + s for s in LOG_SUFFIXES) if os.path.exists(f)
    ]
    if logs:
        return f"DuckDB left a write-ahead log beside the store ({', '.join(logs)})"
    if copied != source:
        return "the copy did not hold every row of the store (" + _difference(source, copied) + ")"
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:  # held by another process after all
        return f"the store could not be read back alone before the swap ({exc})"
    try:
        on_disk = contents(con, con.execute("SELECT current_database()").fetchall()[0][0])
    finally:
        con.close()
    if on_disk != copied:
        return (
            "the store changed on disk while it was copied (" + _difference(on_disk, copied) + ")"
        )
    return None


def contents(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, tuple[int, int]]:
    """Every table of the database ``catalog`` with its row count and, for the store's
    own tables (runs, events, ...: small next to the values), an order-free digest of
    its rows; what the copy must hold the same of."""
    from nbflow.values.duckdb_tables import quote_identifier

    found = {}
    for schema_name, table in con.execute(_TABLES, [catalog]).fetchall():
        name = ".".join(quote_identifier(p) for p in (catalog, schema_name, table))
        rows = "coalesce(bit_xor(hash(t)), 0)" if schema_name == "main" else "0"
        count, digest = con.execute(f"SELECT count(*), {rows} FROM {name} t").fetchall()[0]
        found[f"{schema_name}.{table}"] = (int(count), int(digest))
    return found


def _difference(expected: dict[str, tuple[int, int]], got: dict[str, tuple[int, int]]) -> str:
    differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    shown = ", ".join(
        f"{k}: {expected.get(k, (0, 0))[0]} rows, {got.get(k, (0, 0))[0]} in the copy"
        for k in differ[:3]
    )
    return shown + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")


def remove_leftovers(path: str) -> list[str]:
    """Remove the copy a killed compaction left beside ``path``; the caller holds the
    file shared, so no compaction is under way. Warns naming what it removed."""
    removed = []
    copy = path + COMPACT_SUFFIX
    for leftover in (copy, *(copy + s for s in LOG_SUFFIXES)):
        with contextlib.suppress(FileNotFoundError):
            size = os.stat(leftover).st_size
            try:
                os.unlink(leftover)
            except OSError:
                continue
            removed.append(f"{leftover} ({size:,} bytes)")
    if removed:
        warnings.warn(
            "removed what an interrupted gc left beside the store: " + ", ".join(removed),
            StoreMaintenanceWarning,
            stacklevel=2,
        )
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
