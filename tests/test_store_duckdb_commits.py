"""The DuckDB store's commit of a step: one statement, its row riding in its event until
the run's end files it (schema 8), every guarantee kept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.errors import StaleVersionError
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import EventType, NewEvent, StepExecution
from nbflow.testing import make_flow, start_run
from nbflow.testing.builders import Clock, attempt_events, cached_event, skipped_event


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    with DuckDBStore(tmp_path / "store.duckdb") as opened:
        opened.put_flow(make_flow())
        yield opened


class Statements:
    """The SQL statements a store sends to DuckDB while it is watched."""

    def __init__(self) -> None:
        self.sent: list[str] = []


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Statements:
    seen = Statements()

    class Watched:
        def __init__(self, con: Any) -> None:
            self._con = con

        def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
            seen.sent.append(" ".join(query.split()))
            return self._con.execute(query, *args, **kwargs)

        def from_arrow(self, table: Any) -> Any:  # (a relation inserted into a table)
            seen.sent.append(f"from_arrow ({table.num_rows} rows)")
            return self._con.from_arrow(table)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._con, name)

    connection = DuckDBStore._con
    assert isinstance(connection, property) and connection.fget is not None
    get = connection.fget
    monkeypatch.setattr(DuckDBStore, "_con", property(lambda self: Watched(get(self))))
    return seen


def pending(store: DuckDBStore, run_id: str) -> int:
    """How many of the run's execution rows still ride in their events."""
    rows = store.sql(
        "SELECT count(*) AS n FROM event_log WHERE run_id = ? AND pending_execution IS NOT NULL",
        [run_id],
    )
    return int(rows["n"].iloc[0])


def test_a_step_commit_is_one_statement(store: DuckDBStore, statements: Statements) -> None:
    run = start_run(store)
    clock = Clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    events = attempt_events("load", clock=clock)
    version = store.append(run.run_id, run.version, events[:2]).version
    del statements.sent[:]
    store.append(run.run_id, version, events[2:])  # its output and completion: a finished row
    assert len(statements.sent) == 1, statements.sent
    assert statements.sent[0].startswith("INSERT INTO event_log")


def test_a_finished_row_reads_the_same_before_and_after_it_is_filed(
    store: DuckDBStore,
) -> None:
    run = start_run(store)
    clock = Clock(dt.datetime(2026, 1, 1, 12, 0, 0, 123_456, tzinfo=dt.UTC))
    version = run.version
    for step in ("load", "clean"):
        params = {"n": 5, "label": "ü"} if step == "load" else None
        for event in attempt_events(step, clock=clock, inputs={"x": "h-x"}, params=params):
            version = store.append(run.run_id, version, [event]).version
    while_pending = store.executions(run.run_id)
    assert pending(store, run.run_id) == 2
    frame = store.steps_frame(run.run_id)
    hits = store.cache_hits("flow", ["load-fp", "clean-fp"])
    assert {key: hits[key].run_id for key in hits} == {
        "ck-load": run.run_id,
        "ck-clean": run.run_id,
    }
    assert store.check() == []

    done = NewEvent(EventType.RUN_COMPLETED, ts=clock())
    store.append(run.run_id, version, [done])
    assert pending(store, run.run_id) == 0
    filed = store.sql("SELECT count(*) AS n FROM execution_rows")["n"].iloc[0]
    assert filed == 2
    assert store.executions(run.run_id) == while_pending
    assert store.steps_frame(run.run_id).equals(frame)
    assert store.check() == []
    load = while_pending[0]
    assert load.params == {"n": 5, "label": "ü"} and load.inputs == {"x": "h-x"}
    assert load.started_at == dt.datetime(2026, 1, 1, 12, 0, 0, 123_456, tzinfo=dt.UTC)
    assert load.duration_ms == 3000.0


