"""A human gate approved from the widget, in JupyterLab (Chromium).

A notebook written by the test runs a flow whose run stops at a gate. The cell's live
view then shows the gate as an open hexagon and, under the DAG, the gate panel with the
gate's value and token. The test types a name and a comment, clicks Approve, and waits
for the run to complete in the same view; another notebook does the same in the browser
(``nf.browse(flow)``), whose runs table and DAG follow. A third notebook's run is approved
from a terminal (``nbflow approve TOKEN``) while its page is open: the panel follows. With
``$NBFLOW_DOCS_IMAGES`` set (``docs/images``) it saves the panel's screenshot for
docs/gates.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Lab, docs_image, open_and_run_all, save_screenshot, wait_for_idle_kernel
from waiting import wait_for

WAIT_MS = 90_000
VIEW = ".nbflow-run-view"
PANEL = f"{VIEW} .nbflow-gates"

CELLS = [
    """\
import pandas as pd
import nbflow as nf
store = nf.open_store(":memory:")
flow = nf.Flow("reviewed", store=store)

@flow.step
def sales(n: int = 6):
    return pd.DataFrame({"region": ["north", "south", "east"] * (n // 3), "amount": range(n)})

@flow.gate
def check_sales(sales):
    return sales.groupby("region", as_index=False)["amount"].sum()

@flow.step
def totals(check_sales):
    return f"{len(check_sales)} regions, {check_sales['amount'].sum()} in all"
""",
    "run = flow.run()",
]


def notebook() -> dict[str, Any]:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
        for c in CELLS
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def gated(lab: Lab, chromium: Any) -> Iterator[Any]:
    """The notebook after Run All: the run waits at its gate, the panel drawn."""
    (lab.root / "gated.ipynb").write_text(json.dumps(notebook()))
    page = open_and_run_all(lab, chromium, "gated.ipynb")
    try:
        page.locator(f'{VIEW} g.node.gate[data-gate="open"]').wait_for(timeout=WAIT_MS)
        page.locator(f"{PANEL} .nbflow-approve").wait_for(timeout=WAIT_MS)
        page.locator(PANEL).scroll_into_view_if_needed()
        yield page
    finally:
        page.close()


@pytest.fixture
def page(gated: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield gated
    save_screenshot(gated, request, tmp_path)


def test_the_waiting_run_shows_its_gate_its_value_and_its_token(page):
    gate = page.locator(f'{VIEW} g.node[data-step="check_sales"]')
    assert gate.locator("polygon.shape").count() == 1  # a hexagon, not a box
    assert "needs approval" in gate.locator("text.caption").text_content()
    held = page.locator(f'{VIEW} g.node[data-step="totals"]').get_attribute("data-state")
    assert held == "never_run"  # held back by the gate
    value = page.locator(f"{PANEL} .nbflow-gate-value").inner_text()
    assert "north" in value and "amount" in value  # the gate's frame
    token = page.locator(f"{PANEL} .nbflow-gate-token input").input_value()
    assert token.startswith("nbflow-gate.v1.")
    assert page.locator(f"{PANEL} .nbflow-gate-by input").input_value()  # the OS user
    assert "waiting" in page.locator(f"{VIEW} .nbflow-dag-title").text_content()
    docs_image(page, VIEW, "gate-panel.png")


def test_clicking_approve_continues_the_run_to_its_end(page):
    page.locator(f"{PANEL} .nbflow-gate-by input").fill("reviewer")
    page.locator(f"{PANEL} .nbflow-gate-comment textarea").fill("totals match the ledger")
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
    assert gate.locator("polygon.inner").count() == 1  # approved: a double border
    status = page.locator(f"{PANEL} .nbflow-gate-status").inner_text()
    assert "approved by reviewer" in status
    decided = page.locator(PANEL).inner_text()
    assert "totals match the ledger" in decided
    assert page.locator(f"{PANEL} .nbflow-approve").is_hidden()  # nothing left to decide
    docs_image(page, VIEW, "gate-approved.png")


def test_the_browser_approves_the_selected_run_s_gate(lab: Lab, chromium: Any):
    nb = notebook()
    nb["cells"][1]["source"] = "run = flow.run(progress=False)\nnf.browse(flow)"
    (lab.root / "gated_browser.ipynb").write_text(json.dumps(nb))
    page = open_and_run_all(lab, chromium, "gated_browser.ipynb")
    browser = ".nbflow-browser"
    panel = f"{browser} .nbflow-gates"
    try:
        page.locator(f'{browser} g.node.gate[data-gate="open"]').wait_for(timeout=WAIT_MS)
        page.locator(f"{panel} .nbflow-approve").wait_for(timeout=WAIT_MS)
        assert "north" in page.locator(f"{panel} .nbflow-gate-value").inner_text()
        assert "waiting" in page.locator(f"{browser} .nbflow-runs tr.selected").inner_text()
        page.locator(f"{panel} .nbflow-gate-by input").fill("carol")
        page.locator(f"{panel} .nbflow-approve").click()
        page.locator(f'{browser} g.node[data-step="totals"][data-state="completed"]').wait_for(
            timeout=WAIT_MS
        )
        page.locator(f"{browser} .nbflow-runs tr.selected", has_text="completed").wait_for(
            timeout=WAIT_MS
        )
        page.locator(f"{panel} .nbflow-gate-status", has_text="completed").wait_for(timeout=WAIT_MS)
        assert "approved by carol" in page.locator(f"{panel} .nbflow-gate-status").inner_text()
        gate = page.locator(f'{browser} g.node[data-step="check_sales"]')
        assert gate.get_attribute("data-gate") == "approved"
    finally:
        page.close()


def test_an_approval_from_a_terminal_shows_in_the_open_panel(lab: Lab, chromium: Any):
    store = lab.root / "elsewhere.duckdb"
    token_file = lab.root / "elsewhere.token"
    nb = notebook()
    nb["cells"][0]["source"] = CELLS[0].replace('":memory:"', repr(str(store)))
    nb["cells"].append(
        {
            "cell_type": "code",
            "metadata": {},
            "source": f"open({str(token_file)!r}, 'w').write(run.gate_token('check_sales'))",
            "outputs": [],
            "execution_count": None,
        }
    )
    (lab.root / "gated_elsewhere.ipynb").write_text(json.dumps(nb))
    page = open_and_run_all(lab, chromium, "gated_elsewhere.ipynb")
    try:
        page.locator(f"{PANEL} .nbflow-approve").wait_for(timeout=WAIT_MS)
        wait_for(token_file.exists, "the notebook writing the gate's token", WAIT_MS / 1000)
        wait_for_idle_kernel(lab)
        comment = page.locator(f"{PANEL} .nbflow-gate-comment textarea")
        comment.fill("half typed")
        token = token_file.read_text().strip()
        # A reviewer approves from a terminal while the page is open.
        cli = [str(Path(sys.executable).parent / "nbflow"), "approve", token, "--by"]
        done = subprocess.run(
            [*cli, "terminal-user", "--comment", "from the terminal", "--store", str(store)],
            capture_output=True,
            text=True,
            timeout=WAIT_MS / 1000,
            env={k: v for k, v in os.environ.items() if k != "NBFLOW_STORE"},
        )
        assert done.returncode == 0, done.stderr
        status = page.locator(f"{PANEL} .nbflow-gate-status", has_text="elsewhere")
        status.wait_for(timeout=WAIT_MS)
        assert "check_sales approved by terminal-user" in status.inner_text()
        page.locator(f"{PANEL} .nbflow-approve").wait_for(state="hidden", timeout=WAIT_MS)
        page.locator(f'{VIEW} g.node[data-step="check_sales"][data-gate="approved"]').wait_for(
            timeout=WAIT_MS
        )
        assert "from the terminal" in page.locator(PANEL).inner_text()
        assert comment.input_value() == "half typed"  # what the user typed stays
    finally:
        page.close()
