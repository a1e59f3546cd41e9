"""Closing every DuckDB store of the process before the interpreter shuts down.

When Python shuts down it stops daemon threads where they stand, the next time they ask
for the GIL. A thread inside DuckDB at that moment (the idle closer closing a connection,
a background run committing a step) is then unwound through C++ code that cannot be
unwound, and the process aborts: ``FATAL: exception not rethrown``, exit status 134. So an
``atexit`` hook runs first, while every thread still runs normally: it stops the idle
closer, then, store by store, takes the store's lock in the main thread (so an operation
in progress ends first), records the runs this process was still executing as
``interrupted`` (resumable, and shown as such at once instead of when their lease
expires), and closes the connection. The lock is kept: no thread enters DuckDB again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from typing import Protocol

EXIT_WAIT_S = 60.0  # how long exit waits for an operation in progress (a big commit)


class ClosableAtExit(Protocol):
    """A store that can be closed for good from the exiting main thread."""

    _lock: threading.RLock

    def _close_at_exit(self) -> None:
        """Record what the process leaves unfinished and close; the lock is held."""


_STORES: weakref.WeakSet[ClosableAtExit] = weakref.WeakSet()
_PID = os.getpid()
_registered = False
_registry_lock = threading.Lock()
_stoppers: list[object] = []


def close_at_exit(store: ClosableAtExit) -> None:
    """Close ``store`` before the interpreter shuts down (if it is still open then)."""
    global _registered
    with _registry_lock:
        _STORES.add(store)
        if not _registered:
            # Registered after duckdb's own hooks (imported before us), so run before them.
            atexit.register(_close_all)
            _registered = True


def stop_at_exit(stopper: object) -> None:
    """Call ``stopper.stop()`` at exit before any store is closed (a thread of ours
    that may enter DuckDB, such as the idle closer)."""
    with _registry_lock:
        _stoppers.append(stopper)


def _close_all() -> None:
    if os.getpid() != _PID:
        return  # a forked child: the connections are its parent's
    for stopper in list(_stoppers):
        with contextlib.suppress(Exception):
            stopper.stop()  # type: ignore[attr-defined]
    deadline = time.monotonic() + EXIT_WAIT_S
    with _registry_lock:
        stores = list(_STORES)
    for store in stores:
        left = max(deadline - time.monotonic(), 0.1)
        if not store._lock.acquire(timeout=left):
            continue  # still busy: the best left is to let it be
        # Kept acquired on purpose: no other thread may use the store from now on.
        with contextlib.suppress(Exception):
            store._close_at_exit()
