"""The README stays true: its ```python blocks run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nbflow as nf

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks() -> None:
    assert len(python_blocks()) >= 2


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBFLOW_STORE", str(tmp_path / "readme.duckdb"))
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for number, block in enumerate(python_blocks(), 1):
            code = compile(block, f"README.md python block {number}", "exec")
            exec(code, namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, nf.JSONLSink):
                nf.remove_sink(value)
        nf.flush_sinks(5)
