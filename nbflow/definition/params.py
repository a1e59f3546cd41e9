"""Run parameters written as text: ``--params window=30,limit=5``, ``-p window=7``, ``k=v``.

Values are Python literals (``30``, ``0.5``, ``"a b"``, ``[1, 2]``, ``True``); a bare word
that is not a literal is a string, so ``mode=fast`` means ``"fast"``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

from nbflow.errors import ParameterError

__all__ = [
    "coerce_param",
    "coerce_params",
    "parse_assignments",
    "parse_declarations",
    "parse_value",
]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(text: str) -> Any:
    """The literal ``text`` stands for, or ``text`` itself when it is not a literal."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_declarations(text: str, *, what: str = "--params") -> dict[str, Any]:
    """Parse ``window=30,limit=5`` (commas between pairs) into ``{"window": 30, "limit": 5}``.

    Each value must be a literal or a bare word (a string); raises ParameterError naming
    the problem otherwise.
    """
    example = f"e.g. {what} window=30,label='all'"
    text = text.strip()
    if not text:
        raise ParameterError(f"{what} needs name=value pairs, {example}")
    try:
        call = ast.parse(f"_({text})", mode="eval").body
    except SyntaxError:
        raise ParameterError(
            f"cannot read {what} {text!r}: write name=value pairs separated by commas, {example}"
        ) from None
    assert isinstance(call, ast.Call)
    if call.args or any(k.arg is None for k in call.keywords):
        raise ParameterError(
            f"cannot read {what} {text!r}: every entry must be name=value, {example}"
        )
    out: dict[str, Any] = {}
    for keyword in call.keywords:
        assert keyword.arg is not None
        node = keyword.value
        if isinstance(node, ast.Name):
            out[keyword.arg] = node.id  # a bare word: a string
            continue
        try:
            out[keyword.arg] = ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ParameterError(
                f"the value of {keyword.arg!r} in {what} ({ast.unparse(node)}) is not a literal: "
                "use a number, a quoted string, True/False/None, or a list, tuple or dict of them."
            ) from None
    return out


def parse_assignments(items: Iterable[str], *, what: str = "parameter") -> dict[str, str]:
    """Split ``["window=7", "label=a b"]`` into ``{"window": "7", "label": "a b"}`` (text)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ParameterError(f"{what} {item!r} must be written name=value, e.g. window=7")
        out[name] = value
    return out


def coerce_param(name: str, text: str, default: Any) -> Any:
    """The value of run parameter ``name`` given as ``text``, typed like its ``default``.

    A string default keeps the text as it is; an int, float or bool default requires a
    value of that type; otherwise the text is read as a literal (or a plain string).
    """
    if isinstance(default, bool):
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ParameterError(f"parameter {name!r} is a bool: use true or false, not {text!r}")
    if isinstance(default, str):
        value = parse_value(text)
        return value if isinstance(value, str) else text
    value = parse_value(text)
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParameterError(f"parameter {name!r} is an int: {text!r} is not a whole number")
    if isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ParameterError(f"parameter {name!r} is a float: {text!r} is not a number")
    return value


def coerce_params(given: Mapping[str, str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Type each text value in ``given`` by the default of the parameter it sets.

    Names that are not parameters are passed through as literals; the run refuses them
    with a suggestion.
    """
    return {
        name: coerce_param(name, text, defaults[name]) if name in defaults else parse_value(text)
        for name, text in given.items()
    }
