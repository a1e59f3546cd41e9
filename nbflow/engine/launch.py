"""Turning ``flow.run(...)`` and ``run.resume()`` into a Runner, in the foreground or not."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import xxhash

from nbflow.engine.cache import canonical_json
from nbflow.engine.executors import Executor, make_executor
from nbflow.engine.progress import make_listeners
from nbflow.engine.runner import Runner, StepPlan
from nbflow.errors import ParameterError, RunError, suggest
from nbflow.graph.dag import FlowGraph
from nbflow.run import Run
from nbflow.store.records import FlowRecord, RunRecord, RunStatus, StepDefinition, utcnow

if TYPE_CHECKING:
    from nbflow.definition.flow import Flow
    from nbflow.store.base import Store


def new_run_id(now: dt.datetime | None = None) -> str:
    """A readable, time-sortable run id, e.g. ``20261123-101502-9f3ac1d2``."""
    now = now or utcnow()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def resolve_params(
    graph: FlowGraph, given: Mapping[str, Any], known: Collection[str]
) -> dict[str, Any]:
    """The run's parameter values: defaults overridden by ``given``; unknown names refused."""
    for name in given:
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ParameterError(
                f"{name!r} is not a run parameter of this flow (its parameters: {listed})."
                + suggest(name, known)
            )
    values = {p: given.get(p, default) for p, default in graph.params.items()}
    for name, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f"run parameter {name!r} = {value!r} cannot be recorded: run parameters must be "
                "JSON values (numbers, strings, booleans, None, lists, dicts)."
            ) from None
    return values


def plan_steps(graph: FlowGraph, params: Mapping[str, Any]) -> dict[str, StepPlan]:
    """Fingerprint every step of ``graph`` and bind its parameters."""
    from nbflow.graph.fingerprint import code_fingerprint

    exclude = set(graph.steps) | set(graph.params)
    plans = {}
    for name in graph.order:
        step = graph.steps[name]
        fingerprint = code_fingerprint(
            step.func,
            options=step.options.to_json(),
            version=step.options.version,
            exclude=exclude,
            source=step.source,
        )
        plans[name] = StepPlan(step, fingerprint, {p: params[p] for p in step.params})
    return plans


def flow_record(name: str, graph: FlowGraph, plans: Mapping[str, StepPlan]) -> FlowRecord:
    """The immutable, code-free definition of the flow as it runs now."""
    from nbflow.graph.fingerprint import normalized_source

    steps = []
    for n in graph.order:
        step = plans[n].step
        try:
            source = normalized_source(step.func, step.source)
        except Exception:  # the fingerprint already fell back to bytecode
            source = ""
        steps.append(
            StepDefinition(
                name=n,
                fingerprint=plans[n].fingerprint,
                dependencies=step.upstream,
                params={p: _jsonable(v) for p, v in step.params.items()},
                param_types=dict(step.param_types),
                source=source,
                options=step.options.to_json(),
            )
        )
    shape = [(s.name, s.fingerprint, list(s.dependencies)) for s in steps]
    fingerprint = xxhash.xxh3_128_hexdigest(canonical_json(shape).encode())
    return FlowRecord(name=name, fingerprint=fingerprint, steps=tuple(steps))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _record_flow(store: Store, record: FlowRecord) -> None:
    known: set[tuple[str, str]] = store.__dict__.setdefault("_known_flows", set())
    key = (record.name, record.fingerprint)
    if key not in known:
        store.put_flow(record)
        known.add(key)


def start_run(
    flow: Flow,
    *,
    params: Mapping[str, Any],
    executor: str | Executor,
    max_workers: int | None,
    targets: Collection[str] | None,
    force: bool | Collection[str],
    background: bool,
    raise_on_error: bool,
    progress: bool,
) -> Run:
    """Plan, record and execute a new run of ``flow``."""
    full = flow.graph()
    graph = flow.graph(targets) if targets is not None else full
    if not isinstance(force, bool):
        for name in force:
            if name not in full.steps:
                from nbflow.errors import UnknownStepError

                raise UnknownStepError(name, full.steps)
    values = resolve_params(graph, params, full.params)
    plans = plan_steps(graph, values)
    record = flow_record(flow.name, graph, plans)
    store = flow.store
    _record_flow(store, record)
    now = utcnow()
    run_id = new_run_id(now)
    store.create_run(
        RunRecord(
            run_id=run_id,
            flow=flow.name,
            flow_fingerprint=record.fingerprint,
            status=RunStatus.PENDING,
            version=0,
            params=values,
            created_at=now,
            thread_id=run_id,
            steps=graph.order,
        )
    )
    handle = Run(store, run_id, flow)
    runner_executor = make_executor(executor, max_workers)
    listeners = make_listeners(handle, graph, progress)
    return _execute(
        handle,
        lambda cancel: Runner(
            store=store,
            run=store.get_run(run_id),
            graph=graph,
            plans=plans,
            executor=runner_executor,
            force=force,
            cancel_requested=cancel,
            listeners=listeners,
        ),
        resume=False,
        background=background,
        raise_on_error=raise_on_error,
    )


def resume_run(
    flow: Flow,
    run: Run,
    *,
    executor: str | Executor = "inline",
    max_workers: int | None = None,
    force: bool | Collection[str] = False,
    background: bool = False,
    raise_on_error: bool = True,
    progress: bool = True,
) -> Run:
    """Continue a failed or interrupted run with the flow's current definitions."""
    record = run.record
    if record.status not in (RunStatus.FAILED, RunStatus.INTERRUPTED):
        raise RunError(
            f"run {run.id} is {record.status.value}: only failed or interrupted runs can be "
            "resumed. Start a new run with flow.run() instead."
        )
    missing = [s for s in record.steps if s not in flow.steps]
    if missing:
        raise RunError(f"cannot resume run {run.id}: the flow no longer defines step(s) {missing}.")
    graph = flow.graph(record.steps)
    plans = plan_steps(graph, {**graph.params, **record.params})
    store = run.store
    _record_flow(store, flow_record(flow.name, graph, plans))
    state = store.load_state(run.id)
    handle = Run(store, run.id, flow)
    runner_executor = make_executor(executor, max_workers)
    done = sum(1 for s in graph.order if (x := state.latest(s)) is not None and x.status.has_output)
    listeners = make_listeners(handle, graph, progress, done)
    return _execute(
        handle,
        lambda cancel: Runner(
            store=store,
            run=state.run,
            graph=graph,
            plans=plans,
            executor=runner_executor,
            force=force,
            state=state,
            cancel_requested=cancel,
            listeners=listeners,
        ),
        resume=True,
        background=background,
        raise_on_error=raise_on_error,
    )


def _execute(
    handle: Run,
    make_runner: Any,
    *,
    resume: bool,
    background: bool,
    raise_on_error: bool,
) -> Run:
    runner: Runner = make_runner(handle._cancel.is_set)
    if not background:
        runner.execute(resume=resume)
        if raise_on_error:
            runner.raise_for_failure()
        return handle

    def work() -> None:
        try:
            runner.execute(resume=resume)
            if raise_on_error:
                runner.raise_for_failure()
        except BaseException as exc:
            handle._background_error = exc
        finally:
            handle._done.set()

    handle._done.clear()
    thread = threading.Thread(target=work, name=f"nbflow-run-{handle.id}", daemon=True)
    handle._thread = thread
    thread.start()
    return handle
