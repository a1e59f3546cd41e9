"""The integrity check: damage to a DuckDB file (and to the memory store's dicts) is found,
what can be repaired is, real flow runs check clean, and ``nbflow check`` reports it all.

The backend-generic contract is in ``nbflow.testing.conformance_check``; here the store
is damaged the way only raw access can: SQL on the file through a plain DuckDB connection.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from test_values import ARRAYS, FRAMES, SERIES, SETTINGS, frames

import nbflow as nf
from nbflow.cli import main
from nbflow.errors import CorruptStoreError
from nbflow.store.check import ProblemKind
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.memory.store import MemoryStore
from nbflow.store.records import Codec, EventType, NewEvent, RunStatus
from nbflow.testing import populate
from nbflow.testing.conformance_check import run_with_outputs
from nbflow.values import encode
from nbflow.values.verify import stored_hash

# -- a damaged DuckDB file ------------------------------------------------------------------

VALUES = {
    "frame": pd.DataFrame({"x": [1, 2, 3], "c": pd.Categorical(["a", "b", "a"])}),
    "array": np.arange(6, dtype=np.int64),
    "pickle": set(range(100)),  # a set is not JSON: pickled
}
# Values big enough for tables of their own: a frame's, and one of 8-byte words (400 KB).
TABLE_VALUES = {
    "table": pd.DataFrame({"x": np.arange(30_000), "y": np.arange(30_000) * 0.5}),
    "words": np.linspace(0.0, 1.0, 50_001),
}


def build(path: Path) -> Path:
    """A closed store file: the populate() history plus a run with blob outputs."""
    with DuckDBStore(path) as store:
        populate(store)
        run_with_outputs(store, VALUES, run_id="r-values")
        run_with_outputs(store, TABLE_VALUES, run_id="r-tables")
    return path


def corrupt(path: Path, *statements: str) -> None:
    con = duckdb.connect(str(path))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def _blob(codec: str) -> str:
    return f"(SELECT hash FROM blobs WHERE codec = '{codec}')"


@dataclasses.dataclass(frozen=True)
class Damage:
    statements: tuple[str, ...]
    kinds: set[ProblemKind]
    repairable: bool
    verify_only: bool = False  # found only when values are read


K = ProblemKind
DAMAGE: dict[str, Damage] = {
    "event deleted mid-log": Damage(
        ("DELETE FROM events WHERE run_id = 'r-done' AND seq = 3",), {K.EVENT_GAP}, False
    ),
    "last event deleted": Damage(
        (
            "DELETE FROM events WHERE run_id = 'r-done' AND seq = (SELECT max(seq) FROM events "
            "WHERE run_id = 'r-done')",
        ),
        {K.RUN_ROW_MISMATCH, K.RUN_WITHOUT_LEASE},  # it reads running now, held by nobody
        True,
    ),
    "event changed type": Damage(
        ("UPDATE events SET type = 'step_completed' WHERE run_id = 'r-done' AND seq = 1",),
        {K.EVENT_INVALID},
        False,
    ),
    "event payload unreadable": Damage(
        (
            'UPDATE events SET payload = \'{"output": {"codec": "nope"}}\' '
            "WHERE run_id = 'r-done' AND type = 'step_output_recorded'",
        ),
        {K.EVENT_INVALID},
        False,
    ),
    "run status changed": Damage(
        ("UPDATE run_records SET status = 'running' WHERE run_id = 'r-values'",),
        {K.RUN_ROW_MISMATCH},
        True,
    ),
    "run start changed": Damage(
        (
            "UPDATE run_records SET started_at = started_at - INTERVAL 1 HOUR "
            "WHERE run_id = 'r-failed'",
        ),
        {K.RUN_ROW_MISMATCH},
        True,
    ),
    "run error cleared": Damage(
        ("UPDATE run_records SET error = NULL, finished_at = NULL WHERE run_id = 'r-failed'",),
        {K.RUN_ROW_MISMATCH},
        True,
    ),
    "execution row deleted": Damage(
        ("DELETE FROM step_executions WHERE run_id = 'r-retried' AND attempt = 1",),
        {K.EXECUTION_ROW_MISSING},
        True,
    ),
    "execution row added": Damage(
        (
            "INSERT INTO step_executions SELECT * REPLACE (9 AS attempt) FROM step_executions "
            "WHERE run_id = 'r-done' AND step = 'load'",
        ),
        {K.EXECUTION_ROW_EXTRA},
        True,
    ),
    "row for a running attempt": Damage(
        (
            "INSERT INTO step_executions SELECT * REPLACE ('r-fork' AS run_id, 'running' AS "
            "status, (SELECT step FROM events WHERE run_id = 'r-fork' AND type = 'step_started') "
            "AS step) FROM step_executions WHERE run_id = 'r-done' AND step = 'load'",
        ),
        {K.EXECUTION_ROW_EXTRA},
        True,
    ),
    "execution row changed": Damage(
        (
            "UPDATE step_executions SET error = 'made up', duration_ms = 1 "
            "WHERE run_id = 'r-cached' AND step = 'clean'",
        ),
        {K.EXECUTION_ROW_MISMATCH},
        True,
    ),
    "runs row deleted": Damage(
        ("DELETE FROM run_records WHERE run_id = 'r-done'",),
        {K.EVENTS_WITHOUT_RUN, K.EXECUTION_ROW_EXTRA},
        False,
    ),
    "run and events deleted, rows left": Damage(
        (
            "DELETE FROM run_records WHERE run_id = 'r-done'",
            "DELETE FROM events WHERE run_id = 'r-done'",
        ),
        {K.EXECUTION_ROW_EXTRA},
        True,
    ),
    "flow deleted": Damage(
        ("DELETE FROM flows WHERE name = 'other'",), {K.RUN_WITHOUT_FLOW}, False
    ),
    "blob row deleted": Damage(
        (f"DELETE FROM blobs WHERE hash = {_blob('pickle')}",), {K.BLOB_MISSING}, False
    ),
    "blob bytes altered": Damage(
        ("UPDATE blobs SET data = 'xx'::BLOB || data[3:] WHERE codec = 'pickle'",),
        {K.BLOB_HASH_MISMATCH},
        False,
        verify_only=True,
    ),
    "blob bytes cut": Damage(
        ("UPDATE blobs SET data = data[1:10] WHERE codec = 'npy'",), {K.BLOB_SIZE_MISMATCH}, False
    ),
    "blob bytes lost": Damage(
        ("UPDATE blobs SET data = NULL WHERE codec = 'npy'",), {K.BLOB_UNREADABLE}, False
    ),
    "npy header garbled": Damage(
        ("UPDATE blobs SET data = 'garbage!'::BLOB || data[9:] WHERE codec = 'npy'",),
        {K.BLOB_UNREADABLE},
        False,
        verify_only=True,
    ),
    "blob size changed": Damage(
        ("UPDATE blobs SET size = size + 1 WHERE codec = 'pickle'",), {K.BLOB_SIZE_MISMATCH}, False
    ),
    "blob codec changed": Damage(
        ("UPDATE blobs SET codec = 'json_blob' WHERE codec = 'pickle'",),
        {K.BLOB_CODEC_MISMATCH},
        False,
    ),
    "blob codec unknown": Damage(
        ("UPDATE blobs SET codec = 'nope' WHERE codec = 'npy'",), {K.BLOB_CODEC_MISMATCH}, False
    ),
    "small frame bytes lost": Damage(
        ("UPDATE blobs SET data = NULL WHERE codec = 'arrow' AND table_name IS NULL",),
        {K.VALUE_TABLE_MISSING},
        False,
    ),
    "small frame bytes garbled": Damage(
        (
            "UPDATE blobs SET data = data[1:40] || 'garbage'::BLOB "
            "WHERE codec = 'arrow' AND table_name IS NULL",
        ),
        {K.BLOB_UNREADABLE},
        False,
        verify_only=True,
    ),
    "words table dropped": Damage(("DROP TABLE {words_table}",), {K.BLOB_UNREADABLE}, False),
    "words row deleted": Damage(
        ("DELETE FROM {words_table} WHERE rowid = 7",), {K.BLOB_SIZE_MISMATCH}, False
    ),
    "words table edited": Damage(
        ("UPDATE {words_table} SET w = w + 1 WHERE rowid = 1000",),
        {K.BLOB_HASH_MISMATCH},
        False,
        verify_only=True,
    ),
    "value table dropped": Damage(("DROP TABLE {frame_table}",), {K.VALUE_TABLE_MISSING}, False),
    "value table edited": Damage(
        ("UPDATE {frame_table} SET x = 99 WHERE x = 2",),
        {K.BLOB_HASH_MISMATCH},
        False,
        verify_only=True,
    ),
}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return build(tmp_path / "store.duckdb")


def _value_table(path: Path, codec: str) -> str:
    """The table of the value stored as ``codec`` that has one."""
    con = duckdb.connect(str(path))
    try:
        (name,) = con.execute(
            "SELECT table_name FROM blobs WHERE codec = ? AND table_name IS NOT NULL", [codec]
        ).fetchone()
    finally:
        con.close()
    return str(name)


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_to_a_duckdb_file_is_found(path: Path, case: str) -> None:
    damage = DAMAGE[case]
    tables = {
        "{frame_table}": _value_table(path, "arrow"),
        "{words_table}": _value_table(path, "npy"),
    }
    statements = list(damage.statements)
    for placeholder, table in tables.items():
        statements = [s.replace(placeholder, table) for s in statements]
    corrupt(path, *statements)
    with DuckDBStore(path) as store:
        events = store.read_events()
        problems = store.check()
        assert {p.kind for p in problems} == damage.kinds, problems
        assert all(p.repairable is damage.repairable for p in problems)
        assert all("\n" not in str(p) for p in problems)
        without_values = store.check(verify_values=False)
        assert without_values == ([] if damage.verify_only else problems)

        repaired = store.check(repair=True)
        assert [p.repaired for p in repaired] == [damage.repairable] * len(problems)
        # A repair never touches an event; it adds one only to record as interrupted a
        # run left running that nobody holds.
        after = store.read_events()
        assert [e for e in after if e in events] == events
        added = [e.type for e in after if e not in events]
        assert added == ([EventType.RUN_INTERRUPTED] if K.RUN_WITHOUT_LEASE in damage.kinds else [])
        assert store.check() == ([] if damage.repairable else problems)


@pytest.mark.parametrize(
    ("statement", "what"),
    [
        ("UPDATE events SET type = 'bogus' WHERE run_id = 'r-done' AND seq = 2", "'bogus'"),
        ("UPDATE run_records SET status = 'weird' WHERE run_id = 'r-done'", "'weird'"),
    ],
)
def test_a_row_nbflow_cannot_read_stops_the_check_with_a_clear_error(
    path: Path, statement: str, what: str
) -> None:
    corrupt(path, statement)
    with DuckDBStore(path) as store, pytest.raises(CorruptStoreError) as info:
        store.check()
    message = str(info.value)
    assert what in message and "Fix or delete that row with SQL" in message
    result = invoke("check", "--store", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith("nbflow: error: ") and what in result.stderr


def test_a_repaired_run_reads_as_its_events_say(path: Path) -> None:
    corrupt(
        path,
        "UPDATE run_records SET status = 'failed', error = 'made up' WHERE run_id = 'r-values'",
        "DELETE FROM step_executions WHERE run_id = 'r-values' AND step = 'frame'",
    )
    with DuckDBStore(path) as store:
        assert store.get_run("r-values").status is RunStatus.FAILED
        assert len(store.check(repair=True)) == 2
        run = store.get_run("r-values")
        assert (run.status, run.error) == (RunStatus.COMPLETED, None)
        assert [x.step for x in store.executions("r-values")] == list(VALUES)
        pd.testing.assert_frame_equal(
            store.load_value(store.executions("r-values")[0].output), VALUES["frame"]
        )


def test_a_run_stopped_mid_step_in_a_file_checks_clean(tmp_path: Path) -> None:
    """A run left running with a step started and its output stored, closed as is."""
    path = tmp_path / "store.duckdb"
    with DuckDBStore(path) as store:
        run_with_outputs(store, VALUES, finish=False, run_id="r-mid")
        ref = store.put_value(encode(pd.DataFrame({"y": [1.5, 2.5]}), step="extra"))
        started = NewEvent(EventType.STEP_STARTED, "extra", 1, {"fingerprint": "extra-fp"})
        output = NewEvent(EventType.STEP_OUTPUT_RECORDED, "extra", 1, {"output": ref.to_json()})
        store.append("r-mid", store.get_run("r-mid").version, [started, output])
        events = store.read_events("r-mid")
    with DuckDBStore(path) as store:
        assert store.read_events("r-mid") == events
        assert store.check() == []


def test_a_process_killed_mid_step_leaves_a_sound_store(tmp_path: Path) -> None:
    """A process that dies inside a step (no close, so a .wal file may be left) leaves a
    store that opens and checks clean, its run still running (interrupted)."""
    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            import numpy as np, pandas as pd
            import nbflow as nf

            flow = nf.Flow("killed", store=sys.argv[1])

            @flow.step
            def raw():
                return pd.DataFrame({"x": np.arange(1000)})

            @flow.step
            def dies(raw):
                os._exit(9)  # as a SIGKILL would: nothing flushed, nothing closed

            flow.run(progress=False, durability="sync")  # (raw is committed before dies)
            """
        )
    )
    path = tmp_path / "store.duckdb"
    done = subprocess.run([sys.executable, str(script), str(path)], timeout=120)
    assert done.returncode == 9
    with DuckDBStore(path) as store:
        assert store.check() == []
        (run,) = store._list_runs()
        assert run.status is RunStatus.RUNNING
        assert [x.step for x in store._execution_rows()[run.run_id]] == ["raw"]


