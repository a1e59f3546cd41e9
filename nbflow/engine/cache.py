"""Cache keys: a step's fingerprint + its inputs' content hashes + its parameters; and
what a run says about a step that cannot be cached (an untracked one)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import xxhash

from nbflow.engine.files import file_hashes, reads_key
from nbflow.errors import UntrackedStepWarning, untracked_message
from nbflow.json_text import compact_encoder
from nbflow.store.records import CacheHit, CacheHits, EventType, FilesRead, NewEvent

_CANONICAL = compact_encoder(sort_keys=True, default=repr)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values give equal text."""
    return _CANONICAL(value)


def cache_key(
    fingerprint: str,
    inputs: Mapping[str, str],
    params: Mapping[str, Any],
    files: Mapping[str, str | None] | None = None,
) -> str:
    """The key under which a step's output can be reused.

    ``inputs`` maps each upstream step to the content hash of its output, so an upstream
    step that was recomputed to an identical value does not invalidate this one.
    ``files``: the step's declared input files with their content hashes (a step that
    declares none has the key it had before files were tracked).
    """
    key: dict[str, Any] = {"code": fingerprint, "inputs": dict(inputs), "params": dict(params)}
    if files:
        key["files"] = dict(files)
    text = canonical_json(key)
    return xxhash.xxh3_128_hexdigest(text.encode())


def find_hit(candidates: Mapping[str, CacheHit], key: str) -> CacheHit | None:
    """The cache hit for a step looked up under ``key``: the execution recorded under it,
    else one that read files while it ran and whose files still hash as they did then."""
    hit = candidates.get(key)
    if hit is not None or not isinstance(candidates, CacheHits):
        return hit
    for paths in candidates.reads(key):
        hit = candidates.get(reads_key(key, file_hashes(paths)))
        if hit is not None:
            return hit
    return None


def files_payload(
    key: str, declared: Mapping[str, str | None], read: Mapping[str, str | None] | None
) -> dict[str, Any]:
    """What a ``step_output_recorded`` event adds for the files an execution looked up
    under ``key`` declared and read: ``files`` and, when it read some, the key of its own
    it is recorded under (see :class:`~nbflow.store.records.FilesRead`). Empty when none."""
    read = {p: h for p, h in (read or {}).items() if p not in declared}
    if not declared and not read:
        return {}
    files = FilesRead(key, read, dict(declared))
    return {"files": files.to_json(), "cache_key": reads_key(key, read)}


def untracked_warning(step: str, untracked: Mapping[str, str]) -> NewEvent:
    """The ``step_warning`` event for a step that reads globals nbflow cannot hash
    (``untracked``: name -> why), after issuing the same as an UntrackedStepWarning."""
    message = untracked_message(step, untracked)
    warnings.warn(message, UntrackedStepWarning, stacklevel=3)
    payload = {"kind": "untracked", "message": message, "globals": dict(untracked)}
    return NewEvent(EventType.STEP_WARNING, step, None, payload)
