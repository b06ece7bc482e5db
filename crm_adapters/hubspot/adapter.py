"""The HubSpot CRM adapter: the contract hooks.

HubSpot specifics live beside this module: ``client`` (auth, refresh, error
mapping), ``oauth``, ``webhooks`` (v3 signature, the reply webhook and the
app's CRM-object webhooks: contact.merge, deal/ticket stage, owner and
deletion), ``setup``
(properties, custom channel), ``timeline`` (request bodies), ``search``,
``contacts``, ``merge`` and ``entities`` (the contact, merge/note and
deal/ticket hooks, as mixins). Facts are
cited by section of ``../shared/contracts/FACTS.md``.

Calls per message are a measured figure: once a conversation's contact and
deal/ticket are known, a batch of N messages costs ``ceil(N/100)`` calls for
the timeline (plus one per message when the tenant also publishes to the
inbox), and one search first when an earlier attempt may have written them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bridge.errors import BridgeError, NotReadyError, PermanentError
from bridge.http import HttpClient
from bridge.model import (
    ChannelLink,
    CredentialProvider,
    CrmAccountInfo,
    CrmEvent,
    CrmRef,
    DeliveryReport,
    DeliveryStatus,
    Installed,
    Owner,
    Rate,
    SetupResult,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from crm_adapters.base import ConsoleIdentity, CrmAdapter, Pipeline

from . import cascade as hubspot_cascade
from . import console as hubspot_console
from . import oauth
from .client import DEFAULT_API_BASE, HubSpotApi, scrub
from .contacts import ContactsMixin
from .entities import EntitiesMixin, _stage_closed
from .merge import MergeMixin
from .search import BATCH_SIZE, SEARCH_RATE, batch_reason, chunks, matched
from .settings import HubSpotApp, HubSpotSettings
from .setup import OBJECT_TYPES, run_setup
from .timeline import (
    association,
    hubspot_time,
    inbox_message,
    render_body,
    timeline_input,
    timeline_kind,
    wants_inbox,
)
from .webhooks import (
    default_stage_closed,
    html_to_text,
    parse_events,
    split_by_portal,
    verify_v3,
)

__all__ = ["HubSpotAdapter", "api_rate"]

log = logging.getLogger(__name__)

#: the token bucket's burst (see :func:`api_rate`)
BURST = 5

DELIVERY_STATUS = {
    DeliveryStatus.SENT: "SENT",
    DeliveryStatus.DELIVERED: "SENT",  # HubSpot has no "delivered" (FACTS 3.7)
    DeliveryStatus.READ: "READ",
    DeliveryStatus.FAILED: "FAILED",
}


def api_rate(settings: HubSpotSettings) -> Rate:
    """A bucket that never exceeds ``rate_per_10s`` requests in any 10 s.

    ``capacity + 10 * per_second`` is the most a token bucket lets through
    in 10 s, so 5 + 10 * 9.5 = 100: HubSpot's documented budget for private
    apps on Free/Starter (FACTS 3.2). ``rate_per_10s`` overrides it (110 for
    OAuth apps, 190 on Professional/Enterprise).
    """
    per_10s = settings.rate_per_10s or 100.0
    if per_10s <= BURST:
        return Rate(capacity=1, per_second=max(per_10s - 1, 0.1) / 10)
    return Rate(capacity=BURST, per_second=(per_10s - BURST) / 10)


#: the web interface's host (record links, :meth:`HubSpotAdapter.record_url`)
APP_BASE = "https://app.hubspot.com"
#: CRM object kind -> its object type id (the record page's address)
RECORD_TYPE_IDS: Mapping[str, str] = {
    "contact": "0-1",
    "company": "0-2",
    "deal": "0-3",
    "ticket": "0-5",
}


class HubSpotAdapter(ContactsMixin, MergeMixin, EntitiesMixin, CrmAdapter):
    """HubSpot CRM v3: contacts, deals/tickets, notes/communications, tasks,
    owners, the Conversations custom channel and v3-signed webhooks."""

    kind: ClassVar[str] = "hubspot"
    title: ClassVar[str] = "HubSpot"
    App: ClassVar[type[HubSpotApp]] = HubSpotApp
    Settings: ClassVar[type[HubSpotSettings]] = HubSpotSettings
    rate: ClassVar[Rate] = Rate(capacity=BURST, per_second=9.5)
    entity_types: ClassVar[tuple[str, ...]] = ("deal", "ticket")
    #: HubSpot's batch endpoints take 100 inputs, an ``IN`` filter as many
    #: values (FACTS 3.3): a burst of new customers is opened 100 at a time
    batch_size: ClassVar[int] = BATCH_SIZE
    finds_entries_at_once: ClassVar[bool] = True
    #: communications exist only for the channel types HubSpot has
    #: (``hs_communication_channel_type``, FACTS 3.3: the keys of
    #: timeline.COMMUNICATION_CHANNEL_TYPES); other channels get notes
    timeline_kinds: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "note": (),
        "communication": ("whatsapp", "sms", "linkedin"),
    }
    #: the Conversations custom channel's inbox (FACTS 3.7)
    has_inbox: ClassVar[bool] = True
    entity_keys: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "deal": {"pipeline": "text", "stage": "text"},
        "ticket": {"pipeline": "text", "stage": "text"},
    }
    #: what entities.create_entity does without them: DEFAULT_PIPELINE, then
    #: the pipeline's first open stage (deals need ``pipeline`` + ``dealstage``,
    #: tickets ``hs_pipeline`` + ``hs_pipeline_stage``, FACTS 3.3)
    entity_placement: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "deal": {
            "pipeline": "without it deals go to the pipeline with id 'default' (from HubSpot's "
            "guides, unconfirmed by its API specs), and a stage of another pipeline is rejected",
            "stage": "without it each new deal opens at the first open stage of its pipeline",
        },
        "ticket": {
            "pipeline": "without it tickets go to the pipeline with id '0' (from HubSpot's "
            "guides, unconfirmed by its API specs), and a stage of another pipeline is rejected",
            "stage": "without it each new ticket opens at the first open stage of its pipeline",
        },
    }

    def __init__(
        self,
        account: CrmAccountInfo,
        credentials: CredentialProvider,
        http: HttpClient | None = None,
    ) -> None:
        super().__init__(account, credentials, http)
        self.api = HubSpotApi(self.http, credentials)
        self.api_limit = self.limit("api", api_rate(self.settings))
        self.search_limit = self.limit("search", SEARCH_RATE)
        self._pipelines: dict[str, list[Mapping[str, Any]]] = {}
        #: object types whose pipelines could not be read for a webhook
        self._pipelines_unread: set[str] = set()

    @classmethod
    def default_api_base(cls) -> str:
        return DEFAULT_API_BASE

    # -- install / setup ------------------------------------------------

    has_oauth_app: ClassVar[bool] = True

    @classmethod
    def install_url(cls, app: HubSpotApp, *, redirect_uri: str, state: str) -> str:
        """HubSpot's authorize URL (FACTS 3.1): ``app.client_id``, with
        ``auth_base`` and ``scopes`` (space- or comma-separated) optional."""
        return oauth.build_install_url(app, redirect_uri=redirect_uri, state=state)

    @classmethod
    def exchange_code(
        cls,
        app: HubSpotApp,
        *,
        code: str,
        redirect_uri: str,
        http: HttpClient,
        params: Mapping[str, str] | None = None,
    ) -> Installed:
        """``POST /oauth/v1/token`` (form-encoded): credentials ``type``,
        ``access_token``, ``refresh_token``, ``expires_at``; the hub id is
        the account id."""
        return oauth.exchange_code(app, code=code, redirect_uri=redirect_uri, http=http)

    @classmethod
    def console_account(cls, app: HubSpotApp, request: WebhookRequest) -> str | None:
        """A v3-signed call of the app's card or settings action: its
        ``portalId`` (``console``)."""
        return hubspot_console.console_account(app, request)

    def console_identity(self, request: WebhookRequest) -> ConsoleIdentity:
        """The call's ``userId`` in this tenant's portal; answered with a
        short-lived login link, not a session (the call is HubSpot's server)."""
        return hubspot_console.console_identity(self, request)

    def refresh_credentials(self, stale: Mapping[str, Any]) -> dict[str, Any]:
        """Trade the refresh token for a new access token (called inside the
        core's single-flight lock). ``BAD_REFRESH_TOKEN`` / ``invalid_grant``
        raise ``AuthError``; the refresh token returned is always kept."""
        return oauth.refresh(
            self.app,
            stale,
            http=self.http,
            api_base=self.http.base_url or DEFAULT_API_BASE,
            limit=self.api_limit,
        )

    def setup(
        self,
        channels: Sequence[ChannelLink] = (),
        properties: Mapping[str, Sequence[str]] | None = None,
    ) -> SetupResult:
        """Create the ``crm_bridge`` property group and properties, and, when
        the tenant uses the inbox (``account.inbox``), the custom channel,
        inbox and channel accounts. Idempotent. Records ``properties_ready``
        and the inbox's ``channel_id``, ``inbox_id``, ``channel_accounts``
        (link id -> HubSpot channel account id) and ``channel_identifiers``."""
        return run_setup(self, channels, properties)

    # -- search ---------------------------------------------------------

    # -- timeline and tasks ---------------------------------------------

    def append_entries(self, entries: Sequence[TimelineEntry]) -> dict[str, tuple[CrmRef, ...]]:
        """Notes / communications in one ``batch/create`` per 100 (inline
        associations to contact and deal/ticket, FACTS 3.4), then, where
        ``entry.inbox``, one custom-channel message each (idempotent
        by ``integrationIdempotencyId``, FACTS 3.7). ``maybe_written``
        entries are first looked up by ``bridge_message_id`` (one search per
        object type); steps in ``entry.written`` are not written again. A
        failed call raises with ``partial`` set to the entries completed
        before it and ``progress`` to the steps written of the others (a
        note whose inbox message failed): the job retries only the rest,
        without relying on search, which lags behind writes (FACTS 3.3)."""
        unique = list({e.bridge_id: e for e in entries}.values())
        timeline: dict[str, CrmRef] = {}
        groups: dict[str, list[TimelineEntry]] = {}
        for entry in unique:
            kind = timeline_kind(entry)
            done = entry.written_ref(kind) if kind is not None else None
            if done is not None:
                timeline[entry.bridge_id] = done
            elif kind is not None:
                groups.setdefault(kind, []).append(entry)
        out: dict[str, tuple[CrmRef, ...]] = {}
        try:
            for kind, group in groups.items():
                self._write_timeline(kind, group, timeline)
            for entry in unique:
                refs = self._complete(entry, timeline)
                if refs is not None:
                    out[entry.bridge_id] = refs
        except BridgeError as exc:
            exc.partial = dict(out)
            exc.progress = {b: (r,) for b, r in timeline.items() if b not in out}
            raise
        return out

    def _complete(
        self, entry: TimelineEntry, timeline: Mapping[str, CrmRef]
    ) -> tuple[CrmRef, ...] | None:
        """The refs of ``entry`` once every step is written (publishing it
        to the inbox if asked), or None when its timeline entry is missing."""
        refs: list[CrmRef] = []
        if timeline_kind(entry) is not None:
            if entry.bridge_id not in timeline:
                return None  # not written: the job tries it again
            refs.append(timeline[entry.bridge_id])
        if wants_inbox(entry):
            refs.append(entry.written_ref("message") or self._publish(entry))
        return tuple(refs)

    def _write_timeline(
        self, kind: str, entries: Sequence[TimelineEntry], refs: dict[str, CrmRef]
    ) -> None:
        """Write ``entries`` as ``kind`` records into ``refs`` (bridge id ->
        ref), chunk by chunk: what is in ``refs`` if this raises is written."""
        object_type = f"{kind}s"
        maybe = [e.bridge_id for e in entries if e.maybe_written]
        found = self._find_by_bridge_ids(object_type, maybe) if maybe else {}
        refs.update({bridge_id: CrmRef(kind, record) for bridge_id, record in found.items()})
        todo = [e for e in entries if e.bridge_id not in found]
        for chunk in chunks(todo, BATCH_SIZE):
            body = self.api.json(
                "POST",
                f"/crm/v3/objects/{object_type}/batch/create",
                json={"inputs": [timeline_input(e, kind) for e in chunk]},
                limit=self.api_limit,
            )
            written = _batch_results(body, [e.bridge_id for e in chunk])
            if not written and body.get("errors"):
                # 207 with nothing written: report HubSpot's reason, not silence
                first = body["errors"][0] if isinstance(body["errors"][0], Mapping) else {}
                raise PermanentError(
                    f"HubSpot rejected the {object_type}: {scrub(first.get('message'))}"
                )
            refs.update({bridge_id: CrmRef(kind, record) for bridge_id, record in written.items()})

    def _publish(self, entry: TimelineEntry) -> CrmRef:
        settings = self.settings
        channel_id = settings.channel_id
        account_id = settings.channel_accounts.get(entry.channel_account)
        if not channel_id or not account_id:
            # the install's setup has not registered this channel yet (it may
            # still be running): wait for it rather than fail the message
            raise NotReadyError(
                f"channel account {entry.channel_account} has no HubSpot inbox channel yet: "
                "waiting for `bridge crm setup` (needs `inbox: true` in the mapping)"
            )
        identifier = settings.channel_identifiers.get(entry.channel_account)
        body = self.api.json(
            "POST",
            f"/conversations/v3/custom-channels/{channel_id}/messages",
            json=inbox_message(
                entry,
                channel_account_id=str(account_id),
                account_identifier=str(identifier or entry.channel_account),
            ),
            limit=self.api_limit,
        )
        return CrmRef("message", str(body["id"]))

    def _task_input(self, draft: TaskDraft) -> dict[str, Any]:
        """A task for the owner, associated with the contact (204) and the
        deal/ticket (216/230), carrying ``bridge_message_id``."""
        props = {
            "hs_task_subject": draft.subject,
            "hs_task_body": draft.body,
            "hs_timestamp": hubspot_time(draft.due_at),
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "MEDIUM",
            "hs_task_type": "TODO",
            "bridge_message_id": draft.bridge_id,
        }
        if draft.owner_id:
            props["hubspot_owner_id"] = str(draft.owner_id)
        associations = [association("task", draft.contact)]
        if draft.entity is not None:
            associations.append(association("task", draft.entity))
        return {"properties": props, "associations": associations}

    def create_task(self, draft: TaskDraft) -> CrmRef:
        """``POST /crm/v3/objects/tasks`` (:meth:`_task_input`); looked up
        by ``bridge_message_id`` first when ``maybe_written``."""
        if draft.maybe_written:
            found = self._find_by_bridge_ids("tasks", [draft.bridge_id])
            if draft.bridge_id in found:
                return CrmRef("task", found[draft.bridge_id])
        body = self.api.json(
            "POST", "/crm/v3/objects/tasks", json=self._task_input(draft), limit=self.api_limit
        )
        return CrmRef("task", str(body["id"]))

    def create_tasks(self, drafts: Mapping[str, TaskDraft]) -> dict[str, CrmRef]:
        """:meth:`create_task` for many: the ``maybe_written`` ones looked up
        in one search per 100 (``IN`` on ``bridge_message_id``), the rest in
        one ``batch/create`` per 100 (FACTS 3.3), matched back by
        ``bridge_message_id``."""
        made: dict[str, CrmRef] = {}
        try:
            maybe = [d.bridge_id for d in drafts.values() if d.maybe_written]
            found = self._find_by_bridge_ids("tasks", maybe) if maybe else {}
            for key, draft in drafts.items():
                if draft.bridge_id in found:
                    made[key] = CrmRef("task", found[draft.bridge_id])
            todo = [k for k in drafts if k not in made]
            for chunk in chunks(todo, BATCH_SIZE):
                body = self.api.json(
                    "POST",
                    "/crm/v3/objects/tasks/batch/create",
                    json={"inputs": [self._task_input(drafts[k]) for k in chunk]},
                    limit=self.api_limit,
                )
                by_id = matched(body, "bridge_message_id")
                for key in chunk:
                    if drafts[key].bridge_id in by_id:
                        made[key] = CrmRef("task", by_id[drafts[key].bridge_id])
                missing = [k for k in chunk if k not in made]
                if missing:
                    raise PermanentError(
                        f"HubSpot created {len(chunk) - len(missing)} of {len(chunk)} tasks: "
                        f"{batch_reason(body)}"
                    )
        except BridgeError as exc:
            exc.created = {**made, **exc.created}
            raise
        return made

    # -- owners ---------------------------------------------------------

    def list_owners(self) -> list[Owner]:
        """Every active owner (``GET /crm/v3/owners/``, paged by ``after``)."""
        owners: list[Owner] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            body = self.api.json("GET", "/crm/v3/owners/", params=params, limit=self.api_limit)
            for item in body.get("results", []):
                name = " ".join(p for p in (item.get("firstName"), item.get("lastName")) if p)
                owners.append(
                    Owner(
                        id=str(item["id"]),
                        email=item.get("email") or None,
                        name=name or None,
                        active=not item.get("archived", False),
                    )
                )
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return owners

    # -- what a mapping names, read back ----------------------------------

    def list_pipelines(self, object_type: str) -> list[Pipeline]:
        """``GET /crm/v3/pipelines/{deals|tickets}``: each pipeline with its
        stages by ``displayOrder``; archived ones left out."""
        self._pipelines.pop(object_type, None)  # a fresh read, not the webhook cache
        found = []
        for item in self._pipelines_for(object_type):
            if item.get("archived"):
                continue
            stages = sorted(item.get("stages") or [], key=lambda s: s.get("displayOrder", 0))
            found.append(
                Pipeline(
                    id=str(item.get("id")),
                    name=str(item.get("label") or item.get("id")),
                    stages={
                        str(s.get("id")): str(s.get("label") or s.get("id"))
                        for s in stages
                        if not s.get("archived")
                    },
                )
            )
        return found

    def list_fields(self, object_type: str, names: Sequence[str]) -> dict[str, str]:
        """``GET /crm/v3/properties/{type}``: the names among the object's
        properties (HubSpot's own and custom ones), each -> its label."""
        plural = OBJECT_TYPES.get(object_type, object_type)
        body = self.api.json("GET", f"/crm/v3/properties/{plural}", limit=self.api_limit)
        labels = {
            str(p.get("name")): str(p.get("label") or p.get("name"))
            for p in body.get("results", [])
            if isinstance(p, Mapping) and not p.get("archived")
        }
        return {name: labels[name] for name in names if name in labels}

    def preview_entry(self, entry: TimelineEntry) -> str:
        """The note's HTML body (:func:`~.timeline.render_body`) as a rep reads it."""
        return html_to_text(render_body(entry))

    def record_url(self, ref: CrmRef) -> str | None:
        """``https://app.hubspot.com/contacts/<portal>/record/<type id>/<id>``:
        a contact (0-1), company (0-2), deal (0-3) or ticket (0-5) card, by the
        object type ids of HubSpot's object APIs (the web interface's own
        address form; unconfirmed by an API spec). Notes, communications and
        tasks have no page of their own; a portal whose id is not recorded
        has no links."""
        type_id = RECORD_TYPE_IDS.get(ref.kind)
        portal = (self.account.account_id or "").strip()
        if type_id is None or not portal.isdigit() or not ref.id.isdigit():
            return None
        return f"{APP_BASE}/contacts/{portal}/record/{type_id}/{ref.id}"

    # -- CRM -> bridge --------------------------------------------------

    #: CRM-object webhooks (``contact.merge`` ...) go to the one target URL
    #: of the app's webhook settings for every portal (FACTS 3.6)
    has_app_webhooks: ClassVar[bool] = True

    @classmethod
    def app_webhook(cls, app: HubSpotApp, request: WebhookRequest) -> dict[str, WebhookRequest]:
        """A delivery to the app's target URL: the v3 signature with the
        app's client secret (tenant-independent), then the events per
        ``portalId`` (``webhooks.split_by_portal``)."""
        verify_v3(request, app.client_secret)
        return split_by_portal(request)

    def cascade_contact(self, request: WebhookRequest) -> tuple[str, str]:
        """A contact workflow's "Send a webhook" asking for a cascade: the
        enrolled contact (``hubspot.cascade``; its body's shape UNCONFIRMED)."""
        return hubspot_cascade.cascade_contact(request)

    def verify_webhook(self, request: WebhookRequest) -> None:
        """HubSpot's v3 signature with the app's client secret, timestamp
        within ±300 s (FACTS 3.6); anything malformed is ``SignatureError``."""
        verify_v3(request, self.app.client_secret)

    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        """``OUTGOING_CHANNEL_MESSAGE_CREATED`` -> REPLY; ``contact.merge``
        (or ``object.merge`` of contacts) -> one CONTACT_MERGED per contact
        gone; a deal's ``dealstage`` / a ticket's ``hs_pipeline_stage``
        change -> ENTITY_CLOSED (a closed stage, :meth:`_stage_is_closed`) or
        ENTITY_STAGE, a ``hubspot_owner_id`` change -> OWNER_CHANGED, a
        ``deal.deletion`` / ``ticket.deletion`` -> ENTITY_CLOSED; other types
        and non-outgoing messages -> UNKNOWN. A payload for another portal
        is a ``SignatureError``; a bad body is a ``PayloadError``."""
        return parse_events(request, self.account.account_id, self._stage_is_closed)

    def _stage_is_closed(self, kind: str, stage: str) -> bool:
        """Whether ``stage`` of a deal/ticket pipeline is closed: its
        metadata (``isClosed``; a ticket stage's ``ticketState``, FACTS 3.5)
        from the pipelines read once per adapter (``entities``), else the
        default deal pipeline's ``closedwon`` / ``closedlost``."""
        meta = self._stage_metadata(kind, stage)
        if meta is not None:
            return _stage_closed(meta)
        return default_stage_closed(kind, stage)

    def _stage_metadata(self, kind: str, stage: str) -> Mapping[str, Any] | None:
        if kind in self._pipelines_unread:
            return None
        try:
            return self._stage(kind, None, stage)
        except BridgeError as exc:
            # HubSpot retries a webhook only on 5xx/429 and would resend every
            # portal's events of the delivery: answer it with the fallback
            self._pipelines_unread.add(kind)
            log.warning(
                "HubSpot %s pipelines not read (%s): closed stages by their default ids",
                kind,
                type(exc).__name__,
            )
            return None

    def report_delivery(self, report: DeliveryReport) -> None:
        """``PATCH .../custom-channels/{channelId}/messages/{id}`` with
        ``statusType`` SENT / READ / FAILED (DELIVERED shows as SENT)."""
        channel_id = self.settings.channel_id
        if not channel_id:
            raise NotReadyError(
                "no HubSpot inbox channel yet: waiting for `bridge crm setup` "
                "(needs `inbox: true` in the mapping)"
            )
        body: dict[str, Any] = {"statusType": DELIVERY_STATUS[report.status]}
        if report.status is DeliveryStatus.FAILED and report.error:
            body["errorMessage"] = report.error[:500]
        self.api.request(
            "PATCH",
            f"/conversations/v3/custom-channels/{channel_id}/messages/{report.crm_message_id}",
            json=body,
            limit=self.api_limit,
        )


def _batch_results(body: Mapping[str, Any], bridge_ids: Sequence[str]) -> dict[str, str]:
    """bridge id -> new record id. HubSpot does not promise result order, so
    match by the ``bridge_message_id`` each record carries."""
    results = [r for r in body.get("results", []) if isinstance(r, Mapping)]
    wanted = set(bridge_ids)
    out: dict[str, str] = {}
    for record in results:
        bridge_id = (record.get("properties") or {}).get("bridge_message_id")
        if bridge_id in wanted:
            out.setdefault(bridge_id, str(record["id"]))
    return out
