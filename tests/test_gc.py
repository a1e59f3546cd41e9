"""Retention (``store.gc``): which runs a policy deletes, which values go with them, what
the report says, and that the DuckDB file gives the space back. On every store backend."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from waiting import GENEROUS, wait_for

import nbflow as nf
from nbflow.errors import ParameterError
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.gc import parse_age
from nbflow.store.records import utcnow
from nbflow.testing import StoreConformance
from nbflow.values.codecs import encode


def pipeline(store: nf.Store, name: str = "pipe") -> nf.Flow:
    """raw (DataFrame) -> arr (numpy) -> total (float, inline): two values per run."""
    flow = nf.Flow(name, store=store)

    @flow.step
    def raw(n: int = 5):
        return pd.DataFrame({"x": np.arange(n), "y": np.arange(n) * 0.5})

    @flow.step
    def arr(raw, scale: int = 1):
        return raw["y"].to_numpy() * scale

    @flow.step
    def total(arr):
        return float(arr.sum())

    return flow


def go(flow: nf.Flow, **params: Any) -> nf.Run:
    return flow.run(progress=False, **params)


@contextmanager
def created(monkeypatch: pytest.MonkeyPatch, days_ago: float) -> Iterator[None]:
    """Runs started inside are created ``days_ago`` days in the past."""
    then = utcnow() - dt.timedelta(days=days_ago)
    with monkeypatch.context() as m:
        m.setattr("nbflow.engine.launch.utcnow", lambda: then)
        yield


def values_of(run: nf.Run) -> set[str]:
    """The hashes of the run's outputs that live in blobs (not inline)."""
    refs = [run.ref(step) for step in run.outputs]
    return {ref.hash for ref in refs if not ref.is_inline}


def record_values(store: nf.Store) -> set[str]:
    """The values of the runs' records (their code and environment), which
    tests/test_gc_property.py and tests/test_reproduce.py account for."""
    from nbflow.store.gc import refs_in_payload
    from nbflow.store.records import EventType

    return {
        ref["hash"]
        for event in store.read_events()
        if event.type is EventType.RUN_STARTED
        for ref in refs_in_payload(event.type, event.payload)
    }


def blobs(store: nf.Store) -> set[str]:
    """The stored values but those of the runs' records."""
    return {b.hash for b in store.list_blobs()} - record_values(store)


def run_ids(store: nf.Store) -> set[str]:
    return {r.run_id for r in store.list_runs()}


def assert_loads(run: nf.Run, expected: dict[str, Any]) -> None:
    """Every output of ``run`` loads from its store and equals ``expected``."""
    assert set(run.outputs) == set(expected)
    for step, value in expected.items():
        got = nf.get_run(run.id, run.store)[step]
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got, value)
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value


def outputs(run: nf.Run) -> dict[str, Any]:
    return {step: run[step] for step in run.outputs}


# -- the policy ----------------------------------------------------------------------------


def test_keep_last_keeps_the_newest_runs_of_each_flow(store):
    a, b = pipeline(store, "a"), pipeline(store, "b")
    a_runs = [go(a, n=n) for n in (3, 4, 5, 6)]
    b_runs = [go(b, n=n) for n in (7, 8)]
    kept = [a_runs[-1], b_runs[-1]]
    expected = {run.id: outputs(run) for run in kept}

    report = store.gc(keep_last=1)

    gone = {r.id for r in a_runs[:-1] + b_runs[:-1]}
    assert set(report.runs) == gone
    assert run_ids(store) == {r.id for r in kept}
    assert report.kept_runs == 2
    assert blobs(store) == values_of(kept[0]) | values_of(kept[1])
    for run in kept:
        assert_loads(run, expected[run.id])


def test_keep_last_0_deletes_every_finished_run(store):
    flow = pipeline(store)
    go(flow, n=3)
    go(flow, n=4)
    report = store.gc(keep_last=0)
    assert len(report.runs) == 2 and report.kept_runs == 0
    assert store.list_runs() == [] and store.list_blobs() == []


