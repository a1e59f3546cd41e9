"""The DuckDB store's DataFrames (runs, events, steps) and read-only SQL, via Arrow."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import duckdb

from nbflow.errors import StoreError
from nbflow.store import frames
from nbflow.store.duckdb.connection import raise_if_corrupt
from nbflow.store.duckdb.part import DuckDBPart
from nbflow.store.duckdb.rows import IN_LIST
from nbflow.store.sql_guard import (
    check_arguments,
    check_read_only,
    query_failed,
    run_with_timeout,
)
from nbflow.store.sql_rows import EVENT_COLS, event_filters, runs_query

if TYPE_CHECKING:
    import pandas as pd


class DuckDBFrames(DuckDBPart):
    """Frames and SQL of :class:`~nbflow.store.duckdb.store.DuckDBStore`."""

    def _arrow(self, query: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self} is closed; open it again with nf.open_store().")
            try:
                with self._all_threads():
                    return self._con.sql(query, params=params).to_arrow_table().to_pandas()
            except duckdb.Error as exc:
                raise_if_corrupt(exc, self.uri)
                raise

    # -- frames and SQL -----------------------------------------------------------------

    def _runs_frame(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Runs as a DataFrame, newest first, read through Arrow."""
        self.reap_interrupted()
        query, params = runs_query(
            "*, epoch_us(finished_at - started_at) / 1e6 AS duration_s",
            flow,
            status,
            thread_id,
            limit,
            mark="?",
            in_list=IN_LIST,
            tenant=self.tenant,
        )
        return frames.conform(self._arrow(query, params), frames.RUN_COLUMNS)

    def events_frame(self, run_id: str | None = None) -> pd.DataFrame:
        """Events as a DataFrame, read through Arrow."""
        if run_id is not None:
            self._get_run(run_id)
        where, params = event_filters(
            run_id, None, mark="?", tenant=self.tenant, runs_table="run_records"
        )
        query = f"SELECT {EVENT_COLS} FROM events{where} ORDER BY run_id, seq"
        return frames.conform(self._arrow(query, params), frames.EVENT_COLUMNS)

    def steps_frame(self, run_id: str) -> pd.DataFrame:
        """A run's step executions as a DataFrame, read through Arrow."""
        self._get_run(run_id)
        if self._has_running_attempts(run_id):
            return frames.steps_frame(self.executions(run_id))
        query = (
            "SELECT *, output->>'codec' AS output_codec, "
            "CAST(output->>'size' AS BIGINT) AS output_size "
            "FROM step_executions WHERE run_id = ? ORDER BY seq, attempt, step"
        )
        return frames.conform(self._arrow(query, [run_id]), frames.STEP_COLUMNS)

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run one read-only SELECT over the store's tables; return a DataFrame.

        The tables are ``flows``, ``runs``, ``events``, ``step_executions``, ``blobs``,
        and each DataFrame checkpoint (``run.table_name(step)`` gives its name). The
        query reads the store and nothing else: no files, URLs or extensions.
        """
        check_arguments(query, params)
        with self._lock:
            if self._closed:
                raise StoreError(f"{self} is closed; open it again with nf.open_store().")
            check_read_only(self._con, query)
            if not getattr(self, "_sandboxed", False):
                raise StoreError(
                    f"store.sql cannot run on {self}: another DuckDB connection to the same "
                    "file in this process locked its configuration with external access on, "
                    "so a query could read files outside the store. Close that connection."
                )
            con = self._con
            # A transaction that is always rolled back: even a SELECT cannot leave a trace.
            # (The thread count is set outside it: a failed query aborts the transaction.)
            with self._all_threads():
                con.execute("BEGIN TRANSACTION")
                try:
                    self._materialize_compact(query)  # small frames, as tables until the rollback
                    table = run_with_timeout(
                        con, lambda: con.sql(query, params=params).to_arrow_table()
                    )
                except duckdb.Error as exc:
                    raise_if_corrupt(exc, self.uri)
                    raise query_failed(exc) from None
                finally:
                    con.execute("ROLLBACK")
            return table.to_pandas()
