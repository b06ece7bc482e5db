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
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge import consent, files, outbox
from bridge.identity import DEFAULT_RULES, resolve_contact
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    OutboundStatus,
    ThreadMigrated,
    utcnow,
)
from bridge.pipeline.inbound import threads
from bridge.registry import UnknownAdapter, channel_class
from bridge.tables import ChannelAccount, Conversation, IgnoredEventRow, Message, MessageStatus
from mappings.schema import IdentityRules

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "AcceptResult",
    "acknowledgement_plan",
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
    #: conversations that opened a ticket in this transaction (their
    #: acknowledgement is stored with them)
    tickets: list[int] = field(default_factory=list)
    #: (account id, thread id) of the hosted channels' threads this
    #: transaction changed: their clients are told after the commit
    hosted: set[tuple[int, str]] = field(default_factory=set)


def message_payload(message: InboundMessage) -> dict[str, Any]:
    """What we keep of a message besides its columns (raw included, for replay)."""
    return {
        "attachments": [_attachment(a) for a in message.attachments],
        "profile": _compact(dataclasses.asdict(message.profile)),
        "provider_message_id": message.provider_message_id,
        "is_edit": message.is_edit,
        "reply_to": message.reply_to,
        "callback_id": message.callback_id,
        "raw": dict(message.raw),
        **({"late": True} if message.late else {}),
        **({"flag": message.flag} if message.flag else {}),
        **({"echo": True} if message.echo else {}),
        **({"revoked": True} if message.revoked else {}),
        **({"consent": message.consent} if message.consent is not None else {}),
    }


def _attachment(attachment: Attachment) -> dict[str, Any]:
    data = dataclasses.asdict(attachment)
    data.pop("content", None)  # kept as a file by _keep_files, never in the payload
    return _compact(data)


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
_DUPLICATES = select(Message.dedupe_key).where(
    Message.channel_account_id == bindparam("account"),
    Message.direction == outbox.IN,
    Message.dedupe_key.in_(bindparam("keys", expanding=True)),
)
_CONVERSATIONS = select(Conversation.external_thread_id, Conversation.id).where(
    Conversation.channel_account_id == bindparam("account"),
    Conversation.external_thread_id.in_(bindparam("threads", expanding=True)),
)
#: takes ``b_count`` sequence numbers at once: they are the ``b_count``
#: numbers below the value returned
_TAKE_SEQ = (
    update(Conversation)
    .where(Conversation.id.in_(bindparam("ids", expanding=True)))
    .values(next_seq=Conversation.next_seq + bindparam("b_count"))
    .returning(Conversation.id, Conversation.next_seq)
)
_INSERT_MESSAGE = insert(Message)


@dataclass(frozen=True)
class AccountRef:
    """What ingest needs to know of a channel account (the webhook view keeps
    it cached, so the hot path does not read it again)."""

    id: int
    tenant_id: int
    kind: str
    #: the tenant mapping's rules for making two clients one
    identity: IdentityRules = DEFAULT_RULES
    #: the mapping has a service layer: stored client messages are its work too
    service: bool = False


def conversation_for(
    session: Session,
    account: AccountRef,
    message: InboundMessage,
    known: int | None = None,
    tickets: list[int] | None = None,
) -> int:
    """The conversation's id, creating it (and resolving the person) when new.

    The common case — a known chat (``known``: read before the write lock)
    whose update tells us nothing new about the person — costs nothing here.
    A message whose channel threads by itself (``thread_hints``) joins the
    conversation its hints name when its own thread id is not known yet.
    """
    learns = bool(message.profile.phone or message.profile.email)
    if known is not None and not learns:
        return known
    found = known
    if found is None:
        found = session.connection().scalar(
            _CONVERSATION, {"account": account.id, "thread": message.external_thread_id}
        )
    if found is None and message.thread_hints is not None:
        found = threads.follow(session, account, message)
    if found is not None and not learns:
        return int(found)
    contact, origin = resolve_contact(
        session,
        account.tenant_id,
        account.kind,
        message.external_user_id,
        message.profile,
        account.identity,
    )
    if found is None:
        fresh = Conversation(
            uid=str(uuid.uuid4()),
            tenant_id=account.tenant_id,
            channel_account_id=account.id,
            contact_id=contact.id,
            origin_contact_id=origin,
            external_thread_id=message.external_thread_id,
            next_seq=1,
            ticket_number=(
                threads.next_ticket(session, account.tenant_id) if message.opens_ticket else None
            ),
        )
        session.add(fresh)
        session.flush()
        if fresh.ticket_number is not None and tickets is not None:
            tickets.append(fresh.id)
        return fresh.id
    conversation = session.get(Conversation, found)
    assert conversation is not None
    private_chat = message.external_thread_id == message.external_user_id
    if conversation.contact_id != contact.id and private_chat:
        # A private chat's contact was merged into another person.
        conversation.contact_id = contact.id
        session.flush()
    return conversation.id


