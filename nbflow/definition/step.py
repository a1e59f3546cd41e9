"""A step: a plain function whose parameters name its inputs and run parameters."""

from __future__ import annotations

import functools
import inspect
import keyword
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbflow.errors import DefinitionError


def check_identifier(name: object, what: str = "step name") -> str:
    """Return ``name`` if it is a valid Python identifier, else raise DefinitionError."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise DefinitionError(
            f"{what} {name!r} is not a valid Python identifier: steps are referred to by "
            "parameter names, so use letters, digits and underscores (not starting with a digit)."
        )
    return name


@dataclass(frozen=True)
class StepOptions:
    """How a step is run and cached."""

    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    cache: bool = True
    version: str | None = None
    inputs: tuple[str, ...] = ()  # files it reads: paths, folders or globs, hashed by content
    track_reads: bool = True  # record the files it opens through Python while it runs
    copy_inputs: bool = False  # give the step deep copies of its inputs (it may change them)
    group: str | None = None  # shown folded with its group in a big DAG; display only
    gate: bool = False  # a human gate: its value is shown to a person, who approves or rejects
    # How close a reproduction's output must be to count as ``close`` (run.reproduce()):
    # how a verdict is told, never part of the cache key.
    reproduce_rtol: float | None = None
    reproduce_atol: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise DefinitionError(f"retries must be a whole number >= 0, not {self.retries!r}")
        if not isinstance(self.retry_delay, int | float) or self.retry_delay < 0:
            raise DefinitionError(f"retry_delay must be seconds >= 0, not {self.retry_delay!r}")
        if self.timeout is not None and (
            not isinstance(self.timeout, int | float) or self.timeout <= 0
        ):
            raise DefinitionError(f"timeout must be seconds > 0 or None, not {self.timeout!r}")
        if self.version is not None and not isinstance(self.version, str):
            raise DefinitionError(f"version must be a string or None, not {self.version!r}")
        object.__setattr__(self, "inputs", input_files(self.inputs))
        if not isinstance(self.track_reads, bool):
            raise DefinitionError(f"track_reads must be True or False, not {self.track_reads!r}")
        if not isinstance(self.copy_inputs, bool):
            raise DefinitionError(f"copy_inputs must be True or False, not {self.copy_inputs!r}")
        if self.group is not None and (not isinstance(self.group, str) or not self.group.strip()):
            raise DefinitionError(
                f"group must be a non-empty string (a name for the DAG to fold steps under) "
                f"or None, not {self.group!r}"
            )
        if not isinstance(self.gate, bool):
            raise DefinitionError(f"gate must be True or False, not {self.gate!r}")
        for name in ("reproduce_rtol", "reproduce_atol"):
            tolerance = getattr(self, name)
            if tolerance is not None and (
                isinstance(tolerance, bool)
                or not isinstance(tolerance, int | float)
                or not tolerance >= 0
            ):
                raise DefinitionError(f"{name} must be a number >= 0 or None, not {tolerance!r}")

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-able dict (part of the code fingerprint).

        ``inputs``, ``track_reads`` and ``copy_inputs`` appear only when set, so the
        fingerprint of a step that uses none is what it was before they existed. ``group``
        only changes how the DAG is drawn and the ``reproduce_*`` tolerances only how a
        reproduction is judged, so they are never part of it."""
        options: dict[str, Any] = {
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "timeout": self.timeout,
            "cache": self.cache,
            "version": self.version,
        }
        if self.copy_inputs:
            options["copy_inputs"] = True
        if self.inputs:
            options["inputs"] = list(self.inputs)
        if not self.track_reads:
            options["track_reads"] = False
        if self.gate:
            options["gate"] = True
        return options


def input_files(value: object) -> tuple[str, ...]:
    """A step's ``inputs=`` as a tuple of path texts: one path (str or ``os.PathLike``) or
    a sequence of them; DefinitionError for anything else."""
    import os

    if isinstance(value, str | os.PathLike):
        value = [value]
    if not isinstance(value, list | tuple):
        raise DefinitionError(
            f"inputs must be a path or a list of paths (globs like 'data/*.csv' allowed), "
            f"not {type(value).__name__}"
        )
    paths = []
    for item in value:
        if not isinstance(item, str | os.PathLike):
            raise DefinitionError(
                f"inputs entry {item!r} is not a path: give file paths, folders or globs "
                "as strings, e.g. inputs=['data/raw.csv', 'data/*.parquet']"
            )
        text = os.fspath(item)
        if isinstance(text, bytes):
            raise DefinitionError(f"inputs entry {item!r} is bytes: give the path as a string")
        if not text.strip():
            raise DefinitionError("an inputs entry is empty: give a file path, folder or glob")
        paths.append(text)
    return tuple(paths)


