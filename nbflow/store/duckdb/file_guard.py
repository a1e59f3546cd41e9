"""Who uses a store file: shared while working, exclusive to replace it.

gc gives space back by copying a DuckDB file and renaming the copy over it. That is only
safe when no other process has the old file open or is about to open it: a process that
did would go on writing into a file nobody will read again (its commits lost), or pair
its write-ahead log with the new file. So every process holds a shared ``flock`` on a
lock file beside the store (``<store>.nbflow-lock``, never deleted, never replaced) for as
long as it has the store open, and compaction takes it exclusively. Within one process,
every store object on the same file shares one :class:`FileGuard` (flock locks belong to
an open file, and DuckDB shares one database between the connections of a process).

Beside it, the process that has the file open holds ``<store>.nbflow-hold`` exclusively,
from before DuckDB opens the file until after it closed it. DuckDB's own lock is a POSIX
lock, which a process drops when it closes any descriptor of the file (DuckDB itself
opens and closes the file while it connects): with four processes taking turns on one
file, two of them could have it open at once, and commits DuckDB had reported done were
lost. A flock belongs to one open file and survives that, so it decides who holds the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Protocol

LOCK_SUFFIX = ".nbflow-lock"
HOLD_SUFFIX = ".nbflow-hold"  # held exclusively by the one process with the file open
_POLL_S = 0.01  # flock has no timeout: try without blocking, this often


class FileHeld(Exception):
    """Another process has the store file open (it holds ``<store>.nbflow-hold``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid: int | None = None
        with contextlib.suppress(OSError, ValueError), open(path + HOLD_SUFFIX, "rb") as fh:
            self.pid = int(fh.read(32).strip() or b"x")
        who = f"process {self.pid}" if self.pid is not None else "another process"
        super().__init__(f"{who} holds the store file {path!r}")


class Releasable(Protocol):
    """A store object that can let go of its file when nobody in it is using it."""

    def _release_if_unused(self) -> bool:
        """Close the connection unless in use right now; whether it is closed now."""


class FileGuard:
    """The cross-process lock of one store file, shared by this process's stores."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._cond = threading.Condition(threading.Lock())
        self._holders = 0  # store objects of this process that have the file open
        self._exclusive = False  # this process is replacing the file
        self._stores: weakref.WeakSet[Releasable] = weakref.WeakSet()
        self._fd: int | None = None
        self._hold_fd: int | None = None
        #: Bumped whenever values are deleted from the file: what a store object
        #: remembers about stored values is stale once it changes.
        self.generation = 0

    def values_deleted(self) -> None:
        """Values were deleted from the file: stores of this process forget what they
        remembered of stored values (see :attr:`generation`)."""
        with self._cond:
            self.generation += 1

    # -- the lock file ------------------------------------------------------------------

    def _lock_fd(self) -> int | None:
        """The lock file, opened once; None where it cannot be created (a read-only
        folder: nobody can write the store there, so nobody can compact it either)."""
        if self._fd is None:
            name = self.path + LOCK_SUFFIX
            for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
                try:
                    self._fd = os.open(name, flags | os.O_CLOEXEC, 0o666)
                    break
                except OSError:
                    continue
        return self._fd

    def _flock(self, mode: int, deadline: float | None) -> bool:
        """Take the flock in ``mode`` by the deadline (None: one try only)."""
        fd = self._lock_fd()
        if fd is None:
            return True
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    return False
            except OSError:
                return True  # a file system without flock: nothing to coordinate with
            time.sleep(_POLL_S)

    def _take_hold(self) -> bool:
        """Try once to become the process holding the file; False if another one does."""
        if self._hold_fd is None:
            name = self.path + HOLD_SUFFIX
            for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
                try:
                    self._hold_fd = os.open(name, flags | os.O_CLOEXEC, 0o666)
                    break
                except OSError:
                    continue
            if self._hold_fd is None:
                return True  # a read-only folder: nobody can write the file there
        try:
            fcntl.flock(self._hold_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return True  # a file system without flock: nothing to coordinate with
        with contextlib.suppress(OSError):  # who holds it, for a waiter's message
            os.ftruncate(self._hold_fd, 0)
            os.pwrite(self._hold_fd, str(os.getpid()).encode(), 0)
        return True

    def _drop_hold(self) -> None:
        if self._hold_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._hold_fd, fcntl.LOCK_UN)

    def _unlock(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def unopened_here(self) -> Iterator[bool]:
        """Whether no store of this process has the file open, kept true for the block.

        DuckDB locks its file with a POSIX lock, which belongs to the process and is
        dropped when the process closes ANY descriptor of the file: reading the file
        while DuckDB has it open (say, its header) would let another process open it
        beside this one, two writers of one file. So the file is read only when this
        yields True.
        """
        with self._cond:
            yield self._holders == 0 and not self._exclusive

    # -- using the file -----------------------------------------------------------------

    def watch(self, store: Releasable) -> None:
        """Remember ``store`` as one of this process's users of the file."""
        with self._cond:
            self._stores.add(store)

    def acquire_shared(self, deadline: float) -> bool:
        """Register one more user in this process; False if the file is being replaced
        (here or elsewhere) until the deadline. :class:`FileHeld` if another process has
        the file open (one try: the caller waits for it in the queue of waiters)."""
        with self._cond:
            while self._exclusive:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            if self._holders == 0:
                if not self._flock(fcntl.LOCK_SH, deadline):
                    return False
                if not self._take_hold():
                    self._unlock()
                    raise FileHeld(self.path)
            self._holders += 1
            return True

    def release_shared(self) -> None:
        """One user of this process is done with the file (its connection is closed)."""
        with self._cond:
            if self._holders <= 0:
                return
            self._holders -= 1
            if self._holders == 0:
                self._drop_hold()
                self._unlock()
            self._cond.notify_all()

    # -- replacing the file -------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, timeout: float, ask: Callable[[], object] | None = None) -> Iterator[bool]:
        """Hold the file alone for the block: no store of this or another process has it
        open meanwhile, and none can open it. Yields False (and holds nothing) when that
        could not be had within ``timeout`` seconds.

        The caller has closed its own connection. Other stores of this process are asked
        to let go of the file; ``ask`` is called while other processes still hold it
        (to ask them to give it back early).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            got = self._take_exclusive(deadline, ask)
        try:
            yield got
        finally:
            if got:
                with self._cond:
                    self._unlock()
                    self._exclusive = False
                    self._cond.notify_all()

    def _take_exclusive(self, deadline: float, ask: Callable[[], object] | None) -> bool:
        # Called with self._cond held.
        while self._exclusive:  # another thread of this process is compacting
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._cond.wait(left)
        self._exclusive = True  # no store of this process opens the file from now on
        while self._holders:
            stores = list(self._stores)
            self._cond.release()
            try:
                for store in stores:
                    with contextlib.suppress(Exception):
                        store._release_if_unused()
            finally:
                self._cond.acquire()
            if not self._holders:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                self._exclusive = False
                self._cond.notify_all()
                return False
            self._cond.wait(min(left, 0.05))
        while not self._flock(fcntl.LOCK_EX, None):
            if ask is not None:
                with contextlib.suppress(Exception):
                    ask()
            if time.monotonic() >= deadline:
                self._exclusive = False
                self._cond.notify_all()
                return False
            self._cond.wait(0.02)  # lets other threads of this process go on meanwhile
        return True


_GUARDS: dict[str, FileGuard] = {}
_GUARDS_LOCK = threading.Lock()


def guard_for(path: str) -> FileGuard:
    """The one guard of this process for the store file ``path`` (an absolute path)."""
    with _GUARDS_LOCK:
        guard = _GUARDS.get(path)
        if guard is None:
            guard = _GUARDS[path] = FileGuard(path)
        return guard
