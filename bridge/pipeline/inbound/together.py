"""A backlog across many known conversations, written together.

When messages for many conversations wait at once (a busy hour, a backlog
after an outage, a burst), the ordinary path writes each conversation's
messages with a request of its own: a request per conversation, each one
exposed to the CRM's faults, and every 429 stops the whole account for its
``Retry-After``. A CRM whose timeline takes entries of several records in
one request (``CrmAdapter.batch_size`` > 1) and looks them up in one request
on a retry (``finds_entries_at_once``: HubSpot's notes ``batch/create`` and
search, Bitrix24's ``batch``, amoCRM's notes list by many leads; not a
mapping that also writes to a chat read back one chat a request) writes them
together:

1. The job holding a conversation that is *known* — its person and its
   deal/lead/ticket in the CRM already, nothing about them uncertain or to be
   updated, every waiting message never tried — and that sees other sync
   jobs queued behind it, takes the leases of up to ``batch_size - 1`` other
   known conversations of the tenant with waiting work that no job holds.
2. Their messages are claimed (``in_flight``) in one transaction and written
   with one ``append_entries`` per request's worth (the opening cohort's
   last step, :class:`bridge.pipeline.inbound.batched.Steps`): a retry after
   an error that may have committed looks the entries up first; what a failed
   call wrote is recorded at once.
3. Each other conversation is marked idle if the batch wrote everything it
   had waiting (only if nothing arrived since: ``mark_idle`` checks the
   version); else its lease is let go and a job is queued for it. After a
   transient error that outlived the retries (or an auth error) they back
   off; after a refusal the leading job drains each the ordinary way (the
   claims are its own), which names the entry the CRM refuses. The leading
   job goes on draining its own conversation.

Order per conversation holds: a conversation's messages are written by
whoever holds its lease, oldest first, one batch after the other.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from bridge import crm_calls, outbox
from bridge.errors import AuthError, PermanentError, RetryableError
from bridge.jobs import SYNC_QUEUE, enqueue
from bridge.locks import ConversationLock
from bridge.model import CrmRef, utcnow
from bridge.pipeline.drain import Drained, LeaseLost, Parked, drain_held
from bridge.pipeline.inbound.batched import Member, Steps
from bridge.pipeline.inbound.cohort import CANDIDATES, Leases
from bridge.pipeline.retry import backoff_until
from bridge.rows import aware
from bridge.tables import (
    Conversation,
    ConversationStatus,
    CrmWrite,
    Message,
    MessageStatus,
    Outbox,
    OutboxState,
    TenantStatus,
)
from crm_adapters.base import CrmAdapter
from mappings import ChannelRule

if TYPE_CHECKING:
    from bridge.pipeline.inbound.sync import InboundSync, _Snapshot
    from bridge.runtime import Runtime

__all__ = ["append_together", "is_known"]

log = logging.getLogger(__name__)


def is_known(
    sync: InboundSync, snap: _Snapshot, rule: ChannelRule, batch: list[Message]
) -> tuple[CrmRef, CrmRef | None] | None:
    """The conversation's contact and entity refs when it can be written
    with others (see the module docstring), else None."""
    conv, contact = snap.conversation, snap.contact
    if not batch or conv.status != ConversationStatus.OPEN:
        return None
    if snap.tenant.status != TenantStatus.ACTIVE or snap.account.awaiting_crm_setup:
        return None
    if rule.object == "unsorted" or not contact.crm_contact_id or contact.crm_dirty:
        return None
    if any(m.status != MessageStatus.PENDING or m.attempts for m in batch):
        return None
    if rule.task.when == "new_entity" and conv.task_state == CrmWrite.CREATING:
        return None
    entity: CrmRef | None = None
    if rule.object != "none":
        if not conv.crm_entity_id or conv.crm_entity_state != CrmWrite.SYNCED:
            return None
        recheck = sync.settings.entity_recheck
        if recheck and snap.last_synced_at is not None:
            quiet = (aware(batch[0].sent_at) - snap.last_synced_at).total_seconds()
            if quiet >= recheck:
                return None  # the ordinary path asks the CRM whether it is open
        entity = CrmRef(conv.crm_entity_type or rule.object, conv.crm_entity_id)
    return CrmRef("contact", contact.crm_contact_id), entity


def append_together(
    leader: InboundSync,
    snap: _Snapshot,
    adapter: CrmAdapter,
    rule: ChannelRule,
    batch: list[Message],
    lock: ConversationLock,
) -> bool:
    """Write ``batch`` with other known conversations' waiting messages (see
    the module docstring). False when there is nobody to write it with (the
    caller appends the ordinary way); True when the batch ran (the caller
    drains again). A transient error that outlived the retries, an auth
    error or a refusal propagates for the caller's handlers, the others
    finished as said above."""
    rt = leader.rt
    tenant_id = leader._tenant_id
    if adapter.batch_size < 2 or not adapter.finds_entries_at_once:
        return False
    if tenant_id is None or not _backlog(rt):
        return False
    refs = is_known(leader, snap, rule, batch)
    if refs is None:
        return False
    own = Member(leader, snap, rule, batch, lock, contact=refs[0], entity=refs[1])
    leases = Leases()
    members: list[Member] = []
    failure: BaseException | None = None
    try:
        members = _gather(leader, adapter, tenant_id, leases)
        if not members:
            return False
        log.info(
            "conversation=%s writing with %d other known conversations of tenant %s",
            leader.conversation_id,
            len(members),
            tenant_id,
        )
        if lock.lost.is_set():
            raise LeaseLost
        try:
            everyone = [own, *members]
            with crm_calls.recording(rt, (m.snap.conversation.id for m in everyone)):
                Steps(rt, adapter, everyone, lock)._entries()
        except PermanentError as exc:
            # refused: each goes the ordinary way, which names the entry the
            # CRM refuses (what the call may have written is looked up first)
            log.info("writing together stopped (%s); one by one instead", exc.message)
        return True
    except (RetryableError, AuthError) as exc:
        failure = exc
        raise
    finally:
        _finish(rt, members, leases, failure)


def _backlog(rt: Runtime) -> bool:
    """Other sync jobs wait in the queue (so other conversations have work)."""
    try:
        return bool(rt.queues[SYNC_QUEUE].count)
    except OSError:
        return False
    except Exception:  # noqa: BLE001 — redis.RedisError: no batch, the ordinary way
        return False


def _candidates(rt: Runtime, tenant_id: int, leader_id: int, limit: int) -> list[int]:
    """The tenant's other conversations with waiting inbound work that are
    open and have their entity (or need none), oldest work first."""
    now = utcnow()
    with rt.read_engine.connect() as conn:
        rows = conn.scalars(
            select(Conversation.id)
            .join(Outbox, Outbox.conversation_id == Conversation.id)
            .where(
                Outbox.tenant_id == tenant_id,
                Outbox.direction == outbox.IN,
                Outbox.state == OutboxState.PENDING,
                or_(Outbox.not_before.is_(None), Outbox.not_before <= now),
                Conversation.id != leader_id,
                Conversation.status == ConversationStatus.OPEN,
                Conversation.crm_contact_id.is_not(None),
            )
            .order_by(Outbox.updated_at, Conversation.id)
            .limit(limit)
        )
        return [int(r) for r in rows]


def _gather(
    leader: InboundSync, adapter: CrmAdapter, tenant_id: int, leases: Leases
) -> list[Member]:
    """Known conversations whose leases could be taken, up to
    ``batch_size - 1``; one taken that turns out not to be known is let go
    (and its work queued) by :func:`_finish`."""
    from bridge.pipeline.inbound.sync import BATCH, InboundSync

    rt = leader.rt
    wanted = adapter.batch_size - 1
    per_request = adapter.entries_per_request
    members: list[Member] = []
    for conversation_id in _candidates(rt, tenant_id, leader.conversation_id, wanted * CANDIDATES):
        if len(members) >= wanted:
            break
        lock = leases.take(rt, conversation_id)
        if lock is None:
            continue  # its own job is at it
        sync = InboundSync(rt, conversation_id)
        sync._adapter, sync._tenant_id = adapter, tenant_id
        sync._tried_together = True  # no opener inside this one
        sync.together = False
        try:
            snap = sync._load()
            if isinstance(snap, (Drained, Parked)) or snap.tenant.id != tenant_id:
                continue
            rule = sync._rule(snap)
        except (LeaseLost, PermanentError):
            continue
        batch: list[Message] = []
        for message in snap.messages:
            if message.status == MessageStatus.FAILED:
                break
            batch.append(message)
        batch = batch[: per_request or BATCH]
        refs = is_known(sync, snap, rule, batch)
        if refs is not None:
            members.append(Member(sync, snap, rule, batch, lock, contact=refs[0], entity=refs[1]))
    return members


def _finish(
    rt: Runtime, members: list[Member], leases: Leases, failure: BaseException | None
) -> None:
    """Every conversation taken is finished (see the module docstring) and
    its lease let go."""
    rest: list[int] = []
    try:
        conversations = [int(lock.name.rsplit(":", 1)[1]) for lock in leases.locks]
        if not conversations:
            return
        if isinstance(failure, (RetryableError, AuthError)):
            retryable = (
                failure if isinstance(failure, RetryableError) else RetryableError(failure.message)
            )
            until = backoff_until(rt.settings, retryable)
            with rt.transaction() as session:
                for conversation_id in conversations:
                    outbox.backoff(
                        session,
                        conversation_id,
                        outbox.IN,
                        until,
                        f"written together: {failure}"[:2000],
                    )
            return
        idle: set[int] = set()
        done = [m for m in members if m.drained and not m.lock.lost.is_set()]
        if done:
            with rt.transaction() as session:
                for m in done:
                    if outbox.mark_idle(session, m.snap.conversation.id, outbox.IN, m.snap.version):
                        idle.add(m.snap.conversation.id)
        by_id = {m.snap.conversation.id: m for m in members}
        for lock, conversation_id in zip(leases.locks, conversations, strict=True):
            if conversation_id in idle or lock.lost.is_set():
                continue
            member = by_id.get(conversation_id)
            if member is not None and not {x.id for x in member.batch} <= member.sync._recorded:
                # claimed by this job and not all written (a refusal): its
                # claims are this job's, so this job drains it, as its own
                # job would have (a job of its own would wait for the claims
                # to age past the lease first)
                outcome = drain_held(rt, outbox.IN, conversation_id, lock, member.sync.drain_once)
                log.info("conversation=%s drained by the writer: %s", conversation_id, outcome)
                continue
            rest.append(conversation_id)
    finally:
        leases.close()
    # after the leases are let go: whoever takes the job finds them free
    for conversation_id in rest:
        enqueue(
            rt.queues,
            outbox.IN,
            conversation_id,
            f"sync-{conversation_id}-together-{uuid.uuid4().hex[:12]}",
            timeout=rt.settings.job_timeout,
        )
