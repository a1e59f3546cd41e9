"""The PostgreSQL store: flows, runs, events, step executions and values in one schema
of a PostgreSQL database, written by many processes and machines at once.

Open it with ``nf.open_store("postgresql://user@host:5432/dbname")``; ``?schema=NAME``
keeps the store in its own schema (created on first open). Other query parameters are
libpq's (``sslmode``, ``connect_timeout``...); a password may come from the URI, from
``$PGPASSWORD`` or from ``~/.pgpass``.

Concurrency is optimistic, as on DuckDB: an append is one statement that moves the run
row from the version the writer read to the next one and inserts the events only if it
did, and the events' ``(run_id, seq)`` key refuses a second writer's events; the loser
gets StaleVersionError and wrote nothing. Values are content-addressed: two processes
storing one hash insert its row once (``ON CONFLICT DO NOTHING``), the second waiting
for the first's transaction rather than failing.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import psycopg
from psycopg import sql as pgsql

from nbflow.errors import (
    DuplicateRunError,
    NotAStoreError,
    StaleVersionError,
    StoreError,
    UnknownRunError,
)
from nbflow.store import postgres_schema
from nbflow.store.base import Store
from nbflow.store.fold import RunState
from nbflow.store.records import (
    BlobRecord,
    Codec,
    Event,
    EventType,
    FlowRecord,
    Lease,
    RunRecord,
    StepDefinition,
    StepExecution,
    StepStatus,
    ValueRef,
)
from nbflow.store.sql_rows import (
    EVENT_COLS,
    EXEC_COLS,
    EXEC_INSERT_COLS,
    LEASE_COLS,
    LEASE_SETS,
    RUN_COLS,
    event_filters,
    execution_from_row,
    lease_from_row,
    lease_values,
    run_filters,
    run_from_row,
    unfinished,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from nbflow.store.check import StoredBlob
    from nbflow.values import EncodedValue

T = TypeVar("T")

SCHEMES = ("postgresql://", "postgres://")

# A column tested against a list parameter.
_IN_LIST = "{column} = ANY({mark}::text[])"


# The rows of an append arrive as one array per column and are unnested server-side: the
# statement's text does not depend on how many rows there are, so psycopg prepares it.
_EVENTS_FROM_ARRAYS = (
    "SELECT %(run_id)s, e.seq, e.ts, e.type, e.step, e.attempt, e.payload::json FROM unnest("
    "%(e_seq)s::bigint[], %(e_ts)s::timestamptz[], %(e_type)s::text[], %(e_step)s::text[], "
    "%(e_attempt)s::integer[], %(e_payload)s::text[]) AS e(seq, ts, type, step, attempt, payload)"
)
_EXEC_ARRAYS = (
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
)


def _executions_from_arrays(prefix: str) -> str:
    arrays = ", ".join(f"%({prefix}_{name})s::{kind}[]" for name, kind in _EXEC_ARRAYS)
    names = ", ".join(name for name, _ in _EXEC_ARRAYS)
    return (
        "SELECT %(run_id)s, x.step, x.attempt, %(flow)s, x.status, x.cache_key, "
        "x.output::json, x.output_hash, x.inputs::json, x.started_at, x.finished_at, "
        "x.duration_ms, x.error, x.traceback, x.source_run_id, x.seq, x.fingerprint "
        f"FROM unnest({arrays}) AS x({names})"
    )


_UPSERT_EXECUTIONS = (
    " ON CONFLICT (run_id, step, attempt) DO UPDATE SET "
    "status = excluded.status, cache_key = excluded.cache_key, "
    "output = excluded.output, output_hash = excluded.output_hash, "
    "inputs = excluded.inputs, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at, duration_ms = excluded.duration_ms, "
    "error = excluded.error, traceback = excluded.traceback, "
    "source_run_id = excluded.source_run_id, seq = excluded.seq, "
    "fingerprint = excluded.fingerprint"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


@contextmanager
def _snapshot(con: psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[Any]]:
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


class PostgresStore(Store):
    """A store in a PostgreSQL database (one schema of it), shared by many writers.

    One connection per store object, used under the store's lock and re-established on
    the next use when it drops. DataFrame outputs are stored as Arrow IPC bytes, so
    :meth:`table_name` is None here: query ``runs``, ``events``, ``step_executions`` and
    ``blobs`` with :meth:`sql`, and load values with :meth:`load_value`.
    """

    def __init__(self, uri: str, *, trust: bool = True, connect_timeout: float = 10):
        super().__init__()
        self.trust = trust
        self._conninfo, self.schema, self.uri, self._where = parse_uri(uri)
        self._connect_timeout = connect_timeout
        self._con: psycopg.Connection[Any] | None = None
        self._known_blobs: dict[str, int] = {}  # hash -> stored size, of blobs seen
        self._closed = False
        self._connect()

    # -- connection -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """Open the connection, point it at the store's schema, create or check the schema."""
        try:
            con = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self._connect_timeout)),
                application_name="nbflow",
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the PostgreSQL store at {self._where}: {_first_line(exc)}"
            ) from None
        _register_text_adapters(con)
        try:
            con.execute("SET TIME ZONE 'UTC'")
            if self.schema is not None:
                ident = pgsql.Identifier(self.schema)
                exists = con.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]
                ).fetchall()
                if not exists:  # (creating needs a right that using does not)
                    with con.transaction():
                        con.execute("SELECT pg_advisory_xact_lock(hashtext('nbflow schema'))")
                        con.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
                con.execute(pgsql.SQL("SET search_path TO {}").format(ident))
            postgres_schema.setup(con, self._where)
        except (NotAStoreError, StoreError):
            con.close()
            raise
        except psycopg.Error as exc:
            con.close()
            raise StoreError(
                f"cannot set up the store at {self._where}: {_first_line(exc)}"
            ) from None
        self._con = con
        return con

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection (reconnecting if it dropped); call under the lock."""
        if self._closed:
            raise StoreError(f"{self} is closed; open it again with nf.open_store().")
        con = self._con
        if con is None or con.closed or con.broken:
            if con is not None:
                con.close()
            self._con = None
            con = self._connect()
        return con

    def _run(self, work: Callable[[psycopg.Connection[Any]], T], *, retry: bool = True) -> T:
        """Run ``work(connection)`` under the lock.

        A connection that turns out dropped is re-established, and ``work`` run again on
        the new one if ``retry`` (reads); a write is not repeated, since it may have
        been committed. Integrity errors reach the caller as they are (it knows what a
        duplicate key means); other driver errors become StoreError.
        """
        with self._lock:
            con = self._connection()
            try:
                return work(con)
            except psycopg.IntegrityError:
                raise
            except psycopg.Error as exc:
                if not (con.broken or con.closed):
                    raise StoreError(
                        f"the PostgreSQL store at {self._where} failed: {_first_line(exc)}"
                    ) from None
                self._con = None
                if not retry:
                    raise StoreError(
                        f"lost the connection to {self._where} during a write "
                        f"({_first_line(exc)}); it may or may not have been committed. "
                        "The next call reconnects: reload the run to see."
                    ) from None
            con = self._connection()
            try:
                return work(con)
            except psycopg.IntegrityError:
                raise
            except psycopg.Error as exc:
                lost = con.broken or con.closed
                raise StoreError(
                    f"{'lost the connection to' if lost else 'the PostgreSQL store at'} "
                    f"{self._where}: {_first_line(exc)}"
                ) from None

    def _rows(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        return self._run(lambda con: con.execute(query, params).fetchall())

    def close(self) -> None:
        """Close the connection; the object must not be used afterwards."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._con is not None:
                    self._con.close()
                    self._con = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- flows ------------------------------------------------------------------------

    def put_flow(self, flow: FlowRecord) -> None:
        """Record a flow definition unless it is already stored."""
        definition = [s.to_json() for s in flow.steps]
        self._run(
            lambda con: con.execute(
                "INSERT INTO flows VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [flow.name, flow.fingerprint, _dumps(definition), flow.created_at],
            )
        )

    def get_flow(self, name: str, fingerprint: str) -> FlowRecord | None:
        """The stored definition, or None."""
        rows = self._rows(
            "SELECT definition, created_at FROM flows WHERE name = %s AND fingerprint = %s",
            [name, fingerprint],
        )
        if not rows:
            return None
        steps = tuple(StepDefinition.from_json(s) for s in rows[0][0])
        return FlowRecord(name, fingerprint, steps, rows[0][1])

    # -- runs -------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Add a new run (pending, version 0)."""
        from nbflow.store.fold import initial_state

        state = initial_state(run)
        r = state.run
        params = [
            r.run_id,
            r.flow,
            r.flow_fingerprint,
            r.status.value,
            r.version,
            _dumps(dict(r.params)),
            _dumps(list(r.steps)),
            r.created_at,
            r.started_at,
            r.finished_at,
            r.error,
            r.parent_run_id,
            r.fork_from_step,
            r.fork_from_version,
            r.thread_id,
        ]
        try:
            self._run(
                lambda con: con.execute(
                    f"INSERT INTO runs ({RUN_COLS}) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    params,
                ),
                retry=False,
            )
        except psycopg.errors.UniqueViolation:
            raise DuplicateRunError(run.run_id) from None
        with self._lock:
            self._states[run.run_id] = state

    def _get_run(self, run_id: str) -> RunRecord:
        """The run's row as stored; UnknownRunError if absent."""
        rows = self._rows(f"SELECT {RUN_COLS} FROM runs WHERE run_id = %s", [run_id])
        if not rows:
            raise UnknownRunError(run_id, self)
        return run_from_row(rows[0], _parsed)

    def _list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """The stored run rows matching the filters, newest first."""
        where, params = run_filters(flow, status, thread_id, mark="%s", in_list=_IN_LIST)
        query = f"SELECT {RUN_COLS} FROM runs{where} ORDER BY created_at DESC, run_id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [run_from_row(r, _parsed) for r in self._rows(query, params)]

    # -- leases -----------------------------------------------------------------------

    def _read_leases(self, run_ids: Collection[str]) -> dict[str, Lease]:
        """The leases held on these runs, by run id."""
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        rows = self._rows(f"SELECT {LEASE_COLS} FROM leases WHERE run_id = ANY(%s::text[])", [ids])
        return {r[0]: lease_from_row(r) for r in rows}

    def _swap_lease(self, run_id: str, expected_token: str | None, new: Lease | None) -> bool:
        """Replace the lease of ``run_id`` by ``new`` if its token is ``expected_token``
        (None: no lease held), in one statement; return whether it was replaced."""
        values = None if new is None else lease_values(new)
        params: list[Any]
        if values is None:
            if expected_token is None:
                query = "SELECT NOT EXISTS (SELECT 1 FROM leases WHERE run_id = %s)"
                params = [run_id]
            else:
                query = "DELETE FROM leases WHERE run_id = %s AND token = %s RETURNING true"
                params = [run_id, expected_token]
        elif expected_token is None:
            query = (
                f"INSERT INTO leases ({LEASE_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING true"
            )
            params = values
        else:
            sets = LEASE_SETS.format(m="%s")
            query = f"UPDATE leases SET {sets} WHERE run_id = %s AND token = %s RETURNING true"
            params = [*values[1:], run_id, expected_token]
        rows = self._run(lambda con: con.execute(query, params).fetchall(), retry=False)
        return bool(rows and rows[0][0])

    # -- events -----------------------------------------------------------------------

    def _write_events(
        self,
        run: RunRecord,
        events: Sequence[Event],
        changed: Sequence[StepExecution],
        expected_version: int,
        *,
        previous: RunState,
    ) -> None:
        # As on DuckDB, only finished attempts are rows of step_executions (running ones
        # live in the events until they end; see `executions`), and a row already
        # finished is only recorded again for attempt 0 (a skipped step cached on resume).
        finished = [x for x in changed if x.status is not StepStatus.RUNNING]
        recorded = previous.executions
        fresh = [x for x in finished if unfinished(recorded.get((x.step, x.attempt)))]
        again = [x for x in finished if not unfinished(recorded.get((x.step, x.attempt)))]
        # One statement, so one transaction and one round trip: the version guard on the
        # run row comes first, and every insert is conditional on it having matched.
        parts = [
            "WITH moved AS (UPDATE runs SET status = %(status)s, version = %(version)s, "
            "started_at = %(started_at)s, finished_at = %(finished_at)s, error = %(error)s "
            "WHERE run_id = %(run_id)s AND version = %(expected)s RETURNING 1)"
        ]
        params: dict[str, Any] = {
            "run_id": run.run_id,
            "flow": run.flow,
            "status": run.status.value,
            "version": run.version,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "error": run.error,
            "expected": expected_version,
        }
        guard = " WHERE EXISTS (SELECT 1 FROM moved)"
        if events:
            parts.append(
                f", new_events AS (INSERT INTO events ({EVENT_COLS}) {_EVENTS_FROM_ARRAYS}{guard})"
            )
            params |= {
                "e_seq": [e.seq for e in events],
                "e_ts": [e.ts for e in events],
                "e_type": [e.type.value for e in events],
                "e_step": [e.step for e in events],
                "e_attempt": [e.attempt for e in events],
                "e_payload": [_dumps(dict(e.payload)) for e in events],
            }
        for prefix, rows, tail in (("f", fresh, ""), ("a", again, _UPSERT_EXECUTIONS)):
            if not rows:
                continue
            parts.append(
                f", {prefix}_rows AS (INSERT INTO step_executions ({EXEC_INSERT_COLS}) "
                f"{_executions_from_arrays(prefix)}{guard}{tail})"
            )
            params |= _execution_arrays(prefix, rows)
        parts.append(" SELECT count(*) FROM moved")
        query = "".join(parts)

        def write(con: psycopg.Connection[Any]) -> int:
            return int(con.execute(query, params).fetchall()[0][0])

        try:
            moved = self._run(write, retry=False)
        except psycopg.errors.UniqueViolation:
            moved = 0  # the (run_id, seq) key refused our events: someone appended first
        if moved != 1:
            actual = self._rows("SELECT version FROM runs WHERE run_id = %s", [run.run_id])
            raise StaleVersionError(run.run_id, expected_version, actual[0][0] if actual else None)

    def read_events(self, run_id: str | None = None, *, upto: int | None = None) -> list[Event]:
        """Events of one run (or all), in order."""
        if run_id is not None:
            self._get_run(run_id)
        where, params = event_filters(run_id, upto, mark="%s")
        rows = self._rows(f"SELECT {EVENT_COLS} FROM events{where} ORDER BY run_id, seq", params)
        return [Event(r[0], r[1], r[2], EventType(r[3]), r[4], r[5], r[6]) for r in rows]

    def executions(self, run_id: str) -> list[StepExecution]:
        """The run's execution rows in the order they last changed (running ones too)."""

        def read(con: psycopg.Connection[Any]) -> list[tuple[Any, ...]] | None:
            # One snapshot for the check and the rows: a writer may finish an attempt
            # between two statements.
            with _snapshot(con) as cur:
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = %(r)s), "
                    "EXISTS (SELECT 1 FROM events e WHERE e.run_id = %(r)s "
                    "AND e.type = 'step_started' AND NOT EXISTS (SELECT 1 FROM "
                    "step_executions x WHERE x.run_id = e.run_id AND x.step = e.step "
                    "AND x.attempt = e.attempt))",
                    {"r": run_id},
                )
                exists, running = cur.fetchone() or (False, False)
                if not exists:
                    raise UnknownRunError(run_id, self)
                if running:
                    return None
                cur.execute(
                    f"SELECT {EXEC_COLS} FROM step_executions WHERE run_id = %s "
                    "ORDER BY seq, attempt, step",
                    [run_id],
                )
                return cur.fetchall()

        rows = self._run(read)
        if rows is None:
            return sorted(
                self.state_at(run_id).executions.values(), key=lambda x: (x.seq, x.attempt, x.step)
            )
        return [execution_from_row(r, _parsed) for r in rows]

    def cache_candidates(
        self, flow: str, fingerprints: Collection[str]
    ) -> dict[str, StepExecution]:
        """Executions with an output in ``flow``'s runs, by cache key, for these fingerprints."""
        wanted = sorted(set(fingerprints))
        if not wanted:
            return {}
        rows = self._rows(
            f"SELECT DISTINCT ON (cache_key) {EXEC_COLS} FROM step_executions "
            "WHERE flow = %s AND status IN ('completed', 'cached') AND output IS NOT NULL "
            "AND cache_key IS NOT NULL AND fingerprint = ANY(%s::text[]) "
            "ORDER BY cache_key, seq, run_id",
            [flow, wanted],
        )
        found: dict[str, StepExecution] = {}
        for r in rows:
            x = execution_from_row(r, _parsed)
            assert x.cache_key is not None
            found.setdefault(x.cache_key, x)
        return found

    # -- values -----------------------------------------------------------------------

    def put_value(self, encoded: EncodedValue) -> ValueRef:
        """Store the value's bytes once under its hash (a DataFrame as Arrow IPC)."""
        ref = encoded.ref
        if ref.is_inline:
            return ref
        stored = self._stored_size(ref.hash)
        if stored is not None:
            # Equal content may be laid out in memory differently (a frame read back
            # from the store, say): the stored record's size is the value's size.
            return ref.with_size(stored)
        if ref.codec is Codec.ARROW:
            from nbflow.values.codecs import _ipc_bytes

            assert encoded.table is not None
            data = _ipc_bytes(encoded.table)
        else:
            assert encoded.data is not None
            data = encoded.data
        size = postgres_schema.CHUNK_BYTES
        view = memoryview(data)
        chunks = [view[i : i + size] for i in range(0, len(data), size)] or [view[:0]]
        meta = _dumps(dict(encoded.meta))

        def write(con: psycopg.Connection[Any]) -> int:
            with con.transaction():
                # A second writer of the same hash waits here for the first to commit,
                # then inserts nothing: the row and its chunks appear together or not at all.
                inserted = con.execute(
                    "INSERT INTO blobs (hash, codec, size, created_at, table_name, meta, "
                    "stored_bytes, chunks) VALUES (%s, %s, %s, now(), NULL, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING RETURNING size",
                    [ref.hash, ref.codec.value, ref.size, meta, len(data), len(chunks)],
                ).fetchall()
                if not inserted:
                    row = con.execute("SELECT size FROM blobs WHERE hash = %s", [ref.hash])
                    return int(row.fetchall()[0][0])
                with (
                    con.cursor() as cur,
                    cur.copy(
                        "COPY blob_chunks (hash, idx, data) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["text", "int4", "bytea"])
                    for idx, chunk in enumerate(chunks):
                        copy.write_row((ref.hash, idx, chunk))
                return ref.size

        size = self._run(write, retry=False)
        with self._lock:
            self._known_blobs[ref.hash] = size
        return ref.with_size(size)

    def load_value(self, ref: ValueRef) -> Any:
        """Load and decode the value a ref points at."""
        from nbflow.values import decode

        if ref.is_inline:
            return decode(ref, trust=self.trust)
        stored = self.read_encoded(ref)
        return decode(ref, table=stored.table, data=stored.data, meta=stored.meta, trust=self.trust)

    def read_encoded(self, ref: ValueRef) -> EncodedValue:
        """The blob row and its bytes (a DataFrame's Arrow table, read back from its IPC
        bytes); not decoded."""
        from nbflow.values import EncodedValue

        if ref.is_inline:
            return EncodedValue(ref=ref)

        found = self._read_blob(ref.hash)
        if found is None:
            raise StoreError(
                f"the value {ref.hash} is missing from {self}: it was deleted or never "
                "written. `nbflow check` reports such problems."
            )
        codec, size, meta, data = found
        stored = ValueRef(Codec(codec), ref.hash, size, ref.type_name)
        if stored.codec is Codec.ARROW:
            import pyarrow as pa

            table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
            return EncodedValue(ref=stored, table=table, meta=meta)
        return EncodedValue(ref=stored, data=data, meta=meta)

    def _read_blob(self, hash: str) -> tuple[str, int, dict[str, Any], bytes] | None:
        """(codec, size, meta, bytes) of a stored blob, or None; StoreError when some of
        its chunks are missing."""

        def read(con: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            with _snapshot(con) as cur:
                cur.execute("SELECT codec, size, meta, chunks FROM blobs WHERE hash = %s", [hash])
                row = cur.fetchone()
                if row is None:
                    return None
                cur.execute("SELECT data FROM blob_chunks WHERE hash = %s ORDER BY idx", [hash])
                return (*row, [r[0] for r in cur.fetchall()])

        found = self._run(read)
        if found is None:
            return None
        codec, size, meta, chunks, parts = found
        if len(parts) != chunks:
            raise StoreError(
                f"the value {hash} in {self} is damaged: {len(parts)} of its {chunks} "
                "chunks are stored. `nbflow check` reports such problems."
            )
        data = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        return codec, size, meta or {}, data

    def has_blob(self, hash: str) -> bool:
        """Whether a blob with this hash is stored."""
        return self._stored_size(hash) is not None

    def _stored_size(self, hash: str) -> int | None:
        """The size recorded for the blob ``hash``, or None if there is none."""
        if hash in self._known_blobs:
            return self._known_blobs[hash]
        rows = self._rows("SELECT size FROM blobs WHERE hash = %s", [hash])
        if not rows:
            return None
        with self._lock:
            self._known_blobs[hash] = int(rows[0][0])
        return int(rows[0][0])

    def list_blobs(self) -> list[BlobRecord]:
        """Every blob row."""
        rows = self._rows(
            "SELECT hash, codec, size, created_at, table_name FROM blobs ORDER BY created_at, hash"
        )
        return [BlobRecord(r[0], Codec(r[1]), r[2], r[3], r[4]) for r in rows]

    # -- retention ----------------------------------------------------------------------

    def referenced_hashes(self, exclude_runs: Collection[str] = ()) -> set[str]:
        """The value hashes referenced by every run except ``exclude_runs`` (one query
        over the executions and the output events, plus the pending forks' plans)."""
        from nbflow.store.gc import hashes_in_payload

        excluded = sorted(set(exclude_runs))
        rows = self._rows(
            "SELECT output_hash FROM step_executions WHERE output_hash IS NOT NULL "
            "AND NOT (run_id = ANY(%(x)s::text[])) "
            "UNION SELECT payload->'output'->>'hash' FROM events "
            "WHERE type IN ('step_output_recorded', 'step_cached') "
            "AND NOT (run_id = ANY(%(x)s::text[]))",
            {"x": excluded},
        )
        found = {r[0] for r in rows if r[0]}
        forks = self._rows(
            "SELECT payload FROM events WHERE type = 'run_forked' "
            "AND NOT (run_id = ANY(%s::text[]))",
            [excluded],
        )
        for (payload,) in forks:
            found |= hashes_in_payload(EventType.RUN_FORKED, payload)
        return found

    def _delete(self, run_ids: Collection[str], blob_hashes: Collection[str]) -> None:
        runs, hashes = sorted(run_ids), sorted(blob_hashes)

        def delete(con: psycopg.Connection[Any]) -> None:
            with con.transaction():
                # The run rows first: an appender waits on its run's row, then finds it
                # gone and writes nothing (its inserts are conditional on that row).
                con.execute(
                    "SELECT 1 FROM runs WHERE run_id = ANY(%s::text[]) ORDER BY run_id FOR UPDATE",
                    [runs],
                )
                for table in ("events", "step_executions", "leases", "runs"):
                    con.execute(
                        pgsql.SQL("DELETE FROM {} WHERE run_id = ANY(%s::text[])").format(
                            pgsql.Identifier(table)
                        ),
                        [runs],
                    )
                # blob_chunks go with their blob row (ON DELETE CASCADE).
                con.execute("DELETE FROM blobs WHERE hash = ANY(%s::text[])", [hashes])

        self._run(delete, retry=False)
        with self._lock:
            for hash in hashes:
                self._known_blobs.pop(hash, None)

    # -- integrity ------------------------------------------------------------------------

    # An attempt's row is written when it ends (see _write_events).
    _rows_hold_running_attempts: ClassVar[bool] = False

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """One read-only repeatable-read transaction: the check sees the store as of one
        instant while other processes write."""
        with self._lock:
            con = self._connection()
            con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield
            finally:
                if con is self._con and not con.broken and not con.closed:
                    con.execute("ROLLBACK")

    def _execution_rows(self) -> dict[str, list[StepExecution]]:
        rows = self._rows(
            f"SELECT {EXEC_COLS} FROM step_executions ORDER BY run_id, seq, attempt, step"
        )
        found: dict[str, list[StepExecution]] = {}
        for r in rows:
            found.setdefault(r[0], []).append(execution_from_row(r, _parsed))
        return found

    def _stored_blobs(self) -> list[StoredBlob]:
        from nbflow.store.check import StoredBlob

        # A value is whole when all its chunks are there. A DataFrame's bytes are its
        # table here (Arrow IPC): "has a table" means "has all its chunks".
        rows = self._rows(
            "SELECT b.hash, b.codec, b.size, b.meta, c.n, c.bytes, b.chunks FROM blobs b "
            "LEFT JOIN (SELECT hash, count(*) AS n, sum(octet_length(data)) AS bytes "
            "FROM blob_chunks GROUP BY hash) c ON c.hash = b.hash ORDER BY b.hash"
        )
        out = []
        for hash, codec, size, meta, n, stored, chunks in rows:
            whole = n is not None and n == chunks
            if codec == Codec.ARROW.value:
                out.append(StoredBlob(hash, Codec(codec), size, meta or {}, None, whole))
            else:
                data_size = None if n is None else int(stored)
                out.append(StoredBlob(hash, Codec(codec), size, meta or {}, data_size, False))
        return out

    def _blob_content(self, blob: StoredBlob) -> tuple[pa.Table | None, bytes | None]:
        found = self._read_blob(blob.hash)
        if found is None:
            return None, None
        data = found[3]
        if blob.codec is Codec.ARROW:
            import pyarrow as pa

            return pa.ipc.open_stream(pa.py_buffer(data)).read_all(), None
        return None, data

    def _rebuild_views(self, state: RunState) -> None:
        run = state.run
        rows = [x for x in state.executions.values() if x.status is not StepStatus.RUNNING]

        def rebuild(con: psycopg.Connection[Any]) -> int | None:
            with con.transaction():
                # The row lock keeps appenders out until the rebuilt rows are committed.
                con.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", [run.run_id])
                last = con.execute(
                    "SELECT coalesce(max(seq), 0) FROM events WHERE run_id = %s", [run.run_id]
                ).fetchall()[0][0]
                if last != run.version:
                    return int(last)
                con.execute(
                    "UPDATE runs SET status = %s, version = %s, started_at = %s, "
                    "finished_at = %s, error = %s WHERE run_id = %s",
                    [
                        run.status.value,
                        run.version,
                        run.started_at,
                        run.finished_at,
                        run.error,
                        run.run_id,
                    ],
                )
                con.execute("DELETE FROM step_executions WHERE run_id = %s", [run.run_id])
                if rows:
                    con.execute(
                        f"INSERT INTO step_executions ({EXEC_INSERT_COLS}) "
                        + _executions_from_arrays("f"),
                        {"run_id": run.run_id, "flow": run.flow} | _execution_arrays("f", rows),
                    )
            return None

        last = self._run(rebuild, retry=False)
        if last is not None:
            raise StaleVersionError(run.run_id, run.version, last)

    # -- SQL ------------------------------------------------------------------------------

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run one read-only SELECT over the store's tables; return a DataFrame.

        The tables are ``flows``, ``runs``, ``events``, ``step_executions``, ``blobs``,
        ``blob_chunks`` and ``leases``. Placeholders are written as for the DuckDB store
        (``?``, ``$1``, or ``$name`` with a mapping). The query runs in a read-only
        transaction that is always rolled back.
        """
        import pandas as pd

        from nbflow.store.pg_sql import prepare

        text, bound = prepare(query, params)

        def run(con: psycopg.Connection[Any]) -> pd.DataFrame:
            with con.cursor() as cur:
                cur.execute("BEGIN TRANSACTION READ ONLY")
                try:
                    cur.execute(text, bound)
                    columns = [c.name for c in cur.description or ()]
                    rows = cur.fetchall() if cur.description else []
                except psycopg.Error as exc:
                    if con.broken:
                        raise  # reconnect and run it again
                    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                        raise StoreError(
                            f"store.sql is read-only: the query tried to write "
                            f"({_first_line(exc)})."
                        ) from None
                    raise StoreError(f"the SQL query failed: {_first_line(exc)}") from None
                finally:
                    if not con.broken:
                        con.execute("ROLLBACK")
            return pd.DataFrame.from_records(rows, columns=columns)

        return self._run(run)


# -- text with NUL characters ----------------------------------------------------------------

# PostgreSQL text cannot hold NUL characters, which Python strings (an error message, a
# run parameter's name) may. Text holding one, or starting with the marker, is stored as
# the marker followed by its JSON (NUL escaped); every other string is stored as it is,
# so the tables read as on DuckDB. The connection's adapters do this both ways, for every
# statement (store.sql included).
_MARK = "\ufdd0"  # a Unicode noncharacter


def _encode_text(value: str) -> str:
    if "\x00" in value or value.startswith(_MARK):
        return _MARK + json.dumps(value)
    return value


def _decode_text(value: T) -> T:
    if isinstance(value, str) and value.startswith(_MARK):  # (bytes: a SQL_ASCII database)
        try:
            decoded = json.loads(value[1:])
        except ValueError:
            return value  # not written by nbflow: shown as it is
        if isinstance(decoded, str):
            return cast(T, decoded)
    return value


def _register_text_adapters(con: psycopg.Connection[Any]) -> None:
    from psycopg.types import string

    class TextDumper(string.StrDumperUnknown):
        def dump(self, obj: str) -> Any:
            return super().dump(_encode_text(obj))

    class TextBinaryDumper(string.StrBinaryDumper):
        def dump(self, obj: str) -> Any:
            return super().dump(_encode_text(obj))

    class TextLoader(string.TextLoader):
        def load(self, data: Any) -> Any:
            return _decode_text(super().load(data))

    class TextBinaryLoader(string.TextBinaryLoader):
        def load(self, data: Any) -> Any:
            return _decode_text(super().load(data))

    # In psycopg's order: the last one registered (text, of unknown type, which the
    # server casts to whatever the column is) is used for %s.
    con.adapters.register_dumper(str, TextBinaryDumper)
    con.adapters.register_dumper(str, TextDumper)
    for name in ("text", "varchar", "bpchar", "name"):
        con.adapters.register_loader(name, TextLoader)
        con.adapters.register_loader(name, TextBinaryLoader)


# -- URIs -------------------------------------------------------------------------------------


def parse_uri(uri: str) -> tuple[str, str | None, str, str]:
    """Split a store URI into (libpq URI, schema or None, URI without password, "host:port/db")."""
    if not uri.startswith(SCHEMES):
        raise StoreError(f"{uri!r} is not a PostgreSQL URI (postgresql://...).")
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "schema":
            if not value:
                raise StoreError("the store URI's '?schema=' is empty: give a schema name.")
            schema = value
        else:
            kept.append((key, value))
    conninfo = urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urllib.parse.urlencode(kept), parts.fragment)
    )
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        safe = _redact(parts, [(k, v) for k, v in query if k != "password"])
        raise StoreError(f"{safe!r} is not a valid PostgreSQL URI: {_first_line(exc)}") from None
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    database = str(info.get("dbname") or info.get("user") or "")
    where = f"{host}:{port}/{database}" + (f" (schema {schema})" if schema else "")
    shown = _redact(parts, [(k, v) for k, v in query if k != "password"])
    return conninfo, schema, shown, where


def _redact(parts: urllib.parse.SplitResult, query: list[tuple[str, str]]) -> str:
    """The URI with its password left out."""
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), parts.fragment)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- rows <-> records ---------------------------------------------------------------------


def _parsed(value: Any) -> Any:
    """A JSON column as psycopg returns it: already parsed."""
    return value


def _execution_arrays(prefix: str, rows: Sequence[StepExecution]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {f"{prefix}_{name}": [] for name, _ in _EXEC_ARRAYS}
    for x in rows:
        for name, value in (
            ("step", x.step),
            ("attempt", x.attempt),
            ("status", x.status.value),
            ("cache_key", x.cache_key),
            ("output", _dumps(x.output.to_json()) if x.output else None),
            ("output_hash", x.output.hash if x.output else None),
            ("inputs", _dumps(dict(x.inputs))),
            ("started_at", x.started_at),
            ("finished_at", x.finished_at),
            ("duration_ms", x.duration_ms),
            ("error", x.error),
            ("traceback", x.traceback),
            ("source_run_id", x.source_run_id),
            ("seq", x.seq),
            ("fingerprint", x.fingerprint),
        ):
            columns[f"{prefix}_{name}"].append(value)
    return columns
