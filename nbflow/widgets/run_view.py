"""A run's view with gates: its DAG (or live view) and, under it, the gate panel.

A run whose flow has human gates displays as a :class:`RunView`: the DAG, with the gate
drawn as a hexagon in its state, and the :class:`~nbflow.widgets.gate_panel.GatePanel`
to approve or reject it. Approving continues the run here in the background, and the
DAG follows it live (a :class:`~nbflow.widgets.live.Follower` on the run's commits).
The view follows the run through the process's watcher (:mod:`nbflow.widgets.watch`):
when its version or status moves (a decision elsewhere, the run continuing in another
process), the DAG and the panel redraw, the panel saying what was decided elsewhere.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from nbflow.store.records import Event, RunStatus
from nbflow.widgets.dag import DagWidget, run_infos, run_title
from nbflow.widgets.gate_panel import GatePanel
from nbflow.widgets.live import Follower
from nbflow.widgets.states import NodeState, infos_from_rows, with_gates
from nbflow.widgets.watch import Watch, follow, is_open

if TYPE_CHECKING:
    from nbflow.api.progress import Listener
    from nbflow.api.run import Run
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.fold import RunState


_DONE = {NodeState.COMPLETED, NodeState.CACHED, NodeState.FAILED, NodeState.SKIPPED}
_BAR = {"completed": "success", "waiting": "warning", "running": "info"}


class RunView(w.VBox):
    """``top`` (default: the run's DAG) above the run's gate panel."""

    def __init__(
        self,
        run: Run,
        dag: DagWidget,
        top: w.Widget | None = None,
        progress: tuple[w.IntProgress, w.HTML] | None = None,
    ) -> None:
        self.run = run
        self.dag = dag
        self._progress = progress  # the live view's bar and text, kept true after it ended
        self.gates = GatePanel(follow=lambda: self._follower, on_decided=self._decided)
        super().__init__([top if top is not None else dag, self.gates])
        self.add_class("nbflow-run-view")
        token = None
        with contextlib.suppress(Exception):
            token = run.store.change_token()  # before reading: a change meanwhile is seen later
        self._seen = self._peek()
        self.refresh()
        self._follow(token)

    def _peek(self) -> tuple[int, RunStatus] | None:
        try:
            record = self.run.store.get_run(self.run.id)
        except Exception:  # a store that cannot answer now: look again next time
            return None
        return (record.version, record.status)

    def _follow(self, token: Any) -> None:
        """Redraw whenever the run's version or status moves (wherever it moved)."""
        ref = weakref.ref(self)

        def check() -> bool:
            view = ref()
            if view is None:
                return False
            view.changed()
            return True

        def stopped() -> None:
            view = ref()
            if view is not None and is_open(view.dag):
                view.dag.title = f"{view.dag.title} · no longer updated"

        watch = Watch(self.run.store, check, lambda: is_open(ref()), stopped)
        watch._token = token
        follow(watch)

    def changed(self) -> None:
        """Redraw if the run moved since it was last drawn (the watcher asks, when the
        store changed). A run the panel continued here is drawn by its own follower."""
        now = self._peek()
        if now is None or now == self._seen:
            return
        continued = self.gates.continued
        if continued is not None and continued.id == self.run.id and not now[1].at_rest:
            return
        self._seen = now
        self.refresh()

    def refresh(self) -> None:
        """Show the run as it stands now: the DAG with its gates' states, and the panel."""
        infos = run_infos(self.run)
        self.dag.show(infos=infos, title=run_title(self.run))
        self.gates.show(self.run, keep_status=True)
        if self._progress is not None:
            bar, label = self._progress
            status = self.run.status
            done = sum(1 for n in self.dag.spec.nodes if n in infos and infos[n].state in _DONE)
            total = len(self.dag.spec.nodes)
            with bar.hold_sync():
                bar.value = min(done, bar.max)
                bar.bar_style = _BAR.get(status, "danger")
            text = f"<b>{status}</b>: {done} of {total} steps"
            if status == RunStatus.WAITING.value:
                text += " · waiting for a decision on its gate"
            label.value = f'<span class="nbflow-progress-text">{text}</span>'

    def _decided(self, run: Run) -> None:
        if run.record.status is not RunStatus.RUNNING:  # (a continued run redraws itself)
            self.refresh()

    def _follower(self, run: Run, graph: FlowGraph, done: int) -> Listener:
        # (The panel continued the run: say how it ended, once it has.)
        # The decisions so far mark the gates; the run's new commits move the steps.
        events: list[Event] = list(run.store.read_events(run.id))

        def update(state: RunState, finished: bool) -> None:
            if finished:
                self._seen = self._peek()
                self.refresh()
                self.gates.show_ended(self.run.record)
                return
            infos = with_gates(infos_from_rows(state.current.values()), events)
            title = f"{state.run.flow} · run {state.run.run_id} · {state.run.status.value}"
            self.dag.show(infos=infos, title=title)

        return Follower(run.store, run.id, update)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Where widgets cannot render: the DAG's summary.
        from nbflow.widgets.summary import with_summary

        return with_summary(
            super()._repr_mimebundle_(**kwargs),
            self.dag.summary_text(),
            self.dag.summary_html(),
        )


def has_gates(run: Run) -> bool:
    """Whether ``run``'s flow has a human gate (its view then carries the gate panel)."""
    from nbflow.widgets.states import run_spec

    try:
        return bool(run_spec(run).gates)
    except Exception:  # a display must not fail on a run it cannot read
        return False
