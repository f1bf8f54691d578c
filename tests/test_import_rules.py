"""ARCHITECTURE.md §2 as a test: walk every module's imports and check who may import whom."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "domain", "projections", "workers")
STDLIB = frozenset(sys.stdlib_module_names)

Allowed = Callable[[str], bool]


def _top(module: str) -> str:
    return module.partition(".")[0]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports(source: str, filename: str) -> Iterator[tuple[int, str]]:
    """(line, dotted module) for every import anywhere in the source, relative ones made absolute.

    `from x import y` yields `x.y` (y may be a module or a name; prefix rules treat both the same).
    """
    package = list(Path(filename).parts[:-1])  # for a.py and for __init__.py alike: the folder
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"


def _domain_context(module: str) -> bool:
    return _top(module) in STDLIB or _top(module) in {"eventsourcing", "msgspec"} or _within(module, "domain")


def _domain_shared(module: str) -> bool:
    return _top(module) in STDLIB or _top(module) == "msgspec" or _within(module, "domain.shared")


def _app(module: str) -> bool:
    return not _within(module, "workers")


def _projections(module: str) -> bool:
    if _within(module, "litestar"):
        return False
    return not _within(module, "workers") or _within(module, "workers.broker")


def _workers(module: str) -> bool:
    return not _within(module, "litestar")


RULES: list[tuple[str, str, Allowed]] = [
    # (folder prefix, rule as written in ARCHITECTURE.md, predicate); the most specific folder wins.
    ("domain/shared/", "domain/shared imports only stdlib, msgspec and domain.shared", _domain_shared),
    ("domain/", "domain imports only stdlib, eventsourcing, msgspec and domain.*", _domain_context),
    ("app/", "app never imports workers", _app),
    ("projections/", "projections imports neither litestar nor workers actors (only workers.broker)", _projections),
    ("workers/", "workers never imports litestar", _workers),
]


def violations(source: str, filename: str) -> list[str]:
    """`filename` is relative to the repository root, with forward slashes (e.g. "domain/machines/rules.py")."""
    rule = next(((text, allowed) for prefix, text, allowed in RULES if filename.startswith(prefix)), None)
    if rule is None:
        return []
    text, allowed = rule
    return [f"{filename}:{line}: imports {module!r}; {text}"
            for line, module in imports(source, filename) if not allowed(module)]


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_package_is_walked() -> None:
    files = [p.relative_to(ROOT).as_posix() for p in source_files()]
    for package in PACKAGES:
        assert any(f.startswith(package + "/") for f in files), f"no modules found under {package}/"
    assert any(f.startswith("domain/shared/") for f in files)


@pytest.mark.parametrize("package", PACKAGES)
def test_import_rules(package: str) -> None:
    found: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        found += violations(path.read_text(encoding="utf-8"), relative)
    assert not found, "import rule violations (ARCHITECTURE.md §2):\n" + "\n".join(found)


# --- the checker itself: a synthetic bad module must be caught, or the rules above prove nothing -----

BAD_DOMAIN = """\
import uuid
import msgspec
from eventsourcing.domain import Aggregate
from domain.shared.errors import DomainError
import litestar
from app.store import mapper
def later():
    import asyncpg.pool
from ..shared import ids
from .. import projections_helper
"""


def test_checker_catches_a_bad_domain_module() -> None:
    found = violations(BAD_DOMAIN, "domain/machines/bad.py")
    assert [v.split(": imports ")[0] for v in found] == [
        "domain/machines/bad.py:5", "domain/machines/bad.py:6", "domain/machines/bad.py:8",
    ], found
    assert "'litestar'" in found[0] and "'app.store.mapper'" in found[1] and "'asyncpg.pool'" in found[2]


def test_checker_resolves_relative_imports() -> None:
    assert list(imports("from ..shared import ids\nfrom . import rules\n", "domain/machines/aggregate.py")) == [
        (1, "domain.shared.ids"), (2, "domain.machines.rules"),
    ]
    assert list(imports("from .errors import X\n", "domain/shared/__init__.py")) == [(1, "domain.shared.errors.X")]
    found = violations("from ...app import settings\n", "domain/shared/x.py")
    assert found and "'app.settings'" in found[0], found


def test_checker_holds_domain_shared_to_the_stricter_rule() -> None:
    source = "import eventsourcing\nfrom domain.machines import rules\nimport msgspec\nfrom domain.shared import ids\n"
    assert [v.split(": ")[0] for v in violations(source, "domain/shared/bad.py")] == [
        "domain/shared/bad.py:1", "domain/shared/bad.py:2",
    ]
    assert violations(source, "domain/machines/ok.py") == []


@pytest.mark.parametrize(("filename", "source", "bad"), [
    ("app/api/bad.py", "from workers import machines\n", True),
    ("app/api/bad.py", "import workers.broker\n", True),
    ("app/api/ok.py", "import litestar\nimport asyncpg\nfrom projections import machines_reader\n", False),
    ("projections/bad.py", "from litestar import get\n", True),
    ("projections/bad.py", "import workers.machines\n", True),
    ("projections/bad.py", "from workers import machines\n", True),
    ("projections/bad.py", "import workers\n", True),
    ("projections/ok.py", "from workers import broker\nfrom workers.broker import get_broker\n", False),
    ("projections/ok.py", "import workers.broker\nfrom app.store import mapper\n", False),
    ("workers/bad.py", "import litestar.status_codes\n", True),
    ("workers/ok.py", "from app.services import machines\nfrom projections import machines_reader\n", False),
])
def test_checker_rules_per_folder(filename: str, source: str, bad: bool) -> None:
    assert bool(violations(source, filename)) is bad, violations(source, filename)


# --- file-level import cycles: a module pair (or longer loop) importing each other, lazily or not ---------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(files: dict[str, str]) -> dict[str, set[str]]:
    """module -> project modules it imports anywhere (function bodies and TYPE_CHECKING blocks included).

    `files` maps module names to sources; `from pkg import name` counts as importing pkg.name when that
    is a module, else pkg itself.
    """
    graph: dict[str, set[str]] = {}
    for module, source in files.items():
        filename = module.replace(".", "/") + ".py"
        targets: set[str] = set()
        for _, imported in imports(source, filename):
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != module:
                targets.add(imported)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_file_level_import_cycles() -> None:
    files = {_module_name(p): p.read_text(encoding="utf-8") for p in source_files()}
    found = cycles(import_graph(files))
    assert not found, "import cycles (untie them: move the shared piece into a module both import):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def test_cycle_checker_finds_lazy_and_type_checking_cycles() -> None:
    files = {
        "app.a": "def f():\n    from app.b import g\n",
        "app.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app import a\n",
        "app.c": "from app.a import f\n",
        "app.d": "from app.e import x\n",
        "app.e": "from app.f import y\n",
        "app.f": "import app.d\n",
    }
    assert cycles(import_graph(files)) == [["app.a", "app.b"], ["app.d", "app.e", "app.f"]]
    assert cycles(import_graph({"app.a": "import app.b\n", "app.b": "import json\n"})) == []
