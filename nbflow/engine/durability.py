"""Durability modes: when a run's checkpoints are committed, and how much the writer may
hold in memory meanwhile (see docs/durability.md)."""

from __future__ import annotations

import enum
import os

from nbflow.errors import ParameterError

ENV = "NBFLOW_DURABILITY"
QUEUE_ENV = "NBFLOW_WRITE_QUEUE_BYTES"
MIN_QUEUE_BYTES = 64 * 2**20
FALLBACK_QUEUE_BYTES = 2 * 2**30  # where the machine's memory cannot be read


class Durability(enum.StrEnum):
    """When a run's steps are committed to its store."""

    #: A step's completion is committed before any step that reads it starts.
    SYNC = "sync"
    #: Completed steps go to the store's background writer, which commits them in order,
    #: many per transaction, while the steps that read them already run.
    ASYNC = "async"
    #: Everything the run did is committed once, when it ends (fails, is interrupted).
    EXIT = "exit"


DEFAULT = Durability.ASYNC
MODES = ", ".join(repr(m.value) for m in Durability)


def durability(value: object, where: str = "durability") -> Durability | None:
    """``value`` as a mode (None stays None); ParameterError for anything else."""
    if value is None or isinstance(value, Durability):
        return value
    if isinstance(value, str) and value.strip().lower() in Durability._value2member_map_:
        return Durability(value.strip().lower())
    raise ParameterError(f"{where} must be one of {MODES}, not {value!r}.")


def resolve(*choices: Durability | str | None) -> Durability:
    """The first mode given in ``choices``, else ``$NBFLOW_DURABILITY``, else async."""
    for choice in choices:
        mode = durability(choice)
        if mode is not None:
            return mode
    raw = os.environ.get(ENV, "")
    if raw.strip():
        mode = durability(raw, where=f"${ENV}")
        assert mode is not None
        return mode
    return DEFAULT


def queue_bytes() -> int:
    """How many bytes of checkpoints the writer may hold before a step waits for it:
    ``$NBFLOW_WRITE_QUEUE_BYTES``, else an eighth of the machine's memory (at least 64 MiB).

    A single checkpoint larger than this is still written, alone in the queue."""
    raw = os.environ.get(QUEUE_ENV, "")
    if raw.strip():
        try:
            value = int(float(raw))
        except ValueError:
            raise ParameterError(f"${QUEUE_ENV}={raw!r} is not a number of bytes") from None
        if value < 1:
            raise ParameterError(f"${QUEUE_ENV} must be at least 1 byte, not {raw!r}")
        return value
    return max(MIN_QUEUE_BYTES, physical_memory() // 8)


def physical_memory() -> int:
    """The machine's memory in bytes (a fallback figure where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_QUEUE_BYTES * 8
