"""``%%step`` cells as steps: reading the magic line, and compiling a cell into a function.

A cell body becomes ``def NAME(dep1, dep2, window=30): <body>; return <value>``. Its
dependencies are the steps it reads before assigning them (found with the AST and the
symbol table, never by matching text), its run parameters those declared with
``--params``. It is compiled with the cell's own line numbers (so errors and tracebacks
point at the cell's lines) and executed with the notebook's namespace as its globals, so
the helpers it calls resolve there and the code fingerprint follows them.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import linecache
import shlex
import symtable
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbflow.definition.names import free_names, refuse_top_level
from nbflow.definition.params import parse_declarations
from nbflow.definition.step import Step, StepOptions, check_identifier
from nbflow.errors import CellError, DefinitionError, NbflowError, suggest

__all__ = [
    "USAGE",
    "StepSpec",
    "compile_cell",
    "parse_step_line",
]

USAGE = (
    "%%step NAME [--flow FLOW] [--needs a,b] [--params window=30,limit=5] [--run] "
    "[--retries N] [--retry-delay S] [--timeout S] [--no-cache] [--version V] "
    "[--inputs data/raw.csv 'data/*.parquet'] [--no-track-reads]"
)

_FLAGS = ("--run", "--no-cache", "--no-track-reads")
_LISTS = ("--needs", "--params", "--inputs")
_SINGLE = ("--flow", "--retries", "--retry-delay", "--timeout", "--version")
_OPTIONS = _FLAGS + _LISTS + _SINGLE

_filenames = itertools.count(1)


@dataclass(frozen=True)
class StepSpec:
    """What a ``%%step`` line says: the step's name, flow, extra dependencies, run
    parameters with their defaults, whether to run it, and its options."""

    name: str
    flow: str | None = None
    needs: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    run: bool = False
    options: StepOptions = field(default_factory=StepOptions)


# -- the magic line ----------------------------------------------------------------------


def parse_step_line(line: str) -> StepSpec:
    """Read the arguments of a ``%%step`` line (see :data:`USAGE`); CellError if bad."""
    try:
        lexer = shlex.shlex(line, posix=False)  # keeps quotes: --params label="a b"
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:
        raise CellError(f"cannot read the %%step line {line!r}: {exc}. Usage: {USAGE}") from None
    name: str | None = None
    values: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            if name is None:
                name = _unquote(token)
                continue
            raise CellError(f"unexpected {token!r} in the %%step line. Usage: {USAGE}")
        option, has_inline, inline = token.partition("=")
        if option not in _OPTIONS:
            hint = suggest(option, _OPTIONS)
            raise CellError(f"unknown option {option!r} in the %%step line.{hint} Usage: {USAGE}")
        if option in _FLAGS:
            if has_inline:
                raise CellError(f"{option} takes no value. Usage: {USAGE}")
            flags.add(option)
            continue
        parts = [inline] if has_inline else []
        if option in _LISTS:  # everything up to the next option: --needs a, b
            while i < len(tokens) and not tokens[i].startswith("--"):
                parts.append(tokens[i])
                i += 1
        elif not has_inline and i < len(tokens) and not tokens[i].startswith("--"):
            parts.append(tokens[i])
            i += 1
        text = " ".join(p for p in parts if p).strip()
        if not text:
            raise CellError(f"{option} needs a value. Usage: {USAGE}")
        values[option] = text
    if name is None:
        raise CellError(f"a %%step cell needs the step's name. Usage: {USAGE}")
    try:
        check_identifier(name)
        needs = tuple(
            check_identifier(n, "--needs entry")
            for n in values.get("--needs", "").replace(",", " ").split()
        )
        params = parse_declarations(values["--params"]) if "--params" in values else {}
        for param in params:
            check_identifier(param, "run parameter")
        options = StepOptions(
            retries=_number(values, "--retries", int, 0),
            retry_delay=_number(values, "--retry-delay", float, 0.0),
            timeout=_number(values, "--timeout", float, None),
            cache="--no-cache" not in flags,
            version=_unquote(values["--version"]) if "--version" in values else None,
            inputs=_paths(values.get("--inputs", "")),
            track_reads="--no-track-reads" not in flags,
        )
    except CellError:
        raise
    except NbflowError as exc:
        raise CellError(f"in the %%step line: {exc}") from None
    if name in needs:
        raise CellError(f"step {name!r} cannot need itself (--needs {name}).")
    if name in params:
        raise CellError(f"step {name!r} cannot have a run parameter named like itself.")
    both = [n for n in needs if n in params]
    if both:
        raise CellError(f"{both[0]!r} cannot be both a step it needs and a run parameter.")
    flow = _unquote(values["--flow"]) if "--flow" in values else None
    return StepSpec(name, flow, needs, params, "--run" in flags, options)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _paths(text: str) -> tuple[str, ...]:
    """The paths of ``--inputs``: separated by spaces or commas, quoted when they hold
    either."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace += ","
    lexer.whitespace_split = True
    try:
        return tuple(lexer)
    except ValueError as exc:
        raise CellError(f"cannot read --inputs {text!r}: {exc}") from None


