"""Timestamps and states are true: a step handed to a busy executor is ``queued``, and is
``running`` (with its ``started_at``) only once a worker really starts it."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from waiting import GENEROUS, wait_for
from widget_comms import comms  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.api import progress
from nbflow.widgets.live import LiveRun


def gated_flow(store, names=("a", "b", "c", "d")):
    """Independent steps that each run until the test opens their gate."""
    flow = nf.Flow("gated", store=store)
    gates = {name: threading.Event() for name in names}

    def make(name):
        def step():
            assert gates[name].wait(GENEROUS), f"gate {name} never opened"
            return name

        step.__name__ = step.__qualname__ = name
        return step

    for name in names:
        flow.step(make(name))
    return flow, gates


def dask_client(request: pytest.FixtureRequest):
    """A client of a small local cluster, closed with the test."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    )
    client = distributed.Client(cluster)
    request.addfinalizer(cluster.close)
    request.addfinalizer(client.close)
    return client


def latest(run: nf.Run) -> pd.DataFrame:
    return run.steps.sort_values("seq").drop_duplicates("step", keep="last").set_index("step")


def states(run: nf.Run) -> dict[str, str]:
    return latest(run)["status"].to_dict()


def test_with_two_workers_two_steps_run_and_the_others_are_queued(store):
    flow, gates = gated_flow(store)
    run = flow.run(executor="threads", max_workers=2, background=True, progress=False)
    try:
        seen = wait_for(
            lambda: (s := states(run)) and sorted(s.values()).count("running") == 2 and s,
            "two steps running",
        )
        assert sorted(seen.values()) == ["queued", "queued", "running", "running"]
        frame = latest(run)
        queued = [n for n, s in seen.items() if s == "queued"]
        running = [n for n, s in seen.items() if s == "running"]
        assert frame.loc[queued, "started_at"].isna().all()  # not started: no start time
        assert frame.loc[running, "started_at"].notna().all()
        # The first running step ends: one queued step starts, the other waits on.
        gates[running[0]].set()
        wait_for(lambda: states(run)[running[0]] == "completed", "the first step done")
        now = wait_for(
            lambda: (s := states(run)) and list(s.values()).count("running") == 2 and s,
            "a queued step started",
        )
        assert list(now.values()).count("queued") == 1
    finally:
        for gate in gates.values():
            gate.set()
    run.wait(GENEROUS)
    assert run.status == "completed"
    rows = latest(run)
    # At no instant did more than two steps run: the recorded intervals say so too.
    moments = sorted(
        [(t, 1) for t in rows["started_at"]] + [(t, -1) for t in rows["finished_at"]],
        key=lambda m: (m[0], m[1]),
    )
    at_once = peak = 0
    for _, change in moments:
        at_once += change
        peak = max(peak, at_once)
    assert peak == 2
    # Each step was queued first, then started, then completed.
    events = run.events
    for name in gates:
        kinds = list(events.loc[events["step"] == name, "type"])
        assert kinds.index("step_queued") < kinds.index("step_started")
        assert kinds.index("step_started") < kinds.index("step_completed")


def test_the_live_dag_shows_queued_steps_as_queued(store, comms):
    flow, gates = gated_flow(store, ("a", "b", "c"))
    views: list[LiveRun] = []

    def factory(run, graph, done):
        views.append(LiveRun(run, graph, done, interval=0.0))
        return views[-1]

    try:
        with progress.progress_view(factory):
            run = flow.run(executor="threads", max_workers=2, background=True)
        shown = wait_for(
            lambda: (
                views
                and (s := dict(views[0].dag.states))
                and sorted(s.values()) == ["queued", "running", "running"]
                and s
            ),
            "two steps running and one queued on the live DAG",
        )
        waiting = next(n for n, s in shown.items() if s == "queued")
        assert f"queued {waiting}" in views[0].label.value
    finally:
        for gate in gates.values():
            gate.set()
    run.wait(GENEROUS)
    wait_for(lambda: views[0].follower.finished, "the live view's last redraw")
    assert views[0].dag.states == dict.fromkeys("abc", "completed")
    views[0].close()


def test_an_inline_step_is_never_queued(store):
    flow, gates = gated_flow(store, ("a",))
    gates["a"].set()
    run = flow.run(progress=False)
    assert "step_queued" not in set(run.events["type"])
    assert states(run) == {"a": "completed"}


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_steps_in_other_processes_are_queued_then_started(store, executor, request):
    flow = nf.Flow("elsewhere", store=store)

    @flow.step
    def one():
        return 1

    @flow.step
    def two(one):
        return one + 1

    where = dask_client(request) if executor == "dask" else executor
    run = flow.run(executor=where, progress=False)
    assert run["two"] == 2
    events = run.events
    for name in ("one", "two"):
        kinds = list(events.loc[events["step"] == name, "type"])
        assert kinds == [
            "step_scheduled",
            "step_queued",
            "step_input_recorded",
            "step_started",
            "step_output_recorded",
            "step_completed",
        ]
    rows = latest(run)
    assert (rows["started_at"] <= rows["finished_at"]).all()
    assert rows.loc["two", "started_at"] >= rows.loc["one", "finished_at"]
