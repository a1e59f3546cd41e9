"""The integrity part of the store contract: ``store.check()`` and its repair (mixed
into :class:`~nbflow.testing.StoreConformance`).

Damage is made through the backend's own ``_rebuild_views`` (views that disagree with
the events) and ``_delete`` (a value gone), so the tests need nothing backend-specific;
backends add their own tests for damage only raw access can do (a lost event, altered
bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from nbflow.errors import StaleVersionError
from nbflow.store.base import Store
from nbflow.store.check import Problem, ProblemKind
from nbflow.store.fold import RunState, fold
from nbflow.store.records import (
    EventType,
    NewEvent,
    RunStatus,
    StepExecution,
    StepStatus,
    ValueRef,
)
from nbflow.testing.builders import (
    Clock,
    Opaque,
    make_flow,
    make_run,
    populate,
    start_run,
    typical_events,
)
from nbflow.testing.conformance_leases import dead_pid, running_elsewhere

__all__ = ["CheckConformance", "run_with_outputs"]


def _blob_values() -> dict[str, Any]:
    """One value of each codec stored as a blob."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(
        {
            "x": [1, 2, 3],
            "name": ["a", "é", None],
            "cat": pd.Categorical(["u", "v", "u"], categories=["v", "u", "w"]),
            "t": pd.date_range("2024-03-30", periods=3, freq="D", tz="Europe/Paris"),
        }
    )
    return {
        "frame": frame,
        "series": pd.Series([1.5, float("nan")], name="s"),
        "half": pd.DataFrame({"h": np.array([1.0, 2.0], dtype=np.float16)}),  # arrow_ipc
        "array": np.arange(12, dtype="float64").reshape(3, 4),
        "scalar": np.int32(7),
        "pickle": Opaque("thing", (1, 2, 3)),
        "json": {"rows": list(range(2000))},  # too big to be inline: a json blob
    }


def run_with_outputs(
    store: Store, outputs: Mapping[str, Any], *, finish: bool = True, run_id: str | None = None
) -> str:
    """A run of a flow whose steps (named like ``outputs``' keys) each record the given
    output as a stored value; completed unless ``finish`` is false. Returns its id."""
    from nbflow.values import encode

    steps = tuple(outputs)
    flow = make_flow("values", "values-fp", steps)
    store.put_flow(flow)
    run = make_run(run_id, flow="values", flow_fingerprint="values-fp", steps=steps)
    store.create_run(run)
    store.claim(run.run_id)  # as a runner would (released with the run's last commit)
    clock = Clock()
    events = [NewEvent(EventType.RUN_STARTED, ts=clock())]
    for step, value in outputs.items():
        ref = store.put_value(encode(value, step=step))
        events += [
            NewEvent(EventType.STEP_STARTED, step, 1, {"fingerprint": f"{step}-fp"}, clock()),
            NewEvent(EventType.STEP_OUTPUT_RECORDED, step, 1, {"output": ref.to_json()}, clock()),
            NewEvent(EventType.STEP_COMPLETED, step, 1, {}, clock()),
        ]
    if finish:
        events.append(NewEvent(EventType.RUN_COMPLETED, ts=clock()))
    store.append(run.run_id, 0, events)
    return run.run_id


def _fold(store: Store, run_id: str) -> RunState:
    return fold(store._get_run(run_id), store.read_events(run_id))


def _damage(store: Store, run_id: str, **changes: Any) -> RunState:
    """Make the run's views disagree with its events; return the true state.

    ``run`` replaces fields of the runs row; ``drop`` removes an execution row (a
    ``(step, attempt)``); ``add`` adds one; ``change`` maps a key to field changes.
    """
    true = _fold(store, run_id)
    run = dataclasses.replace(true.run, **changes.get("run", {}))
    rows = dict(true.executions)
    if "drop" in changes:
        del rows[changes["drop"]]
    if "add" in changes:
        row = changes["add"]
        rows[(row.step, row.attempt)] = row
    for key, fields in changes.get("change", {}).items():
        rows[key] = dataclasses.replace(rows[key], **fields)
    store._rebuild_views(RunState(run, rows))
    store._states.pop(run_id, None)
    return true


def _kinds(problems: list[Problem]) -> list[ProblemKind]:
    return [p.kind for p in problems]


def _views(store: Store) -> tuple[Any, ...]:
    runs = sorted(store._list_runs(), key=lambda r: r.run_id)
    rows = {
        k: sorted(v, key=lambda x: (x.step, x.attempt)) for k, v in store._execution_rows().items()
    }
    return runs, store.read_events(), rows, sorted(b.hash for b in store.list_blobs())


