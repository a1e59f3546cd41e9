"""Time travel, forks, lineage and diff, on every store backend."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from waiting import GENEROUS

import nbflow as nf
from nbflow.errors import OutputNotAvailableError, RunError, UnknownStepError
from nbflow.store.fold import fold


class Calls:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        nf.untracked(self)  # instrumentation, not an input: part of no step's key

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def statuses(run) -> dict[str, str]:
    return run.step_states()


def churn(store: nf.Store, calls: Calls, name: str = "churn") -> nf.Flow:
    flow = nf.Flow(name, store=store)

    @flow.step
    def raw(n: int = 6):
        calls.hit("raw")
        return pd.DataFrame({"x": np.arange(n), "y": np.arange(n) * 1.5})

    @flow.step
    def features(raw, window: int = 2):
        calls.hit("features")
        return raw.assign(rolling=raw["y"].rolling(window, min_periods=1).mean())

    @flow.step
    def model(features):
        calls.hit("model")
        return float(features["rolling"].sum())

    @flow.step
    def report(model, raw):
        calls.hit("report")
        return {"model": model, "rows": len(raw)}

    return flow


# -- versions and time travel --------------------------------------------------------------------


def test_versions_list_every_state_change(store):
    run = churn(store, Calls()).run()
    versions = run.versions
    assert list(versions.columns) == [
        "version",
        "recorded_at",
        "type",
        "step",
        "status",
        "steps_completed",
    ]
    assert versions["version"].is_monotonic_increasing
    assert versions["version"].iloc[-1] == run.version
    assert versions["type"].iloc[0] == "run_started"
    assert versions["status"].iloc[-1] == "completed"
    assert versions["steps_completed"].iloc[-1] == 4
    assert "step_scheduled" not in set(versions["type"])
    assert str(versions["recorded_at"].dtype) == "datetime64[us, UTC]"


def test_at_every_version_equals_replaying_the_events(store):
    run = churn(store, Calls()).run()
    events = store.read_events(run.id)
    for version in range(run.version + 1):
        view = run.at(version)
        replay = fold(store.get_run(run.id), events[:version])
        assert view.version == version
        assert view.status == replay.run.status.value
        assert view.step_states() == {s: r.status.value for s, r in replay.current.items()}
        assert len(view.steps) == len(replay.executions)


def test_at_shows_outputs_as_they_stood(store):
    run = churn(store, Calls()).run()
    versions = run.versions
    features_done = int(
        versions.query("type == 'step_completed' and step == 'features'")["version"].iloc[0]
    )
    before = run.at(features_done - 1)
    after = run.at(features_done)
    assert "features" not in before.outputs and "raw" in before.outputs
    pd.testing.assert_frame_equal(after["features"], run["features"])
    assert before.status == "running"
    assert run.at(run.version).status == "completed"
    with pytest.raises(OutputNotAvailableError, match="'features' has no output .* at version"):
        before["features"]
    with pytest.raises(UnknownStepError):
        before["nope"]


def test_at_a_version_that_does_not_exist_is_refused(store):
    run = churn(store, Calls()).run()
    with pytest.raises(RunError, match=f"has versions 0 to {run.version}"):
        run.at(run.version + 1)
    with pytest.raises(RunError, match="has versions 0 to"):
        run.at(-1)
    assert run.at(0).step_states() == {}
    assert run.at(0).status == "pending"


# -- forks ---------------------------------------------------------------------------------------


def test_fork_from_a_step_reuses_upstream_and_recomputes_the_rest(store):
    calls = Calls()
    flow = churn(store, calls)
    parent = flow.run()
    blobs = {b.hash for b in store.list_blobs()}
    fork = parent.fork(from_step="features", window=3)
    assert fork.status == "completed"
    assert fork.parent_id == parent.id
    assert fork.params == {"n": 6, "window": 3}
    assert statuses(fork) == {
        "raw": "cached",
        "features": "completed",
        "model": "completed",
        "report": "completed",
    }
    assert calls.counts == {"raw": 1, "features": 2, "model": 2, "report": 2}
    raw_row = fork.steps.set_index("step").loc["raw"]
    assert raw_row["source_run_id"] == parent.id
    assert fork.ref("raw").hash == parent.ref("raw").hash
    new_blobs = {b.hash for b in store.list_blobs()} - blobs
    assert parent.ref("raw").hash not in new_blobs  # reused by reference
    record = store.get_run(fork.id)
    assert record.fork_from_step == "features"
    assert record.fork_from_version == parent.version
    assert record.thread_id == parent.id


def test_a_fork_begins_with_run_forked_and_leaves_the_parent_alone(store):
    flow = churn(store, Calls())
    parent = flow.run()
    parent_events = parent.events
    fork = parent.fork(from_step="model")
    events = fork.events
    assert events["type"].iloc[0] == "run_forked"
    payload = events["payload"].iloc[0]
    assert payload["parent_run_id"] == parent.id and payload["from_step"] == "model"
    reused = events.query("type == 'step_cached'")
    assert set(reused["step"]) == {"raw", "features"}
    assert all(p["reused_from"] == parent.id for p in reused["payload"])
    pd.testing.assert_frame_equal(parent.events, parent_events)


def test_two_forks_of_one_run_never_conflict(store):
    parent = churn(store, Calls()).run()
    a = parent.fork(from_step="features", window=3)
    b = parent.fork(from_step="features", window=4)
    assert {a.status, b.status} == {"completed"}
    assert a["model"] != b["model"]
    assert store.get_run(parent.id).version == parent.version


def test_a_fork_recomputes_even_where_a_cached_result_exists(store):
    calls = Calls()
    parent = churn(store, calls).run()
    fork = parent.fork(from_step="features")
    assert statuses(fork)["features"] == "completed"
    assert calls["features"] == 2
    cached = parent.fork(from_step="features", cache=True)
    assert statuses(cached)["features"] == "cached"
    assert calls["features"] == 2


def test_a_fork_uses_the_flows_current_definitions(store):
    calls = Calls()
    flow = churn(store, calls)
    parent = flow.run()

    @flow.step
    def model(features):
        return float(features["rolling"].max())  # changed

    fork = parent.fork(from_step="model")
    assert fork["model"] == pytest.approx(parent["raw"]["y"].rolling(2, min_periods=1).mean().max())


def test_fork_of_a_fork_shares_the_thread(store):
    parent = churn(store, Calls()).run()
    child = parent.fork(from_step="features", window=3)
    grandchild = child.fork(from_step="model")
    assert grandchild.parent_id == child.id
    assert store.get_run(grandchild.id).thread_id == parent.id
    assert grandchild.ref("features").hash == child.ref("features").hash
    assert grandchild.steps.set_index("step").loc["raw", "source_run_id"] == parent.id
    thread = nf.runs(store, thread_id=parent.id)
    assert set(thread["run_id"]) == {parent.id, child.id, grandchild.id}


def test_fork_at_the_first_and_the_last_version(store):
    calls = Calls()
    parent = churn(store, calls).run()
    first = parent.fork(at_version=0)
    assert set(statuses(first).values()) == {"completed"}
    assert calls["raw"] == 2
    last = parent.fork(at_version=parent.version)
    assert set(statuses(last).values()) == {"cached"}
    assert store.get_run(last.id).fork_from_version == parent.version


def test_fork_at_a_version_reuses_what_was_completed_then(store):
    parent = churn(store, Calls()).run()
    versions = parent.versions
    v = int(versions.query("type == 'step_completed' and step == 'features'")["version"].iloc[0])
    fork = parent.fork(at_version=v)
    states = statuses(fork)
    assert states["raw"] == "cached" and states["features"] == "cached"
    assert states["model"] == "completed" and states["report"] == "completed"


def test_fork_from_failure_runs_the_rest(store):
    broken = {"on": True}
    flow = nf.Flow("fail", store=store)

    @flow.step
    def load():
        return 10

    @flow.step
    def divide(load):
        return load / 0 if broken["on"] else load / 2

    failed = flow.run(raise_on_error=False)
    broken["on"] = False
    fork = failed.fork(at_version=failed.version)
    assert fork.status == "completed"
    assert statuses(fork) == {"load": "cached", "divide": "completed"}
    assert failed.status == "failed"


def test_fork_without_running_then_resume(store):
    calls = Calls()
    parent = churn(store, calls).run()
    fork = parent.fork(from_step="model", run=False)
    assert fork.status == "pending"
    assert calls["model"] == 1
    fork.resume()
    assert fork.status == "completed"
    assert calls["model"] == 2
    assert statuses(fork)["raw"] == "cached"


def test_forking_a_run_that_is_still_running_is_refused(store):
    gate = threading.Event()
    flow = nf.Flow("slow", store=store)

    @flow.step
    def wait():
        gate.wait(GENEROUS)
        return 1

    run = flow.run(background=True)
    try:
        with pytest.raises(RunError, match="still (running|pending)"):
            run.fork(from_step="wait")
    finally:
        gate.set()
        run.wait(GENEROUS)


def test_fork_needs_exactly_one_fork_point(store):
    parent = churn(store, Calls()).run()
    with pytest.raises(RunError, match="give from_step=.*or at_version"):
        parent.fork()
    with pytest.raises(RunError, match="not both"):
        parent.fork(from_step="raw", at_version=1)
    with pytest.raises(UnknownStepError, match="'featurs'.*'features'"):
        parent.fork(from_step="featurs")
    with pytest.raises(RunError, match="cannot fork at"):
        parent.fork(at_version=parent.version + 5)
    with pytest.raises(nf.errors.ParameterError, match="'windw' is not a run parameter"):
        parent.fork(from_step="raw", windw=3)


def test_forking_an_unknown_run_is_refused(store):
    with pytest.raises(nf.errors.UnknownRunError, match="no run with id 'nope'"):
        nf.get_run("nope", store=store)


def test_a_fork_read_back_from_the_store_finds_its_flow(store):
    flow = churn(store, Calls())
    parent_id = flow.run().id
    fork = nf.get_run(parent_id, store=store).fork(from_step="report")
    assert fork.status == "completed"


# -- lineage -------------------------------------------------------------------------------------


def test_lineage_lists_the_thread_with_fork_points(store):
    flow = churn(store, Calls())
    root = flow.run()
    a = root.fork(from_step="features", window=3)
    b = a.fork(at_version=a.version)
    flow.run(n=3)  # another thread
    lineage = flow.lineage(b)
    assert list(lineage["run_id"]) == [root.id, a.id, b.id]
    assert list(lineage["depth"]) == [0, 1, 2]
    assert lineage.set_index("run_id").loc[a.id, "fork_from_step"] == "features"
    assert lineage.set_index("run_id").loc[b.id, "fork_from_version"] == a.version
    tree = flow.lineage(root, as_tree=True)
    assert set(tree.edges) == {(root.id, a.id), (a.id, b.id)}
    runs = flow.runs()
    for column in ("parent_run_id", "fork_from_step", "fork_from_version", "thread_id"):
        assert column in runs.columns


# -- diff ----------------------------------------------------------------------------------------


def test_diff_says_what_changed_per_step(store):
    flow = churn(store, Calls())
    a = flow.run()
    b = a.fork(from_step="features", window=3)
    d = nf.diff(a, b)
    assert list(d.columns[:6]) == [
        "step",
        "status_a",
        "status_b",
        "code_changed",
        "inputs_changed",
        "output_changed",
    ]
    by_step = d.set_index("step")
    assert not by_step.loc["raw", "output_changed"]
    assert by_step.loc["features", "output_changed"]
    assert not by_step.loc["features", "code_changed"]
    assert not by_step.loc["features", "inputs_changed"]
    assert by_step.loc["model", "inputs_changed"]
    assert by_step.loc["features", "shape_a"] == (6, 3)
    assert by_step.loc["features", "rows_changed"] > 0
    assert d.attrs["params"] == {"window": (2, 3)}


def test_diff_sees_code_changes_and_new_columns(store):
    flow = churn(store, Calls())
    a = flow.run()

    @flow.step
    def features(raw, window: int = 2):
        return raw.assign(rolling=raw["y"].rolling(window, min_periods=1).mean(), flag=True)

    b = flow.run()
    row = nf.diff(a, b).set_index("step").loc["features"]
    assert row["code_changed"]
    assert row["columns_added"] == ["flag"]
    assert row["columns_removed"] == []
    assert row["rows_changed"] == 0  # the shared columns kept their values


def test_diff_of_one_step_gives_the_changed_rows(store):
    flow = churn(store, Calls())
    a = flow.run()
    b = flow.run(n=8)
    rows = nf.diff(a, b, step="raw")
    assert set(rows["_change"]) == {"added"}
    assert list(rows.index) == [6, 7]
    c = a.fork(from_step="features", window=4)
    changed = nf.diff(a, c, step="features")
    assert set(changed["_change"]) == {"changed"}
    assert "rolling_a" in changed.columns
    scalar = nf.diff(a, c, step="model")
    assert scalar["equal"].iloc[0] is False or not scalar["equal"].iloc[0]
    with pytest.raises(UnknownStepError):
        nf.diff(a, c, step="nope")
