"""A tenant's knowledge base: questions and answers in English and Russian,
loaded from a YAML file (the mapping names its path).

The file::

    entries:
      - id: delivery-time            # unique, letters/digits/-/_
        self_service: true           # optional: may be answered to the client
        questions:                   # at least one language, one question each
          en: [How long does delivery take?]
          ru: [Сколько идёт доставка?]
        answer:                      # one per language that has questions
          en: 1-2 days in Moscow, 3-7 days elsewhere.
          ru: По Москве 1–2 дня, в другие города 3–7 дней.
        keywords:                    # optional, per language: words or phrases
          en: [delivery time]        # that boost the entry when a message
          ru: [сроки доставки]       # holds them

Every problem found is a :class:`KnowledgeError` naming the file, the key
(``entries[3].answer.ru``) and the fix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from bridge.errors import ConfigError

__all__ = ["LANGUAGES", "Entry", "KnowledgeBase", "KnowledgeError", "load", "parse"]

#: the languages a knowledge base may hold (the matcher has a stemmer for each)
LANGUAGES = ("en", "ru")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ENTRY_KEYS = frozenset({"id", "questions", "answer", "keywords", "self_service"})


class KnowledgeError(ConfigError):
    """A knowledge-base file that cannot be used; ``str()`` names the file,
    the key and the fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}. Fix: {fix}", file=file, key=key or "(top level)")


@dataclass(frozen=True)
class Entry:
    """One question-and-answer entry."""

    id: str
    #: language -> the questions clients ask in it
    questions: Mapping[str, tuple[str, ...]]
    #: language -> the answer (a language with questions always has one)
    answer: Mapping[str, str]
    #: language -> words or phrases that boost the entry
    keywords: Mapping[str, tuple[str, ...]]
    #: may be sent to the client without an operator
    self_service: bool = False

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the entry answers in, in :data:`LANGUAGES` order."""
        return tuple(lang for lang in LANGUAGES if lang in self.answer)


@dataclass(frozen=True)
class KnowledgeBase:
    """The entries of one file, in its order."""

    entries: tuple[Entry, ...]
    #: where it was read from (for messages)
    source: str = "<memory>"

    def get(self, entry_id: str) -> Entry | None:
        """The entry with that id, or None."""
        return next((e for e in self.entries if e.id == entry_id), None)


def load(path: str | Path) -> KnowledgeBase:
    """Read and check a knowledge-base file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KnowledgeError(
            file, "", f"cannot be read ({exc.strerror})", "check the path in the mapping"
        ) from None
    try:
        # the C loader where PyYAML has it (about 30 times faster, the same
        # error positions), the pure one otherwise
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise KnowledgeError(
            file,
            "",
            f"is not valid YAML{where}",
            "quote texts that hold ': ', '#', '?' or start with a bracket",
        ) from None
    return parse(data, file)


def parse(data: Any, source: str = "<memory>") -> KnowledgeBase:
    """Check already-parsed YAML (``load`` without the file)."""
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise KnowledgeError(
            source, "entries", "missing or not a list", "put the entries in a list under 'entries:'"
        )
    if not data["entries"]:
        raise KnowledgeError(source, "entries", "is empty", "add at least one entry")
    entries: list[Entry] = []
    first_at: dict[str, int] = {}
    for i, raw in enumerate(data["entries"]):
        entry = _entry(raw, source, f"entries[{i}]")
        if entry.id in first_at:
            raise KnowledgeError(
                source,
                f"entries[{i}].id",
                f"duplicate id {entry.id!r} (entries[{first_at[entry.id]}] has it)",
                "give every entry its own id",
            )
        first_at[entry.id] = i
        entries.append(entry)
    return KnowledgeBase(tuple(entries), source)


def _entry(raw: Any, file: str, key: str) -> Entry:
    if not isinstance(raw, dict):
        raise KnowledgeError(file, key, "is not a mapping", "write id, questions and answer keys")
    unknown = sorted(str(k) for k in raw if k not in _ENTRY_KEYS)
    if unknown:
        raise KnowledgeError(
            file,
            f"{key}.{unknown[0]}",
            "unknown key",
            f"use only {', '.join(sorted(_ENTRY_KEYS))}",
        )
    entry_id = raw.get("id")
    if not isinstance(entry_id, str) or not _ID.match(entry_id):
        raise KnowledgeError(
            file,
            f"{key}.id",
            "missing or not a plain id",
            "give a unique id of letters, digits, '-', '_' or '.' (delivery-time)",
        )
    questions = _texts_by_language(raw.get("questions"), file, f"{key}.questions", required=True)
    answer = _answers(raw.get("answer"), file, f"{key}.answer", questions)
    keywords = _texts_by_language(raw.get("keywords"), file, f"{key}.keywords", required=False)
    self_service = raw.get("self_service", False)
    if not isinstance(self_service, bool):
        raise KnowledgeError(
            file, f"{key}.self_service", "is not true or false", "write true or false"
        )
    return Entry(
        id=entry_id,
        questions=MappingProxyType(questions),
        answer=MappingProxyType(answer),
        keywords=MappingProxyType(keywords),
        self_service=self_service,
    )


def _languages_of(raw: Any, file: str, key: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise KnowledgeError(
            file, key, "is not a mapping of languages", f"write {' and/or '.join(LANGUAGES)} keys"
        )
    for lang in raw:
        if lang not in LANGUAGES:
            raise KnowledgeError(
                file, f"{key}.{lang}", "unknown language", f"use {' or '.join(LANGUAGES)}"
            )
    return dict(raw)


def _texts_by_language(
    raw: Any, file: str, key: str, *, required: bool
) -> dict[str, tuple[str, ...]]:
    if raw is None and not required:
        return {}
    if raw is None:
        raise KnowledgeError(
            file, key, "missing", "add questions for at least one language (en: [...])"
        )
    by_lang = _languages_of(raw, file, key)
    if required and not by_lang:
        raise KnowledgeError(file, key, "is empty", "add questions for at least one language")
    out: dict[str, tuple[str, ...]] = {}
    for lang in LANGUAGES:
        if lang not in by_lang:
            continue
        texts = by_lang[lang]
        if not isinstance(texts, list) or not texts:
            raise KnowledgeError(
                file, f"{key}.{lang}", "empty or not a list", "write a list of one or more texts"
            )
        for j, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise KnowledgeError(
                    file, f"{key}.{lang}[{j}]", "empty or not text", "write the text or remove it"
                )
        out[lang] = tuple(t.strip() for t in texts)
    return out


def _answers(
    raw: Any, file: str, key: str, questions: Mapping[str, tuple[str, ...]]
) -> dict[str, str]:
    if raw is None:
        raise KnowledgeError(
            file, key, "missing", "add the answer for each language that has questions"
        )
    by_lang = _languages_of(raw, file, key)
    out: dict[str, str] = {}
    for lang in LANGUAGES:
        text = by_lang.get(lang)
        if text is None:
            if lang in questions:
                raise KnowledgeError(
                    file,
                    f"{key}.{lang}",
                    f"missing: the entry has {lang} questions",
                    f"add the {lang} answer or remove the {lang} questions",
                )
            continue
        if not isinstance(text, str) or not text.strip():
            raise KnowledgeError(
                file, f"{key}.{lang}", "empty or not text", "write the answer as text"
            )
        out[lang] = text.strip()
    return out
