"""Code fingerprints: what a step's cache key knows about the step's code.

A fingerprint covers the step function's normalized source (comments, docstrings,
decorators and formatting removed), transitively the functions and classes of the same
module that it reads, the values of the plain constants it reads (``THRESHOLD = 0.5``),
its parameter defaults and its options. Functions whose source cannot be read (made by
``exec`` from a string) are covered by their bytecode instead.

Everything that depends only on a code object (its normalized source, the global names
its bytecode reads, its bytecode digest) is cached per code object, which is immutable
(:mod:`nbflow.graph.source`). Globals, closures and defaults are re-read on every call
because they can change.
"""

from __future__ import annotations

import enum
import functools
import sys
import textwrap
import types
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import xxhash

from nbflow.graph.source import CODE_CACHE, as_function, code_source, normalized_source, unwrap
from nbflow.json_text import compact_encoder

__all__ = ["code_fingerprint", "fingerprint_parts", "normalized_source"]

# Bump when the meaning of a fingerprint changes, so old cache entries stop matching.
_SCHEME = 1

SELF = "<self>"

# Past these sizes a global is data, not a constant: hashing it on every run would cost
# more than the fingerprint is worth (and the spec is: never hash data).
_MAX_ITEMS = 1_000
_MAX_TEXT = 1_000_000
_MAX_DEPTH = 32

# The co_flags bits that describe the code itself. The higher ones are __future__ flags,
# inherited from whoever called compile(): the same cell would fingerprint differently
# depending on the module that exec'd it (their effect on the bytecode is in co_code).
_CODE_FLAGS = 0xFFFF

# Class attributes that say nothing about behaviour (or repeat what is hashed otherwise).
_CLASS_NOISE = frozenset(
    {
        "__module__",
        "__qualname__",
        "__doc__",
        "__dict__",
        "__weakref__",
        "__firstlineno__",
        "__static_attributes__",
        "__orig_bases__",
        "__parameters__",
        "__match_args__",
        "__dataclass_fields__",
        "__dataclass_params__",
        "__hash__",
    }
)


# -- bytecode fallback -----------------------------------------------------------------


def _feed_code(out: list[str], code: types.CodeType) -> None:
    """Append a stable description of ``code``: no addresses, file names or line numbers."""
    out.append(
        f"code:{code.co_name}:{code.co_argcount}:{code.co_posonlyargcount}:"
        f"{code.co_kwonlyargcount}:{code.co_flags & _CODE_FLAGS}:{code.co_code.hex()}"
    )
    for label, names in (
        ("names", code.co_names),
        ("varnames", code.co_varnames),
        ("freevars", code.co_freevars),
        ("cellvars", code.co_cellvars),
    ):
        out.append(f"{label}:{','.join(names)}")
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(out, const)
        else:
            # Literals are code, however big: no budget (and this is cached anyway).
            encoded = _encode_constant(const, _Budget(sys.maxsize), literal=True)
            out.append(encoded if encoded is not None else f"<{type(const).__qualname__}>")
    out.append("end")


def _code_digest(code: types.CodeType) -> str:
    info = CODE_CACHE.get(code)
    if info.digest is None:
        out: list[str] = []
        _feed_code(out, code)
        info.digest = "bytecode:" + xxhash.xxh3_128_hexdigest(
            "\n".join(out).encode("utf-8", "surrogatepass")
        )
    return info.digest


def _function_text(func: types.FunctionType, source: str | None = None) -> str:
    """The normalized source of ``func``, or its bytecode digest if it has none."""
    return code_source(func.__code__, func, source) or _code_digest(func.__code__)


# -- constants -------------------------------------------------------------------------


class _Budget:
    """How many more items a constant may have before it counts as data."""

    __slots__ = ("items",)

    def __init__(self, items: int = _MAX_ITEMS) -> None:
        self.items = items


