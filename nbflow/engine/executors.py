"""Where step functions run: inline in the driver, on a thread pool, in worker processes
(:mod:`nbflow.engine.processes`) or on a Dask cluster (:mod:`nbflow.engine.dask_executor`).

The driver (the runner) does every store write; executors only call the step function
and encode its result, so a slow step never holds the store.
"""

from __future__ import annotations

import contextvars
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nbflow.engine.reads import ReadSpec, recording
from nbflow.errors import StepTimeout

EXECUTORS = ("inline", "threads", "processes", "dask")


def call_with_timeout(
    name: str, func: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None
) -> Any:
    """Call ``func(**kwargs)``; raise StepTimeout if it runs longer than ``timeout`` seconds.

    Python cannot stop a running thread: on timeout the call is abandoned (its result
    ignored) and keeps running in the background until it returns.
    """
    if timeout is None:
        return func(**kwargs)
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
    return box.get("value")


@dataclass
class Outcome:
    """What one attempt of a step produced: its value and encoding, or its error."""

    value: Any = None
    encoded: Any = None
    error: BaseException | None = None
    trace: str = ""
    seconds: float = 0.0
    files_read: dict[str, str | None] | None = None  # files opened for reading -> hash


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
    reads: ReadSpec | None = None  # record the files it opens (None: do not)

    def __call__(self) -> Outcome:
        """Run the step; never raises for an error of the step itself.

        With ``reads``, the files the step opened for reading are hashed where it ran
        (in the worker, for processes and Dask) and travel back in the Outcome."""
        from nbflow.values import encode

        began = time.perf_counter()
        files_read = None
        try:
            if self.reads is None:
                value = call_with_timeout(self.name, self.func, self.kwargs, self.timeout)
            else:
                with recording(self.reads) as seen:
                    value = call_with_timeout(self.name, self.func, self.kwargs, self.timeout)
        except Exception as exc:
            return Outcome(error=exc, trace=traceback.format_exc(), seconds=_since(began))
        seconds = _since(began)
        if self.reads is not None:
            files_read = seen.files()
        try:
            encoded = encode(value, step=self.name)
        except Exception as exc:
            return Outcome(error=exc, trace=traceback.format_exc(), seconds=seconds)
        return Outcome(value=value, encoded=encoded, seconds=seconds, files_read=files_read)


def _since(began: float) -> float:
    return time.perf_counter() - began


class Executor:
    """Runs step tasks; ``submit`` returns a Future."""

    parallel = False

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
