"""Where a fingerprint starts: the function behind a callable, its normalized source.

Everything here depends only on a code object (its normalized source, the global names
its bytecode reads, its bytecode digest) and is cached per code object, which is
immutable: :data:`CODE_CACHE`.
"""

from __future__ import annotations

import ast
import dis
import functools
import inspect
import textwrap
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["CODE_CACHE", "as_function", "code_source", "normalized_source", "unwrap"]

# Opcodes that read a name from the globals (LOAD_NAME: class bodies nested in a function;
# LOAD_FROM_DICT_OR_GLOBALS: the same on Python >= 3.12).
_GLOBAL_READS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
# Attribute loads right after a global read (``mylib.helper``, ``pkg.sub.f``): how a
# function reaches into a module it imported (LOAD_METHOD: Python 3.11).
_ATTRIBUTE_READS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})


# -- per-code-object cache -------------------------------------------------------------


class _CodeInfo:
    """What is cached for one code object (never a reference to the code itself)."""

    __slots__ = ("attributes", "digest", "global_names", "sources")

    def __init__(
        self, global_names: tuple[str, ...], attributes: dict[str, tuple[tuple[str, ...], ...]]
    ) -> None:
        self.global_names = global_names
        # global name -> the attribute chains read from it (``()`` for a bare read)
        self.attributes = attributes
        self.digest: str | None = None
        self.sources: dict[str | None, str] = {}


