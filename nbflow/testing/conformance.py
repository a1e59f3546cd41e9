"""The store contract as reusable pytest tests.

Subclass :class:`StoreConformance` in a test module and provide a ``store`` fixture that
returns a fresh, empty store of your backend; pytest then runs every contract test on it::

    import pytest
    import nbflow.testing


    class TestMyStore(nbflow.testing.StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path / "store.db")

The class defines no ``store`` fixture itself, so one from a ``conftest.py`` (for example
parametrized over several backends) is picked up as well. The helpers below build the
records and event sequences the tests use; they are public so that backend-specific tests
can reuse them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import pytest

from nbflow import frames
from nbflow.errors import (
    InvalidTransitionError,
    ParameterError,
    StaleVersionError,
    StoreError,
    UnknownRunError,
)
from nbflow.store.base import Store
from nbflow.store.fold import fold
from nbflow.store.records import (
    Codec,
    Event,
    EventType,
    FlowRecord,
    NewEvent,
    RunRecord,
    RunStatus,
    StepDefinition,
    StepExecution,
    StepStatus,
    ValueRef,
)

__all__ = [
    "T0",
    "Clock",
    "Snapshot",
    "StoreConformance",
    "append_each",
    "assert_refused",
    "attempt_events",
    "cached_event",
    "make_flow",
    "make_run",
    "output_ref",
    "populate",
    "retry_events",
    "skipped_event",
    "snapshot",
    "start_run",
    "typical_events",
]

#: The first timestamp the helpers hand out (tz-aware UTC).
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)

#: A step name and a payload that exercise quoting and unicode in every backend.
TRICKY_STEP = 'l\'étape "spéciale" ; -- 数据'
TRICKY_PAYLOAD: dict[str, Any] = {
    "text": "quotes ' \" and \\ backslash; -- not a comment",
    "unicode": "naïve café — 東京 🚀",
    "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
}


class Clock:
    """Hands out increasing tz-aware UTC timestamps, ``step`` apart, from ``start``."""

    def __init__(self, start: dt.datetime = T0, step: dt.timedelta = dt.timedelta(seconds=1)):
        self._next = start
        self._step = step

    def __call__(self) -> dt.datetime:
        """The next timestamp."""
        now = self._next
        self._next = now + self._step
        return now


_ids = itertools.count(1)


def make_flow(
    name: str = "flow",
    fingerprint: str = "flow-fp-1",
    steps: Sequence[str] = ("load", "clean"),
    *,
    created_at: dt.datetime = T0,
) -> FlowRecord:
    """A flow definition whose steps depend on each other in a chain."""
    defs = tuple(
        StepDefinition(
            name=step,
            fingerprint=f"{step}-fp",
            dependencies=(steps[i - 1],) if i else (),
            params={"n": i, "label": f"step {step}"},
            param_types={"n": "int", "label": "str"},
            source=f"def {step}():\n    return {i!r}\n",
            options={"retries": i, "cache": True},
        )
        for i, step in enumerate(steps)
    )
    return FlowRecord(name, fingerprint, defs, created_at)


def make_run(
    run_id: str | None = None,
    *,
    flow: str = "flow",
    flow_fingerprint: str = "flow-fp-1",
    created_at: dt.datetime | None = None,
    params: Mapping[str, Any] | None = None,
    thread_id: str | None = None,
    steps: Sequence[str] = ("load", "clean"),
    **fields: Any,
) -> RunRecord:
    """A new run record (pending, version 0); ids and creation times are unique by default."""
    n = next(_ids)
    return RunRecord(
        run_id=run_id if run_id is not None else f"run-{n:05d}",
        flow=flow,
        flow_fingerprint=flow_fingerprint,
        status=RunStatus.PENDING,
        version=0,
        params=dict(params) if params is not None else {"n": 3, "name": "x"},
        created_at=created_at if created_at is not None else T0 + dt.timedelta(minutes=n),
        thread_id=thread_id,
        steps=tuple(steps),
        **fields,
    )


def output_ref(value: Any = 42, hash: str | None = None) -> dict[str, Any]:
    """The JSON form of an inline ValueRef for ``value`` (what an output event carries)."""
    ref = ValueRef(
        codec=Codec.JSON,
        hash=hash if hash is not None else f"hash-{value!r}",
        size=len(repr(value)),
        type_name=type(value).__name__,
        inline=value,
    )
    return ref.to_json()


def attempt_events(
    step: str,
    attempt: int = 1,
    *,
    clock: Clock | None = None,
    output: Any = 42,
    fingerprint: str | None = None,
    cache_key: str | None = None,
    inputs: Mapping[str, str] | None = None,
) -> list[NewEvent]:
    """One successful attempt of ``step``: started, input, output, completed."""
    clock = clock or Clock()
    return [
        NewEvent(
            EventType.STEP_STARTED,
            step,
            attempt,
            {
                "cache_key": cache_key if cache_key is not None else f"ck-{step}",
                "fingerprint": fingerprint if fingerprint is not None else f"{step}-fp",
            },
            clock(),
        ),
        NewEvent(
            EventType.STEP_INPUT_RECORDED,
            step,
            attempt,
            {"inputs": dict(inputs) if inputs is not None else {"n": "hash-n"}},
            clock(),
        ),
        NewEvent(
            EventType.STEP_OUTPUT_RECORDED, step, attempt, {"output": output_ref(output)}, clock()
        ),
        NewEvent(EventType.STEP_COMPLETED, step, attempt, {}, clock()),
    ]


def retry_events(
    step: str, *, clock: Clock | None = None, output: Any = 7, error: str = "boom"
) -> list[NewEvent]:
    """Attempt 1 of ``step`` fails and is retried; attempt 2 completes."""
    clock = clock or Clock()
    first = NewEvent(
        EventType.STEP_STARTED,
        step,
        1,
        {"cache_key": f"ck-{step}", "fingerprint": f"{step}-fp"},
        clock(),
    )
    retried = NewEvent(
        EventType.STEP_RETRIED,
        step,
        1,
        {"error": error, "traceback": "Traceback (most recent call last): ..."},
        clock(),
    )
    return [first, retried, *attempt_events(step, 2, clock=clock, output=output)]


def cached_event(
    step: str,
    *,
    clock: Clock | None = None,
    source_run_id: str = "run-source",
    output: Any = 42,
    fingerprint: str | None = None,
    cache_key: str | None = None,
) -> NewEvent:
    """``step`` is answered from the cache (an execution row with attempt 0)."""
    clock = clock or Clock()
    return NewEvent(
        EventType.STEP_CACHED,
        step,
        None,
        {
            "cache_key": cache_key if cache_key is not None else f"ck-{step}",
            "fingerprint": fingerprint if fingerprint is not None else f"{step}-fp",
            "output": output_ref(output),
            "inputs": {"n": "hash-n"},
            "source_run_id": source_run_id,
        },
        clock(),
    )


def skipped_event(
    step: str, *, clock: Clock | None = None, reason: str = "upstream failed"
) -> NewEvent:
    """``step`` is skipped (an execution row with attempt 0)."""
    clock = clock or Clock()
    return NewEvent(EventType.STEP_SKIPPED, step, None, {"reason": reason}, clock())


def typical_events(
    steps: Sequence[str] = ("load", "clean"),
    *,
    clock: Clock | None = None,
    finish: bool = True,
) -> list[NewEvent]:
    """A run that starts, schedules and completes each step in turn, then completes."""
    clock = clock or Clock()
    events = [NewEvent(EventType.RUN_STARTED, None, None, {}, clock())]
    for i, step in enumerate(steps):
        events.append(NewEvent(EventType.STEP_SCHEDULED, step, None, {}, clock()))
        events += attempt_events(step, 1, clock=clock, output=i)
    if finish:
        events.append(NewEvent(EventType.RUN_COMPLETED, None, None, {}, clock()))
    return events


def start_run(
    store: Store, run: RunRecord | None = None, *, clock: Clock | None = None
) -> RunRecord:
    """Create ``run`` (default: :func:`make_run`) and append ``run_started``."""
    run = run or make_run()
    store.create_run(run)
    clock = clock or Clock()
    return store.append(run.run_id, 0, [NewEvent(EventType.RUN_STARTED, ts=clock())])


def append_each(store: Store, run_id: str, events: Sequence[NewEvent]) -> list[RunRecord]:
    """Append ``events`` one at a time; return the run record after each."""
    records = []
    version = store.get_run(run_id).version
    for event in events:
        record = store.append(run_id, version, [event])
        version = record.version
        records.append(record)
    return records


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything a store holds about one run, to show that a write changed nothing."""

    run: RunRecord
    events: list[Event]
    executions: list[StepExecution]
    all_runs: list[RunRecord]


