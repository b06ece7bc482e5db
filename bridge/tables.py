"""The bridge's tables (SQLAlchemy 2 declarative).

Every row carries ``tenant_id``; every query goes through a tenant-scoped
lookup. The ``outbox`` is the record of pending work (one row per
conversation and direction); an RQ job is only a hint that can be lost and
recreated from it (DESIGN.md "Guarantees").

Message statuses::

    pending ──claim──> in_flight ──CRM/channel ok──> synced | sent
       ^                  │  (retry of an in_flight message looks the entry
       │                  │   up on the far side before writing again)
       └──── replay ──── failed   (permanent error; the conversation's later
                                   messages wait behind it)
    skipped: stored and acknowledged, never sent anywhere (e.g. duplicates of
             a migration notice)
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bridge.model import utcnow

__all__ = [
    "Base",
    "ChannelAccount",
    "ChannelStatus",
    "Contact",
    "ContactIdentity",
    "ContactLink",
    "ContactMerge",
    "Conversation",
    "ConversationStatus",
    "CrmRoute",
    "CrmWrite",
    "Delivery",
    "DeliveryState",
    "FollowupStatus",
    "IgnoredEventRow",
    "Message",
    "MessageStatus",
    "Outbox",
    "OutboxState",
    "StoredFile",
    "Tenant",
    "TenantStatus",
    "ApiToken",
    "Cascade",
    "CascadeState",
    "CascadeStep",
    "StepState",
]

# BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON()


class Base(DeclarativeBase):
    pass


def _now() -> dt.datetime:
    return utcnow()


class MessageStatus(StrEnum):
    """Where a message stands in its pipeline."""

    PENDING = "pending"  # stored, not yet done
    IN_FLIGHT = "in_flight"  # claimed by a job; a retry looks it up first
    SYNCED = "synced"  # inbound: in the CRM
    SENT = "sent"  # outbound: delivered to the channel
    FAILED = "failed"  # refused for good, or the outcome is unknown: `bridge replay`
    #: outbound: the channel's rules refuse it now (WhatsApp's 24-hour
    #: window closed, no template configured): reported to the CRM with the
    #: reason; the conversation goes on (later replies are not held back)
    REFUSED = "refused"


class FollowupStatus(StrEnum):
    """A message's follow-up work (an acknowledgement, a delivery report)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class OutboxState(StrEnum):
    """A conversation's work of one kind (``Outbox``)."""

    IDLE = "idle"
    PENDING = "pending"
    PARKED = "parked"


