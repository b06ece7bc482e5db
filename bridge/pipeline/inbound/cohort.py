"""A burst of new customers, opened together.

Opening a new conversation costs several CRM requests: the person looked
up (a search, which a CRM may limit on its own, to a few a second),
created, the deal / lead / ticket, the owner's task, the first timeline
entry. For a burst of new
customers that is the bound, one conversation after the other. A CRM with
batch calls (``CrmAdapter.batch_size`` > 1) does each step for many people
in one request, so the job that meets a new conversation opens the tenant's
other new conversations with it:

1. Under the tenant's *open* lease (one opener per tenant at a time; the
   ordinary path takes it too before it creates a contact, so two jobs
   never create the same person) it takes the leases of up to
   ``batch_size - 1`` other conversations of the tenant that wait for their
   first CRM write and that no job holds.
2. Contacts: the people nobody resolved yet are looked up in one
   ``find_contacts``; the rest are marked ``creating`` and created in one
   ``create_contacts``.
3. Entities (``creating`` first, ``create_entities``), the mapping's tasks
   (``creating`` first, ``create_tasks``) and the first entries (claimed
   ``in_flight`` first, one ``append_entries`` over all of them).
4. The open lease is let go, and each member is drained to the end under
   its own lease, as its own job (which found it busy) would have done:
   whatever the batches left goes the ordinary way.

Exactly once: every step is one retry unit (``call_with_retries``) whose
retry, after an error that may have committed (``AmbiguousError``: a
timeout after the CRM wrote), first looks up what the failed call may have
made (``find_contacts``, ``find_entities``, tasks and entries as
``maybe_written``) and creates only the rest; what a failed call reported
made (``error.created``, ``error.partial``) is recorded at once. A
transient error that outlives the retries backs every member off (the
sweeper resumes them, and their next attempt looks up first: the
``creating`` marks and claims stay); a refusal ends the batch and leaves
each member to the ordinary path, which names the item the CRM refuses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import or_, select, update

from bridge import outbox
from bridge.errors import AuthError, BridgeError, PermanentError, RetryableError
from bridge.locks import ConversationLock, lock_name
from bridge.model import CrmContact, CrmRef, EntityDraft, TaskDraft, TimelineEntry, utcnow
from bridge.pipeline.drain import Drained, LeaseLost, Parked, drain_held
from bridge.pipeline.retry import backoff_until, call_with_retries
from bridge.rows import aware
from bridge.tables import (
    Contact,
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

__all__ = ["contact_lease", "open_together"]

log = logging.getLogger(__name__)

T = TypeVar("T")

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
    if not lease.acquire():
        # counted while waiting: an opener going on to its next batch
        # stops instead (_waiting), so nobody waits for more than one batch
        waiting = _waiting_key(tenant_id)
        runtime.redis.incr(waiting)
        runtime.redis.expire(waiting, max(1, int(runtime.settings.lock_ttl * 2)))
        try:
            deadline = time.monotonic() + runtime.settings.lock_ttl + 1.0
            while not lease.acquire():
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
        finally:
            runtime.redis.decr(waiting)
    try:
        with lease.keepalive():
            yield True
    finally:
        lease.release()


@dataclass
class _Member:
    sync: InboundSync
    snap: _Snapshot
    rule: ChannelRule
    batch: list[Message]
    lock: ConversationLock
    contact: CrmRef | None = None
    entity: CrmRef | None = None
    entries: list[TimelineEntry] = field(default_factory=list)
    #: every message it had waiting is written (its outbox can go idle)
    drained: bool = False

    @property
    def key(self) -> str:
        return str(self.snap.conversation.id)


class _Leases:
    """Other conversations' leases, kept alive by one thread."""

    def __init__(self) -> None:
        self.locks: list[ConversationLock] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, runtime: Runtime, conversation_id: int) -> ConversationLock | None:
        lock = ConversationLock(
            runtime.redis, lock_name(outbox.IN, conversation_id), runtime.settings.lock_ttl
        )
        if not lock.acquire():
            return None
        self.locks.append(lock)
        if self._thread is None:
            interval = min(runtime.settings.lock_ttl / 3.0, 2.0)
            self._thread = threading.Thread(
                target=self._renew, args=(interval,), name="lease:cohort", daemon=True
            )
            self._thread.start()
        return lock

    def _renew(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for lock in list(self.locks):
                if not lock.lost.is_set():
                    lock.renew()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
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
    own: _Member | None = _Member(leader, snap, rule, batch, lock)
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
    own: _Member | None,
    adapter: CrmAdapter,
    lock: ConversationLock,
    minimum: int,
) -> bool:
    """One batch: gather (``own`` first, if given), open, finish. False when
    too few new conversations were found to be worth a batch."""
    rt = leader.rt
    tenant_id = leader._tenant_id
    assert tenant_id is not None
    leases = _Leases()
    members: list[_Member] = []
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
                _Cohort(rt, adapter, members, lock).run()
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
    leader: InboundSync, own: _Member | None, adapter: CrmAdapter, leases: _Leases
) -> list[_Member]:
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
            members.append(_Member(sync, snap, rule, batch, lock))
    return members