@dataclass
class _Batch:
    """The messages of one transaction, placed in their conversations in
    arrival order, written together by :func:`_write`."""

    keys: set[str] = field(default_factory=set)
    threads: dict[str, int] = field(default_factory=dict)
    #: each placed message's conversation, by its key: a later message of
    #: the batch that names it in its hints joins it (not in the table yet)
    placed: dict[str, int] = field(default_factory=dict)
    conversations: dict[int, list[InboundMessage]] = field(default_factory=dict)


def _place(
    session: Session,
    account: AccountRef,
    message: InboundMessage,
    result: AcceptResult,
    seen: Seen,
    batch: _Batch,
) -> None:
    key = message.external_id
    if key in seen.duplicates or key in batch.keys:
        result.duplicates += 1
        return
    # (a redelivery racing this one loses on the unique constraint instead)
    batch.keys.add(key)
    thread = message.external_thread_id
    known = batch.threads.get(thread, seen.conversations.get(thread))
    if known is None and message.thread_hints is not None:
        known = next(
            (batch.placed[k] for k in message.thread_hints.message_keys if k in batch.placed),
            None,
        )
    conversation_id = conversation_for(session, account, message, known, result.tickets)
    batch.threads[thread] = conversation_id
    batch.placed[key] = conversation_id
    if _is_hosted(account.kind):
        result.hosted.add((account.id, thread))
    batch.conversations.setdefault(conversation_id, []).append(
        _keep_files(session, account, message)
    )
    if message.thread_state:
        threads.remember(session, conversation_id, message.thread_state)
    if message.consent is not None:
        consent.record(session, conversation_id, message.consent, message.sent_at)


def _keep_files(session: Session, account: AccountRef, message: InboundMessage) -> InboundMessage:
    """The message with the bytes its delivery carried (an e-mail's parts)
    stored as files in this transaction, its attachments naming them."""
    if not any(a.content is not None for a in message.attachments):
        return message
    kept = tuple(files.keep(session, account.tenant_id, a) for a in message.attachments)
    return dataclasses.replace(message, attachments=kept)


def _write(session: Session, account: AccountRef, batch: _Batch, result: AcceptResult) -> None:
    """Insert the batch's messages with one statement, after taking each
    conversation's sequence numbers with one UPDATE, and bump each
    conversation's outbox once. Conversations in id order, so concurrent
    writers lock their rows in the same order (PostgreSQL)."""
    if not batch.conversations:
        return
    conn = session.connection()
    now = utcnow()
    tops = _take_seqs(conn, batch.conversations)
    rows = [
        _message_row(account, cid, tops[cid] - len(messages) + i, message, now)
        for cid, messages in sorted(batch.conversations.items())
        for i, message in enumerate(messages)
    ]
    conn.execute(_INSERT_MESSAGE, rows)
    jobs = outbox.bump_many(session, account.tenant_id, sorted(batch.conversations), outbox.IN)
    result.jobs.extend((outbox.IN, cid, job) for cid, job in sorted(jobs.items()) if job)
    if account.service:
        # the service layer (menus, notices, ratings) answers without
        # waiting for the CRM: its own work, beside the sync's
        jobs = outbox.bump_many(
            session, account.tenant_id, sorted(batch.conversations), outbox.SERVICE
        )
        result.jobs.extend((outbox.SERVICE, cid, job) for cid, job in sorted(jobs.items()) if job)
    result.stored += len(rows)


def _take_seqs(conn: Connection, conversations: dict[int, list[InboundMessage]]) -> dict[int, int]:
    """Each conversation's next sequence number after taking as many as it
    has messages here: one UPDATE per distinct count (in a batch of lone
    messages, one for all). The UPDATE locks the rows until commit
    (PostgreSQL), in id order."""
    by_count: dict[int, list[int]] = {}
    for cid in sorted(conversations):
        by_count.setdefault(len(conversations[cid]), []).append(cid)
    tops: dict[int, int] = {}
    for count, ids in sorted(by_count.items()):
        for cid, top in conn.execute(_TAKE_SEQ, {"ids": ids, "b_count": count}):
            tops[int(cid)] = int(top)
    return tops


def _message_row(
    account: AccountRef,
    conversation_id: int,
    seq: int,
    message: InboundMessage,
    now: dt.datetime,
) -> dict[str, Any]:
    return {
        "uid": str(uuid.uuid4()),
        "tenant_id": account.tenant_id,
        "conversation_id": conversation_id,
        "channel_account_id": account.id,
        "direction": outbox.IN,
        "seq": seq,
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
    }


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
class Seen:
    """What was already stored of a batch's messages: the keys of those
    stored before, and the conversation id of each thread known."""

    duplicates: frozenset[str] = frozenset()
    conversations: dict[str, int] = field(default_factory=dict)


