"""A step output in stored form, with its bytes kept in pieces until a store writes them.

:func:`~nbflow.values.codecs.encode` never joins the bytes of a large value into one
``bytes`` object: a pickle, an ``.npy`` file or an Arrow IPC stream is a tuple of
*chunks*, and the big ones point into the value itself (an array's buffer, a ``bytes``
output, a pickle's large payloads). Encoding so costs no copy of the value, and a store
streams the chunks to disk in slices of its own size. Whoever needs the bytes as one
object asks for :attr:`EncodedValue.data`, which joins them (one copy, made once).
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from nbflow.values.refs import ValueRef

__all__ = ["Buffer", "ChunkWriter", "EncodedValue", "as_chunk"]

#: What a chunk of stored bytes may be: anything exposing a flat byte buffer.
Buffer = bytes | bytearray | memoryview

# Writes at least this big are kept as views (they are a value's own buffers); smaller
# ones are pickle's frames, fresh objects each, kept as they are.
_VIEW_BYTES = 64 * 1024


class EncodedValue:
    """A step output in stored form: its ref plus what to store for it.

    ``table`` is set for ``Codec.ARROW`` (store it as a DuckDB table); the stored bytes of
    ``JSON_BLOB``, ``NUMPY``, ``PICKLE`` and ``ARROW_IPC`` values are :attr:`chunks` (to
    write one after the other) or, joined, :attr:`data`; ``JSON`` values live in
    ``ref.inline``. ``meta`` is JSON-able and holds everything else
    :func:`~nbflow.values.codecs.decode` needs (store it next to the blob). Immutable.
    """

    __slots__ = ("_chunks", "_data", "meta", "ref", "table")

    ref: ValueRef
    table: pa.Table | None
    meta: dict[str, Any]
    _data: Buffer | None
    _chunks: tuple[Buffer, ...] | None

    def __init__(
        self,
        ref: ValueRef,
        table: pa.Table | None = None,
        data: Buffer | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        chunks: Iterable[Buffer] | None = None,
    ) -> None:
        if data is not None and chunks is not None:
            raise ValueError("give an EncodedValue its bytes as data or as chunks, not both")
        init = object.__setattr__
        init(self, "ref", ref)
        init(self, "table", table)
        init(self, "meta", dict(meta or {}))
        init(self, "_data", data)
        init(self, "_chunks", None if chunks is None else tuple(chunks))

    @property
    def data(self) -> Buffer | None:
        """The stored bytes as one object (None when the value has none).

        Joined from the chunks on first use: a copy, kept from then on (and the chunks,
        which may point into the step's value, are let go).
        """
        if self._data is None and self._chunks is not None:
            joined = b"".join(self._chunks)
            object.__setattr__(self, "_data", joined)
            object.__setattr__(self, "_chunks", None)
        return self._data

    @property
    def chunks(self) -> tuple[Buffer, ...]:
        """The stored bytes as pieces, without copying them (empty when there are none)."""
        if self._chunks is not None:
            return self._chunks
        return () if self._data is None else (self._data,)

    @property
    def has_bytes(self) -> bool:
        """Whether the value is stored as bytes (rather than a table, or inline)."""
        return self._data is not None or self._chunks is not None

    @property
    def nbytes(self) -> int:
        """The length of the stored bytes (0 when there are none)."""
        return sum(memoryview(chunk).nbytes for chunk in self.chunks)

    def with_meta(self, meta: Mapping[str, Any]) -> EncodedValue:
        """The same value with other meta (its bytes shared, not copied)."""
        if self._chunks is not None:
            return EncodedValue(self.ref, self.table, meta=meta, chunks=self._chunks)
        return EncodedValue(self.ref, self.table, self._data, meta)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Across processes (a process executor's result) the bytes travel joined: chunks
        # may be views, which do not pickle.
        return (_rebuild, (self.ref, self.table, self.data, self.meta))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncodedValue):
            return NotImplemented
        tables_equal = (
            self.table is other.table
            if self.table is None or other.table is None
            else self.table.equals(other.table)
        )
        return (
            self.ref == other.ref
            and tables_equal
            and self.meta == other.meta
            and _joined(self) == _joined(other)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable meta: not hashable

    def __repr__(self) -> str:
        table = None if self.table is None else f"<{self.table.num_rows} rows>"
        data = f"<{self.nbytes} bytes>" if self.has_bytes else None
        return f"EncodedValue(ref={self.ref!r}, table={table}, data={data}, meta={self.meta!r})"


def _rebuild(
    ref: ValueRef, table: pa.Table | None, data: Buffer | None, meta: dict[str, Any]
) -> EncodedValue:
    return EncodedValue(ref, table, data, meta)


def _joined(value: EncodedValue) -> bytes | None:
    """The stored bytes of ``value`` as bytes, without joining them in place."""
    return b"".join(value.chunks) if value.has_bytes else None


def as_chunk(data: Any) -> Buffer:
    """``data`` (bytes, a memoryview, a ``pickle.PickleBuffer``, anything with a
    contiguous buffer) as a chunk, without copying it."""
    if type(data) is bytes:
        return data
    if isinstance(data, pickle.PickleBuffer):
        return data.raw()  # flat bytes, in the order pickle writes them
    view = memoryview(data)
    if view.c_contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return bytes(view)  # (not seen from the writers here: a copy, to be safe)


class ChunkWriter:
    """A file-like sink that keeps what is written as chunks, by reference when big.

    Give it to ``pickle.Pickler``: the C pickler hands large payloads (``bytes`` values,
    array buffers) to ``write`` as they are, so a pickle stream is collected without
    copying them. The caller must not change the value until the chunks are written.
    """

    def __init__(self) -> None:
        self.chunks: list[Buffer] = []
        self.nbytes = 0

    def write(self, data: Any) -> int:
        """Keep ``data`` (a view of it when it is a big buffer); return its length."""
        chunk = as_chunk(data)
        size = memoryview(chunk).nbytes
        if size < _VIEW_BYTES and type(chunk) is not bytes:
            chunk = bytes(chunk)  # small and perhaps reused by the writer: copied
        if size:
            self.chunks.append(chunk)
            self.nbytes += size
        return size
