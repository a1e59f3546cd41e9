"""Draw nbflow's layers as a Mermaid diagram in docs/architecture.md, from the code.

The layers come from the import-linter ``layers`` contract in pyproject.toml, the edges from
the imports that exist (grimp, imports inside functions and under TYPE_CHECKING included):
one node per layer entry, one edge per pair of entries where a module of the first imports
a module of the second. ``python docs/architecture_map.py`` rewrites the block between the
markers; ``--check`` only says whether it is current (exit status 1 when it is stale).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PYPROJECT = ROOT / "pyproject.toml"
BEGIN = "<!-- BEGIN architecture map: written by docs/architecture_map.py, do not edit -->"
END = "<!-- END architecture map -->"


@dataclass(frozen=True)
class Layer:
    """One entry of the layers contract: its modules, and whether they may import each other."""

    number: int  # 1 is the bottom layer
    modules: tuple[str, ...]
    independent: bool


def read_layers(pyproject: Path = PYPROJECT) -> tuple[str, list[Layer]]:
    """The root package and the layers of the ``layers`` contract, bottom layer first."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    containers = contract.get("containers", [""])
    if len(containers) != 1:
        raise SystemExit("architecture_map.py draws a layers contract with one container")
    prefix = f"{containers[0]}." if containers[0] else ""
    layers = []
    for number, entry in enumerate(reversed(contract["layers"]), start=1):
        independent = ":" not in entry
        names = entry.replace(":", "|").split("|")
        modules = tuple(prefix + name.strip().strip("()") for name in names)
        layers.append(Layer(number, modules, independent))
    return config["root_package"], layers


def entry_of(module: str, entries: list[str]) -> str | None:
    """The layer entry ``module`` belongs to (the entry itself or an ancestor), if any."""
    for entry in entries:
        if module == entry or module.startswith(entry + "."):
            return entry
    return None


def entry_imports(
    graph: grimp.ImportGraph, root: str, layers: list[Layer]
) -> list[tuple[str, str]]:
    """(importer, imported) pairs of layer entries (or the root package) with an import
    between them, sorted top layer first."""
    entries = [m for layer in layers for m in layer.modules if m in graph.modules]
    entries.sort(key=len, reverse=True)  # the innermost entry wins

    def node(module: str) -> str | None:
        return root if module == root else entry_of(module, entries)

    edges = set()
    for module in graph.modules:
        importer = node(module)
        if importer is None:
            continue
        for imported_module in graph.find_modules_directly_imported_by(module):
            imported = node(imported_module)
            if imported is not None and imported != importer:
                edges.add((importer, imported))
    rank = {m: -layer.number for layer in layers for m in layer.modules}
    rank[root] = -len(layers) - 1  # drawn as the importer it is, above its importees
    return sorted(edges, key=lambda e: (rank[e[0]], e[0], rank[e[1]], e[1]))


def unplaced(graph: grimp.ImportGraph, root: str, layers: list[Layer]) -> list[str]:
    """Children of the root package that no layer holds (lint-imports reports them too)."""
    entries = [m for layer in layers for m in layer.modules]
    return sorted(m for m in graph.find_children(root) if entry_of(m, entries) is None)


def _id(module: str) -> str:
    return module.replace(".", "_")


def implied(edges: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges a longer path of edges already implies (none if the edges have a cycle)."""
    graph = nx.DiGraph(edges)
    if not nx.is_directed_acyclic_graph(graph):
        return set()
    return set(edges) - set(nx.transitive_reduction(graph).edges())


def render(root: str, layers: list[Layer], edges: list[tuple[str, str]]) -> str:
    """The Mermaid block: one subgraph per layer, top layer first; an arrow A --> B says
    that A imports B. Arrows that a path of others implies are drawn light, so the shape
    of the stack shows; those against the contract are dashed."""
    lines = ["```mermaid", "flowchart TB"]
    if any(root in edge for edge in edges):
        lines.append(f'  {_id(root)}["{root} (the root package: re-exports, not a layer)"]')
    for layer in reversed(layers):
        kind = ""
        if len(layer.modules) > 1:
            kind = ", independent" if layer.independent else ", may import each other"
        lines.append(f'  subgraph layer_{layer.number} ["layer {layer.number}{kind}"]')
        for module in layer.modules:
            lines.append(f'    {_id(module)}["{module}"]')
        lines.append("  end")
    number = {m: layer.number for layer in layers for m in layer.modules}
    siblings = {m: not layer.independent for layer in layers for m in layer.modules}
    for a, b in edges:
        # (The root is no layer: lint-imports judges only the chains through it.)
        downward = root in (a, b) or number[b] < number[a]
        if downward or (number[b] == number[a] and siblings[a]):
            lines.append(f"  {_id(a)} --> {_id(b)}")
        else:  # against the contract: lint-imports fails until it is gone
            lines.append(f'  {_id(a)} -. "breaks the layers" .-> {_id(b)}')
    # Invisible links stack the layers in their order, whatever the edges.
    for upper, lower in zip(layers[:0:-1], layers[-2::-1], strict=True):
        lines.append(f"  layer_{upper.number} ~~~ layer_{lower.number}")
    light = implied(edges)
    indexes = [str(i) for i, edge in enumerate(edges) if edge in light]
    if indexes:
        lines.append(f"  linkStyle {','.join(indexes)} stroke:#c8c8c8")
    lines.append("```")
    return "\n".join(lines)


def current_block(pyproject: Path = PYPROJECT) -> str:
    """The diagram, between its markers, as the code and the contract make it today."""
    root, layers = read_layers(pyproject)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's package, not another installed one
    graph = grimp.build_graph(root, cache_dir=None)
    for module in unplaced(graph, root, layers):
        print(f"architecture_map.py: {module} is in no layer", file=sys.stderr)
    return f"{BEGIN}\n{render(root, layers, entry_imports(graph, root, layers))}\n{END}"


def updated(text: str, block: str) -> str:
    """``text`` with the block between the markers replaced by ``block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"the markers {BEGIN!r} and {END!r} are missing")
    return text[:start] + block + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the diagram in the doc, or with ``--check`` tell whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the diagram is stale")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to update")
    args = parser.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    new = updated(text, current_block())
    if args.check:
        if new != text:
            print(
                f"{args.doc} has a stale architecture map: run python docs/architecture_map.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        args.doc.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
