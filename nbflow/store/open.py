"""Turning what a user passes as ``store=`` into a Store."""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Union

from nbflow.errors import ParameterError, StoreError
from nbflow.store.base import Store

#: What every ``store=`` argument accepts: a Store, a path, a URI, or None for the default.
StoreLike = Union[Store, str, os.PathLike[str], None]  # noqa: UP007 - a runtime alias

DEFAULT_PATH = "nbflow.duckdb"
ENV_STORE = "NBFLOW_STORE"
ENV_TRUST = "NBFLOW_TRUST"

# One open store per file in this process: flows and frames over the same file share its
# connection (and so its lock and cached run states).
_open: weakref.WeakValueDictionary[tuple[str, bool, str | None], Store] = (
    weakref.WeakValueDictionary()
)
_default: dict[tuple[str, bool, str | None], Store] = {}  # keeps default-path stores alive
_lock = threading.Lock()
# The tenant views opened on a Store object (open_store(store, tenant=)), while it lives.
_views: weakref.WeakKeyDictionary[Store, dict[str, Store]] = weakref.WeakKeyDictionary()


def default_location() -> str:
    """``$NBFLOW_STORE`` if set, else ``./nbflow.duckdb``."""
    return os.environ.get(ENV_STORE) or DEFAULT_PATH


#: What ``$NBFLOW_TRUST`` may say (case and surrounding spaces aside); unset means trusted.
TRUST_VALUES = ("1", "true", "yes", "on")
DISTRUST_VALUES = ("0", "false", "no", "off")


def env_trust() -> bool:
    """Whether ``$NBFLOW_TRUST`` lets stores unpickle: trusted when it is unset.

    It fails closed: a value other than those documented (a typo, an empty string) is a
    ParameterError, never taken to mean trusted.
    """
    raw = os.environ.get(ENV_TRUST)
    if raw is None:
        return True
    value = raw.strip().lower()
    if value in TRUST_VALUES:
        return True
    if value in DISTRUST_VALUES:
        return False
    from nbflow.errors import ParameterError

    raise ParameterError(
        f"{ENV_TRUST}={raw!r} is not a value nbflow accepts: set it to "
        f"{', '.join(DISTRUST_VALUES)} to refuse unpickling (for a store someone else wrote), "
        f"or {', '.join(TRUST_VALUES)} (or leave it unset) to allow it; case does not matter."
    )


def open_store(
    store: StoreLike = None, *, trust: bool | None = None, tenant: str | None = None
) -> Store:
    """Open (or return the already open) store for ``store``.

    ``store`` may be a Store (returned as is), a path to a DuckDB file (created if
    missing), ``duckdb:///path``, ``:memory:`` (a private in-memory DuckDB database),
    ``memory://`` (the pure-Python in-memory store), ``postgresql://user@host:port/db``
    (optionally ``?schema=NAME``: a PostgreSQL store, shared by many processes), or None
    for ``$NBFLOW_STORE`` / ``./nbflow.duckdb``. ``trust=False`` (or ``NBFLOW_TRUST=0``)
    refuses to unpickle values, since unpickling runs code; ``trust=None`` (the default)
    follows ``$NBFLOW_TRUST`` (:func:`env_trust`: trusted when unset, an unknown value an
    error). Pickles imported without trust are refused either way (see
    :mod:`nbflow.store.untrusted`).

    ``tenant="team-a"`` (or ``$NBFLOW_TENANT``, for a store named by location) opens the
    store for that tenant: it stamps the runs it creates, sees that tenant's runs and
    those without a tenant, and reports any other run as unknown (``docs/tenants.md``).
    A Store passed with another ``tenant=`` is opened again for it.
    """
    from nbflow.store.tenants import optional_tenant, resolve

    if isinstance(store, Store):
        wanted = optional_tenant(tenant)
        if wanted is None or wanted == store.tenant:
            return store
        with _lock:  # one view per store and tenant (each may hold a connection)
            views = _views.setdefault(store, {})
            view = views.get(wanted)
            if view is None or getattr(view, "closed", False):
                view = views[wanted] = store.with_tenant(wanted)
            return view
    tenant = resolve(tenant)
    if trust is None:
        trust = env_trust()
    elif not isinstance(trust, bool):
        raise ParameterError(f"trust must be True, False or None, not {trust!r}")
    location = default_location() if store is None else _location(store)
    kind, target = _parse(location)

    if kind == "memory":
        from nbflow.store.memory.store import MemoryStore

        return MemoryStore(trust=trust, tenant=tenant)
    if kind == "postgres":
        return _open_postgres(target, trust=trust, tenant=tenant, default=store is None)
    from nbflow.store.duckdb.store import DuckDBStore

    if target == ":memory:":
        return DuckDBStore(":memory:", trust=trust, tenant=tenant)
    key = (str(Path(target).resolve()), trust, tenant)
    with _lock:
        existing = _open.get(key)
        if existing is not None and not getattr(existing, "closed", False):
            return existing
        opened = DuckDBStore(target, trust=trust, tenant=tenant)
        _open[key] = opened
        if store is None:
            _default[key] = opened
        return opened


