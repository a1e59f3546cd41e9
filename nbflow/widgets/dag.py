"""The DAG widget: the flow's steps colored by state, kept as SVG in the ``svg`` trait.

The SVG (layout, colors, icons, captions) is drawn here, so the widget looks the same in
JupyterLab, Notebook 7, VS Code and Voila. The front end (``dag.js``) shows it fitted to
the output's width with zoom, pan, a minimap for big graphs and the highlight of a step's
upstream and downstream; clicking a node sets ``selected``, clicking a folded group
expands it (``collapsed``). Without Graphviz's ``dot`` the front end lays the graph out
again with the vendored dagre (sent in ``layout_module`` only then), and the install hint
is shown under the first such DAG of the session only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anywidget
import traitlets

from nbflow.widgets.groups import Group, find_groups, fold, group_info
from nbflow.widgets.layout import layout
from nbflow.widgets.states import (
    PALETTE,
    DagSpec,
    NodeInfo,
    infos_from_rows,
    mark_stale,
    run_spec,
    stale_steps,
    with_gates,
    with_waiting,
)
from nbflow.widgets.svg import DASH, GATE_DASH, GATE_ICONS, ICONS, draw
from nbflow.widgets.theme import GATE_PALETTE, theme_css

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.api.run import Run

HERE = Path(__file__).parent
DAGRE = HERE / "vendor" / "dagre.esm.js"
FRONT_END = ("dag_layout.js", "dag.js")  # one ES module, in this order
#: The widgets' stylesheet: widgets.css, then the DAG's colors in both themes.
CSS = (HERE / "widgets.css").read_text("utf-8") + theme_css()
#: Above this many steps the widget starts with its groups folded and shows a minimap.
BIG_DAG = 30


class Shown(NamedTuple):
    """What a DAG widget shows: shape, states, title, and whether the states are live
    (a run going on: running steps pulse and tick, steps not reached say ``waiting``)."""

    spec: DagSpec
    infos: Mapping[str, NodeInfo]
    title: str
    live: bool = False


#: What a refreshing DAG widget asks its source for.
Source = Callable[[], Shown]


class DagWidget(anywidget.AnyWidget):
    """A DAG of steps drawn as SVG (synced as ``svg``); clicking a node selects its step."""

    _esm = "\n".join((HERE / name).read_text("utf-8") for name in FRONT_END)
    _css = CSS

    svg = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    states = traitlets.Dict().tag(sync=True)  # step -> state value
    details = traitlets.Dict().tag(sync=True)  # step -> caption and detail, for the info line
    # legend entry -> [fill, stroke, dash, icon, css class, shape ('rect' or 'hexagon')]
    palette = traitlets.Dict().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)  # e.g. how to get the Graphviz layout
    engine = traitlets.Unicode("").tag(sync=True)  # "dot" or "layered"
    layout_module = traitlets.Unicode("").tag(sync=True)  # dagre's ES module, without dot
    groups = traitlets.Dict().tag(sync=True)  # group key -> its steps
    collapsed = traitlets.List(traitlets.Unicode()).tag(sync=True)  # group keys shown folded

    def __init__(
        self,
        spec: DagSpec | None = None,
        infos: Mapping[str, NodeInfo] | None = None,
        *,
        title: str = "",
        source: Source | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(title=title, palette=legend(False), **kwargs)
        self._lock = threading.RLock()
        self._spec = spec or DagSpec((), ())
        self._infos: dict[str, NodeInfo] = dict(infos or {})
        self._source = source
        self._live = True  # the states are those of now (False: a past version)
        self._found: dict[str, Group] = {}
        self._folded_by_default = True  # until the user folds or unfolds a group
        self.add_class("nbflow-dag-widget")
        self.observe(self._on_selected, names="selected")
        self.observe(self._on_collapsed, names="collapsed")
        if source is not None and spec is None:
            self.refresh()
        else:
            self._redraw()

    @property
    def spec(self) -> DagSpec:
        """The DAG's shape."""
        return self._spec

    @property
    def infos(self) -> dict[str, NodeInfo]:
        """Each step's state as shown (steps absent are never run)."""
        return dict(self._infos)

    def show(
        self,
        spec: DagSpec | None = None,
        infos: Mapping[str, NodeInfo] | None = None,
        title: str | None = None,
        *,
        live: bool | None = None,
    ) -> None:
        """Show new states (and a new shape or title, when given); ``live=False`` for the
        states of a past version (running steps then neither pulse nor tick)."""
        with self._lock:
            if live is not None:
                self._live = live
            if spec is not None:
                self._spec = spec
            if infos is not None:
                self._infos = dict(infos)
            if title is not None:
                self.title = title
            if self.selected and self.selected not in self._spec.nodes:
                self.selected = ""  # redraws through the observer
            self._redraw()

    def refresh(self) -> None:
        """Read the source again (a flow's latest run, a run's current state)."""
        if self._source is None:
            return
        spec, infos, title, live = self._source()
        self.show(spec, infos, title, live=live)

    def summary_text(self) -> str:
        """The DAG as text: each step, its state and duration (for plain front ends)."""
        from nbflow.widgets.summary import steps_text

        return steps_text(self.title, self._spec, self._infos)

    def summary_html(self, *, drawing: bool = True) -> str:
        """The DAG as static HTML: the SVG drawing and a table of the steps."""
        from nbflow.widgets.summary import steps_html

        return steps_html(self.title, self._spec, self._infos, svg=self.svg if drawing else "")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Front ends that cannot show the widget (a terminal, a static page) show these.
        from nbflow.widgets.summary import with_summary

        return with_summary(
            super()._repr_mimebundle_(**kwargs), self.summary_text(), self.summary_html()
        )

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        """Write the DAG (drawing and table of steps) as a standalone HTML file that opens
        offline; return its path."""
        from nbflow.widgets.summary import write_page

        return write_page(path, self.title or "nbflow DAG", self.summary_html())

    def _on_selected(self, change: dict[str, Any]) -> None:
        with self._lock:
            self._redraw()

    def _on_collapsed(self, change: dict[str, Any]) -> None:
        with self._lock:
            if not self._redrawing:
                self._folded_by_default = False
                self._redraw()

    _redrawing = False

    def _redraw(self) -> None:
        self._redrawing = True
        try:
            self._draw()
        finally:
            self._redrawing = False

    def _draw(self) -> None:
        found = find_groups(self._spec)
        if found.keys() != self._found.keys() and self._folded_by_default:
            collapsed = sorted(found) if len(self._spec.nodes) > BIG_DAG else []
        else:
            collapsed = [key for key in self.collapsed if key in found]
        self._found = found
        owner = {m: key for key, g in found.items() for m in g.members}
        if self.selected in owner and owner[self.selected] in collapsed:
            collapsed.remove(owner[self.selected])  # a selected step is never hidden
        folded = [found[key] for key in collapsed]
        shown = fold(self._spec, folded) if folded else self._spec
        placed = layout(shown)
        infos = {n: self._infos.get(n) or NodeInfo() for n in self._spec.nodes}
        drawn = dict(infos)
        drawn.update({g.node: group_info(g, infos) for g in folded})
        with self.hold_sync():
            self.palette = legend(bool(self._spec.gates))
            self.collapsed = collapsed
            self.groups = {key: list(g.members) for key, g in found.items()}
            self.svg = draw(
                placed,
                drawn,
                self.selected,
                {g.node: g.key for g in folded},
                live=self._live,
                gates=self._spec.gates,
            )
            self.states = {n: i.state.value for n, i in infos.items()}
            self.details = {n: i.tooltip for n, i in infos.items()}
            self.note = _note_once(self, placed.note)
            self.engine = placed.engine
            if placed.engine == "layered" and not self.layout_module:
                self.layout_module = DAGRE.read_text(encoding="utf-8")


