"""What the core writes itself into a CRM entry, in the mapping's language:
a message the customer deleted, a reaction to an earlier message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.model import MessageKind
from bridge.tables import Message

__all__ = ["entry_text"]

_WORDS = {
    "en": {
        "revoked": "(deleted by the client)",
        "reacted": "reacted {emoji} to: «{quoted}»",
        "unreacted": "took back a reaction to: «{quoted}»",
        "unknown": "an earlier message",
    },
    "ru": {
        "revoked": "(удалено клиентом)",
        "reacted": "реакция {emoji} на: «{quoted}»",
        "unreacted": "убрал реакцию на: «{quoted}»",
        "unknown": "более раннее сообщение",
    },
}
#: how much of the message reacted to is quoted
_QUOTE = 80
#: how far back the message reacted to is looked for
_LOOK_BACK = 200


def entry_text(
    session: Session,
    conversation_id: int,
    kind: str,
    text: str,
    payload: Mapping[str, Any],
    language: str,
) -> str:
    """The text of the CRM entry for a stored inbound message."""
    words = _WORDS.get(language, _WORDS["en"])
    if payload.get("revoked"):
        return words["revoked"]
    if kind != MessageKind.REACTION:
        return text
    quoted = _quoted(session, conversation_id, payload.get("reply_to")) or words["unknown"]
    if not text:
        return words["unreacted"].format(quoted=quoted)
    return words["reacted"].format(emoji=text, quoted=quoted)


def _quoted(session: Session, conversation_id: int, provider_id: Any) -> str | None:
    """The start of the conversation's message the channel calls
    ``provider_id``: a customer's (its provider id) or a reply of ours (an
    id the channel gave it)."""
    if not provider_id:
        return None
    rows = session.execute(
        select(Message.direction, Message.text, Message.payload, Message.channel_message_ids)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.seq.desc())
        .limit(_LOOK_BACK)
    ).all()
    for direction, text, payload, sent_ids in rows:
        if (payload or {}).get("is_edit"):
            continue  # an edit or a deletion of it names the same id
        ours = direction == outbox.OUT and provider_id in (sent_ids or ())
        theirs = (
            direction == outbox.IN and (payload or {}).get("provider_message_id") == provider_id
        )
        if ours or theirs:
            flat = " ".join(str(text or "").split())
            return flat if len(flat) <= _QUOTE else flat[: _QUOTE - 1] + "…"
    return None
