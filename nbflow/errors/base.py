"""The root of the hierarchy, and the 'did you mean' hint the messages share."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(name: str, candidates: Iterable[str], *, prefix: str = " Did you mean ") -> str:
    """Return a ' Did you mean ...?' hint naming close matches of ``name``, or ''."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    return prefix + " or ".join(repr(c) for c in close) + "?"


class NbflowError(Exception):
    """Base class of every error nbflow raises on purpose."""
