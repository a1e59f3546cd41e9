"""Cache keys: a step's code fingerprint + its inputs' content hashes + its parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xxhash

from nbflow.json_text import compact_encoder

_CANONICAL = compact_encoder(sort_keys=True, default=repr)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values give equal text."""
    return _CANONICAL(value)


def cache_key(fingerprint: str, inputs: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """The key under which a step's output can be reused.

    ``inputs`` maps each upstream step to the content hash of its output, so an upstream
    step that was recomputed to an identical value does not invalidate this one.
    """
    text = canonical_json({"code": fingerprint, "inputs": dict(inputs), "params": dict(params)})
    return xxhash.xxh3_128_hexdigest(text.encode())
