"""Notebooks as flows: ``nf.load_notebook("analysis.ipynb")``, without a kernel.

The notebook is read top to bottom, as running it in a kernel would, from its folder.
``%%step`` cells become steps (exactly as the magic makes them); the other cells run
statement by statement, as a kernel runs them (so ``SCALE = 2 * 3`` or
``DATA = Path("data")`` hold what they hold in Jupyter), except what only a kernel or a
run can do, which is skipped and remembered with why (:class:`_Loader`): IPython syntax
(magics, ``!cmd``), statements that read a step's value, statements that use a flow other
than to add steps to it (``flow.run()``, ``nf.browse(flow)``), statements that read what
a skipped statement assigns, and statements that fail (a step that reads what they
assign is refused with the reason). No step runs.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbflow.api.cells import add_cell_step, find_flows, resolve_flow
from nbflow.definition.cells import compile_cell, parse_step_line, remember_source
from nbflow.errors import CellError, NbflowError, NotebookError, suggest

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.store.open import StoreLike

__all__ = ["is_step_cell", "load_notebook"]

_MAGIC = "%%step"


def load_notebook(
    path: str | os.PathLike[str], *, flow: str | None = None, store: StoreLike = None
) -> Flow:
    """Build the Flow a notebook's ``%%step`` cells define, without a kernel or running steps.

    ``flow`` picks one when the notebook defines several (a variable or flow name).
    ``store`` overrides the store the notebook's ``nf.Flow(...)`` names; a relative store
    path in the notebook is relative to the notebook's folder. Raises NotebookError when
    the file is missing or not a notebook, CellError for a bad ``%%step`` cell.
    """
    from nbflow import arguments
    from nbflow.store.open import check_store_like

    notebook = Path(arguments.path(path, "load_notebook's path"))
    arguments.optional_text(flow, "load_notebook's flow (a variable or flow name)")
    check_store_like(store)
    cells = _read_cells(notebook)
    loader = _Loader(notebook, store)
    with _in_folder(loader.folder):  # the notebook's code runs where its kernel would
        for index, cell in enumerate(cells, start=1):
            if cell.get("cell_type") != "code":
                continue
            source = cell.get("source", "")
            if isinstance(source, list):
                source = "".join(source)
            if is_step_cell(source):
                loader.step_cell(index, source)
            else:
                loader.plain_cell(index, source)
    return loader.chosen(flow)


def is_step_cell(source: str) -> bool:
    """Whether a cell's source is a ``%%step`` cell (the magic on its first non-blank line)."""
    first = next((line for line in source.splitlines() if line.strip()), "")
    return first == _MAGIC or first.startswith((_MAGIC + " ", _MAGIC + "\t"))


def _read_cells(notebook: Path) -> list[Any]:
    if not notebook.exists():
        raise NotebookError(f"no notebook at {notebook}: the file does not exist.")
    if notebook.is_dir():
        raise NotebookError(f"{notebook} is a directory, not a notebook (an .ipynb file).")
    if notebook.suffix != ".ipynb":
        hint = " For a flow in a module, use module.py:flow." if notebook.suffix == ".py" else ""
        raise NotebookError(f"{notebook} is not a notebook: expected an .ipynb file.{hint}")
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception as exc:  # NotJSONError, a validation error, bad bytes, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotebookError(
            f"{notebook} is not a Jupyter notebook that can be read: {reason[:200]}"
        ) from None
    cells = nb.get("cells") if hasattr(nb, "get") else None
    if not isinstance(cells, list):
        raise NotebookError(f"{notebook} is not a Jupyter notebook: it has no list of cells.")
    return cells


