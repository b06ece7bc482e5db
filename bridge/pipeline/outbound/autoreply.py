"""The acknowledgement of a new ticket: the message the bridge itself sends
the customer once a conversation that opens a ticket is first synced (the
support desk's "we have your request T-1042"), in the customer's language,
through the ordinary outbound pipeline (an outbound message marked
``auto``, which the channel marks automatic: e-mail's RFC 3834
``Auto-Submitted: auto-replied``).

Once per ticket: the conversation's channel state records it in the same
transaction that stores the message, and the message's dedupe key
(``ack:<conversation uid>``) is unique. At most
``per_sender_per_hour`` per contact: a loop with another auto-responder
(each of its answers a new ticket) ends there. Automatic mail, bounces,
lists and our own echoes never open a conversation, so they are never
acknowledged.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.model import MessageKind, utcnow
from bridge.pipeline.outbound.accept import take_seq
from bridge.tables import ChannelAccount, Contact, Conversation, Message, MessageStatus, Tenant
from bridge.templates import render

if TYPE_CHECKING:
    from bridge.runtime import Runtime
    from mappings.schema import AcknowledgeRule, MappingConfig

__all__ = ["AUTO", "Plan", "plan"]

log = logging.getLogger(__name__)

#: the ``auto`` mark of the message (``OutboundMessage.auto``)
AUTO = "acknowledgement"
#: the dedupe key prefix of acknowledgements (unique per account and direction)
_KEY = "ack:"


@dataclass(frozen=True)
class Plan:
    """What a tenant's mapping says of one channel's acknowledgements, read
    once before the transaction that stores them."""

    rule: AcknowledgeRule
    language: str
    mapping: MappingConfig
    title: str

    def __call__(self, session: Session, conversation_id: int) -> str | None:
        """Store the conversation's acknowledgement in ``session`` (the
        transaction that opened the ticket: exactly once with it); the job
        id to enqueue after the commit, or None."""
        return _store(session, conversation_id, self)


def plan(runtime: Runtime, tenant_id: int, kind: str) -> Plan | None:
    """The acknowledgement plan of a tenant's channel, None when its mapping
    asks for none (or cannot be read: the sync job says why)."""
    with runtime.read_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            return None
        try:
            mapping = runtime.mapping_for(tenant)
        except Exception:  # noqa: BLE001 — a broken mapping parks the sync, with its reason
            return None
    rule = mapping.rule(kind)
    if rule is None or rule.acknowledge is None:
        return None
    from bridge.registry import channel_class

    return Plan(rule.acknowledge, mapping.language, mapping, channel_class(kind).title)


def _store(session: Session, conversation_id: int, planned: Plan) -> str | None:
    conv = session.get(Conversation, conversation_id)
    if conv is None or conv.ticket_number is None:
        return None
    state = dict(conv.channel_state or {})
    if state.get("acknowledged"):
        return None
    contact = session.get(Contact, conv.contact_id)
    account = session.get(ChannelAccount, conv.channel_account_id)
    assert contact is not None and account is not None
    context: dict[str, str | None] = {
        "contact.name": contact.display_name,
        "contact.email": contact.email,
        "contact.phone": contact.phone,
        "channel.kind": account.kind,
        "channel.title": planned.title,
        "channel.account": account.name,
        "conversation.uid": conv.uid,
        "conversation.ticket": planned.mapping.ticket(conv.ticket_number),
    }
    rule = planned.rule
    template = rule.text_for(str(state.get("language") or ""), planned.language)
    if template is None:
        state["acknowledged"] = "no text"
        conv.channel_state = state
        return None
    if _recent(session, conv.contact_id) >= rule.per_sender_per_hour:
        log.info(
            "conversation %s: no acknowledgement, the contact had %d this hour",
            conversation_id,
            rule.per_sender_per_hour,
        )
        state["acknowledged"] = "capped"
        conv.channel_state = state
        return None
    seq = take_seq(session, conv.id)
    now = utcnow()
    session.add(
        Message(
            uid=str(uuid.uuid4()),
            tenant_id=conv.tenant_id,
            conversation_id=conv.id,
            channel_account_id=conv.channel_account_id,
            direction=outbox.OUT,
            seq=seq,
            dedupe_key=f"{_KEY}{conv.uid}",
            kind=MessageKind.TEXT.value,
            text=render(template, context),
            payload={"auto": AUTO},
            sent_at=now,
            status=MessageStatus.PENDING,
            created_at=now,
        )
    )
    state["acknowledged"] = "queued"
    conv.channel_state = state
    session.flush()
    return outbox.bump(session, conv.tenant_id, conv.id, outbox.OUT)


def _recent(session: Session, contact_id: int) -> int:
    """Acknowledgements queued for the contact's conversations in the last hour."""
    since = utcnow() - dt.timedelta(hours=1)
    count = session.scalar(
        select(func.count())
        .select_from(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.contact_id == contact_id,
            Message.direction == outbox.OUT,
            Message.dedupe_key.like(f"{_KEY}%"),
            Message.created_at >= since,
        )
    )
    return int(count or 0)
