"""Stored bytes as a stream of fixed-size pieces, made as they are consumed.

A store that writes a value in rows of its own size (PostgreSQL's ``blob_chunks``) takes
them from here: :func:`pieces` slices a value's chunks without joining them, and
:func:`ipc_pieces` serializes an Arrow table one record batch at a time, so what is in
memory at once is a piece or a batch, never the whole stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from nbflow.values.encoded import Buffer

__all__ = ["ipc_pieces", "pieces"]


def pieces(chunks: Iterable[Buffer], size: int) -> Iterator[Buffer]:
    """The concatenation of ``chunks`` in pieces of ``size`` bytes (the last one shorter).

    A piece that lies inside one chunk is a view of it; one that spans chunks is copied
    together (at most ``size`` bytes).
    """
    staged = bytearray()
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if staged:
            take = min(size - len(staged), len(view))
            staged += view[:take]
            view = view[take:]
            if len(staged) < size:
                continue
            yield bytes(staged)
            staged = bytearray()
        while len(view) >= size:
            yield view[:size]
            view = view[size:]
        staged += view
    if staged:
        yield bytes(staged)


def ipc_pieces(table: pa.Table, size: int) -> tuple[int, Iterator[Buffer]]:
    """``table`` as an Arrow IPC stream: its length, and its bytes in ``size``-byte pieces.

    The length comes from a first pass that only counts bytes; the pieces are serialized
    as they are taken, in record batches of about ``size`` bytes.
    """
    rows = max(1, size * table.num_rows // max(table.nbytes, 1))
    counter = pa.MockOutputStream()
    with pa.ipc.new_stream(counter, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=rows):
            writer.write_batch(batch)
    return counter.size(), pieces(_ipc_parts(table, rows), size)


class _Parts:
    """A file-like sink that hands over what Arrow wrote since it was last asked."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: parts are kept until taken."""

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        parts, self.parts = self.parts, []
        return parts


def _ipc_parts(table: pa.Table, rows: int) -> Iterator[Buffer]:
    """The IPC stream of ``table`` (batches of ``rows`` rows), part by part as written."""
    sink = _Parts()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=rows):
            writer.write_batch(batch)
            yield from sink.take()
    yield from sink.take()
