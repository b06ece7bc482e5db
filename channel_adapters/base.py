"""The channel adapter contract.

A channel adapter turns one provider's webhook requests into the normalised
model and sends replies back. It never touches the database or the queue:
the webhook view calls ``verify`` then the cheap ``edge`` check, the ingest
journal stores the raw deliveries ``edge`` returned, the normaliser (a
worker) calls ``parse`` on each, and the delivery job calls ``send``.

A channel that is pulled rather than pushed (IMAP, Telegram's long polling)
also has the poller hook: a poller in the worker (``bridge.pollers``) calls
``poll`` with the account's stored cursor and journals what it returns, the
same raw deliveries ``edge`` would have made of a webhook request.

Adding a channel = one module here that subclasses :class:`ChannelAdapter`,
registered in ``channel_adapters.REGISTRY``, plus its sandbox and tests
(the shared ``ChannelAdapterContract`` suite in ``tests/contracts``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bridge.errors import WebhookError
from bridge.http import HttpClient
from bridge.model import (
    Attachment,
    ChannelAccountInfo,
    ConnectedAccount,
    InboundEvent,
    InboundMessage,
    OutboundMessage,
    PollResult,
    Rate,
    RawDelivery,
    ReceiveMode,
    SendResult,
    WebhookAnswer,
    WebhookRequest,
)
from bridge.schema import NoSettings, load

if TYPE_CHECKING:
    import click
    from flask import Blueprint

__all__ = ["ChannelAdapter", "Reach", "ReachView"]


@dataclass(frozen=True)
class ReachView:
    """What the core knows of one client's conversation on a channel when it
    asks whether the client can be written to there
    (:meth:`ChannelAdapter.reachability`)."""

    #: now (the core's clock), for windows
    now: dt.datetime
    #: the client's last own message here (the business's echoes do not count)
    last_inbound_at: dt.datetime | None = None
    #: the channel's reason for the last send here that failed for good, when
    #: it failed after the client's last message (None: no such failure;
    #: an interrupted send whose outcome is unknown is no failure)
    last_failure: str | None = None
    last_failure_at: dt.datetime | None = None
    #: the client's latest word on consent (``bridge.consent``): None,
    #: ``allowed`` or ``withdrawn``, and when they said it
    consent: str | None = None
    consent_at: dt.datetime | None = None
    #: the mapping names a template to send outside the reply window
    template: bool = False
    #: what the channel remembers of the thread, and the account's settings
    thread_state: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def withdrawn(self, by_writing: bool) -> bool:
        """The client withdrew consent and (where writing counts as consent
        again) has not written since."""
        if self.consent != "withdrawn":
            return False
        if by_writing and self.last_inbound_at and self.consent_at:
            return self.last_inbound_at <= self.consent_at
        return True


@dataclass(frozen=True)
class Reach:
    """Whether a client can be written to on a channel now, and why (not).

    ``reason`` is one of the core's words (``bridge.reach.WORDS`` says them
    in each language): ``ok``, ``window_open``, ``template`` (only an
    approved template may go), ``window_closed``, ``denied``, ``stopped``,
    ``unsubscribed``, ``consent_withdrawn``, ``blocked``, ``bounced``,
    ``failed``; ``detail`` is the channel's own text for a person."""

    reachable: bool
    reason: str = "ok"
    detail: str | None = None
    #: when this answer changes by the clock alone (a reply window
    #: closing), or None: the CRM contact's field is refreshed then
    until: dt.datetime | None = None


