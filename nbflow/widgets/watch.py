"""Keeping displays true while runs change elsewhere: one watcher thread per process.

A display that follows something (a flow's latest run, a run until it ends, the browser's
runs table) registers a :class:`Watch` here. The watcher learns of changes two ways:

- at once, for runs of this process (any cell, a background run, a fork started from a
  browser): an event sink (:func:`nbflow.api.hooks.add_sink`) wakes it;
- within ``interval`` (1 s), for runs of other processes (the CLI, a script, another
  kernel): it compares each store's :meth:`~nbflow.store.base.Store.change_token`, which
  costs a DuckDB file no query at all (its size and modification time) and PostgreSQL one
  tiny query; only when the token moved are the watches of that store asked to look.

Each watch's ``check`` reads as little as it can (a run's version, the flow's latest run)
before it redraws. Watches of closed widgets (or closed stores) are dropped, and the
thread and the sink go away when nothing is watched, so an idle kernel does no work.
Redraws are at most every ``min_gap`` seconds, however fast the events come.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbflow.store.base import Store
    from nbflow.store.records import Event

#: How often the stores' change tokens are compared (runs of other processes).
INTERVAL_S = 1.0
#: The least time between two rounds of checks (events of this process wake the watcher).
MIN_GAP_S = 0.1
#: At most this many displays are followed; beyond, the oldest stop following (they keep
#: what they last showed, and say since when).
MAX_WATCHES = 64


def is_open(widget: Any) -> bool:
    """Whether a widget is still usable (not closed)."""
    return widget is not None and getattr(widget, "comm", None) is not None


@dataclass(eq=False)
class Watch:
    """One display that follows a store: ``check`` redraws it if what it shows changed
    (it returns False once there is nothing more to follow); ``alive`` says whether the
    display still exists; ``stopped`` is told when the watcher gives up on it."""

    store: Store
    check: Callable[[], bool]
    alive: Callable[[], bool]
    stopped: Callable[[], None] = lambda: None
    _token: Any = field(default=None, repr=False)


class Watcher:
    """The thread that checks every registered :class:`Watch` when its store changes."""

    def __init__(self, interval: float = INTERVAL_S, min_gap: float = MIN_GAP_S) -> None:
        self.interval = interval
        self.min_gap = min_gap
        self._lock = threading.Lock()
        self._watches: list[Watch] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: Callable[[Event], None] | None = None
        #: Rounds of checks made, and checks made because a store changed (for tests).
        self.loops = 0
        self.rounds = 0

    @property
    def watches(self) -> list[Watch]:
        """The watches followed now."""
        with self._lock:
            return list(self._watches)

    @property
    def running(self) -> bool:
        """Whether the watcher thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def add(self, watch: Watch) -> Watch:
        """Follow ``watch`` (starting the thread and the event sink if needed)."""
        if watch._token is None:  # (callers take it before they read what they show)
            with contextlib.suppress(Exception):
                watch._token = watch.store.change_token()
        dropped: list[Watch] = []
        with self._lock:
            self._watches.append(watch)
            while len(self._watches) > MAX_WATCHES:
                dropped.append(self._watches.pop(0))
            if self._thread is None or not self._thread.is_alive():
                self._start()
        for old in dropped:
            with contextlib.suppress(Exception):
                old.stopped()
        return watch

    def poke(self) -> None:
        """Look now (something changed in this process)."""
        self._wake.set()

    def _start(self) -> None:
        from nbflow.api.hooks import add_sink

        me = weakref.ref(self)

        def sink(event: Event) -> None:
            watcher = me()
            if watcher is not None:
                watcher.poke()

        self._sink = add_sink(sink)
        self._thread = threading.Thread(target=self._loop, name="nbflow-watch", daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        """Called by the thread, with the lock held, when nothing is left to watch."""
        from nbflow.api.hooks import remove_sink

        if self._sink is not None:
            remove_sink(self._sink)
            self._sink = None
        self._thread = None

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                self._watches = [w for w in self._watches if _alive(w)]
                if not self._watches:
                    self._stop()
                    return
                watches = list(self._watches)
            self._round(watches)
            self.loops += 1
            time.sleep(self.min_gap)  # a burst of events makes one redraw, not one each

    def _round(self, watches: list[Watch]) -> None:
        tokens: dict[int, Any] = {}
        done: list[Watch] = []
        for watch in watches:
            key = id(watch.store)
            if key not in tokens:
                try:
                    tokens[key] = watch.store.change_token()
                except Exception:  # a closed or busy store: look again next time
                    tokens[key] = watch._token
            if tokens[key] == watch._token:
                continue
            watch._token = tokens[key]
            self.rounds += 1
            try:
                keep = watch.check()
            except Exception:  # a display must never break the watcher; try again later
                keep = True
            if not keep:
                done.append(watch)
        if done:
            with self._lock:
                self._watches = [w for w in self._watches if w not in done]


def _alive(watch: Watch) -> bool:
    """Whether the display still exists and its store is open (a closed one never changes)."""
    if getattr(watch.store, "closed", False) is True:
        return False
    try:
        return bool(watch.alive())
    except Exception:
        return False


_watcher = Watcher()


def watcher() -> Watcher:
    """This process's watcher."""
    return _watcher


def follow(watch: Watch) -> Watch:
    """Register ``watch`` with this process's watcher."""
    return _watcher.add(watch)
