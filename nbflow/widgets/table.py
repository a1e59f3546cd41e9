"""A table widget: one page of rows synced to the front end, the data kept in Python.

Used for the runs table, a run's events and its lineage tree. Clicking a row sets
``selected`` to the row's key; the pager sets ``page``, and the owner loads that page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anywidget
import traitlets

from nbflow.widgets.dag import CSS, HERE


@dataclass(frozen=True)
class Row:
    """One table row: a key (e.g. the run id), its cells, and how to show it."""

    key: str
    cells: Sequence[str]
    status: str = ""
    depth: int = 0  # indentation, for trees
    dim: bool = False
    link: str = ""  # a run id the row's last cell names: clicking it follows the link

    def to_json(self) -> dict[str, Any]:
        """The row as the front end reads it."""
        return {
            "key": self.key,
            "cells": [str(c) for c in self.cells],
            "status": self.status,
            "depth": self.depth,
            "dim": self.dim,
            "link": self.link,
        }


class Table(anywidget.AnyWidget):
    """A page of rows; ``selected`` is the clicked row's key, ``page`` the page shown."""

    _esm = HERE / "table.js"
    _css = CSS

    columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    selectable = traitlets.Bool(True).tag(sync=True)
    status_column = traitlets.Int(-1).tag(sync=True)  # cells in it are shown as badges
    caption = traitlets.Unicode("").tag(sync=True)
    empty_text = traitlets.Unicode("nothing yet").tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    pages = traitlets.Int(1).tag(sync=True)
    page_text = traitlets.Unicode("").tag(sync=True)
    #: The pager's buttons: to page 0's side, and away from it (runs: newest first).
    pager_labels = traitlets.List(traitlets.Unicode(), ["\u2039 newer", "older \u203a"]).tag(
        sync=True
    )

    def set_rows(
        self, rows: Sequence[Row], *, total: int | None = None, page_size: int = 0
    ) -> None:
        """Show ``rows`` (the current page); ``total`` rows in all, for the pager."""
        total = len(rows) if total is None else total
        pages = max(1, -(-total // page_size)) if page_size else 1
        first = self.page * page_size + 1 if rows else 0
        last = first + len(rows) - 1 if rows else 0
        with self.hold_sync():
            self.pages = pages
            self.rows = [r.to_json() for r in rows]
            self.page_text = f"{first:,}-{last:,} of {total:,}" if rows else f"0 of {total:,}"

    def on_link(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` when a row's link is clicked."""

        def handle(_: Any, content: Any, buffers: Any) -> None:
            if isinstance(content, dict) and content.get("event") == "link":
                link = content.get("link")
                if isinstance(link, str) and link:
                    callback(link)

        self.on_msg(handle)

    @property
    def row_keys(self) -> list[str]:
        """The keys of the rows shown."""
        return [r["key"] for r in self.rows]
