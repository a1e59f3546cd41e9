"""JupyterLab + Playwright + Debian's Chromium, for the widgets' real-browser tests.

One JupyterLab server per session, on 127.0.0.1 with a token, every Jupyter directory in
a temporary folder, and ``$NBFLOW_STORE`` pointing into it (nothing is written to the
repository). Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright; never
``playwright install``. A failing test leaves ``failure.png`` in its temporary directory
(and every test leaves a screenshot in ``$NBFLOW_SCREENSHOTS`` when that is set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import CHROMIUM, CHROMIUM_FLAGS, Lab, free_port, write_settings

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A JupyterLab server whose root holds copies of the example notebooks."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's Chromium is not installed ({CHROMIUM}): apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(notebook, root / notebook.name)
    env = dict(os.environ)
    for name in (
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_RUNTIME_DIR",
        "JUPYTER_DATA_DIR",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
        "IPYTHONDIR",
    ):
        folder = base / name.lower()
        folder.mkdir()
        env[name] = str(folder)
    write_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    env["NBFLOW_STORE"] = str(base / "store.duckdb")
    port, token = free_port(), "nbflow-test-token"
    log = base / "jupyter.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--expose-app-in-browser",
        # Notebook 7 (served by the same server, at /notebooks/...) shows its app too.
        "--JupyterNotebookApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                lab.api("/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start:\n{log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.25)
        yield lab
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def chromium(lab: Lab) -> Iterator[Any]:
    """A Playwright browser context on Debian's Chromium, with its own profile folder."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="nbflow-chromium-") as d:
        context = p.chromium.launch_persistent_context(
            d,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can see a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