def _number(values: Mapping[str, str], option: str, kind: type, default: Any) -> Any:
    if option not in values:
        return default
    try:
        return kind(values[option])
    except ValueError:
        noun = "a whole number" if kind is int else "a number of seconds"
        raise CellError(f"{option} needs {noun}, not {values[option]!r}") from None


# -- compiling a cell --------------------------------------------------------------------


def compile_cell(
    spec: StepSpec,
    body: str,
    *,
    steps: Collection[str],
    namespace: dict[str, Any],
    flow_name: str = "",
    filename: str | None = None,
    first_line: int = 2,
    cell_text: str | None = None,
    unexecuted: Mapping[str, str] | None = None,
) -> Step:
    """Build the Step a ``%%step`` cell defines.

    ``body`` is the cell without its ``%%step`` line; its first line is line
    ``first_line`` of the cell (the numbers errors and tracebacks use). ``steps`` are the
    names of the flow's steps, ``namespace`` the notebook's globals. ``unexecuted`` maps
    names that plain cells assign without nbflow running them to where (for a hint).
    Raises CellError for a syntax error, a cell with no value, or a name defined nowhere.
    """
    name = spec.name
    where = f"%%step cell {name!r}"
    missing = [n for n in spec.needs if n not in steps]
    if missing:
        raise CellError(
            f"{where} needs {missing[0]!r} (--needs), which is not a step"
            f"{f' of flow {flow_name!r}' if flow_name else ''}.{suggest(missing[0], steps)}"
        )
    if filename is None:
        filename = f"<%%step {name} #{next(_filenames)}>"
    if cell_text is None:
        cell_text = "\n" * (first_line - 1) + body
    remember_source(filename, cell_text)
    # Blank lines in front give every node the line number it has in the cell.
    padded = "\n" * (first_line - 1) + body
    try:
        tree = ast.parse(padded, filename=filename)
    except SyntaxError as exc:
        raise _syntax_error(where, exc, cell_text) from None
    refuse_top_level(tree, where)
    probe = _as_function("__nbflow_cell__", [], tree.body)
    try:  # the compiler's own checks (nonlocal, import *), with the cell's line numbers
        compile(probe, filename, "exec", dont_inherit=True)
        table = symtable.symtable(ast.unparse(probe), filename, "exec").get_children()[0]
    except SyntaxError as exc:
        raise _syntax_error(where, exc, cell_text) from None

    local = {s.get_name() for s in table.get_symbols() if s.is_local()}
    outer = free_names(tree, table)
    step_names = set(steps) - {name}
    inputs: list[str] = []
    for read, line in outer.items():
        at = f"(line {line})"
        if read == name:
            raise CellError(
                f"{where} reads {name!r} {at} before assigning it: a step cannot read its own "
                f"value. Assign {name!r} first, or read another step."
            )
        if read in step_names or read in spec.needs:
            if read not in spec.params:
                inputs.append(read)
            continue
        if read in spec.params:
            continue
        defined = read in namespace or hasattr(builtins, read)
        if defined and read in local:
            raise CellError(
                f"{where} reads the notebook's {read!r} {at} and also assigns {read!r}: inside "
                f"a step that name is local to the cell, so the notebook's {read!r} cannot be "
                "read first. Give the new value another name."
            )
        if not defined:
            raise CellError(
                _undefined(where, read, at, flow_name, step_names, namespace, unexecuted)
            )
    for param in spec.params:
        if param in step_names:
            raise CellError(
                f"{where} declares run parameter {param!r}, but {param!r} is a step of the flow: "
                "rename the parameter."
            )

    statements = list(tree.body)
    if name in local:
        last = statements[-1]
        statements.append(_at(ast.Return(value=ast.Name(name, ast.Load())), last))
    elif statements and isinstance(statements[-1], ast.Expr):
        last = statements[-1]
        assert isinstance(last, ast.Expr)
        statements[-1] = _at(ast.Return(value=last.value), last)
    else:
        ending = (
            "is empty"
            if not statements
            else f"ends with a statement (line {statements[-1].lineno}: "
            f"`{_first_line(statements[-1])}`), not an expression"
        )
        raise CellError(
            f"{where} has no value: it does not assign {name!r} and {ending}. Assign the "
            f"step's value to {name!r} (`{name} = ...`), or end the cell with the expression "
            "whose value the step returns."
        )

    arguments = [*inputs, *spec.params]
    func_def = _as_function(name, arguments, statements, line=first_line - 1)
    code = compile(func_def, filename, "exec", dont_inherit=True)
    scope: dict[str, Any] = {}
    exec(code, namespace, scope)  # defines the function only; its globals are the notebook's
    func = scope[name]
    func.__defaults__ = tuple(spec.params.values()) or None
    func.__qualname__ = name
    source = _display_source(name, inputs, spec.params, statements)
    try:
        return Step.from_function(
            func,
            name=name,
            depends_on=[n for n in spec.needs if n not in inputs],
            options=spec.options,
            source=source,
        )
    except CellError:
        raise
    except DefinitionError as exc:
        raise CellError(f"{where}: {exc}") from None