def test_no_rule_deletes_no_run_but_removes_values_nothing_references(store):
    flow = pipeline(store)
    run = go(flow)
    stray = store.put_value(encode(np.arange(1000), step="stray"))
    assert store.has_blob(stray.hash)

    report = store.gc()

    assert report.runs == () and report.blobs == (stray.hash,)
    assert report.bytes_freed == stray.size
    assert not store.has_blob(stray.hash)
    assert run_ids(store) == {run.id} and blobs(store) == values_of(run)


@pytest.mark.parametrize("older_than", ["7d", "7 days", dt.timedelta(days=7), 7, 7.0], ids=repr)
def test_older_than_as_text_timedelta_or_days(store, monkeypatch, older_than):
    flow = pipeline(store)
    with created(monkeypatch, 10):
        old = go(flow, n=3)
    with created(monkeypatch, 8):
        older = go(flow, n=4)
    with created(monkeypatch, 6):
        recent = go(flow, n=5)
    new = go(flow, n=6)

    report = store.gc(older_than=older_than)

    assert set(report.runs) == {old.id, older.id}
    assert run_ids(store) == {recent.id, new.id}
    assert blobs(store) == values_of(recent) | values_of(new)


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("7d", dt.timedelta(days=7)),
        ("7D", dt.timedelta(days=7)),
        ("1w", dt.timedelta(weeks=1)),
        ("12h", dt.timedelta(hours=12)),
        ("12H", dt.timedelta(hours=12)),
        ("30min", dt.timedelta(minutes=30)),
        ("1d 12h", dt.timedelta(days=1, hours=12)),
        ("1.5 days", dt.timedelta(days=1.5)),
        ("0s", dt.timedelta(0)),
        ("P1D", dt.timedelta(days=1)),  # what pandas reads: ISO 8601
        ("1 days 02:00:00", dt.timedelta(days=1, hours=2)),
    ],
)
def test_older_than_text_forms_parse_without_warnings(text, age):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas deprecates "d", "w", "H": not used for them
        assert parse_age(text) == age


def test_older_than_in_hours(store, monkeypatch):
    flow = pipeline(store)
    with created(monkeypatch, 1):  # a day ago
        yesterday = go(flow, n=3)
    now = go(flow, n=4)
    assert store.gc(older_than="12h").runs == (yesterday.id,)
    assert run_ids(store) == {now.id}


def test_the_rules_add_up(store, monkeypatch):
    """A run that either rule keeps is kept."""
    flow = pipeline(store)
    runs = {}
    for days in (10, 9, 8, 1):
        with created(monkeypatch, days):
            runs[days] = go(flow, n=days)
    runs[0] = go(flow, n=2)

    # keep_last=1 keeps the newest; older_than='7d' keeps the two of the last week.
    dry = store.gc(keep_last=1, older_than="7d", dry_run=True)
    assert set(dry.runs) == {runs[10].id, runs[9].id, runs[8].id}
    # keep_last=4 also keeps the runs of 9 and 8 days ago, older than a week.
    report = store.gc(keep_last=4, older_than="7d")
    assert report.runs == (runs[10].id,)
    # with a day's age, keep_last alone keeps anything: the newest run.
    report = store.gc(keep_last=1, older_than="1d")
    assert set(report.runs) == {runs[9].id, runs[8].id, runs[1].id}
    assert run_ids(store) == {runs[0].id}


def test_flow_limits_the_scope(store):
    a, b = pipeline(store, "a"), pipeline(store, "b")
    a_runs = [go(a, n=n) for n in (3, 4)]
    b_runs = [go(b, n=n) for n in (4, 5)]  # b's n=4 run stores the same values as a's
    assert values_of(a_runs[1]) == values_of(b_runs[0])
    expected = {run.id: outputs(run) for run in b_runs}
    a_only = values_of(a_runs[0])

    report = store.gc(keep_last=0, flow="a")

    assert set(report.runs) == {r.id for r in a_runs}
    assert run_ids(store) == {r.id for r in b_runs}
    # a's values that b's runs also hold stay; a's own ones go
    assert blobs(store) == values_of(b_runs[0]) | values_of(b_runs[1])
    assert set(report.blobs) == a_only
    for run in b_runs:
        assert_loads(run, expected[run.id])
    assert store.gc(keep_last=0, flow="nope").runs == ()