def _encode_constant(
    value: Any, budget: _Budget, depth: int = 0, *, literal: bool = False
) -> str | None:
    """A canonical, process-independent text for a constant, or None if it is not one.

    Sets and dict keys are sorted by their encoding, so hash randomization cannot change
    the result. ``literal`` also admits what can appear in ``co_consts`` (complex, ...).
    """
    budget.items -= 1
    if budget.items < 0 or depth > _MAX_DEPTH:
        return None
    if isinstance(value, tuple | list | set | frozenset | dict) and len(value) > budget.items:
        return None  # too big: reject before encoding any of it
    if value is None or value is Ellipsis:
        return repr(value)
    if isinstance(value, bool):
        return f"b:{value}"
    if isinstance(value, int):
        return f"i:{int(value):x}"  # hex: no limit on the number of digits, unlike str(int)
    if isinstance(value, float):
        return f"f:{float(value)!r}"
    if isinstance(value, str):
        if len(value) > _MAX_TEXT and not literal:
            return None
        return f"s{len(value)}:{str.__str__(value)}"  # __str__: no subclass formatting
    if isinstance(value, bytes):
        if len(value) > _MAX_TEXT and not literal:
            return None
        return f"y{len(value)}:{xxhash.xxh3_64_hexdigest(value)}"
    if literal and isinstance(value, complex):
        return f"c:{value!r}"
    if isinstance(value, enum.Enum):
        inner = _encode_constant(value.value, budget, depth + 1)
        return None if inner is None else f"e:{type(value).__qualname__}.{value.name}={inner}"
    if isinstance(value, tuple | list):
        items = []
        for item in value:
            encoded = _encode_constant(item, budget, depth + 1, literal=literal)
            if encoded is None:
                return None
            items.append(encoded)
        tag = "t" if isinstance(value, tuple) else "l"
        return f"{tag}{len(items)}(" + ",".join(items) + ")"
    if isinstance(value, frozenset | set):
        items = []
        for item in value:
            encoded = _encode_constant(item, budget, depth + 1, literal=literal)
            if encoded is None:
                return None
            items.append(encoded)
        items.sort()
        return f"z{len(items)}(" + ",".join(items) + ")"
    if isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            encoded_key = _encode_constant(key, budget, depth + 1)
            encoded_item = _encode_constant(item, budget, depth + 1)
            if encoded_key is None or encoded_item is None:
                return None
            pairs.append(f"{encoded_key}:{encoded_item}")
        pairs.sort()
        return f"d{len(pairs)}(" + ",".join(pairs) + ")"
    return None


def _constant_hash(value: Any) -> str | None:
    encoded = _encode_constant(value, _Budget())
    return (
        None
        if encoded is None
        else xxhash.xxh3_64_hexdigest(encoded.encode("utf-8", "surrogatepass"))
    )


def _describe(value: Any) -> str:
    """A stable label for a value that is not hashed (never its repr: it may hold an id)."""
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        return f"<{type(value).__name__} {value.__module__}.{value.__qualname__}>"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _defaults_hash(func: types.FunctionType) -> str | None:
    """Hash of the parameter defaults (evaluated at def time: not always in the source)."""
    defaults = func.__defaults__ or ()
    kwdefaults = func.__kwdefaults__ or {}
    if not defaults and not kwdefaults:
        return None
    code = func.__code__
    positional = code.co_varnames[: code.co_argcount]
    named = dict(zip(positional[len(positional) - len(defaults) :], defaults, strict=True))
    named.update(kwdefaults)
    items = []
    for name, value in named.items():
        encoded = _encode_constant(value, _Budget())
        items.append(f"{name}={encoded if encoded is not None else _describe(value)}")
    return xxhash.xxh3_64_hexdigest("\n".join(items).encode("utf-8", "surrogatepass"))


# -- the walk --------------------------------------------------------------------------


def _references(func: types.FunctionType) -> Iterator[tuple[str, Any]]:
    """The (name, value) pairs ``func`` reads: the globals its code loads, its closure."""
    namespace = func.__globals__
    for name in CODE_CACHE.get(func.__code__).global_names:
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:  # else a builtin, or a name not defined (yet)
            yield name, value
    if func.__closure__:
        for name, cell in zip(func.__code__.co_freevars, func.__closure__, strict=True):
            try:
                yield name, cell.cell_contents
            except ValueError:  # an empty cell: the variable is not assigned yet
                continue


