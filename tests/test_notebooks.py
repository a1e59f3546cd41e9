"""Every notebook under notebooks/ runs top to bottom in a real kernel, without an error.

Each runs from a copy of the notebooks folder in a temp dir, with ``$NBFLOW_STORE`` in
that temp dir, so nothing is written into the repository.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner

import nbflow as nf
from nbflow.cli import main

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


@dataclass
class Executed:
    """A notebook after execution: its cells and outputs, and the store it wrote."""

    notebook: nbformat.NotebookNode
    path: Path  # the executed copy
    store: Path
    error: BaseException | None


@pytest.fixture(scope="module")
def executed(
    jupyter_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Executed]]:
    """Every notebook, executed once (lazily, by name)."""
    _Client = _client_class()
    done: dict[str, Executed] = {}

    class Lazy(dict[str, Executed]):
        def __missing__(self, name: str) -> Executed:
            work = tmp_path_factory.mktemp(Path(name).stem)
            folder = work / "notebooks"
            shutil.copytree(NOTEBOOKS_DIR, folder)
            store = work / "store.duckdb"
            path = folder / name
            nb = nbformat.read(str(path), as_version=4)
            error = None
            with pytest.MonkeyPatch.context() as patch:
                for key, value in jupyter_env.items():
                    patch.setenv(key, value)
                patch.setenv("NBFLOW_STORE", str(store))
                client = _Client(
                    nb,
                    timeout=300,
                    kernel_name="python3",
                    resources={"metadata": {"path": str(folder)}},
                    store_widget_state=True,
                )
                try:
                    client.execute()
                except Exception as exc:  # reported by the test, with the cell
                    error = exc
            done[name] = self[name] = Executed(nb, path, store, error)
            return done[name]

    yield Lazy()


def _client_class() -> type:
    from nbclient import NotebookClient

    class Client(NotebookClient):
        """nbclient, tolerating widget comms opened with an empty state (anywidget does
        this; nbclient 0.10 then raises KeyError '_model_module' and stops the notebook)."""

        def on_comm_open_jupyter_widget(self, msg: dict[str, Any]) -> Any:
            if "_model_module" not in msg["content"]["data"].get("state", {}):
                return None
            return super().on_comm_open_jupyter_widget(msg)

    return Client


def test_there_are_notebooks() -> None:
    assert any(p.name == "cells.ipynb" for p in NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors(executed: dict[str, Executed], name: str) -> None:
    result = executed[name]
    if result.error is not None:
        pytest.fail(f"{name} failed:\n{result.error}", pytrace=False)
    errors = [
        output
        for cell in result.notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors


@pytest.mark.slow
def test_cells_notebook_shows_steps_values_and_staleness(executed: dict[str, Executed]) -> None:
    result = executed["cells.ipynb"]
    assert result.error is None, result.error
    code = [c for c in result.notebook.cells if c.cell_type == "code"]
    assert any(c.source.startswith("%%step") for c in code)

    def text(cell: nbformat.NotebookNode) -> str:
        parts = []
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
        return "\n".join(parts)

    run_cell = next(c for c in code if "--run" in c.source.splitlines()[0])
    assert "fresh" in text(run_cell)  # the DAG view after the run
    stale_cell = next(c for c in code if c.source.startswith("HEAVY_CALLS = 4"))
    assert "stale" in text(stale_cell)
    assert "code changed (a function or constant it uses)" in text(stale_cell)
    # The runs are in the store the environment named, browsable from here.
    runs = nf.runs(str(result.store))
    assert set(runs["flow"]) == {"cells"}
    assert set(runs["status"]) == {"completed"}


@pytest.mark.slow
def test_the_cli_reuses_what_the_kernel_computed(executed: dict[str, Executed]) -> None:
    # Same cells, same fingerprints: a headless run of the notebook finds every step of the
    # kernel's last run (window=24) in the cache.
    result = executed["cells.ipynb"]
    assert result.error is None, result.error
    out = CliRunner().invoke(
        main,
        ["run", str(result.path), "-p", "window=24", "--store", str(result.store)],
        env={"NBFLOW_STORE": None},
    )
    assert out.exit_code == 0, out.stderr
    assert "(3 cached)" in out.stdout


@pytest.mark.slow
def test_gates_notebook_approves_from_the_cli_and_the_widget(
    executed: dict[str, Executed],
) -> None:
    result = executed["gates.ipynb"]
    assert result.error is None, result.error
    runs = nf.runs(str(result.store))
    assert sorted(runs["status"]) == ["cancelled", "completed", "completed"]
    done = {
        nf.get_run(r, str(result.store)).params["n"]: nf.get_run(r, str(result.store))
        for r in runs.loc[runs["status"] == "completed", "run_id"]
    }
    (gate,) = done[6].gates.itertuples()  # approved from the command line
    assert (gate.gate, gate.status, gate.decided_by) == ("check_sales", "approved", "reviewer")
    assert done[6]["totals"] == "3 regions, 15 in all"
    (gate,) = done[9].gates.itertuples()  # approved from the widget's button
    assert (gate.status, gate.comment) == ("approved", "nine rows, three regions: fine")
    assert done[9]["totals"] == "3 regions, 36 in all"
    out = "\n".join(o.get("text", "") for c in result.notebook.cells for o in c.get("outputs", []))
    assert "gate approved: run" in out and "this token was already used" in out
    widgets = [
        o
        for c in result.notebook.cells
        for o in c.get("outputs", [])
        if "data" in o and "application/vnd.jupyter.widget-view+json" in o["data"]
    ]
    assert widgets  # the run's view (DAG and gate panel) was displayed
