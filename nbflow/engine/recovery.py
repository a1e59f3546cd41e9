"""How a run ends when its background writer could not commit a checkpoint.

Everything committed before the failure stays. Of what was not committed, the events of
steps that do not depend on the failing step are written again, with their values; the
failing step is recorded as failed with the write's error, the steps downstream of it as
skipped (whatever ran of them in memory read an output the store does not hold), any step
still running as failed (the run stopped), and the run as failed. That is the record a
sync run would have made, but for the steps the run stopped early. If even that cannot
be written (a full disk), the end alone is tried; failing that, the store's error is
raised and the run is left running without a lease, which reads as interrupted:
``resume()`` re-executes what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import networkx as nx

from nbflow.engine.plans import describe
from nbflow.errors import InvalidTransitionError
from nbflow.store.fold import RunState, apply
from nbflow.store.records import Event, EventType, NewEvent, RunRecord, StepStatus

if TYPE_CHECKING:
    from nbflow.engine.commits import WriteFailure
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store
    from nbflow.values import EncodedValue

_RUN_ENDS = frozenset(
    {
        EventType.RUN_COMPLETED,
        EventType.RUN_FAILED,
        EventType.RUN_CANCELLED,
        EventType.RUN_INTERRUPTED,
    }
)
_OUTPUT = frozenset({EventType.STEP_OUTPUT_RECORDED, EventType.STEP_COMPLETED})


def failure_message(failure: WriteFailure) -> str:
    """The run's error: which step's checkpoint could not be written, and why."""
    what = f"step {failure.step!r}'s checkpoint" if failure.step else "a checkpoint"
    return f"{what} could not be written: {describe(failure.error)}"


def end_after_failure(
    store: Store, run_id: str, graph: FlowGraph, failure: WriteFailure
) -> RunRecord:
    """Record how run ``run_id`` ends after ``failure`` (see the module); return the run."""
    committed = store.load_state(run_id)
    bad = _downstream(graph, failure.step)
    events, values = _salvage(failure, bad)
    state = _folded(committed, events)
    if state is None:  # (what was salvaged does not follow: keep the committed part only)
        events, values, state = [], [], committed
    ending = _ending(state, graph, failure, bad)
    try:
        for _step, encoded in values:
            store.put_value(encoded)
        return store.append(committed.run.run_id, committed.run.version, [*events, *ending])
    except Exception:
        # The end alone, then; if even that is refused, the store's error is the news.
        ending = _ending(committed, graph, failure, bad)
        return store.append(committed.run.run_id, committed.run.version, ending)


def _downstream(graph: FlowGraph, step: str | None) -> set[str]:
    if step is None or step not in graph.dag:
        return set()
    return {step, *nx.descendants(graph.dag, step)}


def _salvage(
    failure: WriteFailure, bad: set[str]
) -> tuple[list[NewEvent], list[tuple[str, EncodedValue]]]:
    """What is worth writing again of what was not written."""
    events = []
    for event in failure.events:
        if event.type in _RUN_ENDS:
            continue  # the ending is decided again
        if event.step == failure.step and event.type in _OUTPUT:
            continue
        downstream = event.step in bad and event.step != failure.step
        if downstream and event.type is not EventType.STEP_SCHEDULED:
            continue  # it read an output the store does not hold
        events.append(event)
    values = [(step, v) for step, v in failure.values if step not in bad]
    return events, values


def _folded(committed: RunState, events: Sequence[NewEvent]) -> RunState | None:
    """``committed`` with ``events`` folded in, or None if they do not follow."""
    state = committed.copy()
    run = committed.run
    stamped = [
        Event(run.run_id, run.version + i + 1, e.ts, e.type, e.step, e.attempt, e.payload)
        for i, e in enumerate(events)
    ]
    try:
        apply(state, stamped)
    except InvalidTransitionError:
        return None
    return state


def _ending(
    state: RunState, graph: FlowGraph, failure: WriteFailure, bad: set[str]
) -> list[NewEvent]:
    """The events that end the run from ``state``: failed and skipped steps, then the run."""
    error = describe(failure.error)
    out: list[NewEvent] = []
    for name in graph.order:
        row = state.latest(name)
        if row is None:
            continue
        if row.status in (StepStatus.RUNNING, StepStatus.QUEUED):
            if name == failure.step:
                message = f"its checkpoint could not be written: {error}"
            else:
                message = f"stopped: the run could not write step {failure.step!r}'s checkpoint"
            out.append(
                NewEvent(
                    EventType.STEP_FAILED,
                    name,
                    row.attempt,
                    {"error": message, "traceback": failure.trace if name == failure.step else ""},
                )
            )
        elif row.status is StepStatus.SCHEDULED and name in bad:
            out.append(
                NewEvent(
                    EventType.STEP_SKIPPED,
                    name,
                    0,
                    {"reason": f"upstream step {failure.step!r} failed"},
                )
            )
    out.append(NewEvent(EventType.RUN_FAILED, payload={"error": failure_message(failure)}))
    return out
