"""``run.fork(...)``: a new run that takes over part of its parent by reference.

The engine plans the fork (:func:`nbflow.engine.fork.plan_fork`: what it reuses and what
it executes, and which steps outside the fork point it recomputes because the fork
changes their parameters or code); this records it, with its first event, and executes
it unless ``run=False``. :func:`preview_fork` gives the same plan without forking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbflow.api.hooks import hook_listener
from nbflow.api.launch import run_handle
from nbflow.api.run import Run
from nbflow.engine.choice import make_executor
from nbflow.engine.fork import (
    ForkPlan,
    check_fork_point,
    fork_event,
    inherit_distrust,
    plan_fork,
)
from nbflow.engine.launch import (
    RunOptions,
    new_run,
    plan_steps,
    resolve_params,
    shutdown_on_error,
)
from nbflow.errors import RunError

if TYPE_CHECKING:
    from nbflow.api.protocols import FlowDefinition, RunsFlow
    from nbflow.engine.plans import StepPlan
    from nbflow.graph.dag import FlowGraph


def fork_run(
    flow: RunsFlow,
    parent: Run,
    *,
    from_step: str | None,
    at_version: int | None,
    run: bool,
    cache: bool,
    params: Mapping[str, Any],
    options: RunOptions,
) -> Run:
    """Create a fork of ``parent`` (and execute it unless ``run=False``)."""
    record = parent.record
    store = parent.store
    graph, values, plans, plan = _plan(flow, parent, from_step, at_version, cache, params)
    # The executor is made before the fork is recorded: a bad one records nothing.
    executor = make_executor(options.executor, options.max_workers) if run else None
    with shutdown_on_error(executor):
        created = new_run(
            flow.name,
            store,
            graph,
            plans,
            values,
            write=False,
            parent_run_id=parent.id,
            fork_from_step=from_step,
            fork_from_version=plan.version,
            thread_id=record.thread_id or parent.id,
            tenant=record.tenant,  # (a store opened for a tenant stamps its own)
        )
        handle = Run(store, created.run_id, flow)
        inherit_distrust(store, parent.id, handle.id)
        store.create_run(created)
        forked = [fork_event(plan, parent.id, from_step, values)]
        hook_listener(handle.event_callbacks)(store.append(handle.id, 0, forked), forked)
        if executor is None:
            return handle
        state = store.load_state(handle.id)
    return run_handle(
        handle,
        graph,
        plans,
        options=options,
        force=plan.force,
        state=state,
        reused=plan.reused,
        executor=executor,
    )


@dataclass(frozen=True)
class ForkPreview:
    """What a fork would do, told before it is made (:func:`preview_fork`)."""

    reused: tuple[str, ...]  # the steps it takes over from its parent, by reference
    executes: tuple[str, ...]  # the steps it runs, in order
    # step -> why it runs although the fork point alone would have reused it (its
    # parameters or code changed, or it reads such a step)
    recomputed: Mapping[str, str]

    def describe(self) -> list[str]:
        """The preview as sentences, the recomputed steps one per line with why."""
        lines = [f"reuses {', '.join(self.reused)}" if self.reused else "reuses nothing"]
        point = [s for s in self.executes if s not in self.recomputed]
        if point:
            lines.append(f"runs {', '.join(point)}")
        lines += [f"also recomputes {step}: {why}" for step, why in self.recomputed.items()]
        return lines


def preview_fork(
    flow: FlowDefinition,
    parent: Run,
    *,
    from_step: str | None = None,
    at_version: int | None = None,
    params: Mapping[str, Any] | None = None,
) -> ForkPreview:
    """What ``parent.fork(from_step=..., at_version=..., **params)`` would reuse, run and
    recompute (the steps outside the fork point that changed parameters or code make it
    recompute, and why), without forking. Refuses what the fork would refuse, with the
    same errors."""
    plan = _plan(flow, parent, from_step, at_version, False, params or {})[3]
    return ForkPreview(
        tuple(plan.reused),
        tuple(plan.executes),
        {step: why.describe() for step, why in plan.recomputed.items()},
    )


def _plan(
    flow: FlowDefinition,
    parent: Run,
    from_step: str | None,
    at_version: int | None,
    cache: bool,
    params: Mapping[str, Any],
) -> tuple[FlowGraph, dict[str, Any], dict[str, StepPlan], ForkPlan]:
    """The fork's graph, parameter values, step plans and fork plan."""
    record = parent.record
    check_fork_point(record, from_step, at_version)
    missing = [s for s in record.steps if s not in flow.steps]
    if missing:
        raise RunError(
            f"cannot fork run {parent.id}: the flow no longer defines step(s) {missing}."
        )
    graph = flow.graph(record.steps)
    if from_step is not None and from_step not in graph.steps:
        from nbflow.errors import UnknownStepError

        raise UnknownStepError(from_step, graph.steps, where=f"run {parent.id}")
    known = {p: v for p, v in record.params.items() if p in graph.params}
    values = resolve_params(graph, {**known, **params}, flow.graph().params)
    plans = plan_steps(graph, values)
    plan = plan_fork(
        parent.store,
        record,
        graph,
        from_step=from_step,
        at_version=at_version,
        cache=cache,
        plans=plans,
    )
    return graph, values, plans, plan
