"""What a run's handle and the engine share while the run executes in the background."""

from __future__ import annotations

import threading
from collections.abc import Callable


class RunControl:
    """A run's cancel request, its done flag, its background thread and the error that
    ended that thread: set by the engine, read by the handle (``Run.wait``/``cancel``)."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.done.set()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, work: Callable[[], None], *, name: str) -> None:
        """Run ``work`` in a daemon thread; ``done`` is set again when it ends (``work``
        sets it)."""
        self.done.clear()
        self.thread = threading.Thread(target=work, name=name, daemon=True)
        self.thread.start()

    @property
    def running(self) -> bool:
        """Whether a background thread of this run is alive."""
        return self.thread is not None and self.thread.is_alive()

    def take_error(self) -> BaseException | None:
        """The error that ended the background thread, once (then None)."""
        error, self.error = self.error, None
        return error
