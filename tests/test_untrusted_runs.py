"""An imported run cannot stand in for your own steps: until you trust it, its outputs are
no cache hits for your runs (issue 14, point 3). Forks of it, copies, re-exports, and
backends that cannot mark runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import nbflow as nf
from nbflow.api.run import Run
from nbflow.cli import main
from nbflow.errors import TransferError, UnknownRunError
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.memory.store import MemoryStore
from nbflow.store.untrusted import RunMarks

TRUE_ROWS = [2, 3, 4]  # what the victim's step computes with threshold=2
FORGED_ROWS = [666]


def victim_flow(store: nf.Store) -> nf.Flow:
    """The flow, as victim and attacker both have it (a shared notebook)."""
    flow = nf.Flow("churn", store=store)

    @flow.step
    def report(threshold: int = 1):
        return pd.DataFrame({"x": [i for i in range(5) if i >= threshold]})

    @flow.step
    def total(report):
        return int(report["x"].sum())

    return flow


def forged_export(attacker: nf.Store, folder: Path) -> str:
    """An export of a run of ``churn`` with threshold=2, as the attacker's store recorded
    it (so its cache keys are those your steps compute), whose ``report`` output is
    replaced by another DataFrame, correctly hashed; return the run id."""
    genuine = victim_flow(attacker).run(threshold=2, progress=False)
    forger = nf.Flow("forger", store=attacker)

    @forger.step
    def report():
        return pd.DataFrame({"x": FORGED_ROWS})

    fake = forger.run(progress=False)
    nf.export_run(attacker, genuine.id, folder)
    other = nf.export_run(attacker, fake.id, folder.with_name(folder.name + "-fake"))
    old, new = genuine.ref("report").to_json(), fake.ref("report").to_json()
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = json.loads((other / "manifest.json").read_text())["values"][new["hash"]]
    for key in ("file", "meta"):
        shutil.copy(other / entry[key], folder / entry[key])
    del manifest["values"][old["hash"]]
    manifest["values"][new["hash"]] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest))
    lines = []
    for line in (folder / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["payload"].get("output") == old:
            event["payload"]["output"] = new
        lines.append(json.dumps(event))
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    return genuine.id


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"NBFLOW_STORE": None, "NBFLOW_TRUST": None})


def test_an_imported_run_cannot_stand_in_for_your_steps(tmp_path: Path) -> None:
    victim = tmp_path / "victim.duckdb"
    with DuckDBStore(victim) as store:
        victim_flow(store).run(threshold=1, progress=False)  # nothing stored for threshold=2
    with MemoryStore() as attacker:
        run_id = forged_export(attacker, tmp_path / "export")

    imported = invoke("import", str(tmp_path / "export"), "--store", str(victim))
    assert imported.exit_code == 0, imported.stderr
    assert "its outputs are no cache hits for your runs" in imported.stdout
    assert f"nbflow trust {run_id} --store {victim}" in imported.stdout
    with DuckDBStore(victim) as store:
        forged = nf.get_run(run_id, store)
        assert list(forged["report"]["x"]) == FORGED_ROWS  # the import is there, as it says
        mine = victim_flow(store).run(threshold=2, progress=False)
        assert mine.step_states() == {"report": "completed", "total": "completed"}
        assert list(mine["report"]["x"]) == TRUE_ROWS and mine["total"] == sum(TRUE_ROWS)
        assert set(store.untrusted_runs()) == {run_id}

    # Once trusted (your choice), the import is reused like a run of your own.
    other = tmp_path / "other.duckdb"
    assert invoke("import", str(tmp_path / "export"), "--store", str(other)).exit_code == 0
    trusted = invoke("trust", run_id, "--store", str(other))
    assert trusted.exit_code == 0, trusted.stderr
    assert f"trusted run(s) {run_id}: their outputs are cache hits" in trusted.stdout
    assert "nothing to do" in invoke("trust", run_id, "--store", str(other)).stdout
    with DuckDBStore(other) as store:
        assert store.untrusted_runs() == {}
        reused = victim_flow(store).run(threshold=2, progress=False)
        assert reused.step_states()["report"] == "cached"
        assert reused.steps.set_index("step").loc["report", "source_run_id"] == run_id
        assert list(reused["report"]["x"]) == FORGED_ROWS


def test_an_import_with_trust_is_a_cache_hit_at_once(store: nf.Store, tmp_path: Path) -> None:
    with MemoryStore() as source:
        run = victim_flow(source).run(threshold=2, progress=False)
        nf.export_run(source, run.id, tmp_path / "export")
    nf.import_run(store, tmp_path / "export", trust=True)
    assert store.untrusted_runs() == {}
    again = victim_flow(store).run(threshold=2, progress=False)
    assert set(again.step_states().values()) == {"cached"}


def test_a_fork_of_an_untrusted_run_uses_its_outputs_and_lends_them_to_no_one(
    store: nf.Store, tmp_path: Path
) -> None:
    with MemoryStore() as attacker:
        run_id = forged_export(attacker, tmp_path / "export")
    nf.import_run(store, tmp_path / "export")
    flow = victim_flow(store)
    imported = Run(store, run_id, flow)
    # You asked for this run: a fork of it reuses its outputs, by reference.
    fork = imported.fork(from_step="total", progress=False)
    assert fork.step_states() == {"report": "cached", "total": "completed"}
    assert fork["total"] == sum(FORGED_ROWS)
    marks = store.untrusted_runs()
    assert set(marks) == {run_id, fork.id}
    assert (marks[fork.id].derived_from, marks[fork.id].source) == (run_id, f"fork of run {run_id}")
    fork_of_fork = fork.fork(from_step="total", progress=False)
    assert store.untrusted_runs([fork_of_fork.id])[fork_of_fork.id].derived_from == fork.id
    # Neither the import nor its forks stand in for your own steps.
    mine = flow.run(threshold=2, progress=False)
    assert mine.step_states() == {"report": "completed", "total": "completed"}
    assert mine["total"] == sum(TRUE_ROWS)
    # Trusting the run trusts the forks that were untrusted because of it.
    assert nf.mark_trusted(store, run_id) == []  # (no pickles to mark)
    assert store.untrusted_runs() == {}


def test_an_untrusted_run_makes_no_step_fresh(store: nf.Store, tmp_path: Path) -> None:
    with MemoryStore() as attacker:
        run_id = forged_export(attacker, tmp_path / "export")
    nf.import_run(store, tmp_path / "export")
    flow = victim_flow(store)
    status = flow.status(threshold=2)
    assert set(status["state"]) == {"never_run"}  # a run would compute every step
    # Compared with the run when asked (its `total` read the forged frame: stale).
    asked = flow.status(run_id, threshold=2).set_index("step")["state"].to_dict()
    assert asked == {"report": "fresh", "total": "stale"}
    nf.mark_trusted(store, run_id)
    assert flow.status(threshold=2).set_index("step")["state"].to_dict() == asked


def test_a_trusted_run_of_yours_forked_stays_trusted(store: nf.Store) -> None:
    run = victim_flow(store).run(threshold=2, progress=False)
    fork = run.fork(from_step="total", progress=False)
    assert fork.status == "completed" and store.untrusted_runs() == {}


def test_a_re_export_of_an_untrusted_run_stays_untrusted_unless_trusted(tmp_path: Path) -> None:
    with MemoryStore() as attacker:
        run_id = forged_export(attacker, tmp_path / "export")
    with MemoryStore() as first, MemoryStore() as second, MemoryStore() as third:
        nf.import_run(first, tmp_path / "export")
        nf.export_run(first, run_id, tmp_path / "again")
        nf.import_run(second, tmp_path / "again")
        assert set(second.untrusted_runs()) == {run_id}
        mine = victim_flow(second).run(threshold=2, progress=False)
        assert list(mine["report"]["x"]) == TRUE_ROWS
        nf.import_run(third, tmp_path / "again", trust=True)  # trusted by its importer
        assert third.untrusted_runs() == {}
        assert list(victim_flow(third).run(threshold=2, progress=False)["report"]["x"]) == (
            FORGED_ROWS
        )


def test_copies_keep_the_mark_and_add_one_from_an_untrusted_store(tmp_path: Path) -> None:
    with MemoryStore() as attacker:
        run_id = forged_export(attacker, tmp_path / "export")
    path = tmp_path / "source.duckdb"
    with DuckDBStore(path) as source:
        nf.import_run(source, tmp_path / "export")
        own = victim_flow(source).run(threshold=3, progress=False).id
        with MemoryStore() as target:
            report = nf.copy_runs(source, target)
            assert set(report.copied) == {run_id, own}
            assert target.untrusted_runs() == source.untrusted_runs()
            assert list(victim_flow(target).run(threshold=2, progress=False)["report"]["x"]) == (
                TRUE_ROWS
            )
    # Every run copied out of a store opened with trust=False is someone else's.
    with DuckDBStore(path, trust=False) as source, MemoryStore() as target:
        nf.copy_runs(source, target)
        marks = target.untrusted_runs()
        assert set(marks) == {run_id, own}
        assert marks[run_id].source.startswith("imported from ")  # the mark it had
        assert marks[own].source == f"copied from {path}, opened with trust=False"
        again = victim_flow(target).run(threshold=3, progress=False)
        assert set(again.step_states().values()) == {"completed"}


class NoMarks(MemoryStore):
    """A backend that keeps no run marks (as a third party's might)."""

    untrusted_runs = RunMarks.untrusted_runs
    mark_untrusted = RunMarks.mark_untrusted
    clear_untrusted = RunMarks.clear_untrusted


def test_a_backend_that_cannot_mark_runs_takes_only_trusted_imports(tmp_path: Path) -> None:
    path = tmp_path / "source.duckdb"
    with DuckDBStore(path) as source:
        run = victim_flow(source).run(threshold=2, progress=False)
        nf.export_run(source, run.id, tmp_path / "export")
    with NoMarks() as target:
        with pytest.raises(TransferError, match="cannot mark runs untrusted"):
            nf.import_run(target, tmp_path / "export")
        with (
            DuckDBStore(path, trust=False) as untrusted,
            pytest.raises(TransferError, match="cannot mark runs untrusted"),
        ):
            nf.copy_runs(untrusted, target)
        with pytest.raises(UnknownRunError):
            target.get_run(run.id)
        assert target.list_blobs() == []
        assert nf.import_run(target, tmp_path / "export", trust=True) == run.id
