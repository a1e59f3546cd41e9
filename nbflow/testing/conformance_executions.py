"""The store contract: status transitions, step executions, cache hits, state at a version."""

from __future__ import annotations

import pytest

from nbflow.store.base import Store
from nbflow.store.fold import fold
from nbflow.store.records import (
    EventType,
    NewEvent,
    RunStatus,
    StepStatus,
    ValueRef,
)
from nbflow.testing.builders import (
    Clock,
    assert_refused,
    attempt_events,
    cached_event,
    executions_of,
    is_utc,
    make_run,
    output_ref,
    populate,
    retry_events,
    skipped_event,
    start_run,
    typical_events,
)


class ExecutionConformance:
    """Status transitions, step executions, cache candidates, state at a version."""

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
        assert is_utc(load.started_at) and is_utc(load.finished_at)
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
            assert executions_of(state.executions) == rows, version

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
        assert executions_of(state.executions) == store.executions("r-retried")
