"""One step's attempts, for the :class:`~nbflow.engine.runner.Runner`: its key, a cache
hit or a reuse, starting it on the executor, and finishing it (output, failure, retry)."""

from __future__ import annotations

import time
import traceback as tb
import warnings
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from nbflow.engine.cache import cache_key, files_payload, untracked_warning
from nbflow.engine.executors import Outcome, StepTask
from nbflow.engine.files import declared_snapshot
from nbflow.engine.plans import describe, valid_text
from nbflow.engine.reads import spec_for
from nbflow.engine.tracebacks import clean_trace
from nbflow.errors import (
    InputMutatedError,
    PickledOutputWarning,
    StoreFullError,
    UntrustedStoreError,
)
from nbflow.store.records import CacheHit, EventType, StepExecution, ValueRef
from nbflow.values.frame_refusal import PICKLED_BECAUSE

if TYPE_CHECKING:
    import datetime as dt

    from nbflow.engine.executors import Executor
    from nbflow.engine.inputs import InputGuard
    from nbflow.engine.plans import StepPlan
    from nbflow.engine.starts import StartSignals
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store
    from nbflow.store.records import NewEvent, RunRecord
    from nbflow.values import EncodedValue


class StepAttempts:
    """The per-step half of the runner (the run's half is in ``runner.py``)."""

    if TYPE_CHECKING:
        store: Store
        run: RunRecord
        graph: FlowGraph
        plans: Mapping[str, StepPlan]
        executor: Executor
        _unscheduled: list[str]
        _buffer: list[NewEvent]
        _declared: dict[str, dict[str, str | None]]
        _basis: dict[str, str]
        _outputs: dict[str, ValueRef]
        _values: dict[str, Any]
        _consumers: dict[str, set[str]]
        _attempts: dict[str, int]
        _failed: dict[str, tuple[str, BaseException | None, str]]
        _skipped: set[str]
        _skipped_because: dict[str, str]
        _starts: StartSignals
        _guard: InputGuard

        def _emit(
            self,
            type: EventType,
            step: str | None = None,
            attempt: int | None = None,
            ts: dt.datetime | None = None,
            **payload: Any,
        ) -> None: ...

        def flush(self) -> None:  # noqa: D102 - the runner's
            ...

        def put_value(self, step: str, encoded: EncodedValue) -> ValueRef:  # noqa: D102
            ...

        def _written_before_read(self, inputs: tuple[str, ...]) -> None: ...

        def _gate_reached(self, name: str) -> None: ...

    # -- one step -------------------------------------------------------------------------

    def _inputs(self, name: str, outputs: Mapping[str, ValueRef] | None = None) -> dict[str, str]:
        outputs = self._outputs if outputs is None else outputs
        return {u: outputs[u].hash for u in self.graph.steps[name].upstream}

    def _key(self, name: str, outputs: Mapping[str, ValueRef] | None = None) -> str:
        """The step's cache key, from the outputs recorded so far (or ``outputs``)."""
        plan = self.plans[name]
        declared = self._declared[name] = declared_snapshot(plan.step.options.inputs)
        return cache_key(plan.fingerprint, self._inputs(name, outputs), plan.params, declared)

    def _cached(self, name: str, key: str, hit: CacheHit) -> None:
        files: dict[str, Any] = {} if hit.files is None else {"files": hit.files.to_json()}
        self._emit(
            EventType.STEP_CACHED,
            name,
            0,
            cache_key=hit.cache_key,  # the key itself, or that of the files it read
            **files,
            fingerprint=self.plans[name].fingerprint,
            output=hit.output.to_json(),
            inputs=self._inputs(name),
            source_run_id=hit.origin,
            params=dict(self.plans[name].params),  # in the key: what the hit's source read
        )
        self._outputs[name] = hit.output
        self._gate_reached(name)
        self._release_inputs(name)

    def _take_over(self, name: str, row: StepExecution) -> None:
        """Record an output reused from the parent run: a reference, no bytes."""
        assert row.output is not None
        files: dict[str, Any] = {} if row.files is None else {"files": row.files.to_json()}
        params: dict[str, Any] = {} if row.params is None else {"params": dict(row.params)}
        self._emit(
            EventType.STEP_CACHED,
            name,
            0,
            cache_key=row.cache_key,
            **files,
            fingerprint=row.fingerprint,
            output=row.output.to_json(),
            inputs=dict(row.inputs),
            source_run_id=row.source_run_id or row.run_id,
            reused_from=row.run_id,
            **params,
        )
        self._outputs[name] = row.output
        self._gate_reached(name)  # (a fork decides each gate anew, even one it reuses)

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

    def _record_starts(self) -> None:
        """Record the queued steps that have really started since last looked (and tell
        the listeners at once: a live view shows them running)."""
        started = self._starts.take()
        for name, attempt, at in started:
            self._emit(EventType.STEP_STARTED, name, attempt, ts=at)
        if started:
            self.flush()

    def _start(self, name: str, key: str, delay: float = 0.0) -> Future[Any]:
        self._schedule()
        attempt = self._attempts.get(name, 0) + 1
        self._attempts[name] = attempt
        plan = self.plans[name]
        if plan.reads.untracked and attempt == 1:  # said in the log, and as a warning
            self._buffer.append(untracked_warning(name, plan.reads.untracked))
        parallel = self.executor.parallel
        if delay and not parallel:
            time.sleep(delay)  # inline: the retry starts after its delay, not before
            delay = 0.0
        # A parallel executor may hold the step back until a worker is free: it is queued
        # until its task says it started (see nbflow.engine.starts).
        self._emit(
            EventType.STEP_QUEUED if parallel else EventType.STEP_STARTED,
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
        copies = plan.step.options.copy_inputs
        if self.executor.shares_memory and not copies:
            self._written_before_read(plan.step.inputs)
        expected = self._guard.expected(name, kwargs, copies)
        kwargs.update(plan.params)
        self.flush()  # upstream completions and this start are durable before it runs
        options = plan.step.options
        reads = spec_for(getattr(self.store, "path", None), self._declared.get(name, {}))
        task = StepTask(
            name,
            plan.step.func,
            kwargs,
            options.timeout,
            inputs=plan.step.inputs,
            expected=expected,
            copy_inputs=copies,
            started=self._starts.queued(name, attempt) if parallel else None,
            reads=reads if options.track_reads else None,
        )
        self._basis[name] = key
        return self.executor.submit(task, delay)

    def _finish(self, name: str, attempt: int, future: Future[Any]) -> Future[Any] | None:
        """Record a finished attempt; return the future of its retry, if one is due."""
        outcome: Outcome = future.result()
        step = self.plans[name].step
        self._record_starts()
        late, end = self._starts.settle(name, attempt, outcome.started_at, outcome.finished_at)
        if late is not None:  # its news never came: the outcome says when it started
            self._emit(EventType.STEP_STARTED, name, attempt, ts=late)
        self._guard.settle(name, step.inputs, outcome, self._values)
        if outcome.error is None:
            try:
                ref = self.put_value(name, outcome.encoded)
            except Exception as exc:
                outcome = Outcome(error=exc, trace=tb.format_exc(), seconds=outcome.seconds)
            else:
                files = files_payload(
                    self._basis[name], self._declared.get(name, {}), outcome.files_read
                )
                # A frame that had to be pickled says why, in its record and out loud.
                because = outcome.encoded.meta.get(PICKLED_BECAUSE)
                if because is not None:
                    files[PICKLED_BECAUSE] = because
                    warning = PickledOutputWarning(name, ref.type_name, because)
                    warnings.warn(warning, stacklevel=2)
                self._emit(
                    EventType.STEP_OUTPUT_RECORDED, name, attempt, output=ref.to_json(), **files
                )
                self._emit(
                    EventType.STEP_COMPLETED,
                    name,
                    attempt,
                    ts=end,
                    duration_ms=outcome.seconds * 1000.0,
                )
                self._outputs[name] = ref
                self._gate_reached(name)
                if self._consumers[name]:
                    self._values[name] = outcome.value
                self._release_inputs(name)
                return None
        error = describe(outcome.error)
        trace = clean_trace(valid_text(outcome.trace))
        # No retry could load an input this store refuses, nor store an output the full
        # disk refused, nor undo a step's changing its input (it would do it again).
        hopeless = isinstance(
            outcome.error, UntrustedStoreError | StoreFullError | InputMutatedError
        )
        if attempt <= step.options.retries and not hopeless:
            delay = step.options.retry_delay
            self._emit(
                EventType.STEP_RETRIED,
                name,
                attempt,
                ts=end,
                error=error,
                traceback=trace,
                next_attempt=attempt + 1,
                delay_s=delay,
                duration_ms=outcome.seconds * 1000.0,
            )
            return self._start(name, self._key(name), delay)
        self._emit(
            EventType.STEP_FAILED,
            name,
            attempt,
            ts=end,
            error=error,
            traceback=trace,
            duration_ms=outcome.seconds * 1000.0,
        )
        self._failed[name] = (error, outcome.error, trace)
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
                    self._guard.forget(upstream)
