"""How the checkpoint browser stays live: the runs it forks redraw as they commit, and the
runs started elsewhere (another cell, process, the CLI) show up by themselves.

A fork started from the browser reports to its own progress listener (a
:class:`~nbflow.widgets.live.Follower`); every other change reaches the browser through
the process's watcher (:mod:`nbflow.widgets.watch`), which asks only when the store's
change token moved. Either way the header, the runs table, the version slider and the
DAG are redrawn together, from one state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbflow.store.fold import RunState
from nbflow.widgets.live import Follower
from nbflow.widgets.preview import run_header

if TYPE_CHECKING:
    import threading

    import ipywidgets as w

    from nbflow.api.run import Run
    from nbflow.store.base import Store
    from nbflow.store.records import RunRecord
    from nbflow.widgets.fork import ForkPanel
    from nbflow.widgets.gate_panel import GatePanel
    from nbflow.widgets.watch import Watch


class LiveUpdates:
    """The browser's live redraws (a part of :class:`~nbflow.widgets.browser.Browser`)."""

    @property
    def _quiet(self) -> bool:
        """Whether this thread is changing the browser's own widgets (their observers then
        do nothing). Kept per thread: a redraw by the watcher or a run's listener never
        swallows what the user does meanwhile (it waits for the browser's lock instead)."""
        return bool(getattr(self._quiet_here, "value", False))

    @_quiet.setter
    def _quiet(self, value: bool) -> None:
        self._quiet_here.value = value

    if TYPE_CHECKING:  # the browser's own
        store: Store
        header: w.HTML
        version: w.SelectionSlider
        fork: ForkPanel
        gate: GatePanel
        _lock: threading.RLock
        _closed: bool
        _run: Run | None
        _record: RunRecord | None
        _follow_latest: bool
        _following: set[str]
        _watch: Watch

        _quiet_here: threading.local

        def reload_runs(self) -> None: ...  # noqa: D102
        def select_run(self, run_id: str, *, keep_fork_status: bool = False) -> None: ...  # noqa: D102
        def _load_flows(self, current: str | None = None) -> None: ...
        def _load_versions(self, record: RunRecord) -> None: ...
        def _latest_version(self) -> int: ...
        def _show_version(self, version: int, state: RunState | None = None) -> None: ...

    def _follower(self, run: Run, graph: Any, done: int) -> Follower:
        run_id = run.id
        self._following.add(run_id)

        def update(state: RunState, finished: bool) -> None:
            self._on_live(run_id, state, finished)

        return Follower(self.store, run_id, update)

    def _gate_follower(self, run: Run, graph: Any, done: int) -> Follower:
        # A run the gate panel continued: followed as a fork is; the panel tells its end.
        run_id = run.id
        self._following.add(run_id)
        return Follower(self.store, run_id, lambda s, end: self._on_live(run_id, s, end, True))

    def _on_live(self, run_id: str, state: RunState, finished: bool, gate: bool = False) -> None:
        """A run started here committed: redraw it if it is the one shown."""
        if self._closed:
            return
        with self._lock:
            shown = self._run is not None and self._run.id == run_id
            if finished:
                self._following.discard(run_id)
                self.reload_runs()
                if shown:
                    self.select_run(run_id, keep_fork_status=True)
                    (self.gate if gate else self.fork).show_ended(state.run)
                return
            self._show_live(run_id, state)

    def _show_live(self, run_id: str, state: RunState) -> None:
        """A run changed while it goes on: its row in the table, and if it is the run
        shown, its header, versions (the slider stays where the user put it) and DAG, all
        from the same state."""
        self.reload_runs()
        if self._run is None or self._run.id != run_id:
            return
        self._record = state.run
        self._load_versions(state.run)
        self.header.value = run_header(state.run, self._latest_version())
        if self._follow_latest:
            self._show_version(self._latest_version(), state)
        else:  # time travel: the past version stays shown, the slider's end moves on
            self._show_version(self.version.value)

    def _on_store_changed(self) -> bool:
        """The store changed (the watcher says so): show new runs in the table, and the
        selected run as it stands if it moved on (started elsewhere: the runs forked here
        are drawn by their own listener)."""
        if self._closed:
            return False
        with self._lock:
            self._quiet = True
            try:
                self._load_flows()
                run = self._run
                if run is None or run.id in self._following or self._record is None:
                    self.reload_runs()
                    return True
                record = self.store.get_run(run.id)
                if record.version == self._record.version:
                    self.reload_runs()
                elif record.status.at_rest and self._follow_latest:
                    self.reload_runs()  # it ended: everything about it again
                    self.select_run(run.id, keep_fork_status=True)
                else:
                    self._show_live(run.id, self.store.load_state(run.id))
            finally:
                self._quiet = False
        return True