_MISSING = object()


def _method_functions(value: Any) -> list[tuple[str, types.FunctionType]]:
    """The functions behind a class attribute, each with the kind of attribute it is."""
    if isinstance(value, staticmethod | classmethod):
        inner = unwrap(value.__func__)
        kind = type(value).__name__
        return [(kind, inner)] if isinstance(inner, types.FunctionType) else []
    if isinstance(value, property):
        out = []
        for kind, accessor in (
            ("getter", value.fget),
            ("setter", value.fset),
            ("deleter", value.fdel),
        ):
            inner = unwrap(accessor)
            if isinstance(inner, types.FunctionType):
                out.append((f"property.{kind}", inner))
        return out
    inner = unwrap(value)
    return [("def", inner)] if isinstance(inner, types.FunctionType) else []


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return f"{annotation.__module__}.{annotation.__qualname__}"
    if type(annotation).__module__ in ("typing", "types"):
        return repr(annotation)  # list[int], Optional[str]: no addresses in these reprs
    return _describe(annotation)


def _class_text(
    cls: type, depth: int = 0
) -> tuple[str, list[types.FunctionType], list[tuple[str, type]]]:
    """Describe a class by its methods' code and attributes (its source may be unreadable).

    Returns the text, the functions to walk for references, and the base classes.
    """
    bases = ", ".join(f"{b.__module__}.{b.__qualname__}" for b in cls.__bases__)
    lines = [f"class {cls.__qualname__}({bases}):"]
    functions: list[types.FunctionType] = []
    for attr, value in cls.__dict__.items():
        if attr in _CLASS_NOISE:
            continue
        methods = _method_functions(value)
        if any(m.__module__ != cls.__module__ for _, m in methods):
            methods = []  # another module's function stored on the class: not ours to hash
        if methods:
            for kind, method in methods:
                functions.append(method)
                text = _function_text(method)
                defaults = _defaults_hash(method)
                if defaults is not None:
                    text += f"\n# defaults {defaults}"
                lines.append(textwrap.indent(f"# {kind} {attr}\n{text}", "    "))
            continue
        if (
            isinstance(value, type)
            and value.__qualname__.startswith(cls.__qualname__ + ".")
            and depth < _MAX_DEPTH
        ):
            text, inner, _ = _class_text(value, depth + 1)
            functions.extend(inner)
            lines.append(textwrap.indent(text, "    "))
            continue
        if attr == "__annotations__" and isinstance(value, dict):
            text = ", ".join(f"{k}: {_annotation_text(v)}" for k, v in value.items())
            lines.append(f"    __annotations__ = {{{text}}}")
            continue
        if attr.startswith("_") and attr.endswith("_") and attr != "__slots__":
            continue  # dunder and sunder data is bookkeeping (enum maps, caches)
        digest = _constant_hash(value)
        lines.append(f"    {attr} = {digest if digest is not None else _describe(value)}")
    return "\n".join(lines), functions, [(b.__name__, b) for b in cls.__bases__]


