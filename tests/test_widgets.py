"""The DAG widget, its rendering and the live progress view, tested without a browser."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from ipywidgets.widgets.widget import _instances as widget_instances
from waiting import wait_for
from widget_comms import comms, frontend_update  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.api import progress
from nbflow.definition.step import Step
from nbflow.store.records import StepExecution, StepStatus
from nbflow.widgets import display as widget_display
from nbflow.widgets import layout as dag_layout
from nbflow.widgets.dag import DagWidget
from nbflow.widgets.live import Follower, LiveRun
from nbflow.widgets.preview import value_preview
from nbflow.widgets.states import (
    PALETTE,
    DagSpec,
    NodeInfo,
    NodeState,
    format_duration,
    infos_from_rows,
)
from nbflow.widgets.svg import render_svg


def failing_flow(store: nf.Store, name: str = "w") -> nf.Flow:
    """a -> b -> c, a -> d; ``b`` fails, so ``c`` is skipped."""
    flow = nf.Flow(name, store=store)

    @flow.step
    def a(n: int = 3):
        return list(range(n))

    @flow.step
    def b(a):
        raise ValueError("b cannot cope")

    @flow.step
    def c(b):
        return b

    @flow.step
    def d(a):
        return len(a)

    return flow


def chain_flow(store: nf.Store, name: str = "chain", steps: int = 3) -> nf.Flow:
    flow = nf.Flow(name, store=store)
    previous = None
    for i in range(steps):
        step_name = f"s{i}"
        if previous is None:

            def first(k: int = 1):
                return k

            flow.add_step(Step.from_function(first, name=step_name))
        else:
            ns: dict = {}
            exec(f"def f({previous}):\n    return {previous} + 1", ns)
            flow.add_step(Step.from_function(ns["f"], name=step_name))
        previous = step_name
    return flow


def node_fill(svg: str, step: str) -> str:
    """The fill of ``step``'s box in ``svg``."""
    group = svg.split(f'data-step="{step}"', 1)[1]
    return group.split('fill="', 1)[1].split('"', 1)[0]


@pytest.fixture(autouse=True)
def fresh_layouts():
    dag_layout.layout.cache_clear()
    yield
    dag_layout.layout.cache_clear()


# -- import cost ---------------------------------------------------------------------------