def snapshot(store: Store, run_id: str) -> Snapshot:
    """What ``store`` holds about ``run_id`` (and the list of runs), now."""
    return Snapshot(
        store.get_run(run_id),
        store.read_events(run_id),
        store.executions(run_id),
        store.list_runs(),
    )


def assert_refused(
    store: Store, run_id: str, events: Sequence[NewEvent], *, match: str | None = None
) -> InvalidTransitionError:
    """Append ``events`` at the run's version; check it is refused and nothing changed."""
    before = snapshot(store, run_id)
    with pytest.raises(InvalidTransitionError, match=match) as info:
        store.append(run_id, before.run.version, events)
    assert "Nothing was written" in str(info.value) or "gap-free" in str(info.value)
    assert snapshot(store, run_id) == before
    return info.value


def populate(store: Store) -> list[str]:
    """Fill ``store`` with a small, fully deterministic history; return the run ids.

    Two flows, several threads, runs in every kind of state: completed, completed with a
    retry, failed with a skipped step, cached, a fork, pending and cancelled.
    """
    store.put_flow(make_flow("flow"))
    store.put_flow(make_flow("other", "other-fp", ("only",)))
    clock = Clock()
    ids: list[str] = []

    def new(run_id: str, minute: int, **kw: Any) -> str:
        store.create_run(make_run(run_id, created_at=T0 + dt.timedelta(minutes=minute), **kw))
        ids.append(run_id)
        return run_id

    done = new("r-done", 1, thread_id="t1")
    append_each(store, done, typical_events(clock=clock))

    retried = new("r-retried", 2, thread_id="t1", params={"n": 5, "name": "ü"})
    store.append(
        retried,
        0,
        [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            *retry_events("load", clock=clock),
            *attempt_events("clean", clock=clock, output={"rows": 3}),
            NewEvent(EventType.RUN_COMPLETED, ts=clock()),
        ],
    )

    failed = new("r-failed", 3, thread_id="t2")
    store.append(
        failed,
        0,
        [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            NewEvent(EventType.STEP_STARTED, "load", 1, {"fingerprint": "load-fp"}, clock()),
            NewEvent(
                EventType.STEP_FAILED,
                "load",
                1,
                {"error": "ValueError: bad", "traceback": "tb"},
                clock(),
            ),
            skipped_event("clean", clock=clock),
            NewEvent(EventType.RUN_FAILED, payload={"error": "step 'load' failed"}, ts=clock()),
        ],
    )

    cached = new("r-cached", 4, thread_id="t2")
    store.append(
        cached,
        0,
        [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            cached_event("load", clock=clock, source_run_id=done, output=0),
            *attempt_events("clean", clock=clock, output=1, cache_key="ck-clean-2"),
            NewEvent(EventType.RUN_COMPLETED, ts=clock()),
        ],
    )

    fork = new(
        "r-fork",
        5,
        parent_run_id=done,
        fork_from_step="clean",
        fork_from_version=7,
        params={"n": 4},
    )
    store.append(
        fork,
        0,
        [
            NewEvent(EventType.RUN_FORKED, payload={"parent_run_id": done}, ts=clock()),
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            NewEvent(EventType.STEP_STARTED, TRICKY_STEP, 1, {"cache_key": "ck-t"}, clock()),
            NewEvent(
                EventType.STEP_OUTPUT_RECORDED, TRICKY_STEP, 1, {"output": output_ref("é")}, clock()
            ),
        ],
    )

    new("r-pending", 6, flow="other", flow_fingerprint="other-fp", steps=("only",))
    cancelled = new("r-cancelled", 7, flow="other", flow_fingerprint="other-fp", steps=("only",))
    store.append(
        cancelled, 0, [NewEvent(EventType.RUN_CANCELLED, payload={"error": "by user"}, ts=clock())]
    )
    return ids


def _executions_of(
    state_executions: Mapping[tuple[str, int], StepExecution],
) -> list[StepExecution]:
    return sorted(state_executions.values(), key=lambda x: (x.seq, x.attempt))


def _is_utc(ts: dt.datetime | None) -> bool:
    return ts is not None and ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)


@dataclasses.dataclass(frozen=True)
class _Opaque:
    """A value that is neither JSON, a DataFrame nor an array: stored as a pickle."""

    name: str
    numbers: tuple[int, ...]


# The mixins use the helpers above, so they are imported once those exist.
from nbflow.testing.conformance_check import CheckConformance  # noqa: E402
from nbflow.testing.conformance_leases import LeaseConformance  # noqa: E402


