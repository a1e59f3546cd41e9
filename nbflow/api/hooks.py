"""Event hooks: callbacks and sinks that receive each event after it is committed.

``flow.on_event(callback)`` calls ``callback(event)`` for the events of that flow's runs;
:func:`add_sink` registers a sink for every run in this process. Neither may slow down or
fail a run: events go into one bounded queue drained by a daemon thread, which calls the
sinks and callbacks; when the queue is full, events are dropped and counted
(:func:`sink_stats`). The queue is flushed at exit and by :func:`flush_sinks`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbflow.store.records import Event, NewEvent, RunRecord

__all__ = [
    "JSONLSink",
    "Sink",
    "SinkStats",
    "add_sink",
    "event_to_json",
    "flush_sinks",
    "remove_sink",
    "sink_stats",
]

#: Something called with each committed event.
Sink = Callable[[Event], None]

#: Events waiting for the sinks at most; beyond it, new events are dropped (and counted).
QUEUE_SIZE = 10_000


@dataclass(frozen=True)
class SinkStats:
    """What the sinks have been given: events delivered, dropped (queue full), and the
    sink calls that raised."""

    delivered: int
    dropped: int
    errors: int
    pending: int


class _Dispatcher:
    """One bounded queue and the daemon thread that hands its events to the sinks."""

    def __init__(self, maxsize: int = QUEUE_SIZE) -> None:
        self._queue: queue.Queue[tuple[Event, tuple[Sink, ...]]] = queue.Queue(maxsize)
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.delivered = self.dropped = self.errors = 0

    def add(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def remove(self, sink: Sink) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    def global_sinks(self) -> tuple[Sink, ...]:
        with self._lock:
            return tuple(self._sinks)

    def submit(self, events: Sequence[Event], targets: tuple[Sink, ...]) -> None:
        """Queue events for ``targets``, never waiting: a full queue drops them."""
        if not targets:
            return
        self._start()
        for event in events:
            try:
                self._queue.put_nowait((event, targets))
            except queue.Full:
                with self._lock:
                    self.dropped += 1

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._drain, name="nbflow-sinks", daemon=True
                )
                self._thread.start()

    def _drain(self) -> None:
        while True:
            event, targets = self._queue.get()
            try:
                for sink in targets:
                    try:
                        sink(event)
                    except Exception:  # a failing sink must not stop the others
                        with self._lock:
                            self.errors += 1
                with self._lock:
                    self.delivered += 1
            finally:
                self._queue.task_done()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event is handed over; False if ``timeout`` ran out."""
        deadline = None if timeout is None else _now() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - _now()
                if remaining is not None and remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self.delivered, self.dropped, self.errors, self._queue.qsize())


def _now() -> float:
    import time

    return time.monotonic()


_dispatcher = _Dispatcher()


def add_sink(sink: Sink) -> Sink:
    """Send every committed event of every run in this process to ``sink`` (returned, so
    this works as a decorator)."""
    if not callable(sink):
        from nbflow.errors import ParameterError

        raise ParameterError(f"a sink is a function of one event, not {type(sink).__name__}")
    _dispatcher.add(sink)
    return sink


def remove_sink(sink: Sink) -> None:
    """Stop sending events to ``sink`` (events already queued still reach it)."""
    _dispatcher.remove(sink)


def flush_sinks(timeout: float | None = None) -> bool:
    """Wait until the sinks have been given every queued event; False on timeout."""
    from nbflow import arguments

    return _dispatcher.flush(arguments.optional_seconds(timeout, "timeout"))


def sink_stats() -> SinkStats:
    """Counts of events delivered to the sinks, dropped because the queue was full, and
    sink calls that raised."""
    return _dispatcher.stats()


@atexit.register
def _flush_at_exit() -> None:
    _dispatcher.flush(timeout=5.0)


class EventListener:
    """The engine's listener that feeds the sinks: ``(run, new_events)`` after a commit."""

    def __init__(self, callbacks: Sequence[Sink] = ()) -> None:
        self._callbacks = tuple(callbacks)

    def __call__(self, run: RunRecord, events: list[NewEvent]) -> None:
        """Stamp the just-committed events with their seqs and queue them."""
        targets = _dispatcher.global_sinks() + self._callbacks
        if not targets or not events:
            return
        first = run.version - len(events) + 1  # seqs are consecutive, ending at the version
        stamped = [
            Event(run.run_id, first + i, e.ts, e.type, e.step, e.attempt, e.payload)
            for i, e in enumerate(events)
        ]
        _dispatcher.submit(stamped, targets)


def hook_listener(callbacks: Sequence[Callable[[Event], None]] = ()) -> EventListener:
    """The listener feeding the sinks and ``callbacks`` (the ``on_event`` callbacks of
    the run's flow: :attr:`nbflow.api.run.Run.event_callbacks`)."""
    return EventListener(callbacks)


def event_to_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-able dict (``ts`` in ISO 8601)."""
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "ts": event.ts.isoformat() if isinstance(event.ts, dt.datetime) else str(event.ts),
        "type": event.type.value,
        "step": event.step,
        "attempt": event.attempt,
        "payload": dict(event.payload),
    }


class JSONLSink:
    """A sink writing one JSON line per event to ``path`` (appending)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from nbflow import arguments

        self.path = Path(arguments.path(path, "JSONLSink's path"))
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        """Append the event as one JSON line."""
        line = json.dumps(event_to_json(event), separators=(",", ":"), default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")

    def __repr__(self) -> str:
        return f"JSONLSink({str(self.path)!r})"
