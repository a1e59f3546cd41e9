"""Shared fixtures: ``store`` runs a test once per store backend.

``BACKENDS`` is the one list of backends: adding a backend is adding one line here, and
every test taking the ``store`` fixture (the conformance suite, the engine's tests) then
runs on it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nbflow.store.base import Store
from nbflow.store.duckdb_store import DuckDBStore
from nbflow.store.memory import MemoryStore

#: name -> a function making a fresh, empty store in the given (empty) directory.
BACKENDS: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp: MemoryStore(),
    "duckdb": lambda tmp: DuckDBStore(tmp / "store.duckdb"),
}


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend in turn."""
    opened = BACKENDS[request.param](tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def all_stores(tmp_path: Path) -> Iterator[dict[str, Store]]:
    """One fresh, empty store of every backend, by name (to compare backends)."""
    opened: dict[str, Store] = {}
    for name, make in BACKENDS.items():
        folder = tmp_path / name
        folder.mkdir()
        opened[name] = make(folder)
    try:
        yield opened
    finally:
        for s in opened.values():
            s.close()
