"""The widgets in JupyterLab's dark theme (Chromium): every text readable, nothing white.

A notebook written by the test runs a flow twice (the second run fails in one step) and
opens the browser on it, whose newest run (the failed one) is selected. In the dark
theme the tests measure, from the computed styles, the WCAG contrast ratio of the
selected runs row, the run's error, the DAG's node names and captions, and check that
the DAG's view is drawn on the notebook's own dark background. With
``$NBFLOW_DOCS_IMAGES`` set (``docs/images``), they save the screenshots in the docs:
the browser, its fork panel, and the browser in the dark theme.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import CONTRAST, Lab, docs_image, open_and_run_all, save_screenshot, set_theme

WAIT_MS = 90_000
BROWSER = ".nbflow-browser"
TEXT = 4.5  # WCAG AA for text
GRAPHICS = 3.0  # WCAG AA for the parts of a graphic (borders, edges)

CELLS = [
    """\
import nbflow as nf
store = nf.open_store(":memory:")
flow = nf.Flow("shades", store=store)

@flow.step
def orders(n: int = 12):
    return list(range(n))

@flow.step
def cleaned(orders):
    return [o for o in orders if o % 3]

@flow.step
def summary(cleaned):
    return {"rows": len(cleaned), "total": sum(cleaned)}

@flow.step
def upload(summary, target: str = "s3://reports"):
    raise ConnectionError(f"cannot reach {target}: the network is down")

flow.run(targets=["summary"], progress=False)
failed = flow.run(raise_on_error=False, progress=False)
""",
    "nf.browse(flow)",
]


def notebook() -> dict[str, Any]:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
        for c in CELLS
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def shades(lab: Lab, chromium: Any) -> Iterator[Any]:
    """The notebook after Run All, the browser drawn with the failed run selected."""
    (lab.root / "shades.ipynb").write_text(json.dumps(notebook()))
    page = open_and_run_all(lab, chromium, "shades.ipynb")
    try:
        page.locator(f"{BROWSER} .nbflow-dag-view g.node.state-failed").wait_for(timeout=WAIT_MS)
        page.locator(f"{BROWSER} .nbflow-runs tr.selected").wait_for(timeout=WAIT_MS)
        page.locator(BROWSER).scroll_into_view_if_needed()
        page.mouse.move(0, 0)  # no row under the pointer (hovered rows have their own color)
        yield page
    finally:
        page.close()


@pytest.fixture
def page(shades: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield shades
    save_screenshot(shades, request, tmp_path)


@pytest.fixture
def dark(page: Any) -> Iterator[Any]:
    """The page in JupyterLab's dark theme (switched back to light afterwards: the theme
    is a setting of the server, which the other browser tests share)."""
    before = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    set_theme(page, "JupyterLab Dark")
    try:
        page.wait_for_function(
            "(before) => getComputedStyle(document.body).backgroundColor !== before",
            arg=before,
            timeout=WAIT_MS,
        )
        yield page
    finally:
        set_theme(page, "JupyterLab Light")


def contrast(page: Any, selector: str) -> float:
    measured = page.evaluate(CONTRAST, selector)
    assert measured is not None, f"nothing matches {selector}"
    return float(measured["ratio"])


def luminance(rgb: list[float]) -> float:
    def channel(v: float) -> float:
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


READABLE = {
    "the selected runs row": f"{BROWSER} .nbflow-runs tr.selected td:nth-child(2)",
    "the run's error": f"{BROWSER} .nbflow-error",
    "a node's name": f'{BROWSER} g.node[data-step="orders"] text.name',
    "a node's caption": f'{BROWSER} g.node[data-step="orders"] text.caption',
    "a failed node's name": f'{BROWSER} g.node[data-step="upload"] text.name',
    "the DAG's title": f"{BROWSER} .nbflow-dag-title",
    "a status badge": f"{BROWSER} .nbflow-runs tbody tr:not(.selected) .nbflow-badge",
    "a failed badge": f"{BROWSER} .nbflow-runs tbody tr.selected .nbflow-badge",
    "the legend": f"{BROWSER} .nbflow-legend-item",
}


def test_in_the_light_theme_every_text_is_readable(page):
    ratios = {what: contrast(page, selector) for what, selector in READABLE.items()}
    assert all(r >= TEXT for r in ratios.values()), ratios
    docs_image(page, BROWSER, "browser.png")


def test_in_the_dark_theme_every_text_is_readable(dark):
    ratios = {what: contrast(dark, selector) for what, selector in READABLE.items()}
    assert all(r >= TEXT for r in ratios.values()), ratios
    # Edges and node borders are graphics: 3:1 against the view's background.
    edge = dark.evaluate(
        """(sel) => { const p = document.querySelector(sel);
            return getComputedStyle(p).stroke; }""",
        f"{BROWSER} g.edge path",
    )
    view = dark.evaluate(CONTRAST, f"{BROWSER} .nbflow-dag-view")
    edge_rgb = [float(v) for v in edge[edge.index("(") + 1 : -1].split(",")]
    hi, lo = sorted([luminance(edge_rgb), luminance(view["bg"])], reverse=True)
    assert (hi + 0.05) / (lo + 0.05) >= GRAPHICS, (edge, view["bg"])
    docs_image(dark, BROWSER, "browser-dark.png")


def test_in_the_dark_theme_the_dag_is_drawn_on_the_notebook_s_background(dark):
    shown = dark.evaluate(
        """(sel) => {
          const view = document.querySelector(sel);
          const nodes = Array.from(view.querySelectorAll('g.node .shape'))
            .map(s => getComputedStyle(s).fill);
          const minimap = view.querySelector('.nbflow-minimap');
          return {view: getComputedStyle(view).backgroundColor,
                  page: getComputedStyle(document.body).backgroundColor,
                  layout0: getComputedStyle(document.body)
                    .getPropertyValue('--jp-layout-color0').trim(),
                  nodes};
        }""",
        f"{BROWSER} .nbflow-dag-view",
    )
    view = [float(v) for v in shown["view"][shown["view"].index("(") + 1 : -1].split(",")[:3]]
    assert luminance(view) < 0.05, shown  # dark, not a white box
    for fill in shown["nodes"]:  # dark node boxes (their light names are measured above)
        rgb = [float(v) for v in fill[fill.index("(") + 1 : -1].split(",")[:3]]
        assert luminance(rgb) < 0.12, shown


def test_the_fork_panel_reads_well_and_says_what_a_fork_reuses(page):
    page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Fork").click()
    panel = f"{BROWSER} .nbflow-fork"
    page.locator(panel).wait_for(state="visible", timeout=WAIT_MS)
    page.locator(f"{panel} button", has_text="Fork").wait_for(timeout=WAIT_MS)
    ratio = contrast(page, f"{panel} .widget-label")
    assert ratio >= TEXT
    # Forking from `upload` would reuse what is upstream of it: the panel says so.
    page.locator(f"{panel} select").first.select_option("upload")
    page.locator(f"{panel} .nbflow-fork-plan", has_text="reuses").wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        "(sel) => /reuses (?!nothing)/.test(document.querySelector(sel).textContent)",
        arg=f"{panel} .nbflow-fork-plan",
        timeout=WAIT_MS,
    )
    docs_image(page, panel, "fork-panel.png")
    page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Step").click()
