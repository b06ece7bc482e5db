"""The outbound pipeline: a rep's reply, from the CRM's webhook to the
customer's channel, in order, exactly once — then the delivery status back.

``accept_crm_events()`` mirrors inbound ingest: each reply becomes an
outbound message row (unique on the CRM's message id, so a redelivered
webhook changes nothing) in the conversation the CRM named, in one
transaction, before the webhook answers.

``run_outbound()`` drains a conversation's replies one by one. Channels have
no "did you already send this?" lookup (Telegram has none), so a reply whose
send may have happened (read timeout, or a job killed mid-send) is never
sent blindly again: it is marked ``failed`` as "outcome unknown" and the
conversation waits for an operator (``bridge replay``). Exactly once means
no duplicate reaches the customer; nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from bridge import outbox
from bridge.errors import AmbiguousError, AuthError, BridgeError, PermanentError, RetryableError
from bridge.model import (
    Attachment,
    CrmEvent,
    CrmEventKind,
    DeliveryReport,
    DeliveryStatus,
    MessageKind,
    OutboundMessage,
    utcnow,
)
from bridge.rows import attachment_from_dict, aware
from bridge.tables import ChannelAccount, Contact, Conversation, Message, Outbox, Tenant
from bridge.worksteps import (
    Drained,
    LeaseLost,
    Parked,
    _wait,
    backoff_until,
    call_with_retries,
    run_drain,
)

__all__ = ["CrmAcceptResult", "accept_crm_events", "run_outbound"]

log = logging.getLogger(__name__)

BATCH = 20


@dataclass
class CrmAcceptResult:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    unroutable: int = 0
    jobs: list[tuple[str, int, str]] = field(default_factory=list)


# --------------------------------------------------------------------------
# accept (webhook side)
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
    seq = session.scalar(
        update(Conversation)
        .where(Conversation.id == conversation.id)
        .values(next_seq=Conversation.next_seq + 1)
        .returning(Conversation.next_seq)
    )
    assert seq is not None
    session.add(
        Message(
            uid=str(uuid.uuid4()),
            tenant_id=tenant_id,
            conversation_id=conversation.id,
            channel_account_id=conversation.channel_account_id,
            direction=outbox.OUT,
            seq=int(seq) - 1,
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
            },
            sent_at=event.occurred_at,
            crm_message_id=event.external_id,
            status="pending",
        )
    )
    job = outbox.bump(session, tenant_id, conversation.id, outbox.OUT)
    if job:
        result.jobs.append((outbox.OUT, conversation.id, job))
    result.stored += 1


def _attachment_dict(a: Attachment) -> dict:
    return {k: v for k, v in a.__dict__.items() if v not in (None, "")}


def _apply_state_event(session: Session, tenant_id: int, event: CrmEvent) -> None:
    """Keep our view of the CRM in step (the tenant's rows only)."""
    if event.kind is CrmEventKind.APP_REMOVED:
        # Uninstalled: stop calling the CRM; messages wait (parked) until a
        # re-install re-authorises the tenant.
        session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(status="needs_reauth", status_reason="the app was uninstalled in the CRM")
        )
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
        session.execute(update(Conversation).where(*match).values(status="closed"))
    elif event.kind is CrmEventKind.OWNER_CHANGED and event.owner_id:
        session.execute(update(Conversation).where(*match).values(owner_id=event.owner_id))


def accept_crm_events(runtime, tenant_id: int, events: Iterable[CrmEvent]) -> CrmAcceptResult:  # type: ignore[no-untyped-def]
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
                CrmEventKind.APP_REMOVED,
            ):
                _apply_state_event(session, tenant_id, event)
                result.ignored += 1
            else:
                result.ignored += 1
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


# --------------------------------------------------------------------------
# deliver (job side)
# --------------------------------------------------------------------------


def run_outbound(runtime, conversation_id: int) -> str:  # type: ignore[no-untyped-def]
    job = OutboundDelivery(runtime, conversation_id)
    outcome = run_drain(runtime, outbox.OUT, conversation_id, job.drain_once)
    log.info("deliver conversation=%s outcome=%s sent=%d", conversation_id, outcome, job.sent)
    return outcome


def _sendable_retry(exc: BaseException) -> bool:
    # Never repeat a send that may have gone out.
    return isinstance(exc, RetryableError) and not isinstance(exc, AmbiguousError)


