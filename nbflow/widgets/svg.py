"""Drawing a laid-out DAG as SVG: nodes colored by state, with name and duration.

Every state differs by more than its color, for readers who cannot tell the colors
apart: each has its own icon left of the name (:data:`ICONS`), and the states that are
not results have their own border patterns (dashed never run, dotted skipped, dash-dot
queued).

A human gate is drawn as a hexagon, whatever its step state, and once reached its
decision shows three ways besides color: open has a dashed border and an hourglass,
approved a double border and a circled check, rejected a thick border and a barred
circle (:data:`GATE_ICONS`).

Colors are presentation attributes in the light palette (a static page shows them);
shapes, icons and texts carry classes (``shape``, ``icon``, ``name``, ``caption``) that
the widgets' stylesheet (:mod:`nbflow.widgets.theme`) colors in both themes.

Drawing is plain string building over a cached layout, so redrawing a 500-step DAG for a
state change takes milliseconds. The SVG carries no ``<style>`` and no ids (several
DAGs share one page); nodes are ``<g class="node state-…" data-step="…">`` so front-end
code and browser tests can find them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from xml.sax.saxutils import escape, quoteattr

from nbflow.widgets.layout import CAPTION_FONT, ICON_ROOM, NAME_FONT, Box, Layout, layout
from nbflow.widgets.states import (
    PALETTE,
    DagSpec,
    NodeInfo,
    NodeState,
    format_duration,
    running_ms,
)
from nbflow.widgets.theme import GATE_PALETTE, GateLook

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
EDGE_COLOR = "#6b7280"
SELECTED_COLOR = "#111827"
#: state -> the border's dash pattern ('' for a solid border).
DASH: dict[NodeState, str] = {
    NodeState.NEVER_RUN: "5 3",
    NodeState.SKIPPED: "1.5 2.5",
    NodeState.QUEUED: "7 2 1.5 2",
}
#: state -> its icon: SVG drawn in a 10 px box centered on (0, 0), in the state's stroke.
ICONS: dict[NodeState, str] = {
    NodeState.NEVER_RUN: '<circle r="3.8" fill="none" stroke-width="1.4"/>',
    NodeState.QUEUED: (
        '<g stroke="none"><circle cx="-3.4" r="1.3"/><circle r="1.3"/>'
        '<circle cx="3.4" r="1.3"/></g>'
    ),
    NodeState.RUNNING: '<path d="M-2.8,-4 L4,0 L-2.8,4 Z" stroke="none"/>',
    NodeState.COMPLETED: '<path d="M-4,0.2 L-1.3,3 L4,-3.4" fill="none" stroke-width="1.9"/>',
    NodeState.CACHED: (
        '<path d="M3.6,-1.2 A3.8,3.8 0 1 0 3.2,2.2" fill="none" stroke-width="1.5"/>'
        '<path d="M4.6,-4.4 L4.2,-0.4 L0.6,-1.6 Z" stroke="none"/>'
    ),
    NodeState.FAILED: (
        '<path d="M-3.4,-3.4 L3.4,3.4 M3.4,-3.4 L-3.4,3.4" fill="none" stroke-width="1.9"/>'
    ),
    NodeState.SKIPPED: (
        '<path d="M-4,-3.5 L-0.6,0 L-4,3.5 M0.4,-3.5 L3.8,0 L0.4,3.5" fill="none" '
        'stroke-width="1.5"/>'
    ),
    NodeState.STALE: (
        '<path d="M0,-4.2 L0,1.2" fill="none" stroke-width="2"/>'
        '<circle cy="3.4" r="1.1" stroke="none"/>'
    ),
}
#: gate state -> its icon, drawn instead of the step state's.
GATE_ICONS: dict[GateLook, str] = {
    GateLook.OPEN: (
        '<path d="M-3.4,-4.2 L3.4,-4.2 L-3.4,4.2 L3.4,4.2 Z" fill="none" stroke-width="1.4"/>'
    ),
    GateLook.APPROVED: (
        '<circle r="4.4" fill="none" stroke-width="1.2"/>'
        '<path d="M-2.3,0.1 L-0.6,1.9 L2.5,-1.7" fill="none" stroke-width="1.6"/>'
    ),
    GateLook.REJECTED: (
        '<circle r="4.4" fill="none" stroke-width="1.4"/>'
        '<path d="M-3.1,3.1 L3.1,-3.1" fill="none" stroke-width="1.4"/>'
    ),
}
GATE_DASH = "6 2.5"  # an open gate's border
# A running node pulses (SMIL needs no stylesheet, and works in every notebook front-end).
_PULSE = (
    '<animate attributeName="stroke-opacity" values="1;0.25;1" dur="1.2s" '
    'repeatCount="indefinite"/>'
)


def render_svg(
    spec: DagSpec, infos: Mapping[str, NodeInfo] | None = None, selected: str = ""
) -> str:
    """The SVG of ``spec`` with each step drawn in its state (absent: never run)."""
    return draw(layout(spec), infos or {}, selected, gates=spec.gates)


def icon(state: NodeState, x: float, y: float, gate: GateLook | None = None) -> str:
    """``state``'s icon (a decided or open gate's, when given) centered on (x, y)."""
    color = GATE_PALETTE[gate][1] if gate else PALETTE[state][1]
    shape = GATE_ICONS[gate] if gate else ICONS[state]
    return (
        f'<g class="icon" transform="translate({x:.1f},{y:.1f})" fill="{color}" '
        f'stroke="{color}" stroke-linecap="round" stroke-linejoin="round">{shape}</g>'
    )


def draw(
    placed: Layout,
    infos: Mapping[str, NodeInfo],
    selected: str = "",
    folded: Mapping[str, str] | None = None,
    *,
    live: bool = True,
    gates: Collection[str] = (),
) -> str:
    """Draw a layout: edges first, then one group per node.

    ``folded`` maps the nodes that stand for a folded group of steps to the group's key;
    they are drawn with ``class="node group"`` and ``data-group`` instead of ``data-step``.
    ``live``: the states are those of now (not of a past version): running nodes pulse,
    and their caption carries the time they have run so far (``data-elapsed``, in ms,
    which the front end advances between redraws).
    ``gates`` names the human gates (hexagons, ``class="node gate gate-<state>"``).
    """
    folded = folded or {}
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
            f'<path d="{edge.path}"/><polygon class="arrow" points="{edge.arrow}" '
            f'fill="{EDGE_COLOR}" stroke="none"/></g>'
        )
    out.append("</g>")
    for name, box in placed.nodes.items():
        info = infos.get(name) or NodeInfo()
        out.append(_node(name, box, info, name == selected, folded.get(name), live, name in gates))
    out.append("</svg>")
    return "".join(out)


def _node(
    name: str,
    box: Box,
    info: NodeInfo,
    is_selected: bool,
    group: str | None,
    live: bool,
    is_gate: bool,
) -> str:
    look = GateLook(info.gate) if is_gate and info.gate else None
    fill, stroke = GATE_PALETTE[look] if look else PALETTE[info.state]
    kind = "node group" if group is not None else "node"
    if is_gate:
        kind += f" gate gate-{look.value if look else 'unreached'}"
    classes = f"{kind} state-{info.state.value}" + (" selected" if is_selected else "")
    ident = (
        f"data-group={quoteattr(group)}" if group is not None else f"data-step={quoteattr(name)}"
    )
    left, top = box.x - box.width / 2, box.y - box.height / 2
    dash = GATE_DASH if look is GateLook.OPEN else DASH.get(info.state)
    heavy = info.state is NodeState.FAILED or look in (GateLook.OPEN, GateLook.REJECTED)
    paint = (
        f'fill="{fill}" stroke="{SELECTED_COLOR if is_selected else stroke}" '
        f'stroke-width="{3 if is_selected else 2.2 if heavy else 1.5}"'
        + (f' stroke-dasharray="{dash}"' if dash and not is_selected else "")
    )
    tag = "polygon" if is_gate else "rect"
    if is_gate:
        shape = f'<polygon class="shape" points="{_hexagon(box, 0)}" {paint}'
    else:
        shape = (
            f'<rect class="shape" x="{left:.1f}" y="{top:.1f}" width="{box.width:.1f}" '
            f'height="{box.height:.1f}" rx="{12 if group is not None else 6}" {paint}'
        )
    shape += f">{_PULSE}</{tag}>" if live and info.state is NodeState.RUNNING else "/>"
    caption, ticking = escape(info.caption), ""
    elapsed = running_ms(info) if live else None
    if elapsed is not None:
        caption = f"{caption} · {format_duration(elapsed)}"
        ticking = f' data-elapsed="{elapsed:.0f}" data-word={quoteattr(info.caption)}'
    # A folded group gets a second border inside, like a stack of cards; an approved gate
    # a double border.
    inner = ""
    if group is not None:
        inner = (
            f'<rect class="inner" x="{left + 3:.1f}" y="{top + 3:.1f}" '
            f'width="{box.width - 6:.1f}" height="{box.height - 6:.1f}" rx="9" fill="none" '
            f'stroke="{stroke}" stroke-width="0.8"/>'
        )
    elif look is GateLook.APPROVED:
        inner = (
            f'<polygon class="inner" points="{_hexagon(box, 3.5)}" fill="none" '
            f'stroke="{stroke}" stroke-width="1"/>'
        )
    text_x = box.x + ICON_ROOM / 2
    return (
        f'<g class="{classes}" {ident} data-state="{info.state.value}" '
        + (f'data-gate="{look.value if look else "unreached"}" ' if is_gate else "")
        + f'data-box="{box.x:.1f} {box.y:.1f} {box.width:.1f} {box.height:.1f}" '
        f'cursor="pointer"><title>{escape(name)}: {escape(info.tooltip)}</title>{shape}{inner}'
        + icon(info.state, left + 6 + ICON_ROOM / 2, box.y, look)
        + f'<text class="name" x="{text_x:.1f}" y="{box.y - 3:.1f}" text-anchor="middle" '
        f'font-size="{NAME_FONT:g}" font-weight="600" fill="#111827">{escape(name)}</text>'
        f'<text class="caption{" ticking" if ticking else ""}" x="{text_x:.1f}" '
        f'y="{box.y + 12:.1f}" text-anchor="middle" '
        f'font-size="{CAPTION_FONT:g}" fill="#374151"{ticking}>{caption}</text></g>'
    )


def _hexagon(box: Box, inset: float) -> str:
    """The points of a gate's hexagon filling ``box`` (shrunk by ``inset``)."""
    w, h = box.width / 2 - inset, box.height / 2 - inset
    cut = min(9.0, h)
    points = [
        (box.x - w + cut, box.y - h),
        (box.x + w - cut, box.y - h),
        (box.x + w, box.y),
        (box.x + w - cut, box.y + h),
        (box.x - w + cut, box.y + h),
        (box.x - w, box.y),
    ]
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _empty() -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="nbflow-dag-svg" width="220" '
        f'height="40" font-family="{FONT}"><text class="empty" x="10" y="24" font-size="12" '
        'fill="#6b7280">'
        "no steps yet: add one with @flow.step</text></svg>"
    )