class StoreConformance(LeaseConformance, CheckConformance):
    """The contract of :class:`nbflow.store.base.Store`, as pytest tests.

    Subclass it and provide a ``store`` fixture returning a fresh, empty store.
    """

    # -- flows --------------------------------------------------------------------------

    def test_get_flow_returns_the_stored_definition(self, store: Store) -> None:
        """A stored flow reads back equal, steps and all."""
        flow = make_flow(steps=("load", TRICKY_STEP, "clean"))
        store.put_flow(flow)
        assert store.get_flow(flow.name, flow.fingerprint) == flow

    def test_get_flow_of_an_unknown_key_is_none(self, store: Store) -> None:
        """An unknown name or fingerprint gives None, not an error."""
        store.put_flow(make_flow())
        assert store.get_flow("flow", "no-such-fingerprint") is None
        assert store.get_flow("no-such-flow", "flow-fp-1") is None

    def test_put_flow_keeps_the_first_definition(self, store: Store) -> None:
        """Definitions are immutable: a second put with the same key is ignored."""
        first = make_flow(steps=("load",))
        store.put_flow(first)
        store.put_flow(make_flow(steps=("other", "steps"), created_at=T0 + dt.timedelta(days=1)))
        assert store.get_flow(first.name, first.fingerprint) == first

    def test_flows_with_other_fingerprints_are_separate(self, store: Store) -> None:
        """The same name with another fingerprint is another version of the flow."""
        v1 = make_flow(fingerprint="fp-1", steps=("a",))
        v2 = make_flow(fingerprint="fp-2", steps=("a", "b"))
        store.put_flow(v1)
        store.put_flow(v2)
        assert store.get_flow("flow", "fp-1") == v1
        assert store.get_flow("flow", "fp-2") == v2

    # -- runs ---------------------------------------------------------------------------

    def test_create_run_stores_a_pending_run_at_version_0(self, store: Store) -> None:
        """A new run reads back as given, pending, at version 0, with no events."""
        run = make_run(
            "r1",
            params={"n": 3, "text": TRICKY_PAYLOAD["text"]},
            thread_id="thread-1",
            parent_run_id="r0",
            fork_from_step="clean",
            fork_from_version=4,
        )
        store.create_run(run)
        assert store.get_run("r1") == run
        assert store.read_events("r1") == []
        assert store.executions("r1") == []

    def test_create_run_ignores_a_status_given_with_the_record(self, store: Store) -> None:
        """Whatever the record says, a created run is pending at version 0."""
        run = dataclasses.replace(
            make_run("r1"), status=RunStatus.COMPLETED, version=9, started_at=T0, finished_at=T0
        )
        store.create_run(run)
        got = store.get_run("r1")
        assert (got.status, got.version, got.started_at, got.finished_at) == (
            RunStatus.PENDING,
            0,
            None,
            None,
        )

    def test_create_run_timestamps_are_utc(self, store: Store) -> None:
        """A run's creation time reads back tz-aware UTC, to the microsecond."""
        created = dt.datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=dt.UTC)
        store.create_run(make_run("r1", created_at=created))
        got = store.get_run("r1").created_at
        assert got == created
        assert _is_utc(got)

    def test_create_run_refuses_a_duplicate_id(self, store: Store) -> None:
        """A second run with the same id is refused, and the first is kept."""
        first = make_run("dup", params={"which": "first"})
        store.create_run(first)
        with pytest.raises(ValueError, match="dup"):
            store.create_run(make_run("dup", params={"which": "second"}))
        assert store.get_run("dup") == first
        assert len(store.list_runs()) == 1

    def test_get_run_of_an_unknown_id_names_it(self, store: Store) -> None:
        """UnknownRunError says which id was not found."""
        with pytest.raises(UnknownRunError, match="no-such-run"):
            store.get_run("no-such-run")

    @pytest.mark.parametrize(
        "call",
        ["read_events", "executions", "state_at", "events_frame", "steps_frame", "append"],
    )
    def test_reads_of_an_unknown_run_raise_unknown_run(self, store: Store, call: str) -> None:
        """Every per-run read (and append) of an unknown run raises UnknownRunError."""
        calls = {
            "read_events": lambda: store.read_events("ghost"),
            "executions": lambda: store.executions("ghost"),
            "state_at": lambda: store.state_at("ghost", 0),
            "events_frame": lambda: store.events_frame("ghost"),
            "steps_frame": lambda: store.steps_frame("ghost"),
            "append": lambda: store.append("ghost", 0, [NewEvent(EventType.RUN_STARTED)]),
        }
        with pytest.raises(UnknownRunError, match="ghost"):
            calls[call]()

    def test_list_runs_is_newest_first(self, store: Store) -> None:
        """Runs are listed by creation time, newest first, whatever the insertion order."""
        for minute in (3, 1, 4, 2):
            store.create_run(make_run(f"r{minute}", created_at=T0 + dt.timedelta(minutes=minute)))
        assert [r.run_id for r in store.list_runs()] == ["r4", "r3", "r2", "r1"]

    def test_list_runs_of_an_empty_store_is_empty(self, store: Store) -> None:
        """No runs: an empty list."""
        assert store.list_runs() == []

    def test_list_runs_filters_by_flow(self, store: Store) -> None:
        """``flow=`` keeps the runs of that flow."""
        populate(store)
        assert {r.run_id for r in store.list_runs(flow="other")} == {"r-pending", "r-cancelled"}
        assert store.list_runs(flow="no-such-flow") == []

    def test_list_runs_filters_by_one_status(self, store: Store) -> None:
        """``status=`` with one status (a string or a RunStatus)."""
        populate(store)
        completed = {"r-done", "r-retried", "r-cached"}
        assert {r.run_id for r in store.list_runs(status="completed")} == completed
        assert {r.run_id for r in store.list_runs(status=RunStatus.COMPLETED)} == completed
        assert [r.run_id for r in store.list_runs(status="failed")] == ["r-failed"]

    def test_list_runs_filters_by_several_statuses(self, store: Store) -> None:
        """``status=`` with several statuses keeps runs in any of them."""
        populate(store)
        got = store.list_runs(status=["pending", RunStatus.CANCELLED, "running"])
        assert [r.run_id for r in got] == ["r-cancelled", "r-pending", "r-fork"]

    def test_list_runs_filters_by_thread(self, store: Store) -> None:
        """``thread_id=`` keeps the runs of that thread."""
        populate(store)
        assert [r.run_id for r in store.list_runs(thread_id="t2")] == ["r-cached", "r-failed"]

    def test_list_runs_combines_filters(self, store: Store) -> None:
        """Every filter given must match."""
        populate(store)
        got = store.list_runs(flow="flow", status="completed", thread_id="t1")
        assert [r.run_id for r in got] == ["r-retried", "r-done"]

    def test_list_runs_limit_keeps_the_newest(self, store: Store) -> None:
        """``limit=`` keeps the first runs of the newest-first order."""
        populate(store)
        assert [r.run_id for r in store.list_runs(limit=2)] == ["r-cancelled", "r-pending"]
        assert [r.run_id for r in store.list_runs(flow="flow", limit=1)] == ["r-fork"]
        assert store.list_runs(limit=0) == []

    def test_list_runs_refuses_an_unknown_status(self, store: Store) -> None:
        """An unknown status is a ParameterError naming it, not an empty result."""
        with pytest.raises(ParameterError, match="finished"):
            store.list_runs(status="finished")
        with pytest.raises(ParameterError, match="bogus"):
            store.list_runs(status=["completed", "bogus"])

    # -- append -------------------------------------------------------------------------

    def test_append_numbers_events_from_1_without_gaps(self, store: Store) -> None:
        """Seqs run 1, 2, 3... across batches; the version is the last seq."""
        store.create_run(make_run("r1"))
        events = typical_events()
        first = store.append("r1", 0, events[:3])
        assert first.version == 3
        last = store.append("r1", 3, events[3:])
        assert last.version == len(events)
        assert [e.seq for e in store.read_events("r1")] == list(range(1, len(events) + 1))
        assert store.get_run("r1").version == len(events)

    def test_append_returns_the_stored_run(self, store: Store) -> None:
        """append returns the run record as get_run then reads it."""
        store.create_run(make_run("r1"))
        returned = store.append("r1", 0, typical_events())
        assert returned == store.get_run("r1")

    def test_events_read_back_equal(self, store: Store) -> None:
        """Types, steps, attempts, payloads and timestamps read back as appended."""
        store.create_run(make_run("r1"))
        events = typical_events()
        store.append("r1", 0, events)
        got = store.read_events("r1")
        assert [(e.type, e.step, e.attempt, dict(e.payload), e.ts) for e in got] == [
            (e.type, e.step, e.attempt, dict(e.payload), e.ts) for e in events
        ]
        assert all(e.run_id == "r1" and isinstance(e.type, EventType) for e in got)

    def test_event_timestamps_are_utc(self, store: Store) -> None:
        """Event timestamps read back tz-aware UTC, to the microsecond."""
        ts = dt.datetime(2024, 5, 1, 9, 8, 7, 654321, tzinfo=dt.UTC)
        store.create_run(make_run("r1"))
        store.append("r1", 0, [NewEvent(EventType.RUN_STARTED, ts=ts)])
        (event,) = store.read_events("r1")
        assert event.ts == ts
        assert _is_utc(event.ts)
        assert store.get_run("r1").started_at == ts
        assert _is_utc(store.get_run("r1").started_at)

    def test_a_stored_event_does_not_follow_later_changes_to_its_payload(
        self, store: Store
    ) -> None:
        """The store keeps the payload as it was appended, not the caller's object."""
        store.create_run(make_run("r1"))
        payload: dict[str, Any] = {"error": "first", "nested": {"items": [1]}}
        store.append("r1", 0, [NewEvent(EventType.RUN_STARTED, payload=payload)])
        payload["error"] = "changed"
        payload["nested"]["items"].append(2)
        (event,) = store.read_events("r1")
        assert dict(event.payload) == {"error": "first", "nested": {"items": [1]}}

    def test_unicode_and_quotes_round_trip(self, store: Store) -> None:
        """Step names and payloads with quotes, backslashes and unicode round-trip."""
        store.create_run(make_run("r1", params=TRICKY_PAYLOAD))
        events = [
            NewEvent(EventType.RUN_STARTED, payload=TRICKY_PAYLOAD),
            NewEvent(EventType.STEP_SCHEDULED, TRICKY_STEP, None, TRICKY_PAYLOAD),
            *attempt_events(TRICKY_STEP, output=TRICKY_PAYLOAD["unicode"]),
        ]
        store.append("r1", 0, events)
        got = store.read_events("r1")
        assert [(e.step, dict(e.payload)) for e in got] == [
            (e.step, dict(e.payload)) for e in events
        ]
        assert dict(store.get_run("r1").params) == TRICKY_PAYLOAD
        (row,) = store.executions("r1")
        assert row.step == TRICKY_STEP
        assert row.output is not None and row.output.inline == TRICKY_PAYLOAD["unicode"]

    def test_read_events_upto_stops_at_that_version(self, store: Store) -> None:
        """``upto=v`` returns the events with seq <= v."""
        store.create_run(make_run("r1"))
        store.append("r1", 0, typical_events())
        assert [e.seq for e in store.read_events("r1", upto=4)] == [1, 2, 3, 4]
        assert store.read_events("r1", upto=0) == []

    def test_read_events_of_all_runs(self, store: Store) -> None:
        """Without a run id, every run's events, ordered by run id, then seq."""
        for run_id in ("b", "c", "a"):
            store.create_run(make_run(run_id))
            store.append(run_id, 0, typical_events(("s",)))
        got = store.read_events()
        assert [(e.run_id, e.seq) for e in got] == [(r, s) for r in "abc" for s in range(1, 8)]
        assert store.read_events(upto=2) == [e for e in got if e.seq <= 2]

    def test_an_empty_append_changes_nothing(self, store: Store) -> None:
        """Appending no events at the current version is a no-op."""
        run = start_run(store)
        before = snapshot(store, run.run_id)
        assert store.append(run.run_id, run.version, []) == before.run
        assert snapshot(store, run.run_id) == before

    # -- optimistic concurrency ---------------------------------------------------------

    @pytest.mark.parametrize("offset", [-1, 1])
    def test_a_stale_version_is_refused(self, store: Store, offset: int) -> None:
        """A version that is not the stored one raises StaleVersionError naming the run."""
        store.create_run(make_run("r1"))
        store.append("r1", 0, typical_events(finish=False)[:3])
        with pytest.raises(StaleVersionError, match=r"r1.*version 3") as info:
            store.append("r1", 3 + offset, [NewEvent(EventType.STEP_SCHEDULED, "clean")])
        assert info.value.expected == 3 + offset
        assert info.value.actual == 3

    def test_a_stale_append_writes_nothing(self, store: Store) -> None:
        """After StaleVersionError, events, run row and executions are unchanged."""
        store.create_run(make_run("r1"))
        events = typical_events(finish=False)
        store.append("r1", 0, events[:4])
        before = snapshot(store, "r1")
        with pytest.raises(StaleVersionError):
            store.append("r1", 2, events[4:])
        assert snapshot(store, "r1") == before

    def test_a_stale_empty_append_is_refused(self, store: Store) -> None:
        """Even an empty batch checks the version."""
        run = start_run(store)
        with pytest.raises(StaleVersionError):
            store.append(run.run_id, run.version - 1, [])

    def test_the_store_is_usable_after_a_stale_append(self, store: Store) -> None:
        """A refused append does not wedge the run: the current version still appends."""
        store.create_run(make_run("r1"))
        events = typical_events()
        store.append("r1", 0, events[:4])
        with pytest.raises(StaleVersionError):
            store.append("r1", 1, events[4:])
        assert store.append("r1", 4, events[4:]).status is RunStatus.COMPLETED
        assert [e.seq for e in store.read_events("r1")] == list(range(1, len(events) + 1))

    # -- transitions --------------------------------------------------------------------

    def test_a_step_event_before_the_run_started_is_refused(self, store: Store) -> None:
        """A pending run takes no step events."""
        store.create_run(make_run("r1"))
        assert_refused(store, "r1", attempt_events("load")[:1], match="pending, not running")

    def test_a_step_event_without_a_step_is_refused(self, store: Store) -> None:
        """A step event must name its step."""
        run = start_run(store)
        assert_refused(store, run.run_id, [NewEvent(EventType.STEP_STARTED, None, 1)])

    def test_completed_run_cannot_start_again(self, store: Store) -> None:
        """completed -> running is refused."""
        store.create_run(make_run("r1"))
        store.append("r1", 0, typical_events())
        assert_refused(store, "r1", [NewEvent(EventType.RUN_STARTED)], match="completed")

    def test_completed_run_takes_no_step_events(self, store: Store) -> None:
        """A finished run takes no more step events."""
        store.create_run(make_run("r1"))
        store.append("r1", 0, typical_events(("load",)))
        assert_refused(store, "r1", attempt_events("clean")[:1])

    @pytest.mark.parametrize(
        "event", [EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_INTERRUPTED]
    )
    def test_a_pending_run_cannot_finish(self, store: Store, event: EventType) -> None:
        """Only a running run completes, fails or is interrupted."""
        store.create_run(make_run("r1"))
        assert_refused(store, "r1", [NewEvent(event)], match="pending")

    def test_a_running_run_cannot_fork(self, store: Store) -> None:
        """running -> run_forked (back to a pending-like state) is refused."""
        run = start_run(store)
        assert_refused(store, run.run_id, [NewEvent(EventType.RUN_FORKED)], match="running")

    def test_run_forked_only_as_the_first_event(self, store: Store) -> None:
        """run_forked is valid as event 1 of a pending run, and never again."""
        store.create_run(make_run("fork", parent_run_id="parent"))
        run = store.append("fork", 0, [NewEvent(EventType.RUN_FORKED)])
        assert (run.status, run.version) == (RunStatus.PENDING, 1)
        assert_refused(store, "fork", [NewEvent(EventType.RUN_FORKED)], match="first event")
        assert (
            store.append("fork", 1, [NewEvent(EventType.RUN_STARTED)]).status is RunStatus.RUNNING
        )

    def test_a_running_step_cannot_be_scheduled_again(self, store: Store) -> None:
        """A running attempt cannot go back to scheduled."""
        run = start_run(store)
        store.append(run.run_id, 1, attempt_events("load")[:1])
        assert_refused(
            store, run.run_id, [NewEvent(EventType.STEP_SCHEDULED, "load")], match="running"
        )

    @pytest.mark.parametrize("event", [EventType.STEP_CACHED, EventType.STEP_SKIPPED])
    def test_a_running_step_cannot_be_cached_or_skipped(
        self, store: Store, event: EventType
    ) -> None:
        """A running attempt must finish before the step is cached or skipped."""
        run = start_run(store)
        store.append(run.run_id, 1, attempt_events("load")[:1])
        assert_refused(store, run.run_id, [NewEvent(event, "load")], match="running")

    def test_step_completed_without_output_is_refused(self, store: Store) -> None:
        """An attempt completes only once its output was recorded."""
        run = start_run(store)
        events = attempt_events("load")
        store.append(run.run_id, 1, events[:2])  # started, input: no output
        assert_refused(store, run.run_id, [events[3]], match="no output")

    @pytest.mark.parametrize(
        "event",
        [
            EventType.STEP_COMPLETED,
            EventType.STEP_FAILED,
            EventType.STEP_RETRIED,
            EventType.STEP_INPUT_RECORDED,
            EventType.STEP_OUTPUT_RECORDED,
        ],
    )
    def test_attempt_events_need_a_running_attempt(self, store: Store, event: EventType) -> None:
        """Completing, failing or recording needs a running attempt of the step."""
        run = start_run(store)
        payload = {"output": output_ref()}
        assert_refused(store, run.run_id, [NewEvent(event, "load", 1, payload)], match="no running")

    def test_a_finished_attempt_cannot_complete_again(self, store: Store) -> None:
        """After step_completed, the attempt is no longer running."""
        run = start_run(store)
        events = attempt_events("load")
        store.append(run.run_id, 1, events)
        assert_refused(store, run.run_id, [events[-1]], match="no running")

    def test_an_event_for_another_attempt_is_refused(self, store: Store) -> None:
        """An attempt event must name the running attempt (or none)."""
        run = start_run(store)
        store.append(run.run_id, 1, attempt_events("load", 2)[:1])
        bad = NewEvent(EventType.STEP_OUTPUT_RECORDED, "load", 1, {"output": output_ref()})
        assert_refused(store, run.run_id, [bad], match="attempt 2 is running")

    def test_a_step_cannot_start_twice(self, store: Store) -> None:
        """A running step cannot start another attempt."""
        run = start_run(store)
        store.append(run.run_id, 1, attempt_events("load", 1)[:1])
        assert_refused(store, run.run_id, attempt_events("load", 2)[:1], match="already running")

    @pytest.mark.parametrize("attempt", [None, 0, 1, 2])
    def test_attempt_numbers_must_increase(self, store: Store, attempt: int | None) -> None:
        """After attempt 2, a new attempt must be numbered 3 or more."""
        run = start_run(store)
        store.append(run.run_id, 1, retry_events("load"))  # attempts 1 and 2
        bad = NewEvent(EventType.STEP_STARTED, "load", attempt, {})
        assert_refused(store, run.run_id, [bad], match="not after attempt 2")

    def test_a_later_attempt_may_skip_numbers(self, store: Store) -> None:
        """Attempt numbers increase but need not be consecutive."""
        run = start_run(store)
        store.append(run.run_id, 1, attempt_events("load", 3))
        assert [(x.attempt, x.status) for x in store.executions(run.run_id)] == [
            (3, StepStatus.COMPLETED)
        ]

    def test_a_failed_run_can_resume(self, store: Store) -> None:
        """failed -> running is allowed (resume); the error and finish time are cleared."""
        clock = Clock()
        run = start_run(store, clock=clock)
        failed = store.append(
            run.run_id, 1, [NewEvent(EventType.RUN_FAILED, payload={"error": "boom"}, ts=clock())]
        )
        assert (failed.status, failed.error) == (RunStatus.FAILED, "boom")
        assert failed.finished_at is not None
        resumed = store.append(run.run_id, 2, [NewEvent(EventType.RUN_STARTED, ts=clock())])
        assert resumed.status is RunStatus.RUNNING
        assert (resumed.error, resumed.finished_at) == (None, None)
        assert resumed.started_at == run.started_at  # the first start is kept
        assert store.get_run(run.run_id) == resumed

    def test_an_interrupted_run_can_resume(self, store: Store) -> None:
        """interrupted -> running is allowed."""
        run = start_run(store)
        store.append(run.run_id, 1, [NewEvent(EventType.RUN_INTERRUPTED)])
        resumed = store.append(run.run_id, 2, [NewEvent(EventType.RUN_STARTED)])
        assert resumed.status is RunStatus.RUNNING

    def test_a_pending_run_can_be_cancelled(self, store: Store) -> None:
        """pending -> cancelled is allowed; a cancelled run never starts."""
        store.create_run(make_run("r1"))
        run = store.append("r1", 0, [NewEvent(EventType.RUN_CANCELLED, payload={"error": "no"})])
        assert (run.status, run.error) == (RunStatus.CANCELLED, "no")
        assert run.finished_at is not None
        assert_refused(store, "r1", [NewEvent(EventType.RUN_STARTED)], match="cancelled")

    def test_a_running_run_can_be_cancelled(self, store: Store) -> None:
        """running -> cancelled is allowed."""
        run = start_run(store)
        assert store.append(run.run_id, 1, [NewEvent(EventType.RUN_CANCELLED)]).status is (
            RunStatus.CANCELLED
        )

    def test_a_finished_run_cannot_be_cancelled(self, store: Store) -> None:
        """completed -> cancelled is refused."""
        store.create_run(make_run("r1"))
        store.append("r1", 0, typical_events())
        assert_refused(store, "r1", [NewEvent(EventType.RUN_CANCELLED)], match="completed")

    def test_a_batch_with_an_invalid_event_writes_none_of_it(self, store: Store) -> None:
        """If the 3rd event of a batch is invalid, events 1 and 2 are not written either."""
        store.create_run(make_run("r1"))
        batch = [
            NewEvent(EventType.RUN_STARTED),
            NewEvent(EventType.STEP_STARTED, "load", 1, {"cache_key": "k"}),
            NewEvent(EventType.STEP_COMPLETED, "load", 1),  # no output recorded
            NewEvent(EventType.RUN_COMPLETED),
        ]
        assert_refused(store, "r1", batch, match="no output")
        assert store.get_run("r1").status is RunStatus.PENDING
        assert store.read_events("r1") == []
        assert store.executions("r1") == []

    def test_the_store_is_usable_after_a_refused_append(self, store: Store) -> None:
        """A refused batch leaves the version where it was; a valid one then appends."""
        store.create_run(make_run("r1"))
        assert_refused(
            store, "r1", [NewEvent(EventType.RUN_STARTED), NewEvent(EventType.RUN_FORKED)]
        )
        events = typical_events()
        assert store.append("r1", 0, events).version == len(events)

    # -- step executions ----------------------------------------------------------------

    def test_executions_after_a_typical_run(self, store: Store) -> None:
        """started -> input -> output -> completed gives one completed row per step."""
        store.create_run(make_run("r1"))
        events = typical_events(("load", "clean"))
        store.append("r1", 0, events)
        rows = store.executions("r1")
        assert [(x.step, x.attempt, x.status) for x in rows] == [
            ("load", 1, StepStatus.COMPLETED),
            ("clean", 1, StepStatus.COMPLETED),
        ]
        load = rows[0]
        started, _inputs, _output, completed = events[2:6]
        assert load.run_id == "r1"
        assert (load.cache_key, load.fingerprint) == ("ck-load", "load-fp")
        assert load.output == ValueRef.from_json(output_ref(0))
        assert dict(load.inputs) == {"n": "hash-n"}
        assert (load.started_at, load.finished_at) == (started.ts, completed.ts)
        assert _is_utc(load.started_at) and _is_utc(load.finished_at)
        assert load.duration_ms == pytest.approx(3000.0)
        assert (load.error, load.traceback, load.source_run_id) == (None, None, None)
        assert load.seq == 6  # the seq of step_completed
        assert rows[1].seq == 11

    def test_execution_rows_follow_the_attempt(self, store: Store) -> None:
        """While running, the row is running and gains inputs, then the output."""
        run = start_run(store)
        events = attempt_events("load")
        store.append(run.run_id, 1, events[:1])
        (row,) = store.executions(run.run_id)
        assert (row.status, row.output, dict(row.inputs)) == (StepStatus.RUNNING, None, {})
        store.append(run.run_id, 2, events[1:3])
        (row,) = store.executions(run.run_id)
        assert row.status is StepStatus.RUNNING
        assert dict(row.inputs) == {"n": "hash-n"}
        assert row.output is not None and row.finished_at is None

    def test_executions_after_a_retry(self, store: Store) -> None:
        """A retried step has a failed attempt 1 and a completed attempt 2."""
        run = start_run(store)
        store.append(run.run_id, 1, retry_events("load", error="boom"))
        first, second = store.executions(run.run_id)
        assert (first.step, first.attempt, first.status) == ("load", 1, StepStatus.FAILED)
        assert first.error == "boom"
        assert first.traceback is not None and first.traceback.startswith("Traceback")
        assert (second.step, second.attempt, second.status) == ("load", 2, StepStatus.COMPLETED)
        assert (second.error, second.traceback) == (None, None)
        assert second.output == ValueRef.from_json(output_ref(7))

    def test_a_failed_step_records_its_error(self, store: Store) -> None:
        """step_failed leaves a failed row with the error and traceback."""
        run = start_run(store)
        store.append(
            run.run_id,
            1,
            [
                NewEvent(EventType.STEP_STARTED, "load", 1, {}),
                NewEvent(EventType.STEP_FAILED, "load", 1, {"error": "bad", "traceback": "tb"}),
            ],
        )
        (row,) = store.executions(run.run_id)
        assert (row.status, row.error, row.traceback) == (StepStatus.FAILED, "bad", "tb")
        assert row.finished_at is not None

    def test_a_cached_step_is_attempt_0_with_its_source(self, store: Store) -> None:
        """step_cached gives an attempt-0 row with the output and the source run."""
        run = start_run(store)
        event = cached_event("load", source_run_id="run-src", output=[1, 2])
        store.append(run.run_id, 1, [event])
        (row,) = store.executions(run.run_id)
        assert (row.attempt, row.status, row.source_run_id) == (0, StepStatus.CACHED, "run-src")
        assert row.output == ValueRef.from_json(output_ref([1, 2]))
        assert (row.cache_key, row.fingerprint) == ("ck-load", "load-fp")
        assert dict(row.inputs) == {"n": "hash-n"}
        assert row.started_at == row.finished_at == event.ts
        assert row.duration_ms == 0.0

    def test_a_skipped_step_is_attempt_0(self, store: Store) -> None:
        """step_skipped gives an attempt-0 row with the reason as its error."""
        run = start_run(store)
        store.append(run.run_id, 1, [skipped_event("clean", reason="upstream failed")])
        (row,) = store.executions(run.run_id)
        assert (row.attempt, row.status, row.error) == (0, StepStatus.SKIPPED, "upstream failed")
        assert row.output is None

    def test_step_scheduled_writes_no_execution(self, store: Store) -> None:
        """Scheduling is logged as an event but creates no execution row."""
        run = start_run(store)
        store.append(run.run_id, 1, [NewEvent(EventType.STEP_SCHEDULED, "load")])
        assert store.executions(run.run_id) == []
        assert store.get_run(run.run_id).version == 2

    def test_executions_are_in_the_order_they_last_changed(self, store: Store) -> None:
        """Rows are ordered by the seq of the event that last changed them."""
        run = start_run(store)
        a, b = attempt_events("a"), attempt_events("b")
        store.append(run.run_id, 1, [a[0], b[0], b[1], b[2], b[3], a[1], a[2], a[3]])
        rows = store.executions(run.run_id)
        assert [x.step for x in rows] == ["b", "a"]
        assert [x.seq for x in rows] == [6, 9]

    # -- cache candidates ---------------------------------------------------------------

    def test_cache_candidates_are_executions_with_outputs(self, store: Store) -> None:
        """Completed and cached rows of the flow with a wanted fingerprint, by cache key."""
        populate(store)
        got = store.cache_candidates("flow", ["load-fp", "clean-fp"])
        assert set(got) == {"ck-load", "ck-clean", "ck-clean-2"}
        for key, row in got.items():
            assert row.cache_key == key
            assert row.status in (StepStatus.COMPLETED, StepStatus.CACHED)
            assert row.output is not None
            assert row.fingerprint in ("load-fp", "clean-fp")
            assert store.get_run(row.run_id).flow == "flow"
            assert row in store.executions(row.run_id)

    def test_cache_candidates_filter_by_fingerprint(self, store: Store) -> None:
        """Only rows whose code fingerprint is one of those asked for."""
        populate(store)
        got = store.cache_candidates("flow", ["clean-fp"])
        assert set(got) == {"ck-clean", "ck-clean-2"}
        assert all(x.step == "clean" for x in got.values())
        assert store.cache_candidates("flow", []) == {}
        assert store.cache_candidates("flow", ["no-such-fp"]) == {}

    def test_cache_candidates_filter_by_flow(self, store: Store) -> None:
        """Rows of another flow are not candidates, even with the same fingerprint."""
        store.create_run(make_run("mine", flow="flow"))
        store.create_run(make_run("theirs", flow="other"))
        store.append("theirs", 0, typical_events(("load",)))
        assert store.cache_candidates("flow", ["load-fp"]) == {}
        assert set(store.cache_candidates("other", ["load-fp"])) == {"ck-load"}

    def test_cache_candidates_skip_rows_without_usable_output(self, store: Store) -> None:
        """Running (even with an output recorded), failed and skipped rows are left out."""
        run = start_run(store)
        store.append(
            run.run_id,
            1,
            [
                *attempt_events("running", cache_key="k-running")[:3],  # output, not completed
                NewEvent(
                    EventType.STEP_STARTED, "failed", 1, {"cache_key": "k-f", "fingerprint": "fp"}
                ),
                NewEvent(EventType.STEP_FAILED, "failed", 1, {"error": "x"}),
                skipped_event("skipped"),
            ],
        )
        assert store.cache_candidates("flow", ["running-fp", "fp", "skipped-fp"]) == {}

    def test_cache_candidates_include_cached_rows(self, store: Store) -> None:
        """A cached row (attempt 0) is a candidate too."""
        run = start_run(store)
        store.append(run.run_id, 1, [cached_event("load", source_run_id="src")])
        (row,) = store.cache_candidates("flow", ["load-fp"]).values()
        assert (row.attempt, row.status, row.source_run_id) == (0, StepStatus.CACHED, "src")

    def test_cache_candidates_give_one_row_per_key(self, store: Store) -> None:
        """Several runs with the same cache key give one candidate for that key."""
        for run_id in ("r1", "r2", "r3"):
            store.create_run(make_run(run_id))
            store.append(run_id, 0, typical_events(("load",)))
        got = store.cache_candidates("flow", ["load-fp"])
        assert list(got) == ["ck-load"]
        assert got["ck-load"].run_id in {"r1", "r2", "r3"}

    def test_cache_hits_are_the_candidates_in_lean_form(self, store: Store) -> None:
        """cache_hits gives, per key, the output and origin of a cache candidate."""
        populate(store)
        store.create_run(make_run("again"))
        store.append("again", 0, [NewEvent(EventType.RUN_STARTED)])
        store.append("again", 1, [cached_event("load", source_run_id="src", cache_key="ck-again")])
        fingerprints = ["load-fp", "clean-fp", "no-such-fp"]
        candidates = store.cache_candidates("flow", fingerprints)
        hits = store.cache_hits("flow", fingerprints)
        assert set(hits) == set(candidates)
        for key, hit in hits.items():
            # Several rows may offer a key: the hit is one of them, with its output.
            (row,) = [
                x
                for x in store.executions(hit.run_id)
                if x.cache_key == key and x.status.has_output and x.output == hit.output
            ]
            assert hit.origin == (row.source_run_id or row.run_id)
        only = hits["ck-again"]  # the one row with this key: a cached row from "src"
        assert (only.run_id, only.source_run_id, only.origin) == ("again", "src", "src")
        assert store.cache_hits("flow", []) == {}
        assert store.cache_hits("other-flow", fingerprints) == {}

    # -- state_at -----------------------------------------------------------------------

    def test_state_at_every_version_matches_what_was_written(self, store: Store) -> None:
        """state_at(v) is the run and executions as they were right after version v."""
        run = make_run("r1")
        store.create_run(run)
        events = [
            NewEvent(EventType.RUN_STARTED),
            *retry_events("load"),
            cached_event("clean"),
            skipped_event("report"),
            NewEvent(EventType.RUN_FAILED, payload={"error": "x"}),
            NewEvent(EventType.RUN_STARTED),
            *attempt_events("report"),
            NewEvent(EventType.RUN_COMPLETED),
        ]
        seen = [(store.get_run("r1"), store.executions("r1"))]
        for event in events:
            record = store.append("r1", len(seen) - 1, [event])
            seen.append((record, store.executions("r1")))
        for version, (record, rows) in enumerate(seen):
            state = store.state_at("r1", version)
            assert state.run == record, version
            assert _executions_of(state.executions) == rows, version

    def test_state_at_equals_folding_the_events(self, store: Store) -> None:
        """state_at(v) equals fold() of the events up to v."""
        ids = populate(store)
        for run_id in ids:
            run = store.get_run(run_id)
            for version in range(run.version + 1):
                state = store.state_at(run_id, version)
                expected = fold(run, store.read_events(run_id, upto=version))
                assert state.run == expected.run
                assert state.executions == expected.executions

    def test_state_at_defaults_to_now(self, store: Store) -> None:
        """Without a version, state_at is the current state."""
        populate(store)
        state = store.state_at("r-retried")
        assert state.run == store.get_run("r-retried")
        assert _executions_of(state.executions) == store.executions("r-retried")

    # -- frames -------------------------------------------------------------------------

    @staticmethod
    def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
        return {str(name): str(dtype) for name, dtype in frame.dtypes.items()}

    def test_runs_frame_columns_and_dtypes(self, store: Store) -> None:
        """runs_frame has exactly RUN_COLUMNS, populated or empty."""
        assert self._dtypes(store.runs_frame()) == frames.RUN_COLUMNS
        populate(store)
        assert self._dtypes(store.runs_frame()) == frames.RUN_COLUMNS
        assert self._dtypes(store.runs_frame(flow="nothing")) == frames.RUN_COLUMNS

    def test_events_frame_columns_and_dtypes(self, store: Store) -> None:
        """events_frame has exactly EVENT_COLUMNS, populated or empty."""
        assert self._dtypes(store.events_frame()) == frames.EVENT_COLUMNS
        populate(store)
        assert self._dtypes(store.events_frame()) == frames.EVENT_COLUMNS
        assert self._dtypes(store.events_frame("r-pending")) == frames.EVENT_COLUMNS

    def test_steps_frame_columns_and_dtypes(self, store: Store) -> None:
        """steps_frame has exactly STEP_COLUMNS, populated or empty."""
        populate(store)
        assert self._dtypes(store.steps_frame("r-retried")) == frames.STEP_COLUMNS
        assert self._dtypes(store.steps_frame("r-pending")) == frames.STEP_COLUMNS

    def test_runs_frame_matches_the_records(self, store: Store) -> None:
        """runs_frame holds what list_runs returns, row for row, with every filter."""
        populate(store)
        cases: list[dict[str, Any]] = [
            {},
            {"flow": "flow"},
            {"status": ["completed", "failed"]},
            {"thread_id": "t1"},
            {"limit": 3},
        ]
        for filters in cases:
            expected = frames.runs_frame(store.list_runs(**filters))
            pd.testing.assert_frame_equal(store.runs_frame(**filters), expected)

    def test_runs_frame_values(self, store: Store) -> None:
        """A few cells: params as dicts, UTC timestamps, durations, errors."""
        populate(store)
        frame = store.runs_frame().set_index("run_id")
        assert frame.loc["r-retried", "params"] == {"n": 5, "name": "ü"}
        assert frame.loc["r-failed", "error"] == "step 'load' failed"
        assert frame.loc["r-fork", "fork_from_version"] == 7
        assert frame.loc["r-done", "duration_s"] == pytest.approx(11.0)
        assert frame["started_at"].isna()["r-pending"]
        assert frame.loc["r-done", "created_at"] == pd.Timestamp(T0 + dt.timedelta(minutes=1))

    def test_runs_frame_refuses_an_unknown_status(self, store: Store) -> None:
        """runs_frame validates the status filter like list_runs."""
        with pytest.raises(ParameterError, match="nope"):
            store.runs_frame(status="nope")

    def test_events_frame_matches_the_records(self, store: Store) -> None:
        """events_frame holds what read_events returns, for one run or all."""
        ids = populate(store)
        pd.testing.assert_frame_equal(
            store.events_frame(), frames.events_frame(store.read_events())
        )
        for run_id in ids:
            pd.testing.assert_frame_equal(
                store.events_frame(run_id), frames.events_frame(store.read_events(run_id))
            )

    def test_steps_frame_matches_the_records(self, store: Store) -> None:
        """steps_frame holds what executions returns."""
        for run_id in populate(store):
            pd.testing.assert_frame_equal(
                store.steps_frame(run_id), frames.steps_frame(store.executions(run_id))
            )

    def test_steps_frame_values(self, store: Store) -> None:
        """A few cells: attempts, statuses, output columns, source run."""
        populate(store)
        frame = store.steps_frame("r-cached")
        assert list(frame["step"]) == ["load", "clean"]
        assert list(frame["attempt"]) == [0, 1]
        assert list(frame["status"]) == ["cached", "completed"]
        assert list(frame["output_codec"]) == ["json", "json"]
        assert frame.loc[0, "source_run_id"] == "r-done"
        assert frame.loc[0, "output_hash"] == "hash-0"

    # -- values -------------------------------------------------------------------------

    def test_an_inline_json_value_writes_no_blob(self, store: Store) -> None:
        """A small JSON value lives in its ref: no blob, and it loads back."""
        from nbflow.values import encode

        value = {"rows": 3, "name": TRICKY_PAYLOAD["unicode"]}
        encoded = encode(value, step="s")
        assert encoded.ref.is_inline
        assert store.put_value(encoded) == encoded.ref
        assert store.list_blobs() == []
        assert store.load_value(encoded.ref) == value

    @staticmethod
    def _blob_values() -> Iterator[tuple[str, Any, set[Codec]]]:
        import numpy as np

        frame = pd.DataFrame(
            {"x": [1, 2, 3], "name": ["a", "é", None], "y": [0.5, float("nan"), 2.0]}
        )
        yield "dataframe", frame, {Codec.ARROW, Codec.ARROW_IPC}
        yield "array", np.arange(12, dtype="float64").reshape(3, 4), {Codec.NUMPY}
        yield "pickle", _Opaque("thing", (1, 2, 3)), {Codec.PICKLE}

    @staticmethod
    def _assert_same_value(got: Any, expected: Any) -> None:
        import numpy as np

        if isinstance(expected, pd.DataFrame):
            pd.testing.assert_frame_equal(got, expected)
        elif isinstance(expected, np.ndarray):
            np.testing.assert_array_equal(got, expected)
            assert got.dtype == expected.dtype
        else:
            assert got == expected

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_a_blob_value_writes_one_blob(self, store: Store, kind: str) -> None:
        """A DataFrame, array or pickled object is stored as one blob under its hash."""
        from nbflow.values import encode

        _, value, codecs = next(v for v in self._blob_values() if v[0] == kind)
        encoded = encode(value, step="s")
        assert encoded.ref.codec in codecs
        assert not store.has_blob(encoded.ref.hash)
        assert store.put_value(encoded) == encoded.ref
        assert store.has_blob(encoded.ref.hash)
        (blob,) = store.list_blobs()
        assert (blob.hash, blob.codec, blob.size) == (
            encoded.ref.hash,
            encoded.ref.codec,
            encoded.ref.size,
        )
        assert _is_utc(blob.created_at)

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_an_equal_value_is_stored_once(self, store: Store, kind: str) -> None:
        """Putting an equal value again (from another step) writes no new blob."""
        import copy

        from nbflow.values import encode

        _, value, _ = next(v for v in self._blob_values() if v[0] == kind)
        first = store.put_value(encode(value, step="s1"))
        second = store.put_value(encode(copy.deepcopy(value), step="s2"))
        assert second.hash == first.hash
        assert len(store.list_blobs()) == 1

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_a_blob_value_loads_back_equal(self, store: Store, kind: str) -> None:
        """load_value returns a value equal to the one stored."""
        from nbflow.values import encode

        _, value, _ = next(v for v in self._blob_values() if v[0] == kind)
        ref = store.put_value(encode(value, step="s"))
        self._assert_same_value(store.load_value(ref), value)

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_read_encoded_gives_the_stored_form(self, store: Store, kind: str) -> None:
        """read_encoded hands back a value as stored, not decoded: put into another store
        it is the same value under the same hash. A missing blob is a StoreError."""
        from nbflow.store.memory import MemoryStore
        from nbflow.values import encode

        _, value, _ = next(v for v in self._blob_values() if v[0] == kind)
        encoded = encode(value, step="s")
        ref = store.put_value(encoded)
        stored = store.read_encoded(ref)
        assert (stored.ref.codec, stored.ref.hash, stored.ref.size) == (
            ref.codec,
            ref.hash,
            ref.size,
        )
        if encoded.data is not None:
            assert stored.data == encoded.data
        other = MemoryStore()
        assert other.put_value(stored).hash == ref.hash
        self._assert_same_value(other.load_value(ref), value)
        inline = encode(7, step="s").ref
        assert store.read_encoded(inline).ref == inline
        missing = ValueRef(Codec.NUMPY, "0123456789abcdef" * 2, 10, "ndarray")
        with pytest.raises(StoreError, match=missing.hash):
            store.read_encoded(missing)

    def test_different_values_are_different_blobs(self, store: Store) -> None:
        """Each distinct value gets its own blob."""
        from nbflow.values import encode

        refs = [store.put_value(encode(v, step="s")) for _, v, _ in self._blob_values()]
        assert len({r.hash for r in refs}) == 3
        assert {b.hash for b in store.list_blobs()} == {r.hash for r in refs}

    def test_loading_a_missing_blob_is_a_store_error(self, store: Store) -> None:
        """A ref whose blob is absent raises StoreError naming the hash."""
        ref = ValueRef(Codec.NUMPY, "0123456789abcdef" * 2, 10, "ndarray")
        with pytest.raises(StoreError, match=ref.hash):
            store.load_value(ref)

    def test_an_untrusted_store_refuses_only_pickles(self, store: Store) -> None:
        """With ``trust=False``, a pickled output is refused with an error naming the step
        and the run; DataFrames and arrays load as usual."""
        from nbflow.errors import UntrustedStoreError
        from nbflow.values import encode

        refs = {
            kind: (store.put_value(encode(v, step="s")), v) for kind, v, _ in self._blob_values()
        }
        store.trust = False
        ref, _ = refs.pop("pickle")
        with pytest.raises(UntrustedStoreError, match=r"step 's' in run r-1 .*trust=True"):
            store.load_output(ref, step="s", run_id="r-1")
        with pytest.raises(UntrustedStoreError, match=ref.hash):
            store.load_value(ref)
        for ref, value in refs.values():
            self._assert_same_value(store.load_output(ref, step="s", run_id="r-1"), value)

    # -- SQL ----------------------------------------------------------------------------

    def test_sql_select_returns_a_dataframe(self, store: Store) -> None:
        """A SELECT over the runs table returns a DataFrame of its rows."""
        populate(store)
        frame = store.sql("SELECT run_id, status, version FROM runs ORDER BY run_id")
        assert isinstance(frame, pd.DataFrame)
        expected = sorted((r.run_id, r.status.value, r.version) for r in store.list_runs())
        assert list(frame.itertuples(index=False, name=None)) == expected

    def test_sql_takes_parameters(self, store: Store) -> None:
        """Positional parameters are bound, not pasted."""
        populate(store)
        frame = store.sql("SELECT run_id FROM runs WHERE status = ? ORDER BY run_id", ["failed"])
        assert list(frame["run_id"]) == ["r-failed"]
        quoted = store.sql("SELECT count(*) AS n FROM runs WHERE run_id = ?", ["x' OR '1'='1"])
        assert int(quoted["n"].iloc[0]) == 0

    def test_sql_sees_events_and_step_executions(self, store: Store) -> None:
        """The events table holds every event; step_executions every finished attempt
        (an attempt still running is in the events, and in ``executions``)."""
        ids = populate(store)
        n_events = store.sql("SELECT count(*) AS n FROM events")["n"].iloc[0]
        assert int(n_events) == len(store.read_events())
        n_rows = store.sql("SELECT count(*) AS n FROM step_executions")["n"].iloc[0]
        finished = [
            x for r in ids for x in store.executions(r) if x.status is not StepStatus.RUNNING
        ]
        assert int(n_rows) == len(finished)
        steps = store.sql(
            "SELECT step, attempt, status FROM step_executions WHERE run_id = ? ORDER BY seq",
            ["r-retried"],
        )
        assert list(steps.itertuples(index=False, name=None)) == [
            ("load", 1, "failed"),
            ("load", 2, "completed"),
            ("clean", 1, "completed"),
        ]

    @pytest.mark.parametrize(
        "query",
        [
            "INSERT INTO runs (run_id) VALUES ('x')",
            "DELETE FROM runs",
            "UPDATE runs SET status = 'completed'",
            "CREATE TABLE evil (a INTEGER)",
            "DROP TABLE runs",
            "SELECT 1; SELECT 2",
            "SELECT 1; DROP TABLE runs",
            "EXPLAIN ANALYZE DELETE FROM events",
        ],
    )
    def test_sql_is_read_only(self, store: Store, query: str) -> None:
        """Writes and multiple statements are refused with StoreError; nothing changes."""
        ids = populate(store)
        before = [snapshot(store, r) for r in ids], store.read_events()
        with pytest.raises(StoreError, match=r"read-only|one statement"):
            store.sql(query)
        assert ([snapshot(store, r) for r in ids], store.read_events()) == before
        assert int(store.sql("SELECT count(*) AS n FROM runs")["n"].iloc[0]) == len(ids)

    def test_sql_names_the_statement_it_refuses(self, store: Store) -> None:
        """The refusal says what kind of statement was refused."""
        with pytest.raises(StoreError, match="read-only: a DELETE statement"):
            store.sql("DELETE FROM runs")
        with pytest.raises(StoreError, match="this query has 2"):
            store.sql("SELECT 1; SELECT 2")

    @pytest.mark.parametrize("query", ["SELECT * FROM no_such_table", "SELEKT 1"])
    def test_a_failing_query_is_a_store_error(self, store: Store, query: str) -> None:
        """A query that does not parse or fails raises StoreError, not a driver error."""
        with pytest.raises(StoreError):
            store.sql(query)
