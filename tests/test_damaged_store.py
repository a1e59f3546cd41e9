"""A store changed behind nbflow's back is reported as such: a CorruptStoreError that
names what is damaged (the file and its table, or the run and step whose output it is)
and what to do, never a raw ValueError, pickle or DuckDB error. A frame's table whose
rows were changed is found when it is loaded, not only by ``nbflow check``.

Each case damages a copy of one store file with a raw DuckDB connection, then reads it
the way a user would.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.errors import CorruptStoreError, SchemaVersionError, StoreError
from nbflow.store.duckdb.store import DuckDBStore


@dataclass(frozen=True)
class Stored:
    """A store file holding one run with one output of each codec."""

    path: Path
    run_id: str
    hashes: dict[str, str]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    path = tmp_path_factory.mktemp("damaged") / "whole.duckdb"
    with DuckDBStore(path) as store:
        store.compact_frame_bytes = 0  # the frame in a table of its own, as big ones are
        flow = nf.Flow("damage", store=store)

        @flow.step
        def frame():
            return pd.DataFrame({"x": range(1000), "s": ["a", "b"] * 500})

        @flow.step
        def array():
            return np.arange(10_000)

        @flow.step
        def model():
            return {frozenset({1, 2}), frozenset({3})}  # only pickle holds it

        @flow.step
        def big_json():
            return {"k": "v" * 5000}

        run = flow.run(progress=False)
        hashes = {s: run.ref(s).hash for s in ("frame", "array", "model", "big_json")}
    return Stored(path, run.id, hashes)


def damaged(stored: Stored, tmp_path: Path, *statements: str) -> Path:
    """A copy of the store with ``statements`` run on it by another program."""
    path = tmp_path / "damaged.duckdb"
    shutil.copy(stored.path, path)
    con = duckdb.connect(str(path))
    try:
        for statement in statements:
            con.execute(statement.format(**stored.hashes))
    finally:
        con.close()
    return path


# -- the file: its schema marker and tables ------------------------------------------------------


@pytest.mark.parametrize("version", ["abc", "3.5", "-1", "0", "", " 2x"])
def test_a_malformed_schema_version_is_a_damaged_store(
    stored: Stored, tmp_path: Path, version: str
) -> None:
    path = damaged(
        stored,
        tmp_path,
        f"UPDATE nbflow_meta SET value = '{version}' WHERE key = 'schema_version'",
    )
    with pytest.raises(CorruptStoreError) as caught:
        nf.open_store(path)
    message = str(caught.value)
    assert str(path) in message and f"its schema_version is {version!r}" in message
    assert "Restore the store from a backup" in message


def test_a_missing_schema_version_is_a_damaged_store(stored: Stored, tmp_path: Path) -> None:
    path = damaged(stored, tmp_path, "DELETE FROM nbflow_meta WHERE key = 'schema_version'")
    with pytest.raises(CorruptStoreError, match="does not say which schema it has"):
        nf.open_store(path)


def test_a_newer_schema_is_still_refused_as_newer(stored: Stored, tmp_path: Path) -> None:
    path = damaged(
        stored, tmp_path, "UPDATE nbflow_meta SET value = '12' WHERE key = 'schema_version'"
    )
    with pytest.raises(SchemaVersionError, match="newer nbflow"):
        nf.open_store(path)


@pytest.mark.parametrize(
    ("statement", "table"),
    [
        ("DROP TABLE event_log", "event_log"),
        ("DROP VIEW events", "events"),
        ("DROP TABLE blobs", "blobs"),
        ("DROP VIEW runs", "runs"),
        ("DROP TABLE execution_rows", "execution_rows"),
        ("DROP VIEW step_executions", "step_executions"),
        ("DROP VIEW pending_executions", "pending_executions"),
    ],
)
def test_a_missing_table_is_found_when_the_store_opens(
    stored: Stored, tmp_path: Path, statement: str, table: str
) -> None:
    path = damaged(stored, tmp_path, statement)
    for reader in (nf.open_store, nf.runs):
        with pytest.raises(CorruptStoreError) as caught:
            reader(path)
        assert f"its table {table} is missing" in str(caught.value)
        assert str(path) in str(caught.value)


# -- values: each one names its run and step -------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    statements: tuple[str, ...]
    step: str
    says: str


VALUE_DAMAGE = {
    "a truncated npy array": Damage(
        (
            "UPDATE blobs SET data = CAST(left(CAST(data AS VARCHAR), 60) AS BLOB) "
            "WHERE hash = '{array}'",
        ),
        "array",
        "its stored copy is damaged",
    ),
    "an array without bytes": Damage(
        ("UPDATE blobs SET data = NULL WHERE hash = '{array}'",), "array", "damaged"
    ),
    "a garbage pickle": Damage(
        ("UPDATE blobs SET data = 'not a pickle'::BLOB WHERE hash = '{model}'",),
        "model",
        "its pickled bytes are damaged",
    ),
    "a truncated pickle": Damage(
        ("UPDATE blobs SET data = '\\x80\\x05'::BLOB WHERE hash = '{model}'",),
        "model",
        "its pickled bytes are damaged",
    ),
    "invalid JSON": Damage(
        ("UPDATE blobs SET data = '{{not json'::BLOB WHERE hash = '{big_json}'",),
        "big_json",
        "JSONDecodeError",
    ),
    "a frame's meta overwritten": Damage(
        ("UPDATE blobs SET meta = '{{\"schema\": \"garbage\"}}' WHERE hash = '{frame}'",),
        "frame",
        "damaged",
    ),
    "a frame's meta not an object": Damage(
        ("UPDATE blobs SET meta = '[1, 2]' WHERE hash = '{frame}'",), "frame", "damaged"
    ),
    "a dropped value table": Damage(
        ("DROP TABLE nbflow_values.v_{frame}",), "frame", "does not exist"
    ),
    "an unknown codec": Damage(
        ("UPDATE blobs SET codec = 'zstd9' WHERE hash = '{array}'",), "array", "'zstd9'"
    ),
    "updated frame rows": Damage(
        ("UPDATE nbflow_values.v_{frame} SET x = x + 1 WHERE x < 3",),
        "frame",
        "its table has the 1000 rows written, but with other content",
    ),
    "updated frame rows that are alike": Damage(
        # (Pairs of equal rows changed alike: a digest that XORs row hashes misses them.)
        ("UPDATE nbflow_values.v_{frame} SET s = 'c' WHERE s = 'a' AND x < 4",),
        "frame",
        "with other content",
    ),
    "deleted frame rows": Damage(
        ("DELETE FROM nbflow_values.v_{frame} WHERE x >= 990",),
        "frame",
        "its table has 990 rows where 1000 were written",
    ),
    "added frame rows": Damage(
        ("INSERT INTO nbflow_values.v_{frame} SELECT * FROM nbflow_values.v_{frame} LIMIT 1",),
        "frame",
        "its table has 1001 rows where 1000 were written",
    ),
    "a dropped frame column": Damage(
        ("ALTER TABLE nbflow_values.v_{frame} DROP COLUMN s",), "frame", "damaged"
    ),
}


@pytest.mark.parametrize("case", sorted(VALUE_DAMAGE))
def test_a_damaged_value_names_its_run_and_step(stored: Stored, tmp_path: Path, case: str) -> None:
    damage = VALUE_DAMAGE[case]
    path = damaged(stored, tmp_path, *damage.statements)
    with DuckDBStore(path) as store:
        run = nf.get_run(stored.run_id, store)
        with pytest.raises(CorruptStoreError) as caught:
            run[damage.step]
        message = str(caught.value)
        assert f"the output of step {damage.step!r} in run {stored.run_id}" in message
        assert damage.says in message, message
        assert f"flow.run(force=[{damage.step!r}])" in message
        assert "`nbflow check`" in message
        # The run and its other outputs still read.
        assert run.status == "completed" and len(run.events) > 0
        assert len(run["big_json" if damage.step != "big_json" else "frame"]) > 0


def test_an_unknown_codec_in_an_execution_row_names_the_step(
    stored: Stored, tmp_path: Path
) -> None:
    path = damaged(
        stored,
        tmp_path,
        "UPDATE execution_rows SET output = json_object('codec', 'zstd9', 'hash', '{array}', "
        "'size', 1, 'type', 'x') WHERE step = 'array'",
    )
    with DuckDBStore(path) as store, pytest.raises(CorruptStoreError) as caught:
        nf.get_run(stored.run_id, store)["array"]
    assert "the execution row of step 'array'" in str(caught.value)
    assert "'zstd9'" in str(caught.value) and "Fix or delete that row" in str(caught.value)


@pytest.mark.parametrize(
    ("statement", "row"),
    [
        ("UPDATE event_log SET type = 'bogus' WHERE seq = 1", "event 1 of run"),
        ("UPDATE run_records SET params = '[1, 2]'", "the runs row of run"),
        ("UPDATE event_log SET payload = '[1]' WHERE seq = 2", "event 2 of run"),
    ],
)
def test_a_row_nbflow_never_writes_is_named(
    stored: Stored, tmp_path: Path, statement: str, row: str
) -> None:
    path = damaged(stored, tmp_path, statement)
    with DuckDBStore(path) as store, pytest.raises(CorruptStoreError) as caught:
        run = nf.get_run(stored.run_id, store)
        run.params, run.versions  # noqa: B018 - reading them is the point
    assert row in str(caught.value) and "holds what nbflow never writes" in str(caught.value)


def test_a_pickle_of_a_class_this_process_lacks_is_not_called_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A whole pickle whose class cannot be imported here: say what to import, not "damaged".
    (tmp_path / "fitted.py").write_text("class Model:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fitted  # type: ignore[import-not-found]

    with DuckDBStore(tmp_path / "s.duckdb") as store:
        flow = nf.Flow("classes", store=store)

        @flow.step
        def model():
            return fitted.Model()

        run = flow.run(progress=False)
        monkeypatch.delitem(sys.modules, "fitted")
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
        with pytest.raises(StoreError) as caught:
            run["model"]
    assert not isinstance(caught.value, CorruptStoreError)
    message = str(caught.value)
    assert "the output of step 'model'" in message and "fitted.Model" in message
    assert "cannot be unpickled in this process" in message and "No module named" in message


# -- copies are checked too ----------------------------------------------------------------------


def test_a_frame_copied_to_another_store_is_checked_there_too(
    stored: Stored, tmp_path: Path
) -> None:
    target = tmp_path / "copy.duckdb"
    with DuckDBStore(target) as into:
        into.compact_frame_bytes = 0  # the frame in a table of its own, as big ones are
        report = nf.copy_runs(stored.path, into)
    assert report.runs
    con = duckdb.connect(str(target))
    con.execute(f"UPDATE nbflow_values.v_{stored.hashes['frame']} SET x = -1 WHERE x = 7")
    con.close()
    with DuckDBStore(target) as store, pytest.raises(CorruptStoreError, match="other content"):
        nf.get_run(stored.run_id, store)["frame"]


def test_an_unchanged_store_reads_and_checks_clean(stored: Stored, tmp_path: Path) -> None:
    path = damaged(stored, tmp_path)  # a copy, undamaged
    with DuckDBStore(path) as store:
        run = nf.get_run(stored.run_id, store)
        assert run["frame"].shape == (1000, 2)
        assert store.check() == []


# -- the command line says the same, in one line -------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "command", "says"),
    [
        (
            ("UPDATE nbflow_meta SET value = 'abc' WHERE key = 'schema_version'",),
            "runs",
            "schema_version",
        ),
        (("DROP VIEW events",), "runs", "its table events is missing"),
        (("UPDATE nbflow_values.v_{frame} SET x = 0",), "export", "with other content"),
        (("UPDATE event_log SET type = 'bogus' WHERE seq = 1",), "check", "never writes"),
    ],
)
def test_the_command_line_names_the_damage_in_one_line(
    stored: Stored, tmp_path: Path, statements: tuple[str, ...], command: str, says: str
) -> None:
    from test_cli import invoke, one_line_error

    path = damaged(stored, tmp_path, *statements)
    args = [command] + ([stored.run_id] if command in ("export", "events") else [])
    args += [str(tmp_path / "exported")] if command == "export" else []
    result = invoke(*args, "--store", str(path))
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert says in line and "Traceback" not in result.stderr


def test_a_frame_with_a_column_named_like_the_row_is_checked_whole(tmp_path: Path) -> None:
    # The digest hashes whole rows, whatever the columns are called.
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as store:
        store.compact_frame_bytes = 0  # the frame in a table of its own, as big ones are
        flow = nf.Flow("columns", store=store)

        @flow.step
        def frame():
            return pd.DataFrame({"t": [1, 2, 3], "nbflow_row": [4, 5, 6], "v": [7, 8, 9]})

        run = flow.run(progress=False)
        table = run.table_name("frame")
    con = duckdb.connect(str(path))
    con.execute(f"UPDATE {table} SET v = 0 WHERE v = 8")
    con.close()
    with DuckDBStore(path) as store, pytest.raises(CorruptStoreError, match="other content"):
        nf.get_run(run.id, store)["frame"]
