"""The store backends every ``store``-fixture test runs on, and how to make and dispose of
one. A module of its own (not conftest.py) so test modules can import it by name.

The ``postgres`` backend is a fresh schema on the session's throwaway PostgreSQL server
(:mod:`nbflow.testing.postgres`), started on first use and stopped when the session
ends. Where the server binaries are missing the tests fail, saying what to install: they
are never skipped.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nbflow.store.base import Store
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.memory.store import MemoryStore
from nbflow.testing.postgres import PostgresServer, start_server

_postgres: list[PostgresServer] = []


def postgres_server() -> PostgresServer:
    """The session's throwaway PostgreSQL server, started on first use (~2 s)."""
    if not _postgres:
        _postgres.append(start_server())
    return _postgres[0]


def stop_postgres() -> None:
    """Stop the session's server, if one was started (conftest.py, at the session's end)."""
    while _postgres:
        _postgres.pop().stop()


def postgres_store(tmp: Path) -> Store:
    """A PostgresStore in a schema of its own (cheaper than a database per test)."""
    from nbflow.store.postgres.store import PostgresStore

    return PostgresStore(postgres_server().new_schema_uri())


#: name -> a function making a fresh, empty store in the given (empty) directory.
BACKENDS: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp: MemoryStore(),
    "duckdb": lambda tmp: DuckDBStore(tmp / "store.duckdb"),
    "postgres": postgres_store,
}


def dispose(store: Store) -> None:
    """Close a store made by BACKENDS and drop what it left on the shared server."""
    store.close()
    schema = getattr(store, "schema", None)
    if schema is not None and _postgres:
        _postgres[0].drop_schema(schema)


@contextmanager
def fresh_store(backend: str, folder: Path) -> Iterator[Store]:
    """A fresh store of ``backend`` in a folder of its own under ``folder``, disposed of
    afterwards (for property tests, which need one per example, not per test)."""
    here = folder / uuid.uuid4().hex
    here.mkdir()
    store = BACKENDS[backend](here)
    try:
        yield store
    finally:
        dispose(store)
        shutil.rmtree(here)
