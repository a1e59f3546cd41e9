"""The one exception hierarchy of nbflow.

Every error nbflow raises on purpose derives from :class:`NbflowError`, so
``except nf.errors.NbflowError`` catches them all. Messages say what went wrong
and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def suggest(name: str, candidates: Iterable[str], *, prefix: str = " Did you mean ") -> str:
    """Return a ' Did you mean ...?' hint naming close matches of ``name``, or ''."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    return prefix + " or ".join(repr(c) for c in close) + "?"


class NbflowError(Exception):
    """Base class of every error nbflow raises on purpose."""


# -- definition and graph -------------------------------------------------------------


class DefinitionError(NbflowError):
    """A step or flow is defined in a way nbflow cannot use (bad name, clash, options)."""


class CycleError(DefinitionError):
    """The steps' dependencies form a cycle; ``.cycle`` lists the steps on it."""

    def __init__(self, cycle: Sequence[str]):
        self.cycle = list(cycle)
        path = " -> ".join([*self.cycle, self.cycle[0]]) if self.cycle else "?"
        super().__init__(
            f"the steps form a cycle: {path}. Remove one of these dependencies so the steps "
            "can run in order."
        )


class MissingDependencyError(DefinitionError):
    """A step reads a name that is neither a step nor a run parameter."""

    def __init__(self, step: str, name: str, steps: Iterable[str]):
        self.step = step
        self.name = name
        hint = suggest(name, steps)
        super().__init__(
            f"step {step!r} takes a parameter {name!r}, which is neither a step of the flow nor "
            f"a run parameter (give it a default to make it one).{hint}"
        )


class CellError(DefinitionError):
    """A ``%%step`` cell or an nbflow magic cannot be used as written (a syntax error, no
    value, a name defined nowhere, bad options); the message names the cell and line."""


