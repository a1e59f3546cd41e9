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
import time
import traceback as tb
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from nbflow.definition.step import Step
from nbflow.engine.cache import cache_key, untracked_warning
from nbflow.engine.executors import Executor, Outcome, StepTask
from nbflow.errors import StepFailed, StoreFullError, UntrustedStoreError
from nbflow.graph.dag import FlowGraph
from nbflow.graph.fingerprint import StepReads
from nbflow.store.base import Store
from nbflow.store.fold import RunState
from nbflow.store.records import (
    CacheHit,
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
    StepExecution,
    ValueRef,
)

Listener = Callable[[RunRecord, list[NewEvent]], None]
CANCEL_POLL_S = 0.2  # how often a waiting runner checks whether the run was cancelled


@dataclass(frozen=True)
class StepPlan:
    """What the runner needs to know of one step for this run."""

    step: Step
    fingerprint: str
    params: Mapping[str, Any]
    reads: StepReads = field(default_factory=StepReads)  # what it read besides code

    @property
    def name(self) -> str:
        """The step's name."""
        return self.step.name

    @property
    def cacheable(self) -> bool:
        """Whether a stored output may stand for running it: caching is on, and it reads
        nothing nbflow cannot hash (an untracked step runs every time)."""
        return self.step.options.cache and not self.reads.untracked


class Cancelled(Exception):
    """Raised inside the runner when the run was asked to stop."""