class _Walk:
    """One fingerprint computation: collects the parts reachable from a function."""

    def __init__(self, root: types.FunctionType, exclude: Collection[str]) -> None:
        self.module = root.__module__
        self.exclude = exclude
        self.parts: dict[str, str] = {}
        self.seen: set[int] = {id(root)}
        self.queue: list[tuple[str, types.FunctionType]] = [(SELF, root)]

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

    def add_function(self, key: str, func: types.FunctionType, source: str | None = None) -> None:
        self.parts[key] = _function_text(func, source)
        defaults = _defaults_hash(func)
        if defaults is not None:
            self.parts[f"{key}.__defaults__"] = defaults
            for value in (*(func.__defaults__ or ()), *(func.__kwdefaults__ or {}).values()):
                if isinstance(value, types.FunctionType | type):
                    self.visit(value.__name__, value, key)

    def visit(self, name: str, value: Any, referrer: str) -> None:
        """Add the part for ``value`` read under ``name``, if it is code or a constant."""
        if name in self.exclude:
            return
        obj = unwrap(value)
        if isinstance(obj, types.FunctionType | type):
            if obj.__module__ != self.module or id(obj) in self.seen:
                return  # other modules' code (pd.read_csv) is not the user's to hash
            self.seen.add(id(obj))
            key = self._key(name, referrer)
            if isinstance(obj, types.FunctionType):
                self.add_function(key, obj)
                self.queue.append((key, obj))
                return
            text, functions, bases = _class_text(obj)
            self.parts[key] = text
            for function in functions:
                if id(function) not in self.seen:
                    self.seen.add(id(function))
                    self.queue.append((key, function))
            for base_name, base in bases:
                self.visit(base_name, base, key)
            return
        digest = _constant_hash(value)
        if digest is None or self.parts.get(name) == digest:
            return  # data (not hashed), or the same constant read by another function
        self.parts[self._key(name, referrer)] = digest

    def run(self) -> dict[str, str]:
        index = 0
        while index < len(self.queue):  # breadth-first; `seen` makes cycles terminate
            referrer, func = self.queue[index]
            index += 1
            for name, value in _references(func):
                self.visit(name, value, referrer)
        return self.parts


def _collect(
    func: Callable[..., Any], exclude: Collection[str], source: str | None
) -> dict[str, str]:
    root = as_function(func)
    if root is None:  # a builtin or C-level callable: only its identity is known
        return {SELF: _describe(func)}
    if not isinstance(exclude, set | frozenset):
        exclude = frozenset(exclude)
    walk = _Walk(root, exclude)
    walk.add_function(SELF, root, source)
    if isinstance(func, functools.partial):
        bound = [*enumerate(func.args), *sorted(func.keywords.items())]
        encoded = [f"{k}={_encode_constant(v, _Budget()) or _describe(v)}" for k, v in bound]
        walk.parts["<partial>"] = xxhash.xxh3_64_hexdigest(
            "\n".join(encoded).encode("utf-8", "surrogatepass")
        )
    return walk.run()


def fingerprint_parts(
    func: Callable[..., Any], *, exclude: Collection[str] = (), source: str | None = None
) -> dict[str, str]:
    """Every part that goes into the code fingerprint of ``func``, by name.

    ``"<self>"`` is the function's normalized source (or ``"bytecode:<digest>"``); a
    same-module function or class it reads maps to its normalized source (a class to its
    methods' sources); a constant to a hash of its value; ``"<name>.__defaults__"`` to a
    hash of a function's parameter defaults. Names in ``exclude`` are not followed.
    """
    return _collect(func, exclude, source)


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
    return _describe(value)


# One encoder for every fingerprint, set up once; its text is json.dumps' with these
# options, so fingerprints stay what they were.
_canonical = compact_encoder(sort_keys=True, default=_json_default)


def code_fingerprint(
    func: Callable[..., Any],
    *,
    options: Mapping[str, Any] | None = None,
    version: str | None = None,
    exclude: Collection[str] = (),
    source: str | None = None,
) -> str:
    """The hex xxh3-128 fingerprint of a step's code, stable across processes.

    It covers :func:`fingerprint_parts` and ``options``. With ``version``, the user has
    taken over: the fingerprint is a hash of the function's name, ``version`` and
    ``options`` only, so code edits no longer invalidate the cache.
    """
    opts = {str(k): v for k, v in (options or {}).items()}
    if version is not None:
        name = getattr(func, "__name__", type(func).__name__)
        payload: dict[str, Any] = {"name": name, "version": version, "options": opts}
    else:
        payload = {"parts": _collect(func, exclude, source), "options": opts}
    payload["scheme"] = _SCHEME
    return xxhash.xxh3_128_hexdigest(_canonical(payload).encode("utf-8", "surrogatepass"))


def _clear_cache() -> None:
    """Forget every cached source and digest (for tests and benchmarks)."""
    CODE_CACHE.clear()
