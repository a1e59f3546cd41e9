"""What the runner and its parts share: a step's plan for a run, the listener type, and
how an error becomes text a store can hold."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbflow.definition.step import Step
from nbflow.graph.fingerprint import StepReads
from nbflow.store.records import NewEvent, RunRecord

#: Called after each commit with the run's record and the events just committed.
Listener = Callable[[RunRecord, list[NewEvent]], None]


@dataclass(frozen=True)
class StepPlan:
    """What the runner needs to know of one step for this run."""

    step: Step
    fingerprint: str
    params: Mapping[str, Any]
    reads: StepReads = field(default_factory=StepReads)  # what it read besides code

    @property
    def name(self) -> str:
        """The step's name."""
        return self.step.name

    @property
    def cacheable(self) -> bool:
        """Whether a stored output may stand for running it: caching is on, and it reads
        nothing nbflow cannot hash (an untracked step runs every time)."""
        return self.step.options.cache and not self.reads.untracked


class Cancelled(Exception):
    """Raised inside the runner when the run was asked to stop."""


def describe(exc: BaseException | None) -> str:
    """An error as one line of text a store can hold (its type, then its message)."""
    if exc is None:
        return "unknown error"
    text = str(exc)
    return valid_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def valid_text(text: str) -> str:
    """``text`` with any lone surrogate written as its escape (``\\udc80``): an error
    message may hold one, and no store (nor a pandas frame) can hold it as text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
