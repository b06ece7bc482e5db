"""The inbound job: drain one conversation into the CRM, in sequence order.

Under the conversation's lease, for the oldest pending messages:

1. make sure the person exists in the CRM (match by identity, phone,
   e-mail; create if none) and knows what we learnt since (a shared phone);
2. open or reuse the deal / ticket the mapping asks for, with its owner
   (fixed, round-robin over a pool, or sticky to the contact's owner), and
   the follow-up task the mapping asks for;
3. mark the batch ``in_flight`` (committed) and append it to the timeline;
   a message that was already ``in_flight`` travels with
   ``maybe_written=True`` so the adapter looks it up before writing again
   (at-least-once processing, exactly-once effect);
4. record every CRM id, mark the messages ``synced``.

Where the CRM has batch calls, a new conversation is opened with the
tenant's other new ones (steps 1-3 for many people, one request per step:
:mod:`bridge.pipeline.inbound.cohort`).

A permanent error parks the conversation at the failing message (later
messages wait behind it; ``bridge replay`` resumes). A transient error that
outlives the in-job retries backs the conversation off; auth failures park
it until the tenant is re-authorised — nothing is dropped in either case.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session

from bridge import crm_calls, files, identity, live_fields, metrics, outbox, reach
from bridge.db import write_connection
from bridge.errors import (
    AuthError,
    NotReadyError,
    PermanentError,
    RetryableError,
)
from bridge.identity import is_address, live_contact
from bridge.jobs import enqueue
from bridge.locks import ConversationLock
from bridge.model import (
    ContactDraft,
    ContactLookup,
    CrmContact,
    CrmRef,
    EntityDraft,
    MessageKind,
    SenderProfile,
    TaskDraft,
    TimelineEntry,
    utcnow,
)
from bridge.pipeline.drain import Drained, LeaseLost, Parked, run_drain
from bridge.pipeline.followup import due
from bridge.pipeline.inbound import clients
from bridge.pipeline.inbound.cohort import contact_lease, open_together
from bridge.pipeline.inbound.media import fetch_media
from bridge.pipeline.inbound.together import append_together
from bridge.pipeline.inbound.wording import entry_text
from bridge.pipeline.retry import backoff_until, call_with_retries, retry_delay
from bridge.registry import channel_class
from bridge.rows import attachment_from_dict, aware, profile_from_payload
from bridge.tables import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    ConversationStatus,
    CrmWrite,
    Message,
    MessageStatus,
    Outbox,
    OutboxState,
    Tenant,
    TenantStatus,
)
from bridge.templates import render, render_all
from crm_adapters.base import CrmAdapter
from mappings import ChannelRule, MappingConfig, MappingError

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["run_inbound"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

BATCH = 50
#: a message written to the CRM: its refs, status synced (built once)
_SYNCED = (
    update(Message)
    .where(Message.id == bindparam("m_id"))
    .values(status=MessageStatus.SYNCED, last_error=None, crm_refs=bindparam("m_refs"))
)
#: the batch claimed: in_flight before the CRM call (built once)
_CLAIM = (
    update(Message)
    .where(Message.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=MessageStatus.IN_FLIGHT,
        claimed_at=bindparam("at"),
        attempts=Message.attempts + 1,
    )
)
#: the conversation's entries were written for this CRM contact
_CONTACT_WRITTEN = (
    update(Conversation)
    .where(Conversation.id == bindparam("c_id"))
    .values(crm_contact_id=bindparam("c_contact"))
)
# The snapshot's reads (built once): the outbox row's state and version with
# the customer's time of the last message written to the CRM, the waiting
# messages in order, the conversation with its tenant, channel account and
# contact in one row.
_LAST_SYNCED = (
    select(Message.sent_at)
    .where(
        Message.conversation_id == bindparam("conversation"),
        Message.direction == outbox.IN,
        Message.status == MessageStatus.SYNCED,
    )
    .order_by(Message.seq.desc())
    .limit(1)
    .scalar_subquery()
)
_OUTBOX_ROW = select(Outbox.state, Outbox.version, _LAST_SYNCED.label("last_synced")).where(
    Outbox.conversation_id == bindparam("conversation"), Outbox.direction == outbox.IN
)
_WAITING = (
    select(Message)
    .where(
        Message.conversation_id == bindparam("conversation"),
        Message.direction == outbox.IN,
        Message.status.in_((MessageStatus.PENDING, MessageStatus.IN_FLIGHT, MessageStatus.FAILED)),
    )
    .order_by(Message.seq)
    .limit(BATCH)
)
_CONVERSATION = (
    select(Conversation, Tenant, ChannelAccount, Contact)
    .join(Tenant, Tenant.id == Conversation.tenant_id)
    .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
    .join(Contact, Contact.id == Conversation.contact_id)
    .where(Conversation.id == bindparam("conversation"))
)
#: a message claimed this many times without success is parked (poison pill)
MAX_ATTEMPTS = 25


def run_inbound(runtime: Runtime, conversation_id: int) -> str:
    sync = InboundSync(runtime, conversation_id)
    with crm_calls.recording(runtime, [conversation_id]):
        outcome = run_drain(runtime, outbox.IN, conversation_id, sync.drain_once)
    log.info("sync conversation=%s outcome=%s synced=%d", conversation_id, outcome, sync.synced)
    return outcome


@dataclass
class _Snapshot:
    conversation: Conversation
    tenant: Tenant
    account: ChannelAccount
    contact: Contact
    messages: list[Message]
    version: int
    #: some message of this conversation is in the CRM already
    has_synced: bool = False
    #: the customer's time of the last message written to the CRM
    last_synced_at: dt.datetime | None = None
    #: the tenant's mapping (read by ``_rule``)
    mapping: MappingConfig | None = None
    #: open a deal of its own, not the client's open one (a new session the
    #: mapping's service section gives a deal of its own)
    own_entity: bool = False


class InboundSync:
    def __init__(self, runtime: Runtime, conversation_id: int) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.conversation_id = conversation_id
        self.synced = 0
        self._adapter: CrmAdapter | None = None
        self._tenant_id: int | None = None
        #: ids of the messages this job claimed last
        self._claimed: set[int] = set()
        #: rounds in a row the CRM side was not ready (NotReadyError)
        self._not_ready = 0
        #: ids of the messages this job recorded synced
        self._recorded: set[int] = set()
        #: may write its batch with other known conversations' (together.py);
        #: False for the conversations another job writes with its own
        self.together = True
        #: (version, ids): the batch in hand is all that waits as of version
        self._idle_at: tuple[int, set[int]] | None = None
        #: the commit that recorded the batch also marked the outbox idle
        self._went_idle = False
        #: this job tried to open its conversation with the tenant's other
        #: new ones (cohort.open_together: once per job)
        self._tried_together = False
        #: the client whose merges and links this job told the CRM of
        self._settled: int | None = None

    # -- the loop body ----------------------------------------------------

    def drain_once(self, lock: ConversationLock) -> Drained | Parked | None:
        snap = self._load()
        if isinstance(snap, (Drained, Parked)):
            return snap
        first = snap.messages[0]
        if first.status == MessageStatus.FAILED:
            return self._park(f"message {first.uid} failed: {first.last_error}")
        if snap.tenant.status != TenantStatus.ACTIVE:
            return self._park(f"tenant {snap.tenant.status}: {snap.tenant.status_reason or ''}")
        if snap.account.awaiting_crm_setup:
            return self._not_ready_yet(
                NotReadyError(
                    f"the CRM setup has not covered channel account {snap.account.id} yet "
                    "(`bridge crm setup` runs it)"
                )
            )
        batch = []
        for message in snap.messages:
            if message.status == MessageStatus.FAILED:
                break
            batch.append(message)
        try:
            rule = self._rule(snap)
            adapter = self._crm(snap.tenant)
            # no more than one CRM request's worth where the CRM says so
            batch = batch[: adapter.entries_per_request or BATCH]
            # files the channel holds for us (WhatsApp media) become ours first
            fetch_media(self.rt, snap.account, batch)
            if snap.conversation.status == ConversationStatus.CLOSED:
                answers = self._answers_closed(snap, batch)
                if answers:
                    # the client rated the closed deal's session (and
                    # commented): that goes on the closed deal, no new one
                    batch = batch[:answers]
                else:
                    self._reopen(snap)
            elif self._opens_new_deal(snap, batch[0]):
                # a new session the mapping gives a deal of its own (not the
                # client's open one either)
                self._reopen(snap)
                snap.own_entity = True
            if snap.contact.crm_contact_id and rule.object != "unsorted":
                # a known client: what the bridge learnt since (a proven
                # e-mail, a merge, a link) reaches the CRM whichever path
                # writes this batch below
                self._ensure_contact(snap, adapter, rule)
                self._settle_identity(snap, adapter)
            if not self._tried_together and adapter.batch_size > 1:
                # a burst of new customers: open the tenant's new
                # conversations together, a batch call per step
                self._tried_together = True
                if open_together(self, snap, adapter, rule, batch, lock):
                    return None
            if self._opens_at_once(snap, adapter, rule, batch):
                self._open_at_once(snap, adapter, rule, batch, lock)
                return None
            contact_ref: CrmRef | None = None
            entity_ref: CrmRef | None = None
            if rule.object != "unsorted":
                # ("unsorted": the CRM's own inbox creates the person and lead)
                contact_ref = self._ensure_contact(snap, adapter, rule)
                self._settle_identity(snap, adapter)
                entity_ref, new_entity = self._ensure_entity(snap, adapter, rule, contact_ref)
                if rule.task.when == "new_entity" and (
                    new_entity or snap.conversation.task_state == CrmWrite.CREATING
                ):
                    self._ensure_task(snap, adapter, rule, contact_ref, entity_ref)
            if lock.lost.is_set():
                raise LeaseLost
            if self.together and adapter.batch_size > 1:
                # a backlog of known conversations: written together
                if append_together(self, snap, adapter, rule, batch, lock):
                    return None
            # the batch is everything waiting as of snap.version: once it is
            # in the CRM the conversation is idle, unless more came meanwhile
            # (mark_idle checks the version), recorded in the same commit
            whole = len(snap.messages) < BATCH and len(batch) == len(snap.messages)
            self._idle_at = (snap.version, {m.id for m in batch}) if whole else None
            try:
                self._append(snap, adapter, rule, batch, contact_ref, entity_ref, lock)
            finally:
                self._idle_at = None
            self._not_ready = 0
            if self._went_idle:
                return Parked("idle")
        except AuthError as exc:
            self._mark_tenant(snap.tenant.id, exc)
            return self._park(f"auth: {exc.message}")
        except _FailMessage as exc:
            self._fail(exc.message_id, exc.reason)
            return self._park(f"message failed: {exc.reason}")
        except PermanentError as exc:
            self._fail(batch[0].id, exc.message or type(exc).__name__)
            return self._park(f"message failed: {exc.message}")
        except NotReadyError as exc:
            return self._not_ready_yet(exc)
        except RetryableError as exc:
            return self._back_off(exc, "retrying")
        return None

    def _priority(self, snap: _Snapshot) -> str | None:
        """The mapping's priority for the conversation (its first message)."""
        rule = snap.mapping.rule(snap.account.kind) if snap.mapping else None
        if rule is None or rule.priority is None:
            return None
        return rule.priority.of(snap.contact.email, snap.messages[0].text)

    def _not_ready_yet(self, exc: NotReadyError) -> Parked | None:
        """The CRM side of the account is still being set up (its result
        lands in the tenant's settings): look again with fresh ones soon,
        then wait without holding a worker (a finished setup resumes it)."""
        self._adapter = None
        self._not_ready += 1
        if self._not_ready <= self.settings.retry_attempts:
            time.sleep(retry_delay(self.settings, self._not_ready, exc))
            return None
        return self._back_off(exc, "waiting")

    def _back_off(self, exc: RetryableError, why: str) -> Parked:
        """Stay pending; the sweeper (or a finished setup) resumes it."""
        until = backoff_until(self.settings, exc)
        with self.rt.transaction() as session:
            outbox.backoff(session, self.conversation_id, outbox.IN, until, f"{why}: {exc.message}")
        return Parked("backoff")

    # -- loading ----------------------------------------------------------

    def _load(self) -> _Snapshot | Drained | Parked:
        # reads only: no write lock (SQLite: a WAL reader). The version is
        # read first: a message stored after it makes mark_idle fail and the
        # drain look again, never the other way round
        params = {"conversation": self.conversation_id}
        with self.rt.read_session() as session:
            conn = session.connection()
            row = conn.execute(_OUTBOX_ROW, params).first()
            if row is None:
                return Parked("no-work")
            if row.state == OutboxState.PARKED:
                return Parked("parked")
            version = int(row.version)
            messages = list(session.scalars(_WAITING, params))
            if not messages:
                return Drained(version)
            self._check_foreign_claims(messages)
            found = session.execute(_CONVERSATION, params).first()
            assert found is not None, "a conversation with messages, its tenant and account"
            conversation, tenant, account, contact = found
            if contact.merged_into_id is not None:
                contact = live_contact(session, contact.id)
            if account.tenant_id != tenant.id or contact.tenant_id != tenant.id:
                # A job must never act for one tenant with another's data.
                raise PermanentError("tenant mismatch between conversation and its rows")
            last_synced = row.last_synced
            return _Snapshot(
                conversation,
                tenant,
                account,
                contact,
                messages,
                version,
                has_synced=last_synced is not None,
                last_synced_at=aware(last_synced) if last_synced is not None else None,
            )

    def _check_foreign_claims(self, messages: list[Message]) -> None:
        """An in_flight claim younger than the lease may belong to a job that
        is still running (its lease was lost with a wiped Redis): stop."""
        fresh = utcnow() - dt.timedelta(seconds=self.settings.lock_ttl)
        for message in messages:
            if (
                message.status == MessageStatus.IN_FLIGHT
                and message.claimed_at
                and aware(message.claimed_at) > fresh
            ):
                if message.id in self._claimed:
                    continue
                raise LeaseLost

    def _rule(self, snap: _Snapshot) -> ChannelRule:
        try:
            mapping = self.rt.mapping_for(snap.tenant)
        except MappingError as exc:
            raise PermanentError(f"mapping: {exc}") from exc
        rule = mapping.rule(snap.account.kind)
        if rule is None:
            raise PermanentError(
                f"mapping {snap.tenant.mapping} has no rule for channel {snap.account.kind}"
            )
        snap.mapping = mapping
        return rule

    def _crm(self, tenant: Tenant) -> CrmAdapter:
        if self._adapter is None or self._tenant_id != tenant.id:
            self._adapter = self.rt.crm_adapter(tenant)
            self._tenant_id = tenant.id
        return self._adapter

    def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return call_with_retries(self.settings, fn, *args, **kwargs)

    # -- contact ----------------------------------------------------------

    def _ensure_contact(self, snap: _Snapshot, adapter: CrmAdapter, rule: ChannelRule) -> CrmRef:
        contact = snap.contact
        if contact.crm_contact_id:
            ref = CrmRef("contact", contact.crm_contact_id)
            if contact.crm_dirty:
                self._call(adapter.update_contact, ref, self._contact_draft(snap, rule))
                self._update(Contact, contact.id, crm_dirty=False)
            return ref
        draft = self._contact_draft(snap, rule)
        if adapter.batch_size < 2:
            return self._find_or_create_contact(snap, adapter, rule, draft)
        # where people are created in batches too, one job of the tenant
        # creates at a time (cohort.contact_lease): the person may have been
        # resolved by another one meanwhile
        with contact_lease(self.rt, snap.tenant.id):
            with self.rt.transaction() as session:
                row = session.get(Contact, contact.id)
                if row is not None and row.crm_contact_id:
                    contact.crm_contact_id, contact.crm_owner_id = (
                        row.crm_contact_id,
                        row.crm_owner_id,
                    )
            if contact.crm_contact_id:
                return CrmRef("contact", contact.crm_contact_id)
            return self._find_or_create_contact(snap, adapter, rule, draft)

    def _settle_identity(self, snap: _Snapshot, adapter: CrmAdapter) -> None:
        """Merges, links and splits of this client the CRM was not told of
        yet (``clients.settle``), once per job."""
        if self._settled == snap.contact.id:
            return
        clients.settle(
            self.rt.transaction,
            self._call,
            adapter,
            snap.tenant.id,
            snap.contact.id,
            snap.mapping.language if snap.mapping else "en",
        )
        self._settled = snap.contact.id

    def _find_or_create_contact(
        self, snap: _Snapshot, adapter: CrmAdapter, rule: ChannelRule, draft: ContactDraft
    ) -> CrmRef:
        contact = snap.contact

        def find_or_create() -> tuple[CrmContact, str | None, bool]:
            # One retry unit: a retry after an ambiguous create searches first.
            found = adapter.find_contact(draft.lookup)
            if found is not None:
                return found, None, False
            self._update(Contact, contact.id, crm_state=CrmWrite.CREATING)
            owner = self._owner(snap, rule, None)
            return adapter.create_contact(replace(draft, owner_id=owner)), owner, True

        found, chosen, created = self._call(find_or_create)
        owner = found.owner_id or chosen
        live = snap.mapping.live_contact_fields() if snap.mapping is not None else {}
        self._update(
            Contact,
            contact.id,
            crm_contact_id=found.ref.id,
            crm_owner_id=owner,
            crm_state=CrmWrite.SYNCED,
            crm_dirty=False,
            # created: the live fields were written with it (found: not yet)
            crm_live={k: v for k, v in draft.properties.items() if k in live}
            if created and live
            else None,
        )
        contact.crm_contact_id, contact.crm_owner_id = found.ref.id, owner
        if not created:  # found: the CRM may know them as another client
            with self.rt.transaction() as session:
                identity.join_by_crm_contact(session, contact.id, found.ref.id)
        return found.ref

    def _contact_draft(self, snap: _Snapshot, rule: ChannelRule) -> ContactDraft:
        with self.rt.transaction() as session:
            identities = list(
                session.scalars(
                    select(ContactIdentity).where(ContactIdentity.contact_id == snap.contact.id)
                )
            )
        channel_ids = {i.kind: i.value for i in identities if i.kind not in ("phone", "email")}
        # the CRM is searched by verified handles only: a number typed into a
        # form must not find (and write into) the client who owns it; it is
        # still written on the contact (a CRM does not key people by phone)
        phones = tuple(i.value for i in identities if i.kind == "phone" and i.verified)
        # an identity of kind email that is no address (an e-mail channel's
        # unverified sender) is never given to the CRM as one; an unproven
        # address is written on the contact (the profile) but never searched
        # by, and a CRM that keys contacts by e-mail (HubSpot) must not answer
        # its create with the owner's contact (the adapter tells them apart
        # by the lookup's proven addresses)
        verified_emails = {i.value for i in identities if i.kind == "email" and i.verified}
        emails = tuple(v for v in verified_emails if is_address(v))
        profile = profile_from_payload(snap.messages[0].payload)
        profile = SenderProfile(
            display_name=snap.contact.display_name or profile.name(),
            first_name=profile.first_name,
            last_name=profile.last_name,
            username=profile.username,
            phone=snap.contact.phone,
            email=snap.contact.email,
            language=profile.language,
            utm=profile.utm,
            page_url=profile.page_url,
            page_title=profile.page_title,
            referrer=profile.referrer,
            timezone=profile.timezone,
            consent=profile.consent,
        )
        context = self._context(snap, profile)
        return ContactDraft(
            lookup=ContactLookup(identities=channel_ids, phones=phones, emails=emails),
            profile=profile,
            properties=render_all(rule.fields.contact, context),
            owner_id=snap.contact.crm_owner_id,
            channel_title=channel_class(snap.account.kind).title,
        )

    # -- entity, owner, task ----------------------------------------------

    def _answers_closed(self, snap: _Snapshot, batch: list[Message]) -> int:
        """How many of the batch's first messages answer the closed
        session's rating prompt (the service layer's), 0 without one."""
        if snap.mapping is None or snap.mapping.service is None:
            return 0
        from bridge.service.runner import answers_closed_session

        return answers_closed_session(
            self.rt, snap.conversation.id, [(m.text or "", aware(m.sent_at)) for m in batch]
        )

    def _opens_new_deal(self, snap: _Snapshot, first: Message) -> bool:
        """The batch's first message starts a new session the mapping gives
        a deal of its own, and nothing of that session is in the CRM yet
        (the last message written predates the session's start: a later
        batch of the same session stays on its deal)."""
        if snap.mapping is None or snap.mapping.service is None:
            return False
        if not snap.mapping.service.new_deal_per_session or not snap.conversation.crm_entity_id:
            return False
        if snap.last_synced_at is None:
            return False
        from bridge.service.runner import new_session_since

        began = new_session_since(self.rt, snap.conversation.id, aware(first.sent_at))
        return began is not None and snap.last_synced_at < began

    def _reopen(self, snap: _Snapshot) -> None:
        """The conversation's deal/lead was closed (won, lost, deleted) since
        the last message: this message opens a new one (and a new task);
        the owner stays with the person unless the mapping chooses anew."""
        conv = snap.conversation
        self._update(
            Conversation,
            conv.id,
            status=ConversationStatus.OPEN,
            crm_entity_id=None,
            crm_entity_state=None,
            task_state=None,
        )
        conv.status, conv.crm_entity_id, conv.crm_entity_state, conv.task_state = (
            ConversationStatus.OPEN,
            None,
            None,
            None,
        )

    def _ensure_entity(
        self,
        snap: _Snapshot,
        adapter: CrmAdapter,
        rule: ChannelRule,
        contact_ref: CrmRef,
    ) -> tuple[CrmRef | None, bool]:
        conv = snap.conversation
        if rule.object == "none":
            return None, False
        if rule.reuse == "open" and conv.crm_entity_id and conv.crm_entity_state == CrmWrite.SYNCED:
            self._join_clients_entity(snap, rule)
        if conv.crm_entity_id and conv.crm_entity_state == CrmWrite.SYNCED:
            ref = CrmRef(conv.crm_entity_type or rule.object, conv.crm_entity_id)
            if not self._still_open(snap, adapter, ref):
                self._reopen(snap)  # closed and we were not told: open a new one
                return self._ensure_entity(snap, adapter, rule, contact_ref)
            return ref, False
        if rule.reuse == "open" and not snap.own_entity:
            shared = self._open_entity_of_contact(snap, rule.object)
            if shared is not None:
                entity_id, owner = shared
                self._update(
                    Conversation,
                    conv.id,
                    crm_entity_type=rule.object,
                    crm_entity_id=entity_id,
                    crm_entity_state=CrmWrite.SYNCED,
                    owner_id=owner,
                )
                conv.crm_entity_id, conv.owner_id = entity_id, owner
                return CrmRef(rule.object, entity_id), False
        owner = self._owner(snap, rule, snap.contact.crm_owner_id)
        draft = self._entity_draft(snap, rule, contact_ref, owner)
        maybe_created = [conv.crm_entity_state == CrmWrite.CREATING]

        def find_or_create() -> tuple[CrmRef, bool]:
            # An earlier attempt (this job's or a dead one's) may have
            # committed: find it before creating again.
            if maybe_created[0]:
                found = adapter.find_entity(draft)
                if found is not None:
                    return found, False
            self._update(Conversation, conv.id, crm_entity_state=CrmWrite.CREATING, owner_id=owner)
            maybe_created[0] = True
            return adapter.create_entity(draft), True

        ref, new = self._call(find_or_create)
        self._update(
            Conversation,
            conv.id,
            crm_entity_type=ref.kind,
            crm_entity_id=ref.id,
            crm_entity_state=CrmWrite.SYNCED,
            owner_id=owner,
        )
        conv.crm_entity_type, conv.crm_entity_id, conv.owner_id = ref.kind, ref.id, owner
        conv.crm_entity_state = CrmWrite.SYNCED
        return ref, new

    def _join_clients_entity(self, snap: _Snapshot, rule: ChannelRule) -> None:
        """Under ``reuse: open`` a client's open conversations share one
        deal/lead; two of them with different ones were two clients when
        their deals were opened (a merge made them one since). From now on
        this conversation writes to the client's first one; the deal it had
        stays in the CRM with what was written there, and is its again if
        the merge is undone (``crm_entity_before``)."""
        conv = snap.conversation
        with self.rt.transaction() as session:
            first = session.execute(
                select(Conversation.crm_entity_id, Conversation.owner_id)
                .where(
                    Conversation.tenant_id == snap.tenant.id,
                    Conversation.contact_id == snap.contact.id,
                    Conversation.status == ConversationStatus.OPEN,
                    Conversation.crm_entity_type == rule.object,
                    Conversation.crm_entity_state == CrmWrite.SYNCED,
                    Conversation.crm_entity_id.is_not(None),
                )
                .order_by(Conversation.id)
            ).first()
        if first is None or first[0] == conv.crm_entity_id:
            return
        entity_id, owner = first
        self._update(
            Conversation,
            conv.id,
            crm_entity_before=conv.crm_entity_id,
            crm_entity_id=entity_id,
            owner_id=owner,
        )
        conv.crm_entity_before, conv.crm_entity_id, conv.owner_id = (
            conv.crm_entity_id,
            entity_id,
            owner,
        )

    def _still_open(self, snap: _Snapshot, adapter: CrmAdapter, ref: CrmRef) -> bool:
        """After a quiet spell (``entity_recheck`` seconds between the last
        message written and this one), ask the CRM whether the deal/lead is
        still open: the webhook that would have told us it was won, lost or
        deleted may never have come (amoCRM's webhooks are not retried)."""
        recheck = self.settings.entity_recheck
        if not recheck or snap.last_synced_at is None:
            return True
        quiet = (aware(snap.messages[0].sent_at) - snap.last_synced_at).total_seconds()
        if quiet < recheck:
            return True
        return bool(self._call(adapter.entity_is_open, ref))

    def _entity_draft(
        self, snap: _Snapshot, rule: ChannelRule, contact_ref: CrmRef, owner: str | None
    ) -> EntityDraft:
        context = self._context(snap, profile_from_payload(snap.messages[0].payload))
        return EntityDraft(
            object_type=rule.object,
            conversation_uid=snap.conversation.uid,
            contact=contact_ref,
            name=render(rule.name, context) or snap.conversation.uid,
            pipeline=rule.pipeline,
            stage=rule.stage,
            owner_id=owner,
            properties=render_all(rule.fields.entity, context),
            channel_title=channel_class(snap.account.kind).title,
        )

    def _open_entity_of_contact(
        self, snap: _Snapshot, object_type: str
    ) -> tuple[str, str | None] | None:
        """The same person's open deal/ticket from another conversation (web
        chat, then Telegram: the customer never repeats the story)."""
        with self.rt.transaction() as session:
            row = session.execute(
                select(Conversation.crm_entity_id, Conversation.owner_id)
                .where(
                    Conversation.tenant_id == snap.tenant.id,
                    Conversation.contact_id == snap.contact.id,
                    Conversation.id != snap.conversation.id,
                    Conversation.status == ConversationStatus.OPEN,
                    Conversation.crm_entity_type == object_type,
                    Conversation.crm_entity_state == CrmWrite.SYNCED,
                    Conversation.crm_entity_id.is_not(None),
                )
                .order_by(Conversation.updated_at.desc())
            ).first()
        if row is None:
            return None
        entity_id, owner = row
        assert entity_id is not None  # selected only where it is set
        return entity_id, owner

    def _owner(self, snap: _Snapshot, rule: ChannelRule, contact_owner: str | None) -> str | None:
        """The conversation's owner, chosen once (then remembered)."""
        conv = snap.conversation
        if conv.owner_id:
            return conv.owner_id
        owner = self._choose_owner(snap, rule, contact_owner)
        if owner:
            self._update(Conversation, conv.id, owner_id=owner)
            conv.owner_id = owner
        return owner

    def _choose_owner(
        self, snap: _Snapshot, rule: ChannelRule, contact_owner: str | None
    ) -> str | None:
        strategy = rule.owner.strategy
        if strategy == "sticky":
            if contact_owner:
                return contact_owner
            strategy = rule.owner.fallback
        if strategy == "fixed":
            return rule.owner.owner_id
        if strategy == "round_robin" and rule.owner.pool:
            counter = self.rt.redis.incr(f"bridge:rr:{snap.tenant.id}:{snap.account.kind}")
            return rule.owner.pool[(int(counter) - 1) % len(rule.owner.pool)]
        return None

    def _ensure_task(
        self,
        snap: _Snapshot,
        adapter: CrmAdapter,
        rule: ChannelRule,
        contact_ref: CrmRef,
        entity_ref: CrmRef | None,
    ) -> None:
        conv = snap.conversation
        maybe = [conv.task_state == CrmWrite.CREATING]
        self._update(Conversation, conv.id, task_state=CrmWrite.CREATING)
        draft = self._task_draft(snap, rule, contact_ref, entity_ref)

        def create() -> CrmRef:
            attempt = replace(draft, maybe_written=maybe[0])
            maybe[0] = True
            return adapter.create_task(attempt)

        ref = self._call(create)
        self._update(Conversation, conv.id, task_state=f"task:{ref.id}")

    def _task_draft(
        self,
        snap: _Snapshot,
        rule: ChannelRule,
        contact_ref: CrmRef,
        entity_ref: CrmRef | None,
    ) -> TaskDraft:
        conv = snap.conversation
        context = self._context(snap, profile_from_payload(snap.messages[0].payload))
        return TaskDraft(
            bridge_id=f"{conv.uid}:task",
            subject=render(rule.task.subject, context),
            body=snap.messages[0].text[:500],
            due_at=utcnow() + dt.timedelta(minutes=rule.task.due_in_minutes),
            contact=contact_ref,
            entity=entity_ref,
            owner_id=conv.owner_id,
        )

    # -- a new conversation in one request -----------------------------------

    def _opens_at_once(
        self,
        snap: _Snapshot,
        adapter: CrmAdapter,
        rule: ChannelRule,
        batch: list[Message],
    ) -> bool:
        """The CRM can open a conversation in one request (contact, lead/deal,
        task and first entries; Bitrix24's ``batch``) and nothing here is
        uncertain: the conversation has never tried to open its entity, no
        message of the batch may have been written, the contact has nothing
        to update, and the person has no open entity to reuse. Anything
        else goes the ordinary way, which looks things up first."""
        conv = snap.conversation
        if not adapter.opens_at_once or rule.object in ("none", "unsorted"):
            return False
        if conv.crm_entity_id or conv.crm_entity_state is not None or conv.task_state is not None:
            return False
        if snap.contact.crm_dirty or any(
            m.status != MessageStatus.PENDING or m.attempts for m in batch
        ):
            return False
        return not (
            rule.reuse == "open" and self._open_entity_of_contact(snap, rule.object) is not None
        )

    def _open_at_once(
        self,
        snap: _Snapshot,
        adapter: CrmAdapter,
        rule: ChannelRule,
        batch: list[Message],
        lock: ConversationLock,
    ) -> None:
        """Find the person (one lookup) and open everything else in one
        request. Marks first, as the ordinary path does (contact and entity
        ``creating``, messages ``in_flight``), so that after an ambiguous
        answer the next drain takes the ordinary path and finds what was
        written; after a refusal, too (it then names the culprit)."""
        contact, conv = snap.contact, snap.conversation
        draft = self._contact_draft(snap, rule)
        target: CrmRef | ContactDraft
        if contact.crm_contact_id:
            target = CrmRef("contact", contact.crm_contact_id)
        else:
            found = self._call(adapter.find_contact, draft.lookup)
            if found is not None:
                self._keep_contact(contact, found.ref.id, found.owner_id)
                target = found.ref
            else:
                target = draft
        owner = self._owner(snap, rule, contact.crm_owner_id)
        if isinstance(target, ContactDraft):
            self._update(Contact, contact.id, crm_state=CrmWrite.CREATING)
            target = replace(target, owner_id=owner)
        contact_ref = target if isinstance(target, CrmRef) else None
        # the drafts' contact: the known one, or a stand-in for the one this
        # request creates (open_conversation links the entity to it)
        drafts_contact = contact_ref or CrmRef("contact", "")
        entity = self._entity_draft(snap, rule, drafts_contact, owner)
        task = (
            self._task_draft(snap, rule, drafts_contact, None)
            if rule.task.when == "new_entity"
            else None
        )
        self._update(
            Conversation,
            conv.id,
            crm_entity_state=CrmWrite.CREATING,
            **({"task_state": CrmWrite.CREATING} if task is not None else {}),
        )
        self._claim(batch)
        batch.sort(key=lambda m: (aware(m.sent_at), m.provider_seq or 0, m.seq))
        entries = [self._entry(snap, rule, m, contact_ref, None, False) for m in batch]
        if lock.lost.is_set():
            raise LeaseLost
        try:
            opened = adapter.open_conversation(
                contact=target, entity=entity, task=task, entries=entries
            )
        except (RetryableError, PermanentError) as exc:
            created = exc.created
            if "contact" in created:
                self._keep_contact(contact, created["contact"].id, owner)
            if "entity" in created:
                self._keep_entity(conv, created["entity"], owner)
            written = dict(exc.partial or {})
            if written:
                self._record(batch, written, snap)
            self._keep_progress(batch, entries, exc.progress)
            if isinstance(exc, RetryableError):
                # maybe written: the ordinary path (next round, with its
                # in-job retries and retry budget) looks everything up first
                return
            # refused: the ordinary path finds the culprit. What the refused
            # request ran before the refusal may be written: the messages were
            # claimed (attempts counted), so the next attempt looks them up.
            with self.rt.transaction() as session:
                session.execute(
                    update(Message)
                    .where(Message.id.in_([m.id for m in batch if m.uid not in written]))
                    .values(status=MessageStatus.PENDING)
                )
            return
        self._keep_contact(contact, opened.contact.ref.id, opened.contact.owner_id or owner)
        self._keep_entity(conv, opened.entity, owner)
        if opened.task is not None:
            self._update(Conversation, conv.id, task_state=f"task:{opened.task.id}")
        self._record(batch, dict(opened.entries), snap)

    def _keep_contact(self, contact: Contact, crm_id: str, owner: str | None) -> None:
        self._update(
            Contact,
            contact.id,
            crm_contact_id=crm_id,
            crm_owner_id=owner,
            crm_state=CrmWrite.SYNCED,
            crm_dirty=False,
        )
        contact.crm_contact_id, contact.crm_owner_id = crm_id, owner

    def _keep_entity(self, conv: Conversation, ref: CrmRef, owner: str | None) -> None:
        self._update(
            Conversation,
            conv.id,
            crm_entity_type=ref.kind,
            crm_entity_id=ref.id,
            crm_entity_state=CrmWrite.SYNCED,
            owner_id=owner,
        )
        conv.crm_entity_type, conv.crm_entity_id, conv.owner_id = ref.kind, ref.id, owner
        conv.crm_entity_state = CrmWrite.SYNCED

    # -- timeline ---------------------------------------------------------

    def _append(
        self,
        snap: _Snapshot,
        adapter: CrmAdapter,
        rule: ChannelRule,
        batch: list[Message],
        contact_ref: CrmRef | None,
        entity_ref: CrmRef | None,
        lock: ConversationLock,
    ) -> None:
        too_many = [m for m in batch if m.attempts >= MAX_ATTEMPTS]
        if too_many:
            raise _FailMessage(too_many[0].id, f"gave up after {too_many[0].attempts} attempts")
        # Sent before (claimed, in flight or back to pending after a refusal
        # or crash): that attempt may have written it, or part of it (an
        # append can be several steps per entry): look it up first.
        maybe_written = {m.id for m in batch if m.status == MessageStatus.IN_FLIGHT or m.attempts}
        self._claim(batch)
        # Within a batch, write in the customer's own order (their clock, then
        # the channel's sequence): a redelivery that arrived late lands where
        # the customer put it, also in CRMs whose timeline sorts by creation.
        batch.sort(key=lambda m: (aware(m.sent_at), m.provider_seq or 0, m.seq))
        entries = [
            self._entry(snap, rule, m, contact_ref, entity_ref, m.id in maybe_written)
            for m in batch
        ]
        if lock.lost.is_set():
            raise LeaseLost
        try:
            results = self._append_with_retries(adapter, entries, batch, snap, lock)
        except PermanentError as exc:
            self._find_culprit(adapter, batch, entries, exc, snap, lock)
            return  # the batch went through one by one after all
        self._record(batch, results, snap)

    def _find_culprit(
        self,
        adapter: CrmAdapter,
        batch: list[Message],
        entries: list[TimelineEntry],
        exc: PermanentError,
        snap: _Snapshot,
        lock: ConversationLock,
    ) -> None:
        """The CRM refused part of a batch: write the rest one by one to find
        the entry it refuses; the ones before it land, the ones after it wait.

        An append may be several steps per entry (a note, then an inbox
        message): a refusal of a later step leaves earlier steps written, for
        this entry and for others of the batch. So every entry that was in
        the refused call is sent again as ``maybe_written`` (looked up before
        it is written), with the steps the CRM said it wrote
        (``error.progress``, kept with the messages) skipped; the ones left
        waiting go back to ``pending`` with their attempts counted, so the
        next attempt looks them up too. Raises ``_FailMessage`` naming the
        refused entry; returns when every entry went through on its own."""
        results = dict(exc.partial)
        reason = exc.message or "CRM rejected the entry"
        entries = self._keep_progress(batch, entries, exc.progress)
        pending = [(m, e) for m, e in zip(batch, entries, strict=True) if m.uid not in results]
        culprit = pending[0][0] if len(pending) == 1 else None
        for message, entry in pending if culprit is None else ():
            try:
                results.update(
                    self._append_with_retries(
                        adapter, [replace(entry, maybe_written=True)], batch, snap, lock
                    )
                )
            except PermanentError as one:
                culprit, reason = message, one.message or "CRM rejected the entry"
                break
        self._record(batch, results, snap)
        if culprit is None:
            return
        waiting = [m.id for m in batch if m.uid not in results and m.id != culprit.id]
        if waiting:
            with self.rt.transaction() as session:
                session.execute(
                    update(Message)
                    .where(Message.id.in_(waiting))
                    .values(status=MessageStatus.PENDING)
                )
        raise _FailMessage(culprit.id, reason) from None

    def _claim(self, batch: list[Message]) -> None:
        """``in_flight`` before the CRM call: a retry looks the entries up.
        One statement built once, on a Core connection (no ORM session)."""
        with write_connection(self.rt.engine) as conn:
            self._claim_on(conn, batch)

    def _claim_in(self, session: Session, batch: list[Message]) -> None:
        """:meth:`_claim` in the caller's transaction."""
        self._claim_on(session.connection(), batch)

    def _claim_on(self, conn: Connection, batch: list[Message]) -> None:
        conn.execute(_CLAIM, {"ids": [m.id for m in batch], "at": utcnow()})
        self._claimed = {m.id for m in batch}

    def _unclaim(self, batch: list[Message], entries: list[TimelineEntry]) -> None:
        """Undo this job's claim of entries no attempt wrote anything of:
        each message gets back the status and attempt count it had."""
        untouched = {e.bridge_id for e in entries if not e.written}
        with self.rt.transaction() as session:
            for message in batch:
                if message.uid in untouched:
                    session.execute(
                        update(Message)
                        .where(Message.id == message.id)
                        .values(status=message.status, attempts=message.attempts, claimed_at=None)
                    )

    def _append_with_retries(
        self,
        adapter: CrmAdapter,
        entries: list[TimelineEntry],
        batch: list[Message],
        snap: _Snapshot,
        lock: ConversationLock,
    ) -> dict[str, Any]:
        """``append_entries`` with in-job retries that keep progress: what a
        failed attempt completed (``error.partial``) is recorded at once and
        only the rest is retried, with ``maybe_written`` (the failed call may
        have committed). The retry budget counts attempts without progress."""
        results: dict[str, Any] = {}
        remaining = list(entries)
        retry = False
        stalled = 0
        while remaining:
            attempt = [replace(e, maybe_written=True) for e in remaining] if retry else remaining
            try:
                got = adapter.append_entries(attempt)
            except RetryableError as exc:
                got = dict(exc.partial)
                if got:
                    self._record(batch, got, snap)
                results.update(got)
                remaining = [e for e in remaining if e.bridge_id not in got]
                remaining = self._keep_progress(batch, remaining, exc.progress)
                stalled = 0 if got else stalled + 1
                waiting = isinstance(exc, NotReadyError)  # retried with fresh settings
                if waiting or stalled >= self.settings.retry_attempts:
                    if exc.nothing_written and not retry:
                        # no attempt can have written them (refused before
                        # running, e.g. setup not finished): this claim
                        # never happened, so a long wait is no poison pill
                        self._unclaim(batch, remaining)
                    raise
                time.sleep(retry_delay(self.settings, max(stalled, 1), exc))
                retry = retry or not exc.nothing_written
                if lock.lost.is_set():
                    raise LeaseLost from None
                continue
            except PermanentError as exc:
                exc.partial = {**results, **exc.partial}
                self._keep_progress(batch, remaining, exc.progress)
                raise
            results.update(got)
            left = [e for e in remaining if e.bridge_id not in got]
            if left and not got:
                # answered without writing anything: don't spin on it
                stalled += 1
                if stalled >= self.settings.retry_attempts:
                    raise RetryableError("the CRM accepted the call but wrote none of the entries")
            remaining, retry = left, True
        return results

    def _record(self, batch: list[Message], results: dict[str, Any], snap: _Snapshot) -> None:
        if any(m.kind == MessageKind.CALLBACK.value for m in batch if m.uid in results):
            # a button press is answered once it is in the CRM: its follow-up
            # work is recorded through the session (bridge.pipeline.followup)
            with self.rt.transaction() as session:
                acks = self._record_in(session, batch, results, snap)
            self._enqueue_acks(acks)
            self._count_synced(snap, [m for m in batch if m.uid in results])
            return
        # the common case: prebuilt statements on a Core connection
        with write_connection(self.rt.engine) as conn:
            self._record_plain(conn, [m for m in batch if m.uid in results], results, snap)
        self._count_synced(snap, [m for m in batch if m.uid in results])

    def _count_synced(self, snap: _Snapshot, done: list[Message]) -> None:
        """Metrics: ``done`` is in the CRM (after the commit that says so)."""
        kinds = (snap.account.kind, snap.tenant.crm_kind)
        metrics.synced(self.rt.redis, *kinds, snap.tenant.id, [m.created_at for m in done])

    def _record_in(
        self, session: Session, batch: list[Message], results: dict[str, Any], snap: _Snapshot
    ) -> list[str]:
        """:meth:`_record` in the caller's transaction; returns the follow-up
        jobs to enqueue once it committed (:meth:`_enqueue_acks`)."""
        done = [m for m in batch if m.uid in results]
        acks: list[str] = []
        plain = []
        for message in done:
            if message.kind != MessageKind.CALLBACK.value:
                plain.append(message)
                continue
            self._recorded.add(message.id)
            row = session.get(Message, message.id)
            assert row is not None
            refs = [[r.kind, r.id] for r in results[message.uid]]
            row.status, row.last_error, row.crm_refs = MessageStatus.SYNCED, None, refs
            # a button press is answered once it is in the CRM: its
            # own follow-up work, retried until the channel has it
            job = due(session, row, outbox.ACK)
            acks += [job] if job else []
            self.synced += 1
        self._record_plain(session.connection(), plain, results, snap, wrote=bool(done))
        return acks

    def _record_plain(
        self,
        conn: Connection,
        done: list[Message],
        results: dict[str, Any],
        snap: _Snapshot,
        *,
        wrote: bool = False,
    ) -> None:
        """Messages that need no follow-up marked synced with their refs, the
        outbox marked idle when the batch was all that waited, and the CRM
        contact the entries went to (``wrote``: others were recorded beside
        ``done``): prebuilt statements on ``conn``."""
        if done:
            conn.execute(
                _SYNCED,
                [{"m_id": m.id, "m_refs": [[r.kind, r.id] for r in results[m.uid]]} for m in done],
            )
        self._recorded.update(m.id for m in done)
        if self._idle_at is not None and self._idle_at[1] <= self._recorded:
            if outbox.mark_idle(conn, self.conversation_id, outbox.IN, self._idle_at[0]):
                self._went_idle = True
        self.synced += len(done)
        contact = snap.contact.crm_contact_id
        if (done or wrote) and contact and snap.conversation.crm_contact_id != contact:
            conn.execute(_CONTACT_WRITTEN, {"c_id": snap.conversation.id, "c_contact": contact})
            snap.conversation.crm_contact_id = contact
        if done and snap.mapping is not None and snap.mapping.live_contact_fields():
            # the client wrote: the CRM contact's live fields (their
            # reachability) may change, or start a clock (a reply window)
            with Session(bind=conn) as session:
                live_fields.after_sync(session, snap.mapping, snap.contact.id)
                session.flush()

    def _enqueue_acks(self, acks: list[str]) -> None:
        for job in acks:
            enqueue(self.rt.queues, outbox.ACK, self.conversation_id, job)

    def _keep_progress(
        self,
        batch: list[Message],
        entries: list[TimelineEntry],
        progress: dict[str, Any],
    ) -> list[TimelineEntry]:
        """Store the refs of entries an append wrote only some steps of
        (``error.progress``) with their messages, and return ``entries``
        carrying them (``TimelineEntry.written``): no later attempt, this
        job's or another's, writes those steps again."""
        by_uid = {m.uid: m for m in batch}
        kept = {uid: refs for uid, refs in (progress or {}).items() if uid in by_uid}
        if not kept:
            return entries
        with self.rt.transaction() as session:
            for uid, refs in kept.items():
                message = by_uid[uid]
                merged = _merged_refs(message.crm_refs, refs)
                session.execute(
                    update(Message).where(Message.id == message.id).values(crm_refs=merged)
                )
                message.crm_refs = merged
        return [
            replace(e, written=_refs(by_uid[e.bridge_id].crm_refs)) if e.bridge_id in kept else e
            for e in entries
        ]

    def _entry(
        self,
        snap: _Snapshot,
        rule: ChannelRule,
        message: Message,
        contact_ref: CrmRef | None,
        entity_ref: CrmRef | None,
        maybe_written: bool,
    ) -> TimelineEntry:
        payload = message.payload or {}
        profile = profile_from_payload(message.payload)
        # lets a CRM skip per-conversation setup (amoCRM: create + link the
        # chat) — again when the person's CRM contact changed (deleted there
        # and created anew): the conversation must be linked to the new one
        known = snap.conversation.crm_contact_id
        first = not snap.has_synced or bool(
            known and contact_ref is not None and known != contact_ref.id
        )
        is_edit = bool(payload.get("is_edit"))
        edit_of = self._original_of(snap, payload.get("provider_message_id")) if is_edit else None
        # the business's own message sent outside the bridge (an echo): an
        # outgoing entry, under the rep's word rather than the customer's name
        echo = bool(payload.get("echo"))
        language = snap.mapping.language if snap.mapping else "en"
        text = message.text
        if payload.get("revoked") or message.kind == MessageKind.REACTION:
            with self.rt.read_session() as session:
                text = entry_text(
                    session, snap.conversation.id, message.kind, text, payload, language
                )
        return TimelineEntry(
            bridge_id=message.uid,
            conversation_uid=snap.conversation.uid,
            channel_kind=snap.account.kind,
            channel_account=str(snap.account.id),
            direction="out" if echo else "in",
            kind=MessageKind(message.kind),
            text=_with_page(snap, profile, _flagged(snap, payload.get("flag"), text)),
            occurred_at=aware(message.sent_at),
            contact=contact_ref,
            entity=entity_ref,
            sequence=message.provider_seq if message.provider_seq is not None else message.seq,
            sender_name=None if echo else profile.name() or snap.contact.display_name,
            sender_identifier=snap.conversation.external_thread_id,
            attachments=tuple(
                files.resolve(self.rt, attachment_from_dict(a))
                for a in payload.get("attachments", [])
            ),
            is_edit=is_edit,
            owner_id=snap.conversation.owner_id,
            maybe_written=maybe_written,
            written=_refs(message.crm_refs),
            timeline=rule.timeline,
            inbox=rule.inbox,
            language=snap.mapping.language if snap.mapping else "en",
            timezone=snap.mapping.timezone if snap.mapping else "UTC",
            channel_title=channel_class(snap.account.kind).title,
            first_in_conversation=first,
            edit_of=edit_of,
            late=bool(payload.get("late")),
            stored_at=aware(message.created_at) if message.created_at else None,
        )

    # -- helpers ----------------------------------------------------------

    def _original_of(self, snap: _Snapshot, provider_message_id: str | None) -> str | None:
        """The bridge id of the message an edit changes (same provider id)."""
        if not provider_message_id:
            return None
        with self.rt.transaction() as session:
            for uid, payload in session.execute(
                select(Message.uid, Message.payload)
                .where(
                    Message.conversation_id == snap.conversation.id,
                    Message.direction == outbox.IN,
                )
                .order_by(Message.seq)
            ):
                data = payload or {}
                if data.get("provider_message_id") == provider_message_id and not data.get(
                    "is_edit"
                ):
                    return str(uid)
        return None

    def _context(self, snap: _Snapshot, profile: SenderProfile) -> dict[str, str | None]:
        cls = channel_class(snap.account.kind)
        context: dict[str, str | None] = {
            "contact.name": snap.contact.display_name or profile.name(),
            "contact.phone": snap.contact.phone,
            "contact.email": snap.contact.email,
            "profile.first_name": profile.first_name,
            "profile.last_name": profile.last_name,
            "profile.username": profile.username,
            "profile.language": profile.language,
            "profile.page_url": profile.page_url,
            "profile.page_title": profile.page_title,
            "profile.referrer": profile.referrer,
            "profile.timezone": profile.timezone,
            "channel.kind": snap.account.kind,
            "channel.title": cls.title,
            "channel.account": snap.account.name,
            "conversation.uid": snap.conversation.uid,
            "conversation.ticket": (
                snap.mapping.ticket(snap.conversation.ticket_number) if snap.mapping else None
            ),
            "conversation.priority": self._priority(snap),
            "message.text": snap.messages[0].text[:200],
            # read only when the rule's fields use it (bridge.reach)
            reach.PLACEHOLDER: reach.for_template(
                self.rt, snap.mapping, snap.contact.id, snap.account.kind
            ),
        }
        for key, value in (profile.utm or {}).items():
            context[f"utm.{key}"] = value
        for key, value in (profile.consent or {}).items():
            context[f"consent.{key}"] = value
        return context

    def _update(
        self, table: type[Contact] | type[Conversation], row_id: int, **values: Any
    ) -> None:
        with self.rt.transaction() as session:
            session.execute(update(table).where(table.id == row_id).values(**values))

    def _fail(self, message_id: int, reason: str) -> None:
        with self.rt.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=MessageStatus.FAILED, last_error=reason[:2000])
            )

    def _park(self, reason: str) -> Parked:
        with self.rt.transaction() as session:
            outbox.park(session, self.conversation_id, outbox.IN, reason[:2000])
        return Parked("parked")

    def _mark_tenant(self, tenant_id: int, exc: AuthError) -> None:
        with self.rt.transaction() as session:
            session.execute(
                update(Tenant)
                .where(Tenant.id == tenant_id)
                .values(
                    status=TenantStatus.NEEDS_REAUTH,
                    status_reason=(exc.message or "auth failed")[:2000],
                )
            )