def legend(gates: bool) -> dict[str, list[str]]:
    """The legend's entries: every state, and the gate's looks when the DAG has gates."""
    entries = {
        state.value: [
            *colors,
            DASH.get(state, ""),
            ICONS[state],
            f"state-{state.value}",
            "rect",
        ]
        for state, colors in PALETTE.items()
    }
    if gates:
        for look, colors in GATE_PALETTE.items():
            entries[f"gate_{look.value}"] = [
                *colors,
                GATE_DASH if look.value == "open" else "",
                GATE_ICONS[look],
                f"gate gate-{look.value}",
                "hexagon",
            ]
    return entries


_hint_shown_by: list[int] = []  # the widget (id) that shows the install hint this session


def _note_once(widget: DagWidget, note: str) -> str:
    """``note`` for the first widget of the session that needs it, '' for every other."""
    if not note:
        return ""
    if not _hint_shown_by:
        _hint_shown_by.append(id(widget))
    return note if _hint_shown_by[0] == id(widget) else ""


def run_infos(run: Run) -> dict[str, NodeInfo]:
    """Each step of ``run`` as it stands now (its gates open, approved or rejected)."""
    infos = infos_from_rows(run.store.executions(run.id))
    return with_gates(infos, run.store.read_events(run.id))


def run_title(run: Run) -> str:
    """``flow · run id · status``."""
    record = run.record
    return f"{record.flow} · run {record.run_id} · {record.status.value}"


def flow_source(flow: Flow, run: Run | None = None) -> Source:
    """A source showing ``flow``'s current DAG with the states of ``run`` (default: its
    latest run), stale steps marked where the flow can tell."""

    def read() -> Shown:
        spec = DagSpec.from_graph(flow.graph())
        shown = run if run is not None else flow.latest_run()
        if shown is None:
            return Shown(spec, {}, f"{flow.name} · never run")
        infos, live = _states(shown, flow, spec)
        which = "" if run is not None else "latest "
        return Shown(
            spec, infos, f"{flow.name} · {which}{run_title(shown).split(' · ', 1)[1]}", live
        )

    return read


def run_source(run: Run) -> Source:
    """A source showing ``run``'s DAG as it stands now."""

    def read() -> Shown:
        from nbflow.api.flow import find_flow

        flow = find_flow(run.flow_name, run.store)
        spec = run_spec(run, flow)
        infos, live = _states(run, flow, spec)
        return Shown(spec, infos, run_title(run), live)

    return read


def _states(run: Run, flow: Flow | None, spec: DagSpec) -> tuple[dict[str, NodeInfo], bool]:
    """``run``'s steps as shown now, and whether it is live. Stale marks only for a run
    at rest (while it runs, they would be worked out again at every commit for nothing)."""
    live = not run.record.status.at_rest
    infos = run_infos(run)
    if live:
        return with_waiting(infos, spec.nodes, True), True
    if flow is not None:
        infos = mark_stale(infos, stale_steps(flow, run))
    return infos, False