# -- the memory store, poked ----------------------------------------------------------------


def _poke_status(store: MemoryStore) -> None:
    run = store._runs["r-values"]
    store._runs["r-values"] = dataclasses.replace(run, status=RunStatus.CANCELLED)


def _poke_rows(store: MemoryStore) -> None:
    del store._executions["r-values"][("array", 1)]


def _poke_event(store: MemoryStore) -> None:
    del store._events["r-done"][2]


def _poke_bytes(store: MemoryStore) -> None:
    (hash,) = [h for h, b in store._blobs.items() if b[0].codec is Codec.PICKLE]
    record, table, data, meta = store._blobs[hash]
    assert data is not None
    store._blobs[hash] = (record, table, b"xx" + data[2:], meta)


def _poke_table(store: MemoryStore) -> None:
    (hash,) = [h for h, b in store._blobs.items() if b[0].codec is Codec.ARROW]
    record, _, data, meta = store._blobs[hash]
    store._blobs[hash] = (record, None, data, meta)


POKES: dict[str, tuple[Callable[[MemoryStore], None], ProblemKind, bool]] = {
    "run status": (_poke_status, K.RUN_ROW_MISMATCH, True),
    "execution row": (_poke_rows, K.EXECUTION_ROW_MISSING, True),
    "event": (_poke_event, K.EVENT_GAP, False),
    "blob bytes": (_poke_bytes, K.BLOB_HASH_MISMATCH, False),
    "value table": (_poke_table, K.VALUE_TABLE_MISSING, False),
}


