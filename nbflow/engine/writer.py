"""The background writer of a store: one thread per store that commits the batches runs
hand it, in order, many per transaction (group commit), within a bound in bytes.

A run in the async durability mode hands each batch of events (with the values they
reference) to its store's :class:`Writer` and goes on; the writer takes everything queued
at once, joins each run's batches into one commit (:meth:`RunCommits.write`), and tells
the run's listeners once they are committed. The queue holds at most ``limit`` bytes of
values: a run handing over more waits until the writer has caught up (back-pressure), so
memory never grows without bound when the store is slower than the steps. A single batch
larger than the bound is taken alone. The thread ends when it has been idle a while, and
at interpreter exit it commits what is queued before the stores close.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from nbflow.engine.commits import Batch, RunCommits
from nbflow.engine.durability import queue_bytes

if TYPE_CHECKING:
    from nbflow.store.base import Store

IDLE_S = 2.0  # a writer with nothing to do for this long ends its thread
EXIT_WAIT_S = 60.0  # how long interpreter exit waits for the writers to commit

_writers: dict[int, Writer] = {}
_registry = threading.Lock()
_exit_hooked = False


class Writer:
    """Commits the batches handed to it for one store, in the order they came."""

    def __init__(self, store: Store, limit: int) -> None:
        self.store = store
        self.limit = limit
        self._cond = threading.Condition()
        self._queue: deque[tuple[RunCommits, Batch]] = deque()
        self._held = 0  # bytes queued or being written
        self._thread: threading.Thread | None = None
        self.waited_s = 0.0  # how long producers waited for room, in all (for benchmarks)
        self.waiting = 0  # producers waiting for room now

    def submit(self, commits: RunCommits, batch: Batch) -> None:
        """Queue ``batch`` of ``commits``'s run; wait first while the queue is full."""
        nbytes = batch.nbytes
        commits.handed()
        with self._cond:
            if self._held and self._held + nbytes > self.limit:
                start = time.monotonic()
                self.waiting += 1
                self._cond.wait_for(lambda: not self._held or self._held + nbytes <= self.limit)
                self.waiting -= 1
                self.waited_s += time.monotonic() - start
            self._queue.append((commits, batch))
            self._held += nbytes
            if self._thread is None:
                _remember(self)  # (it may have been forgotten when its thread last ended)
                self._thread = threading.Thread(
                    target=self._work, name="nbflow-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    @property
    def held_bytes(self) -> int:
        """Bytes of values queued or being written now."""
        with self._cond:
            return self._held

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is written; return whether it was in time."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._held and not self._queue, timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: bool(self._queue), IDLE_S):
                    self._thread = None
                    _forget(self)
                    return
                taken = list(self._queue)
                self._queue.clear()
            nbytes = self._write(taken)
            del taken  # (an idle writer keeps no run alive: nor its runner, nor its flow)
            with self._cond:
                self._held -= nbytes
                self._cond.notify_all()

    @staticmethod
    def _write(taken: list[tuple[RunCommits, Batch]]) -> int:
        """Each run's batches, in their order, as one commit, runs in the order they
        came; return the bytes they held."""
        groups: dict[int, tuple[RunCommits, list[Batch]]] = {}
        for commits, batch in taken:
            groups.setdefault(id(commits), (commits, []))[1].append(batch)
        for commits, batches in groups.values():
            commits.write(batches)  # (never raises: a failure is the run's to handle)
        return sum(b.nbytes for _, b in taken)


def writer_for(store: Store) -> Writer:
    """The store's writer (made on first use; one per store object)."""
    global _exit_hooked
    with _registry:
        writer = _writers.get(id(store))
        if writer is None or writer.store is not store:
            writer = _writers[id(store)] = Writer(store, queue_bytes())
        if not _exit_hooked:
            # Registered after the stores' own exit hooks, so it runs before them.
            atexit.register(_drain_all)
            _exit_hooked = True
        return writer


def _remember(writer: Writer) -> None:
    with _registry:
        _writers.setdefault(id(writer.store), writer)


def _forget(writer: Writer) -> None:
    with _registry:
        if _writers.get(id(writer.store)) is writer:
            del _writers[id(writer.store)]


def _drain_all() -> None:
    deadline = time.monotonic() + EXIT_WAIT_S
    with _registry:
        writers = list(_writers.values())
    for writer in writers:
        with contextlib.suppress(Exception):
            writer.drain(max(deadline - time.monotonic(), 0.1))
