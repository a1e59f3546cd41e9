"""Human gates in the user's API: what ``run.approve``, ``run.reject``,
``run.gate_token`` and ``run.gates`` do (``nf.approve(token)`` and ``nf.reject(token)``
are in :mod:`nbflow.api.lookups`, ``@flow.gate`` in :mod:`nbflow.api.flow`).

A decision is recorded first (an event: who, when, the comment), then, after an
approval, the run continues in this process when its flow is defined here and no other
gate still waits (``resume=True``, the default); elsewhere, ``run.resume()`` continues
it. A rejection cancels the run: the steps the gate held back are recorded as skipped.
See docs/gates.md.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nbflow.store import gates as stored

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.store.base import Store
    from nbflow.store.records import Event

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


def who(by: str | None) -> str:
    """Who decides: ``by``, else the user this process runs as."""
    if by is not None:
        return by
    try:
        return getpass.getuser()
    except Exception:  # no user name to be found (a container without one)
        return "unknown"


def ancestors(store: Store, run_id: str) -> list[str]:
    """The runs ``run_id`` was forked from, nearest first."""
    found: list[str] = []
    parent = store.get_run(run_id).parent_run_id
    while parent is not None and parent not in found:
        found.append(parent)
        parent = store.get_run(parent).parent_run_id
    return found


def record_decision(
    store: Store,
    run_id: str,
    gate_name: str,
    *,
    approve: bool,
    by: str | None,
    comment: str | None,
    token: str | None,
    callbacks: Sequence[Callable[[Event], None]] = (),
) -> bool:
    """Record the decision on ``gate_name`` of ``run_id`` (its events then reach the event
    sinks and ``callbacks``, as a run's do); return whether the run may continue now (an
    approval, with no other gate waiting)."""
    from nbflow.api.hooks import hook_listener
    from nbflow.store.records import NewEvent

    decision = stored.Decision(gate_name, approve, who(by), comment)
    before = store.get_run(run_id).version
    record = stored.decide(store, run_id, decision, token=token, ancestors=ancestors(store, run_id))
    events = store.read_events(run_id)
    appended = [
        NewEvent(e.type, e.step, e.attempt, e.payload, e.ts)
        for e in events[before : record.version]
    ]
    hook_listener(callbacks)(record, appended)
    return approve and not stored.open_gates(events)


def claimed_run(store: Store, token: str) -> tuple[str, str]:
    """The run and gate a valid ``token`` of ``store`` names."""
    claims = stored.claims_of(store, token)
    return claims.run_id, claims.gate


def token(store: Store, run_id: str, gate_name: str, expires_in: dt.timedelta | None) -> str:
    """A signed, single-use token for the open gate ``gate_name`` of ``run_id``."""
    return stored.issue_token(store, run_id, gate_name, expires_in=expires_in)


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