def look(conn: Connection, account: AccountRef, events: Sequence[InboundEvent]) -> Seen:
    """Duplicate checks and conversation lookups for all of ``events``, one
    query each. They need no write lock: the journal's normaliser and
    :func:`accept` do them before the write transaction (on SQLite, WAL
    readers block nobody), so SQLite's single writer is held for the writes
    alone. A row another writer stores meanwhile is no harm: a duplicate
    fails on the unique key (the caller retries, and looks again), a
    conversation created meanwhile is found by :func:`conversation_for`."""
    messages = [e for e in events if isinstance(e, InboundMessage)]
    if not messages:
        return Seen()
    keys = sorted({m.external_id for m in messages})
    threads = sorted({m.external_thread_id for m in messages})
    duplicates = frozenset(
        str(k) for k in conn.scalars(_DUPLICATES, {"account": account.id, "keys": keys})
    )
    conversations = {
        str(thread): int(cid)
        for thread, cid in conn.execute(_CONVERSATIONS, {"account": account.id, "threads": threads})
    }
    return Seen(duplicates, conversations)


def accept_in(
    session: Session,
    account: AccountRef,
    events: Sequence[InboundEvent],
    result: AcceptResult,
    seen: Seen | None = None,
    acknowledge: Callable[[Session, int], str | None] | None = None,
) -> None:
    """Store ``events`` in the caller's transaction, adding to ``result``
    (the journal's normaliser stores a batch of deliveries in one).

    ``acknowledge`` (``autoreply.plan``) stores each new ticket's
    acknowledgement in the same transaction, so a crash after the commit
    cannot lose it; without it (the mapping asks for none) no ticket is
    acknowledged.

    ``seen`` is what :func:`look` found before the transaction; without it
    the lookups run here. The messages are written together at the end; a
    thread migration among the events re-keys conversations, so the
    messages placed before it are written first and the lookups of those
    after it run again."""
    if any(isinstance(event, OutboundStatus) for event in events):
        threads.lock_for_statuses(session, account.id)
    if seen is None:
        seen = look(session.connection(), account, events)
    batch = _Batch()
    for i, event in enumerate(events):
        if isinstance(event, InboundMessage):
            _place(session, account, event, result, seen, batch)
            continue
        if isinstance(event, OutboundStatus):
            if threads.outbound_status(session, account.id, event, result.jobs):
                result.ignored += 1
            else:
                result.duplicates += 1
            continue
        _store_ignored(session, account, event, result)
        if isinstance(event, ThreadMigrated):
            _write(session, account, batch, result)
            rest = events[i + 1 :]
            seen = look(session.connection(), account, rest)
            seen = Seen(seen.duplicates | batch.keys, seen.conversations)
            batch = _Batch(keys=batch.keys, placed=batch.placed)
    _write(session, account, batch, result)
    if acknowledge is not None:
        for conversation_id in result.tickets:
            job = acknowledge(session, conversation_id)
            if job:
                result.jobs.append((outbox.OUT, conversation_id, job))
    result.tickets.clear()


def _account_ref(runtime: Runtime, account_id: int) -> AccountRef:
    query = select(ChannelAccount.id, ChannelAccount.tenant_id, ChannelAccount.kind).where(
        ChannelAccount.id == account_id
    )
    with runtime.read_engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise LookupError("channel account vanished")
    tenant_id = int(row[1])
    return AccountRef(int(row[0]), tenant_id, str(row[2]), *runtime.ingest_view(tenant_id))


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
            with runtime.read_engine.connect() as conn:
                seen = look(conn, ref, events)
            planned = acknowledgement_plan(runtime, ref, events)
            result = AcceptResult()
            with runtime.transaction() as session:
                accept_in(session, ref, events, result, seen, planned)
            break
        except IntegrityError:
            if attempt >= 3:
                raise
            log.info("ingest race, retrying (attempt %d)", attempt)
    enqueue_jobs(runtime, result)
    return result


def acknowledgement_plan(
    runtime: Runtime, account: AccountRef, events: Sequence[InboundEvent]
) -> Callable[[Session, int], str | None] | None:
    """The tenant's acknowledgement plan, when a message may open a ticket."""
    if not any(isinstance(e, InboundMessage) and e.opens_ticket for e in events):
        return None
    from bridge.pipeline.outbound.autoreply import plan

    return plan(runtime, account.tenant_id, account.kind)


def _is_hosted(kind: str) -> bool:
    try:
        return channel_class(kind).hosted
    except UnknownAdapter:
        return False


def enqueue_jobs(runtime: Runtime, result: AcceptResult) -> None:
    """After the commit: the jobs the stored messages call for (hints),
    and the news for the clients of hosted channels' threads."""
    if result.hosted:
        from bridge import hosted

        by_account: dict[int, list[str]] = {}
        for account_id, thread in result.hosted:
            by_account.setdefault(account_id, []).append(thread)
        for account_id, threads in by_account.items():
            hosted.announce(runtime, account_id, threads)
    if not result.jobs:
        return
    from bridge.jobs import enqueue

    for direction, conversation_id, job in result.jobs:
        enqueue(
            runtime.queues, direction, conversation_id, job, timeout=runtime.settings.job_timeout
        )
