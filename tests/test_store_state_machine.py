"""Random sequences of store operations, checked against a plain Python model.

The model below restates the status rules in the simplest terms (dicts and lists), on its
own: it does not use nbflow.store.fold. Hypothesis drives the DuckDB store and the model
through the same operations (create runs, append valid and invalid batches, stale
versions, reopen the file) and checks after each one that they agree.
"""

from __future__ import annotations

import copy
import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as note
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from nbflow.errors import (
    DuplicateRunError,
    InvalidTransitionError,
    StaleVersionError,
    UnknownRunError,
)
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import EventType, NewEvent, RunRecord, RunStatus

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
STEPS = ["a", "b", 'l\'étape "q"']
RUN_EVENTS = [t for t in EventType if t.is_run_event]
STEP_EVENTS = [t for t in EventType if not t.is_run_event]


class Refused(Exception):
    """The model refuses the event."""


@dataclass
class Row:
    step: str
    attempt: int
    status: str
    seq: int
    cache_key: str | None = None
    fingerprint: str | None = None
    output: dict[str, Any] | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    traceback: str | None = None
    source_run_id: str | None = None
    params: dict[str, Any] | None = None


@dataclass
class RunModel:
    status: str = "pending"
    version: int = 0
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    events: list[tuple[Any, ...]] = field(default_factory=list)
    rows: dict[tuple[str, int], Row] = field(default_factory=dict)
    latest: dict[str, tuple[str, int]] = field(default_factory=dict)  # step -> row key

    def current(self, step: str) -> Row | None:
        key = self.latest.get(step)
        return self.rows[key] if key is not None else None

    def running(self, step: str) -> Row | None:
        row = self.current(step)
        return row if row is not None and row.status == "running" else None

    def open(self, step: str) -> Row | None:
        """The attempt of ``step`` that has not ended (queued or running), if any."""
        row = self.current(step)
        return row if row is not None and row.status in OPEN else None

    def max_attempt(self, step: str) -> int:
        return max([a for (s, a) in self.rows if s == step], default=0)


# Which run statuses each run event may come from, and where it goes (None: stays).
RUN_RULES: dict[str, tuple[set[str], str | None]] = {
    "run_forked": ({"pending"}, None),
    "run_started": ({"pending", "failed", "interrupted", "waiting"}, "running"),
    "run_completed": ({"running"}, "completed"),
    "run_failed": ({"running"}, "failed"),
    "run_interrupted": ({"running"}, "interrupted"),
    "run_cancelled": ({"pending", "running", "waiting"}, "cancelled"),
}

# Which run statuses each gate event may come from; each leaves the run waiting.
GATE_RULES: dict[str, set[str]] = {
    "gate_opened": {"running", "waiting"},
    "gate_approved": {"waiting"},
    "gate_rejected": {"waiting"},
}

# Attempts that have not ended: queued (an executor holds the step back) or running.
OPEN = ("queued", "running")
# What a queued attempt (never started) may record besides its start.
QUEUED_MAY = ("step_input_recorded", "step_failed", "step_retried")


def _params(p: dict[str, Any]) -> dict[str, Any] | None:
    params = p.get("params")
    return dict(params) if isinstance(params, dict) else None


