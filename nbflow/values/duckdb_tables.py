"""Arrow tables as native DuckDB tables, and the layout that makes the trip lossless.

A frame's Arrow table (as ``pa.Table.from_pandas`` builds it) is not stored as is:
:func:`storage_table` gives it DuckDB-friendly column names and types, and
:func:`restore_table` turns whatever :func:`read_table` returns (DuckDB widens time
zones to UTC, decodes dictionaries to plain values, narrows ``large_string``...) back into
the original table, given its schema. Ordinary columns keep their names and types, so the
stored tables stay pleasant to query with SQL.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "copy_table",
    "duckdb_can_hold",
    "quote_identifier",
    "read_table",
    "restore_table",
    "storage_table",
    "wants_large_buffers",
    "write_table",
]


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded double quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def write_table(
    con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, *, schema: str | None = None
) -> None:
    """Create the DuckDB table ``name`` (in ``schema``, if given) holding ``table``.

    Runs in the caller's transaction. DuckDB scans the Arrow buffers directly (no pandas
    round trip); the table is exposed under a unique temporary view name for the length
    of the statement only.
    """
    view = f"__nbflow_arrow_{uuid.uuid4().hex}"
    con.register(view, table)
    try:
        con.execute(
            f"CREATE TABLE {_qualified(name, schema)} AS SELECT * FROM {quote_identifier(view)}"
        )
    finally:
        con.unregister(view)


def read_table(con: duckdb.DuckDBPyConnection, name: str, *, schema: str | None = None) -> pa.Table:
    """The DuckDB table ``name`` (in ``schema``, if given) as an Arrow table.

    Rows come back in insertion order as long as DuckDB's ``preserve_insertion_order``
    setting is on (the default).
    """
    # con.sql(...).to_arrow_table() rather than execute(...): the latter warns in duckdb 2.0.
    return con.sql(f"SELECT * FROM {_qualified(name, schema)}").to_arrow_table()


def wants_large_buffers(meta: Mapping[str, object]) -> bool:
    """Whether DuckDB should hand a stored frame's text and bytes back with 64-bit offsets
    (``arrow_large_buffer_size``), given the frame's meta.

    True when most of the original text and binary columns are large ones (pandas' own
    ``str`` dtype is ``large_string``): each such column then needs no cast on the way
    back, where DuckDB's default would give ``string`` to be widened again.
    """
    encoded = meta.get("schema")
    if not isinstance(encoded, str):
        return False
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))
    except Exception:  # not a schema we can read: decoding will say so, not this hint
        return False
    large = small = 0
    for field in schema:
        typ = field.type
        if pa.types.is_large_string(typ) or pa.types.is_large_binary(typ):
            large += 1
        elif pa.types.is_string(typ) or pa.types.is_binary(typ):
            small += 1
    return large > small


def _qualified(name: str, schema: str | None) -> str:
    """``"schema"."name"``, each part quoted on its own (a dot in ``name`` stays in it)."""
    if schema is None:
        return quote_identifier(name)
    return f"{quote_identifier(schema)}.{quote_identifier(name)}"


def duckdb_can_hold(table: pa.Table) -> bool:
    """Whether ``table`` (from ``pa.Table.from_pandas``) survives a trip through DuckDB.

    True when every column has a type that :func:`storage_table`, DuckDB and
    :func:`restore_table` carry without loss; false for tables without columns (DuckDB
    refuses them), half floats, times, unions, dictionaries of nested values, and
    tz-aware second/millisecond timestamps beyond DuckDB's microsecond range.
    """
    if table.num_columns == 0:
        return False
    for column in table.columns:
        if not _holdable(column.type, top=True):
            return False
        if not _timestamps_fit(column):
            return False
    return True


def copy_table(table: pa.Table) -> pa.Table:
    """A deep copy of ``table``, sharing no buffers with it.

    ``encode`` hands out tables that share memory with the step's frame (from_pandas is
    zero-copy for numeric columns), so a store keeping the table itself, rather than
    writing it to DuckDB at once, should keep a copy: later in-place edits of the frame
    would otherwise change the stored value under its hash.
    """
    memory = pa.default_cpu_memory_manager()
    batches = [batch.copy_to(memory) for batch in table.to_batches()]
    return pa.Table.from_batches(batches, schema=table.schema)


def storage_table(table: pa.Table, names: Sequence[str] | None = None) -> pa.Table:
    """``table`` laid out for DuckDB: safe column names, durations as int64, no metadata.

    ``names`` are preferred names for the first columns (the frame's own labels, where
    the schema has positions instead). :func:`restore_table` undoes all this given the
    original schema; the renaming is positional, so any column name survives.
    """
    wanted = list(names or ()) + table.schema.names[len(names or ()) :]
    names = _storage_names(wanted, set(_index_fields(table.schema)))
    columns = [_storage_column(column) for column in table.columns]
    return pa.Table.from_arrays(columns, names=names)


def restore_table(
    table: pa.Table,
    schema: pa.Schema,
    dictionaries: Mapping[int, pa.Array] | None = None,
) -> pa.Table:
    """Cast a stored table (or the one DuckDB returns) back to the original ``schema``.

    ``dictionaries`` holds, per column index, the dictionary (pandas categories) of each
    dictionary-typed column: DuckDB hands those back as plain values, and the original
    codes are rebuilt from it so unused categories and their order survive.
    """
    if table.num_columns != len(schema):
        raise ValueError(
            f"the stored table has {table.num_columns} columns where its schema has {len(schema)}"
        )
    dictionaries = dictionaries or {}
    columns = [
        _restore_column(table.column(i), field.type, dictionaries.get(i))
        for i, field in enumerate(schema)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


# -- types -----------------------------------------------------------------------------

# The largest |value| of a microsecond timestamp DuckDB takes (int64 extremes are its
# +/- infinity markers).
_MAX_MICROS = 2**63 - 2
_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000}


def _holdable(typ: pa.DataType, *, top: bool) -> bool:
    """Whether DuckDB holds ``typ`` and hands it back in a form we can cast back from."""
    if (
        pa.types.is_null(typ)
        or pa.types.is_boolean(typ)
        or pa.types.is_integer(typ)
        or typ in (pa.float32(), pa.float64())
        or pa.types.is_string(typ)
        or pa.types.is_large_string(typ)
        or pa.types.is_string_view(typ)
        or pa.types.is_binary(typ)
        or pa.types.is_large_binary(typ)
        or pa.types.is_date(typ)
        or pa.types.is_decimal128(typ)
    ):
        return True
    if pa.types.is_timestamp(typ):
        # DuckDB widens tz-aware s/ms timestamps to microseconds; _timestamps_fit checks
        # the values of top-level columns, nested ones are not worth the trouble.
        return top or typ.tz is None or typ.unit not in ("s", "ms")
    if pa.types.is_duration(typ):  # stored as int64: DuckDB would make it an INTERVAL
        return top
    if isinstance(typ, pa.BaseExtensionType):  # pandas periods, intervals: their storage
        return top and _holdable(typ.storage_type, top=True)
    if pa.types.is_dictionary(typ):  # pandas categoricals
        value_type = typ.value_type
        return top and not pa.types.is_nested(value_type) and _holdable(value_type, top=False)
    if pa.types.is_struct(typ):
        return typ.num_fields > 0 and all(
            _holdable(typ.field(i).type, top=False) for i in range(typ.num_fields)
        )
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _holdable(typ.value_type, top=False)
    return False


def _timestamps_fit(column: pa.ChunkedArray) -> bool:
    """False for tz-aware s/ms timestamps DuckDB cannot widen to microseconds."""
    typ = column.type
    if isinstance(typ, pa.BaseExtensionType) or pa.types.is_dictionary(typ):
        return True  # only flat timestamp columns are widened
    if not (pa.types.is_timestamp(typ) and typ.tz is not None and typ.unit in ("s", "ms")):
        return True
    if len(column) == column.null_count:
        return True
    extremes = pc.min_max(column.cast(pa.int64()))
    limit = _MAX_MICROS // _MICROS_PER_UNIT[typ.unit]
    return bool(-limit <= extremes["min"].as_py() and extremes["max"].as_py() <= limit)


def _storage_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    typ = column.type
    if isinstance(typ, pa.BaseExtensionType):
        return pa.chunked_array([chunk.storage for chunk in column.chunks], typ.storage_type)
    if pa.types.is_duration(typ):
        return column.cast(pa.int64())
    return column


def _restore_column(
    column: pa.ChunkedArray, target: pa.DataType, dictionary: pa.Array | None
) -> pa.ChunkedArray:
    """One stored column cast back to its original type."""
    if pa.types.is_dictionary(target):
        # (A column without chunks has lost its dictionary: rebuild it.)
        if (
            column.num_chunks
            and column.type == target
            and (dictionary is None or all(c.dictionary.equals(dictionary) for c in column.chunks))
        ):
            return column
        return _rebuild_dictionary(column, target, dictionary)
    if column.type == target:
        return column
    if isinstance(target, pa.BaseExtensionType):
        storage = _restore_column(column, target.storage_type, None)
        chunks = [pa.ExtensionArray.from_storage(target, c) for c in storage.chunks]
        return pa.chunked_array(chunks, target)
    if pa.types.is_null(target):
        return pa.chunked_array([pa.nulls(len(column))], pa.null())
    return column.cast(target)


def _rebuild_dictionary(
    column: pa.ChunkedArray, target: pa.DictionaryType, dictionary: pa.Array | None
) -> pa.ChunkedArray:
    """Re-encode plain values against the original dictionary (the pandas categories)."""
    if dictionary is None:
        raise ValueError(f"no dictionary was kept for a column of type {target}")
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)  # decode DuckDB's own dictionary
    if len(dictionary) == 0:
        codes = pa.chunked_array([pa.nulls(len(column), target.index_type)])
    else:
        values = column.cast(target.value_type)
        codes = pc.index_in(values, value_set=dictionary).cast(target.index_type)
    # At least one chunk: pandas takes the categories from the chunks' dictionaries, and
    # DuckDB returns an empty table without any.
    chunks = [
        pa.DictionaryArray.from_arrays(c, dictionary, ordered=target.ordered)
        for c in codes.chunks or [pa.array([], target.index_type)]
    ]
    return pa.chunked_array(chunks, target)


# -- names -----------------------------------------------------------------------------

_UNNAMED_INDEX = re.compile(r"__index_level_(\d+)__")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME = 255


def _storage_names(wanted: list[str], index_fields: set[str]) -> list[str]:
    """Column names DuckDB keeps as they are; the rest become positional names.

    Ordinary names stay. Empty names, names with control characters, and names that
    clash case-insensitively with an earlier one (DuckDB identifiers ignore case) become
    ``c<position>``; pandas' unnamed index levels become ``index`` / ``level_<k>``, the
    names ``reset_index()`` would give them.
    """
    proposals: list[str | None] = []
    taken: set[str] = set()
    for name in wanted:
        ordinary = (
            name
            and len(name) <= _MAX_NAME
            and not _CONTROL.search(name)
            and name.lower() not in taken
            and not (name in index_fields and _UNNAMED_INDEX.fullmatch(name))
        )
        proposals.append(name if ordinary else None)
        if ordinary:
            taken.add(name.lower())
    names: list[str] = []
    for position, (name, proposal) in enumerate(zip(wanted, proposals, strict=True)):
        if proposal is None:
            match = _UNNAMED_INDEX.fullmatch(name) if name in index_fields else None
            if match and len(index_fields) == 1:
                proposal = "index"
            elif match:
                proposal = f"level_{match.group(1)}"
            else:
                proposal = f"c{position}"
            while proposal.lower() in taken:
                proposal += "_"
            taken.add(proposal.lower())
        names.append(proposal)
    return names


def _index_fields(schema: pa.Schema) -> list[str]:
    """The names of the fields that hold a pandas index (from the pandas metadata)."""
    pandas_meta = schema.pandas_metadata or {}
    return [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
