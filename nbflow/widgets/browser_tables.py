"""The checkpoint browser's three tables (runs, a run's events, its lineage): the
widgets, and the rows they show, read from the store."""

from __future__ import annotations

from collections.abc import Sequence

from nbflow.store.base import Store
from nbflow.store.records import Event, RunRecord
from nbflow.widgets.preview import params_text, short_time
from nbflow.widgets.rows import changed_params, event_detail, fork_point, lineage_tree
from nbflow.widgets.states import format_duration, took_ms
from nbflow.widgets.table import Row, Table


def runs_table() -> Table:
    """The table of runs, newest first, a page at a time."""
    table = Table(
        columns=["run", "flow", "status", "created (UTC)", "took", "parameters", "forked from"],
        status_column=2,
        caption="Runs, newest first",
        empty_text="no runs match these filters",
    )
    table.add_class("nbflow-runs")
    return table


def events_table() -> Table:
    """The table of a run's events."""
    # Oldest first, as a log reads: the pager goes to earlier and later events. Clicking an
    # event shows the run at its version.
    table = Table(
        columns=["seq", "time (UTC)", "type", "step", "attempt", "detail"],
        empty_text="no events",
        pager_labels=["\u2039 earlier", "later \u203a"],
    )
    table.add_class("nbflow-events")
    return table


def lineage_table() -> Table:
    """The table of a run's thread: the run it started from and every fork of it."""
    table = Table(
        columns=["run", "status", "forked", "parameters changed", "created (UTC)"],
        status_column=1,
        caption="The run's thread: the run it started from and every fork of it",
    )
    table.add_class("nbflow-lineage")
    return table


def flow_names(store: Store) -> list[str]:
    """The names of the flows with runs in ``store``."""
    try:
        frame = store.sql("SELECT DISTINCT flow FROM runs")
        return [str(f) for f in frame["flow"]]
    except Exception:  # a backend without SQL: one pass over the runs
        return sorted({r.flow for r in store.list_runs()})


def count_runs(store: Store, flow: str | None, status: str | None) -> int:
    """How many runs of ``store`` pass the filters (None: any)."""
    where, params = [], []
    if flow:
        where.append("flow = ?")
        params.append(flow)
    if status:
        where.append("status = ?")
        params.append(status)
    if store.tenant is not None:  # (store.sql reads a DuckDB file whole: see docs/tenants.md)
        where.append("(tenant IS NULL OR tenant = ?)")
        params.append(store.tenant)
    query = "SELECT count(*) AS n FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
    try:
        return int(store.sql(query, params)["n"].iloc[0])
    except Exception:
        return len(store.list_runs(flow=flow, status=status))


def run_rows(records: Sequence[RunRecord]) -> list[Row]:
    """The runs table's rows for these runs."""
    return [
        Row(
            r.run_id,
            [
                r.run_id,
                r.flow,
                r.status.value,
                short_time(r.created_at),
                format_duration(took) if (took := took_ms(r)) is not None else "",
                params_text(r.params),
                fork_point(r),
            ],
            status=r.status.value,
        )
        for r in records
    ]


def event_rows(events: Sequence[Event], version: int) -> list[Row]:
    """The events table's rows; events after ``version`` are dimmed."""
    return [
        Row(
            str(e.seq),
            [
                str(e.seq),
                short_time(e.ts),
                e.type.value,
                e.step or "",
                # (A cached or skipped step made no attempt: its events say attempt 0.)
                "" if e.attempt is None or e.attempt < 1 else str(e.attempt),
                event_detail(e),
            ],
            dim=e.seq > version,
            link=str(e.payload.get("source_run_id") or ""),
        )
        for e in events
    ]


def lineage_rows(store: Store, record: RunRecord) -> list[Row]:
    """The lineage table's rows: the runs of ``record``'s thread, as a tree."""
    thread = record.thread_id or record.run_id
    runs = store.list_runs(thread_id=thread)
    if not any(r.run_id == record.run_id for r in runs):
        runs.append(record)
    return [
        Row(
            r.run_id,
            [
                r.run_id,
                r.status.value,
                fork_point(r),
                params_text(changed_params(r, parent)),
                short_time(r.created_at),
            ],
            status=r.status.value,
            depth=depth,
        )
        for r, parent, depth in lineage_tree(runs)
    ]
