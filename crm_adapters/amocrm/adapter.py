"""The amoCRM adapter: the contract hooks (its settings are the schemas in
``settings``; facts are cited by section of ``../shared/contracts/FACTS.md``).

Calls per message, measured by the unit and contract tests once a
conversation's contact and lead are known: notes mode writes a batch of N
messages in ``ceil(N/50)`` calls (one for a live message); chat mode sends
one ``new_message`` per message, plus one chat create and one contact link
the first time a process sees a conversation with a contact (skipped when
the core says ``entry.first_in_conversation`` is False). A retry
(``maybe_written``) first lists the leads' notes (one list for up to 50
leads) / the chat's history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from bridge.errors import (
    AuthError,
    BridgeError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
    WebhookError,
)
from bridge.http import HttpClient
from bridge.model import (
    ChannelLink,
    CredentialProvider,
    CrmAccountInfo,
    CrmEvent,
    CrmEventKind,
    CrmRef,
    DeliveryReport,
    DeliveryStatus,
    Installed,
    Owner,
    Rate,
    SetupResult,
    TimelineEntry,
    WebhookRequest,
)
from crm_adapters.base import CrmAdapter, Pipeline

from . import cascade as amo_cascade
from . import oauth
from .chats import DEFAULT_AMOJO_BASE, AmojoClient, verify_body_signature
from .client import DEFAULT_API_BASE, AmoApi, api_rate, base_for, embedded
from .contacts import ContactsMixin
from .fields import ENTITY_PATHS, as_map, field_values, to_int
from .inbox import InboxMixin, wants_inbox
from .leads import LeadsMixin
from .merge import MergeMixin
from .settings import AmoCrmApp, AmoCrmSettings
from .setup import run_setup
from .timeline import NOTES_CHUNK, NotesMixin, render_note, wants_note
from .webhooks import (
    DEFAULT_REPLY_MARKERS,
    account_events,
    chat_events,
    check_account,
    decode_brackets,
    is_echo,
    is_form,
    load_json,
)

__all__ = ["AmoCrmAdapter"]

#: amojo delivery statuses (FACTS 1.13): 1 delivered, 2 read, -1 error
DELIVERY_CODES = {
    DeliveryStatus.SENT: 1,
    DeliveryStatus.DELIVERED: 1,
    DeliveryStatus.READ: 2,
    DeliveryStatus.FAILED: -1,
}
#: "other" error; its text is required (FACTS 1.13)
DELIVERY_ERROR_OTHER = 905


#: CRM object kind -> its section in the web interface (record links)
RECORD_SECTIONS: Mapping[str, str] = {
    "contact": "contacts",
    "lead": "leads",
    "company": "companies",
}


class AmoCrmAdapter(ContactsMixin, LeadsMixin, MergeMixin, NotesMixin, InboxMixin, CrmAdapter):
    """amoCRM API v4: contacts, leads, notes, tasks, users, account webhooks,
    and the Chats API channel (amoCRM's own chat window)."""

    kind: ClassVar[str] = "amocrm"
    title: ClassVar[str] = "amoCRM"
    App: ClassVar[type[AmoCrmApp]] = AmoCrmApp
    Settings: ClassVar[type[AmoCrmSettings]] = AmoCrmSettings
    settings: AmoCrmSettings
    app: AmoCrmApp
    #: never more than 7 requests in any second (FACTS 1.4): 1 + 6/s
    rate: ClassVar[Rate] = Rate(capacity=1, per_second=6)
    entity_types: ClassVar[tuple[str, ...]] = ("lead", "unsorted")
    #: a burst of new customers is opened 50 at a time: ``/leads/complex``
    #: takes 50 leads (FACTS 1.7); contacts, tasks and notes go as arrays of
    #: as many. People are still looked up one by one: amoCRM's only search
    #: is ``query=`` full text, one value per request (FACTS 1.5)
    batch_size: ClassVar[int] = 50
    #: notes only (FACTS 1.9): timeline.wants_note writes nothing for any other kind
    timeline_kinds: ClassVar[Mapping[str, tuple[str, ...]]] = {"note": ()}
    #: amoCRM's chat window through the Chats API (FACTS 1.13)
    has_inbox: ClassVar[bool] = True
    has_entity_tags: ClassVar[bool] = True
    #: the chat's first message creates the Unsorted lead and its contact
    #: (FACTS 1.13); append_entries refuses an entry with nowhere to go
    inbox_created_types: ClassVar[tuple[str, ...]] = ("unsorted",)
    #: ``pipeline_id`` / ``status_id`` are integers (FACTS 1.7, fields.to_int);
    #: without them amoCRM opens the lead at the main pipeline's first stage
    entity_keys: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "lead": {"pipeline": "number", "stage": "number"},
    }
    content_types: ClassVar[tuple[str, ...]] = (
        "application/x-www-form-urlencoded",
        "application/json",
    )

    def __init__(
        self,
        account: CrmAccountInfo,
        credentials: CredentialProvider,
        http: HttpClient | None = None,
    ) -> None:
        super().__init__(account, credentials, http)
        rate = api_rate(self.settings.rate_per_second)
        self.api = AmoApi(
            self.http,
            credentials,
            lambda: base_for(self.account.api_base, self.settings),
            self.limit("api", rate),
        )
        self.amojo = AmojoClient(
            self.http,
            base_url=self.app.amojo_base or DEFAULT_AMOJO_BASE,
            channel_secret=self.app.channel_secret,
            # amojo is another host: its own budget
            limit=self.limit("amojo", rate),
        )

    @classmethod
    def default_api_base(cls) -> str:
        return DEFAULT_API_BASE

    @property
    def finds_entries_at_once(self) -> bool:
        """Notes of many leads are found with one list (``filter[entity_id]``
        takes an array, ``timeline``); a chat's history is read one chat a
        request (FACTS 1.13), so a tenant whose mapping also writes to the
        chat window (``account.inbox``) is written one conversation at a time."""
        return not self.account.inbox

    @property
    def entries_per_request(self) -> int:
        """One notes POST's worth (``NOTES_CHUNK``: amoCRM documents no
        maximum, 50 is the folklore, FACTS 1.4). Chat messages go one per
        call in either mode (FACTS 1.13), so ``account.inbox`` changes
        nothing here."""
        return NOTES_CHUNK

    # -- install / setup ------------------------------------------------

    has_oauth_app: ClassVar[bool] = True

    @classmethod
    def install_url(cls, app: AmoCrmApp, *, redirect_uri: str, state: str) -> str:
        """``{auth_base}/oauth?client_id&state&mode=post_message`` (FACTS 1.2)."""
        return oauth.build_install_url(app, redirect_uri=redirect_uri, state=state)

    @classmethod
    def exchange_code(
        cls,
        app: AmoCrmApp,
        *,
        code: str,
        redirect_uri: str,
        http: HttpClient,
        params: Mapping[str, str] | None = None,
    ) -> Installed:
        """Token exchange at the account named by ``params["referer"]``, then
        ``GET /api/v4/account``. The account id is amoCRM's numeric account
        id; the settings are ``subdomain`` (and ``domain``,
        ``amo_account_id``, ``amojo_id``, ``redirect_uri``)."""
        return oauth.exchange_code(
            app, code=code, redirect_uri=redirect_uri, http=http, params=params
        )

    @classmethod
    def token_credentials(cls, token: str) -> Installed:
        """A private integration's long-lived token (FACTS 1.2), pasted with
        the account it belongs to: ``<subdomain>:<token>`` (``acme:eyJ…``),
        ``<account host>:<token>`` (``acme.kommo.com:eyJ…``) or ``<account
        URL>:<token>`` (``https://acme.amocrm.ru:eyJ…``). amoCRM's tokens do
        not name the account's subdomain (FACTS 1.1), so a bare token is a
        ``ValueError`` that names these forms. Credentials ``{"type":
        "long_lived", "access_token"}``; settings ``subdomain`` (and
        ``domain``, ``amo_account_id`` from the token's claims, read
        unverified: ``setup()`` records the account's own id)."""
        return oauth.long_lived_install(token)

    @classmethod
    def vendor_initiated_install(cls, params: Mapping[str, str]) -> bool:
        """amoCRM's one-shot "integration enabled" GET carries ``from_widget``
        (and ``code``, ``referer``) but none of our state (FACTS 1.2)."""
        return "from_widget" in params

    def refresh_credentials(self, stale: Mapping[str, Any]) -> dict[str, Any]:
        """Single-use refresh (FACTS 1.2): returns the **new pair**, which the
        core commits before use. A refused refresh is ``AuthError``; the
        same refresh token is never retried here."""
        return oauth.refresh(
            self.app,
            stale,
            http=self.http,
            base_url=base_for(self.account.api_base, self.settings),
            redirect_uri=self.settings.redirect_uri,
            limit=self.api.limit,
        )

    def setup(
        self,
        channels: Sequence[ChannelLink] = (),
        properties: Mapping[str, Sequence[str]] | None = None,
    ) -> SetupResult:
        """Fields, account webhooks and (with ``account.inbox``) the chat
        channel. Idempotent. Records ``amo_account_id``, ``amojo_id``,
        ``identity_fields``, ``conversation_field``, ``custom_fields`` and,
        with the inbox, ``scope_id``, which is also the tenant's route (the
        channel's hook URL ends in it, FACTS 1.13)."""
        return run_setup(self, channels, properties)

    # -- timeline -------------------------------------------------------

    def append_entries(self, entries: Sequence[TimelineEntry]) -> dict[str, tuple[CrmRef, ...]]:
        """Per entry: ``timeline == "note"`` -> notes on the lead (or the
        contact), one POST for the batch; ``inbox`` -> one chat message
        each. ``maybe_written`` entries are looked up first (note marker /
        chat history); steps in ``entry.written`` are not written again.
        On a failure part-way the error's ``partial`` holds the entries
        completed before it and ``progress`` the steps written of the others
        (a note whose chat message failed)."""
        unique = list({e.bridge_id: e for e in entries}.values())
        plan = {
            e.bridge_id: (
                wants_note(e) and (e.entity is not None or e.contact is not None),
                wants_inbox(e),
            )
            for e in unique
        }
        for entry in unique:
            if not any(plan[entry.bridge_id]):
                raise PermanentError(
                    "amoCRM: this message has nowhere to go: an `unsorted` mapping needs "
                    "`inbox: true` (amoCRM's chat creates the lead)"
                )
        # steps an earlier attempt reported written (error.progress)
        notes = {e.bridge_id: r for e in unique if (r := e.written_ref("note")) is not None}
        chats = {e.bridge_id: r for e in unique if (r := e.written_ref("message")) is not None}

        def started() -> dict[str, tuple[CrmRef, ...]]:
            """Entries with some steps written, not all of them."""
            done = completed()
            return {
                e.bridge_id: tuple(
                    ref for ref in (notes.get(e.bridge_id), chats.get(e.bridge_id)) if ref
                )
                for e in unique
                if e.bridge_id not in done and (e.bridge_id in notes or e.bridge_id in chats)
            }

        def completed() -> dict[str, tuple[CrmRef, ...]]:
            out: dict[str, tuple[CrmRef, ...]] = {}
            for entry in unique:
                note, chat = plan[entry.bridge_id]
                if (note and entry.bridge_id not in notes) or (
                    chat and entry.bridge_id not in chats
                ):
                    continue
                refs = []
                if note:
                    refs.append(notes[entry.bridge_id])
                if chat:
                    refs.append(chats[entry.bridge_id])
                out[entry.bridge_id] = tuple(refs)
            return out

        try:
            self._write_notes(
                [e for e in unique if plan[e.bridge_id][0] and e.bridge_id not in notes], notes
            )
            self._publish(
                [e for e in unique if plan[e.bridge_id][1] and e.bridge_id not in chats], chats
            )
        except BridgeError as exc:
            exc.partial, exc.progress = completed(), started()
            raise
        return completed()

    # -- owners ---------------------------------------------------------

    def list_owners(self) -> list[Owner]:
        """Every user (``GET /api/v4/users``, paged; admin only, FACTS 1.11)."""
        owners = []
        for user in self.api.pages("/api/v4/users", "users"):
            rights = as_map(user.get("rights"))
            owners.append(
                Owner(
                    id=str(user["id"]),
                    email=user.get("email") or None,
                    name=user.get("name") or None,
                    active=bool(rights.get("is_active", True)),
                )
            )
        return owners

    # -- what a mapping names, read back ----------------------------------

    def list_pipelines(self, object_type: str) -> list[Pipeline]:
        """``GET /api/v4/leads/pipelines``: each pipeline with its statuses
        (their ``sort`` order, Unsorted and the shared won/lost 142/143
        included, FACTS 1.8)."""
        self._check_type(object_type)
        body = self.api.json("GET", "/api/v4/leads/pipelines")
        found = []
        for item in embedded(body, "pipelines"):
            statuses = as_map(item.get("_embedded")).get("statuses") or []
            found.append(
                Pipeline(
                    id=str(item.get("id")),
                    name=str(item.get("name") or item.get("id")),
                    stages={
                        str(s.get("id")): str(s.get("name") or s.get("id"))
                        for s in statuses
                        if isinstance(s, Mapping)
                    },
                )
            )
        return found

    def list_fields(self, object_type: str, names: Sequence[str]) -> dict[str, str]:
        """The custom fields the setup recorded for the names (setting
        ``custom_fields``) that ``GET /api/v4/{leads|contacts}/custom_fields``
        still lists, each -> the field's name: the ones the notes and leads
        are written with."""
        path = ENTITY_PATHS.get(object_type)
        if path is None:
            return {}
        recorded = self.settings.custom_fields.get(path) or {}
        listed = {
            str(f.get("id")): str(f.get("name") or f.get("id"))
            for f in self.api.pages(f"/api/v4/{path}/custom_fields", "custom_fields")
        }
        return {
            name: listed[str(recorded[name])]
            for name in names
            if name in recorded and str(recorded[name]) in listed
        }

    def preview_entry(self, entry: TimelineEntry) -> str:
        """The note's text (:func:`~.timeline.render_note`)."""
        return render_note(entry, self.account, visible_marker=self._visible_marker())

    def record_url(self, ref: CrmRef) -> str | None:
        """``<account host>/contacts/detail/<id>`` (``leads/``,
        ``companies/``): the card in amoCRM's web interface, on the host the
        install recorded (the API's host is the account's own, FACTS 1.1).
        Notes, tasks and chat messages have no page of their own; an account
        without a valid subdomain has no links."""
        section = RECORD_SECTIONS.get(ref.kind)
        if section is None or not ref.id.isdigit():
            return None
        try:
            base = base_for(self.account.api_base, self.settings)
        except PermanentError:
            return None
        return f"{base}/{section}/detail/{ref.id}"

    # -- CRM -> bridge --------------------------------------------------

    def _reply_markers(self) -> tuple[str, ...]:
        own = self.settings.reply_marker.strip()
        return tuple(dict.fromkeys(m for m in (own, *DEFAULT_REPLY_MARKERS) if m))

    @classmethod
    def echo(cls, request: WebhookRequest) -> bool:
        """An account webhook whose records are all the bridge's own notes
        (marked; amoCRM sends one for every note written, FACTS 1.12): a
        webhook per message synced, answered without the tenant."""
        if not is_form(request) or _routed(request.url):
            return False
        try:
            return is_echo(decode_brackets(request.body))
        except BridgeError:
            return False

    def cascade_contact(self, request: WebhookRequest) -> tuple[str, str]:
        """A digital pipeline's webhook asking for a cascade: the lead's main
        contact, or the contact it names (``amocrm.cascade``); the body
        must name this tenant's account, as every unsigned webhook."""
        if not is_form(request):
            raise PayloadError("amoCRM's pipeline webhook is a form (FACTS 1.12)")
        form = decode_brackets(request.body)
        settings = self.settings
        check_account(
            form, settings.amo_account_id or self.account.account_id or None, settings.subdomain
        )

        def lead_contacts(lead_id: str) -> list[Any]:
            lead = self.api.json("GET", f"/api/v4/leads/{to_int(lead_id, 'lead id')}?with=contacts")
            embedded = (lead or {}).get("_embedded") if isinstance(lead, dict) else None
            found = (embedded or {}).get("contacts") if isinstance(embedded, dict) else None
            return list(found) if isinstance(found, list) else []

        return amo_cascade.cascade_contact(form, request.body, lead_contacts)

    def verify_webhook(self, request: WebhookRequest) -> None:
        """Account webhooks (form-encoded, unsigned, FACTS 1.12): the body
        must name this tenant's account; the URL's key is the secret. Chat
        hooks (JSON, FACTS 1.13): ``X-Signature`` = HMAC-SHA1(channel_secret,
        body), constant-time, and the body's account must be this tenant's
        amojo account."""
        settings = self.settings
        routed = _routed(request.url)
        if is_form(request):
            if routed:
                # The route key (the scope id, "<channel id>_<amojo id>") is no
                # secret: an unsigned body there would let anyone speak for
                # the tenant. Unsigned hooks only count at the tenant's own URL.
                raise SignatureError(
                    "unsigned amoCRM webhooks are accepted only at the tenant's own URL"
                )
            try:
                form = decode_brackets(request.body)
            except BridgeError:
                raise SignatureError("amoCRM webhook body names no account") from None
            check_account(
                form,
                settings.amo_account_id or self.account.account_id or None,
                settings.subdomain or None,
            )
            return
        secret = self.app.channel_secret
        if not secret:
            raise SignatureError("amoCRM chat channel secret is not configured")
        if not verify_body_signature(secret, request.body, request.header("x-signature")):
            raise SignatureError("amoCRM chat webhook signature does not match")
        # signed by amoCRM: a body that is no JSON object is a PayloadError (400)
        payload = load_json(request.body)
        amojo_id = settings.amojo_id
        if not amojo_id or str(payload.get("account_id") or "") != amojo_id:
            raise SignatureError("amoCRM chat webhook is for another account")
        scope_id = settings.scope_id
        if scope_id and routed is not None and routed != scope_id:
            raise SignatureError("amoCRM chat webhook is for another channel connection")

    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        """Account webhooks: lead won/lost or deleted -> ENTITY_CLOSED, owner
        change -> OWNER_CHANGED, contact deleted -> CONTACT_REMOVED, a note
        starting with the reply marker -> REPLY (``external_id``
        ``note:<lead>:<note>``, ``crm_thread_id`` ``lead:<lead>``); the
        rest -> UNKNOWN. Chat hooks: a manager's message -> REPLY. Junk is a
        ``PayloadError``."""
        if is_form(request):
            payload = decode_brackets(request.body)
            events = account_events(payload, request.received_at, self._reply_markers())
            return [self._with_thread(e) for e in events]
        return chat_events(load_json(request.body), request.received_at)

    def _with_thread(self, event: CrmEvent) -> CrmEvent:
        """A notes-mode reply names a lead, not a conversation: read the
        lead's conversation field so the core can route it (one GET per rep
        reply, outside the shared bucket: amoCRM waits only 2 s for the
        answer, FACTS 1.12). If amoCRM cannot answer now, the webhook is
        refused with a 503 so that amoCRM delivers it again later (after 5
        and 15 minutes) instead of the reply being dropped as unroutable."""
        if event.kind is not CrmEventKind.REPLY or event.entity is None or event.thread_key:
            return event
        field_id = self.settings.conversation_field
        if field_id is None:
            return event
        try:
            lead = self.api.json(
                "GET", f"/api/v4/leads/{to_int(event.entity.id, 'lead id')}", budget=False
            )
        except (RetryableError, AuthError) as exc:
            raise WebhookError(
                f"amoCRM is not answering ({type(exc).__name__}): deliver this reply again",
                code="crm_unavailable",
                status_code=503,
            ) from None
        except BridgeError:
            return event  # the lead is gone or unreadable: nothing to route by
        if not isinstance(lead, Mapping):
            return event
        values = field_values(lead, field_id=field_id)
        uid = str(values[0].get("value") or "").strip() if values else ""
        return replace(event, thread_key=uid) if uid else event

    def report_delivery(self, report: DeliveryReport) -> None:
        """Chat replies: ``POST {amojo}/…/{scope}/{msgid}/delivery_status``
        (1 delivered, 2 read, -1 error with code 905 and the reason). Note
        replies (``note:<lead>:<note>``): a service-message note on the lead,
        in the tenant's ``account.language`` (en/ru)."""
        message_id = str(report.crm_message_id)
        if message_id.startswith("note:"):
            _, lead_id, note_id = (message_id.split(":", 2) + ["", ""])[:3]
            self._delivery_note(
                to_int(lead_id, "lead id"), note_id, report.status.value, report.error
            )
            return
        body: dict[str, Any] = {
            "msgid": message_id,
            "delivery_status": DELIVERY_CODES[report.status],
        }
        if report.status is DeliveryStatus.FAILED:
            body["error_code"] = DELIVERY_ERROR_OTHER
            body["error"] = (report.error or "not delivered")[:500]
        self.amojo.delivery_status(self._scope_id(), message_id, body)


def _routed(url: str) -> str | None:
    """The route key when ``url`` is an app-level ``…/route/<key>`` URL."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) >= 2 and parts[-2] == "route":
        return parts[-1]
    return None
