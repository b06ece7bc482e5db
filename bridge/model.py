"""The normalised model: the only types that cross the adapter boundary.

Plain frozen dataclasses, no framework types. Channel adapters turn provider
payloads into :class:`InboundMessage` / :class:`ThreadMigrated` and send
:class:`OutboundMessage`; CRM adapters take drafts (:class:`ContactDraft`,
:class:`EntityDraft`, :class:`TimelineEntry`, :class:`TaskDraft`) and turn
CRM webhooks into :class:`CrmEvent`. Every event keeps the provider's raw
payload (``raw``) for debugging and replay; it is excluded from ``repr`` so a
stray log line cannot leak personal data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "Attachment",
    "ChannelAccountInfo",
    "ChannelLink",
    "ConnectedAccount",
    "ContactDraft",
    "ContactLookup",
    "CredentialProvider",
    "CrmAccountInfo",
    "CrmContact",
    "CrmEvent",
    "CrmEventKind",
    "CrmRef",
    "DeliveryReport",
    "DeliveryStatus",
    "EntityDraft",
    "IgnoredEvent",
    "OutboundStatus",
    "InboundEvent",
    "InboundMessage",
    "Installed",
    "MessageKind",
    "OpenedConversation",
    "OutboundMessage",
    "Owner",
    "PollResult",
    "Rate",
    "RateLimiter",
    "ReceiveMode",
    "SendResult",
    "SenderProfile",
    "SetupResult",
    "TaskDraft",
    "ThreadHints",
    "ThreadMigrated",
    "TimelineEntry",
    "WebhookAnswer",
    "WebhookRequest",
    "RawDelivery",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC (the only clock the model uses)."""
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------
# HTTP requests handed to adapters (no Flask types cross the boundary)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookRequest:
    """An inbound HTTP request, as the adapter needs it to verify and parse.

    ``body`` is the raw bytes exactly as received: signatures are computed
    over them (never over re-serialised JSON). ``headers`` keys are
    lower-cased. ``url`` is the full URL the sender called (scheme, host,
    path and query), as HubSpot's v3 signature needs it.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    received_at: dt.datetime = field(default_factory=utcnow)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True)
class RawDelivery:
    """One delivery as the journal stores it, before anything parsed it.

    The channel adapter's edge makes these from a verified request (one
    per provider event: a Telegram update, a WhatsApp message) and its
    poller from what it fetched. ``key`` is the provider's own id for the
    delivery, unique per account (a redelivery with the same key is a
    no-op); ``headers`` are the few request headers its ``parse`` reads
    later (lower-case names), nothing else of the request is kept.
    """

    key: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def request(self, received_at: dt.datetime) -> WebhookRequest:
        """The request its adapter's ``parse`` reads, rebuilt in the worker."""
        return WebhookRequest(
            method="POST",
            url="",
            headers=dict(self.headers),
            body=self.body,
            received_at=received_at,
        )


class ReceiveMode(StrEnum):
    """How a channel account's deliveries reach the bridge."""

    #: the provider posts them to the account's webhook URL
    WEBHOOK = "webhook"
    #: a poller in the worker fetches them (``ChannelAdapter.poll``): IMAP,
    #: Telegram's long polling for a bridge without a public HTTPS address
    POLLING = "polling"


@dataclass(frozen=True)
class PollResult:
    """What one ``ChannelAdapter.poll`` fetched: the deliveries, keyed as
    the webhook's edge keys them (a re-fetch is a no-op in the journal), and
    the cursor to pass to the next poll. The core stores ``cursor`` only
    once ``deliveries`` are committed to the journal."""

    deliveries: tuple[RawDelivery, ...] = ()
    cursor: str | None = None


@dataclass(frozen=True)
class WebhookAnswer:
    """What the provider expects back for a webhook request: a JSON body
    (a mapping), or plain text/bytes with its ``content_type`` (VK's
    ``ok``, a handshake's echoed challenge)."""

    body: Mapping[str, Any] | str | bytes = field(default_factory=lambda: {"ok": True})
    status: int = 200
    content_type: str = "application/json"

    @classmethod
    def text(cls, text: str, status: int = 200) -> WebhookAnswer:
        return cls(text, status, "text/plain; charset=utf-8")


