"""The console's words in English and Russian.

Each page module registers its words at import time (``register``; keys
prefixed by the page: ``"users.title"``) and renders them with ``t`` (also
in every console template). The language of a request: ``?lang=ru|en``
(remembered in the session), else what the session remembers, else the
signed-in user's, else the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import g, has_request_context, request, session

__all__ = ["LANGUAGES", "language", "register", "t"]

LANGUAGES = ("en", "ru")
_WORDS: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}


def register(en: Mapping[str, str], ru: Mapping[str, str]) -> None:
    """Add words in both languages (the same keys in each: a page is never
    half translated)."""
    if set(en) != set(ru):
        missing = sorted(set(en) ^ set(ru))
        raise ValueError(f"console words without both languages: {', '.join(missing)}")
    _WORDS["en"].update(en)
    _WORDS["ru"].update(ru)


def language() -> str:
    """The current request's language (``en`` outside a request)."""
    if not has_request_context():
        return "en"
    chosen: str | None = g.get("console_lang")
    if chosen is not None:
        return chosen
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        session["lang"] = asked
        chosen = asked
    elif session.get("lang") in LANGUAGES:
        chosen = str(session["lang"])
    else:
        user = g.get("console_user")
        if user is not None and user.language in LANGUAGES:
            chosen = str(user.language)
        else:
            chosen = request.accept_languages.best_match(LANGUAGES) or "en"
    g.console_lang = chosen
    return chosen


def t(key: str, **kw: Any) -> str:
    """``key``'s words in the current language (English when it has none
    there, the key itself when it has none at all), ``{name}`` fields
    filled from ``kw``."""
    lang = language()
    text = _WORDS[lang].get(key) or _WORDS["en"].get(key) or key
    return text.format(**kw) if kw else text
