"""Turning ``flow.run(...)`` and ``run.resume()`` into a Runner, in the foreground or not."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import threading
import weakref
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import xxhash

from nbflow.engine.cache import canonical_json
from nbflow.engine.executors import Executor, make_executor
from nbflow.engine.progress import make_listeners
from nbflow.engine.runner import Runner, StepPlan
from nbflow.errors import ParameterError, RunError, suggest
from nbflow.graph.dag import FlowGraph
from nbflow.hooks import hook_listener
from nbflow.run import Run
from nbflow.store.fold import RunState
from nbflow.store.records import (
    FlowRecord,
    RunRecord,
    RunStatus,
    StepDefinition,
    StepExecution,
    utcnow,
)

if TYPE_CHECKING:
    from distributed import Client

    from nbflow.definition.flow import Flow


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
            # (As UTF-8 text: a lone surrogate, which no store can hold, fails here.)
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ParameterError(
                f"run parameter {name!r} = {value!r} cannot be recorded: it holds text that "
                "is not valid Unicode (a lone surrogate, such as text decoded with "
                "errors='surrogateescape'). Pass the text decoded properly, or as bytes' hex."
            ) from None
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


#: The definition last built from each graph (graphs are shared per definition, see
#: ``Flow.graph``): with the same fingerprints, it is the same definition.
_DEFINITIONS: weakref.WeakKeyDictionary[FlowGraph, tuple[Any, FlowRecord]] = (
    weakref.WeakKeyDictionary()
)
_DEFINITIONS_LOCK = threading.Lock()


def flow_record(name: str, graph: FlowGraph, plans: Mapping[str, StepPlan]) -> FlowRecord:
    """The immutable, code-free definition of the flow as it runs now."""
    key = (name, tuple(plans[n].fingerprint for n in graph.order))
    with _DEFINITIONS_LOCK:
        known = _DEFINITIONS.get(graph)
    if known is not None and known[0] == key:
        return known[1]
    record = _build_definition(name, graph, plans)
    with _DEFINITIONS_LOCK:
        _DEFINITIONS[graph] = (key, record)
    return record


def _build_definition(name: str, graph: FlowGraph, plans: Mapping[str, StepPlan]) -> FlowRecord:
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


@dataclass(frozen=True)
class RunOptions:
    """How to execute a run (the options of ``flow.run`` that are not parameters)."""

    executor: str | Executor | Client = "inline"  # or a Dask scheduler address
    max_workers: int | None = None
    background: bool = False
    raise_on_error: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        from nbflow import arguments

        arguments.optional_count(self.max_workers, "max_workers", minimum=1)
        for name in ("background", "raise_on_error", "progress"):
            arguments.flag(getattr(self, name), name)


def start_run(
    flow: Flow,
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
        handle, record = new_run(flow, graph, plans, values, write=not new)
    return execute(
        handle,
        graph,
        plans,
        options=options,
        force=force,
        executor=executor,
        record=record,
        new=new,
    )


@contextlib.contextmanager
def shutdown_on_error(executor: Executor | None) -> Iterator[None]:
    """Shut ``executor`` down if the block raises (it will never run the steps)."""
    try:
        yield
    except BaseException:
        if executor is not None:
            executor.shutdown()
        raise


def check_steps(names: bool | Collection[str], graph: FlowGraph) -> None:
    """Refuse step names (e.g. in ``force=``) that the flow does not have."""
    if isinstance(names, bool):
        return
    from nbflow.errors import UnknownStepError

    for name in names:
        if name not in graph.steps:
            raise UnknownStepError(name, graph.steps)


def create_run(
    flow: Flow,
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    params: Mapping[str, Any],
    **lineage: Any,
) -> Run:
    """Record the flow's definition and a new pending run of it; return its handle.

    ``lineage`` sets parent_run_id, fork_from_step, fork_from_version and thread_id.
    """
    return new_run(flow, graph, plans, params, **lineage)[0]


def new_run(
    flow: Flow,
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    params: Mapping[str, Any],
    *,
    write: bool = True,
    **lineage: Any,
) -> tuple[Run, RunRecord]:
    """A new pending run of the flow as it is defined now, its handle and record; added
    to the store (:func:`create_run`) unless ``write=False`` (its runner will add it)."""
    definition = flow_record(flow.name, graph, plans)
    store = flow.store
    store.ensure_flow(definition)
    now = utcnow()
    run_id = new_run_id(now)
    record = RunRecord(
        run_id=run_id,
        flow=flow.name,
        flow_fingerprint=definition.fingerprint,
        status=RunStatus.PENDING,
        version=0,
        params=dict(params),
        created_at=now,
        thread_id=lineage.pop("thread_id", None) or run_id,
        steps=graph.order,
        **lineage,
    )
    if write:
        store.create_run(record)
    return Run(store, run_id, flow), record


def resume_run(
    flow: Flow,
    run: Run,
    *,
    force: bool | Collection[str] = False,
    **options: Any,
) -> Run:
    """Continue a failed or interrupted run (or start a fork made with ``run=False``)
    with the flow's current definitions."""
    record = run.record
    if record.status not in (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.PENDING):
        raise RunError(
            f"run {run.id} is {record.status.value}: only failed or interrupted runs (or forks "
            "not yet run) can be resumed. Start a new run with flow.run() instead."
        )
    missing = [s for s in record.steps if s not in flow.steps]
    if missing:
        raise RunError(f"cannot resume run {run.id}: the flow no longer defines step(s) {missing}.")
    graph = flow.graph(record.steps)
    plans = plan_steps(graph, {**graph.params, **record.params})
    run.store.ensure_flow(flow_record(flow.name, graph, plans))
    reused: dict[str, StepExecution] = {}
    if record.status is RunStatus.PENDING:
        from nbflow.engine.fork import pending_fork_plan

        reused, fork_force = pending_fork_plan(run.store, run.id)
        if force is False:
            force = fork_force
    handle = Run(run.store, run.id, flow)
    return execute(
        handle,
        graph,
        plans,
        options=RunOptions(**options),
        force=force,
        state=run.store.load_state(run.id),
        reused=reused,
        resume=record.status is not RunStatus.PENDING,
    )


