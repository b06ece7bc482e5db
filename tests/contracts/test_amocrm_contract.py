# ruff: noqa: S105, S106  (sandbox secrets)
"""The CRM adapter contract, run against the sandbox amoCRM over real HTTP,
in both ways a tenant can use amoCRM:

* **notes mode** (``inbox: false``): messages are notes on the lead; a rep
  replies with a note starting with ``@client``, which comes back through the
  account webhook (form-encoded, unsigned: the URL key is the secret);
* **chat mode** (``inbox: true``): messages also go to amoCRM's chat window
  through the Chats API (signed requests); a rep's chat reply comes back
  through the channel's signed outgoing-message hook.

The tenant installs the integration as an admin would (the adapter's
authorize URL -> the sandbox's consent form -> ``exchange_code`` with the
callback's ``referer``), then ``setup()`` creates the fields, subscribes the
account webhooks to the suite's receiver and, in chat mode, connects the
channel whose hook URL (``…/route/:scope_id``) also points at the receiver.

The sandbox's "changes made through the API fire webhooks too" switch is
off for the shared suite (the suite expects exactly the rep's webhook) and
on in ``test_own_notes_come_back_as_unknown``. Payloads are the sandbox's,
written from FACTS.md section 1 (no redistributable amoCRM fixtures exist).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
import requests

from bridge.errors import AuthError, SignatureError
from bridge.http import HttpClient
from bridge.model import (
    ChannelLink,
    CrmAccountInfo,
    CrmEventKind,
    CrmRef,
    Installed,
    MessageKind,
    SetupResult,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from bridge.schema import load
from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.amocrm.client import api_rate
from crm_adapters.amocrm.inbox import forget_chats
from crm_adapters.amocrm.sources import forget_unavailable
from sandbox.amocrm import (
    DEMO_BOT_ID,
    DEMO_CHANNEL_ID,
    DEMO_CHANNEL_SECRET,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_SUBDOMAIN,
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

REDIRECT_URI = "https://bridge.example/oauth/amocrm/callback"
LINK = ChannelLink(id="7", kind="telegram", name="@acme_support_bot", identifier="bot-4242")
# the bridge's note marker, parsed independently of the adapter's code
MARKER = re.compile(r"\[bridge:([0-9a-f]{12}):(-?\d*):(\d*)\]")
DELIVERY_WORDS = {
    "Reply sent": "sent",
    "Reply delivered": "sent",
    "Reply read": "read",
    "Reply NOT delivered": "failed",
}
AMOJO_STATUSES = {1: "sent", 2: "read", -1: "failed"}
# The contract makes many calls and checks what they do, not how fast they
# may come: the account is on a plan with a higher limit (the sandbox's
# ``per_second``, the tenant's ``rate_per_second``). The 7 per second of
# FACTS 1.4 is held by tests/sandbox/test_amocrm_sandbox.py,
# tests/unit/test_amocrm_adapter.py and the stack tests.
RATE = 50


class AmoVendor:
    """Reads the sandbox's ``GET /_state`` and acts as a rep through the
    control API (``/_note``, ``/_reply``, ...)."""

    def __init__(self, base_url: str, token: str, chat: bool, bucket: LocalBucket) -> None:
        self.base_url = base_url
        self.token = token
        self.chat = chat
        self.bucket = bucket

    def state(self) -> dict[str, Any]:
        response = requests.get(
            f"{self.base_url}/_state", params={"account": DEMO_SUBDOMAIN}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def account(self) -> dict[str, Any]:
        (account,) = self.state()["accounts"]
        return account

    def control(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.base_url}{path}", json=dict(body), timeout=15)
        assert response.status_code == 200, response.text
        return response.json()

    def seed_contact(self, *, name: str, phone: str | None = None, email: str | None = None) -> str:
        # a rep typing the contact into amoCRM: amoCRM's own API
        values = []
        if phone:
            values.append(
                {"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}
            )
        if email:
            values.append(
                {"field_code": "EMAIL", "values": [{"value": email, "enum_code": "WORK"}]}
            )
        item: dict[str, Any] = {"name": name}
        if values:
            item["custom_fields_values"] = values
        # the same integration token: the same 7 requests per second
        self.bucket.acquire(f"amocrm:{self.account()['id']}:api", api_rate(RATE))
        response = requests.post(
            f"{self.base_url}/{DEMO_SUBDOMAIN}/api/v4/contacts",
            json=[item],
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["_embedded"]["contacts"][0]["id"])

    def lead(self, lead_id: str) -> dict[str, Any]:
        (lead,) = [x for x in self.account()["leads"] if str(x["id"]) == str(lead_id)]
        return lead

    def lead_conversation(self, lead_id: str) -> str | None:
        for field in self.lead(lead_id)["custom_fields_values"] or []:
            if field.get("field_name") == "Bridge conversation":
                return str(field["values"][0]["value"])
        return None

    def contact_lead(self, contact_id: str) -> str:
        (contact,) = [c for c in self.account()["contacts"] if str(c["id"]) == str(contact_id)]
        return str(max(contact["leads"]))

    def contact_notes(self, contact: CrmRef) -> list[str]:
        return [
            str((note.get("params") or {}).get("text") or "")
            for note in self.account()["notes"]
            if note.get("entity_type") == "contacts" and str(note.get("entity_id")) == contact.id
        ]

    def contact_exists(self, contact_id: str) -> bool:
        return any(
            str(c["id"]) == contact_id and not c.get("is_deleted")
            for c in self.account()["contacts"]
        )

    def entity_field(self, entity: CrmRef, name: str | None, settings: Mapping[str, Any]) -> Any:
        (lead,) = [x for x in self.account()["leads"] if str(x["id"]) == entity.id]
        if name is None:
            return lead["responsible_user_id"]
        field_id = settings["custom_fields"]["leads"][name]
        for field in lead.get("custom_fields_values") or []:
            if field.get("field_id") == field_id:
                return field["values"][0]["value"]
        return None

    def contact_field(self, contact_id: str, name: str, settings: Mapping[str, Any]) -> Any:
        field_id = settings["custom_fields"]["contacts"][name]
        (contact,) = [c for c in self.account()["contacts"] if str(c["id"]) == contact_id]
        for field in contact.get("custom_fields_values") or []:
            if field.get("field_id") == field_id:
                return field["values"][0]["value"]
        return None

    def timeline(self, bridge_ids: Iterable[str]) -> list[VendorEntry]:
        wanted = {hashlib.sha256(b.encode()).hexdigest()[:12]: b for b in bridge_ids}
        out = []
        for note in self.account()["notes"]:
            text = (note.get("params") or {}).get("text") or ""
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

    def chat_messages(self, msgids: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(msgids)
        return [
            dict(message, chat=chat)
            for chat in self.account()["chats"]
            for message in chat["messages"]
            if message["ref_id"] in wanted
        ]

    def setup_fingerprint(self) -> Hashable:
        state = self.state()
        account = state["accounts"][0]
        fields = tuple(
            sorted(
                (entity, field["name"], field["type"])
                for entity, items in account["custom_fields"].items()
                for field in items
            )
        )
        hooks = tuple(
            sorted((w["destination"], tuple(sorted(w["settings"]))) for w in account["webhooks"])
        )
        connections = tuple(
            sorted((c.get("scope_id"), bool(c.get("connected"))) for c in state["connections"])
        )
        # the chats' named sources (chat mode): one per channel account, made once
        sources = tuple(
            sorted((s["external_id"], s["name"], s["pipeline_id"]) for s in account["sources"])
        )
        return fields, hooks, connections, sources

    def fire_reply(self, contact: CrmRef, text: str) -> None:
        if self.chat:
            self.control("/_reply", {"contact_id": int(contact.id), "text": text})
        else:
            lead_id = int(self.contact_lead(contact.id))
            self.control("/_note", {"lead_id": lead_id, "text": f"@client {text}"})

    def delivery_status(self, crm_message_id: str) -> str | None:
        if crm_message_id.startswith("note:"):
            note_id = crm_message_id.rsplit(":", 1)[-1]
            found = None
            for note in self.account()["notes"]:
                text = (note.get("params") or {}).get("text") or ""
                if f"(note {note_id})" not in text:
                    continue
                for words, status in DELIVERY_WORDS.items():
                    if text.startswith(words):
                        found = status
            return found
        for chat in self.account()["chats"]:
            for message in chat["messages"]:
                if message["id"] == crm_message_id and message["delivery_statuses"]:
                    return AMOJO_STATUSES[message["delivery_statuses"][-1]["status"]]
        return None


class _AmoContract(CrmAdapterContract):
    """Shared fixtures of both modes."""

    chat_mode: ClassVar[bool] = False

    @pytest.fixture
    def amocrm(self) -> Iterator[RunningServer]:
        forget_chats()
        app = create_app(
            {
                "integration": {"redirect_uri": REDIRECT_URI},
                "webhooks_on_api_changes": False,
                "per_second": RATE,
            }
        )
        with serve_wsgi(app) as server:
            yield server

    @pytest.fixture
    def app_settings(self, amocrm: RunningServer) -> dict[str, str]:
        return {
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "auth_base": f"{amocrm.url}/www",
            "amojo_base": f"{amocrm.url}/amojo",
            "channel_id": DEMO_CHANNEL_ID,
            "channel_secret": DEMO_CHANNEL_SECRET,
            "bot_id": DEMO_BOT_ID,
        }

    @pytest.fixture
    def bucket(self) -> LocalBucket:
        return LocalBucket()

    @pytest.fixture
    def api_base(self, amocrm: RunningServer) -> str:
        return f"{amocrm.url}/{{subdomain}}"

    @pytest.fixture
    def installed(
        self, amocrm: RunningServer, app_settings: dict[str, str], api_base: str
    ) -> Installed:
        """An admin installs the integration: consent -> code -> tokens."""
        app = load(AmoCrmAdapter.App, app_settings, strict=True)  # as the core reads it
        url = AmoCrmAdapter.install_url(app, redirect_uri=REDIRECT_URI, state="s-1")
        page = requests.get(url, timeout=10)
        assert page.status_code == 200, page.text
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        account_id = re.search(r"name='account_id' value='(\d+)'", page.text)
        assert account_id is not None
        consent = requests.post(
            f"{amocrm.url}/www/oauth",
            data={
                **query,
                "redirect_uri": REDIRECT_URI,
                "has_state": "1",
                "account_id": account_id.group(1),
                "decision": "grant",
            },
            allow_redirects=False,
            timeout=10,
        )
        assert consent.status_code == 302, consent.text
        params = {k: v[0] for k, v in parse_qs(urlsplit(consent.headers["Location"]).query).items()}
        assert params["state"] == "s-1" and params["referer"].endswith(".amocrm.ru")
        installed = AmoCrmAdapter.exchange_code(
            app,
            code=params["code"],
            redirect_uri=REDIRECT_URI,
            http=HttpClient(api_base),
            params=params,
        )
        assert installed.account_id == account_id.group(1)
        assert installed.settings["subdomain"] == DEMO_SUBDOMAIN
        return installed

    @pytest.fixture
    def store(self, installed: Installed) -> Credentials:
        return Credentials(dict(installed.credentials))

    @pytest.fixture
    def make_adapter(
        self,
        amocrm: RunningServer,
        app_settings: dict[str, str],
        api_base: str,
        installed: Installed,
        store: Credentials,
        receiver: Receiver,
        bucket: LocalBucket,
    ) -> Callable[[Mapping[str, Any]], AmoCrmAdapter]:
        requests.post(
            f"{amocrm.url}/_channel",
            json={"hook_url": f"{receiver.url}/route/:scope_id"},
            timeout=10,
        ).raise_for_status()

        def make(settings: Mapping[str, Any]) -> AmoCrmAdapter:
            account = CrmAccountInfo(
                tenant_id=1,
                kind="amocrm",
                account_id=installed.account_id,
                settings={**installed.settings, "rate_per_second": RATE, **settings},
                app=app_settings,
                api_base=api_base,
                webhook_url=receiver.url,
                inbox=self.chat_mode,
            )
            adapter = AmoCrmAdapter(account, store, HttpClient(api_base, limiter=bucket))
            store.refresher = adapter.refresh_credentials
            return adapter

        return make

    @pytest.fixture
    def vendor(self, amocrm: RunningServer, store: Credentials, bucket: LocalBucket) -> AmoVendor:
        return AmoVendor(amocrm.url, store.creds["access_token"], self.chat_mode, bucket)

    @pytest.fixture
    def channel_links(self) -> list[ChannelLink]:
        return [LINK]

    @pytest.fixture
    def mapping_properties(self) -> Mapping[str, list[str]]:
        return {"lead": ["utm_source"], "contact": [LIVE_FIELD]}

    @pytest.fixture
    def make_entry(self, vendor: AmoVendor) -> Callable[..., TimelineEntry]:
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
            conversation = (vendor.lead_conversation(entity.id) if entity else None) or (
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
                inbox=self.chat_mode,
                channel_title="Telegram",
            )

        return make

    # -- amoCRM specifics common to both modes ------------------------------

    def test_setup_routes_the_chat_hook_to_the_tenant(
        self,
        make_adapter: Callable[[Mapping[str, Any]], AmoCrmAdapter],
        channel_links: list[ChannelLink],
        mapping_properties: Mapping[str, list[str]],
        settings: dict[str, Any],
    ) -> None:
        """The channel's hook URL ends in the scope id (FACTS 1.13): with the
        chat, it is the tenant's route, every time the setup runs."""
        again = make_adapter(settings).setup(channel_links, mapping_properties)
        assert isinstance(again, SetupResult)
        if self.chat_mode:
            assert settings["scope_id"] and again.routes == (settings["scope_id"],)
        else:
            assert again.routes == () and "scope_id" not in settings

    def test_a_closed_or_deleted_lead_is_not_open(
        self, adapter: AmoCrmAdapter, vendor: AmoVendor
    ) -> None:
        _, won, _ = self.open_conversation(adapter, LINK.kind, {})
        _, gone, _ = self.open_conversation(adapter, LINK.kind, {})
        vendor.control("/_lead_status", {"lead_id": int(won.id), "status_id": 142})
        vendor.control("/_delete_lead", {"lead_id": int(gone.id)})
        assert adapter.entity_is_open(won) is False
        assert adapter.entity_is_open(gone) is False

    def test_owners(self, adapter: AmoCrmAdapter) -> None:
        owners = adapter.list_owners()
        assert {o.name for o in owners} >= {"Anna Admin", "Boris Manager"}

    def test_task_is_written_once(self, adapter: AmoCrmAdapter, vendor: AmoVendor) -> None:
        contact, lead, conversation = self.open_conversation(adapter, LINK.kind, {})
        owner = adapter.list_owners()[0].id
        draft = TaskDraft(
            bridge_id=f"{conversation}:task",
            subject="Reply to Ann",
            body="Is the blue one in stock?",
            due_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            contact=contact,
            entity=lead,
            owner_id=owner,
        )
        first = adapter.create_task(draft)
        assert adapter.create_task(replace(draft, maybe_written=True)) == first
        tasks = [t for t in vendor.account()["tasks"] if t["entity_id"] == int(lead.id)]
        assert [str(t["id"]) for t in tasks] == [first.id]

    def test_calls_per_message(
        self,
        make_adapter: Callable[[Mapping[str, Any]], AmoCrmAdapter],
        settings: dict[str, Any],
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        """Measured over HTTP once the contact and lead exist: a live
        conversation (one job, one adapter, per message) and a backlog."""
        opener = make_adapter(settings)
        contact, lead, _ = self.open_conversation(opener, LINK.kind, {})
        t0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
        live = 0
        for i in range(10):
            adapter = make_adapter(settings)
            adapter.append_entries(
                [
                    make_entry(
                        self.uid("msg"),
                        contact=contact,
                        entity=lead,
                        sequence=i,
                        occurred_at=t0 + dt.timedelta(seconds=i),
                        text=f"live {i}",
                    )
                ]
            )
            live += adapter.http.calls
        adapter = make_adapter(settings)
        adapter.append_entries(
            [
                make_entry(
                    self.uid("msg"),
                    contact=contact,
                    entity=lead,
                    sequence=100 + i,
                    occurred_at=t0 + dt.timedelta(minutes=1, seconds=i),
                    text=f"backlog {i}",
                )
                for i in range(50)
            ]
        )
        backlog = adapter.http.calls
        print(
            f"amoCRM {type(self).__name__}: live {live / 10:.2f} calls/message, "
            f"backlog of 50: {backlog} calls ({backlog / 50:.2f}/message)"
        )
        if self.chat_mode:
            # 1 note + 1 chat message each; the chat is created and linked once
            assert live == 10 * 2 + 2
            assert backlog == 1 + 50
        else:
            assert live / 10 <= 1.1
            assert backlog == 1

    def test_expired_token_is_refreshed_with_the_new_pair(
        self, adapter: AmoCrmAdapter, store: Credentials
    ) -> None:
        old_refresh = store.creds["refresh_token"]
        store.creds["expires_at"] = 0
        assert adapter.list_owners()
        assert store.creds["refresh_token"] != old_refresh
        # the old refresh token died with its use (single use, FACTS 1.2)
        with pytest.raises(AuthError):
            adapter.refresh_credentials({**store.creds, "refresh_token": old_refresh})


class TestAmoCrmNotesContract(_AmoContract):
    """Notes mode: account webhooks are unsigned and a note names a lead."""

    chat_mode = False
    reply_names_recipient = False  # a note reply names the lead, not the channel id

    def forgeries(self, request: WebhookRequest) -> list[WebhookRequest]:
        """Account webhooks are unsigned (FACTS 1.12): besides the URL's
        secret key, only the account the body names can be checked."""
        pairs = parse_qsl(request.body.decode(), keep_blank_values=True)
        assert any(k == "account[id]" for k, _ in pairs)
        forged = [(k, "999" if k == "account[id]" else v) for k, v in pairs]
        other_account = replace(request, body=urlencode(forged).encode())
        nameless = replace(request, body=b"leads%5Bdelete%5D%5B0%5D%5Bid%5D=1")
        return [other_account, nameless]

    def test_a_tenant_on_a_long_lived_token(
        self,
        amocrm: RunningServer,
        app_settings: dict[str, str],
        api_base: str,
        receiver: Receiver,
        bucket: LocalBucket,
    ) -> None:
        """``bridge tenant create --crm amocrm --token <subdomain>:<token>``:
        the pasted form names the account the token cannot (FACTS 1.1), and
        the tenant works with nothing else (no OAuth install)."""
        made = requests.post(
            f"{amocrm.url}/_long_lived_token", json={"subdomain": DEMO_SUBDOMAIN}, timeout=10
        )
        made.raise_for_status()
        token = made.json()["token"]
        with pytest.raises(ValueError, match="<subdomain>:<token>"):
            AmoCrmAdapter.token_credentials(token)
        installed = AmoCrmAdapter.token_credentials(f"{DEMO_SUBDOMAIN}:{token}")
        assert installed.credentials == {"type": "long_lived", "access_token": token}
        store = Credentials(dict(installed.credentials))

        def make(settings: Mapping[str, Any]) -> AmoCrmAdapter:
            account = CrmAccountInfo(
                tenant_id=2,
                kind="amocrm",
                account_id=installed.account_id,
                settings={**installed.settings, "rate_per_second": RATE, **settings},
                app=app_settings,
                api_base=api_base,
                webhook_url=receiver.url,
            )
            return AmoCrmAdapter(account, store, HttpClient(api_base, limiter=bucket))

        setup = make({}).setup([LINK], {})
        # the account id the token's claims gave is the account's own
        assert setup.settings["amo_account_id"] == installed.account_id
        adapter = make(dict(setup.settings))
        assert {o.name for o in adapter.list_owners()} >= {"Anna Admin"}
        contact, lead, _ = self.open_conversation(adapter, LINK.kind, {})
        assert adapter.entity_is_open(lead) is True

    def test_crm_events_come_back(
        self, adapter: AmoCrmAdapter, vendor: AmoVendor, receiver: Receiver
    ) -> None:
        contact, lead, _ = self.open_conversation(adapter, LINK.kind, {})
        owners = [o.id for o in adapter.list_owners()]
        vendor.control(
            "/_responsible", {"lead_id": int(lead.id), "responsible_user_id": int(owners[-1])}
        )
        vendor.control("/_lead_status", {"lead_id": int(lead.id), "status_id": 143})
        survivor = vendor.seed_contact(name="Survivor")
        vendor.control("/_merge_contacts", {"keep_id": int(survivor), "remove_id": int(contact.id)})
        requests_ = receiver.wait_for(3)
        events = []
        for request in requests_:
            adapter.verify_webhook(request)
            events.extend(adapter.parse_webhook(request))
        kinds = {e.kind for e in events}
        assert CrmEventKind.OWNER_CHANGED in kinds
        assert CrmEventKind.ENTITY_CLOSED in kinds
        assert CrmEventKind.CONTACT_REMOVED in kinds
        owner_changed = next(e for e in events if e.kind is CrmEventKind.OWNER_CHANGED)
        assert owner_changed.entity == lead and owner_changed.owner_id == owners[-1]
        removed = next(e for e in events if e.kind is CrmEventKind.CONTACT_REMOVED)
        assert removed.contact == contact

    def test_own_notes_come_back_as_unknown(
        self,
        adapter: AmoCrmAdapter,
        amocrm: RunningServer,
        receiver: Receiver,
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        requests.post(
            f"{amocrm.url}/_config", json={"webhooks_on_api_changes": True}, timeout=10
        ).raise_for_status()
        contact, lead, _ = self.open_conversation(adapter, LINK.kind, {})
        receiver.requests.clear()
        entry = make_entry(
            self.uid("msg"),
            contact=contact,
            entity=lead,
            sequence=1,
            occurred_at=dt.datetime.now(dt.UTC),
            text="@client looks like a reply, but the customer wrote it",
        )
        adapter.append_entries([entry])
        notes = [
            r
            for r in receiver.wait_for(1)
            if b"note" in r.body  # the note_lead echo
        ]
        assert notes
        for request in notes:
            adapter.verify_webhook(request)
            assert {e.kind for e in adapter.parse_webhook(request)} == {CrmEventKind.UNKNOWN}

    def test_an_account_that_strips_zero_width_characters(
        self,
        make_adapter: Callable[[Mapping[str, Any]], AmoCrmAdapter],
        settings: dict[str, Any],
        amocrm: RunningServer,
        vendor: AmoVendor,
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        """Whether amoCRM keeps zero-width characters is UNCONFIRMED. If it
        drops them, the hidden marker is lost: a retry cannot find its note,
        writes it again (shown twice, never lost) with the visible tag, and
        the tenant setting ``marker_style: visible`` keeps retries exact."""
        requests.post(
            f"{amocrm.url}/_config", json={"strip_zero_width": True}, timeout=10
        ).raise_for_status()
        adapter = make_adapter(settings)
        contact, lead, _ = self.open_conversation(adapter, LINK.kind, {})

        def copies(text: str) -> list[str]:
            notes = vendor.account()["notes"]
            return [
                n["params"]["text"]
                for n in notes
                if n["entity_id"] == int(lead.id) and text in n["params"].get("text", "")
            ]

        entry = make_entry(
            self.uid("msg"),
            contact=contact,
            entity=lead,
            sequence=1,
            occurred_at=dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC),
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
        # it stays found from now on
        retry.append_entries([replace(entry, maybe_written=True)])
        assert len(copies("first question")) == 2

        visible = make_adapter({**settings, "marker_style": "visible"})
        second = replace(entry, bridge_id=self.uid("msg"), text="second question", sequence=2)
        visible.append_entries([second])
        make_adapter({**settings, "marker_style": "visible"}).append_entries(
            [replace(second, maybe_written=True)]
        )
        (shown,) = copies("second question")
        assert what_people_see(shown).split("\n")[0].endswith("]")  # the short tag, once


class TestAmoCrmChatContract(_AmoContract):
    """Chat mode: notes plus amoCRM's chat window through the Chats API."""

    chat_mode = True

    def test_chat_messages_land_once_on_the_contacts_lead(
        self,
        adapter: AmoCrmAdapter,
        vendor: AmoVendor,
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        contact, lead, _ = self.open_conversation(adapter, LINK.kind, {})
        entries = [
            make_entry(
                self.uid("msg"),
                contact=contact,
                entity=lead,
                sequence=i,
                occurred_at=dt.datetime(2025, 3, 1, 9, 0, i, tzinfo=dt.UTC),
                text=f"chat {i}",
            )
            for i in range(1, 4)
        ]
        first = adapter.append_entries(entries)
        forget_chats()  # another worker process retries the batch
        again = adapter.append_entries([replace(e, maybe_written=True) for e in entries])
        assert again == first
        messages = vendor.chat_messages(e.bridge_id for e in entries)
        assert sorted(m["ref_id"] for m in messages) == sorted(e.bridge_id for e in entries)
        chat = messages[0]["chat"]
        assert chat["contact_id"] == int(contact.id)
        assert chat["conversation_id"] == entries[0].conversation_uid
        # linked before the first message: on the contact's lead, no Unsorted
        # lead and no second contact
        assert chat["lead_id"] == int(lead.id)
        account = vendor.account()
        assert account["unsorted"] == []
        assert [c["id"] for c in account["contacts"]] == [int(contact.id)]

    def test_unsorted_mode_lets_amocrm_create_the_lead(
        self, adapter: AmoCrmAdapter, vendor: AmoVendor
    ) -> None:
        entry = TimelineEntry(
            bridge_id=self.uid("msg"),
            conversation_uid=self.uid("conv"),
            channel_kind=LINK.kind,
            channel_account=LINK.id,
            direction="in",
            kind=MessageKind.TEXT,
            text="Hi, first time here",
            occurred_at=dt.datetime.now(dt.UTC),
            contact=None,
            sender_name="New Person",
            sender_identifier=self.uid("tg"),
            timeline="note",
            inbox=True,
            channel_title="Telegram",
        )
        result = adapter.append_entries([entry])
        assert [r.kind for r in result[entry.bridge_id]] == ["message"]
        (message,) = vendor.chat_messages([entry.bridge_id])
        assert message["chat"]["conversation_id"] == entry.conversation_uid
        assert message["chat"]["lead_id"] is not None  # amoCRM opened an Unsorted lead

    def test_setup_names_each_channel_account_once(
        self,
        make_adapter: Callable[[Mapping[str, Any]], AmoCrmAdapter],
        vendor: AmoVendor,
        settings: dict[str, Any],
    ) -> None:
        """One amoCRM source per channel account (Sources API, UNCONFIRMED:
        not in the stored contracts), its external id what the chats carry
        (``inbox.source_of``: ``<kind>-<account id>``), named by the
        channel's title and the account's name, in the main pipeline; a
        second setup with one more account adds only that one."""
        whatsapp = ChannelLink(
            id="9", kind="whatsapp", name="+1 555 0100", identifier="pn-1", title="WhatsApp"
        )
        telegram = replace(LINK, title="Telegram")
        make_adapter(settings).setup([telegram, whatsapp], {})
        make_adapter(settings).setup([telegram, whatsapp], {})
        main = next(p["id"] for p in vendor.account()["pipelines"] if p["is_main"])
        assert sorted(
            (s["external_id"], s["name"], s["pipeline_id"]) for s in vendor.account()["sources"]
        ) == [
            # made by the fixture's setup, from LINK without a title: kept as it was
            ("telegram-7", "@acme_support_bot", main),
            ("whatsapp-9", "WhatsApp · +1 555 0100", main),
        ]
        entry = TimelineEntry(
            bridge_id=self.uid("msg"),
            conversation_uid=self.uid("conv"),
            channel_kind="whatsapp",
            channel_account="9",
            direction="in",
            kind=MessageKind.TEXT,
            text="Hello",
            occurred_at=dt.datetime.now(dt.UTC),
            contact=None,
            sender_name="New Person",
            sender_identifier=self.uid("wa"),
            timeline="note",
            inbox=True,
            channel_title="WhatsApp",
        )
        make_adapter(settings).append_entries([entry])
        (message,) = vendor.chat_messages([entry.bridge_id])
        assert message["chat"]["source"] == {"external_id": "whatsapp-9"}
        assert message["chat"]["source_name"] == "WhatsApp · +1 555 0100"

    def test_an_account_without_the_sources_api(
        self,
        amocrm: RunningServer,
        make_adapter: Callable[[Mapping[str, Any]], AmoCrmAdapter],
        vendor: AmoVendor,
        settings: dict[str, Any],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Its 404 means no named sources: the setup still succeeds (the
        chats show the bare external id) and says so in the log once."""
        requests.post(
            f"{amocrm.url}/_config", json={"sources_api": False}, timeout=10
        ).raise_for_status()
        forget_unavailable()
        whatsapp = ChannelLink(id="9", kind="whatsapp", name="+1 555 0100", identifier="pn-1")
        with caplog.at_level("INFO", logger="crm_adapters.amocrm.sources"):
            for _ in range(2):
                again = make_adapter(settings).setup([LINK, whatsapp], {})
                assert again.routes == (settings["scope_id"],)
        assert [s["external_id"] for s in vendor.account()["sources"]] == ["telegram-7"]
        logged = [r.getMessage() for r in caplog.records if "sources API" in r.getMessage()]
        assert len(logged) == 1 and "404" in logged[0]

    def test_chat_reply_with_the_wrong_secret_is_refused(
        self,
        adapter: AmoCrmAdapter,
        vendor: AmoVendor,
        receiver: Receiver,
        make_entry: Callable[..., TimelineEntry],
    ) -> None:
        _, request = self._reply(adapter, vendor, receiver, make_entry, LINK.kind, {})
        other_tenant = replace(
            adapter.account, settings={**adapter.account.settings, "amojo_id": "someone-else"}
        )
        stranger = AmoCrmAdapter(other_tenant, adapter.credentials, adapter.http)
        with pytest.raises(SignatureError):
            stranger.verify_webhook(request)
