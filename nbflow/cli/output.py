"""How the command line prints frames and runs: table, CSV or JSON, and ``nbflow show``.

Whatever comes from a store (names, ids, errors: a store or an export may come from
anyone) reaches the terminal escaped: a control character, an ANSI escape sequence, a
newline inside a name or a bidirectional override is printed as ``\x1b``, ``\n`` or
``\u202e`` (:func:`printable`), so it can neither restyle the terminal nor forge a line.
JSON output escapes them as JSON does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.store.base import Store
    from nbflow.store.records import StepExecution

__all__ = ["FORMATS", "describe_run", "printable", "render", "terminal_text"]

#: The output formats of the listing commands.
FORMATS = ("table", "csv", "json")

_CELL_WIDTH = 60  # a table cell longer than this is cut (csv and json keep everything)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: object) -> str:
    """``value`` as text a terminal shows as it is: every character Python would not
    print as is (control characters, ANSI escapes, newlines, bidirectional overrides) as
    an escape (``\\n``, ``\\x1b``, ``\\u202e``)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_text(text: str) -> str:
    """Lines of text for the terminal: what is not printable inside a line escaped, the
    line breaks kept (the last pass over everything the command line prints)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def render(frame: pd.DataFrame, fmt: str, table_columns: list[str] | None = None) -> str:
    """``frame`` as text: an aligned table (of ``table_columns`` if given), CSV or JSON
    (a list of records, timestamps in ISO 8601)."""
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", default_handler=str) or "[]"
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) == "str":
            out[column] = out[column].map(_cell)
    if fmt == "csv":
        for column in out.columns:
            if out[column].dtype == object or str(out[column].dtype) == "str":
                out[column] = out[column].map(_escaped)
        return out.to_csv(index=False).rstrip("\n")
    if table_columns is not None:
        out = out[table_columns]
    if out.empty:
        return "(none)"
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) == "str":
            out[column] = out[column].map(_cut)
    return out.to_string(index=False, na_rep="")


def _cell(value: Any) -> Any:
    """Mappings and lists as compact JSON (ASCII: escaped), so CSV and table cells are
    readable."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str)
    return value


def _escaped(value: Any) -> Any:
    return printable(value) if isinstance(value, str) and not value.isprintable() else value


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        value = printable(" ".join(value.split()))
        if len(value) > _CELL_WIDTH:
            return value[: _CELL_WIDTH - 1] + "…"
    return value


def describe_run(store: Store, run_id: str) -> str:
    """A run for people: status, lineage, parameters, then each step's latest attempt
    with its state, timing and error."""
    run = store.get_run(run_id)
    took = f" in {run.duration_s:.2f} s" if run.duration_s is not None else ""
    p = printable
    lines = [f"run {p(run.run_id)} of flow {run.flow!r}: {run.status.value}{took}"]
    lines.append(f"  created   {run.created_at.isoformat(timespec='seconds')}")
    if run.started_at is not None:
        lines.append(f"  started   {run.started_at.isoformat(timespec='seconds')}")
    if run.finished_at is not None:
        lines.append(f"  finished  {run.finished_at.isoformat(timespec='seconds')}")
    lines.append(f"  version   {run.version}")
    if run.tenant is not None:
        lines.append(f"  tenant    {p(run.tenant)}")
    if run.parent_run_id:
        point = (
            f"from step {run.fork_from_step!r}"
            if run.fork_from_step
            else f"at version {run.fork_from_version}"
        )
        lines.append(f"  forked    from run {p(run.parent_run_id)} {point}")
    if run.error:
        lines.append(f"  error     {p(' '.join(run.error.split()))}")
    lines.append("parameters:" if run.params else "parameters: (none)")
    lines += [f"  {p(name)} = {value!r}" for name, value in run.params.items()]
    latest: dict[str, StepExecution] = {}
    attempts: dict[str, int] = {}
    for row in store.executions(run_id):
        latest[row.step] = row
        attempts[row.step] = max(attempts.get(row.step, 0), row.attempt)
    order = list(run.steps) + [s for s in latest if s not in run.steps]
    lines.append("steps:")
    width = max((len(p(s)) for s in order), default=0)
    for step in order:
        if step not in latest:
            lines.append(f"  {p(step):<{width}}  not started")
            continue
        row = latest[step]
        line = f"  {p(step):<{width}}  {row.status.value:<9}"
        if row.duration_ms is not None:
            line += f"  {row.duration_ms:9.1f} ms"
        if attempts[step] > 1:
            line += f"  (attempt {attempts[step]})"
        if row.source_run_id and row.source_run_id != run_id:
            line += f"  (from run {p(row.source_run_id)})"
        if row.error:
            line += f"  {p(' '.join(row.error.split()))}"
        lines.append(line.rstrip())
    return "\n".join(lines)
