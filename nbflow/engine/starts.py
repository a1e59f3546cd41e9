"""When queued steps really start.

A parallel executor may hold a submitted step back until a worker is free (a pool of two
threads given five steps runs two). The runner records such a step as ``step_queued``
when it hands it over, and as ``step_started`` when the step's task reports, from
wherever it runs, that it has begun: so a step is ``running``, with its ``started_at``,
only once it really runs. The news comes from executor threads; :class:`StartSignals`
collects it for the runner's thread and wakes the runner up to record it.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future

__all__ = ["StartSignals", "when"]


def when(epoch: float) -> dt.datetime:
    """Epoch seconds as the tz-aware UTC time events carry."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


class StartSignals:
    """The attempts recorded as queued, and the news of their starts."""

    def __init__(self, *, parallel: bool) -> None:
        self._parallel = parallel
        self._lock = threading.Lock()
        self._news: list[tuple[str, int, float]] = []
        self._wake: Future[None] = Future()
        self._queued: set[tuple[str, int]] = set()  # read and changed by the runner only

    def queued(self, step: str, attempt: int) -> Callable[[float], None]:
        """Note ``attempt`` of ``step`` as queued; the callback its task calls on starting."""
        self._queued.add((step, attempt))
        return functools.partial(self._heard, step, attempt)

    def _heard(self, step: str, attempt: int, epoch: float) -> None:
        with self._lock:
            self._news.append((step, attempt, epoch))
            if not self._wake.done():
                self._wake.set_result(None)

    @property
    def wake(self) -> Future[None]:
        """A future that is done once news has come in (wait on it with the steps')."""
        return self._wake

    def take(self) -> list[tuple[str, int, dt.datetime]]:
        """The queued attempts that have started since last asked, with when."""
        with self._lock:
            news, self._news = self._news, []
            if self._wake.done():
                self._wake = Future()
        started = []
        for step, attempt, epoch in news:
            if (step, attempt) in self._queued:
                self._queued.discard((step, attempt))
                started.append((step, attempt, when(epoch)))
        return started

    def settle(
        self, step: str, attempt: int, started_at: float | None, finished_at: float | None
    ) -> tuple[dt.datetime | None, dt.datetime | None]:
        """For an attempt that is over, given when it really started and ended (epoch
        seconds, where it ran): the start to record if its news never came (else None),
        and the time to record its end at (None: now).

        On a parallel executor a step may end a while before the runner hears of it, so
        its end is recorded at the time it really ended.
        """
        late = None
        if (step, attempt) in self._queued and started_at is not None:
            late = when(started_at)
        self._queued.discard((step, attempt))
        end = when(finished_at) if self._parallel and finished_at is not None else None
        return late, end
