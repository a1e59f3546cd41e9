"""The widgets in Notebook 7 and in Voila (Chromium), served by the tests' Jupyter server.

One notebook, written by the test, runs a flow that stops at a gate (the cell's view
shows the DAG and the gate panel) and opens the browser on the flow. In Notebook 7, at
900 px, the tests approve the gate from the widget and wait for the run to complete,
check that the browser's runs table stays inside the output (scrolling in its frame,
the run column kept in view), and that the dark theme keeps the DAG readable. In Voila
(which runs the notebook itself) they approve the gate from the widget too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    CONTRAST,
    Lab,
    open_in_notebook7_and_run_all,
    save_screenshot,
    set_theme,
)
from test_lab_gates import CELLS as GATE_CELLS

WAIT_MS = 90_000
WIDTH = 900
VIEW = ".nbflow-run-view"
PANEL = f"{VIEW} .nbflow-gates"
BROWSER = ".nbflow-browser"
CELLS = [*GATE_CELLS, "nf.browse(flow)"]


def notebook() -> dict[str, Any]:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
        for c in CELLS
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}


def approve_and_wait_for_the_end(page: Any) -> None:
    """Type a name, click Approve in the gate panel, wait until the run has completed."""
    page.locator(f"{PANEL} .nbflow-approve").wait_for(timeout=WAIT_MS)
    page.locator(f"{PANEL} .nbflow-gate-by input").fill("reviewer")
    page.locator(f"{PANEL} .nbflow-approve").click()
    page.locator(f'{VIEW} g.node[data-step="totals"][data-state="completed"]').wait_for(
        timeout=WAIT_MS
    )
    page.wait_for_function(
        "(sel) => /· completed$/.test(document.querySelector(sel).textContent)",
        arg=f"{VIEW} .nbflow-dag-title",
        timeout=WAIT_MS,
    )
    gate = page.locator(f'{VIEW} g.node[data-step="check_sales"]')
    assert gate.get_attribute("data-gate") == "approved"
    assert "approved by reviewer" in page.locator(f"{PANEL} .nbflow-gate-status").inner_text()


@pytest.fixture(scope="module")
def notebook7(lab: Lab, chromium: Any) -> Iterator[Any]:
    """The notebook after Run All in Notebook 7, 900 px wide: the run waits at its gate."""
    (lab.root / "gated7.ipynb").write_text(json.dumps(notebook()))
    page = open_in_notebook7_and_run_all(lab, chromium, "gated7.ipynb")
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    try:
        page.locator(f'{VIEW} g.node.gate[data-gate="open"]').wait_for(timeout=WAIT_MS)
        page.locator(f"{BROWSER} .nbflow-runs tbody tr").first.wait_for(timeout=WAIT_MS)
        yield page
    finally:
        page.close()


@pytest.fixture
def page(notebook7: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield notebook7
    save_screenshot(notebook7, request, tmp_path)


def test_notebook7_shows_the_gate_and_approving_it_completes_the_run(page):
    page.locator(PANEL).scroll_into_view_if_needed()
    assert page.locator(f'{VIEW} g.node[data-step="check_sales"] polygon.shape').count() == 1
    assert "north" in page.locator(f"{PANEL} .nbflow-gate-value").inner_text()
    token = page.locator(f"{PANEL} .nbflow-gate-token input").input_value()
    assert token.startswith("nbflow-gate.v1.")
    approve_and_wait_for_the_end(page)


def test_notebook7_keeps_the_runs_table_inside_the_output(page):
    runs = f"{BROWSER} .nbflow-runs"
    page.locator(runs).scroll_into_view_if_needed()
    shown = page.evaluate(
        """(sel) => {
          const box = document.querySelector(sel);
          const area = box.closest('.jp-OutputArea-output');
          const wrap = box.querySelector('.nbflow-table-wrap');
          wrap.scrollLeft = wrap.scrollWidth;
          const cell = wrap.querySelector('tbody td:first-child').getBoundingClientRect();
          return {area: area.getBoundingClientRect().right,
                  box: box.getBoundingClientRect().right,
                  page: document.documentElement.clientWidth,
                  first: cell.left - wrap.getBoundingClientRect().left};
        }""",
        runs,
    )
    assert shown["box"] <= shown["area"] + 1 <= shown["page"] + 2, shown
    assert abs(shown["first"]) <= 1, shown  # the run column stays in view


def test_notebook7_in_the_dark_theme_keeps_the_dag_readable(page):
    set_theme(page, "JupyterLab Dark")
    try:
        name = f'{VIEW} g.node[data-step="sales"] text.name'
        page.wait_for_function(
            "(sel) => getComputedStyle(document.querySelector(sel)).fill !== 'rgb(17, 24, 39)'",
            arg=name,
            timeout=WAIT_MS,
        )
        for selector in (name, f'{VIEW} g.node[data-step="check_sales"] text.caption'):
            assert page.evaluate(CONTRAST, selector)["ratio"] >= 4.5, selector
    finally:
        set_theme(page, "JupyterLab Light")


def test_voila_shows_the_gate_and_approving_it_completes_the_run(lab: Lab, chromium: Any):
    (lab.root / "gated_voila.ipynb").write_text(json.dumps(notebook()))
    page = chromium.new_page()
    try:
        page.goto(f"{lab.url}/voila/render/gated_voila.ipynb?token={lab.token}")
        page.locator(f'{VIEW} g.node.gate[data-gate="open"]').wait_for(timeout=WAIT_MS)
        page.locator(f"{BROWSER} .nbflow-runs tbody tr").first.wait_for(timeout=WAIT_MS)
        assert "north" in page.locator(f"{PANEL} .nbflow-gate-value").inner_text()
        approve_and_wait_for_the_end(page)
    finally:
        page.close()
