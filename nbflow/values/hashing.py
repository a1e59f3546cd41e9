"""Content hashing of stored values: xxh3-128 over canonical bytes, as hex digests.

Every digest starts from a *tag* (the codec, plus a kind where one codec stores several
kinds of value), so bytes that happen to be equal under different codecs never collide.

Arrow tables are hashed over their *logical* content rather than their memory layout:
the schema (with the pandas metadata, minus the library versions) and, per column, the
values of the rows the column actually covers. Slicing offsets, chunking, padding bytes,
unused bits of validity bitmaps and the garbage under null slots are all left out, so
two equal frames hash the same however they were built. Flat fixed-width columns without
nulls (the bulk of numeric frames) are hashed straight from their Arrow buffers, without
copies.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

__all__ = [
    "HASH_HEX_LENGTH",
    "hash_arrow_table",
    "hash_bytes",
    "hash_chunks",
    "hash_numpy",
    "new_hasher",
]

HASH_HEX_LENGTH = 32  # hex digits of an xxh3-128 digest

# Keys of the pandas schema metadata that name library versions, not content: left out
# of the hash so upgrading pandas or pyarrow does not change every frame's hash.
_VERSION_KEYS = ("creator", "pandas_version")

_U64 = struct.Struct("<Q")
_I64x2 = struct.Struct("<qq")


def new_hasher(tag: str) -> xxhash.xxh3_128:
    """A fresh xxh3-128 hasher, already fed ``tag`` (the codec and kind of the value)."""
    h = xxhash.xxh3_128()
    _feed(h, tag.encode())
    return h


def hash_bytes(tag: str, data: bytes | bytearray | memoryview) -> str:
    """The hex xxh3-128 digest of ``data`` under ``tag``."""
    h = new_hasher(tag)
    _feed(h, data)
    return h.hexdigest()


def hash_chunks(tag: str, chunks: Iterable[Any]) -> str:
    """The digest :func:`hash_bytes` gives the concatenation of ``chunks`` (bytes-like
    pieces), computed without joining them."""
    views = [memoryview(chunk).cast("B") for chunk in chunks]
    h = new_hasher(tag)
    h.update(_U64.pack(sum(view.nbytes for view in views)))
    for view in views:
        h.update(view)
    return h.hexdigest()


def hash_numpy(tag: str, array: np.ndarray) -> str:
    """The hex digest of an array: its dtype, shape, memory order and raw element bytes."""
    h = new_hasher(tag)
    # dtype_to_descr names structured fields too, where dtype.str would only say "|V16".
    descr = repr(np.lib.format.dtype_to_descr(array.dtype))
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    _feed(h, f"{descr}|{array.shape}|{'F' if fortran else 'C'}".encode())
    # Hash the elements in the order .npy stores them, without copying contiguous arrays.
    flat = array.T if fortran else array
    if not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    _feed(h, flat.reshape(-1).view(np.uint8) if flat.dtype.itemsize else b"")
    return h.hexdigest()


def hash_arrow_table(tag: str, table: pa.Table, extra: bytes = b"") -> str:
    """The hex digest of a table's logical content: schema, row count and column values.

    ``extra`` is fed first: whatever else tells two values apart (how to rebuild them).
    """
    h = new_hasher(tag)
    _feed(h, extra)
    _feed(h, _canonical_metadata(table.schema.metadata))
    _feed(h, table.schema.remove_metadata().serialize())
    h.update(_U64.pack(table.num_rows))
    for column in table.columns:
        # Chunk boundaries are layout, not content; tables built by from_pandas have one
        # chunk, so combining (a copy) only happens for tables assembled some other way.
        if column.num_chunks == 1:
            array = column.chunk(0)
        elif column.num_chunks == 0:
            array = pa.array([], type=column.type)
        else:
            array = column.combine_chunks()
        _hash_array(h, array)
    return h.hexdigest()


# -- internals -------------------------------------------------------------------------


def _feed(h: xxhash.xxh3_128, data: Any) -> None:
    """Feed a length-prefixed byte string (so consecutive fields cannot run together)."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    h.update(_U64.pack(len(view)))
    h.update(view)


def _canonical_metadata(metadata: dict[bytes, bytes] | None) -> bytes:
    """Schema metadata as canonical bytes, without the library-version keys."""
    if not metadata:
        return b""
    items: dict[str, Any] = {}
    for key, value in metadata.items():
        name = key.decode("utf-8", "surrogateescape")
        text = value.decode("utf-8", "surrogateescape")
        if name == "pandas":
            pandas_meta = json.loads(text)
            for version_key in _VERSION_KEYS:
                pandas_meta.pop(version_key, None)
            items[name] = pandas_meta
        else:
            items[name] = text
    return json.dumps(items, sort_keys=True, separators=(",", ":")).encode(
        "utf-8", "surrogateescape"
    )


_VIEW_CASTS = {
    pa.string_view(): pa.large_string(),
    pa.binary_view(): pa.large_binary(),
}


