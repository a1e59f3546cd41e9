"""Small defects of the browser (issue 17, point 11), tested without a browser: the
events pager's labels, clicking an event, attempt numbers of cached steps, plurals, the
fork status not flickering, links to the run a cached output came from."""

from __future__ import annotations

import pytest
from test_widgets_browser import shop, wait_until_shown_finished
from widget_comms import comms, frontend_update  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.widgets.browser import Browser
from nbflow.widgets.rows import version_rows
from nbflow.widgets.table import Row, Table


@pytest.fixture
def two_runs(store, comms):
    flow = shop(store)
    first = flow.run(progress=False)
    second = flow.run(min_amount=10.0, progress=False)  # `orders` is cached from `first`
    browser = nf.browse(flow)
    yield flow, first, second, browser
    browser.close()


def test_the_events_pager_goes_to_earlier_and_later_events(two_runs):
    *_, browser = two_runs
    assert browser.events.pager_labels == ["\u2039 earlier", "later \u203a"]
    # The runs table, newest first, keeps its labels.
    assert browser.runs.pager_labels == ["\u2039 newer", "older \u203a"]


def test_the_events_pager_s_next_page_holds_later_events(store, comms):
    flow = nf.Flow("long", store=store)

    def one() -> int:
        return 1

    for i in range(30):
        flow.step(name=f"s{i}")(one)
    run = flow.run(progress=False)
    browser = nf.browse(run)
    try:
        first_page = [int(k) for k in browser.events.row_keys]
        frontend_update(browser.events, page=1)  # the "later" button
        second_page = [int(k) for k in browser.events.row_keys]
        assert len(run.events) > 50 and min(second_page) > max(first_page)
    finally:
        browser.close()


def test_clicking_an_event_moves_the_slider_to_its_version(two_runs):
    _, _, second, browser = two_runs
    assert browser.version.value == second.version
    versions = [v for _, v in browser.version.options]
    target = versions[2]
    frontend_update(browser.events, selected=str(target))
    assert browser.version.value == target
    assert "at version" in browser.dag.title and f"version {target}" in browser.dag.title
    # Moving the slider marks its event in the table.
    browser.version.value = versions[1]
    assert browser.events.selected == str(versions[1])


def test_a_cached_step_s_events_show_no_attempt(two_runs):
    *_, browser = two_runs
    cached = [r for r in browser.events.rows if r["cells"][2] == "step_cached"]
    assert cached and all(r["cells"][4] == "" for r in cached)
    ran = [r for r in browser.events.rows if r["cells"][2] == "step_completed"]
    assert ran and all(r["cells"][4] == "1" for r in ran)


def test_versions_say_1_step_done(two_runs):
    _, first, *_ = two_runs
    labels = [label for _, label in version_rows(first)]
    assert any(label.endswith(" 1 step done") for label in labels)
    assert not any("1 steps" in label for label in labels)
    assert any(label.endswith(" 2 steps done") for label in labels)


def test_the_fork_status_never_goes_blank_while_forking(two_runs):
    *_, browser = two_runs
    said: list[str] = []
    browser.fork.status.observe(lambda change: said.append(change["new"]), names="value")
    frontend_update(browser.dag, selected="report")
    browser.fork.button.click()
    forked = browser.run
    assert forked is not None
    wait_until_shown_finished(browser, forked.id)
    assert said and "forking" in said[0]
    assert "" not in said, said  # forking…, then forked …, then how it ended


def test_output_from_another_run_links_to_it(two_runs):
    _, first, second, browser = two_runs
    assert browser.run == second
    # The events table: the cached step's event names the run, as a link.
    [cached] = [r for r in browser.events.rows if r["cells"][2] == "step_cached"]
    assert cached["link"] == first.id and first.id in cached["cells"][5]
    browser.events._handle_custom_msg({"event": "link", "link": first.id}, [])
    assert browser.run == first and browser.runs.selected == first.id
    # The step panel: selecting the cached step offers its source run.
    frontend_update(browser.runs, selected=second.id)
    frontend_update(browser.dag, selected="orders")
    assert browser.source_link.layout.display == ""
    assert browser.source_link.description == f"output from run {first.id}"
    browser.source_link.click()
    assert browser.run == first
    frontend_update(browser.dag, selected="orders")
    assert browser.source_link.layout.display == "none"  # computed in this run


def test_a_link_to_a_run_hidden_by_the_filters_clears_them(two_runs):
    _, first, _, browser = two_runs
    browser.status_filter.value = "failed"
    browser.follow_link(first.id)
    assert browser.run == first and browser.status_filter.value == ""
    assert first.id in browser.runs.row_keys


def test_a_table_ignores_messages_that_are_not_links(comms):
    table = Table(columns=["a"])
    followed: list[str] = []
    table.on_link(followed.append)
    table._handle_custom_msg({"event": "other"}, [])
    table._handle_custom_msg({"event": "link", "link": 5}, [])
    table._handle_custom_msg("not a dict", [])
    table._handle_custom_msg({"event": "link", "link": "r1"}, [])
    assert followed == ["r1"]
    table.set_rows([Row("k", ["x"], link="r1")])
    assert table.rows[0]["link"] == "r1"


def test_the_browser_summary_lists_runs_and_steps(two_runs, tmp_path):
    _, first, second, browser = two_runs
    assert isinstance(browser, Browser)
    data = browser._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    assert first.id in data["text/plain"] and second.id in data["text/plain"]
    assert "orders" in data["text/plain"] and "cached" in data["text/plain"]
    page = browser.to_html(tmp_path / "runs.html").read_text(encoding="utf-8")
    assert first.id in page and "<td>report</td>" in page and "<svg" in page


def test_the_parameter_inputs_share_one_label_width(two_runs):
    *_, browser = two_runs
    inputs = browser.fork.form.inputs
    widths = {box.style.description_width for box in inputs.values()}
    longest = max(len(box.description) for box in inputs.values())
    assert widths == {f"{longest + 2}ch"}
