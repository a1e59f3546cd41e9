"""The frame codecs: ``ARROW`` (a native DuckDB table) and ``ARROW_IPC`` for pandas
DataFrames and Series that Arrow holds exactly, and rebuilding them from their table.

:func:`encode_pandas` returns a :class:`~nbflow.values.frame_refusal.TableRefusal` for
a frame that would not come back identical (it is then pickled, and the refusal says
why); what Arrow's pandas metadata cannot rebuild (object columns, column labels, index
frequencies) travels in the value's meta.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from nbflow.values.duckdb_tables import duckdb_can_hold, restore_table, storage_table
from nbflow.values.encoded import EncodedValue
from nbflow.values.frame_refusal import TableRefusal, label_text, object_refusal
from nbflow.values.hashing import hash_arrow_table
from nbflow.values.json_codec import json_exact
from nbflow.values.refs import Codec, ValueRef, type_name

# pandas registers its Arrow extension types (periods, intervals) only when it first
# converts one; a fresh process decoding a stored schema needs them registered first.
with contextlib.suppress(ImportError):
    import pandas.core.arrays.arrow.extension_types

__all__ = ["array_from_b64", "encode_pandas", "from_table", "ipc_buffer"]

_SAMPLE_ROWS = 3  # rows of a frame decoded at encode time to prove the round trip


def encode_pandas(value: pd.DataFrame | pd.Series) -> EncodedValue | TableRefusal:
    """ARROW or ARROW_IPC for a frame Arrow holds exactly, else why not (to be pickled)."""
    series = isinstance(value, pd.Series)
    frame: pd.DataFrame = value.to_frame() if isinstance(value, pd.Series) else value
    owner = "s" if series else "df"  # how a fix names the value
    labels = None
    if not frame.columns.is_unique:
        # from_pandas refuses duplicate column names: store under positions, keep the names.
        labels = _plain_labels(frame.columns)
        if labels is None:
            return TableRefusal(
                "the column labels",
                "repeated labels that are not all str or int (a table keeps repeats only of those)",
                "df = df.loc[:, ~df.columns.duplicated()]",
            )
        frame = frame.set_axis(pd.RangeIndex(frame.shape[1]), axis=1)
    meta = _pandas_meta(frame, owner)
    if isinstance(meta, TableRefusal):
        return meta
    if labels is not None:
        meta["labels"] = labels
    meta["kind"] = "series" if series else "frame"
    if series:
        # The column label comes back as a numpy scalar (or as 0 for an unnamed series):
        # keep plain names as they are.
        name = value.name
        if name is None or (type(name) in (str, int, bool) and json_exact(name)):
            meta["name"] = [name]
    try:
        table = pa.Table.from_pandas(frame)
    except (pa.ArrowException, TypeError, ValueError, NotImplementedError) as exc:
        return _conversion_refusal(frame, owner, exc)
    in_duckdb = duckdb_can_hold(table)
    if not _sample_round_trips(value, frame, meta, in_duckdb):
        return _round_trip_refusal(value, frame, owner, in_duckdb)

    codec = Codec.ARROW if in_duckdb else Codec.ARROW_IPC
    extra = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    digest = hash_arrow_table(codec.value, table, extra)
    name = type_name(type(value))
    if not in_duckdb:
        ipc = ipc_buffer(table)
        ref = ValueRef(codec, digest, ipc.size, name)
        return EncodedValue(ref=ref, chunks=[memoryview(ipc)], meta=meta)
    meta["schema"] = base64.b64encode(table.schema.serialize().to_pybytes()).decode("ascii")
    meta["dictionaries"] = {
        str(i): _array_to_b64(dictionary) for i, dictionary in _dictionaries(table).items()
    }
    ref = ValueRef(codec, digest, table.nbytes, name)
    # Duplicate names are stored under their own names where DuckDB allows (see above).
    names = None if labels is None else [str(v) for v in labels["values"]]
    return EncodedValue(ref=ref, table=storage_table(table, names), meta=meta)


def _plain_labels(labels: pd.Index) -> dict[str, Any] | None:
    """Flat str or int column labels as JSON (to rebuild them exactly), else None."""
    if isinstance(labels, pd.MultiIndex) or str(labels.dtype) not in ("str", "object", "int64"):
        return None
    values = labels.tolist()
    if not all(type(v) in (str, int) and json_exact(v) for v in values):
        return None
    if labels.name is not None and type(labels.name) is not str:
        return None
    return {"values": values, "dtype": str(labels.dtype), "name": labels.name}


def _pandas_meta(frame: pd.DataFrame, owner: str = "df") -> dict[str, Any] | TableRefusal:
    """What decoding needs beyond Arrow's pandas metadata, or why Arrow cannot do it
    (``owner`` names the frame in the fix: ``df``, or ``s`` for a series).

    Arrow drops an index's ``freq``, and pandas 3 reads strings back as ``str`` even
    from object columns; object columns must hold only ``str`` (or only ``bytes``) with
    one kind of missing value (None or NaN) to come back exactly.
    """
    if not frame.columns.is_unique:  # from_pandas refuses duplicate names
        return TableRefusal(
            "the column labels", "repeated labels", "df = df.loc[:, ~df.columns.duplicated()]"
        )
    if not frame.flags.allows_duplicate_labels:  # Arrow has no place for flags
        return TableRefusal(
            "the frame",
            "flags.allows_duplicate_labels=False, which a table does not keep",
            f"{owner} = {owner}.set_flags(allows_duplicate_labels=True)",
        )
    meta: dict[str, Any] = {}
    objects, python_strings = [], []
    for position, dtype in enumerate(frame.dtypes):
        if _is_object(dtype):
            cells = frame.iloc[:, position].to_numpy()
            na = _object_missing(cells)
            if na is None:
                return object_refusal(cells, *_column_words(frame, position, owner))
            objects.append([position, na])
        elif isinstance(dtype, pd.StringDtype) and dtype.storage == "python":
            # Arrow reads every string column back with pyarrow storage.
            python_strings.append([position, "nan" if dtype.na_value is np.nan else "NA"])
    if objects:
        meta["object_values"] = objects
    if python_strings:
        meta["python_strings"] = python_strings
    if type(frame.columns) is pd.RangeIndex:  # Arrow rebuilds it as an int64 Index
        labels = frame.columns
        meta["labels_range"] = [labels.start, labels.stop, labels.step]
    # "labels": the column labels (frame.columns), an index of their own.
    for key, index in (("index", frame.index), ("labels", frame.columns)):
        levels = []
        for level in range(index.nlevels):
            values = index.get_level_values(level)
            if _is_object(values.dtype):
                na = _object_missing(values.to_numpy())
                if na is None:
                    where, target = _axis_words(key, index, level, owner)
                    return object_refusal(values.to_numpy(), where, target, None)
                levels.append([level, na])
        if levels:
            meta[f"object_{key}"] = levels
        freq = getattr(index, "freqstr", None)
        if freq is not None:
            meta[f"{key}_freq"] = freq
    return meta


def _column_words(frame: pd.DataFrame, position: int, owner: str) -> tuple[str, str, Any]:
    """How a refusal names column ``position``: in words, in code, and as JSON."""
    if owner == "s":
        return "the series", "s", None
    label = frame.columns[position]
    return f"column {label!r}", f"df[{label!r}]", label_text(label)


def _axis_words(key: str, index: pd.Index, level: int, owner: str) -> tuple[str, str]:
    """How a refusal names level ``level`` of the index or the column labels."""
    if key == "labels":
        return "the column labels", "df.columns"
    where = "the index" if index.nlevels == 1 else f"level {level} of the index"
    return where, f"{owner}.index"


def _conversion_refusal(frame: pd.DataFrame, owner: str, exc: Exception) -> TableRefusal:
    """Why Arrow could not convert ``frame``: the first column it cannot convert alone."""
    for position in range(frame.shape[1]):
        try:
            pa.Table.from_pandas(frame.iloc[:, [position]], preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError, NotImplementedError) as one:
            where, target, column = _column_words(frame, position, owner)
            reason = f"values Arrow cannot convert ({_short(one)})"
            return TableRefusal(where, reason, f"{target} = {target}.astype(str)", column)
    reason = f"values Arrow cannot convert ({_short(exc)})"
    return TableRefusal("the index", reason, f"{owner} = {owner}.reset_index()")


def _round_trip_refusal(
    value: pd.DataFrame | pd.Series, frame: pd.DataFrame, owner: str, in_duckdb: bool
) -> TableRefusal:
    """Why the sample rows did not come back identical: the first column that does not
    come back alone, else the frame as a whole (its index, attrs or flags)."""
    if isinstance(value, pd.DataFrame) and frame.shape[1] > 1:
        for position in range(frame.shape[1]):
            part = value.iloc[:, [position]]
            meta = _pandas_meta(part, owner)
            if isinstance(meta, TableRefusal):
                continue
            meta["kind"] = "frame"
            if not _sample_round_trips(part, part, meta, in_duckdb):
                where, target, column = _column_words(frame, position, owner)
                dtype = frame.dtypes.iloc[position]
                reason = f"values of dtype {dtype}, which do not come back identical from a table"
                return TableRefusal(where, reason, f"{target} = {target}.astype(str)", column)
    if value.attrs:
        reason = f".attrs ({', '.join(map(repr, value.attrs))}), which a table does not keep"
        return TableRefusal("the frame", reason, f"{owner}.attrs = {{}}")
    return TableRefusal(
        "the frame",
        "an index or a dtype that does not come back identical from a table",
        f"{owner} = {owner}.reset_index()",
    )


def _short(exc: Exception, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_object(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind == "O"


def _object_missing(values: np.ndarray) -> str | None:
    """How an object column marks missing values ("none", "nan", "" for none missing),
    or None when its values do not come back from Arrow as they are."""
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "bytes", "empty"):
        return None
    missing = pd.isna(values)
    if not missing.any():
        return ""
    kinds = {type(v) for v in values[missing]}
    if kinds == {type(None)}:
        return "none"
    if kinds == {float}:
        return "nan"
    return None  # pd.NA, NaT, a mix: Arrow keeps only "null"


def _sample_round_trips(
    value: pd.DataFrame | pd.Series, frame: pd.DataFrame, meta: dict[str, Any], in_duckdb: bool
) -> bool:
    """Decode the first rows as the stored value will be decoded, and compare.

    Catches what dtype rules would miss (exotic extension dtypes, index types Arrow's
    pandas metadata cannot rebuild); the values themselves are checked by type above.
    """
    rows = min(len(frame), _SAMPLE_ROWS)
    try:
        table = pa.Table.from_pandas(frame.iloc[:rows])
        if in_duckdb:
            table = restore_table(storage_table(table), table.schema, _dictionaries(table))
        back = from_table(table, meta)
        return _identical(value.iloc[:rows], back)
    except Exception:  # any failure at all means this path cannot be trusted
        return False


def from_table(table: pa.Table, meta: Mapping[str, Any]) -> pd.DataFrame | pd.Series:
    """The frame (or series) of a table with its original schema, fixed up per ``meta``."""
    # to_pandas() allocates fresh, writable blocks (split_blocks would be zero-copy but
    # read-only, and shared with a table the memory store keeps).
    frame = table.to_pandas()
    for position, na in meta.get("object_values", ()):
        # An explicit object Series: pandas 3 would infer "str" from a bare object array.
        values = _as_object(frame.iloc[:, position].to_numpy(), na)
        frame.isetitem(position, pd.Series(values, index=frame.index, dtype=object, copy=False))
    for position, na in meta.get("python_strings", ()):
        dtype = pd.StringDtype("python", na_value=np.nan if na == "nan" else pd.NA)
        frame.isetitem(position, frame.iloc[:, position].astype(dtype))
    if "labels_range" in meta:
        start, stop, step = meta["labels_range"]
        frame.columns = pd.RangeIndex(start, stop, step, name=frame.columns.name)
    if "labels" in meta:
        labels = meta["labels"]
        frame.columns = pd.Index(labels["values"], dtype=labels["dtype"], name=labels["name"])
    if "object_index" in meta:
        frame.index = _object_levels(frame.index, meta["object_index"])
    if "object_labels" in meta:
        frame.columns = _object_levels(frame.columns, meta["object_labels"])
    if "index_freq" in meta:
        frame.index = _with_freq(frame.index, meta["index_freq"])
    if "labels_freq" in meta:
        frame.columns = _with_freq(frame.columns, meta["labels_freq"])
    if meta.get("kind") == "series":
        series = frame.iloc[:, 0]
        if "name" in meta:
            series.name = meta["name"][0]
        return series
    return frame


def _as_object(values: np.ndarray, na: str) -> np.ndarray:
    """An object array of ``values`` with missing values as None or NaN."""
    out = np.array(values, dtype=object, copy=True)
    if na:
        out[pd.isna(out)] = None if na == "none" else np.nan
    return out


def _object_levels(index: pd.Index, levels: list[list[Any]]) -> pd.Index:
    """``index`` with the given levels turned back into object dtype."""
    if isinstance(index, pd.MultiIndex):
        for level, _na in levels:  # a MultiIndex level holds no missing values
            index = index.set_levels(index.levels[level].astype(object), level=level)
        return index
    [[_level, na]] = levels
    return pd.Index(_as_object(index.to_numpy(), na), dtype=object, name=index.name)


def _with_freq(index: pd.Index, freq: str) -> pd.Index:
    if isinstance(index, pd.DatetimeIndex):
        return pd.DatetimeIndex(index, freq=freq)
    if isinstance(index, pd.TimedeltaIndex):
        return pd.TimedeltaIndex(index, freq=freq)
    return index


def _identical(expected: pd.DataFrame | pd.Series, actual: Any) -> bool:
    """Strict equality of two small frames or series: values, dtypes, axes, names, attrs."""
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, pd.DataFrame):
        other = cast(pd.DataFrame, actual)
        if not _index_identical(expected.columns, other.columns):
            return False
        dtypes = list(zip(expected.dtypes, other.dtypes, strict=True))
    else:
        if expected.name != actual.name or type(expected.name) is not type(actual.name):
            return False
        dtypes = [(expected.dtype, actual.dtype)]
    if not all(_dtype_identical(left, right) for left, right in dtypes):
        return False
    for position, (dtype, _) in enumerate(dtypes):
        if _is_object(dtype):
            left, right = (
                (x.iloc[:, position] if isinstance(x, pd.DataFrame) else x).to_numpy()
                for x in (expected, actual)
            )
            if not _same_missing(left, right):
                return False
    return (
        _index_identical(expected.index, actual.index)
        and expected.attrs == actual.attrs
        and expected.flags == actual.flags
        and bool(expected.equals(actual))
    )


def _index_identical(left: pd.Index, right: pd.Index) -> bool:
    if type(left) is not type(right) or list(left.names) != list(right.names):
        return False
    if getattr(left, "freq", None) != getattr(right, "freq", None):
        return False
    for level in range(left.nlevels):
        a, b = left.get_level_values(level), right.get_level_values(level)
        if not _dtype_identical(a.dtype, b.dtype):
            return False
        if _is_object(a.dtype) and not _same_missing(a.to_numpy(), b.to_numpy()):
            return False
    return bool(left.equals(right))


def _dtype_identical(left: Any, right: Any) -> bool:
    if left != right or type(left) is not type(right):
        return False
    if isinstance(left, pd.CategoricalDtype):
        # Unordered categoricals compare equal whatever their categories' order.
        return bool(
            left.categories.equals(right.categories)
            and _dtype_identical(left.categories.dtype, right.categories.dtype)
        )
    return True


def _same_missing(left: np.ndarray, right: np.ndarray) -> bool:
    """Whether two object arrays have the same kind of missing value at each position."""
    return [type(v) for v in left[pd.isna(left)]] == [type(v) for v in right[pd.isna(right)]]


def _dictionaries(table: pa.Table) -> dict[int, pa.Array]:
    """The dictionary (pandas categories) of each dictionary-typed column, by position."""
    out = {}
    for i, column in enumerate(table.columns):
        if pa.types.is_dictionary(column.type):
            if column.num_chunks > 1:  # from_pandas makes one chunk; others may not
                column = pa.table({"c": column}).unify_dictionaries().column(0)
            out[i] = (
                column.chunk(0).dictionary
                if column.num_chunks
                else pa.array([], column.type.value_type)
            )
    return out


def ipc_buffer(table: pa.Table, options: pa.ipc.IpcWriteOptions | None = None) -> pa.Buffer:
    """``table`` as an Arrow IPC stream, in one Arrow buffer (no copy to Python bytes)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _ipc_bytes(table: pa.Table) -> bytes:
    return ipc_buffer(table).to_pybytes()


def _array_to_b64(array: pa.Array) -> str:
    return base64.b64encode(_ipc_bytes(pa.table({"values": array}))).decode("ascii")


def array_from_b64(text: str) -> pa.Array:
    """The array :func:`_array_to_b64` wrote (a frame's categories, kept in its meta)."""
    table = pa.ipc.open_stream(pa.py_buffer(base64.b64decode(text))).read_all()
    return table.column(0).combine_chunks()
