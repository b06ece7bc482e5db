"""What the console's Conversations page reads: a tenant's conversations
found by contact, channel, status and time, one conversation's messages,
and a message's trace from the channel's delivery to the CRM and back.

Every query is scoped to the tenant the caller names; a row of another
tenant is never returned (the page answers 404).

A message's trace is put together from what the pipeline records:

1. **received**: the ingest journal's row (``deliveries``): when, on which
   channel account, how that account receives (webhook, poller, the hosted
   chat). A message row does not name its journal row, so it is found: the
   account's row whose delivery key is the message's own key (a channel that
   keys both alike, Telegram's ``update_id``), and the rows the normaliser
   marked in the transaction that stored the message (their ``normalised_at``
   is stamped in it, just before the message's ``created_at``); the one whose
   kept body the account's parser turns into this message is it
   (:func:`journal_for`). A body dropped by retention can no longer be
   checked: a row with the same key is then shown as found by its key only.
2. **journaled**: the row's state, attempts, reason, and when it was parsed.
3. **normalised**: the stored message (kind, the provider's ids and time,
   text, attachments, sender profile, flags).
4. **CRM**: the contact, the deal/lead/ticket and task of the conversation,
   the timeline entries written for this message (``Message.crm_refs``),
   the message's status, attempts and last error, the conversation's outbox
   rows; each CRM id with a link into the CRM where the adapter knows its
   page (``CrmAdapter.record_url``); and each CRM call the conversation's
   work made while the message was being written (``bridge.crm_calls``:
   when, method, path, status, how long; kept in Redis for two weeks).
5. **replies**: the outbound messages between this message and the
   client's next one, with their channel status, the channel's delivery
   report (sent/delivered/read) and the delivery report to the CRM.

The journal's ``rejected`` and ``ignored`` rows have no message: they are
listed on their own (:func:`journal_rows`) with their trace
(:func:`delivery_trace`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select
from sqlalchemy.orm import Session

from bridge import crm_calls, outbox
from bridge.identity import normalize_email, normalize_phone
from bridge.model import InboundMessage, RawDelivery, ReceiveMode
from bridge.pipeline.inbound.journal import BATCH, LATE_AFTER, REPARSABLE, delivery_key
from bridge.registry import UnknownAdapter, channel_class
from bridge.rows import aware
from bridge.tables import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    Conversation,
    CrmWrite,
    Delivery,
    DeliveryState,
    FollowupStatus,
    Message,
    MessageStatus,
    Outbox,
    OutboxState,
    ServiceAction,
    Tenant,
)

if TYPE_CHECKING:
    from bridge.model import CrmRef
    from bridge.runtime import Runtime
    from channel_adapters.base import ChannelAdapter

__all__ = [
    "PER_PAGE",
    "STATUSES",
    "ConversationRow",
    "ConversationView",
    "CrmLinks",
    "DeliveryTrace",
    "Filters",
    "JournalMatch",
    "JournalPage",
    "SearchPage",
    "Trace",
    "can_replay",
    "channel_kinds",
    "conversation_failed",
    "conversation_view",
    "delivery_trace",
    "endpoint",
    "journal_counts",
    "journal_for",
    "journal_rows",
    "message_trace",
    "outbox_rows",
    "search",
]

log = logging.getLogger(__name__)

#: conversations (and journal rows) per page
PER_PAGE = 50
#: the most messages a conversation's page shows at once
MESSAGES_SHOWN = 200
#: replies listed under one client message
REPLIES_SHOWN = 50
#: the statuses a search may ask for: the conversation's own (open, closed),
#: or its work stopped (an outbox row parked) or failed (a failed message or
#: follow-up)
STATUSES = ("open", "closed", "parked", "failed")
#: how long before a message's ``created_at`` its journal row may have been
#: marked (both are stamped in the normaliser's one transaction)
BATCH_WINDOW = dt.timedelta(minutes=5)
#: the longest text searched for
MAX_QUERY = 200


# -- the search --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """A search of the tenant's conversations: ``contact`` matches a name or
    e-mail (part of it), a phone number (whole, or four digits or more of
    it), a CRM contact id, a handle (a Telegram id, an address), the
    conversation's public id or its ticket number (``#1042``); ``since`` and
    ``until`` (UTC days, both included) keep the conversations with a
    message sent then."""

    contact: str = ""
    channel: str = ""
    status: str = ""
    since: dt.date | None = None
    until: dt.date | None = None
    page: int = 1

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> tuple[Filters, list[str]]:
        """The filters a query string asks for, and the values that could
        not be read (left out: a date that is not one)."""
        bad: list[str] = []

        def day(name: str) -> dt.date | None:
            raw = (args.get(name) or "").strip()
            if not raw:
                return None
            try:
                return dt.date.fromisoformat(raw[:10])
            except ValueError:
                bad.append(raw[:40])
                return None

        status = (args.get("status") or "").strip()
        page = (args.get("page") or "1").strip()
        filters = cls(
            contact=(args.get("contact") or "").strip()[:MAX_QUERY],
            channel=(args.get("channel") or "").strip()[:32],
            status=status if status in STATUSES else "",
            since=day("from"),
            until=day("to"),
            page=max(1, min(int(page), 100_000)) if page.isdigit() and len(page) < 7 else 1,
        )
        return filters, bad

    def args(self, **override: Any) -> dict[str, Any]:
        """The query string that asks for these filters (``override``: a
        page), empty values left out."""
        values: dict[str, Any] = {
            "contact": self.contact,
            "channel": self.channel,
            "status": self.status,
            "from": self.since.isoformat() if self.since else "",
            "to": self.until.isoformat() if self.until else "",
            "page": self.page if self.page > 1 else "",
            **override,
        }
        return {k: v for k, v in values.items() if v not in ("", None)}


@dataclass(frozen=True)
class ConversationRow:
    """One conversation in the search's list."""

    id: int
    uid: str
    status: str
    channel_kind: str
    channel_name: str
    contact_name: str | None
    phone: str | None
    email: str | None
    crm_contact_id: str | None
    crm_entity: str | None
    ticket_number: int | None
    messages: int
    last_at: dt.datetime
    parked: bool
    failed: bool


