"""Background runs: the Run comes back at once and reflects progress (every backend)."""

from __future__ import annotations

import threading

import pytest
from waiting import GENEROUS

import nbflow as nf
from nbflow.errors import RunError, StepFailed


def gated_flow(store: nf.Store, gate: threading.Event, started: threading.Event) -> nf.Flow:
    flow = nf.Flow("bg", store=store)

    @flow.step
    def first():
        return 1

    @flow.step
    def slow(first):
        started.set()
        gate.wait(GENEROUS)
        return first + 1

    return flow


def test_a_background_run_is_listed_as_running_while_it_runs(store):
    gate, started = threading.Event(), threading.Event()
    flow = gated_flow(store, gate, started)
    run = flow.run(background=True)
    assert started.wait(GENEROUS)
    try:
        assert run.status == "running"
        assert run.id in set(nf.runs(store, status="running")["run_id"])
        assert run.id in set(flow.runs(status="running")["run_id"])
        # The handle shows progress: `first` is done, `slow` is running.
        latest = run.steps.sort_values("seq").drop_duplicates("step", keep="last")
        assert dict(zip(latest["step"], latest["status"], strict=True)) == {
            "first": "completed",
            "slow": "running",
        }
        with pytest.raises(TimeoutError, match="still running"):
            run.wait(timeout=0.05)
    finally:
        gate.set()
    assert run.wait(GENEROUS).status == "completed"
    assert run.id not in set(nf.runs(store, status="running")["run_id"])
    assert run.id in set(nf.runs(store, status="completed")["run_id"])
    assert run["slow"] == 2


def test_cancelling_a_finished_run_is_refused(store):
    flow = nf.Flow("done", store=store)

    @flow.step
    def one():
        return 1

    run = flow.run(background=True).wait(GENEROUS)
    assert run.status == "completed"
    with pytest.raises(RunError, match="already finished \\(completed\\); nothing to cancel"):
        run.cancel()
    with pytest.raises(RunError, match="already finished"):
        nf.get_run(run.id, store).cancel()  # a handle read back from the store too


def test_a_failing_background_run_raises_from_wait(store):
    flow = nf.Flow("bad", store=store)

    @flow.step
    def boom():
        raise ValueError("nope")

    run = flow.run(background=True)
    with pytest.raises(StepFailed, match="step 'boom' failed"):
        run.wait(GENEROUS)
    assert run.status == "failed"
    with pytest.raises(RunError, match="already finished \\(failed\\)"):
        run.cancel()
