"""A hosted channel's reply left unread goes out where the person reads.

A chat widget shows a reply only while its page is open. When the visitor
has gone, the reply waits for their next visit — and, where the channel's
settings say so (``ChannelAdapter.unread_fallback``) and the person left
an address a channel can write to first (``ChannelAdapter.reaches``: the
e-mail channel reaches an ``email``), it is also sent there once it has
stayed unread for the time the channel gives: one copy per reply, in a
conversation the bridge opens with the person on that channel
(``ChannelAdapter.open_thread``), through the ordinary outbound pipeline.
Their answer to it threads back into that conversation like any mail.

The sweeper calls :func:`forward_unread`. Each reply is decided once, in
the transaction that stores the copy, with the reply's row locked: its
payload records the copy's uid (or why there is none: no address, no
channel that reaches one), so a second sweeper or a retried pass sends
nothing twice. A reply read in the widget first (its ``read`` report) is
never sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.identity import is_address, normalize_email
from bridge.model import MessageKind, utcnow
from bridge.pipeline.inbound import threads
from bridge.pipeline.outbound.accept import take_seq
from bridge.registry import UnknownAdapter, channel_class
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Contact,
    Conversation,
    Message,
    MessageStatus,
)

if TYPE_CHECKING:
    from bridge.runtime import Runtime
    from channel_adapters.base import ChannelAdapter

__all__ = ["forward_unread"]

log = logging.getLogger(__name__)

#: a reply older than its wait plus this is left alone (a fallback switched
#: on today does not mail last month's replies)
HORIZON = dt.timedelta(days=1)
#: the payload key recording the reply's fallback (the copy, or why none)
MARK = "unread_fallback"


def forward_unread(runtime: Runtime, *, now: dt.datetime | None = None, limit: int = 200) -> int:
    """Send the copies due now; how many were stored."""
    from bridge.hosted import hosted_kinds

    kinds = hosted_kinds()
    if not kinds:
        return 0
    now = now or utcnow()
    with runtime.read_session() as session:
        accounts = list(
            session.scalars(
                select(ChannelAccount).where(
                    ChannelAccount.kind.in_(sorted(kinds)),
                    ChannelAccount.status == ChannelStatus.ACTIVE,
                )
            )
        )
        adapters = [(a.id, a.tenant_id, runtime.channel_adapter(a)) for a in accounts]
    stored = 0
    for account_id, tenant_id, adapter in adapters:
        if adapter.unread_fallback() is None:
            continue
        stored += _forward_account(runtime, account_id, tenant_id, adapter, now, limit)
    return stored


def _forward_account(
    runtime: Runtime,
    account_id: int,
    tenant_id: int,
    adapter: ChannelAdapter,
    now: dt.datetime,
    limit: int,
) -> int:
    after = adapter.unread_fallback()
    assert after is not None
    due = now - after
    with runtime.read_engine.connect() as conn:
        rows = conn.execute(
            select(Message.id, Message.payload)
            .where(
                Message.channel_account_id == account_id,
                Message.direction == outbox.OUT,
                Message.status == MessageStatus.SENT,
                Message.created_at <= due,
                Message.created_at >= due - HORIZON,
            )
            .order_by(Message.id)
            .limit(limit * 4)
        ).all()
    pending = [mid for mid, payload in rows if _undecided(payload)][:limit]
    stored = 0
    for message_id in pending:
        job: tuple[int, str] | None = None
        with runtime.transaction() as session:
            job = _forward_one(session, tenant_id, message_id, adapter)
        if job is not None:
            stored += 1
            from bridge.jobs import enqueue

            enqueue(
                runtime.queues,
                outbox.OUT,
                job[0],
                job[1],
                timeout=runtime.settings.job_timeout,
            )
    return stored


def _undecided(payload: Any) -> bool:
    data = payload or {}
    return MARK not in data and data.get("delivery") != "read"


def _forward_one(
    session: Session, tenant_id: int, message_id: int, adapter: ChannelAdapter
) -> tuple[int, str] | None:
    """Decide one reply (its row locked): the copy's conversation and job,
    or None when it was decided meanwhile or cannot go anywhere."""
    reply = session.scalars(
        select(Message).where(Message.id == message_id).with_for_update()
    ).one_or_none()
    if reply is None or not _undecided(reply.payload):
        return None
    conversation = session.get(Conversation, reply.conversation_id)
    contact = session.get(Contact, conversation.contact_id) if conversation else None
    if conversation is None or contact is None:
        return None
    address = _left_here(session, conversation)
    target = _reaching(session, tenant_id, "email") if address else None
    if address is None or target is None:
        _mark(reply, {"none": "no address" if address is None else "no channel reaches it"})
        return None
    language = _language(session, conversation)
    copy = _store_copy(session, target, contact.id, address, reply, adapter, language)
    _mark(reply, {"message": copy.uid, "at": utcnow().isoformat()})
    session.flush()
    job = outbox.bump(session, tenant_id, copy.conversation_id, outbox.OUT)
    return (copy.conversation_id, job) if job else None


def _left_here(session: Session, conversation: Conversation) -> str | None:
    """The address the person left in this conversation (the latest one),
    never one their contact holds from elsewhere: a typed phone may have
    joined the visitor to someone else's contact, and that someone must
    not be mailed the visitor's replies."""
    for payload in session.scalars(
        select(Message.payload)
        .where(Message.conversation_id == conversation.id, Message.direction == outbox.IN)
        .order_by(Message.seq.desc())
    ):
        email = normalize_email(((payload or {}).get("profile") or {}).get("email"))
        if email and is_address(email):
            return email
    return None


