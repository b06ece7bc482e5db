"""The batched steps of opening new conversations together
(:mod:`bridge.pipeline.inbound.cohort` gathers them and finishes them).

For the members (conversations whose leases the opener holds), in order,
each step one retry unit (``call_with_retries``) of as few CRM requests as
the adapter's batch hooks need:

1. contacts: the people nobody resolved yet looked up (``find_contacts``);
   the rest marked ``creating``, their conversations' owners chosen and
   remembered, then created (``create_contacts``). A retry looks them all
   up again first, so what an ambiguous call made is found, not made twice;
2. entities: marked ``creating`` with their owner, opened
   (``create_entities``); a retry looks up (``find_entities``) what an
   earlier attempt may have made;
3. the mapping's tasks: marked ``creating``, made (``create_tasks``), as
   ``maybe_written`` on a retry;
4. the first entries: claimed ``in_flight`` in one transaction, written in
   one ``append_entries`` (as many as a request holds per call), as
   ``maybe_written`` on a retry.

What a failed call reports made (``error.created``, ``error.partial``,
``error.progress``) is recorded at once. The database writes of a step go
in one transaction (bulk updates by primary key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import update

from bridge.errors import BridgeError, PermanentError, RetryableError
from bridge.locks import ConversationLock
from bridge.model import CrmContact, CrmRef, EntityDraft, TaskDraft, TimelineEntry
from bridge.pipeline.drain import LeaseLost
from bridge.pipeline.retry import call_with_retries
from bridge.rows import aware
from bridge.tables import Contact, Conversation, CrmWrite, Message
from crm_adapters.base import CrmAdapter
from mappings import ChannelRule

if TYPE_CHECKING:
    from bridge.pipeline.inbound.sync import InboundSync, _Snapshot
    from bridge.runtime import Runtime

__all__ = ["Member", "Steps"]

T = TypeVar("T")


@dataclass
class Member:
    """A conversation opened with others: its job's state and what the
    steps made for it."""

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


def _chunks(items: Mapping[str, T], size: int) -> Iterator[dict[str, T]]:
    keys = list(items)
    for start in range(0, len(keys), max(1, size)):
        yield {k: items[k] for k in keys[start : start + size]}


class Steps:
    """The batched steps for ``members`` (see the module docstring)."""

    def __init__(
        self, rt: Runtime, adapter: CrmAdapter, members: list[Member], opener: ConversationLock
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
        todo: dict[str, Member] = {}
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

    def _choose_owners(self, members: Sequence[Member]) -> None:
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

    def _keep_entities(self, made: Mapping[str, CrmRef], by_key: Mapping[str, Member]) -> None:
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

    def _keep_tasks(self, made: Mapping[str, CrmRef], by_key: Mapping[str, Member]) -> None:
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
        owner: dict[str, Member] = {}
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
        #: a failed attempt may have written something (not a refusal at the
        #: door, such as a 429): the next one looks its entries up first
        maybe = [False]
        per_request = self.adapter.entries_per_request or len(owner) or 1

        def attempt() -> None:
            left = [e for m in self.members for e in m.entries if e.bridge_id not in written]
            if maybe[0]:
                left = [replace(e, maybe_written=True) for e in left]
            for start in range(0, len(left), per_request):
                chunk = left[start : start + per_request]
                try:
                    got = self.adapter.append_entries(chunk)
                except BridgeError as exc:
                    refused = isinstance(exc, RetryableError) and exc.nothing_written
                    maybe[0] = maybe[0] or not refused
                    self._keep_written(dict(exc.partial), owner, written)
                    self._keep_steps(exc.progress, owner)
                    raise
                self._keep_written(got, owner, written)

        self._call(attempt)

    def _keep_written(
        self,
        got: Mapping[str, tuple[CrmRef, ...]],
        owner: Mapping[str, Member],
        written: dict[str, tuple[CrmRef, ...]],
    ) -> None:
        per: dict[str, dict[str, Any]] = {}
        for bridge_id, refs in got.items():
            m = owner.get(bridge_id)
            if m is not None:
                per.setdefault(m.key, {})[bridge_id] = refs
        acks: list[tuple[Member, list[str]]] = []
        with self.rt.transaction() as session:
            for m in self.members:
                mine = per.get(m.key)
                if mine:
                    acks.append((m, m.sync._record_in(session, m.batch, mine, m.snap)))
        for m, jobs in acks:
            m.sync._enqueue_acks(jobs)
            m.sync._count_synced(m.snap, [x for x in m.batch if x.uid in per[m.key]])
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
        self, progress: Mapping[str, tuple[CrmRef, ...]], owner: Mapping[str, Member]
    ) -> None:
        """Steps a failed append wrote of some entries: kept with their
        messages and carried by the entries, so no attempt writes them twice."""
        for m in self.members:
            mine = {b: r for b, r in progress.items() if owner.get(b) is m}
            if mine:
                m.entries = m.sync._keep_progress(m.batch, m.entries, mine)
