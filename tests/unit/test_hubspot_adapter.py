# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Unit tests of the HubSpot CRM adapter (HTTP mocked at one seam: ``responses``).

Every request the adapter sends here is checked against HubSpot's OpenAPI
specs (``sandbox/hubspot/spec``, Apache-2.0 via WSO2, see its MANIFEST.json)
by the autouse ``spec_check`` fixture, and every 2xx body we fake is checked
strictly against the response schema, so the fakes stay honest. Paths the
shipped specs do not cover (properties, custom channels, OAuth) are checked
per FACTS.md section 3 in the tests themselves.

Fixture sources: signature vectors from HubSpot/hubspot-api-python
``tests/spec/utils/test_signature.py`` (``sandbox/hubspot/spec/signature_test_vectors.json``);
error and 429 bodies from FACTS.md 3.1-3.3 (community captures, labelled
there); the custom-channel webhook shape from FACTS.md 3.7 (UNCONFIRMED).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from bridge.errors import (
    AmbiguousError,
    AuthError,
    NotFoundError,
    NotReadyError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from bridge.http import HttpClient
from bridge.model import (
    Attachment,
    ChannelLink,
    ContactDraft,
    ContactLookup,
    CrmAccountInfo,
    CrmEventKind,
    CrmRef,
    DeliveryReport,
    DeliveryStatus,
    EntityDraft,
    MessageKind,
    Rate,
    SenderProfile,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from bridge.schema import load
from crm_adapters.hubspot import HubSpotAdapter
from crm_adapters.hubspot.settings import HubSpotApp
from crm_adapters.hubspot.webhooks import sign_v3, verify_v3
from tests.support.fakes import MemoryCredentials as FakeCredentials
from tests.support.fakes import RecordingLimiter

API = "https://api.hubapi.com"
SPEC_DIR = Path(__file__).resolve().parents[2] / "sandbox" / "hubspot" / "spec"
VECTORS = json.loads((SPEC_DIR / "signature_test_vectors.json").read_text())
SECRET = "app-client-secret"
ACCESS = "CO-access-token-0123456789abcdefghijklmnopqrstuvwxyz"
REFRESH = "5f1c2b7e-0a4d-4c1e-9d3b-2a6f8e9b0c11"
PORTAL = "4242"
T0 = dt.datetime(2025, 3, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)
DEAL = CrmRef("deal", "900")


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    # any request without a registered answer raises ConnectionError: no
    # test can reach the network
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def spec_check(rsps: responses.RequestsMock) -> Iterator[None]:
    """After each test: every request valid per HubSpot's OpenAPI specs,
    every faked 2xx body valid per the response schema."""
    yield
    from sandbox.hubspot import openapi  # lazily: the sandbox is optional for imports

    for call in rsps.calls:
        request = call.request
        body = request.body.encode() if isinstance(request.body, str) else request.body
        openapi.validate_request(
            request.method, request.url, body, request.headers.get("Content-Type")
        )
        response = call.response
        if isinstance(response, requests.Response) and 200 <= response.status_code < 300:
            openapi.validate_response(
                request.method, request.url, response.status_code, response.content
            )


APP = {
    "client_id": "client-id-1",
    "client_secret": SECRET,
    "app_id": "777",
    "developer_api_key": "dev-key-1",
}


def oauth_creds(**extra: Any) -> dict[str, Any]:
    return {
        "type": "oauth",
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_at": int(time.time()) + 1800,
        "hub_id": PORTAL,
        **extra,
    }


def app_settings(**over: Any) -> HubSpotApp:
    """The deployment's app settings as the adapter reads them."""
    return load(HubSpotApp, {**APP, **over})


def make_adapter(
    *,
    settings: Mapping[str, Any] | None = None,
    creds: Mapping[str, Any] | None = None,
    limiter: RecordingLimiter | None = None,
    account_id: str | None = PORTAL,
) -> tuple[HubSpotAdapter, FakeCredentials]:
    provider = FakeCredentials(creds or oauth_creds())
    settings = dict(settings or {})
    account = CrmAccountInfo(
        tenant_id=1,
        kind="hubspot",
        account_id=account_id,
        settings=settings,
        app=dict(APP),
        webhook_url="https://bridge.example/webhooks/crm/hubspot/tenant-key",
        # from the tenant's mapping, not the portal's settings
        inbox=bool(settings.pop("inbox", False)),
    )
    adapter = HubSpotAdapter(account, provider, HttpClient(API, limiter=limiter))
    provider.refresher = adapter.refresh_credentials
    return adapter, provider


@pytest.fixture
def adapter() -> HubSpotAdapter:
    return make_adapter()[0]


def obj(record_id: str | int, **props: Any) -> dict[str, Any]:
    """A SimplePublicObject as HubSpot returns it."""
    return {
        "id": str(record_id),
        "properties": {k: None if v is None else str(v) for k, v in props.items()},
        "createdAt": "2025-03-01T12:00:00.000Z",
        "updatedAt": "2025-03-01T12:00:00.000Z",
        "archived": False,
    }


def search_page(*records: dict[str, Any], after: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"total": len(records), "results": list(records)}
    if after:
        page["paging"] = {"next": {"after": after}}
    return page


def batch_answer(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": "COMPLETE",
        "results": records,
        "startedAt": "2025-03-01T12:00:00.000Z",
        "completedAt": "2025-03-01T12:00:00.100Z",
    }


def error(message: str, category: str = "VALIDATION_ERROR", **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        "message": message,
        "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
        "category": category,
        **extra,
    }


def body_of(call: Any) -> Any:
    return json.loads(call.request.body)


#: channel kind -> its title, as the core takes it from the channel registry
TITLES = {"telegram": "Telegram", "whatsapp": "WhatsApp"}


def entry(
    bridge_id: str = "m-1",
    *,
    text: str = "Hello",
    channel_kind: str = "telegram",
    sequence: int | None = 1,
    entity: CrmRef | None = DEAL,
    maybe_written: bool = False,
    options: Mapping[str, Any] | None = None,
    **extra: Any,
) -> TimelineEntry:
    return TimelineEntry(
        bridge_id=bridge_id,
        conversation_uid="conv-1",
        channel_kind=channel_kind,
        channel_account="7",
        direction="in",
        kind=MessageKind.TEXT,
        text=text,
        occurred_at=T0,
        contact=CrmRef("contact", "501"),
        entity=entity,
        sequence=sequence,
        sender_name="Ann",
        sender_identifier="tg-user-1",
        owner_id="101",
        maybe_written=maybe_written,
        channel_title=TITLES.get(channel_kind, channel_kind),
        **{"timeline": "note", "inbox": False, **(options or {})},
        **extra,
    )


def echo_batch(object_type: str, start_id: int = 1000) -> Callable[..., Any]:
    """A batch/create answer that writes every input (in reverse order:
    HubSpot does not promise to keep the input order)."""

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        inputs = json.loads(request.body)["inputs"]
        records = [obj(start_id + i, **item["properties"]) for i, item in enumerate(inputs)]
        return 201, {}, json.dumps(batch_answer(list(reversed(records))))

    return callback


# --------------------------------------------------------------------------
# class attributes and rate limits
# --------------------------------------------------------------------------


def most_in_window(rate: Rate, seconds: float) -> float:
    """The most a token bucket lets through in any window of ``seconds``."""
    return rate.capacity + rate.per_second * seconds


def test_identity_and_documented_budget() -> None:
    assert HubSpotAdapter.kind == "hubspot"
    assert HubSpotAdapter.title == "HubSpot"
    assert HubSpotAdapter.entity_types == ("deal", "ticket")
    assert HubSpotAdapter.rate == Rate(capacity=5, per_second=9.5)
    assert most_in_window(HubSpotAdapter.rate, 10) <= 100  # FACTS 3.2


@pytest.mark.parametrize("per_10s", [110, 190])
def test_rate_override_from_settings(per_10s: int) -> None:
    adapter, _ = make_adapter(settings={"rate_per_10s": per_10s})
    assert most_in_window(adapter.api_limit.rate, 10) == pytest.approx(per_10s)


def test_search_draws_from_its_own_bucket(rsps: responses.RequestsMock) -> None:
    limiter = RecordingLimiter()
    adapter, _ = make_adapter(limiter=limiter)
    rsps.post(f"{API}/crm/v3/objects/contacts/search", json=search_page())
    rsps.add_callback(
        responses.POST, f"{API}/crm/v3/objects/notes/batch/create", callback=echo_batch("notes")
    )
    adapter.find_contact(ContactLookup(identities={"telegram": "1"}))
    adapter.append_entries([entry()])
    (search_key, search_rate), (api_key, api_rate) = limiter.acquired
    assert search_key.endswith(":search") and api_key.endswith(":api")
    assert search_key.startswith(f"hubspot:{PORTAL}:")
    assert most_in_window(search_rate, 1) <= 5  # FACTS 3.2: 4-5 searches/s
    assert most_in_window(api_rate, 10) <= 100


def test_a_429_penalises_the_shared_bucket(rsps: responses.RequestsMock) -> None:
    limiter = RecordingLimiter()
    adapter, _ = make_adapter(limiter=limiter)
    rsps.get(
        f"{API}/crm/v3/owners/",
        status=429,
        json=rate_limit_body("TEN_SECONDLY_ROLLING"),
        headers={"Retry-After": "3"},
    )
    with pytest.raises(RetryableError):
        adapter.list_owners()
    assert limiter.penalties == [(adapter.api_limit.key, 3.0)]


# --------------------------------------------------------------------------
# OAuth
# --------------------------------------------------------------------------


def test_install_url_uses_percent20_between_scopes() -> None:
    url = HubSpotAdapter.install_url(
        app_settings(scopes="oauth crm.objects.contacts.write"),
        redirect_uri="https://bridge.example/oauth/hubspot/callback?x=1",
        state="st@te",
    )
    assert url.startswith("https://app.hubspot.com/oauth/authorize?")
    assert "scope=oauth%20crm.objects.contacts.write" in url
    assert "+" not in url
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == ["client-id-1"]
    assert query["redirect_uri"] == ["https://bridge.example/oauth/hubspot/callback?x=1"]
    assert query["state"] == ["st@te"]


def test_install_url_default_scopes_and_auth_base() -> None:
    url = HubSpotAdapter.install_url(
        app_settings(auth_base="https://app-eu1.hubspot.com"), redirect_uri="https://r", state="s"
    )
    scopes = parse_qs(urlsplit(url).query)["scope"][0].split(" ")
    assert url.startswith("https://app-eu1.hubspot.com/oauth/authorize?")
    assert "conversations.custom_channels.write" in scopes and "tickets" in scopes


def token_answer(**extra: Any) -> dict[str, Any]:
    return {
        "access_token": "CO-new-access",
        "refresh_token": "new-refresh",
        "expires_in": 1800,
        "token_type": "bearer",
        "token_use": "access",
        **extra,
    }


def test_exchange_code_is_form_encoded_and_names_the_account(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(f"{API}/oauth/v1/token", json=token_answer(hub_id=4242))
    before = time.time()
    installed = HubSpotAdapter.exchange_code(
        app_settings(), code="the-code", redirect_uri="https://r/cb", http=HttpClient(API)
    )
    creds = installed.credentials
    request = rsps.calls[0].request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.body)
    assert form == {
        "grant_type": ["authorization_code"],
        "client_id": ["client-id-1"],
        "client_secret": [SECRET],
        "redirect_uri": ["https://r/cb"],
        "code": ["the-code"],
    }
    assert installed.account_id == "4242" and creds["type"] == "oauth"
    assert creds["refresh_token"] == "new-refresh"
    assert before + 1800 - 1 <= creds["expires_at"] <= time.time() + 1800 + 1


def test_exchange_code_introspects_when_hub_id_is_missing(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/oauth/v1/token", json=token_answer())
    rsps.get(f"{API}/oauth/v1/access-tokens/CO-new-access", json={"hub_id": 99, "app_id": 777})
    installed = HubSpotAdapter.exchange_code(
        app_settings(), code="c", redirect_uri="https://r", http=HttpClient(API)
    )
    assert installed.account_id == "99"
    assert len(rsps.calls) == 2


def test_refresh_keeps_the_refresh_token_hubspot_returns(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(f"{API}/oauth/v1/token", json=token_answer(refresh_token="rotated"))
    fresh = adapter.refresh_credentials(oauth_creds())
    assert fresh["refresh_token"] == "rotated" and fresh["access_token"] == "CO-new-access"
    assert parse_qs(rsps.calls[0].request.body)["grant_type"] == ["refresh_token"]
    assert parse_qs(rsps.calls[0].request.body)["refresh_token"] == [REFRESH]


def test_refresh_without_new_refresh_token_keeps_the_old_one(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    answer = token_answer()
    del answer["refresh_token"]
    rsps.post(f"{API}/oauth/v1/token", json=answer)
    assert adapter.refresh_credentials(oauth_creds())["refresh_token"] == REFRESH


@pytest.mark.parametrize(
    "body",
    [
        # FACTS 3.1, community captures
        {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"},
        {
            "status": "BAD_REFRESH_TOKEN",
            "error": "invalid_grant",
            "error_description": "missing or unknown refresh token",
        },
        {"error": "invalid_grant", "error_description": "refresh token revoked"},
    ],
)
def test_dead_refresh_token_is_auth_error_without_the_token(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter, body: dict[str, Any]
) -> None:
    rsps.post(f"{API}/oauth/v1/token", status=400, json=body)
    with pytest.raises(AuthError) as caught:
        adapter.refresh_credentials(oauth_creds())
    assert REFRESH not in str(caught.value) and ACCESS not in str(caught.value)


def test_private_app_token_cannot_be_refreshed(adapter: HubSpotAdapter) -> None:
    with pytest.raises(AuthError):
        adapter.refresh_credentials({"type": "private_app", "access_token": "pat-na1-x"})


# --------------------------------------------------------------------------
# auth on every call: refresh before expiry, 401 retried once
# --------------------------------------------------------------------------


def test_token_about_to_expire_is_refreshed_before_the_call(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter(creds=oauth_creds(expires_at=int(time.time()) + 60))
    rsps.post(f"{API}/oauth/v1/token", json=token_answer())
    rsps.get(f"{API}/crm/v3/owners/", json={"results": []})
    adapter.list_owners()
    assert [c.request.url.split("?")[0] for c in rsps.calls] == [
        f"{API}/oauth/v1/token",
        f"{API}/crm/v3/owners/",
    ]
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer CO-new-access"
    assert provider.calls == 1 and provider.creds["access_token"] == "CO-new-access"


def test_fresh_token_is_not_refreshed(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter()
    rsps.get(f"{API}/crm/v3/owners/", json={"results": []})
    adapter.list_owners()
    assert provider.calls == 0
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS}"


def unauthorized() -> dict[str, Any]:
    return error(
        "Authentication credentials not found. This API supports OAuth 2.0 authentication",
        category="INVALID_AUTHENTICATION",
    )


def test_401_refreshes_once_and_retries_once(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter()
    rsps.get(f"{API}/crm/v3/owners/", status=401, json=unauthorized())
    rsps.get(f"{API}/crm/v3/owners/", json={"results": []})
    rsps.post(f"{API}/oauth/v1/token", json=token_answer())
    assert adapter.list_owners() == []
    assert provider.calls == 1
    owners_calls = [c for c in rsps.calls if "/owners/" in c.request.url]
    assert [c.request.headers["Authorization"] for c in owners_calls] == [
        f"Bearer {ACCESS}",
        "Bearer CO-new-access",
    ]


def test_second_401_is_auth_error(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter()
    rsps.get(f"{API}/crm/v3/owners/", status=401, json=unauthorized())
    rsps.post(f"{API}/oauth/v1/token", json=token_answer())
    with pytest.raises(AuthError) as caught:
        adapter.list_owners()
    assert provider.calls == 1
    assert len([c for c in rsps.calls if "/owners/" in c.request.url]) == 2
    assert ACCESS not in str(caught.value) and "CO-new-access" not in str(caught.value)


def test_private_app_401_is_auth_error_without_refresh(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter(creds={"type": "private_app", "access_token": "pat-na1-1"})
    rsps.get(f"{API}/crm/v3/owners/", status=401, json=unauthorized())
    with pytest.raises(AuthError):
        adapter.list_owners()
    assert provider.calls == 0 and len(rsps.calls) == 1


# --------------------------------------------------------------------------
# error mapping
# --------------------------------------------------------------------------


def rate_limit_body(policy: str, message: str | None = None) -> dict[str, Any]:
    # FACTS 3.2 (429 body as documented)
    return {
        "status": "error",
        "message": message or f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": "c0ffee00-0000-4000-8000-000000000000",
        "policyName": policy,
        "requestId": "r-1",
    }


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (rate_limit_body("TEN_SECONDLY_ROLLING"), {}, 2.0),
        (rate_limit_body("TEN_SECONDLY_ROLLING"), {"Retry-After": "7"}, 7.0),
        (rate_limit_body("DAILY"), {}, 3600.0),
    ],
)
def test_429_policies(
    rsps: responses.RequestsMock,
    adapter: HubSpotAdapter,
    body: dict[str, Any],
    headers: dict[str, str],
    expected: float,
) -> None:
    rsps.get(f"{API}/crm/v3/owners/", status=429, json=body, headers=headers)
    with pytest.raises(RetryableError) as caught:
        adapter.list_owners()
    assert caught.value.retry_after == expected and caught.value.status == 429
    assert not isinstance(caught.value, AmbiguousError)


@pytest.mark.parametrize(
    "body",
    [
        # sdk: hubspot-api-nodejs RetryDecorator.ts matches the message (FACTS 3.2)
        {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": "c0ffee00-0000-4000-8000-000000000001",
        },
        # the sandbox's body: policyName SECONDLY (UNCONFIRMED)
        rate_limit_body("SECONDLY", "You have reached your secondly limit."),
    ],
)
def test_search_secondly_limit_waits_a_second(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter, body: dict[str, Any]
) -> None:
    rsps.post(f"{API}/crm/v3/objects/contacts/search", status=429, json=body)
    with pytest.raises(RetryableError) as caught:
        adapter.find_contact(ContactLookup(identities={"telegram": "1"}))
    assert caught.value.retry_after == 1.0


def test_validation_error_is_permanent_with_hubspot_message(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/tasks",
        status=400,
        json=error("Property values were not valid: hs_task_priority"),
    )
    with pytest.raises(PermanentError) as caught:
        adapter.create_task(task_draft())
    assert "Property values were not valid: hs_task_priority" in str(caught.value)
    assert "VALIDATION_ERROR" in str(caught.value)
    assert caught.value.status == 400


def test_error_messages_never_carry_tokens(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.get(
        f"{API}/crm/v3/owners/",
        status=400,
        json=error(f"bad request for token {ACCESS} and pat-na1-11111111-2222-3333"),
    )
    with pytest.raises(PermanentError) as caught:
        adapter.list_owners()
    assert ACCESS not in str(caught.value) and "pat-na1-1111" not in str(caught.value)


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [("POST", 502, AmbiguousError), ("GET", 503, RetryableError)],
)
def test_5xx_uses_the_http_default(
    rsps: responses.RequestsMock,
    adapter: HubSpotAdapter,
    method: str,
    status: int,
    expected: type[Exception],
) -> None:
    if method == "POST":
        rsps.post(f"{API}/crm/v3/objects/tasks", status=status, body="<html>bad gateway</html>")
        call: Callable[[], Any] = lambda: adapter.create_task(task_draft())  # noqa: E731
    else:
        rsps.get(f"{API}/crm/v3/owners/", status=status, body="")
        call = adapter.list_owners
    with pytest.raises(expected) as caught:
        call()
    assert type(caught.value) is expected


def test_missing_scopes_is_auth_error(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.get(
        f"{API}/crm/v3/owners/",
        status=403,
        json=error("This app hasn't been granted all required scopes", category="MISSING_SCOPES"),
    )
    with pytest.raises(AuthError):
        adapter.list_owners()


# --------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------

LINK = ChannelLink(id="7", kind="telegram", name="@acme_bot", identifier="bot-123")


def register_setup_routes(rsps: responses.RequestsMock, *, exists: bool = False) -> None:
    status = 409 if exists else 201
    for object_type in ("contacts", "deals", "tickets", "notes", "communications", "tasks"):
        rsps.post(
            f"{API}/crm/v3/properties/{object_type}/groups",
            status=status,
            json=error("exists", category="CONFLICT") if exists else {"name": "crm_bridge"},
        )
        rsps.post(
            f"{API}/crm/v3/properties/{object_type}",
            status=status,
            json=error("exists", category="CONFLICT") if exists else {"name": "x"},
        )


def created_properties(rsps: responses.RequestsMock) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for call in rsps.calls:
        path = urlsplit(call.request.url).path
        if path.startswith("/crm/v3/properties/") and not path.endswith("/groups"):
            out.setdefault(path.rsplit("/", 1)[1], set()).add(body_of(call)["name"])
    return out


def test_setup_creates_group_and_bridge_properties(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter()
    register_setup_routes(rsps)
    result = adapter.setup([LINK], {"deal": ["bridge_utm_source", "dealname"]}).settings
    assert result == {"properties_ready": True}
    assert created_properties(rsps) == {
        "contacts": {"bridge_telegram_id"},
        "deals": {"bridge_conversation_id", "bridge_utm_source"},  # dealname is HubSpot's
        "tickets": {"bridge_conversation_id"},
        "notes": {"bridge_message_id", "bridge_sequence"},
        "communications": {"bridge_message_id", "bridge_sequence"},
        "tasks": {"bridge_message_id", "bridge_sequence"},
    }
    groups = [c for c in rsps.calls if c.request.url.endswith("/groups")]
    assert len(groups) == 6 and all(body_of(c)["name"] == "crm_bridge" for c in groups)
    for call in rsps.calls:
        body = body_of(call)
        if "groupName" in body:
            assert body["groupName"] == "crm_bridge"
            assert body["type"] in ("string", "number") and body["fieldType"] in ("text", "number")


def test_setup_is_idempotent_on_409(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter()
    register_setup_routes(rsps, exists=True)
    assert adapter.setup([LINK]).settings == {"properties_ready": True}


def register_inbox_routes(rsps: responses.RequestsMock) -> None:
    register_setup_routes(rsps)
    rsps.post(
        f"{API}/conversations/v3/custom-channels",
        status=201,
        json={"id": "ch-1", "name": "CRM bridge", "capabilities": {}, "createdAt": "x"},
    )
    rsps.get(
        f"{API}/conversations/v3/conversations/inboxes",
        json={"total": 2, "results": [{"id": "inbox-1"}, {"id": "inbox-2"}]},
    )
    rsps.get(
        f"{API}/conversations/v3/custom-channels/ch-1/channel-accounts",
        json={"total": 0, "results": []},
    )
    rsps.post(
        f"{API}/conversations/v3/custom-channels/ch-1/channel-accounts",
        status=201,
        json={"id": "ca-1", "channelId": "ch-1", "inboxId": "inbox-1", "name": "@acme_bot"},
    )


def test_setup_with_inbox_registers_channel_inbox_and_accounts(
    rsps: responses.RequestsMock,
) -> None:
    adapter, _ = make_adapter(settings={"inbox": True})
    register_inbox_routes(rsps)
    result = adapter.setup([LINK]).settings
    assert result == {
        "properties_ready": True,
        "channel_id": "ch-1",
        "inbox_id": "inbox-1",
        "channel_accounts": {"7": "ca-1"},
        "channel_identifiers": {"7": "bot-123"},
    }
    register = next(
        c for c in rsps.calls if c.request.url.split("?")[0].endswith("custom-channels")
    )
    query = parse_qs(urlsplit(register.request.url).query)
    assert query == {"hapikey": ["dev-key-1"], "appId": ["777"]}
    assert "Authorization" not in register.request.headers  # app-level: developer key only
    body = body_of(register)
    assert body["webhookUrl"] == "https://bridge.example/webhooks/crm/hubspot/tenant-key"
    assert body["name"] and body["capabilities"]["deliveryIdentifierTypes"] == [
        "CHANNEL_SPECIFIC_OPAQUE_ID"
    ]
    account_call = next(
        c
        for c in rsps.calls
        if c.request.method == "POST" and c.request.url.endswith("/channel-accounts")
    )
    assert body_of(account_call) == {
        "inboxId": "inbox-1",
        "name": "@acme_bot",
        "authorized": True,
        "deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "bot-123"},
    }


def test_setup_with_inbox_reuses_what_settings_hold(rsps: responses.RequestsMock) -> None:
    settings = {
        "inbox": True,
        "channel_id": "ch-1",
        "inbox_id": "inbox-9",
        "channel_accounts": {"7": "ca-1"},
    }
    adapter, _ = make_adapter(settings=settings)
    register_setup_routes(rsps, exists=True)
    result = adapter.setup([LINK]).settings
    assert result["channel_accounts"] == {"7": "ca-1"} and result["inbox_id"] == "inbox-9"
    assert not [c for c in rsps.calls if "/conversations/" in c.request.url]


def test_setup_adopts_an_existing_channel_account(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={"inbox": True, "channel_id": "ch-1", "inbox_id": "inbox-1"})
    register_setup_routes(rsps, exists=True)
    rsps.get(
        f"{API}/conversations/v3/custom-channels/ch-1/channel-accounts",
        json={
            "total": 1,
            "results": [
                {
                    "id": "ca-old",
                    "inboxId": "inbox-1",
                    "archived": False,
                    "deliveryIdentifier": {
                        "type": "CHANNEL_SPECIFIC_OPAQUE_ID",
                        "value": "bot-123",
                    },
                }
            ],
        },
    )
    assert adapter.setup([LINK]).settings["channel_accounts"] == {"7": "ca-old"}
    assert not [
        c for c in rsps.calls if c.request.method == "POST" and "conversations" in c.request.url
    ]


def test_setup_inbox_with_private_app_token_tells_the_admin(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(
        settings={"inbox": True}, creds={"type": "private_app", "access_token": "pat-na1-1"}
    )
    with pytest.raises(PermanentError) as caught:
        adapter.setup([LINK])
    assert "OAuth app" in str(caught.value) and "inbox: false" in str(caught.value)
    assert len(rsps.calls) == 0


# --------------------------------------------------------------------------
# contacts
# --------------------------------------------------------------------------

SEARCH_CONTACTS = f"{API}/crm/v3/objects/contacts/search"


def test_find_contact_sends_one_search_with_three_or_groups(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(SEARCH_CONTACTS, json=search_page())
    lookup = ContactLookup(
        identities={"telegram": "555"},
        phones=("+79991234567", "+79990000000"),
        emails=("Ann@Example.com",),
    )
    assert adapter.find_contact(lookup) is None
    assert len(rsps.calls) == 1
    groups = body_of(rsps.calls[0])["filterGroups"]
    assert groups == [
        {"filters": [{"propertyName": "bridge_telegram_id", "operator": "EQ", "value": "555"}]},
        {
            "filters": [
                {
                    "propertyName": "phone",
                    "operator": "IN",
                    "values": ["+79991234567", "+79990000000"],
                }
            ]
        },
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "ann@example.com"}]},
    ]


def test_find_contact_prefers_identity_then_phone_then_email(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    by_email = obj(10, email="ann@example.com", phone=None, hubspot_owner_id="1")
    by_phone = obj(20, email=None, phone="+7 (999) 123-45-67", hubspot_owner_id="2")
    by_identity = obj(30, bridge_telegram_id="555", hubspot_owner_id="3")
    rsps.post(SEARCH_CONTACTS, json=search_page(by_email, by_phone, by_identity))
    lookup = ContactLookup(
        identities={"telegram": "555"}, phones=("+79991234567",), emails=("ann@example.com",)
    )
    found = adapter.find_contact(lookup)
    assert found is not None and found.ref == CrmRef("contact", "30") and found.owner_id == "3"

    rsps.replace(responses.POST, SEARCH_CONTACTS, json=search_page(by_email, by_phone))
    found = adapter.find_contact(lookup)
    assert found is not None and found.ref.id == "20" and found.owner_id == "2"

    rsps.replace(responses.POST, SEARCH_CONTACTS, json=search_page(by_email))
    found = adapter.find_contact(lookup)
    assert found is not None and found.ref.id == "10"


def test_find_contact_takes_the_oldest_on_ties(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        SEARCH_CONTACTS,
        json=search_page(obj(77, phone="+79991234567"), obj(9, phone="+79991234567")),
    )
    found = adapter.find_contact(ContactLookup(identities={}, phones=("+79991234567",)))
    assert found is not None and found.ref.id == "9" and found.owner_id is None


def test_find_contact_without_keys_makes_no_call(adapter: HubSpotAdapter) -> None:
    assert adapter.find_contact(ContactLookup(identities={})) is None


def contact_draft(**extra: Any) -> ContactDraft:
    return ContactDraft(
        lookup=ContactLookup(
            identities={"telegram": "555"}, phones=("+79991234567",), emails=("ann@example.com",)
        ),
        profile=SenderProfile(first_name="Ann", last_name="Lee", username="ann"),
        properties={"lifecyclestage": "lead"},
        owner_id="101",
        **extra,
    )


def test_create_contact(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.post(f"{API}/crm/v3/objects/contacts", status=201, json=obj(600, hubspot_owner_id="101"))
    contact = adapter.create_contact(contact_draft())
    assert contact.ref == CrmRef("contact", "600") and contact.owner_id == "101"
    assert body_of(rsps.calls[0])["properties"] == {
        "firstname": "Ann",
        "lastname": "Lee",
        "phone": "+79991234567",
        "email": "ann@example.com",
        "hubspot_owner_id": "101",
        "lifecyclestage": "lead",
        "bridge_telegram_id": "555",
    }


def test_create_contact_409_returns_existing_and_adds_identity(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    # FACTS 3.3: duplicate e-mail -> 409 "Contact already exists. Existing ID: N"
    rsps.post(
        f"{API}/crm/v3/objects/contacts",
        status=409,
        json=error("Contact already exists. Existing ID: 12345", category="CONFLICT"),
    )
    rsps.get(
        f"{API}/crm/v3/objects/contacts/12345",
        json=obj(12345, bridge_telegram_id=None, hubspot_owner_id="102"),
    )
    rsps.patch(f"{API}/crm/v3/objects/contacts/12345", json=obj(12345))
    contact = adapter.create_contact(contact_draft())
    assert contact.ref == CrmRef("contact", "12345") and contact.owner_id == "102"
    patch = rsps.calls[-1]
    assert patch.request.method == "PATCH"
    assert body_of(patch) == {"properties": {"bridge_telegram_id": "555"}}


def test_create_contact_409_on_an_unproven_address_creates_it_without_the_address(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    # an address typed into a form (not among the lookup's proven ones) that
    # another contact holds: never written into that contact (docs/clients.md)
    rsps.post(
        f"{API}/crm/v3/objects/contacts",
        status=409,
        json=error("Contact already exists. Existing ID: 12345", category="CONFLICT"),
    )
    rsps.post(f"{API}/crm/v3/objects/contacts", status=201, json=obj(601))
    typed = ContactDraft(
        lookup=ContactLookup(identities={"webchat": "v1"}),
        profile=SenderProfile(first_name="Ann", email="Ann@Example.com"),
    )
    assert adapter.create_contact(typed).ref.id == "601"
    first, second = (body_of(c)["properties"] for c in rsps.calls)
    assert first["email"] == "ann@example.com" and "email" not in second
    assert {k: v for k, v in first.items() if k != "email"} == second


def test_create_contact_409_with_our_identity_already_there_is_read_only(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/contacts",
        status=409,
        json=error("Contact already exists. Existing ID: 12345", category="CONFLICT"),
    )
    rsps.get(f"{API}/crm/v3/objects/contacts/12345", json=obj(12345, bridge_telegram_id="555"))
    assert adapter.create_contact(contact_draft()).ref.id == "12345"
    assert [c.request.method for c in rsps.calls] == ["POST", "GET"]


def test_create_contact_409_without_an_id_finds_the_contact(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    # a unique identity property clashed (no "Existing ID" in the message)
    rsps.post(
        f"{API}/crm/v3/objects/contacts",
        status=409,
        json=error("A contact with this bridge_telegram_id already exists", category="CONFLICT"),
    )
    rsps.post(SEARCH_CONTACTS, json=search_page(obj(777, bridge_telegram_id="555")))
    assert adapter.create_contact(contact_draft()).ref.id == "777"
    rsps.replace(responses.POST, SEARCH_CONTACTS, json=search_page())
    with pytest.raises(RetryableError):
        adapter.create_contact(contact_draft())


def test_update_contact_patches_only_what_is_new(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.get(
        f"{API}/crm/v3/objects/contacts/501",
        json=obj(501, bridge_telegram_id="555", phone=None, mobilephone=None, email="x@y.z"),
    )
    rsps.patch(f"{API}/crm/v3/objects/contacts/501", json=obj(501))
    adapter.update_contact(CrmRef("contact", "501"), contact_draft())
    assert body_of(rsps.calls[-1]) == {"properties": {"phone": "+79991234567"}}


def test_update_contact_with_nothing_new_makes_no_write(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.get(
        f"{API}/crm/v3/objects/contacts/501",
        json=obj(501, bridge_telegram_id="555", phone="+7 999 123-45-67", email="ann@example.com"),
    )
    adapter.update_contact(CrmRef("contact", "501"), contact_draft())
    assert [c.request.method for c in rsps.calls] == ["GET"]


# --------------------------------------------------------------------------
# entities
# --------------------------------------------------------------------------


def entity_draft(object_type: str = "deal", **extra: Any) -> EntityDraft:
    defaults: dict[str, Any] = {"pipeline": "default", "stage": "appointmentscheduled"}
    defaults.update(extra)
    return EntityDraft(
        object_type=object_type,
        conversation_uid="conv-1",
        contact=CrmRef("contact", "501"),
        name="Telegram: Ann",
        owner_id="101",
        properties={"bridge_utm_source": "ads"},
        **defaults,
    )


def test_find_entity_by_conversation_uid(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/deals/search",
        json=search_page(obj(905, bridge_conversation_id="conv-1"), obj(901)),
    )
    assert adapter.find_entity(entity_draft()) == CrmRef("deal", "901")
    assert body_of(rsps.calls[0])["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "bridge_conversation_id", "operator": "EQ", "value": "conv-1"}
            ]
        }
    ]


def test_create_deal_with_inline_association(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(f"{API}/crm/v3/objects/deals", status=201, json=obj(900))
    assert adapter.create_entity(entity_draft()) == CrmRef("deal", "900")
    body = body_of(rsps.calls[0])
    assert body["properties"] == {
        "dealname": "Telegram: Ann",
        "pipeline": "default",
        "dealstage": "appointmentscheduled",
        "hubspot_owner_id": "101",
        "bridge_utm_source": "ads",
        "bridge_conversation_id": "conv-1",
    }
    assert body["associations"] == [
        {
            "to": {"id": "501"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
        }
    ]


def pipelines(object_type: str) -> dict[str, Any]:
    stamp = "2025-01-01T00:00:00.000Z"

    def stage(stage_id: str, order: int, **meta: str) -> dict[str, Any]:
        return {
            "id": stage_id,
            "label": stage_id,
            "displayOrder": order,
            "metadata": meta,
            "archived": False,
            "createdAt": stamp,
            "updatedAt": stamp,
        }

    if object_type == "tickets":
        stages = [
            stage("4", 3, ticketState="CLOSED"),
            stage("1", 0, ticketState="OPEN"),
            stage("2", 1, ticketState="OPEN"),
        ]
        pipeline_id = "0"
    else:
        stages = [stage("qualified", 1, isClosed="false"), stage("closedwon", 5, isClosed="true")]
        pipeline_id = "default"
    return {
        "results": [
            {
                "id": pipeline_id,
                "label": "Main",
                "displayOrder": 0,
                "stages": stages,
                "archived": False,
                "createdAt": stamp,
                "updatedAt": stamp,
            }
        ]
    }


def test_create_ticket_takes_first_open_stage(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.get(f"{API}/crm/v3/pipelines/tickets", json=pipelines("tickets"))
    rsps.post(f"{API}/crm/v3/objects/tickets", status=201, json=obj(70))
    ref = adapter.create_entity(entity_draft("ticket", pipeline=None, stage=None))
    assert ref == CrmRef("ticket", "70")
    body = body_of(rsps.calls[-1])
    assert body["properties"]["subject"] == "Telegram: Ann"
    assert body["properties"]["hs_pipeline"] == "0"
    assert body["properties"]["hs_pipeline_stage"] == "1"
    assert body["properties"]["content"]
    assert body["associations"][0]["types"][0]["associationTypeId"] == 16


def test_unsupported_entity_type_is_permanent(adapter: HubSpotAdapter) -> None:
    with pytest.raises(PermanentError):
        adapter.create_entity(entity_draft("lead"))


def test_entity_is_open_reads_hs_is_closed(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.get(f"{API}/crm/v3/objects/deals/900", json=obj(900, hs_is_closed="true"))
    assert adapter.entity_is_open(CrmRef("deal", "900")) is False
    rsps.replace(
        responses.GET, f"{API}/crm/v3/objects/deals/900", json=obj(900, hs_is_closed="false")
    )
    assert adapter.entity_is_open(CrmRef("deal", "900")) is True


def test_entity_is_open_for_tickets_uses_cached_pipelines(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.get(f"{API}/crm/v3/pipelines/tickets", json=pipelines("tickets"))
    rsps.get(
        f"{API}/crm/v3/objects/tickets/70", json=obj(70, hs_pipeline="0", hs_pipeline_stage="4")
    )
    rsps.get(
        f"{API}/crm/v3/objects/tickets/71", json=obj(71, hs_pipeline="0", hs_pipeline_stage="2")
    )
    assert adapter.entity_is_open(CrmRef("ticket", "70")) is False
    assert adapter.entity_is_open(CrmRef("ticket", "71")) is True
    assert len([c for c in rsps.calls if "/pipelines/" in c.request.url]) == 1


def test_deleted_entity_is_not_open(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.get(
        f"{API}/crm/v3/objects/deals/900",
        status=404,
        json=error("Object not found", category="OBJECT_NOT_FOUND"),
    )
    assert adapter.entity_is_open(CrmRef("deal", "900")) is False


# --------------------------------------------------------------------------
# timeline
# --------------------------------------------------------------------------

NOTES_BATCH = f"{API}/crm/v3/objects/notes/batch/create"
COMMS_BATCH = f"{API}/crm/v3/objects/communications/batch/create"


def test_append_writes_one_batch_of_notes(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    result = adapter.append_entries([entry("m-1"), entry("m-2", sequence=2)])
    assert result == {"m-1": (CrmRef("note", "1000"),), "m-2": (CrmRef("note", "1001"),)}
    assert len(rsps.calls) == 1
    first = body_of(rsps.calls[0])["inputs"][0]
    props = first["properties"]
    assert props["hs_timestamp"] == "2025-03-01T12:30:45.123Z"
    assert props["bridge_message_id"] == "m-1" and props["bridge_sequence"] == "1"
    assert props["hubspot_owner_id"] == "101"
    assert "Hello" in props["hs_note_body"] and "Ann" in props["hs_note_body"]
    assert "Telegram" in props["hs_note_body"]
    assert [a["types"][0]["associationTypeId"] for a in first["associations"]] == [202, 214]
    assert [a["to"]["id"] for a in first["associations"]] == ["501", "900"]


def test_note_to_ticket_uses_228(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    adapter.append_entries([entry(entity=CrmRef("ticket", "70"))])
    associations = body_of(rsps.calls[0])["inputs"][0]["associations"]
    assert [a["types"][0]["associationTypeId"] for a in associations] == [202, 228]


def test_note_body_is_escaped_labelled_and_has_no_urls(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    photo = Attachment(
        kind=MessageKind.PHOTO,
        file_ref="AgAD",
        url="https://api.telegram.org/file/bot123:SECRET/photos/a.jpg",
        file_name="a.jpg",
    )
    adapter.append_entries([entry(text="<b>1 < 2</b>\nline", attachments=(photo,), is_edit=True)])
    body = body_of(rsps.calls[0])["inputs"][0]["properties"]["hs_note_body"]
    assert "&lt;b&gt;1 &lt; 2&lt;/b&gt;<br>line" in body
    assert "[photo: a.jpg]" in body and "edited" in body
    assert "http" not in body and "SECRET" not in body


def test_note_body_is_html_paragraphs_so_the_header_never_runs_into_the_message(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    """hs_note_body is HTML: a "\n" between header and text would vanish
    ("Мария via TelegramHello!")."""
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    adapter.append_entries([replace(entry(text="Hello!\nDo you deliver?"), sender_name="Мария")])
    body = body_of(rsps.calls[0])["inputs"][0]["properties"]["hs_note_body"]
    assert body == "<p><strong>Мария</strong> via Telegram</p><p>Hello!<br>Do you deliver?</p>"
    assert "\n" not in body


def test_communication_body_is_the_same_html(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.add_callback(responses.POST, COMMS_BATCH, callback=echo_batch("communications"))
    adapter.append_entries(
        [
            entry(
                text="a < b\nc",
                channel_kind="whatsapp",
                options={"timeline": "communication", "language": "ru"},
            )
        ]
    )
    body = body_of(rsps.calls[0])["inputs"][0]["properties"]["hs_communication_body"]
    assert body == "<p><strong>Ann</strong> через WhatsApp</p><p>a &lt; b<br>c</p>"


def test_communication_for_whatsapp(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.add_callback(responses.POST, COMMS_BATCH, callback=echo_batch("communications"))
    result = adapter.append_entries(
        [entry(channel_kind="whatsapp", options={"timeline": "communication"})]
    )
    assert result == {"m-1": (CrmRef("communication", "1000"),)}
    item = body_of(rsps.calls[0])["inputs"][0]
    assert item["properties"]["hs_communication_channel_type"] == "WHATS_APP"
    assert item["properties"]["hs_communication_logged_from"] == "CRM"
    assert "Hello" in item["properties"]["hs_communication_body"]
    assert [a["types"][0]["associationTypeId"] for a in item["associations"]] == [81, 85]


def test_communication_for_a_channel_hubspot_lacks_falls_back_to_note(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    result = adapter.append_entries([entry(options={"timeline": "communication"})])
    assert result == {"m-1": (CrmRef("note", "1000"),)}


def test_batches_split_at_100(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    counter = iter(range(0, 10_000, 100))

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        return echo_batch("notes", start_id=10_000 + next(counter))(request)

    rsps.add_callback(responses.POST, NOTES_BATCH, callback=callback)
    entries = [entry(f"m-{i}", sequence=i) for i in range(250)]
    result = adapter.append_entries(entries)
    assert [len(body_of(c)["inputs"]) for c in rsps.calls] == [100, 100, 50]
    assert len(result) == 250 and len({refs[0].id for refs in result.values()}) == 250
    # each entry is mapped to the record that carries its own bridge id
    sent = {
        item["properties"]["bridge_message_id"]
        for call in rsps.calls
        for item in body_of(call)["inputs"]
    }
    assert sent == {e.bridge_id for e in entries}


def test_maybe_written_entries_are_looked_up_not_rewritten(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/notes/search",
        json=search_page(obj(55, bridge_message_id="m-1")),
    )
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    result = adapter.append_entries(
        [entry("m-1", maybe_written=True), entry("m-2", maybe_written=True)]
    )
    assert result == {"m-1": (CrmRef("note", "55"),), "m-2": (CrmRef("note", "1000"),)}
    search, write = rsps.calls
    assert body_of(search)["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "bridge_message_id", "operator": "IN", "values": ["m-1", "m-2"]}
            ]
        }
    ]
    assert [i["properties"]["bridge_message_id"] for i in body_of(write)["inputs"]] == ["m-2"]


def test_all_found_means_no_write(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/notes/search",
        json=search_page(obj(55, bridge_message_id="m-1")),
    )
    assert adapter.append_entries([entry("m-1", maybe_written=True)]) == {
        "m-1": (CrmRef("note", "55"),)
    }
    assert len(rsps.calls) == 1


def test_a_failed_batch_raises(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.post(NOTES_BATCH, status=502, body="")
    with pytest.raises(AmbiguousError):
        adapter.append_entries([entry()])


def test_multi_status_reports_only_what_was_written(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    answer = batch_answer([obj(1, bridge_message_id="m-1")])
    answer["status"] = "COMPLETE"
    answer["numErrors"] = 1
    answer["errors"] = [
        {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": "Property values were not valid",
            "context": {},
            "errors": [],
            "links": {},
        }
    ]
    rsps.post(NOTES_BATCH, status=207, json=answer)
    assert adapter.append_entries([entry("m-1"), entry("m-2")]) == {"m-1": (CrmRef("note", "1"),)}


def test_timeline_none_writes_nothing(adapter: HubSpotAdapter) -> None:
    assert adapter.append_entries([entry(options={"timeline": "none"})]) == {"m-1": ()}


INBOX_SETTINGS = {
    "inbox": True,
    "channel_id": "ch-1",
    "channel_accounts": {"7": "ca-1"},
    "channel_identifiers": {"7": "bot-123"},
}


def inbox_answer(message_id: str = "msg-1") -> dict[str, Any]:
    return {"id": message_id, "conversationsThreadId": "th-1", "direction": "INCOMING"}


def test_inbox_message_per_entry(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings=INBOX_SETTINGS)
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    rsps.post(
        f"{API}/conversations/v3/custom-channels/ch-1/messages", status=201, json=inbox_answer()
    )
    result = adapter.append_entries([entry(options={"timeline": "note", "inbox": True})])
    assert result == {"m-1": (CrmRef("note", "1000"), CrmRef("message", "msg-1"))}
    message = body_of(rsps.calls[-1])
    assert message == {
        "messageDirection": "INCOMING",
        "channelAccountId": "ca-1",
        "senders": [
            {
                "deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "tg-user-1"},
                "name": "Ann",
            }
        ],
        "recipients": [
            {"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "bot-123"}}
        ],
        "text": "Hello",
        "attachments": [],
        "timestamp": "2025-03-01T12:30:45.123Z",
        "integrationThreadId": "conv-1",
        "integrationIdempotencyId": "m-1",
        "associateWithContactId": 501,
    }


def test_inbox_before_setup_finished_waits(rsps: responses.RequestsMock) -> None:
    """An install whose setup still runs when the first messages arrive:
    a wait (retryable, nothing written), never a failed message."""
    adapter, _ = make_adapter(settings={"inbox": True})
    with pytest.raises(NotReadyError, match="bridge crm setup") as caught:
        adapter.append_entries([entry(options={"timeline": "none", "inbox": True})])
    assert caught.value.nothing_written and len(rsps.calls) == 0


@pytest.mark.parametrize(
    ("n", "inbox", "expected_calls"),
    [(1, False, 1), (1, True, 2), (20, False, 1), (250, False, 3)],
)
def test_crm_calls_per_message(
    rsps: responses.RequestsMock, n: int, inbox: bool, expected_calls: int
) -> None:
    """Calls per message once the conversation is open (contact and deal known)."""
    adapter, _ = make_adapter(settings=INBOX_SETTINGS)
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    rsps.post(
        f"{API}/conversations/v3/custom-channels/ch-1/messages", status=201, json=inbox_answer()
    )
    entries = [
        entry(f"m-{i}", sequence=i, options={"timeline": "note", "inbox": inbox}) for i in range(n)
    ]
    adapter.append_entries(entries)
    calls = len(rsps.calls)
    expected = math.ceil(n / 100) + (n if inbox else 0)
    assert calls == expected == expected_calls
    if not inbox:
        assert calls / n <= 1.1


# --------------------------------------------------------------------------
# tasks and owners
# --------------------------------------------------------------------------


def task_draft(**extra: Any) -> TaskDraft:
    return TaskDraft(
        bridge_id="task-1",
        subject="Reply to Ann",
        body="Ann wrote on Telegram",
        due_at=T0,
        contact=CrmRef("contact", "501"),
        entity=CrmRef("deal", "900"),
        owner_id="101",
        **extra,
    )


def test_create_task(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.post(f"{API}/crm/v3/objects/tasks", status=201, json=obj(300))
    assert adapter.create_task(task_draft()) == CrmRef("task", "300")
    body = body_of(rsps.calls[0])
    assert body["properties"] == {
        "hs_task_subject": "Reply to Ann",
        "hs_task_body": "Ann wrote on Telegram",
        "hs_timestamp": "2025-03-01T12:30:45.123Z",
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": "MEDIUM",
        "hs_task_type": "TODO",
        "bridge_message_id": "task-1",
        "hubspot_owner_id": "101",
    }
    assert [a["types"][0]["associationTypeId"] for a in body["associations"]] == [204, 216]


def test_maybe_written_task_found_is_not_created_again(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/tasks/search",
        json=search_page(obj(301, bridge_message_id="task-1")),
    )
    assert adapter.create_task(task_draft(maybe_written=True)) == CrmRef("task", "301")
    assert len(rsps.calls) == 1


def owner(owner_id: str, first: str, email: str) -> dict[str, Any]:
    return {
        "id": owner_id,
        "firstName": first,
        "lastName": "Rep",
        "email": email,
        "type": "PERSON",
        "archived": False,
        "createdAt": "2025-01-01T00:00:00.000Z",
        "updatedAt": "2025-01-01T00:00:00.000Z",
    }


def test_list_owners_follows_paging(rsps: responses.RequestsMock, adapter: HubSpotAdapter) -> None:
    rsps.get(
        f"{API}/crm/v3/owners/",
        json={"results": [owner("101", "Bob", "bob@x.io")], "paging": {"next": {"after": "2"}}},
        match=[responses.matchers.query_param_matcher({"limit": "100"})],
    )
    rsps.get(
        f"{API}/crm/v3/owners/",
        json={"results": [owner("102", "Eve", "eve@x.io")]},
        match=[responses.matchers.query_param_matcher({"limit": "100", "after": "2"})],
    )
    owners = adapter.list_owners()
    assert [(o.id, o.email, o.name, o.active) for o in owners] == [
        ("101", "bob@x.io", "Bob Rep", True),
        ("102", "eve@x.io", "Eve Rep", True),
    ]


# --------------------------------------------------------------------------
# webhooks: signature
# --------------------------------------------------------------------------


def v3_vector() -> dict[str, Any]:
    return next(c for c in VECTORS["cases"] if c["version"] == "v3")


def vector_request(**headers: str) -> WebhookRequest:
    case = v3_vector()
    base = {
        "x-hubspot-signature-v3": case["signature_base64"],
        "x-hubspot-request-timestamp": case["timestamp"],
    }
    base.update({k.lower(): v for k, v in headers.items()})
    return WebhookRequest(
        method=case["method"],
        url=VECTORS["url"],
        headers={k: v for k, v in base.items() if v is not None},
        body=VECTORS["request_body"].encode(),
    )


def vector_now(offset: float = 0.0) -> float:
    return int(v3_vector()["timestamp"]) / 1000 + offset


def test_v3_signature_matches_hubspot_vector() -> None:
    case = v3_vector()
    assert (
        sign_v3(
            VECTORS["client_secret"],
            case["method"],
            VECTORS["url"],
            VECTORS["request_body"].encode(),
            case["timestamp"],
        )
        == case["signature_base64"]
    )
    verify_v3(vector_request(), VECTORS["client_secret"], now=vector_now())


@pytest.mark.parametrize("offset", [-299.0, 299.0])
def test_v3_window_accepts_inside(offset: float) -> None:
    verify_v3(vector_request(), VECTORS["client_secret"], now=vector_now(-offset))


@pytest.mark.parametrize("offset", [-301.0, 301.0])
def test_v3_window_rejects_outside_both_ways(offset: float) -> None:
    with pytest.raises(SignatureError):
        verify_v3(vector_request(), VECTORS["client_secret"], now=vector_now(-offset))


def test_v3_rejects_wrong_secret_body_and_url() -> None:
    secret = VECTORS["client_secret"]
    with pytest.raises(SignatureError):
        verify_v3(vector_request(), "another-secret", now=vector_now())
    case = v3_vector()
    flipped = bytearray(base64.b64decode(case["signature_base64"]))
    flipped[0] ^= 1
    with pytest.raises(SignatureError):
        verify_v3(
            vector_request(**{"X-HubSpot-Signature-v3": base64.b64encode(flipped).decode()}),
            secret,
            now=vector_now(),
        )
    tampered = vector_request()
    for request in (
        WebhookRequest(tampered.method, tampered.url, tampered.headers, tampered.body + b" "),
        WebhookRequest(tampered.method, tampered.url + "?x=1", tampered.headers, tampered.body),
        WebhookRequest("PUT", tampered.url, tampered.headers, tampered.body),
    ):
        with pytest.raises(SignatureError):
            verify_v3(request, secret, now=vector_now())


JUNK_HEADERS = [
    {"X-HubSpot-Signature-v3": None},
    {"X-HubSpot-Request-Timestamp": None},
    {"X-HubSpot-Signature-v3": ""},
    {"X-HubSpot-Request-Timestamp": ""},
    {"X-HubSpot-Request-Timestamp": "not-a-number"},
    {"X-HubSpot-Request-Timestamp": "1e12"},
    {"X-HubSpot-Request-Timestamp": "-1693657560000"},
    {"X-HubSpot-Request-Timestamp": "9" * 400},
    {"X-HubSpot-Request-Timestamp": "١٦٩٣٦٥٧٥٦٠٠٠٠"},  # Arabic-Indic digits: int() accepts
    {"X-HubSpot-Signature-v3": "!!!notbase64"},
    {"X-HubSpot-Signature-v3": "v1,a,b"},
    {"X-HubSpot-Signature-v3": "garbage-without-comma"},
    {"X-HubSpot-Signature-v3": "é" * 44},
    {"X-HubSpot-Signature-v3": "A" * 10_000},
]


@pytest.mark.parametrize("headers", JUNK_HEADERS)
def test_junk_headers_are_signature_errors(headers: dict[str, Any]) -> None:
    with pytest.raises(SignatureError):
        verify_v3(vector_request(**headers), VECTORS["client_secret"], now=vector_now())


def test_junk_url_or_body_is_a_signature_error() -> None:
    request = vector_request()
    odd = WebhookRequest(request.method, "https://x/\udcff", request.headers, b"\xff\xfe")
    with pytest.raises(SignatureError):
        verify_v3(odd, VECTORS["client_secret"], now=vector_now())


def signed(
    body: bytes, *, url: str = "https://bridge.example/webhooks/crm/hubspot/k"
) -> WebhookRequest:
    timestamp = str(int(time.time() * 1000))
    message = b"POST" + url.encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(SECRET.encode(), message, hashlib.sha256).digest())
    return WebhookRequest(
        method="POST",
        url=url,
        headers={
            "x-hubspot-signature-v3": signature.decode(),
            "x-hubspot-request-timestamp": timestamp,
            "content-type": "application/json",
        },
        body=body,
    )


def test_adapter_verifies_with_the_app_client_secret(adapter: HubSpotAdapter) -> None:
    adapter.verify_webhook(signed(b'{"type":"X"}'))
    without_secret = HubSpotAdapter(
        CrmAccountInfo(tenant_id=1, kind="hubspot", account_id=PORTAL, app={}),
        FakeCredentials(oauth_creds()),
        HttpClient(API),
    )
    with pytest.raises(SignatureError):
        without_secret.verify_webhook(signed(b"{}"))


# --------------------------------------------------------------------------
# webhooks: parsing (shape per FACTS 3.7, UNCONFIRMED)
# --------------------------------------------------------------------------


def reply_payload(**message: Any) -> dict[str, Any]:
    base = {
        "id": "hs-msg-1",
        "conversationsThreadId": "th-1",
        "channelId": "ch-1",
        "channelAccountId": "ca-1",
        "direction": "OUTGOING",
        "text": "Hi Ann, how can I help?",
        "senders": [{"actorId": "A-101", "name": "Bob Rep"}],
        "recipients": [
            {"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "tg-user-1"}}
        ],
        "createdAt": "2025-03-01T12:31:00.500Z",
        "channelIntegrationThreadIds": ["conv-1"],
        "client": {"clientType": "HUBSPOT"},
        "type": "MESSAGE",
    }
    base.update(message)
    return {
        "type": "OUTGOING_CHANNEL_MESSAGE_CREATED",
        "portalId": int(PORTAL),
        "channelId": "ch-1",
        "message": base,
    }


def request_with(payload: Any) -> WebhookRequest:
    return signed(json.dumps(payload).encode())


def test_parse_reply(adapter: HubSpotAdapter) -> None:
    (event,) = adapter.parse_webhook(request_with(reply_payload()))
    assert event.kind is CrmEventKind.REPLY
    assert event.external_id == "hs-msg-1"
    assert event.thread_key == "conv-1"
    assert event.crm_thread_id == "th-1"
    assert event.recipient == "tg-user-1"
    assert event.text == "Hi Ann, how can I help?"
    assert (event.author_id, event.author_name) == ("A-101", "Bob Rep")
    assert event.occurred_at == dt.datetime(2025, 3, 1, 12, 31, 0, 500000, tzinfo=dt.UTC)
    assert event.raw["message"]["id"] == "hs-msg-1"


def test_parse_rich_text_only(adapter: HubSpotAdapter) -> None:
    payload = reply_payload(text="", richText="<p>Hello&nbsp;<b>there</b></p><p>Line&amp;2</p>")
    (event,) = adapter.parse_webhook(request_with(payload))
    assert event.text == "Hello\xa0there\nLine&2"


def test_parse_tolerates_an_array(adapter: HubSpotAdapter) -> None:
    events = adapter.parse_webhook(request_with([reply_payload(), reply_payload(id="hs-msg-2")]))
    assert [e.external_id for e in events] == ["hs-msg-1", "hs-msg-2"]


@pytest.mark.parametrize(
    "payload",
    [
        reply_payload(direction="INCOMING"),
        reply_payload(client={"clientType": "INTEGRATION", "integrationAppId": 777}),
        {"type": "CHANNEL_ACCOUNT_CREATED", "portalId": int(PORTAL), "channelAccountId": "ca-1"},
        {"type": "CHANNEL_ACCOUNT_UPDATED", "portalId": int(PORTAL), "channelAccountId": "ca-1"},
        {"type": "SOMETHING_NEW", "portalId": int(PORTAL), "eventId": 5},
    ],
)
def test_other_events_are_unknown(adapter: HubSpotAdapter, payload: dict[str, Any]) -> None:
    (event,) = adapter.parse_webhook(request_with(payload))
    assert event.kind is CrmEventKind.UNKNOWN
    assert event.external_id and event.external_id != "hs-msg-1"
    assert event.raw == payload


@pytest.mark.parametrize("portal", [1, None])
def test_payload_for_another_portal_is_refused(adapter: HubSpotAdapter, portal: Any) -> None:
    payload = reply_payload()
    payload["portalId"] = portal
    with pytest.raises(SignatureError):
        adapter.parse_webhook(request_with(payload))
    with pytest.raises(SignatureError):
        adapter.parse_webhook(request_with([reply_payload(), payload]))


@pytest.mark.parametrize(
    "body",
    [b"not json", b"", b"42", b'"text"', b"[]", b"[1, 2]", b"\xff\xfe"],
)
def test_bad_bodies_are_payload_errors(adapter: HubSpotAdapter, body: bytes) -> None:
    with pytest.raises(PayloadError):
        adapter.parse_webhook(signed(body))


def test_reply_without_message_id_is_payload_error(adapter: HubSpotAdapter) -> None:
    payload = reply_payload()
    del payload["message"]["id"]
    with pytest.raises(PayloadError):
        adapter.parse_webhook(request_with(payload))


# --------------------------------------------------------------------------
# delivery reports
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_text", "expected"),
    [
        (DeliveryStatus.SENT, None, {"statusType": "SENT"}),
        (DeliveryStatus.DELIVERED, None, {"statusType": "SENT"}),
        (DeliveryStatus.READ, None, {"statusType": "READ"}),
        (
            DeliveryStatus.FAILED,
            "bot was blocked by the user",
            {"statusType": "FAILED", "errorMessage": "bot was blocked by the user"},
        ),
    ],
)
def test_report_delivery(
    rsps: responses.RequestsMock,
    status: DeliveryStatus,
    error_text: str | None,
    expected: dict[str, str],
) -> None:
    adapter, _ = make_adapter(settings=INBOX_SETTINGS)
    rsps.patch(
        f"{API}/conversations/v3/custom-channels/ch-1/messages/hs-msg-1", json={"id": "hs-msg-1"}
    )
    adapter.report_delivery(DeliveryReport("hs-msg-1", status, error=error_text))
    assert body_of(rsps.calls[0]) == expected
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS}"


def test_report_delivery_for_unknown_message(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings=INBOX_SETTINGS)
    rsps.patch(
        f"{API}/conversations/v3/custom-channels/ch-1/messages/nope",
        status=404,
        json=error("not found", category="OBJECT_NOT_FOUND"),
    )
    with pytest.raises(NotFoundError):
        adapter.report_delivery(DeliveryReport("nope", DeliveryStatus.SENT))


def test_a_note_whose_inbox_message_failed_is_reported_and_not_written_again(
    rsps: responses.RequestsMock,
) -> None:
    """The note of every entry is written, then the second entry's inbox
    message is refused: the error says the first entry is complete and the
    others have their note (``progress``); the retry with those refs writes
    no note again and publishes only what is missing."""
    adapter, _ = make_adapter(settings=INBOX_SETTINGS)
    both = {"timeline": "note", "inbox": True}
    batch = [entry(f"m-{i}", sequence=i, options=both) for i in (1, 2, 3)]
    rsps.add_callback(responses.POST, NOTES_BATCH, callback=echo_batch("notes"))
    messages = f"{API}/conversations/v3/custom-channels/ch-1/messages"
    rsps.post(messages, status=201, json=inbox_answer("msg-1"))
    rsps.post(messages, status=400, json={"status": "error", "message": "channel paused"})
    with pytest.raises(PermanentError) as caught:
        adapter.append_entries(batch)
    notes = {b: (CrmRef("note", n),) for b, n in (("m-2", "1001"), ("m-3", "1002"))}
    assert caught.value.partial == {"m-1": (CrmRef("note", "1000"), CrmRef("message", "msg-1"))}
    assert caught.value.progress == notes
    rsps.reset()
    rsps.post(messages, status=201, json=inbox_answer("msg-2"))
    rsps.post(messages, status=201, json=inbox_answer("msg-3"))
    retry = [replace(e, maybe_written=True, written=notes[e.bridge_id]) for e in batch[1:]]
    result = adapter.append_entries(retry)
    assert [c.request.url for c in rsps.calls] == [messages, messages]  # no note, no search
    assert result == {
        "m-2": (CrmRef("note", "1001"), CrmRef("message", "msg-2")),
        "m-3": (CrmRef("note", "1002"), CrmRef("message", "msg-3")),
    }
