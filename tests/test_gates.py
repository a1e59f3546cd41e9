"""Human gates through the user's API, on every backend: a run waits at a gate, a person
approves or rejects it, forks and resumptions ask again, and every bad input is refused
with its own error (the store's half of the contract is in nbflow.testing)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.errors import (
    DefinitionError,
    GateError,
    InvalidTokenError,
    ParameterError,
    TokenExpiredError,
    TokenStoreMismatchError,
    TokenSupersededError,
    TokenUsedError,
)
from nbflow.store.base import Store
from nbflow.store.memory.store import MemoryStore


def gated_flow(store: Store, calls: list[str] | None = None, **flow: Any) -> nf.Flow:
    """raw -> review (a gate) -> model, and side, independent of the gate."""
    calls = [] if calls is None else calls
    f = nf.Flow("gated", store=store, **flow)

    @f.step
    def raw(n: int = 3) -> list[int]:
        calls.append("raw")
        return list(range(n))

    @f.gate
    def review(raw: list[int]) -> dict[str, int]:
        calls.append("review")
        return {"rows": len(raw)}

    @f.step
    def side() -> str:
        calls.append("side")
        return "done"

    @f.step
    def model(review: dict[str, int], raw: list[int]) -> int:
        calls.append("model")
        return review["rows"] + sum(raw)

    return f


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_run_waits_at_its_gate_then_continues_when_approved(
    store: Store, durability: str
) -> None:
    calls: list[str] = []
    flow = gated_flow(store, calls)
    run = flow.run(progress=False, durability=durability)
    # Committed before flow.run returned, in every mode: a fresh handle reads it.
    assert nf.get_run(run.id, store).status == "waiting"
    assert run.step_states() == {"raw": "completed", "review": "completed", "side": "completed"}
    assert run["review"] == {"rows": 3}  # the value the reviewer sees
    assert list(run.gates["status"]) == ["open"]
    waiting = nf.runs(store, status="waiting")
    assert list(waiting["run_id"]) == [run.id] and list(waiting["gate"]) == ["review"]
    assert waiting["waited_s"].iloc[0] >= 0
    assert "gate_opened" in set(run.events["type"])

    continued = run.approve("review", by="ann", comment="rows look right")
    assert continued.status == "completed"
    assert continued["model"] == 3 + 3  # model got the approved value
    assert calls == ["raw", "review", "side", "model"]  # nothing ran twice
    (gate,) = run.gates.itertuples()
    assert (gate.status, gate.decided_by, gate.comment) == ("approved", "ann", "rows look right")
    assert {"gate_opened", "gate_approved"} <= set(run.versions["type"])


def test_time_travel_shows_the_gate_as_it_stood(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    opened_at = run.version
    run.approve("review", by="ann")
    assert run.at(opened_at).status == "waiting"
    assert list(run.at(opened_at).gates["status"]) == ["open"]
    assert list(run.at(opened_at + 1).gates["status"]) == ["approved"]
    assert list(run.at(opened_at - 1).gates["gate"]) == []
    assert run.status == "completed"


def test_rejection_cancels_and_skips_what_the_gate_held(store: Store) -> None:
    calls: list[str] = []
    run = gated_flow(store, calls).run(progress=False)
    rejected = run.reject("review", by="bob", comment="too few rows")
    assert rejected.status == "cancelled"
    assert "gate 'review' rejected by bob: too few rows" in (rejected.error or "")
    assert run.step_states()["model"] == "skipped"
    assert "model" not in calls
    with pytest.raises(GateError, match=r"cancelled, not waiting.*rejected by bob"):
        run.reject("review", by="bob")


def test_approval_elsewhere_then_resume(store: Store) -> None:
    """A decision recorded without continuing (as the CLI does) leaves the run waiting
    with no gate open; run.resume() continues it."""
    run = gated_flow(store).run(progress=False)
    token = run.gate_token("review")
    nf.approve(token, by="carol", store=store, resume=False)
    assert run.status == "waiting" and list(run.gates["status"]) == ["approved"]
    assert run.resume(progress=False).status == "completed"


def test_resuming_a_waiting_run_reopens_its_gate(store: Store) -> None:
    """A gate not yet approved is reached again by resume(): it opens at a newer version,
    and tokens for the earlier opening are superseded."""
    flow = gated_flow(store)
    run = flow.run(progress=False)
    old = run.gate_token("review")
    (first,) = run.gates.itertuples()
    assert run.resume(progress=False).status == "waiting"
    (again,) = run.gates.itertuples()
    assert again.opened_version > first.opened_version and again.digest == first.digest
    with pytest.raises(TokenSupersededError, match="token superseded by newer version"):
        run.approve("review", by="ann", token=old)
    run.approve("review", by="ann", token=run.gate_token("review"))
    assert run.status == "completed"


def test_a_fork_from_before_the_gate_needs_its_own_approval(store: Store) -> None:
    flow = gated_flow(store)
    parent = flow.run(progress=False)
    parent_token = parent.gate_token("review")
    fork = parent.fork(from_step="raw", n=5, progress=False)
    assert fork.status == "waiting" and fork["review"] == {"rows": 5}
    with pytest.raises(TokenSupersededError, match="token superseded by newer version"):
        fork.approve("review", by="ann", token=parent_token)
    fork.approve("review", by="ann", token=fork.gate_token("review"))
    assert fork.status == "completed" and fork["model"] == 5 + 10
    assert parent.status == "waiting"  # the parent still waits for its own decision
    parent.approve("review", by="ann", token=parent_token)
    assert parent.status == "completed"


def test_gc_keeps_a_waiting_runs_values(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    report = store.gc(keep_last=0, older_than=dt.timedelta(0))
    assert run.id not in report.runs
    assert run["review"] == {"rows": 3}
    assert run.approve("review", by="ann").status == "completed"


def test_a_waiting_run_can_be_cancelled(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    run.cancel()
    assert run.status == "cancelled"
    with pytest.raises(GateError, match="cancelled, not waiting"):
        run.approve("review", by="ann")


def test_a_failed_step_wins_over_a_gate(store: Store) -> None:
    flow = gated_flow(store)

    @flow.step
    def side() -> str:
        raise ValueError("broken")

    run = flow.run(progress=False, raise_on_error=False)
    assert run.status == "failed"
    assert list(run.gates["gate"]) == []


# -- bad input ----------------------------------------------------------------------------


def test_approving_a_run_that_is_not_waiting(store: Store) -> None:
    flow = gated_flow(store)
    done = flow.run(progress=False).approve("review", by="ann")
    with pytest.raises(GateError, match="completed, not waiting"):
        done.approve("review", by="ann")


def test_approving_a_gate_that_does_not_exist_names_the_gates(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    with pytest.raises(GateError, match=r"no gate 'reveiw'.*its gates: review.*'review'\?"):
        run.approve("reveiw", by="ann")
    with pytest.raises(GateError, match="no gate 'model'"):
        run.gate_token("model")
    assert run.status == "waiting"


def test_a_token_for_another_run(store: Store) -> None:
    flow = gated_flow(store)
    first, second = flow.run(progress=False), flow.run(progress=False, n=4)
    with pytest.raises(InvalidTokenError, match=f"for run {first.id}, not run {second.id}"):
        second.approve("review", by="ann", token=first.gate_token("review"))
    assert second.status == "waiting"


def test_a_tampered_token(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    token = run.gate_token("review")
    for i in (len("nbflow-gate.v1.") + 3, len(token) - 2):  # in the claims, in the signature
        tampered = token[:i] + ("x" if token[i] != "x" else "y") + token[i + 1 :]
        with pytest.raises(InvalidTokenError):
            nf.approve(tampered, by="mallory", store=store)
    assert run.status == "waiting" and list(run.gates["status"]) == ["open"]


def test_an_expired_token(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbflow.store.gates as gates

    run = gated_flow(store).run(progress=False)
    token = run.gate_token("review", expires_in=dt.timedelta(minutes=5))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
    monkeypatch.setattr(gates, "utcnow", lambda: later)
    with pytest.raises(TokenExpiredError, match="expired at"):
        nf.approve(token, by="ann", store=store)
    with pytest.raises(ParameterError):
        run.gate_token("review", expires_in=dt.timedelta(0))


def test_a_replayed_token(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    token = run.gate_token("review")
    nf.approve(token, by="ann", store=store)
    version = run.version
    with pytest.raises(TokenUsedError, match="already used"):
        nf.approve(token, by="ann", store=store)
    with pytest.raises(TokenUsedError):
        nf.reject(token, by="ann", store=store)
    assert run.version == version


def test_approving_twice_changes_nothing(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    run.approve("review", by="ann", resume=False)
    version = run.version
    with pytest.raises(GateError, match="already approved by ann"):
        run.approve("review", by="bob")
    assert run.version == version and run.status == "waiting"


def test_a_reject_with_no_gate_pending(store: Store) -> None:
    flow = gated_flow(store)
    run = flow.run(progress=False)
    run.approve("review", by="ann")
    with pytest.raises(GateError, match="not waiting"):
        run.reject("review", by="bob")
    plain = nf.Flow("plain", store=store)

    @plain.step
    def one() -> int:
        return 1

    with pytest.raises(GateError, match=r"no gate 'review' to reject"):
        plain.run(progress=False).reject("review", by="bob")


def test_a_token_from_another_store(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    elsewhere = gated_flow(MemoryStore()).run(progress=False)
    with pytest.raises(TokenStoreMismatchError, match="another store"):
        nf.approve(elsewhere.gate_token("review"), by="ann", store=store)
    assert run.status == "waiting"


def test_bad_decision_arguments(store: Store) -> None:
    run = gated_flow(store).run(progress=False)
    with pytest.raises(ParameterError):
        run.approve("review", by="")
    with pytest.raises(ParameterError):
        run.approve("review", by="ann", comment=3)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        run.approve(3, by="ann")  # type: ignore[arg-type]
    with pytest.raises(InvalidTokenError):
        nf.approve(12, store=store)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        nf.Flow("x").gate(name="1bad")(lambda: 1)
    assert run.status == "waiting"


def test_the_duckdb_secret_is_a_private_file_beside_the_store(tmp_path: Path) -> None:
    import os
    import stat

    from nbflow.errors import StoreError
    from nbflow.store.duckdb.store import DuckDBStore

    path = tmp_path / "s.duckdb"
    store = DuckDBStore(path)
    run = gated_flow(store).run(progress=False)
    token = run.gate_token("review")
    secret = path.with_name("s.duckdb.gate-secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text() not in token and secret.read_text().encode() not in path.read_bytes()
    store.close()
    again = DuckDBStore(path)  # another store object (or process): the same keys
    os.chmod(secret, 0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        nf.approve(token, by="ann", store=again)
    os.chmod(secret, 0o600)
    assert nf.approve(token, by="ann", store=again, resume=False).status == "waiting"
    again.close()


def test_the_secret_from_the_environment(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    run = gated_flow(store).run(progress=False)
    stored = run.gate_token("review")
    monkeypatch.setenv("NBFLOW_GATE_SECRET", "a secret the team shares, long enough")
    given = run.gate_token("review")
    with pytest.raises(InvalidTokenError, match="signature does not match"):
        nf.approve(stored, by="ann", store=store)  # signed with the store's own secret
    nf.approve(given, by="ann", store=store, resume=False)
    assert list(run.gates["status"]) == ["approved"]


def test_decisions_reach_the_event_callbacks(store: Store) -> None:
    from nbflow.api.hooks import flush_sinks

    seen: list[str] = []
    flow = gated_flow(store)
    flow.on_event(lambda event: seen.append(event.type.value))
    flow.run(progress=False).approve("review", by="ann")
    flush_sinks(timeout=30)
    assert seen.count("gate_opened") == 1 and seen.count("gate_approved") == 1
    assert seen[-1] == "run_completed"
    run = flow.run(progress=False, n=5)
    run.reject("review", by="bob")
    flush_sinks(timeout=30)
    assert seen[-3:] == ["gate_rejected", "step_skipped", "run_cancelled"]


def test_every_one_character_change_of_a_token_is_refused() -> None:
    """Each position of the claims and the signature, and every other character at the
    last one (whose low bits base64 leaves unused, so bytes alone would not tell). A
    change that alters the store id it claims reads as another store's token."""
    import string

    store = MemoryStore()
    run = gated_flow(store).run(progress=False)
    token = run.gate_token("review")
    alphabet = string.ascii_letters + string.digits + "-_"
    changed = [
        token[:i] + next(c for c in alphabet if c != token[i]) + token[i + 1 :]
        for i in range(len("nbflow-gate.v1."), len(token))
        if token[i] != "."
    ]
    changed += [token[:-1] + c for c in alphabet if c != token[-1]]
    for tampered in changed:
        with pytest.raises((InvalidTokenError, TokenStoreMismatchError)):
            nf.approve(tampered, by="mallory", store=store, resume=False)
    assert list(run.gates["status"]) == ["open"]
