"""The commerce domain stays sans-I/O: no module under signalling/domain imports I/O or clocks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import signalling.domain

FORBIDDEN = {"asyncio", "socket", "time", "uvloop", "sqlite3", "redis", "threading"}
DOMAIN = Path(signalling.domain.__file__).parent
MODULES = sorted(DOMAIN.glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_modules_exist() -> None:
    names = {p.stem for p in MODULES}
    assert {"catalog", "sale", "orders", "clock", "ratelimit", "cart"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_io_imports(path: Path) -> None:
    assert not imported_roots(path) & FORBIDDEN
