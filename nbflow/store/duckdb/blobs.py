"""How the DuckDB store lays out a value's bytes, and writes and reads them in bounded
memory.

Three layouts, told apart by the blob row itself (see ``DuckDBValues``):

* small bytes (under :data:`WORDS_BYTES`) sit in the ``data`` column of their ``blobs``
  row;
* larger bytes get a table of their own, ``nbflow_values.v_<hash>``, holding them as a
  column of 8-byte words (``w BIGINT``, the last word zero-padded; the row's ``size`` is
  the true length). A fixed-width column is what DuckDB writes best: straight into the
  file in row groups, without the write-ahead log and without the in-memory overflow
  pages a big BLOB needs (a 200 MB BLOB parameter cost ~4x its size in memory, and
  BLOBs of 100 KB take ~2x their size on disk);
* a small DataFrame (Arrow size under :data:`COMPACT_FRAME_BYTES`) sits in its row as an
  Arrow IPC stream, compressed: a table of its own would take at least one 256 KB block
  of the file, whatever its size. ``store.sql`` sees it as a table all the same (see
  ``DuckDBValues._materialize_compact``).

DuckDB keeps every block it writes or reads in its buffer pool, up to its memory limit
(80% of RAM by default), so a value written whole would stay in memory a second time.
:func:`lower_memory` lowers the limit for the length of one big write or read, so
DuckDB lets go of blocks as soon as they are on disk (or copied out).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import duckdb
import numpy as np
import pyarrow as pa

from nbflow.values.encoded import Buffer

__all__ = [
    "COMPACT_FRAME_BYTES",
    "WORDS_BYTES",
    "WORKING_MEMORY",
    "bounded_memory",
    "compact_frame",
    "lower_memory",
    "read_compact_frame",
    "read_words",
    "restore_memory",
    "working_memory",
    "write_words",
]

#: Bytes at least this long get a table of their own (one DuckDB block: below it, the
#: table's first block would be mostly empty).
WORDS_BYTES = 256 * 1024

#: DataFrames whose Arrow table is smaller than this are kept in their blobs row.
COMPACT_FRAME_BYTES = 256 * 1024

#: The memory DuckDB may take on top of what it holds while a big value is written or
#: read (its limit is never raised by it).
WORKING_MEMORY = 32 * 1024 * 1024

_WORD = 8
_ROW_GROUP = 122_880  # rows of a DuckDB row group
_ROW_GROUPS_BUFFERED = 5  # DuckDB's write_buffer_row_group_count
_WRITE_BUFFER_SHARE = 0.2  # of the memory limit: DuckDB's write_buffer_row_group_memory_limit
_BATCH_WORDS = _ROW_GROUP  # one row group of words (~1 MB) per Arrow batch
_SCHEMA = pa.schema([("w", pa.int64())])
_COMPACT_OPTIONS = pa.ipc.IpcWriteOptions(
    compression="zstd" if pa.Codec.is_available("zstd") else None
)


def working_memory(row_bytes: float = _WORD, threads: int = 1) -> int:
    """The extra memory for writing a table whose rows take ``row_bytes`` each, with
    ``threads`` DuckDB threads: :data:`WORKING_MEMORY`, plus enough that DuckDB's write
    buffer (a fifth of its limit, shared by the threads) still holds the 5 row groups a
    thread buffers before it flushes them (fewer, and a 10M-row frame wrote ~10% slower).
    """
    per_thread = _ROW_GROUPS_BUFFERED * _ROW_GROUP * row_bytes / _WRITE_BUFFER_SHARE
    return WORKING_MEMORY + int(threads * per_thread)


@contextmanager
def bounded_memory(con: duckdb.DuckDBPyConnection, extra: int = WORKING_MEMORY) -> Iterator[bool]:
    """Let DuckDB take at most ``extra`` more bytes inside the block (see
    :func:`lower_memory`); yield whether its limit was lowered. Not for a block in an
    explicit transaction that may fail: the limit is put back once it is rolled back."""
    before = lower_memory(con, extra)
    try:
        yield before is not None
    finally:
        restore_memory(con, before)


def lower_memory(con: duckdb.DuckDBPyConnection, extra: int) -> str | None:
    """Lower DuckDB's memory limit to what it uses now plus ``extra`` bytes; return the
    limit it had, for :func:`restore_memory` (None when it was not lowered).

    What DuckDB holds already (indexes, cached blocks) stays; what the work reads or
    writes beyond ``extra`` is let go as it goes. The limit is the database's (every
    connection to the file in this process shares it): keep the bounded work short,
    under the store's lock. It is left as it is when it is already lower, or when DuckDB
    refuses the change (a locked configuration): the work then runs unbounded.
    """
    try:
        ((before, used),) = con.execute(
            "SELECT current_setting('memory_limit'), "
            "(SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory())"
        ).fetchall()
    except duckdb.Error:
        return None
    current, limit = _bytes(before), int(used) + extra
    if current is None or current <= limit:
        return None
    try:
        con.execute(f"SET memory_limit = '{-(-limit // 2**20)}MiB'")
    except duckdb.Error:
        return None
    return str(before)


def restore_memory(con: duckdb.DuckDBPyConnection, before: str | None) -> None:
    """Put back the memory limit :func:`lower_memory` lowered (nothing for None).

    Call it before a commit (a checkpoint must never run short of memory), and outside a
    failed transaction. The default limit is put back exactly (its text is rounded).
    """
    if before is None:
        return
    con.execute("RESET memory_limit")
    ((now,),) = con.execute("SELECT current_setting('memory_limit')").fetchall()
    if now != before:  # it was someone's own setting, not the default
        con.execute("SET memory_limit = '{}'".format(before.replace("'", "''")))


def _bytes(text: object) -> int | None:
    """A DuckDB size text ('18.8 GiB', '128.0 MiB') in bytes, roughly; None if unknown."""
    if not isinstance(text, str):
        return None
    number, _, unit = text.strip().partition(" ")
    scale = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    scale.update({"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12})
    try:
        return int(float(number) * scale[unit or "bytes"])
    except (KeyError, ValueError):
        return None


def write_words(
    con: duckdb.DuckDBPyConnection, name: str, chunks: Sequence[Buffer], nbytes: int
) -> None:
    """Create the table ``name`` holding the concatenation of ``chunks`` (``nbytes`` long)
    as 8-byte words, in the caller's transaction.

    The chunks are copied into one ~1 MB batch at a time, as DuckDB asks for them, so
    what is in memory at once is a batch, not the value.
    """
    con.execute(f"CREATE TABLE {name} (w BIGINT)")
    if nbytes:
        reader = pa.RecordBatchReader.from_batches(_SCHEMA, _batches(chunks, nbytes))
        con.from_arrow(reader).insert_into(name)


def _batches(chunks: Sequence[Buffer], nbytes: int) -> Iterator[pa.RecordBatch]:
    """The bytes of ``chunks`` as batches of int64 words, zero-padded at the end."""
    words = -(-nbytes // _WORD)
    pending = [memoryview(c).cast("B") for c in chunks]
    pending.reverse()  # popped from the end, in order
    current = memoryview(b"")
    for first in range(0, words, _BATCH_WORDS):
        count = min(_BATCH_WORDS, words - first)
        batch = np.zeros(count, dtype="<i8")  # fresh: DuckDB may still read the last one
        out = memoryview(batch.data).cast("B")
        filled = 0
        while filled < len(out) and (current or pending):
            if not current:
                current = pending.pop()
                continue
            take = min(len(current), len(out) - filled)
            out[filled : filled + take] = current[:take]
            current = current[take:]
            filled += take
        yield pa.record_batch([pa.array(batch)], schema=_SCHEMA)


def read_words(con: duckdb.DuckDBPyConnection, name: str, nbytes: int) -> bytearray:
    """The first ``nbytes`` bytes of the words in the table ``name``, as a bytearray.

    Rows come back in insertion order (DuckDB's ``preserve_insertion_order``, on by
    default, as for every table the store reads). Raises ValueError when the table
    holds fewer bytes than ``nbytes``.
    """
    out = bytearray(nbytes)
    view = memoryview(out)
    filled = 0
    reader = con.sql(f"SELECT w FROM {name}").to_arrow_reader(_BATCH_WORDS)
    for batch in reader:
        column = batch.column(0)
        if not len(column):
            continue
        if column.null_count:
            raise ValueError(f"the table {name} has missing words")
        data = column.buffers()[1]
        assert data is not None
        start = column.offset * _WORD
        raw = memoryview(data).cast("B")[start : start + len(column) * _WORD]
        take = min(len(raw), nbytes - filled)
        view[filled : filled + take] = raw[:take]
        filled += take
    if filled < nbytes:
        raise ValueError(f"the table {name} holds {filled} of the value's {nbytes} bytes")
    return out


def compact_frame(table: pa.Table) -> bytes:
    """A small DataFrame's (storage) table as compressed Arrow IPC bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_COMPACT_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_compact_frame(data: Buffer) -> pa.Table:
    """The table of :func:`compact_frame` bytes."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
