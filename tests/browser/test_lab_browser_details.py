"""Details of the browser in a real browser (issue 17, point 11): the events pager goes
to earlier and later events, clicking an event moves the version slider to it, "output
from run X" is a link that selects run X, the fork panel's parameter boxes line up, and
selecting a node leaves the slider where it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Lab, open_and_run_all, save_screenshot

BROWSER = ".nbflow-browser"
EVENTS = f"{BROWSER} .nbflow-events"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def quickstart(lab: Lab, chromium: Any) -> Iterator[Any]:
    """The quickstart notebook after Run All, its browser's Events tab open."""
    page = open_and_run_all(lab, chromium, "quickstart.ipynb")
    try:
        page.locator(f"{BROWSER} .nbflow-dag-view g.node").first.wait_for(timeout=90_000)
        page.locator(BROWSER).scroll_into_view_if_needed()
        page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Events").click()
        page.locator(f"{EVENTS} tbody tr").first.wait_for(timeout=WAIT_MS)
        yield page
    finally:
        page.close()


@pytest.fixture
def page(quickstart: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield quickstart
    save_screenshot(quickstart, request, tmp_path)


def test_the_events_pager_says_earlier_and_later(page):
    pager = page.locator(f"{EVENTS} .nbflow-pager")
    assert pager.locator(".nbflow-prev").text_content() == "\u2039 earlier"
    assert pager.locator(".nbflow-next").text_content() == "later \u203a"
    runs_pager = page.locator(f"{BROWSER} .nbflow-runs .nbflow-pager")
    assert runs_pager.locator(".nbflow-next").text_content() == "older \u203a"


def test_clicking_an_event_moves_the_slider_to_its_version(page):
    row = page.locator(f"{EVENTS} tbody tr", has_text="step_completed").first
    seq = row.get_attribute("data-key")
    row.click()
    page.locator(f"{BROWSER}").get_by_text(f"version {seq} of", exact=False).wait_for(
        timeout=WAIT_MS
    )
    page.locator(f'{EVENTS} tbody tr.selected[data-key="{seq}"]').wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        "([sel, seq]) => document.querySelector(sel)?.textContent.includes(`version ${seq}`)",
        arg=[f"{BROWSER} .nbflow-dag-title", seq],
        timeout=WAIT_MS,
    )


def test_output_from_another_run_is_a_link_that_selects_it(page):
    # The newest run is the quickstart's fork: `orders` was reused from its parent.
    link = page.locator(f"{EVENTS} a.nbflow-run-link").first
    link.wait_for(timeout=WAIT_MS)
    parent = link.get_attribute("data-link")
    assert parent and link.text_content() == parent
    row_text = link.locator("xpath=ancestor::tr").inner_text()
    assert f"output from run {parent}" in row_text
    link.click()
    page.locator(f'{BROWSER} .nbflow-runs tbody tr.selected[data-key="{parent}"]').wait_for(
        timeout=WAIT_MS
    )
    page.wait_for_function(
        "([sel, run]) => document.querySelector(sel)?.textContent.includes(`run ${run}`)",
        arg=[f"{BROWSER} .nbflow-dag-title", parent],
        timeout=WAIT_MS,
    )


def test_the_parameter_boxes_line_up(page):
    page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Fork").click()
    boxes = page.locator(f"{BROWSER} .nbflow-param-form input")
    boxes.first.wait_for(timeout=WAIT_MS)
    lefts = boxes.evaluate_all("els => els.map(e => Math.round(e.getBoundingClientRect().left))")
    assert len(lefts) >= 2 and len(set(lefts)) == 1, lefts
    page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Events").click()


def test_selecting_a_node_does_not_move_the_slider(page):
    slider = page.locator(f"{BROWSER} .nbflow-version")
    top = slider.evaluate("e => e.getBoundingClientRect().top")
    page.locator(f'{BROWSER} .nbflow-dag-view g.node[data-step="cleaned"]').click()
    page.locator(f"{BROWSER} .nbflow-dag-info", has_text="cleaned:").wait_for(timeout=WAIT_MS)
    assert slider.evaluate("e => e.getBoundingClientRect().top") == top
