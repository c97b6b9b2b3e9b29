"""Lint is part of the test command: ``ruff check`` and ``ruff format --check`` over the tree.

The rule set (pycodestyle, pyflakes, import order, bugbear, pyupgrade, ruff's own) and the line
length live in pyproject.toml; ruff is pinned in the test extra, so CI and a fresh clone run the
same version.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["app.py", "searchcore", "tests", "benchmarks", "assets"]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail(
            "ruff is not installed: `pip install -e '.[test]'` (bash .ci/bootstrap test does)"
        )
    return [found]


def test_ruff_check_is_clean() -> None:
    r = subprocess.run(
        [*_ruff(), "check", "--output-format", "concise", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_format_is_clean() -> None:
    r = subprocess.run(
        [*_ruff(), "format", "--check", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _imports() -> dict[str, list[tuple[str, str]]]:
    """Each searchcore module -> the (module, name) pairs it imports from searchcore, lazy
    imports inside functions included."""
    import ast

    modules = {}
    for path in (ROOT / "searchcore").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    found: dict[str, list[tuple[str, str]]] = {}
    for name, path in modules.items():
        pairs = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("searchcore"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    pairs.append((sub if sub in modules else node.module, alias.name))
            elif isinstance(node, ast.Import):
                pairs += [(a.name, "") for a in node.names if a.name in modules]
        found[name] = [(m, n) for m, n in pairs if m in modules]
    return found


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _ in pairs if t != m} for m, pairs in _imports().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target] if target in path else [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_private_names_imported_across_modules() -> None:
    crossing = [
        f"{m} imports {t}.{n}"
        for m, pairs in _imports().items()
        for t, n in pairs
        if n.startswith("_") and not n.startswith("__") and t != m
    ]
    assert crossing == []


def test_modules_stay_small() -> None:
    """One concern a module: none over 500 lines, and app.py (the page's layout) at most 250."""
    sizes = {
        p: len(p.read_text(encoding="utf-8").splitlines())
        for p in (ROOT / "searchcore").rglob("*.py")
    }
    big = {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > 500}
    assert big == {}
    assert len((ROOT / "app.py").read_text(encoding="utf-8").splitlines()) <= 250


def test_the_core_imports_none_of_its_edges() -> None:
    """cli, web and training import the core; the core imports none of them."""
    edges = ("searchcore.cli", "searchcore.web", "searchcore.training")
    inward = [
        f"{m} imports {t}"
        for m, pairs in _imports().items()
        if not m.startswith(edges) and m != "searchcore.__main__"
        for t, _ in pairs
        if t.startswith(edges)
    ]
    assert inward == []
