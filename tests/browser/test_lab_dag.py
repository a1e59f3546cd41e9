"""The DAG widget in JupyterLab (Chromium): fitting, zoom, groups, lineage, states, no dot.

One notebook, written by the test, shows: a 5-step flow (Graphviz's layout), a flow whose
run leaves a step skipped and one never run, a 43-step fan-out (folded by default), and,
with ``dot`` taken off the kernel's PATH, two DAGs laid out in the browser by dagre. The
page is 900 px wide. With ``$NBFLOW_DOCS_IMAGES`` set to a folder, the tests save the
screenshots of docs/dag.md there (``NBFLOW_DOCS_IMAGES=docs/images``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Lab, docs_image, open_and_run_all, save_screenshot, set_theme

WAIT_MS = 90_000
WIDTH = 900

SETUP = """\
import os, tempfile
import nbflow as nf
store = nf.open_store(":memory:")
"""
FIVE = """\
five = nf.Flow("five", store=store)
@five.step
def orders(n: int = 30): return list(range(n))
@five.step
def cleaned_orders(orders): return [o for o in orders if o % 7]
@five.step
def daily_totals(cleaned_orders): return sum(cleaned_orders)
@five.step
def weekly_trend(cleaned_orders): return len(cleaned_orders)
@five.step
def summary_report(daily_totals, weekly_trend): return (daily_totals, weekly_trend)
five.run(progress=False)
five.show()
"""
STATES = """\
states = nf.Flow("states", store=store)
@states.step
def load(): return 1
@states.step
def broken(load): raise ValueError("no luck")
@states.step
def after_broken(broken): return broken
@states.step
def elsewhere(load): return load
states.run(targets=["after_broken"], raise_on_error=False, progress=False)
states.show()
"""
NO_DOT = """\
os.environ["PATH"] = tempfile.mkdtemp()  # no Graphviz from here on
from nbflow.widgets import layout as dag_layout
dag_layout.layout.cache_clear()
events = nf.Flow("events", store=store)
@events.step
def raw_events(): return 1
@events.step
def sessions(raw_events): return 1
@events.step
def users(raw_events): return 1
@events.step
def daily(sessions): return 1
@events.step
def global_summary(users, sessions): return 1
@events.step
def weekly(daily, global_summary): return 1
@events.step
def dashboard_payload(weekly, raw_events, users): return 1
events.show()
"""
NO_DOT_AGAIN = """\
more = nf.Flow("more", store=store)
@more.step
def first(): return 1
@more.step
def second(first): return 1
@more.step
def third(first, second): return 1
more.show()
"""


def fan_cell() -> str:
    """raw -> load_0 … load_39 -> merged -> report, defined through Step.from_function."""
    lines = [
        "from nbflow.definition.step import Step",
        'fan = nf.Flow("fan", store=store)',
        "@fan.step",
        "def raw(): return 1",
        "for i in range(40):",
        "    ns = {}",
        '    exec(f"def load_{i}(raw): return raw + {i}", ns)',
        '    fan.add_step(Step.from_function(ns[f"load_{i}"]))',
        'loads = ", ".join(f"load_{i}" for i in range(40))',
        "ns = {}",
        'exec(f"def merged({loads}): return 1", ns)',
        "fan.add_step(Step.from_function(ns['merged']))",
        "@fan.step",
        "def report(merged): return merged",
        "fan.run(progress=False)",
        "fan.show()",
    ]
    return "\n".join(lines) + "\n"


def notebook() -> dict[str, Any]:
    cells = [SETUP, FIVE, STATES, fan_cell(), NO_DOT, NO_DOT_AGAIN]
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


def dag(name: str, nth: int = 0) -> str:
    """A selector for the ``nth`` DAG whose title starts with the flow's ``name``."""
    return f"[data-nbflow-dag='{name}-{nth}']"


TAG_DAGS = """() => {
  const seen = {};
  for (const el of document.querySelectorAll('.nbflow-dag')) {
    const name = (el.querySelector('.nbflow-dag-title')?.textContent || '').split(' · ')[0];
    if (!name) continue;
    seen[name] = (seen[name] || 0);
    el.setAttribute('data-nbflow-dag', `${name}-${seen[name]++}`);
  }
  return seen;
}"""


