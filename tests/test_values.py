"""Codecs, content hashes and DuckDB tables of nbflow.values."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import itertools
import json
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

from nbflow.errors import SerializationError, UntrustedStoreError
from nbflow.store.records import Codec, ValueRef
from nbflow.values import (
    EncodedValue,
    content_hash,
    copy_table,
    decode,
    duckdb_can_hold,
    encode,
    read_table,
    type_name,
    write_table,
)
from nbflow.values.hashing import hash_arrow_table

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_names = itertools.count()


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


# -- helpers ---------------------------------------------------------------------------


def assert_identical(expected: Any, actual: Any) -> None:
    """Strict equality of frames/series: values, dtypes, axes and their types, names."""
    assert type(actual) is type(expected)
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(
            expected,
            actual,
            check_exact=True,
            check_index_type=True,
            check_column_type=True,
            check_freq=True,
            check_flags=True,
        )
        assert list(actual.dtypes) == list(expected.dtypes)
        assert_index_identical(expected.columns, actual.columns)
        columns = [(expected.iloc[:, i], actual.iloc[:, i]) for i in range(expected.shape[1])]
    else:
        pd.testing.assert_series_equal(
            expected, actual, check_exact=True, check_index_type=True, check_freq=True
        )
        assert type(actual.name) is type(expected.name)
        columns = [(expected, actual)]
    assert_index_identical(expected.index, actual.index)
    assert actual.attrs == expected.attrs
    for left, right in columns:
        assert str(right.dtype) == str(left.dtype)
        assert type(right.dtype) is type(left.dtype)
        if isinstance(left.dtype, pd.CategoricalDtype):
            pd.testing.assert_index_equal(left.cat.categories, right.cat.categories, exact=True)
            assert left.cat.ordered == right.cat.ordered
        if left.dtype == object:
            # None and NaN are both "missing" to assert_frame_equal; not to us.
            assert [type(v) for v in right.to_numpy()] == [type(v) for v in left.to_numpy()]


def assert_index_identical(expected: pd.Index, actual: pd.Index) -> None:
    pd.testing.assert_index_equal(expected, actual, exact=True, check_exact=True)
    assert type(actual) is type(expected)
    assert actual.dtype == expected.dtype
    assert list(actual.names) == list(expected.names)
    assert getattr(actual, "freq", None) == getattr(expected, "freq", None)
    for level in range(expected.nlevels):
        a, b = expected.get_level_values(level), actual.get_level_values(level)
        assert b.dtype == a.dtype and type(b.dtype) is type(a.dtype)


def stored_paths(
    encoded: EncodedValue, con: duckdb.DuckDBPyConnection, *, trust: bool = True
) -> list[Any]:
    """Decode ``encoded`` every way a store could hand it back.

    Directly; with meta and ref after a JSON round trip (as a store keeps them); and, for
    ARROW, from the table DuckDB reads back.
    """
    meta = json.loads(json.dumps(encoded.meta))  # meta must be JSON-able
    ref = ValueRef.from_json(json.loads(json.dumps(encoded.ref.to_json())))
    assert ref == encoded.ref or ref.codec is not Codec.JSON
    kwargs = {"table": encoded.table, "data": encoded.data, "trust": trust}
    outs = [decode(encoded.ref, meta=encoded.meta, **kwargs), decode(ref, meta=meta, **kwargs)]
    if encoded.ref.codec is Codec.ARROW:
        assert encoded.table is not None and encoded.data is None
        name = f"v{next(_names)}_{encoded.ref.hash}"
        con.execute("BEGIN")
        write_table(con, name, encoded.table)
        con.execute("COMMIT")
        table = read_table(con, name)
        assert isinstance(table, pa.Table)
        outs.append(decode(ref, table=table, meta=meta, trust=trust))
    else:
        assert encoded.table is None
    return outs


def round_trip(value: Any, con: duckdb.DuckDBPyConnection, codec: Codec | None = None) -> Codec:
    """Encode ``value``, decode it every way, check each result, return the codec."""
    encoded = encode(value, step="s")
    if codec is not None:
        assert encoded.ref.codec is codec, encoded.ref
    assert encoded.ref.size >= 0 and len(encoded.ref.hash) == 32
    assert encoded.ref.type_name == type_name(type(value))
    for back in stored_paths(encoded, con):
        if isinstance(value, (pd.DataFrame, pd.Series)):
            assert_identical(value, back)
        elif isinstance(value, np.ndarray):
            assert type(back) is np.ndarray
            assert back.dtype == value.dtype and back.shape == value.shape
            if value.flags.c_contiguous or value.flags.f_contiguous:  # else stored as C
                assert back.flags.f_contiguous == value.flags.f_contiguous
                assert back.flags.c_contiguous == value.flags.c_contiguous
            np.testing.assert_array_equal(back, value, strict=True)
        else:
            assert type(back) is type(value)
            assert back == value or (back != back and value != value)
    return encoded.ref.codec


def dt_index(values: list[str], unit: str = "us") -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(values, format="ISO8601")).as_unit(unit)


# -- frames: explicit cases ------------------------------------------------------------

FRAMES: dict[str, tuple[Any, Codec]] = {
    "numbers": (
        pd.DataFrame(
            {
                "i": [1, 2, 3],
                "f": [1.5, np.nan, -0.0],
                "b": [True, False, True],
                "u8": np.array([0, 255, 7], dtype=np.uint8),
                "u64": np.array([2**64 - 1, 0, 1], dtype=np.uint64),
                "f32": np.array([1.5, np.inf, np.nan], dtype=np.float32),
            }
        ),
        Codec.ARROW,
    ),
    "nullable": (
        pd.DataFrame(
            {
                "I": pd.array([1, None, 3], dtype="Int64"),
                "I8": pd.array([1, None, -3], dtype="Int8"),
                "B": pd.array([True, None, False], dtype="boolean"),
                "F": pd.array([1.5, None, 2.0], dtype="Float64"),
                "U": pd.array([1, None, 2], dtype="UInt64"),
            }
        ),
        Codec.ARROW,
    ),
    "strings": (
        pd.DataFrame(
            {
                "str": pd.array(["a", None, "é"], dtype="str"),
                "string": pd.array(["a", None, "c"], dtype="string"),
                "string_py": pd.array(["a", None, "c"], dtype="string[python]"),
                "str_py": pd.array(["a", None, ""], dtype=pd.StringDtype("python", np.nan)),
                "obj_none": pd.Series(["a", None, "c"], dtype=object),
                "obj_nan": pd.Series(["a", np.nan, "c"], dtype=object),
                "obj_all_none": pd.Series([None, None, None], dtype=object),
                "obj_all_nan": pd.Series([np.nan, np.nan, np.nan], dtype=object),
                "bytes": pd.Series([b"a", None, b"\x00"], dtype=object),
                "nul": ["a\x00b", "", "x"],
            }
        ),
        Codec.ARROW,
    ),
    "categoricals": (
        pd.DataFrame(
            {
                "ordered": pd.Categorical(
                    ["x", "y", "x"], categories=["y", "x", "z"], ordered=True
                ),
                "unordered": pd.Categorical(["b", None, "a"], categories=["b", "a", "unused"]),
                "ints": pd.Categorical([1, 2, None], categories=[2, 1, 5]),
                "empty": pd.Categorical([None, None, None], categories=[]),
                "dates": pd.Categorical(dt_index(["2024-01-02", "2024-01-01", "2024-01-02"])),
            }
        ),
        Codec.ARROW,
    ),
    "times": (
        pd.DataFrame(
            {
                "ns": dt_index(["2024-01-01 00:00:00.123456789", "NaT", "1970-01-01"], "ns"),
                "us": dt_index(["2024-01-01", "NaT", "1900-01-01"]),
                "s": dt_index(["2024-01-01", "NaT", "9999-12-31"], "s"),
                "paris_ns": dt_index(
                    ["2024-01-01 00:00:00.123456789", "NaT", "2024-07-01"], "ns"
                ).tz_localize("Europe/Paris"),
                "utc": dt_index(["2024-01-01", "NaT", "2024-03-31 02:30"]).tz_localize("UTC"),
                "ny_s": dt_index(["2024-01-01", "NaT", "2024-03-10"], "s").tz_localize(
                    "America/New_York"
                ),
                "offset": dt_index(["2024-01-01", "NaT", "2024-01-02"]).tz_localize(
                    dt.timezone(dt.timedelta(hours=5, minutes=30))
                ),
                "td_ns": pd.to_timedelta([1, None, -5], unit="ns"),
                "td_s": pd.to_timedelta([1, None, 86_400 * 400], unit="s").as_unit("s"),
            }
        ),
        Codec.ARROW,
    ),
    "extension_types": (
        pd.DataFrame(
            {
                "period": pd.period_range("2024-01", periods=3, freq="M"),
                "interval": pd.interval_range(0, 3),
                "arrow_int": pd.array([1, None, 3], dtype="int64[pyarrow]"),
                "arrow_ts": pd.array(
                    [pd.Timestamp("2024-01-01"), None, None], dtype="timestamp[us][pyarrow]"
                ),
            }
        ),
        Codec.ARROW,
    ),
    "named_index": (pd.DataFrame({"a": [1, 2]}, index=pd.Index(["x", "y"], name="k")), Codec.ARROW),
    "object_index": (
        pd.DataFrame({"a": [1, 2]}, index=pd.Index(["x", None], dtype=object)),
        Codec.ARROW,
    ),
    "sliced_range_index": (pd.DataFrame({"a": range(10)}).iloc[3:9:2], Codec.ARROW),
    "datetime_index_freq": (
        pd.DataFrame({"a": [1, 2, 3]}, index=pd.date_range("2024", periods=3, name="d")),
        Codec.ARROW,
    ),
    "tz_index_freq": (
        pd.DataFrame(
            {"a": [1, 2, 3]}, index=pd.date_range("2024", periods=3, freq="h", tz="Europe/Paris")
        ),
        Codec.ARROW,
    ),
    "timedelta_index": (
        pd.DataFrame({"a": [1, 2]}, index=pd.timedelta_range(0, periods=2, freq="min")),
        Codec.ARROW,
    ),
    "categorical_index": (
        pd.DataFrame({"a": [1, 2]}, index=pd.CategoricalIndex(["x", "y"], categories=["y", "x"])),
        Codec.ARROW,
    ),
    "multiindex": (
        pd.DataFrame(
            {"a": [1, 2, 3]},
            index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2), ("b", 1)], names=["k", None]),
        ),
        Codec.ARROW,
    ),
    "int_column_names": (pd.DataFrame([[1, 2]], columns=[10, 20]), Codec.ARROW),
    "range_columns": (pd.DataFrame(np.ones((2, 3))), Codec.ARROW),
    "columns_name": (pd.DataFrame([[1, 2]], columns=pd.Index(["a", "b"], name="cn")), Codec.ARROW),
    "object_columns": (
        pd.DataFrame([[1, 2]], columns=pd.Index(["a", "b"], dtype=object)),
        Codec.ARROW,
    ),
    "multiindex_columns": (
        pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])),
        Codec.ARROW,
    ),
    "awkward_names": (
        pd.DataFrame(
            [[1, 2, 3, 4, 5, 6]],
            columns=["a", "A", "", "__index_level_0__", 'quo"te', "tab\tname"],
        ),
        Codec.ARROW,
    ),
    "duplicate_names": (pd.DataFrame([[1, 2, 3]], columns=["a", "a", "b"]), Codec.ARROW),
    "duplicate_int_names": (pd.DataFrame([[1, 2, 3]], columns=[1, 1, 2]), Codec.ARROW),
    "index_named_like_column": (
        pd.DataFrame({"a": [1, 2]}, index=pd.Index([5, 6], name="a")),
        Codec.ARROW,
    ),
    "attrs": (pd.DataFrame({"a": [1]}).pipe(lambda f: f.attrs.update(x=1) or f), Codec.ARROW),
    "no_rows": (pd.DataFrame({"a": pd.Series([], dtype="int64"), "s": []}), Codec.ARROW),
    "only_index": (pd.DataFrame(index=pd.Index([1, 2], name="k")), Codec.ARROW),
    # Arrow holds these, DuckDB does not: Arrow IPC bytes.
    "float16": (pd.DataFrame({"h": np.array([1.5, np.nan], dtype=np.float16)}), Codec.ARROW_IPC),
    "no_columns": (pd.DataFrame(), Codec.ARROW_IPC),
    "ipc_with_fixes": (
        # float16 (DuckDB cannot), duplicate names, object and python-string columns, freq.
        pd.concat(
            [
                pd.DataFrame({"h": np.array([1.5, 2], dtype=np.float16)}),
                pd.DataFrame({"o": pd.Series([None, "b"], dtype=object)}),
                pd.DataFrame({"h": pd.array(["a", None], dtype="string[python]")}),
            ],
            axis=1,
        ).set_axis(pd.date_range("2024", periods=2, freq="D")),
        Codec.ARROW_IPC,
    ),
    "tz_seconds_beyond_duckdb": (
        pd.DataFrame({"t": pd.Series(np.array([2**62], dtype="M8[s]")).dt.tz_localize("UTC")}),
        Codec.ARROW_IPC,
    ),
    # Arrow cannot hold these exactly: pickle.
    "mixed_objects": (pd.DataFrame({"o": [1, "a", None]}), Codec.PICKLE),
    "object_none_and_nan": (
        pd.DataFrame({"o": pd.Series(["a", None, np.nan], dtype=object)}),
        Codec.PICKLE,
    ),
    "lists": (pd.DataFrame({"o": [[1, 2], [3]]}), Codec.PICKLE),
    "decimals": (pd.DataFrame({"o": [decimal.Decimal("1.50")]}), Codec.PICKLE),
    "complex": (pd.DataFrame({"c": np.array([1 + 2j])}), Codec.PICKLE),
    "sparse": (pd.DataFrame({"s": pd.arrays.SparseArray([0, 1])}), Codec.PICKLE),
    "mixed_column_names": (pd.DataFrame([[1, 2]], columns=[1, "a"]), Codec.PICKLE),
    "nullable_index": (
        pd.DataFrame({"a": [1, 2]}, index=pd.Index([1, None], dtype="Int64")),
        Codec.PICKLE,
    ),
    "no_duplicate_labels_flag": (
        pd.DataFrame({"a": [1]}).set_flags(allows_duplicate_labels=False),
        Codec.PICKLE,
    ),
}


@pytest.mark.parametrize("case", list(FRAMES))
def test_frame_round_trips(case: str, con: duckdb.DuckDBPyConnection) -> None:
    value, codec = FRAMES[case]
    round_trip(value, con, codec)
    # No rows: DuckDB hands back columns without chunks (and so without dictionaries).
    round_trip(value.iloc[:0], con)
    round_trip(value.iloc[1:], con)


SERIES: dict[str, tuple[pd.Series, Codec]] = {
    "named": (pd.Series([1, 2], name="x"), Codec.ARROW),
    "unnamed": (pd.Series([1.5, np.nan]), Codec.ARROW),
    "int_name": (pd.Series([1, 2], name=0), Codec.ARROW),
    "tuple_name": (pd.Series([1, 2], name=("a", "b")), Codec.ARROW),
    "object_with_freq_index": (
        pd.Series(["a", None], dtype=object, index=pd.date_range("2024", periods=2)),
        Codec.ARROW,
    ),
    "categorical_multiindex": (
        pd.Series(
            pd.Categorical(["a", "b"]),
            index=pd.MultiIndex.from_tuples([(1, "x"), (2, "y")], names=["n", "s"]),
            name="c",
        ),
        Codec.ARROW,
    ),
    "tz": (pd.Series(pd.date_range("2024", periods=3, tz="Europe/Paris"), name="t"), Codec.ARROW),
    "float16": (pd.Series(np.array([1.0], dtype=np.float16)), Codec.ARROW_IPC),
    "mixed": (pd.Series([1, "a"]), Codec.PICKLE),
}


@pytest.mark.parametrize("case", list(SERIES))
def test_series_round_trips(case: str, con: duckdb.DuckDBPyConnection) -> None:
    value, codec = SERIES[case]
    round_trip(value, con, codec)
    round_trip(value.iloc[:0], con)
    assert encode(value, step="s").ref.type_name == "pandas.Series"


def test_decoded_frames_are_writable_and_detached(con: duckdb.DuckDBPyConnection) -> None:
    df = pd.DataFrame({"x": [1.0, 2.0], "i": [1, 2], "s": ["a", "b"]})
    for value, codec in ((df, Codec.ARROW), (df.astype({"x": np.float16}), Codec.ARROW_IPC)):
        encoded = encode(value, step="s")
        assert encoded.ref.codec is codec
        for back in stored_paths(encoded, con):
            back.iloc[0, 0] = 99.0  # must not raise (zero-copy Arrow arrays are read-only)
            back.iloc[0, 1] = 99
            back.iloc[0, 2] = "z"
        assert_identical(value, stored_paths(encoded, con)[0])


def test_stored_table_is_pleasant_sql(con: duckdb.DuckDBPyConnection) -> None:
    df = pd.DataFrame(
        {
            "amount": [1.5, 2.5, 4.0],
            "city": pd.Categorical(["Paris", "Lyon", "Paris"]),
            "when": pd.date_range("2024", periods=3, tz="Europe/Paris"),
            "took": pd.to_timedelta([1, 2, 3], unit="s"),
            "A": [1, 2, 3],
            "a": [4, 5, 6],
            "": [7, 8, 9],
        },
        index=pd.Index([10, 20, 30]),
    )
    encoded = encode(df, step="s")
    assert encoded.table is not None
    assert encoded.table.schema.names == [
        "amount",
        "city",
        "when",
        "took",
        "A",
        "c5",
        "c6",
        "index",
    ]
    write_table(con, "pleasant", encoded.table)
    assert con.sql(
        'SELECT city, sum(amount) FROM "pleasant" GROUP BY city ORDER BY city'
    ).fetchall() == [
        ("Lyon", 2.5),
        ("Paris", 5.5),
    ]
    kinds = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE pleasant)").fetchall())
    assert kinds["city"] == "VARCHAR"
    assert kinds["when"].startswith("TIMESTAMP WITH TIME ZONE") or "TIMESTAMPTZ" in kinds["when"]
    assert kinds["took"] == "BIGINT"  # DuckDB would make durations INTERVALs (microseconds)
    assert_identical(df, decode(encoded.ref, table=read_table(con, "pleasant"), meta=encoded.meta))

    multi = df.set_index("A", append=True).iloc[:, :1]
    assert encode(multi, step="s").table.schema.names[-2:] == ["level_0", "A"]


def test_write_table_joins_the_callers_transaction(con: duckdb.DuckDBPyConnection) -> None:
    table = encode(pd.DataFrame({"a": [1, 2]}), step="s").table
    assert table is not None
    name = 'odd "name"; drop'
    con.execute("BEGIN")
    write_table(con, name, table)
    assert read_table(con, name).num_rows == 2
    con.execute("ROLLBACK")
    assert name not in {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    write_table(con, name, table)
    assert read_table(con, name).column(0).to_pylist() == [1, 2]
    assert not any("nbflow_arrow" in r[0] for r in con.sql("SHOW ALL TABLES").fetchall())


def test_tables_in_a_schema(con: duckdb.DuckDBPyConnection) -> None:
    encoded = encode(FRAMES["categoricals"][0], step="s")
    assert encoded.table is not None
    con.execute('CREATE SCHEMA IF NOT EXISTS "my values"')
    write_table(con, "v.1", encoded.table, schema="my values")
    assert con.sql('SELECT count(*) FROM "my values"."v.1"').fetchall() == [(3,)]
    back = decode(encoded.ref, table=read_table(con, "v.1", schema="my values"), meta=encoded.meta)
    assert_identical(FRAMES["categoricals"][0], back)


def test_file_store_round_trip(tmp_path: Path) -> None:
    df = FRAMES["times"][0]
    encoded = encode(df, step="s")
    assert encoded.table is not None
    with duckdb.connect(str(tmp_path / "v.duckdb")) as con:
        write_table(con, "t", encoded.table)
    with duckdb.connect(str(tmp_path / "v.duckdb"), read_only=True) as con:
        assert_identical(df, decode(encoded.ref, table=read_table(con, "t"), meta=encoded.meta))


@pytest.mark.parametrize(
    "setting",
    [
        "SET TimeZone = 'America/Los_Angeles'",
        "SET produce_arrow_string_view = true",
        "SET arrow_large_buffer_size = true",
        "SET arrow_output_list_view = true",
        "SET arrow_lossless_conversion = true",
    ],
)
def test_duckdb_output_settings_do_not_matter(setting: str) -> None:
    with duckdb.connect() as con:
        con.execute(setting)
        for case in ("strings", "times", "categoricals", "extension_types", "awkward_names"):
            round_trip(FRAMES[case][0], con, Codec.ARROW)


def test_copy_table_detaches_from_the_frame() -> None:
    frame = pd.DataFrame({"a": np.zeros(3), "s": ["x", "y", "z"]})
    encoded = encode(frame, step="s")
    assert encoded.table is not None
    kept = copy_table(encoded.table)
    frame.iloc[0, 0] = 7.0  # from_pandas shares the frame's numpy buffers
    assert encoded.table.column("a")[0].as_py() == 7.0
    assert kept.column("a")[0].as_py() == 0.0 and kept.schema == encoded.table.schema
    for value, _ in FRAMES.values():
        for rows in (value, value.iloc[:0]):
            encoded = encode(rows, step="s")
            if encoded.table is not None:
                back = decode(encoded.ref, table=copy_table(encoded.table), meta=encoded.meta)
                assert_identical(rows, back)


def test_duckdb_can_hold() -> None:
    assert duckdb_can_hold(pa.Table.from_pandas(FRAMES["times"][0]))
    assert duckdb_can_hold(pa.Table.from_pandas(FRAMES["categoricals"][0]))
    assert not duckdb_can_hold(pa.table({}))
    assert not duckdb_can_hold(pa.table({"h": pa.array([1.0], pa.float16())}))
    assert not duckdb_can_hold(pa.table({"t": pa.array([1], pa.time64("us"))}))
    far = pa.array([2**62], pa.timestamp("s", tz="UTC"))
    assert not duckdb_can_hold(pa.table({"t": far}))
    assert duckdb_can_hold(pa.table({"t": far.cast(pa.timestamp("s"))}))  # naive: as is


# -- frames: hypothesis ----------------------------------------------------------------

TZS = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]
UNITS = ["s", "ms", "us", "ns"]
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_NAT = np.iinfo(np.int64).min
texts = st.text(max_size=6)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def instants(draw: st.DrawFn, unit: str) -> int:
    """Ticks of ``unit`` between ~1812 and ~2128 (where every time zone is defined)."""
    per_second = _PER_SECOND[unit]
    seconds = draw(st.integers(-5_000_000_000, 5_000_000_000))
    return seconds * per_second + draw(st.integers(0, per_second - 1))


@st.composite
def column_values(draw: st.DrawFn, n: int) -> Any:
    kind = draw(
        st.sampled_from(
            [
                "int64", "int8", "uint32", "float64", "float32", "bool", "Int64", "boolean",
                "Float64", "str", "string", "object_str", "bytes", "category", "category_int",
                "datetime", "datetime_tz", "timedelta",
            ]
        )
    )  # fmt: skip
    many = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    if kind in ("int64", "int8", "uint32"):
        info = np.iinfo(kind)
        return np.array(many(st.integers(int(info.min), int(info.max))), dtype=kind)
    if kind == "float64":
        return np.array(many(st.floats()), dtype=kind)
    if kind == "float32":
        return np.array(many(st.floats(width=32)), dtype=kind)
    if kind == "bool":
        return np.array(many(st.booleans()), dtype=bool)
    if kind == "Int64":
        return pd.array(many(_maybe(st.integers(-(2**63), 2**63 - 1))), dtype="Int64")
    if kind == "boolean":
        return pd.array(many(_maybe(st.booleans())), dtype="boolean")
    if kind == "Float64":
        return pd.array(many(_maybe(st.floats(allow_nan=False))), dtype="Float64")
    if kind in ("str", "string"):
        return pd.array(many(_maybe(texts)), dtype=kind)
    if kind == "object_str":
        missing = draw(st.sampled_from([None, np.nan]))
        values = [missing if v is None else v for v in many(_maybe(texts))]
        return pd.Series(values, dtype=object).to_numpy()
    if kind == "bytes":
        return pd.Series(many(_maybe(st.binary(max_size=4))), dtype=object).to_numpy()
    if kind in ("category", "category_int"):
        items = texts if kind == "category" else st.integers(-5, 5)
        categories = draw(st.lists(items, unique=True, max_size=4))
        values = many(_maybe(st.sampled_from(categories))) if categories else [None] * n
        return pd.Categorical(values, categories=categories, ordered=draw(st.booleans()))
    unit = draw(st.sampled_from(UNITS))
    ticks = np.array([_NAT if v is None else v for v in many(_maybe(instants(unit)))])
    if kind == "timedelta":
        return ticks.astype("int64").view(f"m8[{unit}]")
    stamps = pd.DatetimeIndex(ticks.astype("int64").view(f"M8[{unit}]"))
    if kind == "datetime_tz":
        return stamps.tz_localize("UTC").tz_convert(draw(st.sampled_from(TZS)))
    return stamps


@st.composite
def indexes(draw: st.DrawFn, n: int) -> pd.Index:
    kind = draw(st.sampled_from(["range", "ints", "strings", "dates", "multi"]))
    name = draw(_maybe(st.sampled_from(["k", "a", "index"])))
    if kind == "range":
        start, step = draw(st.integers(-5, 5)), draw(st.sampled_from([1, 2, -1]))
        return pd.RangeIndex(start, start + n * step, step, name=name)
    if kind == "ints":
        ints = st.integers(-(2**63), 2**63 - 1)
        return pd.Index(draw(st.lists(ints, min_size=n, max_size=n)), name=name)
    if kind == "strings":
        return pd.Index(draw(st.lists(texts, min_size=n, max_size=n)), name=name)
    if kind == "dates":
        tz = draw(_maybe(st.sampled_from(TZS)))
        return pd.date_range("2024-03-30", periods=n, freq="h", tz=tz, name=name)
    return pd.MultiIndex.from_arrays(
        [
            draw(st.lists(texts, min_size=n, max_size=n)),
            draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)),
        ],
        names=[name, None],
    )


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 6))
    width = draw(st.integers(1, 4))
    if draw(st.booleans()):
        labels: list[Any] = draw(
            st.lists(st.sampled_from(["a", "A", "b", "", "__index_level_0__", "x y"]),
                     min_size=width, max_size=width)
        )  # fmt: skip
    else:
        labels = draw(st.lists(st.integers(-2, 2), min_size=width, max_size=width))
    columns = [draw(column_values(n)) for _ in range(width)]
    frame = pd.DataFrame(dict(enumerate(columns)), index=draw(indexes(n)))
    frame.columns = labels
    return frame


@settings(SETTINGS, max_examples=60)
@given(frame=frames())
def test_random_frames_round_trip_through_duckdb(
    frame: pd.DataFrame, con: duckdb.DuckDBPyConnection
) -> None:
    round_trip(frame, con, Codec.ARROW)
    round_trip(frame.iloc[:, 0], con, Codec.ARROW)  # and as a series


@settings(SETTINGS, max_examples=30)
@given(
    frame=hpd.data_frames(
        [
            hpd.column("i", dtype=np.int32),
            hpd.column("f", dtype=float),
            hpd.column("b", dtype=bool),
            hpd.column("t", dtype="datetime64[ns]"),
            hpd.column("d", dtype="timedelta64[ns]"),
            hpd.column("u", dtype=np.uint16),
        ],
        index=hpd.indexes(dtype=np.int64, max_size=8),
    )
)
def test_hypothesis_pandas_frames_round_trip(
    frame: pd.DataFrame, con: duckdb.DuckDBPyConnection
) -> None:
    round_trip(frame, con, Codec.ARROW)


@settings(SETTINGS, max_examples=40)
@given(frame=frames())
def test_equal_frames_hash_equal(frame: pd.DataFrame) -> None:
    encoded = encode(frame, step="s")
    digest = encoded.ref.hash
    assert content_hash(frame.copy(deep=True)) == digest
    assert content_hash(pd.DataFrame(frame)) == digest
    rebuilt = decode(encoded.ref, table=encoded.table, data=encoded.data, meta=encoded.meta)
    assert content_hash(rebuilt) == digest
    if len(frame) > 1:
        assert content_hash(frame.iloc[1:]) == content_hash(frame.iloc[1:].copy(deep=True))


@settings(SETTINGS, max_examples=40)
@given(frame=frames(), data=st.data())
def test_changed_frames_hash_differently(frame: pd.DataFrame, data: st.DataObject) -> None:
    assume(len(frame) > 0)
    digest = content_hash(frame)
    row = data.draw(st.integers(0, len(frame) - 1))
    changed = frame.copy()
    changed.insert(0, "extra", 0)
    assert content_hash(changed) != digest
    marker = changed.copy()
    marker.iloc[row, 0] = 1
    assert content_hash(marker) != content_hash(changed)
    assert content_hash(frame.iloc[:, :1].rename(columns=lambda c: f"{c}_")) != content_hash(
        frame.iloc[:, :1]
    )


def test_equal_frames_built_differently_hash_equal() -> None:
    n = 1_000
    rng = np.random.default_rng(1)
    x = rng.random(n)
    x[::7] = np.nan
    words = [None if i % 5 == 0 else f"w{i % 13}" for i in range(n)]
    a = pd.DataFrame({"x": x, "s": words, "c": pd.Categorical([w or "z" for w in words])})
    b = pd.DataFrame({"c": a["c"].copy(), "s": list(words), "x": x.copy()})[["x", "s", "c"]]
    assert content_hash(a) == content_hash(b)
    # NaN payloads (e.g. -nan from 0/0) are not content.
    y = a.copy()
    y["x"] = np.where(np.isnan(x), -np.float64("nan"), x)
    assert content_hash(y) == content_hash(a)
    # Sliced (Arrow offsets, pyarrow-backed strings are views) vs rebuilt from scratch.
    part = a.iloc[13:877]
    fresh = pd.DataFrame(
        {
            "x": part["x"].to_numpy().copy(),
            "s": pd.array(part["s"].tolist(), dtype="str"),
            "c": pd.Categorical(part["c"].tolist(), categories=a["c"].cat.categories),
        },
        index=pd.RangeIndex(13, 877),
    )
    assert content_hash(part) == content_hash(fresh)
    # Object vs str columns, None vs NaN, frame vs series: different values.
    obj = pd.DataFrame({"s": pd.Series(["a", None], dtype=object)})
    assert content_hash(obj) != content_hash(obj.astype("str"))
    assert content_hash(obj) != content_hash(
        pd.DataFrame({"s": pd.Series(["a", np.nan], dtype=object)})
    )
    assert content_hash(a[["x"]]) != content_hash(a["x"])
    assert content_hash(a.astype({"x": "float32"})) != content_hash(a)


def _odd_layouts(array: pa.Array) -> list[pa.Array]:
    """The same logical values as ``array`` in other layouts (slices at odd offsets)."""
    padded = pa.concat_arrays([array.slice(0, 3), array, array.slice(0, 5)])
    return [padded.slice(3, len(array)), pa.concat_arrays([array.slice(0, 0), array])]


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1, None, 3, 4, None, 6, 7, 8, 9, None, 11]),
        pa.array([True, None, False, True, True, None, False, True, False, True, None]),
        pa.array(["a", None, "ccc", "", "dd", None, "e", "ff", "g", "h", "iiii"]),
        pa.array(
            [b"a", None, b"ccc", b"", b"\x00", None, b"e", b"f", b"g", b"h", b"i"],
            pa.large_binary(),
        ),
        pa.array([[1], None, [], [2, 3], None, [4], [5], [6, 7], [], [8], [9]]),
        pa.array([{"a": 1, "b": "x"}, None, {"a": 2, "b": None}] * 4),
        pa.array([1.5, None, -0.0, 2.5, None, 3.5, 4.5, 5.5, 6.5, None, 7.5]).dictionary_encode(),
        pa.array([decimal.Decimal("1.5"), None, decimal.Decimal("-2")] * 4),
        pa.array([1, 2, None, 4] * 3, pa.timestamp("ns", tz="Europe/Paris")),
    ],
    ids=lambda a: str(a.type),
)
def test_table_hash_ignores_layout(array: pa.Array) -> None:
    digest = hash_arrow_table("t", pa.table({"v": array}))
    for other in _odd_layouts(array):
        assert other.to_pylist() == array.to_pylist()
        assert hash_arrow_table("t", pa.table({"v": other})) == digest
    chunked = pa.table({"v": pa.chunked_array([array.slice(0, 5), array.slice(5)])})
    assert hash_arrow_table("t", chunked) == digest
    changed = array.to_pylist()
    changed[0], changed[2] = changed[2], changed[0]
    assert changed != array.to_pylist()
    assert hash_arrow_table("t", pa.table({"v": pa.array(changed, array.type)})) != digest


def test_table_hash_ignores_garbage_under_nulls() -> None:
    validity = pa.py_buffer(bytes([0b0000_0101 | 0b1110_0000]))  # 3 rows; top bits junk
    clean = pa.py_buffer(np.array([1, 0, 3], dtype=np.int64).tobytes())
    dirty = pa.py_buffer(np.array([1, 12345, 3], dtype=np.int64).tobytes())
    a = pa.Array.from_buffers(pa.int64(), 3, [validity, clean])
    b = pa.Array.from_buffers(pa.int64(), 3, [pa.py_buffer(bytes([0b101])), dirty])
    assert a.to_pylist() == b.to_pylist() == [1, None, 3]
    assert hash_arrow_table("t", pa.table({"v": a})) == hash_arrow_table("t", pa.table({"v": b}))

    offsets_a = pa.py_buffer(np.array([0, 1, 1, 2], dtype=np.int32).tobytes())
    offsets_b = pa.py_buffer(np.array([0, 1, 4, 5], dtype=np.int32).tobytes())  # null spans 3
    s_a = pa.Array.from_buffers(pa.string(), 3, [validity, offsets_a, pa.py_buffer(b"ac")])
    s_b = pa.Array.from_buffers(pa.string(), 3, [validity, offsets_b, pa.py_buffer(b"axyzc")])
    assert s_a.to_pylist() == s_b.to_pylist() == ["a", None, "c"]
    assert hash_arrow_table("t", pa.table({"v": s_a})) == hash_arrow_table(
        "t", pa.table({"v": s_b})
    )


_SUBPROCESS = """
import base64, json, sys
import numpy as np, pandas as pd, pyarrow as pa
from nbflow.values import content_hash, decode
from nbflow.store.records import ValueRef
frame = pd.DataFrame({
    "x": [1.5, None, 3.0], "s": ["a", None, "c"],
    "c": pd.Categorical(["u", "v", "u"], categories=["v", "u"], ordered=True),
    "t": pd.date_range("2024", periods=3, tz="Europe/Paris"),
}, index=pd.Index(["i", "j", "k"], name="key"))
stored = json.loads(sys.stdin.read())
table = pa.ipc.open_stream(base64.b64decode(stored["table"])).read_all()
back = decode(ValueRef.from_json(stored["ref"]), table=table, meta=stored["meta"])
print(json.dumps({"hash": content_hash(frame), "dtypes": [str(d) for d in back.dtypes]}))
"""


def test_hashes_and_extension_types_are_stable_across_processes() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.5, None, 3.0],
            "s": ["a", None, "c"],
            "c": pd.Categorical(["u", "v", "u"], categories=["v", "u"], ordered=True),
            "t": pd.date_range("2024", periods=3, tz="Europe/Paris"),
        },
        index=pd.Index(["i", "j", "k"], name="key"),
    )
    periods = pd.DataFrame({"p": pd.period_range("2024", periods=2, freq="Q")})
    encoded = encode(periods, step="s")
    assert encoded.table is not None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, encoded.table.schema) as writer:
        writer.write_table(encoded.table)
    stored = {
        "table": base64.b64encode(sink.getvalue().to_pybytes()).decode(),
        "ref": encoded.ref.to_json(),
        "meta": encoded.meta,
    }
    # A fresh interpreter: no pandas extension types registered, new hash seeds.
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS],
        input=json.dumps(stored),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["hash"] == content_hash(frame)
    assert result["dtypes"] == ["period[Q-DEC]"]


def test_numeric_frames_are_hashed_from_their_buffers_without_copies() -> None:
    """What keeps frame hashing at xxh3's speed (its rate is in benchmarks/): the columns
    of a numeric frame are fed to the hasher straight from their Arrow buffers."""
    n = 2_000_000
    frame = pd.DataFrame({"x": np.random.default_rng(0).random(n), "i": np.arange(n)})
    table = pa.Table.from_pandas(frame)
    default = pa.default_memory_pool()
    arrow = pa.proxy_memory_pool(default)  # counts what Arrow allocates meanwhile
    pa.set_memory_pool(arrow)
    tracemalloc.start()  # counts what Python and numpy allocate
    try:
        digest = hash_arrow_table("t", table)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(default)
    assert table.nbytes == 32_000_000
    assert peak < 1_000_000 and arrow.max_memory() < 1_000_000, (peak, arrow.max_memory())
    assert digest == hash_arrow_table("t", pa.Table.from_pandas(frame.copy()))


# -- JSON ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def _typed(value: Any, *, key_order: bool = True) -> Any:
    """``value`` with the type of every leaf spelled out (1 != 1.0 != True)."""
    if isinstance(value, list):
        return ["list", [_typed(v, key_order=key_order) for v in value]]
    if isinstance(value, dict):
        items = [[k, _typed(v, key_order=key_order)] for k, v in value.items()]
        return ["dict", items if key_order else sorted(items)]
    return [type(value).__name__, repr(value)]


@settings(SETTINGS, max_examples=100)
@given(value=json_values, limit=st.sampled_from([0, 16, 4096]))
def test_json_values_round_trip(value: Any, limit: int, con: duckdb.DuckDBPyConnection) -> None:
    encoded = encode(value, step="s", inline_limit=limit)
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    size = len(canonical.encode())
    assert encoded.ref.size == size
    assert encoded.ref.codec is (Codec.JSON if size <= limit else Codec.JSON_BLOB)
    assert encoded.table is None
    for back in stored_paths(encoded, con, trust=False):
        assert _typed(back) == _typed(value)  # same values, types and key order


@settings(SETTINGS, max_examples=150)
@given(a=json_values, b=json_values)
def test_json_hashes_match_exactly_when_values_do(a: Any, b: Any) -> None:
    # Dicts are equal whatever their key order; everything else must match exactly.
    same = _typed(a, key_order=False) == _typed(b, key_order=False)
    assert (content_hash(a) == content_hash(b)) is same


def test_json_details() -> None:
    value = {"b": 1, "a": [1, 2.0, None, True, "x"]}
    encoded = encode(value, step="s")
    assert encoded.ref.codec is Codec.JSON and encoded.ref.type_name == "builtins.dict"
    assert list(encoded.ref.inline) == ["b", "a"]  # the step's key order is kept
    assert content_hash({"a": [1, 2.0, None, True, "x"], "b": 1}) == encoded.ref.hash
    value["a"].append("later")  # the ref holds a copy
    assert encoded.ref.inline["a"] == [1, 2.0, None, True, "x"]
    back = decode(encoded.ref)
    back["a"].clear()  # and decode hands out copies
    assert decode(encoded.ref)["a"] == [1, 2.0, None, True, "x"]
    # Distinct JSON types hash apart.
    assert len({content_hash(v) for v in (1, 1.0, True, "1", [1], None, 0, False)}) == 8
    # The inline limit is inclusive.
    text = "x" * 10
    assert encode(text, step="s", inline_limit=12).ref.codec is Codec.JSON
    assert encode(text, step="s", inline_limit=11).ref.codec is Codec.JSON_BLOB
    blob = encode({"z": 1, "y": 2}, step="s", inline_limit=0)
    assert blob.data == b'{"z":1,"y":2}'
    assert blob.ref.hash == content_hash({"y": 2, "z": 1})
    assert list(decode(blob.ref, data=blob.data)) == ["z", "y"]


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1: "a"},
        {"a": (1,)},
        float("nan"),
        float("inf"),
        [1, float("-inf")],
        2**64,
        "lone \ud800 surrogate",
        {"a": {1, 2}},
        dt.date(2024, 1, 1),
        decimal.Decimal("1.5"),
        b"bytes",
        type("MyStr", (str,), {})("x"),
    ],
    ids=repr,
)
def test_values_that_are_not_json_exact_are_pickled(
    value: Any, con: duckdb.DuckDBPyConnection
) -> None:
    encoded = encode(value, step="s")
    assert encoded.ref.codec is Codec.PICKLE
    for back in stored_paths(encoded, con):
        assert type(back) is type(value)
        assert back == value or (back != back and value != value)


def test_deep_nesting() -> None:
    value: list[Any] = []
    for _ in range(100):
        value = [value]
    assert encode(value, step="s").ref.codec is Codec.JSON
    for _ in range(10_000):
        value = [value]
    # Too deep for JSON and for pickle alike.
    with pytest.raises(SerializationError, match="recursion"):
        encode(value, step="deep")


# -- numpy -----------------------------------------------------------------------------

ARRAYS = {
    "int": np.arange(12).reshape(3, 4),
    "float_nan": np.array([1.5, np.nan, -0.0, np.inf]),
    "bool": np.array([True, False]),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "strided": np.arange(20)[::3],
    "zero_d": np.array(2.5),
    "empty": np.zeros((0, 3), dtype=np.int16),
    "datetime": np.array(["2024-01-01", "NaT"], dtype="M8[ns]"),
    "timedelta": np.array([1, 2], dtype="m8[s]"),
    "unicode": np.array(["a", "bcd"]),
    "bytes": np.array([b"a", b"bc"]),
    "complex": np.array([1 + 2j]),
    "structured": np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")]),
    "big_endian": np.array([1, 2], dtype=">i4"),
}


@pytest.mark.parametrize("case", list(ARRAYS))
def test_numpy_arrays_round_trip(case: str, con: duckdb.DuckDBPyConnection) -> None:
    value = ARRAYS[case]
    assert round_trip(value, con, Codec.NUMPY) is Codec.NUMPY
    encoded = encode(value, step="s")
    assert encoded.ref.type_name == "numpy.ndarray"
    decode(encoded.ref, data=encoded.data, meta=encoded.meta, trust=False)  # no pickle needed


@pytest.mark.parametrize(
    "value",
    [np.float64(1.5), np.int32(3), np.bool_(True), np.str_("x"), np.datetime64("2024-01-01"),
     np.float32(np.nan), np.uint64(2**64 - 1), np.complex128(1j)],
    ids=repr,
)  # fmt: skip
def test_numpy_scalars_round_trip(value: Any, con: duckdb.DuckDBPyConnection) -> None:
    encoded = encode(value, step="s")
    assert encoded.ref.codec is Codec.NUMPY and encoded.meta["kind"] == "scalar"
    assert encoded.ref.type_name == f"numpy.{type(value).__name__}"
    for back in [*stored_paths(encoded, con, trust=False), decode(encoded.ref, data=encoded.data)]:
        assert type(back) is type(value)
        assert back == value or (np.isnan(back) and np.isnan(value))


def test_numpy_hashes() -> None:
    a = np.arange(6.0).reshape(2, 3)
    assert content_hash(a) == content_hash(a.copy()) == content_hash(np.array(a.tolist()))
    assert content_hash(a) != content_hash(np.asfortranarray(a))  # decodes differently
    assert content_hash(a) != content_hash(a.reshape(3, 2))
    assert content_hash(a) != content_hash(a.astype(np.float32))
    assert content_hash(np.array(1.5)) != content_hash(np.float64(1.5))
    assert content_hash(np.array(1.5)) != content_hash(1.5)
    assert content_hash(np.arange(10)[::2]) == content_hash(np.arange(0, 10, 2))


def test_object_arrays_are_pickled(con: duckdb.DuckDBPyConnection) -> None:
    value = np.array(["a", None, 1], dtype=object)
    encoded = encode(value, step="s")
    assert encoded.ref.codec is Codec.PICKLE and encoded.ref.type_name == "numpy.ndarray"
    for back in stored_paths(encoded, con):
        assert back.dtype == object and back.tolist() == value.tolist()


# -- pickle, errors, names -------------------------------------------------------------


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_pickled_objects_round_trip(con: duckdb.DuckDBPyConnection) -> None:
    value = {"p": Point(3), "f": lambda x: x + 1}
    encoded = encode(value, step="s")
    assert encoded.ref.codec is Codec.PICKLE and encoded.ref.type_name == "builtins.dict"
    back = decode(encoded.ref, data=encoded.data)
    assert back["p"] == Point(3) and back["f"](1) == 2
    assert encode(Point(1), step="s").ref.type_name == f"{__name__}.Point"
    assert content_hash(Point(1)) == content_hash(Point(1)) != content_hash(Point(2))


@pytest.mark.parametrize(
    ("value", "type_text"),
    [((i for i in range(3)), "builtins.generator"), (threading.Lock(), "_thread.lock")],
    ids=["generator", "lock"],
)
def test_unpicklable_values_raise_serialization_error(value: Any, type_text: str) -> None:
    with pytest.raises(SerializationError) as caught:
        encode(value, step="make_things")
    message = str(caught.value)
    assert "step 'make_things'" in message
    assert f"(a {type_text})" in message
    assert "cannot be pickled" in message
    assert caught.value.step == "make_things"
    assert isinstance(caught.value.__cause__, Exception)


def test_frames_with_unpicklable_objects_raise_serialization_error() -> None:
    frame = pd.DataFrame({"o": [threading.Lock()]})
    with pytest.raises(SerializationError, match=r"step 'f' \(a pandas\.DataFrame\)"):
        encode(frame, step="f")


def test_untrusted_stores_refuse_pickles_only(con: duckdb.DuckDBPyConnection) -> None:
    encoded = encode(Point(1), step="s")
    with pytest.raises(UntrustedStoreError) as caught:
        decode(encoded.ref, data=encoded.data, trust=False)
    message = str(caught.value)
    assert "unpickle" in message and "arbitrary code" in message
    assert "nf.open_store(path, trust=True)" in message
    assert f"{__name__}.Point" in message
    for value in (FRAMES["strings"][0], FRAMES["float16"][0], np.arange(3), {"a": 1}, "x" * 9999):
        encoded = encode(value, step="s")
        assert encoded.ref.codec is not Codec.PICKLE
        stored_paths(encoded, con, trust=False)


def test_decode_needs_what_the_codec_stores() -> None:
    encoded = encode(pd.DataFrame({"a": [1]}), step="s")
    with pytest.raises(ValueError, match="table"):
        decode(encoded.ref, meta=encoded.meta)
    with pytest.raises(ValueError, match="data"):
        decode(encode(np.arange(2), step="s").ref)


def test_type_names() -> None:
    assert type_name(pd.DataFrame) == "pandas.DataFrame"
    assert type_name(pd.Series) == "pandas.Series"
    assert type_name(np.ndarray) == "numpy.ndarray"
    assert type_name(np.float64) == "numpy.float64"
    assert type_name(dict) == "builtins.dict"
    assert type_name(pa.Table) == "pyarrow.Table"
    assert type_name(Point) == f"{__name__}.Point"
