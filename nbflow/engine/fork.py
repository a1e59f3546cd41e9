"""Forks: a new run that takes over part of a parent run by reference.

``run.fork(from_step=...)`` reuses every step that is neither ``from_step`` nor
downstream of it; ``run.fork(at_version=v)`` reuses what was completed at version ``v``.
Reused outputs are recorded as references (``step_cached`` events naming their source),
so forking writes no value bytes and costs the same whatever the outputs weigh. The rest
executes with the flow's current definitions and the fork's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nbflow.engine.executors import make_executor
from nbflow.engine.launch import (
    RunOptions,
    execute,
    new_run,
    plan_steps,
    resolve_params,
    shutdown_on_error,
)
from nbflow.errors import RunError, UnknownStepError
from nbflow.hooks import hook_listener
from nbflow.store.records import (
    EventType,
    NewEvent,
    RunStatus,
    StepExecution,
    StepStatus,
    ValueRef,
    utcnow,
)
from nbflow.store.untrusted import UntrustedRun

if TYPE_CHECKING:
    from nbflow.definition.flow import Flow
    from nbflow.run import Run
    from nbflow.store.base import Store


def fork_run(
    flow: Flow,
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
    if record.status in (RunStatus.PENDING, RunStatus.RUNNING):
        raise RunError(
            f"run {parent.id} is still {record.status.value}: fork it once it has finished "
            "(run.wait()), or cancel it first."
        )
    if (from_step is None) == (at_version is None):
        raise RunError(
            "say where to fork: give from_step='step' (recompute it and what depends on it) "
            "or at_version=v (reuse what was completed at version v), not both."
        )
    missing = [s for s in record.steps if s not in flow.steps]
    if missing:
        raise RunError(
            f"cannot fork run {parent.id}: the flow no longer defines step(s) {missing}."
        )
    graph = flow.graph(record.steps)
    store = parent.store

    if from_step is not None:
        if from_step not in graph.steps:
            raise UnknownStepError(from_step, graph.steps, where=f"run {parent.id}")
        state = store.load_state(parent.id)
        recompute = {from_step} | graph.descendants([from_step])
        fork_version = record.version
    else:
        assert at_version is not None
        if not isinstance(at_version, int) or not 0 <= at_version <= record.version:
            raise RunError(
                f"run {parent.id} has versions 0 to {record.version}; cannot fork at "
                f"{at_version!r}. `run.versions` lists them."
            )
        state = store.state_at(parent.id, at_version)
        recompute = set()
        fork_version = at_version

    reused: dict[str, StepExecution] = {}
    for name in graph.order:
        row = state.latest(name)
        if name not in recompute and row is not None and row.status.has_output and row.output:
            reused[name] = row
    executes = [n for n in graph.order if n not in reused]
    force: list[str] = [] if cache else executes

    full = flow.graph()
    known = {p: v for p, v in record.params.items() if p in graph.params}
    values = resolve_params(graph, {**known, **params}, full.params)
    plans = plan_steps(graph, values)
    # The executor is made before the fork is recorded: a bad one records nothing.
    executor = make_executor(options.executor, options.max_workers) if run else None
    with shutdown_on_error(executor):
        handle, created = new_run(
            flow,
            graph,
            plans,
            values,
            write=False,
            parent_run_id=parent.id,
            fork_from_step=from_step,
            fork_from_version=fork_version,
            thread_id=record.thread_id or parent.id,
        )
        _inherit_distrust(store, parent.id, handle.id)
        store.create_run(created)
        forked = [
            NewEvent(
                EventType.RUN_FORKED,
                payload={
                    "parent_run_id": parent.id,
                    "from_step": from_step,
                    "at_version": fork_version,
                    "reused": {n: _row_json(r) for n, r in reused.items()},
                    "executes": executes,
                    "force": force,
                    "params": values,
                },
            )
        ]
        hook_listener(handle)(store.append(handle.id, 0, forked), forked)
        if executor is None:
            return handle
        state = store.load_state(handle.id)
    return execute(
        handle,
        graph,
        plans,
        options=options,
        force=force,
        state=state,
        reused=reused,
        executor=executor,
    )


def _inherit_distrust(store: Store, parent_id: str, run_id: str) -> None:
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
