"""What only the PostgreSQL store does: several processes writing at once, opening
errors that name the server (never its password), its own schema, chunked values,
reconnecting after a dropped connection.

The conformance suite and the engine's tests run on it through conftest's ``store``
fixture; these tests use the session's throwaway server directly.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from store_backends import postgres_server
from waiting import wait_for

import nbflow as nf
from nbflow.errors import NotAStoreError, SchemaVersionError, StaleVersionError, StoreError
from nbflow.store.postgres import schema as postgres_schema
from nbflow.store.postgres.store import PostgresStore
from nbflow.store.records import EventType, NewEvent, RunStatus
from nbflow.store.untrusted import marked
from nbflow.testing import make_flow, make_run, start_run, typical_events
from nbflow.testing.builders import Opaque, attempt_events, cached_event
from nbflow.testing.postgres import PostgresServer
from nbflow.values import encode


@pytest.fixture
def server() -> PostgresServer:
    return postgres_server()


@pytest.fixture
def uri(server: PostgresServer) -> Iterator[str]:
    """The URI of a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield server.uri(schema=schema)
    server.drop_schema(schema)


@pytest.fixture
def pg(uri: str) -> Iterator[PostgresStore]:
    store = PostgresStore(uri)
    yield store
    store.close()


# -- several processes -----------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pandas as pd
    import nbflow as nf

    uri, proc, runs, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    flow = nf.Flow("shared", store=uri)

    @flow.step
    def base():
        # The same frame in every process: the same hash, stored once.
        return pd.DataFrame({"x": range(1000)})

    @flow.step
    def scaled(base, k: int = 1):
        time.sleep(0.02)
        return base * k

    @flow.step
    def total(scaled):
        return int(scaled["x"].sum())

    _ = flow.store  # open (and create the schema) before the start line
    print("ready", flush=True)
    deadline = time.monotonic() + 120  # wait for the state, generously
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(runs):
        k = proc * 100 + i + 2  # never 1: base * 1 is base itself
        run = flow.run(k=k, progress=False)
        assert run.status == "completed", (run.status, run.error)
        assert run["total"] == k * 499500, run["total"]
    print("done", flush=True)
    """
)


def test_several_processes_write_runs_at_once(uri: str, tmp_path: Path) -> None:
    """Four processes run a flow five times each, at the same time, through one
    schema they create together: every run completes with a gap-free log."""
    processes, runs = 4, 5
    go = tmp_path / "go"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), uri, str(p), str(runs), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(processes)
    ]
    try:
        for w in workers:
            assert w.stdout is not None
            line = w.stdout.readline()
            assert line.strip() == "ready", w.communicate(timeout=60)
        go.write_text("go")
        outcomes = [w.communicate(timeout=240) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, (out, err) in zip(workers, outcomes, strict=True):
        assert w.returncode == 0 and out.strip() == "done", err[-3000:]

    store = PostgresStore(uri)
    try:
        listed = store.list_runs(flow="shared")
        assert len(listed) == processes * runs
        assert {r.status for r in listed} == {RunStatus.COMPLETED}
        events = store.read_events()
        for run in listed:
            seqs = [e.seq for e in events if e.run_id == run.run_id]
            assert seqs == list(range(1, run.version + 1)), run.run_id
            assert {x.step for x in store.executions(run.run_id)} == {"base", "scaled", "total"}
        frames = [b for b in store.list_blobs() if b.codec.value == "arrow"]
        assert len(frames) == 1 + processes * runs  # base, once; each run's scaled
        # The runs overlapped in time: there is no single writer.
        spans = sorted((r.started_at, r.finished_at) for r in listed)
        assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    finally:
        store.close()


def test_a_write_based_on_a_stale_version_from_another_writer_writes_nothing(uri: str) -> None:
    """Two store objects (two connections, as two processes would have): the second
    append from version 0 is refused, and nothing of it is stored."""
    first, second = PostgresStore(uri), PostgresStore(uri)
    try:
        first.put_flow(make_flow())
        second.create_run(make_run("r1"))  # second remembers the run at version 0
        first.append("r1", 0, [NewEvent(EventType.RUN_STARTED)])
        with pytest.raises(StaleVersionError) as info:
            second.append("r1", 0, [NewEvent(EventType.RUN_STARTED)])
        assert info.value.actual == 1
        with pytest.raises(StaleVersionError):  # an empty append is checked as well
            second.append("r1", 0, [])
        assert [e.seq for e in first.read_events("r1")] == [1]
        second.append("r1", 1, typical_events()[1:3])
        assert first.get_run("r1").version == 3
    finally:
        first.close()
        second.close()


def test_racing_appenders_one_wins_each_version(uri: str) -> None:
    """Threads with their own connections append to one run from the same version:
    exactly one succeeds per version, and the log stays gap-free."""
    setup = PostgresStore(uri)
    setup.put_flow(make_flow())
    start_run(setup, make_run("r1"))
    stores = [PostgresStore(uri) for _ in range(4)]
    wins: list[int] = []
    barrier = threading.Barrier(len(stores))

    def race(store: PostgresStore) -> None:
        barrier.wait()
        for _ in range(20):
            version = store.get_run("r1").version
            try:
                store.append(
                    "r1",
                    version,
                    [NewEvent(EventType.STEP_SCHEDULED, step=f"s{version}")],
                )
                wins.append(version)
            except StaleVersionError:
                pass

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(wins) == len(set(wins))
        events = setup.read_events("r1")
        assert [e.seq for e in events] == list(range(1, len(wins) + 2))
        assert setup.get_run("r1").version == len(wins) + 1
    finally:
        for s in [setup, *stores]:
            s.close()


def test_two_writers_of_one_value_store_it_once(uri: str) -> None:
    """Writers putting the same hash at the same time neither fail nor duplicate it."""
    value = np.arange(200_000, dtype="float64")
    stores = [PostgresStore(uri) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def put(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store.put_value(encode(value, step="s"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        (blob,) = stores[0].list_blobs()
        np.testing.assert_array_equal(stores[1].load_value(encode(value, step="s").ref), value)
        assert blob.size == encode(value, step="s").ref.size
    finally:
        for s in stores:
            s.close()


# -- values ------------------------------------------------------------------------------------


def test_large_values_are_stored_in_chunks(pg: PostgresStore, monkeypatch) -> None:
    monkeypatch.setattr(postgres_schema, "CHUNK_BYTES", 10_000)
    array = np.random.default_rng(0).random(5_000)  # 40 kB
    frame = pd.DataFrame({"a": np.arange(3_000), "b": [f"row {i}" for i in range(3_000)]})
    refs = [pg.put_value(encode(v, step="s")) for v in (array, frame)]
    chunks = pg.sql("SELECT hash, count(*) AS n FROM blob_chunks GROUP BY hash")
    assert dict(zip(chunks["hash"], chunks["n"], strict=True))[refs[0].hash] == 5
    assert all(n > 1 for n in chunks["n"])
    np.testing.assert_array_equal(pg.load_value(refs[0]), array)
    pd.testing.assert_frame_equal(pg.load_value(refs[1]), frame)


def test_a_value_missing_a_chunk_is_reported_damaged(pg: PostgresStore, uri: str, monkeypatch):
    monkeypatch.setattr(postgres_schema, "CHUNK_BYTES", 10_000)
    ref = pg.put_value(encode(np.arange(5_000, dtype="int64"), step="s"))
    with psycopg.connect(uri.split("?")[0], autocommit=True) as con:
        schema = uri.split("schema=")[1]
        con.execute(f"DELETE FROM {schema}.blob_chunks WHERE idx = 2")
    with pytest.raises(StoreError, match="damaged: 4 of its 5 chunks"):
        pg.load_value(ref)


def test_a_dataframe_is_arrow_bytes_and_has_no_table(pg: PostgresStore) -> None:
    """DuckDB keeps a DataFrame as a native table; PostgreSQL keeps its Arrow IPC bytes,
    so there is no table name to query it by."""
    frame = pd.DataFrame({"x": [1, 2, 3]})
    ref = pg.put_value(encode(frame, step="s"))
    assert ref.codec.value == "arrow"
    assert pg.table_name(ref) is None
    assert pg.read_encoded(ref).table is not None
    pd.testing.assert_frame_equal(pg.load_value(ref), frame)


# -- opening -----------------------------------------------------------------------------------


def test_open_store_opens_postgres_uris_once_per_process(uri: str) -> None:
    first = nf.open_store(uri)
    try:
        assert isinstance(first, PostgresStore)
        assert nf.open_store(uri) is first
    finally:
        first.close()
    reopened = nf.open_store(uri)  # a closed store is not handed out again
    assert reopened is not first
    reopened.close()


def test_an_unreachable_server_names_host_and_port_but_not_the_password() -> None:
    from nbflow.testing.postgres import free_port

    port = free_port()
    with pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://alice:s3cr3t@127.0.0.1:{port}/db", connect_timeout=2)
    message = str(info.value)
    assert f"127.0.0.1:{port}/db" in message and "cannot connect" in message
    assert "s3cr3t" not in message


def test_a_refused_login_names_the_server_but_not_the_password(server: PostgresServer) -> None:
    uri = f"postgresql://nobody:hunter2@{server.host}:{server.port}/postgres"
    with pytest.raises(StoreError) as info:
        nf.open_store(uri)
    message = str(info.value)
    assert f"{server.host}:{server.port}" in message and "nobody" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "bad", ["postgresql://u:pw@host:notaport/db", "postgresql://host/db?nosuchoption=1"]
)
def test_a_malformed_uri_is_a_store_error_without_the_password(bad: str) -> None:
    with pytest.raises(StoreError) as info:
        PostgresStore(bad)
    assert "pw@" not in str(info.value) and ":pw" not in str(info.value)


def test_the_uri_and_repr_leave_the_password_out(server: PostgresServer) -> None:
    uri = f"postgresql://postgres:topsecret@{server.host}:{server.port}/postgres?schema=s_pw"
    store = PostgresStore(uri)  # trust authentication accepts any password
    try:
        assert "topsecret" not in store.uri and "topsecret" not in repr(store)
        assert store.uri.endswith("?schema=s_pw")
        assert PostgresStore(store.uri).schema == "s_pw"
    finally:
        store.close()
        server.drop_schema("s_pw")


def test_a_schema_of_other_tables_is_not_a_store(server: PostgresServer, uri: str) -> None:
    schema = uri.split("schema=")[1]
    with psycopg.connect(server.uri(), autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
        con.execute(f"CREATE TABLE {schema}.customers (id int)")
    with pytest.raises(NotAStoreError, match="customers"):
        PostgresStore(uri)


def test_a_newer_schema_is_refused(pg: PostgresStore, uri: str, server: PostgresServer) -> None:
    pg.close()
    schema = uri.split("schema=")[1]
    with psycopg.connect(server.uri(), autocommit=True) as con:
        con.execute(f"UPDATE {schema}.nbflow_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match="schema 99"):
        PostgresStore(uri)


def _before_tenants(con: psycopg.Connection[Any], schema: str) -> None:
    """Make ``schema`` as schema 4 left it: no tenants, no row-level security."""
    policies = con.execute(
        "SELECT policyname, tablename FROM pg_policies WHERE schemaname = %s", [schema]
    ).fetchall()
    for policy, table in policies:
        con.execute(f"DROP POLICY {policy} ON {schema}.{table}")
    for table in ("runs", "events", "step_executions", "leases", "untrusted_runs", "blobs"):
        con.execute(f"ALTER TABLE {schema}.{table} DISABLE ROW LEVEL SECURITY")
    for table in ("blob_chunks", "flows"):
        con.execute(f"ALTER TABLE {schema}.{table} DISABLE ROW LEVEL SECURITY")
    functions = (
        "nbflow_run_owner(text)",
        "nbflow_value_in_use(text)",
        "nbflow_value_stored(text)",
        "nbflow_flow_in_use(text, text)",
        "nbflow_values_in_use(text[], text[])",
        "nbflow_runs_executing()",
    )
    for function in functions:
        con.execute(f"DROP FUNCTION {schema}.{function}")
    for index in ("runs_by_flow", "step_executions_by_output"):
        con.execute(f"DROP INDEX {schema}.{index}")
    con.execute(f"ALTER TABLE {schema}.runs DROP COLUMN tenant")


def test_a_schema_from_before_tenants_gets_its_runs_readable_by_everyone(
    pg: PostgresStore, uri: str, server: PostgresServer
) -> None:
    """Schema 4 had no tenants: migrating to 5 stamps its runs with none (every tenant
    reads them) and sets up row-level security; the runs are as they were."""
    pg.put_flow(make_flow())
    pg.create_run(make_run("old"))
    pg.append("old", 0, typical_events(("load",)))
    before = pg.runs_frame()
    pg.close()
    schema = uri.split("schema=")[1]
    with psycopg.connect(server.uri(), autocommit=True) as con:
        _before_tenants(con, schema)
        con.execute(f"DELETE FROM {schema}.schema_migrations WHERE version > 4")
        con.execute(f"UPDATE {schema}.nbflow_meta SET value = '4' WHERE key = 'schema_version'")
    with PostgresStore(uri) as migrated:
        pd.testing.assert_frame_equal(migrated.runs_frame(), before)
        assert migrated.get_run("old").tenant is None
        with migrated.with_tenant("team-a") as team:
            assert team.get_run("old").version == before["version"].iloc[0]
        assert migrated.check() == []
    with psycopg.connect(server.uri(), autocommit=True) as con:
        secured = con.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relrowsecurity ORDER BY relname",
            [schema],
        ).fetchall()
    assert [r[0] for r in secured] == [
        "blob_chunks", "blobs", "events", "flows", "leases", "runs", "step_executions",
        "untrusted_runs",
    ]  # fmt: skip


def test_a_schema_from_before_run_marks_is_migrated_marking_imported_runs(
    pg: PostgresStore, uri: str, server: PostgresServer
) -> None:
    """Schema 1 marked imported pickles only: migrating to 2 marks the runs those marks
    name (imported without trust), so they stop being cache hits; no other run."""
    pg.put_flow(make_flow())
    for run_id in ("theirs", "mine"):
        pg.create_run(make_run(run_id))
        pg.append(run_id, 0, typical_events(("load",)))
    for n, where in enumerate(
        [
            {"imported_from": "/exports/theirs", "run_id": "theirs"},
            {"imported_from": "/exports/gone", "run_id": "gc-deleted-since"},
        ]
    ):
        value = encode(Opaque(f"thing-{n}", (n,)), step="thing")
        pg.put_value(value.with_meta(marked(value.meta, where)))
    pg.close()
    schema = uri.split("schema=")[1]
    with psycopg.connect(server.uri(), autocommit=True) as con:
        _before_tenants(con, schema)
        con.execute(f"DROP TABLE {schema}.untrusted_runs")
        con.execute(f"ALTER TABLE {schema}.step_executions DROP COLUMN files")  # schema 3
        con.execute(f"ALTER TABLE {schema}.step_executions DROP COLUMN params")  # schema 4
        con.execute(f"DELETE FROM {schema}.schema_migrations WHERE version > 1")
        con.execute(f"UPDATE {schema}.nbflow_meta SET value = '1' WHERE key = 'schema_version'")
    with PostgresStore(uri) as migrated:
        marks = migrated.untrusted_runs()
        assert {r: m.source for r, m in marks.items()} == {
            "theirs": "imported from /exports/theirs"
        }
        assert migrated.cache_hits("flow", ["load-fp"])["ck-load"].run_id == "mine"
        versions = migrated.sql("SELECT version FROM schema_migrations ORDER BY version")
        assert list(versions["version"]) == [n for n, _, _ in postgres_schema.MIGRATIONS]
        assert [n for n, _, _ in postgres_schema.MIGRATIONS] == [1, 2, 3, 4, 5]
        assert migrated.check() == []


def test_a_schema_from_before_step_parameters_gets_them_from_its_events(
    pg: PostgresStore, uri: str, server: PostgresServer
) -> None:
    """Schema 3 kept the parameters a step read in its step_started event only: migrating
    to 4 fills the rows from them (a cached row never had them), and check agrees."""
    pg.put_flow(make_flow())
    pg.create_run(make_run("r"))
    events = [
        NewEvent(EventType.RUN_STARTED),
        *attempt_events("load", params={"n": 5, "min_amount": 60.0}),
        cached_event("clean"),
        NewEvent(EventType.RUN_COMPLETED),
    ]
    pg.append("r", 0, events)
    pg.close()
    schema = uri.split("schema=")[1]
    with psycopg.connect(server.uri(), autocommit=True) as con:
        _before_tenants(con, schema)
        con.execute(f"ALTER TABLE {schema}.step_executions DROP COLUMN params")
        con.execute(f"DELETE FROM {schema}.schema_migrations WHERE version > 3")
        con.execute(f"UPDATE {schema}.nbflow_meta SET value = '3' WHERE key = 'schema_version'")
    with PostgresStore(uri) as migrated:
        rows = {r.step: r.params for r in migrated.executions("r")}
        assert rows == {"load": {"n": 5, "min_amount": 60.0}, "clean": None}
        assert migrated.check() == []


def test_schemas_keep_stores_apart(server: PostgresServer) -> None:
    a, b = server.new_schema_uri(), server.new_schema_uri()
    one, two = PostgresStore(a), PostgresStore(b)
    try:
        one.put_flow(make_flow())
        one.create_run(make_run("r1"))
        assert two.list_runs() == []
        assert len(one.list_runs()) == 1
    finally:
        for s in (one, two):
            s.close()
            server.drop_schema(s.schema or "")


def test_timestamps_come_back_utc_whatever_the_database_time_zone(
    server: PostgresServer,
) -> None:
    name = f"tz_{uuid.uuid4().hex[:8]}"
    base = server.create_database(name)
    with psycopg.connect(server.uri(), autocommit=True) as con:
        con.execute(f"ALTER DATABASE {name} SET timezone TO 'America/New_York'")
    store = PostgresStore(base)
    try:
        store.put_flow(make_flow())
        created = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
        store.create_run(make_run("r1", created_at=created))
        got = store.get_run("r1").created_at
        assert got == created and got.utcoffset() == dt.timedelta(0)
        frame = store.sql("SELECT created_at FROM runs")
        assert frame["created_at"].iloc[0] == pd.Timestamp(created)
    finally:
        store.close()


def test_a_dropped_connection_is_reestablished(pg: PostgresStore, server: PostgresServer) -> None:
    pg.put_flow(make_flow())
    pg.create_run(make_run("r1"))
    pg.create_run(make_run("r2"))
    assert pg._con is not None
    pid = pg._con.info.backend_pid
    with psycopg.connect(server.uri(), autocommit=True) as con:
        con.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_for(
            lambda: (
                not con.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchall()
            ),
            "the terminated backend gone",
        )
    assert pg.get_run("r1").run_id == "r1"  # a read: reconnected and run again
    assert pg._con.info.backend_pid != pid
    start_run(pg, make_run("r3"))
    assert pg.get_run("r3").version == 1


# -- SQL ---------------------------------------------------------------------------------------


def test_sql_takes_duckdb_style_placeholders_and_literal_percents(pg: PostgresStore) -> None:
    pg.put_flow(make_flow())
    pg.create_run(make_run("r1"))
    pg.create_run(make_run("r2"))
    named = pg.sql("SELECT run_id FROM runs WHERE run_id = $id", {"id": "r2"})
    assert list(named["run_id"]) == ["r2"]
    numbered = pg.sql("SELECT run_id, '100%' AS p FROM runs WHERE run_id IN ($2, $1)", ["r1", "x"])
    assert list(numbered["run_id"]) == ["r1"] and list(numbered["p"]) == ["100%"]
    assert list(pg.sql("SELECT '?' AS q, 'a%' AS p")["q"]) == ["?"]


def test_sql_refuses_a_write_hidden_in_a_select(pg: PostgresStore) -> None:
    """PostgreSQL itself refuses writes: the query runs in a read-only transaction."""
    pg.put_flow(make_flow())
    pg.create_run(make_run("r1"))
    with pytest.raises(StoreError, match="read-only"):
        pg.sql("WITH gone AS (DELETE FROM runs RETURNING 1) SELECT count(*) FROM gone")
    assert [r.run_id for r in pg.list_runs()] == ["r1"]


# -- command line ------------------------------------------------------------------------------


def test_the_command_line_lists_runs_of_a_postgres_store(uri: str) -> None:
    from click.testing import CliRunner

    from nbflow.cli import main

    flow = nf.Flow("cli", store=uri)

    @flow.step
    def one():
        return 1

    run = flow.run(progress=False)
    result = CliRunner().invoke(
        main, ["runs", "--store", uri, "--format", "csv"], env={"NBFLOW_STORE": None}
    )
    assert result.exit_code == 0, result.output
    assert run.id in result.stdout and "completed" in result.stdout
    flow.store.close()


def test_the_command_line_names_an_unreachable_server_in_one_line() -> None:
    from click.testing import CliRunner

    from nbflow.cli import main
    from nbflow.testing.postgres import free_port

    uri = f"postgresql://me:pw123@127.0.0.1:{free_port()}/db"
    result = CliRunner().invoke(main, ["runs", "--store", uri], env={"NBFLOW_STORE": None})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbflow: error: cannot connect"), lines
    assert "pw123" not in result.stderr


def test_text_with_nul_characters_round_trips(pg: PostgresStore) -> None:
    """PostgreSQL text cannot hold NUL: such text (and text starting with the escape
    marker) is stored escaped and comes back as it was, in records and in store.sql."""
    pg.put_flow(make_flow(name="f\x00low"))
    odd = ["r\x00un", "\ufdd0marked", "\ufdd0not json"]
    for run_id in odd:
        pg.create_run(make_run(run_id, flow="f\x00low", thread_id=run_id))
    assert sorted(r.run_id for r in pg.list_runs(flow="f\x00low")) == sorted(odd)
    assert pg.get_run("r\x00un").thread_id == "r\x00un"
    assert [r.run_id for r in pg.list_runs(thread_id="\ufdd0marked")] == ["\ufdd0marked"]
    frame = pg.sql("SELECT run_id FROM runs WHERE flow = ?", ["f\x00low"])
    assert sorted(frame["run_id"]) == sorted(odd)
    assert pg.get_flow("f\x00low", "flow-fp-1") is not None


def test_the_gate_secret_is_readable_by_the_stores_owner_only(
    pg: PostgresStore, uri: str, server: PostgresServer
) -> None:
    keys = pg.gate_keys()
    reopened = PostgresStore(uri)
    try:
        assert reopened.gate_keys() == keys  # one store, one key, whichever connection
    finally:
        reopened.close()
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.uri(), autocommit=True) as con:
        con.execute(f'CREATE ROLE "{role}" LOGIN')
        con.execute(f'GRANT USAGE ON SCHEMA "{pg.schema}" TO "{role}"')
        con.execute(f'GRANT SELECT ON "{pg.schema}".runs TO "{role}"')
    try:
        other = server.uri().replace(f"{server.user}@", f"{role}@", 1)
        with psycopg.connect(other, autocommit=True) as con:
            con.execute(f'SET search_path TO "{pg.schema}"')
            assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                con.execute("SELECT secret FROM nbflow_gate_keys")
    finally:
        with psycopg.connect(server.uri(), autocommit=True) as con:
            con.execute(f'REVOKE ALL ON SCHEMA "{pg.schema}" FROM "{role}"')
            con.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{pg.schema}" FROM "{role}"')
            con.execute(f'DROP ROLE "{role}"')


def test_racing_deciders_one_decision_is_recorded(uri: str) -> None:
    from nbflow.errors import GateError
    from nbflow.store import gates
    from nbflow.testing.conformance_gates import waiting_run

    first = PostgresStore(uri)
    run = waiting_run(first)
    stores = [first, PostgresStore(uri)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(store: PostgresStore, approve: bool) -> None:
        barrier.wait(timeout=30)
        try:
            gates.decide(store, run.run_id, gates.Decision("review", approve, "someone"))
            outcomes.append("recorded")
        except GateError:
            outcomes.append("refused")

    threads = [
        threading.Thread(target=decide, args=(store, approve))
        for store, approve in zip(stores, (True, False), strict=True)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes) == ["recorded", "refused"]
        decisions = [
            e
            for e in first.read_events(run.run_id)
            if e.type.value in ("gate_approved", "gate_rejected")
        ]
        assert len(decisions) == 1
    finally:
        for store in stores:
            store.close()