def execute(
    handle: Run,
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    *,
    options: RunOptions,
    force: bool | Collection[str] = False,
    state: RunState | None = None,
    reused: Mapping[str, StepExecution] | None = None,
    resume: bool = False,
    executor: Executor | None = None,
    record: RunRecord | None = None,
    new: bool = False,
) -> Run:
    """Execute the run behind ``handle``, in the foreground or in a background thread.

    ``executor``: one already made from ``options`` (so that a bad executor, e.g. an
    unreachable Dask scheduler, fails before a run is recorded); else it is made here.
    ``record``: the run's record as just written (saves reading it back), or, with
    ``new``, as the runner will write it (in the foreground only).
    """
    store = handle.store
    done = 0
    if state is not None:
        done = sum(
            1 for s in graph.order if (x := state.latest(s)) is not None and x.status.has_output
        )
    if executor is None:
        executor = make_executor(options.executor, options.max_workers)
    with shutdown_on_error(executor):
        runner = Runner(
            store=store,
            run=state.run if state is not None else record or store.get_run(handle.id),
            graph=graph,
            plans=plans,
            executor=executor,
            force=force,
            state=state,
            reused=reused,
            cancel_requested=handle._cancel.is_set,
            listeners=[hook_listener(handle)],
            readers=lambda: make_listeners(handle, graph, options.progress, done),
            new=new,
        )
    if not options.background:
        runner.execute(resume=resume)
        if options.raise_on_error:
            runner.raise_for_failure()
        return handle

    def work() -> None:
        try:
            runner.execute(resume=resume)
            if options.raise_on_error:
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
