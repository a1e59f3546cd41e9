"""Helpers of the real-browser tests: the JupyterLab server, Run All, screenshots."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    root: Path
    log: Path

    def api(self, path: str) -> Any:
        """GET a JSON endpoint of the server's REST API."""
        with urllib.request.urlopen(f"{self.url}{path}?token={self.token}", timeout=30) as r:
            return json.load(r)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_settings(settings: Path) -> None:
    """No news toast over the notebook; every cell rendered (no windowing)."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for name, content in files.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


def open_and_run_all(lab: Lab, context: Any, notebook: str, timeout_s: float = 120) -> Any:
    """Open ``notebook`` in JupyterLab, wait until its kernel is ready, run every cell.

    A "Run All" issued before the kernel session exists is silently dropped, so this waits
    for a connected, idle kernel and for the status bar to say ``Idle`` first.
    """
    page = context.new_page()
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}&reset")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            kernels = lab.api("/api/kernels")
        except urllib.error.HTTPError as e:
            # A busy server answers 500 while the notebook's kernel is still being started.
            if e.code < 500:
                raise
            kernels = []
        if any(k["connections"] >= 1 and k["execution_state"] == "idle" for k in kernels):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no idle kernel with a connection: {kernels}")
        time.sleep(0.25)
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
                 .some(e => /\\| Idle$/.test(e.textContent.trim()))""",
        timeout=timeout_s * 1000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    return page


def wait_for_idle_kernel(lab: Lab, timeout_s: float = 120) -> None:
    """Wait until a kernel has a connection and is idle (a front end is attached)."""
    deadline = time.monotonic() + timeout_s
    while True:
        kernels = lab.api("/api/kernels")
        if any(k["connections"] >= 1 and k["execution_state"] == "idle" for k in kernels):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no idle kernel with a connection: {kernels}")
        time.sleep(0.25)


def open_in_notebook7_and_run_all(
    lab: Lab, context: Any, notebook: str, timeout_s: float = 120
) -> Any:
    """Open ``notebook`` in Notebook 7 (``/notebooks/...``), wait until its kernel is
    ready, run every cell."""
    page = context.new_page()
    page.goto(f"{lab.url}/notebooks/{notebook}?token={lab.token}")
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_s * 1000)
    wait_for_idle_kernel(lab, timeout_s)
    page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   return !!(w && w.sessionContext && w.sessionContext.session?.kernel
                             && w.sessionContext.kernelDisplayStatus === 'idle'); }""",
        timeout=timeout_s * 1000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    return page


def save_screenshot(page: Any, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """``failure.png`` in the test's temp dir on failure; always to $NBFLOW_SCREENSHOTS."""
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
    folder = os.environ.get("NBFLOW_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{request.node.name}.png"), full_page=True)


#: JavaScript: ``(selector) => {ratio, fg, bg}``, the WCAG 2 contrast ratio of the first
#: element matching ``selector``: its text color (an SVG element's ``fill``) against the
#: background it is drawn on (the nearest ancestor with one, or, for SVG text, the fill of
#: the ``.shape`` beside it), from the computed styles.
CONTRAST = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const parse = (c) => {
    const m = (c || '').match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const [r, g, b, a] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [r, g, b, a === undefined ? 1 : a];
  };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const over = (top, below) => top.slice(0, 3).map((v, i) => v * top[3] + below[i] * (1 - top[3]));
  const background = (node) => {
    const layers = [];
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let color = [255, 255, 255];
    for (const layer of layers.reverse()) color = over(layer, color);
    return color;
  };
  const isSvg = el instanceof SVGElement;
  const fg = parse(isSvg ? getComputedStyle(el).fill : getComputedStyle(el).color);
  let bg;
  if (isSvg && el.closest('g.node')) {
    bg = parse(getComputedStyle(el.closest('g.node').querySelector('.shape')).fill).slice(0, 3);
  } else {
    bg = background(isSvg ? el.closest('svg').parentElement : el);
  }
  const color = fg[3] < 1 ? over(fg, bg) : fg.slice(0, 3);
  const [hi, lo] = [lum(color), lum(bg)].sort((a, b) => b - a);
  return {ratio: (hi + 0.05) / (lo + 0.05), fg: color, bg};
}"""


def set_theme(page: Any, theme: str, timeout_ms: float = 90_000) -> None:
    """Switch JupyterLab to ``theme`` ('JupyterLab Dark' or 'JupyterLab Light') and wait
    until the page says it is in force."""
    light = "false" if "Dark" in theme else "true"
    page.evaluate(
        "(theme) => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme
    )
    page.wait_for_function(
        "(light) => document.body.dataset.jpThemeLight === light", arg=light, timeout=timeout_ms
    )


def docs_image(page: Any, selector: str, name: str) -> None:
    """Save an element's screenshot into $NBFLOW_DOCS_IMAGES (docs/images), when set."""
    folder = os.environ.get("NBFLOW_DOCS_IMAGES")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.locator(selector).scroll_into_view_if_needed()
        page.locator(selector).screenshot(path=str(Path(folder) / name))
