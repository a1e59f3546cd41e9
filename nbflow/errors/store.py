"""Errors of the store: opening, locks, versions, trust, serialization."""

from __future__ import annotations

from nbflow.errors.base import NbflowError


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
