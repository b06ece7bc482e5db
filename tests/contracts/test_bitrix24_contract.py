# ruff: noqa: S105, S106  (sandbox secrets)
"""The CRM adapter contract, run against the sandbox Bitrix24 over real HTTP,
in both ways a tenant can connect Bitrix24:

* **CRM only, incoming webhook** (``{"type": "webhook", "url": …/rest/1/<code>/}``):
  comments, to-dos, contacts, leads/deals. Bitrix24 sends no events to an
  incoming webhook, so there is no reply path: the reply tests are replaced
  by what such a tenant must do instead (refuse every event, refuse Open
  Lines with a clear error).
* **App install with Open Lines** (``inbox: true``): the sandbox installs the
  app by POSTing ``ONAPPINSTALL`` form-encoded to our install handler (the
  suite's receiver), :meth:`Bitrix24Adapter.install_event` verifies it and
  returns the credentials; ``setup()`` binds the events to the receiver and
  registers the Open Lines connector; customer messages go to the chat and
  the timeline; an operator reply is fired by the sandbox's
  ``/_reply`` as ``OnImConnectorMessageAdd``.

The sandbox's "changes made through the API fire events too" switch is off
(the suite expects exactly the operator's event). Payloads are the
sandbox's, which follows the official docs in ``sandbox/bitrix24/spec``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlencode

import pytest
import requests

from bridge.errors import AuthError, PermanentError, SignatureError
from bridge.http import HttpClient
from bridge.model import (
    ChannelLink,
    ContactLookup,
    CrmAccountInfo,
    CrmEventKind,
    CrmRef,
    DeliveryReport,
    DeliveryStatus,
    EntityDraft,
    Installed,
    MessageKind,
    SetupResult,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from bridge.schema import load
from crm_adapters.bitrix24 import Bitrix24Adapter, Bitrix24App, Bitrix24Settings
from crm_adapters.bitrix24.entities import field_code
from sandbox.bitrix24 import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DOMAIN,
    DEMO_MEMBER_ID,
    DEMO_WEBHOOK_CODE,
    DEMO_WEBHOOK_USER,
    create_app,
)
from tests.contracts.crm_contract import (
    LIVE_FIELD,
    Credentials,
    CrmAdapterContract,
    LocalBucket,
    Receiver,
    VendorEntry,
    reveal_markers,
    what_people_see,
)
from tests.support.servers import RunningServer, serve_wsgi

LINK = ChannelLink(
    id="7", kind="telegram", name="@acme_support_bot", identifier="bot-4242", title="Telegram"
)
#: the bridge's comment marker, parsed independently of the adapter's code
MARKER = re.compile(r"\[bridge:([0-9a-f]{12}):(-?\d*):(\d*)\]")
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


class B24Vendor:
    """Reads the sandbox's ``GET /_state`` and acts as a person in Bitrix24
    through its control API (``/_reply``, ``/_lead_status``, …)."""

    def __init__(self, base_url: str, bucket: LocalBucket, bucket_key: str) -> None:
        self.base_url = base_url
        self.bucket = bucket
        self.bucket_key = bucket_key
        self.hook = f"{base_url}/{DEMO_DOMAIN}/rest/{DEMO_WEBHOOK_USER}/{DEMO_WEBHOOK_CODE}/"

    def portal(self) -> dict[str, Any]:
        response = requests.get(
            f"{self.base_url}/_state", params={"account": DEMO_DOMAIN}, timeout=10
        )
        response.raise_for_status()
        (portal,) = response.json()["accounts"]
        return portal

    def control(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.base_url}{path}", json=dict(body), timeout=15)
        assert response.status_code == 200, response.text
        return response.json()

    def rest(self, method: str, body: Mapping[str, Any]) -> Any:
        """A rep's own tool on the same portal (the same leaky bucket)."""
        self.bucket.acquire(self.bucket_key, Bitrix24Adapter.rate)
        response = requests.post(self.hook + method, json=dict(body), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def seed_contact(self, *, name: str, phone: str | None = None, email: str | None = None) -> str:
        fields: dict[str, Any] = {"NAME": name}
        if phone:
            fields["PHONE"] = [{"VALUE": phone, "VALUE_TYPE": "WORK"}]
        if email:
            fields["EMAIL"] = [{"VALUE": email, "VALUE_TYPE": "WORK"}]
        return str(self.rest("crm.contact.add", {"fields": fields}))

    def entity(self, ref: CrmRef) -> dict[str, Any]:
        (row,) = [e for e in self.portal()[ref.kind + "s"] if str(e["id"]) == ref.id]
        return row

    def conversation_of(self, ref: CrmRef) -> str | None:
        return self.entity(ref)["fields"].get("ORIGIN_ID")

    def entity_of_contact(self, contact: CrmRef) -> CrmRef:
        portal = self.portal()
        for kind in ("lead", "deal"):
            rows = [
                e
                for e in portal[kind + "s"]
                if str(e["fields"].get("CONTACT_ID") or "") == contact.id
            ]
            if rows:
                return CrmRef(kind, str(max(r["id"] for r in rows)))
        raise AssertionError(f"no lead/deal of contact {contact.id}")

    def comments(self) -> list[dict[str, Any]]:
        return list(self.portal()["timeline"]["comments"])

    def contact_notes(self, contact: CrmRef) -> list[str]:
        return [
            str(c.get("COMMENT") or "")
            for c in self.comments()
            if c.get("ENTITY_TYPE") == "contact" and str(c.get("ENTITY_ID")) == contact.id
        ]

    def contact_exists(self, contact_id: str) -> bool:
        return any(str(c["id"]) == contact_id for c in self.portal()["contacts"])

    def entity_field(self, entity: CrmRef, name: str | None, settings: Mapping[str, Any]) -> Any:
        (found,) = [e for e in self.portal()[f"{entity.kind}s"] if str(e["id"]) == entity.id]
        if name is None:
            return found["fields"]["ASSIGNED_BY_ID"]
        # a standard field (UTM_SOURCE) or the user field the setup made
        code = field_code(name) or settings["custom_fields"][entity.kind][name]
        return found["fields"].get(code)

    def contact_field(self, contact_id: str, name: str, settings: Mapping[str, Any]) -> Any:
        code = settings["custom_fields"]["contact"][name]
        (contact,) = [c for c in self.portal()["contacts"] if str(c["id"]) == contact_id]
        return contact["fields"].get(code)

    def timeline(self, bridge_ids: Iterable[str]) -> list[VendorEntry]:
        wanted = {hashlib.sha256(b.encode()).hexdigest()[:12]: b for b in bridge_ids}
        out = []
        for comment in self.comments():
            text = str(comment.get("COMMENT") or "")
            match = MARKER.search(reveal_markers(text))
            if not match or match.group(1) not in wanted:
                continue
            seq, ms = match.group(2), match.group(3)
            out.append(
                VendorEntry(
                    bridge_id=wanted[match.group(1)],
                    occurred_at=dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC),
                    sequence=int(seq) if seq else None,
                    text=text,
                )
            )
        return out

    def chat_messages(self, external_ids: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(external_ids)
        return [
            dict(message, chat=chat)
            for chat in self.portal()["chats"]
            for message in chat["messages"]
            if message["external_id"] in wanted
        ]

    def setup_fingerprint(self) -> Hashable:
        portal = self.portal()
        bindings = tuple(sorted((b["event"], b["handler"]) for b in portal["event_bindings"]))
        connectors = tuple(
            sorted(
                (c["ID"], c["NAME"], tuple((x["line"], x["active"]) for x in c["lines"]))
                for c in portal["connectors"]
            )
        )
        fields = tuple(
            sorted((k, f.get("FIELD_NAME")) for k, v in portal["user_fields"].items() for f in v)
        )
        return bindings, connectors, fields

    def fire_reply(self, contact: CrmRef, text: str) -> None:
        conversation = self.conversation_of(self.entity_of_contact(contact))
        self.control("/_reply", {"conversation": conversation, "text": text})

    def delivery_status(self, crm_message_id: str) -> str | None:
        chat_id, _, message_id = crm_message_id.partition(":")
        status = None
        for chat in self.portal()["chats"]:
            for message in chat["messages"]:
                if str(chat["id"]) == chat_id and str(message["id"]) == message_id:
                    if message["delivered"]:
                        status = "sent"
        for comment in self.comments():
            if f"(message {crm_message_id})" in str(comment.get("COMMENT") or ""):
                status = "failed"
        return status


class _B24Contract(CrmAdapterContract):
    """Shared fixtures of both modes."""

    app_mode: ClassVar[bool] = False
    reply_names_recipient = False  # the event names our chat (conversation), not the user

    @pytest.fixture
    def bitrix24(self) -> Iterator[RunningServer]:
        app = create_app(
            {
                # app.info CODE of a local app is its client id (app-info.md's
                # older example: "local.56017020f07e17.98523769")
                "app": {"code": DEMO_CLIENT_ID},
                "events_for_rest_changes": False,
                "event_delivery": "inline",
            }
        )
        with serve_wsgi(app) as server:
            yield server

    @pytest.fixture
    def app_settings(self, bitrix24: RunningServer) -> dict[str, str]:
        return {
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "auth_base": f"{bitrix24.url}/oauth",
            "allowed_hosts": "127.0.0.1:*",
            "channel_title": "CRM bridge",
        }

    @pytest.fixture
    def app(self, app_settings: dict[str, str]) -> Bitrix24App:
        """The app settings as the core hands them to the class methods."""
        return load(Bitrix24App, app_settings, strict=True)

    @pytest.fixture
    def bucket(self) -> LocalBucket:
        return LocalBucket()

    @pytest.fixture
    def installed(self, bitrix24: RunningServer, app: Bitrix24App) -> Installed:
        if not self.app_mode:
            hook = f"{bitrix24.url}/{DEMO_DOMAIN}/rest/{DEMO_WEBHOOK_USER}/{DEMO_WEBHOOK_CODE}/"
            return Installed(None, {"type": "webhook", "url": hook})
        install_receiver = Receiver()
        with serve_wsgi(install_receiver) as server:
            install_receiver.url = f"{server.url}/webhooks/crm/bitrix24/install"
            answer = requests.post(
                f"{bitrix24.url}/_install", json={"handler": install_receiver.url}, timeout=15
            )
            assert answer.status_code == 200, answer.text
            (event,) = install_receiver.wait_for(1)
        installed = Bitrix24Adapter.install_event(app, event, http=HttpClient())
        assert installed is not None
        assert installed.account_id == DEMO_MEMBER_ID
        assert installed.settings["domain"] == DEMO_DOMAIN
        return installed

    @pytest.fixture
    def store(self, installed: Installed) -> Credentials:
        return Credentials(dict(installed.credentials))

    @pytest.fixture
    def make_adapter(
        self,
        app_settings: dict[str, str],
        installed: Installed,
        store: Credentials,
        receiver: Receiver,
        bucket: LocalBucket,
    ) -> Callable[..., Bitrix24Adapter]:
        def make(settings: Mapping[str, Any], *, inbox: bool | None = None) -> Bitrix24Adapter:
            stored = {**installed.settings, **settings}
            load(Bitrix24Settings, stored, strict=True)  # only real settings
            account = CrmAccountInfo(
                tenant_id=1,
                kind="bitrix24",
                account_id=installed.account_id,
                settings=stored,
                app=app_settings,
                webhook_url=receiver.url,
                # the mapping's: Open Lines on in the app mode
                inbox=self.app_mode if inbox is None else inbox,
            )
            adapter = Bitrix24Adapter(account, store, HttpClient(limiter=bucket))
            store.refresher = adapter.refresh_credentials
            return adapter

        return make

    @pytest.fixture
    def vendor(
        self,
        bitrix24: RunningServer,
        bucket: LocalBucket,
        make_adapter: Callable[[Mapping[str, Any]], Bitrix24Adapter],
    ) -> B24Vendor:
        return B24Vendor(bitrix24.url, bucket, make_adapter({}).limit().key)

    @pytest.fixture
    def channel_links(self) -> list[ChannelLink]:
        return [LINK]

    @pytest.fixture
    def setup_result(
        self,
        make_adapter: Callable[..., Bitrix24Adapter],
        channel_links: list[ChannelLink],
        mapping_properties: Mapping[str, list[str]],
    ) -> SetupResult:
        return make_adapter({}).setup(channel_links, mapping_properties)

    @pytest.fixture
    def settings(self, setup_result: SetupResult) -> dict[str, Any]:
        """What ``setup()`` returned: the core stores its settings on the tenant."""
        assert setup_result.routes == ()  # every event goes to the tenant's own URL
        return dict(setup_result.settings)

    @pytest.fixture
    def mapping_properties(self) -> Mapping[str, list[str]]:
        return {"lead": ["utm_source"], "contact": [LIVE_FIELD]}

    @pytest.fixture
    def make_entry(self, vendor: B24Vendor) -> Callable[..., TimelineEntry]:
        def make(
            bridge_id: str,
            *,
            contact: CrmRef,
            entity: CrmRef | None,
            sequence: int | None,
            occurred_at: dt.datetime,
            text: str,
            maybe_written: bool = False,
        ) -> TimelineEntry:
            # as the core builds it: the lead's conversation is the entry's
            conversation = (vendor.conversation_of(entity) if entity else None) or (
                f"conv-of-{contact.id}"
            )
            return TimelineEntry(
                bridge_id=bridge_id,
                conversation_uid=conversation,
                channel_kind=LINK.kind,
                channel_account=LINK.id,
                direction="in",
                kind=MessageKind.TEXT,
                text=text,
                occurred_at=occurred_at,
                contact=contact,
                entity=entity,
                sequence=sequence,
                sender_name="Ann Contract",
                sender_identifier=f"tg-{contact.id}",
                maybe_written=maybe_written,
                timeline="note",
                inbox=self.app_mode,
                channel_title=LINK.title,
                language="en",
            )

        return make

    # -- Bitrix24 specifics common to both modes --------------------------------

    def test_closed_or_deleted_entities_are_not_open(
        self, adapter: Bitrix24Adapter, vendor: B24Vendor
    ) -> None:
        _, junk, _ = self.open_conversation(adapter, LINK.kind, {})
        _, gone, _ = self.open_conversation(adapter, LINK.kind, {})
        vendor.control("/_lead_status", {"lead_id": int(junk.id), "status_id": "JUNK"})
        vendor.control("/_delete", {"entity": "lead", "id": int(gone.id)})
        assert adapter.entity_is_open(junk) is False
        assert adapter.entity_is_open(gone) is False

    def test_deals_open_in_the_mappings_pipeline(
        self, adapter: Bitrix24Adapter, vendor: B24Vendor, channel_kind: str
    ) -> None:
        contact = adapter.create_contact(
            self.contact_draft(channel_kind, identity=self.uid("u"))
        ).ref
        draft = EntityDraft(
            object_type="deal",
            conversation_uid=self.uid("conv"),
            contact=contact,
            name="Deal from Telegram",
            pipeline="1",
            stage="C1:NEW",
            owner_id="2",
        )
        deal = adapter.create_entity(draft)
        fields = vendor.entity(deal)["fields"]
        assert (fields["CATEGORY_ID"], fields["STAGE_ID"]) == ("1", "C1:NEW")
        assert fields["ASSIGNED_BY_ID"] == "2" and fields["CONTACT_ID"] == contact.id
        assert adapter.find_entity(draft) == deal
        assert adapter.entity_is_open(deal) is True
        vendor.control("/_deal_stage", {"deal_id": int(deal.id), "stage_id": "C1:WON"})
        assert adapter.entity_is_open(deal) is False

    def test_owners(self, adapter: Bitrix24Adapter) -> None:
        owners = adapter.list_owners()
        assert {o.name for o in owners} >= {"Klaus Weber", "Maria Schmidt"}
        assert all(o.active for o in owners)

    def test_todo_is_written_once(self, adapter: Bitrix24Adapter, vendor: B24Vendor) -> None:
        contact, lead, conversation = self.open_conversation(adapter, LINK.kind, {})
        draft = TaskDraft(
            bridge_id=f"{conversation}:task",
            subject="Reply to Ann",
            body="Is the blue one in stock?",
            due_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            contact=contact,
            entity=lead,
            owner_id="2",
        )
        first = adapter.create_task(draft)
        todos = vendor.entity(lead)["timeline"]["activities"]
        assert [str(t["id"]) for t in todos] == [first.id]
        assert todos[0]["responsibleId"] == 2 and todos[0]["title"] == "Reply to Ann"
        assert adapter.create_task(replace(draft, maybe_written=True)) == first

    def test_task_kind_task(
        self,
        make_adapter: Callable[..., Bitrix24Adapter],
        settings: dict[str, Any],
        vendor: B24Vendor,
    ) -> None:
        adapter = make_adapter({**settings, "task_kind": "task"})
        contact, lead, conversation = self.open_conversation(adapter, LINK.kind, {})
        ref = adapter.create_task(
            TaskDraft(
                bridge_id=f"{conversation}:task",
                subject="Call Ann back",
                body="about the blue one",
                due_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
                contact=contact,
                entity=lead,
                owner_id="2",
            )
        )
        (task,) = [t for t in vendor.portal()["tasks"] if str(t["id"]) == ref.id]
        assert sorted(task["UF_CRM_TASK"]) == sorted([f"L_{lead.id}", f"C_{contact.id}"])

    def test_contact_gets_new_values_added(
        self, adapter: Bitrix24Adapter, vendor: B24Vendor, channel_kind: str
    ) -> None:
        formatted, e164 = self.phone()
        seeded = vendor.seed_contact(name="Rep Entered", phone=formatted)
        email = f"{self.uid('ann')}@example.com"
        draft = self.contact_draft(channel_kind, identity=self.uid("user"), phone=e164, email=email)
        adapter.update_contact(CrmRef("contact", seeded), draft)
        multi = vendor.entity(CrmRef("contact", seeded))["multifields"]
        assert [m["VALUE"] for m in multi["PHONE"]] == [formatted]  # kept, not duplicated
        assert [m["VALUE"] for m in multi["EMAIL"]] == [email]
        assert [(m["VALUE_TYPE"], m["VALUE"]) for m in multi["IM"]] == [
            ("TELEGRAM", draft.lookup.identities[channel_kind])
        ]
        found = adapter.find_contact(ContactLookup(identities=dict(draft.lookup.identities)))
        assert found is not None and found.ref.id == seeded

    def test_calls_per_message(
        self,
        make_adapter: Callable[[Mapping[str, Any]], Bitrix24Adapter],
        settings: dict[str, Any],
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        """Measured over HTTP once the contact and lead exist: a live
        conversation with one and with two messages per drain, and a backlog."""
        opener = make_adapter(settings)
        contact, lead, _ = self.open_conversation(opener, LINK.kind, {})
        figures: dict[str, float] = {}
        for per_drain in (1, 2):
            calls = 0
            for drain in range(6):
                adapter = make_adapter(settings)
                adapter.append_entries(
                    [
                        make_entry(
                            self.uid("msg"),
                            contact=contact,
                            entity=lead,
                            sequence=drain * 10 + i,
                            occurred_at=T0 + dt.timedelta(seconds=drain * 10 + i),
                            text=f"live {drain}.{i}",
                        )
                        for i in range(per_drain)
                    ]
                )
                calls += adapter.http.calls
            figures[f"live x{per_drain}"] = calls / (6 * per_drain)
        adapter = make_adapter(settings)
        adapter.append_entries(
            [
                make_entry(
                    self.uid("msg"),
                    contact=contact,
                    entity=lead,
                    sequence=100 + i,
                    occurred_at=T0 + dt.timedelta(minutes=1, seconds=i),
                    text=f"backlog {i}",
                )
                for i in range(50)
            ]
        )
        figures["backlog 50"] = adapter.http.calls / 50
        print(f"Bitrix24 {type(self).__name__}: requests/message {figures}")
        assert figures["live x1"] == 1.0 and figures["live x2"] == 0.5
        assert adapter.http.calls == (2 if self.app_mode else 1)  # 48 per batch with Open Lines

    def test_a_new_customer_through_the_core_hooks(
        self,
        make_adapter: Callable[[Mapping[str, Any]], Bitrix24Adapter],
        settings: dict[str, Any],
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
    ) -> None:
        """What the sync job spends today on a first message: look up (one
        batch), create contact, create lead, to-do, the drain."""
        adapter = make_adapter(settings)
        formatted, e164 = self.phone()
        draft = self.contact_draft(
            channel_kind, identity=self.uid("user"), phone=e164, email=f"{self.uid('a')}@ex.com"
        )
        assert adapter.find_contact(draft.lookup) is None
        contact = adapter.create_contact(draft).ref
        conversation = self.uid("conv")
        lead = adapter.create_entity(
            EntityDraft("lead", conversation, contact, "Telegram: Ann", owner_id="2")
        )
        adapter.create_task(
            TaskDraft(
                bridge_id=f"{conversation}:task",
                subject="Reply",
                body="hi",
                due_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                contact=contact,
                entity=lead,
                owner_id="2",
            )
        )
        adapter.append_entries(
            [
                make_entry(
                    self.uid("msg"),
                    contact=contact,
                    entity=lead,
                    sequence=1,
                    occurred_at=T0,
                    text="first",
                )
            ]
        )
        print(f"Bitrix24 {type(self).__name__}: new customer via hooks {adapter.http.calls}")
        assert adapter.http.calls == 5

    def test_a_new_conversation_in_one_request(
        self,
        make_adapter: Callable[[Mapping[str, Any]], Bitrix24Adapter],
        settings: dict[str, Any],
        vendor: B24Vendor,
        channel_kind: str,
    ) -> None:
        adapter = make_adapter(settings)
        conversation = self.uid("conv")
        draft = self.contact_draft(channel_kind, identity=self.uid("user"))
        entries = [
            TimelineEntry(
                bridge_id=self.uid("msg"),
                conversation_uid=conversation,
                channel_kind=LINK.kind,
                channel_account=LINK.id,
                direction="in",
                kind=MessageKind.TEXT,
                text=f"first words {i}",
                occurred_at=T0 + dt.timedelta(seconds=i),
                contact=None,
                sequence=i,
                sender_name="Ann Contract",
                sender_identifier="tg-new",
                timeline="note",
                inbox=self.app_mode,
                channel_title=LINK.title,
            )
            for i in range(2)
        ]
        opened = adapter.open_conversation(
            contact=draft,
            entity=EntityDraft(
                object_type="lead",
                conversation_uid=conversation,
                contact=CrmRef("contact", "0"),
                name="Telegram: Ann",
                owner_id="2",
            ),
            task=TaskDraft(
                bridge_id=f"{conversation}:task",
                subject="Reply to Ann",
                body="first words",
                due_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                contact=CrmRef("contact", "0"),
                owner_id="2",
            ),
            entries=entries,
        )
        assert adapter.http.calls == 1
        lead = vendor.entity(opened.entity)
        assert lead["fields"]["CONTACT_ID"] == opened.contact.ref.id
        assert lead["fields"]["ORIGIN_ID"] == conversation
        assert [t["id"] for t in lead["timeline"]["activities"]] == [int(opened.task.id)]  # type: ignore[union-attr]
        assert len(vendor.timeline(e.bridge_id for e in entries)) == 2
        # and everything it made can be found again the ordinary way
        found = adapter.find_contact(draft.lookup)
        assert found is not None and found.ref == opened.contact.ref
        assert (
            adapter.find_entity(EntityDraft("lead", conversation, opened.contact.ref, "again"))
            == opened.entity
        )


class TestBitrix24WebhookContract(_B24Contract):
    """CRM only through an incoming webhook: no events, no Open Lines."""

    app_mode = False

    def test_rep_reply_comes_back_signed_and_parsed(  # type: ignore[override]
        self, adapter: Bitrix24Adapter, vendor: B24Vendor
    ) -> None:
        """An incoming webhook receives no events (FACTS 2.6): whatever
        reaches the tenant's URL is refused."""
        genuine_looking = WebhookRequest(
            method="POST",
            url="https://bridge.example/webhooks/crm/bitrix24/k",
            headers={"content-type": "application/x-www-form-urlencoded"},
            body=b"event=ONAPPUNINSTALL&auth%5Bapplication_token%5D=x&auth%5Bmember_id%5D=y",
        )
        with pytest.raises(SignatureError, match="incoming webhook"):
            adapter.verify_webhook(genuine_looking)

    def test_forged_webhooks_are_refused(self, adapter: Bitrix24Adapter) -> None:  # type: ignore[override]
        with pytest.raises(SignatureError):
            adapter.verify_webhook(
                WebhookRequest(method="POST", url="u", headers={}, body=b"event=ONCRMLEADUPDATE")
            )

    def test_delivery_report_shows_in_the_crm(self, adapter: Bitrix24Adapter) -> None:  # type: ignore[override]
        """No reply can come from a webhook tenant: nothing to report, no call."""
        adapter.report_delivery(DeliveryReport("1:2", DeliveryStatus.SENT))
        assert adapter.http.calls == 0

    def test_open_lines_need_the_app_install(
        self, make_adapter: Callable[..., Bitrix24Adapter], channel_links: list[ChannelLink]
    ) -> None:
        with pytest.raises(PermanentError, match="Open Lines need the app install"):
            make_adapter({}, inbox=True).setup(channel_links, {})
        adapter = make_adapter({})
        # what Bitrix24 itself answers an incoming webhook (403 WRONG_AUTH_TYPE)
        with pytest.raises(PermanentError, match="Open Lines need the app install"):
            adapter.api.call("imconnector.list")

    def test_a_portal_that_strips_zero_width_characters(
        self,
        make_adapter: Callable[[Mapping[str, Any]], Bitrix24Adapter],
        settings: dict[str, Any],
        bitrix24: RunningServer,
        vendor: B24Vendor,
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        """Whether Bitrix24 keeps zero-width characters is UNCONFIRMED. If it
        drops them, the hidden marker is lost: a retry cannot find its
        comment, writes it again (shown twice, never lost) with the visible
        tag, and ``marker_style: visible`` keeps retries exact."""
        requests.post(
            f"{bitrix24.url}/_config", json={"strip_zero_width": True}, timeout=10
        ).raise_for_status()
        adapter = make_adapter(settings)
        contact, lead, _ = self.open_conversation(adapter, LINK.kind, {})

        def copies(text: str) -> list[str]:
            return [
                str(c["COMMENT"])
                for c in vendor.comments()
                if str(c["ENTITY_ID"]) == lead.id and text in str(c["COMMENT"])
            ]

        entry = make_entry(
            self.uid("msg"),
            contact=contact,
            entity=lead,
            sequence=1,
            occurred_at=T0,
            text="first question",
        )
        adapter.append_entries([entry])
        (stored,) = copies("first question")
        assert reveal_markers(stored) == stored  # the marker is gone
        retry = make_adapter(settings)  # the next job: a new adapter
        retry.append_entries([replace(entry, maybe_written=True)])
        again = copies("first question")
        assert len(again) == 2 and MARKER.search(again[1]) is None
        assert f"[bridge:{hashlib.sha256(entry.bridge_id.encode()).hexdigest()[:12]}]" in again[1]
        retry.append_entries([replace(entry, maybe_written=True)])
        assert len(copies("first question")) == 2  # found from now on

        second = replace(entry, bridge_id=self.uid("msg"), text="second question", sequence=2)
        make_adapter({**settings, "marker_style": "visible"}).append_entries([second])
        make_adapter({**settings, "marker_style": "visible"}).append_entries(
            [replace(second, maybe_written=True)]
        )
        (shown,) = copies("second question")
        assert what_people_see(shown).split("\n")[0].endswith("]")  # the short tag, once


class TestBitrix24AppContract(_B24Contract):
    """App install: events to the tenant's URL, Open Lines connector."""

    app_mode = True

    def forgeries(self, request: WebhookRequest) -> list[WebhookRequest]:
        """Events carry no signature: ``auth[application_token]`` is the proof
        (FACTS 2.5). A wrong one, none, and another portal's are refused."""
        body = request.body.decode()
        token = re.search(r"auth%5Bapplication_token%5D=([^&]+)", body)
        assert token is not None
        wrong = body.replace(token.group(0), "auth%5Bapplication_token%5D=" + "0" * 32)
        missing = body.replace(token.group(0), "")
        other_portal = body.replace(DEMO_MEMBER_ID, "f" * 32)
        return [
            replace(request, body=wrong.encode()),
            replace(request, body=missing.encode()),
            replace(request, body=other_portal.encode()),
        ]

    def test_delivery_report_shows_in_the_crm(  # type: ignore[override]
        self,
        adapter: Bitrix24Adapter,
        vendor: B24Vendor,
        receiver: Receiver,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> None:
        """Delivered -> ``imconnector.send.status.delivery``. Bitrix24 has no
        "failed" status: a failed reply is a comment on the conversation's lead."""
        _, request = self._reply(
            adapter, vendor, receiver, make_entry, channel_kind, entity_defaults
        )
        (reply,) = [e for e in adapter.parse_webhook(request) if e.kind is CrmEventKind.REPLY]
        adapter.report_delivery(
            DeliveryReport(
                reply.external_id, DeliveryStatus.SENT, crm_thread_id=reply.crm_thread_id
            )
        )
        assert vendor.delivery_status(reply.external_id) == "sent"
        assert vendor.portal()["unmatched_receipts"] == []
        adapter.report_delivery(
            DeliveryReport(
                reply.external_id,
                DeliveryStatus.FAILED,
                error="blocked by the user",
                crm_thread_id=reply.crm_thread_id,
            )
        )
        assert vendor.delivery_status(reply.external_id) == "failed"

    def test_chat_messages_land_once_in_open_lines(
        self,
        adapter: Bitrix24Adapter,
        vendor: B24Vendor,
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        contact, lead, conversation = self.open_conversation(adapter, LINK.kind, {})
        entries = [
            make_entry(
                self.uid("msg"),
                contact=contact,
                entity=lead,
                sequence=i,
                occurred_at=T0 + dt.timedelta(seconds=i),
                text=f"chat {i}",
            )
            for i in range(1, 4)
        ]
        first = adapter.append_entries(entries)
        assert all(len(refs) == 2 for refs in first.values())
        messages = vendor.chat_messages(e.bridge_id for e in entries)
        assert sorted(m["external_id"] for m in messages) == sorted(e.bridge_id for e in entries)
        chat = messages[0]["chat"]
        assert chat["external_chat_id"] == conversation
        assert chat["external_user_id"] == f"tg-{contact.id}"
        assert chat["crm"] is None  # the tracker stays off: no second lead
        assert [m["date"] for m in messages] == [int(e.occurred_at.timestamp()) for e in entries]
        again = adapter.append_entries([replace(e, maybe_written=True) for e in entries])
        assert again == first
        assert len(vendor.chat_messages(e.bridge_id for e in entries)) == 3

    def test_crm_events_come_back(
        self,
        adapter: Bitrix24Adapter,
        vendor: B24Vendor,
        receiver: Receiver,
        bitrix24: RunningServer,
    ) -> None:
        contact, lead, _ = self.open_conversation(adapter, LINK.kind, {})
        vendor.control("/_lead_status", {"lead_id": int(lead.id), "status_id": "JUNK"})
        vendor.control("/_delete", {"entity": "contact", "id": int(contact.id)})
        requests_ = receiver.wait_for(2)
        events = []
        for request in requests_:
            adapter.verify_webhook(request)
            events.extend(adapter.parse_webhook(request))
        closed = [e for e in events if e.kind is CrmEventKind.ENTITY_CLOSED]
        assert closed and closed[0].entity == lead
        removed = [e for e in events if e.kind is CrmEventKind.CONTACT_REMOVED]
        assert removed and removed[0].contact == contact
        answer = requests.post(f"{bitrix24.url}/_uninstall", json={}, timeout=15)
        assert answer.status_code == 200, answer.text
        uninstall = receiver.wait_for(3)[-1]
        adapter.verify_webhook(uninstall)
        assert [e.kind for e in adapter.parse_webhook(uninstall)] == [CrmEventKind.APP_REMOVED]

    def test_expired_token_is_refreshed_once_with_the_new_pair(
        self,
        adapter: Bitrix24Adapter,
        store: Credentials,
        bitrix24: RunningServer,
        vendor: B24Vendor,
    ) -> None:
        old_refresh = store.creds["refresh_token"]
        assert adapter.list_owners()
        assert store.refreshes == 0  # never before Bitrix24 says so
        requests.post(f"{bitrix24.url}/_clock", json={"advance": 3700}, timeout=10)
        assert adapter.list_owners()
        assert store.refreshes == 1
        assert store.creds["refresh_token"] != old_refresh
        assert store.creds["application_token"] == adapter.credentials.get()["application_token"]
        grants = requests.get(f"{bitrix24.url}/_state", timeout=10).json()["oauth"]
        print("oauth token endpoint:", grants["token_endpoint"])
        # the old refresh token died with its use (rotation, FACTS 2.5)
        with pytest.raises(AuthError):
            adapter.refresh_credentials({**store.creds, "refresh_token": old_refresh})

    def test_forged_install_events_are_refused(
        self, app: Bitrix24App, bitrix24: RunningServer, installed: Installed
    ) -> None:
        creds = installed.credentials

        def install(**auth: str) -> WebhookRequest:
            fields = {
                "event": "ONAPPINSTALL",
                "auth[access_token]": creds["access_token"],
                "auth[refresh_token]": creds["refresh_token"],
                "auth[expires_in]": "3600",
                "auth[domain]": DEMO_DOMAIN,
                "auth[client_endpoint]": creds["client_endpoint"],
                "auth[member_id]": DEMO_MEMBER_ID,
                "auth[application_token]": "forged",
            }
            fields.update({f"auth[{k}]": v for k, v in auth.items()})
            return WebhookRequest(
                method="POST",
                url="https://bridge.example/webhooks/crm/bitrix24/install",
                headers={"content-type": "application/x-www-form-urlencoded"},
                body=urlencode(fields).encode(),
            )

        # another server pretending to be the portal
        with pytest.raises(SignatureError):
            Bitrix24Adapter.install_event(
                app,
                install(client_endpoint="https://evil.example/rest/"),
                http=HttpClient(),
            )
        # a made-up token: the portal does not confirm it
        with pytest.raises(SignatureError):
            Bitrix24Adapter.install_event(app, install(access_token="x" * 32), http=HttpClient())
        # another app's credentials: app.info names someone else
        other = replace(app, client_id="local.someone.else")
        with pytest.raises(SignatureError, match="another app"):
            Bitrix24Adapter.install_event(other, install(), http=HttpClient())