# --------------------------------------------------------------------------
# Channel side
# --------------------------------------------------------------------------


class MessageKind(StrEnum):
    TEXT = "text"
    PHOTO = "photo"
    DOCUMENT = "document"
    VOICE = "voice"
    AUDIO = "audio"
    VIDEO = "video"
    VIDEO_NOTE = "video_note"
    ANIMATION = "animation"
    STICKER = "sticker"
    CONTACT = "contact"
    LOCATION = "location"
    VENUE = "venue"
    POLL = "poll"
    CALLBACK = "callback"  # a button press (Telegram callback_query)
    #: an emoji reaction to an earlier message (``reply_to``; text "" when
    #: the reaction was taken back): a note on that message, not a new one
    REACTION = "reaction"
    SYSTEM = "system"  # member joined/left, title changed, ...
    UNKNOWN = "unknown"  # stored and acknowledged, shown in the CRM as unsupported


@dataclass(frozen=True)
class Attachment:
    """A file the customer sent or the rep attached.

    ``file_ref`` is the provider's own handle (Telegram ``file_id``), or
    ``file:<uid>`` for a file the bridge keeps (``bridge.files``); ``url``
    is set only for files reachable over HTTP (outbound attachments, a kept
    file's link, or once resolved through the provider's allow-listed file
    host). ``content`` carries the bytes of a file that came inside the
    delivery (an e-mail's parts) from the parser to :func:`bridge.files.keep`,
    never further.
    """

    kind: MessageKind
    file_ref: str | None = None
    url: str | None = None
    mime_type: str | None = None
    file_name: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    duration: int | None = None
    content: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class SenderProfile:
    """What the channel tells us about the person (all optional)."""

    display_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    phone: str | None = None
    email: str | None = None
    #: the channel proved that ``phone`` / ``email`` are the person's own (a WhatsApp
    #: wa_id, a Telegram contact shared by its owner, a MAX contact whose hash checks,
    #: a From address passing DMARC); a typed or unchecked one is False. Only verified
    #: handles may merge two clients automatically (``bridge.identity``).
    phone_verified: bool = False
    email_verified: bool = False
    language: str | None = None
    utm: Mapping[str, str] = field(default_factory=dict)
    #: the web page the person wrote from (a website form, a chat widget)
    page_url: str | None = None
    page_title: str | None = None
    referrer: str | None = None
    #: the person's IANA time zone, as their browser tells it
    timezone: str | None = None
    #: what the person agreed to, as the channel records it (free-form like
    #: ``utm``: the notice's version, when, on which page); templates name
    #: it ``{consent.<key>}``
    consent: Mapping[str, str] = field(default_factory=dict)

    def name(self) -> str | None:
        if self.display_name:
            return self.display_name
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) or self.username


