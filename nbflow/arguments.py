"""Checking what a user passes to nbflow's public functions, before it reaches a store or
a driver: a wrong type or value is a ParameterError that names the argument, what it
must be and what it was, never a raw TypeError, ValueError or database error.
"""

from __future__ import annotations

import numbers
import operator
import os
from collections.abc import Collection
from typing import Any

from nbflow.errors import ParameterError


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: object) -> str:
    return f"{type(value).__name__} {_shown(value)}"


def text(value: object, what: str, *, example: str = "") -> str:
    """``value`` if it is a string; ParameterError otherwise."""
    if not isinstance(value, str):
        hint = f" such as {example}" if example else ""
        raise ParameterError(f"{what} must be a string{hint}, not {_got(value)}")
    return value


def optional_text(value: object, what: str) -> str | None:
    """``value`` if it is a string or None; ParameterError otherwise."""
    return None if value is None else text(value, what)


def run_id(value: object) -> str:
    """A run id: a string (``run.id``, or a row of ``nf.runs()``)."""
    if not isinstance(value, str):
        raise ParameterError(
            f"a run id is a string (run.id, or the run_id column of nf.runs()), not {_got(value)}"
        )
    return value


def count(value: object, what: str, *, minimum: int = 0) -> int:
    """A whole number >= ``minimum`` (a numpy integer too; not a bool, a float or a
    numeric string)."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ParameterError(f"{what} must be a whole number >= {minimum}, not {_shown(value)}")
    return number


def optional_count(value: object, what: str, *, minimum: int = 0) -> int | None:
    """:func:`count`, or None."""
    return None if value is None else count(value, what, minimum=minimum)


def seconds(value: object, what: str, *, positive: bool = False) -> float:
    """A number of seconds (>= 0, or > 0 with ``positive``)."""
    number = (
        float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    )
    if number is None or number != number or (number <= 0 if positive else number < 0):
        bound = "> 0" if positive else ">= 0"
        raise ParameterError(f"{what} must be a number of seconds {bound}, not {_shown(value)}")
    return number


def optional_seconds(value: object, what: str, *, positive: bool = False) -> float | None:
    """:func:`seconds`, or None (no limit)."""
    return None if value is None else seconds(value, what, positive=positive)


def flag(value: object, what: str) -> bool:
    """True or False (a truthy string would silently mean True)."""
    if not isinstance(value, bool):
        raise ParameterError(f"{what} must be True or False, not {_shown(value)}")
    return value


def names(value: object, what: str) -> list[str]:
    """One step name or a collection of them, as a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes) or not isinstance(value, Collection):
        raise ParameterError(
            f"{what} must be a step name or a list of step names, not {_got(value)}"
        )
    listed = list(value)
    for name in listed:
        if not isinstance(name, str):
            raise ParameterError(f"{what} must hold step names (strings), not {_got(name)}")
    return listed


def run_ids(value: object, what: str) -> list[str]:
    """A collection of run ids (not one id as text), as a list."""
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise ParameterError(f"{what} must be a list of run ids, not {_got(value)}")
    return [run_id(v) for v in value]


def path(value: object, what: str) -> str:
    """A file system path (a string or an ``os.PathLike``), as a string."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        found = os.fspath(value)
        if isinstance(found, str):
            return found
    raise ParameterError(f"{what} must be a path (a str or pathlib.Path), not {_got(value)}")


def instance(value: object, kind: type, what: str, *, hint: str = "") -> Any:
    """``value`` if it is a ``kind``; ParameterError naming what it was otherwise."""
    if not isinstance(value, kind):
        extra = f" {hint}" if hint else ""
        raise ParameterError(f"{what} must be a {kind.__name__}, not {_got(value)}.{extra}")
    return value


def flow_key(name: object, fingerprint: object) -> None:
    """A flow's name and fingerprint: two strings."""
    text(name, "a flow's name")
    text(fingerprint, "a flow's fingerprint")


def env_seconds(name: str, default: float) -> float:
    """A non-negative number of seconds from environment variable ``name``."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ParameterError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ParameterError(f"{name} must not be negative, not {raw!r}")
    return value
