"""``nbflow run notebook.ipynb`` runs what the kernel would (issue 15, point 10): the
notebook's plain cells run in order, so computed constants hold what they hold in Jupyter;
what needs a kernel or a run is skipped, and a step that reads it is told why."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner, Result

import nbflow as nf
from nbflow.cli import main
from nbflow.errors import CellError

CELLS = [
    """
    %load_ext nbflow
    from pathlib import Path
    import pandas as pd
    import nbflow as nf
    """,
    """
    SCALE = 2 * 3
    DATA = Path("data")
    COLUMN = "x".upper().lower()
    STORE = "results" + ".duckdb"
    flow = nf.Flow("computed", store=STORE)
    """,
    """
    %%step raw
    pd.read_csv(DATA / "numbers.csv")
    """,
    """
    %%step scaled
    scaled = int(raw[COLUMN].sum() * SCALE)
    """,
    """
    run = flow.run(progress=False)
    """,
    """
    TOTAL = run["scaled"]
    print(TOTAL)
    """,
]


def notebook(folder: Path, *cells: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "numbers.csv").write_text("x\n1\n2\n3\n4\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    path = folder / "analysis.ipynb"
    nbformat.write(nb, str(path))
    return path


def nbflow_run(*args: str) -> Result:
    return CliRunner().invoke(main, ["run", *args], env={"NBFLOW_STORE": None})


def test_a_notebook_with_computed_constants_runs_from_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = notebook(tmp_path / "project", *CELLS)
    monkeypatch.chdir(tmp_path)  # the notebook's cells run from its folder, as in a kernel
    result = nbflow_run(str(path))
    assert result.exit_code == 0, result.stderr
    assert "of flow 'computed': completed" in result.stdout
    store = str(tmp_path / "project" / "results.duckdb")  # STORE, worked out as the kernel would
    runs = nf.runs(store)
    assert len(runs) == 1  # `flow.run()` in a plain cell is for the kernel: not run again
    assert nf.get_run(runs["run_id"].iloc[0], store)["scaled"] == 60


def test_the_terminal_reuses_what_the_kernel_computed(
    tmp_path: Path, jupyter_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    path = notebook(tmp_path / "project", *CELLS)
    for key, value in jupyter_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NBFLOW_STORE", raising=False)
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()  # the notebook runs top to bottom in Jupyter...
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert printed.strip() == "60"
    result = nbflow_run(str(path))  # ...and from the terminal: the same steps, all cached
    assert result.exit_code == 0, result.stderr
    assert "(2 cached)" in result.stdout
    assert len(nf.runs(str(path.parent / "results.duckdb"))) == 2


def test_a_step_reading_what_only_a_run_computes_is_told_why(tmp_path: Path) -> None:
    path = notebook(
        tmp_path / "project",
        CELLS[0],
        'flow = nf.Flow("why", store="memory://")',
        "%%step raw\npd.read_csv('data/numbers.csv')",
        "%%time\nSLOW = sum(range(10))",
        "FIRST = raw.head(1)\nLATER = FIRST.shape",
        "%%step uses\nLATER",
    )
    result = nbflow_run(str(path))
    assert result.exit_code != 0
    message = " ".join(result.stderr.split())
    assert "cell 6: %%step cell 'uses' reads 'LATER' (line 2), which the notebook assigns in" in (
        message
    )
    assert "cell 5 (line 2), in a statement nbflow could not run (it reads 'FIRST', which " in (
        message
    )
    assert "cell 5 (line 1) assigns and nbflow did not run either)" in message
    assert "not defined anywhere" not in message  # it is defined: just not without a run
    first = notebook(
        tmp_path / "first",
        CELLS[0],
        'flow = nf.Flow("why", store="memory://")',
        "%%step raw\npd.read_csv('data/numbers.csv')",
        "FIRST = raw.head(1)",
        "%%step uses\nFIRST",
    )
    with pytest.raises(CellError, match="it reads step 'raw', whose value only a run computes"):
        nf.load_notebook(first)
    magic = notebook(
        tmp_path / "magic",
        CELLS[0],
        'flow = nf.Flow("why", store="memory://")',
        "%%time\nSLOW = sum(range(10))",  # the kernel runs a %%time cell's body: so does nbflow
        "files = !ls",
        "%%step slow\nSLOW",
        "%%step uses\nlen(files)",
    )
    with pytest.raises(CellError, match="IPython syntax .a magic or a shell command"):
        nf.load_notebook(magic)


def test_a_constant_that_fails_to_compute_says_how(tmp_path: Path) -> None:
    path = notebook(
        tmp_path / "project",
        CELLS[0],
        'flow = nf.Flow("fails", store="memory://")\nLIMIT = int("ten")',
        "%%step capped\nmin(LIMIT, 3)",
    )
    result = nbflow_run(str(path))
    assert result.exit_code != 0
    message = " ".join(result.stderr.split())
    assert "reads 'LIMIT' (line 2), which the notebook assigns in cell 2 (line 2), in a " in message
    assert "(running it failed: ValueError: invalid literal for int()" in message