@pytest.mark.parametrize("steps", [3, 20])
def test_many_steps_in_one_commit_are_one_statement_too(
    store: DuckDBStore, statements: Statements, steps: int
) -> None:
    """A commit of many events (a list a column; an Arrow table from 64) is one too."""
    run = start_run(store)
    clock = Clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    names = [f"step{i}" for i in range(steps)]
    events = [e for step in names for e in attempt_events(step, clock=clock)]
    del statements.sent[:]
    store.append(run.run_id, run.version, events)
    (sent,) = statements.sent
    assert sent.startswith("INSERT INTO event_log") or sent == f"from_arrow ({4 * steps} rows)"
    assert pending(store, run.run_id) == steps
    rows = [(x.step, x.attempt, x.status.value) for x in store.executions(run.run_id)]
    assert rows == [(s, 1, "completed") for s in names]
    assert store.check() == []


def test_a_stale_writer_of_one_statement_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    with DuckDBStore(path) as mine, DuckDBStore(path) as theirs:
        mine.put_flow(make_flow())
        run = start_run(mine)
        ours = attempt_events("load")
        version = mine.append(run.run_id, run.version, ours[:2]).version
        # Another writer appends first; this object's state is now behind.
        theirs.append(run.run_id, version, [NewEvent(EventType.STEP_SCHEDULED, "clean")])
        before = theirs.read_events(run.run_id), theirs.executions(run.run_id)
        with pytest.raises(StaleVersionError):
            mine.append(run.run_id, version, ours[2:])
        assert (theirs.read_events(run.run_id), theirs.executions(run.run_id)) == before
        assert pending(theirs, run.run_id) == 0


def _rows(store: DuckDBStore, run_id: str) -> list[tuple[str, int, str]]:
    return [(x.step, x.attempt, x.status.value) for x in store.executions(run_id)]


@pytest.mark.parametrize("writers", ["one", "two"])
def test_a_row_written_again_replaces_its_pending_one(tmp_path: Path, writers: str) -> None:
    """A step skipped, then answered from the cache in the same run (a resume), has one
    row, the later one: also when another store object wrote the first."""
    path = tmp_path / "store.duckdb"
    with DuckDBStore(path) as first, DuckDBStore(path) as second:
        first.put_flow(make_flow())
        run = start_run(first)
        version = first.append(run.run_id, run.version, [skipped_event("clean")]).version
        assert pending(first, run.run_id) == 1
        writer = first if writers == "one" else second
        writer.append(run.run_id, version, [cached_event("clean")])
        assert _rows(writer, run.run_id) == [("clean", 0, "cached")]
        assert pending(writer, run.run_id) == 0
        assert writer.check() == []


def test_rows_written_by_another_object_are_filed_at_the_run_end(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    with DuckDBStore(path) as first, DuckDBStore(path) as second:
        first.put_flow(make_flow())
        run = start_run(first)
        version = run.version
        for event in attempt_events("load"):
            version = first.append(run.run_id, version, [event]).version
        for event in attempt_events("clean"):  # another writer takes over
            version = second.append(run.run_id, version, [event]).version
        first.append(run.run_id, version, [NewEvent(EventType.RUN_COMPLETED)])
        assert pending(first, run.run_id) == 0
        assert _rows(first, run.run_id) == [("load", 1, "completed"), ("clean", 1, "completed")]
        assert first.check() == []


def test_a_run_that_stops_midway_keeps_its_rows_and_repair_files_them(
    tmp_path: Path,
) -> None:
    """A process that dies mid-run leaves its finished rows in their events: the store
    reads them, checks clean, and a repair (or the run's end) files them."""
    path = tmp_path / "store.duckdb"
    with DuckDBStore(path) as store:
        store.put_flow(make_flow())
        run = start_run(store)
        version = run.version
        for event in attempt_events("load"):
            version = store.append(run.run_id, version, [event]).version
    with DuckDBStore(path) as again:
        rows: list[StepExecution] = again.executions(run.run_id)
        assert [(x.step, x.status.value) for x in rows] == [("load", "completed")]
        assert pending(again, run.run_id) == 1
        again._rebuild_views(again.state_at(run.run_id))
        assert pending(again, run.run_id) == 0
        assert again.executions(run.run_id) == rows
