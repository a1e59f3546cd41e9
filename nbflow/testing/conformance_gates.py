"""The store contract for human gates: a gate's opening makes a run ``waiting`` (kept by
every view, refused transitions refused), decisions are events checked against the log,
and gate tokens are signed with the store's own keys and refused when tampered with,
expired, used, superseded or from another store (see :mod:`nbflow.store.gates`)."""

from __future__ import annotations

import datetime as dt

import pytest

from nbflow.errors import (
    GateError,
    InvalidTokenError,
    InvalidTransitionError,
    TokenExpiredError,
    TokenStoreMismatchError,
    TokenSupersededError,
    TokenUsedError,
)
from nbflow.store import gates
from nbflow.store.base import Store
from nbflow.store.gate_keys import GateKeys
from nbflow.store.gate_tokens import make_token
from nbflow.store.records import EventType, NewEvent, RunRecord, RunStatus, utcnow
from nbflow.testing.builders import attempt_events, make_flow, make_run, start_run

STEPS = ("load", "review", "fit", "report")  # a chain: review is the gate


def opened(step: str = "review", digest: str = "hash-1") -> NewEvent:
    """The opening of gate ``step`` on a value with this digest."""
    return NewEvent(EventType.GATE_OPENED, step, payload={"digest": digest})


def waiting_run(store: Store) -> RunRecord:
    """A run of a chain load -> review (a gate) -> fit -> report, waiting at review."""
    store.put_flow(make_flow(steps=STEPS))
    run = start_run(store, make_run(steps=STEPS))
    events = [*attempt_events("load"), *attempt_events("review", output=1), opened()]
    return store.append(run.run_id, run.version, events)


def approve(store: Store, run_id: str, token: str | None = None, by: str = "ann") -> RunRecord:
    """Approve gate review of ``run_id``."""
    return gates.decide(store, run_id, gates.Decision("review", True, by, "ok"), token=token)


