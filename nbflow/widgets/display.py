"""How flows and runs display themselves in a notebook, without piling up widgets.

Each Flow (and each run) gets one DAG widget, refreshed and shown again on every display,
so displaying a flow ten times creates one widget, not ten. A run shown live while it
executed is not drawn a second time by the cell's result (``run = flow.run()`` as the
last line shows one DAG, not two).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from nbflow.widgets.dag import DagWidget, flow_source, run_source

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.api.run import Run
    from nbflow.graph.dag import FlowGraph
    from nbflow.widgets.live import LiveRun
    from nbflow.widgets.run_view import RunView

_flow_widgets: weakref.WeakKeyDictionary[Flow, DagWidget] = weakref.WeakKeyDictionary()
_run_widgets: dict[tuple[str, str], DagWidget] = {}  # (store uri, run id) -> widget
_run_views: dict[tuple[str, str], RunView] = {}  # runs of flows with gates
_live: weakref.WeakKeyDictionary[Run, tuple[LiveRun, int | None]] = weakref.WeakKeyDictionary()
_MAX_RUN_WIDGETS = 32


def is_open(widget: Any) -> bool:
    """Whether a widget is still usable (not closed)."""
    return widget is not None and getattr(widget, "comm", None) is not None


def flow_widget(flow: Flow, run: Run | None = None) -> DagWidget:
    """The flow's DAG widget, showing ``run`` (default: the latest run)."""
    widget = _flow_widgets.get(flow)
    source = flow_source(flow, run)
    if is_open(widget):
        assert widget is not None
        widget._source = source
        widget.refresh()
        return widget
    widget = DagWidget(source=source)
    _flow_widgets[flow] = widget
    return widget


def run_widget(run: Run) -> DagWidget:
    """The run's DAG widget, refreshed to the run's current state."""
    key = (run.store.uri or str(id(run.store)), run.id)
    widget = _run_widgets.get(key)
    if is_open(widget):
        assert widget is not None
        widget.refresh()
        return widget
    widget = DagWidget(source=run_source(run))
    _run_widgets[key] = widget
    while len(_run_widgets) > _MAX_RUN_WIDGETS:  # forget (not close) the oldest
        _run_widgets.pop(next(iter(_run_widgets)))
    return widget


def run_view(run: Run) -> RunView:
    """The view of a run whose flow has gates: its DAG and its gate panel, refreshed."""
    from nbflow.widgets.run_view import RunView

    key = (run.store.uri or str(id(run.store)), run.id)
    view = _run_views.get(key)
    if view is not None and is_open(view) and is_open(view.dag):
        view.run = run
        view.refresh()
        return view
    view = RunView(run, run_widget(run))
    _run_views[key] = view
    while len(_run_views) > _MAX_RUN_WIDGETS:
        _run_views.pop(next(iter(_run_views)))
    return view


def remember_live(run: Run, live: LiveRun) -> None:
    """Note that ``run`` is being shown live in the current cell."""
    _live[run] = (live, _execution_count())


def _execution_count() -> int | None:
    from nbflow.api.progress import in_notebook

    if not in_notebook():
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return getattr(shell, "execution_count", None)


def widget_bundle(widget: DagWidget | RunView) -> dict[str, Any]:
    """The mime bundle that displays ``widget``, with its summary as ``text/plain`` and
    ``text/html`` for front ends that cannot show widgets."""
    bundle = widget._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    return dict(data or {})


def flow_bundle(flow: Flow) -> dict[str, Any]:
    """A flow's display: its DAG widget, with its summary."""
    return widget_bundle(flow_widget(flow))


def run_bundle(run: Run) -> dict[str, Any]:
    """A run's display: its DAG widget (with the gate panel, where its flow has gates),
    unless this cell already shows it live."""
    from nbflow.widgets.run_view import has_gates

    live = _live.get(run)
    if live is not None and live[1] is not None and live[1] == _execution_count():
        return {"text/plain": repr(run)}
    return widget_bundle(run_view(run) if has_gates(run) else run_widget(run))


def summary_bundle(target: Flow | Run) -> dict[str, Any]:
    """A flow's or run's display without a widget (a terminal): its summary."""
    from nbflow.api.flow import Flow
    from nbflow.widgets.summary import steps_html, steps_text

    source = flow_source(target) if isinstance(target, Flow) else run_source(target)
    spec, infos, title = source()
    return {
        "text/plain": steps_text(title, spec, infos),
        "text/html": steps_html(title, spec, infos),
    }


def notebook_progress(run: Run, graph: FlowGraph, done: int = 0) -> LiveRun:
    """Show a live view of ``run`` in the current cell's output and return its listener."""
    from IPython.display import display

    from nbflow.widgets.live import LiveRun

    live = LiveRun(run, graph, done)
    handle = display(live, display_id=True)
    if handle is not None:
        live.on_finished = lambda: handle.update(_with_gates(run, live))
    remember_live(run, live)
    return live


def _with_gates(run: Run, live: LiveRun) -> LiveRun | RunView:
    """What an ended live view becomes: itself, or, for a flow with gates, the live view
    above the gate panel, its DAG showing the gates' states."""
    if not live.spec.gates:
        return live
    from nbflow.widgets.run_view import RunView

    return RunView(run, live.dag, top=live.view, progress=(live.bar, live.label))
