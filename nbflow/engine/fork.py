"""Forks: a new run that takes over part of a parent run by reference.

``run.fork(from_step=...)`` reuses every step that is neither ``from_step`` nor
downstream of it; ``run.fork(at_version=v)`` reuses what was completed at version ``v``.
Reused outputs are recorded as references (``step_cached`` events naming their source),
so forking writes no value bytes and costs the same whatever the outputs weigh. The rest
executes with the flow's current definitions and the fork's parameters.

A fork never takes over a step that its parameters or code change: a step it could reuse
whose parameters differ from those the parent's execution read, or whose code
fingerprint differs from that execution's, is recomputed too, with what depends on it;
the plan says which and why (:class:`Recompute`), and so does the fork's first event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    from nbflow.engine.plans import StepPlan
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store


@dataclass(frozen=True)
class Recompute:
    """Why a fork recomputes a step whose output its parent has (outside the fork point).

    Each field is one reason; any number of them may hold.
    """

    step: str
    # parameter -> (the value the parent's execution read, the fork's value)
    params: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    code: bool = False  # its code fingerprint differs from the parent's execution's
    upstream: str | None = None  # a step it reads that the fork recomputes

    def describe(self) -> str:
        """The reasons, as a sentence fragment: ``parameter min_amount: 40.0 -> 60.0``."""
        parts = [f"parameter {n}: {a!r} -> {b!r}" for n, (a, b) in self.params.items()]
        if self.code:
            parts.append("its code changed")
        if self.upstream is not None:
            parts.append(f"it reads {self.upstream!r}, which is recomputed")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """How the ``run_forked`` event records it."""
        return {
            "reason": self.describe(),
            "params": {n: [a, b] for n, (a, b) in self.params.items()},
            "code": self.code,
            "upstream": self.upstream,
        }


@dataclass(frozen=True)
class ForkPlan:
    """What a fork of a run takes over and what it executes."""

    reused: dict[str, StepExecution]  # step -> the parent's execution, by reference
    executes: list[str]  # the steps it runs, in order
    force: list[str]  # the steps it runs even if a cached result exists
    version: int  # the parent's version it forks at
    state: RunState  # the parent's state at that version
    # The steps it recomputes although the fork point alone would have reused them.
    recomputed: dict[str, Recompute] = field(default_factory=dict)


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
    plans: Mapping[str, StepPlan] | None = None,
) -> ForkPlan:
    """What a fork of ``parent`` (whose steps ``graph`` defines) reuses and executes:
    everything but ``from_step`` and its descendants, or what was completed at
    ``at_version`` (:func:`check_fork_point` first).

    With ``plans`` (the fork's steps as it would run them: code fingerprints and
    parameter values), a step it would reuse is recomputed instead when the parameters
    it reads or its code differ from its execution in the parent, and so is every step
    that reads one it recomputes (:attr:`ForkPlan.recomputed` says which and why).
    """
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
    recomputed: dict[str, Recompute] = {}
    for name in graph.order:
        row = state.latest(name)
        if name in recompute or row is None or not row.status.has_output or not row.output:
            continue
        if row.params is None:  # a record from before executions kept their parameters
            row = dataclasses.replace(row, params=_claimed_params(parent, graph, name))
        why = None if plans is None else _why_recompute(graph, name, row, plans[name], recomputed)
        if why is not None:
            recomputed[name] = why
        else:
            reused[name] = row
    executes = [n for n in graph.order if n not in reused]
    return ForkPlan(reused, executes, [] if cache else executes, version, state, recomputed)


def _claimed_params(parent: RunRecord, graph: FlowGraph, name: str) -> dict[str, Any]:
    """The parameters of ``name`` as ``parent``'s record states them (all an older
    record tells of what the step read)."""
    return {p: parent.params[p] for p in graph.steps[name].params if p in parent.params}


def _why_recompute(
    graph: FlowGraph,
    name: str,
    row: StepExecution,
    plan: StepPlan,
    recomputed: Mapping[str, Recompute],
) -> Recompute | None:
    """Why the fork cannot take ``row`` over for step ``name``, or None if it can."""
    used = dict(row.params or {})
    params = {
        p: (used.get(p), value)
        for p, value in plan.params.items()
        if p not in used or used[p] != value or type(used[p]) is not type(value)
    }
    code = row.fingerprint is not None and row.fingerprint != plan.fingerprint
    upstream = next((u for u in graph.steps[name].upstream if u in recomputed), None)
    if not params and not code and upstream is None:
        return None
    return Recompute(name, params, code, upstream)


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
            "recomputed": {n: r.to_json() for n, r in plan.recomputed.items()},
        },
    )


def reproduction_event(
    parent_id: str,
    version: int,
    reused: Mapping[str, StepExecution],
    executes: list[str],
    params: Mapping[str, Any],
) -> NewEvent:
    """The first event of a reproduction of run ``parent_id`` (``run.reproduce()``): a
    fork that executes ``executes`` again from the run's record, reuses the outputs of
    ``reused`` (the steps not asked for), and says it is a reproduction (``reproduces``)."""
    return NewEvent(
        EventType.RUN_FORKED,
        payload={
            "parent_run_id": parent_id,
            "reproduces": parent_id,
            "from_step": None,
            "at_version": version,
            "reused": {n: _row_json(r) for n, r in reused.items()},
            "executes": executes,
            "force": executes,
            "params": dict(params),
            "recomputed": {},
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
        "params": None if row.params is None else dict(row.params),
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
        params=data.get("params"),
    )
