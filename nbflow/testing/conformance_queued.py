"""The store contract for queued attempts: ``step_queued`` until a worker starts a step."""

from __future__ import annotations

from nbflow.store.base import Store
from nbflow.store.problems import Problem, ProblemKind
from nbflow.store.records import EventType, NewEvent, StepStatus
from nbflow.testing.builders import Clock, assert_refused, start_run


def queued_events(step: str = "load", clock: Clock | None = None) -> list[NewEvent]:
    """A step handed to a parallel executor: scheduled, queued, its inputs recorded."""
    clock = clock or Clock()
    return [
        NewEvent(EventType.STEP_SCHEDULED, step, None, {}, clock()),
        NewEvent(EventType.STEP_QUEUED, step, 1, {"cache_key": "k", "fingerprint": "fp"}, clock()),
        NewEvent(EventType.STEP_INPUT_RECORDED, step, 1, {"inputs": {"n": "hash-n"}}, clock()),
    ]


def view_problems(store: Store) -> list[Problem]:
    """What the integrity check finds, but the flow definitions these runs never stored."""
    return [p for p in store.check() if p.kind is not ProblemKind.RUN_WITHOUT_FLOW]


class QueuedConformance:
    """Queued attempts: held in the events, started, failed unstarted, closed by a run end."""

    def test_a_queued_attempt_is_held_then_starts(self, store: Store) -> None:
        """step_queued gives a queued row with no start time; step_started starts it."""
        run = start_run(store)
        run = store.append(run.run_id, run.version, queued_events())
        (row,) = store.executions(run.run_id)
        assert (row.status, row.started_at, row.cache_key) == (StepStatus.QUEUED, None, "k")
        assert dict(row.inputs) == {"n": "hash-n"}
        assert store.get_run(run.run_id).status.value == "running"
        started = NewEvent(EventType.STEP_STARTED, "load", 1)
        run = store.append(run.run_id, run.version, [started])
        (row,) = store.executions(run.run_id)
        assert (row.status, row.started_at) == (StepStatus.RUNNING, started.ts)
        assert (row.cache_key, row.fingerprint) == ("k", "fp")  # kept from step_queued
        assert view_problems(store) == []

    def test_a_queued_attempt_may_fail_without_starting(self, store: Store) -> None:
        """A step whose task never started (it could not be sent) fails from queued."""
        run = start_run(store)
        run = store.append(run.run_id, run.version, queued_events())
        run = store.append(
            run.run_id, run.version, [NewEvent(EventType.STEP_FAILED, "load", 1, {"error": "x"})]
        )
        (row,) = store.executions(run.run_id)
        assert (row.status, row.started_at, row.error) == (StepStatus.FAILED, None, "x")
        assert view_problems(store) == []

    def test_a_queued_attempt_cannot_complete_or_be_queued_again(self, store: Store) -> None:
        """Only a started attempt completes; a queued one is not queued, cached or started
        under another attempt number."""
        run = start_run(store)
        run = store.append(run.run_id, run.version, queued_events())
        for bad in (
            NewEvent(EventType.STEP_OUTPUT_RECORDED, "load", 1, {}),
            NewEvent(EventType.STEP_COMPLETED, "load", 1),
            NewEvent(EventType.STEP_QUEUED, "load", 2),
            NewEvent(EventType.STEP_STARTED, "load", 2),
            NewEvent(EventType.STEP_CACHED, "load", 0),
            NewEvent(EventType.STEP_SCHEDULED, "load"),
        ):
            assert_refused(store, run.run_id, [bad])

    def test_a_run_that_ends_closes_its_queued_attempts(self, store: Store) -> None:
        """Cancelled with a step still queued: the attempt is failed, saying so."""
        run = start_run(store)
        run = store.append(
            run.run_id, run.version, [*queued_events(), NewEvent(EventType.RUN_CANCELLED)]
        )
        (row,) = store.executions(run.run_id)
        assert row.status is StepStatus.FAILED
        assert "while this step was queued" in (row.error or "")
        assert view_problems(store) == []
