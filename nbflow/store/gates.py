"""Deciding on a human gate: issuing its token, and recording a decision, checked
against the log (which gates are open: :mod:`nbflow.store.gate_states`) and, with a
token, against the token's claims.

Every check here reads the log at one version and the decision is appended at the
next: if anyone wrote in between (another decision), the append fails with
StaleVersionError and nothing is written, so a gate is never decided twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbflow.errors import (
    GateError,
    InvalidTokenError,
    ParameterError,
    StaleVersionError,
    TokenSupersededError,
    TokenUsedError,
    suggest,
)
from nbflow.store.gate_states import (  # noqa: F401 - open_gates, approved_gates: here too
    OPEN,
    GateState,
    approved_gates,
    gate_states,
    open_gates,
)
from nbflow.store.gate_tokens import DEFAULT_EXPIRY, TokenClaims, make_token, verify_token
from nbflow.store.records import (
    Event,
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
    StepStatus,
    utcnow,
)

if TYPE_CHECKING:
    from nbflow.store.base import Store


def issue_token(
    store: Store, run_id: str, gate: str, *, expires_in: dt.timedelta | None = None
) -> str:
    """A signed token for the open gate ``gate`` of ``run_id`` (see
    :mod:`nbflow.store.gate_tokens`); GateError if the gate does not wait."""
    lifetime = DEFAULT_EXPIRY if expires_in is None else expires_in
    if not isinstance(lifetime, dt.timedelta) or lifetime <= dt.timedelta(0):
        raise ParameterError(f"expires_in must be a positive timedelta, not {expires_in!r}")
    run = store.get_run(run_id)
    state = _pending(run, gate_states(store.read_events(run_id)), gate, "issue a token for")
    return make_token(
        store.gate_keys(),
        run_id=run_id,
        gate=gate,
        version=state.opened_version,
        digest=state.digest,
        expires_at=utcnow() + lifetime,
    )


def _pending(
    run: RunRecord, gates: Mapping[str, GateState], gate: object, action: str
) -> GateState:
    """The open gate ``gate`` of ``run``; GateError naming what is wrong otherwise."""
    if not isinstance(gate, str):
        raise ParameterError(f"a gate is named by a string, not {type(gate).__name__}")
    state = gates.get(gate)
    if run.status is not RunStatus.WAITING:
        if state is None:
            raise GateError(
                f"run {run.run_id} is {run.status.value}, not waiting at a gate: there is no "
                f"gate {gate!r} to {action}."
            )
        raise GateError(
            f"run {run.run_id} is {run.status.value}, not waiting at a gate; cannot {action} "
            f"gate {gate!r}{_decided(state)}. Nothing was recorded."
        )
    if state is None:
        known = ", ".join(sorted(gates)) or "none"
        raise GateError(
            f"run {run.run_id} has no gate {gate!r} that opened (its gates: {known}); "
            f"cannot {action} it." + suggest(gate, gates)
        )
    if state.status != OPEN:
        raise GateError(
            f"gate {gate!r} of run {run.run_id} was already {state.status} by "
            f"{state.decided_by or 'someone'} at {state.decided_at:%Y-%m-%d %H:%M:%S} UTC; "
            f"cannot {action} it. Nothing was recorded."
        )
    return state


def _decided(state: GateState) -> str:
    if state.status == OPEN or state.decided_at is None:
        return ""
    return (
        f" (it was {state.status} by {state.decided_by or 'someone'} at "
        f"{state.decided_at:%Y-%m-%d %H:%M:%S} UTC)"
    )


@dataclass(frozen=True)
class Decision:
    """A decision to record on a gate."""

    gate: str
    approve: bool
    by: str
    comment: str | None = None


def check_decision(decision: Decision) -> None:
    """Refuse a decision whose fields are not text."""
    if not isinstance(decision.by, str) or not decision.by.strip():
        raise ParameterError(f"by= names who decides (non-empty text), not {decision.by!r}")
    if decision.comment is not None and not isinstance(decision.comment, str):
        raise ParameterError(f"comment= is text or None, not {type(decision.comment).__name__}")


def decide(
    store: Store,
    run_id: str,
    decision: Decision,
    *,
    token: str | None = None,
    ancestors: Sequence[str] = (),
) -> RunRecord:
    """Record ``decision`` on an open gate of ``run_id``: its event, and for a rejection
    the steps the gate held back as skipped and the run as cancelled, in one append.

    With ``token``, the token must be valid for this store and name this run (or,
    ``ancestors``, a run this one was forked from: then it is superseded), the gate's
    current opening and value. Returns the run's record after the decision.
    """
    check_decision(decision)
    claims = _verified(store, token, run_id, decision.gate, ancestors) if token else None
    run = store.get_run(run_id)
    events = store.read_events(run_id)
    gates = gate_states(events)
    if claims is not None:
        _check_claims(claims, gates, run)
    state = _pending(run, gates, decision.gate, "approve" if decision.approve else "reject")
    payload: dict[str, Any] = {
        "by": decision.by,
        "comment": decision.comment,
        "opened_version": state.opened_version,
    }
    if claims is not None:
        payload["token_id"] = claims.token_id
    kind = EventType.GATE_APPROVED if decision.approve else EventType.GATE_REJECTED
    new = [NewEvent(kind, decision.gate, payload=payload)]
    if not decision.approve:
        new += [
            NewEvent(
                EventType.STEP_SKIPPED, step, 0, {"reason": f"gate {decision.gate!r} rejected"}
            )
            for step in held_back(store, run, decision.gate, events)
        ]
        why = f"gate {decision.gate!r} rejected by {decision.by}"
        new.append(
            NewEvent(EventType.RUN_CANCELLED, payload={"error": why + _said(decision.comment)})
        )
    try:
        return store.append(run_id, run.version, new)
    except StaleVersionError:
        raise GateError(
            f"run {run_id} changed while the decision on gate {decision.gate!r} was being "
            "recorded (another decision came first); nothing was recorded. Look at "
            "run.gates and decide again if it still waits."
        ) from None


def _said(comment: str | None) -> str:
    return f": {comment}" if comment else ""


def _verified(
    store: Store, token: str, run_id: str, gate: str | None, ancestors: Sequence[str]
) -> TokenClaims:
    claims = verify_token(store.gate_keys(), token, now=utcnow())
    if claims.run_id != run_id:
        if claims.run_id in ancestors:
            raise TokenSupersededError(
                f"token superseded by newer version: it was issued for run {claims.run_id}, "
                f"and run {run_id}, forked from it, reached gate {claims.gate!r} again. "
                f"Approve with a new token: run.gate_token({claims.gate!r})."
            )
        raise InvalidTokenError(
            f"the gate token is for run {claims.run_id}, not run {run_id}: nothing was recorded."
        )
    if gate is not None and claims.gate != gate:
        raise InvalidTokenError(
            f"the gate token is for gate {claims.gate!r}, not {gate!r}: nothing was recorded."
        )
    return claims


def _check_claims(claims: TokenClaims, gates: Mapping[str, GateState], run: RunRecord) -> None:
    state = gates.get(claims.gate)
    if state is None:
        raise InvalidTokenError(f"run {run.run_id} has no gate {claims.gate!r}.")
    if state.opened_version != claims.version or state.digest != claims.digest:
        what = (
            "its value changed"
            if state.opened_version == claims.version
            else f"it opened again at version {state.opened_version}"
        )
        raise TokenSupersededError(
            f"token superseded by newer version: the token is for gate {claims.gate!r} of run "
            f"{run.run_id} as it opened at version {claims.version}, and {what}. Ask for a new "
            f"token: run.gate_token({claims.gate!r})."
        )
    if state.status != OPEN:
        used = (
            "this token was already used"
            if state.token_id == claims.token_id
            else "the gate this token is for was already decided"
        )
        raise TokenUsedError(
            f"{used}: gate {claims.gate!r} of run {run.run_id} was {state.status} by "
            f"{state.decided_by} at {state.decided_at:%Y-%m-%d %H:%M:%S} UTC. Nothing was "
            "recorded."
        )


def held_back(store: Store, run: RunRecord, gate: str, events: Sequence[Event]) -> list[str]:
    """The steps of ``run`` downstream of ``gate`` that have no outcome yet, in run order."""
    definition = store.get_flow(run.flow, run.flow_fingerprint)
    if definition is None:
        return []
    below: set[str] = {gate}
    for step in run.steps:  # (topological order: dependencies come first)
        defined = definition.step(step)
        if defined is not None and below.intersection(defined.dependencies):
            below.add(step)
    done = {
        row.step
        for row in store.executions(run.run_id)
        if row.status.has_output or row.status is StepStatus.SKIPPED
    }
    return [s for s in run.steps if s in below and s != gate and s not in done]


def claims_of(store: Store, token: str) -> TokenClaims:
    """The verified claims of ``token`` (store, signature, expiry), for finding its run."""
    return _verified(store, token, _claimed_run(token), None, ())


def _claimed_run(token: str) -> str:
    from nbflow.store.gate_tokens import read_claims

    return read_claims(token).run_id