@dataclass(frozen=True)
class Step:
    """One node of a flow: ``func`` called with its inputs and run parameters.

    ``inputs`` are the parameters without a default (each must name another step);
    ``params`` are those with a default (run parameters, overridable per run);
    ``depends_on`` adds steps that must run first without passing their value.
    """

    name: str
    func: Callable[..., Any]
    inputs: tuple[str, ...]
    params: Mapping[str, Any]
    param_types: Mapping[str, str]
    depends_on: tuple[str, ...] = ()
    options: StepOptions = field(default_factory=StepOptions)
    source: str | None = None  # explicit source text (cell magics), else read from func

    @functools.cached_property
    def upstream(self) -> tuple[str, ...]:
        """Every step this one needs: its inputs, then ``depends_on``."""
        return self.inputs + tuple(d for d in self.depends_on if d not in self.inputs)

    @classmethod
    def from_function(
        cls,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        depends_on: Sequence[str] | str = (),
        options: StepOptions | None = None,
        source: str | None = None,
    ) -> Step:
        """Build a step from a function's signature."""
        if not callable(func):
            raise DefinitionError(f"a step must be a function, not {type(func).__name__}")
        step_name = _step_name(func, name)
        _check_kind(func, step_name)
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        for dep in depends_on:
            check_identifier(dep, "depends_on entry")
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise DefinitionError(
                f"cannot read the parameters of step {step_name!r}: {exc}"
            ) from None
        inputs: list[str] = []
        params: dict[str, Any] = {}
        types: dict[str, str] = {}
        for p in signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise DefinitionError(
                    f"step {step_name!r} takes *{p.name}: a step's parameters must be named "
                    "(each one a step it reads or a run parameter with a default)."
                )
            if p.kind is p.POSITIONAL_ONLY:
                raise DefinitionError(
                    f"step {step_name!r} has positional-only parameter {p.name!r}: nbflow "
                    "passes inputs by name."
                )
            if p.default is p.empty:
                inputs.append(p.name)
            else:
                params[p.name] = p.default
                types[p.name] = _type_name(p.annotation, p.default)
        if step_name in inputs:
            raise DefinitionError(f"step {step_name!r} cannot take itself as an input")
        return cls(
            name=step_name,
            func=func,
            inputs=tuple(inputs),
            params=params,
            param_types=types,
            depends_on=tuple(depends_on),
            options=options or StepOptions(),
            source=source,
        )


def _step_name(func: Callable[..., Any], name: str | None) -> str:
    """The step's name: ``name``, else the function's, which a lambda or a partial lacks."""
    if name is not None:
        return check_identifier(name)
    own = getattr(func, "__name__", None)
    if own == "<lambda>" or not isinstance(own, str) or not own:
        what = "a lambda" if own == "<lambda>" else f"a {type(func).__name__}"
        raise DefinitionError(
            f"a step made from {what} needs a name: nbflow refers to steps by name. Pass "
            "one, e.g. flow.step(name='double')(lambda raw: raw * 2), or write a def."
        )
    return check_identifier(own)


def _check_kind(func: Callable[..., Any], name: str) -> None:
    """Refuse, at definition, the functions a step cannot be: generators (a step's value
    is what it returns, and a generator returns before its body runs)."""
    targets = [func, vars(type(func)).get("__call__")]
    for target in targets:
        if inspect.isasyncgenfunction(target):
            kind = "an async generator function (async def with yield)"
        elif inspect.isgeneratorfunction(target):
            kind = "a generator function (it uses yield)"
        else:
            continue
        raise DefinitionError(
            f"step {name!r} is {kind}: a step's value is what it returns, and calling a "
            "generator runs none of its body. Return the values instead, e.g. "
            "`return list(...)` (or `return [x async for x in ...]`)."
        )


def _type_name(annotation: Any, default: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return type(default).__name__ if default is not None else "any"
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation)
