"""The PostgreSQL store's retention (gc) and integrity (check) hooks."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from psycopg import sql as pgsql

from nbflow.errors import StaleVersionError
from nbflow.store.fold import RunState
from nbflow.store.postgres.part import PostgresPart
from nbflow.store.postgres.rows import execution_arrays, executions_from_arrays, parsed
from nbflow.store.records import Codec, StepExecution
from nbflow.store.sql_rows import (
    EXEC_COLS,
    EXEC_INSERT_COLS,
    FORK_PAYLOADS,
    REFERENCED_HASHES,
    execution_from_row,
    referenced_in,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from nbflow.store.check import StoredBlob


class PostgresMaintenance(PostgresPart):
    """gc and check support for :class:`PostgresStore`."""

    # -- retention ----------------------------------------------------------------------

    def referenced_hashes(self, exclude_runs: Collection[str] = ()) -> set[str]:
        """The value hashes referenced by every run except ``exclude_runs`` (one query
        over the executions and the output events, plus the pending forks' plans)."""
        excluded = sorted(set(exclude_runs))
        keep = "NOT (run_id = ANY(%(x)s::text[]))"
        rows = self._rows(REFERENCED_HASHES.format(keep=keep), {"x": excluded})
        forks = self._rows(FORK_PAYLOADS.format(keep=keep), {"x": excluded})
        return referenced_in(rows, (payload for (payload,) in forks))

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
                for table in ("events", "step_executions", "leases", "untrusted_runs", "runs"):
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
            found.setdefault(r[0], []).append(execution_from_row(r, parsed))
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
        return None, bytes(data)

    def _rebuild_views(self, state: RunState) -> None:
        run = state.run
        rows = [x for x in state.executions.values() if not x.status.in_progress]

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
                        + executions_from_arrays("f"),
                        {"run_id": run.run_id, "flow": run.flow} | execution_arrays("f", rows),
                    )
            return None

        last = self._run(rebuild, retry=False)
        if last is not None:
            raise StaleVersionError(run.run_id, run.version, last)
