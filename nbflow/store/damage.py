"""What a reader says about a stored value or row it cannot read: which run and step it
belongs to, what is wrong with it, and what to do.

A value is damaged when its stored bytes or table no longer decode (cut short, bytes
overwritten, a table dropped or changed behind nbflow's back, an unknown codec): that is
a CorruptStoreError. A pickle that is whole but names a class or module this process
does not have is not damage: it is a StoreError saying what to import.
"""

from __future__ import annotations

import pickle

from nbflow.errors import CorruptStoreError, NbflowError, StoreError
from nbflow.store.records import Codec, ValueRef

__all__ = ["damaged_row", "unreadable_value"]


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, NbflowError):
        return text[:300]
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def unreadable_value(
    ref: ValueRef,
    exc: BaseException,
    store: object,
    *,
    step: str | None = None,
    run_id: str | None = None,
) -> NbflowError:
    """The error for ``ref`` failing to load with ``exc`` (raise it ``from exc``)."""
    # Refused (untrusted), or nothing to do with the value (the file busy, the disk full,
    # a read-only store): said as it is.
    about_the_store = type(exc) is not StoreError and not isinstance(exc, CorruptStoreError)
    if isinstance(exc, NbflowError) and about_the_store:
        return exc
    if step is not None:
        what = f"the output of step {step!r}" + (f" in run {run_id}" if run_id else "")
        redo = (
            f" Compute it again with flow.run(force=[{step!r}]) (or fork the run from it), "
            "or restore the store from a backup;"
        )
    else:
        what, redo = f"the value {ref.hash}", " Restore the store from a backup;"
    kind = f"a {ref.type_name}, stored as {ref.codec.value}"
    if ref.codec is Codec.PICKLE and isinstance(exc, ImportError | AttributeError):
        return StoreError(
            f"{what} ({kind}) cannot be unpickled in this process: {_reason(exc)}. Import "
            "(or define) the module and class it was pickled from, then load it again."
        )
    if isinstance(exc, pickle.UnpicklingError | EOFError):
        problem = "its pickled bytes are damaged"
    elif isinstance(exc, StoreError) and "missing" in str(exc):
        problem = "it is missing from the store"
    else:
        problem = "its stored copy is damaged"
    return CorruptStoreError(
        f"{what} ({kind}) cannot be read from {store}: {problem} ({_reason(exc)}).{redo} "
        "`nbflow check` lists every damaged value."
    )


def damaged_row(what: str, exc: BaseException, store: object = "the store") -> CorruptStoreError:
    """The error for a row of ``store`` (``what``: 'an event of run X') that does not
    read back as nbflow wrote it."""
    return CorruptStoreError(
        f"{what} in {store} holds what nbflow never writes ({_reason(exc)}): it was changed "
        "by something other than nbflow. Fix or delete that row with SQL, then check the "
        "store again (`nbflow check`); or restore the store from a backup."
    )
