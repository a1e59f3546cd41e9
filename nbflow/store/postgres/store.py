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

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql as pgsql

from nbflow import arguments
from nbflow.errors import (
    DuplicateRunError,
    NotAStoreError,
    StaleVersionError,
    StoreError,
    StoreFullError,
    UnknownRunError,
)
from nbflow.store.base import Store
from nbflow.store.fold import RunState
from nbflow.store.postgres import schema as postgres_schema
from nbflow.store.postgres.connection import first_line, parse_uri, register_text_adapters
from nbflow.store.postgres.maintenance import PostgresMaintenance
from nbflow.store.postgres.rows import (
    EVENTS_FROM_ARRAYS,
    IN_LIST,
    T,
    execution_arrays,
    executions_from_arrays,
    parsed,
    snapshot,
)
from nbflow.store.postgres.trust import PostgresTrust
from nbflow.store.postgres.values import PostgresValues
from nbflow.store.records import (
    Event,
    FlowRecord,
    Lease,
    RunRecord,
    StepDefinition,
    StepExecution,
)
from nbflow.store.sql_rows import (
    EVENT_COLS,
    EXEC_COLS,
    EXEC_INSERT_COLS,
    LEASE_COLS,
    LEASE_SETS,
    RUN_COLS,
    UPSERT_EXECUTIONS,
    dumps,
    event_filters,
    event_from_row,
    execution_from_row,
    finished_rows,
    lease_from_row,
    lease_values,
    run_from_row,
    run_row,
    runs_query,
)

if TYPE_CHECKING:
    import pandas as pd