class _CodeCache:
    """Maps code objects to their :class:`_CodeInfo`, by identity.

    Code objects compare equal by content, but two equal code objects from different
    files can have different source text, so a WeakKeyDictionary (which uses ``==``)
    would mix them up. Entries are dropped when their code object is collected.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[types.CodeType], _CodeInfo]] = {}

    def get(self, code: types.CodeType) -> _CodeInfo:
        key = id(code)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is code:
            return entry[1]
        info = _CodeInfo(*_global_reads(code))

        def drop(ref: weakref.ref[types.CodeType]) -> None:
            current = self._entries.get(key)
            if current is not None and current[0] is ref:  # the id may have been reused
                del self._entries[key]

        self._entries[key] = (weakref.ref(code, drop), info)
        return info

    def clear(self) -> None:
        self._entries.clear()


CODE_CACHE = _CodeCache()


def _global_reads(
    code: types.CodeType,
) -> tuple[tuple[str, ...], dict[str, tuple[tuple[str, ...], ...]]]:
    """The global names ``code`` and the code nested in it read, in first-read order, and
    for each the chains of attributes read straight after it (``mylib.sub.f`` gives
    ``("sub", "f")``; a bare read, such as ``g(mylib)``, gives ``()``)."""
    names: dict[str, dict[tuple[str, ...], None]] = {}
    stack = [code]
    while stack:
        current = stack.pop(0)
        chain: list[str] | None = None  # the attributes read after the last global read
        name = ""
        for instruction in dis.get_instructions(current):
            if chain is not None:
                if instruction.opname in _ATTRIBUTE_READS and isinstance(instruction.argval, str):
                    chain.append(instruction.argval)
                    continue
                names[name].setdefault(tuple(chain))
                chain = None
            if instruction.opname in _GLOBAL_READS and isinstance(instruction.argval, str):
                name = instruction.argval
                names.setdefault(name, {})
                chain = []
        if chain is not None:
            names[name].setdefault(tuple(chain))
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return tuple(names), {n: tuple(chains) for n, chains in names.items()}


# -- normalized source -----------------------------------------------------------------


_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _unparse_without_docstrings(tree: ast.AST) -> str:
    """``ast.unparse`` of ``tree`` with every module, function and class docstring removed."""
    for node in ast.walk(tree):
        if not isinstance(node, _SCOPES):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            # An emptied body gets ``pass`` so that a docstring-only function normalizes
            # like ``def f(): pass`` (and unparses to valid code).
            del body[0]
            if not body and not isinstance(node, ast.Module):
                body.append(ast.Pass())
    return ast.unparse(tree)


def _parse(text: str, *, as_argument: bool = False) -> list[ast.stmt] | None:
    """Parse ``text`` that may be indented (a method) or a fragment of a call (a lambda)."""
    candidates = [textwrap.dedent(text), "if 1:\n" + text]
    if as_argument:  # ``key=lambda r: r[0],`` cut out of a multi-line call
        candidates.append("_(\n" + textwrap.dedent(text) + "\n)")
    for candidate in candidates:
        try:
            tree = ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
        if candidate.startswith("if 1:\n"):
            first = tree.body[0]
            return first.body if isinstance(first, ast.If) else tree.body
        return tree.body
    return None


def _lambda_params(code: types.CodeType) -> list[str]:
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & inspect.CO_VARARGS)
    count += bool(code.co_flags & inspect.CO_VARKEYWORDS)
    return list(code.co_varnames[:count])


def _ast_params(args: ast.arguments) -> list[str]:
    # Same order as co_varnames: positional, keyword-only, *args, **kwargs.
    names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return names


def _normalize(text: str, code: types.CodeType | None, name: str | None, *, override: bool) -> str:
    """Normalize the def named ``name`` in ``text`` (or all of ``text`` if ``override``).

    For a lambda (``code`` given, named ``<lambda>``) the one lambda in ``text`` with the
    same parameters is used. Returns "" when ``text`` holds nothing usable.
    """
    body = _parse(text, as_argument=name == "<lambda>")
    if body is None:
        return ""
    module = ast.Module(body=body, type_ignores=[])
    if code is not None and name == "<lambda>":
        params = _lambda_params(code)
        texts = {
            _unparse_without_docstrings(node)
            for node in ast.walk(module)
            if isinstance(node, ast.Lambda) and _ast_params(node.args) == params
        }
        # Several different lambdas with the same parameters on the line: cannot tell which.
        return texts.pop() if len(texts) == 1 else ""
    target: ast.AST = module
    def_types = (ast.FunctionDef, ast.AsyncFunctionDef)
    # Top-level first (what getsource returns); nested only if there is none there.
    defs = [n for n in body if isinstance(n, def_types) and n.name == name] or [
        n for n in ast.walk(module) if isinstance(n, def_types) and n.name == name
    ]
    if defs:
        found = defs[-1]  # the last definition wins, as when a cell defines a name twice
        found.decorator_list = []
        target = found
    elif not override:
        return ""  # getsource returned lines that are not this function: distrust them
    try:
        return _unparse_without_docstrings(target)
    except (RecursionError, ValueError):
        return ""


def code_source(code: types.CodeType, func: Callable[..., Any], source: str | None) -> str:
    """The normalized source of ``func`` (whose code is ``code``), cached; "" if unreadable."""
    info = CODE_CACHE.get(code)
    cached = info.sources.get(source)
    if cached is not None:
        return cached
    if source is None:
        try:
            text = inspect.getsource(func)
        except Exception:  # OSError, TypeError, or anything a broken linecache throws
            text = ""
        result = _normalize(text, code, code.co_name, override=False) if text else ""
    else:
        result = _normalize(source, code, code.co_name, override=True)
    info.sources[source] = result
    return result


def normalized_source(func: Callable[..., Any], source: str | None = None) -> str:
    """The function's source without comments, docstrings, decorators or formatting.

    ``source`` replaces ``inspect.getsource`` (the cell magic passes the cell text): the
    last definition of the function's name in it is used, or all of it if there is none.
    Returns "" when there is no readable source.
    """
    fn = as_function(func)
    if fn is None:  # no code object to cache on (rare): normalize the given text directly
        if source is None:
            return ""
        return _normalize(source, None, getattr(func, "__name__", None), override=True)
    return code_source(fn.__code__, fn, source)


# -- callables -------------------------------------------------------------------------


def unwrap(value: Any) -> Any:
    """Follow ``__wrapped__`` (functools.wraps, lru_cache) to the function underneath."""
    for _ in range(100):  # a bound on malicious or cyclic __wrapped__ chains
        if isinstance(value, types.FunctionType | type | types.ModuleType) or not callable(value):
            return value  # data objects are never asked: their __getattr__ may be costly
        try:
            wrapped = getattr(value, "__wrapped__", None)
        except Exception:  # a proxy whose __getattr__ raises something else
            return value
        if wrapped is None:
            return value
        value = wrapped
    return value


def as_function(func: Any) -> types.FunctionType | None:
    """The plain function behind a callable (wrapper, method, partial), if there is one."""
    for _ in range(100):
        func = unwrap(func)
        if isinstance(func, types.FunctionType):
            return func
        if isinstance(func, types.MethodType | staticmethod | classmethod):
            func = func.__func__
        elif isinstance(func, functools.partial):
            func = func.func
        elif callable(func) and not isinstance(func, type):
            call = type(func).__call__  # callable(): the type defines __call__
            if not isinstance(call, types.FunctionType):
                return None
            func = call
        else:
            return None
    return None
