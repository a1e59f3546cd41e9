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
