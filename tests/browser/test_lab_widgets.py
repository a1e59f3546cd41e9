"""The widgets in a real browser: the quickstart notebook run in JupyterLab (Chromium).

The notebook is opened once and all its cells run; the tests then look at its last
widget, the checkpoint browser (``nf.browse(flow)``), in order: the DAG's colors, a
click on a step, the version slider, and the Fork button.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Lab, open_and_run_all, save_screenshot

from nbflow.widgets.states import PALETTE, NodeState

STEPS = {"orders", "cleaned", "daily", "trend", "report"}
BROWSER = ".nbflow-browser"
BROWSER_NODES = f"{BROWSER} .nbflow-dag-view g.node"
WAIT_MS = 60_000  # how long a test waits for the page to show a state (a busy machine)


@pytest.fixture(scope="module")
def quickstart(lab: Lab, chromium: Any) -> Iterator[Any]:
    """The quickstart notebook after Run All, its browser widget drawn."""
    page = open_and_run_all(lab, chromium, "quickstart.ipynb")
    try:
        page.wait_for_function(
            f"() => document.querySelectorAll('{BROWSER_NODES}').length === {len(STEPS)}",
            timeout=90_000,
        )
        page.locator(BROWSER).scroll_into_view_if_needed()
        yield page
    finally:
        page.close()


@pytest.fixture
def page(quickstart: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The quickstart page; a screenshot is saved in the test's temp dir if it fails."""
    yield quickstart
    save_screenshot(quickstart, request, tmp_path)


def nodes(page: Any) -> dict[str, dict[str, str]]:
    """The browser DAG's nodes: step -> its state and its box's fill color."""
    return page.evaluate(
        """(selector) => Object.fromEntries(Array.from(document.querySelectorAll(selector))
            .map(g => [g.dataset.step, {state: g.dataset.state,
                                        fill: g.querySelector('rect').getAttribute('fill')}]))""",
        BROWSER_NODES,
    )


def dag_svg(page: Any) -> str:
    return page.locator(f"{BROWSER} .nbflow-dag-view").inner_html()


def test_the_dag_shows_every_step_with_its_state_color(page):
    shown = nodes(page)
    assert set(shown) == STEPS
    for step, node in shown.items():
        state = NodeState(node["state"])
        assert node["fill"] == PALETTE[state][0], step
    # The browser selects the newest run, the quickstart's fork from `cleaned`: `orders`
    # was reused from its parent, the rest recomputed.
    assert shown["orders"]["state"] == "cached"
    assert {shown[s]["state"] for s in STEPS - {"orders"}} == {"completed"}
    # The run's live view in the notebook ended with every step done too.
    page.wait_for_function(
        f"() => document.querySelectorAll('.nbflow-live .nbflow-dag-view g.node').length"
        f" >= {len(STEPS)}",
        timeout=WAIT_MS,
    )


def test_clicking_a_node_shows_its_output_preview(page):
    page.locator(f'{BROWSER_NODES}[data-step="cleaned"]').click()
    panel = page.locator(f"{BROWSER} .nbflow-step-panel")
    panel.get_by_text("DataFrame · shape").wait_for(timeout=WAIT_MS)
    text = panel.inner_text()
    assert "cleaned" in text and "dtypes" in text and "amount" in text
    # The DAG redraws the node as selected on its own (a widget of its own).
    page.locator(f'{BROWSER_NODES}.selected[data-step="cleaned"]').wait_for(timeout=WAIT_MS)
    page.locator(f'{BROWSER_NODES}[data-step="trend"]').click()
    panel.get_by_text("ndarray · shape (2,)").wait_for(timeout=WAIT_MS)
    page.locator(f'{BROWSER_NODES}[data-step="cleaned"]').click()
    panel.get_by_text("DataFrame · shape").wait_for(timeout=WAIT_MS)


def test_moving_the_version_slider_changes_the_dag(page):
    before = dag_svg(page)
    states_before = {s: n["state"] for s, n in nodes(page).items()}
    handle = page.locator(f"{BROWSER} .nbflow-version .noUi-handle")
    handle.focus()
    page.keyboard.press("Home")  # the first version: the fork has just started
    page.wait_for_function(
        "([sel, html]) => document.querySelector(sel).innerHTML !== html",
        arg=[f"{BROWSER} .nbflow-dag-view", before],
        timeout=WAIT_MS,
    )
    states_then = {s: n["state"] for s, n in nodes(page).items()}
    assert states_then != states_before
    assert "completed" not in states_then.values()
    # One version later, one step on: the DAG changes again.
    earlier = dag_svg(page)
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([sel, html]) => document.querySelector(sel).innerHTML !== html",
        arg=[f"{BROWSER} .nbflow-dag-view", earlier],
        timeout=WAIT_MS,
    )
    page.keyboard.press("End")
    page.wait_for_function(
        "(sel) => !document.querySelector(sel).innerHTML.includes('state-never_run')",
        arg=f"{BROWSER} .nbflow-dag-view",
        timeout=WAIT_MS,
    )


def test_pressing_fork_creates_a_run_that_appears_in_the_runs_table(page):
    rows = page.locator(f"{BROWSER} .nbflow-runs tbody tr")
    keys_before = rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
    page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Fork").click()
    field = page.locator(f"{BROWSER} .nbflow-param-form .widget-inline-hbox", has_text="min_amount")
    box = field.locator("input")
    box.fill("40")
    box.press("Enter")
    # Before Fork is pressed, the panel says what the fork would reuse and run.
    plan = page.locator(f"{BROWSER} .nbflow-fork-plan")
    plan.get_by_text("reuses", exact=False).first.wait_for(timeout=WAIT_MS)
    page.locator(f"{BROWSER} .nbflow-fork-button").click()
    page.wait_for_function(
        """([sel, n]) => document.querySelectorAll(sel).length > n""",
        arg=[f"{BROWSER} .nbflow-runs tbody tr", len(keys_before)],
        timeout=WAIT_MS,
    )
    keys_after = rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
    new = [k for k in keys_after if k not in keys_before]
    assert len(new) == 1 and keys_after[0] == new[0]  # newest first
    # The fork runs in the background. Once it has ended, the panel says how, the table
    # shows it selected and completed, and the DAG draws its final states (each widget
    # draws on its own: wait for each one's final value, not for a time).
    page.locator(f"{BROWSER} .nbflow-fork").get_by_text(f"fork {new[0]} completed.").wait_for(
        timeout=WAIT_MS
    )
    newest = page.locator(f'{BROWSER} .nbflow-runs tbody tr.selected[data-key="{new[0]}"]')
    newest.locator(".nbflow-badge.status-completed").wait_for(timeout=WAIT_MS)
    assert "min_amount=40.0" in newest.inner_text()
    page.wait_for_function(
        """([browser, nodes, run]) => {
            const title = document.querySelector(`${browser} .nbflow-dag-title`);
            const states = Object.fromEntries(Array.from(document.querySelectorAll(nodes))
                .map(g => [g.dataset.step, g.dataset.state]));
            return title !== null && title.textContent.includes(`run ${run} · completed`)
                && Object.keys(states).length > 0
                && Object.values(states).every(s => s === "cached" || s === "completed");
        }""",
        arg=[BROWSER, BROWSER_NODES, new[0]],
        timeout=WAIT_MS,
    )
    shown = nodes(page)
    assert set(shown) == STEPS
    assert shown["orders"]["state"] == "cached"
    assert {shown[s]["state"] for s in STEPS - {"orders"}} == {"completed"}
