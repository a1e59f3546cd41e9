"""Export a run to a folder and import it into another store, on every backend."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from store_backends import BACKENDS

import nbflow as nf
from nbflow.errors import TransferError, UnknownRunError
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.memory.store import MemoryStore
from nbflow.transfer import archives as transfer


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
        from nbflow.store.duckdb.store import DuckDBStore

        target = DuckDBStore(tmp_path / "target.duckdb")
    try:
        for run in (first, cached, fork):
            nf.export_run(store, run.id, tmp_path / f"export-{run.id}")
        for run in (first, cached, fork):
            assert nf.import_run(target, tmp_path / f"export-{run.id}", trust=True) == run.id
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


# -- an import believes nothing it reads ------------------------------------------------------


class Point:
    """A value only pickle can store (module-level, so a fresh process can unpickle it)."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    def __hash__(self) -> int:
        return hash(self.x)


def pickled_flow(store: nf.Store) -> nf.Flow:
    """A frame, a dict and a pickled object."""
    flow = nf.Flow("pickles", store=store)

    @flow.step
    def frame(n: int = 3):
        return pd.DataFrame({"x": np.arange(n)})

    @flow.step
    def config(frame):
        return {"rows": len(frame)}

    @flow.step
    def thing(config, x: int = 3):
        return Point(x)

    return flow


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_pickle_listed_under_another_values_hash_cannot_poison_the_cache(
    store: nf.Store, tmp_path: Path
) -> None:
    # The attack: an export whose pickle claims the hash of a value the victim's own flow
    # will compute; imported, the victim's later run would load the attacker's bytes.
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    mine = run.ref("thing")
    victim = nf.values.encode(Point(99), step="thing").ref  # what the victim will compute
    manifest = manifest_of(folder)
    entry = manifest["values"].pop(mine.hash)
    entry["ref"]["hash"] = victim.hash
    manifest["values"][mine.hash] = entry  # its bytes hash to the key, not to its ref
    write_manifest(folder, manifest)
    with pytest.raises(TransferError, match=f"claims to be the value '{victim.hash}'"):
        nf.import_run(store, folder)
    assert not store.has_blob(victim.hash) and not store.has_blob(mine.hash)
    # The events may lie the same way: the value they name is the one checked.
    events = (folder / "events.jsonl").read_text().replace(mine.hash, victim.hash)
    (folder / "events.jsonl").write_text(events)
    entry["ref"]["hash"] = victim.hash
    write_manifest(folder, {"values": {**manifest["values"], victim.hash: entry}})
    with pytest.raises(TransferError, match=f"value {victim.hash} in .* does not match"):
        nf.import_run(store, folder)
    assert not store.has_blob(victim.hash)
    with pytest.raises(UnknownRunError):
        store.get_run(run.id)
    # The victim's own run stores and loads its own value.
    assert pickled_flow(store).run(x=99, progress=False)["thing"] == Point(99)


def test_a_tampered_pickle_is_refused_and_nothing_written(store: nf.Store, tmp_path: Path) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    pickle_file = folder / "values" / f"{run.ref('thing').hash}.pickle"
    pickle_file.write_bytes(pickle_file.read_bytes() + b"\x00")
    with pytest.raises(TransferError, match="does not match its content hash"):
        nf.import_run(store, folder)
    with pytest.raises(UnknownRunError):
        store.get_run(run.id)
    assert store.list_blobs() == []
    assert store.get_flow("pickles", run.record.flow_fingerprint) is None


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_file_names_outside_the_export_folder_are_refused(
    store: nf.Store, tmp_path: Path, where: str
) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    (tmp_path / "exports").mkdir()
    folder = nf.export_run(source, run.id, tmp_path / "exports" / "out")
    hash = run.ref("thing").hash
    # The right bytes, outside the folder: only the name is wrong.
    outside = tmp_path / "exports" / "stolen.pickle"
    outside.write_bytes((folder / "values" / f"{hash}.pickle").read_bytes())
    manifest = manifest_of(folder)
    manifest["values"][hash]["file"] = str(outside) if where == "absolute" else "../stolen.pickle"
    write_manifest(folder, manifest)
    with pytest.raises(TransferError, match="outside the export folder"):
        nf.import_run(store, folder)
    with pytest.raises(UnknownRunError):
        store.get_run(run.id)
    assert store.list_blobs() == []


def test_a_link_leading_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    hash = run.ref("thing").hash
    value = folder / "values" / f"{hash}.pickle"
    outside = tmp_path / "elsewhere.pickle"
    value.rename(outside)
    value.symlink_to(outside)
    with MemoryStore() as target, pytest.raises(TransferError, match="leads outside"):
        nf.import_run(target, folder)