def _mark(reply: Message, value: dict[str, str]) -> None:
    reply.payload = {**(reply.payload or {}), MARK: value}


def _reaching(session: Session, tenant_id: int, identity: str) -> ChannelAccount | None:
    """The tenant's first active channel account that can open a
    conversation with a person known by an ``identity`` (an e-mail address)."""
    accounts = session.scalars(
        select(ChannelAccount)
        .where(ChannelAccount.tenant_id == tenant_id, ChannelAccount.status == ChannelStatus.ACTIVE)
        .order_by(ChannelAccount.id)
    )
    for account in accounts:
        try:
            if channel_class(account.kind).reaches == identity:
                return account
        except UnknownAdapter:
            continue
    return None


def _language(session: Session, conversation: Conversation) -> str | None:
    first = session.scalar(
        select(Message.payload)
        .where(Message.conversation_id == conversation.id, Message.direction == outbox.IN)
        .order_by(Message.seq.desc())
        .limit(1)
    )
    profile = (first or {}).get("profile") or {}
    language = profile.get("language")
    return str(language) if language else None


def _store_copy(
    session: Session,
    target: ChannelAccount,
    contact_id: int,
    address: str,
    reply: Message,
    adapter: ChannelAdapter,
    language: str | None,
) -> Message:
    """The copy, in the person's conversation on ``target`` (opened now
    when there is none yet: one per person and account)."""
    cls = channel_class(target.kind)
    subject, intro = adapter.unread_texts(language)
    thread_id, state = cls.open_thread(address, subject)
    conversation_id = threads.open_conversation(session, target, contact_id, thread_id, state)
    seq = take_seq(session, conversation_id)
    now = utcnow()
    copy = Message(
        uid=str(uuid.uuid4()),
        tenant_id=target.tenant_id,
        conversation_id=conversation_id,
        channel_account_id=target.id,
        direction=outbox.OUT,
        seq=seq,
        dedupe_key=f"unread:{reply.uid}",
        kind=MessageKind.TEXT.value,
        text=f"{intro}\n\n{reply.text}" if reply.text else intro,
        payload={"copy_of": reply.uid},
        sent_at=now,
        status=MessageStatus.PENDING,
        created_at=now,
    )
    session.add(copy)
    return copy