@dataclass(frozen=True)
class SearchPage:
    rows: list[ConversationRow]
    page: int
    #: a next page exists
    more: bool


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _is_parked() -> ColumnElement[bool]:
    return exists().where(
        Outbox.conversation_id == Conversation.id, Outbox.state == OutboxState.PARKED.value
    )


def _has_failed() -> ColumnElement[bool]:
    return exists().where(
        Message.conversation_id == Conversation.id,
        or_(
            Message.status == MessageStatus.FAILED.value,
            Message.followup_status == FollowupStatus.FAILED.value,
        ),
    )


def _contact_match(tenant_id: int, text: str) -> ColumnElement[bool]:
    """Conversations whose contact ``text`` names (see :class:`Filters`)."""
    lowered = text.lower()
    values = {text, lowered} | {v for v in (normalize_email(text), normalize_phone(text)) if v}
    handles = select(ContactIdentity.contact_id).where(
        ContactIdentity.tenant_id == tenant_id, ContactIdentity.value.in_(sorted(values))
    )
    found: list[ColumnElement[bool]] = [
        func.lower(Contact.display_name).contains(lowered, autoescape=True),
        func.lower(Contact.email).contains(lowered, autoescape=True),
        Contact.crm_contact_id == text,
        Conversation.crm_contact_id == text,
        Conversation.uid == text,
        Conversation.external_thread_id == text,
        Conversation.contact_id.in_(handles),
    ]
    phone = normalize_phone(text)
    if phone:
        found.append(Contact.phone == phone)
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) >= 4 and all(c.isdigit() or c in "+-() ." for c in text):
        found.append(Contact.phone.contains(digits, autoescape=True))
    ticket = text.removeprefix("#")
    if ticket.isdigit() and len(ticket) < 10:
        found.append(Conversation.ticket_number == int(ticket))
    return or_(*found)