class GateConformance:
    """Gates, decisions and tokens on one store."""

    def test_a_gate_opening_makes_the_run_waiting(self, store: Store) -> None:
        """After gate_opened the run is waiting in every view (its record, the list, the
        runs frame with its gate, the fold at that version), and nothing but a decision,
        a resumption or a cancellation may follow."""
        run = waiting_run(store)
        assert run.status is RunStatus.WAITING
        assert store.get_run(run.run_id).status is RunStatus.WAITING
        assert [r.run_id for r in store.list_runs(status="waiting")] == [run.run_id]
        frame = store.runs_frame(status="waiting")
        assert list(frame["gate"]) == ["review"] and frame["waited_s"].iloc[0] >= 0
        assert store.state_at(run.run_id, run.version).run.status is RunStatus.WAITING
        assert store.state_at(run.run_id, run.version - 1).run.status is RunStatus.RUNNING
        for refused in (
            NewEvent(EventType.RUN_COMPLETED),
            NewEvent(EventType.STEP_STARTED, "fit", 1),
            NewEvent(EventType.GATE_OPENED),  # (a gate event names its gate)
        ):
            with pytest.raises(InvalidTransitionError):
                store.append(run.run_id, run.version, [refused])
        assert store.get_run(run.run_id).version == run.version
        assert gates.open_gates(store.read_events(run.run_id)) == ["review"]

    def test_decisions_need_a_waiting_run(self, store: Store) -> None:
        """A decision on a run that is not waiting is refused by the fold too."""
        run = start_run(store)
        with pytest.raises(InvalidTransitionError):
            store.append(run.run_id, run.version, [NewEvent(EventType.GATE_APPROVED, "review")])
        with pytest.raises(GateError, match="not waiting"):
            approve(store, run.run_id)

    def test_approval_is_recorded_once_and_the_run_resumes(self, store: Store) -> None:
        """An approval is an event with who and why; a second is refused and changes
        nothing; the run may then start again from waiting and complete."""
        run = waiting_run(store)
        approved = approve(store, run.run_id)
        assert approved.status is RunStatus.WAITING and approved.version == run.version + 1
        (state,) = gates.gate_states(store.read_events(run.run_id)).values()
        assert (state.status, state.decided_by, state.comment) == ("approved", "ann", "ok")
        with pytest.raises(GateError, match="already approved"):
            approve(store, run.run_id, by="bob")
        assert store.get_run(run.run_id).version == approved.version
        resumed = store.append(run.run_id, approved.version, [NewEvent(EventType.RUN_STARTED)])
        resumed = store.append(
            run.run_id,
            resumed.version,
            [*attempt_events("fit"), *attempt_events("report"), NewEvent(EventType.RUN_COMPLETED)],
        )
        assert resumed.status is RunStatus.COMPLETED

    def test_rejection_skips_what_the_gate_held_and_cancels(self, store: Store) -> None:
        """A rejection records the steps downstream of the gate as skipped and the run as
        cancelled, in one append; another decision is refused."""
        run = waiting_run(store)
        decision = gates.Decision("review", False, "bob", "wrong data")
        record = gates.decide(store, run.run_id, decision)
        assert record.status is RunStatus.CANCELLED
        assert "gate 'review' rejected by bob: wrong data" in (record.error or "")
        rows = {x.step: x.status.value for x in store.executions(run.run_id)}
        assert rows == {"load": "completed", "review": "completed", "fit": "skipped",
                        "report": "skipped"}  # fmt: skip
        with pytest.raises(GateError, match=r"cancelled, not waiting.*rejected by bob"):
            gates.decide(store, run.run_id, decision)

    def test_an_unknown_gate_is_refused_naming_the_gates(self, store: Store) -> None:
        """Deciding (or issuing a token for) a gate the run never opened names its gates."""
        run = waiting_run(store)
        with pytest.raises(GateError, match=r"no gate 'reveiw'.*its gates: review"):
            gates.decide(store, run.run_id, gates.Decision("reveiw", True, "ann"))
        with pytest.raises(GateError, match="no gate 'fit'"):
            gates.issue_token(store, run.run_id, "fit")

    def test_gate_keys_are_the_stores_own(self, store: Store) -> None:
        """The keys are created once and kept; their repr hides the secret."""
        keys = store.gate_keys()
        assert keys == store.gate_keys()
        assert len(keys.store_id) >= 16 and len(keys.secret) >= 32
        assert keys.secret.decode() not in repr(keys)

    def test_a_token_approves_once(self, store: Store) -> None:
        """A token names the run, gate, version and value; it carries no secret; it
        approves once, and its replay is refused."""
        run = waiting_run(store)
        token = gates.issue_token(store, run.run_id, "review")
        assert store.gate_keys().secret.decode() not in token
        claims = gates.claims_of(store, token)
        assert (claims.run_id, claims.gate, claims.version) == (run.run_id, "review", run.version)
        approve(store, run.run_id, token)
        with pytest.raises(TokenUsedError, match="already used"):
            approve(store, run.run_id, token)

    def test_refused_tokens(self, store: Store) -> None:
        """Tampered (one character), expired, another store's, another run's: each is
        refused with its own error and nothing is recorded."""
        run = waiting_run(store)
        other = waiting_run(store)
        token = gates.issue_token(store, run.run_id, "review")
        i = token.rindex(".") + 5
        tampered = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        keys = store.gate_keys()
        past = make_token(
            keys, run_id=run.run_id, gate="review", version=run.version, digest="hash-1",
            expires_at=utcnow() - dt.timedelta(seconds=1),
        )  # fmt: skip
        foreign = make_token(
            GateKeys("another-store-id-0000", keys.secret), run_id=run.run_id, gate="review",
            version=run.version, digest="hash-1", expires_at=utcnow() + dt.timedelta(hours=1),
        )  # fmt: skip
        for bad, error in (
            (tampered, InvalidTokenError),
            ("not a token", InvalidTokenError),
            (past, TokenExpiredError),
            (foreign, TokenStoreMismatchError),
        ):
            with pytest.raises(error):
                approve(store, run.run_id, bad)
        with pytest.raises(InvalidTokenError, match="for run"):
            approve(store, other.run_id, token)
        assert store.get_run(run.run_id).version == run.version

    def test_a_gate_opening_again_supersedes_its_tokens(self, store: Store) -> None:
        """When the run is resumed and reaches the gate again (here: a new value), the
        token of the earlier opening is superseded; a new token approves."""
        run = waiting_run(store)
        token = gates.issue_token(store, run.run_id, "review")
        again = store.append(
            run.run_id,
            run.version,
            [NewEvent(EventType.RUN_STARTED), *attempt_events("review", 2, output=2),
             opened(digest="hash-2")],
        )  # fmt: skip
        with pytest.raises(TokenSupersededError, match="token superseded by newer version"):
            approve(store, run.run_id, token)
        assert store.get_run(run.run_id).version == again.version
        approve(store, run.run_id, gates.issue_token(store, run.run_id, "review"))

    def test_gc_keeps_a_waiting_run(self, store: Store) -> None:
        """A waiting run is kept by every retention policy, with its values."""
        run = waiting_run(store)
        report = store.gc(keep_last=0, older_than=dt.timedelta(0))
        assert run.run_id not in report.runs
        assert store.get_run(run.run_id).status is RunStatus.WAITING
