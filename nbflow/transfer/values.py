"""The values of an export folder: written once per content hash, read back verified.

Nothing an export holds is believed. Every value read back is hashed again, with the
hashing the store uses for step outputs, and refused unless it hashes to the name its
manifest gives it and its events refer to it by; a file the manifest names must lie
inside the export folder. Pickles are hashed as bytes and never unpickled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbflow.errors import TransferError
from nbflow.store.base import Store
from nbflow.store.records import Codec, ValueRef
from nbflow.transfer.json_text import dumps, read_json

if TYPE_CHECKING:
    from nbflow.values import EncodedValue

__all__ = ["check_hash", "read_value", "write_value"]

_EXTENSIONS = {
    Codec.JSON: "json",
    Codec.JSON_BLOB: "json",
    Codec.ARROW: "parquet",
    Codec.ARROW_IPC: "parquet",
    Codec.NUMPY: "npy",
    Codec.PICKLE: "pickle",
}

_HASH = re.compile(r"[0-9a-f]{32}")  # an xxh3-128 digest, as hex


def check_hash(value: Any, what: str) -> str:
    """``value`` if it is a content hash (32 hex digits), else TransferError."""
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise TransferError(f"{what} {value!r} is not a content hash (32 hex digits)")
    return value


# -- export -----------------------------------------------------------------------------------


def write_value(store: Store, ref: ValueRef, folder: Path) -> dict[str, Any]:
    """Write the value ``ref`` points at into ``folder`` (``values/``); its manifest entry."""
    from nbflow.values import encode

    name = f"{ref.hash}.{_EXTENSIONS[ref.codec]}"
    entry: dict[str, Any] = {"file": f"values/{name}", "ref": ref.to_json()}
    path = folder / name
    if ref.codec is Codec.PICKLE:
        # The bytes as stored, never unpickled: exporting runs none of the store's code,
        # so it works on a store opened with trust=False.
        stored = store.read_encoded(ref)
        assert stored.data is not None
        path.write_bytes(stored.data)
        return entry
    value = store.load_value(ref)
    encoded = encode(value, step="export", inline_limit=_inline_limit(ref))
    if encoded.ref.hash != ref.hash:
        raise TransferError(
            f"the stored value {ref.hash} (a {ref.type_name}) does not re-encode to the same "
            f"content hash ({encoded.ref.hash}): it cannot be exported exactly."
        )
    if ref.codec in (Codec.ARROW, Codec.ARROW_IPC):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = encoded.table
        if table is None:  # ARROW_IPC: the same Arrow table, read back from its bytes
            assert encoded.data is not None
            table = pa.ipc.open_stream(pa.py_buffer(encoded.data)).read_all()
        pq.write_table(table, path)
    elif ref.codec is Codec.JSON:
        path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    else:
        assert encoded.data is not None
        path.write_bytes(encoded.data)
    if encoded.meta:
        entry["meta"] = f"values/{ref.hash}.meta.json"
        (folder / f"{ref.hash}.meta.json").write_text(
            dumps(encoded.meta, indent=1), encoding="utf-8"
        )
    return entry


# -- import -----------------------------------------------------------------------------------


def inside(folder: Path, name: Any, what: str) -> Path:
    """The file ``name`` of the export ``folder``; TransferError unless it is a relative
    path that stays inside the folder (no ``/abs``, no ``..``, no link leading out)."""
    if not isinstance(name, str) or not name:
        raise TransferError(f"{what} names no file ({name!r})")
    relative = Path(name)
    if relative.is_absolute() or name.startswith(("/", "\\")) or ".." in relative.parts:
        raise TransferError(
            f"{what} names the file {name!r}, outside the export folder {folder}: an export "
            "only refers to its own files"
        )
    path = folder / relative
    root = folder.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise TransferError(
            f"{what} names {name!r}, which leads outside the export folder {folder} (to {resolved})"
        )
    return path


def read_value(folder: Path, hash: str, entry: Any) -> EncodedValue:
    """The value the manifest lists under ``hash``, read from its file and encoded again;
    TransferError unless it hashes to ``hash`` (the name its ref and its events give it).

    Pickles are hashed as their bytes, never unpickled.
    """
    from nbflow.values import EncodedValue, decode, encode
    from nbflow.values.hashing import hash_bytes

    what = f"the manifest's value {hash}"
    if not isinstance(entry, Mapping):
        raise TransferError(f"{what} is not a JSON object")
    try:
        ref = ValueRef.from_json(entry["ref"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransferError(f"{what} has no readable ref ({exc!r})") from None
    if ref.hash != hash:
        raise TransferError(
            f"{what} claims to be the value {ref.hash!r}: an export lists each value under "
            "its own content hash"
        )
    path = inside(folder, entry.get("file"), what)
    meta_path = inside(folder, entry["meta"], f"{what}'s meta") if entry.get("meta") else None
    if not path.is_file():
        raise TransferError(
            f"the export {folder} does not contain the value {hash} (its file {entry['file']} "
            "is missing): export the run again"
        )
    try:
        meta = read_json(meta_path, folder) if meta_path is not None else {}
        if not isinstance(meta, dict):
            raise TransferError(f"{what}'s meta is not a JSON object")
        if ref.codec is Codec.PICKLE:
            # Never unpickle to check: the bytes are what was stored, their hash says so.
            data = path.read_bytes()
            actual = hash_bytes("pickle", data)
            if actual != hash:
                raise _mismatch(folder, hash, actual)
            return EncodedValue(
                ref=ValueRef(Codec.PICKLE, actual, len(data), ref.type_name), data=data
            )
        if ref.codec in (Codec.ARROW, Codec.ARROW_IPC):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if ref.codec is Codec.ARROW:
                value = decode(ref, table=table, meta=meta)
            else:
                value = decode(ref, data=_ipc_bytes(table), meta=meta)
        elif ref.codec is Codec.JSON:
            value = json.loads(path.read_text(encoding="utf-8"))
        else:
            value = decode(ref, data=path.read_bytes(), meta=meta)
    except TransferError:
        raise
    except Exception as exc:  # a damaged file may fail in any reader (pyarrow, numpy, json)
        raise TransferError(
            f"cannot read value {hash} from {folder}: {type(exc).__name__}: {exc}"
        ) from exc
    encoded = encode(value, step="import", inline_limit=_inline_limit(ref))
    if encoded.ref.hash != hash:
        raise _mismatch(folder, hash, encoded.ref.hash)
    if encoded.ref.codec is not ref.codec:
        raise TransferError(
            f"value {hash} in {folder} is listed as {ref.codec.value} but reads back as "
            f"{encoded.ref.codec.value}: the export was changed"
        )
    return encoded


def _inline_limit(ref: ValueRef) -> int:
    """How a value is encoded again: a JSON value kept as a blob (a run's record, even a
    small one) stays one; others as a step's output would be."""
    return 0 if ref.codec is Codec.JSON_BLOB else 4096


def _mismatch(folder: Path, claimed: str, actual: str) -> TransferError:
    return TransferError(
        f"value {claimed} in {folder} does not match its content hash (its content hashes to "
        f"{actual}): the export was changed or damaged since it was written. Nothing was "
        "imported."
    )


def _ipc_bytes(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())
