"""What the SQL backends share: WHERE clauses for the run and event filters, and rows
of the ``runs`` and ``step_executions`` tables turned back into records.

The backends differ only in their parameter marker (``?`` or ``%s``), in how a column is
tested against a list, and in whether JSON columns come back as text or parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from nbflow.json_text import compact_encoder
from nbflow.store.damage import damaged_row
from nbflow.store.filters import run_filters
from nbflow.store.fold import RunState
from nbflow.store.records import (
    Event,
    EventType,
    FilesRead,
    Lease,
    RunRecord,
    RunStatus,
    StepExecution,
    StepStatus,
    ValueRef,
)

#: Compact JSON text of a value (anything not JSON as its str), for JSON columns: one
#: encoder, set up once, for every row.
dumps = compact_encoder(default=str)

#: The column lists the row mappers below read, in their order.
RUN_COLS = (
    "run_id, flow, flow_fingerprint, status, version, params, steps, created_at, started_at, "
    "finished_at, error, parent_run_id, fork_from_step, fork_from_version, thread_id, tenant"
)
#: The columns of DuckDB's ``run_records`` table: a run's row without its version, which
#: the ``runs`` view derives from the events.
RUN_RECORD_COLS = RUN_COLS.replace(" version,", "")
EXEC_COLS = (
    "run_id, step, attempt, status, cache_key, output, inputs, started_at, finished_at, "
    "duration_ms, error, traceback, source_run_id, seq, fingerprint, files, params"
)
EVENT_COLS = "run_id, seq, ts, type, step, attempt, payload"
LEASE_COLS = "run_id, token, pid, host, acquired_at, expires_at, proc_start"
#: The columns an execution row is inserted with (``flow`` and ``output_hash`` too).
EXEC_INSERT_COLS = (
    "run_id, step, attempt, flow, status, cache_key, output, output_hash, inputs, "
    "started_at, finished_at, duration_ms, error, traceback, source_run_id, seq, fingerprint, "
    "files, params"
)

#: Parses a JSON column as the driver returns it (text for DuckDB, parsed for psycopg).
JsonReader = Callable[[Any], Any]


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def tenant_clause(
    tenant: str | None, *, mark: str, prefix: str = ""
) -> tuple[list[str], list[Any]]:
    """The WHERE clause (and parameter) keeping the runs a store opened with ``tenant``
    sees: its own and those without a tenant (none for the owner's view)."""
    if tenant is None:
        return [], []
    return [f"({prefix}tenant IS NULL OR {prefix}tenant = {mark})"], [tenant]


def runs_query(
    columns: str,
    flow: str | None,
    status: str | Collection[str] | None,
    thread_id: str | None,
    limit: int | None,
    *,
    mark: str,
    in_list: str,
    tenant: str | None = None,
) -> tuple[str, list[Any]]:
    """A SELECT of ``columns`` from ``runs`` with the run filters, newest first, and its
    parameters; ``in_list`` tests ``status`` against a list parameter (it holds
    ``{mark}``); ``tenant`` keeps the runs that tenant sees."""
    clauses, params = tenant_clause(tenant, mark=mark)
    flow, statuses, thread_id, limit = run_filters(flow, status, thread_id, limit)
    if flow is not None:
        clauses.append(f"flow = {mark}")
        params.append(flow)
    if statuses is not None:
        clauses.append(in_list.format(column="status", mark=mark))
        params.append(sorted(statuses))
    if thread_id is not None:
        clauses.append(f"thread_id = {mark}")
        params.append(thread_id)
    query = f"SELECT {columns} FROM runs{_where(clauses)} ORDER BY created_at DESC, run_id DESC"
    if limit is not None:
        query += f" LIMIT {mark}"
        params.append(int(limit))
    return query, params


def event_filters(
    run_id: str | None,
    upto: int | None,
    *,
    mark: str,
    tenant: str | None = None,
    runs_table: str = "runs",
) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of an events query (``tenant``: of the runs that
    tenant sees, by their rows in ``runs_table``)."""
    from nbflow import arguments

    clauses: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        clauses.append(
            f"run_id IN (SELECT run_id FROM {runs_table} WHERE tenant IS NULL OR tenant = {mark})"
        )
        params.append(tenant)
    arguments.optional_count(upto, "upto (a version)")
    if run_id is not None:
        arguments.run_id(run_id)
        clauses.append(f"run_id = {mark}")
        params.append(run_id)
    if upto is not None:
        clauses.append(f"seq <= {mark}")
        params.append(upto)
    return _where(clauses), params


def run_row(r: RunRecord, *, version: bool = True) -> list[Any]:
    """A run's row in ``RUN_COLS`` order (``RUN_RECORD_COLS`` without ``version``)."""
    head = [r.run_id, r.flow, r.flow_fingerprint, r.status.value]
    return [
        *head,
        *([r.version] if version else []),
        dumps(dict(r.params)),
        dumps(list(r.steps)),
        r.created_at,
        r.started_at,
        r.finished_at,
        r.error,
        r.parent_run_id,
        r.fork_from_step,
        r.fork_from_version,
        r.thread_id,
        r.tenant,
    ]


def run_from_row(r: Sequence[Any], read_json: JsonReader = json.loads) -> RunRecord:
    """A run record from a row of the ``runs`` columns in their usual order;
    CorruptStoreError for a row nbflow did not write so."""
    try:
        return _run_from_row(r, read_json)
    except (ValueError, TypeError, KeyError) as exc:
        raise damaged_row(f"the runs row of run {r[0]!r}", exc) from None


def _run_from_row(r: Sequence[Any], read_json: JsonReader) -> RunRecord:
    params, steps = read_json(r[5]), read_json(r[6])
    if not isinstance(params, dict) or not isinstance(steps, list):
        raise TypeError("its params are not an object, or its steps not a list")
    return RunRecord(
        run_id=r[0],
        flow=r[1],
        flow_fingerprint=r[2],
        status=RunStatus(r[3]),
        version=r[4],
        params=params,
        steps=tuple(steps),
        created_at=r[7],
        started_at=r[8],
        finished_at=r[9],
        error=r[10],
        parent_run_id=r[11],
        fork_from_step=r[12],
        fork_from_version=r[13],
        thread_id=r[14],
        tenant=r[15],
    )


def execution_from_row(r: Sequence[Any], read_json: JsonReader = json.loads) -> StepExecution:
    """A step execution from a row of the ``step_executions`` columns in their usual order;
    CorruptStoreError for a row nbflow did not write so."""
    try:
        return _execution_from_row(r, read_json)
    except (ValueError, TypeError, KeyError) as exc:
        raise damaged_row(f"the execution row of step {r[1]!r} in run {r[0]!r}", exc) from None


def event_from_row(r: Sequence[Any], read_json: JsonReader = json.loads) -> Event:
    """An event from a row of :data:`EVENT_COLS`; CorruptStoreError for a row nbflow did
    not write so."""
    try:
        payload = read_json(r[6])
        if not isinstance(payload, dict):
            raise TypeError("its payload is not an object")
        return Event(r[0], r[1], r[2], EventType(r[3]), r[4], r[5], payload)
    except (ValueError, TypeError, KeyError) as exc:
        raise damaged_row(f"event {r[1]} of run {r[0]!r}", exc) from None


def _execution_from_row(r: Sequence[Any], read_json: JsonReader) -> StepExecution:
    return StepExecution(
        run_id=r[0],
        step=r[1],
        attempt=r[2],
        status=StepStatus(r[3]),
        cache_key=r[4],
        output=ValueRef.from_json(read_json(r[5])) if r[5] else None,
        inputs=read_json(r[6]) if r[6] else {},
        started_at=r[7],
        finished_at=r[8],
        duration_ms=r[9],
        error=r[10],
        traceback=r[11],
        source_run_id=r[12],
        seq=r[13],
        fingerprint=r[14],
        files=FilesRead.from_json(read_json(r[15]) if r[15] else None),
        params=read_json(r[16]) if r[16] is not None else None,
    )


def lease_from_row(r: Sequence[Any]) -> Lease:
    """A lease from a row of the ``leases`` columns in :data:`LEASE_COLS` order."""
    return Lease(
        run_id=r[0],
        token=r[1],
        pid=r[2],
        host=r[3],
        acquired_at=r[4],
        expires_at=r[5],
        proc_start=r[6],
    )


#: What keeps a value alive (see ``Store.referenced_hashes``): the hashes the execution
#: rows and the output events name, for the runs that pass ``{keep}`` (each dialect's
#: "run_id not in the list" test; it stands twice) ...
REFERENCED_HASHES = (
    "SELECT output_hash FROM step_executions WHERE output_hash IS NOT NULL AND {keep} "
    "UNION SELECT payload->'output'->>'hash' FROM events "
    "WHERE type IN ('step_output_recorded', 'step_cached') AND {keep}"
)
#: ... and the outputs the pending forks of those runs plan to reuse, and the values of
#: their records (the payloads of their starts).
FORK_PAYLOADS = "SELECT payload FROM events WHERE type IN ('run_forked', 'run_started') AND {keep}"


def referenced_in(
    hash_rows: Iterable[Sequence[Any]], fork_payloads: Iterable[dict[str, Any]]
) -> set[str]:
    """The hashes of :data:`REFERENCED_HASHES`' rows and of the forks' payloads."""
    from nbflow.store.gc import hashes_in_payload

    found = {r[0] for r in hash_rows if r[0]}
    for payload in fork_payloads:
        found |= hashes_in_payload(EventType.RUN_FORKED, payload)
        found |= hashes_in_payload(EventType.RUN_STARTED, payload)
    return found


#: The tail of an INSERT into step_executions that overwrites a row already there (both
#: backends' SQL: the same ``ON CONFLICT`` syntax).
UPSERT_EXECUTIONS = (
    " ON CONFLICT (run_id, step, attempt) DO UPDATE SET "
    "status = excluded.status, cache_key = excluded.cache_key, "
    "output = excluded.output, output_hash = excluded.output_hash, "
    "inputs = excluded.inputs, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at, duration_ms = excluded.duration_ms, "
    "error = excluded.error, traceback = excluded.traceback, "
    "source_run_id = excluded.source_run_id, seq = excluded.seq, "
    "fingerprint = excluded.fingerprint, files = excluded.files, params = excluded.params"
)


def lease_values(lease: Lease) -> list[Any]:
    """A lease's values in :data:`LEASE_COLS` order (the inverse of :func:`lease_from_row`)."""
    return [
        lease.run_id,
        lease.token,
        lease.pid,
        lease.host,
        lease.acquired_at,
        lease.expires_at,
        lease.proc_start,
    ]


#: ``UPDATE leases SET`` clause for every column but the key (placeholder ``{m}``), the
#: values in :func:`lease_values` order after the run id.
LEASE_SETS = (
    "token = {m}, pid = {m}, host = {m}, acquired_at = {m}, expires_at = {m}, proc_start = {m}"
)


def unfinished(row: StepExecution | None) -> bool:
    """Whether an attempt has no finished row yet (none at all, or still queued or running)."""
    return row is None or row.status.in_progress


def finished_rows(
    changed: Sequence[StepExecution], previous: RunState
) -> tuple[list[StepExecution], list[StepExecution]]:
    """The finished attempts among ``changed``: (new rows, rows already written).

    Only finished attempts are rows of ``step_executions``: a row is written when its
    attempt ends, by a plain insert (an upsert costs ~4x as much on DuckDB); running
    attempts live in the events until then. A row already finished is only written
    again for attempt 0 (a skipped step cached on resume), as an upsert.
    """
    finished = [x for x in changed if not x.status.in_progress]
    recorded = previous.executions
    fresh = [x for x in finished if unfinished(recorded.get((x.step, x.attempt)))]
    again = [x for x in finished if not unfinished(recorded.get((x.step, x.attempt)))]
    return fresh, again
