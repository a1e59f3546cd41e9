"""The checkpoint browser (``nf.browse``), tested without a browser: runs table, versions,
step previews, events, forks, lineage, and closing."""

from __future__ import annotations

import gc
import html
import re
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from ipywidgets.widgets.widget import _instances as widget_instances
from waiting import wait_for
from widget_comms import comms, frontend_update  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.widgets.browser import Browser
from nbflow.widgets.rows import lineage_tree
from nbflow.widgets.states import PALETTE, NodeState


def shop(store: nf.Store, name: str = "shop") -> nf.Flow:
    flow = nf.Flow(name, store=store)

    @flow.step
    def orders(n: int = 20) -> pd.DataFrame:
        return pd.DataFrame({"amount": np.arange(n, dtype="float64"), "country": ["DE"] * n})

    @flow.step
    def cleaned(orders: pd.DataFrame, min_amount: float = 5.0) -> pd.DataFrame:
        return orders[orders["amount"] >= min_amount]

    @flow.step
    def weights(cleaned: pd.DataFrame) -> np.ndarray:
        return cleaned["amount"].to_numpy(dtype="float32")

    @flow.step
    def report(cleaned: pd.DataFrame, weights: np.ndarray, label: str = "x") -> dict:
        return {"rows": len(cleaned), "label": label}

    return flow


def wait_until_shown_finished(browser: Browser, run_id: str) -> str:
    """Wait until the browser has drawn the end of a fork it started, and return the fork
    panel's message: the runner's thread writes how the fork ended there last, after it
    has redrawn the run's final state (the store says the run ended a little earlier)."""
    ended = re.compile(rf"fork {re.escape(run_id)} (completed|failed|cancelled)")
    return wait_for(
        lambda: ended.search(browser.fork.status.value) and browser.fork.status.value,
        f"the fork panel saying how fork {run_id} ended",
    )


@dataclass
class Browsed:
    """A flow with two runs (the second with min_amount=10), and its browser."""

    flow: nf.Flow
    first: nf.Run
    second: nf.Run
    browser: Browser


@pytest.fixture
def browsed(store, comms):
    flow = shop(store)
    first = flow.run(progress=False)
    second = flow.run(min_amount=10.0, progress=False)
    browser = nf.browse(flow)
    yield Browsed(flow, first, second, browser)
    browser.close()


def test_the_newest_run_is_selected_and_the_table_lists_runs_newest_first(browsed):
    first, second, browser = browsed.first, browsed.second, browsed.browser
    assert browser.runs.row_keys == [second.id, first.id]
    assert browser.run == second and browser.runs.selected == second.id
    row = browser.runs.rows[0]["cells"]
    assert row[1:3] == ["shop", "completed"] and "min_amount=10.0" in row[5]
    assert "min_amount" in browser.header.value and "10.0" in browser.header.value
    # `orders` came from the first run's cache, the rest was recomputed for min_amount=10.
    assert browser.dag.states == {
        "orders": "cached",
        "cleaned": "completed",
        "weights": "completed",
        "report": "completed",
    }
    assert PALETTE[NodeState.CACHED][0] in browser.dag.svg


def test_clicking_a_run_in_the_table_selects_it(browsed):
    first, browser = browsed.first, browsed.browser
    frontend_update(browser.runs, selected=first.id)
    assert browser.run == first
    assert "5.0" in browser.header.value
    assert set(browser.dag.states.values()) == {"completed"}
    assert browser.version.value == first.version
    assert [v for _, v in browser.version.options] == list(first.versions["version"])


def test_filters_by_flow_and_status(store, comms):
    shop(store).run(progress=False)
    other = shop(store, "other")
    other.run(progress=False)
    broken = nf.Flow("broken", store=store)

    @broken.step
    def boom():
        raise RuntimeError("no")

    broken.run(raise_on_error=False, progress=False)
    browser = nf.browse(store)
    try:
        assert len(browser.runs.rows) == 3
        assert {label for label, _ in browser.flow_filter.options} >= {"shop", "other", "broken"}
        browser.flow_filter.value = "other"
        assert [r["cells"][1] for r in browser.runs.rows] == ["other"]
        browser.flow_filter.value = ""
        browser.status_filter.value = "failed"
        assert [r["cells"][1] for r in browser.runs.rows] == ["broken"]
        assert browser.runs.rows[0]["status"] == "failed"
        browser.status_filter.value = "cancelled"
        assert browser.runs.rows == [] and browser.runs.page_text == "0 of 0"
    finally:
        browser.close()


