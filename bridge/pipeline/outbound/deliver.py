"""The outbound pipeline's job: a conversation's replies sent through its
channel, one by one, in order, exactly once.

Most channels have no "did you already send this?" lookup (Telegram has
none), so a reply whose send may have happened (a read timeout, a job
killed mid-send) is never sent blindly again: it is marked ``failed`` as
"outcome unknown" and the conversation waits for an operator (``bridge
replay``). A channel whose receiver drops a repeated delivery by its id
(``ChannelAdapter.idempotent_sends``) is simply sent again. Exactly once
means no duplicate reaches the customer; nothing is dropped silently. What
happened is then reported to the CRM as its own follow-up work
(:mod:`bridge.pipeline.outbound.report`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from bridge import consent, metrics, outbox
from bridge.db import rowcount
from bridge.errors import (
    AmbiguousError,
    AuthError,
    PartlySentError,
    PermanentError,
    RetryableError,
    WindowClosedError,
)
from bridge.jobs import enqueue
from bridge.locks import ConversationLock
from bridge.model import OutboundMessage, SendResult, utcnow
from bridge.pipeline.drain import Drained, LeaseLost, Parked, run_drain
from bridge.pipeline.followup import due
from bridge.pipeline.inbound import threads
from bridge.pipeline.outbound.window import ReplyWindow
from bridge.pipeline.retry import backoff_until, send_with_retries
from bridge.rows import attachment_from_dict, aware
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Conversation,
    Message,
    MessageStatus,
    Outbox,
    OutboxState,
    Tenant,
    TenantStatus,
)

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["run_outbound"]

log = logging.getLogger(__name__)


def run_outbound(runtime: Runtime, conversation_id: int) -> str:
    job = OutboundDelivery(runtime, conversation_id)
    outcome = run_drain(runtime, outbox.OUT, conversation_id, job.drain_once)
    log.info("deliver conversation=%s outcome=%s sent=%d", conversation_id, outcome, job.sent)
    return outcome


class OutboundDelivery:
    def __init__(self, runtime: Runtime, conversation_id: int) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.conversation_id = conversation_id
        self.sent = 0
        #: the channel's kind, once loaded (the metrics' label)
        self.kind = ""

    def drain_once(self, lock: ConversationLock) -> Drained | Parked | None:
        loaded = self._load()
        if isinstance(loaded, (Drained, Parked)):
            return loaded
        message, conversation, tenant, account = loaded
        if message.status == MessageStatus.FAILED:
            return self._park(f"reply {message.uid} failed: {message.last_error}")
        if tenant.status == TenantStatus.DISABLED:
            return self._park(f"tenant disabled: {tenant.status_reason or ''}")
        if account.status != ChannelStatus.ACTIVE:
            # nothing was sent: the reply waits, visible, until the channel
            # is connected again (`bridge replay` then sends it)
            return self._park(f"channel account {account.id} is {account.status}")
        channel = self.rt.channel_adapter(account)
        self.kind = account.kind
        if message.status == MessageStatus.IN_FLIGHT:
            fresh = utcnow() - dt.timedelta(seconds=self.settings.lock_ttl / 2)
            if message.claimed_at and aware(message.claimed_at) > fresh:
                raise LeaseLost
        if message.status == MessageStatus.IN_FLIGHT and not channel.idempotent_sends:
            self._finish(
                message,
                MessageStatus.FAILED,
                "delivery outcome unknown: the send was interrupted; "
                "check the chat, then `bridge replay` to send again",
            )
            return self._park(f"reply {message.uid}: outcome unknown")
        if lock.lost.is_set():
            raise LeaseLost
        with self.rt.transaction() as session:
            claimed = session.execute(
                update(Message)
                .where(
                    Message.id == message.id,
                    # withdrawn meanwhile (a cascade step whose wait ended,
                    # ``bridge.cascade``): never sent after all
                    Message.status.in_((MessageStatus.PENDING, MessageStatus.IN_FLIGHT)),
                )
                .values(
                    status=MessageStatus.IN_FLIGHT,
                    claimed_at=utcnow(),
                    attempts=Message.attempts + 1,
                )
            )
        if rowcount(claimed) == 0:
            return None  # it changed meanwhile: look again
        outbound = OutboundMessage(
            bridge_id=message.uid,
            external_thread_id=conversation.external_thread_id,
            text=message.text,
            attachments=tuple(
                attachment_from_dict(a) for a in (message.payload or {}).get("attachments", [])
            ),
            # parts an earlier attempt delivered (a reply refused part-way)
            sent_parts=tuple(str(i) for i in message.channel_message_ids or ()),
            thread_state=dict(conversation.channel_state or {}),
            auto=(message.payload or {}).get("auto"),
            ticket=self._ticket(tenant, conversation),
            conversation_uid=conversation.uid,
            reply_to=self._answered((message.payload or {}).get("reply_to")),
            buttons=tuple(
                (str(b[0]), str(b[1])) for b in (message.payload or {}).get("buttons") or ()
            ),
        )
        window = ReplyWindow(
            self.rt, tenant, conversation, account.kind, channel.reply_window or dt.timedelta(0)
        )
        withdrawn = self._consent_refusal(tenant, conversation, channel, window)
        if withdrawn is not None:
            self._refuse(message, withdrawn, "consent withdrawn")
            return None
        # the channel refused it earlier for the window (a status said so)
        refused_before = bool((message.payload or {}).get("window_closed"))
        if channel.reply_window is not None and (refused_before or window.closed()):
            templated = window.instead(outbound)
            if templated is None:
                self._refuse(message, window.reason(), "reply window closed")
                return None
            outbound = templated
        try:
            try:
                result = self._send(channel, message, outbound)
            except WindowClosedError:
                # the provider says the window is closed (WhatsApp 131047:
                # our clock and theirs disagree, or the window is not what
                # we thought): the same as seeing it closed ourselves
                instead = window.instead(outbound) if outbound.template is None else None
                if instead is None:
                    self._refuse(message, window.reason(), "reply window closed")
                    return None
                result = self._send(channel, message, instead)
        except AmbiguousError as exc:
            if channel.idempotent_sends:
                return self._back_off(message, exc)
            self._finish(message, MessageStatus.FAILED, f"delivery outcome unknown: {exc.message}")
            return self._park(f"reply {message.uid}: outcome unknown")
        except RetryableError as exc:
            return self._back_off(message, exc)
        except (PermanentError, AuthError) as exc:
            reason = exc.message or type(exc).__name__
            self._finish(message, MessageStatus.FAILED, reason, report=True)
            return self._park(f"reply {message.uid} failed: {reason}")
        self._sent(message, result)
        return None

    def _answered(self, reply_to: Any) -> str | None:
        """The channel's id of the message a rep answered: the bridge id the
        CRM named turned into the customer message's own id (as is when it
        already is the channel's)."""
        if not isinstance(reply_to, str) or not reply_to:
            return None
        with self.rt.read_session() as session:
            payload = session.scalar(
                select(Message.payload).where(
                    Message.uid == reply_to,
                    Message.conversation_id == self.conversation_id,
                    Message.direction == outbox.IN,
                )
            )
        if payload is None:
            return reply_to
        provider_id = (payload or {}).get("provider_message_id")
        return str(provider_id) if provider_id else None

    def _send(self, channel: Any, message: Message, outbound: OutboundMessage) -> SendResult:
        return send_with_retries(
            self.settings,
            channel.send,
            outbound,
            # the receiver drops a repeat by the delivery's id: send again
            resend_ambiguous=channel.idempotent_sends,
            on_partial=lambda exc: self._partly_sent(message, exc),
        )

    def _refuse(self, message: Message, reason: str, why: str) -> None:
        """Not sent, by the channel's rules: the CRM is told why, and the
        conversation's later replies are not held back."""
        self._finish(message, MessageStatus.REFUSED, reason, report=True)
        log.info("deliver: reply %s refused: %s", message.uid, why)

    def _consent_refusal(
        self, tenant: Tenant, conversation: Conversation, channel: Any, window: ReplyWindow
    ) -> str | None:
        """Why the customer may not be written to (they withdrew consent and
        have not written since, where writing counts), or None."""
        if conversation.consent != consent.WITHDRAWN:
            return None
        last = window.last_from_customer() if channel.consent_by_writing else None
        language = self.rt.mapping_for(tenant).language
        return consent.refusal(conversation, channel.title, language, last)

    def _ticket(self, tenant: Tenant, conversation: Conversation) -> str | None:
        if conversation.ticket_number is None:
            return None
        return self.rt.mapping_for(tenant).ticket(conversation.ticket_number)

    def _load(
        self,
    ) -> tuple[Message, Conversation, Tenant, ChannelAccount] | Drained | Parked:
        with self.rt.transaction() as session:
            row = session.scalars(
                select(Outbox).where(
                    Outbox.conversation_id == self.conversation_id, Outbox.direction == outbox.OUT
                )
            ).first()
            if row is None or row.state == OutboxState.PARKED:
                return Parked("parked" if row else "no-work")
            message = session.scalars(
                select(Message)
                .where(
                    Message.conversation_id == self.conversation_id,
                    Message.direction == outbox.OUT,
                    Message.status.in_(
                        (MessageStatus.PENDING, MessageStatus.IN_FLIGHT, MessageStatus.FAILED)
                    ),
                )
                .order_by(Message.seq)
                .limit(1)
            ).first()
            if message is None:
                return Drained(row.version)
            conversation = session.get(Conversation, self.conversation_id)
            assert conversation is not None
            account = session.get(ChannelAccount, conversation.channel_account_id)
            tenant = session.get(Tenant, conversation.tenant_id)
            assert account is not None and tenant is not None
            if account.tenant_id != tenant.id or message.tenant_id != tenant.id:
                raise PermanentError("tenant mismatch between conversation and its rows")
            return message, conversation, tenant, account

    def _sent(self, message: Message, result: SendResult) -> None:
        """Sent: recorded with the channel's ids, and its delivery report
        due to the CRM (its own work), in one transaction."""
        jobs: list[tuple[str, int, str]] = []
        with self.rt.transaction() as session:
            # a channel's report that came before this commit is kept by
            # the normaliser under the account's row held exclusively:
            # shared here, so that one of the two sees the other's write
            kind = session.scalar(
                select(ChannelAccount.kind)
                .where(ChannelAccount.id == message.channel_account_id)
                .with_for_update(read=True)
            )
            row = session.get(Message, message.id)
            assert row is not None
            row.status, row.last_error = MessageStatus.SENT, None
            row.channel_message_ids = list(result.external_ids)
            job = due(session, row, outbox.REPORT) if row.crm_message_id else None
            if result.new_thread_id:
                session.execute(
                    update(Conversation)
                    .where(Conversation.id == self.conversation_id)
                    .values(external_thread_id=result.new_thread_id)
                )
            threads.apply_early(session, row, str(kind), jobs)
        self.sent += 1
        metrics.delivered(self.rt.redis, str(kind), message.tenant_id, "sent")
        self._enqueue_report(job)
        for direction, conversation_id, queued in jobs:
            enqueue(self.rt.queues, direction, conversation_id, queued)

    def _finish(self, message: Message, status: str, error: str, *, report: bool = False) -> None:
        with self.rt.transaction() as session:
            row = session.get(Message, message.id)
            assert row is not None
            row.status, row.last_error = status, error[:2000]
            job = due(session, row, outbox.REPORT) if report and row.crm_message_id else None
        metrics.delivered(self.rt.redis, self.kind, message.tenant_id, status)
        self._enqueue_report(job)

    def _partly_sent(self, message: Message, exc: PartlySentError) -> None:
        """Keep the parts that went out (and a moved thread): no attempt,
        this job's or a later one's, sends them again."""
        with self.rt.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.id == message.id)
                .values(channel_message_ids=list(exc.sent_ids))
            )
            if exc.new_thread_id:
                session.execute(
                    update(Conversation)
                    .where(Conversation.id == self.conversation_id)
                    .values(external_thread_id=exc.new_thread_id)
                )

    def _enqueue_report(self, job: str | None) -> None:
        if job:
            enqueue(self.rt.queues, outbox.REPORT, self.conversation_id, job)

    def _back_off(self, message: Message, exc: RetryableError) -> Parked:
        with self.rt.transaction() as session:
            session.execute(
                update(Message).where(Message.id == message.id).values(status=MessageStatus.PENDING)
            )
            outbox.backoff(
                session,
                self.conversation_id,
                outbox.OUT,
                backoff_until(self.settings, exc),
                f"retrying: {exc.message}",
            )
        metrics.delivered(self.rt.redis, self.kind, message.tenant_id, "retry")
        return Parked("backoff")

    def _park(self, reason: str) -> Parked:
        with self.rt.transaction() as session:
            outbox.park(session, self.conversation_id, outbox.OUT, reason[:2000])
        return Parked("parked")
