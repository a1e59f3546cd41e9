"""Encoding of step outputs into their stored form, and decoding them back.

:func:`encode` picks the codec (see :class:`~nbflow.values.refs.Codec`):

* JSON-exact values (``None``, ``bool``, 64-bit ``int``, finite ``float``, ``str``, and
  ``list`` / ``dict`` with ``str`` keys of those) -> ``JSON`` inline in the ref when small,
  else ``JSON_BLOB``;
* pandas DataFrames and Series -> ``ARROW`` (a native DuckDB table), ``ARROW_IPC`` when
  DuckDB cannot hold their types, ``PICKLE`` when Arrow cannot hold them exactly (with
  why in the value's meta, ``pickled_because``: see :mod:`nbflow.values.frame_refusal`);
* numpy arrays and scalars -> ``NUMPY`` (``.npy`` bytes), object arrays -> ``PICKLE``;
* anything else -> ``PICKLE`` (cloudpickle), but for open files, which are refused.

:func:`decode` is its inverse; only ``PICKLE`` ever runs pickle, so stores opened with
``trust=False`` can still load every other value. The JSON codecs live in
:mod:`nbflow.values.json_codec`, the frame codecs in :mod:`nbflow.values.pandas_codec`.
"""

import base64
import copy
import json
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from nbflow.errors import SerializationError, UntrustedStoreError
from nbflow.values.duckdb_tables import restore_table
from nbflow.values.encoded import Buffer, ChunkWriter, EncodedValue
from nbflow.values.frame_refusal import PICKLED_BECAUSE, TableRefusal
from nbflow.values.hashing import hash_chunks, hash_numpy
from nbflow.values.json_codec import encode_json
from nbflow.values.npy import load_npy, npy_chunks
from nbflow.values.pandas_codec import array_from_b64, encode_pandas, from_table
from nbflow.values.pickling import OpenFileError, canonical_dump, open_file_name
from nbflow.values.refs import Codec, ValueRef, type_name

__all__ = ["EncodedValue", "content_hash", "decode", "encode", "type_name"]


def encode(value: Any, *, step: str, inline_limit: int = 4096) -> EncodedValue:
    """Encode the output of ``step`` for storage, choosing the codec by the value's type.

    Raises :class:`~nbflow.errors.SerializationError` when the value can only be pickled
    and pickling fails, and when it is or holds an open file.
    """
    encoded = encode_json(value, inline_limit)
    if encoded is not None:
        return encoded
    tp = type(value)
    if tp is pd.DataFrame or tp is pd.Series:
        stored = encode_pandas(value)
        if isinstance(stored, TableRefusal):
            return _encode_pickle(value, step, stored)
        return stored
    if tp is np.ndarray and not value.dtype.hasobject:
        encoded = _encode_numpy(value, value, "array")
    elif isinstance(value, np.generic) and not value.dtype.hasobject:
        encoded = _encode_numpy(value, np.asarray(value), "scalar")
    if encoded is not None:
        return encoded
    return _encode_pickle(value, step)


