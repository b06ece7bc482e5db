"""A channel's reply window (``ChannelAdapter.reply_window``): whether a
free-form reply may go now, and what goes instead when it may not.

WhatsApp allows free-form messages only within 24 hours of the customer's
last message (corpora FACTS §2, error 131047 "Re-engagement message");
after that, only a pre-approved template. The window is counted from the
last message the customer sent in the conversation (the business's own
echoes do not count), by the provider's own time of it. Outside it the
mapping's ``window_template`` is sent instead, its parameters rendered
from the reply (``{message.text}``) and the conversation; without one the
reply is refused with a reason the rep reads in the CRM.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import select

from bridge import outbox
from bridge.model import OutboundMessage, TemplateSend, utcnow
from bridge.rows import aware
from bridge.tables import Contact, Conversation, Message, Tenant
from bridge.templates import render

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["ReplyWindow"]

#: how many of the newest inbound messages are read to find the customer's
#: last one (the rest are the business's echoes)
_LOOK_BACK = 50

_REASON = {
    "en": (
        "Not sent: {channel}'s reply window is closed ({hours} h after the client's last "
        "message, {last}). Ask the client to write first, or name an approved template in "
        "the mapping (window_template) to send instead."
    ),
    "ru": (
        "Не отправлено: окно ответа {channel} закрыто ({hours} ч после последнего сообщения "
        "клиента, {last}). Попросите клиента написать первым или укажите одобренный шаблон "
        "в маппинге (window_template)."
    ),
}
_NEVER = {"en": "never", "ru": "не писал"}


class ReplyWindow:
    """One conversation's reply window, read when a reply is about to go."""

    def __init__(
        self,
        runtime: Runtime,
        tenant: Tenant,
        conversation: Conversation,
        kind: str,
        length: dt.timedelta,
    ) -> None:
        self.rt = runtime
        self.tenant = tenant
        self.conversation = conversation
        self.kind = kind
        self.length = length
        self._last: tuple[dt.datetime | None] | None = None

    def closed(self) -> bool:
        """True when the customer's last message is older than the window."""
        last = self.last_from_customer()
        return last is None or utcnow() - last > self.length

    def instead(self, outbound: OutboundMessage) -> OutboundMessage | None:
        """The reply as the mapping's template, or None when it names none."""
        mapping = self.rt.mapping_for(self.tenant)
        rule = mapping.rule(self.kind)
        spec = rule.window_template if rule else None
        if spec is None:
            return None
        context = self._context(outbound.text)
        parameters = tuple(render(p, context) for p in spec.parameters)
        return replace(outbound, template=TemplateSend(spec.name, spec.language, parameters))

    def reason(self) -> str:
        """Why the reply was not sent, in the mapping's language."""
        from bridge.registry import channel_class

        language = self.rt.mapping_for(self.tenant).language
        words = _REASON.get(language, _REASON["en"])
        when = self.last_from_customer()
        last = when.strftime("%Y-%m-%d %H:%M UTC") if when else _NEVER.get(language, _NEVER["en"])
        return words.format(
            channel=channel_class(self.kind).title,
            hours=int(self.length.total_seconds() // 3600),
            last=last,
        )

    def last_from_customer(self) -> dt.datetime | None:
        """The customer's last message time (read once per reply; the
        business's own echoes do not count)."""
        if self._last is None:
            self._last = (self._read_last(),)
        return self._last[0]

    def _read_last(self) -> dt.datetime | None:
        with self.rt.read_session() as session:
            rows = session.execute(
                select(Message.sent_at, Message.payload)
                .where(
                    Message.conversation_id == self.conversation.id,
                    Message.direction == outbox.IN,
                )
                .order_by(Message.seq.desc())
                .limit(_LOOK_BACK)
            ).all()
        return max(
            (aware(sent_at) for sent_at, payload in rows if not (payload or {}).get("echo")),
            default=None,
        )

    def _context(self, text: str) -> dict[str, str | None]:
        from bridge.registry import channel_class

        mapping = self.rt.mapping_for(self.tenant)
        with self.rt.read_session() as session:
            contact = session.get(Contact, self.conversation.contact_id)
        return {
            "message.text": text,
            "contact.name": contact.display_name if contact else None,
            "contact.phone": contact.phone if contact else None,
            "contact.email": contact.email if contact else None,
            "channel.kind": self.kind,
            "channel.title": channel_class(self.kind).title,
            "conversation.uid": self.conversation.uid,
            "conversation.ticket": mapping.ticket(self.conversation.ticket_number),
        }