def _conditions(tenant_id: int, filters: Filters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Conversation.tenant_id == tenant_id]
    if filters.contact:
        where.append(_contact_match(tenant_id, filters.contact))
    if filters.channel:
        where.append(ChannelAccount.kind == filters.channel)
    if filters.status in ("open", "closed"):
        where.append(Conversation.status == filters.status)
    elif filters.status == "parked":
        where.append(_is_parked())
    elif filters.status == "failed":
        where.append(_has_failed())
    if filters.since or filters.until:
        sent = [Message.conversation_id == Conversation.id]
        if filters.since:
            sent.append(Message.sent_at >= _day_start(filters.since))
        if filters.until:
            sent.append(Message.sent_at < _day_start(filters.until + dt.timedelta(days=1)))
        where.append(exists().where(*sent))
    if filters.since and filters.until and filters.since > filters.until:
        where.append(false())
    return where


def search(
    session: Session, tenant_id: int, filters: Filters, per_page: int = PER_PAGE
) -> SearchPage:
    """One page of the tenant's conversations that match ``filters``, the
    latest active first (``updated_at``: every message stored bumps it)."""
    query = (
        select(Conversation, Contact, ChannelAccount.kind, ChannelAccount.name)
        .join(Contact, Contact.id == Conversation.contact_id)
        .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
        .where(*_conditions(tenant_id, filters))
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .offset((filters.page - 1) * per_page)
        .limit(per_page + 1)
    )
    found = session.execute(query).all()
    ids = [conv.id for conv, *_ in found[:per_page]]
    parked = set(
        session.scalars(
            select(Outbox.conversation_id).where(
                Outbox.conversation_id.in_(ids), Outbox.state == OutboxState.PARKED.value
            )
        )
    )
    failed = set(
        session.scalars(
            select(Message.conversation_id)
            .where(
                Message.conversation_id.in_(ids),
                or_(
                    Message.status == MessageStatus.FAILED.value,
                    Message.followup_status == FollowupStatus.FAILED.value,
                ),
            )
            .distinct()
        )
    )
    rows = [
        ConversationRow(
            id=conv.id,
            uid=conv.uid,
            status=conv.status,
            channel_kind=kind,
            channel_name=name,
            contact_name=contact.display_name,
            phone=contact.phone,
            email=contact.email,
            crm_contact_id=contact.crm_contact_id or conv.crm_contact_id,
            crm_entity=(
                f"{conv.crm_entity_type or ''} {conv.crm_entity_id}".strip()
                if conv.crm_entity_id
                else None
            ),
            ticket_number=conv.ticket_number,
            messages=max(conv.next_seq - 1, 0),
            last_at=conv.updated_at,
            parked=conv.id in parked,
            failed=conv.id in failed,
        )
        for conv, contact, kind, name in found[:per_page]
    ]
    return SearchPage(rows, filters.page, len(found) > per_page)


def channel_kinds(session: Session, tenant_id: int) -> list[str]:
    """The channel kinds the tenant has accounts of (the channel filter's choices)."""
    return sorted(
        session.scalars(
            select(ChannelAccount.kind).where(ChannelAccount.tenant_id == tenant_id).distinct()
        )
    )


# -- CRM links -----------------------------------------------------------------------------------