class UnknownStepError(NbflowError, KeyError):
    """A step name that the flow or run does not have."""

    def __init__(self, name: str, steps: Iterable[str], where: str = "the flow"):
        self.name = name
        super().__init__(f"{where} has no step {name!r}.{suggest(name, steps)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ParameterError(NbflowError, TypeError):
    """A run parameter that no step declares, or a value that cannot be recorded."""


# -- store -----------------------------------------------------------------------------


class StoreError(NbflowError):
    """The store cannot be opened or used."""


class NotAStoreError(StoreError):
    """The path is a directory, not a DuckDB file, or a DuckDB file that is not an nbflow store."""


class CorruptStoreError(StoreError):
    """The store file is damaged and cannot be read."""


class SchemaVersionError(StoreError):
    """The store was written by a newer nbflow (or needs a migration that does not exist)."""


class StoreBusyError(StoreError):
    """Another process holds the store file for longer than the configured wait;
    ``.pid`` is that process (when DuckDB names it) and ``.path`` the file."""

    def __init__(self, message: str, *, pid: int | None = None, path: str | None = None):
        super().__init__(message)
        self.pid = pid
        self.path = path


class StoreFullError(StoreError):
    """The disk holding the store is full: nothing of the failed write was kept; free
    space there and resume the run. ``.path`` is the store."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class RunLockedError(StoreError):
    """Another live process is advancing this run (it holds the run's lease)."""

    def __init__(self, run_id: str, owner: str, expires: str):
        self.run_id = run_id
        self.owner = owner
        super().__init__(
            f"run {run_id!r} is being run by {owner} (its lease runs until {expires}). "
            "Wait for it to finish, or stop that process; once it is gone the run shows "
            "as interrupted and can be resumed."
        )


class UnknownRunError(NbflowError, KeyError):
    """No run with this id exists in the store."""

    def __init__(self, run_id: str, store: object | None = None):
        self.run_id = run_id
        where = f" in {store}" if store is not None else ""
        super().__init__(f"no run with id {run_id!r}{where}. `nf.runs()` lists the runs.")

    def __str__(self) -> str:
        return str(self.args[0])


class ReadOnlyStoreError(StoreError):
    """The store could only be opened for reading (its file or folder cannot be written):
    runs, outputs and SQL read as usual, but nothing can be recorded."""

    def __init__(self, where: str, action: str, reason: str):
        self.where = where
        self.action = action
        self.reason = reason
        super().__init__(
            f"{where} is read-only here ({reason}), so nbflow opened it for reading: runs, "
            f"outputs and store.sql work, but {action} needs to write to it. Copy the file "
            "to a folder you can write to and open the copy, or make the file and its folder "
            "writable."
        )

    def __reduce__(self) -> tuple[type[ReadOnlyStoreError], tuple[str, str, str]]:
        return type(self), (self.where, self.action, self.reason)


class StaleVersionError(StoreError):
    """A write was based on an older version of the run than the one stored."""

    def __init__(self, run_id: str, expected: int, actual: int | None = None):
        self.run_id = run_id
        self.expected = expected
        self.actual = actual
        now = f" it is at version {actual}" if actual is not None else " it has moved on"
        super().__init__(
            f"run {run_id!r} changed since version {expected} was read:{now}. Nothing was "
            "written; reload the run and try again."
        )


class InvalidTransitionError(StoreError):
    """An event would move a run or step into a status it cannot reach from its current one."""


class SerializationError(NbflowError):
    """A step's output cannot be stored."""

    def __init__(self, step: str, value: object, reason: str):
        self.step = step
        self.type_name = f"{type(value).__module__}.{type(value).__qualname__}"
        super().__init__(
            f"the output of step {step!r} (a {self.type_name}) cannot be stored: {reason}. "
            "Return a DataFrame, an array, JSON-like data, or a picklable object."
        )


class UntrustedStoreError(StoreError):
    """Loading the value would unpickle data from a store opened with ``trust=False``.

    ``.step`` and ``.run_id`` name the output refused (None when the value was loaded by
    its ref alone), ``.type_name`` its type.
    """

    def __init__(
        self,
        type_name: str,
        *,
        step: str | None = None,
        run_id: str | None = None,
        value_hash: str | None = None,
    ):
        self.type_name = type_name
        self.step = step
        self.run_id = run_id
        self.value_hash = value_hash
        if step is not None:
            what = f"the output of step {step!r}" + (f" in run {run_id}" if run_id else "")
        else:
            what = f"the value {value_hash}" if value_hash else "this value"
        super().__init__(
            f"{what} (a {type_name}) is stored as a pickle, and loading it would unpickle it, "
            "which can run arbitrary code: the store was opened with trust=False. DataFrames, "
            "arrays and JSON values load without pickle. If you trust whoever wrote the "
            "store, open it with `nf.open_store(path, trust=True)` or set NBFLOW_TRUST=1."
        )


class UntrustedImportError(UntrustedStoreError):
    """Loading the value would unpickle a pickle that came from someone else: imported
    from an export without ``--trust`` (or copied from a store opened with
    ``trust=False``). Refused even by a store opened with ``trust=True``, until the run it
    came with is marked trusted. ``.origin`` says where it came from, ``.source_run_id``
    the run to mark trusted."""

    def __init__(
        self,
        type_name: str,
        *,
        origin: dict[str, object],
        store: str = "",
        step: str | None = None,
        run_id: str | None = None,
        value_hash: str | None = None,
    ):
        self.type_name = type_name
        self.step = step
        self.run_id = run_id
        self.value_hash = value_hash
        self.origin = dict(origin)
        source = origin.get("run_id")
        self.source_run_id = source if isinstance(source, str) else None
        if step is not None:
            what = f"the output of step {step!r}" + (f" in run {run_id}" if run_id else "")
        else:
            what = f"the value {value_hash}" if value_hash else "this value"
        if origin.get("imported_from"):
            came = f"was imported from the export {origin['imported_from']} without --trust"
        elif origin.get("copied_from"):
            came = f"was copied from {origin['copied_from']}, a store opened with trust=False"
        else:
            came = "came from a source nobody vouched for"
        if self.source_run_id:
            came += f" (with run {self.source_run_id})"
        where = f" --store {store}" if store else ""
        target = self.source_run_id or "RUN"
        StoreError.__init__(
            self,
            f"{what} (a {type_name}) is a pickle that {came}; loading it would unpickle it, "
            "which can run arbitrary code, so it is refused even though the store is "
            f"trusted. If you trust whoever made it, mark it trusted: `nbflow trust "
            f"{target}{where}` (or `nf.mark_trusted(store, {target!r})`), or import the "
            "export with `nbflow import DIR --trust`. DataFrames, arrays and JSON values "
            "of the run load without pickle.",
        )


# -- running ---------------------------------------------------------------------------


class NotebookError(NbflowError):
    """A notebook cannot be loaded as a flow (missing, not a notebook, or a bad cell)."""


class RunError(NbflowError):
    """A run cannot be started, resumed or read as asked."""


class ReproductionError(RunError):
    """A run cannot be reproduced as asked (see docs/reproduce.md), or a step of a
    reproduction cannot be defined again from its record."""


class GateError(RunError):
    """A decision on a human gate cannot be recorded as asked: the run is not waiting,
    there is no such gate, or it was already decided. Nothing was recorded."""


class InvalidTokenError(GateError):
    """The token is malformed, or its signature does not match (it was changed), or it
    is for another run than the one asked."""


class TokenExpiredError(GateError):
    """The token's expiry has passed: ask for a new one with ``run.gate_token(gate)``."""


class TokenUsedError(GateError):
    """The token was already used: a decision was recorded for that opening of the gate."""


class TokenStoreMismatchError(GateError):
    """The token was issued by another store."""


class TokenSupersededError(GateError):
    """The gate opened again since the token was issued (the run was resumed or forked
    and reached it again, or its value changed): the message says "token superseded by
    newer version"."""


class DuplicateRunError(RunError, ValueError):
    """A run with this id already exists in the store."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(f"a run with id {run_id!r} already exists in the store")


class StepFailed(RunError):
    """A step raised; the run is failed. ``.step``, ``.run_id`` and ``.__cause__`` say more.

    ``.run`` is the failed :class:`~nbflow.Run` (set when ``flow.run()``, ``run.resume()``
    or ``run.wait()`` raise it), so ``err.run.resume()`` continues it even though
    ``run = flow.run()`` never assigned ``run``. ``.traceback`` is the step's own traceback
    as recorded (cells named ``Cell In[n]``, nbflow's frames left out).
    """

    def __init__(
        self, step: str, run_id: str, error: str, traceback: str = "", *, resume: str = ""
    ):
        self.step = step
        self.run_id = run_id
        self.error = error
        self.traceback = traceback
        self.run: Any = None
        super().__init__(_step_failed_message(step, run_id, error, resume))

    def attach_run(self, run: Any, resume: str) -> None:
        """Attach the failed Run and say ``resume`` (code that resumes it) in the message."""
        self.run = run
        self.args = (_step_failed_message(self.step, self.run_id, self.error, resume),)


def _step_failed_message(step: str, run_id: str, error: str, resume: str) -> str:
    resume = resume or f"nf.get_run({run_id!r}).resume()"
    return (
        f"step {step!r} failed in run {run_id}: {error.rstrip('.')}. Fix it, then continue "
        f"from the checkpoints with `{resume}` (this error's `.run` is the failed run)."
    )


class StepTimeout(RunError, TimeoutError):
    """A step ran longer than its ``timeout``."""


class InputMutatedError(RunError):
    """A step changed one of its inputs in place (``.step`` and ``.input`` name them).

    The input is another step's output, shared with every step that reads it: changing it
    would make their results depend on the order steps happen to run in.
    """

    def __init__(self, step: str, input: str, alongside: Sequence[str] = ()):
        self.step = step
        self.input = input
        self.alongside = tuple(alongside)
        if self.alongside:
            others = " or ".join(repr(s) for s in self.alongside)
            what = (
                f"step {step!r} found its input {input!r} changed in place after it ran: "
                f"it, or step {others} reading the same object at the same time (on the "
                "thread executor), changed it"
            )
        else:
            what = (
                f"step {step!r} changed its input {input!r} in place (its content differs "
                "after the step ran)"
            )
        super().__init__(
            f"{what}: {input!r} is the output of step {input!r}, shared with every step "
            f"that reads it. Work on a copy ({input} = {input}.copy(), or "
            f"copy.deepcopy({input})), or declare @flow.step(copy_inputs=True) to be given "
            "copies."
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, tuple[str, ...]]]:
        # (Raised in worker processes: it must unpickle with its arguments.)
        return type(self), (self.step, self.input, self.alongside)


class WaitTimeout(RunError, TimeoutError):
    """``run.wait(timeout)`` returned before the run finished; the run goes on."""

    def __init__(self, run_id: str, status: str, timeout: float):
        self.run_id = run_id
        super().__init__(
            f"run {run_id} is still {status} after the {timeout:g} s waited for it; it goes "
            "on in the background. Call `run.wait()` again (without a timeout to wait until "
            "it ends), or `run.cancel()` to stop it."
        )


class OutputNotAvailableError(RunError, KeyError):
    """The run has no stored output for this step (it failed, was skipped or has not run)."""

    def __str__(self) -> str:
        return str(self.args[0])


__all__ = [
    "CellError",
    "CorruptStoreError",
    "CycleError",
    "DefinitionError",
    "DuplicateRunError",
    "GateError",
    "InputMutatedError",
    "InvalidTokenError",
    "InvalidTransitionError",
    "MissingDependencyError",
    "NbflowError",
    "NbflowWarning",
    "NotAStoreError",
    "NotebookError",
    "OutputNotAvailableError",
    "ParameterError",
    "PickledOutputWarning",
    "ReadOnlyStoreError",
    "ReproductionError",
    "RunError",
    "RunLockedError",
    "SchemaVersionError",
    "SerializationError",
    "StaleVersionError",
    "StepFailed",
    "StepTimeout",
    "StoreBusyError",
    "StoreError",
    "StoreFullError",
    "StoreMaintenanceWarning",
    "TokenExpiredError",
    "TokenStoreMismatchError",
    "TokenSupersededError",
    "TokenUsedError",
    "TransferError",
    "UnknownRunError",
    "UnknownStepError",
    "UntrackedStepWarning",
    "UntrustedImportError",
    "UntrustedStoreError",
    "WaitTimeout",
    "untracked_message",
]


class TransferError(NbflowError):
    """A run cannot be exported, imported or copied (not an export, a run that exists with
    other content, a run still running, a bad value)."""


# -- warnings -----------------------------------------------------------------------------


class NbflowWarning(UserWarning):
    """Base class of every warning nbflow issues."""


class StoreMaintenanceWarning(NbflowWarning):
    """nbflow tidied a store: it removed what an interrupted gc or export left behind."""


class UntrackedStepWarning(NbflowWarning):
    """A step reads a global nbflow cannot hash, so it runs on every run (never reused
    from the cache): the message names the global and the ways to pin it."""


def untracked_message(step: str, untracked: Mapping[str, str]) -> str:
    """Why ``step`` is untracked (``untracked``: global -> why it cannot be hashed), and
    what to do about it."""
    names = ", ".join(f"{name} ({why})" for name, why in untracked.items())
    first = next(iter(untracked), "value").rpartition(".")[2]
    return (
        f"step {step!r} is untracked: it reads {names}, which nbflow cannot hash, so it "
        "runs on every run instead of being reused from the cache. If its result does not "
        f"depend on that value, mark it where it is made: {first} = nf.untracked(...); or "
        'pin the step with @flow.step(version="1") and change the version when its '
        "result should change."
    )


class PickledOutputWarning(NbflowWarning):
    """A step's DataFrame or Series could not be stored as a table, so it was pickled.

    ``.step`` names the step; ``.because`` is the refusal as recorded in its
    ``step_output_recorded`` event (``column``, ``where``, ``reason``, ``fix``).
    """

    def __init__(self, step: str, type_name: str, because: dict[str, object]):
        self.step = step
        self.because = because
        super().__init__(
            f"the output of step {step!r} (a {type_name}) was pickled, not stored as a "
            f"table, because of {because.get('where')}: {because.get('reason')}. It loads "
            "back as it was, but cannot be queried with store.sql and needs a trusted store "
            f"to load. The cheapest fix, before the step returns it: `{because.get('fix')}`"
        )
