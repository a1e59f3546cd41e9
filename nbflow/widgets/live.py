"""Live views of a running run: the DAG updating and a progress bar, in a notebook.

The engine calls a progress listener after each commit with the run's record and the
events just committed (:mod:`nbflow.api.progress`). :class:`Follower` folds those
events into the run's state with the store's own fold, so following a run costs no
database read, and redraws at most every so often, and always when the run ends. A
trailing timer makes sure the last state before a long step is shown; it ends with the
run.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from nbflow.store.fold import RunState, apply
from nbflow.store.records import Event, NewEvent, RunRecord, StepStatus
from nbflow.widgets.dag import DagWidget
from nbflow.widgets.states import (
    DagSpec,
    format_duration,
    infos_from_rows,
    summarize,
    with_waiting,
)

if TYPE_CHECKING:
    from nbflow.api.run import Run
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store

#: Called with the run's state and whether the run has finished.
Update = Callable[[RunState, bool], None]

_DONE = {StepStatus.COMPLETED, StepStatus.CACHED, StepStatus.SKIPPED}
#: How often the progress line's clock is redrawn while a run goes on (seconds).
TICK_S = 0.5


class Follower:
    """A progress listener that keeps a run's state and calls ``update`` (throttled).

    Redraws happen at most every ``interval`` seconds, an interval that grows to ten
    times what the last redraw took, so drawing never costs a run more than ~10 %.
    """

    def __init__(self, store: Store, run_id: str, update: Update, interval: float = 0.1):
        self._store = store
        self._run_id = run_id
        self._update = update
        self._min_interval = interval
        self._interval = interval
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._last = 0.0
        self.finished = False
        self.state = store.load_state(run_id)

    def __call__(self, run: RunRecord, events: list[NewEvent]) -> None:
        """Fold the committed ``events``; redraw now, later, or (at the end) for sure."""
        first = run.version - len(events) + 1
        with self._lock:
            # A follower made after the run was written has read some events already.
            seen = self.state.run.version
            stamped = [
                Event(run.run_id, first + i, e.ts, e.type, e.step, e.attempt, e.payload)
                for i, e in enumerate(events)
                if first + i > seen
            ]
            try:
                apply(self.state, stamped)
            except Exception:  # out of step (events we did not see): read the store
                self.state = self._store.load_state(self._run_id)
            finished = run.status.at_rest
        if finished:
            self._cancel_timer()
            self._fire(finished=True)
            return
        wait = self._interval - (time.monotonic() - self._last)
        if wait <= 0:
            self._cancel_timer()
            self._fire(finished=False)
        else:
            with self._lock:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._fire_later)
                    self._timer.daemon = True
                    self._timer.name = f"nbflow-redraw-{self._run_id}"
                    self._timer.start()

    def _fire_later(self) -> None:
        with self._lock:
            self._timer = None
            if self.finished:
                return
        self._fire(finished=False)

    def _fire(self, *, finished: bool) -> None:
        with self._lock:
            if self.finished:
                return
            self.finished = finished
            started = time.monotonic()
            try:
                self._update(self.state, finished)
            finally:
                self._last = time.monotonic()
                self._interval = max(self._min_interval, 10 * (self._last - started))

    def _cancel_timer(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join(1.0)  # it ends at once: leave no thread behind the run


class LiveRun:
    """The notebook's live view of a run: a progress bar over the DAG.

    The progress line's clock ticks every :data:`TICK_S` while the run goes on (not only
    when a step commits), and its count of steps done never goes backwards: a step
    counts once it completed, was cached or skipped (a failed step is counted apart,
    since a resume runs it again).
    """

    def __init__(self, run: Run, graph: FlowGraph, done: int = 0, *, interval: float = 0.1) -> None:
        self.spec = DagSpec.from_graph(graph)
        self.total = len(self.spec.nodes)
        self._nodes = set(self.spec.nodes)
        self._started = time.monotonic()
        self._done = 0
        self._line = ("", "")  # the progress line around the clock, as last drawn
        self._tick_lock = threading.Lock()
        self._ticker: threading.Timer | None = None
        self._ended = False
        self.bar = w.IntProgress(value=0, min=0, max=max(self.total, 1), bar_style="info")
        self.bar.layout.width = "260px"
        self.label = w.HTML()
        self.dag = DagWidget(self.spec, title=f"{run.flow_name} · run {run.id} · running")
        self.view = w.VBox([w.HBox([self.bar, self.label]), self.dag])
        self.view.add_class("nbflow-live")
        #: Called once the run has ended and the view shows it (the notebook updates the
        #: output's text and HTML, so a saved notebook shows how the run ended).
        self.on_finished: Callable[[], None] | None = None
        self.follower = Follower(run.store, run.id, self._update, interval)
        self._update(self.follower.state, finished=False)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Where widgets cannot render (a static page, a terminal): the DAG's summary.
        from nbflow.widgets.summary import with_summary

        progress = re.sub(r"<[^>]+>", "", self.label.value)
        return with_summary(
            self.view._repr_mimebundle_(**kwargs),
            f"{self.dag.summary_text()}\n{progress}",
            self.dag.summary_html(),
        )

    def __call__(self, run: RunRecord, events: list[NewEvent]) -> None:
        """The progress listener."""
        self.follower(run, events)

    def _update(self, state: RunState, finished: bool) -> None:
        rows = [r for n, r in state.current.items() if n in self._nodes]
        # Each step counts by its latest attempt; max() keeps the count from going back
        # while a resume re-reads the steps it keeps.
        self._done = max(self._done, sum(1 for r in rows if r.status in _DONE))
        done = self._done
        failed = sum(1 for r in rows if r.status is StepStatus.FAILED)
        running = [r.step for r in rows if r.status is StepStatus.RUNNING]
        queued = [r.step for r in rows if r.status is StepStatus.QUEUED]
        live = not finished and not state.run.status.at_rest
        infos = with_waiting(infos_from_rows(rows), self.spec.nodes, live)
        status = state.run.status.value
        with self.bar.hold_sync():
            self.bar.value = min(done, self.bar.max)
            if finished:
                self.bar.bar_style = "success" if status == "completed" else "danger"
        if finished:
            counts = summarize(infos, self.spec.nodes)
            parts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
            self._line = (f"<b>{status}</b>: {done} of {self.total} steps in ", f" ({parts})")
        else:
            now = f" · {failed} failed" if failed else ""
            now += f" · running {', '.join(running)}" if running else ""
            now += f" · queued {', '.join(queued)}" if queued else ""
            self._line = (f"{done} of {self.total} steps · ", now)
        if finished:
            self._stop_ticking()  # before the last line: no tick may redraw after it
        self._draw_line()
        self.dag.show(
            infos=infos, title=f"{state.run.flow} · run {state.run.run_id} · {status}", live=live
        )
        if finished:
            if self.on_finished is not None:
                with contextlib.suppress(Exception):  # the display is not the run's business
                    self.on_finished()
        else:
            self._tick_later()

    def _draw_line(self) -> None:
        before, after = self._line
        elapsed = format_duration((time.monotonic() - self._started) * 1000)
        self.label.value = f'<span class="nbflow-progress-text">{before}{elapsed}{after}</span>'

    def _tick_later(self) -> None:
        with self._tick_lock:
            if self._ticker is not None or self._ended:
                return
            self._ticker = threading.Timer(TICK_S, self._tick)
            self._ticker.daemon = True
            self._ticker.name = "nbflow-tick"
            self._ticker.start()

    def _tick(self) -> None:
        with self._tick_lock:
            self._ticker = None
            if self._ended:
                return
            with contextlib.suppress(Exception):  # a closed view: nothing to tick
                self._draw_line()
        self._tick_later()

    def _stop_ticking(self) -> None:
        with self._tick_lock:
            self._ended = True
            ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()

    def close(self) -> None:
        """Close the view's widgets (and stop its clock)."""
        self._stop_ticking()
        close_all(self.view)


def close_all(widget: w.Widget) -> None:
    """Close a widget and every widget inside it."""
    for child in getattr(widget, "children", ()):
        close_all(child)
    widget.close()