class CrmLinks:
    """Links into the tenant's CRM for the ids the bridge recorded, by the
    adapter's :meth:`~crm_adapters.base.CrmAdapter.record_url` (no request).
    A tenant whose adapter cannot be built (an unknown CRM, credentials
    that do not decrypt) gets ids without links."""

    def __init__(self, url: Callable[[CrmRef], str | None] | None = None) -> None:
        self._url = url
        self._cache: dict[tuple[str, str], str | None] = {}

    @classmethod
    def for_tenant(cls, runtime: Runtime, tenant: Tenant) -> CrmLinks:
        try:
            adapter = runtime.crm_adapter(tenant)
        except Exception as exc:  # noqa: BLE001 — links are a convenience: ids stay shown
            log.info("no CRM links for tenant %s (%s)", tenant.id, type(exc).__name__)
            return cls()
        return cls(adapter.record_url)

    def url(self, kind: str | None, record_id: str | None) -> str | None:
        """The record's page in the CRM, or None."""
        if self._url is None or not kind or not record_id:
            return None
        key = (kind, record_id)
        if key not in self._cache:
            from bridge.model import CrmRef

            try:
                self._cache[key] = self._url(CrmRef(kind, record_id))
            except Exception as exc:  # noqa: BLE001 — an adapter's bug costs a link, not the page
                log.warning("record_url failed for a %s (%s)", kind, type(exc).__name__)
                self._cache[key] = None
        return self._cache[key]


# -- one conversation --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationView:
    """A conversation's page: the conversation, its contact and channel
    account, the contact's handles, its work per direction (outbox rows),
    the service layer's CRM writes, and its messages in order."""

    conversation: Conversation
    contact: Contact
    account: ChannelAccount
    handles: list[ContactIdentity]
    outbox: dict[str, Outbox]
    actions: list[ServiceAction]
    messages: list[Message]
    #: the first ``seq`` shown; earlier messages exist when it is above 1
    first_seq: int
    total: int

    @property
    def parked(self) -> bool:
        return any(row.state == OutboxState.PARKED for row in self.outbox.values())

    @property
    def failed(self) -> bool:
        return any(can_replay(m) for m in self.messages)

    @property
    def task_id(self) -> str | None:
        """The CRM task's id (``task_state`` is ``task:<id>`` once written)."""
        return _task_id(self.conversation)


def _task_id(conversation: Conversation) -> str | None:
    state = conversation.task_state or ""
    return state.split(":", 1)[1] if state.startswith("task:") else None


def _owned(session: Session, tenant_id: int, conversation_id: int) -> Conversation | None:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.tenant_id != tenant_id:
        return None
    return conversation


def conversation_view(
    session: Session, tenant_id: int, conversation_id: int, upto: int | None = None
) -> ConversationView | None:
    """The tenant's conversation (None when it is not the tenant's): its
    last :data:`MESSAGES_SHOWN` messages by ``seq``, or those up to ``upto``."""
    conversation = _owned(session, tenant_id, conversation_id)
    if conversation is None:
        return None
    contact = session.get(Contact, conversation.contact_id)
    account = session.get(ChannelAccount, conversation.channel_account_id)
    assert contact is not None and account is not None  # foreign keys
    handles = list(
        session.scalars(
            select(ContactIdentity)
            .where(
                ContactIdentity.tenant_id == tenant_id,
                ContactIdentity.contact_id == contact.id,
            )
            .order_by(ContactIdentity.kind, ContactIdentity.id)
        )
    )
    query = select(Message).where(Message.conversation_id == conversation.id)
    if upto is not None:
        query = query.where(Message.seq <= upto)
    newest_first = list(session.scalars(query.order_by(Message.seq.desc()).limit(MESSAGES_SHOWN)))
    messages = newest_first[::-1]
    actions = list(
        session.scalars(
            select(ServiceAction)
            .where(ServiceAction.conversation_id == conversation.id)
            .order_by(ServiceAction.id)
        )
    )
    return ConversationView(
        conversation=conversation,
        contact=contact,
        account=account,
        handles=handles,
        outbox=outbox_rows(session, conversation.id),
        actions=actions,
        messages=messages,
        first_seq=messages[0].seq if messages else 1,
        total=max(conversation.next_seq - 1, 0),
    )


def outbox_rows(session: Session, conversation_id: int) -> dict[str, Outbox]:
    """The conversation's outbox rows by direction (``in``, ``out``, ``ack``, ...)."""
    rows = session.scalars(select(Outbox).where(Outbox.conversation_id == conversation_id))
    return {row.direction: row for row in rows}


