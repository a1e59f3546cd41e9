"""The Dask executor: steps run on the workers of a Dask cluster (``distributed``).

``flow.run(executor=client)`` with a ``distributed.Client``, ``executor="dask"`` (the
current client, else ``$DASK_SCHEDULER_ADDRESS``), or ``executor="tcp://host:port"`` /
``"dask://host:port"`` (a client connected to that scheduler for the run). Tasks are shipped
the way the process executor ships them: the step is cloudpickled in the driver (so steps
defined in a notebook or ``__main__`` travel by value), the worker calls it and encodes the
output, and the driver only stores it. Every store write stays in the driver.

``distributed`` is imported only when a Dask executor is made, so ``import nbflow`` never
imports Dask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from nbflow.engine.executors import Executor, Outcome, StartRelay, StepTask
from nbflow.engine.processes import failure, load_outcome, pickle_task, run_in_worker
from nbflow.errors import ParameterError, RunError

__all__ = ["CONNECT_TIMEOUT", "DaskExecutor", "is_dask_address", "is_dask_client"]

#: Seconds to wait for a scheduler named by an address before giving up.
CONNECT_TIMEOUT = 10.0
#: Task payloads larger than this are scattered to the cluster rather than put in the
#: task itself (Dask warns about large task graphs).
SCATTER_BYTES = 1_000_000
ADDRESS_SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "ucx://", "inproc://")
INSTALL_HINT = 'pip install "nbflow[dask]"'


def is_dask_client(value: object) -> bool:
    """Whether ``value`` is a ``distributed.Client`` (checked without importing Dask)."""
    return any(
        cls.__name__ == "Client" and cls.__module__.split(".")[0] == "distributed"
        for cls in type(value).__mro__
    )


def is_dask_address(value: str) -> bool:
    """Whether ``value`` names a Dask scheduler: ``"dask"``, ``dask://…`` or ``tcp://…``."""
    return value == "dask" or value.startswith(("dask://", *ADDRESS_SCHEMES))


@dataclass(eq=False)
class _Job:
    """One submitted step attempt: its payload, the driver's future and Dask's."""

    name: str
    payload: Any  # bytes, or a Dask future of the scattered bytes
    result: Future[Any]
    dask: Any = None  # the distributed.Future, once submitted
    collected: bool = False  # its outcome is being (or has been) delivered
    extra: list[Any] = field(default_factory=list)  # its scattered payload, retry timer