class PostgresStore(PostgresValues, PostgresMaintenance, PostgresTrust, Store):
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
                f"cannot connect to the PostgreSQL store at {self._where}: {first_line(exc)}"
            ) from None
        register_text_adapters(con)
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
                f"cannot set up the store at {self._where}: {first_line(exc)}"
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
            except psycopg.errors.DiskFull:
                raise StoreFullError(
                    f"the disk of the PostgreSQL server holding the store at {self._where} "
                    "is full: the write was refused and nothing of it was kept. Free space "
                    "on the server, then resume the run (only what was not checkpointed "
                    "runs again).",
                    path=self._where,
                ) from None
            except psycopg.Error as exc:
                if not (con.broken or con.closed):
                    raise StoreError(
                        f"the PostgreSQL store at {self._where} failed: {first_line(exc)}"
                    ) from None
                self._con = None
                if not retry:
                    raise StoreError(
                        f"lost the connection to {self._where} during a write "
                        f"({first_line(exc)}); it may or may not have been committed. "
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
                    f"{self._where}: {first_line(exc)}"
                ) from None

    def _rows(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        return self._run(lambda con: con.execute(query, params).fetchall())

    def _forget_stored_values(self) -> None:
        # Another process may have deleted values (gc) since this object last looked.
        self._known_blobs = {}

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
                [flow.name, flow.fingerprint, dumps(definition), flow.created_at],
            )
        )

    def get_flow(self, name: str, fingerprint: str) -> FlowRecord | None:
        """The stored definition, or None."""
        arguments.flow_key(name, fingerprint)
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
        params = run_row(state.run)
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
        arguments.run_id(run_id)
        rows = self._rows(f"SELECT {RUN_COLS} FROM runs WHERE run_id = %s", [run_id])
        if not rows:
            raise UnknownRunError(run_id, self)
        return run_from_row(rows[0], parsed)

    def _list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """The stored run rows matching the filters, newest first."""
        query, params = runs_query(
            RUN_COLS, flow, status, thread_id, limit, mark="%s", in_list=IN_LIST
        )
        return [run_from_row(r, parsed) for r in self._rows(query, params)]

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
        create: bool = False,
    ) -> None:
        fresh, again = finished_rows(changed, previous)
        # One statement, so one transaction and one round trip: the version guard on the
        # run row comes first (a new run: its insert), and every insert is conditional on
        # it having matched.
        if create:
            marks = ", ".join(f"%(r{i})s" for i in range(RUN_COLS.count(",") + 1))
            parts = [
                f"WITH moved AS (INSERT INTO runs ({RUN_COLS}) VALUES ({marks}) "
                "ON CONFLICT (run_id) DO NOTHING RETURNING 1)"
            ]
        else:
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
        if create:
            params |= {f"r{i}": v for i, v in enumerate(run_row(run))}
        guard = " WHERE EXISTS (SELECT 1 FROM moved)"
        if events:
            parts.append(
                f", new_events AS (INSERT INTO events ({EVENT_COLS}) {EVENTS_FROM_ARRAYS}{guard})"
            )
            params |= {
                "e_seq": [e.seq for e in events],
                "e_ts": [e.ts for e in events],
                "e_type": [e.type.value for e in events],
                "e_step": [e.step for e in events],
                "e_attempt": [e.attempt for e in events],
                "e_payload": [dumps(dict(e.payload)) for e in events],
            }
        for prefix, rows, tail in (("f", fresh, ""), ("a", again, UPSERT_EXECUTIONS)):
            if not rows:
                continue
            parts.append(
                f", {prefix}_rows AS (INSERT INTO step_executions ({EXEC_INSERT_COLS}) "
                f"{executions_from_arrays(prefix)}{guard}{tail})"
            )
            params |= execution_arrays(prefix, rows)
        parts.append(" SELECT count(*) FROM moved")
        query = "".join(parts)

        def write(con: psycopg.Connection[Any]) -> int:
            return int(con.execute(query, params).fetchall()[0][0])

        try:
            moved = self._run(write, retry=False)
        except psycopg.errors.UniqueViolation:
            moved = 0  # the (run_id, seq) key refused our events: someone appended first
        if moved != 1 and create:
            raise DuplicateRunError(run.run_id)
        if moved != 1:
            actual = self._rows("SELECT version FROM runs WHERE run_id = %s", [run.run_id])
            raise StaleVersionError(run.run_id, expected_version, actual[0][0] if actual else None)

    def read_events(self, run_id: str | None = None, *, upto: int | None = None) -> list[Event]:
        """Events of one run (or all), in order."""
        if run_id is not None:
            self._get_run(run_id)
        where, params = event_filters(run_id, upto, mark="%s")
        rows = self._rows(f"SELECT {EVENT_COLS} FROM events{where} ORDER BY run_id, seq", params)
        return [event_from_row(r, parsed) for r in rows]

    def executions(self, run_id: str) -> list[StepExecution]:
        """The run's execution rows in the order they last changed (running ones too)."""
        arguments.run_id(run_id)

        def read(con: psycopg.Connection[Any]) -> list[tuple[Any, ...]] | None:
            # One snapshot for the check and the rows: a writer may finish an attempt
            # between two statements.
            with snapshot(con) as cur:
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = %(r)s), "
                    "EXISTS (SELECT 1 FROM events e WHERE e.run_id = %(r)s "
                    "AND e.type IN ('step_started', 'step_queued') AND NOT EXISTS (SELECT 1 FROM "
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
        return [execution_from_row(r, parsed) for r in rows]

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
            # (runs someone else made stand in for no one's steps until trusted)
            "AND NOT EXISTS (SELECT 1 FROM untrusted_runs u "
            "WHERE u.run_id = step_executions.run_id) "
            "ORDER BY cache_key, seq, run_id",
            [flow, wanted],
        )
        found: dict[str, StepExecution] = {}
        for r in rows:
            x = execution_from_row(r, parsed)
            assert x.cache_key is not None
            found.setdefault(x.cache_key, x)
        return found

    # -- SQL ------------------------------------------------------------------------------

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run one read-only SELECT over the store's tables; return a DataFrame.

        The tables are ``flows``, ``runs``, ``events``, ``step_executions``, ``blobs``,
        ``blob_chunks``, ``leases`` and ``untrusted_runs``. Placeholders are written as
        for the DuckDB store (``?``, ``$1``, or ``$name`` with a mapping). The query runs
        in a read-only transaction that is always rolled back.
        """
        import pandas as pd

        from nbflow.store.postgres.sql import prepare, transaction_start
        from nbflow.store.sql_guard import check_arguments, sql_timeout, timed_out

        check_arguments(query, params)
        text, bound = prepare(query, params)
        begin = transaction_start()

        def run(con: psycopg.Connection[Any]) -> pd.DataFrame:
            with con.cursor() as cur:
                cur.execute(begin)
                try:
                    cur.execute(text, bound)
                    columns = [c.name for c in cur.description or ()]
                    rows = cur.fetchall() if cur.description else []
                except psycopg.Error as exc:
                    if con.broken:
                        raise  # reconnect and run it again
                    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                        raise StoreError(
                            f"store.sql is read-only: the query tried to write ({first_line(exc)})."
                        ) from None
                    cancelled = psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable
                    if isinstance(exc, cancelled):
                        raise timed_out(sql_timeout(), first_line(exc)) from None
                    raise StoreError(f"the SQL query failed: {first_line(exc)}") from None
                finally:
                    if not con.broken:
                        # Whatever lock a query found a way to take goes with it.
                        con.execute("ROLLBACK; SELECT pg_advisory_unlock_all()")
            return pd.DataFrame.from_records(rows, columns=columns)

        return self._run(run)
