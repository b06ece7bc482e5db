"""Threads the core finds for the channel: e-mail and any channel whose
messages name the conversation they continue instead of carrying a chat id.

The adapter reads its own threading (an e-mail's ``In-Reply-To`` and
``References``, its plus-addressed reply address, a ticket number in the
subject) into :class:`~bridge.model.ThreadHints`; :func:`follow` looks them
up, strongest first, within the channel account. It also keeps what the
channel remembers of a thread to answer in it (:func:`remember`), hands out
ticket numbers (:func:`next_ticket`), and applies what a channel reports of
our own outbound messages (:func:`outbound_status`: a bounce).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, bindparam, cast, select, update
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.model import InboundMessage, OutboundStatus, utcnow
from bridge.pipeline.followup import due
from bridge.registry import channel_class
from bridge.tables import (
    ChannelAccount,
    ContactIdentity,
    Conversation,
    EarlyStatus,
    IgnoredEventRow,
    Message,
    MessageStatus,
    Tenant,
)

if TYPE_CHECKING:
    from bridge.pipeline.inbound.accept import AccountRef

__all__ = ["follow", "next_ticket", "open_conversation", "outbound_status", "remember"]

log = logging.getLogger(__name__)

_BY_BRIDGE_IDS = (
    select(Message.conversation_id)
    .where(
        Message.channel_account_id == bindparam("account"),
        Message.uid.in_(bindparam("uids", expanding=True)),
    )
    .order_by(Message.id.desc())
    .limit(1)
)
_BY_KEYS = (
    select(Message.conversation_id)
    .where(
        Message.channel_account_id == bindparam("account"),
        Message.direction == outbox.IN,
        Message.dedupe_key.in_(bindparam("keys", expanding=True)),
    )
    .order_by(Message.id.desc())
    .limit(1)
)
_BY_UID = select(Conversation.id).where(
    Conversation.channel_account_id == bindparam("account"),
    Conversation.uid == bindparam("uid"),
)
#: a ticket number names the conversation only for its own contact
_BY_TICKET = (
    select(Conversation.id)
    .join(ContactIdentity, ContactIdentity.contact_id == Conversation.contact_id)
    .where(
        Conversation.channel_account_id == bindparam("account"),
        Conversation.tenant_id == bindparam("tenant"),
        Conversation.ticket_number == bindparam("ticket"),
        ContactIdentity.kind == bindparam("kind"),
        ContactIdentity.value == bindparam("sender"),
    )
)
_TAKE_TICKET = (
    update(Tenant)
    .where(Tenant.id == bindparam("b_tenant"))
    .values(next_ticket=Tenant.next_ticket + 1)
    .returning(Tenant.next_ticket)
)


def follow(session: Session, account: AccountRef, message: InboundMessage) -> int | None:
    """The conversation the message's hints name, or None (a new thread).

    Strongest first: a reply to one of our messages, a reply to an earlier
    message of the customer's, the conversation uid the reply address
    carried, the ticket number in the subject (only when the sender is that
    ticket's contact: a number can be guessed)."""
    hints = message.thread_hints
    if hints is None:
        return None
    conn = session.connection()
    account_id = account.id
    found: Any = None
    if hints.bridge_ids:
        found = conn.scalar(_BY_BRIDGE_IDS, {"account": account_id, "uids": list(hints.bridge_ids)})
    if found is None and hints.message_keys:
        found = conn.scalar(_BY_KEYS, {"account": account_id, "keys": list(hints.message_keys)})
    if found is None and hints.conversation_uid:
        found = conn.scalar(_BY_UID, {"account": account_id, "uid": hints.conversation_uid})
    if found is None and hints.ticket and hints.ticket.isdigit():
        found = conn.scalar(
            _BY_TICKET,
            {
                "account": account_id,
                "tenant": account.tenant_id,
                "ticket": int(hints.ticket),
                "kind": account.kind,
                "sender": message.external_user_id,
            },
        )
    return int(found) if found is not None else None


def open_conversation(
    session: Session,
    account: ChannelAccount,
    contact_id: int,
    thread_id: str,
    state: Mapping[str, Any],
) -> int:
    """The conversation of ``thread_id`` on ``account`` (a thread the bridge
    opens itself: ``ChannelAdapter.open_thread``), created for the client
    ``contact_id`` when there is none yet."""
    found = session.scalar(
        select(Conversation.id).where(
            Conversation.channel_account_id == account.id,
            Conversation.external_thread_id == thread_id,
        )
    )
    if found is not None:
        return int(found)
    conversation = Conversation(
        uid=str(uuid.uuid4()),
        tenant_id=account.tenant_id,
        channel_account_id=account.id,
        contact_id=contact_id,
        origin_contact_id=contact_id,
        external_thread_id=thread_id,
        channel_state=dict(state),
        next_seq=1,
    )
    session.add(conversation)
    session.flush()
    return conversation.id


def next_ticket(session: Session, tenant_id: int) -> int:
    """Take the tenant's next ticket number (in the caller's transaction:
    a rollback gives it back; the UPDATE serialises concurrent takers)."""
    taken = session.connection().scalar(_TAKE_TICKET, {"b_tenant": tenant_id})
    assert taken is not None
    return int(taken) - 1


def remember(session: Session, conversation_id: int, state: Mapping[str, Any]) -> None:
    """Merge what the channel told about the thread into the conversation's
    channel state (a later message's facts win)."""
    conversation = session.get(Conversation, conversation_id)
    assert conversation is not None
    conversation.channel_state = {**(conversation.channel_state or {}), **state}


def outbound_status(
    session: Session, account_id: int, event: OutboundStatus, jobs: list[tuple[str, int, str]]
) -> bool:
    """Apply a channel's report on one of our outbound messages. A failure
    of a message sent marks it failed with the channel's reason and makes
    its delivery report to the CRM due again (the owner sees the reply
    failed and why). Recorded once per report (``ignored_events``): False
    for a report seen before.

    A report can come before the send is recorded: the provider answered
    the send and reported delivery faster than the bridge committed the
    answer. Such a report (naming the channel's id of the message) is kept
    (``EarlyStatus``) and applied when the send's ids are recorded
    (:func:`apply_early`). The two serialise on the channel account's row
    (:func:`lock_for_statuses`, taken by the caller before anything else):
    the send holds it shared while it records its ids, a transaction with
    reports holds it exclusively, so one always sees the other's write."""
    seen = session.scalar(
        select(IgnoredEventRow.id).where(
            IgnoredEventRow.channel_account_id == account_id,
            IgnoredEventRow.dedupe_key == event.external_id,
        )
    )
    if seen is not None:
        return False
    message = _outbound_of(session, account_id, event)
    session.add(
        IgnoredEventRow(
            tenant_id=message.tenant_id if message else _tenant_of(session, account_id),
            channel_account_id=account_id,
            dedupe_key=event.external_id,
            event_type=f"outbound_{event.status}"[:64],
        )
    )
    if _not_sent_yet(message) and event.channel_message_id:
        session.add(
            EarlyStatus(
                tenant_id=message.tenant_id if message else _tenant_of(session, account_id),
                channel_account_id=account_id,
                channel_message_id=event.channel_message_id[:255],
                status=event.status[:32],
                error=event.error[:2000] if event.error else None,
            )
        )
        log.info("%s status before its send was recorded: kept", event.channel_kind)
        return True
    if message is None:
        log.info("%s status for an outbound message not ours or gone", event.channel_kind)
        return True
    _apply(session, message, event, jobs)
    return True


def lock_for_statuses(session: Session, account_id: int) -> None:
    """Hold the channel account's row until the caller's transaction ends,
    before it reads or writes anything else: reports on our messages and
    the sends recording their ids (which hold it shared) serialise on it,
    always taken first, so neither waits on the other holding a lock the
    other needs (a report may bump a conversation's outbox a send bumps
    too). SQLite's writers are serialised already (``BEGIN IMMEDIATE``)."""
    session.execute(
        select(ChannelAccount.id).where(ChannelAccount.id == account_id).with_for_update()
    )


def apply_early(
    session: Session, message: Message, kind: str, jobs: list[tuple[str, int, str]]
) -> None:
    """Apply the reports kept for ``message`` (its send just recorded, in
    ``session``: the caller holds the account's row shared) in the order
    they came."""
    ids = [str(i) for i in message.channel_message_ids or ()]
    if not ids:
        return
    kept = session.scalars(
        select(EarlyStatus)
        .where(
            EarlyStatus.channel_account_id == message.channel_account_id,
            EarlyStatus.channel_message_id.in_(ids),
            EarlyStatus.applied_at.is_(None),
        )
        .order_by(EarlyStatus.id)
    ).all()
    for early in kept:
        event = OutboundStatus(
            channel_kind=kind,
            external_id=f"early:{early.id}",
            bridge_id=message.uid,
            status=early.status,
            error=early.error,
            channel_message_id=early.channel_message_id,
        )
        _apply(session, message, event, jobs)
        early.applied_at = utcnow()


def _not_sent_yet(message: Message | None) -> bool:
    """No message found, or one whose send is not recorded yet."""
    return message is None or message.status in (MessageStatus.PENDING, MessageStatus.IN_FLIGHT)


def _apply(
    session: Session, message: Message, event: OutboundStatus, jobs: list[tuple[str, int, str]]
) -> None:
    # a reply whose send was interrupted (failed, outcome unknown) that now
    # bounces was sent after all: its reason becomes the bounce's
    if event.status == MessageStatus.FAILED and message.status in (
        MessageStatus.SENT,
        MessageStatus.FAILED,
    ):
        message.status = MessageStatus.FAILED
        message.last_error = (event.error or "the channel reported the message failed")[:2000]
        _report(session, message, jobs)
    elif event.status == "window_closed" and message.status == MessageStatus.SENT:
        # refused after it was accepted: sent again as the window demands
        # (deliver sees the mark and sends the template or refuses it)
        message.status = MessageStatus.PENDING
        message.channel_message_ids = None
        message.payload = {**(message.payload or {}), "window_closed": True}
        job = outbox.bump(session, message.tenant_id, message.conversation_id, outbox.OUT)
        if job:
            jobs.append((outbox.OUT, message.conversation_id, job))
    elif _moves_forward(message, event):
        reached = channel_class(event.channel_kind).delivery_statuses[event.status]
        message.payload = {**(message.payload or {}), "delivery": reached}
        _report(session, message, jobs)


#: the delivery states a channel may report, in order: a status never
#: moves back (they may arrive out of order, corpora FACTS §2)
_RANK = {"sent": 0, "delivered": 1, "read": 2}


def _moves_forward(message: Message, event: OutboundStatus) -> bool:
    """A delivered/read report (in the channel's words: its adapter's
    ``delivery_statuses``) on a sent reply that says more than its
    delivery state so far."""
    reached = channel_class(event.channel_kind).delivery_statuses.get(event.status)
    if reached not in _RANK or message.status != MessageStatus.SENT:
        return False
    current = (message.payload or {}).get("delivery", "sent")
    return _RANK[reached] > _RANK.get(current, 0)


def _report(session: Session, message: Message, jobs: list[tuple[str, int, str]]) -> None:
    job = due(session, message, outbox.REPORT) if message.crm_message_id else None
    log.debug(
        "message %s now %s/%s: report %s",
        message.uid,
        message.status,
        (message.payload or {}).get("delivery"),
        job or "(a job is responsible)",
    )
    if job:
        jobs.append((outbox.REPORT, message.conversation_id, job))


def _outbound_of(session: Session, account_id: int, event: OutboundStatus) -> Message | None:
    """Our outbound message a status is about: by our uuid where the channel
    carried it back, else by the id the channel gave it (a text search of
    the stored ids, over the account's replies of the last 30 days: a status
    comes within days, and ``channel_message_ids`` is a JSON list)."""
    if event.bridge_id:
        found = session.scalars(
            select(Message).where(
                Message.channel_account_id == account_id,
                Message.direction == outbox.OUT,
                Message.uid == event.bridge_id,
            )
        ).first()
        if found is not None or not event.channel_message_id:
            return found
    if not event.channel_message_id:
        return None
    quoted = json.dumps(event.channel_message_id)
    since = utcnow() - dt.timedelta(days=30)
    for row in session.scalars(
        select(Message).where(
            Message.channel_account_id == account_id,
            Message.direction == outbox.OUT,
            Message.created_at >= since,
            cast(Message.channel_message_ids, String).contains(quoted, autoescape=True),
        )
    ):
        if event.channel_message_id in (row.channel_message_ids or ()):
            return row
    return None


def _tenant_of(session: Session, account_id: int) -> int:
    tenant = session.scalar(select(ChannelAccount.tenant_id).where(ChannelAccount.id == account_id))
    assert tenant is not None
    return int(tenant)
