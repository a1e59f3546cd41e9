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

from nbflow.errors import NotAStoreError, StoreError, StoreFullError
from nbflow.store.base import Store
from nbflow.store.postgres import schema as postgres_schema
from nbflow.store.postgres.connection import first_line, parse_uri, register_text_adapters
from nbflow.store.postgres.events import PostgresEvents
from nbflow.store.postgres.gate_keys import PostgresGateKeys
from nbflow.store.postgres.maintenance import PostgresMaintenance
from nbflow.store.postgres.rows import T
from nbflow.store.postgres.runs import PostgresRuns
from nbflow.store.postgres.trust import PostgresTrust
from nbflow.store.postgres.values import PostgresValues

if TYPE_CHECKING:
    import pandas as pd


class PostgresStore(
    PostgresRuns,
    PostgresEvents,
    PostgresValues,
    PostgresMaintenance,
    PostgresTrust,
    PostgresGateKeys,
    Store,
):
    """A store in a PostgreSQL database (one schema of it), shared by many writers.

    One connection per store object, used under the store's lock and re-established on
    the next use when it drops. DataFrame outputs are stored as Arrow IPC bytes, so
    :meth:`table_name` is None here: query ``runs``, ``events``, ``step_executions`` and
    ``blobs`` with :meth:`sql`, and load values with :meth:`load_value`.
    """

    def __init__(
        self,
        uri: str,
        *,
        trust: bool = True,
        connect_timeout: float = 10,
        tenant: str | None = None,
    ):
        from nbflow.store.tenants import optional_tenant

        super().__init__()
        self.trust = trust
        self.tenant = optional_tenant(tenant)
        self._given_uri = uri
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
            # The row-level security policies read it: the database keeps this session
            # to the tenant's runs (unless its role owns the tables: the owner's view).
            con.execute("SELECT set_config('nbflow.tenant', %s, false)", [self.tenant or ""])
            row = con.execute("SELECT row_security_active('blob_chunks')").fetchone()
            self._row_security = bool(row and row[0])
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

    def connection_uri(self) -> str:
        """The URI this store was opened with, its password (if it had one) included."""
        return self._given_uri

    def with_tenant(self, tenant: str | None) -> PostgresStore:
        """A store object of its own (its own connection, its session's tenant set) on
        this store's schema, for ``tenant``."""
        return PostgresStore(
            self._given_uri, trust=self.trust, connect_timeout=self._connect_timeout, tenant=tenant
        )

    def _may_read_value(self, hash: str) -> bool:
        rows = self._rows(
            "SELECT EXISTS (SELECT 1 FROM step_executions x JOIN runs r USING (run_id) "
            "WHERE x.output_hash = %s AND (r.tenant IS NULL OR r.tenant = %s)) "
            "OR NOT nbflow_value_in_use(%s)",
            [hash, self.tenant, hash],
        )
        return bool(rows[0][0])

    def _values_in_use(self, hashes: Collection[str], exclude_runs: Collection[str]) -> set[str]:
        # (the database keeps this session from other tenants' rows: a function that
        # reads as the tables' owner answers for them, naming only the hashes asked)
        rows = self._rows(
            "SELECT nbflow_values_in_use(%s::text[], %s::text[])",
            [sorted(set(hashes)), sorted(set(exclude_runs))],
        )
        return {r[0] for r in rows}

    def _any_run_executing(self) -> bool:
        return bool(self._rows("SELECT nbflow_runs_executing()")[0][0])

    def _rows(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        return self._run(lambda con: con.execute(query, params).fetchall())

    def change_token(self) -> object:
        """The number of runs and the sum of their versions: one small query."""
        return tuple(self._rows("SELECT count(*), coalesce(sum(version), 0) FROM runs")[0])

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