class ChannelAdapter(ABC):
    """Verify, parse and send for one channel kind."""

    #: registry slug, also the URL segment in ``/webhooks/<kind>/<key>``
    kind: ClassVar[str]
    #: human name for the UI and the CRM ("Telegram")
    title: ClassVar[str]
    #: the provider's documented send limit per account (shared bucket)
    send_rate: ClassVar[Rate | None] = None
    #: largest webhook body accepted (bytes)
    max_body: ClassVar[int] = 1_000_000
    #: media types the provider posts its webhooks as (anything else: 415)
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)
    #: the warnings a message of this channel may carry
    #: (``InboundMessage.flag``) as the CRM entry says them, per language
    flags: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    # -- typed settings (bridge.schema) ------------------------------------

    #: what an admin supplies to connect an account (``bridge <kind>
    #: connect`` makes an option of each field; secret ones come from the
    #: environment as ``<KIND>_<FIELD>`` or a hidden prompt)
    Connect: ClassVar[type[Any]] = NoSettings
    #: what the admin console's connect form asks, where a web form must
    #: differ from :attr:`Connect` (the command line names the environment
    #: variable holding a password; a form takes the password itself, a
    #: ``secret`` field). None: the form asks :attr:`Connect`'s fields.
    #: :meth:`connect_form` turns its values into the account.
    ConnectForm: ClassVar[type[Any] | None] = None
    #: what authenticates the account (stored encrypted)
    Credentials: ClassVar[type[Any]] = NoSettings
    #: the account's settings (stored as they are)
    Settings: ClassVar[type[Any]] = NoSettings
    #: deployment-wide app settings of this channel kind, from
    #: ``<KIND>_<FIELD>`` in the environment (a Meta app's secret)
    App: ClassVar[type[Any]] = NoSettings

    # -- the edge: how the provider reaches the bridge -----------------------

    #: True when the channel's receiver drops a repeated send by its
    #: delivery id (Standard Webhooks' ``webhook-id``): a send whose outcome
    #: is unknown (a timeout) is simply sent again. False: it is never sent
    #: blindly twice (an operator decides).
    idempotent_sends: ClassVar[bool] = False
    #: True when the provider posts every account's deliveries to one URL
    #: (``/webhooks/<kind>/app``: a Meta app's phone numbers): the core
    #: calls :meth:`verify_app` and :meth:`route`, then each named account's
    #: :meth:`edge`. Otherwise each account has its own URL with a random
    #: key (``/webhooks/<kind>/<key>``).
    app_routed: ClassVar[bool] = False
    #: app-routed channels whose provider groups accounts (a WhatsApp
    #: Business Account's phone numbers): the setting holding an account's
    #: group id. :meth:`route` may then name ``group:<id>`` for a notice
    #: about the whole group, journaled on each of its accounts.
    group_setting: ClassVar[str | None] = None
    #: ignored events that say the account itself has a problem (WhatsApp's
    #: ``account_update:ACCOUNT_VIOLATION``, a template rejected), by the
    #: start of their ``IgnoredEvent.event_type``, with what to do:
    #: ``bridge status`` lists those of the last 7 days per account
    problem_events: ClassVar[Mapping[str, str]] = {}
    #: what ``bridge <kind> <name> --account <id>`` lists from the provider
    #: (:meth:`listing`): name -> what it is (WhatsApp: ``templates``)
    listings: ClassVar[Mapping[str, str]] = {}
    #: True when a customer's files are held by the provider under a handle
    #: that expires (WhatsApp media ids): the sync job fetches each with
    #: :meth:`download` and the bridge keeps it before the CRM entry is
    #: written. False (Telegram, whose file_id lasts): labels only.
    fetch_media: ClassVar[bool] = False
    #: the channel's words for how far a sent message got (``OutboundStatus
    #: .status``) -> the core's ``delivered`` / ``read``
    delivery_statuses: ClassVar[Mapping[str, str]] = {"delivered": "delivered", "read": "read"}
    #: how the provider's deliveries can reach the bridge, the default
    #: first: ``WEBHOOK`` (it posts them to the account's URL), ``POLLING``
    #: (a poller in the worker fetches them with :meth:`poll`). A channel
    #: offering both declares a ``mode`` field in its :attr:`Settings`
    #: (choices: the values of these) and each account picks one.
    modes: ClassVar[tuple[ReceiveMode, ...]] = (ReceiveMode.WEBHOOK,)
    #: the longest wait (s) the provider allows one long poll; the core
    #: asks :meth:`poll` for no more than this
    max_poll_timeout: ClassVar[float] = 30.0
    #: how long after the customer's last message a free-form reply may be
    #: sent (WhatsApp's 24-hour customer-service window); None: always.
    #: Outside it the core sends the mapping's ``window_template`` instead
    #: (``OutboundMessage.template``) or fails the reply with the reason;
    #: :meth:`send` raises ``WindowClosedError`` when the provider says so.
    reply_window: ClassVar[dt.timedelta | None] = None
    #: True when the customer's own message makes them reachable again
    #: after they withdrew consent (``InboundMessage.consent``): a reply
    #: then goes if they wrote after the withdrawal (``bridge.consent``)
    consent_by_writing: ClassVar[bool] = False
    #: True when the bridge itself is the provider: the customer's client
    #: (a chat widget in a web page) talks to the bridge, which keeps the
    #: conversation (``bridge.hosted``). A reply is the client's to read
    #: from the moment it is stored; :meth:`send` only confirms it. The
    #: channel serves its client's endpoints with :meth:`blueprint`.
    hosted: ClassVar[bool] = False
    #: the kind of contact identity this channel can open a conversation
    #: with on the business's own initiative (the e-mail channel: an
    #: ``email`` address), with :meth:`open_thread`; None: it only answers
    reaches: ClassVar[str | None] = None
    #: True when the channel reports a sent message delivered or read
    #: (``OutboundStatus``): a cascade waits for that before it counts the
    #: channel as having reached the client. False: the channel's accepting
    #: the send is all it ever says, and that counts
    confirms_delivery: ClassVar[bool] = False
    #: the reason (``Reach.reason``) a client who withdrew consent here is
    #: not reachable, in the channel's own terms (messages denied, the bot
    #: stopped, unsubscribed)
    withdrawn_reason: ClassVar[str] = "consent_withdrawn"
    #: the service layer's rating prompt carries a signed link per score
    #: (``bridge.service.csat.rating_links``: one click rates, as a mail
    #: reader expects) besides the number reply every channel takes
    rates_by_link: ClassVar[bool] = False

    @classmethod
    def reachability(cls, view: ReachView) -> Reach:
        """Whether the client of one conversation can be written to now
        (``bridge.reach``: ``bridge contacts show``, the CRM contact's
        ``{client.reachable}``, and each step of a cascade).

        Called with what the core knows (:class:`ReachView`), without the
        account's credentials; never calls the provider. Default: not
        reachable once the client withdrew consent (:attr:`withdrawn_reason`;
        writing again counts where :attr:`consent_by_writing`), or when the
        last send failed for good after the client's last message; a
        channel with a :attr:`reply_window` is reachable freely inside it
        and only by template outside it (when the mapping names one).
        A channel overrides it where its provider says more (a bot blocked,
        an address bouncing), calling this for the rest."""
        if view.withdrawn(cls.consent_by_writing):
            return Reach(False, cls.withdrawn_reason)
        if view.last_failure is not None:
            return Reach(False, "failed", view.last_failure)
        if cls.reply_window is None:
            return Reach(True)
        last = view.last_inbound_at
        if last is not None and view.now - last <= cls.reply_window:
            closes = last + cls.reply_window
            until = closes.strftime("%Y-%m-%d %H:%M UTC")
            return Reach(True, "window_open", f"free-form messages until {until}", closes)
        if view.template:
            return Reach(True, "template", "outside the reply window: the mapping's template")
        return Reach(False, "window_closed", "outside the reply window, and no template")

    @classmethod
    def blueprint(cls) -> Blueprint | None:
        """Optional: public endpoints the channel serves itself (a hosted
        channel's client API), registered by the app factory beside the
        webhooks. They reach the core only through ``bridge.hosted``."""
        return None

    @classmethod
    def commands(cls) -> Sequence[click.Command]:
        """Optional: top-level ``bridge`` commands of the channel's own
        (an admin's shortcut the generic ``bridge <kind> ...`` group does
        not say as well, e.g. creating a widget and printing its snippet)."""
        return ()

    @classmethod
    def open_thread(cls, address: str, subject: str) -> tuple[str, Mapping[str, Any]]:
        """For a channel that :attr:`reaches` people: the thread id and the
        thread state (``OutboundMessage.thread_state``) of a conversation
        the bridge opens with ``address``, the same for the same address
        (one conversation per person), ``subject`` naming it where the
        channel has subjects."""
        raise NotImplementedError(f"{cls.kind} opens no conversations")

    def unread_fallback(self) -> dt.timedelta | None:
        """For a hosted channel: how long a reply may stay unread in the
        client (the visitor has gone) before it is also sent to the
        person's address on a channel that :attr:`reaches` it
        (``bridge.pipeline.outbound.unread``); None: never."""
        return None

    def unread_texts(self, language: str | None) -> tuple[str, str]:
        """The subject and the opening line of such a copy, in the
        person's language (``en``/``ru``...), naming where the reply was."""
        return ("", "")

    def __init__(self, account: ChannelAccountInfo, http: HttpClient | None = None) -> None:
        self.account = account
        self.http = http or HttpClient(account.api_base or self.default_api_base())
        where = f"{self.kind} account {account.id}"
        #: ``account.credentials`` read through :attr:`Credentials`
        self.credentials: Any = load(self.Credentials, account.credentials, where=where)
        #: ``account.settings`` read through :attr:`Settings`
        self.settings: Any = load(self.Settings, account.settings, where=where)
        #: ``account.app`` read through :attr:`App`
        self.app: Any = load(self.App, account.app, where=f"{self.kind} app")

    @classmethod
    def default_api_base(cls) -> str:
        """The provider's production API host."""
        return ""

    @abstractmethod
    def verify(self, request: WebhookRequest) -> None:
        """Check the request really comes from the provider for this account.

        Raise :class:`bridge.errors.SignatureError` (403) on a missing or
        wrong secret/signature. Compare secrets in constant time. Must not
        raise anything else, whatever the input.
        """

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """The cheap check at the webhook, after :meth:`verify`: split the
        request into the deliveries the journal stores (one per provider
        event), each keyed by the provider's own delivery id.

        Runs on the request path, so it parses no more than it must (the
        JSON and the id: no model objects). Raise
        :class:`bridge.errors.PayloadError` (400) only for what it can tell
        cheaply — not JSON, not an object, no delivery id; anything subtler
        is the normaliser's to reject. Default: the whole body is one
        delivery keyed by its SHA-256 (a byte-identical redelivery is a
        no-op); adapters whose provider names its deliveries override it.
        """
        return [RawDelivery(hashlib.sha256(request.body).hexdigest(), request.body)]

    @abstractmethod
    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        """Turn a journaled delivery into normalised events (in a worker:
        ``request`` is rebuilt from the stored body, the headers the edge
        kept and the time it was received).

        Raise :class:`bridge.errors.PayloadError` (400) for a body that is
        not the provider's shape (bad JSON, missing ids). Update kinds the
        bridge does not handle become ``MessageKind.UNKNOWN`` messages (when
        they belong to a thread) or :class:`~bridge.model.IgnoredEvent`,
        never an exception.
        """

    @abstractmethod
    def send(self, message: OutboundMessage) -> SendResult:
        """Send a reply to the customer.

        Raise ``RetryableError(retry_after=...)`` on flood control,
        ``AmbiguousError`` when the provider may have delivered it,
        ``PermanentError`` when it never will (bot blocked, chat gone).
        """

    def acknowledge(self, message: InboundMessage) -> None:  # noqa: B027 (optional hook)
        """Optional: tell the provider an inbound event was handled (Telegram
        ``answerCallbackQuery``). Called by the sync job after the CRM write."""

    def listing(self, name: str) -> list[dict[str, Any]]:
        """One of :attr:`listings`, fetched from the provider: rows of
        short fields (name, language, status, ...) for a person to read."""
        raise NotImplementedError(f"{self.kind} has no listing {name!r}")

    def download(self, attachment: Attachment) -> bytes:
        """Optional: the bytes of an inbound attachment, fetched only from the
        provider's own file hosts through ``self.http.fetcher`` (SSRF-safe:
        allow-listed hosts, public addresses, no redirects, a size cap)."""
        raise NotImplementedError(f"{self.kind} attachments cannot be downloaded")

    @classmethod
    def connect(cls, values: Any) -> ConnectedAccount:
        """From what an admin supplied (an instance of :attr:`Connect`) to
        the account: its own id on the channel and the credentials and
        settings to store (fields of :attr:`Credentials` and
        :attr:`Settings`, including any webhook secret generated for it).
        Raise ``ValueError``/``ConfigError`` with the fix when it cannot be."""
        raise NotImplementedError(f"{cls.kind} accounts cannot be connected here")

    @classmethod
    def connect_form(cls, values: Any) -> ConnectedAccount:
        """What :meth:`connect` is for the admin console's form: from an
        instance of :attr:`ConnectForm` (or of :attr:`Connect` when the
        channel has no form of its own) to the account. Default:
        :meth:`connect`."""
        return cls.connect(values)

    def check_connection(self) -> str:
        """Optional: prove the account's credentials work with one harmless
        call to the provider (the console's "test connection", on an account
        not stored yet as well as on a connected one): a read that sends
        nothing to anyone and changes nothing (Telegram ``getMe``, an IMAP
        and an SMTP login). Returns what the provider says the account is,
        in a few words for a person (``@acme_bot (Acme)``).

        Raise from the tree with the provider's own words in the message:
        :class:`~bridge.errors.AuthError` for credentials it refuses,
        :class:`~bridge.errors.PermanentError` for anything else it refuses
        (an unknown account, a missing right),
        :class:`~bridge.errors.RetryableError` when it did not answer (a
        timeout, a 5xx). Default: the channel has no such check
        (``NotImplementedError``)."""
        raise NotImplementedError(f"{self.kind} has no connection test")

    def setup_webhook(self, url: str) -> Mapping[str, Any] | None:  # noqa: B027 (optional hook)
        """Optional: register ``url`` as the provider's webhook for this
        account. May return settings the provider gave or changed while
        doing so (VK's confirmation string, which changes when a server is
        edited): the core stores them on the account."""
        raise NotImplementedError(f"{self.kind} has no webhook registration")

    def remove_webhook(self) -> None:  # noqa: B027 (optional hook)
        """Optional: stop the provider sending this account's webhooks
        (``bridge <kind> disconnect``; and before an account of a channel
        offering both modes is polled, where the provider refuses to be
        polled while a webhook is set: Telegram's ``deleteWebhook``).
        Nothing to do where none was set."""

    # -- pulled channels (ReceiveMode.POLLING in modes) ----------------------

    @classmethod
    def receive_mode(cls, settings: Mapping[str, Any] | None) -> ReceiveMode:
        """How an account with these stored settings receives: its ``mode``
        setting where the channel offers a choice, else the channel's one
        way. The core asks this without building the adapter (no
        credentials are decrypted to find the accounts to poll)."""
        if len(cls.modes) == 1:
            return cls.modes[0]
        chosen = (settings or {}).get("mode")
        for mode in cls.modes:
            if chosen == mode.value:
                return mode
        return cls.modes[0]

    @property
    def pulled(self) -> bool:
        """True when a poller fetches this account's deliveries."""
        return self.receive_mode(self.account.settings) is ReceiveMode.POLLING

    def poll(self, cursor: str | None, timeout: float) -> PollResult:
        """Fetch what the provider holds for this account after ``cursor``
        (``None``: from the oldest it still holds), waiting up to
        ``timeout`` seconds when nothing is there yet (a long poll).

        Returns the deliveries, each keyed by the provider's own id exactly
        as :meth:`edge` keys a pushed one (so a re-fetch, or the same event
        arriving through a webhook as well, is a no-op in the journal), and
        the cursor to pass next. The core stores that cursor only after the
        deliveries are committed: a poll with the same cursor must fetch
        them again (Telegram confirms updates only by the next
        ``getUpdates`` offset; an IMAP cursor is the last UID stored), so a
        crash in between costs a re-fetch, never an event.

        Runs in the poller process, never on a request path; calls through
        ``self.http`` like every other hook. Raise
        :class:`~bridge.errors.RetryableError` (with ``retry_after`` when
        the provider gave one) for what passes by itself (timeouts, 5xx,
        flood control) and :class:`~bridge.errors.PermanentError` or
        :class:`~bridge.errors.AuthError` for what needs a person (a webhook
        set elsewhere, a revoked token): the message is shown by ``bridge
        status`` as it is, so it says what is wrong.
        """
        raise NotImplementedError(f"{self.kind} is not pulled")

    def answer(self, deliveries: Sequence[RawDelivery]) -> WebhookAnswer:
        """What the provider expects back once ``deliveries`` are journaled
        (a plain 2xx by default; VK: the text ``ok``, or the community's
        confirmation string for its ``confirmation`` event)."""
        return WebhookAnswer()

    def handshake(self, request: WebhookRequest) -> WebhookAnswer:
        """A ``GET`` on the account's webhook URL: the provider's
        verification handshake (echo a challenge after checking a verify
        token in constant time; ``SignatureError`` when it does not match).
        Default: this webhook takes only ``POST``."""
        raise WebhookError("this webhook takes POST", code="method_not_allowed", status_code=405)

    # -- app-routed channels (app_routed = True) -------------------------------

    @classmethod
    def verify_app(cls, app: Any, request: WebhookRequest) -> None:
        """Check an app-level delivery's signature with the app's secret
        (constant time); ``SignatureError`` otherwise."""
        raise NotImplementedError(f"{cls.kind} is not app-routed")

    @classmethod
    def route(cls, app: Any, request: WebhookRequest) -> tuple[str, ...]:
        """The accounts (their own ids on the channel) a verified app-level
        delivery is for; ``PayloadError`` for a body without any."""
        raise NotImplementedError(f"{cls.kind} is not app-routed")

    @classmethod
    def app_handshake(cls, app: Any, request: WebhookRequest) -> WebhookAnswer:
        """A ``GET`` on the app-level URL (Meta's ``hub.challenge``)."""
        raise WebhookError("this webhook takes POST", code="method_not_allowed", status_code=405)

    @classmethod
    def app_answer(cls, app: Any, deliveries: Sequence[RawDelivery]) -> WebhookAnswer:
        """What the provider expects back for an app-level delivery."""
        return WebhookAnswer()
