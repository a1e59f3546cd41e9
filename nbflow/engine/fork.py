"""Forks: a new run that takes over part of a parent run by reference.

``run.fork(from_step=...)`` reuses every step that is neither ``from_step`` nor
downstream of it; ``run.fork(at_version=v)`` reuses what was completed at version ``v``.
Reused outputs are recorded as references (``step_cached`` events naming their source),
so forking writes no value bytes and costs the same whatever the outputs weigh. The rest
executes with the flow's current definitions and the fork's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbflow.errors import RunError, UnknownStepError
from nbflow.store.fold import RunState
from nbflow.store.records import (
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
    StepExecution,
    StepStatus,
    ValueRef,
    utcnow,
)
from nbflow.store.untrusted import UntrustedRun

if TYPE_CHECKING:
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store


@dataclass(frozen=True)
class ForkPlan:
    """What a fork of a run takes over and what it executes."""

    reused: dict[str, StepExecution]  # step -> the parent's execution, by reference
    executes: list[str]  # the steps it runs, in order
    force: list[str]  # the steps it runs even if a cached result exists
    version: int  # the parent's version it forks at
    state: RunState  # the parent's state at that version


def check_fork_point(parent: RunRecord, from_step: str | None, at_version: int | None) -> None:
    """RunError unless ``parent`` has finished and exactly one fork point is given."""
    if parent.status in (RunStatus.PENDING, RunStatus.RUNNING):
        raise RunError(
            f"run {parent.run_id} is still {parent.status.value}: fork it once it has finished "
            "(run.wait()), or cancel it first."
        )
    if (from_step is None) == (at_version is None):
        raise RunError(
            "say where to fork: give from_step='step' (recompute it and what depends on it) "
            "or at_version=v (reuse what was completed at version v), not both."
        )


def plan_fork(
    store: Store,
    parent: RunRecord,
    graph: FlowGraph,
    *,
    from_step: str | None,
    at_version: int | None,
    cache: bool,
) -> ForkPlan:
    """What a fork of ``parent`` (whose steps ``graph`` defines) reuses and executes:
    everything but ``from_step`` and its descendants, or what was completed at
    ``at_version`` (:func:`check_fork_point` first)."""
    if from_step is not None:
        if from_step not in graph.steps:
            raise UnknownStepError(from_step, graph.steps, where=f"run {parent.run_id}")
        state = store.load_state(parent.run_id)
        recompute = {from_step} | graph.descendants([from_step])
        version = parent.version
    else:
        assert at_version is not None
        if not isinstance(at_version, int) or not 0 <= at_version <= parent.version:
            raise RunError(
                f"run {parent.run_id} has versions 0 to {parent.version}; cannot fork at "
                f"{at_version!r}. `run.versions` lists them."
            )
        state = store.state_at(parent.run_id, at_version)
        recompute = set()
        version = at_version

    reused: dict[str, StepExecution] = {}
    for name in graph.order:
        row = state.latest(name)
        if name not in recompute and row is not None and row.status.has_output and row.output:
            reused[name] = row
    executes = [n for n in graph.order if n not in reused]
    return ForkPlan(reused, executes, [] if cache else executes, version, state)


def fork_event(
    plan: ForkPlan, parent_id: str, from_step: str | None, params: Mapping[str, Any]
) -> NewEvent:
    """The first event of a fork: where it forks from, what it reuses and executes."""
    return NewEvent(
        EventType.RUN_FORKED,
        payload={
            "parent_run_id": parent_id,
            "from_step": from_step,
            "at_version": plan.version,
            "reused": {n: _row_json(r) for n, r in plan.reused.items()},
            "executes": plan.executes,
            "force": plan.force,
            "params": dict(params),
        },
    )


def inherit_distrust(store: Store, parent_id: str, run_id: str) -> None:
    """A fork of a run marked untrusted reuses its outputs by reference (and names where
    they came from as that run says): mark it too, before it exists, so those outputs
    reach no other run's cache through it."""
    if store.untrusted_runs([parent_id]):
        mark = UntrustedRun(run_id, f"fork of run {parent_id}", utcnow(), derived_from=parent_id)
        store.mark_untrusted([mark])


def pending_fork_plan(store: Store, run_id: str) -> tuple[dict[str, StepExecution], list[str]]:
    """What a fork created with ``run=False`` reuses and forces, from its run_forked event."""
    events = store.read_events(run_id, upto=1)
    if not events or events[0].type is not EventType.RUN_FORKED:
        return {}, []
    payload = events[0].payload
    reused = {
        name: _row_from_json(payload["parent_run_id"], name, data)
        for name, data in payload.get("reused", {}).items()
    }
    return reused, list(payload.get("force", []))


def _row_json(row: StepExecution) -> dict[str, Any]:
    assert row.output is not None
    return {
        "output": row.output.to_json(),
        "cache_key": row.cache_key,
        "fingerprint": row.fingerprint,
        "inputs": dict(row.inputs),
        "source_run_id": row.source_run_id or row.run_id,
    }


def _row_from_json(parent_id: str, step: str, data: Mapping[str, Any]) -> StepExecution:
    return StepExecution(
        run_id=parent_id,
        step=step,
        attempt=0,
        status=StepStatus.CACHED,
        cache_key=data.get("cache_key"),
        fingerprint=data.get("fingerprint"),
        output=ValueRef.from_json(data["output"]),
        inputs=dict(data.get("inputs") or {}),
        source_run_id=data.get("source_run_id"),
    )
