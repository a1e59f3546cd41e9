"""What the DAG shows: the graph's shape and each step's state, read from a store.

Pure Python (no ipywidgets): the widgets, the live progress view and the tests build on
these records. A step's state comes from its latest execution row (the row changed last),
so the same code serves the current run and any earlier version of it (time travel).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from nbflow.store.records import Event, StepExecution, StepStatus

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.api.run import Run
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.records import FlowRecord, RunRecord


class NodeState(StrEnum):
    """How a step is drawn."""

    NEVER_RUN = "never_run"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"
    STALE = "stale"

    @property
    def label(self) -> str:
        """The word shown under the step's name."""
        return self.value.replace("_", " ")


#: state -> (fill, stroke): light fills keep the black labels readable.
PALETTE: dict[NodeState, tuple[str, str]] = {
    NodeState.NEVER_RUN: ("#f3f4f6", "#9ca3af"),
    NodeState.QUEUED: ("#e0e7ff", "#818cf8"),
    NodeState.RUNNING: ("#bfdbfe", "#2563eb"),
    NodeState.COMPLETED: ("#bbf7d0", "#16a34a"),
    NodeState.CACHED: ("#ccfbf1", "#0d9488"),
    NodeState.FAILED: ("#fecaca", "#dc2626"),
    NodeState.SKIPPED: ("#e5e7eb", "#6b7280"),
    NodeState.STALE: ("#fde68a", "#d97706"),
}

_FROM_STATUS = {
    StepStatus.SCHEDULED: NodeState.NEVER_RUN,
    StepStatus.QUEUED: NodeState.QUEUED,
    StepStatus.RUNNING: NodeState.RUNNING,
    StepStatus.COMPLETED: NodeState.COMPLETED,
    StepStatus.CACHED: NodeState.CACHED,
    StepStatus.FAILED: NodeState.FAILED,
    StepStatus.SKIPPED: NodeState.SKIPPED,
}


@dataclass(frozen=True)
class NodeInfo:
    """One step as the DAG shows it: its state, duration and a one-line detail."""

    state: NodeState = NodeState.NEVER_RUN
    duration_ms: float | None = None
    detail: str = ""  # e.g. the error's first line, where a cached output came from
    label: str = ""  # overrides the state word (e.g. "waiting", "attempt 2")
    started_at: dt.datetime | None = None  # when a running step started (its clock ticks)
    gate: str = ""  # a gate step's decision state: open, approved, rejected ('' none yet)

    @property
    def caption(self) -> str:
        """The second line of the node: state and duration."""
        word = self.label or self.state.label
        if self.gate:  # the decision is what a gate's caption says
            return word
        if self.duration_ms is not None and self.state in (
            NodeState.COMPLETED,
            NodeState.FAILED,
            NodeState.STALE,
        ):
            return f"{word} · {format_duration(self.duration_ms)}"
        return word

    @property
    def tooltip(self) -> str:
        """The text shown when hovering the node."""
        return f"{self.caption}: {self.detail}" if self.detail else self.caption


@dataclass(frozen=True)
class DagSpec:
    """The shape of a DAG: steps in run order and dependency edges (upstream, downstream);
    ``groups`` pairs steps with the group the user gave them (``@flow.step(group=...)``);
    ``gates`` names the steps that are human gates (drawn in a shape of their own)."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    groups: tuple[tuple[str, str], ...] = ()
    gates: tuple[str, ...] = ()

    @classmethod
    def from_graph(cls, graph: FlowGraph) -> DagSpec:
        """The shape of a validated flow graph."""
        order = {n: i for i, n in enumerate(graph.order)}
        edges = sorted(graph.dag.edges, key=lambda e: (order[e[1]], order[e[0]]))
        gates = tuple(n for n in graph.order if getattr(graph.steps[n].options, "gate", False))
        return cls(tuple(graph.order), tuple((a, b) for a, b in edges), given_groups(graph), gates)

    @classmethod
    def from_record(cls, record: FlowRecord, steps: Iterable[str] | None = None) -> DagSpec:
        """The shape of a stored flow definition (restricted to ``steps`` when given)."""
        keep = set(steps) if steps is not None else {s.name for s in record.steps}
        nodes = tuple(s.name for s in record.steps if s.name in keep)
        edges = tuple(
            (dep, s.name)
            for s in record.steps
            if s.name in keep
            for dep in s.dependencies
            if dep in keep
        )
        gates = tuple(s.name for s in record.steps if s.name in keep and s.options.get("gate"))
        return cls(nodes, edges, gates=gates)


def given_groups(graph: FlowGraph) -> tuple[tuple[str, str], ...]:
    """(step, group) for each step of ``graph`` defined with ``group=``."""
    pairs = []
    for name in graph.order:
        group = getattr(graph.steps[name].options, "group", None)
        if group:
            pairs.append((name, group))
    return tuple(pairs)


def format_duration(ms: float) -> str:
    """A short, readable duration: ``850 µs``, ``12 ms``, ``3.4 s``, ``2 min 5 s``."""
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def took_ms(run: RunRecord) -> float | None:
    """How long a finished run took, wall time: from its creation (planning and cache
    look-ups included, all of a fully cached run's time) to its end; None until it ends."""
    if run.finished_at is None:
        return None
    began = min(t for t in (run.created_at, run.started_at) if t is not None)
    return max(0.0, (run.finished_at - began).total_seconds() * 1000)


def latest_rows(rows: Iterable[StepExecution]) -> dict[str, StepExecution]:
    """Each step's row changed last (its current attempt)."""
    latest: dict[str, StepExecution] = {}
    for row in rows:
        seen = latest.get(row.step)
        if seen is None or row.seq >= seen.seq:
            latest[row.step] = row
    return latest


def info_of(row: StepExecution) -> NodeInfo:
    """How one execution row is shown."""
    state = _FROM_STATUS[row.status]
    if row.status is StepStatus.SCHEDULED:
        return NodeInfo(state, label="waiting")
    if row.status is StepStatus.RUNNING or row.status is StepStatus.QUEUED:
        # (Queued: handed to the executor, waiting for a free worker.)
        word = row.status.value
        label = f"{word} (attempt {row.attempt})" if row.attempt > 1 else ""
        started = row.started_at if row.status is StepStatus.RUNNING else None
        return NodeInfo(state, label=label, started_at=started)
    if row.status is StepStatus.CACHED:
        source = f"output reused from run {row.source_run_id}" if row.source_run_id else ""
        return NodeInfo(state, detail=source)
    error = (row.error or "").strip().splitlines()
    return NodeInfo(state, row.duration_ms, detail=error[0] if error else "")


def infos_from_rows(rows: Iterable[StepExecution]) -> dict[str, NodeInfo]:
    """Every step that has a row, with how it is shown (steps absent: never run)."""
    return {step: info_of(row) for step, row in latest_rows(rows).items()}


#: How a step a live run has not reached yet is shown.
WAITING = NodeInfo(NodeState.NEVER_RUN, label="waiting")


def with_waiting(
    infos: Mapping[str, NodeInfo], nodes: Iterable[str], live: bool
) -> dict[str, NodeInfo]:
    """``infos`` with every step of ``nodes`` that has no row shown as ``waiting`` when
    the run is ``live`` (not at rest): it has not started them *yet*; never run otherwise."""
    out = dict(infos)
    if live:
        for node in nodes:
            out.setdefault(node, WAITING)
    return out


def running_ms(info: NodeInfo, now: dt.datetime | None = None) -> float | None:
    """How long a running step has been running, in ms (None if it is not running)."""
    if info.state is not NodeState.RUNNING or info.started_at is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (now - info.started_at).total_seconds() * 1000)