class DaskExecutor(Executor):
    """Independent steps run at once on the workers of a Dask cluster.

    ``client`` is a synchronous ``distributed.Client``. With ``close_client=True`` the
    executor closes it on shutdown (nbflow made it); a client the user passed stays open.
    ``max_workers`` caps how many of the run's steps are on the cluster at once.
    """

    parallel = True
    shares_memory = False

    def __init__(self, client: Any, *, close_client: bool = False, max_workers: int | None = None):
        _check_max_workers(max_workers)
        if getattr(client, "asynchronous", False):
            raise ParameterError(
                "the Dask client is asynchronous: nbflow needs a synchronous "
                "distributed.Client (made without asynchronous=True)."
            )
        if getattr(client, "status", None) in ("closing", "closed"):
            raise ParameterError("the Dask client is closed: pass an open distributed.Client.")
        self.client = client
        self._close_client = close_client
        self._limit = max_workers
        self._lock = threading.Lock()
        self._jobs: set[_Job] = set()  # submitted, not finished
        self._queue: deque[_Job] = deque()  # waiting for a slot (max_workers)
        self._active = 0  # jobs on the cluster
        self._timers: set[threading.Timer] = set()
        self._token = uuid.uuid4().hex[:16]  # task keys: unique to this executor, and
        self._serial = itertools.count(1)  # numbered within it
        self._topic = f"nbflow-starts-{self._token}"
        self._waiting: dict[int, Callable[[float], None]] = {}
        self._subscribed = False

    # -- making one -------------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: Any, max_workers: int | None = None) -> DaskExecutor:
        """The executor for ``flow.run(executor=spec)``: a Client, ``"dask"`` or an address."""
        _check_max_workers(max_workers)
        if is_dask_client(spec):
            return cls(spec, max_workers=max_workers)
        distributed = _import_distributed()
        address = str(spec)
        if address == "dask":
            try:
                return cls(distributed.get_client(), max_workers=max_workers)
            except ValueError:  # no current client
                pass
            address = os.environ.get("DASK_SCHEDULER_ADDRESS", "")
            if not address:
                import dask

                address = dask.config.get("scheduler-address", None) or ""
            if not address:
                raise ParameterError(
                    'executor="dask" found no Dask cluster: there is no current '
                    "distributed.Client and $DASK_SCHEDULER_ADDRESS is not set. Pass a client "
                    '(executor=distributed.Client(...)) or an address (executor="tcp://host:8786").'
                )
        return cls.connect(address, max_workers=max_workers)

    @classmethod
    def connect(
        cls, address: str, *, timeout: float | None = None, max_workers: int | None = None
    ) -> DaskExecutor:
        """Connect a new client to the scheduler at ``address`` (closed on shutdown)."""
        _check_max_workers(max_workers)
        distributed = _import_distributed()
        if address.startswith("dask://"):
            address = "tcp://" + address.removeprefix("dask://")
        timeout = CONNECT_TIMEOUT if timeout is None else timeout
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except Exception as exc:
            raise RunError(
                f"cannot connect to the Dask scheduler at {address} within {timeout:g} s: "
                f"{type(exc).__name__}: {exc}. Is the scheduler running, and is the address "
                "right?"
            ) from exc
        return cls(client, close_client=True, max_workers=max_workers)

    # -- running steps ---------------------------------------------------------------------

    def submit(self, task: Any, delay: float = 0.0) -> Future[Any]:
        """Send ``task`` (a StepTask) to the cluster, after ``delay`` seconds (without
        blocking the driver); the future's result is its Outcome."""
        result: Future[Any] = Future()
        name = getattr(task, "name", "?")
        if isinstance(task, StepTask) and task.started is not None:
            task = dataclasses.replace(task, started=self._relay(task.started))
        try:
            payload = pickle_task(task, "a Dask worker")
        except RunError as exc:
            result.set_result(failure(exc))
            return result
        job = _Job(name, payload, result)
        try:
            if len(payload) > SCATTER_BYTES:
                job.payload = self.client.scatter(payload, hash=False)
                job.extra.append(job.payload)
        except Exception as exc:
            result.set_result(failure(_cluster_error(name, exc), traceback.format_exc()))
            return result
        with self._lock:
            self._jobs.add(job)
        result.add_done_callback(lambda _: self._forget(job))
        if delay > 0:
            timer = threading.Timer(delay, self._enqueue, (job,))
            timer.daemon = True
            timer.name = f"nbflow-retry-{name}"
            with self._lock:
                self._timers.add(timer)
            job.extra.append(timer)
            timer.start()
        else:
            self._enqueue(job)
        return result

    def _relay(self, callback: Callable[[float], None]) -> StartRelay:
        """A relay that brings the news of a start on the cluster back to ``callback``
        (through Dask's events: the worker logs one, the client hears it)."""
        token = next(self._serial)
        with self._lock:
            self._waiting[token] = callback
            subscribe = not self._subscribed
            self._subscribed = True
        if subscribe:
            with contextlib.suppress(Exception):  # then starts are known from outcomes
                self.client.subscribe_topic(self._topic, self._heard_start)
        return _DaskRelay(self._topic, token)

    def _heard_start(self, event: Any) -> None:
        with contextlib.suppress(Exception):
            _, (token, when) = event
            with self._lock:
                callback = self._waiting.pop(token, None)
            if callback is not None:
                callback(when)

    def _enqueue(self, job: _Job) -> None:
        """Submit ``job`` now, or queue it while ``max_workers`` steps are on the cluster."""
        with self._lock:
            for item in job.extra:
                if isinstance(item, threading.Timer):
                    self._timers.discard(item)
            if job.result.done():  # cancelled meanwhile
                return
            if self._limit is not None and self._active >= self._limit:
                self._queue.append(job)
                return
            self._active += 1
        self._launch(job)

    def _launch(self, job: _Job) -> None:
        try:
            future = self.client.submit(
                run_in_worker,
                job.name,
                job.payload,
                0.0,
                key=f"nbflow-{job.name}-{self._token}-{next(self._serial)}",
                pure=False,
            )
        except Exception as exc:
            _deliver(job, failure(_cluster_error(job.name, exc), traceback.format_exc()))
            self._release_slot()
            return
        with self._lock:
            job.dask = future
            cancelled = job.result.cancelled()
        if cancelled:  # the run was cancelled while this was being submitted
            _cancel_quietly(future)
        future.add_done_callback(lambda _: self._on_done(job))

    def _on_done(self, job: _Job) -> None:
        """In Dask's callback thread (one for every future): deliver the outcome, then
        start a queued job."""
        self._collect(job)
        self._release_slot()

    def _collect(self, first: _Job) -> None:
        """Deliver the outcome of ``first`` and of every other job finished by now.

        Their results are fetched in one request: one at a time, fetching (a round trip
        through the scheduler) would cost a fan-out of quick steps more than running them.
        """
        with self._lock:
            if first.collected:
                return
            batch = [first]
            batch += [
                job
                for job in self._jobs
                if not job.collected and job.dask is not None and job.dask.status == "finished"
            ]
            for job in batch:
                job.collected = True
        fetch = [job for job in batch if job.dask.status == "finished" and not job.result.done()]
        data: dict[_Job, Any] = {}
        if fetch:
            with contextlib.suppress(Exception):  # then one at a time, by _outcome
                data = dict(zip(fetch, self.client.gather([j.dask for j in fetch]), strict=True))
        for job in batch:
            if job.result.done():  # the run cancelled it
                continue
            try:
                outcome = load_outcome(data[job]) if job in data else _outcome(job.name, job.dask)
            except BaseException as exc:  # a result that does not load
                outcome = failure(_cluster_error(job.name, exc), traceback.format_exc())
            _deliver(job, outcome)

    def _release_slot(self) -> None:
        """A job left the cluster: start the next queued one, if any."""
        follow: _Job | None = None
        with self._lock:
            self._active -= 1
            while self._queue:
                candidate = self._queue.popleft()
                if not candidate.result.done():
                    follow = candidate
                    self._active += 1
                    break
        if follow is not None:
            self._launch(follow)

    def _forget(self, job: _Job) -> None:
        """The driver's future is done: drop the job, and cancel it on the cluster if the
        run cancelled it."""
        with self._lock:
            self._jobs.discard(job)
            pending = job.dask if job.result.cancelled() else None
        if pending is not None:
            _cancel_quietly(pending)

    def shutdown(self) -> None:
        """Cancel what the run left on the cluster; close the client if nbflow made it."""
        with self._lock:
            timers, self._timers = list(self._timers), set()
            jobs = list(self._jobs)
            self._queue.clear()
        for timer in timers:
            timer.cancel()
        for job in jobs:
            job.result.cancel()  # its done callback cancels the Dask task
        if self._subscribed:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self._topic)
        self._waiting.clear()
        if self._close_client:
            with contextlib.suppress(Exception):
                self.client.close()


