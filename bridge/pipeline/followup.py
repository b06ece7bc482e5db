"""Follow-up work: what is due once a message has landed, as its own outbox
work — the channel told that an inbound event was handled (a button press
answered), the CRM told what happened to a rep's reply (its delivery
report).

A message that has a follow-up gets ``followup_status = pending`` in the
same transaction that records it, and the conversation's outbox row for the
follow-up's direction is bumped, so the work is recorded before anything is
tried and survives any crash. The job (one side effect: the call to the far
side) drains the conversation's pending follow-ups in order, with in-job
retries; a transient failure that outlives them backs the work off (the
sweeper resumes it, until the far side has it); a refusal marks that
message's follow-up ``failed`` with the reason, shown by ``bridge status``,
without holding the others back; an authorisation failure parks the work
until the tenant is authorised again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from bridge import outbox
from bridge.errors import AuthError, PermanentError, RetryableError, SkippableError
from bridge.locks import ConversationLock
from bridge.pipeline.drain import Drained, LeaseLost, Parked, run_drain
from bridge.pipeline.retry import backoff_until, call_with_retries
from bridge.tables import (
    ChannelAccount,
    Conversation,
    FollowupStatus,
    Message,
    Outbox,
    OutboxState,
    Tenant,
    TenantStatus,
)

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["Followup", "FollowupItem", "due", "run_followups"]

log = logging.getLogger(__name__)

BATCH = 20


@dataclass
class FollowupItem:
    """One message whose follow-up is due, with what it belongs to."""

    message: Message
    conversation: Conversation
    tenant: Tenant
    account: ChannelAccount


class Followup(Protocol):
    """One kind of follow-up work."""

    #: its outbox direction (``outbox.ACK``, ``outbox.REPORT``)
    direction: str
    #: the direction of the messages it follows up
    message_direction: str

    def perform(self, runtime: Runtime, item: FollowupItem) -> None:
        """The one side effect (raises the adapter's errors)."""


def due(session: Session, message: Message, direction: str) -> str | None:
    """Record in ``session`` that ``message`` has a follow-up of
    ``direction`` due; the job id to enqueue after the commit (None when one
    is responsible already)."""
    message.followup_status = FollowupStatus.PENDING
    message.followup_error = None
    # Written even when the row read "pending" already: a report job may
    # mark it done meanwhile (it read the message before this change), and
    # an UPDATE that left the column out would keep its "done" over the
    # newer state (PostgreSQL, READ COMMITTED: the lost read report).
    flag_modified(message, "followup_status")
    return outbox.bump(session, message.tenant_id, message.conversation_id, direction)


def run_followups(runtime: Runtime, conversation_id: int, kind: Followup) -> str:
    job = _Drain(runtime, conversation_id, kind)
    outcome = run_drain(runtime, kind.direction, conversation_id, job.drain_once)
    log.info(
        "%s conversation=%s outcome=%s done=%d failed=%d",
        kind.direction,
        conversation_id,
        outcome,
        job.done,
        job.failed,
    )
    return outcome


class _Drain:
    def __init__(self, runtime: Runtime, conversation_id: int, kind: Followup) -> None:
        self.rt = runtime
        self.conversation_id = conversation_id
        self.kind = kind
        self.done = 0
        self.failed = 0

    def drain_once(self, lock: ConversationLock) -> Drained | Parked | None:
        loaded = self._load()
        if isinstance(loaded, (Drained, Parked)):
            return loaded
        for item in loaded:
            if lock.lost.is_set():
                raise LeaseLost
            log.debug(
                "%s of message %s: %s/%s",
                self.kind.direction,
                item.message.uid,
                item.message.status,
                (item.message.payload or {}).get("delivery"),
            )
            try:
                call_with_retries(self.rt.settings, self.kind.perform, self.rt, item)
            except AuthError as exc:
                return self._park(f"auth: {exc.message}")
            except (PermanentError, SkippableError) as exc:
                self._finish(item.message, FollowupStatus.FAILED, exc.message or type(exc).__name__)
                continue
            except RetryableError as exc:
                until = backoff_until(self.rt.settings, exc)
                with self.rt.transaction() as session:
                    outbox.backoff(
                        session,
                        self.conversation_id,
                        self.kind.direction,
                        until,
                        f"retrying: {exc.message}",
                    )
                return Parked("backoff")
            self._finish(item.message, FollowupStatus.DONE, None)
        return None

    def _load(self) -> list[FollowupItem] | Drained | Parked:
        with self.rt.transaction() as session:
            row = session.scalars(
                select(Outbox).where(
                    Outbox.conversation_id == self.conversation_id,
                    Outbox.direction == self.kind.direction,
                )
            ).first()
            if row is None or row.state == OutboxState.PARKED:
                return Parked("parked" if row else "no-work")
            messages = list(
                session.scalars(
                    select(Message)
                    .where(
                        Message.conversation_id == self.conversation_id,
                        Message.direction == self.kind.message_direction,
                        Message.followup_status == FollowupStatus.PENDING,
                    )
                    .order_by(Message.seq)
                    .limit(BATCH)
                )
            )
            if not messages:
                return Drained(row.version)
            conversation = session.get(Conversation, self.conversation_id)
            assert conversation is not None
            tenant = session.get(Tenant, conversation.tenant_id)
            account = session.get(ChannelAccount, conversation.channel_account_id)
            assert tenant is not None and account is not None
            if account.tenant_id != tenant.id:
                raise PermanentError("tenant mismatch between conversation and its rows")
            if tenant.status == TenantStatus.DISABLED:
                outbox.park(session, self.conversation_id, self.kind.direction, "tenant disabled")
                return Parked("parked")
            return [FollowupItem(m, conversation, tenant, account) for m in messages]

    def _finish(self, message: Message, status: str, error: str | None) -> None:
        """Record the outcome, unless the message changed since it was read
        (a newer delivery status made its report due again meanwhile): then
        it stays pending and the next round reports what it says now."""
        with self.rt.transaction() as session:
            done: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(Message)
                .where(Message.id == message.id, Message.updated_at == message.updated_at)
                .values(
                    followup_status=status,
                    followup_error=error[:2000] if error else None,
                    followup_attempts=Message.followup_attempts + 1,
                )
            )
        if not done.rowcount:
            log.info("%s of message %s: changed meanwhile, again", self.kind.direction, message.uid)
            return
        if status == FollowupStatus.DONE:
            self.done += 1
        else:
            self.failed += 1
            log.warning("%s of message %s failed", self.kind.direction, message.uid)

    def _park(self, reason: str) -> Parked:
        with self.rt.transaction() as session:
            outbox.park(session, self.conversation_id, self.kind.direction, reason[:2000])
        return Parked("parked")
