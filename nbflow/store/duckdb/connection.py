"""Sharing one DuckDB file between processes: wait for it, hold it while working, give
it back when idle.

DuckDB lets one process at a time open a file for writing; a second one fails at once
with a lock error. So a store holds its connection while it works (opening one costs
~20 ms) and closes it after a short idle time, and a store that finds the file busy
retries with backoff until a timeout, then names the process that holds it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

import duckdb

from nbflow.errors import CorruptStoreError, StoreBusyError, StoreFullError
from nbflow.store.duckdb.exit import stop_at_exit
from nbflow.store.duckdb.file_guard import FileHeld

ENV_BUSY_TIMEOUT = "NBFLOW_BUSY_TIMEOUT"
ENV_IDLE_RELEASE = "NBFLOW_IDLE_RELEASE"
DEFAULT_BUSY_TIMEOUT = 60.0  # seconds to wait for a file another process holds
DEFAULT_IDLE_RELEASE = 0.5  # seconds of idleness before the file is given back

_PID = re.compile(r"\(PID (\d+)\)")


def is_lock_error(exc: BaseException) -> bool:
    """Whether DuckDB refused to open a file because another process holds it."""
    if isinstance(exc, FileHeld):
        return True
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def holder_pid(exc: BaseException) -> int | None:
    """The PID DuckDB's lock error names as the file's holder, if it names one."""
    if isinstance(exc, FileHeld):
        return exc.pid
    found = _PID.search(str(exc))
    return int(found.group(1)) if found else None


def busy_error(path: str, exc: BaseException | None, waited: float) -> StoreBusyError:
    """The error for a file still held by another process after ``waited`` seconds
    (``exc``: DuckDB's last refusal, which may name it)."""
    pid = None if exc is None else holder_pid(exc)
    who = f"process {pid}" if pid is not None else "another process"
    return StoreBusyError(
        f"the store {path!r} is in use by {who}, which kept it for the {waited:g} s this "
        f"process waited. DuckDB allows one process at a time on a file: let {who} finish "
        "(an nbflow store gives the file back between two operations when another process "
        "waits for it, so a long one is holding it now), close the notebook or script "
        f"holding it, or wait longer with {ENV_BUSY_TIMEOUT}=SECONDS.",
        pid=pid,
        path=path,
    )


def connect_waiting(
    connect: Callable[[], duckdb.DuckDBPyConnection], path: str, timeout: float
) -> duckdb.DuckDBPyConnection:
    """``connect()``, retried with jittered exponential backoff while another process
    holds the file; StoreBusyError naming that process after ``timeout`` seconds.

    While it waits it asks the holder for the file (see :func:`ask_for_file`).
    """
    began = time.monotonic()
    delay = 0.005
    # A newcomer joins the queue of processes already waiting rather than jumping it.
    asked = someone_waits(path) and ask_for_file(path)
    refusal: duckdb.IOException | FileHeld | None = None  # DuckDB's last: it may name the holder
    try:
        while True:
            if not (asked and waiter_ahead(path)):
                try:
                    return connect()
                except (duckdb.IOException, FileHeld) as exc:
                    if not is_lock_error(exc):
                        raise
                    refusal = exc
            waited = time.monotonic() - began
            if waited >= timeout:
                raise busy_error(path, refusal, timeout) from None
            asked = ask_for_file(path) or asked
            time.sleep(min(delay * random.uniform(0.5, 1.5), max(timeout - waited, 0.0)))
            # Having asked, look often: the holder steps aside only for YIELD_S, and every
            # moment the file lies free between two holders is lost to all the waiters.
            delay = min(delay * 2, YIELD_S / 10 if asked else 0.2)
    finally:
        # However the wait ends (got it, timed out, another error): a marker left behind
        # would keep this process's old place in the queue for its next wait.
        if asked:
            stop_asking(path)


# -- asking the holder for the file ---------------------------------------------------------

# A process waiting for a file touches a marker beside it; a holder that sees a fresh one
# gives the file back as soon as it is between two operations, instead of after its idle
# time: a run of many quick steps would otherwise keep a reader in another notebook
# waiting until the run ends. (A holder that needs the file again waits and asks too.)
# Each waiting process also keeps its own marker, ``<store>.nbflow-wait.<pid>``, holding
# when it began to wait: waiters take the file in that order, so one that came first is
# never overtaken again and again by busier processes (4 writers re-taking a file kept a
# reader waiting 2.5 s; in turn, it waits for at most the holds of those ahead of it).
WAIT_SUFFIX = ".nbflow-wait"
ASK_FRESH_S = 2.0  # a marker touched this recently means someone still waits
YIELD_S = 0.1  # a holder that gave the file to a waiter lets it have it this long first


def _own_marker(path: str) -> str:
    return f"{path}{WAIT_SUFFIX}.{os.getpid()}"


def ask_for_file(path: str) -> bool:
    """Tell the process holding ``path`` that this one waits for it, and take a place
    in the queue of waiters; False if the markers cannot be written (a read-only folder:
    the holder's idle time then decides)."""
    own = _own_marker(path)
    try:
        with open(path + WAIT_SUFFIX, "a"):
            pass
        os.utime(path + WAIT_SUFFIX)
        if os.path.exists(own):
            os.utime(own)
        else:
            with open(own, "w") as fh:
                fh.write(repr(time.time()))
    except OSError:
        return False
    return True


def stop_asking(path: str) -> None:
    """Remove this process's markers (another waiter touches the shared one again at its
    next try)."""
    for marker in (_own_marker(path), path + WAIT_SUFFIX):
        with contextlib.suppress(OSError):
            os.unlink(marker)


def someone_waits(path: str) -> bool:
    """Whether another process asked for ``path`` in the last :data:`ASK_FRESH_S` s."""
    try:
        return time.time() - os.stat(path + WAIT_SUFFIX).st_mtime < ASK_FRESH_S
    except OSError:
        return False


def waiter_ahead(path: str) -> bool:
    """Whether another process began waiting for ``path`` before this one and still
    waits (its marker is fresh): then this one lets it take the file first."""
    folder, name = os.path.split(path)
    prefix = name + WAIT_SUFFIX + "."
    now = time.time()
    own = os.getpid()
    mine = _began(_own_marker(path), now)
    if mine is None:
        return False
    try:
        entries = [e for e in os.scandir(folder or ".") if e.name.startswith(prefix)]
    except OSError:
        return False
    for entry in entries:
        pid = entry.name[len(prefix) :]
        if not pid.isdigit() or int(pid) == own:
            continue
        began = _began(entry.path, now)
        if began is not None and (began, int(pid)) < (mine, own):
            return True
    return False


def _began(marker: str, now: float) -> float | None:
    """When the waiter of ``marker`` began to wait; None if it no longer waits (gone,
    stale: a killed waiter) or the time cannot be read (being written)."""
    try:
        if now - os.stat(marker).st_mtime >= ASK_FRESH_S:
            return None
        with open(marker) as fh:
            return float(fh.read())
    except (OSError, ValueError):
        return None


class Releasable(Protocol):
    """A store that can give its connection back when idle."""

    def release_if_idle(self) -> None:
        """Close the connection if it has been idle long enough (or another process
        asks for the file) and nobody is using it."""


class IdleCloser:
    """One daemon thread that gives idle stores' files back to other processes."""

    def __init__(self, interval: float = 0.1) -> None:
        self._stores: weakref.WeakSet[Releasable] = weakref.WeakSet()
        self._interval = interval
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.checks = 0  # rounds done: what a test waits for instead of sleeping

    def watch(self, store: Releasable) -> None:
        """Check ``store`` from now on (it is forgotten when garbage collected)."""
        with self._lock:
            self._stores.add(store)
            if self._stopped.is_set():
                return  # the interpreter is exiting
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="nbflow-idle-closer", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop checking, and wait for a check in progress to end (called at exit: a
        daemon thread stopped by the interpreter inside DuckDB aborts the process)."""
        self._stopped.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._check_all()
            self.checks += 1

    def _check_all(self) -> None:
        # In its own frame, so the sleeping loop keeps no store (and no DuckDB connection)
        # alive: objects still referenced at interpreter exit make DuckDB report leaks.
        with self._lock:
            stores = list(self._stores)
        for store in stores:
            if self._stopped.is_set():
                return
            try:
                store.release_if_idle()
            except Exception:  # a store closing under us: check it next time
                continue


IDLE_CLOSER = IdleCloser()
stop_at_exit(IDLE_CLOSER)


def is_disk_full(exc: BaseException) -> bool:
    """Whether DuckDB failed because the disk is full."""
    return isinstance(exc, duckdb.Error | OSError) and (
        "no space left on device" in str(exc).lower() or getattr(exc, "errno", None) == errno.ENOSPC
    )


def disk_full_error(path: str) -> StoreFullError:
    """The error for a write the full disk under ``path`` refused."""
    folder = os.path.dirname(path) or "."
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.1f} MB free there now"
    except OSError:
        free = "its free space could not be read"
    return StoreFullError(
        f"the disk holding the store {path!r} is full ({free}): the write was refused "
        "and nothing of it was kept. Free space on that disk (or move the store), then "
        "resume the run (only what was not checkpointed runs again).",
        path=path,
    )


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if DuckDB has not already (a failed COMMIT
    rolls back by itself: a second ROLLBACK would hide why the commit failed)."""
    with contextlib.suppress(duckdb.TransactionException):
        con.execute("ROLLBACK")


def raise_if_corrupt(exc: duckdb.Error, where: str) -> None:
    """Raise CorruptStoreError for DuckDB's report of a damaged block (seen on reads)."""
    if "corrupt database file" in str(exc).lower():
        raise CorruptStoreError(f"{where!r} is damaged and cannot be read: {exc}") from None