def test_pending_runs_are_kept_and_can_still_run(store):
    flow = pipeline(store)
    parent = go(flow, n=4)
    pending = parent.fork(from_step="arr", run=False, scale=3, progress=False)
    assert pending.status == "pending"
    raw = parent.ref("raw").hash  # all the pending fork will reuse (its plan, no rows yet)
    arr = parent.ref("arr").hash
    records = record_values(store)

    report = store.gc(keep_last=0, older_than="0s")

    assert report.runs == (parent.id,) and set(report.blobs) - records == {arr}
    assert run_ids(store) == {pending.id}
    assert blobs(store) == {raw}
    pending.resume(progress=False)
    assert pending.status == "completed"
    pd.testing.assert_frame_equal(
        pending["raw"], pd.DataFrame({"x": np.arange(4), "y": np.arange(4) * 0.5})
    )
    np.testing.assert_array_equal(pending["arr"], np.arange(4) * 0.5 * 3)


def test_a_running_run_is_kept(store):
    flow = nf.Flow("slow", store=store)
    gate = threading.Event()

    @flow.step
    def wait():
        gate.wait(GENEROUS)
        return 1

    run = flow.run(background=True, progress=False)
    try:
        wait_for(lambda: run.status == "running", "the run running")
        assert store.gc(keep_last=0, older_than="0s").runs == ()
    finally:
        gate.set()
        run.wait()
    assert run.status == "completed"
    assert store.gc(keep_last=0).runs == (run.id,)


def test_a_value_a_running_run_has_just_written_survives_gc(store):
    """A run executing in the background holds refs it has not committed yet: gc must
    not take their values from under it (it keeps every value until the run ends)."""
    flow = nf.Flow("race", store=store)
    gate = threading.Event()

    @flow.step
    def fast():
        return pd.DataFrame({"a": np.arange(100)})

    @flow.step
    def slow():
        gate.wait(GENEROUS)
        return 1

    @flow.step
    def end(fast, slow):
        return len(fast) + slow

    run = flow.run(executor="threads", max_workers=2, background=True, progress=False)
    try:
        wait_for(store.list_blobs, "the fast step's value stored")
        report = store.gc()
        assert report.blobs == ()
        assert report.details["values_kept_for_executing_runs"] == [run.id]
        assert "no value removed while run(s)" in str(report)
    finally:
        gate.set()
        run.wait()
    assert run.status == "completed"
    assert run["end"] == 101
    pd.testing.assert_frame_equal(run["fast"], pd.DataFrame({"a": np.arange(100)}))
    assert store.gc().details == {}


def test_dry_run_changes_nothing_and_reports_what_gc_would_do(store, monkeypatch):
    flow = pipeline(store)
    with created(monkeypatch, 30):
        go(flow, n=3)
        go(flow, n=4)
    keep = go(flow, n=5)

    def state() -> tuple[Any, ...]:
        return (
            store.list_runs(),
            store.read_events(),
            sorted(store.list_blobs(), key=lambda b: b.hash),
            store.storage_bytes(),
        )

    before = state()
    dry = store.gc(older_than="7d", dry_run=True)
    assert state() == before
    assert dry.dry_run and str(dry).startswith("gc would remove 2 run(s)")
    assert dry.file_bytes_after == dry.file_bytes_before

    real = store.gc(older_than="7d")
    assert not real.dry_run and str(real).startswith("gc removed 2 run(s)")
    assert (real.runs, real.blobs, real.bytes_freed, real.kept_runs) == (
        dry.runs,
        dry.blobs,
        dry.bytes_freed,
        dry.kept_runs,
    )
    assert run_ids(store) == {keep.id}