def decode(
    ref: ValueRef,
    *,
    table: pa.Table | None = None,
    data: Buffer | None = None,
    meta: Mapping[str, Any] | None = None,
    trust: bool = True,
) -> Any:
    """Rebuild a value from its ref and what was stored for it.

    ``table`` is the Arrow table of an ``ARROW`` value, as :func:`encode` made it or as
    :func:`~nbflow.values.duckdb_tables.read_table` reads it back; ``data`` the bytes of
    the other blob codecs (an array decoded from a ``bytearray`` takes over its memory);
    ``meta`` the :attr:`EncodedValue.meta` stored with them.
    With ``trust=False``, a ``PICKLE`` value raises
    :class:`~nbflow.errors.UntrustedStoreError` instead of being unpickled.
    """
    codec = ref.codec
    if codec is Codec.JSON:
        return copy.deepcopy(ref.inline)  # the caller may mutate what it gets
    if codec is Codec.ARROW:
        if table is None or meta is None:
            raise ValueError("decoding an ARROW value needs its table and meta")
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(meta["schema"])))
        dictionaries = {int(i): array_from_b64(d) for i, d in meta.get("dictionaries", {}).items()}
        return from_table(restore_table(table, schema, dictionaries), meta)
    if data is None:
        raise ValueError(f"decoding a {codec.value} value needs its data")
    if codec is Codec.JSON_BLOB:
        return json.loads(data if isinstance(data, bytes | bytearray) else bytes(data))
    if codec is Codec.ARROW_IPC:
        if meta is None:
            raise ValueError("decoding an ARROW_IPC value needs its meta")
        return from_table(pa.ipc.open_stream(pa.py_buffer(data)).read_all(), meta)
    if codec is Codec.NUMPY:
        array = load_npy(data)
        # Without meta, the type name still tells a scalar from an array.
        kind = meta.get("kind") if meta else None
        if kind == "scalar" or (kind is None and ref.type_name != "numpy.ndarray"):
            return array[()]
        return array
    if codec is Codec.PICKLE:
        if not trust:
            raise UntrustedStoreError(ref.type_name, value_hash=ref.hash)
        return pickle.loads(data)
    raise ValueError(f"unknown codec {codec!r}")


def content_hash(value: Any) -> str:
    """The content hash (xxh3-128, hex) :func:`encode` gives ``value``."""
    return encode(value, step="?").ref.hash


# -- numpy -----------------------------------------------------------------------------


def _encode_numpy(value: Any, array: np.ndarray, kind: str) -> EncodedValue | None:
    """NUMPY for arrays and scalars .npy can hold without pickle, else None."""
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)  # one copy, for the hash and the bytes both
    chunks = npy_chunks(array)
    if chunks is None:  # dtypes .npy cannot hold without pickle (e.g. StringDType)
        return None
    digest = hash_numpy(f"npy:{kind}", array)
    size = sum(memoryview(chunk).nbytes for chunk in chunks)
    ref = ValueRef(Codec.NUMPY, digest, size, type_name(type(value)))
    return EncodedValue(ref=ref, chunks=chunks, meta={"kind": kind})


# -- pickle ----------------------------------------------------------------------------


def _encode_pickle(value: Any, step: str, refusal: TableRefusal | None = None) -> EncodedValue:
    # Pickled into chunks: the large payloads (bytes, array buffers) stay where they are,
    # and the stream is byte for byte what cloudpickle.dumps would return (but for the
    # elements of sets, written in a canonical order: see nbflow.values.pickling).
    name = open_file_name(value)
    if name is not None:
        raise SerializationError(step, value, _OPEN_FILE.format(name=name, where="it is"))
    # A frame that could not be a table says why first: that is what the user can fix.
    first = "" if refusal is None else f"it cannot be stored as a table ({refusal.sentence()}), "
    try:
        out = canonical_dump(value, ChunkWriter, protocol=pickle.HIGHEST_PROTOCOL)
    except OpenFileError as exc:
        reason = first + _OPEN_FILE.format(name=exc.name, where="it holds")
        raise SerializationError(step, value, reason) from None
    except Exception as exc:  # pickling runs arbitrary __reduce__ code: anything can fail
        raise SerializationError(
            step, value, f"{first}it cannot be pickled ({type(exc).__name__}: {exc})"
        ) from exc
    digest = hash_chunks("pickle", out.chunks)
    ref = ValueRef(Codec.PICKLE, digest, out.nbytes, type_name(type(value)))
    meta = {} if refusal is None else {PICKLED_BECAUSE: refusal.to_json()}
    return EncodedValue(ref=ref, chunks=out.chunks, meta=meta)


# cloudpickle would store a text file as a StringIO of what is left to read: a different
# object, read at the moment the step ended, which no later step could write to.
_OPEN_FILE = (
    "{where} an open file ({name}), which cannot be stored as the file it is; return "
    "what the step read from it (f.read(), a DataFrame) or its path instead"
)
