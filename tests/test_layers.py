"""The package's layers: every import points inward, no module imports in a cycle.

Each module belongs to one layer, by the folder it sits in; a module may import its own layer
and the layers inside it, never one outside. The pure core and the views import no I/O library,
and only the web layer imports `aiohttp.web`. Imports under `if TYPE_CHECKING:` count too: a
type that has to come from an outer layer is a sign the code sits in the wrong place.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "redirector"

# Innermost first. Top-level modules not named here are the runtime spine.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("core",)),
    ("config", ("config",)),
    ("store", ("store",)),
    ("spine", ("geo", "snapshot", "stats", "router", "reload", "supervise")),
    ("poll", ("poll",)),
    ("views", ("views",)),
    ("web", ("web",)),
    ("cli", ("cli",)),
)
# Libraries a layer may not import at all (first dotted component, or the whole name).
IO_LIBRARIES = frozenset({"aiohttp", "redis", "prometheus_client", "maxminddb", "geoip2"})
FORBIDDEN: dict[str, frozenset[str]] = {
    "core": IO_LIBRARIES
    | {"yarl", "cachetools", "pathlib", "os", "shutil", "tempfile", "socket", "asyncio"},
    "views": IO_LIBRARIES,
}
WEB_ONLY = "aiohttp.web"


@dataclass(frozen=True, slots=True)
class Violation:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """The rank of `module`'s layer (0 innermost); None for the package itself."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for rank, (_, names) in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    raise AssertionError(f"{module} is in no layer: name its folder or module in LAYERS")


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """Every module `path` imports (absolute names), with the line, TYPE_CHECKING ones too."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            # `from redirector.web import keys` imports the module redirector.web.keys
            found.extend((f"{base}.{a.name}", node.lineno) for a in node.names)
    return found


def check(root: Path) -> list[Violation]:
    """Every upward import, forbidden library and import cycle in the package at `root`."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    bad: list[Violation] = []
    for module, path in files.items():
        rank = layer_of(module)
        layer = LAYERS[rank][0] if rank is not None else None
        for name, line in imports_of(path, module):
            top = name.split(".")[0]
            if layer in FORBIDDEN and (top in FORBIDDEN[layer] or name in FORBIDDEN[layer]):
                bad.append(Violation(module, line, f"the {layer} layer imports {name}"))
            if (name == WEB_ONLY or name.startswith(WEB_ONLY + ".")) and layer != "web":
                bad.append(Violation(module, line, f"only the web layer imports {WEB_ONLY}"))
            if name not in files or name == module:
                continue
            graph[module].add(name)
            target = layer_of(name)
            if rank is not None and target is not None and target > rank:
                bad.append(
                    Violation(
                        module, line, f"imports {name} of the outer {LAYERS[target][0]} layer"
                    )
                )
    bad = list({(v.module, v.line): v for v in bad}.values())  # one finding per import line
    bad.extend(Violation(c[0], 0, "import cycle: " + " -> ".join(c)) for c in cycles(graph))
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of two or more modules (Tarjan's algorithm).

    A package's `__init__` importing its own submodules is not a cycle of concern.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w.startswith(v + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_package_is_layered() -> None:
    assert [str(v) for v in check(PACKAGE)] == []


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path, PACKAGE))  # raises for a module in no layer


@pytest.mark.parametrize(
    ("module", "planted", "expected"),
    [
        ("core/models.py", "from redirector.web import keys\n", "outer web layer"),
        ("store/base.py", "from redirector.poll import probe\n", "outer poll layer"),
        ("core/paths.py", "import aiohttp\n", "the core layer imports aiohttp"),
        ("views/status.py", "from aiohttp import web\n", "only the web layer"),
        ("core/paths.py", "from pathlib import Path\n", "the core layer imports pathlib"),
    ],
)
def test_a_planted_bad_import_is_caught(
    tmp_path: Path, module: str, planted: str, expected: str
) -> None:
    root = tmp_path / "redirector"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / module
    target.write_text(target.read_text("utf-8") + "\n" + planted, "utf-8")
    # An upward import usually closes a cycle too; the finding that names the line comes first.
    found = [str(v) for v in check(root) if v.line]
    assert len(found) == 1
    assert expected in found[0]


def test_a_planted_cycle_is_caught(tmp_path: Path) -> None:
    root = tmp_path / "redirector"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    # Same layer, so only the cycle is wrong: paths -> models -> paths.
    models = root / "core" / "models.py"
    models.write_text(models.read_text("utf-8") + "\nfrom redirector.core import paths\n")
    paths = root / "core" / "paths.py"
    paths.write_text(paths.read_text("utf-8") + "\nfrom redirector.core import models\n")
    found = [str(v) for v in check(root)]
    assert found == [
        "redirector.core.models:0: import cycle: redirector.core.models -> redirector.core.paths"
    ]
