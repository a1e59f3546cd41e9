"""HTML for the browser's panels: a run's header, a step's details and output preview.

Plain functions returning HTML strings (escaped), so they are tested without a browser.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from nbflow.store.records import RunRecord, StepExecution, ValueRef
from nbflow.widgets.states import format_duration, took_ms

HEAD_ROWS = 5
MAX_COLUMNS = 12
MAX_REPR = 2000


def badge(status: str) -> str:
    """A colored status label."""
    return f'<span class="nbflow-badge status-{escape(status)}">{escape(status)}</span>'


def timestamp(value: dt.datetime | None) -> str:
    """A UTC time to the millisecond, or a dash."""
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def short_time(value: dt.datetime | None) -> str:
    """A UTC time to the second (for tables)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def params_text(params: Mapping[str, Any]) -> str:
    """``window=14, seed=7``."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def _table(rows: Sequence[tuple[str, str]], css: str = "nbflow-kv") -> str:
    """A two-column table of already-escaped HTML cells."""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{css}">{body}</table>'


def run_header(run: RunRecord, version: int | None = None) -> str:
    """The selected run: id, flow, status, times, parent, parameters, error.

    ``version``: the run's latest version as the version slider counts them (events that
    change no state have none of their own); default: the record's."""
    shown = run.version if version is None else version
    title = (
        f'<div class="nbflow-run-title"><b>run {escape(run.run_id)}</b> of flow '
        f"<b>{escape(run.flow)}</b> {badge(run.status.value)} · version {shown}</div>"
    )
    facts = [("created", escape(timestamp(run.created_at)))]
    took = took_ms(run)
    if took is not None:
        facts.append(("took", escape(format_duration(took))))
    if run.parent_run_id:
        point = (
            f"at step {escape(run.fork_from_step)}"
            if run.fork_from_step
            else f"at version {run.fork_from_version}"
            if run.fork_from_version is not None
            else ""
        )
        facts.append(("forked", f"from run {escape(run.parent_run_id)} {point}".strip()))
    params = (
        _table([(escape(k), escape(json.dumps(v))) for k, v in run.params.items()], "nbflow-params")
        if run.params
        else '<span class="nbflow-muted">no run parameters</span>'
    )
    error = (
        f'<div class="nbflow-error">{escape(run.error)}</div>'
        if run.error and run.status.value != "completed"
        else ""
    )
    return (
        f'<div class="nbflow-panel nbflow-run-header">{title}{_table(facts)}'
        f'<div class="nbflow-subhead">parameters</div>{params}{error}</div>'
    )


def step_details(
    step: str,
    rows: Sequence[StepExecution],
    version: int,
    output: str = "",
) -> str:
    """A step as it stood at ``version``: status, attempts and timings, output, error."""
    if not rows:
        return (
            f'<div class="nbflow-panel nbflow-step"><div class="nbflow-step-title"><b>'
            f"{escape(step)}</b> {badge('never_run')}</div>"
            f'<span class="nbflow-muted">not run as of version {version}.</span></div>'
        )
    ordered = sorted(rows, key=lambda r: r.seq)
    latest = ordered[-1]
    facts = [
        ("attempt", str(latest.attempt) if latest.attempt else "-"),
        ("started", escape(timestamp(latest.started_at))),
        ("finished", escape(timestamp(latest.finished_at))),
        (
            "duration",
            escape(format_duration(latest.duration_ms)) if latest.duration_ms is not None else "-",
        ),
    ]
    if latest.source_run_id:
        facts.append(("output from", f"run {escape(latest.source_run_id)}"))
    if latest.output is not None:
        facts.append(("stored as", escape(stored_as(latest.output))))
    attempts = ""
    if len(ordered) > 1:
        lines = "".join(
            f"<tr><td>{r.attempt}</td><td>{badge(r.status.value)}</td>"
            f"<td>{escape(format_duration(r.duration_ms)) if r.duration_ms is not None else ''}"
            f"</td><td>{escape((r.error or '').splitlines()[0] if r.error else '')}</td></tr>"
            for r in ordered
        )
        attempts = (
            '<div class="nbflow-subhead">attempts</div><table class="nbflow-attempts">'
            f"<tr><th>#</th><th>status</th><th>took</th><th>error</th></tr>{lines}</table>"
        )
    error = ""
    if latest.error or latest.traceback:
        error = (
            f'<div class="nbflow-subhead">error</div><div class="nbflow-error">'
            f"{escape(latest.error or '')}</div>"
        )
        if latest.traceback:
            error += f'<pre class="nbflow-traceback">{escape(latest.traceback)}</pre>'
    out = f'<div class="nbflow-subhead">output</div>{output}' if output else ""
    return (
        f'<div class="nbflow-panel nbflow-step"><div class="nbflow-step-title"><b>'
        f"{escape(step)}</b> {badge(latest.status.value)} "
        f'<span class="nbflow-muted">as of version {version}</span></div>'
        f"{_table(facts)}{attempts}{error}{out}</div>"
    )


def stored_as(ref: ValueRef) -> str:
    """``DataFrame, arrow codec, 1.2 MB``."""
    return f"{ref.type_name or 'value'}, {ref.codec.value} codec, {_bytes(ref.size)}"


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def value_preview(value: Any) -> str:
    """A DataFrame's head with shape and dtypes, an array's shape and dtype, else a repr."""
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        rows, cols = value.shape
        dtypes = ", ".join(
            f"{escape(str(c))}: {escape(str(t))}"
            for c, t in list(value.dtypes.items())[:MAX_COLUMNS]
        )
        more = f", … ({cols - MAX_COLUMNS} more)" if cols > MAX_COLUMNS else ""
        head = value.head(HEAD_ROWS).to_html(
            max_cols=MAX_COLUMNS, border=0, classes="nbflow-frame", escape=True
        )
        return (
            f'<div class="nbflow-preview"><div class="nbflow-shape">DataFrame · shape '
            f"({rows:,}, {cols:,}) · {rows:,} rows x {cols:,} columns</div>"
            f'<div class="nbflow-dtypes">dtypes: {dtypes}{more}</div>{head}</div>'
        )
    if isinstance(value, pd.Series):
        head = value.head(HEAD_ROWS).to_frame().to_html(border=0, classes="nbflow-frame")
        return (
            f'<div class="nbflow-preview"><div class="nbflow-shape">Series '
            f"{escape(str(value.name))} · shape ({len(value):,},) · dtype "
            f"{escape(str(value.dtype))}</div>{head}</div>"
        )
    if isinstance(value, np.ndarray):
        text = np.array2string(value, threshold=60, edgeitems=3)
        return (
            f'<div class="nbflow-preview"><div class="nbflow-shape">ndarray · shape '
            f"{escape(str(value.shape))} · dtype {escape(str(value.dtype))}</div>"
            f"<pre>{escape(text)}</pre></div>"
        )
    text = repr(value)
    if len(text) > MAX_REPR:
        text = text[:MAX_REPR] + f"… ({len(text):,} characters)"
    return (
        f'<div class="nbflow-preview"><div class="nbflow-shape">{escape(type(value).__name__)}'
        f"</div><pre>{escape(text)}</pre></div>"
    )


def message(text: str, kind: str = "muted") -> str:
    """A one-line note (``muted``, ``error`` or ``ok``)."""
    return f'<div class="nbflow-{kind}">{escape(text)}</div>'
