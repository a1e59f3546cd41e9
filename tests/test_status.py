"""flow.status(): which steps are fresh, stale, never_run or failed, and why (every backend)."""

from __future__ import annotations

import sys

import pytest

import nbflow as nf
from nbflow.errors import ParameterError, RunError, UnknownRunError

FACTOR = 2


def scale(v):
    return v * FACTOR


def make_flow(store: nf.Store, name: str = "s") -> nf.Flow:
    flow = nf.Flow(name, store=store)

    @flow.step
    def raw(n: int = 4):
        return list(range(n))

    @flow.step
    def scaled(raw):
        return [scale(v) for v in raw]

    @flow.step
    def total(scaled, offset: int = 0):
        return sum(scaled) + offset

    @flow.step
    def count(raw):
        return len(raw)

    return flow


def states(flow: nf.Flow, run: nf.Run | str | None = None, **params) -> dict[str, str]:
    frame = flow.status(run, **params)
    return dict(zip(frame["step"], frame["state"], strict=True))


def whys(flow: nf.Flow, run: nf.Run | str | None = None, **params) -> dict[str, str]:
    frame = flow.status(run, **params)
    return dict(zip(frame["step"], frame["why"], strict=True))


def test_before_any_run_every_step_has_never_run(store):
    flow = make_flow(store)
    frame = flow.status()
    assert list(frame.columns) == ["step", "state", "why", "run_id"]
    assert list(frame["step"]) == ["raw", "scaled", "total", "count"]
    assert set(frame["state"]) == {"never_run"}
    assert set(frame["why"]) == {"the flow has not run yet"}


def test_after_a_run_every_step_is_fresh(store):
    flow = make_flow(store)
    run = flow.run()
    frame = flow.status()
    assert set(frame["state"]) == {"fresh"}
    assert set(frame["why"]) == {""}
    assert set(frame["run_id"]) == {run.id}
    flow.run()  # an all-cached run: still fresh, now relative to it
    assert set(flow.status()["state"]) == {"fresh"}


def test_editing_a_step_makes_it_and_its_descendants_stale_and_nothing_else(store):
    flow = make_flow(store)
    flow.run()

    @flow.step
    def scaled(raw):
        return [scale(v) + 1 for v in raw]

    assert states(flow) == {"raw": "fresh", "scaled": "stale", "total": "stale", "count": "fresh"}
    why = whys(flow)
    assert why["scaled"] == "code changed"
    assert why["total"] == "an upstream step changed (scaled)"
    flow.run()
    assert set(states(flow).values()) == {"fresh"}


def test_a_formatting_only_edit_keeps_the_step_fresh(store):
    flow = make_flow(store)
    flow.run()

    @flow.step
    def scaled(raw):
        # the same code, written differently
        return [scale(v)
                for v in raw]  # fmt: skip

    assert set(states(flow).values()) == {"fresh"}


def test_editing_a_helper_constant_makes_its_users_stale(store, monkeypatch):
    flow = make_flow(store)
    flow.run()
    monkeypatch.setattr(sys.modules[__name__], "FACTOR", 3)
    assert states(flow) == {"raw": "fresh", "scaled": "stale", "total": "stale", "count": "fresh"}
    assert whys(flow)["scaled"] == "code changed (a function or constant it uses)"


def test_given_parameters_are_compared_with_the_runs(store):
    flow = make_flow(store)
    flow.run()
    assert states(flow, offset=5) == {
        "raw": "fresh",
        "scaled": "fresh",
        "total": "stale",
        "count": "fresh",
    }
    assert whys(flow, offset=5)["total"] == "parameters changed (offset: 0 → 5)"
    assert whys(flow, n=2)["raw"] == "parameters changed (n: 4 → 2)"
    assert whys(flow, n=2)["count"] == "an upstream step changed (raw)"


def test_a_runs_own_parameter_choice_is_not_staleness(store):
    flow = make_flow(store)
    flow.run(offset=7)
    assert set(states(flow).values()) == {"fresh"}  # offset=7 is carried over
    assert states(flow, offset=0)["total"] == "stale"


def test_a_changed_default_is_a_parameter_change(store):
    flow = make_flow(store)
    flow.run()

    @flow.step
    def total(scaled, offset: int = 10):
        return sum(scaled) + offset

    assert states(flow)["total"] == "stale"
    assert whys(flow)["total"] == "parameters changed (offset: 0 → 10)"


def test_changed_options_are_named(store):
    flow = make_flow(store)
    flow.run()

    @flow.step(retries=2)
    def count(raw):
        return len(raw)

    assert whys(flow)["count"] == "options changed (retries)"


def test_a_failed_step_is_failed_and_its_descendants_never_ran(store):
    flow = nf.Flow("fails", store=store)

    @flow.step
    def first():
        return 1

    @flow.step
    def broken(first):
        raise ValueError("bad input")

    @flow.step
    def after(broken):
        return broken

    run = flow.run(raise_on_error=False)
    frame = flow.status()
    state = dict(zip(frame["step"], frame["state"], strict=True))
    why = dict(zip(frame["step"], frame["why"], strict=True))
    assert state == {"first": "fresh", "broken": "failed", "after": "never_run"}
    assert why["broken"] == f"failed in run {run.id}: ValueError: bad input"
    assert why["after"].startswith(f"skipped in run {run.id}")


def test_a_new_step_has_never_run(store):
    flow = make_flow(store)
    flow.run()

    @flow.step
    def extra(count):
        return count + 1

    assert states(flow)["extra"] == "never_run"
    assert whys(flow)["extra"] == "no run of the flow has run it yet"


def test_steps_are_compared_with_the_latest_run_that_ran_them(store):
    flow = make_flow(store)
    full = flow.run()
    partial = flow.run(targets="count")  # runs raw and count only
    frame = flow.status()
    by_step = dict(zip(frame["step"], frame["run_id"], strict=True))
    assert by_step == {"raw": partial.id, "scaled": full.id, "total": full.id, "count": partial.id}
    assert set(frame["state"]) == {"fresh"}
    assert states(flow, partial) == {
        "raw": "fresh",
        "scaled": "never_run",
        "total": "never_run",
        "count": "fresh",
    }
    assert whys(flow, partial.id)["scaled"] == f"not part of run {partial.id}"


def test_status_relative_to_a_given_run(store):
    flow = make_flow(store)
    old = flow.run(n=3)
    flow.run(n=5)
    assert set(states(flow).values()) == {"fresh"}
    assert set(states(flow, old).values()) == {"fresh"}  # n=3 was that run's choice
    assert states(flow, old, n=5)["raw"] == "stale"


def test_bad_arguments_are_refused(store):
    flow = make_flow(store)
    other = make_flow(store, name="other")
    run = other.run()
    with pytest.raises(RunError, match="is a run of flow 'other', not of 's'"):
        flow.status(run)
    with pytest.raises(UnknownRunError):
        flow.status("no-such-run")
    with pytest.raises(ParameterError, match="'ofset' is not a run parameter.*'offset'"):
        flow.status(ofset=1)