def test_pages_through_many_runs(store, comms):
    flow = nf.Flow("many", store=store)

    @flow.step
    def value(i: int = 0):
        return i

    ids = [flow.run(i=i, progress=False).id for i in range(45)]
    browser = nf.browse(store, page_size=20)
    try:
        assert browser.runs.pages == 3 and browser.runs.page_text == "1-20 of 45"
        assert browser.runs.row_keys == ids[::-1][:20]
        frontend_update(browser.runs, page=2)  # the pager's "older" button, twice
        assert browser.runs.row_keys == ids[::-1][40:]
        assert browser.runs.page_text == "41-45 of 45"
        frontend_update(browser.runs, selected=ids[0])
        assert browser.run is not None and browser.run.id == ids[0]
    finally:
        browser.close()


def test_the_version_slider_travels_back_in_time(browsed):
    first, browser = browsed.first, browsed.browser
    frontend_update(browser.runs, selected=first.id)
    latest_svg = browser.dag.svg
    versions = first.versions
    done = versions[(versions["type"] == "step_completed") & (versions["step"] == "cleaned")]
    at = int(done["version"].iloc[0])
    browser.version.value = at
    assert browser.dag.svg != latest_svg
    expected = first.at(at).step_states()
    shown = {s: st for s, st in browser.dag.states.items() if st != "never_run"}
    assert shown == expected == {"orders": "completed", "cleaned": "completed"}
    assert f"version {at} of {first.version}" in browser.version_label.value
    # Events after that version are dimmed; the step panel shows the step as it was.
    dimmed = [int(r["key"]) for r in browser.events.rows if r["dim"]]
    assert dimmed and min(dimmed) == at + 1
    frontend_update(browser.dag, selected="report")
    assert "not run as of version" in browser.step_panel.value
    browser.version.value = browser.version.options[-1][1]
    assert set(browser.dag.states.values()) == {"completed"}
    assert "DataFrame" not in browser.step_panel.value and "rows" in browser.step_panel.value


def test_selecting_a_step_shows_its_output_timings_and_errors(store, comms):
    flow = shop(store)

    @flow.step
    def fragile(report: dict) -> int:
        raise KeyError("missing column")

    flow.run(raise_on_error=False, progress=False)
    browser = nf.browse(flow)
    try:
        frontend_update(browser.dag, selected="cleaned")
        panel = browser.step_panel.value
        assert "DataFrame · shape (15, 2)" in panel and "amount: float64" in panel
        assert "duration" in panel and "started" in panel and "arrow codec" in panel
        frontend_update(browser.dag, selected="weights")
        assert "ndarray · shape (15,) · dtype float32" in browser.step_panel.value
        frontend_update(browser.dag, selected="report")
        assert "{&#x27;rows&#x27;: 15" in browser.step_panel.value
        frontend_update(browser.dag, selected="fragile")
        panel = browser.step_panel.value
        assert "KeyError" in panel and "nbflow-traceback" in panel and "raise KeyError" in panel
        assert browser.dag.states["fragile"] == "failed"
        assert "failed" in browser.header.value
    finally:
        browser.close()


def test_the_events_table_lists_the_run_s_events(browsed):
    second, browser = browsed.second, browsed.browser
    events = second.events
    assert [r["cells"][2] for r in browser.events.rows] == list(events["type"])[:50]
    assert browser.events.rows[-1]["cells"][2] == "run_completed"


