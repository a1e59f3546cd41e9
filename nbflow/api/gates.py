"""Human gates in the user's API: ``@flow.gate`` / ``nf.gate``, and deciding on a gate
(``run.approve``, ``run.reject``, ``nf.approve(token)``, ``nf.reject(token)``), with
``run.gate_token`` and the ``run.gates`` frame.

A decision is recorded first (an event: who, when, the comment), then, after an
approval, the run continues in this process when its flow is defined here and no other
gate still waits (``resume=True``, the default); elsewhere, ``run.resume()`` continues
it. A rejection cancels the run: the steps the gate held back are recorded as skipped.
See docs/gates.md.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbflow.store import gates as stored
from nbflow.store.open import StoreLike, open_store

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.api.flow import Flow
    from nbflow.api.run import Run
    from nbflow.store.base import Store

#: Columns of ``run.gates`` and their dtypes.
GATE_COLUMNS: dict[str, str] = {
    "gate": "str",
    "status": "str",
    "opened_version": "int64",
    "opened_at": "datetime64[us, UTC]",
    "decided_by": "str",
    "decided_at": "datetime64[us, UTC]",
    "comment": "str",
    "waited_s": "float64",
    "digest": "str",
}


def gate(flow: Flow, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``nf.gate(flow)`` as a decorator (or ``nf.gate(flow, func)``): the same as
    ``@flow.gate``, for a function defined away from its flow."""
    return flow.gate(func, **options) if func is not None else flow.gate(**options)


def who(by: str | None) -> str:
    """Who decides: ``by``, else the user this process runs as."""
    if by is not None:
        return by
    try:
        return getpass.getuser()
    except Exception:  # no user name to be found (a container without one)
        return "unknown"


def ancestors(run: Run) -> list[str]:
    """The runs ``run`` was forked from, nearest first."""
    found: list[str] = []
    parent = run.record.parent_run_id
    while parent is not None and parent not in found:
        found.append(parent)
        parent = run.store.get_run(parent).parent_run_id
    return found


def decide(
    run: Run,
    gate_name: str,
    *,
    approve: bool,
    by: str | None,
    comment: str | None,
    token: str | None,
    resume: bool,
) -> Run:
    """Record the decision on ``gate_name`` of ``run``; continue the run after an
    approval when it can be continued here. Returns ``run``."""
    decision = stored.Decision(gate_name, approve, who(by), comment)
    record = stored.decide(run.store, run.id, decision, token=token, ancestors=ancestors(run))
    if approve and resume and not stored.open_gates(run.store.read_events(run.id)):
        from nbflow.api.run import find_flow

        flow = run._flow or find_flow(record.flow, run.store)
        if flow is not None:
            return run.resume()
    return run


def decide_token(
    token: str,
    *,
    approve: bool,
    by: str | None = None,
    comment: str | None = None,
    store: StoreLike = None,
    resume: bool = True,
) -> Run:
    """Decide the gate ``token`` names, in ``store``; returns the run."""
    from nbflow.api.run import Run

    opened = open_store(store)
    claims = stored.claims_of(opened, token)
    run = Run(opened, claims.run_id)
    return decide(
        run, claims.gate, approve=approve, by=by, comment=comment, token=token, resume=resume
    )


def approve(
    token: str,
    *,
    by: str | None = None,
    comment: str | None = None,
    store: StoreLike = None,
    resume: bool = True,
) -> Run:
    """Approve the gate a token from ``run.gate_token(gate)`` names (``nbflow approve``)."""
    return decide_token(token, approve=True, by=by, comment=comment, store=store, resume=resume)


def reject(
    token: str, *, by: str | None = None, comment: str | None = None, store: StoreLike = None
) -> Run:
    """Reject the gate a token names: the run is cancelled (``nbflow reject``)."""
    return decide_token(token, approve=False, by=by, comment=comment, store=store)


def token(run: Run, gate_name: str, expires_in: dt.timedelta | None = None) -> str:
    """A signed, single-use token for the open gate ``gate_name`` of ``run``."""
    return stored.issue_token(run.store, run.id, gate_name, expires_in=expires_in)


def gates_frame(store: Store, run_id: str, version: int | None = None) -> pd.DataFrame:
    """The gates of run ``run_id`` (as of ``version``), one row each (:data:`GATE_COLUMNS`)."""
    import pandas as pd

    from nbflow.store.frames import conform

    states = stored.gate_states(store.read_events(run_id, upto=version))
    rows = [
        {
            "gate": g.gate,
            "status": g.status,
            "opened_version": g.opened_version,
            "opened_at": g.opened_at,
            "decided_by": g.decided_by,
            "decided_at": g.decided_at,
            "comment": g.comment,
            "waited_s": g.waited_s,
            "digest": g.digest,
        }
        for g in states.values()
    ]
    return conform(pd.DataFrame(rows, columns=list(GATE_COLUMNS)), GATE_COLUMNS)
