"""A flow's display follows a background run to its end by itself, in Notebook 7 (Chromium).

A notebook written by the test starts a run in the background whose middle step waits for
a file the test creates, then displays the flow while the run executes. The test waits
for the display to show the step running, creates the file, and waits (without sleeping,
with a generous timeout) for the same display to say the run completed: no cell is run
again, nothing is refreshed by hand. (``test_lab_live`` checks the same in JupyterLab.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Lab, open_in_notebook7_and_run_all, save_screenshot
from test_lab_live import node, wait_state, wait_text

WAIT_MS = 90_000
DAG = ".nbflow-dag"

CELLS = [
    """\
import os, time
import nbflow as nf
GATE = {gate!r}
store = nf.open_store(":memory:")
bg = nf.Flow("bg7", store=store)
@bg.step
def first(n: int = 1): return n
@bg.step
def slow(first):
    deadline = time.monotonic() + 120  # the test creates the file: polled, with a deadline
    while not os.path.exists(GATE):
        if time.monotonic() > deadline:
            raise TimeoutError("the gate file never came")
        time.sleep(0.02)
    return first + 1
@bg.step
def last(slow): return slow + 1
""",
    """\
run = bg.run(background=True, progress=False)
deadline = time.monotonic() + 120  # until the run has started (a state, polled)
while run.record.status.value == "pending":
    assert time.monotonic() < deadline, "the background run never started"
    time.sleep(0.01)
""",
    "bg.show()  # shown while the run executes",
]


def notebook(gate: Path) -> dict[str, Any]:
    sources = [CELLS[0].format(gate=str(gate)), *CELLS[1:]]
    cells = [
        {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
        for c in sources
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def gate(lab: Lab) -> Path:
    """The file the run's ``slow`` step waits for."""
    return lab.root / "bg7.gate"


@pytest.fixture
def page(
    lab: Lab, chromium: Any, gate: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    (lab.root / "live7.ipynb").write_text(json.dumps(notebook(gate)))
    page = open_in_notebook7_and_run_all(lab, chromium, "live7.ipynb")
    try:
        yield page
        save_screenshot(page, request, tmp_path)
    finally:
        page.close()


def test_notebook7_a_flow_display_ends_at_completed_by_itself(page, gate):
    wait_state(page, DAG, "slow", "running")
    wait_text(page, f"{DAG} .nbflow-dag-title", "running")
    assert "waiting" in page.locator(node(DAG, "last")).text_content()
    gate.touch()  # the run may go on
    wait_text(page, f"{DAG} .nbflow-dag-title", "^bg7 · latest run .* completed")
    for step in ("first", "slow", "last"):
        wait_state(page, DAG, step, "completed")