def model_apply(run: RunModel, e: NewEvent) -> None:
    """Apply one event to ``run`` in place, or raise Refused (``run`` may be half-changed)."""
    kind, step, attempt, p, ts = e.type.value, e.step, e.attempt, e.payload, e.ts
    seq = run.version + 1
    if kind in RUN_RULES:
        sources, target = RUN_RULES[kind]
        if run.status not in sources:
            raise Refused
        if kind == "run_forked" and run.version != 0:
            raise Refused
        if target == "running":
            run.finished_at, run.error = None, None
            if run.started_at is None:
                run.started_at = ts
        elif target is not None:
            run.finished_at = ts
            if target != "completed":
                run.error = p.get("error") or run.error
        if target is not None:
            run.status = target
        if target not in (None, "running"):
            # A run that is over has no queued or running step: those attempts end as
            # failed (a queued one never started, so has no duration).
            for name in list(run.latest):
                row = run.open(name)
                if row is None:
                    continue
                if row.status == "queued":
                    note("model: a run end failed a queued attempt")
                row = copy.copy(row)
                row.error = f"the run ended ({kind}) while this step was {row.status}"
                row.status, row.seq, row.finished_at = "failed", seq, ts
                row.duration_ms = None
                if row.started_at is not None:
                    row.duration_ms = (ts - row.started_at).total_seconds() * 1000.0
                _put(run, row)
    elif kind in GATE_RULES:
        if step is None or run.status not in GATE_RULES[kind]:
            raise Refused
        run.status = "waiting"
    else:
        skips_held = run.status == "waiting" and kind == "step_skipped"  # (a rejection's)
        if step is None or not (run.status == "running" or skips_held):
            raise Refused
        live = run.open(step)  # its queued or running attempt
        queued = live is not None and live.status == "queued"
        if kind == "step_scheduled":
            if live:
                raise Refused
        elif kind == "step_warning":
            pass  # a note in the log, at any time of a running run: no row changes
        elif kind == "step_started" and live is not None and queued:
            # The queued attempt starts: its start time is now; what the start does not
            # repeat is kept from step_queued.
            if attempt is not None and attempt != live.attempt:
                raise Refused
            note("model: a queued attempt started")
            row = copy.copy(live)
            row.status, row.seq, row.started_at = "running", seq, ts
            row.cache_key = p.get("cache_key", row.cache_key)
            row.fingerprint = p.get("fingerprint", row.fingerprint)
            if "params" in p:
                row.params = _params(p)
            _put(run, row)
        elif kind in ("step_started", "step_queued"):
            number = attempt or 0
            if live or number <= run.max_attempt(step):
                raise Refused
            starts = kind == "step_started"
            status = "running" if starts else "queued"
            row = Row(step, number, status, seq, p.get("cache_key"), p.get("fingerprint"))
            row.started_at = ts if starts else None
            row.params = _params(p)
            _put(run, row)
        elif kind == "step_cached":
            if live:
                raise Refused
            row = Row(step, 0, "cached", seq, p.get("cache_key"), p.get("fingerprint"))
            row.output = p.get("output") or None
            row.inputs = dict(p.get("inputs") or {})
            row.started_at = row.finished_at = ts
            row.duration_ms = 0.0
            row.source_run_id = p.get("source_run_id")
            row.params = _params(p)
            _put(run, row)
        elif kind == "step_skipped":
            if live:
                raise Refused
            row = Row(step, 0, "skipped", seq, error=p.get("reason"))
            row.started_at = row.finished_at = ts
            _put(run, row)
        else:  # events of the attempt that runs (some, of one still queued)
            if live is None or (queued and kind not in QUEUED_MAY):
                raise Refused
            if attempt is not None and attempt != live.attempt:
                raise Refused
            if queued:
                note(f"model: queued attempt, {kind}")
            row = copy.copy(live)
            row.seq = seq
            if kind == "step_input_recorded":
                row.inputs = dict(p.get("inputs") or {})
            elif kind == "step_output_recorded":
                row.output = p.get("output") or None
            else:
                if kind == "step_completed" and row.output is None:
                    raise Refused
                failed = kind != "step_completed"
                row.status = "failed" if failed else "completed"
                row.finished_at = ts
                duration = p.get("duration_ms")
                if duration is None and row.started_at is not None:
                    duration = (ts - row.started_at).total_seconds() * 1000.0
                row.duration_ms = duration
                row.error = p.get("error") if failed else None
                row.traceback = p.get("traceback") if failed else None
            _put(run, row)
    run.version = seq
    run.events.append((seq, kind, step, attempt, dict(p), ts))


def _put(run: RunModel, row: Row) -> None:
    run.rows[(row.step, row.attempt)] = row
    run.latest[row.step] = (row.step, row.attempt)


