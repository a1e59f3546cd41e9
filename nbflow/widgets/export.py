"""The checkpoint browser without widgets: its summary and its standalone HTML page.

What the browser shows, read from the widgets it holds: the page of runs in the runs
table and the selected run's DAG (drawing and steps) at the version shown.
"""

from __future__ import annotations

from html import escape
from typing import Any

from nbflow.widgets.summary import html_table, section, text_table

# (The browser is typed ``Any`` here: nbflow.widgets.browser imports this module.)
Browser = Any


def _title(browser: Browser) -> str:
    return f"nbflow checkpoints · {browser.store.uri or repr(browser.store)}"


def _runs(browser: Browser) -> tuple[list[str], list[list[str]]]:
    return list(browser.runs.columns), [list(r["cells"]) for r in browser.runs.rows]


def browser_text(browser: Browser) -> str:
    """The browser as text: its runs, then the selected run's steps."""
    columns, rows = _runs(browser)
    lines = [_title(browser), f"Runs ({browser.runs.page_text}):"]
    lines.append(text_table(columns, rows) if rows else "  (no runs)")
    if browser.run is not None:
        lines += ["", browser.dag.summary_text()]
    return "\n".join(lines)


def browser_html(browser: Browser, *, drawing: bool = True) -> str:
    """The browser as static HTML: the runs table, the selected run's DAG and steps."""
    columns, rows = _runs(browser)
    parts = [f"<h3>{escape(_title(browser))}</h3>"]
    caption = f"{browser.runs.caption} ({browser.runs.page_text})"
    parts.append(f"<div>{escape(caption)}</div>")
    parts.append(
        html_table(columns, rows, status_column=browser.runs.status_column)
        if rows
        else "<div>(no runs)</div>"
    )
    body = section(parts)
    if browser.run is not None:
        body += browser.dag.summary_html(drawing=drawing)
    return body
