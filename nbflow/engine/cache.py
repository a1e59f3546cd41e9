"""Cache keys: a step's fingerprint + its inputs' content hashes + its parameters; and
what a run says about a step that cannot be cached (an untracked one)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import xxhash

from nbflow.errors import UntrackedStepWarning, untracked_message
from nbflow.json_text import compact_encoder
from nbflow.store.records import EventType, NewEvent

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


def untracked_warning(step: str, untracked: Mapping[str, str]) -> NewEvent:
    """The ``step_warning`` event for a step that reads globals nbflow cannot hash
    (``untracked``: name -> why), after issuing the same as an UntrackedStepWarning."""
    message = untracked_message(step, untracked)
    warnings.warn(message, UntrackedStepWarning, stacklevel=3)
    payload = {"kind": "untracked", "message": message, "globals": dict(untracked)}
    return NewEvent(EventType.STEP_WARNING, step, None, payload)
