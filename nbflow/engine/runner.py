"""Executing a run: scheduling, caching, retries, failure handling, checkpointing.

The runner is the only writer of a run's events. It buffers events and commits them at
the points that matter: before a step starts (so its upstream completions are durable
first), and when the run ends. A step's ``step_started`` therefore rides in the same
transaction as the completion of the step before it, and a fully cached re-run commits
once. Steps are recorded as ``step_scheduled`` just before the first step starts, so
the steps found in the cache before that (all of them, in a fully cached re-run) are
recorded by their ``step_cached`` event alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import traceback
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any

from nbflow.engine.attempts import StepAttempts
from nbflow.engine.cache import find_hit
from nbflow.engine.commits import Batch, RunCommits, WriteFailure
from nbflow.engine.durability import Durability
from nbflow.engine.executors import Executor
from nbflow.engine.gates import GateHolds
from nbflow.engine.inputs import InputGuard
from nbflow.engine.plans import Cancelled, Listener, StepPlan
from nbflow.engine.recovery import end_after_failure, failure_message
from nbflow.engine.starts import StartSignals
from nbflow.engine.writer import Writer, writer_for
from nbflow.errors import StepFailed
from nbflow.graph.dag import FlowGraph
from nbflow.store.base import Store
from nbflow.store.fold import RunState
from nbflow.store.records import (
    CacheHit,
    CacheHits,
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
    StepExecution,
    ValueRef,
    utcnow,
)

if TYPE_CHECKING:
    from nbflow.values import EncodedValue

CANCEL_POLL_S = 0.2  # how often a waiting runner checks whether the run was cancelled


class WriteFailed(Exception):
    """Raised inside the runner when the background writer could not commit."""


class Runner(GateHolds, StepAttempts):
    """Executes (or resumes) one run of a flow against a store."""

    def __init__(
        self,
        *,
        store: Store,
        run: RunRecord,
        graph: FlowGraph,
        plans: Mapping[str, StepPlan],
        executor: Executor,
        force: bool | Collection[str] = False,
        state: RunState | None = None,
        reused: Mapping[str, StepExecution] | None = None,
        listeners: Collection[Listener] = (),
        readers: Callable[[], Collection[Listener]] = lambda: (),
        cancel_requested: Callable[[], bool] = lambda: False,
        new: bool = False,
        durability: Durability = Durability.SYNC,
        approved: Collection[str] = (),
    ) -> None:
        """``new``: ``run`` is not in the store yet; the runner records it, with its first
        commit when every step is a cache hit (the run is then written once, finished).
        ``readers`` makes the listeners that read the run from the store (a live view):
        they are made once the run is there and hear every event from then on.
        ``durability``: when steps are committed (see :mod:`nbflow.engine.durability`).
        ``approved``: the gates approved in this run (see :mod:`nbflow.engine.gates`)."""
        self.store = store
        self.run = run
        self.graph = graph
        self.plans = plans
        self.executor = executor
        self.force_all = force is True
        self.force = set() if isinstance(force, bool) else set(force)
        self.listeners = list(listeners)
        self._readers = readers
        self._new = new
        if not new:
            self._add_readers()
        self.cancel_requested = cancel_requested
        self._buffer: list[NewEvent] = []
        self.durability = durability
        # Async and exit: values to write with the next batch; the run's commits, made by
        # the store's writer (async) or at the end (exit, whose batches wait in _held).
        self._pending: list[tuple[str, EncodedValue]] = []
        self._held: list[Batch] = []
        self._unwritten: dict[str, EncodedValue] = {}  # stored values not known written
        self._commits: RunCommits | None = None
        self._writer: Writer | None = None
        self._write_error: BaseException | None = None
        self._first_commit: list[NewEvent] | None = None  # (a new run's, made by the writer)
        if durability is not Durability.SYNC:
            self._commits = RunCommits(store, run, new=new, on_commit=self._committed)
            if durability is Durability.ASYNC:
                self._writer = writer_for(store)
        self._unscheduled: list[str] = []  # steps to run whose step_scheduled is not out yet
        self._planned_keys: dict[str, str] = {}  # cache keys worked out before the run began
        self._declared: dict[str, dict[str, str | None]] = {}  # files in each step's last key
        self._basis: dict[str, str] = {}  # the key each running step was looked up under
        self._outputs: dict[str, ValueRef] = {}  # step -> output usable downstream
        self._values: dict[str, Any] = {}  # values in memory, until no consumer is left
        self._consumers = {n: set(graph.dag.successors(n)) for n in graph.order}
        self._attempts: dict[str, int] = {}
        self._failed: dict[str, tuple[str, BaseException | None, str]] = {}
        self._skipped: set[str] = set()
        self._skipped_because: dict[str, str] = {}  # skipped step -> the failed step behind it
        parallel, shared = executor.parallel, executor.shares_memory
        self._starts = StartSignals(parallel=parallel)  # queued steps, until they start
        self._guard = InputGuard(shares_memory=shared, parallel=parallel)  # no step changes one
        if state is not None:
            for name in graph.order:
                row = state.latest(name)
                self._attempts[name] = state.last_attempt(name)
                if row is not None and row.status.has_output and row.output is not None:
                    self._outputs[name] = row.output
        self._init_gates(approved)
        # Outputs a fork takes over from its parent, by reference: recorded at start.
        self._reused = {
            n: row
            for n, row in (reused or {}).items()
            if n not in self._outputs and row.output is not None
        }

    # -- events -------------------------------------------------------------------------

    def _emit(
        self,
        type: EventType,
        step: str | None = None,
        attempt: int | None = None,
        ts: dt.datetime | None = None,
        **payload: Any,
    ) -> None:
        # (``ts``: when a step really started or ended where it ran, if not now.)
        self._buffer.append(NewEvent(type, step, attempt, payload, ts or utcnow()))

    def flush(self, *, final: bool = False) -> None:
        """Commit the buffered events (one transaction) and tell the listeners; in the
        async mode, hand them to the writer; in the exit mode, keep them until ``final``."""
        if self._commits is not None:
            self._hand_over(self._commits, final)
            return
        if not self._buffer:
            return
        events, self._buffer = self._buffer, []
        if self._new:
            self.run = self.store.record_run(self.run, events)
            self._recorded()
        else:
            self.run = self.store.append(self.run.run_id, self.run.version, events)
        for listener in self.listeners:
            with contextlib.suppress(Exception):  # a display problem must never fail a run
                listener(self.run, events)

    def _hand_over(self, commits: RunCommits, final: bool) -> None:
        if self._buffer or self._pending:
            batch = Batch(self._buffer, self._pending)
            self._buffer, self._pending = [], []
            if self._writer is not None:
                self._writer.submit(commits, batch)
            else:
                self._held.append(batch)
        if final and self._held:
            batches, self._held = self._held, []
            commits.handed(len(batches))
            commits.write(batches)

    def _committed(self, run: RunRecord, events: list[NewEvent], created: bool) -> None:
        """The writer committed ``events`` (in its thread): tell the listeners. The first
        commit of a new run is told to the readers in the runner's thread, by ``_end``
        (a live view is made where the run was started)."""
        if created:
            self._first_commit = events
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):  # a display problem must never fail a run
                listener(run, events)

    def put_value(self, step: str, encoded: EncodedValue) -> ValueRef:
        """Store ``step``'s output now (sync), or with the next batch (its ref at once)."""
        if self._commits is None:
            return self.store.put_value(encoded)
        self._pending.append((step, encoded))
        if not encoded.ref.is_inline:
            self._unwritten[step] = encoded
        return encoded.ref

    def _written_before_read(self, inputs: tuple[str, ...]) -> None:
        """Make sure the checkpoints of ``inputs`` are written before a step that gets
        the very objects (not copies) starts: their stored bytes may be the objects'
        own memory (a frame's columns, an array), which that step could change in place
        (nbflow refuses such a step, but only once it has run). Inline values and
        copies are never shared, so only these few wait for the writer."""
        shared = [u for u in inputs if u in self._unwritten]
        if not shared or self._commits is None:
            return
        if self._writer is None:  # exit: these values now, their events still at the end
            for u in shared:
                try:
                    self.store.put_value(self._unwritten.pop(u))
                except Exception as exc:
                    trace = "".join(traceback.format_exception(exc))
                    self._commits.failure = WriteFailure(exc, trace, u, [])
                    raise WriteFailed() from exc
            return
        hashes = {self._unwritten.pop(u).ref.hash for u in shared}
        self.flush()
        self._commits.wait_values(hashes)
        if self._commits.failure is not None:
            raise WriteFailed()

    def _end(self) -> None:
        """Commit everything of the run and wait for it; if a write failed, record how
        the run ends instead (see :mod:`nbflow.engine.recovery`)."""
        commits = self._commits
        if commits is None:
            self.flush()
            return
        self.flush(final=True)
        commits.wait()
        failure = commits.failure
        if failure is None:
            self.run = commits.run
            if self._first_commit is not None:
                before = len(self.listeners)
                self._recorded()
                for listener in self.listeners[before:]:
                    with contextlib.suppress(Exception):  # never fail a run for a display
                        listener(self.run, self._first_commit)
                self._first_commit = None
            return
        if commits.new:  # its first commit failed: there is no run to record the end in
            raise failure.error
        self._buffer = []
        self.run = end_after_failure(self.store, self.run.run_id, self.graph, failure)
        self._write_error = failure.error
        if failure.step is not None:
            self._failed.setdefault(
                failure.step, (failure_message(failure), failure.error, failure.trace)
            )
        for listener in list(self.listeners):  # the display shows how it ended
            with contextlib.suppress(Exception):
                listener(self.run, [])

    # -- the run ------------------------------------------------------------------------

    def execute(self, *, resume: bool = False) -> RunRecord:
        """Run every step not yet done; return the final run record.

        The run's lease is held (and renewed) while it runs, so no other process can
        advance it, and a reader elsewhere can tell a live run from one whose process died.
        A new run whose every step is a cache hit starts and ends in one commit: it is
        never seen running, so it takes no lease.
        """
        from nbflow.store.leases import Heartbeat

        run_id = self.run.run_id
        # From the cache lookup until the run is in the store (pending, running, or
        # finished at once), the store is held: a gc elsewhere, which keeps the values of
        # runs in the store that execute, cannot delete a value found in the cache before
        # the run that reuses it is recorded.
        with self.store.hold():
            try:
                todo = [
                    n for n in self.graph.order if n not in self._outputs and n not in self._reused
                ]
                candidates = self._cache_candidates(todo)
                at_once = (
                    self.run.status is RunStatus.PENDING
                    and not resume
                    and not self._reused
                    and self._all_cached(todo, candidates)
                )
                if self._new and not at_once:
                    self.store.create_run(self.run)
                    if self._commits is not None:
                        self._commits.new = False
                    self._recorded()
                lease = None if at_once else self.store.claim(run_id)
            except BaseException:
                self.executor.shutdown()  # its workers (a Dask client nbflow made) go too
                raise
            if lease is None:
                # Written in this thread, in its one commit, while the store is held.
                self._writer = None
                return self._execute(resume, todo, candidates)
        ttl = (lease.expires_at - lease.acquired_at).total_seconds()
        heartbeat = Heartbeat(lambda: self.store.renew(run_id), ttl, run_id).start()
        try:
            return self._execute(resume, todo, candidates)
        finally:
            heartbeat.stop()
            if self.run.status.at_rest:
                with contextlib.suppress(Exception):  # an unreleased lease only expires later
                    self.store.release(run_id)
            else:
                # Its end could not be recorded (the store refused the write): the lease
                # stays, so the run reads as interrupted, and resumes, once it can be.
                self.store.abandon(run_id)

    def _recorded(self) -> None:
        """The new run is in the store now."""
        self._new = False
        self._add_readers()

    def _add_readers(self) -> None:
        with contextlib.suppress(Exception):  # a display problem must never fail a run
            self.listeners.extend(self._readers())

    def _all_cached(self, todo: list[str], candidates: Mapping[str, CacheHit]) -> bool:
        """Whether every step of ``todo`` is a cache hit (their keys are kept for the run)."""
        outputs = dict(self._outputs)
        keys: dict[str, str] = {}
        for name in todo:
            if not self.plans[name].cacheable or self._forced(name):
                return False
            key = self._key(name, outputs)
            hit = find_hit(candidates, key)
            if hit is None:
                return False
            keys[name] = key
            outputs[name] = hit.output
        self._planned_keys = keys
        return True

    def _execute(
        self, resume: bool, todo: list[str], candidates: Mapping[str, CacheHit]
    ) -> RunRecord:
        from nbflow.engine.provenance import run_record

        self._emit(
            EventType.RUN_STARTED,
            resume=resume,
            steps=list(self.graph.order),
            durability=self.durability.value,
            # (Its values are written at once, not with the run's batches: a record that
            # cannot be written is told in the record, and never fails the run.)
            record=run_record(
                self.graph,
                self.plans,
                lambda _, value: self.store.put_value(value),
                self.store.has_blob,
            ),
        )
        for name in self.graph.order:
            if name in self._reused:
                self._take_over(name, self._reused[name])
        if self._commits is not None and self._writer is None and not self._commits.new:
            # Exit: the run is seen running (and, if its process dies, interrupted) at once;
            # its steps are committed at the end.
            self.flush(final=True)
        self._unscheduled = list(todo)
        try:
            self._loop(todo, candidates)
        except WriteFailed:
            pass  # the run ends below, as the failure decides
        except Cancelled:
            self._emit(EventType.RUN_CANCELLED, error="cancelled by the user")
            self._end()
            return self.run
        except KeyboardInterrupt:
            self._emit(EventType.RUN_INTERRUPTED, error="interrupted (KeyboardInterrupt)")
            self._safe_flush()
            raise
        except BaseException as exc:
            self._emit(EventType.RUN_FAILED, error=f"nbflow failed while running: {exc!r}")
            self._safe_flush()
            raise
        finally:
            self.executor.shutdown()
        if self._failed:
            first = next(n for n in self.graph.order if n in self._failed)
            message, _, _ = self._failed[first]
            self._emit(EventType.RUN_FAILED, error=f"step {first!r} failed: {message}")
        elif self.holding:
            self._open_gates()
        else:
            self._emit(EventType.RUN_COMPLETED)
        self._end()
        return self.run

    def raise_for_failure(self) -> None:
        """Raise StepFailed for the first failed step, chained to its exception (or the
        error of a write that failed for no step)."""
        if not self._failed:
            if self._write_error is not None:
                raise self._write_error
            return
        first = next(n for n in self.graph.order if n in self._failed)
        message, exc, trace = self._failed[first]
        raise StepFailed(first, self.run.run_id, message, trace) from exc

    def _safe_flush(self) -> None:
        # Recording how the run ended must not hide the error that ended it.
        with contextlib.suppress(Exception):
            self._end()

    def _cache_candidates(self, todo: list[str]) -> Mapping[str, CacheHit]:
        fingerprints = [
            self.plans[n].fingerprint
            for n in todo
            if self.plans[n].cacheable and not self._forced(n)
        ]
        if not fingerprints:
            return CacheHits()
        return self.store.cache_hits(self.run.flow, fingerprints)

    def _forced(self, name: str) -> bool:
        return self.force_all or name in self.force

    def _loop(self, todo: list[str], candidates: Mapping[str, CacheHit]) -> None:
        waiting = dict.fromkeys(todo)  # in order, and removed from in O(1)
        running: dict[Future[Any], tuple[str, int, float]] = {}
        while waiting or running:
            if self.cancel_requested():
                for future in running:
                    future.cancel()
                raise Cancelled()
            if self._commits is not None and self._commits.failure is not None:
                for future in running:
                    future.cancel()
                raise WriteFailed()
            launched = False
            for name in list(waiting):
                upstream = self.graph.steps[name].upstream
                blocked = [u for u in upstream if u in self._failed or u in self._skipped]
                if blocked:
                    del waiting[name]
                    self._skip(name, blocked[0])
                    continue
                if not all(u in self._outputs for u in upstream):
                    continue
                del waiting[name]
                key = self._planned_keys.pop(name, None) or self._key(name)
                hit = find_hit(candidates, key) if self.plans[name].cacheable else None
                if hit is not None:
                    self._cached(name, key, hit)
                    continue
                future = self._start(name, key)
                running[future] = (name, self._attempts[name], time.monotonic())
                launched = True
                if not self.executor.parallel:
                    break  # inline: finish this step before looking at the next
            if launched and self.executor.parallel:
                continue
            if not running:
                if waiting and not launched and self.holding:
                    return  # what is left waits for a gate's approval
                if waiting and not launched:
                    # Nothing runs and nothing can start: the graph and the outputs disagree.
                    raise RuntimeError(
                        f"steps {list(waiting)} can never start: their inputs are missing"
                    )
                continue
            # Wake up now and then to notice run.cancel() while long steps run (an executor
            # that can stop them, like Dask's, then does so at once).
            done, _ = wait(
                [*running, self._starts.wake], timeout=CANCEL_POLL_S, return_when=FIRST_COMPLETED
            )
            self._record_starts()
            for future in done:
                if future not in running:
                    continue  # the news of a start, recorded above
                name, attempt, _started = running.pop(future)
                retry = self._finish(name, attempt, future)
                if retry is not None:
                    running[retry] = (name, self._attempts[name], time.monotonic())
            if done and running:
                # Others still run: what just ended is shown as ended now, not at the
                # next step's start (which may be when the others end).
                self.flush()
