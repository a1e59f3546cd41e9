"""Human gates from the command line (``nbflow approve``, ``reject``, ``token``, ``runs
--status waiting``, a run that stops at a gate) and from a ``%%gate`` cell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import nbflow as nf
from nbflow.cli import main
from nbflow.errors import CellError

MODULE = """
import nbflow as nf
flow = nf.Flow("cli_gate")

@flow.step
def raw(n: int = 4):
    return list(range(n))

@flow.gate
def review(raw):
    return {"rows": len(raw)}

@flow.step
def publish(review):
    return f"published {review['rows']} rows"
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"NBFLOW_STORE": None})


@pytest.fixture
def waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A module flow run by ``nbflow run`` until its gate: (store path, the printed token)."""
    (tmp_path / "flowmod.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "s.duckdb")
    out = invoke("run", "flowmod.py", "--store", store)
    assert out.exit_code == 0, out.output
    assert "waiting at gate review; approve with:" in out.stdout
    token = out.stdout.split("nbflow approve ", 1)[1].split()[0]
    return store, token


def test_runs_lists_what_waits_with_its_gate(waiting: tuple[str, str]) -> None:
    store, _ = waiting
    out = invoke("runs", "--status", "waiting", "--store", store, "--format", "csv")
    assert out.exit_code == 0, out.output
    import csv

    (row,) = csv.DictReader(out.stdout.strip().splitlines())
    assert (row["status"], row["gate"]) == ("waiting", "review") and float(row["waited_s"]) >= 0
    table = invoke("runs", "--status", "waiting", "--store", store)
    assert table.stdout.split()[:5] == ["run_id", "flow", "status", "gate", "waited_s"]


def test_approve_from_the_cli_then_resume(
    waiting: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, token = waiting
    out = invoke("approve", token, "--by", "ann", "--comment", "fine", "--store", store)
    assert out.exit_code == 0, out.output
    assert "gate approved: run" in out.stdout and "is now waiting" in out.stdout
    again = invoke("approve", token, "--store", store)
    assert again.exit_code == 2 and "this token was already used" in again.stderr
    (row,) = nf.runs(store).itertuples()
    run = nf.get_run(row.run_id, store)
    (gate,) = run.gates.itertuples()
    assert (gate.status, gate.decided_by, gate.comment) == ("approved", "ann", "fine")
    monkeypatch.setenv("NBFLOW_STORE", store)
    monkeypatch.syspath_prepend(str(Path(store).parent))
    monkeypatch.delitem(sys.modules, "flowmod", raising=False)  # (a test before loaded one)
    import flowmod  # the flow, defined here (on that store): the run continues

    assert run.resume(progress=False).status == "completed"
    assert run["publish"] == "published 4 rows"
    del flowmod


def test_reject_from_the_cli(waiting: tuple[str, str]) -> None:
    store, token = waiting
    out = invoke("reject", token, "--by", "bob", "--store", store)
    assert out.exit_code == 0, out.output
    assert "gate rejected" in out.stdout and "cancelled" in out.stdout
    (row,) = nf.runs(store).itertuples()
    assert nf.get_run(row.run_id, store).step_states()["publish"] == "skipped"


def test_token_command_and_refused_tokens(waiting: tuple[str, str]) -> None:
    store, first = waiting
    (row,) = nf.runs(store).itertuples()
    out = invoke("token", row.run_id, "review", "--expires-in", "1", "--store", store)
    assert out.exit_code == 0, out.output
    fresh = out.stdout.strip()
    assert fresh.startswith("nbflow-gate.v1.") and fresh != first
    unknown = invoke("token", row.run_id, "publish", "--store", store)
    assert unknown.exit_code == 2 and "no gate 'publish'" in unknown.stderr
    tampered = fresh[:-3] + ("A" if fresh[-3] != "A" else "B") + fresh[-2:]
    bad = invoke("approve", tampered, "--store", store)
    assert bad.exit_code == 2 and "signature does not match" in bad.stderr
    garbage = invoke("approve", "hello", "--store", store)
    assert garbage.exit_code == 2 and "is not an nbflow gate token" in garbage.stderr
    assert nf.get_run(row.run_id, store).status == "waiting"


def test_a_gate_cell(tmp_path: Path) -> None:
    from nbflow.magics import define_step

    flow = nf.Flow("cells_gate", store=str(tmp_path / "s.duckdb"))
    namespace: dict[str, object] = {"flow": flow}
    define_step(namespace, "raw", "raw = [1, 2, 3]")
    shown = define_step(namespace, "look --run", "look = {'n': len(raw)}", gate=True)
    assert shown == {"n": 3}  # the gate's value, bound and shown: the run waits
    assert flow.steps["look"].options.gate
    run = flow.latest_run()
    assert run is not None and run.status == "waiting"
    with pytest.raises(CellError):
        define_step(namespace, "look --bogus", "look = 1", gate=True)
