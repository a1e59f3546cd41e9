"""The PostgreSQL store's event log and step executions: appending, reading, cache lookups."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import psycopg

from nbflow import arguments
from nbflow.errors import DuplicateRunError, StaleVersionError
from nbflow.store.fold import RunState
from nbflow.store.postgres.part import PostgresPart
from nbflow.store.postgres.rows import (
    EVENTS_FROM_ARRAYS,
    execution_arrays,
    executions_from_arrays,
    parsed,
    snapshot,
)
from nbflow.store.records import Event, RunRecord, StepExecution
from nbflow.store.sql_rows import (
    EVENT_COLS,
    EXEC_COLS,
    EXEC_INSERT_COLS,
    RUN_COLS,
    UPSERT_EXECUTIONS,
    dumps,
    event_filters,
    event_from_row,
    execution_from_row,
    finished_rows,
    run_row,
)


class PostgresEvents(PostgresPart):
    """Events and step executions of :class:`~nbflow.store.postgres.store.PostgresStore`."""

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
        where, params = event_filters(run_id, upto, mark="%s", tenant=self.tenant)
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
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = %(r)s "
                    "AND (%(t)s::text IS NULL OR tenant IS NULL OR tenant = %(t)s)), "
                    "EXISTS (SELECT 1 FROM events e WHERE e.run_id = %(r)s "
                    "AND e.type IN ('step_started', 'step_queued') AND NOT EXISTS (SELECT 1 FROM "
                    "step_executions x WHERE x.run_id = e.run_id AND x.step = e.step "
                    "AND x.attempt = e.attempt))",
                    {"r": run_id, "t": self.tenant},
                )
                exists, running = cur.fetchone() or (False, False)
                if not exists:
                    raise self._unknown_run(run_id)
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
            "AND run_id NOT IN (SELECT run_id FROM runs "
            "WHERE tenant IS NOT NULL AND tenant IS DISTINCT FROM %s) "
            "ORDER BY cache_key, seq, run_id",
            [flow, wanted, self.tenant],
        )
        found: dict[str, StepExecution] = {}
        for r in rows:
            x = execution_from_row(r, parsed)
            assert x.cache_key is not None
            found.setdefault(x.cache_key, x)
        return found
