"""Rows of the DuckDB store's tables from records, and the SQL fragments that write them."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from nbflow.store.records import (
    CacheHit,
    CacheHits,
    Codec,
    Event,
    FilesRead,
    RunRecord,
    StepExecution,
    ValueRef,
    reads_index,
)
from nbflow.store.sql_rows import EVENT_COLS, EXEC_INSERT_COLS, RUN_RECORD_COLS, dumps

#: A column tested against a list parameter.
IN_LIST = "{column} IN (SELECT unnest({mark}::VARCHAR[]))"
#: Execution rows of flow ? with a usable output, for a list ? of code fingerprints,
#: in runs not marked untrusted (an anti-join with a table that is mostly empty: a few
#: per cent of this one query of a fully cached re-run, measured).
CANDIDATE_ROWS = (
    "flow = ? AND status IN ('completed', 'cached') AND output IS NOT NULL "
    "AND cache_key IS NOT NULL AND fingerprint IN (SELECT unnest(?::VARCHAR[])) "
    "AND run_id NOT IN (SELECT run_id FROM untrusted_runs) "
    # (nor another tenant's: an anti-join too, with a set empty in a store without tenants)
    "AND run_id NOT IN (SELECT run_id FROM run_records "
    "WHERE tenant IS NOT NULL AND tenant IS DISTINCT FROM ?)"
)


#: The earliest usable output per cache key (the row of the lowest seq, as one struct so
#: its columns come from one row: a grouping costs less than DISTINCT ON's sort).
CACHE_HITS = (
    "SELECT cache_key, h.output, h.run_id, h.source, h.files FROM (SELECT cache_key, "
    "arg_min({'output': output::VARCHAR, 'run_id': run_id, 'source': source_run_id, "
    "'files': files::VARCHAR}, seq) AS h "
    f"FROM step_executions WHERE {CANDIDATE_ROWS} GROUP BY cache_key)"
)

if TYPE_CHECKING:
    import pyarrow as pa


class LazyHits(CacheHits):
    """Cache hits by key (the rows of :data:`CACHE_HITS`), each built from its row only
    when it is first looked up.

    A flow run many times with new parameters has a candidate for every key it ever
    computed, and a run looks up one per step: parsing every row's output up front cost
    ~10 us a row (~80 ms a run after 2,000 runs of a 4-step flow), keeping the rows as
    Arrow columns and only their keys in a dict ~1 us. A small result (a cached re-run
    looks up every row) is turned into Python lists at once: ~0.7 us a row against ~3.4
    for reading single Arrow values. The rows of executions that read files are read at
    once, for :meth:`reads` (only steps that read files have them).
    """

    _EAGER_ROWS = 1_000

    def __init__(self, table: pa.Table) -> None:
        keys = table.column(0).to_pylist()
        self._index = {key: i for i, key in enumerate(keys)}
        columns = [table.column(c) for c in (1, 2, 3, 4)]
        self._columns: list[Any] = (
            [c.to_pylist() for c in columns]
            if table.num_rows <= self._EAGER_ROWS
            else [c.combine_chunks() for c in columns]
        )
        self._lists = table.num_rows <= self._EAGER_ROWS
        self._hits: dict[str, CacheHit] = {}
        with_files = table.filter(table.column(4).is_valid()).column(0).to_pylist()
        self._reads = reads_index(self[key] for key in with_files)

    def __getitem__(self, key: str) -> CacheHit:
        hit = self._hits.get(key)
        if hit is None:
            i = self._index[key]
            if self._lists:
                output, run_id, source, files = (c[i] for c in self._columns)
            else:
                output, run_id, source, files = (c[i].as_py() for c in self._columns)
            read = FilesRead.from_json(json.loads(files)) if files else None
            hit = CacheHit(key, ValueRef.from_json(json.loads(output)), run_id, source, read)
            self._hits[key] = hit
        return hit

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class StaleWrite(Exception):
    """A write found the run not at the expected version (turned into StaleVersionError)."""


#: A new run's row (``run_records``: the version is derived from the events).
INSERT_RUN_RECORD = (
    f"INSERT INTO run_records ({RUN_RECORD_COLS}) VALUES ("
    + ", ".join(["?"] * (RUN_RECORD_COLS.count(",") + 1))
    + ")"
)

#: A run's row brought to its status after a write (``run_records``; the version is
#: derived from the events). :func:`run_status_params` gives the parameters.
UPDATE_RUN_STATUS = (
    "UPDATE run_records SET status = ?, started_at = ?, finished_at = ?, error = ? WHERE run_id = ?"
)


def run_status_params(run: RunRecord) -> list[Any]:
    """The parameters of :data:`UPDATE_RUN_STATUS` for ``run``."""
    return [run.status._value_, run.started_at, run.finished_at, run.error, run.run_id]


#: At most this many rows go in as one list a column; more go in as an Arrow table.
LIST_ROWS = 64


def arrow_types() -> tuple[list[Any], list[Any]]:
    """The Arrow types of the event_log and execution_rows columns the store writes."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    text, whole = pa.string(), pa.int64()
    events = [text, whole, ts, text, text, pa.int32(), text, text]  # ..., pending_execution
    executions = [text, text, pa.int32(), text, text, text, text, text, text, ts, ts]
    executions += [pa.float64(), text, text, text, whole, text, text, text]  # ..., files, params
    return events, executions


