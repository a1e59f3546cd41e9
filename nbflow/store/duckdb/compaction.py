"""Giving a DuckDB store's freed space back: copy the live data, swap the copy in.

DuckDB reuses freed blocks but never shrinks a file, so gc copies the database into a new
file beside it (``<store>.compact``) and renames it over the store. That is only done
while this process holds the file alone (:meth:`FileGuard.exclusive`): a process with the
old file open would go on writing into a file nobody reads again. When the file cannot be
had alone in a few seconds, compaction is skipped and the reason reported; nothing is
lost, the space is given back by a later gc. A crash at any point leaves the old file or
the new one, never half of either; a copy a crash left behind is removed at the next open.
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
    for leftover in (tmp, Path(str(tmp) + ".wal")):
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
        finally:
            con.execute("DETACH nbflow_compact")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    # A log left beside the store would be replayed into the new file: never swap then.
    if Path(store.path + ".wal").exists() or Path(str(tmp) + ".wal").exists():
        tmp.unlink(missing_ok=True)
        return "DuckDB left a write-ahead log beside the store; the file was left as it is"
    _fsync(tmp)
    os.replace(tmp, target)
    _fsync(target.parent)
    return None


def remove_leftovers(path: str) -> list[str]:
    """Remove the copy a killed compaction left beside ``path``; the caller holds the
    file shared, so no compaction is under way. Warns naming what it removed."""
    removed = []
    for leftover in (path + COMPACT_SUFFIX, path + COMPACT_SUFFIX + ".wal"):
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
