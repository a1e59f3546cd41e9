"""What only the DuckDB store does: its file, its schema, its tables, and open_store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.errors import (
    CorruptStoreError,
    NotAStoreError,
    SchemaVersionError,
    StaleVersionError,
    StoreError,
)
from nbflow.store.duckdb import schema
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.memory.store import MemoryStore
from nbflow.store.open import open_store
from nbflow.store.records import Codec, EventType, NewEvent, RunStatus, StepStatus
from nbflow.store.untrusted import marked
from nbflow.testing import make_flow, make_run, populate, start_run, typical_events
from nbflow.testing.builders import Opaque, attempt_events, cached_event
from nbflow.values import encode

FRAME = pd.DataFrame({"x": [1, 2, 3], "label": ["a", "b", "c"], "y": [0.5, 1.5, 2.5]})
# Big enough (640 KB) for a table of its own; FRAME is kept in its blob row.
BIG_FRAME = pd.DataFrame({"x": np.arange(40_000), "y": np.arange(40_000) * 0.5})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.duckdb"


@pytest.fixture
def store(path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(path)
    yield s
    s.close()


def _store_file(path: Path, runs: int = 3) -> Path:
    """A closed store file holding ``runs`` completed runs."""
    with DuckDBStore(path) as s:
        for i in range(runs):
            s.create_run(make_run(f"r{i:03d}", params={"pad": "x" * 200}))
            s.append(f"r{i:03d}", 0, typical_events())
    return path


@pytest.fixture(scope="module")
def big_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed store file of a few MB (built once for the module; copy it to damage it)."""
    return _store_file(tmp_path_factory.mktemp("template") / "template.duckdb", runs=60)


def _read_everything(s: DuckDBStore) -> None:
    """Read every table through the store's API (so every used block is read)."""
    runs = s.list_runs()
    s.executions(runs[0].run_id)
    s.steps_frame(runs[-1].run_id)
    s.read_events()
    s.runs_frame()
    s.events_frame()
    s.list_blobs()
    s.get_flow("flow", "flow-fp-1")
    s.sql("SELECT * FROM step_executions")
    s.sql("SELECT * FROM flows")


# -- the file -------------------------------------------------------------------------------


def test_reopening_keeps_everything(path: Path) -> None:
    s = DuckDBStore(path)
    ids = populate(s)
    ref = s.put_value(encode(FRAME, step="s"))
    array_ref = s.put_value(encode(np.arange(5), step="s"))
    before = (
        s.list_runs(),
        s.read_events(),
        {r: s.executions(r) for r in ids},
        s.get_flow("flow", "flow-fp-1"),
        s.list_blobs(),
    )
    s.close()

    again = DuckDBStore(path)
    try:
        after = (
            again.list_runs(),
            again.read_events(),
            {r: again.executions(r) for r in ids},
            again.get_flow("flow", "flow-fp-1"),
            again.list_blobs(),
        )
        assert after == before
        pd.testing.assert_frame_equal(again.load_value(ref), FRAME)
        np.testing.assert_array_equal(again.load_value(array_ref), np.arange(5))
        # The run goes on where it stopped: the version comes from the file.
        fork = again.get_run("r-fork")
        updated = again.append("r-fork", fork.version, [NewEvent(EventType.RUN_INTERRUPTED)])
        assert (updated.status, updated.version) == (RunStatus.INTERRUPTED, fork.version + 1)
    finally:
        again.close()


def test_a_closed_store_refuses_to_be_used(store: DuckDBStore) -> None:
    store.close()
    assert store.closed
    with pytest.raises(StoreError, match="is closed; open it again"):
        store.list_runs()
    with pytest.raises(StoreError, match="is closed"):
        store.sql("SELECT 1")
    store.close()  # closing twice is fine


