"""Storing normalised events, exactly once, then hinting a job.

:func:`accept_in` runs in the caller's transaction (the journal's
normaliser stores a batch of deliveries in one): resolve the contact and
conversation, insert each message (unique on channel account + provider
delivery id, so a second parse of the same delivery changes nothing),
assign the conversation's next sequence number, and bump the outbox. The
RQ jobs enqueued after the commit (:func:`enqueue_jobs`) are hints: if
Redis is away, the sweeper enqueues them later. :func:`accept` does all of
it in a transaction of its own, for callers holding parsed events.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.identity import resolve_contact
from bridge.model import IgnoredEvent, InboundEvent, InboundMessage, ThreadMigrated, utcnow
from bridge.tables import ChannelAccount, Conversation, IgnoredEventRow, Message, MessageStatus

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "AcceptResult",
    "AccountRef",
    "accept",
    "accept_in",
    "enqueue_jobs",
    "message_payload",
]

log = logging.getLogger(__name__)


@dataclass
class AcceptResult:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    #: (direction, conversation id, job id) to enqueue after commit
    jobs: list[tuple[str, int, str]] = field(default_factory=list)


def message_payload(message: InboundMessage) -> dict[str, Any]:
    """What we keep of a message besides its columns (raw included, for replay)."""
    return {
        "attachments": [_compact(dataclasses.asdict(a)) for a in message.attachments],
        "profile": _compact(dataclasses.asdict(message.profile)),
        "provider_message_id": message.provider_message_id,
        "is_edit": message.is_edit,
        "reply_to": message.reply_to,
        "callback_id": message.callback_id,
        "raw": dict(message.raw),
        **({"late": True} if message.late else {}),
    }


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, "", {}, [], ())}


# The hot path's statements are built once: constructing SQLAlchemy
# expressions per request cost more CPU than running them (bench.ingest).
_DUPLICATE = select(Message.id).where(
    Message.channel_account_id == bindparam("account"),
    Message.direction == bindparam("direction"),
    Message.dedupe_key == bindparam("key"),
)
_CONVERSATION = select(Conversation.id).where(
    Conversation.channel_account_id == bindparam("account"),
    Conversation.external_thread_id == bindparam("thread"),
)
_NEXT_SEQ = (
    update(Conversation)
    .where(Conversation.id == bindparam("b_conversation"))
    .values(next_seq=Conversation.next_seq + 1)
    .returning(Conversation.next_seq)
)
_INSERT_MESSAGE = insert(Message)


@dataclass(frozen=True)
class AccountRef:
    """What ingest needs to know of a channel account (the webhook view keeps
    it cached, so the hot path does not read it again)."""

    id: int
    tenant_id: int
    kind: str


def _is_duplicate(session: Session, account_id: int, direction: str, key: str) -> bool:
    found = session.connection().scalar(
        _DUPLICATE, {"account": account_id, "direction": direction, "key": key}
    )
    return found is not None


def _next_seq(session: Session, conversation_id: int) -> int:
    """Atomically take the conversation's next sequence number (the UPDATE
    also locks the conversation row until commit on PostgreSQL)."""
    seq = session.connection().scalar(_NEXT_SEQ, {"b_conversation": conversation_id})
    assert seq is not None
    return int(seq) - 1


def conversation_for(
    session: Session, account: AccountRef, message: InboundMessage, known: int | None = None
) -> int:
    """The conversation's id, creating it (and resolving the person) when new.

    The common case — a known chat (``known``: read before the write lock)
    whose update tells us nothing new about the person — costs nothing here.
    """
    learns = bool(message.profile.phone or message.profile.email)
    if known is not None and not learns:
        return known
    found = session.connection().scalar(
        _CONVERSATION, {"account": account.id, "thread": message.external_thread_id}
    )
    if found is not None and not learns:
        return int(found)
    contact = resolve_contact(
        session, account.tenant_id, account.kind, message.external_user_id, message.profile
    )
    if found is None:
        fresh = Conversation(
            uid=str(uuid.uuid4()),
            tenant_id=account.tenant_id,
            channel_account_id=account.id,
            contact_id=contact.id,
            external_thread_id=message.external_thread_id,
            next_seq=1,
        )
        session.add(fresh)
        session.flush()
        return fresh.id
    conversation = session.get(Conversation, found)
    assert conversation is not None
    private_chat = message.external_thread_id == message.external_user_id
    if conversation.contact_id != contact.id and private_chat:
        # A private chat's contact was merged into another person.
        conversation.contact_id = contact.id
        session.flush()
    return conversation.id


def _store_message(
    session: Session,
    account: AccountRef,
    message: InboundMessage,
    result: AcceptResult,
    seen: _Seen | None = None,
) -> None:
    if seen is not None and seen.duplicate:
        result.duplicates += 1
        return
    if seen is None and _is_duplicate(session, account.id, outbox.IN, message.external_id):
        result.duplicates += 1
        return
    # (a redelivery racing this one loses on the unique constraint instead)
    conversation_id = conversation_for(
        session, account, message, seen.conversation_id if seen else None
    )
    now = utcnow()
    session.connection().execute(
        _INSERT_MESSAGE,
        {
            "uid": str(uuid.uuid4()),
            "tenant_id": account.tenant_id,
            "conversation_id": conversation_id,
            "channel_account_id": account.id,
            "direction": outbox.IN,
            "seq": _next_seq(session, conversation_id),
            "dedupe_key": message.external_id,
            "kind": message.kind.value,
            "text": message.text,
            "payload": message_payload(message),
            "sent_at": message.sent_at,
            "provider_seq": message.sequence,
            "status": MessageStatus.PENDING,
            "attempts": 0,
            "followup_attempts": 0,
            "created_at": now,
            "updated_at": now,
        },
    )
    job = outbox.bump(session, account.tenant_id, conversation_id, outbox.IN)
    if job:
        result.jobs.append((outbox.IN, conversation_id, job))
    result.stored += 1


def _store_ignored(
    session: Session,
    account: AccountRef,
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


def _migrate_thread(session: Session, account: AccountRef, event: ThreadMigrated) -> None:
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


@dataclass(frozen=True)
class _Seen:
    """What a lock-free read found before the write transaction."""

    duplicate: bool
    conversation_id: int | None


def _look_first(
    runtime: Runtime, account: AccountRef, events: Sequence[InboundEvent]
) -> dict[str, _Seen]:
    """Duplicate checks and conversation lookups need no write lock: do them
    first (on SQLite, WAL readers block nobody), so the write transaction —
    SQLite's single writer — holds only the writes."""
    seen: dict[str, _Seen] = {}
    with runtime.read_engine.connect() as conn:
        for event in events:
            if not isinstance(event, InboundMessage):
                continue
            dup = conn.scalar(
                _DUPLICATE,
                {"account": account.id, "direction": outbox.IN, "key": event.external_id},
            )
            conv = conn.scalar(
                _CONVERSATION, {"account": account.id, "thread": event.external_thread_id}
            )
            seen[event.external_id] = _Seen(
                dup is not None, int(conv) if conv is not None else None
            )
    return seen


