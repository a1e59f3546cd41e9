"""The code record of a step: everything needed to define it again in a fresh process.

Where a fingerprint hashes what a step reads (:mod:`nbflow.graph.fingerprint`), the
record keeps it: the step's source, and for every global it reads (found by the same
walk over its code and its helpers' code, :data:`~nbflow.graph.source.CODE_CACHE`) an
*entry* that says how to define that name again: an import of a package or standard
module, the source of a helper function or class of the notebook, the literal of a
constant, a data value (kept by the caller, as a stored value), or the whole source of a
module of the user's own code that it uses. What cannot be recorded (a closure, code
whose source is unreadable, a value that cannot be hashed) is named with why.

Records are JSON: :func:`step_record` returns ``(record, data)``, ``data`` mapping each
data entry's name to the value itself, for the engine to store.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import linecache
import sys
import textwrap
import types
from collections.abc import Collection
from typing import Any

from nbflow.graph.code_text import constant_hash
from nbflow.graph.data import is_untracked
from nbflow.graph.modules import ModuleKind, module_kind, package_of
from nbflow.graph.source import CODE_CACHE, as_function, normalized_source, unwrap

__all__ = ["RECORD_SCHEME", "step_record"]

#: Bumped when the meaning of a record changes (readers check it).
RECORD_SCHEME = 1

_MISSING = object()


def _literal(value: Any) -> str | None:
    """``repr(value)`` when it reads back as an equal value (a plain constant)."""
    try:
        text = repr(value)
        back = ast.literal_eval(text)
    except Exception:  # a repr that is not a literal, or any error a __repr__ raises
        return None
    try:
        same = bool(back == value) and type(back) is type(value)
    except Exception:
        return None
    return text if same else None


def _class_source(cls: type) -> tuple[str, str] | None:
    """The source of ``cls`` with its decorators, and the file it is in: the file its
    methods came from (``inspect.getsource`` cannot find classes defined in a notebook
    cell)."""
    for value in vars(cls).values():
        func = as_function(value)
        if func is None or func.__qualname__.split(".")[0] != cls.__name__:
            continue
        filename = func.__code__.co_filename
        text = "".join(linecache.getlines(filename))
        if not text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        line = func.__code__.co_firstlineno
        found = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef)
            and n.name == cls.__name__
            and n.lineno <= line <= (n.end_lineno or n.lineno)
        ]
        if found:
            node = found[-1]
            lines = text.splitlines(keepends=True)
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            return inspect.cleandoc("".join(lines[start : node.end_lineno])) + "\n", filename
    try:
        return inspect.getsource(cls), inspect.getsourcefile(cls) or ""
    except Exception:  # OSError, TypeError: no file holds it
        return None


def _decorator_names(source: str) -> list[str]:
    """The global names a class's decorators and bases read (run when it is defined)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.ClassDef):
        return []
    names = []
    for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
        names += [n.id for n in ast.walk(expr) if isinstance(n, ast.Name)]
    return names


