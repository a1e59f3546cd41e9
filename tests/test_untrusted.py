"""Stores opened with ``trust=False`` (or ``NBFLOW_TRUST=0``): pickled outputs are refused
with an error naming the step and the run, everything else works as usual, and nothing is
ever unpickled."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from widget_comms import comms, frontend_update  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.cli import main
from nbflow.errors import StepFailed, StoreError, UntrustedImportError, UntrustedStoreError
from nbflow.store.base import Store
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import Codec, ValueRef
from nbflow.values import encode

POINT = f"{__name__}.Point"


@dataclass(frozen=True)
class Point:
    """A value only pickle can store."""

    x: int


@pytest.fixture(params=["memory-argument", "memory-env", "duckdb-argument", "duckdb-env"])
def untrusted(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """An empty store of each backend, opened with trust=False or under NBFLOW_TRUST=0."""
    backend, how = request.param.split("-")
    location = "memory://" if backend == "memory" else str(tmp_path / "store.duckdb")
    if how == "env":
        monkeypatch.setenv("NBFLOW_TRUST", "0")
        opened = nf.open_store(location)
    else:
        opened = nf.open_store(location, trust=False)
    assert opened.trust is False
    yield opened
    opened.close()


def mixed_flow(store: Store, name: str = "mixed", retries: int = 0) -> nf.Flow:
    """A frame, an array, JSON and a pickled object, and steps that read them."""
    flow = nf.Flow(name, store=store)

    @flow.step
    def frame(n: int = 4):
        return pd.DataFrame({"x": np.arange(n), "label": [f"r{i}" for i in range(n)]})

    @flow.step
    def array():
        return np.arange(6, dtype="float32").reshape(2, 3)

    @flow.step
    def config():
        return {"keys": ["a", "b"], "depth": 2}

    @flow.step
    def thing():
        return Point(3)

    @flow.step
    def total(frame, array, config):
        return float(frame["x"].sum() + array.sum() + config["depth"])

    @flow.step(retries=retries, retry_delay=0)
    def doubled(thing):
        return thing.x * 2

    return flow


def assert_names_the_refusal(error: UntrustedStoreError, step: str, run_id: str) -> None:
    message = str(error)
    assert error.step == step and error.run_id == run_id
    assert f"step {step!r} in run {run_id}" in message
    assert f"(a {POINT})" in message
    assert "arbitrary code" in message
    assert "DataFrames, arrays and JSON values load without pickle" in message
    assert "nf.open_store(path, trust=True)" in message and "NBFLOW_TRUST=1" in message


def test_pickled_outputs_are_refused_and_the_rest_loads(untrusted: Store) -> None:
    run = mixed_flow(untrusted).run(progress=False)
    assert run.status == "completed"  # a run keeps its own values in memory
    assert run.ref("thing").codec is Codec.PICKLE
    pd.testing.assert_frame_equal(
        run["frame"], pd.DataFrame({"x": np.arange(4), "label": ["r0", "r1", "r2", "r3"]})
    )
    np.testing.assert_array_equal(run["array"], np.arange(6, dtype="float32").reshape(2, 3))
    assert run["config"] == {"keys": ["a", "b"], "depth": 2}
    assert run["total"] == 6.0 + 15.0 + 2
    assert run["doubled"] == 6
    with pytest.raises(UntrustedStoreError) as caught:
        run["thing"]
    assert_names_the_refusal(caught.value, "thing", run.id)
    assert "thing" in run.outputs and len(run.outputs) == 6  # listing loads nothing
    with pytest.raises(UntrustedStoreError) as caught:
        run.outputs["thing"]
    assert_names_the_refusal(caught.value, "thing", run.id)


def test_time_travel_refuses_pickles_too(untrusted: Store) -> None:
    run = mixed_flow(untrusted).run(progress=False)
    view = run.at(run.version)
    assert view["config"]["depth"] == 2
    with pytest.raises(UntrustedStoreError) as caught:
        view["thing"]
    assert_names_the_refusal(caught.value, "thing", run.id)


def test_runs_events_steps_and_sql_need_no_trust(untrusted: Store) -> None:
    run = mixed_flow(untrusted).run(progress=False)
    assert list(nf.runs(untrusted)["run_id"]) == [run.id]
    assert len(nf.events(run.id, untrusted)) == len(run.events) > 0
    steps = run.steps.set_index("step")
    assert steps.loc["thing", "output_codec"] == "pickle"
    assert set(steps["status"]) == {"completed"}
    assert len(run.versions) > 0
    frame = untrusted.sql("SELECT status FROM runs WHERE run_id = ?", [run.id])
    assert list(frame["status"]) == ["completed"]


def test_a_fork_loads_only_the_inputs_it_needs(untrusted: Store) -> None:
    run = mixed_flow(untrusted).run(progress=False)
    fork = run.fork(from_step="total", progress=False)  # reads frame, array, config
    assert fork.status == "completed"
    assert fork["total"] == run["total"]
    assert fork.step_states()["thing"] == "cached"  # reused by reference, never loaded


def test_a_step_whose_input_is_a_refused_pickle_fails_naming_that_input(
    untrusted: Store,
) -> None:
    run = mixed_flow(untrusted, retries=2).run(progress=False)
    with pytest.raises(StepFailed) as caught:
        run.fork(from_step="doubled", progress=False)
    failed = caught.value
    assert failed.step == "doubled"
    assert "step 'thing'" in str(failed) and "trust=True" in str(failed)
    assert isinstance(failed.__cause__, UntrustedStoreError)
    assert failed.__cause__.step == "thing"
    fork = nf.get_run(failed.run_id, untrusted)
    assert fork.status == "failed"
    steps = fork.steps.set_index("step")
    assert steps.loc["doubled", "status"] == "failed"
    assert steps.loc["doubled", "attempt"] == 1  # retrying could not load it either
    error = str(steps.loc["doubled", "error"])
    assert "UntrustedStoreError" in error and "step 'thing'" in error


def test_resume_needs_trust_only_for_the_pickles_it_reads(untrusted: Store) -> None:
    flow = nf.Flow("resumable", store=untrusted)
    broken = {"on": True}

    @flow.step
    def frame():
        return pd.DataFrame({"x": [1, 2, 3]})

    @flow.step
    def thing():
        return Point(7)

    @flow.step
    def summed(frame):
        if broken["on"]:
            raise RuntimeError("not yet")
        return int(frame["x"].sum())

    @flow.step
    def moved(thing):
        if broken["on"]:
            raise RuntimeError("not yet")
        return thing.x + 1

    run = flow.run(progress=False, raise_on_error=False)
    assert run.status == "failed"
    broken["on"] = False
    with pytest.raises(StepFailed, match="step 'thing'"):
        run.resume(progress=False)
    states = run.step_states()
    assert states["summed"] == "completed"  # its DataFrame input loaded without trust
    assert states["moved"] == "failed"
    assert run["summed"] == 6


def test_a_store_written_by_others_is_opened_untrusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shared.duckdb"
    written = mixed_flow(nf.open_store(path)).run(progress=False)
    assert written["thing"] == Point(3)  # trusted by whoever wrote it
    for opened in (nf.open_store(path, trust=False), _env_opened(path, monkeypatch)):
        run = nf.get_run(written.id, opened)
        assert run["total"] == written["total"]
        with pytest.raises(UntrustedStoreError) as caught:
            run["thing"]
        assert_names_the_refusal(caught.value, "thing", written.id)


def _env_opened(path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("NBFLOW_TRUST", "0")
    opened = nf.open_store(path)
    assert opened.trust is False
    return opened


def test_diff_skips_pickled_frames_and_refuses_their_rows(untrusted: Store) -> None:
    flow = nf.Flow("frames", store=untrusted)

    @flow.step
    def odd(k: int = 1):
        # Duplicate labels that are not plain str/int: Arrow cannot hold it, pickle can.
        return pd.DataFrame([[k, 2]], columns=[1.5, 1.5])

    @flow.step
    def plain(k: int = 1):
        return pd.DataFrame({"v": [k, 2]})

    a, b = flow.run(progress=False), flow.run(k=2, progress=False)
    assert a.ref("odd").codec is Codec.PICKLE and a.ref("plain").codec is not Codec.PICKLE
    summary = nf.diff(a, b).set_index("step")
    assert bool(summary.loc["odd", "output_changed"]) is True
    assert summary["rows_changed"].isna()["odd"]  # not loaded
    assert summary.loc["plain", "rows_changed"] == 1
    with pytest.raises(UntrustedStoreError, match=f"step 'odd' in run {a.id}"):
        nf.diff(a, b, step="odd")


def test_export_moves_pickles_without_unpickling(
    untrusted: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = mixed_flow(untrusted).run(progress=False)
    refuse_unpickling(monkeypatch)
    folder = nf.export_run(untrusted, run.id, tmp_path / "export")
    stored = (folder / "values" / f"{run.ref('thing').hash}.pickle").read_bytes()
    assert stored == encode(Point(3), step="thing").data
    target = nf.open_store("memory://", trust=False)
    assert nf.import_run(target, folder) == run.id
    with pytest.raises(UntrustedStoreError, match="step 'thing'"):
        nf.get_run(run.id, target)["thing"]
    monkeypatch.undo()
    target.trust = True
    with pytest.raises(UntrustedImportError, match=f"nbflow trust {run.id}"):
        nf.get_run(run.id, target)["thing"]  # imported without trust: someone else's
    assert nf.mark_trusted(target, run.id) == [run.ref("thing").hash]
    assert nf.get_run(run.id, target)["thing"] == Point(3)


def test_the_browser_shows_the_refusal_as_a_message(untrusted: Store, comms) -> None:
    flow = mixed_flow(untrusted)
    run = flow.run(progress=False)
    browser = nf.browse(flow)
    try:
        frontend_update(browser.dag, selected="thing")
        panel = browser.step_panel.value
        assert "nbflow-muted" in panel and "nbflow-error" not in panel
        assert "step &#x27;thing&#x27;" in panel and run.id in panel
        assert "trust=True" in panel
        frontend_update(browser.dag, selected="frame")
        assert "DataFrame · shape (4, 2)" in browser.step_panel.value
    finally:
        browser.close()


def test_the_command_line_follows_nbflow_trust(tmp_path: Path) -> None:
    path = tmp_path / "cli.duckdb"
    flow = mixed_flow(nf.open_store(path))
    a, b = flow.run(progress=False), flow.run(n=5, progress=False)
    env = {"NBFLOW_STORE": str(path), "NBFLOW_TRUST": "0"}
    refused = CliRunner().invoke(main, ["diff", a.id, b.id, "--step", "thing"], env=env)
    assert refused.exit_code == 2
    assert "step 'thing'" in refused.stderr and "NBFLOW_TRUST=1" in refused.stderr
    frames = CliRunner().invoke(main, ["diff", a.id, b.id, "--step", "frame"], env=env)
    assert frames.exit_code == 0, frames.stderr
    assert "added" in frames.stdout
    exported = CliRunner().invoke(main, ["export", a.id, str(tmp_path / "out")], env=env)
    assert exported.exit_code == 0, exported.stderr


# -- nothing is ever unpickled --------------------------------------------------------


def refuse_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every unpickling entry point fail the test."""

    def unpickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("something was unpickled from an untrusted store")

    for module in (pickle, cloudpickle):
        for name in ("loads", "load", "Unpickler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, unpickle)


def many_values() -> dict[str, object]:
    """DataFrames of many dtypes, Series, arrays and JSON: none of them needs pickle."""
    n = 5
    index = pd.date_range("2024-01-01", periods=n, freq="D", tz="Europe/Paris", name="day")
    frames = {
        "numbers": pd.DataFrame(
            {
                "i8": np.arange(n, dtype="int8"),
                "u64": np.arange(n, dtype="uint64"),
                "f32": np.linspace(0, 1, n, dtype="float32"),
                "f64": [0.5, np.nan, 2.5, np.inf, -1.0],
                "b": [True, False, True, True, False],
            }
        ),
        "nullable": pd.DataFrame(
            {
                "I": pd.array([1, None, 3, 4, 5], dtype="Int64"),
                "B": pd.array([True, None, False, True, None], dtype="boolean"),
                "F": pd.array([0.5, None, 1.5, 2.0, 3.0], dtype="Float64"),
                "S": pd.array(["a", None, "ç", "数", "x"], dtype="string"),
            }
        ),
        "objects_and_categories": pd.DataFrame(
            {
                "o": np.array(["x", None, "z", "é", "w"], dtype=object),
                "cat": pd.Categorical(["lo", "hi", "lo", None, "hi"], ordered=True),
                "bytes": np.array([b"a", b"b", b"c", b"d", b"e"], dtype=object),
            }
        ),
        "times": pd.DataFrame(
            {
                "naive": pd.date_range("2024-01-01", periods=n, freq="h"),
                "delta": pd.to_timedelta(np.arange(n), unit="s"),
                "period": pd.period_range("2024-01", periods=n, freq="M"),
                "interval": pd.interval_range(0, n),
            },
            index=index,
        ),
        "float16_ipc": pd.DataFrame({"h": np.arange(n, dtype="float16")}),
        "multiindex": pd.DataFrame(
            {"v": np.arange(4)},
            index=pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["k", "n"]),
        ),
    }
    arrays = {
        "ints": np.arange(12, dtype="int64").reshape(3, 4),
        "floats": np.linspace(0, 1, 7),
        "bools": np.array([True, False]),
        "complex": np.array([1 + 2j, 3 - 4j]),
        "datetimes": np.array(["2024-01-01", "2024-06-30"], dtype="datetime64[ns]"),
        "strings": np.array(["a", "bé"], dtype="<U2"),
        "records": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        "scalar": np.float32(2.5),
    }
    json_values = {
        "inline": {"a": [1, 2.5, None, True, "é"]},
        "blob": {"rows": [{"k": i, "v": "x" * 20} for i in range(400)]},
        "text": "数据 " * 10,
    }
    return {
        **{f"frame:{k}": v for k, v in frames.items()},
        "series": pd.Series([1.5, None, 3.0], name="s", index=["a", "b", "c"]),
        **{f"array:{k}": v for k, v in arrays.items()},
        **{f"json:{k}": v for k, v in json_values.items()},
    }


