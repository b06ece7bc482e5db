"""The CRM adapter contract.

A CRM adapter knows one CRM's API: contacts, the entity a conversation opens
(deal / lead / ticket), timeline entries, tasks, owners, the CRM's webhooks
and its OAuth. It never touches the database or the queue; the sync and
delivery jobs call these hooks in order and record every id they return.

Duties every adapter keeps (the shared ``CrmAdapterContract`` suite checks
them):

* ``find_contact`` matches by the channel identity property first, then by
  normalised phone, then e-mail; ``None`` when nobody matches.
* ``find_entity`` finds the entity a previous, possibly ambiguous,
  ``create_entity`` made for the same ``conversation_uid``.
* ``append_entries`` writes each entry at most once: an entry with
  ``maybe_written=True`` is looked up by its ``bridge_id`` before it is
  written again. It batches where the CRM allows, and returns the refs of
  every entry it wrote or found; an entry missing from the result was not
  written (the job will try it again).
* Every HTTP call goes through ``self.http`` with ``self.limit(...)`` so all
  workers of an account share one rate-limit bucket.
* The batch hooks (``find_contacts``, ``create_contacts``, ``find_entities``,
  ``create_entities``, ``create_tasks``) keep the same duties for many items
  at once, keyed by the caller's keys; with ``batch_size`` above 1 the core
  opens the new conversations of a tenant together through them. Their
  defaults call the one-item hooks, so a CRM without batch calls works
  unchanged.

What a mapping file may ask of the CRM is declared, not coded in the core:
``entity_types``, ``timeline_kinds``, ``has_inbox``, ``inbox_created_types``,
``entity_keys`` and ``entity_placement`` are class-level data that
``bridge.checks`` (start-up and ``bridge check-config``) reads to flag an
option this CRM does not have, a key it ignores, an id it cannot take, or a
key whose absence lands entities somewhere the admin may not expect. Each
declaration must match what the hooks actually do with the option.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from bridge.errors import BridgeError
from bridge.http import HttpClient, Limit
from bridge.model import (
    ChannelLink,
    ContactDraft,
    ContactLookup,
    CredentialProvider,
    CrmAccountInfo,
    CrmContact,
    CrmEvent,
    CrmRef,
    DeliveryReport,
    EntityDraft,
    Installed,
    OpenedConversation,
    Owner,
    Rate,
    SetupResult,
    TaskDraft,
    TimelineEntry,
    WebhookAnswer,
    WebhookRequest,
)
from bridge.schema import NoSettings, load

__all__ = ["ConsoleIdentity", "CrmAdapter", "Pipeline"]

D = TypeVar("D")
R = TypeVar("R")


@dataclass(frozen=True)
class Pipeline:
    """A pipeline an entity type may be opened in, as the CRM lists it: its
    id (what a mapping's ``pipeline`` names; ``""`` for a type with one
    unnamed pipeline, such as Bitrix24's leads), its name, and its stages
    (id, as a mapping's ``stage`` names it -> name) in the CRM's order."""

    id: str
    name: str
    stages: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsoleIdentity:
    """A CRM user opening the bridge's console from inside the CRM, as the
    CRM vouched for them (:meth:`CrmAdapter.console_identity`)."""

    #: the CRM account (the tenant's ``crm_account_id``)
    account_id: str
    #: the user's id in that account
    user_id: str
    #: an administrator of the account (only they get a console session)
    admin: bool
    #: True: the request is the user's browser (the CRM opened the bridge's
    #: page: Bitrix24's app page), so the session starts in its answer.
    #: False: the CRM's server asks on the user's behalf (a signed call of a
    #: card or settings action: HubSpot) and gets a short-lived login link.
    in_browser: bool
    #: the user's name, for the audit trail
    name: str = ""


class CrmAdapter(ABC):
    """Contacts, entities, timeline, tasks, owners, webhooks for one CRM."""

    #: registry slug, also the URL segment in ``/webhooks/crm/<kind>/<key>``
    kind: ClassVar[str]
    title: ClassVar[str]
    #: the CRM's documented request budget per account
    rate: ClassVar[Rate]
    #: entity object types the mapping may ask for ("deal", "ticket", ...)
    entity_types: ClassVar[tuple[str, ...]]
    #: media types the CRM posts its webhooks as (anything else: 415)
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)

    # -- what a mapping may ask of this CRM (read by bridge.checks) ---------

    #: the ``timeline:`` kinds ``append_entries`` writes (``none`` is always
    #: allowed), each with the channel kinds it is limited to (empty: every
    #: channel). Any other kind is flagged: the hooks would write something
    #: else, or nothing.
    timeline_kinds: ClassVar[Mapping[str, tuple[str, ...]]] = {"note": ()}
    #: True when ``inbox: true`` has somewhere to go: a chat or inbox in the
    #: CRM where its users read and answer the conversation
    has_inbox: ClassVar[bool] = False
    #: object types the CRM's own inbox creates, with the person, from the
    #: first message; the bridge opens nothing for them (no contact, entity
    #: or task), so they need ``inbox: true``
    inbox_created_types: ClassVar[tuple[str, ...]] = ()
    #: object type -> the placement keys (``pipeline``, ``stage``) that
    #: ``create_entity`` reads for it -> the value it takes: ``"text"`` (any
    #: id) or ``"number"`` (a numeric id; anything else fails when the entity
    #: is opened). A placement key the type does not list is ignored by the
    #: CRM; a type not listed here is not checked.
    entity_keys: ClassVar[Mapping[str, Mapping[str, str]]] = {}
    #: object type -> keys the mapping should set for it -> what happens
    #: without it (check-config prints this sentence, so say where the entity
    #: lands or what fails)
    entity_placement: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    # -- typed settings (bridge.schema) ------------------------------------

    #: deployment-wide app settings, from ``<KIND>_<FIELD>`` in the environment
    App: ClassVar[type[Any]] = NoSettings
    #: one account's settings: an admin's options and what setup/install record
    Settings: ClassVar[type[Any]] = NoSettings

    def __init__(
        self,
        account: CrmAccountInfo,
        credentials: CredentialProvider,
        http: HttpClient | None = None,
    ) -> None:
        self.account = account
        self.credentials = credentials
        self.http = http or HttpClient(account.api_base or self.default_api_base())
        self.http.metered = (self.kind, account.tenant_id)  # bridge.metrics counts its calls
        #: ``account.settings`` read through :attr:`Settings`
        self.settings: Any = load(self.Settings, account.settings, where=f"{self.kind} settings")
        #: ``account.app`` read through :attr:`App`
        self.app: Any = load(self.App, account.app, where=f"{self.kind} app")

    @property
    def entries_per_request(self) -> int | None:
        """How many timeline entries one drain should hand ``append_entries``
        (what one request of the CRM holds); None: as many as are waiting."""
        return None

    @classmethod
    def default_api_base(cls) -> str:
        return ""

    def limit(self, bucket: str = "api", rate: Rate | None = None) -> Limit:
        """The shared bucket for this account (``bucket`` names a separate
        budget, e.g. HubSpot's per-second search limit)."""
        return Limit(
            key=f"{self.kind}:{self.account.account_id or self.account.tenant_id}:{bucket}",
            rate=rate or self.rate,
        )

    # -- a new conversation in one request --------------------------------

    #: True when :meth:`open_conversation` is implemented
    opens_at_once: ClassVar[bool] = False

    def open_conversation(
        self,
        *,
        contact: CrmRef | ContactDraft,
        entity: EntityDraft,
        task: TaskDraft | None = None,
        entries: Sequence[TimelineEntry] = (),
    ) -> OpenedConversation:
        """Optional (``opens_at_once = True``): create the contact (when
        ``contact`` is a draft), the lead/deal, the task and the first
        ``entries`` of a new conversation in as few requests as the CRM
        allows. Everything written must be findable by the ordinary hooks
        (the core retries an ambiguous call through them). When ``contact``
        is a draft, the ``contact`` of ``entity`` and ``task`` is a stand-in
        (``CrmRef("contact", "")``): link them to the contact made here. On
        an error, ``error.created`` (``{"contact"|"entity": ref}``) and
        ``error.partial`` say what was made."""
        raise NotImplementedError(f"{self.kind} opens conversations step by step")

    # -- connecting an account (install / token) and its setup ------------------

    #: True when the CRM installs the app by POSTing an event to the app's
    #: install handler (``POST /webhooks/crm/<kind>/install``; see
    #: :meth:`install_event`)
    has_install_event: ClassVar[bool] = False

    #: True when the CRM has an OAuth app the bridge can send an admin to
    #: (:meth:`install_url` and :meth:`exchange_code` are implemented): the
    #: console offers "connect" and "re-authorise" links only then
    has_oauth_app: ClassVar[bool] = False

    @classmethod
    def install_url(cls, app: Any, *, redirect_uri: str, state: str) -> str:
        """The OAuth authorize URL a CRM admin opens to install the bridge
        (``app``: the deployment's :attr:`App` settings)."""
        raise NotImplementedError(f"{cls.kind} has no OAuth install")

    @classmethod
    def exchange_code(
        cls,
        app: Any,
        *,
        code: str,
        redirect_uri: str,
        http: HttpClient,
        params: Mapping[str, str] | None = None,
    ) -> Installed:
        """Exchange an authorization code for the account's credentials
        (``expires_at`` as epoch seconds), its id and settings to store.
        ``params`` is the whole callback query (amoCRM's ``referer`` names
        the account's host)."""
        raise NotImplementedError(f"{cls.kind} has no OAuth install")

    @classmethod
    def token_credentials(cls, token: str) -> Installed:
        """What an admin pastes for a private setup (a private-app or
        long-lived token by default; Bitrix24: an incoming webhook URL), as
        an install. Raise ``ValueError`` with the fix when it cannot be one."""
        if not token.strip():
            raise ValueError("the token is empty")
        return Installed(None, {"type": "private_app", "access_token": token.strip()})

    @classmethod
    def install_event(
        cls, app: Any, request: WebhookRequest, *, http: HttpClient
    ) -> Installed | None:
        """With :attr:`has_install_event`: verify the install event the CRM
        POSTed (Bitrix24's ONAPPINSTALL, tokens included) and return the
        install, or None when the request is not an install event. Raise
        ``SignatureError``/``PayloadError`` for a forged or bad one."""
        return None

    @classmethod
    def vendor_initiated_install(cls, params: Mapping[str, str]) -> bool:
        """True when the CRM itself calls the OAuth callback without our
        ``state`` (amoCRM's one-shot "integration enabled" GET): the code is
        exchanged without a state check, since only the CRM can mint it for
        this app."""
        return False

    def refresh_credentials(self, stale: Mapping[str, Any]) -> dict[str, Any]:
        """Called by the core inside its single-flight lock: trade the stale
        credentials for fresh ones. Raise ``AuthError`` on ``invalid_grant``."""
        raise NotImplementedError(f"{self.kind} credentials cannot be refreshed")

    def setup(
        self,
        channels: Sequence[ChannelLink] = (),
        properties: Mapping[str, Sequence[str]] | None = None,
    ) -> SetupResult:
        """Create what the bridge needs in the account; idempotent.

        ``channels``: the tenant's channel accounts (to register inbox/chat
        channel accounts for them when ``account.inbox``). ``properties``:
        object type -> custom property names the mapping writes (created
        when missing). Returns the settings to store (fields of
        :attr:`Settings`) and the tenant's app-level webhook routes.
        """
        return SetupResult()

    # -- the console, opened from inside the CRM ------------------------------

    @classmethod
    def console_account(cls, app: Any, request: WebhookRequest) -> str | None:
        """The CRM account a request to ``/console/crm/<kind>`` says it comes
        from (a tenant's ``crm_account_id``), checked as far as the app's
        settings (``app``: :attr:`App`) can check it: a signature made with
        the app's secret. None when it names no account. Raise
        ``SignatureError`` for a request that is not the CRM's,
        ``PayloadError`` for junk. Default: this CRM does not open the
        bridge's console (``NotImplementedError``: a 404)."""
        raise NotImplementedError(f"{cls.kind} does not open the console")

    def console_identity(self, request: WebhookRequest) -> ConsoleIdentity:
        """The CRM user behind a request :meth:`console_account` named this
        tenant's account for, as this account vouches for them: checked with
        the tenant's own credentials and settings (Bitrix24: the page's
        token must work at the portal's REST endpoint the install recorded,
        never at a host the request names). ``SignatureError`` when the CRM
        does not vouch for the request (a forged or expired token, another
        account, another app); ``PayloadError`` for junk. The core gives an
        administrator of the account an admin session of this tenant only."""
        raise NotImplementedError(f"{self.kind} does not open the console")

    # -- contacts ---------------------------------------------------------

    @abstractmethod
    def find_contact(self, lookup: ContactLookup) -> CrmContact | None:
        """Identity property first, then phone, then e-mail."""

    @abstractmethod
    def create_contact(self, draft: ContactDraft) -> CrmContact:
        """Create the person; on a uniqueness conflict return the existing one."""

    def update_contact(self, contact: CrmRef, draft: ContactDraft) -> None:  # noqa: B027
        """Add what the channel learnt later (a shared phone number)."""

    def write_contact_fields(self, contact: CrmRef, properties: Mapping[str, str]) -> None:
        """Overwrite the mapping's properties named in ``properties`` (name
        -> rendered value, as ``ContactDraft.properties``) on the contact:
        the fields the bridge keeps current (``bridge.live_fields``: a
        template using ``{client.reachable}``). Only these; a rep's edits of
        the contact's other fields stay. Default: this CRM cannot
        (``NotImplementedError``: the values are left as created)."""
        raise NotImplementedError(f"{self.kind} cannot update a contact's fields")

    def read_contact_fields(self, contact: CrmRef, names: Sequence[str]) -> dict[str, str]:
        """The contact's values of the fields ``names`` (the CRM's own field
        names or codes, as the mapping's routing rules name them: a segment,
        a tier), as text; a field the contact has no value in is left out.
        The service layer routes a new session by them. Default: this CRM
        cannot (``NotImplementedError``: rules by a CRM field never match)."""
        raise NotImplementedError(f"{self.kind} cannot read a contact's fields")

    def update_entity(
        self, entity: CrmRef, properties: Mapping[str, str], owner_id: str | None = None
    ) -> None:
        """Overwrite the mapping's ``properties`` (name -> value, as
        ``EntityDraft.properties``) on an open deal/lead/ticket and, with
        ``owner_id``, give it to that owner (the service layer's routing,
        SLA due time and rating). Fields not named stay as the CRM's users
        left them. Default: this CRM cannot (``NotImplementedError``)."""
        raise NotImplementedError(f"{self.kind} cannot update a deal")

    #: the CRM's deals/leads/tickets carry tags (:meth:`tag_entity`); a
    #: mapping whose service menus or transfers name tags needs it
    has_entity_tags: ClassVar[bool] = False

    def tag_entity(self, entity: CrmRef, tags: Sequence[str]) -> None:
        """Add ``tags`` to an open deal/lead/ticket, keeping the tags it
        has (a menu choice's tags; adding one it carries already changes
        nothing, so a retry is safe). Default: this CRM has no tags
        (``NotImplementedError``; the mapping check refuses tags then)."""
        raise NotImplementedError(f"{self.kind} has no tags on deals")

    def merge_contacts(self, keep: CrmRef, gone: CrmRef) -> bool:
        """Make ``gone`` part of ``keep`` in the CRM, where its API can (the
        bridge found the two are one person). True once the CRM merged them
        (again True when they were merged already: a retry); False when this
        CRM has no merge the bridge may call: the core then links the two
        with a note on each (:meth:`note_contact`) and writes to ``keep``."""
        return False

    def note_contact(self, contact: CrmRef, text: str, key: str) -> CrmRef:
        """A note on the contact's own timeline (a link between two contacts,
        a cascade's outcome), in the words the core wrote. ``key`` names the
        note for a retry: where the CRM can be searched, a note with the same
        key is not written twice. Returns the note."""
        raise NotImplementedError(f"{self.kind} cannot write a note on a contact")

    def cascade_contact(self, request: WebhookRequest) -> tuple[str, str]:
        """A CRM automation asking for a cascade message (``bridge.cascade``):
        a workflow's or pipeline's webhook posted to the tenant's
        ``/webhooks/crm/<crm>/<key>/cascade`` (the key in the path is the
        secret, as for the tenant's other webhooks; the message's text and
        channels are the URL's query, which the admin writes into the
        automation). Returns the CRM contact the call names and the call's
        own id (a redelivery names the same cascade). Checks what the CRM
        lets it check (the account the body names); ``PayloadError`` for a
        body that names no contact. Default: the CRM has no such automation
        (``NotImplementedError``, a 404)."""
        raise NotImplementedError(f"{self.kind} has no cascade trigger")

    # -- entities ---------------------------------------------------------

    @abstractmethod
    def find_entity(self, draft: EntityDraft) -> CrmRef | None:
        """The entity already opened for ``draft.conversation_uid``, if any."""

    @abstractmethod
    def create_entity(self, draft: EntityDraft) -> CrmRef:
        """Open a deal / lead / ticket associated with the contact."""

    def entity_is_open(self, entity: CrmRef) -> bool:
        """False once the entity reached a closed (won/lost) stage or was
        deleted. The core asks before writing to an entity it has not
        written to for a while (a closing webhook may have been lost)."""
        return True

    # -- timeline and tasks -----------------------------------------------

    @abstractmethod
    def append_entries(self, entries: Sequence[TimelineEntry]) -> dict[str, tuple[CrmRef, ...]]:
        """Write messages to the timeline (see the module docstring)."""

    @abstractmethod
    def create_task(self, draft: TaskDraft) -> CrmRef:
        """A follow-up task for the owner (looked up first if maybe_written)."""

    # -- many at once (a burst of new customers) ----------------------------

    #: the most items one call of the batch hooks below handles in one CRM
    #: request (HubSpot's batch endpoints: 100 inputs). 1: the CRM has no
    #: batch calls; the defaults then call the one-item hooks and the core
    #: opens conversations one by one.
    batch_size: ClassVar[int] = 1

    @property
    def finds_entries_at_once(self) -> bool:
        """A retry of ``maybe_written`` entries looks them up in one request
        (or a few) whatever the number of records they belong to (HubSpot's
        search, Bitrix24's ``batch``, amoCRM's notes list by many leads),
        not one request per deal/lead. Only then does the core write several
        conversations' waiting entries together (a retry after an ambiguous
        error must not cost a lookup per conversation). A property: it may
        depend on the tenant's mapping (a chat window read a chat a request)."""
        return False

    def find_contacts(self, lookups: Mapping[str, ContactLookup]) -> dict[str, CrmContact]:
        """``find_contact`` for many people: key -> the contact found (keys
        nobody matched are left out), with the same priority (identity >
        phone > e-mail, the oldest on ties) in as few requests as the CRM
        allows. The core hands it at most :attr:`batch_size` lookups."""
        found: dict[str, CrmContact] = {}
        for key, lookup in lookups.items():
            contact = self.find_contact(lookup)
            if contact is not None:
                found[key] = contact
        return found

    def create_contacts(self, drafts: Mapping[str, ContactDraft]) -> dict[str, CrmContact]:
        """``create_contact`` for many people: key -> the contact made (or
        the existing one a uniqueness conflict named). Every key is answered
        or the call raises; ``error.created`` (key -> ref) then names the
        contacts made before it failed. The core marks them ``creating``
        first and, after an ambiguous failure, finds them with
        :meth:`find_contacts` before creating again."""
        return _each(drafts, self.create_contact, lambda made: made.ref)

    def find_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        """``find_entity`` for many conversations: key -> the entity already
        opened for the draft's ``conversation_uid`` (unmatched keys left out)."""
        found: dict[str, CrmRef] = {}
        for key, draft in drafts.items():
            ref = self.find_entity(draft)
            if ref is not None:
                found[key] = ref
        return found

    def create_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        """``create_entity`` for many conversations (each draft names its
        contact): key -> the deal / lead / ticket opened. Every key is
        answered or the call raises with ``error.created`` (key -> ref)."""
        return _each(drafts, self.create_entity, lambda ref: ref)

    def create_tasks(self, drafts: Mapping[str, TaskDraft]) -> dict[str, CrmRef]:
        """``create_task`` for many conversations: key -> the task. A draft
        with ``maybe_written`` is looked up by its ``bridge_id`` first (in as
        few requests as the CRM allows). Every key is answered or the call
        raises with ``error.created`` (key -> ref)."""
        return _each(drafts, self.create_task, lambda ref: ref)

    # -- owners -----------------------------------------------------------

    @abstractmethod
    def list_owners(self) -> list[Owner]:
        """The users a conversation can be assigned to."""

    # -- what a mapping names, read back (the console's dry run) ------------

    def list_pipelines(self, object_type: str) -> list[Pipeline]:
        """Read only: the pipelines, with their stages, that an entity of
        ``object_type`` (one of :attr:`entity_types`) may be opened in, by
        the ids a mapping's ``pipeline`` and ``stage`` take. Default: this
        CRM cannot list them (``NotImplementedError``: not checked)."""
        raise NotImplementedError(f"{self.kind} cannot list its pipelines")

    def list_fields(self, object_type: str, names: Sequence[str]) -> dict[str, str]:
        """Read only: of the mapping's property ``names`` for ``object_type``
        (``contact`` or an entity type), those the CRM has a field for now,
        each -> what the CRM calls that field (its label or code). A name
        left out has no field yet (the setup creates the missing ones).
        Default: this CRM cannot tell (``NotImplementedError``)."""
        raise NotImplementedError(f"{self.kind} cannot list its fields")

    def preview_entry(self, entry: TimelineEntry) -> str:
        """No request: the text :meth:`append_entries` would write for
        ``entry`` as a note (what a rep reads). Default: the entry's text."""
        return entry.text

    def record_url(self, ref: CrmRef) -> str | None:
        """No request: the address of ``ref``'s page in the CRM's own web
        interface (a contact's or a deal's card), for a person to open (the
        console's message trace links every id the bridge recorded). Built
        from what the account's settings already hold (its host, portal id).
        None when the record has no page of its own (a note, a chat message:
        they are read on their contact's or deal's page) or the account does
        not say where it lives. Default: None (no links)."""
        return None

    # -- CRM -> bridge ------------------------------------------------------

    @classmethod
    def echo(cls, request: WebhookRequest) -> bool:
        """True when the webhook reports only what the bridge wrote itself (a
        CRM that sends a webhook for every note, the bridge's own included):
        the core answers it with the default 2xx before it builds the
        tenant's adapter, and stores nothing — what ``parse_webhook`` would
        have made of it is ignored events only. It runs before
        ``verify_webhook``, so it must hold only of a request that could
        change nothing; anything else (and anything unreadable) is False."""
        return False

    #: True when the CRM sends webhooks for every account to one app-level
    #: URL that names the account in the body (``POST /webhooks/crm/<kind>/app``;
    #: see :meth:`app_webhook`)
    has_app_webhooks: ClassVar[bool] = False

    @classmethod
    def app_webhook(cls, app: Any, request: WebhookRequest) -> dict[str, WebhookRequest] | None:
        """With :attr:`has_app_webhooks`: verify the whole request with the
        app's settings (``app``: :attr:`App`; ``SignatureError`` when it is
        not the CRM's) and split it per account: CRM account id (the
        tenant's ``crm_account_id``) -> a request holding only that
        account's events (same headers, the account's part of the body),
        which the core hands that tenant's ``parse_webhook`` without
        verifying it again. ``PayloadError`` for a body it cannot split;
        None: no app-level webhooks here (404)."""
        return None

    @abstractmethod
    def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise ``SignatureError`` unless the request is signed by the CRM
        for this tenant (constant-time compare, timestamp window)."""

    @abstractmethod
    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        """Normalise the CRM's webhook into events; unknown kinds become
        ``CrmEventKind.UNKNOWN``. Raise ``PayloadError`` for a bad body."""

    @abstractmethod
    def report_delivery(self, report: DeliveryReport) -> None:
        """Show the delivery status of a rep's reply in the CRM."""

    def answer(self, events: Sequence[CrmEvent]) -> WebhookAnswer:
        """What the CRM expects back once ``events`` are stored."""
        return WebhookAnswer()


def _each(
    drafts: Mapping[str, D], hook: Callable[[D], R], ref: Callable[[R], CrmRef]
) -> dict[str, R]:
    """A batch hook's default: ``hook`` per draft; what was made before a
    failure goes with the error (``error.created``, key -> ref)."""
    made: dict[str, R] = {}
    for key, draft in drafts.items():
        try:
            made[key] = hook(draft)
        except BridgeError as exc:
            exc.created = {k: ref(v) for k, v in made.items()}
            raise
    return made
