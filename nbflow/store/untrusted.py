"""What came from someone else: pickles marked in their blob's meta, runs marked in the
store, and what honours the marks.

``store.trust`` says whether a store may unpickle at all. A run imported from an export
(``nbflow import`` without ``--trust``), or copied from a store opened with
``trust=False``, came from someone else, and two marks say so until the user trusts it
(``nbflow trust RUN``, :func:`nbflow.mark_trusted`), which removes them:

* its pickles' blob meta carries ``{"untrusted": {...where it came from...}}``, and
  :meth:`Store.load_value <nbflow.store.base.Store.load_value>` refuses to unpickle them
  even in a trusted store. A pickle's meta holds nothing else, and its content hash is
  over its bytes alone, so the mark changes neither what is stored nor its hash;
* the run itself is marked (:class:`UntrustedRun`, the ``untrusted_runs`` table), and its
  executions are no cache hits for any other run (``Store.cache_hits``): nothing shows
  that code of yours produced its outputs, so they cannot stand in for your steps. A fork
  of a marked run reuses its outputs by reference, so it is marked too (``derived_from``),
  and trusting the run trusts its forks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "UNTRUSTED",
    "RunMarks",
    "UntrustedRun",
    "keeps_marks",
    "marked",
    "origin",
    "unmarked",
    "with_forks",
]

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


@dataclass(frozen=True)
class UntrustedRun:
    """A run of someone else's: until it is trusted, no other run reuses its outputs as
    cache hits."""

    run_id: str
    source: str  # where it came from, for people ("imported from DIR", "fork of run R", ...)
    marked_at: dt.datetime
    derived_from: str | None = None  # the marked run it reuses outputs of (a fork's parent)


class RunMarks:
    """The run marks a backend keeps (part of :class:`~nbflow.store.base.Store`).

    A backend that cannot keep them has no run marked and refuses to mark one (so
    imports without trust, which need the mark, are refused by it: trust fails closed).
    The conformance suite checks that a backend keeps them and that ``cache_hits`` and
    ``cache_candidates`` leave out the executions of marked runs, and those whose output
    was computed in a marked run.
    """

    def untrusted_runs(self, run_ids: Collection[str] | None = None) -> dict[str, UntrustedRun]:
        """The marks of these runs (default: every mark), by run id; unmarked runs are
        absent."""
        return {}

    def mark_untrusted(self, marks: Iterable[UntrustedRun]) -> None:
        """Mark runs untrusted, in one transaction; a run marked already keeps its mark.
        The run need not exist yet: an import marks its run before writing it, so it is
        never a cache hit, not even for an instant."""
        raise NotImplementedError(f"{type(self).__name__} cannot mark runs untrusted")

    def clear_untrusted(self, run_ids: Collection[str]) -> list[str]:
        """Remove the marks of these runs, in one transaction; return the ids that had
        one, sorted."""
        return []


def with_forks(marks: Mapping[str, UntrustedRun], run_id: str) -> list[str]:
    """``run_id`` and every marked run derived from it (forks of forks too), sorted."""
    found = {run_id}
    frontier = {run_id}
    while frontier:
        frontier = {
            m.run_id for m in marks.values() if m.derived_from in frontier and m.run_id not in found
        }
        found |= frontier
    return sorted(found)


def keeps_marks(store: RunMarks) -> bool:
    """Whether ``store``'s backend keeps run marks (see :class:`RunMarks`)."""
    return type(store).mark_untrusted is not RunMarks.mark_untrusted
