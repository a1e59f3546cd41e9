"""Compact JSON text, made by one reusable encoder per set of options.

``json.JSONEncoder.encode`` sets up a new C encoder (and a Python closure) on every
call: ~2 µs, more than encoding a small dict takes, on paths that encode a thousand
small dicts per run (event payloads, execution rows, cache keys, fingerprints). The
encoders made here are set up once. Their text is exactly ``json.dumps``' with the same
options (checked when the module loads; where the C encoder is missing or differs, the
plain ``JSONEncoder`` is used).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

__all__ = ["compact_encoder"]

#: The C encoder behind json.JSONEncoder (None where Python has no C accelerator).
_C_MAKE_ENCODER: Callable[..., Any] | None = getattr(json.encoder, "c_make_encoder", None)

# A value to compare both encoders on: nesting, key order, escapes, floats, NaN.
_PROBE: Any = {
    "b": [1, 2.5, None, True, 'é\n"', {"z": 1, "a": float("nan")}],
    "a": {"y": (1, 2), "x": 1e16, "w": -0.0},
}


def compact_encoder(
    *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), sort_keys=..., default=...)`` as a
    function, set up once.

    Unlike ``json.dumps``, a value that contains itself is not reported as a circular
    reference: it exhausts the recursion limit (RecursionError) instead.
    """
    reference = json.JSONEncoder(separators=(",", ":"), sort_keys=sort_keys, default=default)
    make = _C_MAKE_ENCODER
    if make is None:
        return reference.encode
    try:
        # (markers None: no circular-reference bookkeeping, which a failed call would
        # leave behind for the next one.)
        iterencode = make(
            None,
            reference.default,
            json.encoder.encode_basestring_ascii,
            None,
            ":",
            ",",
            sort_keys,
            False,
            True,
        )

        def encode(value: Any) -> str:
            return "".join(iterencode(value, 0))

        if encode(_PROBE) != reference.encode(_PROBE):
            return reference.encode
    except Exception:  # another Python's C encoder: take the plain one
        return reference.encode
    return encode
