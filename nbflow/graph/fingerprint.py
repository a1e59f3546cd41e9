"""Code fingerprints: what a step's cache key knows about what the step reads.

A fingerprint covers the step function's normalized source (comments, docstrings,
decorators and formatting removed), transitively the functions and classes of the user's
own code that it reads (the notebook, and modules that are not installed packages nor
the standard library: :mod:`nbflow.graph.modules`), the values of the plain constants it
reads (``THRESHOLD = 0.5``), the content of the data it reads (``LOOKUP``, a frame:
:mod:`nbflow.graph.data`), the name and version of each installed package whose code or
values it uses, its parameter defaults and its options. Functions whose source cannot be
read (made by ``exec`` from a string) are covered by their bytecode instead. A value it
reads that cannot be hashed makes the step *untracked* (:class:`StepReads`).

Everything that depends only on a code object (its normalized source, the global names
its bytecode reads, its bytecode digest) is cached per code object, which is immutable
(:mod:`nbflow.graph.source`). Globals, closures and defaults are re-read on every call
because they can change.
"""

from __future__ import annotations

import enum
import functools
import sys
import types
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from nbflow.graph.code_text import (
    Budget,
    class_text,
    constant_hash,
    defaults_hash,
    describe,
    encode_constant,
    function_text,
)
from nbflow.graph.data import DATA, IGNORED, UNTRACKED, DataHashes
from nbflow.graph.modules import ModuleKind, module_kind, package_of
from nbflow.graph.source import CODE_CACHE, as_function, normalized_source, unwrap
from nbflow.json_text import compact_encoder

__all__ = [
    "StepReads",
    "code_fingerprint",
    "fingerprint_parts",
    "normalized_source",
    "step_fingerprint",
]

# Bump when the meaning of a fingerprint changes, so old cache entries stop matching.
# 2: data globals, the user's own modules and installed packages are covered.
_SCHEME = 2

SELF = "<self>"

PACKAGE = "<package "  # part key of an installed package: "<package pandas>" -> version

# Callables implemented in C: code of the module that made them, not data.
_NATIVE_CODE = (types.BuiltinFunctionType, np.ufunc)
# The types a constant can have (code_text.encode_constant): anything else is data.
_CONSTANT_TYPES = (
    type(None),
    type(Ellipsis),
    bool,
    int,
    float,
    str,
    bytes,
    enum.Enum,
    tuple,
    list,
    set,
    frozenset,
    dict,
)


@dataclass(frozen=True)
class StepReads:
    """What a step's fingerprint saw besides its code: the record of what it reads.

    ``code`` is the fingerprint of its code and constants alone; ``globals`` maps each
    data global it reads (by part name) to its content hash (or to ``untracked: ...`` /
    ``ignored: ...``); ``packages`` each installed distribution whose code or values it
    uses to its version; ``untracked`` each global it reads that cannot be hashed to why.
    """

    code: str = ""
    globals: Mapping[str, str] = field(default_factory=dict)
    packages: Mapping[str, str] = field(default_factory=dict)
    untracked: Mapping[str, str] = field(default_factory=dict)


# -- the walk --------------------------------------------------------------------------


def _references(
    func: types.FunctionType,
) -> Iterator[tuple[str, Any, tuple[tuple[str, ...], ...]]]:
    """The (name, value, attribute chains) ``func`` reads: the globals its code loads
    (with the attributes it reads from each), its closure (chains unknown: ``((),)``)."""
    namespace = func.__globals__
    info = CODE_CACHE.get(func.__code__)
    for name in info.global_names:
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:  # else a builtin, or a name not defined (yet)
            yield name, value, info.attributes.get(name, ((),))
    if func.__closure__:
        for name, cell in zip(func.__code__.co_freevars, func.__closure__, strict=True):
            try:
                yield name, cell.cell_contents, ((),)
            except ValueError:  # an empty cell: the variable is not assigned yet
                continue


_MISSING = object()


