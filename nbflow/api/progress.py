"""Progress while a run executes: listeners that the runner calls after each commit.

In a terminal, a text progress bar (tqdm) on stderr; in a notebook, a live view of the
DAG with a progress bar (the widgets register it in :mod:`nbflow.api.display`). A widget that
starts runs itself (the browser's Fork button) shows them in its own view with
:func:`progress_view`. ``progress=False`` turns all of them off.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from nbflow.api.display import live_view
from nbflow.engine.plans import Listener as Listener  # (re-exported for the widgets)
from nbflow.store.records import EventType, NewEvent, RunRecord

if TYPE_CHECKING:
    from nbflow.api.run import Run
    from nbflow.graph.dag import FlowGraph

#: Makes the listener of one run: called with the run, its graph and the steps already done.
ListenerFactory = Callable[["Run", "FlowGraph", int], Listener]

_DONE = {
    EventType.STEP_COMPLETED,
    EventType.STEP_CACHED,
    EventType.STEP_SKIPPED,
    EventType.STEP_FAILED,
}

_view: ContextVar[ListenerFactory | None] = ContextVar("nbflow_progress_view", default=None)


class TextProgress:
    """A tqdm bar: steps done of total, with the step that last finished."""

    def __init__(self, run: Run, graph: FlowGraph, done: int = 0) -> None:
        from tqdm.auto import tqdm

        self._bar: Any = tqdm(
            total=len(graph.order),
            initial=done,
            desc=f"{run.flow_name} {run.id}",
            unit="step",
            leave=True,
            file=sys.stderr,
        )

    def __call__(self, run: RunRecord, events: list[NewEvent]) -> None:
        """Advance the bar by the steps these events finished."""
        finished = [e for e in events if e.type in _DONE]
        if finished:
            self._bar.set_postfix_str(f"{finished[-1].step}: {finished[-1].type.value[5:]}")
            self._bar.update(len(finished))
        if any(e.type.is_run_event and e.type is not EventType.RUN_STARTED for e in events):
            self._bar.set_postfix_str(run.status.value)
            self._bar.close()


def in_terminal() -> bool:
    """Whether stderr is an interactive terminal (no bar in logs, pipes or tests)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (JupyterLab, Notebook, VS Code, Voila)."""
    ipython = sys.modules.get("IPython")  # not imported: certainly not a kernel
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and any(
        cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__
    )


@contextlib.contextmanager
def progress_view(factory: ListenerFactory) -> Iterator[None]:
    """Within this block, runs started in this thread report to ``factory``'s listener
    instead of the notebook's or the terminal's progress display."""
    token = _view.set(factory)
    try:
        yield
    finally:
        _view.reset(token)


def make_listeners(run: Run, graph: FlowGraph, progress: bool, done: int = 0) -> list[Listener]:
    """The progress listeners for a run: none when ``progress`` is False."""
    if not progress:
        return []
    factory = _view.get()
    if factory is not None:
        return [factory(run, graph, done)]
    live = live_view()
    if live is not None and in_notebook():
        try:
            return [live(run, graph, done)]
        except Exception:  # no widgets here (or no front end): run without a display
            return []
    if in_terminal():
        return [TextProgress(run, graph, done)]
    return []
