"""Pickling step outputs into canonical bytes: one value, the same bytes in every process.

pickle writes a set's elements in iteration order, and for strings (and whatever hashes
them, such as tuples of strings) that order follows the process's hash seed
(``PYTHONHASHSEED``): the same set of strings got a new content hash in every kernel,
and every step depending on it missed the cache. Here the elements of each set and
frozenset, wherever it sits in the value, are written in a canonical order: sorted when
they are all strings, all bytes or all numbers (none NaN), otherwise ordered by their own
canonical pickles. The bytes still unpickle, with plain :func:`pickle.loads`, to an equal
value. Dicts keep their insertion order, which does not depend on hashing.

How: cloudpickle's C pickler never shows an exact ``set`` to ``reducer_override`` or to
the dispatch table, only to ``persistent_id``. So a first pass, at C speed, watches for
sets there and is the result when the value holds none (most values). A value that holds
one is pickled again by the pure-Python pickler, which does ask ``reducer_override``
about every object, with cloudpickle's reducers and the sets in order (slower: only
values with sets pay for it).

Open files are refused (:class:`OpenFileError`): cloudpickle would write a text file as a
``StringIO`` of what was left to read, another object than the one pickled.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import ChainMap
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar, cast

import cloudpickle

__all__ = ["OpenFileError", "canonical_dump", "canonical_dumps", "open_file_name"]

_SETS = (set, frozenset)
_EXACT_SETS = frozenset(_SETS)
_SET_REDUCES = (set.__reduce__, frozenset.__reduce__)
_NUMBERS = frozenset({int, float, bool})


class _Writable(Protocol):
    def write(self, data: Any, /) -> Any: ...


F = TypeVar("F", bound=_Writable)


class _SetFound(Exception):
    """The value holds a set: pickle it again, in order."""


class OpenFileError(TypeError):
    """The value holds an open file, which is not pickled (``.name``: which file)."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"cannot pickle an open file ({name})")


# The file objects open() returns (text, buffered, raw); in-memory StringIO and BytesIO
# pickle as themselves and stay allowed.
_FILE_TYPES = (io.TextIOWrapper, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.FileIO)


def open_file_name(value: Any) -> str | None:
    """How to name ``value`` if it is a file object open() returns (its name, mode, or
    that it is closed), else None."""
    if not isinstance(value, _FILE_TYPES):
        return None
    name = getattr(value, "name", None)
    label = repr(name) if isinstance(name, str | bytes) else f"descriptor {name!r}"
    if value.closed:
        return f"{label}, closed"
    mode = getattr(value, "mode", None)
    return f"{label}, mode {mode!r}" if isinstance(mode, str) else label


def _refuse_file(value: Any) -> Any:
    raise OpenFileError(open_file_name(value) or type(value).__name__)


_DISPATCH = ChainMap(dict.fromkeys(_FILE_TYPES, _refuse_file), cloudpickle.Pickler.dispatch_table)


class _SetSpotter(cloudpickle.Pickler):
    """cloudpickle's (C) pickler, stopping at the first set or frozenset it meets."""

    dispatch_table = _DISPATCH

    # Called for every object pickled, so kept to a type lookup: pickling many small
    # objects takes ~25 % longer with it (~75 % with an isinstance check).
    def persistent_id(self, obj: Any, _type: type = type, _exact: Any = _EXACT_SETS) -> None:
        if _type(obj) in _exact:
            raise _SetFound
        return None

    replace: Callable[[Any], Any] | None = None  # see canonical_dump

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _SETS):  # a subclass (exact sets never get here)
            raise _SetFound
        if self.replace is not None:
            replaced = self.replace(obj)
            if replaced is not None:
                return replaced
        return super().reducer_override(obj)


_CLOUDPICKLE = cloudpickle.Pickler


class _Replacing(cloudpickle.Pickler):
    """cloudpickle's (C) pickler, asking ``replace`` first (sets in their own order)."""

    def __init__(self, file: _Writable, protocol: int, replace: Callable[[Any], Any]) -> None:
        super().__init__(file, protocol=protocol)
        self.replace = replace

    def reducer_override(self, obj: Any) -> Any:
        replaced = self.replace(obj)
        return replaced if replaced is not None else super().reducer_override(obj)