def test_fork_from_a_step_with_new_parameters_runs_live_and_is_selected(browsed):
    first, second, browser = browsed.first, browsed.second, browsed.browser
    frontend_update(browser.dag, selected="cleaned")
    assert browser.fork.step.value == "cleaned"
    inputs = browser.fork.form.inputs
    assert set(inputs) == {"n", "min_amount", "label"}
    assert inputs["min_amount"].value == 10.0 and type(inputs["n"]).__name__ == "IntText"
    inputs["min_amount"].value = 15.0
    inputs["label"].value = "forked"
    browser.fork.button.click()
    forked = browser.run
    assert forked is not None and forked.id not in (first.id, second.id)
    assert browser.runs.row_keys[0] == forked.id and browser.runs.selected == forked.id
    assert f"fork {forked.id} completed." in wait_until_shown_finished(browser, forked.id)
    assert forked.parent_id == second.id
    assert forked.params == {"n": 20, "min_amount": 15.0, "label": "forked"}
    assert browser.dag.states == {
        "orders": "cached",
        "cleaned": "completed",
        "weights": "completed",
        "report": "completed",
    }
    assert forked["report"] == {"rows": 5, "label": "forked"}
    # The lineage shows the thread as a tree: the root run, then its fork, indented.
    depths = {r["key"]: r["depth"] for r in browser.lineage.rows}
    assert depths == {second.id: 0, forked.id: 1}
    assert browser.lineage.rows[1]["cells"][3] == 'min_amount=15.0, label="forked"'


def test_the_fork_panel_says_what_a_fork_would_recompute_before_fork_is_pressed(browsed):
    browser, flow = browsed.browser, browsed.flow
    runs = len(flow.runs())
    frontend_update(browser.dag, selected="report")
    plan = html.unescape(browser.fork.plan.value)
    assert "reuses orders, cleaned, weights" in plan and "runs report" in plan
    assert "also recomputes" not in plan
    browser.fork.form.inputs["min_amount"].value = 15.0  # read by `cleaned`, upstream
    plan = html.unescape(browser.fork.plan.value)
    assert "reuses orders" in plan and "runs report" in plan
    assert "also recomputes cleaned: parameter min_amount: 10.0 -> 15.0" in plan
    assert "also recomputes weights: it reads 'cleaned', which is recomputed" in plan
    browser.fork.mode.value = "version"
    assert "also recomputes cleaned" in html.unescape(browser.fork.plan.value)
    assert len(flow.runs()) == runs  # telling forked nothing
    browser.fork.mode.value = "step"
    browser.fork.button.click()
    forked = browser.run
    assert forked is not None and forked.id != browsed.second.id
    wait_until_shown_finished(browser, forked.id)
    assert forked["report"]["rows"] == 5  # amounts 15 to 19: the parameter was applied
    assert set(forked.events["payload"].iloc[0]["recomputed"]) == {"cleaned", "weights"}


def test_a_fork_that_ends_before_the_panel_hears_of_it_still_says_how_it_ended(
    browsed, monkeypatch
):
    # The fork's last redraw comes while its parent is still the run shown: it ended
    # before `Run.fork` returned to the browser (a short fork on a busy machine).
    original = nf.Run.fork
    monkeypatch.setattr(nf.Run, "fork", lambda run, **kw: original(run, **kw).wait())
    browser = browsed.browser
    frontend_update(browser.dag, selected="report")
    browser.fork.form.inputs["label"].value = "quick"
    browser.fork.press()
    forked = browser.run
    assert forked is not None and forked.id != browsed.second.id
    assert forked.status == "completed" and browser.runs.selected == forked.id
    assert f"fork {forked.id} completed." in browser.fork.status.value
    assert browser.dag.states["report"] == "completed"


def test_fork_at_the_selected_version(browsed):
    first, browser = browsed.first, browsed.browser
    frontend_update(browser.runs, selected=first.id)
    versions = first.versions
    at = int(versions[versions["step"] == "cleaned"]["version"].iloc[-1])
    browser.version.value = at
    browser.fork.mode.value = "version"
    assert f"forks at version {at}" in browser.fork.where.value
    browser.fork.press()
    forked = browser.run
    assert forked is not None and forked.id != first.id
    wait_until_shown_finished(browser, forked.id)
    record = forked.record
    assert record.fork_from_version == at and record.parent_run_id == first.id
    assert forked.step_states()["orders"] == "cached"