def _as_function(
    name: str, arguments: list[str], body: list[ast.stmt], line: int = 1
) -> ast.Module:
    """``def name(arguments): body`` as a module AST (built by parsing, so every field
    this Python's AST requires is present), the def on line ``line``."""
    template = ast.parse(f"def {name}({', '.join(arguments)}):\n    pass\n")
    func = template.body[0]
    assert isinstance(func, ast.FunctionDef)
    ast.increment_lineno(template, max(line, 1) - 1)
    func.body = body or [ast.Pass()]
    return ast.fix_missing_locations(template)


def _display_source(
    name: str, inputs: list[str], params: Mapping[str, Any], body: list[ast.stmt]
) -> str:
    """The step's code as a normalized ``def`` (its fingerprint and its stored source)."""
    module = _as_function(name, [*inputs, *params], list(body))
    func = module.body[0]
    assert isinstance(func, ast.FunctionDef)
    func.args.defaults = [ast.Constant(value=v) for v in params.values()]
    return ast.unparse(module)


def _at(node: ast.stmt, like: ast.stmt) -> ast.stmt:
    """Give ``node`` (and its children) the position of ``like``, the statement it follows
    or replaces, so tracebacks point at the cell's last line."""
    for child in ast.walk(node):
        if not hasattr(child, "lineno"):
            ast.copy_location(child, like)
    return node


def _first_line(node: ast.stmt) -> str:
    text = ast.unparse(node).splitlines()[0]
    return text if len(text) <= 40 else text[:37] + "..."


def remember_source(filename: str, text: str) -> None:
    """Make the cell's text what tracebacks and ``inspect`` show for ``filename``."""
    lines = text.splitlines(keepends=True)
    # mtime None: linecache.checkcache never drops an entry that has no file behind it.
    linecache.cache[filename] = (len(text), None, lines, filename)


def _syntax_error(where: str, exc: SyntaxError, cell_text: str) -> CellError:
    line = exc.lineno or 0
    lines = cell_text.splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else (exc.text or "").rstrip("\n")
    message = f"syntax error in {where}, line {line}: {exc.msg}"
    if text.strip():
        indent = len(text) - len(text.lstrip())
        offset = max((exc.offset or 1) - 1 - indent, 0) if exc.text is not None else 0
        message += f"\n    {text.strip()}\n    {' ' * offset}^"
        if text.lstrip().startswith(("%", "!")):
            message += (
                "\nIPython magics and shell commands (% and !) cannot be used inside a "
                "%%step cell: its body must be plain Python."
            )
    return CellError(message)


def _undefined(
    where: str,
    read: str,
    at: str,
    flow_name: str,
    steps: Collection[str],
    namespace: Mapping[str, Any],
    unexecuted: Mapping[str, str] | None,
) -> str:
    flow = f" of flow {flow_name!r}" if flow_name else ""
    if unexecuted and read in unexecuted:
        # Assigned, but by a statement nbflow could not run: say which, and why.
        message = (
            f"{where} reads {read!r} {at}, which the notebook assigns in {unexecuted[read]}. "
            f"Make {read!r} a step (%%step {read}) if it needs a step's value, or compute it "
            "from what the notebook defines without running the flow."
        )
    else:
        message = (
            f"{where} reads {read!r} {at}, which is not defined anywhere: it is not a "
            f"step{flow}, a run parameter (--params), a builtin, or a name defined in the "
            "notebook. Define it in an earlier cell, or make it a step."
        )
    candidates = [*steps, *(k for k in namespace if not k.startswith("_"))]
    return message + suggest(read, candidates)
