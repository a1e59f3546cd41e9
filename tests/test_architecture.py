"""The layout holds as docs/architecture.md draws it: no import cycle between nbflow's
modules, the import-linter contracts of pyproject.toml kept, the map current, no module
over 500 lines, every package's ``__init__`` documented, and the doc names only what exists.

Each check is a function of its input (an import graph, a folder, a text), and each has a
test that feeds it a deliberate violation: a check that cannot fail shows nothing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nbflow"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 500


# -- import cycles ------------------------------------------------------------------------


def import_graph() -> grimp.ImportGraph:
    """nbflow's modules and the imports between them, those inside functions and under
    TYPE_CHECKING included (grimp's defaults); no cache left in the checkout."""
    return grimp.build_graph("nbflow", cache_dir=None)


def _file(module: str) -> str:
    base = PACKAGE.parent / module.replace(".", "/")
    return (
        (base / "__init__.py" if base.is_dir() else base.with_suffix(".py"))
        .relative_to(PACKAGE.parent)
        .as_posix()
    )


def import_cycles(graph: grimp.ImportGraph) -> list[str]:
    """One message per set of modules that import each other round in a circle (a strongly
    connected component of the module graph): its modules, then every import between them,
    as file:line: statement."""
    modules = nx.DiGraph()
    for module in graph.modules:
        modules.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            modules.add_edge(module, imported)
    messages = []
    components = (c for c in nx.strongly_connected_components(modules) if len(c) > 1)
    for component in sorted(sorted(c) for c in components):
        members = set(component)
        lines = [f"{len(component)} modules import each other round: {', '.join(component)}"]
        for importer in component:
            for imported in sorted(set(modules.successors(importer)) & members):
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    where = f"{_file(importer)}:{detail['line_number']}"
                    lines.append(f"    {where}: {detail['line_contents']}")
        messages.append("\n".join(lines))
    return messages


def test_no_import_cycle() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, (
        "import cycles between nbflow's modules (break one import of each: a type needed "
        "below moves down a layer, news from below travels through a listener):\n"
        + "\n".join(cycles)
    )


def test_a_cycle_is_found_and_named() -> None:
    graph = import_graph()
    # Every layer reaches nbflow.errors: errors importing the widgets closes a circle.
    graph.add_import(
        importer="nbflow.errors",
        imported="nbflow.widgets",
        line_number=7,
        line_contents="from nbflow.widgets import browse",
    )
    found = [c for c in import_cycles(graph) if "nbflow/errors/__init__.py:7:" in c]
    assert len(found) == 1, import_cycles(graph)
    names = found[0].splitlines()[0].split(": ", 1)[1].split(", ")
    assert {"nbflow.errors", "nbflow.widgets"} <= set(names)
    assert "nbflow/errors/__init__.py:7: from nbflow.widgets import browse" in found[0]


# -- the import-linter contracts ----------------------------------------------------------


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package and pyproject.toml in ``root``, without a cache."""
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--no-logo",
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )


def contracts(root: Path = ROOT) -> dict[str, dict[str, Any]]:
    """The contracts of pyproject.toml, by id."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def broken_sections(report: str, names: list[str]) -> dict[str, str]:
    """What lint-imports says under each broken contract's heading, by contract name."""
    lines = report.splitlines()
    starts = [
        (i, line)
        for i, line in enumerate(lines[:-1])
        if line in names and lines[i + 1] == "-" * len(line)
    ]
    ends = [i for i, _ in starts[1:]] + [len(lines)] if starts else []
    return {
        name: "\n".join(lines[i + 2 : end]) for (i, name), end in zip(starts, ends, strict=True)
    }


def test_the_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# Each contract, and an import (or module) that breaks it, as the report names it.
VIOLATIONS = {
    "layers": (
        "nbflow/errors/__init__.py",
        "import nbflow.widgets",
        "nbflow.errors is not allowed to import nbflow.widgets",
    ),
    "widgets": (
        "nbflow/widgets/__init__.py",
        "import nbflow.engine.runner",
        "nbflow.widgets -> nbflow.engine.runner",
    ),
    "backends-above": (
        "nbflow/graph/dag.py",
        "import nbflow.store.postgres.store",
        "nbflow.graph.dag -> nbflow.store.postgres.store",
    ),
    "backends-open": (
        "nbflow/store/gc.py",
        "import nbflow.store.memory.store",
        "nbflow.store.gc -> nbflow.store.memory.store",
    ),
    "backends-independent": (
        "nbflow/store/memory/store.py",
        "import nbflow.store.postgres.sql",
        "nbflow.store.memory is not allowed to import nbflow.store.postgres",
    ),
    "engine": ("nbflow/engine/cache.py", "import nbflow.cli", "nbflow.engine.cache -> nbflow.cli"),
}


def test_each_contract_catches_its_violation(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "nbflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for file, line, _ in VIOLATIONS.values():
        with open(tmp_path / file, "a", encoding="utf-8") as f:
            f.write(f"\n{line}  # a deliberate violation\n")
    (tmp_path / "nbflow" / "stray.py").write_text('"""A module in no layer."""\n')

    by_id = contracts(tmp_path)
    assert set(VIOLATIONS) == set(by_id), "a contract without a violation to show it works"
    result = lint_imports(tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    sections = broken_sections(report, [c["name"] for c in by_id.values()])
    for contract_id, (_, _, says) in VIOLATIONS.items():
        name = by_id[contract_id]["name"]
        assert says in sections.get(name, ""), f"{contract_id} ({name}) missed: {says}\n{report}"
    assert "- nbflow.stray" in sections[by_id["layers"]["name"]], report  # exhaustive


# -- the map ------------------------------------------------------------------------------


def _mapper() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "architecture_map", ROOT / "docs" / "architecture_map.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_map_is_current() -> None:
    mapper = _mapper()
    text = DOC.read_text(encoding="utf-8")
    assert mapper.updated(text, mapper.current_block()) == text, (
        "docs/architecture.md's map is stale: run python docs/architecture_map.py"
    )


def test_a_stale_map_is_caught_and_redrawn(tmp_path: Path) -> None:
    mapper = _mapper()
    stale = tmp_path / "architecture.md"
    current = mapper.updated(DOC.read_text(encoding="utf-8"), mapper.current_block())
    lines = current.splitlines(keepends=True)
    edge = next(i for i, line in enumerate(lines) if re.match(r"  nbflow\w* --> ", line))
    stale.write_text("".join(lines[:edge] + lines[edge + 1 :]), encoding="utf-8")  # one lost
    assert mapper.main(["--check", "--doc", str(stale)]) == 1
    assert mapper.main(["--doc", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == current
    assert mapper.main(["--check", "--doc", str(stale)]) == 0


# -- module size --------------------------------------------------------------------------


def long_modules(package: Path, limit: int = MAX_LINES) -> list[str]:
    """The modules under ``package`` longer than ``limit`` lines, with their length."""
    found = []
    for path in sorted(package.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(package.parent).as_posix()}: {lines} lines")
    return found


def test_no_module_over_500_lines() -> None:
    long = long_modules(PACKAGE)
    assert not long, "modules over 500 lines (split them by job):\n" + "\n".join(long)


def test_a_long_module_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "long.py").write_text("x = 1\n" * 501)
    (package / "short.py").write_text("x = 1\n" * 500)
    assert long_modules(package) == ["pkg/sub/long.py: 501 lines"]


# -- package docstrings -------------------------------------------------------------------


def undocumented_packages(package: Path) -> list[str]:
    """Folders of modules under ``package`` (itself included) without an ``__init__.py``
    that opens with a docstring."""
    found = []
    for folder in sorted({p.parent for p in package.rglob("*.py")}):
        init = folder / "__init__.py"
        name = init.relative_to(package.parent).as_posix()
        if not init.exists():
            found.append(f"{name} is missing")
        elif ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) is None:
            found.append(f"{name} does not open with a docstring")
    return found


def test_every_package_opens_with_a_docstring() -> None:
    missing = undocumented_packages(PACKAGE)
    assert not missing, (
        "each package's __init__.py opens with a docstring saying what the layer holds and "
        "what it may import:\n" + "\n".join(missing)
    )


def test_an_undocumented_package_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    for folder in ("bare", "quiet", "told"):
        (package / folder).mkdir(parents=True)
        (package / folder / "m.py").write_text('"""A module."""\n')
    (package / "__init__.py").write_text('"""The package."""\n')
    (package / "quiet" / "__init__.py").write_text('import os\n"""Too late."""\n')
    (package / "told" / "__init__.py").write_text('"""Holds m; may import nothing."""\n')
    assert undocumented_packages(package) == [
        "pkg/bare/__init__.py is missing",
        "pkg/quiet/__init__.py does not open with a docstring",
    ]


# -- what the doc names -------------------------------------------------------------------

_CODE = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"nbflow(?:/\w+)*(?:\.py|/)?")
_DOTTED = re.compile(r"nbflow(?:\.\w+)+")


def missing_names(text: str) -> list[str]:
    """The files (``nbflow/...``) and modules, classes, functions (``nbflow.x.y``) named in
    code spans of ``text`` that do not exist."""
    missing = []
    for span in dict.fromkeys(_CODE.findall(text)):
        if _PATH.fullmatch(span) and "/" in span:
            if not (ROOT / span).exists():
                missing.append(span)
        elif _DOTTED.fullmatch(span) and not _resolves(span):
            missing.append(span)
    return missing


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_the_doc_names_only_what_exists() -> None:
    missing = missing_names(DOC.read_text(encoding="utf-8"))
    assert not missing, "docs/architecture.md names what nbflow lacks: " + ", ".join(missing)


def test_a_missing_name_is_found() -> None:
    text = (
        "`nbflow/values/codecs.py` `nbflow/values/` `nbflow.values.codecs.encode` "
        "`nbflow/values/nothing.py` `nbflow.values.codecs.nothing` `nbflow.nothing.x` "
        "`nbflow runs` `store.sql(query)`"
    )
    assert missing_names(text) == [
        "nbflow/values/nothing.py",
        "nbflow.values.codecs.nothing",
        "nbflow.nothing.x",
    ]
