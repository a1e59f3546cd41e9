"""``store.sql`` reads the store and nothing else, per backend: what the conformance suite
(nbflow.testing.conformance_sql) cannot say in one dialect.

A query is cancelled after ``$NBFLOW_SQL_TIMEOUT`` seconds on every backend; on
PostgreSQL no lock taken by a query outlives it, so no other process opening a store
waits for one; on DuckDB the sandbox is the database's (every connection of this
process to the file shares it, and nothing can undo it), and the store's own features
(compaction, frames, exports) still work inside it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psycopg
import pytest
from store_backends import postgres_server

import nbflow as nf
from nbflow.errors import StoreError
from nbflow.store.base import Store
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.postgres.store import PostgresStore
from nbflow.testing.postgres import PostgresServer

# Queries that run for minutes, streaming (no memory or disk grows while they run).
LONG_DUCKDB = "SELECT sum(hash(a.range * b.range)) AS s FROM range(300000) a, range(300000) b"
LONG_POSTGRES = "SELECT count(*) AS n FROM (SELECT generate_series(1, 10000000000)) AS s"


def in_thread(action: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    """Start ``action`` in a daemon thread; the dict gets its 'result' or 'error'."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = action()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_a_long_query_is_cancelled_after_the_timeout(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBFLOW_SQL_TIMEOUT", "0.5")
    postgres = "PostgreSQL" in str(store.sql("SELECT version() AS v")["v"].iloc[0])
    thread, outcome = in_thread(lambda: store.sql(LONG_POSTGRES if postgres else LONG_DUCKDB))
    thread.join(timeout=60)
    assert not thread.is_alive(), "the query was not cancelled"
    error = outcome.get("error")
    assert isinstance(error, StoreError), outcome
    assert "cancelled after 0.5 s" in str(error)
    assert "NBFLOW_SQL_TIMEOUT" in str(error)
    # The store is usable at once, the next query with the whole timeout.
    assert store.sql("SELECT 1 AS one")["one"].iloc[0] == 1


# -- PostgreSQL: no lock outlives a query ---------------------------------------------------


@pytest.fixture
def server() -> PostgresServer:
    return postgres_server()


@pytest.fixture
def pg(server: PostgresServer) -> Iterator[PostgresStore]:
    store = PostgresStore(server.new_schema_uri())
    yield store
    store.close()
    assert store.schema is not None
    server.drop_schema(store.schema)


