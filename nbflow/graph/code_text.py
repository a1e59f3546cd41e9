"""Texts that stand for code and constants in a fingerprint.

A function stands for its normalized source (or, without one, a digest of its bytecode);
a class for its methods' code and its attributes; a constant (``THRESHOLD = 0.5``, a
small dict of settings) for a canonical, process-independent text of its value.
"""

from __future__ import annotations

import enum
import sys
import textwrap
import types
from typing import Any

import xxhash

from nbflow.graph.source import CODE_CACHE, code_source, unwrap

__all__ = [
    "Budget",
    "class_text",
    "code_digest",
    "constant_hash",
    "defaults_hash",
    "describe",
    "encode_constant",
    "function_text",
]

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
            encoded = encode_constant(const, Budget(sys.maxsize), literal=True)
            out.append(encoded if encoded is not None else f"<{type(const).__qualname__}>")
    out.append("end")


def code_digest(code: types.CodeType) -> str:
    """``bytecode:<digest>``: what stands for code whose source cannot be read (cached)."""
    info = CODE_CACHE.get(code)
    if info.digest is None:
        out: list[str] = []
        _feed_code(out, code)
        info.digest = "bytecode:" + xxhash.xxh3_128_hexdigest(
            "\n".join(out).encode("utf-8", "surrogatepass")
        )
    return info.digest


def function_text(func: types.FunctionType, source: str | None = None) -> str:
    """The normalized source of ``func``, or its bytecode digest if it has none."""
    return code_source(func.__code__, func, source) or code_digest(func.__code__)


# -- constants -------------------------------------------------------------------------


class Budget:
    """How many more items a constant may have before it counts as data."""

    __slots__ = ("items",)

    def __init__(self, items: int = _MAX_ITEMS) -> None:
        self.items = items


def encode_constant(
    value: Any, budget: Budget, depth: int = 0, *, literal: bool = False
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
        inner = encode_constant(value.value, budget, depth + 1)
        return None if inner is None else f"e:{type(value).__qualname__}.{value.name}={inner}"
    if isinstance(value, tuple | list):
        items = []
        for item in value:
            encoded = encode_constant(item, budget, depth + 1, literal=literal)
            if encoded is None:
                return None
            items.append(encoded)
        tag = "t" if isinstance(value, tuple) else "l"
        return f"{tag}{len(items)}(" + ",".join(items) + ")"
    if isinstance(value, frozenset | set):
        items = []
        for item in value:
            encoded = encode_constant(item, budget, depth + 1, literal=literal)
            if encoded is None:
                return None
            items.append(encoded)
        items.sort()
        return f"z{len(items)}(" + ",".join(items) + ")"
    if isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            encoded_key = encode_constant(key, budget, depth + 1)
            encoded_item = encode_constant(item, budget, depth + 1)
            if encoded_key is None or encoded_item is None:
                return None
            pairs.append(f"{encoded_key}:{encoded_item}")
        pairs.sort()
        return f"d{len(pairs)}(" + ",".join(pairs) + ")"
    return None


def constant_hash(value: Any) -> str | None:
    """A hash of a constant's canonical text; None if ``value`` is not a constant."""
    encoded = encode_constant(value, Budget())
    return (
        None
        if encoded is None
        else xxhash.xxh3_64_hexdigest(encoded.encode("utf-8", "surrogatepass"))
    )


def describe(value: Any) -> str:
    """A stable label for a value that is not hashed (never its repr: it may hold an id)."""
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        return f"<{type(value).__name__} {value.__module__}.{value.__qualname__}>"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def defaults_hash(func: types.FunctionType) -> str | None:
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
        encoded = encode_constant(value, Budget())
        items.append(f"{name}={encoded if encoded is not None else describe(value)}")
    return xxhash.xxh3_64_hexdigest("\n".join(items).encode("utf-8", "surrogatepass"))


# -- classes ---------------------------------------------------------------------------


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
    return describe(annotation)


def class_text(
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
                text = function_text(method)
                defaults = defaults_hash(method)
                if defaults is not None:
                    text += f"\n# defaults {defaults}"
                lines.append(textwrap.indent(f"# {kind} {attr}\n{text}", "    "))
            continue
        if (
            isinstance(value, type)
            and value.__qualname__.startswith(cls.__qualname__ + ".")
            and depth < _MAX_DEPTH
        ):
            text, inner, _ = class_text(value, depth + 1)
            functions.extend(inner)
            lines.append(textwrap.indent(text, "    "))
            continue
        if attr == "__annotations__" and isinstance(value, dict):
            text = ", ".join(f"{k}: {_annotation_text(v)}" for k, v in value.items())
            lines.append(f"    __annotations__ = {{{text}}}")
            continue
        if attr.startswith("_") and attr.endswith("_") and attr != "__slots__":
            continue  # dunder and sunder data is bookkeeping (enum maps, caches)
        digest = constant_hash(value)
        lines.append(f"    {attr} = {digest if digest is not None else describe(value)}")
    return "\n".join(lines), functions, [(b.__name__, b) for b in cls.__bases__]
