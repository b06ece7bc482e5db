"""The core is provider-neutral: adding a channel or a CRM is one new package
plus its sandbox and tests, and nothing in ``bridge/`` changes. So no code in
``bridge/`` names a provider (in an identifier or a string — comments and
docstrings may give one as an example), imports a provider's package, or
imports the sandbox."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import channel_adapters
import crm_adapters
from bridge.registry import channel_class, channel_kinds, crm_class, crm_kinds

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"
FILES = sorted(p for p in BRIDGE.rglob("*.py") if "migrations" not in p.parts)


def _provider_words() -> set[str]:
    words = set(channel_adapters.REGISTRY) | set(crm_adapters.REGISTRY)
    titles = [channel_class(k).title for k in channel_kinds()]
    titles += [crm_class(k).title for k in crm_kinds()]
    # a title of several words ("Custom channel") is named by its first one
    words |= {title.lower().split()[0] for title in titles}
    for name, own in NOTIONS.items():
        if name in words:
            words = (words - {name}) | own
    return words


#: providers whose name is also a notion of the core, found instead by the
#: words only they use: the core knows e-mail addresses (contact
#: identities, owners, sender profiles); IMAP, SMTP and raw RFC 822 mail
#: are the e-mail channel's. ``max`` is the core's maximum (``max()``,
#: ``MAX_CONTENT_LENGTH``); the MAX messenger's own words are its bot API's
NOTIONS = {
    "email": {"imap", "smtp", "rfc822"},
    "e-mail": set(),
    "max": {"max_bot", "maxbot", "max-bot", "platform-api", "oneme"},
    # the web chat ("Web chat"): the core's web is its webhooks and web
    # process; the channel's own words are its widget's
    "web": {"webchat", "widget"},
}


#: provider names that are ordinary words (the custom channel's ``custom``):
#: matched as a whole word of an identifier or a string (``custom``,
#: ``custom_channel``, ``CustomAdapter``), not inside another word
#: (``customer``), and not where the word is the CRMs' own notion (a CRM's
#: custom properties or fields, which the core asks every CRM for)
ORDINARY_WORDS = {"custom"}
GENERIC_USES = {("custom", "properties"), ("custom", "property"), ("custom", "fields")}


def _words_of(text: str) -> list[str]:
    """``CustomAdapter``/``custom_channel``/``custom channel`` -> lower-case words."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text)
    return re.findall(r"[a-z0-9]+", spaced.lower())


def _names_a_provider(text: str, words: set[str]) -> bool:
    lowered = text.lower()
    if any(word in lowered for word in words - ORDINARY_WORDS):
        return True
    parts = _words_of(text)
    return any(
        part in ORDINARY_WORDS and tuple(parts[i : i + 2]) not in GENERIC_USES
        for i, part in enumerate(parts)
    )


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
    assert len(FILES) > 30 and _provider_words() >= {"telegram", "hubspot", "custom"}
    assert _provider_words() >= {"imap", "smtp"} and "email" not in _provider_words()


def test_an_ordinary_word_is_matched_as_a_word() -> None:
    words = _provider_words()
    named = ["custom", "kind == 'custom'", "CustomAdapter", "custom_channel", "/webhooks/custom/x"]
    assert all(_names_a_provider(text, words) for text in named)
    assert all(_names_a_provider(text, words) for text in ["HubSpotAdapter", "is_telegram"])
    generic = ["customer", "inbound (customer -> CRM)", "custom_properties", "Custom fields"]
    assert not any(_names_a_provider(text, words) for text in generic)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(BRIDGE)))
def test_no_provider_name_in_core_code(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    words = _provider_words()
    found = [
        f"{path.name}:{line}: {text!r}"
        for line, text in _code_words(tree)
        if _names_a_provider(text, words)
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
