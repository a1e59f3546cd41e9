"""The Run handle: a run's status, outputs and history, read through the store."""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbflow import arguments
from nbflow.api.history import output_execution
from nbflow.api.protocols import RunsFlow
from nbflow.engine.control import RunControl
from nbflow.errors import ParameterError, RunError, StepFailed, WaitTimeout
from nbflow.store.base import Store
from nbflow.store.records import Event, RunRecord, RunStatus, StepExecution, ValueRef

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.api.history import RunView
    from nbflow.store.provenance import Provenance


# The flows defined in this process, by name, so a run read back from a store can be
# resumed with the flow's current definitions (a Flow remembers itself when made).
_flows: dict[str, weakref.ref[RunsFlow]] = {}
_flows_lock = threading.Lock()


def remember_flow(flow: RunsFlow) -> None:
    """Make ``flow`` the one :func:`find_flow` returns for its name."""
    with _flows_lock:
        _flows[flow.name] = weakref.ref(flow)


def find_flow(name: str, store: Store | None = None) -> RunsFlow | None:
    """The latest live flow named ``name`` defined in this process (on ``store``, if given)."""
    with _flows_lock:
        ref = _flows.get(name)
    flow = ref() if ref is not None else None
    if flow is not None and store is not None and flow.store.uri != store.uri:
        return None
    return flow


