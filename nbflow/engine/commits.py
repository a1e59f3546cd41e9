"""A run's commits when they are not made by its runner step by step (the async and exit
durability modes): batches of events and the values they reference, written in order.

The runner hands its events over in batches (:class:`Batch`), each with the values its
events reference. :meth:`RunCommits.write` writes any number of consecutive batches as
one: their values first, then all their events in one append (one transaction), so a
group of steps costs one commit. If that fails, the batches are written one at a time to
find the one that fails; those before it are kept. From the failing batch on, nothing of
the run is written: the runner learns of it from :attr:`RunCommits.failure` and records
how the run ended (see ``nbflow.engine.recovery``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import traceback as tb
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nbflow.store.records import EventType, NewEvent, RunRecord

if TYPE_CHECKING:
    from nbflow.store.base import Store
    from nbflow.values import EncodedValue

#: Called once a group of events is committed: the run as committed, the events, and
#: whether this commit recorded the run (a new run's first commit).
OnCommit = Callable[[RunRecord, list[NewEvent], bool], None]

EVENT_BYTES = 512  # what one event is counted as in the writer's queue


@dataclass
class Batch:
    """Events to append to one run, with the values they reference (written first)."""

    events: list[NewEvent]
    values: list[tuple[str, EncodedValue]] = field(default_factory=list)  # (step, value)

    @property
    def nbytes(self) -> int:
        """What the batch holds in memory until written (its values' bytes, mostly)."""
        stored = sum(v.nbytes for _, v in self.values if not v.ref.is_inline)
        return stored + EVENT_BYTES * len(self.events)


@dataclass
class WriteFailure:
    """A write of the run that failed, and what was not written because of it."""

    error: BaseException
    trace: str
    step: str | None  # the step whose checkpoint could not be written, if one was
    discarded: list[Batch]  # the failing batch and every later one, in order

    @property
    def events(self) -> list[NewEvent]:
        """The events that were not written, in order."""
        return [e for b in self.discarded for e in b.events]

    @property
    def values(self) -> list[tuple[str, EncodedValue]]:
        """The values that may not have been written, in order."""
        return [v for b in self.discarded for v in b.values]


class RunCommits:
    """Commits of one run's batches, in order; remembers the first failure."""

    def __init__(self, store: Store, run: RunRecord, *, new: bool, on_commit: OnCommit) -> None:
        self.store = store
        self.run = run  # as committed so far (the record the runner started from, at first)
        self.new = new  # the run is not in the store yet: its first commit records it
        self.failure: WriteFailure | None = None
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._handed = 0  # batches handed over
        self._settled = 0  # batches written, or discarded after a failure
        self._writing: str | None = None  # the step whose value is being written
        self._written: set[str] = set()  # hashes of the values written

    # -- the producer's side ------------------------------------------------------------

    def handed(self, count: int = 1) -> None:
        """``count`` more batches are on their way to :meth:`write`."""
        with self._cond:
            self._handed += count

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every batch handed over is written or discarded; return whether so."""
        with self._cond:
            return self._cond.wait_for(lambda: self._settled >= self._handed, timeout)

    def wait_values(self, hashes: set[str]) -> None:
        """Wait until the values with these hashes are written, or a write failed."""
        with self._cond:
            self._cond.wait_for(lambda: self.failure is not None or hashes <= self._written)

    @property
    def settled(self) -> bool:
        """Whether nothing handed over is still to be written."""
        with self._cond:
            return self._settled >= self._handed

    # -- the writer's side --------------------------------------------------------------

    def write(self, batches: Sequence[Batch]) -> None:
        """Write ``batches`` (consecutive, in order) as one commit if they can be; never
        raises: a failure is kept in :attr:`failure`."""
        try:
            if self.failure is not None:
                self.failure.discarded.extend(batches)
                return
            try:
                self._commit(batches)
            except Exception:
                if len(batches) == 1:
                    raise
                for i, batch in enumerate(batches):
                    try:
                        self._commit([batch])
                    except Exception as exc:
                        self._fail(exc, [batch], list(batches[i + 1 :]))
                        return
        except Exception as exc:
            self._fail(exc, list(batches), [])
        finally:
            with self._cond:
                self._settled += len(batches)
                self._cond.notify_all()

    def _fail(self, exc: Exception, failing: list[Batch], rest: list[Batch]) -> None:
        # (Told by the batches that were written one at a time, the last one to fail.)
        step = self._writing or _last_completed(failing)
        trace = "".join(tb.format_exception(exc))
        self.failure = WriteFailure(exc, trace, step, [*failing, *rest])

    def _commit(self, batches: Sequence[Batch]) -> None:
        self._writing = None
        events = [e for b in batches for e in b.events]
        sizes: dict[str, int] = {}
        for step, encoded in (v for b in batches for v in b.values):
            self._writing = step  # (the step a failure names)
            ref = self.store.put_value(encoded)
            self._writing = None
            with self._cond:
                self._written.add(ref.hash)
                self._cond.notify_all()
            if ref.size != encoded.ref.size:
                sizes[ref.hash] = ref.size
        if sizes:
            events = [_with_sizes(e, sizes) for e in events]
        if not events:
            return
        created = self.new
        if created:
            self.run = self.store.record_run(self.run, events)
            self.new = False
        else:
            self.run = self.store.append(self.run.run_id, self.run.version, events)
        with contextlib.suppress(Exception):  # a display problem must never fail a run
            self._on_commit(self.run, events, created)


def _with_sizes(event: NewEvent, sizes: dict[str, int]) -> NewEvent:
    """``event`` with the stored size of an output the store already held (equal content
    laid out differently in memory has the stored record's size)."""
    output = event.payload.get("output")
    if event.type is not EventType.STEP_OUTPUT_RECORDED or not isinstance(output, dict):
        return event
    size = sizes.get(output.get("hash", ""))
    if size is None:
        return event
    return dataclasses.replace(event, payload={**event.payload, "output": {**output, "size": size}})


def _last_completed(batches: Sequence[Batch]) -> str | None:
    """The last step whose completion is in ``batches`` (what a failed commit was for)."""
    for batch in reversed(batches):
        for event in reversed(batch.events):
            if event.type is EventType.STEP_COMPLETED and event.step is not None:
                return event.step
    return None