def _location(store: object) -> str:
    """The path or URI a ``store=`` argument names; StoreError for anything else."""
    if isinstance(store, str | os.PathLike):
        location = os.fspath(store)
        if isinstance(location, str):
            return location
    raise StoreError(
        f"a store location must be a Store, a path or a URI, not {type(store).__name__} "
        f"{store!r:.60}: e.g. 'nbflow.duckdb', ':memory:' or 'postgresql://user@host/db'."
    )


def check_store_like(store: object) -> None:
    """Refuse a ``store=`` argument that can never name a store, before it is opened."""
    if store is not None and not isinstance(store, Store):
        _location(store)


def _open_postgres(uri: str, *, trust: bool, tenant: str | None, default: bool) -> Store:
    """The open PostgreSQL store for ``uri`` (one connection per URI in this process)."""
    try:
        from nbflow.store.postgres.store import PostgresStore
    except ImportError as exc:
        raise StoreError(
            f"PostgreSQL stores need psycopg 3, which is not installed ({exc}): "
            "pip install 'nbflow[postgres]'."
        ) from None
    key = (uri, trust, tenant)
    with _lock:
        existing = _open.get(key)
        if existing is not None and not getattr(existing, "closed", False):
            return existing
        opened = PostgresStore(uri, trust=trust, tenant=tenant)
        _open[key] = opened
        if default:
            _default[key] = opened
        return opened


def _parse(location: str) -> tuple[str, str]:
    if location in ("memory://", "memory:"):
        return "memory", ""
    if location.startswith("duckdb://"):
        rest = location[len("duckdb://") :]
        return "duckdb", rest or ":memory:"
    if location.startswith(("postgresql://", "postgres://")):
        return "postgres", location
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(
            f"unknown store URI scheme {scheme!r}: use a file path, 'duckdb:///path', "
            "':memory:', 'memory://' or 'postgresql://user@host:port/dbname'."
        )
    return "duckdb", location


def open_own(location: str | os.PathLike[str] | None = None, *, missing: str) -> Store:
    """A connection of the caller's own to the store at ``location`` (default as in
    :func:`open_store`), to be closed by the caller, never the shared one; StoreError,
    ending with ``missing``, for a store file that does not exist (none is created).

    A flow in this process may use the same file: DuckDB shares the database between
    connections of one process, so both see each other's commits.
    """
    from nbflow.errors import StoreError

    text = default_location() if location is None else os.fspath(location)
    if text.startswith("duckdb://"):
        text = text[len("duckdb://") :] or ":memory:"
    if text.startswith(("postgresql://", "postgres://")):
        from nbflow.store.postgres.store import PostgresStore

        return PostgresStore(text)  # a connection of its own
    if "://" in text or text in (":memory:", "memory:"):
        return open_store(text)  # in-memory: nothing to share, nothing held open
    if not os.path.exists(text):
        raise StoreError(f"there is no nbflow store at {os.path.abspath(text)!r}: {missing}")
    from nbflow.store.duckdb.store import DuckDBStore

    return DuckDBStore(text)