def _payload(kind: str, step: str | None, n: int) -> dict[str, Any]:
    """A payload like the engine's for ``kind``; ``n`` varies the values."""
    output = {"codec": "json", "hash": f"h{n}", "size": n, "type": "int", "inline": n}
    if kind == "step_started":
        if n == 5:
            return {}  # as the engine starts a queued attempt: what it queued holds
        started = {"cache_key": f"ck-{step}-{n % 3}", "fingerprint": f"fp-{n % 2}"}
        return {**started, "params": {"p": n}} if n % 2 else started
    if kind == "step_queued":
        return {
            "cache_key": f"ck-{step}-q{n % 3}",
            "fingerprint": f"fp-q{n % 2}",
            "params": {"p": n, "ü": "'«q»\""},
        }
    if kind == "step_input_recorded":
        return {"inputs": {"x": f"h{n}", "ü": "h'\""}}
    if kind == "step_output_recorded":
        return {"output": output}
    if kind == "step_completed":
        return {"duration_ms": float(n)} if n % 2 else {}
    if kind in ("step_failed", "step_retried"):
        return {"error": f"Error {n}: «bad» 'quote'", "traceback": f"tb {n}"}
    if kind == "step_cached":
        return {
            "cache_key": f"ck-{step}-{n % 3}",
            "fingerprint": "fp-0",
            "output": output,
            "inputs": {"x": "h"},
            "source_run_id": f"src-{n}",
        }
    if kind == "step_skipped":
        return {"reason": f"upstream {n}"}
    if kind in ("run_failed", "run_cancelled", "run_interrupted"):
        return {"error": f"run error {n}"} if n % 2 else {}
    return {}


