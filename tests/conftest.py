"""Shared fixtures: ``store`` runs a test once per store backend.

``BACKENDS`` (in ``store_backends.py``, so test modules can import it: ``from
store_backends import BACKENDS, dispose``) is the one list of backends: adding a backend
is adding one line there, and every test taking the ``store`` fixture (the conformance
suite, the engine's tests) then runs on it too.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_backends import BACKENDS, dispose, stop_postgres

from nbflow.store.base import Store

CHECKOUT = Path(__file__).resolve().parent.parent
_BEFORE: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    _BEFORE.update(os.listdir(CHECKOUT))


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_postgres()
    # Tests leave nothing behind outside their temp dirs (a store opened by a relative
    # path in the test process lands in the checkout).
    left = sorted(set(os.listdir(CHECKOUT)) - _BEFORE - {".pytest_cache", ".hypothesis"})
    if left:
        print(f"\ntests left files in the checkout: {', '.join(left)}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend in turn."""
    opened = BACKENDS[request.param](tmp_path)
    try:
        yield opened
    finally:
        dispose(opened)


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
            dispose(s)


@pytest.fixture(scope="session")
def jupyter_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables for Jupyter kernels started by tests: the kernel "python3" is
    this Python (the venv's ipykernel), and every Jupyter and IPython directory is a temp
    dir, so kernels write nothing outside it."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (nbflow tests)",
                "language": "python",
            }
        )
    )
    return {
        "JUPYTER_PATH": str(root / "data"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "IPYTHONDIR": str(root / "ipython"),
        "MPLCONFIGDIR": str(root / "matplotlib"),
    }
