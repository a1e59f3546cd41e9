"""How flows and runs display themselves in a notebook, each display true to what it claims.

Every display gets a DAG widget of its own, so an earlier output keeps its meaning when
the flow is displayed again (with another run, or after a run). A display follows what
it shows through the process's watcher (:mod:`nbflow.widgets.watch`): a flow's display,
its latest run wherever that was started (a cell, a background thread, another process,
the CLI); a run's display (or ``flow.show(run)``), that run. A run shown live while it
executed is not drawn a second time by the cell's result (``run = flow.run()`` as the
last line shows one DAG, not two).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from nbflow.widgets.dag import DagWidget, flow_source, run_source
from nbflow.widgets.watch import Watch, follow, is_open

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.api.run import Run
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store
    from nbflow.widgets.live import LiveRun
    from nbflow.widgets.run_view import RunView

_live: weakref.WeakKeyDictionary[Run, tuple[LiveRun, int | None]] = weakref.WeakKeyDictionary()


def flow_widget(flow: Flow, run: Run | None = None) -> DagWidget:
    """A new DAG widget showing ``flow`` with ``run`` (default: its latest run, whichever
    that is at any moment), kept up to date."""
    if run is not None:
        return _followed(flow.store, flow_source(flow, run), _run_peek(run))
    store, name = flow.store, flow.name

    def peek() -> Hashable:
        runs = store.list_runs(flow=name, limit=1)
        return (runs[0].run_id, runs[0].version, runs[0].status) if runs else None

    return _followed(store, flow_source(flow), peek)


def run_widget(run: Run) -> DagWidget:
    """A new DAG widget showing ``run``, kept up to date while it changes."""
    return _followed(run.store, run_source(run), _run_peek(run))


def _run_peek(run: Run) -> Callable[[], Hashable]:
    store, run_id = run.store, run.id

    def peek() -> Hashable:
        record = store.get_run(run_id)
        return (record.version, record.status)

    return peek


def _followed(store: Store, source: Any, peek: Callable[[], Hashable]) -> DagWidget:
    """A widget drawn from ``source`` that the watcher redraws whenever ``peek`` (a cheap
    read of what it shows) changes."""
    token = None
    with contextlib.suppress(Exception):
        token = store.change_token()  # before reading: a change meanwhile is seen later
    seen = [peek()]
    widget = DagWidget(source=source)
    ref = weakref.ref(widget)

    def check() -> bool:
        shown = ref()
        if shown is None:
            return False
        now = peek()
        if now != seen[0]:
            seen[0] = now
            shown.refresh()
        return True

    def stopped() -> None:
        shown = ref()
        if shown is not None and is_open(shown):
            shown.title = f"{shown.title} · no longer updated"

    watch = Watch(store, check, lambda: is_open(ref()), stopped)
    watch._token = token
    follow(watch)
    return widget


def run_view(run: Run) -> RunView:
    """A new view of a run whose flow has gates: its DAG and its gate panel (the view
    follows the run, both redrawn together)."""
    from nbflow.widgets.run_view import RunView

    return RunView(run, DagWidget(source=run_source(run)))


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
    spec, infos, title, _ = source()
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
