"""The DuckDB store's retention (gc) and integrity (check) hooks."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nbflow.errors import StaleVersionError
from nbflow.store.duckdb import schema
from nbflow.store.duckdb.part import DuckDBPart
from nbflow.store.duckdb.rows import (
    CLEAR_PENDING,
    EXEC_TYPES,
    UPDATE_RUN_STATUS,
    StaleWrite,
    codec_or_text,
    execution_params,
    run_status_params,
)
from nbflow.store.fold import RunState
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


class DuckDBMaintenance(DuckDBPart):
    """gc and check support for :class:`~nbflow.store.duckdb.store.DuckDBStore`."""

    # -- retention ----------------------------------------------------------------------

    def referenced_hashes(self, exclude_runs: Collection[str] = ()) -> set[str]:
        """The value hashes referenced by every run except ``exclude_runs`` (one query
        over the executions and the output events, plus the pending forks' plans)."""
        excluded = sorted(set(exclude_runs))
        keep = "run_id NOT IN (SELECT unnest(?::VARCHAR[]))"
        rows = self._execute(REFERENCED_HASHES.format(keep=keep), [excluded, excluded])
        forks = self._execute(FORK_PAYLOADS.format(keep=keep), [excluded])
        return referenced_in(rows, (json.loads(payload) for (payload,) in forks))

    def _delete(self, run_ids: Collection[str], blob_hashes: Collection[str]) -> None:
        from nbflow.values.duckdb_tables import quote_identifier

        runs, hashes = sorted(run_ids), sorted(blob_hashes)
        with self._lock:
            tables = self._execute(
                "SELECT table_name FROM blobs WHERE table_name IS NOT NULL "
                "AND hash IN (SELECT unnest(?::VARCHAR[]))",
                [hashes],
            )
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                for table in (
                    "event_log",
                    "execution_rows",
                    "run_records",
                    "leases",
                    "untrusted_runs",
                ):
                    con.execute(
                        f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                        [runs],
                    )
                con.execute(
                    "DELETE FROM blobs WHERE hash IN (SELECT unnest(?::VARCHAR[]))", [hashes]
                )
                for (table_name,) in tables:
                    # Identifiers cannot be parameters: quoted, since the name is read
                    # from the file, whatever text it holds stays one identifier.
                    schema_name, _, name = table_name.partition(".")
                    con.execute(
                        "DROP TABLE IF EXISTS "
                        f"{quote_identifier(schema_name)}.{quote_identifier(name)}"
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._filed.difference_update(runs)
            for hash in hashes:
                self._known_blobs.pop(hash, None)
            if self._guard is not None and hashes:
                self._guard.values_deleted()

    # -- integrity ----------------------------------------------------------------------

    # An attempt's row is written when it ends (see _write_events).
    _rows_hold_running_attempts = False

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """One read-only transaction: the check sees the file as of one instant, even
        if another store object in this process writes meanwhile."""
        with self._lock:
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                yield
            finally:
                con.execute("ROLLBACK")

    def _execution_rows(self) -> dict[str, list[StepExecution]]:
        rows = self._execute(
            f"SELECT {EXEC_COLS} FROM step_executions ORDER BY run_id, seq, attempt, step"
        )
        found: dict[str, list[StepExecution]] = {}
        for r in rows:
            found.setdefault(r[0], []).append(execution_from_row(r))
        return found

    def _stored_blobs(self) -> list[StoredBlob]:
        from nbflow.store.check import StoredBlob
        from nbflow.values.duckdb_tables import quote_identifier

        # A DataFrame value is readable when its row holds its bytes (a small frame) or
        # names a table and the table named after its hash exists (load_value reads that
        # name, not the row's text). Other bytes are in the row or, as 8-byte words, in
        # such a table: their length is its row count times 8, less the last word's padding.
        rows = self._execute(
            "SELECT b.hash, b.codec, b.size, b.meta, octet_length(b.data), "
            "b.table_name IS NOT NULL AND t.table_name IS NOT NULL "
            "FROM blobs b LEFT JOIN information_schema.tables t "
            "ON t.table_schema = ? AND t.table_name = 'v_' || b.hash ORDER BY b.hash",
            [schema.VALUES_SCHEMA],
        )
        out = []
        for hash, codec, size, meta, data_size, has_table in rows:
            if codec == Codec.ARROW.value:
                has_table = has_table or data_size is not None
                data_size = None
            elif data_size is None and has_table:
                name = f"{quote_identifier(schema.VALUES_SCHEMA)}.{quote_identifier('v_' + hash)}"
                (words,) = self._execute(f"SELECT count(*) FROM {name}")[0]
                data_size = size if words == -(-size // 8) else words * 8
            out.append(
                StoredBlob(
                    hash, codec_or_text(codec), size, json.loads(meta or "{}"), data_size, has_table
                )
            )
        return out

    def _blob_content(self, blob: StoredBlob) -> tuple[pa.Table | None, bytes | None]:
        from nbflow.store.duckdb.blobs import read_compact_frame, read_words
        from nbflow.values.duckdb_tables import quote_identifier

        rows = self._execute("SELECT data FROM blobs WHERE hash = ?", [blob.hash])
        data = rows[0][0] if rows else None
        name = f"{quote_identifier(schema.VALUES_SCHEMA)}.{quote_identifier('v_' + blob.hash)}"
        if blob.codec is Codec.ARROW:
            if data is not None:
                return read_compact_frame(data), None
            if not blob.has_table:
                return None, None
            with self._lock, self._all_threads(blob.size):
                return self._con.sql(f"SELECT * FROM {name}").to_arrow_table(), None
        if data is None and blob.has_table:
            with self._lock, self._all_threads(blob.size):
                return None, bytes(read_words(self._con, name, blob.size))
        return None, None if data is None else bytes(data)

    def _rebuild_views(self, state: RunState) -> None:
        run = state.run
        rows = [x for x in state.executions.values() if not x.status.in_progress]
        with self._lock:
            self._filed.discard(run.run_id)
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                last = con.execute(
                    "SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", [run.run_id]
                ).fetchall()[0][0]
                if last != run.version:
                    raise StaleWrite
                con.execute(UPDATE_RUN_STATUS, run_status_params(run))
                con.execute("DELETE FROM execution_rows WHERE run_id = ?", [run.run_id])
                con.execute(CLEAR_PENDING, [run.run_id])  # (all its rows are written below)
                if rows:
                    self._insert(
                        "execution_rows",
                        EXEC_INSERT_COLS,
                        [execution_params(x, run.flow) for x in rows],
                        EXEC_TYPES,
                    )
                con.execute("COMMIT")
            except StaleWrite:
                con.execute("ROLLBACK")
                raise StaleVersionError(run.run_id, run.version, last) from None
            except BaseException:
                con.execute("ROLLBACK")
                raise
