"""Drawing a laid-out DAG as SVG: nodes colored by state, with name and duration.

Drawing is plain string building over a cached layout, so redrawing a 500-step DAG for a
state change takes milliseconds. The SVG carries no ``<style>`` and no ids (several
DAGs share one page); nodes are ``<g class="node state-…" data-step="…">`` so front-end
code and browser tests can find them.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from nbflow.widgets.layout import CAPTION_FONT, NAME_FONT, Layout, layout
from nbflow.widgets.states import PALETTE, DagSpec, NodeInfo, NodeState

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
EDGE_COLOR = "#6b7280"
SELECTED_COLOR = "#111827"
_DASH = {NodeState.NEVER_RUN: "4 3", NodeState.SKIPPED: "2 2"}
# A running node pulses (SMIL needs no stylesheet, and works in every notebook front-end).
_PULSE = (
    '<animate attributeName="stroke-opacity" values="1;0.25;1" dur="1.2s" '
    'repeatCount="indefinite"/>'
)


def render_svg(
    spec: DagSpec, infos: Mapping[str, NodeInfo] | None = None, selected: str = ""
) -> str:
    """The SVG of ``spec`` with each step drawn in its state (absent: never run)."""
    return draw(layout(spec), infos or {}, selected)


def draw(placed: Layout, infos: Mapping[str, NodeInfo], selected: str = "") -> str:
    """Draw a layout: edges first, then one group per node."""
    if not placed.nodes:
        return _empty()
    width, height = placed.width, placed.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-dag-svg" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.1f} {height:.1f}" '
        f'font-family="{FONT}" data-engine="{placed.engine}">'
    ]
    out.append(f'<g class="edges" fill="none" stroke="{EDGE_COLOR}" stroke-width="1.2">')
    for edge in placed.edges:
        out.append(
            f'<g class="edge" data-tail={quoteattr(edge.tail)} data-head={quoteattr(edge.head)}>'
            f'<path d="{edge.path}"/><polygon points="{edge.arrow}" fill="{EDGE_COLOR}" '
            'stroke="none"/></g>'
        )
    out.append("</g>")
    for name, box in placed.nodes.items():
        info = infos.get(name) or NodeInfo()
        fill, stroke = PALETTE[info.state]
        is_selected = name == selected
        classes = f"node state-{info.state.value}" + (" selected" if is_selected else "")
        left, top = box.x - box.width / 2, box.y - box.height / 2
        dash = _DASH.get(info.state)
        rect = (
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{box.width:.1f}" '
            f'height="{box.height:.1f}" rx="6" fill="{fill}" '
            f'stroke="{SELECTED_COLOR if is_selected else stroke}" '
            f'stroke-width="{3 if is_selected else 1.5}"'
            + (f' stroke-dasharray="{dash}"' if dash and not is_selected else "")
        )
        rect += f">{_PULSE}</rect>" if info.state is NodeState.RUNNING else "/>"
        out.append(
            f'<g class="{classes}" data-step={quoteattr(name)} '
            f'data-state="{info.state.value}" cursor="pointer">'
            f"<title>{escape(name)}: {escape(info.tooltip)}</title>{rect}"
            f'<text x="{box.x:.1f}" y="{box.y - 3:.1f}" text-anchor="middle" '
            f'font-size="{NAME_FONT:g}" font-weight="600" fill="#111827">{escape(name)}</text>'
            f'<text x="{box.x:.1f}" y="{box.y + 12:.1f}" text-anchor="middle" '
            f'font-size="{CAPTION_FONT:g}" fill="#374151">{escape(info.caption)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _empty() -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-dag-svg" width="220" '
        f'height="40" font-family="{FONT}"><text x="10" y="24" font-size="12" fill="#6b7280">'
        "no steps yet: add one with @flow.step</text></svg>"
    )