@pytest.mark.parametrize("case", list(POKES))
def test_damage_to_the_memory_store_is_found(case: str) -> None:
    poke, kind, repairable = POKES[case]
    store = MemoryStore()
    populate(store)
    run_with_outputs(store, VALUES, run_id="r-values")
    poke(store)
    (problem,) = store.check()
    assert (problem.kind, problem.repairable) == (kind, repairable)
    assert [p.repaired for p in store.check(repair=True)] == [repairable]
    assert store.check() == ([] if repairable else [problem])


# -- real flow runs, on every backend -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Summary:
    """A user-defined type: stored as a pickle."""

    total: float
    rows: int


def test_real_runs_check_clean(store: nf.Store) -> None:
    """Forks, cached steps, retries, failures with skipped steps, DataFrames, arrays and
    pickles: a store of real runs is sound, and a repair changes nothing."""
    flow = nf.Flow("real", store=store)
    tries = {"flaky": 0}

    @flow.step
    def raw(n: int = 4):
        return pd.DataFrame(
            {
                "x": np.arange(n),
                "kind": pd.Categorical(["a", "b"] * (n // 2)),
                "at": pd.date_range("2024-01-01", periods=n, tz="UTC"),
            }
        )

    @flow.step
    def scaled(raw, factor: float = 1.5):
        return raw["x"].to_numpy() * factor

    @flow.step
    def summary(scaled, raw):
        return Summary(float(scaled.sum()), len(raw))

    @flow.step(retries=1, retry_delay=0.01)
    def flaky(raw):
        tries["flaky"] += 1
        if tries["flaky"] == 1:
            raise RuntimeError("the first try fails")
        return {"rows": len(raw)}

    @flow.step
    def fragile(summary, fail: bool = False):
        if fail:
            raise ValueError("asked to fail")
        return summary.total

    @flow.step
    def report(fragile, flaky):
        return f"{fragile} over {flaky['rows']} rows"

    first = flow.run(progress=False)
    again = flow.run(progress=False)  # every step cached
    failed = flow.run(fail=True, raise_on_error=False, progress=False)
    fork = first.fork(from_step="scaled", factor=3.0)
    assert [r.status for r in (first, again, failed, fork)] == [
        "completed",
        "completed",
        "failed",
        "completed",
    ]
    assert store.check() == []
    assert store.check(verify_values=False) == []
    events = store.read_events()
    assert store.check(repair=True) == []
    assert store.read_events() == events


# -- hashes recomputed from what is stored --------------------------------------------------


def _stored_forms(value: Any, con: duckdb.DuckDBPyConnection) -> list[str]:
    """The hash of ``value`` recomputed from each way a store keeps it."""
    encoded = encode(value, step="s")
    meta = json.loads(json.dumps(encoded.meta))  # as a store's JSON column gives it back
    if encoded.ref.codec is not Codec.ARROW:
        return [stored_hash(encoded.ref.codec, data=encoded.data, meta=meta)]
    con.register("stored", encoded.table)
    try:
        table = con.sql("SELECT * FROM stored").to_arrow_table()  # the trip through DuckDB
    finally:
        con.unregister("stored")
    return [
        stored_hash(Codec.ARROW, table=table, meta=meta),
        stored_hash(Codec.ARROW, table=encoded.table, meta=meta),  # the memory store's
    ]


CORPUS = {
    **{f"frame {k}": v for k, (v, _) in FRAMES.items()},
    **{f"series {k}": v for k, (v, _) in SERIES.items()},
    **{f"array {k}": v for k, v in ARRAYS.items()},
    "scalar": np.float32(np.nan),
    "json blob": {"é": list(range(3000)), "a": None},
    "pickle": Summary(1.5, 2),
}


@pytest.fixture(scope="module")
def con() -> Any:
    connection = duckdb.connect()
    yield connection
    connection.close()


@pytest.mark.parametrize("case", list(CORPUS))
def test_stored_values_hash_to_their_names(case: str, con: duckdb.DuckDBPyConnection) -> None:
    value = CORPUS[case]
    variants = [value]
    if isinstance(value, pd.DataFrame | pd.Series):
        variants += [value.iloc[:0], value.iloc[1:]]
    for variant in variants:
        encoded = encode(variant, step="s")
        if encoded.ref.is_inline:
            continue
        assert set(_stored_forms(variant, con)) == {encoded.ref.hash}


@settings(SETTINGS, max_examples=40)
@given(frame=frames())
def test_random_frames_hash_to_their_names(frame: pd.DataFrame) -> None:
    connection = duckdb.connect()
    try:
        assert set(_stored_forms(frame, connection)) == {encode(frame, step="s").ref.hash}
    finally:
        connection.close()


def test_a_value_without_its_stored_form_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="needs its stored table"):
        stored_hash(Codec.ARROW, meta={"schema": ""})
    with pytest.raises(ValueError, match="needs its stored bytes"):
        stored_hash(Codec.PICKLE)
    with pytest.raises(ValueError, match="no schema"):
        stored_hash(Codec.ARROW, table=encode(VALUES["frame"], step="s").table, meta={})
    with pytest.raises(ValueError, match="no stored form"):
        stored_hash(Codec.JSON, data=b"1")


def test_a_pickle_is_verified_without_unpickling(path: Path, tmp_path: Path) -> None:
    """A pickle that would run a command when loaded is verified as bytes, never loaded."""
    marker = tmp_path / "ran"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    con = duckdb.connect(str(path))
    try:
        (size,) = con.execute("SELECT size FROM blobs WHERE codec = 'pickle'").fetchone()
        assert size > len(payload)
        evil = payload + b" " * (size - len(payload))  # pickle ignores what follows STOP
        con.execute("UPDATE blobs SET data = ? WHERE codec = 'pickle'", [evil])
    finally:
        con.close()
    with DuckDBStore(path) as store:
        (problem,) = store.check()
        assert problem.kind is K.BLOB_HASH_MISMATCH and problem.step == "pickle"
        assert not marker.exists()
        (row,) = [x for x in store.executions("r-values") if x.step == "pickle"]
        assert row.output is not None
        store.load_value(row.output)  # what the check did not do: this runs the command
    assert marker.exists()


# -- nbflow check ---------------------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={"NBFLOW_STORE": None, **(env or {})})


def test_cli_a_sound_store(path: Path) -> None:
    result = invoke("check", "--store", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"store {path}: no problems found"]


def test_cli_reports_one_problem_per_line_and_fails(path: Path) -> None:
    corrupt(
        path,
        "UPDATE run_records SET status = 'running' WHERE run_id = 'r-values'",
        f"DELETE FROM blobs WHERE hash = {_blob('pickle')}",
    )
    result = invoke("check", "--store", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["run_row_mismatch", "blob_missing"]
    assert lines[-1] == (f"store {path}: 2 problem(s), 2 remain (1 fixed by nbflow check --repair)")
    assert result.stderr == ""


def test_cli_repair(path: Path) -> None:
    corrupt(path, "DELETE FROM step_executions WHERE run_id = 'r-values'")
    result = invoke("check", "--store", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].endswith("3 remain (nbflow check --repair fixes them)")
    repaired = invoke("check", "--repair", "--store", str(path))
    assert repaired.exit_code == 0, repaired.output
    lines = repaired.stdout.splitlines()
    assert all(line.endswith("[repaired]") for line in lines[:-1]) and len(lines) == 4
    assert lines[-1] == f"store {path}: 3 problem(s), 3 repaired"
    assert invoke("check", "--store", str(path)).exit_code == 0


def test_cli_repair_leaves_what_it_cannot_fix(path: Path) -> None:
    corrupt(
        path,
        "DELETE FROM step_executions WHERE run_id = 'r-values' AND step = 'array'",
        "UPDATE blobs SET data = 'xx'::BLOB || data[3:] WHERE codec = 'pickle'",
    )
    result = invoke("check", "--repair", "--store", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == f"store {path}: 2 problem(s), 1 repaired, 1 remain"


def test_cli_no_verify_values_skips_reading_them(path: Path) -> None:
    corrupt(path, "UPDATE blobs SET data = 'xx'::BLOB || data[3:] WHERE codec = 'pickle'")
    assert invoke("check", "--store", str(path)).exit_code == 1
    assert invoke("check", "--no-verify-values", "--store", str(path)).exit_code == 0


def test_cli_json(path: Path) -> None:
    corrupt(path, "UPDATE run_records SET error = 'made up' WHERE run_id = 'r-failed'")
    result = invoke("check", "--format", "json", "--store", str(path))
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert (document["store"], document["sound"]) == (str(path), False)
    (problem,) = document["problems"]
    assert problem["kind"] == "run_row_mismatch" and problem["run_id"] == "r-failed"
    assert problem["repairable"] is True and problem["repaired"] is False
    assert "error: 'made up' in the row" in problem["message"]
    clean = json.loads(invoke("check", "--format", "json", "--repair", "--store", str(path)).stdout)
    assert clean["sound"] is True and clean["problems"][0]["repaired"] is True


def test_cli_finds_the_store_from_the_environment_or_the_folder(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("check", env={"NBFLOW_STORE": str(path)}).exit_code == 0
    folder = tmp_path / "project"
    folder.mkdir()
    os.replace(path, folder / "nbflow.duckdb")
    monkeypatch.chdir(folder)
    result = invoke("check")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"store {folder / 'nbflow.duckdb'}: no problems found\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: folder / "missing.duckdb", "no nbflow store at"),
        (lambda folder: _write(folder / "notes.txt", "hello"), "is not a DuckDB file"),
    ],
)
def test_cli_a_store_that_cannot_be_checked_is_a_usage_error(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    result = invoke("check", "--store", str(make(tmp_path)))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbflow: error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_cli_bad_usage_is_exit_2(path: Path) -> None:
    result = invoke("check", "--format", "csv", "--store", str(path))
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.stderr


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
