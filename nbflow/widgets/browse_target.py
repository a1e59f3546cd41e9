"""What ``nf.browse(target)`` browses: a flow's or a run's store, a store, or a store
file the browser opens (and closes) itself."""

from __future__ import annotations

from typing import Any

from nbflow.api.run import Run
from nbflow.store.base import Store


def browse_store(target: Any = None) -> tuple[Store, bool, str | None, str | None]:
    """What to browse: (store, whether the browser owns it, flow filter, run to select)."""
    from nbflow.api.flow import Flow

    if isinstance(target, Flow):
        latest = target.latest_run()
        return target.store, False, target.name, latest.id if latest else None
    if isinstance(target, Run):
        return target.store, False, target.flow_name, target.id
    if isinstance(target, Store):
        return target, False, None, None
    return _private_store(target), True, None, None


def _private_store(location: Any) -> Store:
    """A connection of the browser's own to a store file, closed with the browser.

    A flow in this process may use the same file: DuckDB shares the database between
    connections of one process, so both see each other's commits.
    """
    from nbflow.store.open import open_own

    return open_own(
        location,
        missing="run a flow first, or browse one with nf.browse(flow) or "
        "nf.browse('path/to/store.duckdb').",
    )
