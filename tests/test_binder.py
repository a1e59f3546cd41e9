"""Binder's files install nbflow and Graphviz, so the notebooks run there."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_binder_installs_the_package_and_graphviz():
    requirements = (ROOT / "binder" / "requirements.txt").read_text().split()
    assert "-e" in requirements and "." in requirements
    assert "graphviz" in (ROOT / "binder" / "apt.txt").read_text().split()
    assert (ROOT / "binder" / "runtime.txt").read_text().strip().startswith("python-3.1")


def test_every_notebook_is_in_the_notebooks_folder_binder_opens():
    # A set: every notebook the README promises is there (others may be added beside them).
    assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} >= {
        "cells.ipynb",
        "quickstart.ipynb",
    }
