"""How the command line prints frames and runs: table, CSV or JSON, and ``nbflow show``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.store.base import Store
    from nbflow.store.records import StepExecution

__all__ = ["FORMATS", "describe_run", "render"]

#: The output formats of the listing commands.
FORMATS = ("table", "csv", "json")

_CELL_WIDTH = 60  # a table cell longer than this is cut (csv and json keep everything)


def render(frame: pd.DataFrame, fmt: str, table_columns: list[str] | None = None) -> str:
    """``frame`` as text: an aligned table (of ``table_columns`` if given), CSV or JSON
    (a list of records, timestamps in ISO 8601)."""
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", default_handler=str) or "[]"
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(_cell)
    if fmt == "csv":
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
    """Mappings and lists as compact JSON, so CSV and table cells are readable."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str)
    return value


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        value = " ".join(value.split())
        if len(value) > _CELL_WIDTH:
            return value[: _CELL_WIDTH - 1] + "…"
    return value


def describe_run(store: Store, run_id: str) -> str:
    """A run for people: status, lineage, parameters, then each step's latest attempt
    with its state, timing and error."""
    run = store.get_run(run_id)
    took = f" in {run.duration_s:.2f} s" if run.duration_s is not None else ""
    lines = [f"run {run.run_id} of flow {run.flow!r}: {run.status.value}{took}"]
    lines.append(f"  created   {run.created_at.isoformat(timespec='seconds')}")
    if run.started_at is not None:
        lines.append(f"  started   {run.started_at.isoformat(timespec='seconds')}")
    if run.finished_at is not None:
        lines.append(f"  finished  {run.finished_at.isoformat(timespec='seconds')}")
    lines.append(f"  version   {run.version}")
    if run.parent_run_id:
        point = (
            f"from step {run.fork_from_step!r}"
            if run.fork_from_step
            else f"at version {run.fork_from_version}"
        )
        lines.append(f"  forked    from run {run.parent_run_id} {point}")
    if run.error:
        lines.append(f"  error     {' '.join(run.error.split())}")
    lines.append("parameters:" if run.params else "parameters: (none)")
    lines += [f"  {name} = {value!r}" for name, value in run.params.items()]
    latest: dict[str, StepExecution] = {}
    attempts: dict[str, int] = {}
    for row in store.executions(run_id):
        latest[row.step] = row
        attempts[row.step] = max(attempts.get(row.step, 0), row.attempt)
    order = list(run.steps) + [s for s in latest if s not in run.steps]
    lines.append("steps:")
    width = max((len(s) for s in order), default=0)
    for step in order:
        if step not in latest:
            lines.append(f"  {step:<{width}}  not started")
            continue
        row = latest[step]
        line = f"  {step:<{width}}  {row.status.value:<9}"
        if row.duration_ms is not None:
            line += f"  {row.duration_ms:9.1f} ms"
        if attempts[step] > 1:
            line += f"  (attempt {attempts[step]})"
        if row.source_run_id and row.source_run_id != run_id:
            line += f"  (from run {row.source_run_id})"
        if row.error:
            line += f"  {' '.join(row.error.split())}"
        lines.append(line.rstrip())
    return "\n".join(lines)
