"""The suite's own layout: test modules share helpers through helper modules (seed.py,
fakes.py, issuer_calls.py, ...) and fixtures through conftest.py, never by importing each other,
so running or deleting one test file never changes another."""

from __future__ import annotations

import ast

from tests.harness import REPO_ROOT


def imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_file_imports_a_test_module_or_conftest():
    offenders = {}
    for path in sorted(REPO_ROOT.rglob("*.py")):
        if ".venv" in path.parts or "node_modules" in path.parts:
            continue
        modules = imported_modules(ast.parse(path.read_text(), str(path)))
        bad = {
            m
            for m in modules
            if m.split(".")[-1] == "conftest" or m.split(".")[-1].startswith("test_")
        }
        if bad:
            offenders[str(path.relative_to(REPO_ROOT))] = sorted(bad)
    assert offenders == {}
