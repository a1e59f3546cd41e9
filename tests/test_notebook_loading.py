"""nf.load_notebook: a notebook's %%step cells as a Flow, without a kernel or running a step
(the other cells run as a kernel runs them; tests/test_notebook_cells_run.py has more)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

import nbflow as nf
from nbflow.errors import CellError, NotebookError


def write_notebook(path: Path, *cells: str, markdown: str | None = "# A notebook") -> Path:
    """A notebook with a markdown cell first, then ``cells`` as code cells."""
    nb = nbformat.v4.new_notebook()
    if markdown is not None:
        nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    nb.cells.extend(nbformat.v4.new_code_cell(_source(c)) for c in cells)
    nbformat.write(nb, str(path))
    return path


def _source(text: str) -> str:
    """Dedented, without the first newline of a triple-quoted string (other blank lines
    at the start are kept) or trailing whitespace."""
    text = textwrap.dedent(text)
    return (text[1:] if text.startswith("\n") else text).rstrip()


HEADER = """
%load_ext nbflow
import json
import nbflow as nf

flow = nf.Flow("analysis", store="memory://")
"""

HELPERS = """
WINDOW_LABEL = "window"
CUTOFFS = (1, 2)

def label(n):
    return f"{WINDOW_LABEL}={n}"

class Scaler:
    factor = 10

    def apply(self, v):
        return v * self.factor
