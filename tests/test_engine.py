"""The engine end to end, on every store backend (the ``store`` fixture)."""

from __future__ import annotations

import threading
import time

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from waiting import GENEROUS

import nbflow as nf
from nbflow.errors import (
    CycleError,
    DefinitionError,
    MissingDependencyError,
    OutputNotAvailableError,
    ParameterError,
    RunError,
    StepFailed,
    UnknownRunError,
    UnknownStepError,
)
from nbflow.store.duckdb.store import DuckDBStore


class Calls:
    """Counts step executions (marked untracked: not part of any step's key)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        nf.untracked(self)  # instrumentation, not an input: part of no step's key

    def hit(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def statuses(run: nf.Run) -> dict[str, str]:
    """The status of each step's latest row."""
    steps = run.steps.sort_values("seq")
    return dict(zip(steps["step"], steps["status"], strict=True))


def make_flow(store: nf.Store, calls: Calls, name: str = "f") -> nf.Flow:
    flow = nf.Flow(name, store=store)

    @flow.step
    def raw(n: int = 5):
        calls.hit("raw")
        return list(range(n))

    @flow.step
    def doubled(raw):
        calls.hit("doubled")
        return [2 * x for x in raw]

    @flow.step
    def total(doubled, offset: int = 0):
        calls.hit("total")
        return sum(doubled) + offset

    return flow


# -- definition ----------------------------------------------------------------------------


def test_the_graph_is_built_once_per_definition_and_shared_frozen(store):
    flow = make_flow(store, Calls())
    graph = flow.graph()
    assert flow.graph() is graph and flow.graph(["doubled"]) is flow.graph(["doubled"])
    with pytest.raises(nx.NetworkXError, match="Frozen"):
        flow.dag.add_edge("total", "raw")

    @flow.step
    def doubled(raw):  # redefined: a new graph
        return raw

    assert flow.graph() is not graph and list(flow.graph().order) == ["raw", "doubled", "total"]


def test_parameters_named_like_steps_are_dependencies(store):
    flow = make_flow(store, Calls())
    assert set(flow.dag.edges) == {("raw", "doubled"), ("doubled", "total")}
    assert flow.params == {"n": 5, "offset": 0}
    run = flow.run()
    assert run.status == "completed"
    assert run["total"] == 20
    assert run["raw"] == [0, 1, 2, 3, 4]


def test_run_parameters_override_defaults_and_are_recorded(store):
    flow = make_flow(store, Calls())
    run = flow.run(n=3, offset=100)
    assert run["total"] == 106
    assert run.params == {"n": 3, "offset": 100}
    assert flow.runs()["params"].iloc[0] == {"n": 3, "offset": 100}


def test_unknown_run_parameter_is_refused_with_a_suggestion(store):
    flow = make_flow(store, Calls())
    with pytest.raises(ParameterError, match=r"'ofset' is not a run parameter.*'offset'"):
        flow.run(ofset=1)
    assert flow.runs().empty


def test_a_parameter_value_that_is_not_json_is_refused(store):
    flow = make_flow(store, Calls())
    with pytest.raises(ParameterError, match="run parameter 'n'.*JSON"):
        flow.run(n=object())