@pytest.fixture(scope="module")
def dags(lab: Lab, chromium: Any) -> Iterator[Any]:
    """The notebook after Run All, at 900 px, every DAG drawn."""
    (lab.root / "dags.ipynb").write_text(json.dumps(notebook()))
    page = open_and_run_all(lab, chromium, "dags.ipynb")
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    try:
        page.wait_for_function(
            f"""() => {{ const seen = ({TAG_DAGS})();
                return ["five", "more", "states", "fan", "events"].every(n => seen[n] === 1)
                  && Array.from(document.querySelectorAll('.nbflow-dag-view'))
                       .every(v => v.dataset.laidOut); }}""",
            timeout=WAIT_MS,
        )
        yield page
    finally:
        page.close()


@pytest.fixture
def page(dags: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield dags
    save_screenshot(dags, request, tmp_path)


def view_box(page: Any, selector: str) -> list[float]:
    value = page.locator(f"{selector} .nbflow-dag-stage svg").get_attribute("viewBox")
    return [float(v) for v in value.split()]


def test_a_five_step_dag_fits_a_900_px_page_without_scrolling(page):
    first = dag("five")
    page.locator(first).scroll_into_view_if_needed()
    sizes = page.evaluate(
        """(sel) => {
          const el = document.querySelector(sel);
          const view = el.querySelector('.nbflow-dag-view');
          const area = el.closest('.jp-OutputArea-output') || el.parentElement;
          const svg = view.querySelector('svg').getBoundingClientRect();
          const nodes = Array.from(view.querySelectorAll('g.node rect'))
            .map(r => r.getBoundingClientRect());
          return {view: [view.scrollWidth, view.clientWidth],
                  area: [area.scrollWidth, area.clientWidth],
                  svgRight: svg.right, viewRight: view.getBoundingClientRect().right,
                  nodesRight: Math.max(...nodes.map(r => r.right)),
                  nodesLeft: Math.min(...nodes.map(r => r.left)),
                  viewLeft: view.getBoundingClientRect().left, count: nodes.length};
        }""",
        first,
    )
    assert sizes["count"] == 5
    assert sizes["view"][0] <= sizes["view"][1], sizes  # no horizontal scroll in the DAG
    assert sizes["area"][0] <= sizes["area"][1] + 1, sizes  # nor in its output
    assert sizes["viewLeft"] - 1 <= sizes["nodesLeft"], sizes
    assert sizes["nodesRight"] <= sizes["viewRight"] + 1, sizes  # every node in view
    docs_image(page, first, "dag-light.png")


def test_zoom_and_fit_buttons_change_the_view_box(page):
    first = dag("five")
    fitted = view_box(page, first)
    page.locator(f"{first} .nbflow-zoom-in").click()
    zoomed = view_box(page, first)
    assert zoomed[2] < fitted[2] and zoomed[3] < fitted[3]  # a smaller part, shown bigger
    page.locator(f"{first} .nbflow-zoom-out").click()
    page.locator(f"{first} .nbflow-zoom-out").click()
    assert view_box(page, first)[2] > zoomed[2]
    # Drag to pan: the view box moves the other way.
    box = page.locator(f"{first} .nbflow-dag-view").bounding_box()
    before = view_box(page, first)
    page.mouse.move(box["x"] + 20, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 80, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    assert view_box(page, first)[0] < before[0]
    page.locator(f"{first} .nbflow-fit").click()
    assert view_box(page, first) == pytest.approx(fitted, abs=0.2)


def test_hovering_a_step_lights_its_upstream_and_downstream(page):
    first = dag("five")
    page.locator(f'{first} g.node[data-step="daily_totals"]').hover()
    page.locator(f"{first} svg.nbflow-tracing").wait_for(timeout=WAIT_MS)
    lit = page.evaluate(
        """(sel) => {
          const of = (cls) => Array.from(document.querySelectorAll(`${sel} g.node.${cls}`))
            .map(g => g.dataset.step).sort();
          return {focus: of('nbflow-focus'), up: of('nbflow-up'), down: of('nbflow-down'),
                  dim: getComputedStyle(
                    document.querySelector(`${sel} g.node[data-step="weekly_trend"]`)).opacity};
        }""",
        first,
    )
    assert lit["focus"] == ["daily_totals"]
    assert lit["up"] == ["cleaned_orders", "orders"]
    assert lit["down"] == ["summary_report"]
    assert float(lit["dim"]) < 0.5  # a step on neither side is dimmed
    page.mouse.move(0, 0)
    page.wait_for_function(
        f"() => !document.querySelector(`{first} svg`).classList.contains('nbflow-tracing')",
        timeout=WAIT_MS,
    )


def test_skipped_and_never_run_differ_in_more_than_color(page):
    selector = dag("states")
    marks = page.evaluate(
        """(sel) => Object.fromEntries(
          Array.from(document.querySelectorAll(`${sel} g.node`)).map(g => {
            const rect = g.querySelector('rect');
            return [g.dataset.step, {state: g.dataset.state,
                    dash: getComputedStyle(rect).strokeDasharray,
                    icon: g.querySelector('g.icon').innerHTML}];
        }))""",
        selector,
    )
    assert marks["after_broken"]["state"] == "skipped"
    assert marks["elsewhere"]["state"] == "never_run"
    skipped, never = marks["after_broken"], marks["elsewhere"]
    assert skipped["dash"] != never["dash"] and "none" not in (skipped["dash"], never["dash"])
    assert skipped["icon"] != never["icon"]
    assert len({m["icon"] for m in marks.values()}) == len({m["state"] for m in marks.values()})
    docs_image(page, selector, "dag-states.png")


def test_a_big_fan_out_starts_folded_and_unfolds_with_a_minimap(page):
    selector = dag("fan")
    page.locator(selector).scroll_into_view_if_needed()
    group = page.locator(f'{selector} g.node.group[data-group="load_*"]')
    group.wait_for(timeout=WAIT_MS)
    assert page.locator(f"{selector} g.node").count() == 4
    assert not page.locator(f"{selector} .nbflow-minimap").is_visible()
    docs_image(page, selector, "dag-folded.png")
    group.click()  # unfold
    page.wait_for_function(
        f"() => document.querySelectorAll(`{selector} g.node`).length === 43", timeout=WAIT_MS
    )
    minimap = page.locator(f"{selector} .nbflow-minimap")
    minimap.wait_for(state="visible", timeout=WAIT_MS)
    # The whole graph still fits the page, and a click on the minimap moves the view.
    assert page.evaluate(
        f"() => {{ const v = document.querySelector(`{selector} .nbflow-dag-view`);"
        " return v.scrollWidth <= v.clientWidth; }"
    )
    page.locator(f"{selector} .nbflow-zoom-in").click()
    page.locator(f"{selector} .nbflow-zoom-in").click()
    before = view_box(page, selector)
    minimap.scroll_into_view_if_needed()
    mini = minimap.bounding_box()
    page.mouse.click(mini["x"] + mini["width"] - 4, mini["y"] + mini["height"] / 2)
    assert view_box(page, selector)[0] > before[0]
    page.locator(f"{selector} .nbflow-fit").click()
    docs_image(page, selector, "dag-unfolded-minimap.png")
    # In the dark theme the minimap is redrawn in the nodes' dark colors.
    same_colors = """(sel) => {
      const node = getComputedStyle(document.querySelector(`${sel} g.node .shape`)).fill;
      const mini = document.querySelector(`${sel} .nbflow-minimap rect`).getAttribute('fill');
      return document.body.dataset.jpThemeLight === 'false' && node === mini; }"""
    set_theme(page, "JupyterLab Dark")
    try:
        page.wait_for_function(same_colors, arg=selector, timeout=WAIT_MS)
    finally:
        set_theme(page, "JupyterLab Light")
    page.locator(f"{selector} .nbflow-groups").click()  # fold again
    page.wait_for_function(
        f"() => document.querySelectorAll(`{selector} g.node`).length === 4", timeout=WAIT_MS
    )


EDGE_CROSSINGS = """(sel) => {
  const svg = document.querySelector(`${sel} .nbflow-dag-stage svg`);
  const boxes = Array.from(svg.querySelectorAll('g.node')).map(g => {
    const r = g.querySelector('rect').getBoundingClientRect();
    return {name: g.dataset.step, r};
  });
  const crossings = [];
  for (const e of svg.querySelectorAll('g.edge')) {
    const path = e.querySelector('path'), ctm = path.getScreenCTM();
    const length = path.getTotalLength();
    for (let i = 0; i <= 200; i++) {
      const p = path.getPointAtLength((length * i) / 200).matrixTransform(ctm);
      for (const {name, r} of boxes) {
        if (name === e.dataset.tail || name === e.dataset.head) continue;
        if (p.x > r.left + 1 && p.x < r.right - 1 && p.y > r.top + 1 && p.y < r.bottom - 1)
          crossings.push(`${e.dataset.tail}->${e.dataset.head} through ${name}`);
      }
    }
  }
  const ends = {};
  for (const e of svg.querySelectorAll('g.edge')) {
    const tip = e.querySelector('polygon').getAttribute('points').split(' ')[0];
    (ends[e.dataset.head] = ends[e.dataset.head] || []).push(tip);
  }
  return {engine: svg.dataset.engine, crossings: [...new Set(crossings)], ends};
}"""


def test_without_dot_dagre_routes_every_edge_around_the_boxes(page):
    selector = dag("events")
    page.locator(f"{selector} svg[data-engine='dagre']").wait_for(timeout=WAIT_MS)
    found = page.evaluate(EDGE_CROSSINGS, selector)
    assert found["engine"] == "dagre"
    assert found["crossings"] == []
    # The three edges into dashboard_payload end at three different points.
    assert len(set(found["ends"]["dashboard_payload"])) == 3
    docs_image(page, selector, "dag-no-dot.png")


def test_without_dot_the_install_hint_shows_once(page):
    notes = page.evaluate(
        """() => Array.from(document.querySelectorAll('.nbflow-dag .nbflow-note'))
                 .map(n => n.textContent).filter(t => t.includes('Graphviz'))"""
    )
    assert len(notes) == 1
    # The second DAG shown without dot is laid out by dagre too, quietly.
    second = dag("more")
    page.locator(f"{second} svg[data-engine='dagre']").wait_for(timeout=WAIT_MS)
    assert page.locator(f"{second} .nbflow-note").inner_text() == ""
    assert page.evaluate(EDGE_CROSSINGS, second)["crossings"] == []


def test_the_dag_follows_the_dark_theme(page):
    first = dag("five")
    view = f"document.querySelector(`{first} .nbflow-dag-view`)"
    light = page.evaluate(f"() => getComputedStyle({view}).backgroundColor")
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    try:
        page.wait_for_function(
            f"""() => document.body.dataset.jpThemeLight === 'false' &&
              getComputedStyle({view}).backgroundColor !== {light!r}""",
            timeout=WAIT_MS,
        )
        docs_image(page, first, "dag-dark.png")
    finally:
        page.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:change-theme',"
            " {theme: 'JupyterLab Light'})"
        )
        page.wait_for_function(
            "() => document.body.dataset.jpThemeLight === 'true'", timeout=WAIT_MS
        )


def test_without_dot_a_redraw_keeps_dagre_s_layout_without_a_flicker(page):
    second = dag("more")
    page.locator(f"{second} svg[data-engine='dagre']").wait_for(timeout=WAIT_MS)
    # Every SVG the kernel sends replaces the old one; record the layout each shows first.
    page.evaluate(
        """(sel) => {
          const stage = document.querySelector(`${sel} .nbflow-dag-stage`);
          window.nbflowEngines = [];
          new MutationObserver(() => window.nbflowEngines.push(
            stage.querySelector('svg')?.dataset.engine)).observe(stage, {childList: true});
        }""",
        second,
    )
    page.locator(f'{second} g.node[data-step="second"]').click()  # the kernel redraws
    page.locator(f'{second} g.node.selected[data-step="second"]').wait_for(timeout=WAIT_MS)
    engines = page.evaluate("() => window.nbflowEngines")
    assert engines and set(engines) == {"dagre"}, engines
