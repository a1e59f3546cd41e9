"""Approve or reject a run's human gates from a widget (the run's view, and the browser).

A :class:`GatePanel` shows the run's open gate: its value (the preview the browser uses
for step outputs: a frame's head, a dict, a repr), the signed token to hand a reviewer,
a "by" box (default: the user this process runs as) and a comment box, and Approve and
Reject buttons. A decision is ``run.approve`` / ``run.reject`` (an event: who, when,
the comment); after an approval that leaves no gate waiting, the run continues in this
process, in the background, reporting to the panel's owner (``follow``), so the DAG
shows it live. Decided gates are listed with who decided, when and why.

The panel of a run's view follows the run (through the process's watcher): a gate decided
elsewhere (``nbflow approve TOKEN``, another process, another panel) moves to the decided
list, the status says who decided it, the form hides when no gate is left open, and the
run's end is told if it continued elsewhere. What the user typed in the "by" and comment
boxes stays while the gate they are about stays open.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from nbflow.api.progress import ListenerFactory, progress_view
from nbflow.errors import NbflowError
from nbflow.store.records import RunRecord, RunStatus
from nbflow.widgets.preview import message, short_time, value_preview

if TYPE_CHECKING:
    from nbflow.api.run import Run

#: Makes the progress listener of a run the panel continued (None: no live view).
Follow = Callable[[], ListenerFactory | None]


class GatePanel(w.VBox):
    """The open gates of a run, with Approve and Reject; hidden when the run has none.

    ``follow`` gives the progress view a continued run reports to; ``on_decided`` is
    called (with the run) after every decision, once the run has been continued.
    """

    def __init__(
        self,
        follow: Follow | None = None,
        on_decided: Callable[[Run], None] | None = None,
    ) -> None:
        self._run: Run | None = None
        self._follow = follow
        self._on_decided = on_decided
        self._tokens: dict[tuple[str, str, int], str] = {}  # (run, gate, opening) -> token
        self._lock = threading.RLock()
        self._said = ""  # the last decision made here
        # (run, gate, opening) of the decisions made here, and of those seen decided: a
        # decision seen for the first time, not made here, was made elsewhere.
        self._mine: set[tuple[str, str, int]] = set()
        self._seen: set[tuple[str, str, int]] = set()
        self._status: RunStatus | None = None  # the run's status at the last redraw
        self._told = ""  # the last decision seen made elsewhere
        self._late = ""  # the same, until a decision is made here
        #: The run as continued here after the last approval (``.wait()`` for its end).
        self.continued: Run | None = None
        self.head = w.HTML()
        self.choice = w.Dropdown(description="gate", layout=w.Layout(display="none"))
        self.value = w.HTML()
        self.value.add_class("nbflow-gate-value")
        self.token = w.Text(
            description="token",
            disabled=True,
            layout=w.Layout(width="100%"),
            tooltip="a signed, single-use token: nbflow approve TOKEN (hand it over privately)",
        )
        self.token.add_class("nbflow-gate-token")
        self.by = w.Text(description="by", layout=w.Layout(width="260px"))
        self.by.add_class("nbflow-gate-by")
        self.comment = w.Textarea(
            description="comment", placeholder="optional", layout=w.Layout(width="100%")
        )
        self.comment.add_class("nbflow-gate-comment")
        self.approve_button = w.Button(description="Approve", button_style="success", icon="check")
        self.approve_button.add_class("nbflow-approve")
        self.reject_button = w.Button(description="Reject", button_style="danger", icon="times")
        self.reject_button.add_class("nbflow-reject")
        self.form = w.VBox(
            [
                self.choice,
                self.value,
                self.token,
                self.by,
                self.comment,
                w.HBox([self.approve_button, self.reject_button]),
            ]
        )
        self.status = w.HTML()
        self.status.add_class("nbflow-gate-status")
        self.decided = w.HTML()
        super().__init__(
            [self.head, self.form, self.status, self.decided], layout=w.Layout(display="none")
        )
        self.add_class("nbflow-gates")
        self.add_class("nbflow-panel")
        self.approve_button.on_click(lambda _: self.approve())
        self.reject_button.on_click(lambda _: self.reject())
        self._choosing = False
        self.choice.observe(self._on_choice, names="value")

    @property
    def run(self) -> Run | None:
        """The run shown."""
        return self._run

    def show(self, run: Run | None, *, keep_status: bool = False) -> None:
        """Show ``run``'s gates (None, or a run without gates: hide the panel)."""
        from nbflow.api.gates import who

        with self._lock:
            changed = run is None or self._run is None or run.id != self._run.id
            self._run = run
            if changed and not keep_status:
                self.status.value = ""
            gates = run.gates if run is not None else None
            if run is None or gates is None or gates.empty:
                self.layout.display = "none"
                return
            self.layout.display = ""
            if not self.by.value:
                self.by.value = who(None)
            record = run.record
            waiting = record.status is RunStatus.WAITING
            statuses = zip(gates["gate"], gates["status"], strict=True)
            shown = [g for g, s in statuses if s == "open"] if waiting else []
            keep = self.choice.value if self.choice.value in shown else None
            self._choosing = True  # one preview per show, not one per change of the choice
            try:
                if list(self.choice.options) != shown:  # (a redraw leaves the choice alone)
                    self.choice.options = shown
                self.choice.value = keep or (shown[0] if shown else None)
            finally:
                self._choosing = False
            self._tell_elsewhere(record, gates, first=changed)
            self.choice.layout.display = "" if len(shown) > 1 else "none"
            self.form.layout.display = "" if shown else "none"
            self.head.value = (
                f'<div class="nbflow-subhead">gate {escape(", ".join(shown))} waits for '
                "your decision</div>"
                if shown
                else ""
            )
            self.decided.value = _decided_html(gates)
            self._show_gate()

    def _tell_elsewhere(self, record: RunRecord, gates: Any, *, first: bool) -> None:
        """Say which gates were decided elsewhere since the last redraw, and how the run
        went on if it continued elsewhere (nothing the first time a run is shown)."""
        run_id = record.run_id
        told = []
        for row in gates.itertuples():
            if row.status == "open":
                continue
            key = (run_id, str(row.gate), int(row.opened_version))
            if key in self._seen:
                continue
            self._seen.add(key)
            if not first and key not in self._mine:
                told.append(
                    f"{row.gate} {row.status} by {row.decided_by} at "
                    f"{short_time(row.decided_at)}, elsewhere"
                )
        before, self._status = self._status, record.status
        if first:
            self._told = ""
            return
        if told:
            self._told = self._late = "; ".join(told)
        mine = self.continued is not None and self.continued.id == run_id
        moved = record.status is not before and record.status is not RunStatus.WAITING
        if not self._told or mine or not (told or moved):
            return  # (a run continued here: its end is told by show_ended)
        text, kind = self._told, "muted"
        if record.status in (RunStatus.PENDING, RunStatus.RUNNING):
            text += f"; run {run_id} continues elsewhere"
            kind = "ok"
        elif record.status is not RunStatus.WAITING:
            detail = f": {record.error}" if record.error else ""
            text += f"; run {run_id} {record.status.value}{detail}"
            kind = "ok" if record.status is RunStatus.COMPLETED else kind
            if record.status is RunStatus.FAILED:
                kind = "error"
        self.status.value = message(text, kind)

    def _on_choice(self, change: dict[str, Any]) -> None:
        if not self._choosing:  # the user picked another open gate
            self._show_gate()

    def _show_gate(self) -> None:
        run, gate = self._run, self.choice.value
        if run is None or not gate:
            self.value.value = ""
            self.token.value = ""
            return
        try:
            self.value.value = value_preview(run[gate])
        except Exception as exc:  # a value that cannot load must not hide the buttons
            self.value.value = message(f"cannot load the gate's value: {exc}", "error")
        try:
            self.token.value = self._token(run, gate)
        except NbflowError as exc:
            self.token.value = ""
            self.status.value = message(f"no token: {exc}", "error")

    def _token(self, run: Run, gate: str) -> str:
        gates = run.gates
        opened = int(gates.loc[gates["gate"] == gate, "opened_version"].iloc[0])
        key = (run.id, gate, opened)
        if key not in self._tokens:  # one token per opening, not one per redraw
            self._tokens[key] = run.gate_token(gate)
        return self._tokens[key]

    def approve(self) -> None:
        """Approve the gate shown (the Approve button); continue the run if it may."""
        self._decide(approve=True)

    def reject(self) -> None:
        """Reject the gate shown (the Reject button): the run is cancelled."""
        self._decide(approve=False)

    def _decide(self, *, approve: bool) -> None:
        from nbflow.api.gates import who

        with self._lock:
            run, gate = self._run, self.choice.value
            if run is None or not gate:
                if self._late:  # the gate was decided elsewhere before the click came
                    self.status.value = message(f"too late: {self._late}", "error")
                elif self.form.layout.display != "none":  # (else: a second click, here)
                    self.status.value = message("no gate waits for a decision", "error")
                return
            self._late = ""
            by = self.by.value.strip() or None
            comment = self.comment.value.strip() or None
            gates = run.gates
            opened = gates.loc[gates["gate"] == gate, "opened_version"]
            if not opened.empty:
                self._mine.add((run.id, gate, int(opened.iloc[0])))
            try:
                if approve:
                    run.approve(gate, by=by, comment=comment, resume=False)
                else:
                    run.reject(gate, by=by, comment=comment)
            except NbflowError as exc:
                self.status.value = message(f"could not decide: {exc}", "error")
                self.show(run, keep_status=True)
                return
            self.comment.value = ""
            word = "approved" if approve else "rejected"
            said = self._said = f"{gate} {word} by {who(by)}"
            if approve:
                # Said before the run continues: its end (told by the follower) is last.
                self.status.value = message(f"{said}; the run continues…", "ok")
                refused = self._continue(run)
                if refused:
                    self.status.value = message(said + refused, "ok")
            else:
                self.status.value = message(f"{said}; run {run.id} is cancelled", "muted")
            self.show(run, keep_status=True)
        if self._on_decided is not None:
            self._on_decided(run)

    def show_ended(self, record: RunRecord) -> None:
        """Say how a run this panel continued ended (after the decision that continued it)."""
        kind = "ok" if record.status is RunStatus.COMPLETED else "error"
        detail = f": {record.error}" if record.error else ""
        said = f"{self._said}; " if self._said else ""
        self.status.value = message(
            f"{said}run {record.run_id} {record.status.value}{detail}", kind
        )

    def _continue(self, run: Run) -> str:
        """Continue ``run`` in the background if no gate waits; '' if it did, else why not."""
        if not run.gates["status"].eq("open").any():
            factory = self._follow() if self._follow is not None else None
            try:
                if factory is not None:
                    with progress_view(factory):
                        self.continued = run.resume(background=True)
                else:
                    self.continued = run.resume(background=True, progress=False)
            except NbflowError as exc:
                return f"; the run stays waiting: {exc}"
            return ""
        return "; the run waits for its other gates"


def _decided_html(gates: Any) -> str:
    rows = []
    for row in gates.itertuples():
        if row.status == "open":
            continue
        said = f" · “{escape(row.comment)}”" if isinstance(row.comment, str) and row.comment else ""
        rows.append(
            f"<tr><th>{escape(row.gate)}</th><td>{escape(row.status)} by "
            f"{escape(str(row.decided_by))} at {escape(short_time(row.decided_at))}{said}</td></tr>"
        )
    if not rows:
        return ""
    table = f'<table class="nbflow-kv">{"".join(rows)}</table>'
    return f'<div class="nbflow-subhead">decided</div>{table}'