def conversation_failed(session: Session, conversation_id: int) -> bool:
    """A message of the conversation, or its follow-up, failed."""
    return (
        session.scalar(
            select(Message.id)
            .where(
                Message.conversation_id == conversation_id,
                or_(
                    Message.status == MessageStatus.FAILED.value,
                    Message.followup_status == FollowupStatus.FAILED.value,
                ),
            )
            .limit(1)
        )
        is not None
    )


def can_replay(message: Message) -> bool:
    """The message or its follow-up failed: ``bridge replay`` takes it back."""
    return (
        message.status == MessageStatus.FAILED or message.followup_status == FollowupStatus.FAILED
    )


# -- the journal -----------------------------------------------------------------------------


def endpoint(account: ChannelAccount) -> str:
    """How the account receives its deliveries now: ``webhook`` (the
    provider posts to the account's URL), ``polling`` (a worker fetches
    them) or ``hosted`` (the bridge's own chat API); ``unknown`` for a
    channel kind this bridge no longer has."""
    try:
        cls = channel_class(account.kind)
    except UnknownAdapter:
        return "unknown"
    if cls.hosted:
        return "hosted"
    if cls.receive_mode(account.settings) is ReceiveMode.POLLING:
        return "polling"
    return "webhook"


def _parser(runtime: Runtime, account: ChannelAccount) -> ChannelAdapter | None:
    try:
        return runtime.channel_parser(account)
    except Exception as exc:  # noqa: BLE001 — the trace shows the row unparsed instead
        log.info("no parser for account %s (%s)", account.id, type(exc).__name__)
        return None


def _message_keys(adapter: ChannelAdapter | None, row: Delivery) -> set[str] | None:
    """The keys of the messages the row's kept body parses to (the
    normaliser's own parse); None when it cannot be parsed here (no body
    left, no parser, the parser fails on it)."""
    if adapter is None or row.body is None:
        return None
    headers = (row.facts or {}).get("headers") or {}
    received = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=dt.UTC)
    request = RawDelivery(row.delivery_key, bytes(row.body), headers).request(received)
    try:
        events = adapter.parse(request)
    except Exception as exc:  # noqa: BLE001 — as the normaliser: a parser bug is no crash here
        log.info("delivery %s does not parse (%s)", row.id, type(exc).__name__)
        return None
    return {e.external_id for e in events if isinstance(e, InboundMessage)}


@dataclass(frozen=True)
class JournalMatch:
    """The journal row a message came from, and how it was found:
    ``parsed`` (its body parses to this message), ``key`` (its delivery key
    is the message's key; its body was dropped, so unchecked) or ``none``
    (not found: ``candidates`` are the rows marked with it whose bodies are
    gone, one of which it may be)."""

    delivery: Delivery | None
    how: str
    candidates: list[Delivery] = field(default_factory=list)


def journal_for(runtime: Runtime, session: Session, message: Message) -> JournalMatch:
    """The journal row ``message`` (inbound) was parsed from (see the module
    docstring for how it is found)."""
    account_id = message.channel_account_id
    candidates: dict[int, Delivery] = {}
    same_key = session.scalars(
        select(Delivery).where(
            Delivery.channel_account_id == account_id,
            Delivery.delivery_key == delivery_key(message.dedupe_key),
        )
    ).first()
    if same_key is not None:
        candidates[same_key.id] = same_key
    window = [
        Delivery.channel_account_id == account_id,
        Delivery.state == DeliveryState.NORMALISED.value,
        Delivery.normalised_at <= message.created_at,
        Delivery.normalised_at >= message.created_at - BATCH_WINDOW,
        Delivery.received_at <= message.created_at,
    ]
    if not (message.payload or {}).get("late"):
        # parsed within LATE_AFTER of its arrival, or it would be marked late:
        # the received time bounds the rows read (ix_deliveries_state_received)
        window.append(Delivery.received_at >= message.created_at - BATCH_WINDOW - LATE_AFTER)
    marked = session.scalar(select(func.max(Delivery.normalised_at)).where(*window))
    if marked is not None:
        for row in session.scalars(
            select(Delivery)
            .where(Delivery.channel_account_id == account_id, Delivery.normalised_at == marked)
            .order_by(Delivery.id)
            .limit(BATCH * 2)
        ):
            candidates.setdefault(row.id, row)
    account = session.get(ChannelAccount, account_id)
    adapter = _parser(runtime, account) if account is not None and candidates else None
    for row in candidates.values():
        keys = _message_keys(adapter, row)
        if keys is not None and message.dedupe_key in keys:
            return JournalMatch(row, "parsed")
    if same_key is not None and same_key.body is None:
        return JournalMatch(same_key, "key")
    return JournalMatch(None, "none", [r for r in candidates.values() if r.body is None])