class CheckConformance:
    """``store.check()``: sound stores check clean; damaged views are found and repaired
    from the events; lost values are reported, naming what they were."""

    # -- sound stores ---------------------------------------------------------------------

    def test_check_an_empty_store_is_sound(self, store: Store) -> None:
        """An empty store has no problems."""
        assert store.check() == []

    def test_check_a_store_with_runs_in_every_state_is_sound(self, store: Store) -> None:
        """Completed, retried, failed, cached, forked, pending and cancelled runs (and a
        fork left running mid-step) check clean, and checking writes nothing."""
        populate(store)
        before = _views(store)
        assert store.check() == []
        assert store.check(repair=True) == []
        assert _views(store) == before

    @pytest.mark.parametrize("verify", [True, False])
    def test_check_values_of_every_codec_clean(self, store: Store, verify: bool) -> None:
        """Stored DataFrames, series, arrays, numpy scalars, pickles and JSON blobs are
        found whole, their content hashing to their names."""
        run_with_outputs(store, _blob_values())
        assert store.check(verify_values=verify) == []

    def test_check_a_run_left_running_mid_step_is_sound(self, store: Store) -> None:
        """A run whose process stopped inside a step (started, output stored, never
        completed) is interrupted, not damaged."""
        run_with_outputs(store, {"a": _blob_values()["frame"]}, finish=False)
        run_id = run_with_outputs(store, {"b": [1, 2]}, finish=False)
        version = store._get_run(run_id).version
        store.append(
            run_id,
            version,
            [NewEvent(EventType.STEP_STARTED, "c", 1, {"fingerprint": "c-fp"})],
        )
        assert store.check() == []

    def test_check_a_run_whose_process_died_is_sound_and_left_alone(self, store: Store) -> None:
        """check() neither reports nor records (reaps) a run whose holder is gone."""
        run_id = running_elsewhere(store, pid=dead_pid())
        store.append(
            run_id, 1, [NewEvent(EventType.STEP_STARTED, "load", 1, {"fingerprint": "load-fp"})]
        )
        store.put_flow(make_flow())
        assert store.check() == []
        assert store._get_run(run_id).status is RunStatus.RUNNING

    def test_check_a_running_run_nobody_holds_is_found_and_repaired(self, store: Store) -> None:
        """A run recorded running whose lease is gone (its end was never recorded) is
        reported; the repair records it interrupted, after which it resumes."""
        run_id = start_run(store).run_id
        store._executing.discard(run_id)  # as if another process had left it so
        store.put_flow(make_flow())
        (problem,) = store.check()
        assert problem.kind is ProblemKind.RUN_WITHOUT_LEASE
        assert (problem.run_id, problem.repairable) == (run_id, True)
        assert "no process holds it" in problem.message
        (fixed,) = store.check(repair=True)
        assert fixed.repaired
        record = store._get_run(run_id)
        assert record.status is RunStatus.INTERRUPTED
        assert "check --repair" in (record.error or "")
        assert store.check() == []
        store.claim(run_id)
        resumed = store.append(run_id, record.version, [NewEvent(EventType.RUN_STARTED)])
        assert resumed.status is RunStatus.RUNNING

    def test_check_values_no_event_refers_to_are_not_problems(self, store: Store) -> None:
        """A value written by a step whose event never got committed is an orphan for gc,
        not damage."""
        from nbflow.values import encode

        store.put_value(encode(_blob_values()["pickle"], step="s"))
        assert store.check() == []

    # -- damaged views: found, and repaired from the events ----------------------------------

    def test_check_a_wrong_runs_row_is_found_and_repaired(self, store: Store) -> None:
        """A runs row that is not the fold of its events is rebuilt from them."""
        run_id = run_with_outputs(store, {"a": [1, 2]})
        true = _damage(store, run_id, run={"status": RunStatus.FAILED, "error": "made up"})
        (problem,) = store.check()
        assert problem.kind is ProblemKind.RUN_ROW_MISMATCH
        assert (problem.run_id, problem.repairable, problem.repaired) == (run_id, True, False)
        assert "status" in problem.message and "error" in problem.message
        events = store.read_events(run_id)
        (fixed,) = store.check(repair=True)
        assert fixed == dataclasses.replace(problem, repaired=True)
        assert store.check() == []
        assert store._get_run(run_id) == true.run
        assert store.read_events(run_id) == events

    def test_check_a_missing_execution_row_is_found_and_repaired(self, store: Store) -> None:
        """A finished attempt the events record but the rows lack is rebuilt."""
        run_id = run_with_outputs(store, {"a": [1, 2], "b": [3]})
        true = _damage(store, run_id, drop=("a", 1))
        (problem,) = store.check()
        assert (problem.kind, problem.run_id, problem.step) == (
            ProblemKind.EXECUTION_ROW_MISSING,
            run_id,
            "a",
        )
        assert [p.repaired for p in store.check(repair=True)] == [True]
        assert store.check() == []
        assert store.executions(run_id) == sorted(true.executions.values(), key=lambda x: x.seq)

    def test_check_an_extra_execution_row_is_found_and_removed(self, store: Store) -> None:
        """A row no event records is removed by the repair."""
        run_id = run_with_outputs(store, {"a": [1, 2]})
        ghost = StepExecution(run_id, "ghost", 1, StepStatus.COMPLETED, seq=2)
        _damage(store, run_id, add=ghost)
        (problem,) = store.check()
        assert (problem.kind, problem.step) == (ProblemKind.EXECUTION_ROW_EXTRA, "ghost")
        assert [p.repaired for p in store.check(repair=True)] == [True]
        assert store.check() == []
        assert "ghost" not in {x.step for x in store.executions(run_id)}

    def test_check_a_changed_execution_row_is_found_and_repaired(self, store: Store) -> None:
        """A row whose fields differ from the fold names the fields, and is rebuilt."""
        run_id = run_with_outputs(store, {"a": [1, 2]})
        _damage(store, run_id, change={("a", 1): {"status": StepStatus.FAILED, "error": "x"}})
        (problem,) = store.check()
        assert problem.kind is ProblemKind.EXECUTION_ROW_MISMATCH
        assert "status: 'failed' in the row, 'completed' from the events" in problem.message
        assert [p.repaired for p in store.check(repair=True)] == [True]
        assert store.check() == []

    def test_check_repair_fixes_every_damaged_run(self, store: Store) -> None:
        """Several damaged runs are all repaired in one call; sound runs stay as they are."""
        ids = populate(store)
        _damage(store, "r-done", run={"status": RunStatus.RUNNING})
        _damage(store, "r-retried", drop=("load", 1))
        before = _views(store)
        problems = store.check(repair=True)
        assert {p.run_id for p in problems} == {"r-done", "r-retried"}
        assert all(p.repaired for p in problems)
        assert store.check() == []
        assert store.read_events() == before[1]
        assert [store._get_run(r) for r in ids] == [_fold(store, r).run for r in ids]

    def test_check_rebuilding_views_from_a_stale_state_writes_nothing(self, store: Store) -> None:
        """_rebuild_views refuses a state that is not at the run's last event."""
        run_id = run_with_outputs(store, {"a": [1, 2]})
        state = fold(store._get_run(run_id), store.read_events(run_id, upto=2))
        before = _views(store)
        with pytest.raises(StaleVersionError):
            store._rebuild_views(state)
        assert _views(store) == before

    # -- problems repair cannot fix ---------------------------------------------------------

    def test_check_a_missing_value_names_the_steps_that_lost_it(self, store: Store) -> None:
        """A value deleted from under its runs is reported, not repairable, naming each
        run and step whose output it was."""
        value = _blob_values()["pickle"]
        first = run_with_outputs(store, {"model": value})
        second = run_with_outputs(store, {"model": value})
        (blob,) = store.list_blobs()
        store._delete([], [blob.hash])
        for problems in (store.check(), store.check(repair=True), store.check(verify_values=False)):
            (problem,) = problems
            assert problem.kind is ProblemKind.BLOB_MISSING
            assert (problem.hash, problem.repairable, problem.repaired) == (blob.hash, False, False)
            assert problem.run_id in (first, second) and problem.step == "model"
            for run_id in (first, second):
                assert f"step 'model' of run {run_id}" in problem.message
            assert "force=['model']" in problem.message

    def test_check_a_value_a_pending_fork_reuses_is_checked(self, store: Store) -> None:
        """The outputs a fork plans to reuse are references too."""
        run = make_run()
        store.put_flow(make_flow())
        store.create_run(run)
        lost = ValueRef.from_json({"codec": "pickle", "hash": "0" * 32, "size": 10, "type": "X"})
        forked = NewEvent(
            EventType.RUN_FORKED,
            payload={"parent_run_id": "gone", "reused": {"load": {"output": lost.to_json()}}},
        )
        store.append(run.run_id, 0, [forked])
        (problem,) = store.check()
        assert (problem.kind, problem.run_id, problem.step) == (
            ProblemKind.BLOB_MISSING,
            run.run_id,
            "load",
        )

    def test_check_a_run_without_its_flow_definition_is_reported(self, store: Store) -> None:
        """A run whose flow definition is not stored is a problem repair cannot fix."""
        run = start_run(store)
        (problem,) = store.check(repair=True)
        assert (problem.kind, problem.run_id) == (ProblemKind.RUN_WITHOUT_FLOW, run.run_id)
        assert not problem.repaired

    def test_check_problems_read_as_one_line_each(self, store: Store) -> None:
        """str(problem) is one line: the kind, then what is wrong and what to do."""
        store.put_flow(make_flow())
        run = make_run()
        store.create_run(run)
        store.append(run.run_id, 0, typical_events())
        _damage(store, run.run_id, run={"status": RunStatus.CANCELLED}, drop=("load", 1))
        problems = store.check()
        assert len(problems) == 2
        for problem in problems:
            text = str(problem)
            assert "\n" not in text and text.startswith(f"{problem.kind.value}: ")
            assert run.run_id in text and "--repair" in text
            assert problem.to_json()["kind"] == problem.kind.value
        assert all(str(p).endswith("[repaired]") for p in store.check(repair=True))
