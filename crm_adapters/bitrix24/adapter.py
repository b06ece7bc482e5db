"""The Bitrix24 adapter: the contract hooks (every setting it reads is a
field of ``settings.Bitrix24App`` / ``settings.Bitrix24Settings``; facts are
cited by section of ``../shared/contracts/FACTS.md``: "FACTS 2.x").

HTTP requests per message, measured by the unit and contract tests (both
modes alike: the Open Lines send rides in the same batch as the comments):

* live conversation, contact and lead/deal known: **one request per
  drain** — N messages waiting in a drain cost ``ceil(N/50)`` requests
  (``ceil(N/48)`` with Open Lines), so calls per message fall with load
  (1.0 for one message per drain, 0.5 for two, 0.02 for a backlog of 50);
* a retry (``maybe_written``) adds one lookup batch (the entity's comments);
* a new customer through today's core hooks: ``find_contact`` (1 batch:
  identity + phone + e-mail + owner), ``create_contact`` (1),
  ``create_entity`` (1), ``create_task`` (1, when the mapping asks) and the
  first drain (1). :meth:`Bitrix24Adapter.open_conversation` does contact
  + lead/deal + to-do + comments (+ Open Lines) in **one** request when
  there is nothing to look up (the core does not call it yet).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from bridge.errors import AuthError, BridgeError, NotFoundError, PayloadError, SignatureError
from bridge.http import HttpClient, Limit
from bridge.model import (
    ChannelLink,
    ContactDraft,
    CredentialProvider,
    CrmAccountInfo,
    CrmContact,
    CrmEvent,
    CrmEventKind,
    CrmRef,
    DeliveryReport,
    DeliveryStatus,
    EntityDraft,
    Installed,
    OpenedConversation,
    Owner,
    Rate,
    SetupResult,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from bridge.schema import dump
from crm_adapters.base import ConsoleIdentity, CrmAdapter, Pipeline
from crm_adapters.freetext import attach_marker

from . import cascade as b24_cascade
from . import console as b24_console
from . import oauth
from .batch import Command, Ref, as_map
from .client import B24Api
from .contacts import ContactsMixin
from .entities import EntitiesMixin, field_code
from .merge import MergeMixin
from .openlines import connector_id, message_item, our_connectors, wants_inbox
from .settings import Bitrix24App, Bitrix24Settings
from .setup import run_setup
from .timeline import (
    OWNER_TYPES,
    TimelineMixin,
    marker,
    render_comment,
    to_int,
    wants_note,
)
from .webhooks import decode_event, events_from, verify_token

__all__ = ["Bitrix24Adapter", "plan_rate"]

log = logging.getLogger(__name__)

#: tokens of the portal's burst the bridge keeps back: Bitrix24 counts a
#: request when it arrives, our bucket when we send it; with equal buckets a
#: request that arrives early at a full counter is refused (measured with
#: ``python -m bench.sync --crm bitrix24``: one 503 per busy drain, none with it)
BURST_MARGIN = 2
#: the leaky bucket per portal (FACTS 2.3): burst 50 draining 2/s
BASIC_RATE = Rate(capacity=50 - BURST_MARGIN, per_second=2)
#: Enterprise plans: burst 250 draining 5/s
ENTERPRISE_RATE = Rate(capacity=250 - BURST_MARGIN, per_second=5)


def plan_rate(settings: Bitrix24Settings | Mapping[str, Any]) -> Rate:
    """The portal's bucket: by ``plan``, or the tenant's ``rate_per_second`` /
    ``burst`` where an admin set them (an on-premise portal's own limits,
    limits.md: configurable in self-hosted Bitrix24). ``settings``: the
    tenant's :class:`Bitrix24Settings`, or a plain mapping of those fields
    (a benchmark's); a value that makes no bucket falls back to the plan's."""
    if isinstance(settings, Bitrix24Settings):
        settings = dump(settings)
    plan = (
        ENTERPRISE_RATE if str(settings.get("plan") or "").lower() == "enterprise" else BASIC_RATE
    )
    try:
        per_second = float(settings.get("rate_per_second") or plan.per_second)
        own = settings.get("burst")
        burst = max(1.0, float(own) - BURST_MARGIN) if own else plan.capacity
    except (TypeError, ValueError):
        return plan
    if per_second <= 0 or burst < 1:
        return plan
    return Rate(capacity=burst, per_second=per_second)


#: CRM object kinds with a card of their own (record links)
RECORD_KINDS = frozenset({"contact", "company", "lead", "deal"})


class Bitrix24Adapter(ContactsMixin, EntitiesMixin, MergeMixin, TimelineMixin, CrmAdapter):
    """Bitrix24 REST: contacts, leads/deals, timeline comments, to-dos/tasks,
    users, app events, and Open Lines through a custom connector."""

    kind: ClassVar[str] = "bitrix24"
    title: ClassVar[str] = "Bitrix24"
    opens_at_once: ClassVar[bool] = True
    #: Bitrix24 POSTs ONAPPINSTALL to the app's install handler (FACTS 2.5)
    has_install_event: ClassVar[bool] = True
    App: ClassVar[type[Bitrix24App]] = Bitrix24App
    Settings: ClassVar[type[Bitrix24Settings]] = Bitrix24Settings
    #: (typed) the deployment's app and this portal's settings, loaded by the base
    app: Bitrix24App
    settings: Bitrix24Settings

    @property
    def entries_per_request(self) -> int | None:
        """Entries one drain's ``batch`` holds: 50 commands (FACTS 2.4), with
        Open Lines two of them kept for the connector's send (so a drain of
        50 is not 48 + 2 requests)."""
        return 48 if self.account.inbox else 50

    rate: ClassVar[Rate] = BASIC_RATE
    entity_types: ClassVar[tuple[str, ...]] = ("lead", "deal")
    #: a burst of new customers is opened 50 at a time: each step (look
    #: up, contacts, leads/deals, to-dos, comments) one ``batch`` request of
    #: 50 commands (FACTS 2.4) instead of two requests per person
    batch_size: ClassVar[int] = 50
    finds_entries_at_once: ClassVar[bool] = True
    #: timeline comments (crm.timeline.comment.add, FACTS 2.7): any kind but
    #: ``none`` is written as a comment by timeline.wants_note
    timeline_kinds: ClassVar[Mapping[str, tuple[str, ...]]] = {"note": ()}
    #: Open Lines through the app's connector (FACTS 2.8)
    has_inbox: ClassVar[bool] = True
    #: a lead has a ``STATUS_ID`` and no pipeline; a deal a numeric
    #: ``CATEGORY_ID`` (timeline.to_int) and a ``STAGE_ID`` (FACTS 2.7); left
    #: out, Bitrix24 uses the first status / the general pipeline
    entity_keys: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "lead": {"stage": "text"},
        "deal": {"pipeline": "number", "stage": "text"},
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
        self.api = B24Api(self.http, credentials, self.limit)

    # -- the portal and its bucket -------------------------------------------------

    def _portal(self) -> str:
        """The portal's stable key: its ``member_id`` (app installs), else
        its host (incoming webhooks carry no member id)."""
        member = self.settings.member_id or self.account.account_id
        if member:
            return str(member)
        if self.settings.domain:
            return self.settings.domain.lower()
        creds = self.credentials.get()
        try:
            return urlsplit(self.api.endpoint(creds)).netloc.lower()
        except AuthError:
            return str(self.account.tenant_id)

    def limit(self, bucket: str = "api", rate: Rate | None = None) -> Limit:
        """One bucket per portal for every worker (the limit is per portal,
        FACTS 2.3); Enterprise portals (``plan: enterprise``) get 250/5."""
        return Limit(
            key=f"{self.kind}:{self._portal()}:{bucket}",
            rate=rate or plan_rate(self.settings),
        )

    # -- install / OAuth -------------------------------------------------------------

    has_oauth_app: ClassVar[bool] = True

    @classmethod
    def install_url(cls, app: Bitrix24App, *, redirect_uri: str, state: str) -> str:
        """``https://<portal>/oauth/authorize/?client_id&state`` (the portal:
        ``app.portal``; Bitrix24 has no portal-independent consent page)."""
        return oauth.build_install_url(app, redirect_uri=redirect_uri, state=state)

    @classmethod
    def token_credentials(cls, token: str) -> Installed:
        """An incoming webhook URL, ``https://<portal>/rest/<user>/<code>/``
        (authorization.md, FACTS 2.1); the portal's host is the account id."""
        creds = {"type": "webhook", "url": token.strip()}
        try:
            url = B24Api.endpoint(creds)
        except AuthError as exc:
            raise ValueError(exc.message) from None
        host = urlsplit(url).netloc.lower()
        if urlsplit(url).scheme != "https" and not host.startswith(("127.0.0.1", "localhost")):
            raise ValueError("Bitrix24 webhook URL must use HTTPS")
        return Installed(host, {"type": "webhook", "url": url})

    @classmethod
    def exchange_code(
        cls,
        app: Bitrix24App,
        *,
        code: str,
        redirect_uri: str,
        http: HttpClient,
        params: Mapping[str, str] | None = None,
    ) -> Installed:
        """``GET {auth_base}/oauth/token/?grant_type=authorization_code…``
        (FACTS 2.5); the account id is the ``member_id``; settings:
        ``member_id``, ``domain``. ``params`` (``domain``, ``member_id``)
        must agree with the token's own."""
        return oauth.exchange_code(app, code=code, http=http, params=params)

    @classmethod
    def install_event(
        cls, app: Bitrix24App, request: WebhookRequest, *, http: HttpClient
    ) -> Installed | None:
        """``ONAPPINSTALL`` (form-encoded, ``auth[…]``, FACTS 2.5), verified:
        the endpoint is the portal's own Bitrix24 host, ``app.info`` there
        names our app and the OAuth server confirms the portal. Returns the
        credentials (with the ``application_token``) and settings
        (``member_id``, ``domain``, ``application_token_sha256``,
        ``portal_language``, ``plan``). ``None`` for other events."""
        return oauth.install_event(app, request, http=http)

    @classmethod
    def console_account(cls, app: Bitrix24App, request: WebhookRequest) -> str | None:
        """The app page's POST (settings/oauth/simple-way.md): its
        ``member_id``, which only picks the tenant (``console``)."""
        return b24_console.console_account(request)

    def console_identity(self, request: WebhookRequest) -> ConsoleIdentity:
        """The page's ``AUTH_ID`` at the portal's recorded REST endpoint:
        ``user.admin``, ``profile`` and ``app.info`` (our app) in one batch."""
        return b24_console.console_identity(self, request)

    def refresh_credentials(self, stale: Mapping[str, Any]) -> dict[str, Any]:
        """Called by the core (single-flight) after ``401 expired_token``
        only. Returns the new pair (the refresh token rotates, FACTS 2.5)."""
        return oauth.refresh(self.app, stale, http=self.http)

    def setup(
        self,
        channels: Sequence[ChannelLink] = (),
        properties: Mapping[str, Sequence[str]] | None = None,
    ) -> SetupResult:
        """Idempotent. Checks the credentials, binds the app's events to the
        tenant's webhook URL, registers and activates the Open Lines
        connectors (``account.inbox``), creates the user fields the mapping
        needs. Its settings: ``domain``, ``member_id``, ``plan``,
        ``conversation_field``, ``events``, ``custom_fields`` and with Open
        Lines ``line``, ``connectors``, ``connector_id``; no routes (every
        event goes to the tenant's own webhook URL)."""
        return run_setup(self, channels, properties)

    # -- owners -------------------------------------------------------------------------

    def list_owners(self) -> list[Owner]:
        """Active users (``user.get`` with ``FILTER[ACTIVE]``, paged)."""
        rows = self.api.list_all(
            "user.get", {"FILTER": {"ACTIVE": True}, "sort": "ID", "order": "ASC"}
        )
        owners = []
        for row in rows:
            if not isinstance(row, Mapping) or row.get("ID") in (None, ""):
                continue
            name = " ".join(str(row.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
            owners.append(
                Owner(
                    id=str(row["ID"]),
                    email=str(row.get("EMAIL") or "") or None,
                    name=name or None,
                    active=row.get("ACTIVE") not in (False, "N", "false", 0),
                )
            )
        return owners

    # -- what a mapping names, read back ------------------------------------------------

    def list_pipelines(self, object_type: str) -> list[Pipeline]:
        """Leads: one pipeline (id ``""``) with the ``STATUS`` directory;
        deals: ``crm.category.list`` (``entityTypeId`` 2, the general one
        is id 0) with each one's ``DEAL_STAGE[_<id>]`` directory, the
        directories read by one paged ``crm.status.list`` (``SORT`` order)."""
        kind = self._check_type(object_type)
        rows = self.api.list_all("crm.status.list", {"order": {"SORT": "ASC"}})
        stages: dict[str, dict[str, str]] = {}
        for row in rows:
            if isinstance(row, Mapping) and row.get("STATUS_ID"):
                code = str(row["STATUS_ID"])
                stages.setdefault(str(row.get("ENTITY_ID") or ""), {})[code] = str(
                    row.get("NAME") or code
                )
        if kind == "lead":
            return [Pipeline(id="", name="Leads", stages=stages.get("STATUS", {}))]
        answer = as_map(self.api.call("crm.category.list", {"entityTypeId": 2}).result)
        found = []
        for category in answer.get("categories") or []:
            if not isinstance(category, Mapping):
                continue
            number = str(category.get("id"))
            directory = "DEAL_STAGE" if number in ("", "0") else f"DEAL_STAGE_{number}"
            found.append(
                Pipeline(
                    id=number,
                    name=str(category.get("name") or number),
                    stages=stages.get(directory, {}),
                )
            )
        return found

    def list_fields(self, object_type: str, names: Sequence[str]) -> dict[str, str]:
        """The built-in UTM fields the ``utm_*`` names write, and the user
        fields the setup recorded for the others (setting ``custom_fields``)
        that ``crm.<type>.userfield.list`` still lists, each -> its code."""
        if object_type not in ("lead", "deal", "contact"):
            return {}
        created = self.settings.custom_fields.get(object_type) or {}
        wanted = {name: field_code(name) or created.get(name) for name in names}
        listed: set[str] = set()
        if any(code and code.startswith("UF_") for code in wanted.values()):
            rows = self.api.list_all(f"crm.{object_type}.userfield.list", {})
            listed = {str(r.get("FIELD_NAME")) for r in rows if isinstance(r, Mapping)}
        return {
            name: str(code)
            for name, code in wanted.items()
            if code and (not str(code).startswith("UF_") or code in listed)
        }

    def preview_entry(self, entry: TimelineEntry) -> str:
        """The timeline comment's text (:func:`~.timeline.render_comment`)."""
        return render_comment(
            entry,
            language=self._language(entry),
            timezone=self.account.timezone,
            visible_marker=self._visible_marker(),
        )

    def record_url(self, ref: CrmRef) -> str | None:
        """``<portal>/crm/<contact|company|lead|deal>/details/<id>/``: the
        card in the portal's web interface, on the host of the REST endpoint
        the install recorded (else the recorded ``domain``, over https).
        Timeline comments, to-dos and Open Lines messages have no page of
        their own."""
        if ref.kind not in RECORD_KINDS or not ref.id.isdigit():
            return None
        try:
            parts = urlsplit(self.api.endpoint(self.credentials.get()))
            origin = f"{parts.scheme}://{parts.netloc}"
        except AuthError:
            if not self.settings.domain:
                return None
            origin = f"https://{self.settings.domain.lower()}"
        return f"{origin}/crm/{ref.kind}/details/{ref.id}/"

    # -- one request for a new conversation ---------------------------------------------

    def open_conversation(
        self,
        *,
        contact: CrmRef | ContactDraft,
        entity: EntityDraft,
        task: TaskDraft | None = None,
        entries: Sequence[TimelineEntry] = (),
    ) -> OpenedConversation:
        """Contact (when ``contact`` is a draft) + lead/deal + to-do +
        timeline comments (+ the Open Lines send) as **one** ``batch``
        (``halt=1``, references ``$result[contact]``/``$result[entity]``).

        For when there is nothing to look up (a new conversation of a known
        contact, or a person the lookup did not find). Everything it writes
        can be found again (the contact by its identity, the entity by its
        conversation uid, to-dos and comments by their marker), so a retry
        after an ambiguous answer goes through the ordinary hooks. Entries
        beyond one batch are written with :meth:`append_entries`. On an
        error, ``error.created`` holds the refs already made and
        ``error.partial`` the entries written."""
        kind = self._check_type(entity.object_type)
        commands: list[Command] = []
        if isinstance(contact, ContactDraft):
            commands.append(
                Command("contact", "crm.contact.add", {"fields": self.contact_fields(contact)})
            )
            contact_value: Any = Ref("contact")
        else:
            contact_value = to_int(contact.id, "contact id")
        fields = self.entity_fields(entity)
        fields["CONTACT_ID"] = contact_value
        commands.append(Command("entity", f"crm.{kind}.add", {"fields": fields}))
        if task is not None:
            params: dict[str, Any] = {
                "ownerTypeId": OWNER_TYPES[kind],
                "ownerId": Ref("entity"),
                "deadline": task.due_at.astimezone(dt.UTC).replace(microsecond=0).isoformat(),
                "title": task.subject[:255],
                "description": self._tagged(task.body, task.bridge_id),
            }
            if task.owner_id:
                params["responsibleId"] = to_int(task.owner_id, "owner id")
            commands.append(Command("task", "crm.activity.todo.add", params))
        room = 50 - len(commands) - 1
        now, later = list(entries)[:room], list(entries)[room:]
        chat = [e for e in now if wants_inbox(e)]
        if chat:
            commands.append(
                Command(
                    "im",
                    "imconnector.send.messages",
                    {
                        "CONNECTOR": connector_id(self.settings, chat[0].channel_kind),
                        "LINE": self._line(),
                        "MESSAGES": [message_item(e, self.settings) for e in chat],
                    },
                )
            )
        noted = [e for e in now if wants_note(e)]
        for n, entry in enumerate(noted):
            commands.append(
                Command(
                    f"c{n}",
                    "crm.timeline.comment.add",
                    self._comment(entry, (kind, Ref("entity"))),
                )
            )
        answer = self.api.batch(commands, halt=True)
        created: dict[str, CrmRef] = {}
        if answer.ok("contact"):
            created["contact"] = CrmRef("contact", str(answer.results["contact"]))
        if answer.ok("entity"):
            created["entity"] = CrmRef(kind, str(answer.results["entity"]))
        written: dict[str, tuple[CrmRef, ...]] = {}
        for n, entry in enumerate(noted):
            if answer.ok(f"c{n}"):
                refs = [CrmRef("comment", str(answer.results[f"c{n}"]))]
                if entry in chat and answer.ok("im"):
                    refs.append(CrmRef("message", entry.bridge_id))
                written[entry.bridge_id] = tuple(refs)
        for entry in chat:
            if entry not in noted and answer.ok("im"):
                written[entry.bridge_id] = (CrmRef("message", entry.bridge_id),)
        failed = answer.first_error([c.key for c in commands])
        if failed is not None:
            error = failed[1]
            error.created = created
            error.partial = written
            raise error
        task_ref = None
        if task is not None:
            result = answer.results.get("task")
            task_ref = (
                CrmRef("todo", str(result.get("id"))) if isinstance(result, Mapping) else None
            )
        contact_ref = created.get("contact") or CrmRef("contact", str(contact_value))
        entity_ref = created["entity"]
        if later:
            fixed = [_with_refs(e, contact_ref, entity_ref) for e in later]
            written.update(self.append_entries(fixed))
        owner = entity.owner_id or (contact.owner_id if isinstance(contact, ContactDraft) else None)
        return OpenedConversation(
            contact=CrmContact(contact_ref, owner_id=owner),
            entity=entity_ref,
            task=task_ref,
            entries=written,
        )

    # -- CRM -> bridge --------------------------------------------------------------------

    def cascade_contact(self, request: WebhookRequest) -> tuple[str, str]:
        """An outgoing webhook's contact event asking for a cascade
        (``bitrix24.cascade``): the contact it names, from this portal."""
        creds = self.credentials.get()
        member = self.settings.member_id or str(creds.get("member_id") or "") or None
        return b24_cascade.cascade_contact(decode_event(request), member)

    def verify_webhook(self, request: WebhookRequest) -> None:
        """``auth[application_token]`` must equal the one the install event
        delivered (constant-time; the only proof, FACTS 2.5), and
        ``auth[member_id]`` this tenant's portal. Incoming-webhook tenants
        receive no events: everything is refused."""
        creds = self.credentials.get()
        if self.api.style(creds) == "webhook":
            raise SignatureError(
                "this Bitrix24 tenant uses an incoming webhook: it has no app, hence no events"
            )
        try:
            payload = decode_event(request)
        except PayloadError:
            raise SignatureError("Bitrix24 event body carries no application_token") from None
        verify_token(
            payload,
            stored_token=str(creds.get("application_token") or "") or None,
            stored_digest=self.settings.application_token_sha256 or None,
            member_id=self.settings.member_id or str(creds.get("member_id") or "") or None,
        )

    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        """Operator messages -> ``REPLY`` (BB-code converted, the signature
        taken off unless ``operator_signature: keep``), uninstall ->
        ``APP_REMOVED``, lead/deal updates re-read (one call each) ->
        ``ENTITY_CLOSED`` / ``OWNER_CHANGED``, deletions -> ``ENTITY_CLOSED``
        / ``CONTACT_REMOVED``, the rest -> ``UNKNOWN``. Junk is a
        ``PayloadError``."""
        settings = self.settings
        payload = decode_event(request)
        connectors = our_connectors(settings)
        events = events_from(
            payload,
            request.received_at,
            keep_signature=settings.operator_signature.lower() == "keep",
        )
        out: list[CrmEvent] = []
        data = as_map(payload.get("data"))
        for event in events:
            if event.kind is CrmEventKind.REPLY:
                if str(data.get("CONNECTOR") or "") not in connectors:
                    out.append(
                        CrmEvent(
                            CrmEventKind.UNKNOWN,
                            event.external_id,
                            event.occurred_at,
                            raw=event.raw,
                        )
                    )
                    continue
                line = str(data.get("LINE") or settings.line or "")
                thread = f"{data.get('CONNECTOR')}:{line}:{event.thread_key}"
                out.append(_replace(event, crm_thread_id=thread))
            elif event.kind is CrmEventKind.THREAD_CLOSED:
                if str(data.get("CONNECTOR") or "") not in connectors:
                    continue  # another app's connector: not our chat
                line = str(data.get("LINE") or settings.line or "")
                thread = f"{data.get('CONNECTOR')}:{line}:{event.thread_key}"
                out.append(_replace(event, crm_thread_id=thread))
            elif event.kind is CrmEventKind.UNKNOWN and event.entity is not None:
                out.extend(self._reread(event))
            else:
                out.append(event)
        return out

    def _reread(self, event: CrmEvent) -> list[CrmEvent]:
        """A lead/deal update names only the id (FACTS 2.6): read it once,
        outside the shared bucket (the event hook must answer promptly; the
        queue server slows down for slow handlers)."""
        assert event.entity is not None
        kind = event.entity.kind
        try:
            record = self.api.call(
                f"crm.{kind}.get", {"id": to_int(event.entity.id, f"{kind} id")}, budget=False
            ).result
        except NotFoundError:
            return [_replace(event, kind=CrmEventKind.ENTITY_CLOSED)]
        except BridgeError as exc:
            # Bitrix24 does not retry events: nothing better than to log it
            log.warning(
                "Bitrix24 %s %s not re-read (%s): update ignored",
                kind,
                str(event.entity.id)[:32],
                type(exc).__name__,
            )
            return [event]
        if not isinstance(record, Mapping):
            return [event]
        owner = record.get("ASSIGNED_BY_ID")
        owner_id = str(owner) if owner not in (None, "", 0, "0") else None
        out = []
        if self.is_closed(kind, record):
            out.append(_replace(event, kind=CrmEventKind.ENTITY_CLOSED, owner_id=owner_id))
        else:
            # the open stage it is in (a deal's STAGE_ID, a lead's STATUS_ID):
            # the service layer's transfers by stage read it
            stage = record.get("STAGE_ID" if kind == "deal" else "STATUS_ID")
            if stage not in (None, ""):
                out.append(
                    _replace(
                        event,
                        kind=CrmEventKind.ENTITY_STAGE,
                        external_id=f"{event.external_id}:stage:{stage}",
                        stage=str(stage),
                    )
                )
        if owner_id:
            out.append(
                _replace(
                    event,
                    kind=CrmEventKind.OWNER_CHANGED,
                    external_id=f"{event.external_id}:owner:{owner_id}",
                    owner_id=owner_id,
                )
            )
        return out or [event]

    def report_delivery(self, report: DeliveryReport) -> None:
        """Open Lines: ``imconnector.send.status.delivery`` (``im`` ids from
        the reply's ``external_id``, ``message.id`` an array, ``chat.id``).
        Bitrix24 has no "failed" status: a failed reply becomes a timeline
        comment on the conversation's lead/deal. CRM-only tenants (incoming
        webhook) never have replies to report."""
        if self.api.is_webhook():
            return
        chat_id, _, message_id = str(report.crm_message_id).partition(":")
        # ASCII digits only: str.isdigit() also admits "²", which int() refuses
        if not (chat_id.isascii() and chat_id.isdigit() and message_id.isascii()) or not (
            message_id.isdigit()
        ):
            return  # not an Open Lines message: nothing to report
        connector, line, chat = _thread_parts(report.crm_thread_id)
        settings = self.settings
        if report.status is DeliveryStatus.FAILED:
            self._report_failure(report, chat)
            return
        item: dict[str, Any] = {
            "im": {"chat_id": int(chat_id), "message_id": int(message_id)},
            "message": {
                "id": [str(report.crm_message_id)],
                "date": int(dt.datetime.now(dt.UTC).timestamp()),
            },
        }
        if chat:
            item["chat"] = {"id": chat}
        self.api.call(
            "imconnector.send.status.delivery",
            {
                "CONNECTOR": connector or connector_id(settings),
                "LINE": to_int(line or settings.line, "Open Lines line"),
                "MESSAGES": [item],
            },
        )

    def _report_failure(self, report: DeliveryReport, conversation_uid: str | None) -> None:
        if not conversation_uid:
            log.warning(
                "Bitrix24 reply %s failed; no conversation to note it on", report.crm_message_id
            )
            return
        found = self.api.batch(
            [
                Command(
                    kind,
                    f"crm.{kind}.list",
                    {
                        "filter": self._uid_fields(conversation_uid),
                        "select": ["ID"],
                        "order": {"ID": "ASC"},
                    },
                )
                for kind in ("lead", "deal")
            ]
        )
        for kind in ("lead", "deal"):
            rows = found.get(kind)
            if isinstance(rows, list) and rows and isinstance(rows[0], Mapping):
                language = self.account.language
                text = (
                    "Ответ НЕ доставлен клиенту"
                    if language == "ru"
                    else "Reply NOT delivered to the customer"
                )
                reason = f": {report.error[:300]}" if report.error else ""
                tag = marker(
                    f"delivery:{report.crm_message_id}:failed", visible=self._visible_marker()
                )
                comment = f"{text} (message {report.crm_message_id}){reason}"
                self.api.call(
                    "crm.timeline.comment.add",
                    {
                        "fields": {
                            "ENTITY_ID": to_int(rows[0].get("ID"), f"{kind} id"),
                            "ENTITY_TYPE": kind,
                            "COMMENT": attach_marker(comment, tag),
                        }
                    },
                )
                return


def _thread_parts(value: str | None) -> tuple[str | None, str | None, str | None]:
    """``<connector>:<line>:<chat.id>`` (our ``crm_thread_id``)."""
    if not value:
        return None, None, None
    parts = str(value).split(":", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0] or None, parts[1], parts[2] or None
    return None, None, str(value)


def _replace(event: CrmEvent, **changes: Any) -> CrmEvent:
    return replace(event, **changes)


def _with_refs(entry: TimelineEntry, contact: CrmRef, entity: CrmRef) -> TimelineEntry:
    return replace(entry, contact=entry.contact or contact, entity=entry.entity or entity)
