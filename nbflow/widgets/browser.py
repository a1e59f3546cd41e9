"""The checkpoint browser: runs, a run's versions and DAG, step outputs, events, forks.

``nf.browse(flow_or_store)`` builds one :class:`Browser`. It reads through the store
(and Run handles) only: the runs table pages through ``store.list_runs``; a run's state
at a version is the store's fold of its events (``store.state_at``); outputs load only
when a step is selected. The Fork button starts the fork in the background and follows
it live through a progress listener (:func:`nbflow.api.progress.progress_view`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from nbflow.api.progress import progress_view
from nbflow.api.run import Run
from nbflow.errors import NbflowError, UntrustedStoreError
from nbflow.store.base import Store
from nbflow.store.fold import RunState
from nbflow.store.records import Event, RunRecord, RunStatus, StepExecution
from nbflow.widgets.browser_live import LiveUpdates
from nbflow.widgets.browser_tables import (
    count_runs,
    event_rows,
    events_table,
    flow_names,
    lineage_rows,
    lineage_table,
    run_rows,
    runs_table,
)
from nbflow.widgets.dag import DagWidget
from nbflow.widgets.fork import ForkPanel, ForkRequest, fork_plan, param_types
from nbflow.widgets.gate_panel import GatePanel
from nbflow.widgets.live import close_all
from nbflow.widgets.preview import message, run_header, step_details, value_preview
from nbflow.widgets.rows import version_rows
from nbflow.widgets.states import (
    DagSpec,
    infos_from_rows,
    mark_stale,
    run_spec,
    stale_steps,
    with_gates,
    with_waiting,
)
from nbflow.widgets.watch import Watch, follow

if TYPE_CHECKING:
    from nbflow.api.flow import Flow

PAGE_SIZE = 20
EVENTS_PAGE_SIZE = 50
_PREVIEWS = 16  # output previews kept, by content hash


class Browser(LiveUpdates, w.VBox):
    """Runs of a store; the selected run's parameters, DAG at any version, step outputs,
    events, lineage; and a fork panel.

    The store is only closed by :meth:`close` when the browser opened it itself (from a
    path); a flow's or a caller's store is left open.
    """

    def __init__(
        self,
        store: Store,
        *,
        flow: str | None = None,
        run: str | None = None,
        owns_store: bool = False,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.store = store
        self._owns_store = owns_store
        self._page_size = page_size
        self._lock = threading.RLock()
        self._closed = False
        self._quiet_here = threading.local()  # see LiveUpdates._quiet
        self._quiet = False  # set while the browser changes its own widgets
        self._run: Run | None = None
        self._flow: Flow | None = None
        self._record: RunRecord | None = None
        self._spec = DagSpec((), ())
        self._state: RunState | None = None
        self._events: list[Event] = []
        self._versions: list[tuple[int, str]] = []
        self._follow_latest = True
        self._previews: OrderedDict[str, str] = OrderedDict()

        where = escape(store.uri or repr(store))
        self.title = w.HTML(f'<div class="nbflow-title">nbflow checkpoints · {where}</div>')
        self.flow_filter = w.Dropdown(description="flow", options=[("all flows", "")])
        statuses = [("any", "")] + [(s.value, s.value) for s in RunStatus]
        self.status_filter = w.Dropdown(description="status", options=statuses)
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.runs = runs_table()
        self.header = w.HTML()
        # The selected run's open gates, with Approve and Reject (hidden without gates).
        self.gate = GatePanel(
            follow=lambda: self._gate_follower, on_decided=lambda _: self.refresh()
        )
        self.dag = DagWidget()
        self.version = w.SelectionSlider(
            options=[("0", 0)],
            description="version",
            continuous_update=False,
            layout=w.Layout(width="90%"),
        )
        self.version.add_class("nbflow-version")
        self.version_label = w.HTML()
        self.version_label.add_class("nbflow-version-label")
        self.step_panel = w.HTML(message("Click a step in the DAG to see its output."))
        self.step_panel.add_class("nbflow-step-panel")
        # Where the selected step's output was computed, when another run computed it.
        self.source_link = w.Button(layout=w.Layout(display="none", width="auto"))
        self.source_link.add_class("nbflow-source-link")
        self.events = events_table()
        self.fork = ForkPanel(self._fork, lambda request: fork_plan(self._run, self._flow, request))
        self.lineage = lineage_table()
        self.tabs = w.Tab(
            children=[
                w.VBox([self.step_panel, self.source_link]),
                self.events,
                self.fork,
                self.lineage,
            ],
            titles=("Step", "Events", "Fork", "Lineage"),
        )
        self.run_box = w.VBox(
            [self.header, self.gate, self.dag, self.version, self.version_label, self.tabs],
            layout=w.Layout(display="none"),
        )
        super().__init__(
            [
                self.title,
                w.HBox([self.flow_filter, self.status_filter, self.refresh_button]),
                self.runs,
                self.run_box,
            ]
        )
        self.add_class("nbflow-browser")

        self._load_flows(flow)
        self.flow_filter.observe(self._on_filter, names="value")
        self.status_filter.observe(self._on_filter, names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.runs.observe(self._on_run_clicked, names="selected")
        self.runs.observe(lambda _: self._quietly(self.reload_runs), names="page")
        self.lineage.observe(self._on_run_clicked, names="selected")
        self.events.observe(lambda _: self._quietly(self._show_events), names="page")
        self.events.observe(self._on_event_clicked, names="selected")
        self.events.on_link(self.follow_link)
        self.source_link.on_click(lambda _: self.follow_link(self.source_link.tooltip))
        self.version.observe(self._on_version, names="value")
        self.dag.observe(self._on_step, names="selected")

        self._following: set[str] = set()  # runs this browser forked, followed live
        token = None
        with contextlib.suppress(Exception):
            token = store.change_token()  # before reading: a change meanwhile is seen
        self.reload_runs()
        first = run or (self.runs.row_keys[0] if self.runs.row_keys else None)
        if first is not None:
            self.select_run(first)
        # Runs started elsewhere (another cell, process, the CLI) show up by themselves.
        self._watch = Watch(store, self._on_store_changed, lambda: not self._closed)
        self._watch._token = token
        follow(self._watch)

    # -- the runs table -----------------------------------------------------------------

    def _quietly(self, action: Any, *args: Any) -> None:
        if self._quiet or self._closed:
            return
        with self._lock:
            self._quiet = True
            try:
                action(*args)
            finally:
                self._quiet = False

    def _load_flows(self, current: str | None = None) -> None:
        flows = flow_names(self.store)
        if current and current not in flows:
            flows.append(current)
        value = current if current is not None else self.flow_filter.value
        options = [("all flows", "")] + [(f, f) for f in sorted(flows)]
        if list(self.flow_filter.options) != options:
            self.flow_filter.options = options
        self.flow_filter.value = value if value in flows else ""

    def reload_runs(self) -> None:
        """Read the current page of runs (with the filters) from the store."""
        with self._lock:
            flow = self.flow_filter.value or None
            status = self.status_filter.value or None
            total = count_runs(self.store, flow, status)
            pages = max(1, -(-total // self._page_size))
            page = min(self.runs.page, pages - 1)
            records = self.store.list_runs(
                flow=flow, status=status, limit=(page + 1) * self._page_size
            )[page * self._page_size :]
            rows = run_rows(records)
            with self.runs.hold_sync():
                self.runs.page = page
                self.runs.set_rows(rows, total=total, page_size=self._page_size)
                self.runs.selected = self._run.id if self._run is not None else ""

    def _on_filter(self, change: dict[str, Any]) -> None:
        def apply() -> None:
            self.runs.page = 0
            self.reload_runs()

        self._quietly(apply)

    def _on_run_clicked(self, change: dict[str, Any]) -> None:
        if change["new"] and (self._run is None or change["new"] != self._run.id):
            self._quietly(self.select_run, change["new"])

    def refresh(self) -> None:
        """Read everything again: flows, the runs page, the selected run at its latest."""

        def again() -> None:
            self._load_flows()
            self.reload_runs()
            if self._run is not None:
                self.select_run(self._run.id)

        self._quietly(again)

    # -- the selected run -----------------------------------------------------------------

    @property
    def run(self) -> Run | None:
        """The selected run."""
        return self._run

    @property
    def selected_version(self) -> int | None:
        """The version the DAG shows."""
        return self.version.value if self._run is not None else None

    def follow_link(self, run_id: str) -> None:
        """Select the run a link names (e.g. the run a cached output came from)."""
        if self._closed or (self._run is not None and self._run.id == run_id):
            return
        with self._lock:
            self.status_filter.value = ""
            self.flow_filter.value = ""
            self._quietly(self.select_run, run_id)
            self.reload_runs()

    def select_run(self, run_id: str, *, keep_fork_status: bool = False) -> None:
        """Show a run: header and parameters, DAG at its latest version, events, lineage.

        ``keep_fork_status``: leave the fork panel's status as it is (the browser is showing
        a fork it just started, and says so next)."""
        from nbflow.api.flow import find_flow

        with self._lock:
            record = self.store.get_run(run_id)
            flow = find_flow(record.flow, self.store)
            run = Run(self.store, run_id, flow)
            self._run, self._record, self._flow = run, record, flow
            self._spec = run_spec(run, flow)
            self.runs.selected = run_id
            self.lineage.selected = run_id
            self.run_box.layout.display = ""
            self._follow_latest = True
            self._load_versions(record)
            self.header.value = run_header(record, self._latest_version())
            stored = self.store.get_flow(record.flow, record.flow_fingerprint)
            self.fork.load(
                self._spec.nodes,
                param_types(stored, self._spec.nodes),
                record.params,
                self._latest_version(),
                self.dag.selected,
            )
            if not keep_fork_status:
                self.fork.status.value = ""
            self._show_lineage(record)
            self.events.page = 0
            self._show_version(self._latest_version())

    def _load_versions(self, record: RunRecord) -> None:
        """Read the run's events and versions; the slider goes to the latest version
        unless the user moved it back (it then stays where it is)."""
        keep = None if self._follow_latest else self.version.value
        self._events = self.store.read_events(record.run_id)
        self._versions = version_rows(self._run) if self._run else []
        options = [(str(v), v) for v, _ in self._versions] or [("0", 0)]
        was_quiet, self._quiet = self._quiet, True
        try:
            self.version.options = options
            values = [v for _, v in options]
            self.version.value = keep if keep in values else options[-1][1]
        finally:
            self._quiet = was_quiet

    def _latest_version(self) -> int:
        """The slider's last version: the run's latest state-changing event."""
        return int(self.version.options[-1][1])

    def _on_version(self, change: dict[str, Any]) -> None:
        if self._quiet or self._closed or self._run is None or change["new"] is None:
            return
        with self._lock:
            self._follow_latest = change["new"] == self.version.options[-1][1]
            self._show_version(change["new"])

    def _show_version(self, version: int, state: RunState | None = None) -> None:
        """Show the DAG, the selected step and the events as they stood at ``version``
        (``state``: the run's latest state, when the caller has it already)."""
        assert self._run is not None and self._record is not None
        run_id = self._run.id
        latest = version >= self._latest_version()
        if state is None:
            state = (
                self.store.load_state(run_id) if latest else self.store.state_at(run_id, version)
            )
        self._state = state
        infos = infos_from_rows(state.current.values())
        # Only the latest version of a run going on is live: a past one does not pulse.
        live = latest and not state.run.status.at_rest
        infos = with_waiting(infos, self._spec.nodes, not state.run.status.at_rest)
        infos = with_gates(infos, (e for e in self._events if e.seq <= version))
        flow = self._flow if latest and not live else None
        if flow is not None:
            infos = mark_stale(infos, stale_steps(flow, self._run))
        title = f"{state.run.flow} · run {run_id} · {state.run.status.value} at version {version}"
        self.dag.show(self._spec, infos, title, live=live)
        label = dict(self._versions).get(version, "")
        self.version_label.value = message(
            f"version {version} of {self._latest_version()}: {label}" if label else ""
        )
        self.fork.set_version(version)
        self.gate.show(self._run if latest else None)  # decisions are made on the present
        self._show_step()
        self._show_events()
        self.events.selected = str(version)

    def _on_event_clicked(self, change: dict[str, Any]) -> None:
        """Move the slider to the version of the event clicked (the latest version at or
        before it: events that change no state have no version of their own)."""
        if self._quiet or self._closed or self._run is None or not change["new"]:
            return
        seq = int(change["new"])
        versions = [v for _, v in self.version.options]
        at = max((v for v in versions if v <= seq), default=versions[0])
        if at != self.version.value:
            self.version.value = at

    # -- the selected step ----------------------------------------------------------------

    def _on_step(self, change: dict[str, Any]) -> None:
        if self._closed:
            return
        with self._lock:
            self.fork.set_step(change["new"])
            self._show_step()
            if change["new"]:
                self.tabs.selected_index = 0

    def _show_step(self) -> None:
        step = self.dag.selected
        self.source_link.layout.display = "none"
        if not step or self._state is None:
            self.step_panel.value = message("Click a step in the DAG to see its output.")
            return
        rows = [x for x in self._state.executions.values() if x.step == step]
        version = self._state.run.version
        self.step_panel.value = step_details(step, rows, version, self._output_preview(rows))
        source = max(rows, key=lambda r: r.seq).source_run_id if rows else None
        if source and source != self._state.run.run_id:
            self.source_link.description = f"output from run {source}"
            self.source_link.tooltip = source
            self.source_link.layout.display = ""

    def _output_preview(self, rows: Sequence[StepExecution]) -> str:
        if not rows:
            return ""
        latest = max(rows, key=lambda r: r.seq)
        ref = latest.output
        if ref is None or not latest.status.has_output:
            return ""
        cached = self._previews.get(ref.hash)
        if cached is not None:
            return cached
        run_id = self._state.run.run_id if self._state is not None else ""
        try:
            html = value_preview(self.store.load_output(ref, step=latest.step, run_id=run_id))
        except UntrustedStoreError as exc:
            return message(str(exc))  # a refusal asked for, not a failure
        except Exception as exc:
            return message(f"cannot load the output: {exc}", "error")
        self._previews[ref.hash] = html
        while len(self._previews) > _PREVIEWS:
            self._previews.popitem(last=False)
        return html

    # -- events and lineage -----------------------------------------------------------------

    def _show_events(self) -> None:
        version = self.version.value if self._run is not None else 0
        page = self.events.page
        chunk = self._events[page * EVENTS_PAGE_SIZE : (page + 1) * EVENTS_PAGE_SIZE]
        rows = event_rows(chunk, version)
        self.events.set_rows(rows, total=len(self._events), page_size=EVENTS_PAGE_SIZE)

    def _show_lineage(self, record: RunRecord) -> None:
        rows = lineage_rows(self.store, record)
        self.lineage.set_rows(rows)
        self.lineage.selected = record.run_id

    # -- forking ----------------------------------------------------------------------------

    def _fork(self, request: ForkRequest) -> None:
        run = self._run
        if run is None:
            self.fork.status.value = message("select a run to fork first", "error")
            return
        try:
            with progress_view(self._follower):
                forked = run.fork(
                    from_step=request.from_step,
                    at_version=request.at_version,
                    background=True,
                    **request.params,
                )
        except (NbflowError, TypeError, ValueError) as exc:
            self.fork.status.value = message(f"could not fork: {exc}", "error")
            return
        with self._lock:
            self.status_filter.value = ""  # the fork must be visible in the table
            self.runs.page = 0
            self.reload_runs()
            self.select_run(forked.id, keep_fork_status=True)
            self.tabs.selected_index = 2
            if self._record is not None and self._record.status.finished:
                self.fork.show_ended(self._record)  # it ended while another run was shown
                return
            self.fork.status.value = message(
                f"forked run {forked.id} from run {run.id}; it runs in the background.", "ok"
            )

    # -- without widgets ----------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Where widgets cannot render (a terminal, a static page): what the browser shows.
        from nbflow.widgets.export import browser_html, browser_text
        from nbflow.widgets.summary import with_summary

        bundle = super()._repr_mimebundle_(**kwargs)
        return with_summary(bundle, browser_text(self), browser_html(self))

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        """Write what the browser shows (the runs, the selected run's DAG and its steps) as a
        standalone HTML file that opens offline; return its path."""
        from nbflow.widgets.export import browser_html
        from nbflow.widgets.summary import write_page

        return write_page(path, f"nbflow checkpoints · {self.store.uri}", browser_html(self))

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the browser's widgets, and its store if it opened it."""
        if self._closed:
            return
        self._closed = True
        for child in self.children:
            close_all(child)
        self._run = None
        self._state = None
        if self._owns_store:
            self.store.close()
        super().close()
