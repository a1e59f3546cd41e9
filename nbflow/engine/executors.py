"""Where step functions run: inline in the driver, on a thread pool, in worker processes
(:mod:`nbflow.engine.processes`) or on a Dask cluster (:mod:`nbflow.engine.dask_executor`).

The driver (the runner) does every store write; executors only call the step function
and encode its result, so a slow step never holds the store.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nbflow.engine.reads import ReadSpec, recording
from nbflow.errors import InputMutatedError, StepTimeout

EXECUTORS = ("inline", "threads", "processes", "dask")


def call_with_timeout(
    name: str, func: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None
) -> Any:
    """Call ``func(**kwargs)``; raise StepTimeout if it runs longer than ``timeout`` seconds.

    Python cannot stop a running thread: on timeout the call is abandoned (its result
    ignored) and keeps running in the background until it returns.
    """
    from nbflow.engine.coroutines import is_async, run_awaitable

    if is_async(func):
        return run_awaitable(name, lambda: func(**kwargs), timeout)
    if timeout is None:
        return _awaited(name, func(**kwargs), None)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func(**kwargs)
        except BaseException as exc:
            box["error"] = exc

    # The thread runs in a copy of this context, so the files it opens count for the step.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(target,), name=f"nbflow-step-{name}", daemon=True
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise StepTimeout(f"step {name!r} did not finish within its timeout of {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return _awaited(name, box.get("value"), timeout)


def _awaited(name: str, value: Any, timeout: float | None) -> Any:
    """``value``, or its result if it is a coroutine (a plain function that returned one,
    such as a wrapper of an ``async def`` step)."""
    if not inspect.iscoroutine(value):
        return value
    from nbflow.engine.coroutines import run_awaitable

    return run_awaitable(name, lambda: value, timeout)


@dataclass
class Outcome:
    """What one attempt of a step produced: its value and encoding, or its error.

    ``started_at`` / ``finished_at``: when the step really started and ended (epoch
    seconds, where it ran), None if it never started; ``mutated``: inputs the step
    changed in place.
    """

    value: Any = None
    encoded: Any = None
    error: BaseException | None = None
    trace: str = ""
    seconds: float = 0.0
    files_read: dict[str, str | None] | None = None  # files opened for reading -> hash
    started_at: float | None = None
    finished_at: float | None = None
    mutated: tuple[str, ...] = ()


class StartRelay:
    """A picklable ``started`` callback: an executor that runs steps elsewhere replaces
    the runner's callback by one of these, which carries the news back (see
    :class:`StepTask`)."""

    def __call__(self, when: float) -> None:
        """Tell the driver the step started at ``when`` (epoch seconds)."""


@dataclass
class StepTask:
    """One attempt of a step, as executors receive it: a picklable callable.

    It calls the step function and encodes the result where it runs, so a process or
    cluster executor hashes and serializes in the worker; the driver only stores.
    """

    name: str
    func: Callable[..., Any]
    kwargs: dict[str, Any]
    timeout: float | None
    #: Which of ``kwargs`` are other steps' outputs (checked for changes, or copied).
    inputs: tuple[str, ...] = ()
    #: Digests of the inputs made by the driver (same objects); None: made here.
    expected: dict[str, str] | None = None
    copy_inputs: bool = False
    #: Told the time (epoch seconds) the step really starts, where it runs. A callback of
    #: the driver is dropped when the task is pickled; a StartRelay travels.
    started: Callable[[float], None] | None = None
    reads: ReadSpec | None = None  # record the files it opens (None: do not)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if not isinstance(state.get("started"), StartRelay):
            state["started"] = None
        return state

    def __call__(self) -> Outcome:
        """Run the step; never raises for an error of the step itself.

        With ``reads``, the files the step opened for reading are hashed where it ran
        (in the worker, for processes and Dask) and travel back in the Outcome."""
        from nbflow.engine.inputs import changed_inputs, prepare_inputs
        from nbflow.values import encode

        try:
            args, before = prepare_inputs(
                self.name, self.kwargs, self.inputs, self.expected, self.copy_inputs
            )
        except Exception as exc:
            return Outcome(error=exc, trace=traceback.format_exc())
        wall = time.time()
        if self.started is not None:
            with contextlib.suppress(Exception):  # news of the start must not fail the step
                self.started(wall)
        began = time.perf_counter()

        def ended(**outcome: Any) -> Outcome:
            # (Every outcome of a step that ran says how long it took and when it ran.)
            seconds = outcome.pop("seconds", None)
            return Outcome(
                seconds=_since(began) if seconds is None else seconds,
                started_at=wall,
                finished_at=time.time(),
                **outcome,
            )

        try:
            if self.reads is None:
                value = call_with_timeout(self.name, self.func, args, self.timeout)
            else:
                with recording(self.reads) as seen:
                    value = call_with_timeout(self.name, self.func, args, self.timeout)
        except Exception as exc:
            trace = traceback.format_exc()
            return ended(error=exc, trace=trace, mutated=changed_inputs(args, before))
        seconds = _since(began)
        files_read = seen.files() if self.reads is not None else None
        mutated = changed_inputs(args, before)
        if mutated:
            error = InputMutatedError(self.name, mutated[0])
            trace = f"{type(error).__name__}: {error}\n"
            return ended(error=error, trace=trace, seconds=seconds, mutated=mutated)
        try:
            encoded = encode(value, step=self.name)
        except Exception as exc:
            return ended(error=exc, trace=traceback.format_exc(), seconds=seconds)
        return ended(value=value, encoded=encoded, seconds=seconds, files_read=files_read)


def _since(began: float) -> float:
    return time.perf_counter() - began


class Executor:
    """Runs step tasks; ``submit`` returns a Future.

    A task's ``started`` callback must be called when the step really starts (StepTask
    does it where it runs); an executor that pickles tasks replaces it by a
    :class:`StartRelay` that brings the news back, or the start is recorded from the
    outcome, once the step is over.
    """

    parallel = False
    #: Whether steps get the driver's own objects (not copies): the driver then digests
    #: the inputs once for every step that reads them.
    shares_memory = True

    def submit(self, task: Callable[[], Any], delay: float = 0.0) -> Future[Any]:
        """Run ``task`` (after ``delay`` seconds) and return its future."""
        future: Future[Any] = Future()
        if delay:
            time.sleep(delay)
        try:
            future.set_result(task())
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and friends stop the run
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        """Release the executor's workers."""


class ThreadExecutor(Executor):
    """Independent steps run at once on a thread pool (good for I/O and for code that
    releases the GIL: pandas, numpy, DuckDB, network calls)."""

    parallel = True

    def __init__(self, max_workers: int | None):
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="nbflow")

    def submit(self, task: Callable[[], Any], delay: float = 0.0) -> Future[Any]:
        """Queue ``task`` on the pool, sleeping ``delay`` seconds in the worker first."""

        def delayed() -> Any:
            if delay:
                time.sleep(delay)
            return task()

        return self._pool.submit(delayed)

    def shutdown(self) -> None:
        """Wait for running tasks and stop the pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)
