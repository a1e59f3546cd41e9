"""What a widget says where widgets cannot render, and the standalone HTML export.

A plain-text front end (IPython in a terminal), a static page (nbviewer, nbconvert, GitHub's
notebook preview) or a notebook reopened without its kernel cannot show a widget: they
pick the bundle's ``text/html`` or ``text/plain`` instead. So every nbflow display carries
both, next to the widget view: the steps with their states and durations. The same pieces
make the page ``to_html(path)`` writes: one self-contained file, styles inline, no script
and no URL to fetch, so it opens offline.

Pure Python: no ipywidgets here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from nbflow.errors import ParameterError
from nbflow.widgets.states import PALETTE, DagSpec, NodeInfo, NodeState, summarize

_CSS = """
.nbflow-summary { font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
  font-size: 13px; color: #111827; }
.nbflow-summary h3 { font-size: 14px; margin: 4px 0; }
.nbflow-summary table { border-collapse: collapse; margin: 4px 0 12px 0; }
.nbflow-summary th, .nbflow-summary td { text-align: left; padding: 2px 10px 2px 4px;
  border-bottom: 1px solid #e5e7eb; vertical-align: top; }
.nbflow-summary .nbflow-badge { border-radius: 3px; padding: 0 5px; white-space: nowrap; }
.nbflow-summary .nbflow-dag-svg svg { max-width: 100%; height: auto; }
"""


def plural(count: int, word: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _state_counts(spec: DagSpec, infos: Mapping[str, NodeInfo]) -> str:
    counts = summarize(infos, spec.nodes)
    return ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))


def _duration(info: NodeInfo) -> str:
    caption = info.caption
    word = info.label or info.state.label
    return caption[len(word) + 3 :] if caption.startswith(f"{word} · ") else ""


def step_rows(spec: DagSpec, infos: Mapping[str, NodeInfo]) -> list[list[str]]:
    """One row per step, in run order: step, state, took, detail."""
    rows = []
    for node in spec.nodes:
        info = infos.get(node) or NodeInfo()
        rows.append([node, info.label or info.state.label, _duration(info), info.detail])
    return rows


def steps_text(title: str, spec: DagSpec, infos: Mapping[str, NodeInfo]) -> str:
    """The DAG as text: a title line, then one aligned line per step."""
    head = title or "nbflow DAG"
    if not spec.nodes:
        return f"{head}\n(no steps)"
    lines = [f"{head} · {plural(len(spec.nodes), 'step')}: {_state_counts(spec, infos)}"]
    lines.append(text_table(["step", "state", "took", "detail"], step_rows(spec, infos)))
    return "\n".join(lines)


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned text columns (empty trailing columns dropped)."""
    table = [list(columns), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def html_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, status_column: int = -1
) -> str:
    """Rows as an HTML table; cells of ``status_column`` shown as colored badges."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = escape(str(cell))
            if i == status_column and cell:
                text = badge(str(cell))
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# Run statuses that are not step states, drawn in the color of the step state they are like.
_RUN_STATUS_LOOKS = {
    "pending": NodeState.NEVER_RUN,
    "waiting": NodeState.QUEUED,
    "cancelled": NodeState.SKIPPED,
    "interrupted": NodeState.SKIPPED,
}


def badge(text: str, state: NodeState | None = None) -> str:
    """``text`` on the colors of ``state`` (default: the state or run status it names)."""
    if state is None:
        key = text.replace(" ", "_")
        state = {s.value: s for s in NodeState}.get(key) or _RUN_STATUS_LOOKS.get(key)
    if state is None:
        return escape(text)
    fill, stroke = PALETTE[state]
    return (
        f'<span class="nbflow-badge" style="background:{fill};border:1px solid {stroke}">'
        f"{escape(text)}</span>"
    )


def steps_html(title: str, spec: DagSpec, infos: Mapping[str, NodeInfo], *, svg: str = "") -> str:
    """The DAG as HTML: a title, the SVG drawing (when given) and the table of steps."""
    parts = [f"<h3>{escape(title or 'nbflow DAG')}</h3>"]
    if spec.nodes:
        parts.append(
            f"<div>{plural(len(spec.nodes), 'step')}: {escape(_state_counts(spec, infos))}</div>"
        )
    if svg:
        parts.append(f'<div class="nbflow-dag-svg">{svg}</div>')
    if spec.nodes:
        head = "".join(f"<th>{c}</th>" for c in ("step", "state", "took", "detail"))
        body = []
        for node, (_, word, took, detail) in zip(spec.nodes, step_rows(spec, infos), strict=True):
            state = (infos.get(node) or NodeInfo()).state
            body.append(
                f"<tr><td>{escape(node)}</td><td>{badge(word, state)}</td>"
                f"<td>{escape(took)}</td><td>{escape(detail)}</td></tr>"
            )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    else:
        parts.append("<div>(no steps)</div>")
    return section(parts)


def section(parts: Sequence[str]) -> str:
    """HTML pieces in one summary block, its styles inline (a static page may drop a
    ``<style>`` element, but not ``style=`` attributes of the badges)."""
    return f'<div class="nbflow-summary"><style>{_CSS}</style>{"".join(parts)}</div>'


def with_summary(bundle: Any, text: str, html: str) -> Any:
    """A widget's mime bundle (a dict, or ``(data, metadata)``) with ``text/plain`` and
    ``text/html`` set to the summary."""
    if isinstance(bundle, tuple):
        data, metadata = bundle
        return {**(data or {}), "text/plain": text, "text/html": html}, metadata
    return {**(bundle or {}), "text/plain": text, "text/html": html}


def write_page(path: str | os.PathLike[str], title: str, body: str) -> Path:
    """Write ``body`` as a standalone HTML page at ``path``; return the path."""
    if not isinstance(path, str | os.PathLike):
        raise ParameterError(
            f"to_html takes the path of the file to write, not {type(path).__name__} {path!r:.60}"
        )
    target = Path(path)
    if target.is_dir():
        raise ParameterError(f"to_html writes a file, but {str(target)!r} is a folder")
    if not target.parent.is_dir():
        raise ParameterError(f"cannot write {str(target)!r}: its folder does not exist")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head><body>{body}</body></html>\n"
    )
    target.write_text(page, encoding="utf-8")
    return target
