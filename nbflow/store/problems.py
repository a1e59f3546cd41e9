"""What ``store.check()`` reports (:class:`Problem`), and what a backend tells the check of
each value it holds (:class:`StoredBlob`): the records of :mod:`nbflow.store.check`, kept
apart so that the store's core can name them without importing the check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nbflow.values.refs import Codec

__all__ = ["Problem", "ProblemKind", "StoredBlob"]


class ProblemKind(StrEnum):
    """What is wrong; a short, stable identifier (scripts may match on it)."""

    EVENT_GAP = "event_gap"  # a run's event seqs are not 1..N
    EVENT_INVALID = "event_invalid"  # an event that cannot follow the ones before it
    EVENTS_WITHOUT_RUN = "events_without_run"  # events of a run that has no runs row
    RUN_ROW_MISMATCH = "run_row_mismatch"  # the runs row is not the fold of the events
    RUN_WITHOUT_FLOW = "run_without_flow"  # the run's flow definition is not stored
    EXECUTION_ROW_MISSING = "execution_row_missing"
    EXECUTION_ROW_EXTRA = "execution_row_extra"
    EXECUTION_ROW_MISMATCH = "execution_row_mismatch"
    BLOB_MISSING = "blob_missing"  # a value an event refers to is not stored
    BLOB_CODEC_MISMATCH = "blob_codec_mismatch"
    BLOB_SIZE_MISMATCH = "blob_size_mismatch"
    BLOB_HASH_MISMATCH = "blob_hash_mismatch"  # its content does not hash to its name
    BLOB_UNREADABLE = "blob_unreadable"  # its content cannot be read to hash it
    VALUE_TABLE_MISSING = "value_table_missing"  # a DataFrame value without its table
    RUN_WITHOUT_LEASE = "run_without_lease"  # running, but no process holds it


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store, found by ``store.check()``.

    ``run_id`` and ``step`` say where (for a value: the first run and step that refer
    to it; the message names them all), ``hash`` which value. ``repairable`` problems
    are fixed by ``store.check(repair=True)``, which returns them with ``repaired`` set.
    """

    kind: ProblemKind
    message: str
    run_id: str | None = None
    step: str | None = None
    hash: str | None = None
    repairable: bool = False
    repaired: bool = False

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}" + (" [repaired]" if self.repaired else "")

    def to_json(self) -> dict[str, Any]:
        """The problem as a JSON-able dict."""
        return {
            "kind": self.kind.value,
            "run_id": self.run_id,
            "step": self.step,
            "hash": self.hash,
            "message": self.message,
            "repairable": self.repairable,
            "repaired": self.repaired,
        }


@dataclass(frozen=True)
class StoredBlob:
    """What a backend holds for one value, without its content (see ``_stored_blobs``).

    ``data_size`` is the length of the stored bytes (None: no bytes); ``has_table`` says
    whether a DataFrame value's table exists.
    """

    hash: str
    codec: Codec | str  # the text itself when it names no codec nbflow knows
    size: int
    meta: Mapping[str, Any] = field(default_factory=dict)
    data_size: int | None = None
    has_table: bool = False
