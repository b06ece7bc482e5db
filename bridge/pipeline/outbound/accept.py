"""The outbound pipeline's webhook side: what a CRM told us, stored before
the answer.

``accept_crm_events()`` mirrors inbound acceptance: each reply becomes an
outbound message row (unique on the CRM's message id, so a redelivered
webhook changes nothing) in the conversation the CRM named, in one
transaction, before the webhook answers; other events keep our view of the
CRM in step (an entity closed, an owner changed, a contact removed, the app
uninstalled).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.model import Attachment, CrmEvent, CrmEventKind, MessageKind
from bridge.tables import (
    Contact,
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
    Tenant,
    TenantStatus,
)

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["CrmAcceptResult", "accept_crm_events"]

log = logging.getLogger(__name__)


@dataclass
class CrmAcceptResult:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    unroutable: int = 0
    jobs: list[tuple[str, int, str]] = field(default_factory=list)
    #: the conversations a reply was stored in (a job or not: a reply stored
    #: behind one still pending bumps no new job, yet its client must hear)
    replied: set[int] = field(default_factory=set)


# --------------------------------------------------------------------------


def _route(session: Session, tenant_id: int, event: CrmEvent) -> Conversation | None:
    """The tenant's conversation a CRM event names (never another tenant's)."""
    base = select(Conversation).where(Conversation.tenant_id == tenant_id)
    if event.thread_key:
        found = session.scalars(base.where(Conversation.uid == event.thread_key)).first()
        if found:
            return found
    if event.crm_thread_id:
        found = session.scalars(
            base.where(Conversation.crm_thread_id == event.crm_thread_id)
        ).first()
        if found:
            return found
    if event.entity is not None:
        # notes-mode replies name the deal/lead, not the chat
        found = session.scalars(
            base.where(Conversation.crm_entity_id == event.entity.id).order_by(
                Conversation.updated_at.desc()
            )
        ).first()
        if found:
            return found
    if event.recipient:
        return session.scalars(
            base.where(Conversation.external_thread_id == event.recipient).order_by(
                Conversation.updated_at.desc()
            )
        ).first()
    return None


def _store_reply(
    session: Session, tenant_id: int, event: CrmEvent, result: CrmAcceptResult
) -> None:
    conversation = _route(session, tenant_id, event)
    if conversation is None:
        result.unroutable += 1
        log.warning(
            "tenant %s: CRM reply %s names no known conversation", tenant_id, event.external_id
        )
        return
    exists = session.scalar(
        select(Message.id).where(
            Message.channel_account_id == conversation.channel_account_id,
            Message.direction == outbox.OUT,
            Message.dedupe_key == event.external_id,
        )
    )
    if exists is not None:
        result.duplicates += 1
        return
    if event.crm_thread_id and not conversation.crm_thread_id:
        conversation.crm_thread_id = event.crm_thread_id
    seq = take_seq(session, conversation.id)
    session.add(
        Message(
            uid=str(uuid.uuid4()),
            tenant_id=tenant_id,
            conversation_id=conversation.id,
            channel_account_id=conversation.channel_account_id,
            direction=outbox.OUT,
            seq=seq,
            dedupe_key=event.external_id,
            kind=MessageKind.TEXT.value
            if not event.attachments
            else event.attachments[0].kind.value,
            text=event.text,
            payload={
                "attachments": [_attachment_dict(a) for a in event.attachments],
                "author_id": event.author_id,
                "author_name": event.author_name,
                "crm_thread_id": event.crm_thread_id,
                **({"reply_to": event.reply_to} if event.reply_to else {}),
            },
            sent_at=event.occurred_at,
            crm_message_id=event.external_id,
            status=MessageStatus.PENDING,
        )
    )
    job = outbox.bump(session, tenant_id, conversation.id, outbox.OUT)
    if job:
        result.jobs.append((outbox.OUT, conversation.id, job))
    result.replied.add(conversation.id)
    result.stored += 1


def take_seq(session: Session, conversation_id: int) -> int:
    """The conversation's next message seq, taken under its row lock (held
    to the end of the caller's transaction: its writers commit in seq
    order, which a hosted channel's client resuming "after seq N" relies on)."""
    top = session.scalar(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(next_seq=Conversation.next_seq + 1)
        .returning(Conversation.next_seq)
    )
    assert top is not None
    return int(top) - 1


def _attachment_dict(a: Attachment) -> dict[str, Any]:
    return {k: v for k, v in a.__dict__.items() if v not in (None, "")}


def _apply_state_event(session: Session, tenant_id: int, event: CrmEvent) -> None:
    """Keep our view of the CRM in step (the tenant's rows only)."""
    if event.kind is CrmEventKind.APP_REMOVED:
        # Uninstalled: stop calling the CRM; messages wait (parked) until a
        # re-install re-authorises the tenant.
        session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(
                status=TenantStatus.NEEDS_REAUTH, status_reason="the app was uninstalled in the CRM"
            )
        )
        return
    if event.kind is CrmEventKind.CONTACT_MERGED:
        if event.contact is not None and event.merged_into is not None:
            # a person merged two contacts in the CRM: follow it (the
            # survivor stays; the clients behind both become one)
            from bridge import identity

            identity.follow_crm_merge(session, tenant_id, event.contact.id, event.merged_into.id)
        return
    if event.kind is CrmEventKind.CONTACT_REMOVED and event.contact is not None:
        # Deleted or merged away in the CRM: the next message finds the
        # person again (identity, phone, e-mail) instead of writing to a ghost.
        session.execute(
            update(Contact)
            .where(Contact.tenant_id == tenant_id, Contact.crm_contact_id == event.contact.id)
            .values(crm_contact_id=None, crm_state=None, crm_owner_id=None)
        )
        return
    if event.entity is None:
        return
    match = (
        Conversation.tenant_id == tenant_id,
        Conversation.crm_entity_id == event.entity.id,
    )
    if event.kind is CrmEventKind.ENTITY_CLOSED:
        # won / lost / deleted: the next message opens a new one
        session.execute(update(Conversation).where(*match).values(status=ConversationStatus.CLOSED))
    elif event.kind is CrmEventKind.OWNER_CHANGED and event.owner_id:
        session.execute(update(Conversation).where(*match).values(owner_id=event.owner_id))


def accept_crm_events(
    runtime: Runtime, tenant_id: int, events: Iterable[CrmEvent]
) -> CrmAcceptResult:
    events = list(events)
    with runtime.transaction() as session:
        result = CrmAcceptResult()
        for event in events:
            if event.kind is CrmEventKind.REPLY:
                _store_reply(session, tenant_id, event, result)
            elif event.kind in (
                CrmEventKind.ENTITY_CLOSED,
                CrmEventKind.OWNER_CHANGED,
                CrmEventKind.CONTACT_REMOVED,
                CrmEventKind.CONTACT_MERGED,
                CrmEventKind.APP_REMOVED,
            ):
                _apply_state_event(session, tenant_id, event)
                result.ignored += 1
            else:
                result.ignored += 1
    if result.replied:
        from bridge import hosted

        # the replies are the hosted channels' clients' to read now
        hosted.announce_conversations(runtime, result.replied)
    if result.jobs:
        from bridge.jobs import enqueue

        for direction, conversation_id, job in result.jobs:
            enqueue(
                runtime.queues,
                direction,
                conversation_id,
                job,
                timeout=runtime.settings.job_timeout,
            )
    return result
