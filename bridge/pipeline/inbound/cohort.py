"""A burst of new customers, opened together.

Opening a new conversation costs several CRM requests: the person looked
up (a search, which a CRM may limit on its own, to a few a second),
created, the deal / lead / ticket, the owner's task, the first timeline
entry. For a burst of new customers that is the bound, one conversation
after the other. A CRM with batch calls (``CrmAdapter.batch_size`` > 1)
does each step for many people in one request, so the job that meets a new
conversation opens the tenant's other new conversations with it:

1. Under the tenant's *open* lease (one opener per tenant at a time; the
   ordinary path takes it too before it creates a contact, so two jobs
   never create the same person) it takes the leases of up to
   ``batch_size - 1`` other conversations of the tenant that wait for their
   first CRM write and that no job holds.
2. The batched steps (:mod:`bridge.pipeline.inbound.batched`): contacts
   looked up in one ``find_contacts`` and the rest created in one
   ``create_contacts``; entities, tasks and the first entries, one call
   each, every write marked (``creating``, ``in_flight``) before it is sent.
3. The open lease is let go, and each member is finished as its own job
   (which found it busy) would have: marked idle when everything it had
   waiting was written, else drained the ordinary way under its lease.
4. While more new conversations wait and no other job waits for the open
   lease, the next batch (up to :data:`MAX_ROUNDS`).

Exactly once: every step is one retry unit whose retry, after an error that
may have committed (``AmbiguousError``: a timeout after the CRM wrote),
first looks up what the failed call may have made and creates only the
rest. A transient error that outlives the retries backs every member off
(the sweeper resumes them, and their next attempt looks up first: the
``creating`` marks and claims stay); a refusal ends the batch and leaves
each member to the ordinary path, which names the item the CRM refuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from bridge import crm_calls, outbox
from bridge.errors import AuthError, PermanentError, RetryableError
from bridge.locks import ConversationLock, lock_name
from bridge.model import utcnow
from bridge.pipeline.drain import Drained, LeaseLost, Parked, drain_held
from bridge.pipeline.inbound.batched import Member, Steps
from bridge.pipeline.retry import backoff_until
from bridge.tables import (
    Conversation,
    ConversationStatus,
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

__all__ = ["CANDIDATES", "Leases", "contact_lease", "open_together"]

log = logging.getLogger(__name__)

#: how many conversations of a tenant one query considers per member wanted
#: (some are held by other jobs or turn out not to be new)
CANDIDATES = 2
#: batches one job opens in a row while more new conversations wait (then
#: it leaves the rest to their own jobs)
MAX_ROUNDS = 10


def is_new(
    sync: InboundSync,
    snap: _Snapshot,
    adapter: CrmAdapter,
    rule: ChannelRule,
    batch: Sequence[Message],
) -> bool:
    """The conversation waits for its first CRM write and nothing about it
    is uncertain: no entity or task was ever tried, no message of ``batch``
    may have been written, the contact has nothing to update, and the
    person has no open entity the mapping reuses."""
    conv = snap.conversation
    if adapter.batch_size < 2 or rule.object in ("none", "unsorted") or not batch:
        return False
    if conv.status != ConversationStatus.OPEN:
        return False
    if conv.crm_entity_id or conv.crm_entity_state is not None or conv.task_state is not None:
        return False
    if snap.contact.crm_dirty or any(
        m.status != MessageStatus.PENDING or m.attempts for m in batch
    ):
        return False
    return not (
        rule.reuse == "open" and sync._open_entity_of_contact(snap, rule.object) is not None
    )


@contextmanager
def contact_lease(runtime: Runtime, tenant_id: int) -> Iterator[bool]:
    """The tenant's open lease (see the module docstring), waited for up to
    its time to live (a dead holder's lease expires by then); yields False
    when it could not be had, and the caller goes on without it."""
    lease = ConversationLock(
        runtime.redis, f"bridge:lock:open:{tenant_id}", runtime.settings.lock_ttl
    )
    held = lease.acquire()
    if not held:
        # counted while waiting: an opener going on to its next batch
        # stops instead (_waiting), so nobody waits for more than one batch
        waiting = _waiting_key(tenant_id)
        runtime.redis.incr(waiting)
        runtime.redis.expire(waiting, max(1, int(runtime.settings.lock_ttl * 2)))
        try:
            deadline = time.monotonic() + runtime.settings.lock_ttl + 1.0
            while not held and time.monotonic() < deadline:
                time.sleep(0.05)
                held = lease.acquire()
        finally:
            runtime.redis.decr(waiting)
    if not held:
        yield False
        return
    try:
        with lease.keepalive():
            yield True
    finally:
        lease.release()


class Leases:
    """Other conversations' leases, renewed by the process's lease renewer
    (``ConversationLock.keepalive``) until :meth:`close` lets them go."""

    def __init__(self) -> None:
        self.locks: list[ConversationLock] = []
        self._kept = ExitStack()

    def take(self, runtime: Runtime, conversation_id: int) -> ConversationLock | None:
        lock = ConversationLock(
            runtime.redis, lock_name(outbox.IN, conversation_id), runtime.settings.lock_ttl
        )
        if not lock.acquire():
            return None
        self._kept.enter_context(lock.keepalive())
        self.locks.append(lock)
        return lock

    def close(self) -> None:
        self._kept.close()  # no renewal of them runs past this
        for lock in self.locks:
            lock.release()


def open_together(
    leader: InboundSync,
    snap: _Snapshot,
    adapter: CrmAdapter,
    rule: ChannelRule,
    batch: list[Message],
    lock: ConversationLock,
) -> bool:
    """Open ``snap``'s conversation with the tenant's other new ones (see the
    module docstring), then, while more new conversations of the tenant
    wait (a burst larger than a batch), the next ``batch_size`` of them,
    up to :data:`MAX_ROUNDS` batches. False when there is nobody to open it
    with (the caller goes the ordinary way); True when it ran (the caller
    drains again: what the batches left goes the ordinary way). A transient
    error that outlived the retries, or an auth error, propagates for the
    caller's handlers, the other members backed off."""
    if not is_new(leader, snap, adapter, rule, batch):
        return False
    rt = leader.rt
    # a CRM that opens one conversation in one request (opens_at_once)
    # does two about as cheaply one by one
    minimum = 3 if adapter.opens_at_once else 2
    if len(_candidates(rt, snap.tenant.id, leader.conversation_id, minimum - 1)) < minimum - 1:
        return False
    own: Member | None = Member(leader, snap, rule, batch, lock)
    for round_ in range(MAX_ROUNDS):
        if round_ and _waiting(rt, snap.tenant.id):
            break  # another job waits for the open lease: its turn
        if not _round(leader, own, adapter, lock, minimum):
            return round_ > 0
        own = None
    return True


def _waiting_key(tenant_id: int) -> str:
    return f"bridge:open:waiting:{tenant_id}"


def _waiting(rt: Runtime, tenant_id: int) -> bool:
    """Some job of the tenant waits for the open lease (:func:`contact_lease`)."""
    raw = rt.redis.get(_waiting_key(tenant_id))
    try:
        return int(raw or 0) > 0
    except (TypeError, ValueError):
        return False


def _round(
    leader: InboundSync,
    own: Member | None,
    adapter: CrmAdapter,
    lock: ConversationLock,
    minimum: int,
) -> bool:
    """One batch: gather (``own`` first, if given), open, finish. False when
    too few new conversations were found to be worth a batch."""
    rt = leader.rt
    tenant_id = leader._tenant_id
    assert tenant_id is not None
    leases = Leases()
    members: list[Member] = []
    failure: BaseException | None = None
    opened = False
    try:
        with contact_lease(rt, tenant_id) as held:
            if not held:
                return False
            if lock.lost.is_set():
                raise LeaseLost
            members = _gather(leader, own, adapter, leases)
            if len(members) < minimum:
                return False  # too few new after all (what was taken is drained below)
            log.info(
                "conversation=%s opening %d new conversations of tenant %s together",
                leader.conversation_id,
                len(members),
                tenant_id,
            )
            try:
                with crm_calls.recording(rt, (m.snap.conversation.id for m in members)):
                    Steps(rt, adapter, members, lock).run()
            except PermanentError as exc:
                # a refused batch: each member goes the ordinary way, which
                # names the item the CRM refuses
                log.info("opening together stopped (%s); one by one instead", exc.message)
            opened = True
        return opened
    except (RetryableError, AuthError) as exc:
        failure = exc
        raise
    finally:
        _finish(rt, leader, members, leases, failure)


def _candidates(rt: Runtime, tenant_id: int, leader_id: int, limit: int) -> list[int]:
    """Conversations of the tenant (not the leader's) with pending inbound
    work and no CRM entity or task tried yet, oldest work first."""
    now = utcnow()
    with rt.transaction() as session:
        rows = session.scalars(
            select(Conversation.id)
            .join(Outbox, Outbox.conversation_id == Conversation.id)
            .where(
                Outbox.tenant_id == tenant_id,
                Outbox.direction == outbox.IN,
                Outbox.state == OutboxState.PENDING,
                or_(Outbox.not_before.is_(None), Outbox.not_before <= now),
                Conversation.id != leader_id,
                Conversation.status == ConversationStatus.OPEN,
                Conversation.crm_entity_id.is_(None),
                Conversation.crm_entity_state.is_(None),
                Conversation.task_state.is_(None),
            )
            .order_by(Outbox.updated_at, Conversation.id)
            .limit(limit)
        )
        return [int(r) for r in rows]


def _gather(
    leader: InboundSync, own: Member | None, adapter: CrmAdapter, leases: Leases
) -> list[Member]:
    """``own`` (when given) and the new conversations whose leases could be
    taken, up to ``batch_size`` in all. A conversation taken that turns out
    not to be new stays taken: it is drained the ordinary way afterwards."""
    from bridge.pipeline.inbound.sync import InboundSync

    rt = leader.rt
    tenant_id = leader._tenant_id
    assert tenant_id is not None
    members = [own] if own is not None else []
    wanted = adapter.batch_size - len(members)
    per_request = adapter.entries_per_request
    for conversation_id in _candidates(rt, tenant_id, leader.conversation_id, wanted * CANDIDATES):
        if len(members) >= adapter.batch_size:
            break
        lock = leases.take(rt, conversation_id)
        if lock is None:
            continue  # its own job is at it
        sync = InboundSync(rt, conversation_id)
        sync._adapter, sync._tenant_id = adapter, tenant_id
        sync._tried_together = True  # no opener inside an opener
        try:
            snap = sync._load()
            if isinstance(snap, (Drained, Parked)):
                continue
            if snap.tenant.status != TenantStatus.ACTIVE or snap.account.awaiting_crm_setup:
                continue
            rule = sync._rule(snap)
        except (LeaseLost, PermanentError):
            continue
        batch: list[Message] = []
        for message in snap.messages:
            if message.status == MessageStatus.FAILED:
                break
            batch.append(message)
        batch = batch[: per_request or len(batch)]
        if is_new(sync, snap, adapter, rule, batch):
            members.append(Member(sync, snap, rule, batch, lock))
    return members


def _finish(
    rt: Runtime,
    leader: InboundSync,
    members: Sequence[Member],
    leases: Leases,
    failure: BaseException | None,
) -> None:
    """Every conversation whose lease was taken for the batch is finished as
    its own job would have: backed off after a transient or auth failure;
    marked idle when the batch wrote everything it had waiting (in one
    transaction, and only if nothing arrived since it was read); else
    drained to the end. Then its lease is let go."""
    try:
        conversations = [int(lock.name.rsplit(":", 1)[1]) for lock in leases.locks]
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
                        f"opening together: {failure}"[:2000],
                    )
            return
        idle: set[int] = set()
        done = [m for m in members if m.drained and m.lock in leases.locks]
        if done:
            with rt.transaction() as session:
                for m in done:
                    if outbox.mark_idle(session, m.snap.conversation.id, outbox.IN, m.snap.version):
                        idle.add(m.snap.conversation.id)
        by_lock = {id(m.lock): m for m in members}
        for lock, conversation_id in zip(leases.locks, conversations, strict=True):
            if conversation_id in idle:
                continue
            member = by_lock.get(id(lock))
            sync = member.sync if member is not None else _fresh(leader, conversation_id)
            outcome = drain_held(rt, outbox.IN, conversation_id, lock, sync.drain_once)
            log.info("conversation=%s drained by the opener: %s", conversation_id, outcome)
    finally:
        leases.close()


def _fresh(leader: InboundSync, conversation_id: int) -> InboundSync:
    from bridge.pipeline.inbound.sync import InboundSync

    sync = InboundSync(leader.rt, conversation_id)
    sync._adapter, sync._tenant_id = leader._adapter, leader._tenant_id
    sync._tried_together = True
    return sync
