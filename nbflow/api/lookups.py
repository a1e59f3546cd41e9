"""Module-level frames and lookups over a store: ``nf.runs``, ``nf.events``, ``nf.get_run``,
and the decisions on a gate by its token, ``nf.approve`` and ``nf.reject``."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from nbflow import arguments
from nbflow.api.run import Run
from nbflow.store.open import StoreLike, open_store

if TYPE_CHECKING:
    import pandas as pd


def runs(
    store: StoreLike = None,
    flow: str | None = None,
    status: str | Collection[str] | None = None,
    limit: int | None = None,
    *,
    thread_id: str | None = None,
    tenant: str | None = None,
) -> pd.DataFrame:
    """Runs in ``store`` (default: ``$NBFLOW_STORE`` or ./nbflow.duckdb), newest first;
    with ``tenant`` (or ``$NBFLOW_TENANT``), only those that tenant sees."""
    return open_store(store, tenant=tenant).runs_frame(
        flow=flow, status=status, thread_id=thread_id, limit=limit
    )


def events(
    run_id: str | None = None, store: StoreLike = None, *, tenant: str | None = None
) -> pd.DataFrame:
    """The event log of one run, or of every run (that ``tenant`` sees), as a DataFrame."""
    return open_store(store, tenant=tenant).events_frame(run_id)


def get_run(run_id: str, store: StoreLike = None, *, tenant: str | None = None) -> Run:
    """The Run with this id; UnknownRunError if the store has none (TenantMismatchError,
    with the same message, when the store is opened for a tenant that may not see it)."""
    arguments.run_id(run_id)
    opened = open_store(store, tenant=tenant)
    opened.get_run(run_id)  # fail early, with the id in the message
    return Run(opened, run_id)


def approve(
    token: str,
    *,
    by: str | None = None,
    comment: str | None = None,
    store: StoreLike = None,
    resume: bool = True,
) -> Run:
    """Approve the gate a token from ``run.gate_token(gate)`` names, in ``store``
    (``nbflow approve TOKEN``); as ``run.approve``, the run then continues here if its
    flow is defined in this process (unless ``resume=False``). Returns the run."""
    from nbflow.api.gates import claimed_run

    opened = open_store(store)
    run_id, gate = claimed_run(opened, token)
    return Run(opened, run_id).approve(gate, by=by, comment=comment, token=token, resume=resume)


def reject(
    token: str, *, by: str | None = None, comment: str | None = None, store: StoreLike = None
) -> Run:
    """Reject the gate a token names (``nbflow reject TOKEN``): the run is cancelled."""
    from nbflow.api.gates import claimed_run

    opened = open_store(store)
    run_id, gate = claimed_run(opened, token)
    return Run(opened, run_id).reject(gate, by=by, comment=comment, token=token)
