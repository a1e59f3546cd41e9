"""Human gates as a run's event log tells them: which gates opened, which wait for a
decision, who decided and when.

A gate opens with a ``gate_opened`` event (the run becomes ``waiting``); a decision is a
``gate_approved`` or ``gate_rejected`` event naming who, when and why. A gate that opens
again (the run was resumed and reached it once more) starts afresh: only its latest
opening counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from nbflow.store.records import Event, EventType, utcnow

OPEN, APPROVED, REJECTED = "open", "approved", "rejected"


@dataclass(frozen=True)
class GateState:
    """One gate of a run: its latest opening and the decision on it, if any."""

    gate: str
    status: str  # open, approved or rejected
    opened_version: int  # the run's version when the gate (last) opened
    opened_at: dt.datetime
    digest: str  # the content hash of the gate's value
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    comment: str | None = None
    decided_version: int | None = None
    token_id: str | None = None  # the token the decision used, if one

    @property
    def waited_s(self) -> float:
        """Seconds from the opening to the decision (or to now, while open)."""
        end = self.decided_at or utcnow()
        return (end - self.opened_at).total_seconds()


def gate_states(events: Iterable[Event]) -> dict[str, GateState]:
    """Each gate of the run, as the events (in order) leave it."""
    gates: dict[str, GateState] = {}
    for event in events:
        if not event.type.is_gate_event or event.step is None:
            continue
        payload = event.payload
        if event.type is EventType.GATE_OPENED:
            gates[event.step] = GateState(
                event.step, OPEN, event.seq, event.ts, str(payload.get("digest", ""))
            )
            continue
        current = gates.get(event.step)
        if current is None:
            continue
        gates[event.step] = GateState(
            current.gate,
            APPROVED if event.type is EventType.GATE_APPROVED else REJECTED,
            current.opened_version,
            current.opened_at,
            current.digest,
            payload.get("by"),
            event.ts,
            payload.get("comment"),
            event.seq,
            payload.get("token_id"),
        )
    return gates


def open_gates(events: Iterable[Event]) -> list[str]:
    """The gates waiting for a decision."""
    return [name for name, g in gate_states(events).items() if g.status == OPEN]


def approved_gates(events: Iterable[Event]) -> set[str]:
    """The gates approved (at their latest opening)."""
    return {name for name, g in gate_states(events).items() if g.status == APPROVED}
