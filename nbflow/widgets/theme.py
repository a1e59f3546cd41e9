"""Colors of the DAG in JupyterLab's light and dark themes, as one stylesheet.

The SVG carries the light colors as presentation attributes (so a static page, an
exported HTML file or GitHub's preview shows them); in a notebook front end the rules
made here override them, and switch to the dark palette when the page says its theme is
dark: JupyterLab, Notebook 7 and Voila set ``data-jp-theme-light="false"`` on the body,
VS Code sets the class ``vscode-dark``. Everything that is not a state color (text,
edges, the view's background, the minimap) uses JupyterLab's CSS variables, with the
light values as fallbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from nbflow.widgets.states import PALETTE, NodeState

#: The selectors of a page in a dark theme.
DARK = ('body[data-jp-theme-light="false"]', "body.vscode-dark")

#: state -> (fill, stroke) on a dark background: dark fills keep the light labels readable.
DARK_PALETTE: dict[NodeState, tuple[str, str]] = {
    NodeState.NEVER_RUN: ("#1f2937", "#9ca3af"),
    NodeState.QUEUED: ("#312e81", "#a5b4fc"),
    NodeState.RUNNING: ("#1e3a8a", "#60a5fa"),
    NodeState.COMPLETED: ("#14532d", "#4ade80"),
    NodeState.CACHED: ("#134e4a", "#2dd4bf"),
    NodeState.FAILED: ("#7f1d1d", "#f87171"),
    NodeState.SKIPPED: ("#3f3f46", "#a1a1aa"),
    NodeState.STALE: ("#78350f", "#fbbf24"),
}


class GateLook(StrEnum):
    """How a gate step is drawn, beside its step state: waiting for a person, or decided."""

    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"


#: gate state -> (fill, stroke) in the light theme, and in the dark one.
GATE_PALETTE: dict[GateLook, tuple[str, str]] = {
    GateLook.OPEN: ("#fef3c7", "#b45309"),
    GateLook.APPROVED: ("#dcfce7", "#15803d"),
    GateLook.REJECTED: ("#fee2e2", "#b91c1c"),
}
GATE_DARK_PALETTE: dict[GateLook, tuple[str, str]] = {
    GateLook.OPEN: ("#451a03", "#fbbf24"),
    GateLook.APPROVED: ("#052e16", "#4ade80"),
    GateLook.REJECTED: ("#450a0a", "#f87171"),
}

#: run or step status -> the look of its badge (widgets.css has the light ones).
BADGES: dict[str, NodeState | GateLook] = {
    "completed": NodeState.COMPLETED,
    "cached": NodeState.CACHED,
    "running": NodeState.RUNNING,
    "failed": NodeState.FAILED,
    "skipped": NodeState.SKIPPED,
    "waiting": GateLook.OPEN,
    "stale": NodeState.STALE,
    "cancelled": NodeState.STALE,
    "interrupted": NodeState.STALE,
}

#: Custom properties of the light theme (JupyterLab's variables, where it has one).
LIGHT_VARS = {
    "--nbflow-node-text": "#111827",
    "--nbflow-node-caption": "#374151",
    "--nbflow-edge": "var(--jp-ui-font-color2, #6b7280)",
    "--nbflow-selected": "var(--jp-ui-font-color0, #111827)",
    "--nbflow-trace": "#1d4ed8",
    "--nbflow-error": "var(--jp-error-color1, #b91c1c)",
    "--nbflow-ok": "var(--jp-success-color1, #15803d)",
    "--nbflow-selected-row": "var(--jp-brand-color1, #1976d2)",  # a selected table row
    "--nbflow-selected-text": "#ffffff",
}
#: ... and of the dark theme: JupyterLab's dark error and success colors are too dark to
#: read as text on its dark background, so their lighter shades are used.
DARK_VARS = {
    "--nbflow-node-text": "#f3f4f6",
    "--nbflow-node-caption": "#d1d5db",
    "--nbflow-edge": "var(--jp-ui-font-color2, #9ca3af)",
    "--nbflow-selected": "var(--jp-ui-font-color0, #ffffff)",
    "--nbflow-trace": "#93c5fd",
    "--nbflow-error": "var(--jp-error-color2, #fca5a5)",
    "--nbflow-ok": "var(--jp-success-color2, #86efac)",
    # the dark theme's brand-color1 is a lighter blue, too light under white text
    "--nbflow-selected-row": "var(--jp-brand-color0, #1976d2)",
    "--nbflow-selected-text": "#ffffff",
}


def _dark(selector: str) -> str:
    return ",\n".join(f"{page} {part.strip()}" for page in DARK for part in selector.split(","))


def _colors(wrap: Callable[[str], str], cls: str, fill: str, stroke: str) -> str:
    shape = wrap(f".nbflow-dag .{cls} > .shape")
    icon = wrap(f".nbflow-dag .{cls} > g.icon")
    return (
        f"{shape} {{ fill: {fill}; stroke: {stroke}; }}\n"
        f"{icon} {{ fill: {stroke}; stroke: {stroke}; }}\n"
    )


def theme_css() -> str:
    """The stylesheet of the DAG's colors in both themes (appended to widgets.css)."""
    out = ["body {\n" + "".join(f"  {k}: {v};\n" for k, v in LIGHT_VARS.items()) + "}\n"]
    out.append(", ".join(DARK) + " {\n")
    out.append("".join(f"  {k}: {v};\n" for k, v in DARK_VARS.items()) + "}\n")
    for palette, wrap in ((PALETTE, str), (DARK_PALETTE, _dark)):
        for state, (fill, stroke) in palette.items():
            out.append(_colors(wrap, f"state-{state.value}", fill, stroke))
    # Gates after states (same specificity plus one class): a gate's look wins.
    for gates, wrap in ((GATE_PALETTE, str), (GATE_DARK_PALETTE, _dark)):
        for look, (fill, stroke) in gates.items():
            out.append(_colors(wrap, f"gate.gate-{look.value}", fill, stroke))
    # Status badges (runs table, run header): dark chips with light text in a dark theme.
    badge = _dark(".nbflow-badge")
    out.append(f"{badge} {{ background: #374151; border-color: #9ca3af; color: #f3f4f6; }}\n")
    for status, shown in BADGES.items():
        fill, stroke = (
            GATE_DARK_PALETTE[shown] if isinstance(shown, GateLook) else DARK_PALETTE[shown]
        )
        chip = _dark(f".nbflow-badge.status-{status}")
        out.append(f"{chip} {{ background: {fill}; border-color: {stroke}; }}\n")
    # The selected node's border last, and more specific than any state's or gate's.
    selected = ".nbflow-dag g.node.selected.node > .shape"
    out.append(f"{selected},\n{_dark(selected)} {{ stroke: var(--nbflow-selected); }}\n")
    return "".join(out)
