"""The browser in a 900 px wide JupyterLab (Chromium): nothing cut off.

The quickstart notebook's checkpoint browser is shown in a 900 px viewport. Its runs
table is wider than the output there (seven columns, run ids, parameters): it must stay
inside the output and scroll sideways within its own frame, so that every column can be
reached, with the first column (the run) kept in view, rather than run past the output's
edge where it is cut off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Lab, open_and_run_all, save_screenshot

WAIT_MS = 90_000
WIDTH = 900
BROWSER = ".nbflow-browser"

MEASURE = """(sel) => {
  const box = document.querySelector(sel);
  const area = box.closest('.jp-OutputArea-output') || box.parentElement;
  const wrap = box.querySelector('.nbflow-table-wrap');
  const heads = Array.from(box.querySelectorAll('th'));
  const r = (e) => e.getBoundingClientRect();
  return {
    area: [r(area).left, r(area).right],
    box: [r(box).left, r(box).right],
    wrap: [r(wrap).left, r(wrap).right],
    scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth,
    overflowX: getComputedStyle(wrap).overflowX,
    last: r(heads[heads.length - 1]).right,
    page: document.documentElement.clientWidth,
  };
}"""


@pytest.fixture(scope="module")
def narrow(lab: Lab, chromium: Any) -> Iterator[Any]:
    """The quickstart notebook after Run All in a 900 px viewport, its browser drawn."""
    page = open_and_run_all(lab, chromium, "quickstart.ipynb")
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    try:
        page.locator(f"{BROWSER} .nbflow-runs tbody tr").first.wait_for(timeout=WAIT_MS)
        page.locator(f"{BROWSER} .nbflow-dag-view g.node").first.wait_for(timeout=WAIT_MS)
        page.locator(f"{BROWSER} .nbflow-runs").scroll_into_view_if_needed()
        yield page
    finally:
        page.close()


@pytest.fixture
def page(narrow: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield narrow
    save_screenshot(narrow, request, tmp_path)


def test_the_runs_table_stays_inside_the_output_and_scrolls_within_it(page):
    runs = f"{BROWSER} .nbflow-runs"
    shown = page.evaluate(MEASURE, runs)
    right = shown["area"][1]
    assert right <= shown["page"] + 1, shown
    # The table's frame ends inside the output (at most the scrollbar's few px off).
    assert shown["box"][1] <= right + 1 and shown["wrap"][1] <= right + 1, shown
    if shown["scrollWidth"] > shown["clientWidth"]:
        assert shown["overflowX"] in ("auto", "scroll"), shown
        # Scrolled to its end, the last column comes into the output.
        page.evaluate(
            "(sel) => { const w = document.querySelector(sel); w.scrollLeft = w.scrollWidth; }",
            f"{runs} .nbflow-table-wrap",
        )
        page.wait_for_function(
            """([sel, right]) => {
              const heads = document.querySelectorAll(sel + ' th');
              return heads[heads.length - 1].getBoundingClientRect().right <= right + 1; }""",
            arg=[runs, right],
            timeout=WAIT_MS,
        )
        # ... and the first column, the run, stays where it was: which row is which run.
        first = page.evaluate(
            """(sel) => {
              const wrap = document.querySelector(sel + ' .nbflow-table-wrap');
              const cell = wrap.querySelector('tbody tr td:first-child');
              const at = cell.getBoundingClientRect();
              const hit = document.elementFromPoint(at.left + 4, at.top + at.height / 2);
              return {left: at.left - wrap.getBoundingClientRect().left,
                      onTop: cell.contains(hit), scrolled: wrap.scrollLeft};
            }""",
            runs,
        )
        assert first["scrolled"] > 0 and abs(first["left"]) <= 1 and first["onTop"], first


def test_the_browser_s_other_parts_fit_the_output_too(page):
    parts = page.evaluate(
        """(sel) => {
          const browser = document.querySelector(sel);
          const area = browser.closest('.jp-OutputArea-output');
          const right = area.getBoundingClientRect().right;
          const out = {};
          for (const name of ['.nbflow-dag-view', '.nbflow-events', '.nbflow-fork',
                              '.nbflow-version', '.lm-TabBar']) {
            const el = browser.querySelector(name);
            if (el && el.offsetParent !== null) {
              out[name] = el.getBoundingClientRect().right - right;
            }
          }
          out.browser = browser.getBoundingClientRect().right - right;
          return out;
        }""",
        BROWSER,
    )
    assert all(over <= 1 for over in parts.values()), parts
