"""Suggested replies and self-service answers in the pipeline
(``bridge.service.suggest`` over the tenant's knowledge base and its
operators' past replies).

- Each client message an operator will answer gets the top suggestions as
  a note on the client's contact (where the operator reads the
  conversation), remembered on the session.
- The operator's reply is matched against them: accepted or rejected, and
  the tenant's record of each suggestion (``TenantService.suggestions``)
  ranks the next ones; the reply joins the past replies.
- Where the line's bot may answer (``bot: always``, or ``out_of_hours``
  while the line is closed) and the knowledge base's self-service entry
  matches with confidence, the client gets its answer at once; a note
  tells the owner the client was served automatically.

One matcher per tenant and process, rebuilt when the knowledge base file
changes, behind a lock (the matcher is not thread-safe). Nothing here logs
a message's text.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.service import engine
from bridge.service.calendar import is_open
from bridge.service.knowledge import KnowledgeBase
from bridge.service.suggest import Prior, Suggester, Suggestion
from bridge.tables import Message, ServiceSession, TenantService

if TYPE_CHECKING:
    import datetime as dt

    from mappings.service import Line, ServicePolicy

__all__ = ["Assist", "for_tenant"]

#: the operators' past replies a new matcher starts with
PAST_REPLIES = 300


@dataclass
class _Cached:
    source: tuple[str, float] | None
    suggester: Suggester
    lock: threading.Lock


_CACHE: dict[int, _Cached] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Assist:
    """The tenant's matcher, for one transaction."""

    tenant_id: int
    policy: ServicePolicy
    cached: _Cached

    def on_client_message(
        self,
        line: Line,
        *,
        key: str,
        text: str,
        language: str | None,
        crm_language: str,
        now: dt.datetime,
    ) -> tuple[list[engine.Say], list[engine.Work], list[dict[str, Any]] | None]:
        """A client message an operator will answer: the bot's answer where
        it may give one, else the suggestions for the operator (as a note,
        in the CRM's language; the suggestions in the client's) and what to
        remember of them on the session."""
        says: list[engine.Say] = []
        works: list[engine.Work] = []
        with self.cached.lock:
            bot = line.bot == "always" or (
                line.bot == "out_of_hours" and not is_open(line.hours, now)
            )
            sure = self.cached.suggester.confident(text, language) if bot else None
            settings = self.policy.suggestions
            shown = (
                self.cached.suggester.suggest(text, language, k=settings.count)
                if sure is None and settings.enabled
                else []
            )
        if sure is not None:
            says.append(engine.Say("answer", sure.text))
            note = _words(crm_language, "self").format(id=sure.id)
            works.append(engine.Work("note", f"self:{key}", note))
            return says, works, None
        if not shown:
            return says, works, None
        lines = [f"{n}. {s.text}" for n, s in enumerate(shown, 1)]
        head = _words(crm_language, "suggested")
        works.append(engine.Work("note", f"suggest:{key}", "\n".join([head, *lines])))
        return says, works, [dataclasses.asdict(s) for s in shown]

    def on_operator_reply(self, session: Session, row: ServiceSession | None, text: str) -> None:
        """The operator answered: the suggestions shown before are accepted
        or rejected; the reply joins the past replies."""
        shown = [Suggestion(**s) for s in (row.suggested or [])] if row is not None else []
        accepted = False
        with self.cached.lock:
            if shown:
                accepted = self.cached.suggester.record(shown, text).accepted is not None
            self.cached.suggester.add_reply(text)
            prior = self.cached.suggester.prior.to_dict()
        if row is not None:
            row.suggested = None
            if shown:
                row.suggestions_answered = (row.suggestions_answered or 0) + 1
                row.suggestions_accepted = (row.suggestions_accepted or 0) + int(accepted)
        if shown:
            state = session.get(TenantService, self.tenant_id, with_for_update=True)
            if state is None:
                session.add(TenantService(tenant_id=self.tenant_id, routing={}, suggestions=prior))
            else:
                state.suggestions = prior


def for_tenant(
    session: Session,
    tenant_id: int,
    policy: ServicePolicy,
    knowledge: KnowledgeBase | None,
    kb_path: Path | None,
) -> Assist | None:
    """The tenant's matcher (None: no knowledge base and no suggestions)."""
    if knowledge is None and not policy.suggestions.enabled:
        return None
    source = _source(kb_path)
    with _CACHE_LOCK:
        cached = _CACHE.get(tenant_id)
        if cached is None or cached.source != source:
            cached = _CACHE[tenant_id] = _Cached(
                source, _build(session, tenant_id, knowledge), threading.Lock()
            )
    return Assist(tenant_id, policy, cached)


def _source(path: Path | None) -> tuple[str, float] | None:
    if path is None:
        return None
    try:
        return str(path), path.stat().st_mtime
    except OSError:
        return str(path), 0.0


def _build(session: Session, tenant_id: int, knowledge: KnowledgeBase | None) -> Suggester:
    rows = session.execute(
        select(Message.text, Message.payload)
        .where(Message.tenant_id == tenant_id, Message.direction == outbox.OUT)
        .order_by(Message.id.desc())
        .limit(PAST_REPLIES)
    ).all()
    replies = [
        (str(text), None)
        for text, payload in rows
        if text and not (payload or {}).get("auto") and (payload or {}).get("author_id")
    ]
    state = session.get(TenantService, tenant_id)
    prior = Prior.from_dict(state.suggestions) if state is not None and state.suggestions else None
    return Suggester(knowledge, reversed(replies), prior=prior)


def forget(tenant_id: int | None = None) -> None:
    """Drop the cached matchers (a test's fresh start)."""
    with _CACHE_LOCK:
        if tenant_id is None:
            _CACHE.clear()
        else:
            _CACHE.pop(tenant_id, None)


def _words(language: str | None, key: str) -> str:
    lang = "ru" if (language or "").lower().startswith("ru") else "en"
    return _TEXTS[lang][key]


_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "suggested": "Suggested replies:",
        "self": "Answered automatically from the knowledge base ({id}); no operator was needed.",
    },
    "ru": {
        "suggested": "Подсказки для ответа:",
        "self": "Клиенту ответил бот по базе знаний ({id}); оператор не понадобился.",
    },
}