# -- forks ---------------------------------------------------------------------------------


def test_a_forks_reused_output_stays_loadable_after_its_parent_is_deleted(store):
    flow = pipeline(store)
    parent = go(flow, n=6)
    fork = parent.fork(from_step="arr", scale=2, progress=False)
    grandchild = fork.fork(from_step="total", progress=False)
    raw, parent_arr = parent.ref("raw").hash, parent.ref("arr").hash
    assert fork.ref("raw").hash == raw  # by reference, not a copy
    assert grandchild.ref("arr").hash == fork.ref("arr").hash != parent_arr
    expected = {run.id: outputs(run) for run in (fork, grandchild)}

    report = store.gc(keep_last=2)  # the parent is the oldest of three

    assert report.runs == (parent.id,)
    assert report.blobs == (parent_arr,)  # the one value nobody else holds
    assert store.has_blob(raw)
    for run in (fork, grandchild):
        assert_loads(run, expected[run.id])

    # deleting the middle of the thread too keeps all the grandchild reuses
    report = store.gc(keep_last=1)
    assert report.runs == (fork.id,) and report.blobs == ()
    assert run_ids(store) == {grandchild.id}
    assert_loads(grandchild, expected[grandchild.id])


def test_a_value_deleted_by_gc_is_written_again_by_a_later_run(store):
    flow = pipeline(store)
    first = go(flow, n=7)
    hashes = values_of(first)
    store.gc(keep_last=0)
    assert store.list_blobs() == []

    again = go(flow, n=7)  # same values: no cache hit is left, so the steps run again
    assert set(again.step_states().values()) == {"completed"}
    assert values_of(again) == hashes and blobs(store) == hashes
    pd.testing.assert_frame_equal(
        again["raw"], pd.DataFrame({"x": np.arange(7), "y": np.arange(7) * 0.5})
    )


# -- the report ----------------------------------------------------------------------------


def test_report_text_and_frame(store):
    flow = pipeline(store)
    old = [go(flow, n=n) for n in (3, 4)]
    go(flow, n=5)

    sizes = {b.hash: b.size for b in store.list_blobs()}
    gone_values = values_of(old[0]) | values_of(old[1])
    report = store.gc(keep_last=1)

    assert report.bytes_freed == sum(sizes[h] for h in gone_values)
    assert set(report.blobs) == gone_values and len(gone_values) == 4
    text = str(report)
    assert text.startswith("gc removed 2 run(s) and 4 value(s), ")
    assert "of values; kept 1 run(s)" in text
    assert (" B of values" in text) or (" KB of values" in text)
    if isinstance(store, DuckDBStore):
        assert "; store file " in text and " -> " in text
    else:
        assert "store file" not in text
    frame = report.to_frame()
    assert list(frame.columns) == ["kind", "id"]
    assert frame["kind"].tolist() == ["run", "run", "value", "value", "value", "value"]
    assert set(frame["id"]) == {r.id for r in old} | gone_values


def test_an_empty_gc_reports_nothing(store):
    report = store.gc(keep_last=3)
    assert (report.runs, report.blobs, report.bytes_freed, report.kept_runs) == ((), (), 0, 0)
    assert str(report).startswith("gc removed 0 run(s) and 0 value(s), 0 B of values")
    assert report.to_frame().empty and list(report.to_frame().columns) == ["kind", "id"]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_last": -1}, "keep_last must be a whole number >= 0, not -1"),
        ({"keep_last": 1.5}, "keep_last must be a whole number >= 0, not 1.5"),
        ({"keep_last": True}, "keep_last must be a whole number >= 0, not True"),
        ({"older_than": "soon"}, "older_than='soon' is not a duration: use e.g. '7d'"),
        ({"older_than": "7"}, "older_than='7' is not a duration: use e.g. '7d', '12h' (a unit"),
        ({"older_than": ""}, "older_than='' is not a duration"),
        ({"older_than": "-1d"}, "older_than must not be negative, not '-1d'"),
        ({"older_than": float("nan")}, "older_than=nan is not a usable number of days"),
        (
            {"older_than": object()},
            "older_than must be a duration ('7d', a number of days or a timedelta), not object",
        ),
    ],
    ids=lambda x: repr(x) if isinstance(x, dict) else "",
)
def test_bad_input_is_refused_clearly_and_changes_nothing(store, kwargs, message):
    flow = pipeline(store)
    go(flow)
    before = (store.list_runs(), blobs(store))
    with pytest.raises(ParameterError) as info:
        store.gc(**kwargs)
    assert message in str(info.value)
    assert (store.list_runs(), blobs(store)) == before


