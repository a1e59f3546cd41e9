"""The DuckDB store's event log and step executions: appending, reading, cache lookups."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NoReturn

import duckdb

from nbflow.errors import DuplicateRunError, StaleVersionError, StoreError, StoreFullError
from nbflow.store.duckdb.connection import disk_full_error, is_disk_full, raise_if_corrupt, rollback
from nbflow.store.duckdb.disk_reserve import use_reserve
from nbflow.store.duckdb.part import DuckDBPart
from nbflow.store.duckdb.rows import (
    CACHE_HITS,
    CANDIDATE_ROWS,
    CLEAR_PENDING,
    EVENT_LOG_COLS,
    EVENT_TYPES,
    EXEC_TYPES,
    FILE_PENDING,
    INSERT_RUN_RECORD,
    LIST_ROWS,
    UPDATE_RUN_STATUS,
    LazyHits,
    StaleWrite,
    event_values,
    execution_params,
    executions_params,
    insert_executions,
    rows_with_pending,
    run_status_params,
)
from nbflow.store.fold import RunState
from nbflow.store.records import CacheHits, Event, RunRecord, StepExecution
from nbflow.store.sql_rows import (
    EVENT_COLS,
    EXEC_COLS,
    EXEC_INSERT_COLS,
    UPSERT_EXECUTIONS,
    event_filters,
    event_from_row,
    execution_from_row,
    finished_rows,
    run_row,
)


class DuckDBEvents(DuckDBPart):
    """Events and step executions of :class:`~nbflow.store.duckdb.store.DuckDBStore`."""

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
        try:
            self._write_events_once(run, events, changed, expected_version, previous, create)
        except StoreFullError:
            # Events are small: with the space kept aside for it, the run can still
            # record what happened (that a checkpoint did not fit, say).
            if self.path == ":memory:" or not use_reserve(self.path):
                raise
            self._write_events_once(run, events, changed, expected_version, previous, create)

    def _write_events_once(
        self,
        run: RunRecord,
        events: Sequence[Event],
        changed: Sequence[StepExecution],
        expected_version: int,
        previous: RunState,
        create: bool,
    ) -> None:
        run_id = run.run_id
        fresh, again = finished_rows(changed, previous)
        before = previous.run
        status_changed = create or (
            before.status,
            before.started_at,
            before.finished_at,
            before.error,
        ) != (run.status, run.started_at, run.finished_at, run.error)
        # Whether this object knows the run has no pending rows: it filed them itself, and
        # nobody wrote since (the state it folded onto is the one its last write left).
        filed = run_id in self._filed and previous is self._states.get(run_id)
        if not filed:
            self._filed.discard(run_id)
        if not status_changed and not again:
            rows = rows_with_pending(events, fresh, run.flow)
            if rows is not None:
                # Only events: one statement, committed on its own (atomic all the same).
                self._commit_alone(rows, run_id, expected_version)
                if fresh:
                    self._filed.discard(run_id)
                return
        # The run's pending rows are filed when it ends (so a finished run's rows are all
        # typed), and before a row already written is written again (it has one place).
        file = (again or run.status.at_rest) and not filed
        update = status_changed and not create
        self._commit(run, events, fresh, again, expected_version, before, create, update, file)
        if run.status.at_rest:
            self._filed.discard(run_id)  # (known to hold none, but kept only for live runs)
        elif create or file:
            self._filed.add(run_id)

    def _commit_alone(self, rows: list[list[Any]], run_id: str, expected_version: int) -> None:
        """Append the event rows in one autocommitted statement."""
        try:
            # The (run_id, seq) key is the optimistic-concurrency check: a writer that
            # read an older version appends a seq someone else already holds.
            self._insert("event_log", EVENT_LOG_COLS, rows, EVENT_TYPES)
        except BaseException as exc:
            self._failed(exc, run_id, expected_version)

    def _commit(
        self,
        run: RunRecord,
        events: Sequence[Event],
        fresh: list[StepExecution],
        again: list[StepExecution],
        expected_version: int,
        before: RunRecord,
        create: bool,
        update: bool,
        file: bool,
    ) -> None:
        """Append the events with the run's other changes, in one transaction: its new
        row (``create``) or its status (``update``: it was ``before``), its rows, and its
        pending rows filed (``file``)."""
        con = self._con
        # When the run's pending rows are filed, the new ones ride in their events too
        # and are filed with them (one INSERT fewer).
        rows = rows_with_pending(events, fresh, run.flow) if file else None
        con.execute("BEGIN TRANSACTION")
        try:
            if create:
                # A new run's row, as it stands after these events (its version is derived).
                try:
                    con.execute(INSERT_RUN_RECORD, run_row(run, version=False))
                except duckdb.ConstraintException:
                    raise DuplicateRunError(run.run_id) from None  # rolled back below
            if rows is None:
                rows = [event_values(e) for e in events]
            else:
                fresh = []
            # A run's version is the seq of its last event, so no row changes per step.
            self._insert("event_log", EVENT_LOG_COLS, rows, EVENT_TYPES)
            if file:
                con.execute(FILE_PENDING, [run.run_id])
                con.execute(CLEAR_PENDING, [run.run_id])
            if fresh:
                self._insert(
                    "execution_rows",
                    EXEC_INSERT_COLS,
                    [execution_params(x, run.flow) for x in fresh],
                    EXEC_TYPES,
                )
            if again:
                con.execute(
                    insert_executions(len(again)) + UPSERT_EXECUTIONS,
                    executions_params(again, run.flow),
                )
            if update:
                # (Guarded by the status it read: a concurrent change fails the write.)
                updated = con.execute(
                    UPDATE_RUN_STATUS + " AND status = ?",
                    [*run_status_params(run), before.status.value],
                ).fetchall()
                if updated[0][0] != 1:
                    raise StaleWrite
            # A run that ends gives its lease back in the same commit (no extra one).
            release = run.status.at_rest and run.run_id in self._leases
            if release:
                con.execute(
                    "DELETE FROM leases WHERE run_id = ? AND token = ?", [run.run_id, self._token]
                )
            con.execute("COMMIT")
            if release:
                self._leases.pop(run.run_id, None)
        except BaseException as exc:
            rollback(con)
            self._failed(exc, run.run_id, expected_version)

    def _failed(self, exc: BaseException, run_id: str, expected_version: int) -> NoReturn:
        """Raise what a failed write means: the disk is full, someone appended first
        (StaleVersionError), or ``exc`` itself. Nothing of the write was committed."""
        if is_disk_full(exc):
            raise disk_full_error(self.uri) from None
        if not isinstance(
            exc, duckdb.ConstraintException | duckdb.TransactionException | StaleWrite
        ):
            raise exc
        # Someone appended first (or changed the run under us).
        actual = self._execute("SELECT version FROM runs WHERE run_id = ?", [run_id])
        raise StaleVersionError(
            run_id, expected_version, actual[0][0] if actual else None
        ) from None

    def _insert(
        self, table: str, columns: str, rows: list[list[Any]], types: Sequence[Any]
    ) -> None:
        """Insert rows in one statement: one row as VALUES, a few as one list a column
        (unnested: binding each value of a VALUES list costs ~10 us, ~10% of a step's
        commit for its four events), and many as an Arrow table (cheaper from ~64 rows).

        ``table`` and ``columns`` are this module's constants (identifiers cannot be
        parameters); every value goes in as a parameter or through the Arrow table.
        """
        if len(rows) == 1:
            marks = ", ".join(["?"] * len(types))
            self._con.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows[0])
            return
        if len(rows) <= LIST_ROWS:
            # (The columns' list types are the values' own; the INSERT casts them.)
            unnested = ", ".join(f"unnest(${i})" for i in range(1, len(types) + 1))
            self._con.execute(
                f"INSERT INTO {table} ({columns}) SELECT {unnested}",
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        import pyarrow as pa

        names = [c.strip() for c in columns.split(",")]
        values = zip(*rows, strict=True)
        batch = pa.table(
            {n: pa.array(v, type=t) for n, v, t in zip(names, values, types, strict=True)}
        )
        # A relation over the Arrow table, inserted by position (``columns`` are all of
        # the table's, in its order): as cheap as a replacement scan, which the sandbox
        # turns off, and half the cost of registering the table as a view.
        self._con.from_arrow(batch).insert_into(table)

    def read_events(self, run_id: str | None = None, *, upto: int | None = None) -> list[Event]:
        """Events of one run (or all), in order."""
        if run_id is not None:
            self._get_run(run_id)
        where, params = event_filters(
            run_id, upto, mark="?", tenant=self.tenant, runs_table="run_records"
        )
        rows = self._execute(f"SELECT {EVENT_COLS} FROM events{where} ORDER BY run_id, seq", params)
        return [event_from_row(r) for r in rows]

    def executions(self, run_id: str) -> list[StepExecution]:
        """The run's execution rows in the order they last changed (running ones too)."""
        self._get_run(run_id)
        if self._has_running_attempts(run_id):
            return sorted(
                self.state_at(run_id).executions.values(), key=lambda x: (x.seq, x.attempt, x.step)
            )
        rows = self._execute(
            f"SELECT {EXEC_COLS} FROM step_executions WHERE run_id = ? ORDER BY seq, attempt, step",
            [run_id],
        )
        return [execution_from_row(r) for r in rows]

    def _has_running_attempts(self, run_id: str) -> bool:
        """Whether an attempt is queued or running (so has no table row yet)."""
        return bool(
            self._execute(
                "SELECT 1 FROM events e WHERE e.run_id = ? "
                "AND e.type IN ('step_started', 'step_queued') "
                "AND NOT EXISTS (SELECT 1 FROM step_executions x WHERE x.run_id = e.run_id "
                "AND x.step = e.step AND x.attempt = e.attempt) LIMIT 1",
                [run_id],
            )
        )

    def cache_candidates(
        self, flow: str, fingerprints: Collection[str]
    ) -> dict[str, StepExecution]:
        """Executions with an output in ``flow``'s runs, by cache key, for these fingerprints."""
        wanted = list(set(fingerprints))
        if not wanted:
            return {}
        rows = self._execute(
            f"SELECT DISTINCT ON (cache_key) {EXEC_COLS} FROM step_executions "
            f"WHERE {CANDIDATE_ROWS} ORDER BY cache_key, seq",
            [flow, wanted, self.tenant],
        )
        found: dict[str, StepExecution] = {}
        for r in rows:
            x = execution_from_row(r)
            assert x.cache_key is not None
            found.setdefault(x.cache_key, x)
        return found

    def cache_hits(self, flow: str, fingerprints: Collection[str]) -> CacheHits:
        """The earliest usable output per cache key, built only for the keys looked up
        (:class:`~nbflow.store.duckdb.rows.LazyHits`): four columns, not whole rows."""
        wanted = list(set(fingerprints))
        if not wanted:
            return CacheHits()
        with self._lock:
            if self._closed:
                raise StoreError(f"{self} is closed; open it again with nf.open_store().")
            try:
                table = self._con.sql(
                    CACHE_HITS, params=[flow, wanted, self.tenant]
                ).to_arrow_table()
            except duckdb.Error as exc:
                raise_if_corrupt(exc, self.uri)
                raise
        return LazyHits(table)