def test_two_objects_on_one_file_refuse_stale_writes(path: Path) -> None:
    first = DuckDBStore(path)
    second = DuckDBStore(path)
    try:
        run = start_run(first)
        assert second.get_run(run.run_id).version == 1  # second caches version 1 too
        second.append(run.run_id, 1, [NewEvent(EventType.STEP_SCHEDULED, "load")])
        # first still believes the run is at version 1; even an empty batch must not
        # write that old state back.
        with pytest.raises(StaleVersionError, match="it is at version 2"):
            first.append(run.run_id, 1, [])
        assert first.get_run(run.run_id).version == 2
        with pytest.raises(StaleVersionError, match="it is at version 2"):
            first.append(run.run_id, 1, [NewEvent(EventType.RUN_COMPLETED)])
        assert first.get_run(run.run_id).version == 2
        assert first.get_run(run.run_id).status is RunStatus.RUNNING
        assert first.append(run.run_id, 2, [NewEvent(EventType.RUN_COMPLETED)]).version == 3
    finally:
        first.close()
        second.close()


# -- the schema -----------------------------------------------------------------------------


def test_the_tables_exist(store: DuckDBStore) -> None:
    tables = set(
        store.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")[
            "table_name"
        ]
    )
    expected = {
        "flows",
        "runs",
        "events",
        "step_executions",
        "blobs",
        "schema_migrations",
        "nbflow_meta",
    }
    assert expected <= tables


def test_blobs_have_hash_codec_and_size(store: DuckDBStore) -> None:
    columns = set(
        store.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'blobs'")[
            "column_name"
        ]
    )
    assert {"hash", "codec", "size"} <= columns
    ref = store.put_value(encode(np.arange(10), step="s"))
    row = store.sql("SELECT hash, codec, size FROM blobs")
    assert list(row.itertuples(index=False, name=None)) == [(ref.hash, "npy", ref.size)]


def test_the_file_says_what_it_is(store: DuckDBStore) -> None:
    meta = dict(store.sql("SELECT key, value FROM nbflow_meta").itertuples(index=False))
    assert meta == {"format": "nbflow", "schema_version": str(schema.SCHEMA_VERSION)}
    migrations = store.sql("SELECT version, name FROM schema_migrations")
    assert list(migrations.itertuples(index=False, name=None)) == [
        (number, name) for number, name, _ in schema.MIGRATIONS
    ]


def test_opening_twice_does_not_migrate_again(path: Path) -> None:
    DuckDBStore(path).close()
    with DuckDBStore(path) as again:
        assert len(again.sql("SELECT * FROM schema_migrations")) == len(schema.MIGRATIONS)
        assert len(again.sql("SELECT * FROM nbflow_meta")) == 2


def _downgrade(path: Path, version: int) -> None:
    """Make ``path`` the file an nbflow of schema ``version`` (1 to 8) wrote."""
    con = duckdb.connect(str(path))
    if version < 9:
        # Schema 8: runs have no tenant.
        con.execute("DROP VIEW runs")
        con.execute("ALTER TABLE run_records DROP COLUMN tenant")
        con.execute(schema.RUNS_VIEW_V3.split("DROP TABLE runs;")[1])
    if version < 8:
        # Schema 7: the events and step_executions tables; every row in the second.
        con.execute("INSERT INTO execution_rows SELECT * FROM pending_executions")
        con.execute("DROP VIEW step_executions")
        con.execute("DROP VIEW pending_executions")
        con.execute("DROP VIEW events")
        con.execute("ALTER TABLE event_log DROP COLUMN pending_execution")
        con.execute("ALTER TABLE event_log RENAME TO events")
        con.execute("ALTER TABLE execution_rows RENAME TO step_executions")
    if version < 7:
        con.execute("ALTER TABLE step_executions DROP COLUMN params")  # schema 7
    if version < 6:
        con.execute("ALTER TABLE step_executions DROP COLUMN files")  # schema 6
    if version < 4:
        con.execute("DROP TABLE untrusted_runs")  # schema 4
    if version < 3:
        # Schema 1 and 2: runs is a table holding each run's version.
        con.execute("CREATE TABLE runs_table AS SELECT * FROM runs")
        con.execute("DROP VIEW runs")
        con.execute("DROP TABLE run_records")
        con.execute("ALTER TABLE runs_table RENAME TO runs")
    if version < 2:
        con.execute("DROP TABLE leases")
    con.execute("DELETE FROM schema_migrations WHERE version > ?", [version])
    con.execute("UPDATE nbflow_meta SET value = ? WHERE key = 'schema_version'", [str(version)])
    con.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6, 7, 8])
