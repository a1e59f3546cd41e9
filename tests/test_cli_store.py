"""The store commands of the ``nbflow`` command line: runs, show, events, diff, gc,
export and import; their output, errors and exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import nbflow as nf
from nbflow.cli import main


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={"NBFLOW_STORE": None, **(env or {})})


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nbflow: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runs.duckdb"


@pytest.fixture
def runs(path: Path) -> dict[str, nf.Run]:
    """A completed run, a fork of it with another parameter, and a failed run."""
    store = nf.open_store(path)
    flow = nf.Flow("sales", store=store)

    @flow.step
    def raw(n: int = 4):
        return pd.DataFrame({"x": range(n)})

    @flow.step
    def total(raw, scale: int = 1):
        return int(raw["x"].sum()) * scale

    first = flow.run(progress=False)
    fork = first.fork(from_step="total", scale=3)
    broken = nf.Flow("broken", store=store)

    @broken.step
    def explode():
        raise ValueError("no data today")

    failed = broken.run(progress=False, raise_on_error=False)
    return {"first": first, "fork": fork, "failed": failed}


def test_runs_lists_newest_first_with_filters_and_formats(path: Path, runs) -> None:
    result = invoke("runs", "--store", str(path))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["run_id", "flow", "status"]
    assert [line.split()[0] for line in lines[1:]] == [
        runs["failed"].id,
        runs["fork"].id,
        runs["first"].id,
    ]
    result = invoke("runs", "--store", str(path), "--flow", "sales", "--format", "json")
    rows = json.loads(result.stdout)
    assert [r["run_id"] for r in rows] == [runs["fork"].id, runs["first"].id]
    assert rows[0]["params"] == {"n": 4, "scale": 3}
    result = invoke("runs", "--store", str(path), "--status", "failed", "--format", "csv")
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert frame["run_id"].tolist() == [runs["failed"].id]
    result = invoke("runs", "--store", str(path), "--limit", "1", "--format", "json")
    assert len(json.loads(result.stdout)) == 1


def test_runs_with_the_store_from_the_environment(path: Path, runs) -> None:
    result = invoke("runs", "--format", "json", env={"NBFLOW_STORE": str(path)})
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3


def test_show_a_run(path: Path, runs) -> None:
    result = invoke("show", runs["fork"].id, "--store", str(path))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert f"run {runs['fork'].id} of flow 'sales': completed" in out
    assert f"forked    from run {runs['first'].id} from step 'total'" in out
    assert "  scale = 3" in out
    assert "raw    cached" in out and f"(from run {runs['first'].id})" in out
    assert " ms" in out


def test_show_a_failed_run_names_the_error(path: Path, runs) -> None:
    result = invoke("show", runs["failed"].id, "--store", str(path))
    assert result.exit_code == 0
    assert "explode  failed" in result.stdout
    assert "no data today" in result.stdout


def test_events_in_every_format(path: Path, runs) -> None:
    run = runs["first"]
    table = invoke("events", run.id, "--store", str(path))
    assert table.exit_code == 0, table.stderr
    assert "run_started" in table.stdout and "run_completed" in table.stdout
    rows = json.loads(invoke("events", run.id, "--store", str(path), "--format", "json").stdout)
    assert [r["seq"] for r in rows] == list(range(1, run.version + 1))
    csv = pd.read_csv(
        io.StringIO(invoke("events", run.id, "--store", str(path), "--format", "csv").stdout)
    )
    assert csv["type"].iloc[-1] == "run_completed"


def test_diff_two_runs(path: Path, runs) -> None:
    a, b = runs["first"].id, runs["fork"].id
    result = invoke("diff", a, b, "--store", str(path))
    assert result.exit_code == 0, result.stderr
    assert "param scale: 1 -> 3" in result.stdout
    rows = json.loads(invoke("diff", a, b, "--store", str(path), "--format", "json").stdout)
    changed = {r["step"]: r["output_changed"] for r in rows}
    assert changed == {"raw": False, "total": True}
    step = invoke("diff", a, b, "--step", "raw", "--store", str(path))
    assert step.exit_code == 0, step.stderr


def test_gc_dry_run_then_for_real(path: Path, runs) -> None:
    dry = invoke("gc", "--keep-last", "1", "--flow", "sales", "--dry-run", "--store", str(path))
    assert dry.exit_code == 0, dry.stderr
    assert "gc would remove 1 run(s)" in dry.stdout
    assert f"run {runs['first'].id}" in dry.stdout
    real = invoke("gc", "--keep-last", "1", "--store", str(path))
    assert real.exit_code == 0, real.stderr
    assert "gc removed 1 run(s)" in real.stdout
    listed = json.loads(invoke("runs", "--store", str(path), "--format", "json").stdout)
    assert {r["run_id"] for r in listed} == {runs["fork"].id, runs["failed"].id}
    assert invoke("gc", "--older-than", "7d", "--store", str(path)).exit_code == 0


def test_export_and_import(path: Path, runs, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    other = tmp_path / "other.duckdb"
    nowhere = invoke("export", runs["first"].id, str(folder / "first"), "--store", str(path))
    assert nowhere.exit_code == 2
    assert f"{folder} is not a folder" in one_line_error(nowhere)
    folder.mkdir()
    for name in ("first", "fork"):
        result = invoke("export", runs[name].id, str(folder / name), "--store", str(path))
        assert result.exit_code == 0, result.stderr
        assert f"exported run {runs[name].id}" in result.stdout
        result = invoke("import", str(folder / name), "--store", str(other))
        assert result.exit_code == 0, result.stderr
        assert f"imported run {runs[name].id}" in result.stdout
    imported = nf.get_run(runs["fork"].id, store=nf.open_store(other))
    assert imported["total"] == 18
    again = invoke("import", str(folder / "fork"), "--store", str(other))
    assert again.exit_code == 2
    assert "already exists" in one_line_error(again)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "nope"),
        (["events", "nope"], "nope"),
        (["diff", "nope", "{first}"], "nope"),
        (["export", "nope", "{tmp}/out"], "nope"),
        (["runs", "--status", "sleeping"], "unknown run status ['sleeping']"),
        (["gc"], "say which runs to delete: --keep-last N and/or --older-than AGE"),
        (["gc", "--older-than", "soon"], "older_than='soon' is not a duration"),
        (["diff", "{first}", "{fork}", "--step", "nope"], "nope"),
        (["import", "{tmp}"], "is not an nbflow run export"),
        (["export", "{first}", "{tmp}"], "already exists: export into a new folder"),
        (["runs", "--format", "xml"], "Invalid value for '--format'"),
        (["gc", "--keep-last", "-1"], "Invalid value for '--keep-last'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    path: Path, runs, tmp_path: Path, args: list[str], message: str
) -> None:
    filled = [a.format(first=runs["first"].id, fork=runs["fork"].id, tmp=tmp_path) for a in args]
    result = invoke(*filled, "--store", str(path))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in one_line_error(result)


def test_a_missing_store_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.duckdb"
    for args in (["runs"], ["show", "x"], ["events", "x"], ["gc", "--keep-last", "1"]):
        result = invoke(*args, "--store", str(missing))
        assert result.exit_code == 2
        assert f"no nbflow store at {missing}" in one_line_error(result)
    assert not missing.exists()
    result = invoke("runs", "--store", str(tmp_path))
    assert "is a folder, not an nbflow store file" in one_line_error(result)


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    junk = tmp_path / "notes.duckdb"
    junk.write_text("hello")
    result = invoke("runs", "--store", str(junk))
    assert result.exit_code == 2
    one_line_error(result)


def test_debug_shows_the_traceback(path: Path, runs) -> None:
    result = invoke("--debug", "show", "nope", "--store", str(path))
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