def _accept_once(
    session: Session,
    account: AccountRef,
    events: Sequence[InboundEvent],
    seen: dict[str, _Seen] | None = None,
) -> AcceptResult:
    result = AcceptResult()
    accept_in(session, account, events, result, seen)
    return result


def accept_in(
    session: Session,
    account: AccountRef,
    events: Sequence[InboundEvent],
    result: AcceptResult,
    seen: dict[str, _Seen] | None = None,
) -> None:
    """Store ``events`` in the caller's transaction, adding to ``result``
    (the journal's normaliser stores a batch of deliveries in one)."""
    for event in events:
        if isinstance(event, InboundMessage):
            _store_message(session, account, event, result, (seen or {}).get(event.external_id))
        else:
            _store_ignored(session, account, event, result)


def _account_ref(runtime: Runtime, account_id: int) -> AccountRef:
    query = select(ChannelAccount.id, ChannelAccount.tenant_id, ChannelAccount.kind).where(
        ChannelAccount.id == account_id
    )
    with runtime.read_engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise LookupError("channel account vanished")
    return AccountRef(int(row[0]), int(row[1]), str(row[2]))


def accept(
    runtime: Runtime, account: int | AccountRef, events: Iterable[InboundEvent]
) -> AcceptResult:
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
            ref = account if isinstance(account, AccountRef) else _account_ref(runtime, account)
            seen = _look_first(runtime, ref, events)
            with runtime.transaction() as session:
                result = _accept_once(session, ref, events, seen)
            break
        except IntegrityError:
            if attempt >= 3:
                raise
            log.info("ingest race, retrying (attempt %d)", attempt)
    enqueue_jobs(runtime, result)
    return result


def enqueue_jobs(runtime: Runtime, result: AcceptResult) -> None:
    """After the commit: the jobs the stored messages call for (hints)."""
    if not result.jobs:
        return
    from bridge.jobs import enqueue

    for direction, conversation_id, job in result.jobs:
        enqueue(
            runtime.queues, direction, conversation_id, job, timeout=runtime.settings.job_timeout
        )