def test_missing_dependency_names_it_and_suggests_close_steps(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def features():
        return 1

    @flow.step
    def model(featurs):
        return featurs

    with pytest.raises(MissingDependencyError) as info:
        flow.run()
    message = str(info.value)
    assert "step 'model'" in message and "'featurs'" in message and "'features'" in message


def test_a_cycle_is_refused_naming_its_steps(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def a(c):
        return c

    @flow.step
    def b(a):
        return a

    @flow.step
    def c(b):
        return b

    with pytest.raises(CycleError) as info:
        flow.run()
    assert set(info.value.cycle) == {"a", "b", "c"}
    assert "cycle" in str(info.value)
    assert all(name in str(info.value) for name in "abc")


def test_step_names_must_be_identifiers(store):
    flow = nf.Flow("f", store=store)
    with pytest.raises(DefinitionError, match="'my step' is not a valid Python identifier"):
        flow.step(name="my step")(lambda: 1)
    with pytest.raises(DefinitionError, match="'class' is not a valid Python identifier"):
        flow.step(name="class")(lambda: 1)


def test_a_step_named_like_a_run_parameter_is_refused(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def window():
        return 3

    @flow.step
    def model(window_size: int = 3, window: int = 7):
        return window

    with pytest.raises(DefinitionError, match="step 'window' has the same name as a run parameter"):
        flow.run()


def test_conflicting_defaults_of_one_parameter_are_refused(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def a(window: int = 7):
        return window

    @flow.step
    def b(window: int = 30):
        return window

    with pytest.raises(DefinitionError, match="'window' has default 7 in step 'a' but 30"):
        flow.run()


def test_variadic_parameters_are_refused(store):
    flow = nf.Flow("f", store=store)
    with pytest.raises(DefinitionError, match=r"takes \*args"):

        @flow.step
        def bad(*args):
            return args


def test_redefining_a_step_replaces_it(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def value():
        return 1

    assert flow.run()["value"] == 1

    @flow.step
    def value():
        return 2

    assert list(flow.steps) == ["value"]
    assert flow.run()["value"] == 2


def test_decorated_function_stays_callable(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def add(x: int = 1):
        return x + 1

    assert add(x=4) == 5


def test_step_options_are_validated(store):
    flow = nf.Flow("f", store=store)
    with pytest.raises(DefinitionError, match="retries must be a whole number"):
        flow.step(retries=-1)(lambda: 1)
    with pytest.raises(DefinitionError, match="timeout must be seconds > 0"):
        flow.step(timeout=0)(lambda: 1)


def test_depends_on_orders_steps_without_passing_values(store):
    order: list[str] = []
    flow = nf.Flow("f", store=store)

    @flow.step
    def setup():
        order.append("setup")
        return "ready"

    @flow.step(depends_on=["setup"])
    def work():
        order.append("work")
        return 1

    flow.run()
    assert order == ["setup", "work"]
    assert ("setup", "work") in flow.dag.edges


def test_targets_run_only_what_they_need(store):
    calls = Calls()
    flow = make_flow(store, calls)
    run = flow.run(targets=["doubled"])
    assert set(statuses(run)) == {"raw", "doubled"}
    assert calls["total"] == 0
    with pytest.raises(UnknownStepError, match="no step 'totl'.*'total'"):
        flow.run(targets=["totl"])


# -- events and frames ---------------------------------------------------------------------------


def test_events_tell_the_story_of_a_run(store):
    run = make_flow(store, Calls()).run()
    events = run.events
    assert list(events["seq"]) == list(range(1, len(events) + 1))
    types = list(events["type"])
    assert types[0] == "run_started" and types[-1] == "run_completed"
    for step in ("raw", "doubled", "total"):
        kinds = list(events.loc[events["step"] == step, "type"])
        assert kinds == [
            "step_scheduled",
            "step_started",
            "step_input_recorded",
            "step_output_recorded",
            "step_completed",
        ]
    assert str(events["ts"].dtype) == "datetime64[us, UTC]"
    assert run.version == len(events)


def test_steps_frame_has_one_row_per_attempt(store):
    run = make_flow(store, Calls()).run()
    steps = run.steps
    for column in (
        "run_id",
        "step",
        "attempt",
        "status",
        "cache_key",
        "started_at",
        "finished_at",
        "duration_ms",
        "error",
    ):
        assert column in steps.columns
    assert list(steps["step"]) == ["raw", "doubled", "total"]
    assert set(steps["status"]) == {"completed"}
    assert (steps["attempt"] == 1).all()
    assert (steps["duration_ms"] >= 0).all()
    assert str(steps["started_at"].dtype) == "datetime64[us, UTC]"


def test_module_level_frames_and_lookups(store):
    flow = make_flow(store, Calls())
    run = flow.run()
    runs = nf.runs(store, flow="f")
    for column in (
        "run_id",
        "flow",
        "status",
        "params",
        "parent_run_id",
        "created_at",
        "started_at",
        "finished_at",
        "duration_s",
        "error",
    ):
        assert column in runs.columns
    assert runs["run_id"].tolist() == [run.id]
    assert runs["duration_s"].iloc[0] >= 0
    assert nf.get_run(run.id, store=store)["total"] == 20
    assert len(nf.events(run.id, store=store)) == len(run.events)
    assert nf.runs(store, status="failed").empty
    with pytest.raises(UnknownRunError, match="no run with id 'nope'"):
        nf.get_run("nope", store=store)


def test_runs_are_listed_newest_first(store):
    flow = make_flow(store, Calls())
    ids = [flow.run(n=i).id for i in range(3)]
    assert flow.runs()["run_id"].tolist() == ids[::-1]
    assert flow.runs(limit=2)["run_id"].tolist() == ids[:0:-1]


# -- caching -------------------------------------------------------------------------------------


def test_rerunning_an_unchanged_flow_executes_nothing_and_writes_no_blob(store):
    calls = Calls()
    flow = nf.Flow("f", store=store)

    @flow.step
    def frame():
        calls.hit("frame")
        return pd.DataFrame({"x": np.arange(1000)})

    @flow.step
    def stats(frame):
        calls.hit("stats")
        return frame.describe()

    first = flow.run()
    blobs = len(store.list_blobs())
    second = flow.run()
    assert calls.counts == {"frame": 1, "stats": 1}
    assert set(statuses(second).values()) == {"cached"}
    assert len(store.list_blobs()) == blobs
    assert (second.steps["attempt"] == 0).all()
    assert set(second.steps["source_run_id"]) == {first.id}
    pd.testing.assert_frame_equal(second["stats"], first["stats"])
    assert "step_cached" in set(second.events["type"])


def test_a_fully_cached_rerun_is_one_commit_of_cached_events_and_takes_no_lease(store, monkeypatch):
    flow = make_flow(store, Calls())
    first = flow.run()
    writes: list[tuple[str, int]] = []

    def spy(name, count=lambda *a: 0):
        real = getattr(store, name)

        def call(*args):
            writes.append((name, count(*args)))
            return real(*args)

        monkeypatch.setattr(store, name, call)

    spy("claim")
    spy("create_run")
    spy("append", lambda run_id, version, events: len(events))
    spy("record_run", lambda run, events: len(events))
    second = flow.run()
    # The run is written once, finished: started, 3 cached, completed; no lease.
    assert writes == [("record_run", 5)]
    assert list(second.events["type"]) == ["run_started"] + ["step_cached"] * 3 + ["run_completed"]
    assert store.lease(second.id) is None and second.status == "completed"
    assert second["total"] == first["total"]
    # A run that executes anything is created first, takes the lease and records its
    # steps as scheduled.
    writes.clear()
    third = flow.run(offset=1)
    assert [name for name, _ in writes[:2]] == ["create_run", "claim"]
    assert "record_run" not in {name for name, _ in writes}
    kinds = list(third.events["type"])
    assert kinds[:3] == ["run_started", "step_cached", "step_cached"]
    assert kinds[3:5] == ["step_scheduled", "step_started"]
    assert store.lease(third.id) is None  # given back when it ended


def test_the_stored_definition_follows_a_constant_a_step_reads(store):
    # The graph is the same object (no step was redefined); the definition is rebuilt
    # only because a fingerprint changed, and reused while none does.
    namespace: dict = {"FACTOR": 2}
    exec("def scaled():\n    return FACTOR * 10\n", namespace)
    flow = nf.Flow("const", store=store)
    flow.step(name="scaled")(namespace["scaled"])
    first = flow.run()
    same = flow.run()
    namespace["FACTOR"] = 3
    changed = flow.run()
    assert first.record.flow_fingerprint == same.record.flow_fingerprint
    assert changed.record.flow_fingerprint != first.record.flow_fingerprint
    assert changed["scaled"] == 30
    old = store.get_flow("const", first.record.flow_fingerprint)
    new = store.get_flow("const", changed.record.flow_fingerprint)
    assert old.steps[0].fingerprint != new.steps[0].fingerprint


def test_changing_one_step_recomputes_it_and_exactly_its_descendants(store):
    calls = Calls()
    flow = nf.Flow("f", store=store)

    @flow.step
    def a():
        calls.hit("a")
        return 1

    @flow.step
    def b(a):
        calls.hit("b")
        return a + 1

    @flow.step
    def c(b):
        calls.hit("c")
        return b + 1

    @flow.step
    def d(a):
        calls.hit("d")
        return a * 10

    flow.run()

    @flow.step
    def b(a):
        calls.hit("b")
        return a + 2  # changed

    run = flow.run()
    assert statuses(run) == {"a": "cached", "d": "cached", "b": "completed", "c": "completed"}
    assert calls.counts == {"a": 1, "b": 2, "c": 2, "d": 1}
    assert run["c"] == 4


def test_a_changed_parameter_recomputes_only_the_steps_that_read_it(store):
    calls = Calls()
    flow = make_flow(store, calls)
    flow.run()
    run = flow.run(offset=5)
    assert statuses(run) == {"raw": "cached", "doubled": "cached", "total": "completed"}
    assert run["total"] == 25


def test_an_identical_recomputed_output_keeps_downstream_cached(store):
    calls = Calls()
    flow = nf.Flow("f", store=store)

    @flow.step(cache=False)
    def source():
        calls.hit("source")
        return [1, 2, 3]

    @flow.step
    def downstream(source):
        calls.hit("downstream")
        return sum(source)

    flow.run()
    run = flow.run()
    assert statuses(run) == {"source": "completed", "downstream": "cached"}
    assert calls.counts == {"source": 2, "downstream": 1}


def test_force_recomputes_everything_or_the_named_steps(store):
    calls = Calls()
    flow = make_flow(store, calls)
    flow.run()
    flow.run(force=True)
    assert calls.counts == {"raw": 2, "doubled": 2, "total": 2}
    run = flow.run(force=["doubled"])
    assert statuses(run) == {"raw": "cached", "doubled": "completed", "total": "cached"}
    with pytest.raises(UnknownStepError):
        flow.run(force=["nope"])


def test_cache_is_shared_across_runs_of_the_same_flow_name_only(store):
    calls = Calls()
    make_flow(store, calls, name="one").run()
    run = make_flow(store, calls, name="two").run()
    assert set(statuses(run).values()) == {"completed"}


def test_version_overrides_the_code_fingerprint(store):
    calls = Calls()
    flow = nf.Flow("f", store=store)

    @flow.step(version="1")
    def value():
        calls.hit("value")
        return 1

    flow.run()

    @flow.step(version="1")
    def value():
        calls.hit("value")
        return 999  # code changed, version did not: the cached value is kept

    assert flow.run()["value"] == 1
    assert calls["value"] == 1


# -- failures, retries, timeouts -----------------------------------------------------------------


def failing_flow(store: nf.Store, calls: Calls, broken: dict[str, bool]) -> nf.Flow:
    flow = nf.Flow("f", store=store)

    @flow.step
    def load():
        calls.hit("load")
        return 10

    @flow.step
    def divide(load):
        calls.hit("divide")
        if broken["on"]:
            return load / 0
        return load / 2

    @flow.step
    def report(divide):
        calls.hit("report")
        return f"result {divide}"

    @flow.step
    def side(load):
        calls.hit("side")
        return load + 1

    return flow


def test_a_failing_step_fails_the_run_and_skips_its_descendants(store):
    calls = Calls()
    broken = {"on": True}
    flow = failing_flow(store, calls, broken)
    with pytest.raises(StepFailed) as info:
        flow.run()
    assert info.value.step == "divide"
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "step 'divide' failed" in str(info.value)
    run = flow.latest_run()
    assert run is not None
    assert run.status == "failed"
    assert "step 'divide' failed" in run.error and "ZeroDivisionError" in run.error
    assert statuses(run) == {
        "load": "completed",
        "divide": "failed",
        "report": "skipped",
        "side": "completed",
    }
    row = run.steps.set_index("step").loc["divide"]
    assert "ZeroDivisionError" in row["error"]
    assert "Traceback" in row["traceback"] and "load / 0" in row["traceback"]
    skipped = run.steps.set_index("step").loc["report"]
    assert skipped["attempt"] == 0 and "divide" in skipped["error"]
    with pytest.raises(OutputNotAvailableError, match="'report' has no output.*skipped"):
        run["report"]


def test_raise_on_error_false_returns_the_failed_run(store):
    flow = failing_flow(store, Calls(), {"on": True})
    run = flow.run(raise_on_error=False)
    assert run.status == "failed"
    assert run["side"] == 11


def test_resume_continues_from_the_checkpoints(store):
    calls = Calls()
    broken = {"on": True}
    flow = failing_flow(store, calls, broken)
    run = flow.run(raise_on_error=False)
    broken["on"] = False
    resumed = run.resume()
    assert resumed.id == run.id
    assert resumed.status == "completed"
    assert resumed["report"] == "result 5.0"
    assert calls.counts == {"load": 1, "divide": 2, "side": 1, "report": 1}
    divide_rows = resumed.steps.query("step == 'divide'")
    assert divide_rows["attempt"].tolist() == [1, 2]
    assert divide_rows["status"].tolist() == ["failed", "completed"]
    with pytest.raises(RunError, match="only failed or interrupted runs"):
        resumed.resume()


def test_resume_of_a_run_read_back_from_the_store_finds_the_flow(store):
    broken = {"on": True}
    flow = failing_flow(store, Calls(), broken)
    run_id = flow.run(raise_on_error=False).id
    broken["on"] = False
    again = nf.get_run(run_id, store=store).resume()
    assert again.status == "completed"


def test_retries_record_each_attempt(store):
    attempts = {"n": 0}
    flow = nf.Flow("f", store=store)

    @flow.step(retries=2, retry_delay=0.01)
    def flaky():
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError(f"try {attempts['n']}")
        return "ok"

    run = flow.run()
    assert run["flaky"] == "ok"
    rows = run.steps
    assert rows["attempt"].tolist() == [1, 2, 3]
    assert rows["status"].tolist() == ["failed", "failed", "completed"]
    assert "ConnectionError: try 1" in rows["error"].iloc[0]
    retried = run.events.query("type == 'step_retried'")
    assert retried["attempt"].tolist() == [1, 2]
    assert retried["payload"].iloc[0]["delay_s"] == 0.01


def test_retries_exhausted_fail_the_step(store):
    flow = nf.Flow("f", store=store)

    @flow.step(retries=1)
    def always():
        raise ValueError("nope")

    run = flow.run(raise_on_error=False)
    assert run.steps["status"].tolist() == ["failed", "failed"]
    assert run.events["type"].tolist().count("step_retried") == 1


def test_a_step_over_its_timeout_fails(store):
    flow = nf.Flow("f", store=store)

    @flow.step(timeout=0.2)
    def slow():
        time.sleep(3)
        return 1

    with pytest.raises(StepFailed, match="did not finish within its timeout of 0.2 s"):
        flow.run()


def test_an_output_that_cannot_be_stored_fails_the_step_naming_it(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def lock():
        return threading.Lock()

    with pytest.raises(StepFailed) as info:
        flow.run()
    assert "output of step 'lock'" in str(info.value)
    assert "_thread.lock" in str(info.value)


def test_a_completion_is_committed_before_a_dependent_starts(store):
    flow = nf.Flow("f", store=store)
    seen: dict[str, str] = {}

    @flow.step
    def first():
        return 1

    @flow.step
    def second(first):
        run_id = store.list_runs(flow="f", limit=1)[0].run_id
        rows = {x.step: x.status.value for x in store.executions(run_id)}
        seen.update(rows)
        return first

    flow.run(durability="sync")  # (async: see test_durability.py)
    assert seen["first"] == "completed"
    assert seen["second"] == "running"


# -- executors -----------------------------------------------------------------------------------


def test_threads_executor_runs_independent_steps_at_once(store):
    barrier = threading.Barrier(2, timeout=GENEROUS)
    flow = nf.Flow("f", store=store)

    @flow.step
    def left():
        barrier.wait()  # only passes if `right` runs at the same time
        return "l"

    @flow.step
    def right():
        barrier.wait()
        return "r"

    @flow.step
    def both(left, right):
        return left + right

    run = flow.run(executor="threads", max_workers=2)
    assert run["both"] == "lr"


def test_threads_executor_handles_failures_and_skips(store):
    flow = failing_flow(store, Calls(), {"on": True})
    run = flow.run(executor="threads", raise_on_error=False)
    assert statuses(run)["report"] == "skipped"
    assert statuses(run)["side"] == "completed"


def test_unknown_executor_is_refused(store):
    flow = make_flow(store, Calls())
    with pytest.raises(ParameterError, match="unknown executor 'gpu'"):
        flow.run(executor="gpu")


# -- background runs and cancelling ---------------------------------------------------------------


def test_background_run_returns_at_once_and_can_be_waited_for(store):
    gate = threading.Event()
    flow = nf.Flow("f", store=store)

    @flow.step
    def waits():
        gate.wait(GENEROUS)
        return 42

    run = flow.run(background=True)
    assert run.status in ("pending", "running")
    gate.set()
    assert run.wait(GENEROUS).status == "completed"
    assert run["waits"] == 42


def test_cancelling_a_background_run_stops_it(store):
    gate = threading.Event()
    flow = nf.Flow("f", store=store)

    @flow.step
    def first():
        gate.wait(GENEROUS)
        return 1

    @flow.step
    def second(first):
        return first + 1

    run = flow.run(background=True)
    run.cancel()
    gate.set()
    run.wait(GENEROUS)
    assert run.status == "cancelled"
    with pytest.raises(RunError, match="already finished"):
        run.cancel()


# -- values --------------------------------------------------------------------------------------


def test_dataframe_outputs_are_queryable_tables(store):
    flow = nf.Flow("f", store=store)

    @flow.step
    def table():
        return pd.DataFrame({"k": ["a", "b", "a"], "v": [1, 2, 3]})

    run = flow.run()
    frame = run["table"]
    assert frame["v"].sum() == 6
    if isinstance(store, DuckDBStore):  # only DuckDB keeps a DataFrame as a native table
        out = store.sql(
            f"SELECT k, sum(v) AS s FROM {run.table_name('table')} GROUP BY k ORDER BY k"
        )
        assert out["s"].tolist() == [4, 2]
    else:  # memory: an Arrow table in Python; PostgreSQL: Arrow IPC bytes
        assert store.table_name(run.ref("table")) is None
        with pytest.raises(RunError, match=r"only the DuckDB store does.*run\['table'\]"):
            run.table_name("table")


def test_outputs_mapping_is_lazy_and_complete(store):
    run = make_flow(store, Calls()).run()
    assert sorted(run.outputs) == ["doubled", "raw", "total"]
    assert run.outputs["total"] == 20
    assert "raw" in run
    with pytest.raises(UnknownStepError):
        run["nope"]


def test_editing_a_returned_frame_in_place_does_not_change_the_checkpoint(store):
    kept: dict[str, pd.DataFrame] = {}
    flow = nf.Flow("f", store=store)

    @flow.step
    def frame():
        kept["frame"] = pd.DataFrame({"x": np.arange(5.0)})
        return kept["frame"]

    run = flow.run()
    kept["frame"].loc[0, "x"] = 99.0
    assert run["frame"]["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
