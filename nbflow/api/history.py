"""Time travel: a run's versions, and read-only views of a run as it stood at one.

A run's version is the seq of its last event; the state at any version is the fold of
the events up to it (:func:`nbflow.store.fold.fold`), so no state is copied per version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from nbflow.errors import OutputNotAvailableError, RunError, UnknownStepError
from nbflow.store.fold import RunState, apply, initial_state
from nbflow.store.records import Event, EventType, RunRecord, StepExecution, StepStatus

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.store.base import Store

#: Events that change no status: left out of ``run.versions``.
_QUIET = {
    EventType.STEP_SCHEDULED,
    EventType.STEP_INPUT_RECORDED,
    EventType.STEP_OUTPUT_RECORDED,
    EventType.STEP_WARNING,
}

#: Columns of ``run.versions``.
VERSION_COLUMNS = ["version", "recorded_at", "type", "step", "status", "steps_completed"]


def versions_frame(run: RunRecord, events: Iterable[Event]) -> pd.DataFrame:
    """One row per state-changing event: the version it made, when, what, and the run's
    status and number of steps with an output after it."""
    import pandas as pd

    state = initial_state(run)
    rows = []
    for event in events:
        apply(state, [event])
        if event.type in _QUIET:
            continue
        rows.append(
            {
                "version": event.seq,
                "recorded_at": event.ts,
                "type": event.type.value,
                "step": event.step,
                "status": state.run.status.value,
                "steps_completed": sum(1 for s in step_states(state).values() if _done(s)),
            }
        )
    frame = pd.DataFrame(rows, columns=VERSION_COLUMNS)
    return frame.astype(
        {
            "version": "int64",
            "recorded_at": "datetime64[us, UTC]",
            "type": "str",
            "step": "str",
            "status": "str",
            "steps_completed": "int64",
        }
    )


def _done(status: str) -> bool:
    return status in (StepStatus.COMPLETED.value, StepStatus.CACHED.value)


def step_states(state: RunState) -> dict[str, str]:
    """Each step's latest status in ``state`` (steps that never started are absent)."""
    return {step: row.status.value for step, row in state.current.items()}


def output_execution(
    executions: Mapping[str, StepExecution], step: str, steps: Iterable[str], where: str
) -> StepExecution:
    """The execution holding ``step``'s output, or a clear error saying why there is none."""
    if not isinstance(step, str):
        raise UnknownStepError(step, steps, where=where)
    row = executions.get(step)
    if row is None:
        names = list(steps)
        if step not in names:
            raise UnknownStepError(step, names, where=where)
        raise OutputNotAvailableError(f"step {step!r} has no output in {where}: it has not run.")
    if row.status.has_output and row.output is not None:
        return row
    reason = {
        StepStatus.FAILED: f"it failed ({row.error})",
        StepStatus.SKIPPED: f"it was skipped ({row.error})",
        StepStatus.RUNNING: "it was still running",
        StepStatus.QUEUED: "it was queued, waiting for a worker",
        StepStatus.SCHEDULED: "it had not run",
    }.get(row.status, row.status.value)
    raise OutputNotAvailableError(f"step {step!r} has no output in {where}: {reason}.")


class RunView:
    """A run as it stood at one version: read-only, with the reading API of a Run."""

    def __init__(self, store: Store, run_id: str, version: int) -> None:
        from nbflow import arguments
        from nbflow.store.base import Store

        arguments.instance(store, Store, "a RunView's store", hint="run.at(version) makes one.")
        current = store.get_run(run_id)
        if not isinstance(version, int) or isinstance(version, bool):
            raise RunError(f"a version is a whole number, not {version!r}")
        if version < 0 or version > current.version:
            raise RunError(
                f"run {run_id} has versions 0 to {current.version}; there is no version "
                f"{version}. `run.versions` lists them."
            )
        self._store = store
        self._state = store.state_at(run_id, version)
        self._where = f"run {run_id} at version {version}"

    @property
    def id(self) -> str:
        """The run's id."""
        return self._state.run.run_id

    @property
    def version(self) -> int:
        """The version this view shows."""
        return self._state.run.version

    @property
    def record(self) -> RunRecord:
        """The run's record as it stood at this version."""
        return self._state.run

    @property
    def status(self) -> str:
        """The run's status at this version."""
        return self._state.run.status.value

    @property
    def params(self) -> dict[str, Any]:
        """The run's parameters."""
        return dict(self._state.run.params)

    @property
    def step_names(self) -> tuple[str, ...]:
        """The steps the run covers."""
        return self._state.run.steps

    def step_states(self) -> dict[str, str]:
        """Each started step's status at this version."""
        return step_states(self._state)

    def __getitem__(self, step: str) -> Any:
        """The output of ``step`` as it was at this version."""
        row = output_execution(self._state.current, step, self.step_names, self._where)
        assert row.output is not None
        return self._store.load_output(row.output, step=step, run_id=self.id)

    @property
    def outputs(self) -> Mapping[str, Any]:
        """A lazy mapping step -> output of the steps that had one at this version."""
        return _ViewOutputs(self)

    @property
    def steps(self) -> pd.DataFrame:
        """One row per step attempt, as of this version."""
        from nbflow.store import frames

        return frames.steps_frame(self._state.executions.values())

    @property
    def gates(self) -> pd.DataFrame:
        """The run's gates as they stood at this version: open, approved or rejected."""
        from nbflow.api.gates import gates_frame

        return gates_frame(self._store, self.id, self.version)

    @property
    def events(self) -> pd.DataFrame:
        """The events up to this version."""
        from nbflow.store import frames

        return frames.events_frame(self._store.read_events(self.id, upto=self.version))

    def __repr__(self) -> str:
        return f"<RunView {self.id} at version {self.version}: {self.status}>"


class _ViewOutputs(Mapping[str, Any]):
    def __init__(self, view: RunView) -> None:
        self._view = view

    def _available(self) -> list[str]:
        return [s for s, state in self._view.step_states().items() if _done(state)]

    def __getitem__(self, step: str) -> Any:
        return self._view[step]

    def __contains__(self, step: object) -> bool:
        return step in self._available()

    def __iter__(self) -> Iterator[str]:
        return iter(self._available())

    def __len__(self) -> int:
        return len(self._available())