def test_import_nbflow_loads_no_widget_or_graphviz_module():
    code = (
        "import sys, nbflow; "
        "print([m for m in ('ipywidgets', 'anywidget', 'graphviz', 'IPython') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- states and captions -------------------------------------------------------------------


def test_durations_read_well():
    assert format_duration(0.25) == "250 µs"
    assert format_duration(12.4) == "12 ms"
    assert format_duration(3400) == "3.4 s"
    assert format_duration(125_000) == "2 min 5 s"


def test_rows_map_to_states_with_durations_and_details():
    rows = [
        StepExecution("r", "a", 1, StepStatus.COMPLETED, duration_ms=12.0, seq=3),
        StepExecution("r", "b", 0, StepStatus.CACHED, source_run_id="old", seq=4),
        StepExecution("r", "c", 1, StepStatus.FAILED, error="KeyError: 'x'\nmore", seq=5),
        StepExecution("r", "c", 2, StepStatus.RUNNING, seq=6),  # the retry, changed last
        StepExecution("r", "d", 0, StepStatus.SKIPPED, error="upstream step 'c' failed", seq=7),
        StepExecution("r", "e", 1, StepStatus.FAILED, error="ValueError: no\nline 2", seq=8),
    ]
    infos = infos_from_rows(rows)
    assert {s: i.state for s, i in infos.items()} == {
        "a": NodeState.COMPLETED,
        "b": NodeState.CACHED,
        "c": NodeState.RUNNING,
        "d": NodeState.SKIPPED,
        "e": NodeState.FAILED,
    }
    assert infos["a"].caption == "completed · 12 ms"
    assert infos["b"].detail == "output reused from run old"
    assert infos["c"].caption == "running (attempt 2)"
    assert infos["e"].detail == "ValueError: no"
    assert NodeInfo().caption == "never run"


# -- the SVG ------------------------------------------------------------------------------


def test_svg_draws_every_step_in_its_state_color_with_name_and_duration():
    spec = DagSpec(("a", "b", "c"), (("a", "b"), ("b", "c")))
    infos = {"a": NodeInfo(NodeState.COMPLETED, 1500.0), "b": NodeInfo(NodeState.FAILED, 2.0)}
    svg = render_svg(spec, infos, selected="b")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert node_fill(svg, "a") == PALETTE[NodeState.COMPLETED][0]
    assert node_fill(svg, "b") == PALETTE[NodeState.FAILED][0]
    assert node_fill(svg, "c") == PALETTE[NodeState.NEVER_RUN][0]
    assert "completed · 1.5 s" in svg and "failed · 2 ms" in svg and "never run" in svg
    assert 'class="node state-failed selected"' in svg
    assert svg.count('class="edge"') == 2
    assert 'data-tail="a" data-head="b"' in svg


def test_svg_escapes_text():
    svg = render_svg(DagSpec(("a",), ()), {"a": NodeInfo(NodeState.FAILED, detail="<b>&")})
    assert "<b>&" not in svg and "&lt;b&gt;&amp;" in svg


def test_an_empty_flow_draws_a_hint():
    assert "no steps yet" in render_svg(DagSpec((), ()))


def test_dot_lays_out_left_to_right_with_nodes_apart():
    spec = DagSpec(("a", "b", "c", "d"), (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")))
    placed = dag_layout.layout(spec)
    assert placed.engine == "dot" and placed.note == ""
    boxes = placed.nodes
    assert boxes["a"].x < boxes["b"].x < boxes["d"].x
    assert boxes["b"].x == pytest.approx(boxes["c"].x)
    assert abs(boxes["b"].y - boxes["c"].y) >= dag_layout.NODE_HEIGHT
    assert len(placed.edges) == 4


def test_without_dot_a_layered_layout_and_one_quiet_note(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    spec = DagSpec(("a", "b", "c", "d"), (("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")))
    placed = dag_layout.layout(spec)
    assert placed.engine == "layered"
    assert "apt-get install graphviz" in placed.note
    boxes = placed.nodes
    assert boxes["a"].x < boxes["b"].x < boxes["c"].x < boxes["d"].x  # columns by depth
    svg = render_svg(spec)
    assert svg.count('class="node ') == 4 and svg.count('class="edge"') == 4
    # The long edge a -> c goes around b, not through it.
    assert boxes["b"].y != pytest.approx(boxes["c"].y) or "C" in placed.edges[2].path


def test_layered_layout_keeps_nodes_of_a_column_apart():
    nodes = tuple(f"n{i}" for i in range(30))
    edges = tuple((f"n{i}", f"n{j}") for i in range(30) for j in (2 * i + 1, 2 * i + 2) if j < 30)
    placed = dag_layout.layered_layout(DagSpec(nodes, edges))
    by_column: dict[float, list[float]] = {}
    for box in placed.nodes.values():
        by_column.setdefault(round(box.x), []).append(box.y)
    for ys in by_column.values():
        ys.sort()
        assert all(b - a >= dag_layout.NODE_HEIGHT for a, b in itertools.pairwise(ys))


def test_graphviz_failing_falls_back_too(monkeypatch):
    import graphviz

    def broken(*args, **kwargs):
        raise graphviz.backend.execute.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Digraph, "pipe", broken)
    assert dag_layout.layout(DagSpec(("a",), ())).engine == "layered"


# -- the DAG widget -----------------------------------------------------------------------------


def test_flow_show_colors_steps_by_the_latest_run(store, comms):
    flow = failing_flow(store)
    widget = flow.show()
    assert set(widget.states.values()) == {"never_run"}
    assert widget.title == "w · never run"
    run = flow.run(raise_on_error=False, progress=False)
    widget = flow.show()
    assert widget.states == {"a": "completed", "b": "failed", "c": "skipped", "d": "completed"}
    assert node_fill(widget.svg, "b") == PALETTE[NodeState.FAILED][0]
    assert "ValueError: b cannot cope" in widget.details["b"]
    assert run.id in widget.title
    # The SVG is a synced trait: it went to the front end.
    assert comms.updates(widget, "svg")[-1] == widget.svg
    assert "svg" in widget.keys


def test_each_display_of_a_flow_has_its_own_widget_and_no_thread_of_its_own(store, comms):
    # One widget per display, so an earlier output keeps its meaning (issue 17); what
    # follows them all is one watcher thread, whatever their number.
    flow = failing_flow(store)
    first = flow.show()
    dags = lambda: sum(isinstance(w, DagWidget) for w in widget_instances.values())  # noqa: E731
    count = dags()
    shown = [flow.show() for _ in range(5)]
    assert len({id(w) for w in [first, *shown]}) == 6
    assert dags() == count + 5
    assert [t.name for t in threading.enumerate()].count("nbflow-watch") == 1
    for widget in [first, *shown]:
        widget.close()


def test_stale_steps_are_marked_after_their_code_changes(store, comms):
    flow = nf.Flow("stale", store=store)

    @flow.step
    def a():
        return 1

    @flow.step
    def b(a, k: int = 2):
        return a * k

    flow.run(progress=False)
    assert flow.show().states == {"a": "completed", "b": "completed"}

    @flow.step  # re-defining a step (re-running its cell) replaces it
    def b(a, k: int = 2):
        return a * k + 1

    widget = flow.show()
    assert widget.states == {"a": "completed", "b": "stale"}
    assert node_fill(widget.svg, "b") == PALETTE[NodeState.STALE][0]
    assert "code changed" in widget.details["b"]


def test_clicking_a_node_selects_the_step(comms):
    widget = DagWidget(DagSpec(("a", "b"), (("a", "b"),)), {"a": NodeInfo(NodeState.COMPLETED)})
    frontend_update(widget, selected="a")
    assert widget.selected == "a"
    assert 'class="node state-completed selected"' in widget.svg
    assert comms.updates(widget, "svg")[-1] == widget.svg  # redrawn and sent back
    widget.show(spec=DagSpec(("b",), ()))
    assert widget.selected == ""  # the selected step no longer exists


def test_the_widget_carries_the_note_when_dot_is_missing(monkeypatch, tmp_path, comms):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("nbflow.widgets.dag._hint_shown_by", [])
    widget = DagWidget(DagSpec(("a", "b"), (("a", "b"),)))
    assert widget.engine == "layered"
    assert "Graphviz" in widget.note and widget.svg.count('class="node ') == 2


def test_a_run_displays_its_dag(store, comms, monkeypatch):
    flow = failing_flow(store)
    run = flow.run(raise_on_error=False, progress=False)
    text = run._repr_mimebundle_()  # not in a notebook: the summary
    assert set(text) == {"text/plain", "text/html"} and "failed" in text["text/plain"]
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr("nbflow.widgets.in_notebook", lambda: True)
    bundle = run._repr_mimebundle_()
    model = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    widget = widget_instances[model]
    assert widget.states["b"] == "failed" and run.id in widget.title
    # Displayed again: a widget of its own, showing the same run.
    again = run._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert again != model and run.id in widget_instances[again].title
    flow_bundle = flow._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in flow_bundle
    assert flow_bundle["text/plain"].startswith(flow.name) and "failed" in flow_bundle["text/html"]


# -- live progress --------------------------------------------------------------------------------


def test_live_view_shows_each_step_running_then_done(store, comms):
    seen: dict[str, dict] = {}
    views: list[LiveRun] = []
    flow = nf.Flow("live", store=store)

    @flow.step
    def one():
        seen["one"] = dict(views[0].dag.states)
        return 1

    @flow.step
    def two(one):
        time.sleep(0.05)
        seen["two"] = dict(views[0].dag.states)
        return one + 1

    def factory(run, graph, done):
        views.append(LiveRun(run, graph, done, interval=0.0))
        return views[0]

    with progress.progress_view(factory):
        flow.run(durability="sync")  # (each start committed, and so shown, before it runs)
    live = views[0]
    assert seen["one"] == {"one": "running", "two": "never_run"}
    assert seen["two"] == {"one": "completed", "two": "running"}
    assert live.dag.states == {"one": "completed", "two": "completed"}
    assert (live.bar.value, live.bar.max, live.bar.bar_style) == (2, 2, "success")
    assert "completed" in live.label.value and "2 of 2 steps" in live.label.value
    live.close()
    assert live.dag.comm is None


def test_a_failed_run_ends_the_bar_in_red(store, comms):
    views: list[LiveRun] = []
    with progress.progress_view(lambda r, g, d: views.append(LiveRun(r, g, d)) or views[-1]):
        failing_flow(store).run(raise_on_error=False)
    assert views[0].bar.bar_style == "danger"
    assert views[0].dag.states["c"] == "skipped"


def test_throttled_redraws_still_show_the_last_state_and_leave_no_thread(store):
    calls: list[tuple[dict, bool]] = []
    flow = chain_flow(store, steps=20)
    run_ids: list[str] = []

    def factory(run, graph, done):
        run_ids.append(run.id)

        def update(state, finished):
            calls.append(({s: r.status.value for s, r in state.current.items()}, finished))

        return Follower(run.store, run.id, update, interval=600.0)  # longer than any run

    with progress.progress_view(factory):
        flow.run(durability="sync")  # (a commit per step; async would join them)
    assert len(calls) == 2  # the first commit, then the end (20 commits in between)
    assert calls[-1] == ({f"s{i}": "completed" for i in range(20)}, True)
    assert not [t for t in threading.enumerate() if t.name.startswith("nbflow-redraw")]


def test_a_trailing_redraw_shows_a_long_step_running(store):
    calls: list[dict] = []
    flow = nf.Flow("slow", store=store)

    @flow.step
    def quick():
        return 1

    @flow.step
    def slow(quick):
        # Drawn while `slow` runs (the trailing timer, if its commit came too soon after the
        # last redraw), or never: the next commit is its end.
        wait_for(lambda: {"quick": "completed", "slow": "running"} in calls, "the redraw")
        return 2

    def factory(run, graph, done):
        return Follower(
            run.store,
            run.id,
            lambda state, finished: calls.append(
                {s: r.status.value for s, r in state.current.items()}
            ),
            interval=0.2,
        )

    with progress.progress_view(factory):
        flow.run()
    assert {"quick": "completed", "slow": "running"} in calls


def test_progress_false_turns_every_display_off(store, monkeypatch):
    made: list = []
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    with progress.progress_view(lambda r, g, d: made.append(1) or (lambda *a: None)):
        chain_flow(store).run(progress=False)
    assert made == []
    assert progress.make_listeners(None, None, progress=False) == []  # type: ignore[arg-type]


def test_a_fully_cached_rerun_shows_its_live_view_finished(store, comms):
    # Such a run is written once, finished: its view is made after that and still hears
    # every event once (none counted twice).
    flow = chain_flow(store)
    flow.run(progress=False)
    views: list[LiveRun] = []
    heard: list[int] = []

    def factory(run, graph, done):
        views.append(LiveRun(run, graph, done, interval=0.0))
        return lambda record, events: heard.append(len(events)) or views[0](record, events)

    with progress.progress_view(factory):
        again = flow.run()
    live = views[0]
    assert len(views) == 1 and heard == [5]  # started, 3 cached, completed
    assert set(live.dag.states.values()) == {"cached"}
    assert (live.bar.value, live.bar.max, live.bar.bar_style) == (3, 3, "success")
    assert "completed" in live.label.value and "3 of 3 steps" in live.label.value
    assert again.id in live.dag.title
    live.close()


def test_in_a_terminal_a_fully_cached_rerun_fills_its_bar(store, monkeypatch, capsys):
    flow = chain_flow(store)
    flow.run(progress=False)
    monkeypatch.setattr(progress, "in_terminal", lambda: True)
    flow.run()
    err = capsys.readouterr().err
    assert "3/3" in err and "4/3" not in err


def test_in_a_notebook_a_run_shows_its_live_view_once(store, comms, monkeypatch):
    shown: list = []
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr("nbflow.widgets.in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    monkeypatch.setattr(widget_display, "_execution_count", lambda: 7)
    run = chain_flow(store).run()
    assert len(shown) == 1 and "nbflow-live" in shown[0].view._dom_classes
    # `flow.run()` as the cell's last line: the result does not draw the DAG again ...
    assert set(run._repr_mimebundle_()) == {"text/plain"}
    # ... but showing the run in a later cell does.
    monkeypatch.setattr(widget_display, "_execution_count", lambda: 8)
    assert "application/vnd.jupyter.widget-view+json" in run._repr_mimebundle_()


def test_in_a_terminal_a_text_bar(store, monkeypatch, capsys):
    monkeypatch.setattr(progress, "in_terminal", lambda: True)
    chain_flow(store).run()
    assert "3/3" in capsys.readouterr().err


# -- previews ----------------------------------------------------------------------------


def test_previews_of_frames_arrays_and_other_values():
    frame = pd.DataFrame({"x": range(100), "label": ["<a>"] * 100})
    html = value_preview(frame)
    assert "shape (100, 2)" in html and "x: int64" in html
    assert html.count("<tr>") <= 7 and "&lt;a&gt;" in html
    html = value_preview(np.zeros((3, 4), dtype="float32"))
    assert "ndarray · shape (3, 4) · dtype float32" in html
    html = value_preview({"k": "x" * 5000})
    assert html.startswith('<div class="nbflow-preview"><div class="nbflow-shape">dict')
    assert "characters)" in html and len(html) < 2500
