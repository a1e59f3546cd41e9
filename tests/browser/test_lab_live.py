"""Every display live and true, in JupyterLab (Chromium) (issue 17, truth and liveness).

One notebook, written by the test: a flow run in the background and displayed while it
runs; a display made before any run; seven steps on four workers; a browser of the flow;
and runs started from a thread after the browser is shown. Steps wait for "gate" files
the test creates, so each test sees a run *while* it runs and then after it ended,
without sleeping: it waits for the page to show each state (with a generous timeout).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Lab, open_and_run_all, save_screenshot

WAIT_MS = 90_000
BROWSER = ".nbflow-browser"

SETUP = """\
import os, threading, time
import nbflow as nf
GATES = {gates!r}
def wait_gate(name):  # the test creates the file: a state polled, with a deadline
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(GATES, name)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate file {{name}} never came")
        time.sleep(0.02)
store = nf.open_store(":memory:")
bg = nf.Flow("bg", store=store)
@bg.step
def first(n: int = 1): return n
@bg.step
def slow(first, gate: str = "bg"):
    wait_gate(gate)
    return first + 1
@bg.step
def last(slow): return slow + 1
"""
BEFORE = """\
bg.show()  # before any run: "the latest run of bg", whichever that will be
"""
BACKGROUND = """\
run = bg.run(background=True, progress=False)
deadline = time.monotonic() + 120  # until the run has started (a state, polled)
while run.record.status.value == "pending":
    assert time.monotonic() < deadline, "the background run never started"
    time.sleep(0.01)
run  # this run's display: it follows this run, whatever runs after it
"""
QUEUED = """\
many = nf.Flow("many", store=store)
for i in range(7):
    ns = {"wait_gate": wait_gate}
    exec(f"def part_{i}():\\n    wait_gate('many')\\n    return {i}", ns)
    many.step(ns[f"part_{i}"])
queued = many.run(executor="threads", max_workers=4, background=True, progress=False)
while list(queued.step_states().values()).count("running") < 4:
    time.sleep(0.01)
many.show()
"""
BROWSE = """\
browser = nf.browse(bg)
browser
"""
ELSEWHERE = """\
def later():
    wait_gate("bg")
    wait_gate("again")
    bg.run(progress=False)
threading.Thread(target=later, daemon=True).start()
"""


def notebook(gates: Path) -> dict[str, Any]:
    cells = [SETUP.format(gates=str(gates)), BEFORE, BACKGROUND, QUEUED, BROWSE, ELSEWHERE]
    return {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": c,
                "outputs": [],
                "execution_count": None,
            }
            for c in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def cell(n: int) -> str:
    """The output area of code cell ``n`` (0-based)."""
    return f".jp-Notebook .jp-CodeCell:nth-child({n + 1}) .jp-OutputArea"


def node(where: str, step: str) -> str:
    return f'{where} g.node[data-step="{step}"]'


def wait_text(page: Any, selector: str, pattern: str) -> None:
    """Wait until the element's text matches the regular expression ``pattern``."""
    page.wait_for_function(
        "([sel, pat]) => new RegExp(pat).test(document.querySelector(sel)?.textContent || '')",
        arg=[selector, pattern],
        timeout=WAIT_MS,
    )


