"""The store contract: flows, runs, appending events and optimistic concurrency."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from nbflow.errors import (
    DuplicateRunError,
    InvalidTransitionError,
    ParameterError,
    StaleVersionError,
    UnknownRunError,
)
from nbflow.store.base import Store
from nbflow.store.records import (
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
)
from nbflow.testing.builders import (
    T0,
    TRICKY_PAYLOAD,
    TRICKY_STEP,
    Clock,
    attempt_events,
    cached_event,
    is_utc,
    make_flow,
    make_run,
    populate,
    snapshot,
    start_run,
    typical_events,
)


class RecordConformance:
    """The store contract: flows, runs, appending events and optimistic concurrency."""

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
        assert is_utc(got)

    def test_create_run_refuses_a_duplicate_id(self, store: Store) -> None:
        """A second run with the same id is refused, and the first is kept."""
        first = make_run("dup", params={"which": "first"})
        store.create_run(first)
        with pytest.raises(ValueError, match="dup"):
            store.create_run(make_run("dup", params={"which": "second"}))
        assert store.get_run("dup") == first
        assert len(store.list_runs()) == 1

    def test_record_run_writes_a_new_run_with_its_events_as_append_would(
        self, store: Store
    ) -> None:
        """record_run = create_run + append at version 0: same run, events and rows."""
        clock = Clock()
        events = [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            cached_event("load", clock=clock),
            cached_event("clean", clock=clock, output=7),
            NewEvent(EventType.RUN_COMPLETED, ts=clock()),
        ]

        def run(run_id: str) -> RunRecord:
            return make_run(run_id, params={"n": 3}, created_at=T0, thread_id="thread")

        returned = store.record_run(run("at-once"), events)
        store.create_run(run("in-two"))
        expected = store.append("in-two", 0, events)
        assert returned == store.get_run("at-once")
        assert returned == dataclasses.replace(expected, run_id="at-once")
        assert (returned.status, returned.version) == (RunStatus.COMPLETED, 4)
        assert returned.started_at == events[0].ts and returned.finished_at == events[-1].ts

        def same(rows: list[Any]) -> list[Any]:
            return [dataclasses.replace(r, run_id="-") for r in rows]

        assert same(store.read_events("at-once")) == same(store.read_events("in-two"))
        assert same(store.executions("at-once")) == same(store.executions("in-two"))
        # The next writer goes on from the version it returned.
        assert store.get_run("at-once").version == 4

    def test_record_run_of_an_unfinished_run_can_be_appended_to(self, store: Store) -> None:
        """A run recorded with its first events is an ordinary run from then on."""
        run = store.record_run(make_run("r1"), [NewEvent(EventType.RUN_STARTED, ts=T0)])
        assert (run.status, run.version) == (RunStatus.RUNNING, 1)
        done = store.append("r1", 1, [NewEvent(EventType.RUN_COMPLETED, ts=T0)])
        assert (done.status, done.version) == (RunStatus.COMPLETED, 2)

    def test_record_run_without_events_creates_a_pending_run(self, store: Store) -> None:
        """With no events, record_run is create_run."""
        run = make_run("r1")
        assert store.record_run(run, []) == run
        assert store.get_run("r1") == run

    def test_record_run_refuses_a_duplicate_id_and_writes_nothing(self, store: Store) -> None:
        """A taken id: DuplicateRunError; the run there keeps its events and rows."""
        start_run(store, make_run("dup", params={"which": "first"}))
        before = snapshot(store, "dup")
        events = [NewEvent(EventType.RUN_STARTED, ts=T0), cached_event("load")]
        with pytest.raises(DuplicateRunError, match="dup"):
            store.record_run(make_run("dup", params={"which": "second"}), events)
        assert snapshot(store, "dup") == before

    def test_record_run_refuses_events_that_do_not_follow(self, store: Store) -> None:
        """Events that do not start the run: InvalidTransitionError, and no run at all."""
        with pytest.raises(InvalidTransitionError):
            store.record_run(make_run("r1"), [NewEvent(EventType.RUN_COMPLETED, ts=T0)])
        with pytest.raises(UnknownRunError):
            store.get_run("r1")
        assert store.list_runs() == []

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
        assert is_utc(event.ts)
        assert store.get_run("r1").started_at == ts
        assert is_utc(store.get_run("r1").started_at)

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

    def test_an_execution_keeps_the_parameters_it_read(self, store: Store) -> None:
        """A step's row holds the parameters its step_started (or step_cached) event
        names, typed as given, in every view; None when the event names none."""
        run = start_run(store)
        clock = Clock()
        read = {"min_amount": 60.0, "n": 5, "name": "ü", "ids": [1, 2], "on": True}
        events = [
            *attempt_events("load", clock=clock, params=read),
            cached_event("clean", clock=clock, params={"n": 5}),
            cached_event("other", clock=clock),
        ]
        last = store.append(run.run_id, run.version, events)
        want = {"load": read, "clean": {"n": 5}, "other": None}
        at = store.state_at(run.run_id, last.version)
        for rows in (store.executions(run.run_id), list(at.executions.values())):
            assert {r.step: r.params for r in rows} == want
        (load,) = [r for r in store.executions(run.run_id) if r.step == "load"]
        assert load.params is not None and type(load.params["min_amount"]) is float
        frame = store.steps_frame(run.run_id)
        assert dict(zip(frame["step"], frame["params"], strict=True)) == want

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
