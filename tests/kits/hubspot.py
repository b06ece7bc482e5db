# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""HubSpot's kit: one public app for every portal; its webhooks (the custom
channel's ``OUTGOING_CHANNEL_MESSAGE_CREATED``) are JSON signed with the
app's client secret (v3: HMAC-SHA256 over method, URL, body and timestamp,
5-minute window; FACTS 3.6), at each tenant's own URL. A private app's
token can be pasted instead of the OAuth install."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import Any

import pytest
import requests
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.model import (
    CrmAccountInfo,
    CrmEventKind,
    Installed,
    MessageKind,
    WebhookRequest,
)
from crm_adapters.hubspot import HubSpotAdapter
from crm_adapters.hubspot.webhooks import html_to_text, sign_v3
from sandbox.demo import DEMO_CRMS, oauth_install
from tests.kits.base import (
    MARK,
    PUBLIC_URL,
    CrmKit,
    DeepJson,
    FuzzTarget,
    HostileTarget,
    IsoConversation,
    IsoTenant,
    OAuthIsolation,
    Property,
    Req,
    TenantSpec,
    TextHelpers,
)
from tests.kits.common import (
    JSON,
    JSON_VALUES,
    NAME,
    SENTENCE,
    T0,
    check_crm_events,
    dumps,
    json_tokens,
    keys_of,
    mutated,
)
from tests.support.fakes import MemoryCredentials
from tests.support.harness import (
    CLIENT_SECRET,
    HUBSPOT_MAPPING,
    PORTAL_A,
    PORTAL_B,
    consent,
    hubspot_app,
    hubspot_sandbox,
    hubspot_signed,
    reply_payload,
)

UTC = dt.UTC

# -- the parser's portal ------------------------------------------------------------------------

SECRET = "hubspot-client-secret-1"
PORTAL = "4242"
URL = "https://bridge.example/webhooks/crm/hubspot/tenant-key"


@cache
def adapter() -> HubSpotAdapter:
    account = CrmAccountInfo(
        tenant_id=1,
        kind="hubspot",
        account_id=PORTAL,
        app={"client_id": "client-id-1", "client_secret": SECRET},
    )
    creds = {"type": "oauth", "access_token": "a", "refresh_token": "r"}
    return HubSpotAdapter(account, MemoryCredentials(creds, refresher=dict))


def request(body: bytes, *, now: float | None = None) -> WebhookRequest:
    """Signed with HubSpot's v3 scheme, timestamp now (within the window)."""
    timestamp = str(int((time.time() if now is None else now) * 1000))
    return WebhookRequest(
        method="POST",
        url=URL,
        headers={
            "content-type": JSON,
            "x-hubspot-signature-v3": sign_v3(SECRET, "POST", URL, body, timestamp),
            "x-hubspot-request-timestamp": timestamp,
        },
        body=body,
        received_at=T0,
    )


def reply(**message: Any) -> dict[str, Any]:
    """An ``OUTGOING_CHANNEL_MESSAGE_CREATED`` webhook (FACTS 3.7)."""
    base = {
        "id": "hs-msg-1",
        "conversationsThreadId": "th-1",
        "channelId": "ch-1",
        "channelAccountId": "ca-1",
        "direction": "OUTGOING",
        "text": "Hi Ann, how can I help?",
        "richText": "<p>Hi Ann, how can I help?</p>",
        "senders": [{"actorId": "A-101", "name": "Bob Rep"}],
        "recipients": [
            {"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "tg-user-1"}}
        ],
        "createdAt": "2025-03-01T12:31:00.500Z",
        "channelIntegrationThreadIds": ["conv-1"],
        "client": {"clientType": "HUBSPOT"},
        "attachments": [{"type": "FILE", "fileId": "f1", "fileUsageType": "IMAGE", "name": "a"}],
        "type": "MESSAGE",
    }
    base.update(message)
    return {
        "type": "OUTGOING_CHANNEL_MESSAGE_CREATED",
        "portalId": int(PORTAL),
        "channelId": "ch-1",
        "eventTimestamp": 1740832260500,
        "message": base,
    }


def seeds() -> list[bytes]:
    payloads: list[Any] = [
        reply(),
        [reply(), reply(id="hs-msg-2", text="", richText="<b>x</b><br>y")],
        {"type": "CHANNEL_ACCOUNT_CREATED", "portalId": int(PORTAL), "eventId": 5},
        reply(direction="INCOMING"),
    ]
    return [dumps(p) for p in payloads]


def parse(body: bytes) -> list[Any] | None:
    portal = adapter()
    req = request(body)
    portal.verify_webhook(req)  # signed now, with the app's secret: must pass
    try:
        events = portal.parse_webhook(req)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError | SignatureError)
        return None
    check_crm_events(events)
    assert portal.parse_webhook(req) == events
    return events


