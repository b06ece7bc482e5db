"""The core is provider-neutral: adding a channel or a CRM is one new package
plus its sandbox and tests, and nothing in ``bridge/`` changes. So no code in
``bridge/`` names a provider (in an identifier or a string — comments and
docstrings may give one as an example), imports a provider's package, or
imports the sandbox."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import channel_adapters
import crm_adapters
from bridge.registry import channel_class, channel_kinds, crm_class, crm_kinds

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"
FILES = sorted(p for p in BRIDGE.rglob("*.py") if "migrations" not in p.parts)


def _provider_words() -> set[str]:
    words = set(channel_adapters.REGISTRY) | set(crm_adapters.REGISTRY)
    words |= {channel_class(k).title.lower() for k in channel_kinds()}
    words |= {crm_class(k).title.lower() for k in crm_kinds()}
    return words


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _code_words(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every identifier and non-docstring string in ``tree``."""
    skip = _docstrings(tree)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            out.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            out.append((node.lineno, node.arg))
        elif isinstance(node, ast.keyword) and node.arg:
            out.append((node.value.lineno, node.arg))
    return out


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
    return out


def test_the_walk_sees_the_core() -> None:
    assert len(FILES) > 30 and _provider_words() >= {"telegram", "hubspot"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(BRIDGE)))
def test_no_provider_name_in_core_code(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    words = _provider_words()
    found = [
        f"{path.name}:{line}: {text!r}"
        for line, text in _code_words(tree)
        if any(word in text.lower() for word in words)
    ]
    assert found == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(BRIDGE)))
def test_the_core_imports_no_provider_and_no_sandbox(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    providers = {
        *(spec.split(":")[0] for spec in channel_adapters.REGISTRY.values()),
        *(spec.split(":")[0] for spec in crm_adapters.REGISTRY.values()),
    }
    bad = [
        f"{path.name}:{line}: import {module}"
        for line, module in _imports(tree)
        if module == "sandbox"
        or module.startswith("sandbox.")
        or any(module == p or module.startswith(f"{p}.") for p in providers)
    ]
    assert bad == []