def test_an_age_beyond_the_calendar_keeps_every_run(store):
    flow = pipeline(store)
    run = go(flow)
    assert store.gc(older_than=10**6).runs == ()
    assert store.gc(older_than=dt.timedelta.max).runs == ()
    assert run_ids(store) == {run.id}


# -- the DuckDB file -----------------------------------------------------------------------


def big_flow(store: nf.Store) -> nf.Flow:
    """One ~8 MB DataFrame per run, different for each seed."""
    flow = nf.Flow("big", store=store)

    @flow.step
    def frame(seed: int = 0):
        rng = np.random.default_rng(seed)
        return pd.DataFrame(rng.random((250_000, 4)), columns=list("abcd"))

    @flow.step
    def stats(frame):
        return {"rows": len(frame), "mean": float(frame["a"].mean())}

    return flow


def test_the_file_shrinks_and_the_store_reopens(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    store = DuckDBStore(path)
    flow = big_flow(store)
    runs = [go(flow, seed=s) for s in range(4)]
    keep = runs[-1]
    frame_hash = keep.ref("frame").hash
    expected = outputs(keep)
    events, steps = keep.events, keep.steps
    store.close()
    store = DuckDBStore(path)  # checkpointed: the file holds everything
    before = store.storage_bytes()
    assert before is not None and before > 4 * 8_000_000 * 0.9

    report = store.gc(keep_last=1)

    after = store.storage_bytes()
    assert after is not None
    assert report.file_bytes_before == before and report.file_bytes_after == after
    assert after < before * 0.4, (before, after)
    assert len(report.runs) == 3 and len(report.blobs) == 3
    assert report.bytes_freed > 3 * 8_000_000 * 0.9
    store.close()

    reopened = DuckDBStore(path)
    try:
        assert reopened.storage_bytes() is not None
        assert run_ids(reopened) == {keep.id}
        kept = nf.get_run(keep.id, reopened)
        assert_loads(kept, expected)
        pd.testing.assert_frame_equal(kept.events, events)
        pd.testing.assert_frame_equal(kept.steps, steps)
        stored = reopened.sql("SELECT hash FROM blobs")["hash"]
        assert set(stored) - record_values(reopened) == {frame_hash}
        # still writable: a new run stores its value, and a cached one reuses the kept one
        again = big_flow(reopened)
        assert go(again, seed=9)["stats"]["rows"] == 250_000
        cached = go(again, seed=3)
        assert set(cached.step_states().values()) == {"cached"}
    finally:
        reopened.close()


@pytest.fixture(scope="module")
def emptied_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB store that held big runs, all deleted by gc and compacted."""
    path = tmp_path_factory.mktemp("emptied") / "store.duckdb"
    store = DuckDBStore(path)
    flow = big_flow(store)
    run = go(flow, seed=1)
    run.fork(from_step="stats", progress=False)
    report = store.gc(keep_last=0)
    assert len(report.runs) == 2 and store.list_blobs() == []
    store.close()
    return path


class TestConformanceAfterGc(StoreConformance):
    """The whole store contract holds on a store file that gc emptied and compacted."""

    @pytest.fixture
    def store(self, emptied_store_file: Path, tmp_path: Path) -> Iterator[nf.Store]:
        path = tmp_path / "store.duckdb"
        shutil.copyfile(emptied_store_file, path)
        opened = DuckDBStore(path)
        try:
            yield opened
        finally:
            opened.close()