def fuzz(data: bytes) -> None:
    portal = adapter()
    req = request(data)
    try:
        portal.verify_webhook(req)
    except WebhookError:
        pass
    try:
        events = portal.parse_webhook(req)
    except WebhookError:
        return
    check_crm_events(events)


# -- properties ---------------------------------------------------------------------------------

ID = st.one_of(st.text(min_size=1, max_size=30), st.integers(0, 2**53))
KIND = {"IMAGE": MessageKind.PHOTO, "AUDIO": MessageKind.AUDIO, "VIDEO": MessageKind.VIDEO}


@cache
def _seed_docs() -> list[Any]:
    return [json.loads(s) for s in seeds()]


@st.composite
def message_strategy(draw: st.DrawFn) -> dict[str, Any]:
    created = draw(st.integers(1, 4_102_444_800_000))  # epoch ms, up to 2100
    return {
        "id": draw(ID),
        "conversationsThreadId": draw(ID),
        "direction": "OUTGOING",
        "text": draw(st.text(min_size=1, max_size=300)),
        "senders": [{"actorId": draw(st.text(min_size=1, max_size=12)), "name": draw(NAME)}],
        "recipients": [
            {"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": draw(ID)}}
        ],
        "createdAt": draw(st.sampled_from([created, str(created)])),
        "channelIntegrationThreadIds": [draw(st.text(min_size=1, max_size=40))],
        "attachments": [
            {"type": "FILE", "fileId": draw(ID), "fileUsageType": usage}
            for usage in draw(
                st.lists(st.sampled_from(["IMAGE", "AUDIO", "VIDEO", "OTHER"]), max_size=3)
            )
        ],
        "client": {"clientType": "HUBSPOT"},
    }


def any_signed_body_is_events_or_a_4xx(body: bytes) -> None:
    parse(body)


def replies_round_trip(messages: list[dict[str, Any]], as_array: bool) -> None:
    items = [{**reply(), "message": m} for m in messages]
    events = parse(dumps(items if as_array or len(items) > 1 else items[0]))
    assert events is not None and len(events) == len(messages)
    for event, message in zip(events, messages, strict=True):
        assert event.kind is CrmEventKind.REPLY
        assert event.external_id == str(message["id"])
        assert event.crm_thread_id == str(message["conversationsThreadId"])
        assert event.thread_key == message["channelIntegrationThreadIds"][0]
        assert event.recipient == str(message["recipients"][0]["deliveryIdentifier"]["value"])
        assert event.text == message["text"]
        assert event.author_id == message["senders"][0]["actorId"]
        assert event.author_name == message["senders"][0]["name"]
        created = int(message["createdAt"])
        assert event.occurred_at == dt.datetime.fromtimestamp(created / 1000, UTC)
        kinds = [KIND.get(a["fileUsageType"], MessageKind.DOCUMENT) for a in message["attachments"]]
        assert [a.kind for a in event.attachments] == kinds
        assert [a.file_ref for a in event.attachments] == [
            str(a["fileId"]) for a in message["attachments"]
        ]


