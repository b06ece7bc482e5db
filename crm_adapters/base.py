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
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

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
    Owner,
    Rate,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)

__all__ = ["CrmAdapter"]


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

    def __init__(
        self,
        account: CrmAccountInfo,
        credentials: CredentialProvider,
        http: HttpClient | None = None,
    ) -> None:
        self.account = account
        self.credentials = credentials
        self.http = http or HttpClient(account.api_base or self.default_api_base())

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
    ) -> Any:
        """Optional (``opens_at_once = True``): create the contact (when
        ``contact`` is a draft), the lead/deal, the task and the first
        ``entries`` of a new conversation in as few requests as the CRM
        allows. Return an object with ``contact`` (a :class:`CrmContact`),
        ``entity`` (a :class:`CrmRef`), ``task`` (a ref or None) and
        ``entries`` (bridge id -> refs). Everything written must be findable
        by the ordinary hooks (the core retries an ambiguous call through
        them). On an error, ``error.created`` (``{"contact"|"entity": ref}``)
        and ``error.partial`` say what was made."""
        raise NotImplementedError(f"{self.kind} opens conversations step by step")

    # -- install / setup --------------------------------------------------

    @classmethod
    def install_url(cls, app: Mapping[str, str], *, redirect_uri: str, state: str) -> str:
        """The OAuth authorize URL a CRM admin opens to install the bridge."""
        raise NotImplementedError(f"{cls.kind} has no OAuth install")

    @classmethod
    def exchange_code(
        cls,
        app: Mapping[str, str],
        *,
        code: str,
        redirect_uri: str,
        http: HttpClient,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Exchange an authorization code for credentials (including the
        account id under ``account_id`` and ``expires_at`` as epoch seconds).

        ``params`` is the whole callback query (amoCRM's ``referer`` names
        the account's host). The result may carry ``settings`` (a dict) to
        store on the tenant (e.g. the account's subdomain)."""
        raise NotImplementedError(f"{cls.kind} has no OAuth install")

    @classmethod
    def token_credentials(cls, token: str) -> dict[str, Any]:
        """Credentials from what an admin pastes for a private setup (a
        private-app or long-lived token by default; Bitrix24: an incoming
        webhook URL). May carry ``account_id`` when the token names the
        account. Raise ``ValueError`` with the fix when it cannot be one."""
        if not token.strip():
            raise ValueError("the token is empty")
        return {"type": "private_app", "access_token": token.strip()}

    @classmethod
    def install_event(
        cls, app: Mapping[str, str], request: WebhookRequest, *, http: HttpClient
    ) -> dict[str, Any] | None:
        """For CRMs that install an app by POSTing an event to the app's
        install handler (Bitrix24's ONAPPINSTALL, form-encoded, tokens
        included) at ``POST /webhooks/crm/<kind>/install``: verify it and
        return credentials like ``exchange_code`` does (``account_id``,
        optional ``settings``), or None when it is not an install event.
        Raise ``SignatureError``/``PayloadError`` for a forged or bad one."""
        return None

    @classmethod
    def vendor_initiated_install(cls, params: Mapping[str, str]) -> bool:
        """True when the CRM itself calls the OAuth callback without our
        ``state`` (amoCRM's one-shot "integration enabled" GET): the code is
        exchanged without a state check, since only the CRM can mint it for
        this app."""
        return False

    @classmethod
    def route_key(cls, request: WebhookRequest, key: str) -> str:
        """For app-level webhooks (one URL for every tenant, e.g. amoCRM's
        chat channel hook ``.../route/:scope_id``): the tenant lookup key in
        the URL. Tenants register theirs through ``setup()``'s ``routes``."""
        return key

    def refresh_credentials(self, stale: Mapping[str, Any]) -> dict[str, Any]:
        """Called by the core inside its single-flight lock: trade the stale
        credentials for fresh ones. Raise ``AuthError`` on ``invalid_grant``."""
        raise NotImplementedError(f"{self.kind} credentials cannot be refreshed")

    def setup(
        self,
        channels: Sequence[ChannelLink] = (),
        properties: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """Create what the bridge needs in the account; idempotent.

        ``channels``: the tenant's channel accounts (to register inbox/chat
        channel accounts for them). ``properties``: object type -> custom
        property names the mapping writes (created when missing). Returns
        settings to persist on the tenant (merged into ``account.settings``);
        a ``routes`` list there registers app-level webhook keys for this
        tenant (see ``route_key``).
        """
        return {}

    # -- contacts ---------------------------------------------------------

    @abstractmethod
    def find_contact(self, lookup: ContactLookup) -> CrmContact | None:
        """Identity property first, then phone, then e-mail."""

    @abstractmethod
    def create_contact(self, draft: ContactDraft) -> CrmContact:
        """Create the person; on a uniqueness conflict return the existing one."""

    def update_contact(self, contact: CrmRef, draft: ContactDraft) -> None:  # noqa: B027
        """Add what the channel learnt later (a shared phone number)."""

    # -- entities ---------------------------------------------------------

    @abstractmethod
    def find_entity(self, draft: EntityDraft) -> CrmRef | None:
        """The entity already opened for ``draft.conversation_uid``, if any."""

    @abstractmethod
    def create_entity(self, draft: EntityDraft) -> CrmRef:
        """Open a deal / lead / ticket associated with the contact."""

    def entity_is_open(self, entity: CrmRef) -> bool:
        """False once the entity reached a closed (won/lost) stage."""
        return True

    # -- timeline and tasks -----------------------------------------------

    @abstractmethod
    def append_entries(self, entries: Sequence[TimelineEntry]) -> dict[str, tuple[CrmRef, ...]]:
        """Write messages to the timeline (see the module docstring)."""

    @abstractmethod
    def create_task(self, draft: TaskDraft) -> CrmRef:
        """A follow-up task for the owner (looked up first if maybe_written)."""

    # -- owners -----------------------------------------------------------

    @abstractmethod
    def list_owners(self) -> list[Owner]:
        """The users a conversation can be assigned to."""

    # -- CRM -> bridge ------------------------------------------------------

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

    def webhook_ack(self) -> tuple[dict, int]:
        return {"ok": True}, 200