class Runner:
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
    ) -> None:
        """``new``: ``run`` is not in the store yet; the runner records it, with its first
        commit when every step is a cache hit (the run is then written once, finished).
        ``readers`` makes the listeners that read the run from the store (a live view):
        they are made once the run is there and hear every event from then on."""
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
        self._unscheduled: list[str] = []  # steps to run whose step_scheduled is not out yet
        self._planned_keys: dict[str, str] = {}  # cache keys worked out before the run began
        self._outputs: dict[str, ValueRef] = {}  # step -> output usable downstream
        self._values: dict[str, Any] = {}  # values in memory, until no consumer is left
        self._consumers = {n: set(graph.dag.successors(n)) for n in graph.order}
        self._attempts: dict[str, int] = {}
        self._failed: dict[str, tuple[str, BaseException | None, str]] = {}
        self._skipped: set[str] = set()
        self._skipped_because: dict[str, str] = {}  # skipped step -> the failed step behind it
        if state is not None:
            for name in graph.order:
                row = state.latest(name)
                self._attempts[name] = state.last_attempt(name)
                if row is not None and row.status.has_output and row.output is not None:
                    self._outputs[name] = row.output
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
        **payload: Any,
    ) -> None:
        self._buffer.append(NewEvent(type, step, attempt, payload))

    def flush(self) -> None:
        """Commit the buffered events (one transaction) and tell the listeners."""
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
                    self._recorded()
                lease = None if at_once else self.store.claim(run_id)
            except BaseException:
                self.executor.shutdown()  # its workers (a Dask client nbflow made) go too
                raise
            if lease is None:
                return self._execute(resume, todo, candidates)
        ttl = (lease.expires_at - lease.acquired_at).total_seconds()
        heartbeat = Heartbeat(lambda: self.store.renew(run_id), ttl, run_id).start()
        try:
            return self._execute(resume, todo, candidates)
        finally:
            heartbeat.stop()
            if self.run.status.finished:
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
            hit = candidates.get(key)
            if hit is None:
                return False
            keys[name] = key
            outputs[name] = hit.output
        self._planned_keys = keys
        return True

    def _execute(
        self, resume: bool, todo: list[str], candidates: Mapping[str, CacheHit]
    ) -> RunRecord:
        self._emit(EventType.RUN_STARTED, resume=resume, steps=list(self.graph.order))
        for name in self.graph.order:
            if name in self._reused:
                self._take_over(name, self._reused[name])
        self._unscheduled = list(todo)
        try:
            self._loop(todo, candidates)
        except Cancelled:
            self._emit(EventType.RUN_CANCELLED, error="cancelled by the user")
            self.flush()
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
        else:
            self._emit(EventType.RUN_COMPLETED)
        self.flush()
        return self.run

    def raise_for_failure(self) -> None:
        """Raise StepFailed for the first failed step, chained to its exception."""
        if not self._failed:
            return
        first = next(n for n in self.graph.order if n in self._failed)
        message, exc, trace = self._failed[first]
        raise StepFailed(first, self.run.run_id, message, trace) from exc

    def _safe_flush(self) -> None:
        # Recording how the run ended must not hide the error that ended it.
        with contextlib.suppress(Exception):
            self.flush()

    def _cache_candidates(self, todo: list[str]) -> Mapping[str, CacheHit]:
        fingerprints = [
            self.plans[n].fingerprint
            for n in todo
            if self.plans[n].cacheable and not self._forced(n)
        ]
        if not fingerprints:
            return {}
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
                hit = candidates.get(key) if self.plans[name].cacheable else None
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
                if waiting and not launched:
                    # Nothing runs and nothing can start: the graph and the outputs disagree.
                    raise RuntimeError(
                        f"steps {list(waiting)} can never start: their inputs are missing"
                    )
                continue
            # Wake up now and then to notice run.cancel() while long steps run (an executor
            # that can stop them, like Dask's, then does so at once).
            done, _ = wait(list(running), timeout=CANCEL_POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                name, attempt, _started = running.pop(future)
                retry = self._finish(name, attempt, future)
                if retry is not None:
                    running[retry] = (name, self._attempts[name], time.monotonic())

    # -- one step -------------------------------------------------------------------------

    def _inputs(self, name: str, outputs: Mapping[str, ValueRef] | None = None) -> dict[str, str]:
        outputs = self._outputs if outputs is None else outputs
        return {u: outputs[u].hash for u in self.graph.steps[name].upstream}

    def _key(self, name: str, outputs: Mapping[str, ValueRef] | None = None) -> str:
        """The step's cache key, from the outputs recorded so far (or ``outputs``)."""
        plan = self.plans[name]
        return cache_key(plan.fingerprint, self._inputs(name, outputs), plan.params)

    def _cached(self, name: str, key: str, hit: CacheHit) -> None:
        self._emit(
            EventType.STEP_CACHED,
            name,
            0,
            cache_key=key,
            fingerprint=self.plans[name].fingerprint,
            output=hit.output.to_json(),
            inputs=self._inputs(name),
            source_run_id=hit.origin,
        )
        self._outputs[name] = hit.output
        self._release_inputs(name)

    def _take_over(self, name: str, row: StepExecution) -> None:
        """Record an output reused from the parent run: a reference, no bytes."""
        assert row.output is not None
        self._emit(
            EventType.STEP_CACHED,
            name,
            0,
            cache_key=row.cache_key,
            fingerprint=row.fingerprint,
            output=row.output.to_json(),
            inputs=dict(row.inputs),
            source_run_id=row.source_run_id or row.run_id,
            reused_from=row.run_id,
        )
        self._outputs[name] = row.output

    def _skip(self, name: str, because: str) -> None:
        root = self._skipped_because.get(because, because)
        self._skipped.add(name)
        self._skipped_because[name] = root
        self._emit(EventType.STEP_SKIPPED, name, 0, reason=f"upstream step {root!r} failed")

    def _schedule(self) -> None:
        """Record as scheduled every step still waiting, before the first one starts.

        A step found cached (or skipped) before any step starts is never scheduled: a
        fully cached re-run records only its ``step_cached`` events.
        """
        if not self._unscheduled:
            return
        for name in self._unscheduled:
            if name not in self._outputs and name not in self._skipped:
                self._emit(EventType.STEP_SCHEDULED, name)
        self._unscheduled = []

    def _start(self, name: str, key: str, delay: float = 0.0) -> Future[Any]:
        self._schedule()
        attempt = self._attempts.get(name, 0) + 1
        self._attempts[name] = attempt
        plan = self.plans[name]
        if plan.reads.untracked and attempt == 1:  # said in the log, and as a warning
            self._buffer.append(untracked_warning(name, plan.reads.untracked))
        self._emit(
            EventType.STEP_STARTED,
            name,
            attempt,
            cache_key=key,
            fingerprint=plan.fingerprint,
            params=dict(plan.params),
        )
        self._emit(EventType.STEP_INPUT_RECORDED, name, attempt, inputs=self._inputs(name))
        try:
            kwargs = {u: self._value(u) for u in plan.step.inputs}
        except UntrustedStoreError as exc:
            # An input this store may not unpickle fails the step, with the error naming
            # the step whose output it is; no retry could load it either.
            refused: Future[Any] = Future()
            refused.set_result(Outcome(error=exc, trace=tb.format_exc()))
            return refused
        kwargs.update(plan.params)
        self.flush()  # upstream completions and this start are durable before it runs
        task = StepTask(name, plan.step.func, kwargs, plan.step.options.timeout)
        return self.executor.submit(task, delay)

    def _finish(self, name: str, attempt: int, future: Future[Any]) -> Future[Any] | None:
        """Record a finished attempt; return the future of its retry, if one is due."""
        outcome: Outcome = future.result()
        step = self.plans[name].step
        if outcome.error is None:
            try:
                ref = self.store.put_value(outcome.encoded)
            except Exception as exc:
                outcome = Outcome(error=exc, trace=tb.format_exc(), seconds=outcome.seconds)
            else:
                self._emit(EventType.STEP_OUTPUT_RECORDED, name, attempt, output=ref.to_json())
                self._emit(
                    EventType.STEP_COMPLETED,
                    name,
                    attempt,
                    duration_ms=outcome.seconds * 1000.0,
                )
                self._outputs[name] = ref
                if self._consumers[name]:
                    self._values[name] = outcome.value
                self._release_inputs(name)
                return None
        error = _describe(outcome.error)
        # No retry could load an input this store refuses, nor store an output the full
        # disk refused.
        hopeless = isinstance(outcome.error, UntrustedStoreError | StoreFullError)
        if attempt <= step.options.retries and not hopeless:
            delay = step.options.retry_delay
            self._emit(
                EventType.STEP_RETRIED,
                name,
                attempt,
                error=error,
                traceback=valid_text(outcome.trace),
                next_attempt=attempt + 1,
                delay_s=delay,
                duration_ms=outcome.seconds * 1000.0,
            )
            return self._start(name, self._key(name), delay)
        self._emit(
            EventType.STEP_FAILED,
            name,
            attempt,
            error=error,
            traceback=valid_text(outcome.trace),
            duration_ms=outcome.seconds * 1000.0,
        )
        self._failed[name] = (error, outcome.error, valid_text(outcome.trace))
        return None

    def _value(self, name: str) -> Any:
        if name not in self._values:
            ref = self._outputs[name]
            self._values[name] = self.store.load_output(ref, step=name, run_id=self.run.run_id)
        return self._values[name]

    def _release_inputs(self, name: str) -> None:
        """Forget in-memory values that no step still waiting needs."""
        for upstream in self.graph.steps[name].upstream:
            consumers = self._consumers.get(upstream)
            if consumers is not None:
                consumers.discard(name)
                if not consumers:
                    self._values.pop(upstream, None)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    return valid_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def valid_text(text: str) -> str:
    """``text`` with any lone surrogate written as its escape (``\\udc80``): an error
    message may hold one, and no store (nor a pandas frame) can hold it as text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
