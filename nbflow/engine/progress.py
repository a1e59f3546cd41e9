"""Progress while a run executes: listeners that the runner calls after each commit.

In a terminal, a text progress bar (tqdm) on stderr; in a notebook, the widgets module
adds its live view here. ``progress=False`` turns both off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbflow.store.records import EventType, NewEvent, RunRecord

if TYPE_CHECKING:
    from nbflow.graph.dag import FlowGraph
    from nbflow.run import Run

Listener = Callable[[RunRecord, list[NewEvent]], None]

_DONE = {
    EventType.STEP_COMPLETED,
    EventType.STEP_CACHED,
    EventType.STEP_SKIPPED,
    EventType.STEP_FAILED,
}


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


def make_listeners(run: Run, graph: FlowGraph, progress: bool, done: int = 0) -> list[Listener]:
    """The progress listeners for a run: none when ``progress`` is False."""
    if not progress:
        return []
    if in_terminal():
        return [TextProgress(run, graph, done)]
    return []
