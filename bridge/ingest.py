"""Durable ingest: store what a channel sent, exactly once, then hint a job.

``accept()`` runs in one transaction: resolve the contact and conversation,
insert each message (unique on channel account + provider delivery id, so a
redelivery changes nothing), assign the conversation's next sequence number,
and bump the outbox. Only after the commit does the webhook answer 2xx; the
RQ job enqueued afterwards is a hint (if Redis is away, the sweeper enqueues
it later).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.identity import resolve_contact
from bridge.model import IgnoredEvent, InboundEvent, InboundMessage, ThreadMigrated
from bridge.tables import ChannelAccount, Conversation, IgnoredEventRow, Message

__all__ = ["AcceptResult", "accept", "message_payload"]

log = logging.getLogger(__name__)


@dataclass
class AcceptResult:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    #: (direction, conversation id, job id) to enqueue after commit
    jobs: list[tuple[str, int, str]] = field(default_factory=list)


def message_payload(message: InboundMessage) -> dict:
    """What we keep of a message besides its columns (raw included, for replay)."""
    return {
        "attachments": [_compact(dataclasses.asdict(a)) for a in message.attachments],
        "profile": _compact(dataclasses.asdict(message.profile)),
        "provider_message_id": message.provider_message_id,
        "is_edit": message.is_edit,
        "reply_to": message.reply_to,
        "callback_id": message.callback_id,
        "raw": dict(message.raw),
    }


def _compact(data: dict) -> dict:
    return {k: v for k, v in data.items() if v not in (None, "", {}, [], ())}


def _is_duplicate(session: Session, account_id: int, direction: str, key: str) -> bool:
    return (
        session.scalar(
            select(Message.id).where(
                Message.channel_account_id == account_id,
                Message.direction == direction,
                Message.dedupe_key == key,
            )
        )
        is not None
    )


def _next_seq(session: Session, conversation: Conversation) -> int:
    """Atomically take the conversation's next sequence number."""
    seq = session.scalar(
        update(Conversation)
        .where(Conversation.id == conversation.id)
        .values(next_seq=Conversation.next_seq + 1)
        .returning(Conversation.next_seq)
    )
    assert seq is not None
    return int(seq) - 1


def conversation_for(
    session: Session, account: ChannelAccount, message: InboundMessage
) -> Conversation:
    conversation = session.scalars(
        select(Conversation).where(
            Conversation.channel_account_id == account.id,
            Conversation.external_thread_id == message.external_thread_id,
        )
    ).first()
    contact = resolve_contact(
        session, account.tenant_id, account.kind, message.external_user_id, message.profile
    )
    if conversation is None:
        conversation = Conversation(
            uid=str(uuid.uuid4()),
            tenant_id=account.tenant_id,
            channel_account_id=account.id,
            contact_id=contact.id,
            external_thread_id=message.external_thread_id,
            next_seq=1,
        )
        session.add(conversation)
        session.flush()
    elif (
        conversation.contact_id != contact.id
        and message.external_thread_id == message.external_user_id
    ):
        # A private chat's contact was merged into another person.
        conversation.contact_id = contact.id
    return conversation


def _store_message(
    session: Session, account: ChannelAccount, message: InboundMessage, result: AcceptResult
) -> None:
    if _is_duplicate(session, account.id, outbox.IN, message.external_id):
        result.duplicates += 1
        return
    conversation = conversation_for(session, account, message)
    session.add(
        Message(
            uid=str(uuid.uuid4()),
            tenant_id=account.tenant_id,
            conversation_id=conversation.id,
            channel_account_id=account.id,
            direction=outbox.IN,
            seq=_next_seq(session, conversation),
            dedupe_key=message.external_id,
            kind=message.kind.value,
            text=message.text,
            payload=message_payload(message),
            sent_at=message.sent_at,
            provider_seq=message.sequence,
            status="pending",
        )
    )
    job = outbox.bump(session, account.tenant_id, conversation.id, outbox.IN)
    if job:
        result.jobs.append((outbox.IN, conversation.id, job))
    result.stored += 1


def _store_ignored(
    session: Session,
    account: ChannelAccount,
    event: IgnoredEvent | ThreadMigrated,
    result: AcceptResult,
) -> None:
    exists = session.scalar(
        select(IgnoredEventRow.id).where(
            IgnoredEventRow.channel_account_id == account.id,
            IgnoredEventRow.dedupe_key == event.external_id,
        )
    )
    if exists is not None:
        result.duplicates += 1
        return
    event_type = event.event_type if isinstance(event, IgnoredEvent) else "thread_migrated"
    session.add(
        IgnoredEventRow(
            tenant_id=account.tenant_id,
            channel_account_id=account.id,
            dedupe_key=event.external_id,
            event_type=event_type,
        )
    )
    if isinstance(event, ThreadMigrated):
        _migrate_thread(session, account, event)
    result.ignored += 1


def _migrate_thread(session: Session, account: ChannelAccount, event: ThreadMigrated) -> None:
    """Re-key a conversation whose thread moved (group -> supergroup); the
    pair of service messages may arrive in any order, or twice."""
    taken = session.scalar(
        select(Conversation.id).where(
            Conversation.channel_account_id == account.id,
            Conversation.external_thread_id == event.new_thread_id,
        )
    )
    if taken is not None:
        return
    session.execute(
        update(Conversation)
        .where(
            Conversation.channel_account_id == account.id,
            Conversation.external_thread_id == event.old_thread_id,
        )
        .values(external_thread_id=event.new_thread_id)
    )


def _accept_once(
    session: Session, account: ChannelAccount, events: Sequence[InboundEvent]
) -> AcceptResult:
    result = AcceptResult()
    for event in events:
        if isinstance(event, InboundMessage):
            _store_message(session, account, event, result)
        else:
            _store_ignored(session, account, event, result)
    return result


def accept(runtime, account_id: int, events: Iterable[InboundEvent]) -> AcceptResult:  # type: ignore[no-untyped-def]
    """Store ``events`` for the channel account in one transaction, then
    enqueue the jobs it calls for. Returns counts for the webhook answer.

    A concurrent insert of the same identity/message (PostgreSQL: two
    deliveries racing) surfaces as an IntegrityError; the whole unit is
    retried and then sees the winner's rows.
    """
    events = list(events)
    attempt = 0
    while True:
        attempt += 1
        try:
            with runtime.transaction() as session:
                account = session.get(ChannelAccount, account_id)
                if account is None:
                    raise LookupError("channel account vanished")
                result = _accept_once(session, account, events)
            break
        except IntegrityError:
            if attempt >= 3:
                raise
            log.info("ingest race on account %s, retrying (attempt %d)", account_id, attempt)
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
