"""SQL over the in-memory store: its frames, queried with an ephemeral DuckDB."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from nbflow.store.sql_guard import (
    check_arguments,
    check_read_only,
    query_failed,
    run_with_timeout,
    sandboxed_memory_connection,
)

if TYPE_CHECKING:
    from nbflow.store.base import Store


def query_frames(
    store: Store, query: str, params: Sequence[Any] | Mapping[str, Any] | None
) -> pd.DataFrame:
    """Answer ``query`` over tables named like the DuckDB store's: runs, events,
    step_executions, blobs and untrusted_runs (JSON columns as text)."""
    from nbflow.store import frames

    check_arguments(query, params)
    runs = store._runs_frame()
    steps = pd.concat(
        [store.steps_frame(r) for r in runs["run_id"]] or [frames.steps_frame([])],
        ignore_index=True,
    )
    marks = list(store.untrusted_runs().values())
    tables = {
        "runs": runs,
        "events": store.events_frame(),
        # Like the DuckDB table: finished attempts (queued or running ones are in the events).
        "step_executions": steps[~steps["status"].isin(["queued", "running"])].reset_index(
            drop=True
        ),
        "blobs": pd.DataFrame(
            {
                "hash": [b.hash for b in store.list_blobs()],
                "codec": [b.codec.value for b in store.list_blobs()],
                "size": pd.Series([b.size for b in store.list_blobs()], dtype="int64"),
                "created_at": pd.Series(
                    [b.created_at for b in store.list_blobs()], dtype="datetime64[us, UTC]"
                ),
            }
        ),
        "untrusted_runs": pd.DataFrame(
            {
                "run_id": pd.Series([m.run_id for m in marks], dtype="object"),
                "source": pd.Series([m.source for m in marks], dtype="object"),
                "marked_at": pd.Series([m.marked_at for m in marks], dtype="datetime64[us, UTC]"),
                "derived_from": pd.Series([m.derived_from for m in marks], dtype="object"),
            }
        ),
    }
    con = sandboxed_memory_connection()
    try:
        for name, frame in tables.items():
            for col in ("params", "payload"):
                if col in frame:
                    frame = frame.assign(**{col: frame[col].map(_json_or_null)})
            con.register(name, frame)
        check_read_only(con, query)
        try:
            table = run_with_timeout(con, lambda: con.sql(query, params=params).to_arrow_table())
        except duckdb.Error as exc:
            raise query_failed(exc) from None
    finally:
        con.close()
    return table.to_pandas()


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
