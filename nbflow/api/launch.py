"""Turning ``flow.run(...)`` and ``run.resume()`` into an execution by the engine.

The facade's half of launching: it makes the :class:`~nbflow.api.run.Run` handle and the
listeners that the engine calls (the event hooks and the progress display), then hands
the engine a graph, a store and those listeners (:func:`nbflow.engine.launch.execute`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from nbflow.api.failures import attach_run
from nbflow.api.hooks import hook_listener
from nbflow.api.progress import make_listeners
from nbflow.api.run import Run
from nbflow.engine.choice import make_executor
from nbflow.engine.fork import pending_fork_plan
from nbflow.engine.launch import (
    RunOptions,
    check_steps,
    execute,
    flow_record,
    new_run,
    plan_steps,
    resolve_params,
    shutdown_on_error,
)
from nbflow.errors import RunError, StepFailed
from nbflow.store.records import RunStatus, StepExecution

if TYPE_CHECKING:
    from nbflow.api.protocols import RunsFlow
    from nbflow.engine.plans import StepPlan
    from nbflow.graph.dag import FlowGraph


def start_run(
    flow: RunsFlow,
    *,
    params: Mapping[str, Any],
    targets: Collection[str] | None,
    force: bool | Collection[str],
    options: RunOptions,
) -> Run:
    """Plan, record and execute a new run of ``flow``."""
    full = flow.graph()
    graph = flow.graph(targets) if targets is not None else full
    check_steps(force, full)
    values = resolve_params(graph, params, full.params)
    plans = plan_steps(graph, values)
    executor = make_executor(options.executor, options.max_workers)  # before the run exists
    # A run in the foreground is written by its runner: one commit when fully cached.
    # One in the background must exist before its handle is returned.
    new = not options.background
    with shutdown_on_error(executor):
        record = new_run(flow.name, flow.store, graph, plans, values, write=not new)
    handle = Run(flow.store, record.run_id, flow)
    return run_handle(
        handle,
        graph,
        plans,
        options=options,
        force=force,
        executor=executor,
        record=record,
        new=new,
    )


def resume_run(
    flow: RunsFlow,
    run: Run,
    *,
    force: bool | Collection[str] = False,
    **options: Any,
) -> Run:
    """Continue a failed or interrupted run (or start a fork made with ``run=False``)
    with the flow's current definitions."""
    record = run.record
    resumable = (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.PENDING, RunStatus.WAITING)
    if record.status not in resumable:
        raise RunError(
            f"run {run.id} is {record.status.value}: only failed or interrupted runs (or forks "
            "not yet run, or runs waiting at a gate) can be resumed. Start a new run with "
            "flow.run() instead."
        )
    missing = [s for s in record.steps if s not in flow.steps]
    if missing:
        raise RunError(f"cannot resume run {run.id}: the flow no longer defines step(s) {missing}.")
    graph = flow.graph(record.steps)
    plans = plan_steps(graph, {**graph.params, **record.params})
    run.store.ensure_flow(flow_record(flow.name, graph, plans))
    reused: dict[str, StepExecution] = {}
    if record.status is RunStatus.PENDING:
        reused, fork_force = pending_fork_plan(run.store, run.id)
        if force is False:
            force = fork_force
    from nbflow.store.gates import approved_gates

    handle = Run(run.store, run.id, flow)
    return run_handle(
        handle,
        graph,
        plans,
        options=RunOptions(**options),
        force=force,
        state=run.store.load_state(run.id),
        reused=reused,
        resume=record.status is not RunStatus.PENDING,
        approved=approved_gates(run.store.read_events(run.id)),
    )


def run_handle(
    handle: Run,
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    *,
    options: RunOptions,
    **execution: Any,
) -> Run:
    """Execute the run behind ``handle`` (:func:`nbflow.engine.launch.execute` takes
    ``execution``), its event hooks and progress display listening; return ``handle``.
    Without a durability mode in ``options``, the run's flow's applies."""
    if options.durability is None and handle.flow_durability is not None:
        options = dataclasses.replace(options, durability=handle.flow_durability)
    try:
        execute(
            handle.control,
            handle.store,
            handle.id,
            graph,
            plans,
            options=options,
            listeners=[hook_listener(handle.event_callbacks)],
            readers=lambda done: make_listeners(handle, graph, options.progress, done),
            **execution,
        )
    except StepFailed as exc:
        raise attach_run(exc, handle) from exc.__cause__
    return handle