@pytest.mark.parametrize("how", ["unlisted", "file missing"])
def test_an_export_that_lacks_a_value_its_events_refer_to_is_refused(
    store: nf.Store, tmp_path: Path, how: str
) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    hash = run.ref("frame").hash
    manifest = manifest_of(folder)
    if how == "unlisted":
        del manifest["values"][hash]
        write_manifest(folder, manifest)
    for path in (folder / "values").glob(f"{hash}*"):
        path.unlink()
    with pytest.raises(TransferError, match=f"does not contain the value {hash}"):
        nf.import_run(store, folder)
    with pytest.raises(UnknownRunError):
        store.get_run(run.id)
    assert store.list_blobs() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_id", "../../x"),
        ("run_id", "evil\x1b[2J"),
        ("run_id", "two\nlines"),
        ("run_id", ""),
        ("run_id", 42),
        ("parent_run_id", "a b"),
        ("thread_id", "/etc"),
    ],
)
def test_run_ids_from_an_import_are_checked(tmp_path: Path, field: str, value: object) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    header = json.loads((folder / "run.json").read_text())
    header["run"][field] = value
    (folder / "run.json").write_text(json.dumps(header))
    with MemoryStore() as target:
        with pytest.raises(TransferError, match="is not a valid run id"):
            nf.import_run(target, folder)
        assert target.list_runs() == [] and target.list_blobs() == []


def test_step_names_from_an_import_are_checked(tmp_path: Path) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    events = (folder / "events.jsonl").read_text().replace('"frame"', '"fr\\u001b[31mame"')
    (folder / "events.jsonl").write_text(events)
    with MemoryStore() as target:
        with pytest.raises(TransferError, match="which no step can be called"):
            nf.import_run(target, folder)
        assert target.list_runs() == []


def test_a_log_that_does_not_fold_is_refused_before_anything_is_written(
    store: nf.Store, tmp_path: Path
) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    lines = (folder / "events.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["type"] == "run_completed"
    lines.append(json.dumps({**last, "seq": last["seq"] + 1}))  # completed twice
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TransferError, match="do not make a run"):
        nf.import_run(store, folder)
    with pytest.raises(UnknownRunError):
        store.get_run(run.id)
    assert store.list_blobs() == []
    assert store.get_flow("pickles", run.record.flow_fingerprint) is None


def test_a_flow_definition_that_is_not_the_runs_is_refused(tmp_path: Path) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    header = json.loads((folder / "run.json").read_text())
    header["flow"]["steps"][0]["fingerprint"] = "0" * 32  # to plant another definition
    (folder / "run.json").write_text(json.dumps(header))
    with MemoryStore() as target:
        with pytest.raises(TransferError, match="does not match its fingerprint"):
            nf.import_run(target, folder)
        assert target.get_flow("pickles", run.record.flow_fingerprint) is None


# -- imported pickles are someone else's ------------------------------------------------------


def test_imported_pickles_are_refused_until_trusted(store: nf.Store, tmp_path: Path) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    assert store.trust is True
    nf.import_run(store, folder)
    imported = nf.get_run(run.id, store)
    assert imported["config"] == {"rows": 3} and imported["frame"].shape == (3, 1)
    with pytest.raises(nf.errors.UntrustedImportError) as caught:
        imported["thing"]  # a trusted store, and still refused
    error = caught.value
    assert isinstance(error, nf.errors.UntrustedStoreError)
    assert (error.step, error.run_id, error.source_run_id) == ("thing", run.id, run.id)
    message = str(error)
    assert f"imported from the export {folder.resolve()} without --trust" in message
    assert f"nbflow trust {run.id}" in message and "nbflow import DIR --trust" in message
    assert f"nf.mark_trusted(store, {run.id!r})" in message
    # A run of the importer's own computes those steps itself: the import is no cache hit.
    again = pickled_flow(store)

    @again.step
    def shown(thing):
        return thing.x

    mine = again.run(progress=False)
    assert mine["shown"] == 3 and set(mine.step_states().values()) == {"completed"}
    assert nf.mark_trusted(store, run.id) == [run.ref("thing").hash]
    assert nf.mark_trusted(store, run.id) == []  # nothing left to mark
    assert nf.get_run(run.id, store)["thing"] == Point(3)
    assert again.run(progress=False)["shown"] == 3


def test_a_trusted_import_loads_its_pickles(store: nf.Store, tmp_path: Path) -> None:
    source = MemoryStore()
    run = pickled_flow(source).run(progress=False)
    folder = nf.export_run(source, run.id, tmp_path / "out")
    nf.import_run(store, folder, trust=True)
    assert nf.get_run(run.id, store)["thing"] == Point(3)