def test_an_older_file_is_migrated_keeping_its_runs(path: Path, version: int) -> None:
    with DuckDBStore(path) as first:
        run_id = populate(first)[0]
        before = first.runs_frame()
        versions = {r.run_id: r.version for r in first.list_runs()}
    _downgrade(path, version)
    with DuckDBStore(path) as migrated:
        assert {r.tenant for r in migrated.list_runs()} == {None}  # (runs from before)
        meta = dict(migrated.sql("SELECT key, value FROM nbflow_meta").itertuples(index=False))
        assert meta["schema_version"] == str(schema.SCHEMA_VERSION)
        leases = migrated.sql("SELECT run_id FROM leases")["run_id"].tolist()
        assert migrated.untrusted_runs() == {}
        pd.testing.assert_frame_equal(migrated.runs_frame(), before)
        assert {r.run_id: r.version for r in migrated.list_runs()} == versions
        if version >= 2:  # the fork left running keeps the lease it was written under
            assert leases == ["r-fork"] and migrated.check() == []
        else:  # schema 1 had no leases: nothing holds the fork, and check says so
            assert leases == []
            (problem,) = migrated.check()
            assert (problem.kind.value, problem.run_id) == ("run_without_lease", "r-fork")
        lease = migrated.claim(run_id)
        assert lease.run_id == run_id


def test_a_run_under_way_in_a_schema_7_file_goes_on_after_the_migration(path: Path) -> None:
    """Schema 7 wrote each finished row to step_executions at once: after migrating to 8,
    the run's next steps ride in their events and its end files them beside the old."""
    with DuckDBStore(path) as first:
        first.put_flow(make_flow())
        run = start_run(first)
        version = first.append(run.run_id, run.version, attempt_events("load")).version
    _downgrade(path, 7)
    with DuckDBStore(path) as migrated:
        for event in attempt_events("clean"):
            version = migrated.append(run.run_id, version, [event]).version
        rows = migrated.executions(run.run_id)
        migrated.append(run.run_id, version, [NewEvent(EventType.RUN_COMPLETED)])
        assert migrated.executions(run.run_id) == rows
        assert [(x.step, x.status) for x in rows] == [
            ("load", StepStatus.COMPLETED),
            ("clean", StepStatus.COMPLETED),
        ]
        stored = migrated.sql(
            "SELECT count(*) AS n, count(pending_execution) AS pending FROM event_log"
        )
        assert (stored["n"].iloc[0], stored["pending"].iloc[0]) == (version + 1, 0)
        assert len(migrated.sql("SELECT * FROM execution_rows")) == 2
        assert migrated.check() == []


def test_a_file_from_before_step_parameters_gets_them_from_its_events(path: Path) -> None:
    """Schema 6 kept the parameters a step read in its step_started event only: migrating
    to 7 fills the rows from them (a cached row never had them), and check agrees."""
    with DuckDBStore(path) as first:
        first.put_flow(make_flow())
        first.create_run(make_run("r"))
        events = [
            NewEvent(EventType.RUN_STARTED),
            *attempt_events("load", params={"n": 5, "min_amount": 60.0}),
            cached_event("clean"),
            NewEvent(EventType.RUN_COMPLETED),
        ]
        first.append("r", 0, events)
    _downgrade(path, 6)
    with DuckDBStore(path) as migrated:
        rows = {r.step: r.params for r in migrated.executions("r")}
        assert rows == {"load": {"n": 5, "min_amount": 60.0}, "clean": None}
        assert migrated.check() == []


