"""gc, as a property: over random fork trees and retention policies, it never removes a
value a remaining run references and always removes the rest; it deletes exactly the runs
outside the policy; a dry run changes nothing and reports what gc would do.

The expectation is computed here, independently of :mod:`nbflow.store.gc`: from the runs'
records, their execution rows and their ``run_forked`` plans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from store_backends import BACKENDS, fresh_store

import nbflow as nf
from nbflow.store.base import Store
from nbflow.store.records import EventType, RunRecord, ValueRef
from nbflow.testing import assert_same_value

FLOW = "prop"
STEPS = ("base", "scaled", "arr", "total")
FAILING_X = -1


def prop_flow(store: Store) -> nf.Flow:
    """base (a DataFrame shared by every run) -> scaled (DataFrame, raises for x=-1)
    -> arr (numpy) -> total (an int, inline)."""
    flow = nf.Flow(FLOW, store=store)

    @flow.step
    def base():
        return pd.DataFrame({"a": np.arange(20)})

    @flow.step
    def scaled(base, x: int = 0):
        if x < 0:
            raise ValueError("x must not be negative")
        return base * (x + 1)

    @flow.step
    def arr(scaled, y: int = 0):
        return scaled["a"].to_numpy() + y

    @flow.step
    def total(arr):
        return int(arr.sum())

    return flow


def other_flow(store: Store) -> nf.Flow:
    """A second flow, so that ``flow=`` and per-flow ``keep_last`` mean something."""
    flow = nf.Flow("other", store=store)

    @flow.step
    def vec(k: int = 0):
        return np.arange(8) * k

    return flow


# -- what to do ------------------------------------------------------------------------------

xs = st.sampled_from([0, 1, 2, FAILING_X])
ys = st.integers(0, 2)
fork_params = st.fixed_dictionaries({}, optional={"x": xs, "y": ys})
run_now = st.sampled_from([True, True, True, False])  # run=False: a pending fork

actions = st.one_of(
    st.tuples(st.just("run"), xs, ys),
    st.tuples(st.just("other"), st.integers(0, 2)),
    st.tuples(
        st.just("fork_step"), st.integers(0, 99), st.sampled_from(STEPS), fork_params, run_now
    ),
    st.tuples(
        st.just("fork_version"), st.integers(0, 99), st.integers(0, 99), fork_params, run_now
    ),
    st.tuples(st.just("resume"), st.integers(0, 99)),
)

policies = st.fixed_dictionaries(
    {
        # weighted so that most policies delete something
        "keep_last": st.sampled_from([None, 0, 1, 1, 2, 3]),
        "older_than": st.sampled_from([None, None, "0s", "0s", "0s", "1h"]),
        "flow": st.sampled_from([None, FLOW]),
    }
)

OPTIONS: dict[str, Any] = {"progress": False, "raise_on_error": False}


def play(store: Store, flows: list[nf.Flow], steps: list[tuple[Any, ...]]) -> list[nf.Run]:
    """Carry out the actions with ``flows`` (prop, other); return every run made."""
    flow, other = flows
    made: list[nf.Run] = []
    for action in steps:
        kind = action[0]
        finished = [r for r in made if r.flow_name == FLOW and r.status not in ("pending",)]
        pending = [r for r in made if r.status == "pending"]
        if kind == "other":
            made.append(other.run(k=action[1], **OPTIONS))
        elif kind == "resume" and pending:
            pending[action[1] % len(pending)].resume(**OPTIONS)
        elif kind in ("fork_step", "fork_version") and finished:
            parent = finished[action[1] % len(finished)]
            params, run = action[3], action[4]
            if kind == "fork_step":
                point: dict[str, Any] = {"from_step": action[2]}
            else:
                point = {"at_version": action[2] % (parent.version + 1)}
            made.append(parent.fork(**point, run=run, **params, **OPTIONS))
        else:  # a new run (also what a fork or a resume with nothing to act on becomes)
            x, y = (action[1], action[2]) if kind == "run" else (0, 0)
            made.append(flow.run(x=x, y=y, **OPTIONS))
        note(f"{action} -> {made[-1].id} {made[-1].status}" if made else f"{action}")
    return made


# -- the expectation, worked out here ---------------------------------------------------------


def doomed_runs(
    records: list[RunRecord], keep_last: int | None, older_than: str | None, flow: str | None
) -> set[str]:
    """The runs outside the policy. Every run here was created before gc is called, so
    '0s' keeps none by age and '1h' keeps all; pending runs are always kept."""
    if keep_last is None and older_than is None:
        return set()
    by_flow: dict[str, list[RunRecord]] = {}
    for record in records:
        if flow is None or record.flow == flow:
            by_flow.setdefault(record.flow, []).append(record)
    doomed = set()
    for runs in by_flow.values():
        newest_first = sorted(runs, key=lambda r: (r.created_at, r.run_id), reverse=True)
        for rank, record in enumerate(newest_first):
            kept = (
                record.status.value in ("pending", "running")
                or (keep_last is not None and rank < keep_last)
                or older_than == "1h"
            )
            if not kept:
                doomed.add(record.run_id)
    return doomed


def referenced(store: Store, run_ids: set[str]) -> set[str]:
    """The blob hashes these runs refer to: their execution rows' outputs (every attempt),
    the outputs a fork's plan takes over (all a pending fork has), and the values of each
    start's record (code, environment, data globals: docs/reproduce.md)."""
    found: set[str] = set()
    for run_id in run_ids:
        for row in store.executions(run_id):
            if row.output is not None and not row.output.is_inline:
                found.add(row.output.hash)
        for logged in store.read_events(run_id):
            started = logged.type is EventType.RUN_STARTED
            record = logged.payload.get("record") if started else None
            if record:
                refs = [record["code"], record["environment"]]
                refs += [r for by_name in record["data"].values() for r in by_name.values()]
                found |= {r["hash"] for r in refs if r["codec"] != "json"}
        for first in store.read_events(run_id, upto=1):
            if first.type is EventType.RUN_FORKED:
                for data in first.payload["reused"].values():
                    ref = ValueRef.from_json(data["output"])
                    if not ref.is_inline:
                        found.add(ref.hash)
    return found