def rich_text_only_reply_becomes_its_plain_text(text: str) -> None:
    rich = "<p>" + html.escape(text).replace(" ", " <b></b>") + "</p>"
    events = parse(dumps(reply(text="", richText=rich)))
    assert events is not None and events[0].text == text
    assert html_to_text(rich) == text


def echoes_and_other_portals_never_become_replies(
    direction: str, client: str, portal: int | str | None
) -> None:
    payload = reply(direction=direction, client={"clientType": client})
    if portal is None:
        del payload["portalId"]
    else:
        payload["portalId"] = portal
    req = request(dumps(payload))
    if str(portal) != PORTAL:
        with pytest.raises(SignatureError):  # the secret is app-wide: the portal decides
            adapter().parse_webhook(req)
        return
    (event,) = adapter().parse_webhook(req)
    ours = direction == "OUTGOING" and client != "INTEGRATION"
    assert event.kind is (CrmEventKind.REPLY if ours else CrmEventKind.UNKNOWN)


def fuzz_text(data: bytes) -> None:
    html_to_text(data.decode("utf-8", "replace"))


# -- hostile input --------------------------------------------------------------------------------


class HubSpotTarget(HostileTarget):
    name = "hubspot"
    kind = "hubspot"
    endpoint = "tenant"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        "forged": 403,
        "missing-signature": 403,
        "missing-timestamp": 403,
        "missing-both": 403,
        "malformed-not-base64": 403,
        "malformed-short": 403,
        "malformed-huge": 403,
        "malformed-non-ascii": 403,
        "malformed-timestamp": 403,
        "negative-timestamp": 403,
        "stale": 403,
        "future": 403,
        "body-swapped": 403,
        "signed-for-another-url": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/crm/hubspot/{self.world.tenant_keys['hubspot'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        payload = reply_payload(
            portal_id=PORTAL_A if tenant == "A" else PORTAL_B,
            thread_uid=self.world.conversations["hubspot"],
            message_id=f"hs-{uid}",
            text=f"{MARK} from the rep",
        )
        return json.dumps(payload).encode()

    @staticmethod
    def sign(
        path: str, body: bytes, *, secret: str = CLIENT_SECRET, now_ms: int | None = None
    ) -> dict[str, str]:
        """HubSpot's v3 signature over the raw bytes (FACTS 3.6; the sandbox's
        signer takes text, and hostile bodies need not be UTF-8)."""
        timestamp = str(int(time.time() * 1000) if now_ms is None else now_ms)
        message = b"POST" + f"{PUBLIC_URL}{path}".encode() + body + timestamp.encode()
        digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
        return {
            "X-HubSpot-Signature-v3": base64.b64encode(digest).decode("ascii"),
            "X-HubSpot-Request-Timestamp": timestamp,
        }

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return self.sign(path, body)

    def auth_attack(self, case: str) -> Req:
        path, body = self.path(), self.delivery(uuid.uuid4().hex)
        good = self.sign(path, body)
        sig, ts = "X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"
        now_ms = int(time.time() * 1000)
        headers = {
            "forged": lambda: self.sign(path, body, secret="not-the-client-secret"),
            "missing-signature": lambda: {ts: good[ts]},
            "missing-timestamp": lambda: {sig: good[sig]},
            "missing-both": lambda: {},
            "malformed-not-base64": lambda: {**good, sig: "%%%% not base64 %%%%"},
            "malformed-short": lambda: {**good, sig: good[sig][:22]},
            "malformed-huge": lambda: {**good, sig: "A" * 10_240},
            "malformed-non-ascii": lambda: {**good, sig: "сигнатура".encode().decode("latin-1")},
            "malformed-timestamp": lambda: {**good, ts: "1e12"},
            "negative-timestamp": lambda: {**good, ts: "-1"},
            "stale": lambda: self.sign(path, body, now_ms=now_ms - 301_000),
            "future": lambda: self.sign(path, body, now_ms=now_ms + 301_000),
            "body-swapped": lambda: self.sign(path, self.delivery(uuid.uuid4().hex)),
            "signed-for-another-url": lambda: self.sign(self.path("B"), body),
        }[case]()
        return Req(path, body, JSON, headers)


# -- tenant isolation ------------------------------------------------------------------------


def _portal_of(sandbox_url: str, credentials: Mapping[str, Any]) -> str:
    details = requests.get(
        f"{sandbox_url}/account-info/v3/details",
        timeout=10,
        headers={"Authorization": f"Bearer {credentials['access_token']}"},
    )
    details.raise_for_status()
    return str(details.json()["portalId"])


def _consent(sandbox_url: str, query: Mapping[str, str], account_id: str) -> dict[str, str]:
    return consent(sandbox_url, query, portal_id=int(account_id))


def _sandbox(config: Mapping[str, Any]) -> AbstractContextManager[tuple[str, Any]]:
    return hubspot_sandbox(dict(config))


# -- the kit ------------------------------------------------------------------------------------


class HubSpotKit(CrmKit):
    kind = "hubspot"
    entity_type = "deal"
    #: the custom channel's webhooks carry replies only
    events = {"reply": "reply"}
    fast_settings = {"rate_per_10s": 2000}

    def mapping_text(self) -> str:
        return HUBSPOT_MAPPING

    # -- parsers

    def properties(self) -> Sequence[Property]:
        return [
            Property(
                "hubspot: any signed body is events or a 4xx",
                any_signed_body_is_events_or_a_4xx,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    mutated(_seed_docs(), keys_of(_seed_docs())).map(dumps),
                ),
                examples=(
                    b"[" * 100_000,  # was RecursionError out of json.loads
                    dumps(reply(senders={"0": {"actorId": 1}})),  # was KeyError
                    dumps(reply(recipients=5)),  # was TypeError
                    dumps(reply(createdAt="9" * 30)),
                    dumps(reply(createdAt=1e300)),
                ),
                hostile=True,
            ),
            Property(
                "hubspot: replies round-trip",
                replies_round_trip,
                (st.lists(message_strategy(), min_size=1, max_size=4), st.booleans()),
            ),
            Property(
                "hubspot: a rich-text-only reply becomes its plain text",
                rich_text_only_reply_becomes_its_plain_text,
                SENTENCE,
            ),
            Property(
                "hubspot: echoes and other portals never become replies",
                echoes_and_other_portals_never_become_replies,
                {
                    "direction": st.sampled_from(["INCOMING", "OUTGOING"]),
                    "client": st.sampled_from(["INTEGRATION", "HUBSPOT"]),
                    "portal": st.sampled_from([None, int(PORTAL), PORTAL, 4243, "", "4242 "]),
                },
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        return [DeepJson("hubspot", b'{"type":"X","portalId":4242,"eventId":', b"}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "hubspot_webhook",
                "HubSpotAdapter.verify_webhook/parse_webhook (v3-signed JSON)",
                fuzz,
                seeds,
                json_tokens,
            )
        ]

    def text_helpers(self) -> TextHelpers:
        return TextHelpers(
            fuzz_text,
            (b"<p>Hi &amp; bye<br/>x</p>",),
            frozenset({b"<br>", b"</p>", b"&amp;", b"&#"}),
        )

    # -- hostile input

    def hostile_app(self) -> Mapping[str, str]:
        return hubspot_app()

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [HubSpotTarget]

    def hostile_tenants(self) -> Mapping[str, TenantSpec]:
        return {
            "A": TenantSpec(
                str(PORTAL_A), {"type": "private_app", "access_token": "pat-na1-unused-a"}
            ),
            "B": TenantSpec(
                str(PORTAL_B), {"type": "private_app", "access_token": "pat-na1-unused-b"}
            ),
        }

    # -- tenant isolation

    def isolation_app(self, sandbox: str | None) -> Mapping[str, str]:
        return hubspot_app(sandbox)

    def isolation_api_base(self, nowhere: str, sandbox: str | None) -> str:
        return sandbox or nowhere

    def isolation_tenant(self, idx: int, n: int, nowhere: str) -> TenantSpec:
        token = f"hubspot-access-{idx}-{secrets.token_hex(8)}"
        # a high API tier: the re-install's CRM setup must not wait for the bucket
        return TenantSpec(
            str((PORTAL_A, PORTAL_B)[n]),
            {"type": "private_app", "access_token": token},
            {"rate_per_10s": 100_000},
        )

    def thread_id(self, idx: int, j: int, conversation_uid: str) -> str:
        return "5001" if j == 0 else f"5{idx}{j:02d}"

    def crm_webhook(
        self,
        public_url: str,
        src: IsoTenant,
        event: str,
        *,
        n: int,
        conv: IsoConversation | None,
        entity: str,
        contact: str,
        claim: IsoTenant,
        text: str,
    ) -> tuple[Req, str | None]:
        assert event == "reply" and conv is not None
        payload = reply_payload(
            portal_id=int(claim.account_id), thread_uid=conv.uid, message_id=f"hs-{n}", text=text
        )
        payload["message"]["conversationsThreadId"] = conv.crm_thread_id
        payload["message"]["recipients"][0]["deliveryIdentifier"]["value"] = conv.external_thread_id
        path = f"/webhooks/crm/hubspot/{src.webhook_key}"
        raw = dumps(payload)
        url = f"{public_url}{path}"
        return Req(path, raw, JSON, hubspot_signed(url, raw)), url

    def resign(self, url: str, body: bytes) -> dict[str, str] | None:
        # the client secret is app-wide: any portal's webhook can carry a valid signature
        return hubspot_signed(url, body)

    def isolation_oauth(self) -> OAuthIsolation:
        return OAuthIsolation(
            sandbox=_sandbox,
            consent=_consent,
            account_of=_portal_of,
            fast={"per_10s": 100_000, "search_per_s": 1000},
        )

    # -- secrets at rest

    def at_rest_api_base(self, nowhere: str) -> str:
        return nowhere

    def installed(self, n: int, token: Callable[[str], str], nowhere: str) -> Installed:
        return Installed(
            f"7700{n}",
            {
                "type": "oauth",
                "access_token": token("CNhs-access"),
                "refresh_token": token("na1-hs-refresh"),
                "expires_at": 4_000_000_000,
                "hub_id": f"7700{n}",
            },
        )

    def pasted(self, token: Callable[[str], str]) -> str:
        return "pat-na1-" + token("private")

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        return {
            "client secret": f"CanaryClientSecret{tag}",
            "developer key": f"canary-devkey-{tag}",
        }

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        app = {
            "client_secret": values["client secret"],
            "developer_api_key": values["developer key"],
        }
        return {"hubspot": {"per_10s": 2000, "search_per_s": 50, "app": app}}

    def canary_env(self, values: Mapping[str, str]) -> dict[str, str]:
        return {
            "HUBSPOT_CLIENT_SECRET": values["client secret"],
            "HUBSPOT_DEVELOPER_API_KEY": values["developer key"],
        }

    def canary_install(self, stack: Any, runtime: Any) -> int:
        return oauth_install(
            stack.bridge_url, crm=self.kind, sandbox=stack.sandbox_url, mapping=DEMO_CRMS[self.kind]
        )

    def canary_in_crm(self, stack: Any) -> str:
        return json.dumps(stack.hubspot_state())

    def canary_replies(
        self, stack: Any, values: Mapping[str, str], channel: str, user: str
    ) -> list[str]:
        # the sync keeps a channel's user id in bridge_<kind>_id, except an
        # identity that is a handle HubSpot has a property for: the e-mail
        # channel's user is the contact's email (sync._contact_draft)
        prop = channel if channel in ("phone", "email") else f"bridge_{channel}_id"
        contact = next(
            x
            for x in stack.hubspot_state()["contacts"]
            if str(x["properties"].get(prop) or "").lower() == user.lower()
        )
        answer = stack.reply(contact["id"], values["reply"])
        assert answer["webhook"]["status"] == 200, answer
        return ["reply"]