def test_a_file_from_before_run_marks_marks_the_runs_its_imported_pickles_name(
    path: Path,
) -> None:
    """Schema 3 marked imported pickles only: migrating to 4 marks the runs those marks
    name (imported without trust), so they stop being cache hits; no other run."""
    with DuckDBStore(path) as first:
        first.put_flow(make_flow())
        for run_id in ("theirs", "copied", "mine"):
            first.create_run(make_run(run_id))
            first.append(run_id, 0, typical_events(("load",)))
        for n, where in enumerate(
            [
                {"imported_from": "/exports/theirs", "run_id": "theirs", "at": "2026-01-01"},
                {"copied_from": "/stores/a.duckdb", "run_id": "copied"},
                {"imported_from": "/exports/gone", "run_id": "gc-deleted-since"},
            ]
        ):
            value = encode(Opaque(f"thing-{n}", (n,)), step="thing")
            first.put_value(value.with_meta(marked(value.meta, where)))
        first.put_value(encode(Opaque("own", ()), step="thing"))
    _downgrade(path, 3)
    with DuckDBStore(path) as migrated:
        marks = migrated.untrusted_runs()
        assert {r: m.source for r, m in marks.items()} == {
            "theirs": "imported from /exports/theirs",
            "copied": "copied from /stores/a.duckdb",
        }
        assert migrated.cache_hits("flow", ["load-fp"])["ck-load"].run_id == "mine"
        assert migrated.check() == []
        versions = migrated.sql("SELECT version FROM schema_migrations ORDER BY version")
        assert list(versions["version"]) == [n for n, _, _ in schema.MIGRATIONS]


@pytest.mark.parametrize("version", [3, 4])
def test_an_older_file_keeps_its_values_in_the_layouts_it_wrote(path: Path, version: int) -> None:
    """Schema 3 and 4 kept every value's bytes in its row and every DataFrame in a table: such
    rows are read as they are after the migration."""
    from nbflow.testing.conformance_check import run_with_outputs

    big = np.linspace(0.0, 1.0, 60_000)  # 480 KB: a table of words from schema 5 on
    with DuckDBStore(path) as store:
        store.compact_frame_bytes = 0  # every frame a table, as schema 3 wrote them
        run_with_outputs(store, {"frame": FRAME, "array": big}, run_id="r-old")
        refs = {x.step: x.output for x in store.executions("r-old")}
        data = store.read_encoded(refs["array"]).data
    con = duckdb.connect(str(path))
    array_hash = refs["array"].hash
    con.execute("UPDATE blobs SET data = ?, table_name = NULL WHERE hash = ?", [data, array_hash])
    con.execute(f"DROP TABLE nbflow_values.v_{array_hash}")
    con.close()
    _downgrade(path, version)
    with DuckDBStore(path) as migrated:
        meta = dict(migrated.sql("SELECT key, value FROM nbflow_meta").itertuples(index=False))
        assert meta["schema_version"] == str(schema.SCHEMA_VERSION)
        pd.testing.assert_frame_equal(migrated.load_value(refs["frame"]), FRAME)
        np.testing.assert_array_equal(migrated.load_value(refs["array"]), big)
        assert migrated.check() == []


def test_a_run_version_is_the_seq_of_its_last_event(store: DuckDBStore) -> None:
    """runs.version is derived from the events: no row is updated per step."""
    run = start_run(store)
    store.append(run.run_id, 1, [NewEvent(EventType.STEP_SCHEDULED, "load")])
    rows = store.sql(
        "SELECT r.version, max(e.seq) AS last FROM runs r JOIN events e "
        "USING (run_id) WHERE run_id = ? GROUP BY r.version",
        [run.run_id],
    )
    assert list(rows.itertuples(index=False, name=None)) == [(2, 2)]
    columns = store.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'run_records'"
    )["column_name"]
    assert "version" not in set(columns)


# -- values as tables -----------------------------------------------------------------------


def test_a_dataframe_is_a_table_in_nbflow_values(store: DuckDBStore) -> None:
    ref = store.put_value(encode(BIG_FRAME, step="s"))
    assert ref.codec is Codec.ARROW
    tables = store.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'nbflow_values'"
    )
    assert list(tables["table_name"]) == [f"v_{ref.hash}"]
    assert store.table_name(ref) == f"nbflow_values.v_{ref.hash}"
    (blob,) = store.list_blobs()
    assert blob.table_name == store.table_name(ref)