def journal_counts(session: Session, tenant_id: int) -> dict[str, int]:
    """The tenant's journal rows by state."""
    rows = session.execute(
        select(Delivery.state, func.count())
        .where(Delivery.tenant_id == tenant_id)
        .group_by(Delivery.state)
    ).all()
    found = {str(state): int(n) for state, n in rows}
    return {s.value: found.get(s.value, 0) for s in DeliveryState}


@dataclass(frozen=True)
class JournalPage:
    rows: list[tuple[Delivery, ChannelAccount]]
    page: int
    more: bool


def journal_rows(
    session: Session, tenant_id: int, state: str, page: int = 1, per_page: int = PER_PAGE
) -> JournalPage:
    """One page of the tenant's journal rows in ``state`` (rejected or
    ignored: the rows no message came from), the latest first."""
    query = (
        select(Delivery, ChannelAccount)
        .join(ChannelAccount, ChannelAccount.id == Delivery.channel_account_id)
        .where(Delivery.tenant_id == tenant_id, Delivery.state == state)
        .order_by(Delivery.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page + 1)
    )
    found = [(row[0], row[1]) for row in session.execute(query).all()]
    return JournalPage(found[:per_page], page, len(found) > per_page)


@dataclass(frozen=True)
class DeliveryTrace:
    """A journal row: the account it came to, how that account receives,
    and the messages its body parsed to (when it was normalised)."""

    delivery: Delivery
    account: ChannelAccount
    endpoint: str
    messages: list[Message]
    #: its body parses here (False: dropped, no parser, or the parser fails)
    parses: bool

    @property
    def reparsable(self) -> bool:
        """``bridge reparse`` takes it back (rejected or ignored, body kept)."""
        return (
            self.delivery.state in {s.value for s in REPARSABLE} and self.delivery.body is not None
        )


def delivery_trace(
    runtime: Runtime, session: Session, tenant_id: int, delivery_id: int
) -> DeliveryTrace | None:
    """The tenant's journal row (None when it is not the tenant's)."""
    row = session.get(Delivery, delivery_id)
    if row is None or row.tenant_id != tenant_id:
        return None
    account = session.get(ChannelAccount, row.channel_account_id)
    assert account is not None  # foreign key
    keys = _message_keys(_parser(runtime, account), row)
    messages: list[Message] = []
    if keys:
        messages = list(
            session.scalars(
                select(Message)
                .where(
                    Message.channel_account_id == account.id,
                    Message.direction == outbox.IN,
                    Message.dedupe_key.in_(sorted(keys)),
                )
                .order_by(Message.id)
            )
        )
    return DeliveryTrace(row, account, endpoint(account), messages, keys is not None)


