"""The integrity check of a store: do its views and values agree with its events?

A run's events are the record of what happened; its ``runs`` row and its
``step_executions`` rows are views folded from them (:mod:`nbflow.store.fold`), and its
outputs are blobs named by their content hash. :func:`check_store` (``store.check()``)
checks, for every run, that

* its events are numbered 1..N without a gap and fold without an invalid transition;
* its ``runs`` row is the fold of its events (status, version N, times, error);
* its ``step_executions`` rows are the folded executions (those the backend keeps);
* its flow definition is stored;
* if it is running, some process holds its lease (else nothing will ever advance it,
  and it cannot be resumed; ``repair`` records it interrupted);

and, for every value an event refers to, that the blob is there with the codec and size
the event recorded, its DataFrame table too, and (``verify_values``) content that hashes
to its name (:mod:`nbflow.store.check_values`). A run left ``running`` by a process that
died is sound (interrupted, not damaged), and so are values no event refers to (``gc``
removes them).

``repair=True`` rebuilds the views of each damaged run from its events, in one
transaction per run; events are never changed. Lost events and lost or damaged values
cannot be repaired: their problems say what was lost.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbflow.errors import CorruptStoreError, InvalidTransitionError, StaleVersionError
from nbflow.store.fold import RunState, apply, fold, initial_state
from nbflow.store.problems import Problem, ProblemKind, StoredBlob
from nbflow.store.records import (
    Event,
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
    StepExecution,
)

if TYPE_CHECKING:
    from nbflow.store.core import StoreCore as Store

__all__ = ["Problem", "ProblemKind", "StoredBlob", "check_store"]


@dataclass
class _Snapshot:
    """Everything the check reads, read once under one consistent view of the store."""

    runs: list[RunRecord]
    events: dict[str, list[Event]]
    rows: dict[str, list[StepExecution]]
    flows: set[tuple[str, str]]  # the (name, fingerprint) of the runs' stored flows
    blobs: dict[str, StoredBlob]
    leased: set[str]  # the running runs some process holds the lease of

    @classmethod
    def read(cls, store: Store) -> _Snapshot:
        try:
            runs = store._list_runs()
            events: dict[str, list[Event]] = {}
            for event in store.read_events():
                events.setdefault(event.run_id, []).append(event)
            pairs = {(r.flow, r.flow_fingerprint) for r in runs}
            flows = {pair for pair in pairs if store.get_flow(*pair) is not None}
            blobs = {b.hash: b for b in store._stored_blobs()}
            rows = store._execution_rows()
            running = [r.run_id for r in runs if r.status is RunStatus.RUNNING]
            leased = set(store._read_leases(running)) if running else set()
        except (KeyError, TypeError, ValueError) as exc:
            # A row holding what nbflow never writes (a status or event type it does not
            # know): the records cannot be built, so the check cannot go on.
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise CorruptStoreError(
                f"{store.uri or store} holds a row nbflow cannot read ({reason}), written by "
                "something other than nbflow; the check cannot go past it. Fix or delete that "
                "row with SQL, then check again."
            ) from exc
        return cls(runs, events, rows, flows, blobs, leased)


def check_store(store: Store, *, repair: bool = False, verify_values: bool = True) -> list[Problem]:
    """The problems of ``store`` (empty when it is sound); see the module's docstring.

    With ``repair=True``, the repairable problems are fixed and returned marked
    ``repaired``. With ``verify_values=False``, values are checked for presence and size
    but their content is not read.
    """
    from nbflow.store.check_values import check_values

    with store._lock:
        with store._read_snapshot():
            snapshot = _Snapshot.read(store)
            problems, states = _check_runs(store, snapshot)
            problems += check_values(store, snapshot.events, snapshot.blobs, verify=verify_values)
        if repair:
            problems = _repair(store, problems, states)
    return problems


# -- runs and views ------------------------------------------------------------------------


def _check_runs(store: Store, snapshot: _Snapshot) -> tuple[list[Problem], dict[str, RunState]]:
    """The problems of every run's events and views, and the fold of each run whose
    events fold (what a repair writes)."""
    problems: list[Problem] = []
    states: dict[str, RunState] = {}
    known = {r.run_id for r in snapshot.runs}
    for run in sorted(snapshot.runs, key=lambda r: (r.created_at, r.run_id)):
        events = snapshot.events.get(run.run_id, [])
        if (run.flow, run.flow_fingerprint) not in snapshot.flows:
            problems.append(_without_flow(run))
        found, state = _check_log(run, events)
        problems += found
        if state is None:
            continue
        states[run.run_id] = state
        if state.run != run:
            problems.append(_run_mismatch(run, state.run))
        problems += _check_rows(store, state, snapshot.rows.get(run.run_id, []))
        if (
            state.run.status is RunStatus.RUNNING
            and run.run_id not in snapshot.leased
            and run.run_id not in store._executing
        ):
            problems.append(_without_lease(run))
    for run_id in sorted(snapshot.events.keys() - known):
        count = len(snapshot.events[run_id])
        problems.append(
            Problem(
                ProblemKind.EVENTS_WITHOUT_RUN,
                f"run {run_id} has {count} event(s) but no runs row: its flow and parameters "
                "are lost, so it cannot be rebuilt or resumed.",
                run_id=run_id,
            )
        )
    for run_id in sorted(snapshot.rows.keys() - known):
        # Rows of a run with no row and no events: nothing refers to them, they can go.
        repairable = run_id not in snapshot.events
        for row in snapshot.rows[run_id]:
            fix = "--repair deletes it" if repairable else "it cannot be rebuilt"
            problems.append(
                Problem(
                    ProblemKind.EXECUTION_ROW_EXTRA,
                    f"run {run_id} has no runs row, but step_executions holds a row for "
                    f"step {row.step!r} attempt {row.attempt}; {fix}.",
                    run_id=run_id,
                    step=row.step,
                    repairable=repairable,
                )
            )
    return problems, states


def _check_log(run: RunRecord, events: Sequence[Event]) -> tuple[list[Problem], RunState | None]:
    """Problems of the run's event log, and its fold when the log is whole."""
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        return [_gap(run, seqs)], None
    try:
        return [], fold(run, events)
    except (InvalidTransitionError, KeyError, TypeError, ValueError):
        return [_invalid(run, events)], None


