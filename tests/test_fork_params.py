"""A fork never records parameters or code it did not apply (issue 15, point 5).

A step outside the fork point whose parameters or code the fork changes is recomputed,
with what reads it; the fork's first event says which and why, each step's record holds
the parameters it read, and ``preview_fork`` tells the same before anything is written.
"""

from __future__ import annotations

import pandas as pd
import pytest

import nbflow as nf
from nbflow.api.fork import preview_fork
from nbflow.errors import UnknownStepError


class Calls:
    """The steps that ran, in order (an object, not a list: a step's closure holding a
    list would be fingerprinted by its content, which changes as steps run)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        nf.untracked(self)  # instrumentation, not an input: part of no step's key

    def append(self, name: str) -> None:
        self.names.append(name)


def sales(store: nf.Store, calls: Calls) -> nf.Flow:
    flow = nf.Flow("sales", store=store)

    @flow.step
    def raw():
        calls.append("raw")
        return pd.DataFrame({"amount": [10.0, 50.0, 70.0, 90.0]})

    @flow.step
    def cleaned(raw, min_amount: float = 40.0):
        calls.append("cleaned")
        return raw[raw["amount"] >= min_amount].reset_index(drop=True)

    @flow.step
    def daily(cleaned):
        calls.append("daily")
        return float(cleaned["amount"].sum())

    @flow.step
    def count(cleaned):  # reads `cleaned` but is not downstream of `daily`
        calls.append("count")
        return len(cleaned)

    return flow


def forked_payload(run: nf.Run) -> dict:
    events = run.events
    assert events["type"].iloc[0] == "run_forked"
    return events["payload"].iloc[0]


def step_params(run: nf.Run) -> dict[str, dict | None]:
    rows = run.steps.sort_values("seq").drop_duplicates("step", keep="last")
    return dict(zip(rows["step"], rows["params"], strict=True))


def test_a_fork_recomputes_an_upstream_step_whose_parameter_it_changes(store):
    calls = Calls()
    parent = sales(store, calls).run()
    assert parent["daily"] == 210.0
    calls.names.clear()
    fork = parent.fork(from_step="daily", min_amount=60.0)
    assert fork.params == {"min_amount": 60.0}
    assert fork["daily"] == 160.0  # 70 + 90: the parameter it records was applied
    assert fork["count"] == 2
    assert fork.step_states() == {
        "raw": "cached",
        "cleaned": "completed",
        "daily": "completed",
        "count": "completed",
    }
    assert sorted(calls.names) == ["cleaned", "count", "daily"]
    recomputed = forked_payload(fork)["recomputed"]
    assert recomputed == {
        "cleaned": {
            "reason": "parameter min_amount: 40.0 -> 60.0",
            "params": {"min_amount": [40.0, 60.0]},
            "code": False,
            "upstream": None,
        },
        "count": {
            "reason": "it reads 'cleaned', which is recomputed",
            "params": {},
            "code": False,
            "upstream": "cleaned",
        },
    }
    assert forked_payload(fork)["executes"] == ["cleaned", "daily", "count"]


def test_every_step_of_a_fork_records_the_parameters_it_read(store):
    flow = sales(store, Calls())
    parent = flow.run()
    assert step_params(parent) == {
        "raw": {},
        "cleaned": {"min_amount": 40.0},
        "daily": {},
        "count": {},
    }
    same = parent.fork(from_step="daily")
    # Reused by reference: the parameters its source execution read.
    assert step_params(same)["cleaned"] == {"min_amount": 40.0}
    assert forked_payload(same)["recomputed"] == {}
    assert same.step_states()["cleaned"] == "cached"
    changed = parent.fork(from_step="daily", min_amount=60.0)
    assert step_params(changed)["cleaned"] == {"min_amount": 60.0}
    # A fork of that fork, changing nothing, reuses what its parent really read.
    again = changed.fork(from_step="count")
    assert step_params(again)["cleaned"] == {"min_amount": 60.0}
    assert again["daily"] == changed["daily"] == 160.0


def test_a_cache_hit_records_the_parameters_of_the_run_it_came_from(store):
    flow = sales(store, Calls())
    flow.run(min_amount=60.0)
    parent = flow.run()
    fork = parent.fork(from_step="daily", min_amount=60.0, cache=True)
    assert fork.step_states()["cleaned"] == "cached"  # the min_amount=60 run computed it
    assert step_params(fork)["cleaned"] == {"min_amount": 60.0}
    assert fork["daily"] == 160.0


def test_a_fork_at_a_version_recomputes_what_its_parameters_change(store):
    parent = sales(store, Calls()).run()
    fork = parent.fork(at_version=parent.version, min_amount=60.0)
    assert fork["daily"] == 160.0
    assert fork.step_states()["raw"] == "cached"
    recomputed = forked_payload(fork)["recomputed"]
    assert recomputed["cleaned"]["params"] == {"min_amount": [40.0, 60.0]}
    assert {recomputed[s]["upstream"] for s in ("daily", "count")} == {"cleaned"}


def test_a_fork_recomputes_an_upstream_step_whose_code_changed(store):
    calls = Calls()
    flow = sales(store, calls)
    parent = flow.run()

    @flow.step
    def cleaned(raw, min_amount: float = 40.0):
        calls.append("cleaned v2")
        return raw[raw["amount"] > min_amount + 20].reset_index(drop=True)  # changed

    calls.names.clear()
    fork = parent.fork(from_step="daily")
    assert fork["daily"] == 160.0
    assert "cleaned v2" in calls.names
    why = forked_payload(fork)["recomputed"]["cleaned"]
    assert (why["code"], why["params"], why["reason"]) == (True, {}, "its code changed")


def test_a_fork_made_without_running_recomputes_them_when_resumed(store):
    parent = sales(store, Calls()).run()
    pending = parent.fork(from_step="daily", run=False, min_amount=60.0)
    assert pending.status == "pending"
    assert set(forked_payload(pending)["recomputed"]) == {"cleaned", "count"}
    done = pending.resume()
    assert done["daily"] == 160.0
    assert done.step_states()["cleaned"] == "completed"


def test_preview_fork_tells_what_a_fork_would_recompute_and_writes_nothing(store):
    flow = sales(store, Calls())
    parent = flow.run()
    version = store.get_run(parent.id).version
    runs = len(store.list_runs())
    plan = preview_fork(flow, parent, from_step="daily", params={"min_amount": 60.0})
    assert plan.recomputed == {
        "cleaned": "parameter min_amount: 40.0 -> 60.0",
        "count": "it reads 'cleaned', which is recomputed",
    }
    assert (plan.reused, plan.executes) == (("raw",), ("cleaned", "daily", "count"))
    assert plan.describe() == [
        "reuses raw",
        "runs daily",
        "also recomputes cleaned: parameter min_amount: 40.0 -> 60.0",
        "also recomputes count: it reads 'cleaned', which is recomputed",
    ]
    unchanged = preview_fork(flow, parent, from_step="daily")
    assert unchanged.recomputed == {} and unchanged.reused == ("raw", "cleaned", "count")
    assert len(store.list_runs()) == runs
    assert store.get_run(parent.id).version == version
    with pytest.raises(UnknownStepError, match="nope"):
        preview_fork(flow, parent, from_step="nope")


def test_a_record_from_before_steps_kept_their_parameters_is_compared_by_its_run_s(store):
    """A cached row written before executions kept their parameters (a migrated store)
    is compared with the parameters its run's record claims for the step."""
    from nbflow.engine.fork import plan_fork
    from nbflow.engine.launch import plan_steps
    from nbflow.store.records import EventType, NewEvent
    from nbflow.testing import make_run
    from nbflow.testing.builders import cached_event

    graph = sales(store, Calls()).graph()
    plans = plan_steps(graph, {"min_amount": 60.0})
    store.create_run(make_run("old", flow="sales", params={"min_amount": 40.0}, steps=graph.order))
    events = [NewEvent(EventType.RUN_STARTED)]
    events += [cached_event(n, fingerprint=plans[n].fingerprint) for n in graph.order]
    events.append(NewEvent(EventType.RUN_COMPLETED))
    parent = store.append("old", 0, events)
    assert {r.params for r in store.executions("old")} == {None}
    plan = plan_fork(
        store, parent, graph, from_step="daily", at_version=None, cache=False, plans=plans
    )
    assert plan.recomputed["cleaned"].params == {"min_amount": (40.0, 60.0)}
    assert plan.reused["raw"].params == {}  # what the record tells, now said
    assert set(plan.reused) == {"raw"}
