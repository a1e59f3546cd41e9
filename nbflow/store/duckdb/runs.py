"""The DuckDB store's flows, run rows and leases."""

from __future__ import annotations

import json
from collections.abc import Collection

import duckdb

from nbflow import arguments
from nbflow.errors import DuplicateRunError
from nbflow.store.duckdb.part import DuckDBPart
from nbflow.store.duckdb.rows import IN_LIST, INSERT_RUN_RECORD
from nbflow.store.records import FlowRecord, Lease, RunRecord, StepDefinition
from nbflow.store.sql_rows import (
    LEASE_COLS,
    LEASE_SETS,
    RUN_COLS,
    dumps,
    lease_from_row,
    lease_values,
    run_from_row,
    run_row,
    runs_query,
)


class DuckDBRuns(DuckDBPart):
    """Flows, runs and leases of :class:`~nbflow.store.duckdb.store.DuckDBStore`."""

    # -- flows ------------------------------------------------------------------------

    def put_flow(self, flow: FlowRecord) -> None:
        """Record a flow definition unless it is already stored."""
        definition = [s.to_json() for s in flow.steps]
        self._execute(
            "INSERT INTO flows VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [flow.name, flow.fingerprint, dumps(definition), flow.created_at],
        )

    def get_flow(self, name: str, fingerprint: str) -> FlowRecord | None:
        """The stored definition, or None."""
        arguments.flow_key(name, fingerprint)
        rows = self._execute(
            "SELECT definition, created_at FROM flows WHERE name = ? AND fingerprint = ?",
            [name, fingerprint],
        )
        if not rows:
            return None
        steps = tuple(StepDefinition.from_json(s) for s in json.loads(rows[0][0]))
        return FlowRecord(name, fingerprint, steps, rows[0][1])

    # -- runs -------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Add a new run (pending, version 0)."""
        from nbflow.store.fold import initial_state

        state = initial_state(self._stamped(run))
        try:
            self._execute(INSERT_RUN_RECORD, run_row(state.run, version=False))
        except duckdb.ConstraintException:
            raise DuplicateRunError(run.run_id) from None
        with self._lock:
            self._states[run.run_id] = state

    def _get_run(self, run_id: str) -> RunRecord:
        """The run's row; UnknownRunError if absent."""
        arguments.run_id(run_id)
        rows = self._execute(f"SELECT {RUN_COLS} FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            raise self._unknown_run(run_id)
        return self._seen(run_from_row(rows[0]))

    def _list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Run rows matching the filters, newest first."""
        query, params = runs_query(
            RUN_COLS, flow, status, thread_id, limit, mark="?", in_list=IN_LIST, tenant=self.tenant
        )
        return [run_from_row(r) for r in self._execute(query, params)]

    # -- leases -----------------------------------------------------------------------

    def _read_leases(self, run_ids: Collection[str]) -> dict[str, Lease]:
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        rows = self._execute(
            f"SELECT {LEASE_COLS} FROM leases WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        )
        return {r[0]: lease_from_row(r) for r in rows}

    def _swap_lease(self, run_id: str, expected_token: str | None, new: Lease | None) -> bool:
        # One statement each way, so each is atomic on its own: the (run_id) key refuses
        # a second lease, and the token guard makes a renewal or release by a holder that
        # lost the lease change no row.
        values = None if new is None else lease_values(new)
        if expected_token is None and values is not None:
            query = f"INSERT INTO leases ({LEASE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            params = values
        elif expected_token is None:  # from no lease to no lease: nothing to change
            return not self._read_leases([run_id])
        elif values is None:
            query = "DELETE FROM leases WHERE run_id = ? AND token = ?"
            params = [run_id, expected_token]
        else:
            query = f"UPDATE leases SET {LEASE_SETS.format(m='?')} WHERE run_id = ? AND token = ?"
            params = [*values[1:], run_id, expected_token]
        try:
            rows = self._execute(query, params)
        except (duckdb.ConstraintException, duckdb.TransactionException):
            # Someone holds it, or another connection changed the row under us.
            return False
        return bool(rows and rows[0][0] == 1)