@dataclass(frozen=True)
class InboundMessage:
    """One customer message (or unsupported update) from a channel.

    ``external_id`` is the channel's delivery id, unique per channel account
    (Telegram ``update_id``): the ingest dedupe key. ``provider_message_id``
    is the message's own id in its thread (Telegram ``message_id``), used to
    refer to it (edits, replies). ``sequence`` is the provider's ordering
    within the thread when it has one; ``sent_at`` is the provider's time.
    """

    channel_kind: str
    external_id: str
    external_user_id: str
    external_thread_id: str
    kind: MessageKind
    sent_at: dt.datetime
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    profile: SenderProfile = field(default_factory=SenderProfile)
    provider_message_id: str | None = None
    sequence: int | None = None
    is_edit: bool = False
    reply_to: str | None = None
    callback_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: set by the journal's normaliser when the message is stored long
    #: after it arrived (``bridge reparse`` after a parser fix): the CRM
    #: entry says so, beside the message's own time
    late: bool = False
    #: for channels whose threads the core must find (e-mail): what this
    #: message says about the conversation it continues. Without hints, or
    #: when none matches, the conversation is the one of
    #: ``external_thread_id`` (new when there is none).
    thread_hints: ThreadHints | None = None
    #: what the channel needs to remember about the thread to answer in it
    #: (e-mail: the customer's address, the subject, the last Message-ID and
    #: References); merged into the conversation's channel state and handed
    #: back with every reply (:attr:`OutboundMessage.thread_state`)
    thread_state: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: a warning the CRM entry carries (e-mail failing DMARC)
    flag: str | None = None
    #: a new conversation started by this message takes the tenant's next
    #: ticket number (channels that open tickets: e-mail)
    opens_ticket: bool = False
    #: the customer deleted the message ``provider_message_id`` (with
    #: ``is_edit``): the CRM entry is marked, its text kept
    revoked: bool = False
    #: the business's own message, sent outside the bridge (WhatsApp
    #: Business app echoes): written to the CRM as an outgoing entry, never
    #: as the customer's, and it opens no reply window
    echo: bool = False
    #: the customer allowed (True) or withdrew (False) the business's right
    #: to write to them here (``bridge.consent``: recorded on the
    #: conversation; replies after a withdrawal are refused with a reason)
    consent: bool | None = None


@dataclass(frozen=True)
class ThreadHints:
    """How a message names the conversation it belongs to, strongest first
    (the channel's own threading: an e-mail's ``In-Reply-To``/``References``,
    its plus-addressed reply address, a ticket number in its subject).

    ``bridge_ids``: our outbound messages it answers (our uuids, read from
    the ids we gave them); ``message_keys``: earlier inbound messages of the
    thread (their ``external_id``); ``conversation_uid``: a conversation's
    public uid the channel carried (a reply address); ``ticket``: a ticket
    number, honoured only when the sender is that ticket's contact (a
    number can be guessed, a uid cannot)."""

    bridge_ids: tuple[str, ...] = ()
    message_keys: tuple[str, ...] = ()
    conversation_uid: str | None = None
    ticket: str | None = None


@dataclass(frozen=True)
class OutboundStatus:
    """The channel reports what became of one of our outbound messages (an
    e-mail bounce, a WhatsApp status): ``failed`` marks the reply failed
    with ``error``; ``delivered`` and ``read`` (``played``) move its
    delivery state forward, never back; each change is reported to the CRM.
    ``window_closed``: the channel refused it after all because its reply
    window was closed: it goes again the way a reply outside the window
    goes (the mapping's template, or refused with the reason).

    The message is found by ``bridge_id`` (our uuid, where the channel
    carries it back), else by ``channel_message_id`` (the id the channel
    gave it when it was sent)."""

    channel_kind: str
    external_id: str
    bridge_id: str
    status: str
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    channel_message_id: str | None = None


@dataclass(frozen=True)
class ThreadMigrated:
    """The channel moved a thread to a new id (Telegram group -> supergroup)."""

    channel_kind: str
    external_id: str
    old_thread_id: str
    new_thread_id: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class IgnoredEvent:
    """An update that belongs to no customer thread (inline query, poll
    results, shipping query, ...): recorded for dedupe and audit, then
    acknowledged."""

    channel_kind: str
    external_id: str
    event_type: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


InboundEvent = InboundMessage | ThreadMigrated | IgnoredEvent | OutboundStatus


