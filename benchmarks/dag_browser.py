"""The DAG widget in Chromium: how long a 40/200/500-step DAG takes to show, and to react.

Measured in Debian's Chromium through Playwright, on a page of its own (no Jupyter): the
widget's front end (``dag.js``) is given the traits the Python widget synced, through a
small stand-in for the widget model, and the clock runs from ``render`` to the first
frame drawn after the DAG is fitted, indexed and (above 30 steps) has its minimap. The
baseline, side by side, is the previous front end: the same SVG put into the page as it
is (``innerHTML``), until its first frame. The Python side (layout and SVG) is measured
too, so the totals are what a user waits for. Without ``dot``, the front end lays the
graph out with dagre: measured as well. Responsiveness: a hover highlight of a middle
step's upstream and downstream, and one zoom step, each until the next frame.

Run it alone (``python -m benchmarks.dag_browser``) or as the ``DAG in the browser``
stage of ``python -m benchmarks``; without Chromium or Playwright the stage says so and
measures nothing.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import Quantity, Row
from benchmarks.timing import median, timed

SIZES = (40, 200, 500)
MAX_RENDER_S = 1.0  # a 500-step DAG shows in under a second (Python build + browser)
MAX_REACT_S = 0.1  # a hover or a zoom step answers within 100 ms
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PAGE_URL = "http://nbflow-benchmark.invalid/"  # answered by Playwright, never the network
WIDGETS = Path(__file__).resolve().parents[1] / "nbflow" / "widgets"

# A stand-in for the widget model (get/set/on/off/save_changes), then dag.js imported
# from a blob URL as anywidget does, timed to the frame after the DAG is ready.
PAGE_JS = """
async ([source, traits, mode]) => {
  const handlers = {};
  const model = {
    get: (k) => traits[k],
    set: (k, v) => { traits[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); },
    on: (names, f) => names.split(" ").forEach((n) => (handlers[n] = handlers[n] || []).push(f)),
    off: () => {},
    save_changes: () => {},
  };
  const host = document.getElementById("host");
  host.replaceChildren();
  const el = document.createElement("div");
  host.append(el);
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  await frame();
  const start = performance.now();
  if (mode === "baseline") {
    const view = document.createElement("div");
    view.style.overflow = "auto";
    view.innerHTML = traits.svg;
    el.append(view);
    view.getBoundingClientRect();
  } else {
    const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
    const widget = (await import(url)).default;
    widget.render({model, el});
    const view = el.querySelector(".nbflow-dag-view");
    const done = mode === "dagre"
      ? () => view.dataset.laidOut === "dagre" : () => view.dataset.ready;
    while (!done()) await new Promise((r) => setTimeout(r, 1));
    view.getBoundingClientRect();
  }
  await frame();
  return (performance.now() - start) / 1000;
}
"""

REACT_JS = """
async () => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const view = document.querySelector(".nbflow-dag-view");
  const nodes = view.querySelectorAll("g.node");
  const node = nodes[Math.floor(nodes.length / 2)];
  const rect = node.querySelector("rect");
  let start = performance.now();
  rect.dispatchEvent(new PointerEvent("pointermove", {bubbles: true}));
  await frame();
  const hover = (performance.now() - start) / 1000;
  start = performance.now();
  document.querySelector(".nbflow-zoom-in").click();
  await frame();
  return [hover, (performance.now() - start) / 1000];
}
"""


@dataclass
class BrowserResult:
    """Seconds per repetition, by size: Python build, new front end, previous front end."""

    sizes: tuple[int, ...]
    available: str = ""  # why nothing was measured ('' when it was)
    build_s: dict[int, list[float]] = field(default_factory=dict)
    render_s: dict[int, list[float]] = field(default_factory=dict)
    baseline_s: dict[int, list[float]] = field(default_factory=dict)
    layered_s: dict[int, list[float]] = field(default_factory=dict)
    dagre_s: dict[int, list[float]] = field(default_factory=dict)
    hover_s: dict[int, list[float]] = field(default_factory=dict)
    zoom_s: dict[int, list[float]] = field(default_factory=dict)
    engine: str = ""

    @property
    def description(self) -> str:
        """One line for the report."""
        if self.available:
            return f"DAG in the browser: not measured ({self.available})"
        runs = len(next(iter(self.render_s.values()), []))
        return (
            "DAG in the browser (Chromium, 1220 px wide): flows of "
            f"{', '.join(map(str, self.sizes))} "
            f"steps (each reads up to two of the 20 before it), {self.engine} layout; "
            f"median of {runs}"
        )


def missing() -> str:
    """Why the browser cannot be used here ('' if it can)."""
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM}: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install playwright"
    return ""


def traits_for(steps: int, *, dot: bool = True) -> tuple[dict[str, Any], float]:
    """The synced traits of a DagWidget showing a ``steps``-step flow, and the seconds
    the Python side took to build them (layout and SVG)."""
    from benchmarks.dag_svg import big_flow
    from nbflow.widgets import layout as dag_layout
    from nbflow.widgets.dag import DagWidget
    from nbflow.widgets.states import DagSpec, NodeInfo, NodeState

    spec = DagSpec.from_graph(big_flow(steps).graph())
    rng = random.Random(steps)
    infos = {n: NodeInfo(rng.choice(list(NodeState)), rng.uniform(0.1, 5000)) for n in spec.nodes}
    dag_layout.layout.cache_clear()
    real_dot = dag_layout.dot_layout
    if not dot:
        dag_layout.dot_layout = _no_dot  # type: ignore[assignment]
    try:
        seconds, widget = timed(lambda: DagWidget(spec, infos, title=f"{steps} steps"))
    finally:
        dag_layout.dot_layout = real_dot  # type: ignore[assignment]
        dag_layout.layout.cache_clear()
    names = ("svg", "selected", "states", "details", "palette", "title", "note", "engine")
    traits = {name: getattr(widget, name) for name in names}
    traits.update(
        layout_module=widget.layout_module, groups=widget.groups, collapsed=widget.collapsed
    )
    widget.close()
    return traits, seconds


def _no_dot(spec: Any) -> Any:
    from nbflow.widgets.layout import DotUnavailable

    raise DotUnavailable("not used by this measurement")


def run_dag_browser(
    repeats: int, sizes: Sequence[int] = SIZES, log: Callable[[str], None] = print
) -> BrowserResult:
    """Measure each size ``repeats`` times (nothing, and why, without Chromium)."""
    result = BrowserResult(tuple(sizes), available=missing())
    if result.available:
        return result
    import tempfile

    from playwright.sync_api import sync_playwright

    from nbflow.widgets.dag import DagWidget

    source = str(DagWidget._esm)
    css = (WIDGETS / "widgets.css").read_text(encoding="utf-8")
    html = (
        f"<html><head><style>{css}</style></head>"
        "<body><div id='host' style='width:1220px'></div></body></html>"
    )
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            # A page with an origin (as JupyterLab's), so dagre runs in its worker.
            page.route(PAGE_URL, lambda route: route.fulfill(body=html, content_type="text/html"))
            page.goto(PAGE_URL)
            for steps in sizes:
                traits, _ = traits_for(steps)
                result.engine = traits["engine"]
                layered, _ = traits_for(steps, dot=False)
                for i in range(repeats):
                    log(f"  DAG in the browser, {steps} steps, {i + 1}/{repeats}")
                    _, build = traits_for(steps)
                    result.build_s.setdefault(steps, []).append(build)
                    args = [source, traits, "baseline"]
                    result.baseline_s.setdefault(steps, []).append(page.evaluate(PAGE_JS, args))
                    args = [source, json.loads(json.dumps(traits)), "widget"]
                    result.render_s.setdefault(steps, []).append(page.evaluate(PAGE_JS, args))
                    hover, zoom = page.evaluate(REACT_JS)
                    result.hover_s.setdefault(steps, []).append(hover)
                    result.zoom_s.setdefault(steps, []).append(zoom)
                    args = [source, json.loads(json.dumps(layered)), "widget"]
                    result.layered_s.setdefault(steps, []).append(page.evaluate(PAGE_JS, args))
                    page.goto(PAGE_URL)  # a fresh page: dagre's cache starts empty
                    args = [source, json.loads(json.dumps(layered)), "dagre"]
                    result.dagre_s.setdefault(steps, []).append(page.evaluate(PAGE_JS, args))
                    page.goto(PAGE_URL)
        finally:
            context.close()
    return result


def browser_rows(result: BrowserResult) -> list[Row]:
    """Per size: the new front end against the previous one, Python build included."""
    if result.available:
        return [Row("DAG in the browser", Quantity.missing(result.available))]
    rows = []
    for steps in result.sizes:
        build = median(result.build_s[steps])
        render, baseline = median(result.render_s[steps]), median(result.baseline_s[steps])
        big = steps == max(result.sizes)
        rows.append(
            Row(
                f"DAG, {steps} steps: Python build + front end (fit, minimap, highlight index)",
                Quantity(build + render, "s"),
                "Python build + SVG as is (previous front end)",
                Quantity(build + baseline, "s"),
                target=f"< {MAX_RENDER_S:g} s" if big else "",
                met=(build + render < MAX_RENDER_S) if big else None,
            )
        )
        rows.append(
            Row(
                f"DAG, {steps} steps: front end alone",
                Quantity(render, "s"),
                "SVG as is",
                Quantity(baseline, "s"),
            )
        )
        first = median(result.layered_s[steps])
        rows.append(
            Row(
                f"DAG, {steps} steps, no dot: front end, first view (Python's layered layout)",
                Quantity(first, "s"),
                target=f"< {MAX_RENDER_S:g} s" if big else "",
                met=(first < MAX_RENDER_S) if big else None,
            )
        )
        rows.append(
            Row(
                f"DAG, {steps} steps, no dot: until dagre's layout is shown (in a worker)",
                Quantity(median(result.dagre_s[steps]), "s"),
            )
        )
        for what, samples in (("hover highlight", result.hover_s), ("zoom step", result.zoom_s)):
            value = median(samples[steps])
            rows.append(
                Row(
                    f"DAG, {steps} steps: {what} to the next frame",
                    Quantity(value, "s"),
                    target=f"< {MAX_REACT_S * 1e3:g} ms" if big else "",
                    met=(value < MAX_REACT_S) if big else None,
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table; ``--repeats N`` (default 5)."""
    import argparse

    from benchmarks.report import format_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="STEPS")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    result = run_dag_browser(args.repeats, args.sizes, log=log)
    print(result.description)
    print(format_table(browser_rows(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