def _function_decorators(func: types.FunctionType) -> list[ast.expr]:
    """The decorators written over ``func``'s definition (none when its source cannot
    be read): ``normalized_source`` leaves them out, but the function was made by them."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except Exception:  # OSError, TypeError: no readable file; SyntaxError: a fragment
        return []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == func.__name__:
            return list(node.decorator_list)
    return []


def _written(obj: Any) -> Any:
    """The function as written under ``functools.wraps`` wrappers (a decorator's inner
    function has the helper's name but not its code): the one whose definition, with its
    decorators, makes the rest again."""
    for _ in range(100):  # a bound on cyclic __wrapped__ chains
        if not isinstance(obj, types.FunctionType):
            return obj
        inner = unwrap(getattr(obj, "__wrapped__", None))
        if not isinstance(inner, types.FunctionType):
            return obj
        obj = inner
    return obj


def _is_code(value: Any) -> bool:
    """Whether a record defines ``value`` as code (a module, function, class or an
    importable callable), not as a data value."""
    obj = unwrap(value)
    if isinstance(obj, types.ModuleType | types.FunctionType | type):
        return True
    return callable(obj) and isinstance(getattr(obj, "__module__", None), str)


class _RecordWalk:
    """One step's walk: the entries for the globals reachable from its function."""

    def __init__(self, root: types.FunctionType, exclude: Collection[str]) -> None:
        self.module = root.__module__
        self.exclude = exclude
        self.entries: dict[str, dict[str, Any]] = {}
        self.modules: dict[str, str] = {}
        self.packages: dict[str, str] = {}
        self.problems: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.queue: list[types.FunctionType] = [root]
        self.seen: set[int] = {id(root)}

    def _package(self, module: str) -> None:
        found = package_of(module)
        if found is not None:
            self.packages[found[0]] = found[1]

    def run(self) -> None:
        index = 0
        while index < len(self.queue):
            func = self.queue[index]
            index += 1
            namespace = func.__globals__
            for name in CODE_CACHE.get(func.__code__).global_names:
                value = namespace.get(name, _MISSING)
                if value is not _MISSING:
                    self.visit(name, value, func)
            if func.__closure__:
                for name in func.__code__.co_freevars:
                    self.problems.setdefault(
                        name,
                        f"{func.__qualname__} reads {name!r} from an enclosing function "
                        "(a closure), which a record cannot define again: define it at the "
                        "top level of the notebook or module",
                    )

    def visit(self, name: str, value: Any, reader: types.FunctionType) -> None:
        if name in self.exclude or name in self.entries:
            return
        if reader.__module__ != self.module:
            return  # a user module's own global: its module's source defines it
        obj = _written(unwrap(value))
        if isinstance(obj, types.ModuleType):
            self.add_module_entry(name, obj)
        elif isinstance(obj, types.FunctionType | type):
            self.add_code(name, obj)
        elif callable(obj) and isinstance(getattr(obj, "__module__", None), str):
            self.add_reference(name, obj)  # a builtin or C function (np.sqrt)
        else:
            self.add_value(name, value)

    def add_module_entry(self, name: str, module: types.ModuleType) -> None:
        kind = module_kind(module.__name__)
        self.entries[name] = {"kind": "import", "module": module.__name__}
        if kind is ModuleKind.PACKAGE:
            self._package(module.__name__)
        elif kind is ModuleKind.USER:
            self.add_user_module(module)

    def add_user_module(self, module: types.ModuleType) -> None:
        """The whole source of a module of the user's own code (and of those it uses)."""
        name = module.__name__
        if name in self.modules or name == self.module:
            return
        try:
            self.modules[name] = inspect.getsource(module)
        except Exception:  # OSError, TypeError: made in memory, or its file is gone
            self.modules[name] = ""
            self.problems[name] = f"the source of module {name!r} cannot be read"
            return
        for value in list(vars(module).values()):
            obj = unwrap(value)
            inner = obj if isinstance(obj, types.ModuleType) else None
            if inner is None and isinstance(obj, types.FunctionType | type):
                inner_name = obj.__module__
            elif inner is not None:
                inner_name = inner.__name__
            else:
                continue
            kind = module_kind(inner_name)
            if kind is ModuleKind.PACKAGE:
                self._package(inner_name)
            elif kind is ModuleKind.USER and inner_name != name:
                found = sys.modules.get(inner_name)
                if found is not None:
                    self.add_user_module(found)

    def add_reference(self, name: str, obj: Any) -> None:
        """An object imported from a module: ``from module import qualname``."""
        module = obj.__module__
        qualname = getattr(obj, "__qualname__", getattr(obj, "__name__", name))
        self.entries[name] = {"kind": "from", "module": module, "qualname": qualname}
        kind = module_kind(module)
        if kind is ModuleKind.PACKAGE:
            self._package(module)
        elif kind is ModuleKind.USER:
            found = sys.modules.get(module)
            if found is not None:
                self.add_user_module(found)

    def add_code(self, name: str, obj: types.FunctionType | type) -> None:
        if obj.__module__ != self.module:
            self.add_reference(name, obj)
            return
        if id(obj) in self.seen:
            self.entries[name] = {"kind": "alias", "of": obj.__name__}
            return
        self.seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            source = normalized_source(obj)
            if not source:
                self.problems[name] = f"the source of function {obj.__qualname__} cannot be read"
                return
            entry = {
                "kind": "function",
                "defines": obj.__name__,
                "source": self.kept_decorators(obj) + source,
            }
            # As written, comments included, for people (the source is what runs); without
            # a readable file (OSError, TypeError), only the normalized source is known.
            with contextlib.suppress(Exception):
                entry["text"] = inspect.getsource(obj)
            self.entries[name] = entry
            self.queue.append(obj)
            return
        found = _class_source(obj)
        if found is None:
            self.problems[name] = f"the source of class {obj.__qualname__} cannot be read"
            return
        text, filename = found
        self.entries[name] = {"kind": "class", "defines": obj.__name__, "source": text}
        for value in vars(obj).values():
            func = as_function(value)
            # Only the methods written in the class's source: those a decorator made
            # (a dataclass's __init__) are made again when the source runs.
            if func is None or func.__code__.co_filename != filename:
                continue
            if id(func) not in self.seen:
                self.seen.add(id(func))
                self.queue.append(func)
        # Decorators and bases run when the class is defined: they must be defined too.
        namespace = self.queue[0].__globals__
        for base_name in _decorator_names(text):
            value = namespace.get(base_name, _MISSING)
            if value is not _MISSING:
                self.visit(base_name, value, self.queue[0])

    def kept_decorators(self, func: types.FunctionType) -> str:
        """The decorators of helper ``func`` that a record can define again, as source
        lines (``@functools.lru_cache(maxsize=None)``), their names recorded first (the
        decorators run when the function is defined). A decorator reading a data value (a
        flow, an object) or an unknown name is left out, and named in the problems: the
        helper is then defined undecorated."""
        namespace = func.__globals__
        kept = []
        for expr in _function_decorators(func):
            names = sorted({n.id for n in ast.walk(expr) if isinstance(n, ast.Name)})
            values = {n: namespace.get(n, _MISSING) for n in names}
            unfit = [
                n
                for n, v in values.items()
                if n in self.exclude
                or (v is _MISSING and not hasattr(builtins, n))
                or (v is not _MISSING and not _is_code(v) and _literal(v) is None)
            ]
            if unfit:
                self.problems.setdefault(
                    func.__name__,
                    f"its decorator @{ast.unparse(expr)} reads {unfit[0]!r}, which is not code "
                    f"or a constant: {func.__qualname__} is defined again without it",
                )
                continue
            for name, value in values.items():
                if value is not _MISSING:
                    self.visit(name, value, func)
            if all(n in self.entries or values[n] is _MISSING for n in names):
                kept.append(f"@{ast.unparse(expr)}\n")
        return "".join(kept)

    def add_value(self, name: str, value: Any) -> None:
        literal = _literal(value) if constant_hash(value) is not None else None
        if literal is not None:
            self.entries[name] = {"kind": "constant", "literal": literal}
            return
        if is_untracked(value):
            self.problems[name] = (
                f"{name!r} is marked nf.untracked ({type(value).__name__}): not part of the record"
            )
            return
        self.entries[name] = {
            "kind": "data",
            "type": f"{type(value).__module__}.{type(value).__qualname__}",
        }
        self.data[name] = value
        self._package(type(value).__module__)


def step_record(
    func: Any, *, exclude: Collection[str] = (), source: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The code record of step function ``func`` and the data values it reads.

    ``record`` holds ``source`` (the step as a normalized ``def``, the form that is
    executed again), ``text`` (its source as written, for people, when readable),
    ``defines`` (the name the source defines), ``entries`` (global name -> how to define
    it), ``modules`` (user module name -> its source), ``packages`` (distribution ->
    version) and ``problems`` (name -> why it could not be recorded). Names in
    ``exclude`` (the flow's steps and parameters) are not followed.
    """
    root = as_function(func)
    if root is None:
        name = getattr(func, "__name__", type(func).__name__)
        record: dict[str, Any] = {
            "source": "",
            "text": None,
            "defines": name,
            "entries": {},
            "modules": {},
        }
        record |= {"packages": {}, "problems": {"<step>": f"{name} is not a Python function"}}
        return record, {}
    walk = _RecordWalk(root, frozenset(exclude))
    walk.run()
    text: str | None
    try:
        text = source if source is not None else inspect.getsource(root)
    except Exception:  # OSError, TypeError: no readable source
        text = None
    normalized = normalized_source(root, source)
    if not normalized:
        walk.problems["<step>"] = f"the source of step function {root.__qualname__} cannot be read"
    record = {
        "source": normalized,
        "text": text,
        "defines": root.__name__,
        "entries": walk.entries,
        "modules": walk.modules,
        "packages": dict(sorted(walk.packages.items())),
        "problems": walk.problems,
    }
    return record, walk.data