def test_parameters_of_other_types_are_edited_as_json(store, comms):
    flow = nf.Flow("json-params", store=store)

    @flow.step
    def pick(columns: list = ["a", "b"], strict: bool = False):  # noqa: B006
        return columns if strict else columns[:1]

    flow.run(progress=False)
    browser = nf.browse(flow)
    try:
        inputs = browser.fork.form.inputs
        assert inputs["columns"].value == '["a", "b"]'
        assert type(inputs["strict"]).__name__ == "Checkbox"
        runs_before = len(flow.runs())
        inputs["columns"].value = '["a",'
        assert "is not JSON" in browser.fork.plan.value  # said before Fork is pressed
        browser.fork.press()
        assert "parameter &#x27;columns&#x27;" in browser.fork.status.value
        assert "is not JSON" in browser.fork.status.value
        assert len(flow.runs()) == runs_before
        inputs["columns"].value = '["b"]'
        browser.fork.press()
        wait_until_shown_finished(browser, browser.run.id)
        assert browser.run["pick"] == ["b"]
    finally:
        browser.close()


def test_forking_needs_the_flow_defined_in_the_session(tmp_path, comms):
    path = tmp_path / "s.duckdb"

    def make_and_run() -> str:
        with DuckDBStore(path) as opened:
            flow = nf.Flow("gone-flow", store=opened)

            @flow.step
            def a(k: int = 1):
                return k

            return flow.run(progress=False).id

    run_id = make_and_run()
    gc.collect()
    browser = nf.browse(path)
    try:
        assert browser.run is not None and browser.run.id == run_id
        browser.fork.press()
        assert "not defined in this session" in browser.fork.status.value
    finally:
        browser.close()


def test_browse_a_run_selects_it(browsed, comms):
    first = browsed.first
    other = nf.browse(first)
    try:
        assert other.run == first and other.flow_filter.value == "shop"
    finally:
        other.close()


# -- leaks --------------------------------------------------------------------------------------


def test_closing_a_browser_opened_from_a_path_releases_its_connection(tmp_path, comms):
    path = tmp_path / "shop.duckdb"
    with DuckDBStore(path) as opened:
        shop(opened).run(progress=False)
    browser = nf.browse(str(path))
    store = browser.store
    assert not store.closed
    children = [browser.dag, browser.runs, browser.events, browser.lineage, browser.fork.button]
    browser.close()
    assert store.closed
    assert all(child.comm is None for child in children) and browser.comm is None
    with DuckDBStore(path) as again:  # the file is free again
        assert len(again.list_runs()) == 1


def test_closing_a_browser_leaves_a_flow_s_store_open(browsed):
    flow, browser = browsed.flow, browsed.browser
    browser.close()
    assert flow.run(progress=False).status == "completed"
    browser.close()  # twice is fine


def test_displaying_again_makes_no_threads_connections_or_widgets(browsed):
    from IPython.core.formatters import format_display_data

    browser = browsed.browser
    format_display_data(browser)  # the first call starts IPython's own shell
    threads = threading.active_count()
    widgets = len(widget_instances)
    for _ in range(3):
        data, _ = format_display_data(browser)
        assert "application/vnd.jupyter.widget-view+json" in data
    assert threading.active_count() <= threads  # (one started before may have ended)
    assert len(widget_instances) == widgets


def test_lineage_tree_is_depth_first_oldest_first(browsed):
    first = browsed.first
    a = first.fork(from_step="cleaned", min_amount=1.0, progress=False)
    b = a.fork(from_step="report", label="y", progress=False)
    c = first.fork(from_step="report", label="z", progress=False)
    records = [r.record for r in (c, b, a, first)]
    tree = [(r.run_id, depth) for r, _, depth in lineage_tree(records)]
    assert tree == [(first.id, 0), (a.id, 1), (b.id, 2), (c.id, 1)]


def test_browsing_an_empty_store_or_a_missing_file(tmp_path, comms):
    browser = nf.browse(nf.open_store("memory://"))
    try:
        assert browser.runs.rows == [] and browser.run is None
        assert browser.run_box.layout.display == "none"
    finally:
        browser.close()
    with pytest.raises(nf.errors.StoreError, match="no nbflow store at"):
        nf.browse(tmp_path / "nothing-here.duckdb")
    assert not (tmp_path / "nothing-here.duckdb").exists()
