"""Keeping ``store.sql`` read-only, and inside the store.

Two locks, each enough on its own for what it guards:

- :func:`check_read_only` lets one SELECT statement through, named by DuckDB's own
  parser, so no SET, ATTACH, COPY, INSTALL or LOAD ever reaches the database;
- :func:`sandbox` makes the DuckDB database reach nothing but its own files: no local
  file, no URL, no extension to load or download, and a configuration that cannot be
  changed back. It is set once when a store connects: the store itself never reads
  another file (gc's compaction writes one, listed in ``allowed_paths`` before the door
  is closed), and DuckDB cannot turn external access back on while a database runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import duckdb

from nbflow.errors import ParameterError, StoreError

T = TypeVar("T")

#: Seconds a store.sql query may run (or wait for a lock) before it is cancelled.
ENV_SQL_TIMEOUT = "NBFLOW_SQL_TIMEOUT"
DEFAULT_SQL_TIMEOUT = 60.0

# EXPLAIN is left out: EXPLAIN ANALYZE executes the statement it explains.
_READ_ONLY = {duckdb.StatementType.SELECT}

#: The settings a store changes after it has locked its configuration: its thread count
#: (one for small statements, every core for big reads and writes), how Arrow text comes
#: back (for frames of pandas' ``str``), the time zone of a new connection to the same
#: database, its memory limit (lowered while a big value is written or read, so DuckDB's
#: buffers stay bounded), and its progress bar (off: it would draw on the user's
#: terminal). Nothing a query could use to reach outside the store.
STORE_SETTINGS = (
    "threads",
    "arrow_large_buffer_size",
    "TimeZone",
    "memory_limit",
    "enable_progress_bar",
)

#: Beside the store file, what compaction writes (see DuckDBStore.compact): the copy,
#: its write-ahead log and DuckDB's working files of both.
COMPACT_SUFFIX = ".compact"
_DATABASE_FILES = ("", ".wal", ".wal.checkpoint", ".wal.recovery")


def check_arguments(query: object, params: object) -> None:
    """Refuse a query that is not text, and parameters that are neither a sequence nor
    a mapping, before any backend reads them."""
    if not isinstance(query, str):
        raise ParameterError(
            f"store.sql takes the query as a string, not {type(query).__name__} "
            f"({query!r:.60}): store.sql('SELECT * FROM runs')."
        )
    if params is None or isinstance(params, Mapping):
        return
    if isinstance(params, str | bytes) or not isinstance(params, Sequence):
        raise ParameterError(
            f"store.sql's params are a list of values (for ? or $1) or a dict (for $name), "
            f"not {type(params).__name__} ({params!r:.60})."
        )


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but one SELECT statement, before it runs."""
    if not isinstance(query, str):
        check_arguments(query, None)
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


def sql_timeout() -> float:
    """How long a store.sql query may run: ``$NBFLOW_SQL_TIMEOUT`` seconds, default 60."""
    from nbflow.arguments import env_seconds

    return env_seconds(ENV_SQL_TIMEOUT, DEFAULT_SQL_TIMEOUT)


def timed_out(seconds: float, detail: str) -> StoreError:
    """The StoreError for a store.sql query cancelled after ``seconds``."""
    return StoreError(
        f"the SQL query was cancelled after {seconds:g} s ({detail}): a store.sql query may "
        f"run for {ENV_SQL_TIMEOUT} seconds (default {DEFAULT_SQL_TIMEOUT:g}), since the "
        "store is held while it runs. Set it higher for a long query."
    )


def run_with_timeout(con: duckdb.DuckDBPyConnection, query: Callable[[], T]) -> T:
    """``query()``, interrupted after :func:`sql_timeout` seconds (a DuckDB query holds
    the store, and its file, for as long as it runs)."""
    seconds = sql_timeout()
    guard = threading.Lock()
    state = {"running": True, "fired": False}

    def interrupt() -> None:
        with guard:  # never after the query has ended: the next statement is not its
            if state["running"]:
                state["fired"] = True
                con.interrupt()

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        return query()
    except duckdb.Error as exc:
        if state["fired"]:
            raise timed_out(seconds, str(exc).splitlines()[0]) from None
        raise
    finally:
        with guard:
            state["running"] = False
        timer.cancel()


def query_failed(exc: duckdb.Error) -> StoreError:
    """The StoreError for a store.sql query DuckDB refused or could not run."""
    if isinstance(exc, duckdb.PermissionException):
        return StoreError(
            "store.sql reads the store's tables and nothing else: the query tried to reach "
            f"a file, a URL or an extension ({str(exc).splitlines()[0]})."
        )
    return StoreError(f"the SQL query failed: {exc}")


def sandbox(con: duckdb.DuckDBPyConnection, path: str) -> bool:
    """Close the database behind ``con`` to everything outside the store at ``path``
    (``:memory:`` for none); return whether it is closed.

    The settings are the database's, not the connection's: every connection to the same
    file in this process shares them, and they hold until the last one closes. A
    database already closed (another store object on the same file) is left as it is.
    False only when someone else locked its configuration with external access on.
    """
    (external, locked), *_ = con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
    ).fetchall()
    if locked:
        return not external
    settings: list[tuple[str, list[Any] | None]] = [
        ("SET autoinstall_known_extensions = false", None),
        ("SET autoload_known_extensions = false", None),
        ("SET allow_community_extensions = false", None),
        ("SET allowed_configs = ?", [list(STORE_SETTINGS)]),
    ]
    if path != ":memory:" and external:
        # As given and with links resolved: DuckDB compares the path it is handed.
        targets = {os.path.abspath(path), os.path.realpath(path)}
        files = [t + COMPACT_SUFFIX + s for t in sorted(targets) for s in _DATABASE_FILES]
        folders = [t + COMPACT_SUFFIX + ".tmp/" for t in sorted(targets)]
        settings += [("SET allowed_paths = ?", [files]), ("SET allowed_directories = ?", [folders])]
    settings.append(("SET enable_external_access = false", None))
    for statement, values in settings:
        con.execute(statement, values)
    con.execute("SET lock_configuration = true")
    return True


def sandboxed_memory_connection() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB that reaches nothing outside itself (for the SQL of the
    stores that are not DuckDB files)."""
    con = duckdb.connect(
        config={
            "enable_external_access": False,
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
        }
    )
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET lock_configuration = true")
    return con
