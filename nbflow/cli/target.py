"""Finding the flow a command names: a notebook, a module file or an importable module.

``analysis.ipynb``, ``analysis.ipynb:flow``, ``pipeline.py``, ``pipeline.py:flow`` and
``package.module:flow``; the flow's store may be replaced (``--store``), and a notebook's
steps run from its folder, as its kernel would.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbflow.errors import NotebookError

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.store.open import StoreLike

__all__ = ["absolute_store", "load_target", "running_from", "with_trust"]


def load_target(target: str, store: str | None = None) -> tuple[Flow, Path | None]:
    """The Flow ``target`` names, and the folder its steps run from (notebooks only).

    ``store`` (if given) replaces the store the notebook or module names.
    """
    if ".ipynb:" in target:
        path, name = target.split(".ipynb:", 1)
        path += ".ipynb"
    elif ":" in target and not target.endswith(".ipynb"):
        path, name = target.rsplit(":", 1)
    else:
        path, name = target, ""
    if path.endswith(".ipynb"):
        from nbflow.api.notebook import load_notebook

        flow = load_notebook(path, flow=name or None, store=store)
        return flow, Path(path).resolve().parent
    module = _import(path)
    flow = _flow_in(module, name, target)
    if store is not None:
        flow = _with_store(flow, store)
    return flow, None


def _import(path: str) -> Any:
    """The module at ``path`` (a .py file) or named ``path`` (importable)."""
    file = Path(path)
    if path.endswith(".py") or file.exists():
        if not file.exists():
            raise NotebookError(f"no module at {path}: the file does not exist.")
        if file.is_dir() or file.suffix != ".py":
            raise NotebookError(f"{path} is neither a notebook (.ipynb) nor a Python module (.py).")
        folder = str(file.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # its imports, and process workers, find it there
        name = file.stem
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise NotebookError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
        return module
    if not all(part.isidentifier() for part in path.split(".")):
        raise NotebookError(
            f"{path!r} is not a notebook, a module file or a module name: use analysis.ipynb, "
            "pipeline.py:flow or package.module:flow."
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name and path.startswith(exc.name):
            raise NotebookError(f"no module named {path!r} (and no file {path!r}).") from None
        raise NotebookError(f"importing {path} failed: ModuleNotFoundError: {exc}") from exc
    except Exception as exc:
        raise NotebookError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc


def _flow_in(module: Any, name: str, target: str) -> Flow:
    """The flow called ``name`` in ``module``, or its only flow when ``name`` is empty."""
    from nbflow.api.cells import find_flows
    from nbflow.api.flow import Flow
    from nbflow.errors import suggest

    flows = find_flows(vars(module))
    if name:
        value = getattr(module, name, None)
        if isinstance(value, Flow):
            return value
        if value is not None:
            raise NotebookError(
                f"{name!r} in {target.rsplit(':', 1)[0]} is a {type(value).__name__}, not an "
                "nbflow Flow."
            )
        listed = ", ".join(flows) or "none"
        raise NotebookError(
            f"{target.rsplit(':', 1)[0]} has no {name!r} (its flows: {listed})."
            + suggest(name, flows)
        )
    if len(flows) == 1:
        return next(iter(flows.values()))
    if not flows:
        raise NotebookError(f"{target} defines no nbflow Flow.")
    raise NotebookError(
        f"{target} defines several flows ({', '.join(flows)}): name one, e.g. "
        f"{target}:{next(iter(flows))}."
    )


def _with_store(flow: Flow, store: StoreLike) -> Flow:
    """The same steps, recorded in ``store``."""
    from nbflow.api.flow import Flow

    moved = Flow(flow.name, store=store)
    for step in flow.steps.values():
        moved.add_step(step)
    return moved


def with_trust(flow: Flow, trust: bool | None) -> Flow:
    """``flow`` with its store opened with ``trust`` (None: as it is, ``$NBFLOW_TRUST``).

    Called where the flow runs (a notebook's folder): a relative store path, or the
    default ``./nbflow.duckdb``, means there, as it does when the flow opens it itself.
    """
    if trust is None:
        return flow
    from nbflow.store.base import Store
    from nbflow.store.open import open_store

    where = flow._store_arg  # (not flow.store: that would open it with the default trust)
    if isinstance(where, Store):
        if where.trust == trust:
            return flow
        if where.uri in ("", ":memory:", "memory://"):
            where.trust = trust  # an in-memory store cannot be opened again
            return flow
        where = where.uri
    return _with_store(flow, open_store(where, trust=trust))


def with_tenant(flow: Flow, tenant: str | None) -> Flow:
    """``flow`` with its store opened for ``tenant`` (None: as it is, ``$NBFLOW_TENANT``)."""
    if tenant is None or flow.store.tenant == tenant:
        return flow
    from nbflow.store.open import open_store

    return _with_store(flow, open_store(flow.store, tenant=tenant))


def absolute_store(store: str | None) -> str | None:
    """A relative store path means relative to where the command was run."""
    if store is None or store == ":memory:" or "://" in store:
        return store
    return str(Path(store).expanduser().resolve())


@contextmanager
def running_from(folder: Path | None) -> Iterator[None]:
    """Run a notebook's steps from its folder, as its kernel would."""
    if folder is None:
        yield
        return
    before = os.getcwd()
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