def _reuses_deleted(records: list[RunRecord], doomed: set[str]) -> bool:
    return any(r.parent_run_id in doomed for r in records if r.run_id not in doomed)


def loaded_outputs(store: Store, run_id: str) -> dict[str, Any]:
    run = nf.get_run(run_id, store)
    return {step: run[step] for step in run.outputs}


def contents(store: Store) -> tuple[Any, ...]:
    """All a store holds, to show that a dry run changed nothing."""
    return (
        store.list_runs(),
        store.read_events(),
        {r.run_id: store.executions(r.run_id) for r in store.list_runs()},
        sorted(store.list_blobs(), key=lambda b: b.hash),
    )


# -- the property -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gc-property")


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(actions, min_size=2, max_size=8), policy=policies, dry_run=st.booleans())
def test_gc_keeps_exactly_what_remaining_runs_reference(
    backend: str, folder: Path, steps: list[tuple[Any, ...]], policy: dict[str, Any], dry_run: bool
) -> None:
    with fresh_store(backend, folder) as store:
        flows = [prop_flow(store), other_flow(store)]  # alive to the end: resume finds them
        play(store, flows, steps)
        records = store.list_runs()
        all_ids = {r.run_id for r in records}
        sizes = {b.hash: b.size for b in store.list_blobs()}
        before = {run_id: loaded_outputs(store, run_id) for run_id in all_ids}
        # nothing dangles before gc: every referenced value is stored
        assert referenced(store, all_ids) <= set(sizes)

        doomed = doomed_runs(records, **policy)
        remaining = all_ids - doomed
        keep = referenced(store, remaining)
        purge = set(sizes) - keep
        note(f"policy {policy}, dry_run {dry_run}: delete {sorted(doomed)}, purge {len(purge)}")
        statuses = {r.status.value for r in records}
        event(f"runs deleted: {'none' if not doomed else 'all' if not remaining else 'some'}")
        event(f"values purged: {'none' if not purge else 'some'}, kept: {bool(keep)}")
        event(f"a kept run reuses a deleted run's value: {_reuses_deleted(records, doomed)}")
        for status in statuses:
            event(f"has a {status} run")

        def check(report: Any, dry: bool) -> None:
            assert report.dry_run is dry
            assert report.runs == tuple(sorted(doomed))
            assert report.blobs == tuple(sorted(purge))
            assert report.bytes_freed == sum(sizes[h] for h in purge)
            assert report.kept_runs == len(remaining)

        if dry_run:
            snapshot = contents(store)
            check(store.gc(**policy, dry_run=True), dry=True)
            assert contents(store) == snapshot

        check(store.gc(**policy), dry=False)

        assert {r.run_id for r in store.list_runs()} == remaining
        assert [r for r in records if r.run_id in remaining] == store.list_runs()
        # every value a remaining run references is there, and nothing else is
        assert {b.hash for b in store.list_blobs()} == keep
        assert all(store.has_blob(h) for h in keep)
        assert not any(store.has_blob(h) for h in purge)
        assert referenced(store, remaining) == keep
        # and every output of a remaining run loads as it did before gc
        for run_id in remaining:
            got = loaded_outputs(store, run_id)
            assert got.keys() == before[run_id].keys()
            for step, value in before[run_id].items():
                assert_same_value(got[step], value)

        # a second gc with the same policy has nothing left to do
        again = store.gc(**policy)
        assert (again.runs, again.blobs) == ((), ())

        # pending forks still run: what they reuse was kept
        for record in store.list_runs(status="pending"):
            run = nf.get_run(record.run_id, store).resume(**OPTIONS)
            assert run.status in ("completed", "failed")
            if run.status == "failed":
                assert "x must not be negative" in (run.error or ""), run.error