@dataclass(frozen=True)
class TemplateSend:
    """A pre-approved template sent instead of a free-form reply (the
    channel's reply window is closed): name, language, body parameters."""

    name: str
    language: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboundMessage:
    """A reply to send to the customer through their channel."""

    bridge_id: str  # our message uuid
    external_thread_id: str
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    #: the channel's ids of the parts an earlier attempt delivered (a split
    #: reply refused part-way, ``PartlySentError``): send only the rest
    sent_parts: tuple[str, ...] = ()
    #: the conversation's channel state (:attr:`InboundMessage.thread_state`)
    thread_state: Mapping[str, Any] = field(default_factory=dict)
    #: set for messages the bridge writes itself rather than a rep (the
    #: e-mail acknowledgement: ``"acknowledgement"``); channels mark them
    #: automatic (RFC 3834 ``Auto-Submitted``)
    auto: str | None = None
    #: the conversation's ticket number, where it has one
    ticket: str | None = None
    #: the conversation's public uid (an e-mail reply address carries it)
    conversation_uid: str | None = None
    #: send this template instead of the text (the reply window is closed)
    template: TemplateSend | None = None
    #: choices the client may press instead of typing (a greeting menu, a
    #: rating), each ``(id, label)``; the text already lists them (``1 —
    #: Buy``), so a channel without buttons sends the text alone. A channel
    #: that shows them returns a press as the client's message whose text is
    #: the button's id (what they would have typed)
    buttons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SendResult:
    """What the channel returned for a sent message (one id per part when
    the text had to be split)."""

    external_ids: tuple[str, ...]
    sent_at: dt.datetime = field(default_factory=utcnow)
    #: set when the channel told us the thread moved (Telegram ChatMigrated)
    new_thread_id: str | None = None


@dataclass(frozen=True)
class ConnectedAccount:
    """A channel account from what an admin supplied to connect it: its own
    id on the channel (a bot id, a phone number id, a mailbox) and what to
    store (credentials encrypted, settings not)."""

    external_id: str
    credentials: Mapping[str, Any] = field(repr=False)
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelAccountInfo:
    """A channel account (one Telegram bot, one WhatsApp number...) as the
    adapter sees it: decrypted credentials and its public webhook key."""

    id: int
    kind: str
    key: str
    credentials: Mapping[str, str] = field(repr=False)
    settings: Mapping[str, Any] = field(default_factory=dict)
    api_base: str | None = None
    #: the account's own id on the channel (a bot id, a phone number id)
    external_id: str | None = None
    #: the deployment-wide app settings of this channel kind (read through
    #: the adapter's ``App`` schema)
    app: Mapping[str, str] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------
# CRM side
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CrmRef:
    """A CRM object: ``kind`` is the CRM's own object type (``contact``,
    ``deal``, ``ticket``, ``note``, ``message``...)."""

    kind: str
    id: str


@dataclass(frozen=True)
class CrmContact:
    ref: CrmRef
    owner_id: str | None = None


@dataclass(frozen=True)
class Owner:
    id: str
    email: str | None = None
    name: str | None = None
    active: bool = True


@dataclass(frozen=True)
class ContactLookup:
    """How to find a person in the CRM: channel identities first, then
    normalised phone (E.164) and e-mail."""

    identities: Mapping[str, str]  # channel kind -> external user id
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContactDraft:
    lookup: ContactLookup
    profile: SenderProfile
    properties: Mapping[str, str] = field(default_factory=dict)  # from the mapping templates
    owner_id: str | None = None
    #: the name of the channel the person wrote from (the channel registry's)
    channel_title: str = ""


@dataclass(frozen=True)
class EntityDraft:
    """A deal / lead / ticket to open for a conversation.

    ``object_type`` is the mapping's choice (``deal``, ``ticket``, ``lead``).
    ``conversation_uid`` travels with the entity so it can be found again
    after an ambiguous create.
    """

    object_type: str
    conversation_uid: str
    contact: CrmRef
    name: str
    pipeline: str | None = None
    stage: str | None = None
    owner_id: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    #: the channel's name (from the channel registry), for the entity's source
    channel_title: str = ""