def _finish(
    rt: Runtime,
    leader: InboundSync,
    members: Sequence[_Member],
    leases: _Leases,
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


def _chunks(items: Mapping[str, T], size: int) -> Iterator[dict[str, T]]:
    keys = list(items)
    for start in range(0, len(keys), max(1, size)):
        yield {k: items[k] for k in keys[start : start + size]}


class _Cohort:
    """The batched steps for ``members`` (see the module docstring)."""

    def __init__(
        self, rt: Runtime, adapter: CrmAdapter, members: list[_Member], opener: ConversationLock
    ) -> None:
        self.rt = rt
        self.adapter = adapter
        self.members = members
        #: the opening job's own lease: its loss stops the batch
        self.opener = opener
        self.size = max(1, adapter.batch_size)

    def run(self) -> None:
        self._contacts()
        self._check_leases()
        self._entities()
        self._check_leases()
        self._tasks()
        self._check_leases()
        self._entries()

    def _call(self, fn: Callable[[], T]) -> T:
        return call_with_retries(self.rt.settings, fn)

    def _check_leases(self) -> None:
        """A member whose lease was lost (another job has it now) leaves the
        batch before the next write; the opener's own loss stops it all."""
        if self.opener.lost.is_set():
            raise LeaseLost
        self.members = [m for m in self.members if not m.lock.lost.is_set()]

    # -- contacts -------------------------------------------------------------

    def _contacts(self) -> None:
        """One lookup for everyone not resolved yet, one create for the rest."""
        todo: dict[str, _Member] = {}
        for m in self.members:
            if not m.snap.contact.crm_contact_id:
                todo.setdefault(str(m.snap.contact.id), m)
        drafts = {k: m.sync._contact_draft(m.snap, m.rule) for k, m in todo.items()}
        owners: dict[str, str | None] = {}
        done: dict[str, CrmContact] = {}

        def attempt() -> None:
            left = {k: d for k, d in drafts.items() if k not in done}
            for chunk in _chunks(left, self.size):
                found = self.adapter.find_contacts({k: d.lookup for k, d in chunk.items()})
                self._keep_contacts({k: found[k] for k in chunk if k in found}, owners)
                done.update(found)
            rest = {k: d for k, d in left.items() if k not in done}
            if not rest:
                return
            with self.rt.transaction() as session:
                session.execute(
                    update(Contact)
                    .where(Contact.id.in_([int(k) for k in rest]))
                    .values(crm_state=CrmWrite.CREATING)
                )
            self._choose_owners([todo[k] for k in rest if k not in owners])
            for key in rest:
                owners.setdefault(key, todo[key].snap.conversation.owner_id)
            for chunk in _chunks(rest, self.size):
                try:
                    made = self.adapter.create_contacts(
                        {k: replace(d, owner_id=owners[k]) for k, d in chunk.items()}
                    )
                except BridgeError as exc:
                    self._keep_contacts(
                        {
                            k: CrmContact(ref, owners[k])
                            for k, ref in exc.created.items()
                            if k in chunk
                        },
                        owners,
                    )
                    raise
                self._keep_contacts({k: made[k] for k in chunk if k in made}, owners)
                missing = [k for k in chunk if k not in made]
                if missing:
                    raise PermanentError(f"the CRM answered no contact for {len(missing)} drafts")

        if drafts:
            self._call(attempt)
        ids = {}
        for m in self.members:
            if m.snap.contact.crm_contact_id:
                ids[m.snap.contact.id] = m.snap.contact.crm_contact_id
        for m in self.members:
            crm_id = ids.get(m.snap.contact.id) or m.snap.contact.crm_contact_id
            if crm_id:
                m.contact = CrmRef("contact", crm_id)
        self.members = [m for m in self.members if m.contact is not None]

    def _choose_owners(self, members: Sequence[_Member]) -> None:
        """Each conversation's owner, chosen once as the ordinary path
        chooses it (``_choose_owner``), remembered in one transaction."""
        chosen: dict[int, str] = {}
        for m in members:
            conv = m.snap.conversation
            if conv.owner_id:
                continue
            owner = m.sync._choose_owner(m.snap, m.rule, m.snap.contact.crm_owner_id)
            if owner:
                conv.owner_id = chosen[conv.id] = owner
        if chosen:
            with self.rt.transaction() as session:
                session.execute(
                    update(Conversation),
                    [{"id": c, "owner_id": owner} for c, owner in chosen.items()],
                )

    def _keep_contacts(
        self, found: Mapping[str, CrmContact], owners: Mapping[str, str | None]
    ) -> None:
        if not found:
            return
        with self.rt.transaction() as session:
            session.execute(
                update(Contact),
                [
                    {
                        "id": int(key),
                        "crm_contact_id": contact.ref.id,
                        "crm_owner_id": contact.owner_id or owners.get(key),
                        "crm_state": CrmWrite.SYNCED,
                        "crm_dirty": False,
                    }
                    for key, contact in found.items()
                ],
            )
        for m in self.members:
            key = str(m.snap.contact.id)
            if key in found:
                contact = found[key]
                m.snap.contact.crm_contact_id = contact.ref.id
                m.snap.contact.crm_owner_id = contact.owner_id or owners.get(key)

    # -- entities ----------------------------------------------------------------

    def _entities(self) -> None:
        """``creating`` first; a retry finds what a failed call made."""
        drafts: dict[str, EntityDraft] = {}
        by_key = {m.key: m for m in self.members}
        self._choose_owners(self.members)
        for m in self.members:
            assert m.contact is not None
            owner = m.snap.conversation.owner_id
            drafts[m.key] = m.sync._entity_draft(m.snap, m.rule, m.contact, owner)
        with self.rt.transaction() as session:
            session.execute(
                update(Conversation),
                [
                    {"id": int(k), "crm_entity_state": CrmWrite.CREATING, "owner_id": d.owner_id}
                    for k, d in drafts.items()
                ],
            )
        for m in self.members:
            m.snap.conversation.crm_entity_state = CrmWrite.CREATING
        done: dict[str, CrmRef] = {}
        tried: set[str] = set()

        def attempt() -> None:
            left = {k: d for k, d in drafts.items() if k not in done}
            maybe = {k: d for k, d in left.items() if k in tried}
            for chunk in _chunks(maybe, self.size):
                found = self.adapter.find_entities(chunk)
                self._keep_entities({k: found[k] for k in chunk if k in found}, by_key)
                done.update(found)
            rest = {k: d for k, d in left.items() if k not in done}
            for chunk in _chunks(rest, self.size):
                tried.update(chunk)
                try:
                    made = self.adapter.create_entities(chunk)
                except BridgeError as exc:
                    partial = {k: r for k, r in exc.created.items() if k in chunk}
                    self._keep_entities(partial, by_key)
                    done.update(partial)
                    raise
                made = {k: made[k] for k in chunk if k in made}
                self._keep_entities(made, by_key)
                done.update(made)
                if len(made) < len(chunk):
                    raise PermanentError("the CRM answered no entity for some drafts")

        self._call(attempt)

    def _keep_entities(self, made: Mapping[str, CrmRef], by_key: Mapping[str, _Member]) -> None:
        if not made:
            return
        with self.rt.transaction() as session:
            session.execute(
                update(Conversation),
                [
                    {
                        "id": int(key),
                        "crm_entity_type": ref.kind,
                        "crm_entity_id": ref.id,
                        "crm_entity_state": CrmWrite.SYNCED,
                    }
                    for key, ref in made.items()
                ],
            )
        for key, ref in made.items():
            conv = by_key[key].snap.conversation
            conv.crm_entity_type, conv.crm_entity_id = ref.kind, ref.id
            conv.crm_entity_state = CrmWrite.SYNCED
            by_key[key].entity = ref

    # -- tasks ---------------------------------------------------------------------

    def _tasks(self) -> None:
        wanted = [
            m for m in self.members if m.entity is not None and m.rule.task.when == "new_entity"
        ]
        if not wanted:
            return
        by_key = {m.key: m for m in wanted}
        with self.rt.transaction() as session:
            session.execute(
                update(Conversation)
                .where(Conversation.id.in_([m.snap.conversation.id for m in wanted]))
                .values(task_state=CrmWrite.CREATING)
            )
        drafts: dict[str, TaskDraft] = {}
        for m in wanted:
            m.snap.conversation.task_state = CrmWrite.CREATING
            assert m.contact is not None
            drafts[m.key] = m.sync._task_draft(m.snap, m.rule, m.contact, m.entity)
        done: dict[str, CrmRef] = {}
        tried: set[str] = set()

        def attempt() -> None:
            left = {
                k: replace(d, maybe_written=k in tried) for k, d in drafts.items() if k not in done
            }
            for chunk in _chunks(left, self.size):
                tried.update(chunk)
                try:
                    made = self.adapter.create_tasks(chunk)
                except BridgeError as exc:
                    partial = {k: r for k, r in exc.created.items() if k in chunk}
                    self._keep_tasks(partial, by_key)
                    done.update(partial)
                    raise
                made = {k: made[k] for k in chunk if k in made}
                self._keep_tasks(made, by_key)
                done.update(made)
                if len(made) < len(chunk):
                    raise PermanentError("the CRM answered no task for some drafts")

        self._call(attempt)

    def _keep_tasks(self, made: Mapping[str, CrmRef], by_key: Mapping[str, _Member]) -> None:
        if not made:
            return
        with self.rt.transaction() as session:
            session.execute(
                update(Conversation),
                [{"id": int(key), "task_state": f"task:{ref.id}"} for key, ref in made.items()],
            )
        for key, ref in made.items():
            by_key[key].snap.conversation.task_state = f"task:{ref.id}"

    # -- the first entries -----------------------------------------------------------

    def _entries(self) -> None:
        """Claimed (``in_flight``) first, as the ordinary path does; one
        ``append_entries`` over every member's (as many as a request holds)."""
        owner: dict[str, _Member] = {}
        with self.rt.transaction() as session:
            for m in self.members:
                m.sync._claim_in(session, m.batch)
        for m in self.members:
            # the customer's own order, as the ordinary path writes a batch
            m.batch.sort(key=lambda msg: (aware(msg.sent_at), msg.provider_seq or 0, msg.seq))
            m.entries = [
                m.sync._entry(m.snap, m.rule, msg, m.contact, m.entity, False) for msg in m.batch
            ]
            owner.update({e.bridge_id: m for e in m.entries})
        written: dict[str, tuple[CrmRef, ...]] = {}
        tried = [False]
        per_request = self.adapter.entries_per_request or len(owner) or 1

        def attempt() -> None:
            left = [e for m in self.members for e in m.entries if e.bridge_id not in written]
            if tried[0]:
                left = [replace(e, maybe_written=True) for e in left]
            tried[0] = True
            for start in range(0, len(left), per_request):
                chunk = left[start : start + per_request]
                try:
                    got = self.adapter.append_entries(chunk)
                except BridgeError as exc:
                    self._keep_written(dict(exc.partial), owner, written)
                    self._keep_steps(exc.progress, owner)
                    raise
                self._keep_written(got, owner, written)

        self._call(attempt)

    def _keep_written(
        self,
        got: Mapping[str, tuple[CrmRef, ...]],
        owner: Mapping[str, _Member],
        written: dict[str, tuple[CrmRef, ...]],
    ) -> None:
        per: dict[str, dict[str, Any]] = {}
        for bridge_id, refs in got.items():
            m = owner.get(bridge_id)
            if m is not None:
                per.setdefault(m.key, {})[bridge_id] = refs
        acks: list[tuple[_Member, list[str]]] = []
        with self.rt.transaction() as session:
            for m in self.members:
                mine = per.get(m.key)
                if mine:
                    acks.append((m, m.sync._record_in(session, m.batch, mine, m.snap)))
        for m, jobs in acks:
            m.sync._enqueue_acks(jobs)
        written.update(got)
        from bridge.pipeline.inbound.sync import BATCH

        for m in self.members:
            # everything it had waiting was loaded (fewer than a load's
            # limit), is in this batch, and is written
            m.drained = (
                len(m.snap.messages) < BATCH
                and len(m.batch) == len(m.snap.messages)
                and all(e.bridge_id in written for e in m.entries)
            )

    def _keep_steps(
        self, progress: Mapping[str, tuple[CrmRef, ...]], owner: Mapping[str, _Member]
    ) -> None:
        """Steps a failed append wrote of some entries: kept with their
        messages and carried by the entries, so no attempt writes them twice."""
        for m in self.members:
            mine = {b: r for b, r in progress.items() if owner.get(b) is m}
            if mine:
                m.entries = m.sync._keep_progress(m.batch, m.entries, mine)
