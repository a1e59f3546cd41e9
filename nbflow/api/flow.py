"""Flows: named collections of steps, defined with ``@flow.step``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from nbflow import arguments
from nbflow.api import run as run_module
from nbflow.api.run import Run
from nbflow.definition.step import Step, StepOptions
from nbflow.engine.durability import durability as durability_mode
from nbflow.errors import DefinitionError, ParameterError, UnknownStepError
from nbflow.store.base import Store
from nbflow.store.open import StoreLike, check_store_like, open_store

if TYPE_CHECKING:
    import os

    import networkx as nx
    import pandas as pd
    from distributed import Client

    from nbflow.engine.executors import Executor
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.records import Event

F = Callable[..., Any]


def find_flow(name: str, store: Store | None = None) -> Flow | None:
    """The latest live Flow named ``name`` defined in this process (on ``store``, if given)."""
    flow = run_module.find_flow(name, store)
    return flow if isinstance(flow, Flow) else None


class Flow:
    """A named DAG of steps whose runs are checkpointed in a store.

    ``store`` may be a Store, a path or URI, or None for ``$NBFLOW_STORE`` /
    ``./nbflow.duckdb``; it is opened when first needed. ``tenant="team-a"`` (or
    ``$NBFLOW_TENANT``) opens it for that tenant: runs are stamped with it, and only its
    runs (and those without a tenant) are seen (``docs/tenants.md``).
    """

    def __init__(
        self,
        name: str,
        store: StoreLike = None,
        *,
        durability: str | None = None,
        tenant: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"a flow needs a non-empty name, not {name!r}")
        if not _valid_unicode(name):
            raise DefinitionError(
                f"a flow's name must be valid Unicode text, not {name!r} (it holds a lone "
                "surrogate, which no store can hold)."
            )
        check_store_like(store)
        from nbflow.store.tenants import optional_tenant

        self._tenant = optional_tenant(tenant)
        mode = durability_mode(durability)
        self._durability = None if mode is None else mode.value
        self._name = name
        self._store_arg = store
        self._store_obj: Store | None = None
        if isinstance(store, Store):
            self._store_obj = open_store(store, tenant=self._tenant)
        self._steps: dict[str, Step] = {}
        # Built graphs by (step objects, targets): a re-run of an unchanged flow needs no
        # new one. Kept graphs are frozen, since callers share them.
        self._graphs: dict[tuple[Any, ...], FlowGraph] = {}
        self._event_callbacks: list[Callable[[Event], None]] = []
        run_module.remember_flow(self)

    @property
    def name(self) -> str:
        """The flow's name (runs are grouped and cached by it)."""
        return self._name

    @property
    def durability(self) -> str | None:
        """The durability mode of this flow's runs, if set here (else ``flow.run``'s
        ``durability=``, ``$NBFLOW_DURABILITY``, or ``"async"``)."""
        return self._durability

    @property
    def store(self) -> Store:
        """The store this flow's runs are written to (opened on first use)."""
        if self._store_obj is None:
            self._store_obj = open_store(self._store_arg, tenant=self._tenant)
        return self._store_obj

    @property
    def tenant(self) -> str | None:
        """The tenant this flow's runs are stamped with (``tenant=``, else the store's,
        else ``$NBFLOW_TENANT``); None when the store is opened without one."""
        return self.store.tenant

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[Event], None]:
        """Call ``callback(event)`` for each committed event of this flow's runs.

        Callbacks run on nbflow's sink thread (see :mod:`nbflow.api.hooks`): a slow or failing
        one never blocks or fails a run. Returns ``callback`` (usable as a decorator).
        """
        if not callable(callback):
            raise ParameterError(
                f"flow.on_event takes a function of one event, not {type(callback).__name__}"
            )
        self._event_callbacks.append(callback)
        return callback

    @property
    def event_callbacks(self) -> tuple[Callable[[Event], None], ...]:
        """The callbacks registered with :meth:`on_event`."""
        return tuple(self._event_callbacks)

    # -- definition ---------------------------------------------------------------------

    @overload
    def step(self, func: F, /) -> F: ...

    @overload
    def step(
        self,
        /,
        *,
        name: str | None = None,
        depends_on: Sequence[str] | str = (),
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        cache: bool = True,
        version: str | None = None,
        inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (),
        track_reads: bool = True,
        copy_inputs: bool = False,
        group: str | None = None,
        reproduce_rtol: float | None = None,
        reproduce_atol: float | None = None,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        func: F | None = None,
        /,
        *,
        name: str | None = None,
        depends_on: Sequence[str] | str = (),
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        cache: bool = True,
        version: str | None = None,
        inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (),
        track_reads: bool = True,
        copy_inputs: bool = False,
        group: str | None = None,
        reproduce_rtol: float | None = None,
        reproduce_atol: float | None = None,
    ) -> F | Callable[[F], F]:
        """Register a function as a step (``@flow.step`` or ``@flow.step(...)``).

        Parameters named like other steps are its inputs; parameters with a default are
        run parameters. Defining a step with an existing name replaces it. The function
        is returned unchanged, so it can still be called directly.

        ``inputs``: files the step reads (paths, folders, globs such as
        ``"data/*.parquet"``), hashed by content into its cache key. Files it opens
        through Python while it runs are recorded without being declared (unless
        ``track_reads=False``); see docs/invalidation.md.

        An ``async def`` step
        is awaited; a generator function is refused. A step may not change its inputs in
        place (InputMutatedError); ``copy_inputs=True`` gives it deep copies of them.
        ``group``: a name under which the DAG widget folds steps into one node (display
        only, not part of the cache key); see docs/dag.md. ``reproduce_rtol`` /
        ``reproduce_atol``: how close a reproduction's float output must be to count as
        ``close`` (``run.reproduce()``, docs/reproduce.md; not part of the cache key).
        """
        options = StepOptions(
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
            cache=cache,
            version=version,
            inputs=inputs,  # type: ignore[arg-type]  # StepOptions checks and normalizes it
            track_reads=track_reads,
            copy_inputs=copy_inputs,
            group=group,
            reproduce_rtol=reproduce_rtol,
            reproduce_atol=reproduce_atol,
        )

        def register(f: F) -> F:
            self.add_step(Step.from_function(f, name=name, depends_on=depends_on, options=options))
            return f

        return register(func) if func is not None else register

    def gate(
        self,
        func: F | None = None,
        /,
        *,
        name: str | None = None,
        depends_on: Sequence[str] | str = (),
        timeout: float | None = None,
        cache: bool = True,
        version: str | None = None,
    ) -> F | Callable[[F], F]:
        """Register a function as a human gate (``@flow.gate`` or ``@flow.gate(...)``).

        A gate is a step whose value is what a reviewer should see (a frame's head, a
        summary dict, a plot). When a run reaches it, the value is checkpointed and the
        run waits (status ``waiting``) until a person approves (``run.approve``) or
        rejects (``run.reject``) it; ``flow.run()`` returns the waiting run. A step with
        a parameter named like the gate gets the gate's value once it is approved.
        See docs/gates.md.
        """
        options = StepOptions(timeout=timeout, cache=cache, version=version, gate=True)

        def register(f: F) -> F:
            self.add_step(Step.from_function(f, name=name, depends_on=depends_on, options=options))
            return f

        return register(func) if func is not None else register

    def add_step(self, step: Step) -> Step:
        """Add (or replace) a step built elsewhere, e.g. by the cell magics."""
        self._steps[step.name] = step
        return step

    def remove_step(self, name: str) -> None:
        """Remove a step from the flow."""
        if not isinstance(name, str) or name not in self._steps:
            raise UnknownStepError(name, self._steps)
        del self._steps[name]

    @property
    def steps(self) -> Mapping[str, Step]:
        """The flow's steps by name, in definition order."""
        return dict(self._steps)

    def graph(self, targets: Collection[str] | None = None) -> FlowGraph:
        """The validated DAG (only what ``targets`` need, when given).

        Its networkx graph is frozen: the same graph is handed out until a step changes.
        """
        import networkx as nx

        from nbflow.graph.dag import build_graph

        if targets is not None:
            targets = arguments.names(targets, "targets")
        steps = tuple((name, id(step)) for name, step in self._steps.items())
        key = (steps, None if targets is None else tuple(targets))
        graph = self._graphs.get(key)
        if graph is None:
            graph = build_graph(self._steps, targets)
            nx.freeze(graph.dag)
            # (The graph holds its steps, so their ids in the key stay theirs.)
            self._graphs = {k: g for k, g in self._graphs.items() if k[0] == steps}
            self._graphs[key] = graph
        return graph

    @property
    def dag(self) -> nx.DiGraph:
        """The flow's DAG as a networkx graph (edges point downstream)."""
        return self.graph().dag

    @property
    def params(self) -> dict[str, Any]:
        """Every run parameter of the flow and its default."""
        return dict(self.graph().params)

    # -- running ------------------------------------------------------------------------

    def run(
        self,
        *,
        executor: str | Executor | Client = "inline",
        max_workers: int | None = None,
        targets: Collection[str] | str | None = None,
        force: bool | Collection[str] | str = False,
        background: bool = False,
        raise_on_error: bool = True,
        progress: bool = True,
        durability: str | None = None,
        **params: Any,
    ) -> Run:
        """Run the flow (or what ``targets`` need) and return the Run.

        Keyword arguments that are not options are run parameters, e.g.
        ``flow.run(window=7)``. Unchanged steps whose inputs are unchanged are taken
        from the cache; ``force=True`` (or a list of step names) recomputes. A failing
        step raises StepFailed unless ``raise_on_error=False``. ``background=True``
        returns at once; use ``run.wait()``.

        ``executor``: 'inline', 'threads', 'processes', a ``distributed.Client``, a Dask
        scheduler address ('tcp://host:8786'), or 'dask' (the current Dask client, else
        $DASK_SCHEDULER_ADDRESS); ``max_workers`` caps the steps running at once.

        ``durability``: ``"async"`` (the default: checkpoints are committed by the store's
        background writer while the next steps run; the run returns once all are
        committed), ``"sync"`` (each step's completion committed before what reads it
        starts: for steps with side effects outside the store) or ``"exit"`` (one commit
        at the end). Else the flow's, else ``$NBFLOW_DURABILITY``. See docs/durability.md.
        """
        from nbflow.api.launch import start_run
        from nbflow.engine.launch import RunOptions

        return start_run(
            self,
            params=params,
            targets=None if targets is None else arguments.names(targets, "targets"),
            force=force if isinstance(force, bool) else arguments.names(force, "force"),
            options=RunOptions(
                executor,
                max_workers,
                background,
                raise_on_error,
                progress,
                self._durability if durability is None else durability,
            ),
        )

    def runs(
        self, *, status: str | Collection[str] | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        """This flow's runs, newest first, as a DataFrame."""
        return self.store.runs_frame(flow=self._name, status=status, limit=limit)

    def lineage(self, run: Run | str, *, as_tree: bool = False) -> pd.DataFrame | nx.DiGraph:
        """The thread of ``run`` (the run it descends from and every fork, transitively):
        a DataFrame of runs and fork points, or a networkx tree with ``as_tree=True``."""
        from nbflow.api.lineage import lineage_frame, thread_tree

        run = run_arg(run, "flow.lineage")
        arguments.flag(as_tree, "as_tree")
        return thread_tree(self.store, run) if as_tree else lineage_frame(self.store, run)

    def status(self, run: Run | str | None = None, **params: Any) -> pd.DataFrame:
        """Which steps are fresh, stale, never_run or failed, and why, as a DataFrame.

        Each step is compared with its execution in ``run`` (a Run or run id), by default
        the flow's latest run that ran it. ``params`` are compared as ``flow.run`` would
        take them; parameters not given keep the value the compared run chose.
        """
        from nbflow.api.status import flow_status, status_frame

        if run is not None:
            run = run_arg(run, "flow.status")
        return status_frame(flow_status(self, run, params))

    def latest_run(self) -> Run | None:
        """The newest run of this flow, or None."""

        runs = self.store.list_runs(flow=self._name, limit=1)
        return Run(self.store, runs[0].run_id, self) if runs else None

    def show(self, run: Run | None = None) -> Any:
        """The DAG widget (:class:`nbflow.widgets.DagWidget`): steps colored by the state of
        ``run`` (default: the latest run, whichever that is as runs start here or
        elsewhere), stale steps marked. Each call makes a widget of its own, which follows
        what it shows (see docs/dag.md)."""
        from nbflow.api.display import flow_widget

        if run is not None:
            arguments.instance(run, Run, "flow.show's run", hint="flow.show() shows the latest.")
        return flow_widget(self, run)

    def _fork_run(self, parent: Run, **fork: Any) -> Run:
        """Fork ``parent`` with this flow's current definitions (``Run.fork`` asks)."""
        from nbflow.api.fork import fork_run

        return fork_run(self, parent, **fork)

    def _resume_run(self, run: Run, **options: Any) -> Run:
        """Resume ``run`` with this flow's current definitions (``Run.resume`` asks)."""
        from nbflow.api.launch import resume_run

        return resume_run(self, run, **options)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from nbflow.api.display import mime_bundle

        return mime_bundle(self)

    def __repr__(self) -> str:
        store = self._store_obj.uri if self._store_obj is not None else self._store_arg
        return f"<Flow {self._name!r}: {len(self._steps)} steps, store {store!r}>"


def gate(flow: Flow, func: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
    """``nf.gate(flow)`` as a decorator (or ``nf.gate(flow, func)``): the same as
    ``@flow.gate``, for a function defined away from its flow."""
    arguments.instance(flow, Flow, "nf.gate's flow", hint="nf.gate(flow)(func) adds a gate.")
    return flow.gate(func, **options) if func is not None else flow.gate(**options)


def run_arg(run: object, where: str) -> Run | str:
    """A Run or a run id as ``where`` takes it; ParameterError for anything else."""

    if isinstance(run, Run | str):
        return run
    raise ParameterError(
        f"{where} takes a Run or a run id (a string), not {type(run).__name__} {run!r:.60}"
    )


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