class OutboundDelivery:
    def __init__(self, runtime, conversation_id: int) -> None:  # type: ignore[no-untyped-def]
        self.rt = runtime
        self.settings = runtime.settings
        self.conversation_id = conversation_id
        self.sent = 0

    def drain_once(self, lock) -> Drained | Parked | None:  # type: ignore[no-untyped-def]
        with self.rt.transaction() as session:
            row = session.scalars(
                select(Outbox).where(
                    Outbox.conversation_id == self.conversation_id, Outbox.direction == outbox.OUT
                )
            ).first()
            if row is None or row.state == "parked":
                return Parked("parked" if row else "no-work")
            version = row.version
            message = session.scalars(
                select(Message)
                .where(
                    Message.conversation_id == self.conversation_id,
                    Message.direction == outbox.OUT,
                    Message.status.in_(("pending", "in_flight", "failed")),
                )
                .order_by(Message.seq)
                .limit(1)
            ).first()
            if message is None:
                return Drained(version)
            conversation = session.get(Conversation, self.conversation_id)
            assert conversation is not None
            account = session.get(ChannelAccount, conversation.channel_account_id)
            tenant = session.get(Tenant, conversation.tenant_id)
            assert account is not None and tenant is not None
            if account.tenant_id != tenant.id or message.tenant_id != tenant.id:
                raise PermanentError("tenant mismatch between conversation and its rows")
        if message.status == "failed":
            return self._park(f"reply {message.uid} failed: {message.last_error}")
        if tenant.status == "disabled":
            return self._park(f"tenant disabled: {tenant.status_reason or ''}")
        if account.status != "active":
            # nothing was sent: the reply waits, visible, until the channel
            # is connected again (`bridge replay` then sends it)
            return self._park(f"channel account {account.id} is {account.status}")
        if message.status == "in_flight":
            fresh = utcnow() - dt.timedelta(seconds=self.settings.lock_ttl / 2)
            if message.claimed_at and aware(message.claimed_at) > fresh:
                raise LeaseLost
            self._finish(
                message,
                tenant,
                "failed",
                error="delivery outcome unknown: the send "
                "was interrupted; check the chat, then `bridge replay` to send again",
            )
            return self._park(f"reply {message.uid}: outcome unknown")
        if lock.lost.is_set():
            raise LeaseLost
        with self.rt.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.id == message.id)
                .values(status="in_flight", claimed_at=utcnow(), attempts=Message.attempts + 1)
            )
        channel = self.rt.channel_adapter(account)
        outbound = OutboundMessage(
            bridge_id=message.uid,
            external_thread_id=conversation.external_thread_id,
            text=message.text,
            attachments=tuple(
                attachment_from_dict(a) for a in (message.payload or {}).get("attachments", [])
            ),
        )
        try:
            result = Retrying(
                retry=retry_if_exception(_sendable_retry),
                stop=stop_after_attempt(max(1, self.settings.retry_attempts)),
                wait=_wait(self.settings),
                reraise=True,
            )(channel.send, outbound)
        except AmbiguousError as exc:
            self._finish(
                message, tenant, "failed", error=f"delivery outcome unknown: {exc.message}"
            )
            return self._park(f"reply {message.uid}: outcome unknown")
        except RetryableError as exc:
            with self.rt.transaction() as session:
                session.execute(
                    update(Message).where(Message.id == message.id).values(status="pending")
                )
                outbox.backoff(
                    session,
                    self.conversation_id,
                    outbox.OUT,
                    backoff_until(self.settings, exc),
                    f"retrying: {exc.message}",
                )
            return Parked("backoff")
        except (PermanentError, AuthError) as exc:
            self._finish(
                message, tenant, "failed", error=exc.message or type(exc).__name__, report=True
            )
            return self._park(f"reply {message.uid} failed: {exc.message}")
        with self.rt.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.id == message.id)
                .values(
                    status="sent", last_error=None, channel_message_ids=list(result.external_ids)
                )
            )
            if result.new_thread_id:
                session.execute(
                    update(Conversation)
                    .where(Conversation.id == self.conversation_id)
                    .values(external_thread_id=result.new_thread_id)
                )
        self.sent += 1
        self._report(message, tenant, DeliveryStatus.SENT, None)
        return None

    def _finish(
        self, message: Message, tenant: Tenant, status: str, *, error: str, report: bool = False
    ) -> None:
        with self.rt.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.id == message.id)
                .values(status=status, last_error=error[:2000])
            )
        if report:
            self._report(message, tenant, DeliveryStatus.FAILED, error)

    def _report(
        self, message: Message, tenant: Tenant, status: DeliveryStatus, error: str | None
    ) -> None:
        """Tell the CRM (best effort: the customer already has the message)."""
        if not message.crm_message_id:
            return
        report = DeliveryReport(
            crm_message_id=message.crm_message_id,
            status=status,
            error=error,
            crm_thread_id=(message.payload or {}).get("crm_thread_id"),
        )
        try:
            crm = self.rt.crm_adapter(tenant)
            call_with_retries(self.settings, crm.report_delivery, report)
        except BridgeError as exc:
            log.warning("delivery status for %s not reported: %s", message.uid, type(exc).__name__)
            return
        with self.rt.transaction() as session:
            session.execute(
                update(Message).where(Message.id == message.id).values(delivery_reported=True)
            )

    def _park(self, reason: str) -> Parked:
        with self.rt.transaction() as session:
            outbox.park(session, self.conversation_id, outbox.OUT, reason[:2000])
        return Parked("parked")
