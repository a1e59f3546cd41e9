"""The JSON codecs: ``JSON`` (inline in the ref) and ``JSON_BLOB``, for JSON-exact values."""

from __future__ import annotations

import json
import math
from typing import Any

from nbflow.values.encoded import EncodedValue
from nbflow.values.hashing import hash_bytes
from nbflow.values.refs import Codec, ValueRef, type_name

__all__ = ["compact_json", "encode_json", "json_exact"]

_INT64 = (-(2**63), 2**63 - 1)


def encode_json(value: Any, inline_limit: int) -> EncodedValue | None:
    """JSON or JSON_BLOB for a JSON-exact value, else None."""
    try:
        if not json_exact(value):
            return None
        # The hash is over the canonical form (sorted keys) so equal dicts hash equal
        # whatever their key order; the stored form keeps the order the step built.
        canonical = compact_json(value, sort_keys=True).encode("utf-8")
        text = compact_json(value, sort_keys=False)
    except (RecursionError, UnicodeEncodeError):  # too deep, or lone surrogates in a str
        return None
    digest = hash_bytes("json", canonical)
    name = type_name(type(value))
    if len(canonical) <= inline_limit:
        # A parsed copy, so later mutations of the step's own object do not reach the ref.
        ref = ValueRef(Codec.JSON, digest, len(canonical), name, inline=json.loads(text))
        return EncodedValue(ref=ref)
    data = text.encode("utf-8")
    return EncodedValue(ref=ValueRef(Codec.JSON_BLOB, digest, len(data), name), data=data)


def json_exact(value: Any) -> bool:
    """Whether ``value`` comes back from JSON as an equal value of the same types."""
    tp = type(value)
    if value is None or tp is bool or tp is str:
        return True
    if tp is int:
        # Beyond 64 bits, JSON readers other than Python's (DuckDB's) lose precision.
        return _INT64[0] <= value <= _INT64[1]
    if tp is float:
        return math.isfinite(value)  # NaN and infinities are not JSON
    if tp is list:
        return all(json_exact(item) for item in value)
    if tp is dict:
        return all(type(k) is str and json_exact(v) for k, v in value.items())
    return False


def compact_json(value: Any, *, sort_keys: bool) -> str:
    """``value`` as JSON text with no spaces, non-ASCII kept, NaN refused."""
    return json.dumps(
        value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