def _gap(run: RunRecord, seqs: Sequence[int]) -> Problem:
    counts = Counter(seqs)
    missing = sorted(set(range(1, max(seqs) + 1)) - counts.keys())
    twice = sorted(s for s, n in counts.items() if n > 1)
    what = []
    if missing:
        what.append(f"event(s) {_ranges(missing)} of {max(seqs)} are missing")
    if twice:
        what.append(f"seq {_ranges(twice)} appear more than once")
    return Problem(
        ProblemKind.EVENT_GAP,
        f"run {run.run_id}: its event log is not gap-free ({'; '.join(what)}). The events are "
        "the record of the run, so its history cannot be rebuilt; re-run the flow (or fork "
        "the run) to compute its steps again.",
        run_id=run.run_id,
    )


def _invalid(run: RunRecord, events: Sequence[Event]) -> Problem:
    """The first event that does not fold, found one event at a time (slow, rare)."""
    state = initial_state(run)
    for event in events:
        try:
            apply(state, [event])
        except (InvalidTransitionError, KeyError, TypeError, ValueError) as exc:
            reason = " ".join(str(exc).split()).removesuffix(" Nothing was written.")
            return Problem(
                ProblemKind.EVENT_INVALID,
                f"run {run.run_id}: event {event.seq} ({event.type.value}) does not follow "
                f"from the events before it ({type(exc).__name__}: {reason}); its history "
                "cannot be rebuilt past it.",
                run_id=run.run_id,
                step=event.step,
            )
    raise AssertionError("the events fold one by one but not together")  # pragma: no cover


def _without_flow(run: RunRecord) -> Problem:
    return Problem(
        ProblemKind.RUN_WITHOUT_FLOW,
        f"run {run.run_id}: its flow definition ({run.flow!r}, fingerprint "
        f"{run.flow_fingerprint}) is not stored, so its steps' code cannot be shown; "
        "running the same flow code again records it.",
        run_id=run.run_id,
    )