class Run:
    """A run of a flow. Reading it always reflects what the store holds now.

    ``run[step]`` loads a step's output; ``run.outputs`` is a lazy mapping of them;
    ``run.events`` and ``run.steps`` are DataFrames of its history.
    """

    def __init__(self, store: Store, run_id: str, flow: RunsFlow | None = None) -> None:
        arguments.instance(store, Store, "a Run's store", hint="nf.get_run(id, store) finds one.")
        arguments.run_id(run_id)
        self._store = store
        self._id = run_id
        self._flow = flow
        self._record: RunRecord | None = None
        self._control = RunControl()

    # -- identity and status ----------------------------------------------------------

    @property
    def id(self) -> str:
        """The run's id."""
        return self._id

    @property
    def store(self) -> Store:
        """The store the run lives in."""
        return self._store

    @property
    def event_callbacks(self) -> Sequence[Callable[[Event], None]]:
        """The ``on_event`` callbacks of the run's flow, when this handle knows it."""
        return self._flow.event_callbacks if self._flow is not None else ()

    @property
    def flow_durability(self) -> str | None:
        """The durability mode the run's flow sets, when this handle knows the flow."""
        return getattr(self._flow, "durability", None)

    @property
    def control(self) -> RunControl:
        """What this handle shares with the engine while the run executes here."""
        return self._control

    @property
    def record(self) -> RunRecord:
        """The run's current record, read from the store."""
        self._record = self._store.get_run(self._id)
        return self._record

    @property
    def status(self) -> str:
        """pending, running, waiting (at a gate), completed, failed, cancelled or interrupted."""
        return self.record.status.value

    @property
    def flow_name(self) -> str:
        """The name of the flow this run belongs to."""
        return self.record.flow

    @property
    def params(self) -> dict[str, Any]:
        """The run parameters this run used (defaults included)."""
        return dict(self.record.params)

    @property
    def parent_id(self) -> str | None:
        """The run this one was forked from, if any."""
        return self.record.parent_run_id

    @property
    def error(self) -> str | None:
        """Why the run failed, or None."""
        return self.record.error

    @property
    def version(self) -> int:
        """The seq of the run's last event."""
        return self.record.version

    @property
    def step_names(self) -> tuple[str, ...]:
        """The steps this run covers, in run order."""
        return self.record.steps

    # -- outputs ----------------------------------------------------------------------

    def _latest_rows(self) -> dict[str, StepExecution]:
        latest: dict[str, StepExecution] = {}
        for row in self._store.executions(self._id):  # in the order rows last changed
            latest[row.step] = row
        return latest

    def _execution(self, step: str) -> StepExecution:
        return output_execution(self._latest_rows(), step, self.step_names, f"run {self._id}")

    def step_states(self) -> dict[str, str]:
        """Each started step's current status (running, completed, cached, failed, skipped)."""
        return {step: row.status.value for step, row in self._latest_rows().items()}

    def ref(self, step: str) -> ValueRef:
        """Where the output of ``step`` is stored (codec, content hash, size)."""
        ref = self._execution(step).output
        assert ref is not None
        return ref

    def __getitem__(self, step: str) -> Any:
        """The output of ``step``, loaded from the store."""
        return self._store.load_output(self.ref(step), step=step, run_id=self._id)

    def __contains__(self, step: object) -> bool:
        return isinstance(step, str) and step in self.outputs

    @property
    def outputs(self) -> Mapping[str, Any]:
        """A lazy mapping step -> output over the steps that have one."""
        return _Outputs(self)

    def table_name(self, step: str) -> str:
        """The SQL table holding the DataFrame output of ``step``, for ``store.sql``."""
        name = self._store.table_name(self.ref(step))
        if name is None and self.ref(step).codec.value == "arrow":
            raise RunError(
                f"{type(self._store).__name__} does not keep DataFrame outputs as SQL tables "
                f"(only the DuckDB store does): load the output of {step!r} with "
                f"run[{step!r}] instead."
            )
        if name is None:
            raise RunError(
                f"the output of step {step!r} is not stored as a table (it is a "
                f"{self.ref(step).type_name}, codec {self.ref(step).codec.value})."
            )
        return name

    # -- history ------------------------------------------------------------------------

    @property
    def events(self) -> pd.DataFrame:
        """The run's event log, one row per event."""
        return self._store.events_frame(self._id)

    @property
    def steps(self) -> pd.DataFrame:
        """One row per step attempt (attempt 0 for cached and skipped steps)."""
        return self._store.steps_frame(self._id)

    @property
    def versions(self) -> pd.DataFrame:
        """One row per state-changing event: version, recorded_at, type, step, status,
        steps_completed. ``run.at(version)`` shows the run as it stood at any of them."""
        from nbflow.api.history import versions_frame

        return versions_frame(self.record, self._store.read_events(self._id))

    def at(self, version: int) -> RunView:
        """A read-only view of the run as it stood at ``version`` (time travel)."""
        from nbflow.api.history import RunView

        return RunView(self._store, self._id, version)

    def fork(
        self,
        from_step: str | None = None,
        at_version: int | None = None,
        run: bool = True,
        *,
        cache: bool = False,
        executor: str | Any = "inline",
        max_workers: int | None = None,
        background: bool = False,
        raise_on_error: bool = True,
        progress: bool = True,
        durability: str | None = None,
        **params: Any,
    ) -> Run:
        """A new run that reuses part of this one by reference and recomputes the rest.

        ``from_step``: recompute that step and everything downstream of it, reuse the
        others. ``at_version``: reuse what was completed at that version, run the rest.
        Keyword arguments that are not options override run parameters. A step it would
        reuse whose parameters or code it changes is recomputed too, with what reads it
        (its ``run_forked`` event lists them under ``recomputed``, with why). Recomputed
        steps execute even if a cached result exists, unless ``cache=True``. ``run=False``
        creates the fork without executing it (``.resume()`` runs it). ``durability``:
        as for ``flow.run``.
        """
        from nbflow.engine.launch import RunOptions
        from nbflow.errors import UnknownStepError

        if from_step is not None and not isinstance(from_step, str):
            raise UnknownStepError(from_step, self.step_names, where=f"run {self._id}")

        result: Run = self._flow_for("fork")._fork_run(
            self,
            from_step=from_step,
            at_version=at_version,
            run=run,
            cache=cache,
            params=params,
            options=RunOptions(
                executor, max_workers, background, raise_on_error, progress, durability
            ),
        )
        return result

    # -- gates --------------------------------------------------------------------------

    @property
    def gates(self) -> pd.DataFrame:
        """The run's gates: one row each, open, approved or rejected, with who decided,
        when, the comment and how long the gate waited (see docs/gates.md)."""
        from nbflow.api.gates import gates_frame

        return gates_frame(self._store, self._id)

    def gate_token(self, gate: str, *, expires_in: dt.timedelta | None = None) -> str:
        """A signed, single-use token for the open gate ``gate`` (default expiry 7 days),
        to hand a reviewer: ``nbflow approve TOKEN`` or ``nf.approve(TOKEN)``."""
        from nbflow.api.gates import token

        return token(self._store, self._id, gate, expires_in)

    def approve(
        self,
        gate: str,
        *,
        by: str | None = None,
        comment: str | None = None,
        token: str | None = None,
        resume: bool = True,
    ) -> Run:
        """Approve the open gate ``gate`` (``by``: who, default the OS user). Then, if no
        other gate waits and the flow is defined in this process, the run continues from
        the gate here (``resume=False`` leaves that to ``run.resume()``). ``token``: a
        token from :meth:`gate_token`, checked first. Returns this run."""
        from nbflow.api.gates import record_decision

        arguments.flag(resume, "resume")
        free = record_decision(
            self._store,
            self._id,
            gate,
            approve=True,
            by=by,
            comment=comment,
            token=token,
            callbacks=self.event_callbacks,
        )
        if free and resume:
            flow = self._flow or find_flow(self.flow_name, self._store)
            if flow is not None:
                self._flow = flow
                return self.resume()
        return self

    def reject(
        self,
        gate: str,
        *,
        by: str | None = None,
        comment: str | None = None,
        token: str | None = None,
    ) -> Run:
        """Reject the open gate ``gate``: the run is cancelled, and the steps the gate held
        back are recorded as skipped. Returns this run."""
        from nbflow.api.gates import record_decision

        record_decision(
            self._store,
            self._id,
            gate,
            approve=False,
            by=by,
            comment=comment,
            token=token,
            callbacks=self.event_callbacks,
        )
        return self

    # -- the record ---------------------------------------------------------------------

    def provenance(self) -> Provenance:
        """The run's complete record (:class:`nbflow.store.provenance.Provenance`): each
        step's source and the helpers, classes, constants, data and modules it used, the
        files it read with their hashes, Python, platform and package versions."""
        from nbflow.store.provenance import read_provenance

        return read_provenance(self._store, self._id)

    def reproduce(
        self,
        store: Store | str | None = None,
        steps: Sequence[str] | str | None = None,
        executor: str = "inline",
        *,
        rtol: float | None = None,
        atol: float | None = None,
        strict: bool = False,
        check_determinism: bool = True,
    ) -> pd.DataFrame:
        """Execute the run again in a fresh process from its record alone, into a new run
        (a child of this one), and compare each step's output: a frame with columns
        ``step, status, recorded_hash, reproduced_hash, reason``, status ``identical``,
        ``close`` (within ``rtol``/``atol`` or the step's ``reproduce_rtol``), ``differs``,
        ``failed`` or ``not_run``. ``store``: where the run is (default: its own store);
        ``steps``: only these (the others reuse their recorded outputs); ``strict``:
        refuse when the environment differs from the recorded one. See docs/reproduce.md.
        """
        from nbflow.api.reproduce import reproduce_run
        from nbflow.store.open import open_store

        target = self._store if store is None else open_store(store)
        chosen = None if steps is None else arguments.names(steps, "steps")
        return reproduce_run(
            target,
            self._id,
            steps=chosen,
            executor=executor,
            rtol=rtol,
            atol=atol,
            strict=strict,
            check_determinism=check_determinism,
        )

    # -- control ------------------------------------------------------------------------

    def resume(self, **options: Any) -> Run:
        """Continue a failed, interrupted or waiting run from its checkpoints, with the
        flow's current definitions (a waiting run: from its approved gates; a gate not yet
        approved is reached, and opens, again). Takes the same options as ``flow.run``
        except parameters."""
        import dataclasses

        from nbflow.engine.launch import RunOptions

        known = ["force", *(f.name for f in dataclasses.fields(RunOptions))]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ParameterError(
                f"run.resume() takes no option {', '.join(map(repr, unknown))}: it runs with "
                f"the parameters the run recorded. Its options are {', '.join(known)}."
            )
        force = options.get("force", False)
        if not isinstance(force, bool):
            options["force"] = arguments.names(force, "force")

        resumed: Run = self._flow_for("resume")._resume_run(self, **options)
        return resumed

    def _flow_for(self, action: str) -> RunsFlow:
        if self._flow is not None:
            return self._flow
        flow = find_flow(self.flow_name, self._store)
        if flow is None:
            raise RunError(
                f"cannot {action} run {self._id}: flow {self.flow_name!r} is not defined in this "
                f"session. Define it (run its cells or import its module), then {action}."
            )
        self._flow = flow
        return flow

    def cancel(self) -> None:
        """Ask a pending, running or waiting run to stop; refuse for a run that has finished."""
        from nbflow.store.records import EventType, NewEvent

        status = self.record.status
        if status.finished:
            raise RunError(
                f"run {self._id} has already finished ({status.value}); nothing to cancel."
            )
        if self._control.running:
            self._control.cancel.set()
            return
        if status in (RunStatus.PENDING, RunStatus.WAITING):
            from nbflow.api.hooks import hook_listener

            cancelled = [NewEvent(type=EventType.RUN_CANCELLED)]
            record = self._store.append(self._id, self.record.version, cancelled)
            hook_listener(self.event_callbacks)(record, cancelled)
            return
        raise RunError(
            f"run {self._id} is running in another process or thread that this handle does "
            "not control; cancel it from there."
        )

    def wait(self, timeout: float | None = None) -> Run:
        """Block until a background run finishes (at most ``timeout`` seconds)."""
        arguments.optional_seconds(timeout, "timeout")
        if not self._control.done.wait(timeout):
            assert timeout is not None
            raise WaitTimeout(self._id, self.status, timeout)
        error = self._control.take_error()
        if isinstance(error, StepFailed):
            from nbflow.api.failures import attach_run

            raise attach_run(error, self) from error.__cause__
        if error is not None:
            raise error
        return self

    # -- display ------------------------------------------------------------------------

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from nbflow.api.display import mime_bundle

        return mime_bundle(self)

    def __repr__(self) -> str:
        record = self.record
        return (
            f"<Run {self._id} of {record.flow!r}: {record.status.value}, version {record.version}>"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other._id == self._id and other._store is self._store

    def __hash__(self) -> int:
        return hash(self._id)


class _Outputs(Mapping[str, Any]):
    """Outputs of a run, loaded from the store only when asked for."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def _available(self) -> list[str]:
        rows = self._run._latest_rows()
        return [s for s, x in rows.items() if x.status.has_output and x.output is not None]

    def __getitem__(self, step: str) -> Any:
        return self._run[step]

    def __contains__(self, step: object) -> bool:
        return step in self._available()  # without loading the value

    def __iter__(self) -> Iterator[str]:
        return iter(self._available())

    def __len__(self) -> int:
        return len(self._available())

    def __repr__(self) -> str:
        return f"<outputs of run {self._run.id}: {', '.join(self._available())}>"