def assert_same(got: Any, expected: object) -> None:
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)
    elif isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(got, expected)
    elif isinstance(expected, np.ndarray | np.generic):
        assert type(got) is type(expected)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    else:
        assert json.dumps(got) == json.dumps(expected)


def test_frames_arrays_and_json_load_without_any_unpickling(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = many_values()
    refs = {}
    for name, value in values.items():
        ref = store.put_value(encode(value, step=name))
        assert ref.codec is not Codec.PICKLE, name
        refs[name] = ref
    assert {r.codec for r in refs.values()} == {
        Codec.ARROW,
        Codec.ARROW_IPC,
        Codec.NUMPY,
        Codec.JSON,
        Codec.JSON_BLOB,
    }
    pickled = store.put_value(encode(Point(1), step="p"))
    store.trust = False
    refuse_unpickling(monkeypatch)
    for name, ref in refs.items():
        assert_same(store.load_output(ref, step=name, run_id="r"), values[name])
    with pytest.raises(UntrustedStoreError, match="step 'p' in run r"):
        store.load_output(pickled, step="p", run_id="r")
    with pytest.raises(UntrustedStoreError):
        store.load_value(pickled)


def test_a_whole_run_on_an_untrusted_store_unpickles_nothing(
    untrusted: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_unpickling(monkeypatch)
    run = mixed_flow(untrusted).run(progress=False)
    fork = run.fork(from_step="total", progress=False)
    for r in (run, fork):
        assert {s: r[s] for s in ("config", "total", "doubled")} == {
            "config": {"keys": ["a", "b"], "depth": 2},
            "total": 23.0,
            "doubled": 6,
        }
        assert r["frame"].shape == (4, 2) and r["array"].shape == (2, 3)
        with pytest.raises(UntrustedStoreError):
            r["thing"]


# -- a store file from elsewhere cannot smuggle SQL in -----------------------------------------


def test_sql_in_a_tampered_blob_row_is_never_run(tmp_path: Path) -> None:
    path = tmp_path / "tampered.duckdb"
    store = DuckDBStore(path)
    run = mixed_flow(store).run(progress=False)
    ref = run.ref("frame")
    store.close()
    con = duckdb.connect(str(path))
    con.execute(
        "UPDATE blobs SET table_name = ? WHERE hash = ?",
        ['nbflow_values.x"; DROP TABLE runs; --', ref.hash],
    )
    con.close()
    store = DuckDBStore(path, trust=False)
    try:
        # The value is read from the table named after its hash, not from the row's text.
        assert nf.get_run(run.id, store)["frame"].shape == (4, 2)
        report = store.gc(keep_last=0)  # drops the value's table by the (quoted) row text
        assert run.id in report.runs
        assert store.sql("SELECT count(*) AS n FROM runs")["n"].iloc[0] == 0  # still a table
    finally:
        store.close()


def test_a_ref_whose_hash_is_not_hex_names_no_table(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    try:
        forged = ValueRef(Codec.ARROW, "00; DROP TABLE runs; --", 10, "pandas.DataFrame")
        with pytest.raises(StoreError, match="is not a content hash"):
            store.table_name(forged)
        assert store.list_runs() == []
    finally:
        store.close()


def test_compacting_a_file_with_quotes_in_its_name(tmp_path: Path) -> None:
    path = tmp_path / 'it\'s "odd"; -- x.duckdb'
    store = DuckDBStore(path)
    try:
        first = mixed_flow(store).run(progress=False)
        second = mixed_flow(store).run(n=9, progress=False)
        report = store.gc(keep_last=1)  # deletes a run and compacts the file
        assert report.runs == (first.id,)
        assert nf.get_run(second.id, store)["frame"].shape == (9, 2)
    finally:
        store.close()
