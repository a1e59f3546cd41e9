"""nbflow's notebook widgets: the DAG with live status, the checkpoint browser, forking.

Importing this package is cheap: ipywidgets, anywidget and graphviz load only when a
widget is made. ``nf.browse(...)`` and ``flow.show()`` are the entry points; displaying a
Flow or a Run shows its DAG: the package registers its renderers with
:mod:`nbflow.api.display` when imported.

This layer reads runs through :class:`~nbflow.api.run.Run`, the store interface and the
event hooks; it never imports the engine or a concrete store backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbflow.api import display as api_display
from nbflow.api.progress import in_notebook

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.api.progress import Listener
    from nbflow.api.run import Run
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store
    from nbflow.widgets.browser import Browser
    from nbflow.widgets.dag import DagWidget
    from nbflow.widgets.run_view import RunView

__all__ = ["Browser", "DagWidget", "browse", "show"]


def _flow_widget(flow: Flow, run: Run | None) -> DagWidget:
    from nbflow.widgets.display import flow_widget

    return flow_widget(flow, run)


def _live_view(run: Run, graph: FlowGraph, done: int) -> Listener:
    from nbflow.widgets.display import notebook_progress

    return notebook_progress(run, graph, done)


def browse(target: Flow | Run | Store | str | None = None, *, page_size: int = 20) -> Browser:
    """A browser of the runs in a store: pick a run, move through its versions, look at
    step outputs and events, and fork it.

    ``target`` is a Flow (its runs, latest selected), a Run (selected), a Store, or a
    path / URI (default: ``$NBFLOW_STORE`` or ./nbflow.duckdb). A store opened from a
    path is the browser's own and is closed by ``browser.close()``.
    """
    from nbflow import arguments
    from nbflow.store.open import check_store_like
    from nbflow.widgets.browse_target import browse_store
    from nbflow.widgets.browser import Browser

    arguments.count(page_size, "page_size", minimum=1)
    if not _browsable(target):
        check_store_like(target)
    store, owns, flow, run = browse_store(target)
    try:
        return Browser(store, flow=flow, run=run, owns_store=owns, page_size=page_size)
    except BaseException:
        if owns:
            store.close()
        raise


def _browsable(target: object) -> bool:
    from nbflow.api.flow import Flow
    from nbflow.api.run import Run

    return isinstance(target, Flow | Run)


def show(target: Flow | Run) -> DagWidget | RunView:
    """The DAG widget of a flow (states of its latest run) or of a run; for a run whose
    flow has human gates, the run's view: its DAG above the gate panel (Approve/Reject)."""
    from nbflow.api.flow import Flow
    from nbflow.widgets.display import flow_widget, run_view, run_widget
    from nbflow.widgets.run_view import has_gates

    if isinstance(target, Flow):
        return flow_widget(target)
    return run_view(target) if has_gates(target) else run_widget(target)


def repr_bundle(target: Flow | Run) -> dict[str, Any]:
    """How a Flow or Run displays: its DAG widget in a notebook (with a summary for static
    pages), the summary of its steps elsewhere."""
    text = repr(target)
    try:
        from nbflow.api.flow import Flow
        from nbflow.widgets.display import flow_bundle, run_bundle, summary_bundle

        if not in_notebook():
            return summary_bundle(target)
        return flow_bundle(target) if isinstance(target, Flow) else run_bundle(target)
    except Exception:  # showing must never fail: fall back to the text
        return {"text/plain": text}


def __getattr__(name: str) -> Any:
    if name == "Browser":
        from nbflow.widgets.browser import Browser

        return Browser
    if name == "DagWidget":
        from nbflow.widgets.dag import DagWidget

        return DagWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# How Flows and Runs display, and the live view of runs: the facades ask the registry.
api_display.register(bundle=repr_bundle, flow_widget=_flow_widget, live=_live_view)