class _Loader:
    """Reads the cells in order into one namespace, as a kernel would (minus the running)."""

    def __init__(self, notebook: Path, store: StoreLike) -> None:
        self.notebook = notebook
        self.folder = notebook.resolve().parent
        self.store = store
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        # name -> where a skipped statement assigns it, and why it was skipped
        self.unexecuted: dict[str, str] = {}
        self._skipped_at: dict[str, str] = {}  # name -> where only

    def _where(self, index: int, line: int | None = None) -> str:
        at = f", line {line}" if line is not None else ""
        return f"{self.notebook.name}, cell {index}{at}"

    # -- %%step cells ----------------------------------------------------------------

    def step_cell(self, index: int, source: str) -> None:
        lines = source.splitlines()
        first = next(i for i, line in enumerate(lines) if line.strip())
        try:
            spec = parse_step_line(lines[first][len(_MAGIC) :])
            flow = resolve_flow(self.namespace, spec.flow)
            step = compile_cell(
                spec,
                "\n".join(lines[first + 1 :]),
                steps=flow.steps,
                namespace=self.namespace,
                flow_name=flow.name,
                filename=f"<{self.notebook.name} cell {index}>",
                first_line=first + 2,
                cell_text=source,
                unexecuted=self.unexecuted,
            )
            add_cell_step(flow, step)
        except CellError as exc:
            raise CellError(f"{self._where(index)}: {exc}") from None

    # -- plain cells -------------------------------------------------------------------

    def plain_cell(self, index: int, source: str) -> None:
        code = _python_of(_timed_body(source))
        filename = f"<{self.notebook.name} cell {index}>"
        try:
            tree = ast.parse(code, filename=filename)
        except SyntaxError as exc:
            raise NotebookError(
                f"{self._where(index, exc.lineno)}: syntax error: {exc.msg}. nbflow reads the "
                "imports and definitions of every cell, so the notebook must be valid Python."
            ) from None
        remember_source(filename, code)  # so inspect (and the fingerprint) sees helpers' code
        for statement in tree.body:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                with _on_path(self.folder):
                    self._execute(statement, index, filename, "the import")
            elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self._execute(statement, index, filename, f"defining {statement.name!r}")
            elif self._is_flow(statement):
                self._make_flow(statement, index)
            else:
                why = self._needs_more_than_a_load(statement) or self._run(statement, filename)
                if why is not None:
                    self._skip(statement, index, why)
                    continue
            for name in _assigned_names(statement):
                self.unexecuted.pop(name, None)

    def _needs_more_than_a_load(self, statement: ast.stmt) -> str | None:
        """Why a plain statement cannot run while loading (None: it can), from what it reads."""
        reads = _read_names(statement)
        if "get_ipython" in reads:
            return "it is IPython syntax (a magic or a shell command), which only a kernel runs"
        flows = find_flows(self.namespace)
        steps = {step for flow in flows.values() for step in flow.steps}
        for name in reads:
            if name in steps:
                return f"it reads step {name!r}, whose value only a run computes"
        for name in reads:
            if name in self.unexecuted:
                at = self._skipped_at.get(name, "an earlier statement")
                return f"it reads {name!r}, which {at} assigns and nbflow did not run either"
        for name in set(reads) & set(flows):
            if not _only_adds_steps(statement, name):
                return f"it uses flow {name!r} (to run or show it, say), which loading never does"
        return None

    def _run(self, statement: ast.stmt, filename: str) -> str | None:
        """Run a plain statement in the notebook's namespace; why it failed, if it did."""
        module = ast.Module(body=[statement], type_ignores=[])
        try:
            code = compile(module, filename, "exec", dont_inherit=True)
        except SyntaxError as exc:  # e.g. a top-level await, which only IPython runs
            return f"only a kernel runs it ({exc.msg})"
        try:
            exec(code, self.namespace)
        except Exception as exc:
            return f"running it failed: {type(exc).__name__}: {exc}"[:300]
        return None

    def _execute(self, statement: ast.stmt, index: int, filename: str, what: str) -> None:
        module = ast.Module(body=[statement], type_ignores=[])
        try:
            exec(compile(module, filename, "exec", dont_inherit=True), self.namespace)
        except Exception as exc:
            raise NotebookError(
                f"{self._where(index, statement.lineno)}: {what} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    def _skip(self, statement: ast.stmt, index: int, why: str) -> None:
        """Not executed: what it assigns is unknown here (and no stale value may stay)."""
        for name in _assigned_names(statement):
            self.namespace.pop(name, None)
            self._skipped_at[name] = f"cell {index} (line {statement.lineno})"
            self.unexecuted[name] = (
                f"cell {index} (line {statement.lineno}), in a statement nbflow could not run "
                f"({why})"
            )

    # -- nf.Flow(...) ------------------------------------------------------------------

    def _is_flow(self, statement: ast.stmt) -> bool:
        from nbflow.api.flow import Flow

        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
            and isinstance(statement.value, ast.Call)
        ):
            return False
        target = self._lookup(statement.value.func)
        return isinstance(target, type) and issubclass(target, Flow)

    def _lookup(self, node: ast.expr) -> Any:
        """The object a dotted name (``nf.Flow``) stands for in the namespace, or None."""
        if isinstance(node, ast.Name):
            return self.namespace.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self._lookup(node.value)
            return getattr(owner, node.attr, None) if owner is not None else None
        return None

    def _make_flow(self, statement: ast.stmt, index: int) -> None:
        from nbflow.api.flow import Flow

        assert isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Call)
        target = statement.targets[0]
        assert isinstance(target, ast.Name)
        call = statement.value
        where = self._where(index, statement.lineno)
        args = [self._constant(a, where, "argument") for a in call.args]
        kwargs: dict[str, Any] = {}
        for keyword in call.keywords:
            if keyword.arg is None:
                raise NotebookError(f"{where}: nbflow cannot read **kwargs passed to nf.Flow(...)")
            if keyword.arg == "store" and self.store is not None:
                continue  # overridden: whatever the notebook says is not needed
            kwargs[keyword.arg] = self._constant(keyword.value, where, f"{keyword.arg}=")
        flow_class = self._lookup(call.func)
        try:
            bound = inspect.signature(Flow).bind(*args, **kwargs)
        except TypeError as exc:
            raise NotebookError(f"{where}: nf.Flow(...) {exc}") from None
        bound.apply_defaults()
        if self.store is not None:
            bound.arguments["store"] = self.store
        else:
            bound.arguments["store"] = self._store_path(bound.arguments.get("store"))
        try:
            self.namespace[target.id] = flow_class(*bound.args, **bound.kwargs)
        except NbflowError as exc:
            raise NotebookError(f"{where}: {exc}") from None

    def _constant(self, node: ast.expr, where: str, what: str) -> Any:
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
        # As the kernel would: evaluated in the notebook's namespace (STORE, DATA / "x").
        skipped = [n for n in _read_names(node) if n in self.unexecuted]
        if skipped:
            name = skipped[0]
            why = f"it reads {name!r}, which the notebook assigns in {self.unexecuted[name]}"
        else:
            try:
                expression = ast.Expression(body=node)
                return eval(compile(expression, "<nf.Flow argument>", "eval"), self.namespace)
            except Exception as exc:
                why = f"working it out failed: {type(exc).__name__}: {exc}"
        raise NotebookError(
            f"{where}: the {what} of nf.Flow(...) ({ast.unparse(node)}) is not a literal, and "
            f"{why}. Fix it so that the cell runs, or give the store with --store."
        ) from None

    def _store_path(self, store: Any) -> Any:
        """A relative store path in the notebook is relative to the notebook's folder."""
        if not isinstance(store, str) or not store or store == ":memory:" or "://" in store:
            return store
        path = Path(store).expanduser()
        return str(path if path.is_absolute() else self.folder / path)

    # -- the result ----------------------------------------------------------------------

    def chosen(self, wanted: str | None) -> Flow:
        flows = find_flows(self.namespace)
        if wanted is not None:
            try:
                return resolve_flow(self.namespace, wanted)
            except CellError:
                known = sorted({*flows, *(f.name for f in flows.values())})
                listed = ", ".join(known) or "none"
                raise NotebookError(
                    f"{self.notebook.name} defines no flow {wanted!r} (flows: {listed})."
                    + suggest(wanted, known)
                ) from None
        if len(flows) == 1:
            return next(iter(flows.values()))
        if not flows:
            raise NotebookError(
                f"{self.notebook.name} defines no Flow: add a cell with "
                "`flow = nf.Flow('name')` before its %%step cells."
            )
        listed = ", ".join(f"{f.name!r}" for f in flows.values())
        raise NotebookError(
            f"{self.notebook.name} defines several flows ({listed}): choose one with "
            f"load_notebook(path, flow=NAME) or `nbflow run {self.notebook.name}:NAME`."
        )