class _Walk:
    """One fingerprint computation: collects the parts reachable from a function."""

    def __init__(
        self, root: types.FunctionType, exclude: Collection[str], data: DataHashes
    ) -> None:
        self.module = root.__module__
        self.exclude = exclude
        self.data = data
        self.parts: dict[str, str] = {}
        self.seen: set[int] = {id(root)}
        self.seen_values: set[int] = set()  # data values and whole modules already added
        self.queue: list[tuple[str, types.FunctionType]] = [(SELF, root)]
        self.untracked: dict[str, str] = {}

    def _key(self, name: str, referrer: str) -> str:
        """``name``, qualified by its referrer if another part already uses that name."""
        if name not in self.parts:
            return name
        key = f"{referrer}.{name}"
        suffix = 2
        while key in self.parts:
            key = f"{referrer}.{name}#{suffix}"
            suffix += 1
        return key

    def _followed(self, module: str | None) -> bool:
        """Whether code of ``module`` is the user's (hashed) rather than a package's."""
        return module == self.module or module_kind(module or "") is ModuleKind.USER

    def add_function(self, key: str, func: types.FunctionType, source: str | None = None) -> None:
        self.parts[key] = function_text(func, source)
        defaults = defaults_hash(func)
        if defaults is not None:
            self.parts[f"{key}.__defaults__"] = defaults
            for value in (*(func.__defaults__ or ()), *(func.__kwdefaults__ or {}).values()):
                if isinstance(value, types.FunctionType | type):
                    self.visit(value.__name__, value, key)

    def add_package(self, module: str | None) -> None:
        found = package_of(module or "")
        if found is not None:
            dist, version = found
            self.parts[f"{PACKAGE}{dist}>"] = version

    def visit(
        self, name: str, value: Any, referrer: str, chains: tuple[tuple[str, ...], ...] = ((),)
    ) -> None:
        """Add the part for ``value`` read under ``name``: code, a constant, data, or the
        package it comes from; ``chains``: the attributes read from it (for modules)."""
        if name in self.exclude:
            return
        obj = unwrap(value)
        if isinstance(obj, types.ModuleType):
            self.visit_module(name, obj, referrer, chains)
            return
        if isinstance(obj, types.FunctionType | type):
            if not self._followed(obj.__module__):
                self.add_package(obj.__module__)  # pd.read_csv: pandas' name and version
                return
            if id(obj) in self.seen:
                return
            self.seen.add(id(obj))
            key = self._key(name, referrer)
            if isinstance(obj, types.FunctionType):
                self.add_function(key, obj)
                self.queue.append((key, obj))
                return
            text, functions, bases = class_text(obj)
            self.parts[key] = text
            for function in functions:
                if id(function) not in self.seen:
                    self.seen.add(id(function))
                    self.queue.append((key, function))
            for base_name, base in bases:
                self.visit(base_name, base, key)
            return
        if isinstance(obj, _NATIVE_CODE):
            module = getattr(obj, "__module__", None)
            self.add_package(module if isinstance(module, str) else type(obj).__module__)
            return
        digest = constant_hash(value) if isinstance(value, _CONSTANT_TYPES) else None
        if digest is not None:
            if self.parts.get(name) != digest:  # else the same constant read elsewhere
                self.parts[self._key(name, referrer)] = digest
            return
        self.add_data(name, value, referrer)

    def add_data(self, name: str, value: Any, referrer: str) -> None:
        """A data global: its content hash, its class's code, its type's package."""
        if id(value) in self.seen_values:
            return  # the same object read under another name, or by another function
        self.seen_values.add(id(value))
        part = self.data.part(value)
        if part.user_type is not None or type(value).__module__ == self.module:
            self.visit(type(value).__name__, type(value), referrer)  # its methods run
        elif part.package is not None:
            self.parts[f"{PACKAGE}{part.package[0]}>"] = part.package[1]
        key = self._key(name, referrer)
        self.parts[key] = part.text
        if part.untracked is not None:
            self.untracked[key] = part.untracked

    def visit_module(
        self,
        name: str,
        module: types.ModuleType,
        referrer: str,
        chains: tuple[tuple[str, ...], ...],
    ) -> None:
        """A module read under ``name``: a package's name and version, or, for the
        user's own module, what is read from it (all of it, if it is used bare)."""
        kind = module_kind(module.__name__)
        if kind is ModuleKind.STDLIB:
            return
        if kind is ModuleKind.PACKAGE:
            self.add_package(module.__name__)
            return
        for chain in chains:
            target: Any = module
            path = [name]
            for attribute in chain:
                if not isinstance(target, types.ModuleType):
                    break
                # Not getattr: a module's __getattr__ may import things (lazy loading).
                found = vars(target).get(attribute, _MISSING)
                if found is _MISSING:
                    found = sys.modules.get(f"{target.__name__}.{attribute}", _MISSING)
                if found is _MISSING:
                    break
                target = found
                path.append(attribute)
            if isinstance(target, types.ModuleType):
                if target is module:
                    self.add_module(name, module, referrer)
                else:
                    self.visit_module(".".join(path), target, referrer, ((),))
            else:
                self.visit(".".join(path), target, referrer)

    def add_module(self, name: str, module: types.ModuleType, referrer: str) -> None:
        """Everything a user module defines (a module passed around bare)."""
        if id(module) in self.seen_values:
            return
        self.seen_values.add(id(module))
        for attribute, value in list(vars(module).items()):
            if attribute.startswith("__") or isinstance(value, types.ModuleType):
                continue
            obj = unwrap(value)
            if isinstance(obj, types.FunctionType | type) and obj.__module__ != module.__name__:
                continue  # imported from elsewhere: followed where it is used
            self.visit(f"{name}.{attribute}", value, referrer)

    def run(self) -> dict[str, str]:
        index = 0
        while index < len(self.queue):  # breadth-first; `seen` makes cycles terminate
            referrer, func = self.queue[index]
            index += 1
            for name, value, chains in _references(func):
                self.visit(name, value, referrer, chains)
        return self.parts


