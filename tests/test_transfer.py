"""Export a run to a folder and import it into another store, on every backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.errors import TransferError, UnknownRunError
from nbflow.store.memory import MemoryStore


def make_flow(store: nf.Store) -> nf.Flow:
    flow = nf.Flow("transfer", store=store)

    @flow.step
    def frame(n: int = 5):
        return pd.DataFrame(
            {
                "x": np.arange(n),
                "kind": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
                "when": pd.date_range("2024-01-01", periods=n, tz="Europe/Paris"),
            },
            index=pd.Index([f"r{i}" for i in range(n)], name="row"),
        )

    @flow.step
    def periods(frame):
        return pd.Series(pd.period_range("2024-01", periods=len(frame), freq="M"))

    @flow.step
    def array(frame, scale: float = 2.0):
        return frame["x"].to_numpy() * scale

    @flow.step
    def summary(array):
        return {"total": float(array.sum()), "items": [float(v) for v in array]}

    @flow.step
    def big(summary):
        return {"rows": [summary] * 200}

    @flow.step
    def tags(summary):
        return {("total", round(summary["total"])), ("size", len(summary["items"]))}

    return flow


def snapshot(store: nf.Store, run_id: str) -> dict[str, object]:
    record = store.get_run(run_id)
    run = nf.get_run(run_id, store=store)
    return {
        "record": record,
        "events": store.read_events(run_id),
        "executions": store.executions(run_id),
        "params": run.params,
        "outputs": {step: run[step] for step in run.outputs},
    }


def assert_same_outputs(a: dict[str, object], b: dict[str, object]) -> None:
    outputs_a, outputs_b = a["outputs"], b["outputs"]
    assert isinstance(outputs_a, dict) and isinstance(outputs_b, dict)
    assert outputs_a.keys() == outputs_b.keys()
    for step, value in outputs_a.items():
        other = outputs_b[step]
        assert type(other) is type(value), step
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, other, check_exact=True)
        elif isinstance(value, pd.Series):
            pd.testing.assert_series_equal(value, other, check_exact=True)
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, other)
            assert value.dtype == other.dtype
        else:
            assert value == other, step


def test_round_trip_with_fork_and_cached_steps(store: nf.Store, tmp_path: Path) -> None:
    flow = make_flow(store)
    first = flow.run(progress=False)
    cached = flow.run(progress=False)  # every step cached
    assert set(cached.step_states().values()) == {"cached"}
    fork = first.fork(from_step="array", scale=3.0)
    fork.wait()
    assert fork.parent_id == first.id

    target = MemoryStore() if not isinstance(store, MemoryStore) else None
    if target is None:
        from nbflow.store.duckdb_store import DuckDBStore

        target = DuckDBStore(tmp_path / "target.duckdb")
    try:
        for run in (first, cached, fork):
            nf.export_run(store, run.id, tmp_path / f"export-{run.id}")
        for run in (first, cached, fork):
            assert nf.import_run(target, tmp_path / f"export-{run.id}") == run.id
        for run in (first, cached, fork):
            original, imported = snapshot(store, run.id), snapshot(target, run.id)
            for key in ("record", "events", "executions", "params"):
                assert original[key] == imported[key], key
            assert_same_outputs(original, imported)
        flow_record = store.get_run(first.id)
        assert target.get_flow(flow_record.flow, flow_record.flow_fingerprint) == store.get_flow(
            flow_record.flow, flow_record.flow_fingerprint
        )
    finally:
        target.close()


def test_export_folder_describes_itself(store: nf.Store, tmp_path: Path) -> None:
    run = make_flow(store).run(progress=False)
    (tmp_path / "exports").mkdir()
    folder = nf.export_run(store, run.id, tmp_path / "exports" / "out")
    header = json.loads((folder / "run.json").read_text())
    assert header["format"] == "nbflow-run-export"
    assert header["run"]["run_id"] == run.id
    assert header["params"] == {"n": 5, "scale": 2.0}
    assert "def frame" in header["flow"]["steps"][0]["source"]
    files = {p.suffix for p in (folder / "values").iterdir()}
    assert {".parquet", ".npy", ".json", ".pickle"} <= files
    lines = (folder / "events.jsonl").read_text().splitlines()
    assert len(lines) == run.version
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["out"]  # no temp dir left behind


def test_import_refuses_an_existing_run(store: nf.Store, tmp_path: Path) -> None:
    run = make_flow(store).run(progress=False)
    folder = nf.export_run(store, run.id, tmp_path / "out")
    with pytest.raises(TransferError, match=f"run {run.id} already exists"):
        nf.import_run(store, folder)


def test_import_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    with MemoryStore() as target:
        with pytest.raises(TransferError, match="is not an nbflow run export"):
            nf.import_run(target, tmp_path)
        (tmp_path / "run.json").write_text('{"format": "something else"}')
        with pytest.raises(TransferError, match="is not an nbflow run export"):
            nf.import_run(target, tmp_path)
        with pytest.raises(TransferError, match="is not a folder"):
            nf.import_run(target, tmp_path / "missing")


def test_import_refuses_a_tampered_value(store: nf.Store, tmp_path: Path) -> None:
    run = make_flow(store).run(progress=False)
    folder = nf.export_run(store, run.id, tmp_path / "out")
    npy = next((folder / "values").glob("*.npy"))
    np.save(npy, np.arange(3.0))
    with MemoryStore() as target, pytest.raises(TransferError, match="does not match"):
        nf.import_run(target, folder)


def test_export_refuses_an_existing_folder_and_an_unknown_run(
    store: nf.Store, tmp_path: Path
) -> None:
    run = make_flow(store).run(progress=False)
    with pytest.raises(TransferError, match="already exists"):
        nf.export_run(store, run.id, tmp_path)
    with pytest.raises(UnknownRunError):
        nf.export_run(store, "nope", tmp_path / "out")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "manifest.json").unlink(), "incomplete nbflow run export: manifest.json"),
        (lambda f: (f / "events.jsonl").write_text("{not json\n"), "line 1 of"),
        (
            lambda f: (f / "events.jsonl").write_text(
                (f / "events.jsonl").read_text().split("\n", 1)[1]
            ),
            "seq 2 where 1 was expected",
        ),
        (lambda f: (f / "run.json").write_text("{"), "cannot read run.json"),
        (
            lambda f: (f / "run.json").write_text(
                json.dumps({"format": "nbflow-run-export", "format_version": 99})
            ),
            "format version 99",
        ),
    ],
)
def test_import_refuses_a_damaged_export(store: nf.Store, tmp_path: Path, damage, message) -> None:
    run = make_flow(store).run(progress=False)
    folder = nf.export_run(store, run.id, tmp_path / "out")
    damage(folder)
    with MemoryStore() as target:
        with pytest.raises(TransferError, match=re.escape(message)):
            nf.import_run(target, folder)
        with pytest.raises(UnknownRunError):
            target.get_run(run.id)