"""


@pytest.fixture
def analysis(tmp_path: Path) -> Path:
    return write_notebook(
        tmp_path / "analysis.ipynb",
        HEADER,
        HELPERS,
        """
        %%step raw --params n=5
        raw = list(range(n))
        """,
        """
        print("plain cells run, as in a kernel")
        open("side-effect.txt", "w").write("ran")
        computed = sum(range(10))
        """,
        """
        %%step features --params window=2
        scaled = [Scaler().apply(v) for v in raw[-window:]]
        features = {"label": label(window), "values": scaled, "cutoffs": list(CUTOFFS)}
        """,
        """

        %%step report --run
        # the %%step line may follow blank lines
        open("step-ran.txt", "w").write("ran")
        json.dumps(features, sort_keys=True)
        """,
    )


def test_steps_come_from_step_cells_and_no_step_runs(analysis: Path, monkeypatch) -> None:
    monkeypatch.chdir(analysis.parent)
    flow = nf.load_notebook(analysis)
    assert flow.name == "analysis"
    assert list(flow.steps) == ["raw", "features", "report"]
    assert flow.params == {"n": 5, "window": 2}
    assert flow.steps["features"].inputs == ("raw",)
    # Plain statements run, as a kernel runs them, from the notebook's folder.
    assert (analysis.parent / "side-effect.txt").read_text() == "ran"
    assert not (analysis.parent / "step-ran.txt").exists()  # steps: not run
    assert flow.store.list_runs() == []


def test_a_loaded_notebook_runs_with_its_helpers(analysis: Path, monkeypatch) -> None:
    monkeypatch.chdir(analysis.parent)
    run = nf.load_notebook(analysis).run(window=3)
    assert run["features"] == {"label": "window=3", "values": [20, 30, 40], "cutoffs": [1, 2]}
    assert run["report"].startswith('{"cutoffs"')


def test_decorated_steps_in_plain_cells_are_part_of_the_flow(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "mixed.ipynb",
        HEADER,
        """
        @flow.step
        def base(k: int = 2):
            return k * 2
        """,
        """
        %%step top
        base + 1
        """,
    )
    flow = nf.load_notebook(path)
    assert list(flow.steps) == ["base", "top"]
    assert flow.run(k=5)["top"] == 11


def test_ipython_syntax_in_plain_cells_is_skipped(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "magics.ipynb",
        HEADER,
        """
        %matplotlib inline
        files = !ls
        LIMIT = 3
        """,
        """
        %%time
        x = undefined_here()
        """,
        """
        %%step capped
        min(LIMIT, 10)
        """,
    )
    assert nf.load_notebook(path).run()["capped"] == 3


def test_constants_follow_the_notebook_order(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "order.ipynb",
        HEADER,
        "A = 1\nB = 1",
        "%%step uses_a\nA",
        "A = 2\nB = len('not a literal')",
        "%%step late\n0",
    )
    flow = nf.load_notebook(path)
    assert flow.run()["uses_a"] == 2  # globals are read when the step runs: the last A
    bad = write_notebook(
        tmp_path / "bad.ipynb", HEADER, "B = 1", "B = len(undefined_x)", "%%step b\nB"
    )
    with pytest.raises(CellError) as info:
        nf.load_notebook(bad)
    message = str(info.value)
    assert message.startswith("bad.ipynb, cell 5: %%step cell 'b' reads 'B' (line 2)")
    assert "assigns in cell 4 (line 1), in a statement nbflow could not run (running it " in message
    assert "failed: NameError: name 'undefined_x' is not defined)" in message
    assert "not defined anywhere" not in message


def test_modules_next_to_the_notebook_can_be_imported(tmp_path: Path) -> None:
    (tmp_path / "nbflow_test_localmod.py").write_text("def twice(v):\n    return 2 * v\n")
    path = write_notebook(
        tmp_path / "local.ipynb",
        HEADER,
        "from nbflow_test_localmod import twice",
        "%%step doubled\ntwice(21)",
    )
    try:
        assert nf.load_notebook(path).run()["doubled"] == 42
    finally:
        sys.modules.pop("nbflow_test_localmod", None)


# -- the store ----------------------------------------------------------------------------------


def test_a_relative_store_is_relative_to_the_notebook(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = write_notebook(
        folder / "stored.ipynb",
        'import nbflow as nf\nSTORE = "results.duckdb"\nflow = nf.Flow("stored", store=STORE)',
        "%%step one\n1",
    )
    monkeypatch.chdir(tmp_path)
    flow = nf.load_notebook(path)
    flow.run()
    assert Path(flow.store.uri.removeprefix("duckdb://")).resolve() == folder / "results.duckdb"
    flow.store.close()
    other = tmp_path / "other.duckdb"
    moved = nf.load_notebook(path, store=str(other))
    assert moved.run()["one"] == 1
    assert other.exists()
    moved.store.close()


def test_flow_arguments_must_be_literals_unless_the_store_is_given(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "dynamic.ipynb",
        'import os\nimport nbflow as nf\nflow = nf.Flow("dyn", store=os.environ["WHERE"])',
        "%%step one\n1",
    )
    with pytest.raises(
        NotebookError, match="cell 2, line 3: the store= of nf.Flow.*not a literal.*KeyError"
    ):
        nf.load_notebook(path)
    assert nf.load_notebook(path, store="memory://").run()["one"] == 1


# -- several flows ------------------------------------------------------------------------------


def test_several_flows_need_a_choice(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "two.ipynb",
        'import nbflow as nf\nfirst = nf.Flow("first", store="memory://")\n'
        'second = nf.Flow("second", store="memory://")',
        "%%step a --flow first\n1",
        "%%step b --flow second\n2",
    )
    with pytest.raises(NotebookError, match="several flows \\('first', 'second'\\).*flow=NAME"):
        nf.load_notebook(path)
    assert list(nf.load_notebook(path, flow="second").steps) == ["b"]
    assert list(nf.load_notebook(path, flow="first").steps) == ["a"]
    with pytest.raises(NotebookError, match="no flow 'secnd'.*Did you mean 'second'"):
        nf.load_notebook(path, flow="secnd")
    no_choice = write_notebook(
        tmp_path / "ambiguous.ipynb",
        'import nbflow as nf\nfirst = nf.Flow("first", store="memory://")\n'
        'second = nf.Flow("second", store="memory://")',
        "%%step a\n1",
    )
    with pytest.raises(CellError, match="ambiguous.ipynb, cell 3: the notebook defines several"):
        nf.load_notebook(no_choice)


def test_a_notebook_without_a_flow_says_how_to_make_one(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "none.ipynb", "x = 1")
    with pytest.raises(NotebookError, match="defines no Flow.*nf.Flow"):
        nf.load_notebook(path)


# -- bad input ------------------------------------------------------------------------------------


def test_a_missing_notebook_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match="no notebook at .*missing.ipynb: the file does not"):
        nf.load_notebook(tmp_path / "missing.ipynb")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", "hello", "is not a notebook: expected an .ipynb file"),
        ("flow.py", "x = 1", "For a flow in a module, use module.py:flow"),
        ("broken.ipynb", "{not json", "is not a Jupyter notebook that can be read"),
        ("list.ipynb", "[1, 2]", "is not a Jupyter notebook"),
    ],
)
def test_a_file_that_is_not_a_notebook_is_refused(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(NotebookError, match=message):
        nf.load_notebook(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder.ipynb"
    folder.mkdir()
    with pytest.raises(NotebookError, match="is a directory, not a notebook"):
        nf.load_notebook(folder)


def test_a_step_cell_with_a_syntax_error_names_the_cell_and_line(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "syntax.ipynb",
        HEADER,
        "%%step good\n1",
        "\n\n%%step bad\nx = 1\ny = [x,\nz = 3",
    )
    with pytest.raises(CellError) as info:
        nf.load_notebook(path)
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("syntax.ipynb, cell 4: syntax error in %%step cell 'bad', line 4")
    assert "y = [x," in str(info.value)


def test_a_plain_cell_with_a_syntax_error_or_failing_import_is_refused(tmp_path: Path) -> None:
    syntax = write_notebook(tmp_path / "plain.ipynb", HEADER, "def f(:\n    pass")
    with pytest.raises(NotebookError, match="plain.ipynb, cell 3, line 1: syntax error"):
        nf.load_notebook(syntax)
    missing = write_notebook(tmp_path / "imports.ipynb", HEADER, "x = 1\nimport no_such_module_x")
    with pytest.raises(NotebookError, match="cell 3, line 2: the import failed: ModuleNotFound"):
        nf.load_notebook(missing)


def test_a_step_reading_a_name_defined_nowhere_is_refused(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "undefined.ipynb", HEADER, "%%step s --params n=1\nn + m")
    with pytest.raises(CellError, match="cell 3: %%step cell 's' reads 'm' \\(line 2\\)"):
        nf.load_notebook(path)