class TenantStatus(StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"  # the CRM refused its credentials
    DISABLED = "disabled"  # paused by an admin


class ChannelStatus(StrEnum):
    ACTIVE = "active"
    DISCONNECTED = "disconnected"  # webhooks refused, credentials dropped, history kept


class ConversationStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"  # the CRM closed it; the next inbound message reopens it


class CrmWrite(StrEnum):
    """Where the write of a CRM record (contact, entity, task) stands: a
    ``creating`` record may exist in the CRM already (the job died after the
    call), so a retry looks it up before creating it again."""

    CREATING = "creating"
    SYNCED = "synced"


class DeliveryState(StrEnum):
    """Where a journaled delivery stands::

    new ──normaliser──> normalised   (its events are stored)
     │             └──> ignored      (nothing for a customer thread)
     └───────────────> rejected     (with a reason code; ``bridge
                                      reparse`` tries it again)
    """

    NEW = "new"
    NORMALISED = "normalised"
    REJECTED = "rejected"
    IGNORED = "ignored"


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (UniqueConstraint("crm_kind", "crm_account_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    crm_kind: Mapped[str] = mapped_column(String(32))
    #: the CRM's account id (HubSpot portal id); unique per CRM
    crm_account_id: Mapped[str | None] = mapped_column(String(64))
    #: random path secret for this tenant's CRM webhooks (>= 128 bits)
    webhook_key: Mapped[str] = mapped_column(String(64), unique=True)
    #: encrypted JSON (Fernet) — tokens never stored in clear
    credentials: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: mapping file name under the mappings directory
    mapping: Mapped[str] = mapped_column(String(200))
    #: active | needs_reauth | disabled
    status: Mapped[str] = mapped_column(String(32), default=TenantStatus.ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(Text)
    #: the next ticket number (conversations of channels that open tickets)
    next_ticket: Mapped[int] = mapped_column(Integer, default=1001, server_default="1001")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class CrmRoute(Base):
    """App-level webhook keys (one URL for every tenant, the key in it names
    the tenant: amoCRM's chat channel hook carries the account's scope id)."""

    __tablename__ = "crm_routes"
    __table_args__ = (UniqueConstraint("crm_kind", "route_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    crm_kind: Mapped[str] = mapped_column(String(32))
    route_key: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


#: a channel account's setting while the CRM setup for it has not finished
SETUP_PENDING = "crm_setup_pending"


class ChannelAccount(Base):
    __tablename__ = "channel_accounts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    #: random path secret in /webhooks/<kind>/<key>
    key: Mapped[str] = mapped_column(String(64), unique=True)
    #: the account's own id on the channel (bot id)
    external_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    credentials: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: active | disconnected (webhooks refused, credentials dropped, history kept)
    status: Mapped[str] = mapped_column(
        String(16), default=ChannelStatus.ACTIVE, server_default=ChannelStatus.ACTIVE.value
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    #: a pulled account's poll cursor (the adapter's, opaque: Telegram's next
    #: getUpdates offset), stored only after what it fetched is journaled
    poll_cursor: Mapped[str | None] = mapped_column(Text)

    @property
    def awaiting_crm_setup(self) -> bool:
        """Connected, but the CRM setup has not covered it yet (it may still
        run): the CRM side (custom properties, an inbox channel, a chat
        scope) is not there, so its messages wait for it."""
        return bool((self.settings or {}).get(SETUP_PENDING))


class Contact(Base):
    """One person, whatever the channel (identities hang off it)."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    crm_contact_id: Mapped[str | None] = mapped_column(String(64))
    crm_owner_id: Mapped[str | None] = mapped_column(String(64))
    #: None | creating (a create call may have committed) | synced
    crm_state: Mapped[str | None] = mapped_column(String(16))
    #: the CRM knows less than we do (a phone learnt later): update it
    crm_dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    #: the CRM contact's fields the bridge keeps current (``bridge.live_fields``):
    #: what was last written there, and when to look at them again
    crm_live: Mapped[dict[str, str] | None] = mapped_column(JSON)
    crm_live_due: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class ContactIdentity(Base):
    """A handle that names a person: (telegram, 12345), (phone, +7...), (email, ...).

    ``origin_contact_id`` is the contact the handle was first learnt for and
    never changes; ``contact_id`` is the live contact it belongs to now (the
    survivor of the merges since). Undoing a merge sends each handle back to
    the live contact of its origin (``bridge.identity.unmerge``). A verified
    handle was proven by its channel; an unverified one (typed into a form)
    only ever links two clients for a rep, never merges them.
    """

    __tablename__ = "contact_identities"
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "value", "origin_contact_id"),
        Index("ix_contact_identities_lookup", "tenant_id", "kind", "value"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    origin_contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(320))
    verified: Mapped[bool] = mapped_column(Boolean, default=True)
    #: how it was learnt: the channel kind and what said it ("whatsapp: sender",
    #: "webchat: typed in the form", "crm: merged by a person")
    source: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ContactMerge(Base):
    """Why two contacts became one (explainable, reversible merges).

    ``evidence``: the handle that made them one (kind, value, verified, its
    source and channel) or who decided. ``crm_action``: what the bridge did in
    the CRM when both had a CRM contact (``pending`` until the sync did it,
    then ``merged`` by the CRM's API, ``linked`` with a note on each, or
    ``none``). An undone merge keeps its row (``undone_at``) and vetoes the
    same two contacts being merged automatically again.
    """

    __tablename__ = "contact_merges"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    from_contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    into_contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    reason: Mapped[str] = mapped_column(String(200))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(Json)
    crm_action: Mapped[str | None] = mapped_column(String(16))
    #: the CRM contacts involved, as they were when merged (for the CRM's side
    #: and its undo): the survivor's and the merged one's
    crm_keep_id: Mapped[str | None] = mapped_column(String(64))
    crm_gone_id: Mapped[str | None] = mapped_column(String(64))
    undone_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    undone_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ContactLink(Base):
    """A "possibly the same client": an unverified handle of one contact that a
    different contact holds. Nothing is merged; the CRM shows the link on both
    contacts and a rep confirms it (a merge) or dismisses it."""

    __tablename__ = "contact_links"
    __table_args__ = (
        UniqueConstraint("tenant_id", "contact_id", "other_contact_id", "kind", "value"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    #: the contacts' origins (the ones the handles were learnt for)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    other_contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(320))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(Json)
    #: open | confirmed | dismissed
    state: Mapped[str] = mapped_column(String(16), default="open")
    #: the CRM was told (a note on each contact); False: the next sync tells it
    crm_noted: Mapped[bool] = mapped_column(Boolean, default=False)
    merge_id: Mapped[int | None] = mapped_column(ForeignKey("contact_merges.id"))
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Conversation(Base):
    """A thread on one channel account (a Telegram chat) with one contact."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("channel_account_id", "external_thread_id"),
        Index("ix_conversations_ticket", "tenant_id", "ticket_number", unique=True),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    #: public id; travels to the CRM (integrationThreadId, entity marker)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    #: the contact the conversation started with; ``contact_id`` follows merges
    #: and an undone merge sends the conversation back to its origin's contact
    origin_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    external_thread_id: Mapped[str] = mapped_column(String(64))
    #: open | closed
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.OPEN)
    crm_entity_type: Mapped[str | None] = mapped_column(String(32))
    crm_entity_id: Mapped[str | None] = mapped_column(String(64))
    #: the deal/lead the conversation had opened before a merge made it join
    #: the client's first one (``reuse: open``); its own again if the merge is undone
    crm_entity_before: Mapped[str | None] = mapped_column(String(64))
    #: None | creating | synced
    crm_entity_state: Mapped[str | None] = mapped_column(String(16))
    crm_thread_id: Mapped[str | None] = mapped_column(String(64))
    #: the CRM contact the conversation's entries were last written for (a
    #: change means the CRM's conversation must be linked to the new one)
    crm_contact_id: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    #: None | creating | <task id>
    task_state: Mapped[str | None] = mapped_column(String(64))
    next_seq: Mapped[int] = mapped_column(Integer, default=1)
    #: what the channel remembers of the thread to answer in it (e-mail:
    #: the customer's address, subject, last Message-ID and References)
    channel_state: Mapped[dict[str, Any] | None] = mapped_column(Json)
    #: the ticket number, per tenant (channels that open tickets: e-mail)
    ticket_number: Mapped[int | None] = mapped_column(Integer)
    #: the customer's latest word on being written to here (``bridge.consent``):
    #: None (never said) | allowed | withdrawn, and its provider time
    consent: Mapped[str | None] = mapped_column(String(16))
    consent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # durable dedupe: a redelivery (same update id / same CRM message id)
        # can never create a second row (ASVS 15.4.2: the insert is the check)
        UniqueConstraint("channel_account_id", "direction", "dedupe_key"),
        UniqueConstraint("conversation_id", "seq"),
        Index("ix_messages_work", "conversation_id", "direction", "status", "seq"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    #: the bridge message id: travels with every CRM entry so it can be found again
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id"))
    #: in (customer -> CRM) | out (CRM -> customer)
    direction: Mapped[str] = mapped_column(String(3))
    seq: Mapped[int] = mapped_column(Integer)
    dedupe_key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")
    #: attachments, sender profile, flags (edit, reply_to, callback id), raw payload
    payload: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: the provider's own time for the message
    sent_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: provider ordering within the thread (Telegram message_id)
    provider_seq: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: when a job last claimed it (in_flight); a claim younger than the lock
    #: lease means another job may still be working on it
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    #: [[kind, id], ...] of what the CRM created for it
    crm_refs: Mapped[list[Any] | None] = mapped_column(Json)
    #: the CRM's id for an outbound message (its reply id)
    crm_message_id: Mapped[str | None] = mapped_column(String(128))
    #: ids the channel gave the sent message (parts)
    channel_message_ids: Mapped[list[Any] | None] = mapped_column(Json)
    #: follow-up work once the message landed (its own outbox work): an
    #: inbound event's acknowledgement to the channel, an outbound reply's
    #: delivery report to the CRM. None (none due) | pending | done | failed
    followup_status: Mapped[str | None] = mapped_column(String(16))
    followup_error: Mapped[str | None] = mapped_column(Text)
    followup_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class Outbox(Base):
    """Pending work per conversation and direction: the record the sweeper
    reads. ``version`` is bumped by every new message, so a job that drained
    the conversation only marks it idle if nothing arrived meanwhile."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("conversation_id", "direction"),
        Index("ix_outbox_sweep", "state", "enqueued_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    direction: Mapped[str] = mapped_column(String(8))  # in, out, ack, report
    #: idle | pending | parked
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.IDLE)
    version: Mapped[int] = mapped_column(Integer, default=0)
    #: why it is parked (failed message / auth) or backing off
    reason: Mapped[str | None] = mapped_column(Text)
    #: do not run before (backoff after a long outage)
    not_before: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_job_id: Mapped[str | None] = mapped_column(String(128))
    sweeps: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class IgnoredEventRow(Base):
    """Updates that belong to no customer thread, kept for dedupe and audit."""

    __tablename__ = "ignored_events"
    __table_args__ = (UniqueConstraint("channel_account_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id"))
    dedupe_key: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class EarlyStatus(Base):
    """A channel's report on one of our messages that came before the send
    was recorded (the provider answered the send, then reported delivery
    faster than the bridge committed the answer): kept, and applied when
    the send's ids are recorded (``threads.apply_early``)."""

    __tablename__ = "early_statuses"
    __table_args__ = (
        Index("ix_early_statuses_lookup", "channel_account_id", "channel_message_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id"))
    channel_message_id: Mapped[str] = mapped_column(String(255))
    #: the channel's word (``OutboundStatus.status``) and its reason
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    #: when it was applied to the message (None: still waiting)
    applied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Delivery(Base):
    """The ingest journal: what a channel delivered, as it arrived.

    A webhook (or a poller) stores the verified raw body here and answers;
    the normaliser parses it in a worker. Unique on the account and the
    provider's own delivery id, so a redelivery is a no-op. A row is never
    deleted; its body is dropped ``journal_retention_days`` after it was
    normalised (the row stays as the record of what arrived).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("channel_account_id", "delivery_key"),
        Index("ix_deliveries_account_state", "channel_account_id", "state", "id"),
        Index("ix_deliveries_state_received", "state", "received_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    channel_account_id: Mapped[int] = mapped_column(ForeignKey("channel_accounts.id"))
    #: the provider's delivery id (Telegram update_id, a wamid, a Message-ID)
    delivery_key: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: the bytes as received (None once retention dropped them)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: the few request facts the normaliser needs (headers it reads)
    facts: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: new | normalised | rejected | ignored
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.NEW)
    #: why it was rejected or ignored (a reason code)
    reason: Mapped[str | None] = mapped_column(String(64))
    #: a human-readable detail of the reason (never personal data)
    detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    normalised_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class StoredFile(Base):
    """A file the bridge keeps for the CRM: an attachment's bytes taken from
    a channel's delivery (an e-mail's parts and the whole original mail),
    served at a link with a secret token (``bridge.files``). ``content`` is
    dropped ``file_retention_days`` after it was stored (the row stays)."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    #: the link's secret: compared in constant time, never logged
    token: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, index=True
    )


class ApiToken(Base):
    """A tenant's token for the bridge's own API (``/api/v1``): only its
    SHA-256 is kept; the token is shown once when it is made
    (``bridge.apitokens.issue``)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CascadeState(StrEnum):
    """Where a cascade stands (``bridge.cascade``)."""

    RUNNING = "running"
    DELIVERED = "delivered"  # a channel reached the client
    UNDELIVERED = "undelivered"  # every channel was tried or skipped


class StepState(StrEnum):
    """One channel of a cascade."""

    WAITING = "waiting"  # not tried yet
    SENDING = "sending"  # its message stored; waiting for the channel's word
    DELIVERED = "delivered"  # delivered or read (or sent, where that is all the channel says)
    FAILED = "failed"  # the send failed or was refused
    TIMED_OUT = "timed_out"  # no delivered/read within the wait
    SKIPPED = "skipped"  # not reachable, or no conversation there


class Cascade(Base):
    """One message to a client tried on their channels in turn: the next
    after a failure or a wait without delivered/read, never twice on one
    channel. ``key`` is the caller's idempotency key (a retried POST
    returns the same cascade)."""

    __tablename__ = "cascades"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        Index("ix_cascades_due", "state", "next_check"),
        Index("ix_cascades_note", "note_state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    #: public id (the API's)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    #: deleting the contact (its tenant deleted) deletes its cascades
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    #: the CRM contact it was asked for (its outcome is noted there)
    crm_contact_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    #: the channel kinds in the order asked
    channels: Mapped[list[Any]] = mapped_column(Json)
    wait_minutes: Mapped[int] = mapped_column(Integer)
    #: running | delivered | undelivered
    state: Mapped[str] = mapped_column(String(16), default=CascadeState.RUNNING)
    #: when the sweeper looks at it next (a step's wait ends, a rate limit
    #: lets the next send go); None once finished
    next_check: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: the batch it belongs to (None: asked alone)
    batch: Mapped[str | None] = mapped_column(String(36), index=True)
    #: the CRM note of its outcome: None (not yet due) | pending | done | failed
    note_state: Mapped[str | None] = mapped_column(String(16))
    note_error: Mapped[str | None] = mapped_column(Text)
    note_attempts: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class CascadeStep(Base):
    """One channel of a cascade: unique per cascade and channel kind, and
    its message's dedupe key is ``cascade:<uid>:<kind>``, so no retry ever
    sends on a channel twice."""

    __tablename__ = "cascade_steps"
    __table_args__ = (
        UniqueConstraint("cascade_id", "channel"),
        UniqueConstraint("cascade_id", "position"),
        Index("ix_cascade_steps_state", "state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    cascade_id: Mapped[int] = mapped_column(ForeignKey("cascades.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    #: waiting | sending | delivered | failed | timed_out | skipped
    state: Mapped[str] = mapped_column(String(16), default=StepState.WAITING)
    #: why it ended so: a ``Reach.reason`` for a skipped one, the delivery
    #: state (delivered, read, sent) for a delivered one
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    channel_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("channel_accounts.id", ondelete="SET NULL")
    )
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: when the cascade last looked at its message (a newer change: look again)
    checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ServiceSession(Base):
    """One session of a conversation (``bridge.service``): opened by the
    client's message, closed after the line's idle hours or when the CRM
    closes the deal/ticket. A row per session is the record the KPIs read
    (opened, first response, closed, why, the rating); the conversation's
    newest row also carries where the service layer's pass over its
    inbound messages got to (``cursor``: the last inbound ``seq`` seen)."""

    __tablename__ = "service_sessions"
    __table_args__ = (
        UniqueConstraint("conversation_id", "number"),
        Index("ix_service_sessions_due", "next_check"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    #: ``bridge.service.sessions.SessionState`` as a dict
    state: Mapped[dict[str, Any]] = mapped_column(Json)
    #: the line and owner routing gave it, and why (the audit)
    line: Mapped[str | None] = mapped_column(String(100))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    route_reason: Mapped[str | None] = mapped_column(String(200))
    #: the greeting menu the client is in (``MenuState`` as a dict), None: none
    menu: Mapped[dict[str, Any] | None] = mapped_column(Json)
    #: ``bridge.service.sla.SlaState`` as a dict, None: no SLA on its line
    sla: Mapped[dict[str, Any] | None] = mapped_column(Json)
    #: the replies last suggested to the operator (``bridge.service.assist``):
    #: their reply is matched against them (accepted or rejected)
    suggested: Mapped[list[Any] | None] = mapped_column(Json)
    #: the operator's replies to a message with suggestions, and how many of
    #: them took one (the KPIs' acceptance)
    suggestions_answered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    suggestions_accepted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    first_response_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    close_reason: Mapped[str | None] = mapped_column(String(16))
    rating: Mapped[int | None] = mapped_column(Integer)
    #: when the sweeper looks at it next (idle close, an SLA warning or
    #: breach, the end of the rating window); None: nothing timed
    next_check: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class ServiceAction(Base):
    """A CRM write the service layer asked for (a task due at opening, a
    note of the menu choice or the rating, an alert to a supervisor), done
    by a job and retried until the CRM has it. ``key`` names it: the same
    work is asked once."""

    __tablename__ = "service_actions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        Index("ix_service_actions_due", "state", "next_check"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(200))
    #: task | note
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    #: pending | done | failed
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    next_check: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class TenantService(Base):
    """What the service layer remembers per tenant: whom round-robin gave
    each line's last session, and how its suggested replies fared."""

    __tablename__ = "tenant_service"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    routing: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: how often each suggested reply was shown and accepted (``suggest.Prior``)
    suggestions: Mapped[dict[str, Any] | None] = mapped_column(Json)


# -- the admin console (``bridge.console``) ------------------------------------------------------


class ConsoleUser(Base):
    """A person who signs in to the admin console: an ``owner`` (every
    tenant, ``tenant_id`` None), a tenant's ``admin`` or a ``viewer``. The
    password is kept as an Argon2id hash; the TOTP secret, when set, is
    encrypted like the tenants' credentials (``bridge.crypto``, bound to the
    user's row)."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    #: stored lower-case
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    #: owner | admin | viewer
    role: Mapped[str] = mapped_column(String(16))
    tenant_id: Mapped[int | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    #: encrypted base32 secret (None: no second factor)
    totp_secret: Mapped[str | None] = mapped_column(Text)
    #: the console's language for this user: en | ru
    language: Mapped[str] = mapped_column(String(8), default="en")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ConsoleAudit(Base):
    """One change made in the console (or by ``bridge admin``): who, in which
    tenant, what, on what, the values before and after, when and from where."""

    __tablename__ = "console_audit"
    __table_args__ = (Index("ix_console_audit_tenant", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    #: None: the command line, or a user deleted since (``user_email`` stays)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("console_users.id", ondelete="SET NULL"))
    user_email: Mapped[str] = mapped_column(String(320))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(64))
    #: what was changed ("user:12 ann@example.com", "channel:3")
    target: Mapped[str] = mapped_column(String(200), default="")
    before: Mapped[Any | None] = mapped_column(Json)
    after: Mapped[Any | None] = mapped_column(Json)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
