"""The project's import graph: no circle, and the layering DESIGN.md and docs/design.md
describe (proxy/, archive/, accounts/ and web/ take nothing from admin/ but the config
model and the path rules; a package's `__main__`, a command-line entry point, may use
the CLI).

Read from the source with `ast` (nothing is imported), counting every import: at module
level, inside functions and under `if TYPE_CHECKING:` alike, because a lazy import is
still a dependency and a circle through one is still a circle. An import of a submodule
through its own package (`from proxy.pop3 import replies` inside proxy/pop3/) is not an
edge to the package's `__init__`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("proxy", "archive", "admin", "accounts", "web")
#: what the library packages may take from admin/
ADMIN_ALLOWED = {"admin", "admin.config", "admin.paths"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
                targets = targets or [mod]
            else:
                continue
            for target in targets:
                while target and target not in mods:  # `import a.b.c` of a class or name
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                if name.startswith(target + "."):  # a module's own ancestor package
                    continue
                edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]], nodes: list[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle() -> None:
    mods = _modules()
    assert _cycles(_edges(mods), sorted(mods)) == []


def test_libraries_take_only_the_config_model_from_admin() -> None:
    mods = _modules()
    bad = sorted(
        f"{src} -> {dst}"
        for src, dsts in _edges(mods).items()
        if not src.startswith("admin") and not src.endswith(".__main__")  # entry points
        for dst in dsts
        if dst.startswith("admin") and dst not in ADMIN_ALLOWED
    )
    assert bad == []


def test_the_checker_sees_circles_and_layering() -> None:
    """The two checks above can fail: a made-up graph with a circle is found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges, ["a", "b", "c", "d"]) == [["a", "b", "c"]]
    real = _edges(_modules())
    assert "proxy.actions" in real["proxy.session"]  # the reader finds real imports
    assert "archive.ingest" in real["proxy.ingest_task"]  # ... inside functions too
