"""The docs stay true about their tests: every test file, test and conformance class that
docs/*.md names as showing a guarantee exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nbflow.testing

DOCS = Path(__file__).resolve().parent.parent / "docs"
TESTS = Path(__file__).resolve().parent
FILE = re.compile(r"(?:tests/)?(test_\w+\.py)(?:::(\w+))?")
CONFORMANCE = re.compile(r"`(\w+Conformance)`")


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_the_tests_a_page_names_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for match in FILE.finditer(text):
        name, test = match.groups()
        path = TESTS / name
        assert path.exists(), f"{page.name} names {name}, which tests/ lacks"
        if test:
            source = path.read_text(encoding="utf-8")
            assert re.search(rf"^def {test}\b", source, re.MULTILINE), (
                f"{page.name} names {name}::{test}, which {name} does not define"
            )


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_the_conformance_suites_a_page_names_exist(page: Path) -> None:
    import nbflow.testing.conformance as suite

    for name in CONFORMANCE.findall(page.read_text(encoding="utf-8")):
        assert hasattr(suite, name) or hasattr(nbflow.testing, name), (
            f"{page.name} names {name}, which nbflow.testing lacks"
        )