def _collect(
    func: Callable[..., Any],
    exclude: Collection[str],
    source: str | None,
    data: DataHashes | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The parts of ``func``'s fingerprint, and the globals it reads that are untracked."""
    root = as_function(func)
    if root is None:  # a builtin or C-level callable: only its identity is known
        return {SELF: describe(func)}, {}
    if not isinstance(exclude, set | frozenset):
        exclude = frozenset(exclude)
    walk = _Walk(root, exclude, data if data is not None else DataHashes())
    walk.add_function(SELF, root, source)
    if isinstance(func, functools.partial):
        bound = [*enumerate(func.args), *sorted(func.keywords.items())]
        encoded = [f"{k}={encode_constant(v, Budget()) or describe(v)}" for k, v in bound]
        walk.parts["<partial>"] = xxhash.xxh3_64_hexdigest(
            "\n".join(encoded).encode("utf-8", "surrogatepass")
        )
    return walk.run(), walk.untracked


def fingerprint_parts(
    func: Callable[..., Any], *, exclude: Collection[str] = (), source: str | None = None
) -> dict[str, str]:
    """Every part that goes into the fingerprint of ``func``, by name.

    ``"<self>"`` is the function's normalized source (or ``"bytecode:<digest>"``); a
    function or class of the user's code it reads maps to its normalized source (a class
    to its methods' sources); a constant to a hash of its value; a data global to
    ``"data:<content hash>"`` (``"untracked:<type>"`` if it cannot be hashed,
    ``"ignored:<type>"`` if marked with ``nf.untracked``); ``"<package DIST>"`` to the
    version of an installed distribution it uses; ``"<name>.__defaults__"`` to a hash of
    a function's parameter defaults. Names in ``exclude`` are not followed.
    """
    return _collect(func, exclude, source)[0]


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
    return describe(value)


# One encoder for every fingerprint, set up once; its text is json.dumps' with these
# options, so fingerprints stay what they were.
_canonical = compact_encoder(sort_keys=True, default=_json_default)


def _digest(payload: dict[str, Any]) -> str:
    payload["scheme"] = _SCHEME
    return xxhash.xxh3_128_hexdigest(_canonical(payload).encode("utf-8", "surrogatepass"))


def step_fingerprint(
    func: Callable[..., Any],
    *,
    options: Mapping[str, Any] | None = None,
    version: str | None = None,
    exclude: Collection[str] = (),
    source: str | None = None,
    data: DataHashes | None = None,
) -> tuple[str, StepReads]:
    """The hex xxh3-128 fingerprint of a step, stable across processes, and what it read.

    It covers :func:`fingerprint_parts` and ``options``. With ``version``, the user has
    taken over: the fingerprint is a hash of the function's name, ``version`` and
    ``options`` only, so neither code edits nor data change it (and nothing is untracked).
    ``data`` memoizes data hashes: pass one to every step of a run.
    """
    opts = {str(k): v for k, v in (options or {}).items()}
    if version is not None:
        name = getattr(func, "__name__", type(func).__name__)
        fingerprint = _digest({"name": name, "version": version, "options": opts})
        return fingerprint, StepReads(code=_digest({"name": name, "version": version}))
    parts, untracked = _collect(func, exclude, source, data)
    code: dict[str, str] = {}
    globals_: dict[str, str] = {}
    packages: dict[str, str] = {}
    for key, value in parts.items():
        if key.startswith(PACKAGE):
            packages[key[len(PACKAGE) : -1]] = value
        elif value.startswith(_READ_PREFIXES):
            globals_[key] = value.removeprefix(DATA)
        else:
            code[key] = value
    # The code's own fingerprint is recorded (so flow.status() can tell a code change from
    # a data one); the step's covers it, what it reads, and its options.
    code_print = _digest({"parts": code})
    payload: dict[str, Any] = {"code": code_print, "options": opts}
    if globals_ or packages:
        payload["reads"] = {"globals": globals_, "packages": packages}
    reads = StepReads(code_print, globals_, packages, untracked)
    return _digest(payload), reads


_READ_PREFIXES = (DATA, UNTRACKED, IGNORED)


def code_fingerprint(
    func: Callable[..., Any],
    *,
    options: Mapping[str, Any] | None = None,
    version: str | None = None,
    exclude: Collection[str] = (),
    source: str | None = None,
) -> str:
    """The fingerprint of :func:`step_fingerprint` alone."""
    return step_fingerprint(func, options=options, version=version, exclude=exclude, source=source)[
        0
    ]


def _clear_cache() -> None:
    """Forget every cached source and digest (for tests and benchmarks)."""
    CODE_CACHE.clear()