def event_specs(max_size: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Up to ``max_size`` events of any type, for any step and attempt: (type, step,
    attempt, n), ``n`` choosing the payload."""
    return st.lists(
        st.tuples(
            st.sampled_from(list(EventType)),
            st.sampled_from([*STEPS, None]),
            st.sampled_from([None, 0, 1, 2, 3]),
            st.integers(0, 5),
        ),
        max_size=max_size,
    )


class StoreMachine(RuleBasedStateMachine):
    """The DuckDB store against the model."""

    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="nbflow-sm-"))
        self.path = self.folder / "store.duckdb"
        self.store = DuckDBStore(self.path)
        self.model: dict[str, RunModel] = {}
        self.ticks = 0
        self.dirty: set[str] = set()  # runs whose execution rows to compare next
        self.since_reopen = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _now(self) -> dt.datetime:
        self.ticks += 1
        return T0 + dt.timedelta(milliseconds=self.ticks * 1001, microseconds=self.ticks)

    def _event(self, kind: EventType, step: str | None, attempt: int | None, n: int) -> NewEvent:
        return NewEvent(kind, step, attempt, _payload(kind.value, step, n), self._now())

    # -- operations ---------------------------------------------------------------------

    @initialize(target=runs)
    def first_run(self) -> str:
        return self.create_run()

    @rule(target=runs)
    def create_run(self) -> str:
        run_id = f"run-{len(self.model)}-'é\""
        self.store.create_run(
            RunRecord(run_id, "flow", "fp", RunStatus.PENDING, 0, {"i": len(self.model)}, T0)
        )
        self.model[run_id] = RunModel()
        self.dirty.add(run_id)
        return run_id

    @rule(
        target=runs,
        specs=event_specs(max_size=4),
        started=st.booleans(),
        taken=st.sampled_from([False, False, False, True]),
    )
    def record_run(
        self,
        specs: list[tuple[EventType, str | None, int | None, int]],
        started: bool,
        taken: bool,
    ) -> Any:
        """A new run written with its first events in one go (sometimes an id in use)."""
        self.since_reopen += 1
        run_id = next(iter(self.model)) if taken else f"run-{len(self.model)}-at-once"
        events = [self._event(EventType.RUN_STARTED, None, None, 0)] if started else []
        events += [self._event(kind, step, attempt, n) for kind, step, attempt, n in specs]
        trial: RunModel | None = RunModel()
        try:
            for e in events:
                model_apply(trial, e)
        except Refused:
            trial = None
        record = RunRecord(run_id, "flow", "fp", RunStatus.PENDING, 0, {"i": len(self.model)}, T0)
        if taken:
            note("record_run: taken id")
            # Events that do not follow are refused first, without looking at the id.
            refusal = DuplicateRunError if trial is not None else InvalidTransitionError
            with pytest.raises(refusal):
                self.store.record_run(record, events)
            return multiple()
        if trial is None:
            note("record_run: refused")
            with pytest.raises(InvalidTransitionError):
                self.store.record_run(record, events)
            with pytest.raises(UnknownRunError):
                self.store.get_run(run_id)
            return multiple()
        written = self.store.record_run(record, events)
        assert (written.status.value, written.version) == (trial.status, trial.version)
        note(f"record_run: ok, run now {trial.status}")
        self.model[run_id] = trial
        self.dirty.add(run_id)
        return run_id

    @rule(
        run_id=runs,
        specs=event_specs(max_size=3),
        shift=st.sampled_from([0, 0, 0, 0, -1, 1, -3]),
    )
    def append_random(
        self, run_id: str, specs: list[tuple[EventType, str | None, int | None, int]], shift: int
    ) -> None:
        """Any events for any steps and attempts, sometimes at a stale version."""
        events = [self._event(kind, step, attempt, n) for kind, step, attempt, n in specs]
        self._append(run_id, self.model[run_id].version + shift, events)

    @rule(run_id=runs, data=st.data())
    def append_valid(self, run_id: str, data: st.DataObject) -> None:
        """One or two events the model accepts, so runs get far into their lives."""
        for _ in range(data.draw(st.integers(1, 2))):
            options = self._valid_next(run_id)
            if not options:
                return
            kind, step, attempt = data.draw(st.sampled_from(options))
            event = self._event(kind, step, attempt, data.draw(st.integers(0, 5)))
            self._append(run_id, self.model[run_id].version, [event], must_succeed=True)

    @rule(run_id=runs, data=st.data())
    def queue_a_step(self, run_id: str, data: st.DataObject) -> None:
        """A step handed to a parallel executor, as the engine records it: queued with its
        inputs, then (maybe in a later batch) started or failed without starting."""
        run = self.model[run_id]
        free = [s for s in STEPS if run.open(s) is None]
        if run.status != "running" or not free:
            return
        step = data.draw(st.sampled_from(free))
        attempt = run.max_attempt(step) + 1
        n = data.draw(st.integers(0, 5))
        events = [
            self._event(EventType.STEP_QUEUED, step, attempt, n),
            self._event(EventType.STEP_INPUT_RECORDED, step, attempt, n),
        ]
        then = data.draw(st.sampled_from([None, EventType.STEP_STARTED, EventType.STEP_FAILED]))
        later = data.draw(st.booleans())
        if then is not None and not later:
            events.append(self._event(then, step, data.draw(st.sampled_from([None, attempt])), n))
        self._append(run_id, run.version, events, must_succeed=True)
        if then is not None and later:
            event = self._event(then, step, data.draw(st.sampled_from([None, attempt])), n)
            self._append(run_id, self.model[run_id].version, [event], must_succeed=True)

    @precondition(lambda self: len(self.model) > 0 and self.since_reopen >= 6)
    @rule()
    def reopen(self) -> None:
        """Close the file and open it again: the state comes from disk, not a cache."""
        self.store.close()
        self.store = DuckDBStore(self.path)
        self.since_reopen = 0
        self.dirty |= set(self.model)

    @precondition(lambda self: self.since_reopen >= 3)
    @rule(run_id=runs, data=st.data())
    def append_through_another_object(self, run_id: str, data: st.DataObject) -> None:
        """Another store object on the file appends: our object's cached state is stale."""
        options = self._valid_next(run_id)
        if not options:
            return
        kind, step, attempt = data.draw(st.sampled_from(options))
        event = self._event(kind, step, attempt, data.draw(st.integers(0, 5)))
        main, self.store = self.store, DuckDBStore(self.path)
        try:
            self._append(run_id, self.model[run_id].version, [event], must_succeed=True)
        finally:
            self.store.close()
            self.store = main

    def _valid_next(self, run_id: str) -> list[tuple[EventType, str | None, int | None]]:
        run = self.model[run_id]
        options: list[tuple[EventType, str | None, int | None]] = []
        for kind in RUN_EVENTS:
            sources, _ = RUN_RULES[kind.value]
            if run.status in sources and (kind.value != "run_forked" or run.version == 0):
                options.append((kind, None, None))
        for step in STEPS:
            options += [
                (EventType(kind), step, None)
                for kind, sources in GATE_RULES.items()
                if run.status in sources
            ]
            if run.status == "waiting" and run.open(step) is None:
                options.append((EventType.STEP_SKIPPED, step, None))
        if run.status != "running":
            return options
        for step in STEPS:
            live = run.open(step)
            if live is None:
                nxt = run.max_attempt(step) + 1
                options += [
                    (EventType.STEP_SCHEDULED, step, None),
                    (EventType.STEP_STARTED, step, nxt),
                    (EventType.STEP_STARTED, step, nxt + 1),
                    (EventType.STEP_QUEUED, step, nxt),
                    (EventType.STEP_QUEUED, step, nxt + 1),
                    (EventType.STEP_CACHED, step, None),
                    (EventType.STEP_SKIPPED, step, None),
                ]
                continue
            attempts = [None, live.attempt]
            if live.status == "queued":
                for kind in (
                    EventType.STEP_STARTED,
                    EventType.STEP_INPUT_RECORDED,
                    EventType.STEP_FAILED,
                    EventType.STEP_RETRIED,
                ):
                    options += [(kind, step, a) for a in attempts]
                continue
            for kind in (
                EventType.STEP_INPUT_RECORDED,
                EventType.STEP_OUTPUT_RECORDED,
                EventType.STEP_FAILED,
                EventType.STEP_RETRIED,
            ):
                options += [(kind, step, a) for a in attempts]
            if live.output is not None:
                options += [(EventType.STEP_COMPLETED, step, a) for a in attempts]
        return options

    def _append(
        self, run_id: str, version: int, events: list[NewEvent], must_succeed: bool = False
    ) -> None:
        self.since_reopen += 1
        self.dirty.add(run_id)
        current = self.model[run_id]
        trial = copy.deepcopy(current)
        refused = False
        try:
            for event in events:
                model_apply(trial, event)
        except Refused:
            refused = True

        if version != current.version:
            note("append: stale")
            with pytest.raises(StaleVersionError):
                self.store.append(run_id, version, events)
        elif refused:
            assert not must_succeed
            note("append: refused")
            with pytest.raises(InvalidTransitionError, match="Nothing was written"):
                self.store.append(run_id, version, events)
        else:
            record = self.store.append(run_id, version, events)
            assert (record.status.value, record.version) == (trial.status, trial.version)
            self.model[run_id] = trial
            note(f"append: ok, run now {trial.status}")

    # -- what must hold -----------------------------------------------------------------

    @invariant()
    def runs_match_the_model(self) -> None:
        """Every run's status, version and timestamps are the model's."""
        got = {
            r.run_id: (r.status.value, r.version, r.started_at, r.finished_at, r.error)
            for r in self.store.list_runs()
        }
        assert got == {
            run_id: (m.status, m.version, m.started_at, m.finished_at, m.error)
            for run_id, m in self.model.items()
        }

    @invariant()
    def events_match_the_model(self) -> None:
        """Every run's log is exactly the model's, gap-free from 1."""
        got: dict[str, list[tuple[Any, ...]]] = {run_id: [] for run_id in self.model}
        for e in self.store.read_events():
            got[e.run_id].append((e.seq, e.type.value, e.step, e.attempt, dict(e.payload), e.ts))
        for run_id, events in got.items():
            assert [e[0] for e in events] == list(range(1, len(events) + 1))
            assert events == self.model[run_id].events

    @invariant()
    def executions_match_the_model(self) -> None:
        """The execution rows of each run touched since the last check are the model's."""
        for run_id in sorted(self.dirty):
            rows = [
                Row(
                    x.step,
                    x.attempt,
                    x.status.value,
                    x.seq,
                    x.cache_key,
                    x.fingerprint,
                    x.output.to_json() if x.output else None,
                    dict(x.inputs),
                    x.started_at,
                    x.finished_at,
                    x.duration_ms,
                    x.error,
                    x.traceback,
                    x.source_run_id,
                    dict(x.params) if x.params is not None else None,
                )
                for x in self.store.executions(run_id)
            ]
            assert rows == sorted(
                self.model[run_id].rows.values(), key=lambda r: (r.seq, r.attempt, r.step)
            )
        self.dirty.clear()


StoreMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreStateMachine = StoreMachine.TestCase
