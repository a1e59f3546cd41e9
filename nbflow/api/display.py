"""Where the widgets plug into the facades: how a Flow or a Run displays, and the live
view of a run in a notebook.

The facades never import the widgets (they sit above them); the widgets package
registers its renderers here when it is imported (``import nbflow`` imports it). Without
them, a Flow or Run displays as its repr, and runs show no live view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbflow.errors import NbflowError

if TYPE_CHECKING:
    from nbflow.engine.plans import Listener
    from nbflow.graph.dag import FlowGraph

# (Flows and Runs are typed ``Any`` here: the facades import this module, not the reverse.)

#: Makes the live listener of one run: called with the run, its graph and the steps done.
LiveFactory = Callable[[Any, "FlowGraph", int], "Listener"]


@dataclass
class _Renderers:
    bundle: Callable[[Any], dict[str, Any]] | None = None
    flow_widget: Callable[[Any, Any], Any] | None = None
    live: LiveFactory | None = None


_renderers = _Renderers()


def register(
    *,
    bundle: Callable[[Any], dict[str, Any]] | None = None,
    flow_widget: Callable[[Any, Any], Any] | None = None,
    live: LiveFactory | None = None,
) -> None:
    """Set the renderers given (the others stay): ``bundle`` makes the mime bundle of a
    Flow or Run, ``flow_widget`` the DAG widget of ``flow.show()``, ``live`` the live
    view of a run started in a notebook."""
    if bundle is not None:
        _renderers.bundle = bundle
    if flow_widget is not None:
        _renderers.flow_widget = flow_widget
    if live is not None:
        _renderers.live = live


def mime_bundle(target: Any) -> dict[str, Any]:
    """How ``target`` displays: the registered bundle, else its repr."""
    if _renderers.bundle is None:
        return {"text/plain": repr(target)}
    return _renderers.bundle(target)


def flow_widget(flow: Any, run: Any) -> Any:
    """The DAG widget of ``flow`` (states of ``run``, default its latest)."""
    if _renderers.flow_widget is None:
        raise NbflowError(
            "flow.show() needs nbflow's widgets, which are not loaded: `import nbflow.widgets` "
            "(and install ipywidgets and anywidget)."
        )
    return _renderers.flow_widget(flow, run)


def live_view() -> LiveFactory | None:
    """The registered live view of runs in a notebook, if any."""
    return _renderers.live