def _without_lease(run: RunRecord) -> Problem:
    return Problem(
        ProblemKind.RUN_WITHOUT_LEASE,
        f"run {run.run_id} is recorded running, but no process holds it (its lease is "
        "gone): nothing will advance it, and it cannot be resumed while it reads as running. "
        "--repair records it interrupted, so that run.resume() continues it.",
        run_id=run.run_id,
        repairable=True,
    )


def _run_mismatch(stored: RunRecord, expected: RunRecord) -> Problem:
    return Problem(
        ProblemKind.RUN_ROW_MISMATCH,
        f"run {stored.run_id}: its runs row differs from its events "
        f"({_differences(stored, expected)}); --repair rebuilds it from the events.",
        run_id=stored.run_id,
        repairable=True,
    )


def _check_rows(store: Store, state: RunState, rows: Iterable[StepExecution]) -> list[Problem]:
    """Problems of a run's step_executions rows against its folded executions."""
    expected = {
        key: x
        for key, x in state.executions.items()
        if store._rows_hold_running_attempts or not x.status.in_progress
    }
    stored = {(x.step, x.attempt): x for x in rows}
    keys = sorted(expected.keys() | stored.keys(), key=lambda k: (expected.get(k) or stored[k]).seq)
    problems = []
    for step, attempt in keys:
        want, have = expected.get((step, attempt)), stored.get((step, attempt))
        where = f"run {state.run.run_id}: step {step!r} attempt {attempt}"
        if have is None:
            assert want is not None
            kind = ProblemKind.EXECUTION_ROW_MISSING
            text = f"{where} ({want.status.value}) is in its events but has no step_executions row"
        elif want is None:
            kind = ProblemKind.EXECUTION_ROW_EXTRA
            text = f"{where} has a step_executions row ({have.status.value}) no event records"
        elif want != have:
            kind = ProblemKind.EXECUTION_ROW_MISMATCH
            text = f"{where}: its step_executions row differs from its events"
            text += f" ({_differences(have, want)})"
        else:
            continue
        text += "; --repair rebuilds the rows from the events."
        problems.append(Problem(kind, text, state.run.run_id, step, repairable=True))
    return problems


def _differences(stored: Any, expected: Any) -> str:
    """``field: X in the row, Y from the events`` for each field that differs."""
    parts = []
    for f in dataclasses.fields(stored):
        have, want = getattr(stored, f.name), getattr(expected, f.name)
        if have != want:
            parts.append(f"{f.name}: {_show(have)} in the row, {_show(want)} from the events")
    return "; ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if hasattr(value, "value") and isinstance(value.value, str):  # an enum
        return repr(value.value)
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _ranges(numbers: Sequence[int]) -> str:
    """``1, 4-6, 9``."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


# -- repair --------------------------------------------------------------------------------


def _interrupted_by_check() -> NewEvent:
    return NewEvent(
        EventType.RUN_INTERRUPTED,
        payload={"error": "found running with no process holding it (nbflow check --repair)"},
    )


def _repair(store: Store, problems: list[Problem], states: Mapping[str, RunState]) -> list[Problem]:
    """Rebuild the views of every run with a repairable problem; mark what was fixed."""
    failed: dict[str, str] = {}
    unleased = {p.run_id for p in problems if p.kind is ProblemKind.RUN_WITHOUT_LEASE}
    for run_id in sorted({p.run_id for p in problems if p.repairable and p.run_id}):
        try:
            state = states.get(run_id)
            if state is None:  # rows of a run with neither a runs row nor events
                store._delete([run_id], [])
                continue
            if any(
                p.kind is not ProblemKind.RUN_WITHOUT_LEASE for p in problems if p.run_id == run_id
            ):
                store._rebuild_views(state)
            if run_id in unleased:
                store.append(run_id, state.run.version, [_interrupted_by_check()])
        except StaleVersionError:
            failed[run_id] = "not repaired: the run changed while it was checked; check again"
        finally:
            store._states.pop(run_id, None)  # what this object remembers may be wrong
    out = []
    for p in problems:
        if p.repairable and p.run_id in failed:
            out.append(dataclasses.replace(p, message=f"{p.message} ({failed[p.run_id]})"))
        elif p.repairable:
            out.append(dataclasses.replace(p, repaired=True))
        else:
            out.append(p)
    return out