def test_a_trusted_import_trusts_a_value_an_earlier_import_left_untrusted(
    tmp_path: Path,
) -> None:
    source = MemoryStore()
    flow = pickled_flow(source)
    first, second = flow.run(progress=False), flow.run(n=4, progress=False)
    assert first.ref("thing") == second.ref("thing")  # one value, two runs
    with MemoryStore() as target:
        for run in (first, second):
            nf.export_run(source, run.id, tmp_path / run.id)
        nf.import_run(target, tmp_path / first.id)
        with pytest.raises(nf.errors.UntrustedImportError):
            nf.get_run(first.id, target)["thing"]
        nf.import_run(target, tmp_path / second.id, trust=True)
        assert nf.get_run(first.id, target)["thing"] == Point(3)


# -- strict JSON ---------------------------------------------------------------------------------


# (PostgreSQL's json type has no NaN: a PostgreSQL store cannot record such a run at all)
@pytest.mark.parametrize("kind", ["memory", "duckdb"])
def test_non_finite_parameters_round_trip_as_strict_json(kind: str, tmp_path: Path) -> None:
    with BACKENDS[kind](tmp_path) as store:
        check_non_finite_parameters(store, tmp_path)


def check_non_finite_parameters(store: nf.Store, tmp_path: Path) -> None:
    flow = nf.Flow("floats", store=store)

    @flow.step
    def echo(a: float = 0.0, b: object = None, c: object = None):
        return {"a": str(a)}

    tricky = {"$nbflow:float": "nan"}  # looks like the tag, and is a plain dict
    run = flow.run(a=float("nan"), b=[float("inf"), -float("inf"), 1.5], c=tricky, progress=False)
    folder = nf.export_run(store, run.id, tmp_path / "out")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    for path in [*folder.glob("*.json"), *folder.glob("values/*.json")]:
        json.loads(path.read_text(), parse_constant=refuse)
    for line in (folder / "events.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)
    with MemoryStore() as target:
        nf.import_run(target, folder)
        params = target.get_run(run.id).params
        assert np.isnan(params["a"]) and params["b"] == [np.inf, -np.inf, 1.5]
        assert params["c"] == tricky
        # (json.dumps: NaN is not equal to itself, its text is)
        assert [json.dumps(e.payload) for e in target.read_events(run.id)] == [
            json.dumps(e.payload) for e in store.read_events(run.id)
        ]


# -- what a killed export leaves behind ----------------------------------------------------------

#: Exports run $1 of the DuckDB store $2 to $3, and is killed (SIGKILL) midway.
KILLED_EXPORT = """
import os, signal, sys
from nbflow.transfer import archives as transfer
from nbflow.store.duckdb.store import DuckDBStore

name = "write_value" if hasattr(transfer, "write_value") else "_write_value"
real = getattr(transfer, name)

def write_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(transfer, name, write_then_die)
transfer.export_run(DuckDBStore(sys.argv[2]), sys.argv[1], sys.argv[3])
"""


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def test_what_a_killed_export_leaves_is_removed_by_the_next_export(tmp_path: Path) -> None:
    import subprocess
    import sys

    from click.testing import CliRunner

    from nbflow.cli import main

    path = tmp_path / "store.duckdb"
    with DuckDBStore(path) as store:
        run = make_flow(store).run(progress=False)
    exports = tmp_path / "exports"
    exports.mkdir()

    def killed_export(name: str) -> None:
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_EXPORT, run.id, str(path), str(exports / name)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert killed.returncode == -9, killed.stderr

    killed_export("first")
    [first] = leftovers(exports)
    assert first.name.startswith(".first.") and (first / "values").is_dir()
    killed_export("second")  # removes what the first left, and leaves its own
    [left] = leftovers(exports)
    assert left.name.startswith(".second.")
    # An export that is still writing (this process) is left alone.
    live = Path(tempfile.mkdtemp(prefix=".live.nbflow-export.", dir=exports))
    transfer._write_note(live)

    with DuckDBStore(path) as store, pytest.warns(UserWarning) as warned:
        nf.export_run(store, run.id, exports / "first")
    assert [str(w.message) for w in warned] == [
        f"removed {left}, left by an export whose process is gone"
    ]
    assert leftovers(exports) == [live]
    assert (exports / "first" / "run.json").is_file()
    assert not (exports / "first" / transfer.WRITER_NOTE).exists()

    killed_export("third")
    [left] = [p for p in leftovers(exports) if p != live]
    result = CliRunner().invoke(
        main, ["export", run.id, str(exports / "third"), "--store", str(path)]
    )
    assert result.exit_code == 0, result.stderr
    assert f"removed {left}, left by an export whose process is gone" in result.stdout
    assert leftovers(exports) == [live]