def test_a_small_dataframe_is_kept_in_its_row_and_queried_as_a_table(store: DuckDBStore) -> None:
    small = store.put_value(encode(FRAME, step="s"))
    big = store.put_value(encode(BIG_FRAME, step="t"))
    tables = store.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'nbflow_values'"
    )
    assert list(tables["table_name"]) == [f"v_{big.hash}"]  # none of its own
    name = store.table_name(small)
    assert name == f"nbflow_values.v_{small.hash}"
    joined = store.sql(
        f"SELECT s.x, s.label, b.y FROM {name} s JOIN {store.table_name(big)} b USING (x) "
        "ORDER BY s.x"
    )
    rows = list(joined.itertuples(index=False, name=None))
    assert rows == [(1, "a", 0.5), (2, "b", 1.0), (3, "c", 1.5)]
    # Seen as a table only while a query runs: nothing is left in the file.
    assert list(store.sql(f"SELECT count(*) AS n FROM {name.upper()}")["n"]) == [3]
    after = store.sql(
        "SELECT count(*) AS n FROM duckdb_tables() WHERE schema_name = 'nbflow_values'"
    )
    assert list(after["n"]) == [1]
    pd.testing.assert_frame_equal(store.load_value(small), FRAME)


def test_a_dataframe_table_can_be_queried(store: DuckDBStore) -> None:
    ref = store.put_value(encode(FRAME, step="s"))
    name = store.table_name(ref)
    got = store.sql(f"SELECT x, label, y FROM {name} ORDER BY x")
    assert list(got.itertuples(index=False, name=None)) == list(
        FRAME.itertuples(index=False, name=None)
    )
    total = store.sql(f"SELECT sum(y) AS s FROM {name} WHERE x >= ?", [2])
    assert float(total["s"].iloc[0]) == 4.0


def test_a_dataframe_table_survives_reopening(path: Path) -> None:
    with DuckDBStore(path) as s:
        ref = s.put_value(encode(FRAME, step="s"))
    with DuckDBStore(path) as s:
        assert len(s.sql(f"SELECT * FROM {s.table_name(ref)}")) == 3
        pd.testing.assert_frame_equal(s.load_value(ref), FRAME)


def test_an_equal_dataframe_makes_no_second_table(store: DuckDBStore) -> None:
    store.put_value(encode(BIG_FRAME, step="a"))
    store.put_value(encode(BIG_FRAME.copy(), step="b"))
    tables = store.sql(
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'nbflow_values'"
    )
    assert int(tables["n"].iloc[0]) == 1
    assert len(store.list_blobs()) == 1


@pytest.mark.parametrize("dtype", ["str", object, "string[python]", "category"])
def test_text_columns_come_back_as_written_and_the_setting_is_put_back(
    store: DuckDBStore, dtype: object
) -> None:
    # pandas' own str columns (large_string) are read with 64-bit offsets, the others not.
    frame = pd.DataFrame({"label": pd.Series(["a", None, "ccc"] * 3, dtype=dtype), "n": range(9)})
    ref = store.put_value(encode(frame, step="s"))
    back = store.load_value(ref)
    pd.testing.assert_frame_equal(back, frame)
    setting = store.sql("SELECT current_setting('arrow_large_buffer_size') AS v")["v"][0]
    assert not setting


def test_which_frames_are_read_with_large_buffers() -> None:
    import base64

    import pyarrow as pa

    from nbflow.values.duckdb_tables import wants_large_buffers

    def meta(*types: pa.DataType) -> dict[str, str]:
        schema = pa.schema([(f"c{i}", t) for i, t in enumerate(types)])
        return {"schema": base64.b64encode(schema.serialize().to_pybytes()).decode()}

    assert wants_large_buffers(meta(pa.large_string(), pa.int64()))
    assert wants_large_buffers(meta(pa.large_string(), pa.large_binary(), pa.string()))
    assert not wants_large_buffers(meta(pa.string(), pa.int64()))
    assert not wants_large_buffers(meta(pa.large_string(), pa.string()))  # a tie: the default
    assert not wants_large_buffers(meta(pa.int64()))
    assert not wants_large_buffers({})
    assert not wants_large_buffers({"schema": "not base64 of a schema"})