def mark_stale(infos: Mapping[str, NodeInfo], stale: Mapping[str, str]) -> dict[str, NodeInfo]:
    """Show the steps in ``stale`` (step -> why) as stale, keeping their durations."""
    out = dict(infos)
    for step, why in stale.items():
        before = out.get(step, NodeInfo())
        if before.state in (NodeState.COMPLETED, NodeState.CACHED):
            out[step] = NodeInfo(NodeState.STALE, before.duration_ms, detail=why)
    return out


def stale_steps(flow: Flow, run: Run | None) -> dict[str, str]:
    """Steps whose output no longer matches the flow's code or parameters (step -> why).

    Uses ``flow.status(run)`` where the flow has it; an empty mapping otherwise.
    """
    status = getattr(flow, "status", None)
    if status is None or run is None:
        return {}
    try:
        frame = status(run)
    except Exception:  # a display must not fail because staleness cannot be worked out
        return {}
    if frame is None or "state" not in frame:
        return {}
    whys = frame["why"] if "why" in frame else [""] * len(frame)
    return {
        str(step): str(why or "")
        for step, state, why in zip(frame["step"], frame["state"], whys, strict=False)
        if state == "stale"
    }


def run_spec(run: Run, flow: Flow | None = None) -> DagSpec:
    """The shape of ``run``'s DAG, from the stored flow definition it ran with."""
    record = run.record
    stored = run.store.get_flow(record.flow, record.flow_fingerprint)
    if stored is not None:
        spec = DagSpec.from_record(stored, record.steps or None)
        if flow is not None:  # groups are display only, so they live in the session's flow
            given = dict(given_groups(flow.graph()))
            spec = DagSpec(
                spec.nodes,
                spec.edges,
                tuple((n, given[n]) for n in spec.nodes if n in given),
                spec.gates,
            )
        return spec
    if flow is not None:  # defined in this session but not recorded (should not happen)
        return DagSpec.from_graph(flow.graph())
    return DagSpec(tuple(record.steps), ())


def with_gates(infos: Mapping[str, NodeInfo], events: Iterable[Event]) -> dict[str, NodeInfo]:
    """``infos`` with each gate the ``events`` opened marked open, approved or rejected
    (and the decider in its caption)."""
    from nbflow.store.gate_states import gate_states

    out = dict(infos)
    for name, gate in gate_states(events).items():
        before = out.get(name) or NodeInfo()
        if gate.status == "open":
            label, detail = "needs approval", "waiting for a person to approve or reject it"
        else:
            label = f"{gate.status} · {gate.decided_by}" if gate.decided_by else gate.status
            label = label if len(label) <= 18 else label[:17] + "…"
            said = f": {gate.comment}" if gate.comment else ""
            detail = f"{gate.status} by {gate.decided_by or 'unknown'}{said}"
        out[name] = replace(before, gate=gate.status, label=label, detail=detail)
    return out


def summarize(infos: Mapping[str, NodeInfo], nodes: Iterable[str]) -> dict[str, Any]:
    """Counts of steps by state over ``nodes`` (for progress lines and tests)."""
    counts: dict[str, int] = {}
    for node in nodes:
        state = infos.get(node, NodeInfo()).state.value
        counts[state] = counts.get(state, 0) + 1
    return counts