@dataclass(frozen=True)
class TimelineEntry:
    """One message as it lands on the CRM's timeline / inbox.

    ``bridge_id`` (our message uuid) travels with the entry so it can be
    found again. ``maybe_written`` is True when an earlier attempt may have
    committed: the adapter must look the entry up before writing it again.
    ``occurred_at`` and ``sequence`` are the message's own time and provider
    sequence, so the CRM shows the customer's order whatever the arrival order.
    ``written`` holds the refs an earlier attempt reported as written for
    this entry before it failed part-way (an append of several steps: the
    note, then the inbox message): the adapter skips those steps.

    How the tenant wants it written (from its mapping): ``timeline`` (the
    kind of timeline record, or ``none``), ``inbox`` (also into the CRM's
    own conversation view), ``language`` and ``timezone`` for the words and
    times the bridge writes, ``channel_title`` (the channel's name, from
    the channel registry). ``first_in_conversation``: no entry of this
    conversation reached this CRM contact yet (a CRM may link its
    conversation view then). ``edit_of``: the bridge id of the message an
    edit changes. ``late``: the message reached the bridge's model long
    after it arrived (re-parsed from the ingest journal after a parser
    fix): the CRM should say so beside ``occurred_at``. ``stored_at``: when
    the bridge stored the message (its own clock; no attempt wrote the entry
    before it), so a look-up may skip records older than that.
    """

    bridge_id: str
    conversation_uid: str
    channel_kind: str
    channel_account: str  # the bridge's channel account id (see ChannelLink.id)
    direction: str  # "in" (customer) or "out" (rep, echoed from another tool)
    kind: MessageKind
    text: str
    occurred_at: dt.datetime
    #: None when the CRM's own inbox creates the person (amoCRM "unsorted")
    contact: CrmRef | None
    entity: CrmRef | None = None
    sequence: int | None = None
    sender_name: str | None = None
    sender_identifier: str | None = None  # the customer's id on the channel (delivery id)
    attachments: tuple[Attachment, ...] = ()
    is_edit: bool = False
    owner_id: str | None = None
    maybe_written: bool = False
    written: tuple[CrmRef, ...] = ()
    timeline: str = "note"
    inbox: bool = False
    language: str = "en"
    timezone: str = "UTC"
    channel_title: str = ""
    first_in_conversation: bool = True
    edit_of: str | None = None
    late: bool = False
    stored_at: dt.datetime | None = None

    def written_ref(self, kind: str) -> CrmRef | None:
        """The ref of kind ``kind`` an earlier attempt wrote, if any."""
        return next((ref for ref in self.written if ref.kind == kind), None)


@dataclass(frozen=True)
class TaskDraft:
    bridge_id: str
    subject: str
    body: str
    due_at: dt.datetime
    contact: CrmRef
    entity: CrmRef | None = None
    owner_id: str | None = None
    maybe_written: bool = False


class CrmEventKind(StrEnum):
    REPLY = "reply"  # a rep wrote to the customer
    DELIVERY = "delivery"  # a delivery/read mark
    OWNER_CHANGED = "owner_changed"
    ENTITY_CLOSED = "entity_closed"  # won/lost/deleted: the next message opens a new one
    #: an open deal/lead/ticket moved to another stage (``stage``): the
    #: service layer's transfers by stage read it
    ENTITY_STAGE = "entity_stage"
    #: the CRM ended its own conversation with the client (``thread_key`` /
    #: ``crm_thread_id``), e.g. an operator closed a chat session; the deal
    #: stays open: the service layer's session closes
    THREAD_CLOSED = "thread_closed"
    #: the tags of an open deal/lead/ticket now (``tags``): the service
    #: layer's transfers by tag read it
    ENTITY_TAGS = "entity_tags"
    CONTACT_REMOVED = "contact_removed"  # deleted or merged away: find the person again
    #: a person merged two contacts in the CRM: ``contact`` is gone into ``merged_into``
    CONTACT_MERGED = "contact_merged"
    APP_REMOVED = "app_removed"  # the CRM uninstalled the bridge: stop calling it
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CrmEvent:
    """Something the CRM told us through its webhook.

    ``external_id`` is the CRM's id for the event or message (the outbound
    dedupe key). ``thread_key`` is how the CRM names the conversation: our
    own conversation uid when the CRM echoes it back, else ``crm_thread_id``.
    ``recipient`` is the channel delivery identifier the CRM addressed.
    """

    kind: CrmEventKind
    external_id: str
    occurred_at: dt.datetime
    thread_key: str | None = None
    crm_thread_id: str | None = None
    recipient: str | None = None
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    author_id: str | None = None
    author_name: str | None = None
    entity: CrmRef | None = None
    owner_id: str | None = None
    #: REPLY: the message the rep answered, as the CRM names it (the
    #: bridge's message id, or the channel's own id of the message)
    reply_to: str | None = None
    #: CONTACT_REMOVED / CONTACT_MERGED: the CRM contact that is gone
    contact: CrmRef | None = None
    #: CONTACT_MERGED: the CRM contact that survived the merge
    merged_into: CrmRef | None = None
    #: ENTITY_STAGE: the stage (status) id the entity is in now
    stage: str | None = None
    #: ENTITY_TAGS: every tag the entity carries now
    tags: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