def test_other_values_have_no_table(store: DuckDBStore) -> None:
    ref = store.put_value(encode(np.arange(3), step="s"))
    assert store.table_name(ref) is None
    assert store.table_name(encode({"a": 1}, step="s").ref) is None


# -- what open_store refuses ----------------------------------------------------------------


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(NotAStoreError, match="is a directory, not a store file") as info:
        open_store(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "nbflow.duckdb" in str(info.value)  # it suggests a file path


def test_a_text_file_is_not_a_store(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("just some notes, long enough to have a header\n" * 5)
    with pytest.raises(NotAStoreError, match="is not a DuckDB file") as info:
        open_store(text)
    assert str(text) in str(info.value)
    assert text.read_text().startswith("just some notes")  # left untouched


def test_an_empty_file_is_not_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.duckdb"
    empty.touch()
    with pytest.raises(NotAStoreError, match="is an empty file, not a DuckDB store") as info:
        open_store(empty)
    assert str(empty) in str(info.value)
    assert empty.stat().st_size == 0


def test_a_duckdb_file_with_other_tables_is_not_a_store(tmp_path: Path) -> None:
    other = tmp_path / "analytics.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE sales (id INTEGER, amount DOUBLE)")
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    with pytest.raises(NotAStoreError, match="a DuckDB database but not an nbflow store") as info:
        open_store(other)
    assert "customers, sales" in str(info.value)
    assert str(other) in str(info.value)
    con = duckdb.connect(str(other))  # nothing was added to it
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    con.close()
    assert tables == {"sales", "customers"}


def test_a_meta_table_without_the_marker_is_not_a_store(tmp_path: Path) -> None:
    other = tmp_path / "meta.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE nbflow_meta (key VARCHAR, value VARCHAR)")
    con.execute("INSERT INTO nbflow_meta VALUES ('format', 'something-else')")
    con.close()
    with pytest.raises(NotAStoreError, match="no nbflow format marker"):
        open_store(other)


def test_a_newer_schema_is_refused(path: Path) -> None:
    DuckDBStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE nbflow_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(SchemaVersionError, match="newer nbflow") as info:
        open_store(path)
    message = str(info.value)
    assert "schema 99" in message
    assert f"reads up to {schema.SCHEMA_VERSION}" in message
    assert "Upgrade nbflow" in message


def test_a_corrupt_file_is_refused(path: Path) -> None:
    _store_file(path)
    with path.open("r+b") as fh:
        # Past the three 4 KiB file headers: the blocks holding the catalog.
        fh.seek(3 * 4096)
        fh.write(b"\xa5" * 32 * 1024)
    with pytest.raises(CorruptStoreError, match="is damaged and cannot be read") as info:
        open_store(path)
    assert str(path) in str(info.value)
    assert "checksum" in str(info.value)  # DuckDB's reason is kept


def test_a_corrupt_header_is_refused(path: Path) -> None:
    _store_file(path)
    with path.open("r+b") as fh:
        fh.seek(4096)
        fh.write(b"\x00" * 8192)
    with pytest.raises(StoreError, match=r"damaged|not a DuckDB|not an nbflow") as info:
        open_store(path)
    assert isinstance(info.value, CorruptStoreError | NotAStoreError)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
def test_damage_anywhere_never_surfaces_a_raw_duckdb_error(
    big_store_file: Path, tmp_path: Path, fraction: float
) -> None:
    template = big_store_file
    damaged = tmp_path / "damaged.duckdb"
    shutil.copy(template, damaged)
    with damaged.open("r+b") as fh:
        fh.seek(int(damaged.stat().st_size * fraction))
        fh.write(b"\xa5" * 4096)
    try:
        s = DuckDBStore(damaged)
    except (CorruptStoreError, NotAStoreError) as exc:
        assert str(damaged) in str(exc)
        return
    try:
        _read_everything(s)  # a block nothing reads may be damaged: no error then
    except CorruptStoreError as exc:
        assert "damaged" in str(exc)
    finally:
        s.close()


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    where = tmp_path / "no" / "such" / "folder" / "store.duckdb"
    with pytest.raises(StoreError, match="does not exist") as info:
        open_store(where)
    assert str(where.parent) in str(info.value)
    assert not where.parent.exists()


