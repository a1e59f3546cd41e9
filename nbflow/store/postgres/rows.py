"""Rows of the PostgreSQL store's tables from records, and the SQL that writes them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from nbflow.store.records import StepExecution
from nbflow.store.sql_rows import dumps

T = TypeVar("T")

# A column tested against a list parameter.
IN_LIST = "{column} = ANY({mark}::text[])"


# The rows of an append arrive as one array per column and are unnested server-side: the
# statement's text does not depend on how many rows there are, so psycopg prepares it.
EVENTS_FROM_ARRAYS = (
    "SELECT %(run_id)s, e.seq, e.ts, e.type, e.step, e.attempt, e.payload::json FROM unnest("
    "%(e_seq)s::bigint[], %(e_ts)s::timestamptz[], %(e_type)s::text[], %(e_step)s::text[], "
    "%(e_attempt)s::integer[], %(e_payload)s::text[]) AS e(seq, ts, type, step, attempt, payload)"
)
EXEC_ARRAYS = (
    ("step", "text"),
    ("attempt", "integer"),
    ("status", "text"),
    ("cache_key", "text"),
    ("output", "text"),
    ("output_hash", "text"),
    ("inputs", "text"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("duration_ms", "double precision"),
    ("error", "text"),
    ("traceback", "text"),
    ("source_run_id", "text"),
    ("seq", "bigint"),
    ("fingerprint", "text"),
    ("files", "text"),
    ("params", "text"),
)


def executions_from_arrays(prefix: str) -> str:
    """A SELECT of step_executions rows unnested from the arrays named ``prefix_*``."""
    arrays = ", ".join(f"%({prefix}_{name})s::{kind}[]" for name, kind in EXEC_ARRAYS)
    names = ", ".join(name for name, _ in EXEC_ARRAYS)
    return (
        "SELECT %(run_id)s, x.step, x.attempt, %(flow)s, x.status, x.cache_key, "
        "x.output::json, x.output_hash, x.inputs::json, x.started_at, x.finished_at, "
        "x.duration_ms, x.error, x.traceback, x.source_run_id, x.seq, x.fingerprint, "
        "x.files::json, x.params::json "
        f"FROM unnest({arrays}) AS x({names})"
    )


@contextmanager
def snapshot(con: psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[Any]]:
    """A cursor whose statements see one snapshot: a read-only repeatable-read
    transaction, or the transaction the connection is in already (``_read_snapshot``)."""
    idle = con.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with con.cursor() as cur:
        if not idle:
            yield cur
            return
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield cur
        finally:
            if not con.broken and not con.closed:
                cur.execute("ROLLBACK")


def parsed(value: Any) -> Any:
    """A JSON column as psycopg returns it: already parsed."""
    return value


def execution_arrays(prefix: str, rows: Sequence[StepExecution]) -> dict[str, list[Any]]:
    """One array per column of ``rows``, named ``prefix_<column>``."""
    columns: dict[str, list[Any]] = {f"{prefix}_{name}": [] for name, _ in EXEC_ARRAYS}
    for x in rows:
        for name, value in (
            ("step", x.step),
            ("attempt", x.attempt),
            ("status", x.status.value),
            ("cache_key", x.cache_key),
            ("output", dumps(x.output.to_json()) if x.output else None),
            ("output_hash", x.output.hash if x.output else None),
            ("inputs", dumps(dict(x.inputs))),
            ("started_at", x.started_at),
            ("finished_at", x.finished_at),
            ("duration_ms", x.duration_ms),
            ("error", x.error),
            ("traceback", x.traceback),
            ("source_run_id", x.source_run_id),
            ("seq", x.seq),
            ("fingerprint", x.fingerprint),
            ("files", dumps(x.files.to_json()) if x.files is not None else None),
            ("params", None if x.params is None else dumps(dict(x.params))),
        ):
            columns[f"{prefix}_{name}"].append(value)
    return columns
