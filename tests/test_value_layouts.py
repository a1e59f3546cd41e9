"""How values are laid out: bytes kept in chunks until stored, the DuckDB store's layouts
(large bytes as a table of words, small DataFrames in their blob row) and what they cost
on disk; the content hashes stay those of the joined bytes."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_values import ARRAYS, SETTINGS

import nbflow as nf
from nbflow.errors import CorruptStoreError
from nbflow.store.duckdb import blobs as duckdb_blobs
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.memory.store import MemoryStore
from nbflow.store.records import Codec
from nbflow.values import EncodedValue, decode, encode
from nbflow.values.hashing import hash_bytes
from nbflow.values.npy import npy_chunks
from nbflow.values.pickling import canonical_dumps
from nbflow.values.streams import ipc_pieces, pieces


def _npy(array: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


# -- chunks: the same bytes, the same hashes --------------------------------------------------


@pytest.mark.parametrize("case", list(ARRAYS))
def test_an_arrays_chunks_are_what_np_save_writes(case: str) -> None:
    array = ARRAYS[case]
    encoded = encode(array, step="s")
    assert encoded.data == _npy(array)
    assert encoded.nbytes == encoded.ref.size == len(_npy(array))


@SETTINGS
@given(
    array=hnp.arrays(
        st.sampled_from(["<i8", ">f4", "?", "<U3", "S2", "<M8[s]", "<c16"]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
    ),
    order=st.sampled_from(["C", "F", "strided"]),
)
def test_npy_chunks_match_np_save_for_any_array(array: np.ndarray, order: str) -> None:
    if order == "F":
        array = np.asfortranarray(array)
    elif order == "strided" and array.ndim:
        array = array[::2]
    chunks = npy_chunks(array)
    assert chunks is not None
    assert b"".join(chunks) == _npy(array)


def test_a_contiguous_array_is_encoded_without_a_copy() -> None:
    array = np.arange(100_000, dtype=np.float64)
    (_header, body) = encode(array, step="s").chunks
    assert np.shares_memory(np.frombuffer(body, dtype=np.uint8), array)


@pytest.mark.parametrize(
    "value",
    [
        b"x" * 300_000,
        bytearray(b"ab" * 70_000),
        {"w": np.arange(50_000), "s": "x" * 70_000},
        {1, 2},
    ],
    ids=["bytes", "bytearray", "dict of an array", "set"],
)
def test_a_pickle_is_cloudpickles_bytes_under_the_same_hash(value: Any) -> None:
    """Chunked, the pickle is what pickling in one go gives: cloudpickle's bytes (but
    for the elements of a set, written in a canonical order)."""
    encoded = encode(value, step="s")
    expected = canonical_dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if not isinstance(value, set):
        assert expected == cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    assert encoded.ref.codec is Codec.PICKLE
    assert b"".join(encoded.chunks) == expected
    assert encoded.ref.hash == hash_bytes("pickle", expected)
    assert encoded.ref.size == len(expected)


def test_a_big_bytes_output_is_a_chunk_of_its_own() -> None:
    value = b"y" * 1_000_000
    assert any(chunk is value for chunk in encode(value, step="s").chunks)


def test_an_encoded_value_pickles_with_its_bytes_joined() -> None:
    # (a process executor sends the encoded value back to the driver)
    encoded = encode(np.arange(1000), step="s")
    again = pickle.loads(pickle.dumps(encoded))
    assert again == encoded
    assert again.data == encoded.data
    with pytest.raises(AttributeError):
        encoded.meta = {}  # type: ignore[misc]


def test_an_array_decoded_from_a_bytearray_takes_over_its_memory() -> None:
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    encoded = encode(array, step="s")
    buffer = bytearray(encoded.data or b"")
    back = decode(encoded.ref, data=buffer, meta=encoded.meta)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable and back.flags.f_contiguous
    assert np.shares_memory(back, np.frombuffer(buffer, dtype=np.uint8))
    copied = decode(encoded.ref, data=bytes(buffer), meta=encoded.meta)  # bytes: a copy
    assert copied.flags.writeable


def test_pieces_and_ipc_pieces_cut_the_stream_without_changing_it() -> None:
    chunks = [b"abc", memoryview(bytes(range(256)) * 9), b"", bytearray(b"xy" * 50)]
    cut = list(pieces(chunks, 100))
    assert all(len(p) == 100 for p in cut[:-1]) and 0 < len(cut[-1]) <= 100
    assert b"".join(cut) == b"".join(bytes(c) for c in chunks)
    import pyarrow as pa

    table = pa.table({"a": np.arange(50_000), "s": [str(i) for i in range(50_000)]})
    size, stream = ipc_pieces(table, 64 * 1024)
    data = b"".join(stream)
    assert len(data) == size
    assert pa.ipc.open_stream(data).read_all().equals(table)


def test_the_memory_store_keeps_bytes_of_its_own(tmp_path: Path) -> None:
    array = np.arange(100_000, dtype=np.int64)
    store = MemoryStore()
    ref = store.put_value(encode(array, step="s"))
    array[:] = -1  # the step's array changes after it was stored
    np.testing.assert_array_equal(store.load_value(ref), np.arange(100_000))
    first = store.load_value(ref)
    first[:] = 7  # a loaded array is the caller's own
    np.testing.assert_array_equal(store.load_value(ref), np.arange(100_000))


# -- the DuckDB store's layouts ---------------------------------------------------------------


@pytest.fixture
def duckdb_store(tmp_path: Path) -> Any:
    s = DuckDBStore(tmp_path / "store.duckdb")
    yield s
    s.close()


def _value_tables(store: DuckDBStore) -> set[str]:
    rows = store.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'nbflow_values'")
    return set(rows["table_name"])


@pytest.mark.parametrize(
    "nbytes",
    [
        duckdb_blobs.WORDS_BYTES - 100,
        duckdb_blobs.WORDS_BYTES,
        duckdb_blobs.WORDS_BYTES + 3,
        3_000_001,
    ],
)
def test_bytes_of_any_length_come_back_exactly(duckdb_store: DuckDBStore, nbytes: int) -> None:
    value = np.random.default_rng(nbytes).bytes(nbytes)
    ref = duckdb_store.put_value(encode(value, step="s"))
    large = ref.size >= duckdb_blobs.WORDS_BYTES
    assert _value_tables(duckdb_store) == ({f"v_{ref.hash}"} if large else set())
    assert duckdb_store.load_value(ref) == value
    assert duckdb_store.read_encoded(ref).data == cloudpickle.dumps(value)
    assert duckdb_store.check() == []


def test_a_large_array_is_a_table_of_words_until_gc_drops_it(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    array = np.asfortranarray(np.random.default_rng(1).random((300, 400)))
    flow = nf.Flow("words", store=path)

    @flow.step
    def big() -> np.ndarray:
        return array

    run = flow.run(progress=False)
    store = flow.store
    assert isinstance(store, DuckDBStore)
    ref = run.ref("big")
    assert _value_tables(store) == {f"v_{ref.hash}"}
    assert store.table_name(ref) is None  # bytes, not a DataFrame to query
    back = run["big"]
    np.testing.assert_array_equal(back, array)
    assert back.flags.f_contiguous and back.flags.writeable
    assert store.check() == []
    store.gc(keep_last=0)
    assert _value_tables(store) == set()
    store.close()


def test_a_small_frame_costs_kilobytes_on_disk_not_a_block(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckDBStore(path)
    store._con.execute("CHECKPOINT")
    before = path.stat().st_size
    rng = np.random.default_rng(0)
    for i in range(200):
        frame = pd.DataFrame(
            {
                "id": np.arange(100) + i,
                "x": rng.random(100),
                "label": [f"k{j % 7}" for j in range(100)],
            }
        )
        store.put_value(encode(frame, step="s"))
    store.close()  # checkpointed
    per_frame = (path.stat().st_size - before) / 200
    assert per_frame <= 32 * 1024  # a table of its own took a 256 KB block
    with DuckDBStore(path) as again:
        assert _value_tables(again) == set()


def test_a_small_frame_reads_back_exactly_and_in_sql(duckdb_store: DuckDBStore) -> None:
    frame = pd.DataFrame(
        {
            "when": pd.date_range("2024-01-01", periods=3, tz="Europe/Paris"),
            "kind": pd.Categorical(["b", "a", "b"], categories=["b", "a", "z"], ordered=True),
            "n": pd.array([1, None, 3], dtype="Int64"),
        },
        index=pd.Index(["x", "y", "z"], name="key"),
    )
    ref = duckdb_store.put_value(encode(frame, step="s"))
    pd.testing.assert_frame_equal(duckdb_store.load_value(ref), frame)
    rows = duckdb_store.sql(f"SELECT key, kind, n FROM {duckdb_store.table_name(ref)} ORDER BY key")
    assert list(rows["kind"]) == ["b", "a", "b"]
    assert rows["n"].isna().tolist() == [False, True, False]


def test_a_damaged_small_frame_in_a_query_is_a_corrupt_store(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as store:
        ref = store.put_value(encode(pd.DataFrame({"a": [1, 2]}), step="s"))
        name = store.table_name(ref)
    con = duckdb.connect(str(path))
    con.execute("UPDATE blobs SET data = 'not arrow'::BLOB WHERE hash = ?", [ref.hash])
    con.close()
    with DuckDBStore(path) as store, pytest.raises(CorruptStoreError, match=ref.hash):
        store.sql(f"SELECT * FROM {name}")


def test_duckdb_memory_is_bounded_while_a_big_value_is_written_and_put_back(
    duckdb_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    write = duckdb_blobs.write_words

    def spy(con: duckdb.DuckDBPyConnection, *args: Any) -> None:
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
        write(con, *args)

    monkeypatch.setattr(duckdb_blobs, "write_words", spy)
    before = duckdb_store.sql("SELECT current_setting('memory_limit') AS m")["m"][0]
    duckdb_store.put_value(encode(np.zeros(1_000_000), step="s"))
    assert len(seen) == 1 and duckdb_blobs._bytes(seen[0]) < duckdb_blobs._bytes(before)
    assert duckdb_store.sql("SELECT current_setting('memory_limit') AS m")["m"][0] == before


def test_a_big_value_is_written_when_memory_cannot_be_bounded(
    duckdb_store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Too little working memory for DuckDB: the write is done again, unbounded.
    monkeypatch.setattr(duckdb_blobs, "working_memory", lambda *a: 1024 * 1024)
    frame = pd.DataFrame(np.random.default_rng(2).random((40_000, 30)))
    array = np.random.default_rng(3).random(500_000)
    refs = [duckdb_store.put_value(encode(v, step="s")) for v in (frame, array)]
    pd.testing.assert_frame_equal(duckdb_store.load_value(refs[0]), frame)
    np.testing.assert_array_equal(duckdb_store.load_value(refs[1]), array)
    # And when DuckDB refuses to change its memory limit (a configuration locked without
    # it among the settings the store may change).
    from nbflow.store import sql_guard

    others = tuple(s for s in sql_guard.STORE_SETTINGS if s != "memory_limit")
    monkeypatch.setattr(sql_guard, "STORE_SETTINGS", others)
    duckdb_store.release_connection()  # connected again, locked without it
    with pytest.raises(duckdb.Error, match="locked"):
        duckdb_store._con.execute("SET memory_limit = '1GiB'")
    other = np.arange(400_000)
    ref = duckdb_store.put_value(encode(other, step="s"))
    np.testing.assert_array_equal(duckdb_store.load_value(ref), other)


def test_an_old_row_with_large_bytes_in_it_still_loads(duckdb_store: DuckDBStore) -> None:
    # (what nbflow before schema 5 wrote for every value)
    array = np.arange(100_000, dtype=np.int64)
    encoded = encode(array, step="s")
    duckdb_store._con.execute(
        "INSERT INTO blobs VALUES (?, 'npy', ?, now(), NULL, '{\"kind\": \"array\"}', ?)",
        [encoded.ref.hash, encoded.ref.size, encoded.data],
    )
    np.testing.assert_array_equal(duckdb_store.load_value(encoded.ref), array)


def test_encoded_value_rejects_data_and_chunks_together() -> None:
    ref = encode(b"x", step="s").ref
    with pytest.raises(ValueError, match="not both"):
        EncodedValue(ref, data=b"x", chunks=[b"x"])


# -- every backend ----------------------------------------------------------------------------


def test_big_values_cross_chunk_and_batch_boundaries_exactly(store: Any) -> None:
    """Values bigger than every backend's pieces (PostgreSQL's 4 MB chunks, DuckDB's
    ~1 MB batches of words), of lengths that are no multiple of them, come back exactly
    and copy between backends in their stored form."""
    rng = np.random.default_rng(5)
    values = {
        "bytes": rng.bytes(9 * 2**20 + 3),
        "array": np.asfortranarray(rng.random((1100, 1000))),
        "frame": pd.DataFrame(
            {"x": rng.random(400_000), "s": [f"r{i % 999}" for i in range(400_000)]}
        ),
    }
    refs = {k: store.put_value(encode(v, step=k)) for k, v in values.items()}
    assert store.load_value(refs["bytes"]) == values["bytes"]
    np.testing.assert_array_equal(store.load_value(refs["array"]), values["array"])
    pd.testing.assert_frame_equal(store.load_value(refs["frame"]), values["frame"])
    other = MemoryStore()
    for kind, ref in refs.items():
        assert other.put_value(store.read_encoded(ref)).hash == ref.hash, kind
    np.testing.assert_array_equal(other.load_value(refs["array"]), values["array"])
    assert store.check() == []


def test_a_damaged_table_of_words_is_a_corrupt_store(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as store:
        ref = store.put_value(encode(np.arange(100_000), step="s"))
    con = duckdb.connect(str(path))
    con.execute(f"DELETE FROM nbflow_values.v_{ref.hash} WHERE rowid > 5000")
    con.close()
    with DuckDBStore(path) as store, pytest.raises(CorruptStoreError, match="holds 40008 of"):
        store.load_value(ref)
    con = duckdb.connect(str(path))
    con.execute(f"DROP TABLE nbflow_values.v_{ref.hash}")
    con.close()
    with DuckDBStore(path) as store, pytest.raises(CorruptStoreError, match=ref.hash):
        store.load_value(ref)
