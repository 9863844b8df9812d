"""The tests' shared helpers stay shared: one clock class, one way to build the GeoIP database.

Copies drift (a clock that starts elsewhere, networks that place a client differently), so a
test module that needs one takes it from tests/support/ (or conftest's fixtures) instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

TESTS = ROOT / "tests"
SUPPORT = TESTS / "support"
# test_geo checks the readers on every schema the builder writes, so it drives it directly.
BUILDER_USERS = {SUPPORT / "world.py", TESTS / "test_geo.py"}


def modules() -> list[tuple[Path, ast.Module]]:
    out = []
    for path in sorted(TESTS.rglob("*.py")):
        out.append((path, ast.parse(path.read_text(), str(path))))
    return out


def test_one_clock_class() -> None:
    copies = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
        for path, tree in modules()
        if SUPPORT not in path.parents
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name.endswith("Clock")
    ]
    assert copies == [], "use tests.support.clock.Clock (or the `clock` fixture)"


def test_one_geoip_builder() -> None:
    direct = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, tree in modules()
        if path not in BUILDER_USERS
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module == "tests.mmdb_build"
        and any(alias.name.startswith("write_") for alias in node.names)
    ]
    assert direct == [], "use tests.support.world.city_db (or the `geo` fixture)"
