"""The CRM adapter contract, run against the HubSpot sandbox over real HTTP.

The tenant installs the bridge's OAuth app the way an admin would (the
adapter's authorize URL -> the sandbox's consent form -> ``exchange_code``,
the app settings read through ``HubSpotAdapter.App`` as the core reads them),
then ``setup()`` registers the custom channel (the tenant's mapping asks for
the inbox: ``CrmAccountInfo.inbox``) whose webhook URL is the suite's
receiver, so a rep's reply fired through ``POST /_reply`` arrives signed,
exactly as HubSpot would send it. Every adapter call waits for the shared
bucket (``LocalBucket``), as in production, against the sandbox's limits;
the limits are raised on both sides (the contract checks what the calls do,
not how fast they may come: the 100 per 10 s and the search's 5 per second
of FACTS 3.2 are held by tests/sandbox/test_hubspot_sandbox.py,
tests/unit/test_hubspot_adapter.py and the stack tests).
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bridge import model
from bridge.http import HttpClient
from bridge.model import (
    ChannelLink,
    CrmAccountInfo,
    CrmRef,
    Installed,
    MessageKind,
    Rate,
    TimelineEntry,
)
from bridge.schema import load
from crm_adapters.hubspot import HubSpotAdapter
from crm_adapters.hubspot.settings import HubSpotApp
from sandbox.hubspot import create_app
from tests.contracts.crm_contract import (
    LIVE_FIELD,
    Credentials,
    CrmAdapterContract,
    LocalBucket,
    Receiver,
    VendorEntry,
)
from tests.support.servers import RunningServer, serve_wsgi

PORTAL_ID = 62515
REDIRECT_URI = "https://bridge.example/oauth/hubspot/callback"
LINK = ChannelLink(id="7", kind="telegram", name="@acme_support_bot", identifier="bot-4242")


class HubSpotVendor:
    """Reads the sandbox's ``GET /_state`` and drives ``POST /_reply``."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    def state(self) -> dict[str, Any]:
        response = requests.get(
            f"{self.base_url}/_state", params={"account": PORTAL_ID}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def portal(self) -> dict[str, Any]:
        (portal,) = self.state()["accounts"]
        return portal

    def seed_contact(self, *, name: str, phone: str | None = None, email: str | None = None) -> str:
        # a rep creating the contact in HubSpot's UI: HubSpot's own API
        first, _, last = name.partition(" ")
        props = {"firstname": first, "lastname": last}
        if phone:
            props["phone"] = phone
        if email:
            props["email"] = email
        response = requests.post(
            f"{self.base_url}/crm/v3/objects/contacts",
            json={"properties": props},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def timeline(self, bridge_ids: Iterable[str]) -> list[VendorEntry]:
        wanted = set(bridge_ids)
        portal = self.portal()
        out = []
        for object_type, body in (
            ("notes", "hs_note_body"),
            ("communications", "hs_communication_body"),
        ):
            for record in portal.get(object_type, []):
                props = record["properties"]
                if record["archived"] or props.get("bridge_message_id") not in wanted:
                    continue
                sequence = props.get("bridge_sequence")
                out.append(
                    VendorEntry(
                        bridge_id=props["bridge_message_id"],
                        occurred_at=parse_time(props["hs_timestamp"]),
                        sequence=int(float(sequence)) if sequence not in (None, "") else None,
                        text=props.get(body) or "",
                    )
                )
        return out

    def inbox_messages(self, bridge_ids: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(bridge_ids)
        return [
            message
            for thread in self.portal()["threads"]
            for message in thread["messages"]
            if message["integrationIdempotencyId"] in wanted
        ]

    def setup_fingerprint(self) -> Hashable:
        state = self.state()
        portal = state["accounts"][0]
        properties = tuple(
            sorted(
                (object_type, prop["name"])
                for object_type, props in portal["custom_properties"].items()
                for prop in props
            )
        )
        groups = tuple(
            sorted(
                (object_type, group["name"])
                for object_type, items in portal["property_groups"].items()
                for group in items
            )
        )
        channels = tuple(sorted(str(c["id"]) for c in state["custom_channels"]))
        accounts = tuple(
            sorted(
                (str(a["id"]), str(a["inboxId"]), a["deliveryIdentifier"]["value"])
                for a in portal["channel_accounts"]
            )
        )
        return properties, groups, channels, accounts

    def fire_reply(self, contact: CrmRef, text: str) -> None:
        response = requests.post(
            f"{self.base_url}/_reply", json={"contact_id": contact.id, "text": text}, timeout=15
        )
        assert response.status_code == 200, response.text

    def contact_notes(self, contact: CrmRef) -> list[str]:
        portal = self.portal()
        notes = {
            a["toId"]
            for a in portal["associations"]
            if a["fromObjectType"] == "contacts"
            and a["fromId"] == contact.id
            and a["toObjectType"] == "notes"
        }
        return [
            html_text(n["properties"].get("hs_note_body") or "")
            for n in portal["notes"]
            if n["id"] in notes and not n["archived"]
        ]

    def contact_exists(self, contact_id: str) -> bool:
        return any(c["id"] == contact_id and not c["archived"] for c in self.portal()["contacts"])

    def entity_field(self, entity: CrmRef, name: str | None, settings: Mapping[str, Any]) -> Any:
        (found,) = [e for e in self.portal()[f"{entity.kind}s"] if e["id"] == entity.id]
        return found["properties"].get(name or "hubspot_owner_id")

    def contact_field(self, contact_id: str, name: str, settings: Mapping[str, Any]) -> Any:
        (contact,) = [c for c in self.portal()["contacts"] if c["id"] == contact_id]
        return contact["properties"].get(name)

    def merged_into(self, contact_id: str) -> str | None:
        merges = {m["id"]: m["into"] for m in self.portal()["merges"] if m["type"] == "contacts"}
        return merges.get(contact_id)

    def merge_in_ui(self, keep: CrmRef, gone: CrmRef, webhook_url: str) -> None:
        """A person merges two contacts in HubSpot; the app's webhook target
        (the developer portal's setting) is the suite's receiver."""
        response = requests.post(
            f"{self.base_url}/_config", json={"crm_webhook_url": webhook_url}, timeout=10
        )
        assert response.status_code == 200, response.text
        response = requests.post(
            f"{self.base_url}/_merge",
            json={"account": str(PORTAL_ID), "primary_id": keep.id, "merged_id": gone.id},
            timeout=15,
        )
        assert response.status_code == 200, response.text

    def delivery_status(self, crm_message_id: str) -> str | None:
        for thread in self.portal()["threads"]:
            for message in thread["messages"]:
                if message["id"] == crm_message_id:
                    status = message.get("status")
                    return status.lower() if status else None
        return None


def html_text(value: str) -> str:
    """A rich-text body as a rep reads it: breaks as new lines, no tags."""
    text = re.sub(r"<br\s*/?>|</p>", "\n", value)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def parse_time(value: str) -> dt.datetime:
    if value.isdigit():
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# the raised limits (see the module's docstring)
PER_10S = 1000
SEARCH_PER_S = 50
SEARCH_RATE = Rate(capacity=1, per_second=SEARCH_PER_S - 1)


class TestHubSpotContract(CrmAdapterContract):
    #: POST /crm/v3/objects/contacts/merge (crm_adapters/hubspot/merge.py)
    merges_contacts = True

    @pytest.fixture
    def hubspot(self) -> Iterator[RunningServer]:
        app = create_app(
            {
                "portals": [{"id": PORTAL_ID, "name": "Contract Co"}],
                "per_10s": PER_10S,
                "search_per_s": SEARCH_PER_S,
            }
        )
        with serve_wsgi(app) as server:
            yield server

    @pytest.fixture
    def app_settings(self, hubspot: RunningServer) -> dict[str, str]:
        config = requests.get(f"{hubspot.url}/_config", timeout=10).json()["app"]
        return {
            "client_id": config["client_id"],
            "client_secret": config["client_secret"],
            "app_id": str(config["app_id"]),
            "developer_api_key": config["developer_api_key"],
            "auth_base": hubspot.url,
            "api_base": hubspot.url,
        }

    @pytest.fixture
    def app(self, app_settings: dict[str, str]) -> HubSpotApp:
        return load(HubSpotAdapter.App, app_settings, strict=True)  # as the core reads it

    @pytest.fixture
    def bucket(self) -> LocalBucket:
        return LocalBucket()

    @pytest.fixture
    def installed(self, hubspot: RunningServer, app: HubSpotApp) -> Installed:
        """An admin installs the app: authorize URL -> consent -> code -> tokens."""
        url = HubSpotAdapter.install_url(app, redirect_uri=REDIRECT_URI, state="s-1")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        consent = requests.post(
            f"{hubspot.url}/oauth/authorize",
            data={**query, "portal_id": str(PORTAL_ID), "decision": "grant"},
            allow_redirects=False,
            timeout=10,
        )
        assert consent.status_code == 302, consent.text
        redirect = parse_qs(urlsplit(consent.headers["Location"]).query)
        assert redirect["state"] == ["s-1"]
        installed = HubSpotAdapter.exchange_code(
            app,
            code=redirect["code"][0],
            redirect_uri=REDIRECT_URI,
            http=HttpClient(hubspot.url),
        )
        assert installed.account_id == str(PORTAL_ID)
        assert installed.credentials["access_token"] and installed.credentials["refresh_token"]
        return installed

    @pytest.fixture
    def store(self, installed: Installed) -> Credentials:
        return Credentials(dict(installed.credentials))

    @pytest.fixture
    def make_adapter(
        self,
        hubspot: RunningServer,
        app_settings: dict[str, str],
        installed: Installed,
        store: Credentials,
        receiver: Receiver,
        bucket: LocalBucket,
    ) -> Callable[[Mapping[str, Any]], HubSpotAdapter]:
        def make(settings: Mapping[str, Any]) -> HubSpotAdapter:
            stored = {**installed.settings, "rate_per_10s": PER_10S, **settings}
            load(HubSpotAdapter.Settings, stored, strict=True)  # only real settings
            account = CrmAccountInfo(
                tenant_id=1,
                kind="hubspot",
                account_id=installed.account_id,
                settings=stored,
                app=app_settings,
                api_base=hubspot.url,
                webhook_url=receiver.url,
                inbox=True,  # the mapping publishes to HubSpot's inbox
            )
            adapter = HubSpotAdapter(account, store, HttpClient(hubspot.url, limiter=bucket))
            adapter.search_limit = adapter.limit("search", SEARCH_RATE)
            store.refresher = adapter.refresh_credentials
            return adapter

        return make

    @pytest.fixture
    def vendor(self, hubspot: RunningServer, store: Credentials) -> HubSpotVendor:
        return HubSpotVendor(hubspot.url, store.creds["access_token"])

    @pytest.fixture
    def channel_links(self) -> list[ChannelLink]:
        return [LINK]

    @pytest.fixture
    def mapping_properties(self) -> Mapping[str, list[str]]:
        return {"deal": ["bridge_utm_source"], "contact": [LIVE_FIELD]}

    @pytest.fixture
    def make_entry(self) -> Callable[..., TimelineEntry]:
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
            return TimelineEntry(
                bridge_id=bridge_id,
                conversation_uid=f"conv-of-{contact.id}",
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
                inbox=True,
                channel_title="Telegram",
            )

        return make

    # -- HubSpot specifics beyond the shared suite --------------------------

    def test_inbox_messages_are_published_once(
        self,
        adapter: HubSpotAdapter,
        vendor: HubSpotVendor,
        make_entry: Callable[..., TimelineEntry],
        entity_defaults: Mapping[str, Any],
    ) -> None:
        contact, entity, _ = self.open_conversation(adapter, LINK.kind, entity_defaults)
        entry = make_entry(
            self.uid("msg"),
            contact=contact,
            entity=entity,
            sequence=1,
            occurred_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
            text="hello inbox",
        )
        first = adapter.append_entries([entry])
        again = adapter.append_entries([replace(entry, maybe_written=True)])
        assert again == first
        (message,) = vendor.inbox_messages([entry.bridge_id])
        assert message["text"] == "hello inbox"
        assert message["integrationThreadId"] == entry.conversation_uid

    def test_a_closed_deal_is_not_open(
        self, adapter: HubSpotAdapter, hubspot: RunningServer, vendor: HubSpotVendor
    ) -> None:
        _, entity, _ = self.open_conversation(adapter, LINK.kind, {})
        response = requests.patch(
            f"{hubspot.url}/crm/v3/objects/deals/{entity.id}",
            json={"properties": {"dealstage": "closedlost"}},
            headers={"Authorization": f"Bearer {vendor.token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert adapter.entity_is_open(entity) is False

    def test_create_contact_twice_with_one_email(
        self, adapter: HubSpotAdapter, channel_kind: str
    ) -> None:
        """FACTS 3.3: e-mail is unique; a duplicate answers 409 "Existing ID"
        and create_contact returns the existing contact."""
        email = f"{self.uid('ann')}@example.com"
        first = adapter.create_contact(
            self.contact_draft(channel_kind, identity=self.uid("user"), email=email)
        )
        identity = self.uid("user")
        second = adapter.create_contact(
            self.contact_draft(channel_kind, identity=identity, email=email)
        )
        assert second.ref == first.ref
        found = adapter.find_contact(model.ContactLookup(identities={channel_kind: identity}))
        assert found is not None and found.ref == first.ref

    def test_a_merge_in_hubspot_comes_back_and_the_old_id_still_works(
        self, adapter: HubSpotAdapter, vendor: HubSpotVendor, receiver: Receiver
    ) -> None:
        """A person merges two contacts: the signed contact.merge webhook
        parses to CONTACT_MERGED (gone -> kept), and a write the bridge still
        addresses to the old id lands on the survivor."""
        keep, gone = (
            adapter.create_contact(self.contact_draft(LINK.kind, identity=self.uid("user"))).ref
            for _ in range(2)
        )
        vendor.merge_in_ui(keep, gone, receiver.url)
        (request,) = receiver.wait_for(1)
        adapter.verify_webhook(request)
        (event,) = adapter.parse_webhook(request)
        assert event.kind is model.CrmEventKind.CONTACT_MERGED
        assert (event.contact, event.merged_into) == (gone, keep)
        assert vendor.merged_into(gone.id) == keep.id
        phone = "+442079460999"
        adapter.update_contact(
            gone,
            model.ContactDraft(
                lookup=model.ContactLookup(identities={}, phones=(phone,)),
                profile=model.SenderProfile(phone=phone),
            ),
        )
        found = adapter.find_contact(model.ContactLookup(identities={}, phones=(phone,)))
        assert found is not None and found.ref == keep
