"""pandas views of runs, events and step executions, with pinned columns and dtypes.

Every backend returns frames through :func:`conform`, so a frame has the same columns
and dtypes whichever store it came from. Timestamps are tz-aware UTC.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import pandas as pd

from nbflow.store.records import Event, RunRecord, StepExecution

_TS = "datetime64[us, UTC]"

#: Columns of ``flow.runs()`` / ``nf.runs()`` and their dtypes.
RUN_COLUMNS: dict[str, str] = {
    "run_id": "str",
    "flow": "str",
    "status": "str",
    "params": "object",
    "parent_run_id": "str",
    "created_at": _TS,
    "started_at": _TS,
    "finished_at": _TS,
    "duration_s": "float64",
    "error": "str",
    "version": "int64",
    "thread_id": "str",
    "fork_from_step": "str",
    "fork_from_version": "Int64",
    "flow_fingerprint": "str",
    "gate": "str",  # the gate(s) a waiting run waits at, comma-separated
    "waited_s": "float64",  # how long it has waited there, in seconds
    "tenant": "str",  # who the run belongs to (None: everyone may read it)
}

#: Columns of ``run.events`` / ``nf.events()`` and their dtypes.
EVENT_COLUMNS: dict[str, str] = {
    "run_id": "str",
    "seq": "int64",
    "ts": _TS,
    "type": "str",
    "step": "str",
    "attempt": "Int64",
    "payload": "object",
}

#: Columns of ``run.steps`` and their dtypes.
STEP_COLUMNS: dict[str, str] = {
    "run_id": "str",
    "step": "str",
    "attempt": "int64",
    "status": "str",
    "cache_key": "str",
    "started_at": _TS,
    "finished_at": _TS,
    "duration_ms": "float64",
    "error": "str",
    "traceback": "str",
    "output_codec": "str",
    "output_hash": "str",
    "output_size": "Int64",
    "source_run_id": "str",
    "seq": "int64",
    "params": "object",
}


def conform(frame: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """Return ``frame`` with exactly ``columns``, in order, cast to their dtypes.

    JSON columns (``params``, ``payload``) arriving as text are parsed into dicts.
    """
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for name, dtype in columns.items():
        col = (
            frame[name].reset_index(drop=True) if name in frame else pd.Series([None] * len(frame))
        )
        if dtype == "object":
            out[name] = col.map(_parse_json).astype(object)
        elif dtype == "str":
            out[name] = col.astype("str")
        elif dtype == _TS:
            out[name] = pd.to_datetime(col, utc=True).astype(cast(Any, _TS))
        else:
            out[name] = col.astype(cast(Any, dtype))
    return out


def _parse_json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return json.loads(value)
    if isinstance(value, float) and value != value:  # a SQL NULL, through Arrow
        return None
    return value


def runs_frame(runs: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run (columns :data:`RUN_COLUMNS`)."""
    rows = [
        {
            "run_id": r.run_id,
            "flow": r.flow,
            "status": r.status.value,
            "params": dict(r.params),
            "parent_run_id": r.parent_run_id,
            "created_at": r.created_at,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "duration_s": r.duration_s,
            "error": r.error,
            "version": r.version,
            "thread_id": r.thread_id,
            "fork_from_step": r.fork_from_step,
            "fork_from_version": r.fork_from_version,
            "flow_fingerprint": r.flow_fingerprint,
            "tenant": r.tenant,
        }
        for r in runs
    ]
    return conform(_frame(rows, RUN_COLUMNS), RUN_COLUMNS)


def events_frame(events: Iterable[Event]) -> pd.DataFrame:
    """One row per event (columns :data:`EVENT_COLUMNS`)."""
    rows = [
        {
            "run_id": e.run_id,
            "seq": e.seq,
            "ts": e.ts,
            "type": e.type.value,
            "step": e.step,
            "attempt": e.attempt,
            "payload": dict(e.payload),
        }
        for e in events
    ]
    return conform(_frame(rows, EVENT_COLUMNS), EVENT_COLUMNS)


def steps_frame(executions: Iterable[StepExecution]) -> pd.DataFrame:
    """One row per step attempt, attempt 0 for cached and skipped steps (:data:`STEP_COLUMNS`)."""
    rows = [
        {
            "run_id": x.run_id,
            "step": x.step,
            "attempt": x.attempt,
            "status": x.status.value,
            "cache_key": x.cache_key,
            "started_at": x.started_at,
            "finished_at": x.finished_at,
            "duration_ms": x.duration_ms,
            "error": x.error,
            "traceback": x.traceback,
            "output_codec": x.output.codec.value if x.output else None,
            "output_hash": x.output.hash if x.output else None,
            "output_size": x.output.size if x.output else None,
            "source_run_id": x.source_run_id,
            "seq": x.seq,
            "params": None if x.params is None else dict(x.params),
        }
        for x in sorted(executions, key=lambda x: (x.seq, x.attempt, x.step))
    ]
    return conform(_frame(rows, STEP_COLUMNS), STEP_COLUMNS)


def fill_gates(frame: pd.DataFrame, read_events: Callable[[str], list[Event]]) -> pd.DataFrame:
    """``frame`` (of :data:`RUN_COLUMNS`) with ``gate`` and ``waited_s`` filled in for
    the runs waiting at a gate (``read_events`` reads a run's log: only theirs are read)."""
    from nbflow.store.gate_states import gate_states

    waiting = frame.index[frame["status"] == "waiting"]
    if len(waiting) == 0:
        return frame
    gates, waited = frame["gate"].astype(object), frame["waited_s"].copy()
    for i in waiting:
        open_ = [
            g
            for g in gate_states(read_events(str(frame.at[i, "run_id"]))).values()
            if g.status == "open"
        ]
        if open_:
            gates.at[i] = ", ".join(g.gate for g in open_)
            waited.at[i] = max(g.waited_s for g in open_)
    frame["gate"] = gates.astype("str")
    frame["waited_s"] = waited
    return frame


def _frame(rows: Sequence[dict[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in columns})
    return pd.DataFrame.from_records(rows, columns=list(columns))