class DeliveryStatus(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


@dataclass(frozen=True)
class DeliveryReport:
    """Tell the CRM what happened to a rep's reply."""

    crm_message_id: str
    status: DeliveryStatus
    error: str | None = None
    crm_thread_id: str | None = None


@dataclass(frozen=True)
class ChannelLink:
    """A channel account as the CRM setup needs to know it (to register an
    inbox channel account per bot / number)."""

    id: str  # the bridge's channel account id
    kind: str
    name: str  # bot name / number shown to reps
    identifier: str  # the account's own id on the channel (bot id, phone number id)
    title: str = ""  # the channel's name (the channel registry's: "Telegram")


@dataclass(frozen=True)
class Installed:
    """What connecting a CRM account gave (an OAuth code exchanged, an
    install event verified, a private token pasted): the account's id in the
    CRM, its credentials (stored encrypted) and settings to store (fields of
    the adapter's ``Settings``)."""

    account_id: str | None
    credentials: Mapping[str, Any] = field(repr=False)
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SetupResult:
    """What ``setup()`` made: ``settings`` to store on the tenant (fields of
    the adapter's ``Settings``) and ``routes``, the keys under which the
    CRM's app-level webhooks (one URL for every tenant) name this tenant."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class OpenedConversation:
    """What ``open_conversation`` made for a new conversation."""

    contact: CrmContact
    entity: CrmRef
    task: CrmRef | None = None
    #: bridge id -> refs of the first entries
    entries: Mapping[str, tuple[CrmRef, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CrmAccountInfo:
    """A tenant's CRM connection as the adapter sees it.

    ``settings`` is the account's stored settings (what an admin set and
    what ``setup()`` or the install recorded), ``app`` the deployment-wide
    app settings from the environment: the adapter reads both through the
    schemas it declares (``Settings``, ``App``; ``bridge.schema``).
    ``language``, ``timezone`` and ``inbox`` come from the tenant's mapping
    (the words and times the bridge writes where no entry says otherwise,
    and whether any channel also writes into the CRM's conversation view).
    """

    tenant_id: int
    kind: str
    account_id: str | None
    settings: Mapping[str, Any] = field(default_factory=dict)
    app: Mapping[str, str] = field(default_factory=dict)
    api_base: str | None = None
    webhook_url: str | None = None  # where this tenant's CRM webhooks must go
    language: str = "en"
    timezone: str = "UTC"
    inbox: bool = False


class CredentialProvider(Protocol):
    """The core's handle on a tenant's stored credentials.

    ``get()`` returns the current decrypted credentials. ``refresh(stale)``
    is single-flight across every process: it locks the tenant's row,
    re-reads it, and only if the stored credentials are still ``stale``
    calls the adapter's refresher, commits the new pair, and returns it.
    """

    def get(self) -> Mapping[str, Any]: ...

    def refresh(self, stale: Mapping[str, Any]) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``capacity`` tokens, refilled at ``per_second``."""

    capacity: float
    per_second: float


class RateLimiter(Protocol):
    """Shared across processes (Redis). ``acquire`` blocks until a token for
    ``key`` is available; ``penalise`` empties the bucket for ``seconds``
    (after a 429 with ``Retry-After``)."""

    def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> None: ...

    def penalise(self, key: str, seconds: float) -> None: ...


#: (entries) -> results; used in type hints of batch hooks
BatchResult = Mapping[str, Sequence[CrmRef]]
Refresher = Callable[[Mapping[str, Any]], Mapping[str, Any]]
