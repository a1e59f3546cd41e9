"""Issue 15, points 1 and 2, as a data scientist meets them: executed as a notebook.

In a real kernel: a step reading a global ``LOOKUP`` frame (and a ``%%step`` cell reading
it) goes stale when the frame is rebound, and the next run returns the new result; a step
using a helper of a local ``mylib.py`` goes stale when the file is edited and reloaded
with ``importlib.reload``; a step reading an open connection is ``untracked``, named by
``flow.status()``, warned about, and run again every time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

MYLIB = "FACTOR = 10\n\n\ndef scale(x):\n    return x * FACTOR\n"

CELLS = [
    """
import importlib
import json
import sqlite3
from pathlib import Path

import pandas as pd

import nbflow as nf
import mylib

%load_ext nbflow
flow = nf.Flow("invalidation")


def report(label, run=None):
    state = {r.step: [r.state, r.why] for r in flow.status().itertuples()}
    out = {"status": state}
    if run is not None:
        out["statuses"] = dict(zip(run.steps["step"], run.steps["status"]))
        out["values"] = {s: run[s] for s in ("weighted", "scaled", "fetched", "codes")}
        out["warnings"] = run.events.loc[run.events["type"] == "step_warning", "step"].tolist()
    print(label, json.dumps(out))
""",
    """
LOOKUP = pd.DataFrame({"code": ["a", "b"], "weight": [1.0, 2.0]})
con = sqlite3.connect(":memory:")
""",
    """
@flow.step
def weighted():
    return float(LOOKUP["weight"].sum())


@flow.step
def scaled(weighted):
    return mylib.scale(weighted)


@flow.step
def fetched():
    return con.execute("select 5").fetchone()[0]
""",
    """%%step codes
codes = sorted(LOOKUP["code"])
""",
    'report("FIRST", flow.run(progress=False))',
    """
LOOKUP = pd.DataFrame({"code": ["a", "b", "c"], "weight": [1.0, 2.0, 4.0]})
report("REBOUND")
""",
    'report("SECOND", flow.run(progress=False))',
    """
Path("mylib.py").write_text(Path("mylib.py").read_text().replace("x * FACTOR", "x * FACTOR + 1"))
importlib.reload(mylib)
report("RELOADED")
""",
    'report("THIRD", flow.run(progress=False))',
]


def _execute(folder: Path, jupyter_env: dict[str, str]) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source.strip()) for source in CELLS]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in jupyter_env.items():
            patch.setenv(key, value)
        patch.setenv("NBFLOW_STORE", str(folder / "store.duckdb"))
        client = NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        )
        client.execute()
    return nb


def _reports(nb: nbformat.NotebookNode) -> tuple[dict[str, Any], str]:
    """The JSON each ``report(...)`` printed, by label; and everything on stderr."""
    found: dict[str, Any] = {}
    errors = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            if output.get("name") == "stderr":
                errors.append(output["text"])
                continue
            for line in output["text"].splitlines():
                label, _, payload = line.partition(" ")
                if payload.startswith("{"):
                    found[label] = json.loads(payload)
    return found, "".join(errors)


@pytest.mark.slow
def test_globals_local_modules_and_untracked_values_in_a_notebook(
    tmp_path: Path, jupyter_env: dict[str, str]
) -> None:
    (tmp_path / "mylib.py").write_text(MYLIB)
    reports, stderr = _reports(_execute(tmp_path, jupyter_env))

    first = reports["FIRST"]
    assert first["values"] == {"weighted": 3.0, "scaled": 30.0, "fetched": 5, "codes": ["a", "b"]}
    assert first["warnings"] == ["fetched"]
    assert "UntrackedStepWarning: step 'fetched' is untracked: it reads con" in stderr
    state, why = first["status"]["fetched"]
    assert state == "untracked" and "con (a sqlite3.Connection" in why

    # The frame rebound: both steps that read it are stale, saying which global changed.
    rebound = reports["REBOUND"]["status"]
    for step in ("weighted", "codes"):
        assert rebound[step][0] == "stale"
        assert "a global it reads changed (LOOKUP)" in rebound[step][1]
    assert rebound["scaled"][0] == "stale"  # downstream of weighted
    second = reports["SECOND"]
    assert second["values"] == {
        "weighted": 7.0,
        "scaled": 70.0,
        "fetched": 5,
        "codes": ["a", "b", "c"],
    }
    assert second["statuses"]["fetched"] == "completed"  # untracked: run again

    # mylib.py edited and reloaded: the step using its helper is stale, nothing else.
    reloaded = reports["RELOADED"]["status"]
    assert reloaded["scaled"] == ["stale", "code changed (a function or constant it uses)"]
    assert reloaded["weighted"][0] == "fresh" and reloaded["codes"][0] == "fresh"
    third = reports["THIRD"]
    assert third["values"]["scaled"] == 71.0
    assert third["statuses"] == {
        "weighted": "cached",
        "scaled": "completed",
        "fetched": "completed",
        "codes": "cached",
    }
