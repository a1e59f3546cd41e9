"""A step cannot corrupt its inputs: digests of them before and after it runs, or copies.

An input is another step's output, and in the driver's memory (inline and thread
executors) the same object is handed to every step that reads it. A step that changed it
in place would make the others' results depend on the order the steps ran in, and a
later run that recomputes only some of them would disagree with a full one. So the
runner digests each input once (:class:`InputDigests`, by object), the step's task
digests them again after the call, and a difference fails the step with
:class:`~nbflow.errors.InputMutatedError`. Worker processes get their own copies; they
digest before and after the call themselves, so a mutating step fails the same way on
every executor. ``@flow.step(copy_inputs=True)`` gives the step deep copies instead.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Collection, Mapping, MutableMapping
from typing import Any, Protocol

from nbflow.errors import InputMutatedError, RunError

__all__ = ["InputDigests", "InputGuard", "changed_inputs", "digest", "prepare_inputs"]


def digest(value: Any) -> str | None:
    """The state digest of ``value``; None when it cannot change or cannot be digested."""
    from nbflow.values.digest import state_digest

    with contextlib.suppress(Exception):  # an odd object is left unchecked, never failed
        return state_digest(value)
    return None


def prepare_inputs(
    step: str,
    kwargs: Mapping[str, Any],
    inputs: Collection[str],
    expected: Mapping[str, str] | None,
    copy_inputs: bool,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The arguments to call the step with, and the digests to check its inputs against.

    ``expected``: digests the driver made of the same objects (None: digest them here).
    """
    args = dict(kwargs)
    if copy_inputs:
        for name in inputs:
            try:
                args[name] = copy.deepcopy(args[name])
            except Exception as exc:
                raise RunError(
                    f"step {step!r} asks for copies of its inputs (copy_inputs=True), but "
                    f"input {name!r} cannot be copied: {type(exc).__name__}: {exc}"
                ) from exc
        return args, {}
    if expected is not None:
        return args, {n: d for n, d in expected.items() if n in args}
    before = {}
    for name in inputs:
        found = digest(args[name])
        if found is not None:
            before[name] = found
    return args, before


def changed_inputs(args: Mapping[str, Any], before: Mapping[str, str]) -> tuple[str, ...]:
    """The inputs whose digest is no longer what it was."""
    return tuple(name for name, was in before.items() if digest(args[name]) != was)


class InputDigests:
    """The digest of each step output the driver holds, made once per object.

    The object is kept with its digest (so a later object at the same address is never
    taken for it) until :meth:`forget`, which the runner calls when it drops the value.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[Any, str | None]] = {}

    def of(self, name: str, value: Any) -> str | None:
        """The digest of ``value``, the output of step ``name``."""
        known = self._known.get(name)
        if known is not None and known[0] is value:
            return known[1]
        found = digest(value)
        self._known[name] = (value, found)
        return found

    def expected(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Digests of the inputs (name -> value) that can be checked."""
        return {n: d for n, v in values.items() if (d := self.of(n, v)) is not None}

    def forget(self, name: str) -> None:
        """The value of step ``name`` is no longer held."""
        self._known.pop(name, None)


class SharedReaders:
    """Which steps read each value at the same time, on an executor that hands them the
    same object (threads): a change found after one of them ran may be another's doing.
    """

    def __init__(self) -> None:
        self._tick = 0
        self._spans: dict[str, dict[str, list[int | None]]] = {}  # value -> step -> span

    def started(self, step: str, inputs: Collection[str]) -> None:
        """``step`` starts reading ``inputs``."""
        self._tick += 1
        for name in inputs:
            self._spans.setdefault(name, {})[step] = [self._tick, None]

    def finished(self, step: str, inputs: Collection[str]) -> None:
        """``step`` is done with ``inputs``."""
        self._tick += 1
        for name in inputs:
            span = self._spans.get(name, {}).get(step)
            if span is not None:
                span[1] = self._tick

    def alongside(self, step: str, name: str) -> list[str]:
        """The other steps that read ``name`` while ``step`` did."""
        spans = self._spans.get(name, {})
        mine = spans.get(step)
        if mine is None:
            return []
        began, ended = mine
        return sorted(
            other
            for other, (start, end) in spans.items()
            if other != step
            and (ended is None or (start is not None and start < ended))
            and (end is None or (began is not None and end > began))
        )


class _Outcome(Protocol):
    error: BaseException | None
    trace: str
    mutated: tuple[str, ...]


class InputGuard:
    """The runner's side of the check: digests of the values it hands out (when the
    executor shares them) and, after a step, what to do about a change it reports."""

    def __init__(self, *, shares_memory: bool, parallel: bool) -> None:
        self._shared = shares_memory
        self._parallel = parallel
        self._digests = InputDigests()
        self._readers = SharedReaders()

    def expected(self, step: str, values: Mapping[str, Any], copies: bool) -> dict[str, str] | None:
        """The digests ``step``'s task checks its inputs (``values``) against; None when
        the task digests them itself (its own copies) or is given copies."""
        if not self._shared or copies:
            return None
        if self._parallel:
            self._readers.started(step, values)
        return self._digests.expected(values)

    def settle(
        self,
        step: str,
        inputs: Collection[str],
        outcome: _Outcome,
        values: MutableMapping[str, Any],
    ) -> None:
        """After ``step`` ran: drop the values it changed from ``values`` (the steps still
        to read them load them from the store, as they were), and name in its error the
        steps that read the same object at the same time, which may have changed it."""
        self._readers.finished(step, inputs)
        for changed in outcome.mutated:
            values.pop(changed, None)
            self._digests.forget(changed)
        if isinstance(outcome.error, InputMutatedError):
            alongside = self._readers.alongside(step, outcome.error.input)
            if alongside:
                outcome.error = InputMutatedError(step, outcome.error.input, alongside)
                outcome.trace = f"InputMutatedError: {outcome.error}\n"

    def forget(self, name: str) -> None:
        """The runner no longer holds the value of step ``name``."""
        self._digests.forget(name)
