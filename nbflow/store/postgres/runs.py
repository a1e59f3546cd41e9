"""The PostgreSQL store's flows, run rows and leases."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import psycopg

from nbflow import arguments
from nbflow.errors import DuplicateRunError
from nbflow.store.postgres.part import PostgresPart
from nbflow.store.postgres.rows import IN_LIST, parsed
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

_MARKS = ", ".join(["%s"] * (RUN_COLS.count(",") + 1))


class PostgresRuns(PostgresPart):
    """Flows, runs and leases of :class:`~nbflow.store.postgres.store.PostgresStore`."""

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

        state = initial_state(self._stamped(run))
        params = run_row(state.run)
        try:
            self._run(
                lambda con: con.execute(
                    f"INSERT INTO runs ({RUN_COLS}) VALUES ({_MARKS})",
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
            raise self._unknown_run(run_id)
        return self._seen(run_from_row(rows[0], parsed))

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
            RUN_COLS, flow, status, thread_id, limit, mark="%s", in_list=IN_LIST, tenant=self.tenant
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
