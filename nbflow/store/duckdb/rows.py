"""Rows of the DuckDB store's tables from records, and the SQL fragments that write them."""

from __future__ import annotations

import json
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
from nbflow.store.sql_rows import RUN_RECORD_COLS, dumps

#: A column tested against a list parameter.
IN_LIST = "{column} IN (SELECT unnest({mark}::VARCHAR[]))"
#: Execution rows of flow ? with a usable output, for a list ? of code fingerprints,
#: in runs not marked untrusted (an anti-join with a table that is mostly empty: a few
#: per cent of this one query of a fully cached re-run, measured).
CANDIDATE_ROWS = (
    "flow = ? AND status IN ('completed', 'cached') AND output IS NOT NULL "
    "AND cache_key IS NOT NULL AND fingerprint IN (SELECT unnest(?::VARCHAR[])) "
    "AND run_id NOT IN (SELECT run_id FROM untrusted_runs)"
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


#: At most this many rows go in as a VALUES list; more go in as an Arrow table.
VALUES_ROWS = 8


def arrow_types() -> tuple[list[Any], list[Any]]:
    """The Arrow types of the events and step_executions columns the store writes."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    text, whole = pa.string(), pa.int64()
    events = [text, whole, ts, text, text, pa.int32(), text]
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


def event_values(e: Event) -> list[Any]:
    """An event's row, in ``EVENT_COLS`` order."""
    payload = e.payload if type(e.payload) is dict else dict(e.payload)
    return [e.run_id, e.seq, e.ts, e.type._value_, e.step, e.attempt, dumps(payload)]


def insert_executions(rows: int) -> str:
    """An INSERT of ``rows`` step_executions rows as a VALUES list (parameters)."""
    return (
        "INSERT INTO step_executions (run_id, step, attempt, flow, status, cache_key, output, "
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
