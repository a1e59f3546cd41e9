"""Recompute a stored value's content hash from what the store holds, as a check.

:func:`stored_hash` mirrors :func:`~nbflow.values.codecs.encode` codec by codec, but
starts from the stored form and never runs pickle: a pickle's hash is over its bytes, a
frame's over its Arrow table (read back and restored, not converted to pandas), an
array's over the array ``np.load`` reads without pickle, a JSON blob's over its
canonical text. An integrity check can so verify every value of a store it does not
trust, at the speed of reading it.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from nbflow.values.duckdb_tables import restore_table
from nbflow.values.hashing import hash_arrow_table, hash_bytes, hash_numpy
from nbflow.values.json_codec import compact_json
from nbflow.values.pandas_codec import array_from_b64
from nbflow.values.refs import Codec

__all__ = ["stored_hash"]

# Keys encode adds to a frame's meta after hashing it (how to rebuild the stored table),
# and the digest a DuckDB store adds when it writes the table (store/duckdb/digest.py).
_LAYOUT_KEYS = ("schema", "dictionaries", "table_digest")


def stored_hash(
    codec: Codec,
    *,
    table: pa.Table | None = None,
    data: bytes | bytearray | memoryview | None = None,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The content hash of a stored value, recomputed from its stored form.

    ``table`` is the table stored for an ``ARROW`` value (as the store holds it, or as
    DuckDB reads it back), ``data`` the bytes of the other codecs, ``meta`` what was
    stored with them. Raises ValueError when the stored form cannot be read at all.
    """
    meta = dict(meta or {})
    if codec is Codec.ARROW:
        if table is None:
            raise ValueError("an arrow value needs its stored table")
        if "schema" not in meta:
            raise ValueError("the value's meta has no schema to restore its table with")
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(meta["schema"])))
        dictionaries = {int(i): array_from_b64(d) for i, d in meta.get("dictionaries", {}).items()}
        restored = restore_table(table, schema, dictionaries)
        return hash_arrow_table(codec.value, restored, _meta_bytes(meta))
    if data is None:
        raise ValueError(f"a {codec.value} value needs its stored bytes")
    if isinstance(data, memoryview):
        data = data.tobytes()
    if codec is Codec.PICKLE:
        return hash_bytes("pickle", data)
    if codec is Codec.JSON_BLOB:
        value = json.loads(data)
        return hash_bytes("json", compact_json(value, sort_keys=True).encode("utf-8"))
    if codec is Codec.NUMPY:
        kind = meta.get("kind", "array")
        array = np.load(io.BytesIO(data), allow_pickle=False)
        return hash_numpy(f"npy:{kind}", array)
    if codec is Codec.ARROW_IPC:
        stored = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        return hash_arrow_table(codec.value, stored, _meta_bytes(meta))
    raise ValueError(f"values stored as {codec.value} have no stored form to hash")


def _meta_bytes(meta: Mapping[str, Any]) -> bytes:
    """The ``extra`` encode hashed with a frame: its meta as it was before the layout
    keys were added."""
    content = {k: v for k, v in meta.items() if k not in _LAYOUT_KEYS}
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
