"""Errors in how a flow is defined: cycles, missing dependencies, cells, steps, parameters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nbflow.errors.base import NbflowError, suggest


class DefinitionError(NbflowError):
    """A step or flow is defined in a way nbflow cannot use (bad name, clash, options)."""


class CycleError(DefinitionError):
    """The steps' dependencies form a cycle; ``.cycle`` lists the steps on it."""

    def __init__(self, cycle: Sequence[str]):
        self.cycle = list(cycle)
        path = " -> ".join([*self.cycle, self.cycle[0]]) if self.cycle else "?"
        super().__init__(
            f"the steps form a cycle: {path}. Remove one of these dependencies so the steps "
            "can run in order."
        )


class MissingDependencyError(DefinitionError):
    """A step reads a name that is neither a step nor a run parameter."""

    def __init__(self, step: str, name: str, steps: Iterable[str]):
        self.step = step
        self.name = name
        hint = suggest(name, steps)
        super().__init__(
            f"step {step!r} takes a parameter {name!r}, which is neither a step of the flow nor "
            f"a run parameter (give it a default to make it one).{hint}"
        )


class CellError(DefinitionError):
    """A ``%%step`` cell or an nbflow magic cannot be used as written (a syntax error, no
    value, a name defined nowhere, bad options); the message names the cell and line."""


class UnknownStepError(NbflowError, KeyError):
    """A step name that the flow or run does not have."""

    def __init__(self, name: str, steps: Iterable[str], where: str = "the flow"):
        self.name = name
        super().__init__(f"{where} has no step {name!r}.{suggest(name, steps)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ParameterError(NbflowError, TypeError):
    """A run parameter that no step declares, or a value that cannot be recorded."""