# -- a message's trace -----------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One message's way through the bridge (see the module docstring)."""

    conversation: Conversation
    contact: Contact
    account: ChannelAccount
    message: Message
    endpoint: str
    #: inbound: the journal row it came from (None for an outbound message)
    journal: JournalMatch | None
    outbox: dict[str, Outbox]
    #: inbound: the replies until the client's next message
    replies: list[Message]
    #: outbound: the client's message it follows
    answers: Message | None
    #: the conversation's CRM calls while this message was worked on
    calls: list[crm_calls.Call] = field(default_factory=list)

    @property
    def inbound(self) -> bool:
        return self.message.direction == outbox.IN

    @property
    def refs(self) -> list[tuple[str, str]]:
        """The CRM records written for the message: (kind, id)."""
        return _refs(self.message.crm_refs)

    @property
    def task_id(self) -> str | None:
        return _task_id(self.conversation)

    @property
    def entity_state(self) -> str | None:
        return self.conversation.crm_entity_state

    @property
    def origin(self) -> str:
        """Who made an outbound message: ``crm`` (a rep's reply), ``bridge``
        (an acknowledgement, the service layer's menu or notice),
        ``cascade``, ``copy`` (a reply sent again on another channel)."""
        payload = self.message.payload or {}
        if payload.get("cascade"):
            return "cascade"
        if payload.get("copy_of"):
            return "copy"
        if payload.get("auto") or payload.get("service"):
            return "bridge"
        return "crm"


def _refs(stored: Iterable[Any] | None) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    for item in stored or ():
        if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            refs.append((str(item[0]), str(item[1])))
    return refs


def message_trace(
    runtime: Runtime, session: Session, tenant_id: int, conversation_id: int, message_id: int
) -> Trace | None:
    """The trace of the tenant's message in that conversation (None when
    either is not the tenant's, or the message is not the conversation's)."""
    conversation = _owned(session, tenant_id, conversation_id)
    message = session.get(Message, message_id)
    if conversation is None or message is None or message.conversation_id != conversation.id:
        return None
    contact = session.get(Contact, conversation.contact_id)
    account = session.get(ChannelAccount, message.channel_account_id)
    assert contact is not None and account is not None  # foreign keys
    inbound = message.direction == outbox.IN
    return Trace(
        conversation=conversation,
        contact=contact,
        account=account,
        message=message,
        endpoint=endpoint(account),
        journal=journal_for(runtime, session, message) if inbound else None,
        outbox=outbox_rows(session, conversation.id),
        replies=_replies(session, message) if inbound else [],
        answers=None if inbound else _answers(session, message),
        calls=calls_for(runtime, message),
    )


#: calls this long before a message was stored or after it last changed
#: still count as its own (clocks of two processes; a report after a send)
CALLS_MARGIN = dt.timedelta(seconds=2)


def calls_for(runtime: Runtime, message: Message) -> list[crm_calls.Call]:
    """The conversation's recorded CRM calls made from when the message was
    stored until it last changed (written to the CRM, sent, reported)."""
    try:
        calls = crm_calls.recent(runtime.redis, message.conversation_id)
    except redis.RedisError:
        return []
    start = (aware(message.created_at) - CALLS_MARGIN).timestamp()
    end = (aware(message.updated_at or message.created_at) + CALLS_MARGIN).timestamp()
    return [c for c in calls if start <= c.at <= end]


def _replies(session: Session, message: Message) -> list[Message]:
    """The outbound messages after ``message`` and before the client's next one."""
    following = session.scalar(
        select(func.min(Message.seq)).where(
            Message.conversation_id == message.conversation_id,
            Message.direction == outbox.IN,
            Message.seq > message.seq,
        )
    )
    window = [
        Message.conversation_id == message.conversation_id,
        Message.direction == outbox.OUT,
        Message.seq > message.seq,
    ]
    if following is not None:
        window.append(Message.seq < following)
    return list(
        session.scalars(
            select(Message).where(and_(*window)).order_by(Message.seq).limit(REPLIES_SHOWN)
        )
    )


def _answers(session: Session, message: Message) -> Message | None:
    """The client's last message before the outbound ``message``."""
    return session.scalars(
        select(Message)
        .where(
            Message.conversation_id == message.conversation_id,
            Message.direction == outbox.IN,
            Message.seq < message.seq,
        )
        .order_by(Message.seq.desc())
        .limit(1)
    ).first()


#: (for the templates) a record being written may exist in the CRM already
CREATING = CrmWrite.CREATING.value
