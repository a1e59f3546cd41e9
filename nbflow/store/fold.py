"""The fold of a run's events into its views, with the status rules.

Every backend applies events through :func:`apply`, so the rules for which status a run
or step may move to live in one place; time travel (``run.at(v)``) and integrity repair
fold the same events the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nbflow.errors import InvalidTransitionError
from nbflow.store.records import (
    Event,
    EventType,
    FilesRead,
    RunRecord,
    RunStatus,
    StepExecution,
    StepStatus,
    ValueRef,
)

# Which run statuses each run event may start from, and where it leads.
_RUN_TRANSITIONS: dict[EventType, tuple[frozenset[RunStatus], RunStatus | None]] = {
    EventType.RUN_FORKED: (frozenset({RunStatus.PENDING}), None),
    EventType.RUN_STARTED: (
        frozenset({RunStatus.PENDING, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.WAITING}),
        RunStatus.RUNNING,
    ),
    EventType.RUN_COMPLETED: (frozenset({RunStatus.RUNNING}), RunStatus.COMPLETED),
    EventType.RUN_FAILED: (frozenset({RunStatus.RUNNING}), RunStatus.FAILED),
    EventType.RUN_CANCELLED: (
        frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING}),
        RunStatus.CANCELLED,
    ),
    EventType.RUN_INTERRUPTED: (frozenset({RunStatus.RUNNING}), RunStatus.INTERRUPTED),
}

# Gate events: which run statuses each may start from; each leaves the run waiting (a
# decision is followed by the run's resumption, or, for a rejection, its cancellation).
_GATE_SOURCES: dict[EventType, frozenset[RunStatus]] = {
    EventType.GATE_OPENED: frozenset({RunStatus.RUNNING, RunStatus.WAITING}),
    EventType.GATE_APPROVED: frozenset({RunStatus.WAITING}),
    EventType.GATE_REJECTED: frozenset({RunStatus.WAITING}),
}

# Step events that need a running attempt of their step, and the status they lead to.
_ATTEMPT_TRANSITIONS: dict[EventType, StepStatus | None] = {
    EventType.STEP_INPUT_RECORDED: None,
    EventType.STEP_OUTPUT_RECORDED: None,
    EventType.STEP_COMPLETED: StepStatus.COMPLETED,
    EventType.STEP_FAILED: StepStatus.FAILED,
    EventType.STEP_RETRIED: StepStatus.FAILED,
}


# Step events that may follow ``step_queued`` before ``step_started``.
_QUEUED_MAY = frozenset(
    {EventType.STEP_INPUT_RECORDED, EventType.STEP_FAILED, EventType.STEP_RETRIED}
)


R = TypeVar("R", StepExecution, RunRecord)


def _replace(record: R, **changes: Any) -> R:
    """``dataclasses.replace(record, **changes)`` for the fold's records (frozen, with no
    ``__post_init__``), at a tenth of its cost: ``replace`` looks up every field each time
    (~5 us a call), and a step's commit folds several (``changes`` name fields the caller
    knows)."""
    new = object.__new__(type(record))
    attributes = new.__dict__
    attributes.update(record.__dict__)
    attributes.update(changes)
    return new


@dataclass
class RunState:
    """A run and its step executions as of ``run.version``: the result of the fold."""

    run: RunRecord
    executions: dict[tuple[str, int], StepExecution] = field(default_factory=dict)
    # step -> its row changed last; kept beside ``executions`` so lookups stay O(1)
    current: dict[str, StepExecution] = field(default_factory=dict)
    # step -> the highest attempt it has had (O(1) too, where a scan of ``executions``
    # cost a run of n steps n^2 steps of it)
    attempts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.current or not self.executions:
            return  # given (a copy), or nothing to index
        for row in sorted(self.executions.values(), key=lambda e: e.seq):
            self.current.setdefault(row.step, row)
            if row.seq >= self.current[row.step].seq:
                self.current[row.step] = row
        for step, attempt in self.executions:
            if attempt > self.attempts.get(step, 0):
                self.attempts[step] = attempt

    def latest(self, step: str) -> StepExecution | None:
        """The row of ``step`` changed last (its current attempt), or None."""
        return self.current.get(step)

    def last_attempt(self, step: str) -> int:
        """The highest attempt number ``step`` has had in this run (0 if none)."""
        return self.attempts.get(step, 0)

    def copy(self) -> RunState:
        """A shallow copy that can be folded further without touching this one."""
        return RunState(self.run, dict(self.executions), dict(self.current), dict(self.attempts))


def initial_state(run: RunRecord) -> RunState:
    """The state of a freshly created run: its record at version 0, no executions."""
    return RunState(
        dataclasses.replace(
            run,
            status=RunStatus.PENDING,
            version=0,
            started_at=None,
            finished_at=None,
            error=None,
        )
    )


def apply(state: RunState, events: Iterable[Event]) -> list[StepExecution]:
    """Fold ``events`` into ``state`` in place; return the execution rows they changed.

    Raises InvalidTransitionError (and leaves ``state`` as it was) when an event does not
    follow from the state, so a refused batch is never half-applied.
    """
    work, changed = applied(state, events)
    state.run = work.run
    state.executions = work.executions
    state.current = work.current
    state.attempts = work.attempts
    return changed


def applied(state: RunState, events: Iterable[Event]) -> tuple[RunState, list[StepExecution]]:
    """``state`` with ``events`` folded in, as a new state (``state`` is left as it is),
    and the execution rows they changed; InvalidTransitionError as :func:`apply`."""
    work = state.copy()
    changed: dict[tuple[str, int], StepExecution] = {}
    version = work.run.version  # the record's own version is brought up to date below
    for event in events:
        if event.seq != version + 1:
            raise InvalidTransitionError(
                f"event seq {event.seq} of run {event.run_id!r} does not follow version "
                f"{version}: a run's log is gap-free."
            )
        rows: list[StepExecution] = []
        if event.type.is_run_event:
            if work.run.version != version:
                work.run = _replace(work.run, version=version)
            work.run = _apply_run_event(work.run, event)
            if work.run.status.finished:
                rows = _close_running(work, event)
        elif event.type.is_gate_event:
            if work.run.version != version:
                work.run = _replace(work.run, version=version)
            work.run = _apply_gate_event(work.run, event)
        elif (row := _apply_step_event(work, event)) is not None:
            rows = [row]
        for row in rows:
            key = (row.step, row.attempt)
            work.executions[key] = row
            work.current[row.step] = row
            if row.attempt > work.attempts.get(row.step, 0):
                work.attempts[row.step] = row.attempt
            changed[key] = row
        version = event.seq
    if work.run.version != version:
        work.run = _replace(work.run, version=version)
    return work, list(changed.values())


def fold(run: RunRecord, events: Iterable[Event]) -> RunState:
    """The state of ``run`` after folding ``events`` from its creation."""
    state = initial_state(run)
    apply(state, events)
    return state


def _close_running(state: RunState, event: Event) -> list[StepExecution]:
    """The attempts still queued or running when the run ended, as failed: a run that is
    over has no running step (one whose process died never reported back), and a resume retries
    them as new attempts."""
    closed = []
    for row in state.current.values():
        if not row.status.in_progress:
            continue
        duration = (event.ts - row.started_at).total_seconds() * 1000 if row.started_at else None
        closed.append(
            dataclasses.replace(
                row,
                status=StepStatus.FAILED,
                finished_at=event.ts,
                duration_ms=duration,
                error=f"the run ended ({event.type.value}) while this step was {row.status.value}",
                seq=event.seq,
            )
        )
    return closed


def _refuse(event: Event, what: str) -> InvalidTransitionError:
    where = f" for step {event.step!r}" if event.step else ""
    return InvalidTransitionError(
        f"cannot record {event.type.value}{where} in run {event.run_id!r}: {what}. "
        "Nothing was written."
    )


def _apply_run_event(run: RunRecord, event: Event) -> RunRecord:
    sources, target = _RUN_TRANSITIONS[event.type]
    if run.status not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise _refuse(event, f"the run is {run.status.value} (it must be {allowed})")
    if event.type is EventType.RUN_FORKED and run.version != 0:
        raise _refuse(event, "run_forked must be the first event of a fork")
    if target is None:
        return run
    updates: dict[str, Any] = {"status": target}
    if target is RunStatus.RUNNING:
        updates["finished_at"] = None
        updates["error"] = None
        if run.started_at is None:
            updates["started_at"] = event.ts
    else:
        updates["finished_at"] = event.ts
        if target is not RunStatus.COMPLETED:
            updates["error"] = event.payload.get("error") or run.error
    return _replace(run, **updates)


def _apply_gate_event(run: RunRecord, event: Event) -> RunRecord:
    """A gate opening moves a running run to waiting; decisions need a waiting run.

    Which gates are open, and whether a decision matches one, is checked against the log
    by :mod:`nbflow.store.gates` before a decision is written (under the optimistic
    version check, so two deciders cannot both win)."""
    if event.step is None:
        raise _refuse(event, "a gate event must name its gate")
    sources = _GATE_SOURCES[event.type]
    if run.status not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise _refuse(event, f"the run is {run.status.value} (it must be {allowed})")
    if run.status is RunStatus.WAITING:
        return run
    return _replace(run, status=RunStatus.WAITING)


def _apply_step_event(state: RunState, event: Event) -> StepExecution | None:
    if event.step is None:
        raise _refuse(event, "a step event must name its step")
    if state.run.status is RunStatus.WAITING and event.type is EventType.STEP_SKIPPED:
        pass  # the steps a rejected gate held back are skipped before the run is cancelled
    elif state.run.status is not RunStatus.RUNNING:
        raise _refuse(event, f"the run is {state.run.status.value}, not running")
    current = state.latest(event.step)
    running = current is not None and current.status is StepStatus.RUNNING
    queued = current is not None and current.status is StepStatus.QUEUED
    payload = event.payload

    if event.type is EventType.STEP_SCHEDULED:
        if running or queued:
            raise _refuse(event, f"the step is {'running' if running else 'queued'}")
        return None

    if event.type is EventType.STEP_WARNING:
        return None  # a note in the log: no status changes

    if event.type is EventType.STEP_STARTED and queued and current is not None:
        # The queued attempt really starts now (an executor had it waiting for a worker).
        if event.attempt is not None and event.attempt != current.attempt:
            raise _refuse(event, f"attempt {current.attempt} is queued, not {event.attempt}")
        return _replace(
            current,
            status=StepStatus.RUNNING,
            cache_key=payload.get("cache_key", current.cache_key),
            fingerprint=payload.get("fingerprint", current.fingerprint),
            started_at=event.ts,
            seq=event.seq,
            # (The step_queued event carried what the attempt reads; a start may repeat it.)
            params=_params(payload) if "params" in payload else current.params,
        )

    if event.type in (EventType.STEP_STARTED, EventType.STEP_QUEUED):
        attempt = event.attempt or 0
        if running:
            raise _refuse(event, "the step is already running")
        if queued:
            raise _refuse(event, "the step is already queued")
        last = state.last_attempt(event.step)
        if attempt <= last:
            raise _refuse(event, f"attempt {attempt} is not after attempt {last}")
        starts = event.type is EventType.STEP_STARTED
        return StepExecution(
            run_id=event.run_id,
            step=event.step,
            attempt=attempt,
            status=StepStatus.RUNNING if starts else StepStatus.QUEUED,
            cache_key=payload.get("cache_key"),
            fingerprint=payload.get("fingerprint"),
            started_at=event.ts if starts else None,
            seq=event.seq,
            params=_params(payload),
        )

    if event.type in (EventType.STEP_CACHED, EventType.STEP_SKIPPED):
        if running or queued:
            raise _refuse(event, f"the step is {'running' if running else 'queued'}")
        if event.type is EventType.STEP_CACHED:
            return StepExecution(
                run_id=event.run_id,
                step=event.step,
                attempt=0,
                status=StepStatus.CACHED,
                cache_key=payload.get("cache_key"),
                fingerprint=payload.get("fingerprint"),
                output=_ref(payload.get("output")),
                inputs=dict(payload.get("inputs") or {}),
                started_at=event.ts,
                finished_at=event.ts,
                duration_ms=0.0,
                source_run_id=payload.get("source_run_id"),
                seq=event.seq,
                files=FilesRead.from_json(payload.get("files")),
                params=_params(payload),
            )
        return StepExecution(
            run_id=event.run_id,
            step=event.step,
            attempt=0,
            status=StepStatus.SKIPPED,
            error=payload.get("reason"),
            started_at=event.ts,
            finished_at=event.ts,
            seq=event.seq,
        )

    # The rest change the running attempt. A queued attempt (never started) may have its
    # inputs recorded, and may fail (say, its task could not be sent to a worker).
    if current is None or not (running or (queued and event.type in _QUEUED_MAY)):
        raise _refuse(event, "the step has no running attempt")
    if event.attempt is not None and event.attempt != current.attempt:
        raise _refuse(
            event, f"attempt {current.attempt} is {current.status.value}, not {event.attempt}"
        )
    row = current
    if event.type is EventType.STEP_INPUT_RECORDED:
        return _replace(row, seq=event.seq, inputs=dict(payload.get("inputs") or {}))
    if event.type is EventType.STEP_OUTPUT_RECORDED:
        if "files" not in payload:
            return _replace(row, seq=event.seq, output=_ref(payload.get("output")))
        # The files it read give the execution a key of its own (see FilesRead).
        return _replace(
            row,
            seq=event.seq,
            output=_ref(payload.get("output")),
            files=FilesRead.from_json(payload["files"]),
            cache_key=payload.get("cache_key", row.cache_key),
        )
    target = _ATTEMPT_TRANSITIONS[event.type]
    assert target is not None
    if target is StepStatus.COMPLETED and row.output is None:
        raise _refuse(event, "no output was recorded for this attempt")
    duration = payload.get("duration_ms")
    if duration is None and row.started_at is not None:
        duration = (event.ts - row.started_at).total_seconds() * 1000.0
    return _replace(
        row,
        seq=event.seq,
        status=target,
        finished_at=event.ts,
        duration_ms=duration,
        error=payload.get("error") if target is StepStatus.FAILED else None,
        traceback=payload.get("traceback") if target is StepStatus.FAILED else None,
    )


def _params(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    params = payload.get("params")
    return dict(params) if isinstance(params, Mapping) else None


def _ref(data: Mapping[str, Any] | None) -> ValueRef | None:
    return ValueRef.from_json(data) if data else None