@pytest.mark.parametrize("uri", ["mongodb://host/db", "s3://bucket/store.duckdb"])
def test_an_unknown_uri_scheme_is_refused(uri: str) -> None:
    scheme = uri.split("://")[0]
    with pytest.raises(StoreError, match=f"unknown store URI scheme '{scheme}'"):
        open_store(uri)


# -- what open_store opens ------------------------------------------------------------------


def test_a_plain_path_opens_a_duckdb_store(path: Path) -> None:
    s = open_store(path)
    try:
        assert isinstance(s, DuckDBStore)
        assert s.uri == str(path.resolve())
        assert path.exists()
    finally:
        s.close()


def test_a_duckdb_uri_opens_that_file(path: Path) -> None:
    s = open_store(f"duckdb://{path}")
    try:
        assert isinstance(s, DuckDBStore)
        assert s.uri == str(path)
        s.create_run(make_run("r1"))
    finally:
        s.close()
    with DuckDBStore(path) as again:
        assert again.get_run("r1").run_id == "r1"


def test_the_same_path_twice_is_the_same_store(path: Path) -> None:
    first = open_store(path)
    try:
        assert open_store(path) is first
        assert open_store(str(path)) is first
        assert open_store(f"duckdb://{path}") is first
        assert open_store(path.parent / "." / path.name) is first
    finally:
        first.close()


def test_a_closed_store_is_opened_anew(path: Path) -> None:
    first = open_store(path)
    first.put_flow(make_flow())
    first.close()
    second = open_store(path)
    try:
        assert second is not first
        assert second.get_flow("flow", "flow-fp-1") == make_flow()
    finally:
        second.close()


def test_a_store_object_is_returned_as_is() -> None:
    s = MemoryStore()
    assert open_store(s) is s


@pytest.mark.parametrize("uri", ["memory://", "memory:"])
def test_memory_uri_opens_a_memory_store(uri: str) -> None:
    s = open_store(uri)
    assert isinstance(s, MemoryStore)
    assert s.list_runs() == []
    assert open_store(uri) is not s  # every one is private


@pytest.mark.parametrize("uri", [":memory:", "duckdb://"])
def test_memory_duckdb_uris_open_private_in_memory_databases(uri: str) -> None:
    s = open_store(uri)
    other = open_store(uri)
    try:
        assert isinstance(s, DuckDBStore)
        assert s.uri == ":memory:"
        s.create_run(make_run("r1"))
        assert other is not s
        assert other.list_runs() == []
    finally:
        s.close()
        other.close()


def test_the_default_location_comes_from_the_environment(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBFLOW_STORE", str(path))
    s = open_store()
    try:
        assert isinstance(s, DuckDBStore)
        assert s.uri == str(path.resolve())
    finally:
        s.close()


def test_trust_comes_from_the_argument_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert open_store("memory://", trust=False).trust is False
    monkeypatch.setenv("NBFLOW_TRUST", "0")
    assert open_store("memory://").trust is False
    monkeypatch.setenv("NBFLOW_TRUST", "yes")
    assert open_store("memory://").trust is True


def test_cache_hits_parse_only_the_outputs_looked_up(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run looks up one key per step among every key its steps ever had: the rows it
    does not look up are never parsed (that cost grew with every run of a flow)."""
    from nbflow.store.records import ValueRef

    flow = nf.Flow("sweep", store=store)

    @flow.step
    def square(x: int = 0) -> dict[str, int]:
        return {"x": x * x}

    for x in range(30):
        flow.run(x=x, progress=False)
    parsed: list[object] = []
    real = ValueRef.from_json

    def counting(data: object) -> ValueRef:
        parsed.append(data)
        return real(data)  # type: ignore[arg-type]

    fingerprint = store.executions(flow.runs()["run_id"].iloc[0])[0].fingerprint
    monkeypatch.setattr(ValueRef, "from_json", staticmethod(counting))
    hits = store.cache_hits("sweep", [fingerprint])
    assert len(hits) == 30 and parsed == []
    key = next(iter(hits))
    assert hits[key].output.inline is not None
    assert len(parsed) == 1