class _OrderedPickler(pickle._Pickler):
    """The pure-Python pickler with cloudpickle's reducers, writing sets in order."""

    # cloudpickle's reducers (functions and classes by value, its dispatch table) only
    # need ``globals_ref`` and ``proto`` from the pickler they run in.
    dispatch_table = _DISPATCH
    _dynamic_function_reduce = _CLOUDPICKLE._dynamic_function_reduce
    _function_reduce = _CLOUDPICKLE._function_reduce
    _function_getnewargs = _CLOUDPICKLE._function_getnewargs
    _cloudpickle_reduce = _CLOUDPICKLE.reducer_override

    def __init__(
        self, file: _Writable, protocol: int, replace: Callable[[Any], Any] | None = None
    ) -> None:
        super().__init__(file, protocol=protocol)
        self.proto = protocol
        self.globals_ref: dict[int, dict[str, Any]] = {}
        self.replace = replace

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _SETS):
            reduced = _ordered_reduce(obj, self.proto)
            if reduced is not None:
                return reduced
        if self.replace is not None:
            replaced = self.replace(obj)
            if replaced is not None:
                return replaced
        return self._cloudpickle_reduce(obj)


def canonical_dump(
    value: Any,
    new_file: Callable[[], F],
    protocol: int = pickle.HIGHEST_PROTOCOL,
    *,
    replace: Callable[[Any], Any] | None = None,
) -> F:
    """Pickle ``value`` (as cloudpickle does, sets in canonical order) into a file made
    by ``new_file()``, and return that file.

    A value holding a set is written twice, to a second ``new_file()``: the first is
    dropped. Raises whatever pickling the value raises. ``replace(obj)``, if given, is
    asked first about every object the pickler would reduce (not the builtin scalars and
    containers): a reduce tuple it returns is used instead (for hashing: a stream that
    is never loaded may stand a class in for a text of its code).
    """
    first = new_file()
    try:
        spotter = _SetSpotter(first, protocol=protocol)
        spotter.replace = replace
        spotter.dump(value)
        return first
    except _SetFound:
        pass
    del first
    ordered = new_file()
    try:
        _OrderedPickler(ordered, protocol, replace).dump(value)
    except RecursionError:
        # Too deep for the pure-Python pickler (it nests several frames per level, the C
        # one fewer): store the value with its sets in their own order.
        ordered = new_file()
        pickler = (
            _CLOUDPICKLE(ordered, protocol=protocol)
            if replace is None
            else _Replacing(ordered, protocol, replace)
        )
        pickler.dispatch_table = _DISPATCH
        pickler.dump(value)
    return ordered


def canonical_dumps(value: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """The canonical pickle of ``value`` as bytes (see :func:`canonical_dump`)."""
    return canonical_dump(value, io.BytesIO, protocol).getvalue()


def _ordered_reduce(obj: set[Any] | frozenset[Any], protocol: int) -> tuple[Any, ...] | None:
    """How to pickle a set with its elements in order; None to leave it to pickle."""
    kind = type(obj)
    if kind is set or kind is frozenset:
        return (kind, (_ordered(obj),))
    # A subclass pickled the way it inherits, as (class, (elements,), state): in order too.
    if kind.__reduce_ex__ is not object.__reduce_ex__ or kind.__reduce__ not in _SET_REDUCES:
        return None
    cls, (elements,), *rest = cast(tuple[Any, ...], obj.__reduce_ex__(protocol))
    return (cls, (_ordered(elements),), *rest)


def _ordered(elements: Iterable[Any]) -> list[Any]:
    """The elements in a canonical order: sorted where that is a total order, else by
    their canonical pickles (equal pickles, equal bytes: their order does not matter)."""
    items = list(elements)
    kinds = {type(item) for item in items}
    if kinds == {str} or kinds == {bytes}:
        return sorted(items)
    if kinds <= _NUMBERS and not any(isinstance(x, float) and math.isnan(x) for x in items):
        return sorted(items)
    return sorted(items, key=canonical_dumps)
