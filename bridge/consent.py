"""Whether a customer lets the business write to them on a channel.

Some channels let the customer withdraw the business's right to write:
VK's ``message_deny`` (allowed again by ``message_allow``), a messenger
bot stopped or unsubscribed from. The adapter says so on the event
(``InboundMessage.consent``: True allowed, False withdrawn); the core
records the latest word on the conversation (its channel account and the
customer on it) and shows it in the CRM as the event's own entry.

A reply to a customer who withdrew consent is refused before anything is
sent, with the reason the rep reads in the CRM — whatever the provider
would have done (some reject such a send, some may drop it silently). A
channel where the customer's own message makes them reachable again
(``ChannelAdapter.consent_by_writing``) counts a message newer than the
withdrawal as consent.

Events can arrive out of order (a redelivery, a shuffled burst): the word
with the latest provider time wins.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from bridge.rows import aware
from bridge.tables import Conversation

__all__ = ["ALLOWED", "WITHDRAWN", "record", "refusal"]

ALLOWED = "allowed"
WITHDRAWN = "withdrawn"

_REASON = {
    "en": (
        "Not sent: the client no longer allows messages from you on {channel} (since {when}). "
        "The reply can go once they write again or allow messages."
    ),
    "ru": (
        "Не отправлено: клиент запретил сообщения от вас в {channel} (с {when}). "
        "Ответ можно будет отправить, когда клиент напишет снова или разрешит сообщения."
    ),
}


def record(session: Session, conversation_id: int, allowed: bool, at: dt.datetime) -> None:
    """The customer's word on consent at ``at`` (the provider's time), kept
    unless a later word is stored already."""
    session.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            or_(Conversation.consent_at.is_(None), Conversation.consent_at <= at),
        )
        .values(consent=ALLOWED if allowed else WITHDRAWN, consent_at=at)
    )


def refusal(
    conversation: Conversation,
    title: str,
    language: str,
    last_message: dt.datetime | None,
) -> str | None:
    """Why a reply may not go to this conversation's customer, or None.

    ``last_message`` is the customer's last message time when the channel
    counts writing as consent (else None)."""
    if conversation.consent != WITHDRAWN or conversation.consent_at is None:
        return None
    since = aware(conversation.consent_at)
    if last_message is not None and last_message > since:
        return None
    words = _REASON.get(language, _REASON["en"])
    return words.format(channel=title, when=since.strftime("%Y-%m-%d %H:%M UTC"))
