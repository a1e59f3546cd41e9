"""Pickles someone else wrote: a mark in their blob's meta that loading honours.

``store.trust`` says whether a store may unpickle at all. A pickle imported from an
export (``nbflow import`` without ``--trust``), or copied from a store opened with
``trust=False``, came from someone else: its blob's meta carries
``{"untrusted": {...where it came from...}}``, and :meth:`Store.load_value
<nbflow.store.base.Store.load_value>` refuses to unpickle it even in a trusted store,
until the user marks it trusted (``nbflow trust RUN``, :func:`nbflow.mark_trusted`), which
removes the mark. A pickle's meta holds nothing else, and its content hash is over its
bytes alone, so the mark changes neither what is stored nor its hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["UNTRUSTED", "marked", "origin", "unmarked"]

#: The key of a blob's meta that marks a pickle as written by someone else.
UNTRUSTED = "untrusted"


def origin(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Where an untrusted value came from (``imported_from`` or ``copied_from``, ``run_id``,
    ``at``), or None when the value is not marked."""
    if not meta:
        return None
    found = meta.get(UNTRUSTED)
    if found is None or found is False:
        return None
    return dict(found) if isinstance(found, Mapping) else {"from": str(found)}


def marked(meta: Mapping[str, Any], where: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` with the mark saying the value came from ``where``."""
    return {**meta, UNTRUSTED: dict(where)}


def unmarked(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` without the mark."""
    return {k: v for k, v in meta.items() if k != UNTRUSTED}