def _refs(stored: list[Any] | None) -> tuple[CrmRef, ...]:
    """``[[kind, id], ...]`` as stored on a message -> refs."""
    return tuple(CrmRef(str(kind), str(ref_id)) for kind, ref_id in stored or ())


def _merged_refs(stored: list[Any] | None, refs: Any) -> list[list[str]]:
    merged = [[str(k), str(i)] for k, i in stored or ()]
    for ref in refs:
        if [ref.kind, ref.id] not in merged:
            merged.append([ref.kind, ref.id])
    return merged


class _FailMessage(Exception):
    def __init__(self, message_id: int, reason: str) -> None:
        super().__init__(reason)
        self.message_id = message_id
        self.reason = reason


#: the line under a message written on a web page, per mapping language
_PAGE = {"en": "Page", "ru": "Страница"}


def _with_page(snap: _Snapshot, profile: SenderProfile, text: str) -> str:
    """The text, with the page the customer wrote it on (a website form, a
    chat widget: ``SenderProfile.page_url``) under it, so the rep sees
    what they were looking at."""
    if not profile.page_url:
        return text
    language = snap.mapping.language if snap.mapping else "en"
    line = f"{_PAGE.get(language, _PAGE['en'])}: {profile.page_url}"
    return f"{text}\n\n{line}" if text else line


def _flagged(snap: _Snapshot, flag: str | None, text: str) -> str:
    """The text, after the warning its channel says the message carries
    (``InboundMessage.flag``, worded by the channel in the mapping's
    language): a CRM entry the rep reads first."""
    if not flag:
        return text
    words = channel_class(snap.account.kind).flags.get(flag) or {}
    language = snap.mapping.language if snap.mapping else "en"
    note = words.get(language) or words.get("en") or flag
    return f"[{note}]\n{text}" if text else f"[{note}]"