def _hash_array(h: xxhash.xxh3_128, array: pa.Array) -> None:
    """Feed the logical content of one array (recursing into nested types)."""
    typ = array.type
    if typ in _VIEW_CASTS:
        array = array.cast(_VIEW_CASTS[typ])
        typ = array.type
    if isinstance(typ, pa.BaseExtensionType):
        _hash_array(h, array.storage)
        return
    if pa.types.is_dictionary(typ):
        _hash_array(h, array.indices)
        _hash_array(h, array.dictionary)
        return

    n = len(array)
    nulls = array.null_count
    h.update(_I64x2.pack(n, nulls))
    if n == 0 or pa.types.is_null(typ):
        return
    valid: np.ndarray | None = None
    if nulls:
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        bitmap = array.buffers()[0]
        # The bitmap itself where there is one (cheaper); the same bits packed otherwise.
        _feed(
            h,
            _bits(bitmap, array.offset, n)
            if bitmap is not None
            else np.packbits(valid, bitorder="little"),
        )

    if pa.types.is_boolean(typ):
        if nulls:
            array = pc.fill_null(array, False)
        _feed(h, _bits(array.buffers()[1], array.offset, n))
        return

    width = _byte_width(typ)
    if width is not None:
        data = array.buffers()[1]
        assert data is not None
        values = data.slice(array.offset * width, n * width)
        if valid is not None:
            # The bytes under null slots are unspecified (NaN payloads, stale values): zero them.
            if width in (1, 2, 4, 8):
                words = np.frombuffer(values, dtype=f"<u{width}")
                _feed(h, np.where(valid, words, words.dtype.type(0)))
            else:
                rows = np.frombuffer(values, dtype=np.uint8).reshape(n, width)
                _feed(h, np.where(valid[:, None], rows, np.uint8(0)))
        else:
            _feed(h, values)
        return

    if _is_text(typ) or _is_binary(typ):
        _hash_binary_like(h, array, valid)
        return

    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_map(typ):
        offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        lengths = np.diff(offsets)
        if valid is not None:
            lengths[~valid] = 0  # flatten() skips null slots, whatever they point at
        _feed(h, lengths)
        _hash_array(h, array.flatten())
        return
    if pa.types.is_fixed_size_list(typ):
        _hash_array(h, array.flatten())
        return
    if pa.types.is_struct(typ):
        # flatten() applies the slice offset and the struct's own nulls to each child.
        for child in array.flatten():
            _hash_array(h, child)
        return

    # Rare layouts (unions, run-end encoded, list views): hash their IPC form.
    sink = pa.BufferOutputStream()
    batch = pa.record_batch([array], names=["v"])
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    _feed(h, sink.getvalue())


def _byte_width(typ: pa.DataType) -> int | None:
    """Bytes per value of a flat fixed-width type with a single data buffer, else None."""
    if pa.types.is_nested(typ) or pa.types.is_boolean(typ):
        return None
    try:
        bits = typ.bit_width
    except ValueError:  # variable-width types have no bit width
        return None
    if bits % 8 or typ.num_buffers != 2:
        return None
    return bits // 8


def _hash_binary_like(h: xxhash.xxh3_128, array: pa.Array, valid: np.ndarray | None) -> None:
    """Feed the value lengths and the bytes of a string or binary array."""
    if valid is not None:
        # A null slot may span bytes; filling it gives a fresh array where it spans none.
        array = pc.fill_null(array, pa.scalar(b"" if _is_binary(array.type) else "", array.type))
    large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    offsets_buf, data_buf = array.buffers()[1:3]
    n = len(array)
    assert offsets_buf is not None
    offsets = np.frombuffer(
        offsets_buf, dtype=np.int64 if large else np.int32, count=array.offset + n + 1
    )[array.offset :]
    start, end = int(offsets[0]), int(offsets[-1])
    _feed(h, offsets - offsets[0] if start else offsets)
    _feed(h, data_buf.slice(start, end - start) if data_buf is not None and end > start else b"")


def _is_binary(typ: pa.DataType) -> bool:
    return pa.types.is_binary(typ) or pa.types.is_large_binary(typ)


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _bits(buf: pa.Buffer | None, offset: int, n: int) -> bytes | pa.Buffer | np.ndarray:
    """The ``n`` bits of a bitmap from bit ``offset``, LSB-first, trailing bits zeroed."""
    assert buf is not None
    if offset % 8 == 0:
        start, full, rest = offset // 8, n // 8, n % 8
        if not rest:
            return buf.slice(start, full)
        last = buf[start + full] & ((1 << rest) - 1)
        return buf.slice(start, full).to_pybytes() + bytes([last])
    raw = np.frombuffer(buf, dtype=np.uint8)[offset // 8 : (offset + n + 7) // 8]
    bits = np.unpackbits(raw, bitorder="little")[offset % 8 : offset % 8 + n]
    return np.packbits(bits, bitorder="little")
