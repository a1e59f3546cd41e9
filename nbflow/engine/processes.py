"""The process executor: steps run in worker processes, shipped with cloudpickle.

cloudpickle sends functions defined in a notebook (or any ``__main__``) by value, with
the helpers and constants they read, so cell-defined steps work in a fresh process. The
worker calls the step and encodes its result (hashing and serializing happen there);
the driver stores it, so checkpointing stays in the process that holds the store.

Workers are started with "forkserver" (or "spawn" where it is missing), never "fork":
forking a process that has threads and an open DuckDB connection is unsafe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from nbflow.engine.executors import Executor, Outcome, StartRelay, StepTask
from nbflow.errors import ParameterError, RunError

__all__ = ["ProcessExecutor", "failure", "load_outcome", "run_in_worker"]


class ProcessExecutor(Executor):
    """Independent steps run at once in worker processes (good for CPU-bound Python that
    holds the GIL). Each run starts its own workers, which costs about a second."""

    parallel = True
    shares_memory = False

    def __init__(self, max_workers: int | None = None, start_method: str | None = None):
        if max_workers is not None and max_workers < 1:
            raise ParameterError(f"max_workers must be at least 1, not {max_workers}")
        methods = multiprocessing.get_all_start_methods()
        method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        context = multiprocessing.get_context(method)
        # Workers say on this queue when a step really starts (a pool takes tasks in
        # before a worker is free, so its futures cannot tell).
        self._starts: Any = context.Queue()
        self._waiting: dict[int, Callable[[float], None]] = {}
        self._serial = itertools.count(1)
        self._pool = ProcessPoolExecutor(
            max_workers=max_workers,
            mp_context=context,
            initializer=_listen_to,
            initargs=(self._starts,),
        )
        self._listener = threading.Thread(
            target=self._hear_starts, name="nbflow-process-starts", daemon=True
        )
        self._listener.start()

    def _hear_starts(self) -> None:
        while True:
            try:
                news = self._starts.get()
            except (EOFError, OSError):
                return
            if news is None:
                return
            token, when = news
            callback = self._waiting.pop(token, None)
            if callback is not None:
                with contextlib.suppress(Exception):
                    callback(when)

    def submit(self, task: Any, delay: float = 0.0) -> Future[Any]:
        """Send ``task`` (a StepTask) to a worker; the future's result is its Outcome."""
        result: Future[Any] = Future()
        name = getattr(task, "name", "?")
        if isinstance(task, StepTask) and task.started is not None:
            token = next(self._serial)
            self._waiting[token] = task.started
            task = dataclasses.replace(task, started=_ProcessRelay(token))
        try:
            payload = pickle_task(task, "a worker process")
        except RunError as exc:
            result.set_result(failure(exc))
            return result
        _main_without_spec_is_interactive()
        future = self._pool.submit(run_in_worker, name, payload, delay)
        future.add_done_callback(lambda done: _deliver(done, result, name))
        return result

    def shutdown(self) -> None:
        """Wait for running steps and stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._starts.put(None)
        self._listener.join(5.0)
        self._waiting.clear()
        with contextlib.suppress(Exception):
            self._starts.close()


#: In a worker process: the queue its steps' starts are told on.
_START_QUEUE: Any = None


def _listen_to(queue: Any) -> None:
    """Worker initializer: keep the driver's queue of starts."""
    global _START_QUEUE
    _START_QUEUE = queue


class _ProcessRelay(StartRelay):
    """Tells the driver, from the worker, that a step started."""

    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, when: float) -> None:
        """Put the news on the worker's queue of starts."""
        if _START_QUEUE is not None:
            _START_QUEUE.put((self.token, when))


def _main_without_spec_is_interactive() -> None:
    """Give ``__main__`` the ``__spec__ = None`` of an interactive session if it has none.

    multiprocessing reads ``__main__.__spec__`` when it starts a worker; IPython's
    ``%reset`` deletes it from a notebook's namespace, which would make starting the
    workers fail. Steps need nothing from ``__main__`` in the worker: cloudpickle ships
    what they use.
    """
    main = sys.modules.get("__main__")
    if main is not None and not hasattr(main, "__spec__"):
        main.__spec__ = None


def run_in_worker(name: str, payload: bytes, delay: float) -> bytes:
    """In the worker: unpickle the task, run it, and pickle its Outcome (never raises).

    The value itself is not sent back: the driver decodes it from the encoded form, so
    a large output crosses between the processes once.
    """
    import cloudpickle

    try:
        task = cloudpickle.loads(payload)
    except Exception as exc:
        outcome = failure(
            RunError(
                f"step {name!r} could not be loaded in the worker process: "
                f"{type(exc).__name__}: {exc}. Is the module that defines it importable there?"
            ),
            traceback.format_exc(),
        )
        return bytes(cloudpickle.dumps(outcome))
    if delay:
        time.sleep(delay)
    outcome = task() if isinstance(task, StepTask) else _call(task)
    if outcome.error is None and outcome.encoded is not None:
        outcome.value = None
    try:
        return bytes(cloudpickle.dumps(outcome))
    except Exception:  # an exception that does not pickle: keep its text
        error = outcome.error
        text = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        return bytes(cloudpickle.dumps(failure(RuntimeError(text), outcome.trace)))


def _call(task: Any) -> Outcome:
    began = time.perf_counter()
    try:
        value = task()
    except Exception as exc:
        return Outcome(error=exc, trace=traceback.format_exc(), seconds=_since(began))
    return Outcome(value=value, seconds=_since(began))


def load_outcome(data: bytes) -> Outcome:
    """In the driver: unpickle a worker's Outcome and rebuild the value from its encoded
    form."""
    import cloudpickle

    outcome: Outcome = cloudpickle.loads(data)
    if outcome.error is None and outcome.encoded is not None:
        from nbflow.values import decode

        encoded = outcome.encoded
        outcome.value = decode(
            encoded.ref, table=encoded.table, data=encoded.data, meta=encoded.meta
        )
    return outcome


def _deliver(done: Future[Any], result: Future[Any], name: str) -> None:
    """In the driver: deliver the worker's Outcome, or a failure if the worker died."""
    try:
        outcome = load_outcome(done.result())
    except BaseException as exc:  # a worker that died, or a result that does not load
        hint = ""
        if isinstance(exc, BrokenProcessPool):
            hint = (
                " A worker process died. If the flow is run from a script, run it under "
                "`if __name__ == '__main__':` (worker processes import the script)."
            )
        outcome = failure(
            RunError(
                f"the worker process running step {name!r} failed: "
                f"{type(exc).__name__}: {exc}{hint}"
            ),
            traceback.format_exc(),
        )
    with contextlib.suppress(InvalidStateError):  # the run was cancelled meanwhile
        result.set_result(outcome)


def pickle_task(task: Any, where: str) -> bytes:
    """``task`` pickled (with cloudpickle) to run in ``where``; RunError, naming the step
    and saying what to do, when something it holds cannot be pickled."""
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(task))
    except Exception as exc:
        name = getattr(task, "name", "?")
        raise RunError(
            f"step {name!r} cannot be sent to {where}: {type(exc).__name__}: {exc}. Run it "
            "with executor='inline' or 'threads', or make what it reads picklable."
        ) from None


def failure(error: BaseException, trace: str = "") -> Outcome:
    """An Outcome for an error of nbflow or of the worker, not of the step's own code."""
    return Outcome(error=error, trace=trace or f"{type(error).__name__}: {error}\n")


def _since(began: float) -> float:
    return time.perf_counter() - began
