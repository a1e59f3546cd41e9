"""The ``nbflow`` command line: ``nbflow run NOTEBOOK_OR_MODULE``, its errors and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner, Result

import nbflow as nf
from nbflow.cli import main


@pytest.fixture(autouse=True)
def _restore_imports() -> Iterator[None]:
    """``nbflow run module.py`` imports the module and puts its folder on sys.path."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name.startswith("nbflow_cli_"):
            del sys.modules[name]


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={"NBFLOW_STORE": None, **(env or {})})


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nbflow: error: ")
    return lines[0]


def notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def analysis(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "data.csv").write_text("x\n1\n2\n3\n4\n")
    return notebook(
        folder / "analysis.ipynb",
        """
        %load_ext nbflow
        import pandas as pd
        import nbflow as nf
        flow = nf.Flow("analysis", store="notebook.duckdb")
        """,
        """
        %%step raw
        pd.read_csv("data.csv")
        """,
        """
        %%step total --params window=2,scale=1.0,label=sum,loud=False
        total = {"value": float(raw["x"].tail(window).sum() * scale), "label": label, "loud": loud}
        """,
    )


# -- running notebooks ------------------------------------------------------------------------


def test_run_a_notebook_with_parameters_into_a_store(analysis: Path, tmp_path: Path) -> None:
    store = tmp_path / "runs.duckdb"
    result = invoke(
        "run", str(analysis), "-p", "window=3", "-p", "scale=2", "-p", "label=top 3",
        "--store", str(store),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "of flow 'analysis': completed" in result.stdout
    assert "raw" in result.stdout and "total" in result.stdout
    runs = nf.runs(str(store))
    assert list(runs["status"]) == ["completed"]
    run = nf.get_run(runs["run_id"].iloc[0], str(store))
    # Parameters are typed like their defaults: 3 an int, 2 a float, text a string.
    assert run.params == {"window": 3, "scale": 2.0, "label": "top 3", "loud": False}
    assert run["total"] == {"value": 18.0, "label": "top 3", "loud": False}
    again = invoke("run", str(analysis), "-p", "window=3", "-p", "scale=2.0", "-p",
                   "label=top 3", "--store", str(store))  # fmt: skip
    assert again.exit_code == 0
    assert "(2 cached)" in again.stdout
    assert not (analysis.parent / "notebook.duckdb").exists()  # --store overrode it


def test_steps_run_from_the_notebooks_folder(analysis: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # data.csv is next to the notebook, not here
    result = invoke("run", "project/analysis.ipynb", "--store", "here.duckdb")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "here.duckdb").exists()  # a relative --store: relative to the caller
    assert Path.cwd() == tmp_path


def test_nbflow_store_overrides_the_notebooks_store(analysis: Path, tmp_path: Path) -> None:
    env_store = tmp_path / "env.duckdb"
    result = invoke("run", str(analysis), env={"NBFLOW_STORE": str(env_store)})
    assert result.exit_code == 0, result.stderr
    assert list(nf.runs(str(env_store))["flow"]) == ["analysis"]
    assert not (analysis.parent / "notebook.duckdb").exists()
    flag_store = tmp_path / "flag.duckdb"
    result = invoke(
        "run", str(analysis), "--store", str(flag_store), env={"NBFLOW_STORE": str(env_store)}
    )
    assert result.exit_code == 0
    assert len(nf.runs(str(flag_store))) == 1  # --store beats $NBFLOW_STORE
    assert len(nf.runs(str(env_store))) == 1


def test_without_an_override_the_notebooks_own_store_is_used(analysis: Path) -> None:
    result = invoke("run", str(analysis), "--target", "raw")
    assert result.exit_code == 0, result.stderr
    store = analysis.parent / "notebook.duckdb"
    assert store.exists()
    assert "total" not in result.stdout  # --target raw runs only what raw needs


# -- running modules -----------------------------------------------------------------------------

MODULE = """
import nbflow as nf

flow = nf.Flow("mod")

@flow.step
def numbers(n: int = 3):
    return list(range(n))

@flow.step
def total(numbers):
    return sum(numbers)
"""


def test_run_a_flow_in_a_module_file(tmp_path: Path) -> None:
    module = tmp_path / "nbflow_cli_pipeline.py"
    module.write_text(MODULE)
    store = tmp_path / "mod.duckdb"
    for target in (f"{module}:flow", str(module)):
        result = invoke("run", target, "-p", "n=5", "--store", str(store))
        assert result.exit_code == 0, result.stderr
    runs = nf.runs(str(store))
    assert len(runs) == 2
    assert nf.get_run(runs["run_id"].iloc[0], str(store))["total"] == 10


def test_run_takes_a_durability_mode(tmp_path: Path) -> None:
    module = tmp_path / "nbflow_cli_durable.py"
    module.write_text(MODULE)
    store = tmp_path / "mod.duckdb"
    for mode in ("sync", "exit", "ASYNC"):
        result = invoke("run", str(module), "--durability", mode, "--store", str(store))
        assert result.exit_code == 0, result.stderr
        run_id = nf.runs(str(store))["run_id"].iloc[0]
        events = nf.get_run(run_id, str(store)).events
        started = events[events["type"] == "run_started"]["payload"].iloc[0]
        assert started["durability"] == mode.lower()
    bad = invoke("run", str(module), "--durability", "later", "--store", str(store))
    assert bad.exit_code != 0
    assert "'later' is not one of 'sync', 'async', 'exit'" in bad.stderr


def test_run_a_flow_in_an_importable_module(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "nbflow_cli_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flows.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "nbflow_cli_pkg.flows:flow", "--store", "pkg.duckdb")
    assert result.exit_code == 0, result.stderr
    assert "of flow 'mod': completed" in result.stdout


def test_a_module_attribute_that_is_missing_or_not_a_flow_is_refused(tmp_path: Path) -> None:
    module = tmp_path / "nbflow_cli_attrs.py"
    module.write_text(MODULE + "\nnumber = 3\nother = nf.Flow('other')\n")
    assert "has no 'flw' (its flows: flow, other). Did you mean 'flow'?" in one_line_error(
        invoke("run", f"{module}:flw")
    )
    assert "'number' in" in one_line_error(invoke("run", f"{module}:number"))
    assert "defines several flows (flow, other)" in one_line_error(invoke("run", str(module)))


# -- errors and exit codes -------------------------------------------------------------------------


def test_a_missing_notebook_exits_2_with_one_line(tmp_path: Path) -> None:
    result = invoke("run", str(tmp_path / "nope.ipynb"))
    assert result.exit_code == 2
    assert "no notebook at" in one_line_error(result)
    assert result.stdout == ""


def test_a_file_that_is_not_a_notebook_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    result = invoke("run", str(bad))
    assert result.exit_code == 2
    assert "is not a Jupyter notebook" in one_line_error(result)
    text = tmp_path / "data.csv"
    text.write_text("x\n")
    result = invoke("run", str(text))
    assert result.exit_code == 2
    assert "neither a notebook (.ipynb) nor a Python module (.py)" in one_line_error(result)


def test_bad_parameters_exit_2(analysis: Path, tmp_path: Path) -> None:
    store = ["--store", str(tmp_path / "s.duckdb")]
    cases = {
        ("-p", "window=abc"): "parameter 'window' is an int: 'abc' is not a whole number",
        ("-p", "loud=maybe"): "parameter 'loud' is a bool",
        ("-p", "windw=3"): "'windw' is not a run parameter of this flow",
        ("-p", "window"): "-p 'window' must be written name=value",
    }
    for args, message in cases.items():
        result = invoke("run", str(analysis), *args, *store)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert message in one_line_error(result)
    assert "Did you mean 'window'?" in invoke("run", str(analysis), "-p", "windw=3").stderr


def test_a_bad_step_cell_exits_2_naming_the_cell(tmp_path: Path) -> None:
    path = notebook(
        tmp_path / "broken.ipynb",
        'import nbflow as nf\nflow = nf.Flow("b")',
        "%%step s\nx = (1 +\n",
    )
    result = invoke("run", str(path))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "broken.ipynb, cell 2: syntax error in %%step cell 's', line 2" in line
    assert "x = (1 +" in line


def test_a_failing_step_exits_1_and_debug_shows_its_traceback(tmp_path: Path) -> None:
    path = notebook(
        tmp_path / "fails.ipynb",
        'import nbflow as nf\nflow = nf.Flow("fails")',
        "%%step ok\n1",
        "%%step boom\nok / 0",
        "%%step after\nboom + 1",
    )
    store = str(tmp_path / "f.duckdb")
    result = invoke("run", str(path), "--store", store)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "failed: step 'boom' failed: ZeroDivisionError: division by zero" in line
    assert "boom" in result.stdout and "skipped" in result.stdout  # the summary still prints
    debug = invoke("--debug", "run", str(path), "--store", store)
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr and "ok / 0" in debug.stderr
    assert "Traceback" in invoke("run", str(path), "--store", store, "--debug").stderr


def test_usage_errors_exit_2_with_one_line() -> None:
    result = invoke("run")
    assert result.exit_code == 2
    assert "Missing argument 'NOTEBOOK_OR_MODULE'" in one_line_error(result)
    result = invoke("run", "x.ipynb", "--bogus")
    assert result.exit_code == 2
    assert "No such option '--bogus' (see `" in one_line_error(result)
    result = invoke("frobnicate")
    assert result.exit_code == 2
    one_line_error(result)


def test_help_exits_0() -> None:
    result = invoke("run", "--help")
    assert result.exit_code == 0
    assert "NOTEBOOK_OR_MODULE" in result.stdout and "--store" in result.stdout


def test_the_console_script_runs_a_notebook(analysis: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("nbflow")
    if not script.exists():
        pytest.skip("the nbflow console script is not installed next to this Python")
    env = {**os.environ, "NBFLOW_STORE": str(tmp_path / "cli.duckdb")}
    done = subprocess.run(
        [str(script), "run", str(analysis), "-p", "window=4"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout
    missing = subprocess.run(
        [str(script), "run", "missing.ipynb"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("nbflow: error: no notebook at missing.ipynb")
    assert "Traceback" not in missing.stderr