def wait_state(page: Any, where: str, step: str, state: str) -> None:
    page.locator(f'{node(where, step)}[data-state="{state}"]').wait_for(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def live(lab: Lab, chromium: Any) -> Iterator[tuple[Any, Path]]:
    """The notebook after Run All: bg running (its `slow` waits), seven steps on four
    workers waiting, the browser shown."""
    gates = lab.root / "gates"
    gates.mkdir()
    (lab.root / "live.ipynb").write_text(json.dumps(notebook(gates)))
    page = open_and_run_all(lab, chromium, "live.ipynb")
    try:
        page.locator(f"{BROWSER} .nbflow-dag-view g.node").first.wait_for(timeout=WAIT_MS)
        yield page, gates
    finally:
        page.close()


@pytest.fixture
def page(live: tuple[Any, Path], request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield live[0]
    save_screenshot(live[0], request, tmp_path)


def test_a_running_step_ticks_and_steps_not_reached_say_waiting(page):
    shown = cell(2)
    wait_state(page, shown, "slow", "running")
    caption = f"{node(shown, 'slow')} text.ticking"
    first = page.locator(caption).text_content()
    assert first.startswith("running · ")
    page.wait_for_function(
        "([sel, was]) => document.querySelector(sel)?.textContent !== was",
        arg=[caption, first],
        timeout=WAIT_MS,
    )  # its clock moves between redraws
    assert page.locator(f"{node(shown, 'slow')} animate").count() == 1  # live: it pulses
    assert "waiting" in page.locator(node(shown, "last")).text_content()


def test_queued_steps_show_queued_not_running(page):
    shown = cell(3)
    page.wait_for_function(
        """(sel) => {
          const states = Array.from(document.querySelectorAll(sel + ' g.node'))
            .map(n => n.dataset.state);
          return states.filter(s => s === 'running').length === 4
              && states.filter(s => s === 'queued').length === 3;
        }""",
        arg=shown,
        timeout=WAIT_MS,
    )


def test_the_fork_panel_says_what_it_would_do_and_keeps_the_chosen_step(page, live):
    gates = live[1]
    (gates / "bg").touch()  # bg's run may end: it can be forked once it has
    (gates / "many").touch()
    runs = page.locator(f"{BROWSER} .nbflow-runs tbody tr")
    runs.first.locator(".nbflow-badge.status-completed").wait_for(timeout=WAIT_MS)
    page.locator(f"{BROWSER}").scroll_into_view_if_needed()
    page.locator(node(BROWSER, "first")).click()  # selected in the DAG...
    page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Fork").click()
    page.locator(f"{BROWSER} .nbflow-fork .widget-dropdown select").select_option("slow")
    plan = f"{BROWSER} .nbflow-fork-plan"
    wait_text(page, plan, "reuses first.*runs slow, last")
    n = page.locator(f"{BROWSER} .nbflow-param-form .widget-inline-hbox", has_text="n (int)")
    n.locator("input").fill("5")
    n.locator("input").press("Enter")
    wait_text(page, plan, "also recomputes first: parameter n: 1 -> 5")
    n.locator("input").fill("1")
    n.locator("input").press("Enter")
    wait_text(page, plan, "^reuses first")
    gate = page.locator(f"{BROWSER} .nbflow-param-form .widget-inline-hbox", has_text="gate")
    gate.locator("input").fill("fork")  # the fork's `slow` waits for the "fork" gate
    before = set(runs.evaluate_all("rows => rows.map(r => r.dataset.key)"))
    page.locator(f"{BROWSER} .nbflow-fork-button").click()

    # While it runs: header, table row, slider and DAG all say running, on one version.
    wait_state(page, BROWSER, "slow", "running")
    fork = page.locator(f"{BROWSER} .nbflow-runs tbody tr.selected").get_attribute("data-key")
    assert fork not in before
    page.wait_for_function(
        """([b, fork]) => {
          const header = document.querySelector(b + ' .nbflow-run-title')?.textContent || '';
          const row = document.querySelector(`${b} .nbflow-runs tr[data-key="${fork}"]`);
          const title = document.querySelector(b + ' .nbflow-dag-title')?.textContent || '';
          const label = document.querySelector(b + ' .nbflow-version-label')?.textContent || '';
          const v = (header.match(/version (\\d+)/) || [])[1];
          return v && Number(v) > 1 && header.includes('running')
            && row?.querySelector('.nbflow-badge.status-running')
            && title.includes(`running at version ${v}`)
            && label.includes(`version ${v} of ${v}`);
        }""",
        arg=[BROWSER, fork],
        timeout=WAIT_MS,
    )
    (gates / "fork").touch()
    page.locator(f"{BROWSER} .nbflow-fork").get_by_text(f"fork {fork} completed.").wait_for(
        timeout=WAIT_MS
    )
    row = page.locator(f'{BROWSER} .nbflow-runs tr[data-key="{fork}"]')
    row.locator(".nbflow-badge.status-completed").wait_for(timeout=WAIT_MS)
    assert page.locator(f"{BROWSER} .nbflow-fork .widget-dropdown select").input_value() == "slow"
    assert page.locator(f"{node(BROWSER, 'first')}.selected").count() == 1


def test_displays_follow_the_run_they_claim_to_the_end(page, live):
    (live[1] / "bg").touch()
    (live[1] / "many").touch()
    shown = cell(2)
    wait_text(page, f"{shown} .nbflow-dag-title", "^bg · run .* · completed$")
    for step in ("first", "slow", "last"):
        wait_state(page, shown, step, "completed")
    assert page.locator(f"{shown} animate").count() == 0
    # The display made before any run claims "bg's latest run": it shows it too.
    wait_text(page, f"{cell(1)} .nbflow-dag-title", "^bg · latest run .* completed")
    page.wait_for_function(
        "(sel) => Array.from(document.querySelectorAll(sel + ' g.node'))"
        ".every(n => n.dataset.state === 'completed')",
        arg=cell(3),
        timeout=WAIT_MS,
    )


def test_runs_started_elsewhere_appear_without_refresh(page, live):
    (live[1] / "bg").touch()
    rows = page.locator(f"{BROWSER} .nbflow-runs tbody tr")
    rows.first.wait_for(timeout=WAIT_MS)
    before = set(rows.evaluate_all("rows => rows.map(r => r.dataset.key)"))
    (live[1] / "again").touch()  # the thread of the last cell starts a run now
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length > n",
        arg=[f"{BROWSER} .nbflow-runs tbody tr", len(before)],
        timeout=WAIT_MS,
    )
    keys = rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
    new = [k for k in keys if k not in before]
    assert len(new) == 1
    page.locator(f'{BROWSER} .nbflow-runs tr[data-key="{new[0]}"] .status-completed').wait_for(
        timeout=WAIT_MS
    )


def test_time_travel_does_not_pulse(page, live):
    (live[1] / "bg").touch()
    page.locator(f"{BROWSER} .lm-TabBar-tab", has_text="Events").click()
    started = page.locator(f"{BROWSER} .nbflow-events tbody tr", has_text="step_started")
    started.first.click()
    wait_state(page, BROWSER, "slow", "running")
    assert page.locator(f"{BROWSER} .nbflow-dag-view animate").count() == 0
    assert page.locator(f"{BROWSER} .nbflow-dag-view text.ticking").count() == 0
