"""Which names a cell reads from outside itself, found with the AST and the symbol table.

A ``%%step`` cell is compiled as a function body, so the names it reads before binding
them (and the names its nested functions, lambdas, classes and comprehensions read and
it never binds) come from outside: steps, run parameters, or the notebook's namespace.
"""

from __future__ import annotations

import ast
import symtable
from collections.abc import Iterator

from nbflow.errors import CellError

__all__ = ["free_names", "refuse_top_level", "top_level_nodes"]


def free_names(tree: ast.Module, table: symtable.SymbolTable) -> dict[str, int]:
    """Names the cell reads from outside itself, each with the first line reading it.

    That is: names its own scope reads before binding them (``raw = raw.dropna()`` reads
    ``raw``), and names that nested functions, lambdas, classes and comprehensions read
    and the cell never binds.
    """
    order = _ReadsBeforeBinding()
    for statement in tree.body:
        order.visit(statement)
    free = dict(order.reads)
    local = {s.get_name() for s in table.get_symbols() if s.is_local()}
    nested: set[str] = set()
    stack = list(table.get_children())
    while stack:
        child = stack.pop()
        nested |= {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
        stack.extend(child.get_children())
    nested -= local
    if nested:
        first: dict[str, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in nested:
                first[node.id] = min(first.get(node.id, node.lineno), node.lineno)
        for read in nested:
            free.setdefault(read, first.get(read, 0))
    return dict(sorted(free.items(), key=lambda item: item[1]))


class _ReadsBeforeBinding(ast.NodeVisitor):
    """Walks the cell's own scope in evaluation order, noting names read while unbound.

    Nested scopes are not entered, except for what is evaluated where they stand
    (decorators, defaults, annotations, base classes, a comprehension's first iterable).
    """

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.reads: dict[str, int] = {}

    def _read(self, name: str, line: int) -> None:
        if name not in self.bound:
            self.reads.setdefault(name, line)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._read(node.id, node.lineno)
        elif isinstance(node.ctx, ast.Store):
            self.bound.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)  # a local's annotation is not evaluated in a function

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._read(node.target.id, node.lineno)
            self.visit(node.value)
            self.bound.add(node.target.id)
        else:
            self.visit(node.target)
            self.visit(node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for statement in [*node.body, *node.orelse]:
            self.visit(statement)

    visit_AsyncFor = visit_For

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        self.visit(node.generators[0].iter)  # the rest runs in the comprehension's scope
        for inner in ast.walk(node):
            if isinstance(inner, ast.NamedExpr) and isinstance(inner.target, ast.Name):
                self.bound.add(inner.target.id)  # := in a comprehension binds out here

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.visit(arg.annotation)
        if node.returns is not None:
            self.visit(node.returns)
        self.bound.add(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self.bound.add(node.name)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.bound.add(alias.asname or alias.name.partition(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self.bound.add(alias.asname or alias.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.bound.add(node.name)
        for statement in node.body:
            self.visit(statement)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.bound.add(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.bound.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.bound.add(node.rest)


def refuse_top_level(tree: ast.Module, where: str) -> None:
    """Refuse ``yield`` and ``await`` in the cell's own scope: a step returns one value."""
    for node in top_level_nodes(tree):
        if isinstance(node, ast.Yield | ast.YieldFrom):
            raise CellError(
                f"{where} uses yield (line {node.lineno}): a step returns one value; "
                "collect the items in a list instead."
            )
        if isinstance(node, ast.Await):
            raise CellError(
                f"{where} uses await (line {node.lineno}): steps are plain functions; "
                "use asyncio.run(...) inside the cell instead."
            )


_NESTED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def top_level_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of the cell's own scope (nested functions and classes not entered)."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, _NESTED):
            stack.extend(ast.iter_child_nodes(node))