class _DaskRelay(StartRelay):
    """Tells the driver, from a Dask worker, that a step started (a Dask event)."""

    def __init__(self, topic: str, token: int) -> None:
        self.topic = topic
        self.token = token

    def __call__(self, when: float) -> None:
        """Log the start on the worker; the client that subscribed to the topic hears it."""
        from distributed import get_worker

        get_worker().log_event(self.topic, (self.token, when))


def _deliver(job: _Job, outcome: Outcome) -> None:
    with contextlib.suppress(InvalidStateError):  # the run was cancelled meanwhile
        job.result.set_result(outcome)


def _outcome(name: str, done: Any) -> Outcome:
    """The Outcome of a finished Dask future: the step's own, or a failure."""
    status = done.status
    try:
        if status == "finished":
            return load_outcome(done.result())
        if status == "error":
            error = done.exception()
            trace = "".join(traceback.format_exception(type(error), error, done.traceback()))
            return failure(_cluster_error(name, error), trace)
        return failure(
            RunError(
                f"the Dask task of step {name!r} was {status} on the cluster (was the client "
                "closed, or the connection to the scheduler lost?)"
            )
        )
    except BaseException as exc:  # a result that cannot be fetched or loaded
        return failure(_cluster_error(name, exc), traceback.format_exc())


def _cluster_error(name: str, exc: BaseException) -> RunError:
    """A clear error for a step that failed on the cluster rather than in its own code."""
    kind = type(exc).__name__
    if kind == "KilledWorker":
        return RunError(
            f"the Dask worker running step {name!r} died while running it (the step crashed, "
            f"exited or ran out of memory): KilledWorker: {exc}"
        )
    hint = ""
    if isinstance(exc, ImportError):
        hint = " Are nbflow and the modules the step imports installed on the Dask workers?"
    return RunError(f"step {name!r} failed on the Dask cluster: {kind}: {exc}.{hint}")


def _check_max_workers(max_workers: int | None) -> None:
    if max_workers is not None and max_workers < 1:
        raise ParameterError(f"max_workers must be at least 1, not {max_workers}")


def _cancel_quietly(future: Any) -> None:
    with contextlib.suppress(Exception):  # a closed client: nothing left to cancel
        future.cancel()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ParameterError(
            f"the Dask executor needs Dask's distributed package: {INSTALL_HINT}"
        ) from exc
    return distributed
