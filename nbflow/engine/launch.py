"""Planning a run (parameters, fingerprints, its definition) and executing it with a
Runner, in the foreground or in a background thread."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import xxhash

from nbflow.engine.cache import canonical_json
from nbflow.engine.choice import make_executor
from nbflow.engine.control import RunControl
from nbflow.engine.durability import resolve
from nbflow.engine.executors import Executor
from nbflow.engine.plans import Listener, StepPlan
from nbflow.engine.runner import Runner
from nbflow.errors import ParameterError, suggest
from nbflow.graph.dag import FlowGraph
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
    """Fingerprint every step of ``graph`` and bind its parameters.

    Data globals are hashed once each, however many steps read them (by identity: as
    they are now, for this run).
    """
    from nbflow.graph.data import DataHashes
    from nbflow.graph.fingerprint import step_fingerprint

    exclude = set(graph.steps) | set(graph.params)
    data = DataHashes()
    plans = {}
    for name in graph.order:
        step = graph.steps[name]
        fingerprint, reads = step_fingerprint(
            step.func,
            options=step.options.to_json(),
            version=step.options.version,
            exclude=exclude,
            source=step.source,
            data=data,
        )
        plans[name] = StepPlan(step, fingerprint, {p: params[p] for p in step.params}, reads)
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
                code_fingerprint=plans[n].reads.code or None,
                globals=dict(plans[n].reads.globals),
                packages=dict(plans[n].reads.packages),
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
    durability: str | None = None  # None: the flow's, else $NBFLOW_DURABILITY, else async

    def __post_init__(self) -> None:
        from nbflow import arguments
        from nbflow.engine.durability import durability

        arguments.optional_count(self.max_workers, "max_workers", minimum=1)
        for name in ("background", "raise_on_error", "progress"):
            arguments.flag(getattr(self, name), name)
        durability(self.durability)  # (checked before anything is recorded)


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


def new_run(
    name: str,
    store: Store,
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    params: Mapping[str, Any],
    *,
    write: bool = True,
    **lineage: Any,
) -> RunRecord:
    """A new pending run of flow ``name`` as it is defined now: its definition recorded,
    the run added to ``store`` unless ``write=False`` (its runner will add it).

    ``lineage`` sets parent_run_id, fork_from_step, fork_from_version and thread_id.
    """
    definition = flow_record(name, graph, plans)
    store.ensure_flow(definition)
    now = utcnow()
    run_id = new_run_id(now)
    record = RunRecord(
        run_id=run_id,
        flow=name,
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
    return record


def execute(
    control: RunControl,
    store: Store,
    run_id: str,
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    *,
    options: RunOptions,
    listeners: Sequence[Listener] = (),
    readers: Callable[[int], list[Listener]] = lambda done: [],
    force: bool | Collection[str] = False,
    state: RunState | None = None,
    reused: Mapping[str, StepExecution] | None = None,
    resume: bool = False,
    executor: Executor | None = None,
    record: RunRecord | None = None,
    new: bool = False,
    approved: Collection[str] = (),
) -> None:
    """Execute run ``run_id`` of ``store``, in the foreground or in a background thread
    that ``control`` tracks.

    ``listeners`` are called after each commit (event hooks); ``readers(done)`` makes the
    progress listeners when the run starts, ``done`` being the steps already done.
    ``executor``: one already made from ``options`` (so that a bad executor, e.g. an
    unreachable Dask scheduler, fails before a run is recorded); else it is made here.
    ``record``: the run's record as just written (saves reading it back), or, with
    ``new``, as the runner will write it (in the foreground only). ``approved``: the
    gates approved in this run (a resumed run passes them on).
    """
    done = 0
    if state is not None:
        done = sum(
            1 for s in graph.order if (x := state.latest(s)) is not None and x.status.has_output
        )
    if executor is None:
        executor = make_executor(options.executor, options.max_workers)
    with shutdown_on_error(executor):
        mode = resolve(options.durability)
        runner = Runner(
            store=store,
            run=state.run if state is not None else record or store.get_run(run_id),
            graph=graph,
            plans=plans,
            executor=executor,
            force=force,
            state=state,
            reused=reused,
            cancel_requested=control.cancel.is_set,
            listeners=list(listeners),
            readers=lambda: readers(done),
            new=new,
            durability=mode,
            approved=approved,
        )
    if not options.background:
        runner.execute(resume=resume)
        if options.raise_on_error:
            runner.raise_for_failure()
        return

    def work() -> None:
        try:
            runner.execute(resume=resume)
            if options.raise_on_error:
                runner.raise_for_failure()
        except BaseException as exc:
            control.error = exc
        finally:
            control.done.set()

    control.start(work, name=f"nbflow-run-{run_id}")