def _python_of(source: str) -> str:
    """The cell as Python: IPython syntax (``%magic``, ``!cmd``) turned into calls, which
    are then not executed."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # without IPython: drop magic and shell lines
        if source.lstrip().startswith("%%"):
            return ""
        lines = source.splitlines()
        return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)
    return str(TransformerManager().transform_cell(source))


def _timed_body(source: str) -> str:
    """A ``%%time`` or ``%%capture`` cell as the Python it runs in the kernel's namespace
    (its magic line blanked, so line numbers stay), any other cell as it is."""
    lines = source.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return source
    magic = lines[first].split(maxsplit=1)[0]
    if magic not in _RUNS_ITS_BODY:
        return source
    return "\n".join([*lines[:first], "", *lines[first + 1 :]])


# Cell magics whose body the kernel runs once, as Python, in the notebook's namespace.
_RUNS_ITS_BODY = frozenset({"%%time", "%%capture"})


def _read_names(node: ast.AST) -> list[str]:
    """The names a statement or expression reads (in nested scopes too), first read first."""
    seen: dict[str, None] = {}
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
            seen.setdefault(child.id, None)
    return list(seen)


def _only_adds_steps(statement: ast.stmt, flow: str) -> bool:
    """Whether ``statement`` uses the flow variable ``flow`` only as ``flow.step`` or
    ``flow.gate`` (adding steps, as a kernel running the cell would)."""
    allowed: set[int] = set()
    for node in ast.walk(statement):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == flow
            and node.attr in ("step", "gate")
        ):
            allowed.add(id(node.value))
    return all(
        id(node) in allowed
        for node in ast.walk(statement)
        if isinstance(node, ast.Name) and node.id == flow and isinstance(node.ctx, ast.Load)
    )


@contextmanager
def _in_folder(folder: Path) -> Iterator[None]:
    """Run the notebook's cells from its folder, as a kernel started there would."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _assigned_names(statement: ast.stmt) -> list[str]:
    """The names a top-level statement binds (not those bound inside functions it defines)."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [statement.name]
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return [a.asname or a.name.partition(".")[0] for a in statement.names if a.name != "*"]
    names = []
    stack: list[ast.AST] = [statement]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif not isinstance(node, ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))
    return names


@contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    """Let imports find modules next to the notebook, as a kernel started there would."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)