def opens_promptly(server: PostgresServer, holder: PostgresStore) -> None:
    """A new store (a new schema: creating one takes nbflow's advisory lock) opens in
    another thread within 30 s while ``holder`` is open."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    thread, outcome = in_thread(lambda: PostgresStore(server.uri(schema=schema)).close())
    thread.join(timeout=30)
    try:
        assert not thread.is_alive(), "opening another store waited for a lock held by store.sql"
        assert "error" not in outcome, outcome
    finally:
        holder.close()  # (whatever it holds goes with its connection)
        thread.join()
        server.drop_schema(schema)


def test_an_advisory_lock_taken_through_sql_is_refused(
    pg: PostgresStore, server: PostgresServer
) -> None:
    with pytest.raises(StoreError, match=r"refuses pg_advisory_lock\(\): it takes an advisory"):
        pg.sql("SELECT pg_advisory_lock(hashtext('nbflow schema'))")
    opens_promptly(server, pg)


def test_a_lock_taken_inside_a_function_is_released_with_the_query(
    pg: PostgresStore, server: PostgresServer
) -> None:
    # The check reads the query, not the functions it calls: whatever lock one of them
    # takes is given back when the query ends.
    with psycopg.connect(server.uri(), autocommit=True) as con:
        con.execute(
            f'CREATE FUNCTION "{pg.schema}".grab() RETURNS int LANGUAGE sql AS '
            "$$ SELECT 1 FROM (SELECT pg_advisory_lock(hashtext('nbflow schema'))) AS l $$"
        )
    assert pg.sql("SELECT grab() AS held")["held"].iloc[0] == 1
    opens_promptly(server, pg)


@pytest.mark.parametrize(
    ("query", "function", "why"),
    [
        ("SELECT pg_sleep(600)", "pg_sleep", "waits"),
        ("SELECT pg_try_advisory_xact_lock(1)", "pg_try_advisory_xact_lock", "advisory lock"),
        ("SELECT pg_read_binary_file('/etc/passwd')", "pg_read_binary_file", "server's files"),
        ("SELECT pg_terminate_backend(1)", "pg_terminate_backend", "other sessions"),
        ("SELECT lo_export(1, '/tmp/x')", "lo_export", "large objects"),
        ("SELECT ts_stat('SELECT 1')", "ts_stat", "SQL given as text"),
    ],
)
def test_a_refusal_names_the_function_and_why(
    pg: PostgresStore, query: str, function: str, why: str
) -> None:
    with pytest.raises(StoreError) as caught:
        pg.sql(query)
    message = str(caught.value)
    assert f"store.sql refuses {function}()" in message
    assert why in message


def test_rows_cannot_be_locked_either(pg: PostgresStore) -> None:
    with pytest.raises(StoreError, match="read-only"):
        pg.sql("SELECT * FROM runs FOR UPDATE")


# -- DuckDB: the database's sandbox -----------------------------------------------------------


def big_flow(store: Store, rows: int) -> nf.Flow:
    flow = nf.Flow("big", store=store)

    @flow.step
    def frame(seed: int = 0):
        rng = np.random.default_rng(seed)
        return pd.DataFrame({"x": rng.random(rows), "y": rng.integers(0, 1 << 40, rows)})

    return flow


def test_the_sandbox_holds_for_every_connection_to_the_file_and_cannot_be_undone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(path, idle_release=60)
    other = DuckDBStore(path, idle_release=60)  # the same database in this process
    raw = duckdb.connect(str(path))
    try:
        for s in (store, other):
            with pytest.raises(StoreError, match="nothing else"):
                s.sql("SELECT * FROM read_csv('/etc/passwd')")
        with pytest.raises(duckdb.PermissionException):
            raw.execute("SELECT * FROM read_csv('/etc/passwd')")
        for setting in (
            "enable_external_access = true",
            "autoload_known_extensions = true",
            "autoinstall_known_extensions = true",
            "lock_configuration = false",
            "allowed_directories = ['/etc/']",
        ):
            with pytest.raises(duckdb.Error):
                raw.execute(f"SET {setting}")
        # What the store itself changes while it works is still its to change.
        raw.execute("SET threads = 2")
    finally:
        raw.close()
        other.close()
        store.close()


def test_compaction_frames_and_exports_work_in_the_sandbox(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(path)
    try:
        flow = big_flow(store, 400_000)
        flow.run(progress=False)
        kept = flow.run(seed=1, progress=False)
        before = path.stat().st_size
        report = store.gc(keep_last=1)
        assert len(report.runs) == 1 and report.blobs
        # Compaction attached a new file and copied the database into it: the freed
        # space is given back, and no copy is left beside the store.
        assert report.file_bytes_after is not None and report.file_bytes_after < before
        assert sorted(p.name for p in tmp_path.iterdir() if "compact" in p.name) == []
        assert len(kept["frame"]) == 400_000
        assert len(store.runs_frame()) == 1 and len(kept.events) > 0
        exported = nf.export_run(store, kept.id, tmp_path / "export")
        assert exported.exists()
        # Once the store has reopened the compacted file, it is as closed as before.
        with pytest.raises(StoreError, match="nothing else"):
            store.sql("SELECT * FROM read_csv('/etc/passwd')")
        assert store.sql(f"SELECT count(*) AS n FROM {kept.table_name('frame')}")["n"][0] == (
            400_000
        )
    finally:
        store.close()