class LazyTypes(Sequence[Any]):
    """Arrow types resolved on first use, so importing the store skips pyarrow."""

    def __init__(self, index: int) -> None:
        self._index = index
        self._types: list[Any] | None = None

    def _resolve(self) -> list[Any]:
        if self._types is None:
            self._types = arrow_types()[self._index]
        return self._types

    def __getitem__(self, i: Any) -> Any:
        return self._resolve()[i]

    def __len__(self) -> int:
        return len(self._resolve())


EVENT_TYPES = LazyTypes(0)
EXEC_TYPES = LazyTypes(1)


def codec_or_text(text: str) -> Codec | str:
    """The codec a blob row names, or its text when that is no codec (for the check)."""
    try:
        return Codec(text)
    except ValueError:
        return text


#: The columns of the ``event_log`` table, in its order: an event's, and the JSON of the
#: execution row it finished while that row is not filed into ``execution_rows`` (schema 8).
EVENT_LOG_COLS = EVENT_COLS + ", pending_execution"


def event_values(e: Event, pending: str | None = None) -> list[Any]:
    """An event's row, in :data:`EVENT_LOG_COLS` order (``pending``: the JSON of the
    execution row riding in it, :func:`pending_execution`)."""
    payload = e.payload if type(e.payload) is dict else dict(e.payload)
    return [e.run_id, e.seq, e.ts, e.type._value_, e.step, e.attempt, dumps(payload), pending]


def pending_execution(x: StepExecution, flow: str) -> str | None:
    """The row ``x`` as the JSON that rides in the row of the event that finished it
    (read back by the ``pending_executions`` view, field by field as in
    ``schema.PENDING_FIELDS``); None for a row JSON cannot carry exactly (a duration that
    is not a finite number), which is then written as a row of its own."""
    duration = x.duration_ms
    if duration is not None and not math.isfinite(duration):
        return None
    started, finished = x.started_at, x.finished_at
    output = x.output
    return dumps(
        {
            "attempt": x.attempt,
            "flow": flow,
            "status": x.status._value_,
            "cache_key": x.cache_key,
            "output": None if output is None else output.to_json(),
            "output_hash": None if output is None else output.hash,
            "inputs": x.inputs if type(x.inputs) is dict else dict(x.inputs),
            "started_at": None if started is None else _iso(started),
            "finished_at": None if finished is None else _iso(finished),
            "duration_ms": duration,
            "error": x.error,
            "traceback": x.traceback,
            "source_run_id": x.source_run_id,
            "fingerprint": x.fingerprint,
            "files": None if x.files is None else x.files.to_json(),
            "params": None if x.params is None else dict(x.params),
        }
    )


def rows_with_pending(
    events: Sequence[Event], fresh: Sequence[StepExecution], flow: str
) -> list[list[Any]] | None:
    """The ``event_log`` rows of ``events``, each finished row of ``fresh`` riding in the
    row of the event that finished it (:func:`pending_execution`); None when one cannot
    (a run's end closes several attempts in one event, say): they are written as rows."""
    by_seq = {x.seq: x for x in fresh}
    if len(by_seq) != len(fresh):
        return None
    rows = []
    for e in events:
        x = by_seq.pop(e.seq, None)
        if x is None:
            rows.append(event_values(e))
            continue
        pending = pending_execution(x, flow) if x.step == e.step else None
        if pending is None:
            return None
        rows.append(event_values(e, pending))
    return None if by_seq else rows


#: Files a run's pending execution rows into ``execution_rows`` ...
FILE_PENDING = (
    f"INSERT INTO execution_rows ({EXEC_INSERT_COLS}) "
    f"SELECT {EXEC_INSERT_COLS} FROM pending_executions WHERE run_id = ?"
)
#: ... and then takes them off their events, in the same transaction.
CLEAR_PENDING = (
    "UPDATE event_log SET pending_execution = NULL "
    "WHERE run_id = ? AND pending_execution IS NOT NULL"
)


def _iso(t: dt.datetime) -> str:
    """``t`` as ISO text with its offset, read back the same in any time zone (a naive
    time is UTC, as the store's connections, set to UTC, take a bound one)."""
    text = t.isoformat()
    return text if t.utcoffset() is not None else text + "+00:00"


def insert_executions(rows: int) -> str:
    """An INSERT of ``rows`` execution rows as a VALUES list (parameters)."""
    return (
        "INSERT INTO execution_rows (run_id, step, attempt, flow, status, cache_key, output, "
        "output_hash, inputs, started_at, finished_at, duration_ms, error, traceback, "
        "source_run_id, seq, fingerprint, files, params) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    )


def executions_params(rows: Sequence[StepExecution], flow: str) -> list[Any]:
    """The parameters of :func:`insert_executions` for ``rows``."""
    params: list[Any] = []
    for x in rows:
        params += execution_params(x, flow)
    return params


def execution_params(x: StepExecution, flow: str) -> list[Any]:
    """An execution's row, in ``EXEC_INSERT_COLS`` order."""
    return [
        x.run_id,
        x.step,
        x.attempt,
        flow,
        x.status._value_,
        x.cache_key,
        dumps(x.output.to_json()) if x.output else None,
        x.output.hash if x.output else None,
        dumps(x.inputs if type(x.inputs) is dict else dict(x.inputs)),
        x.started_at,
        x.finished_at,
        x.duration_ms,
        x.error,
        x.traceback,
        x.source_run_id,
        x.seq,
        x.fingerprint,
        dumps(x.files.to_json()) if x.files is not None else None,
        None if x.params is None else dumps(dict(x.params)),
    ]
