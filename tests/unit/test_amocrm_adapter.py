# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Unit tests of the amoCRM adapter (HTTP mocked at one seam: ``responses``).

Fixture source: there are **no redistributable amoCRM fixtures** (FACTS.md
section 1 and ``../shared/contracts/README.md``). Every payload below is
ours, written from the facts in FACTS.md 1.x (cited next to each), not a
capture of a real amoCRM answer.

Every request that goes to the Chats API host is checked by the autouse
``amojo_signatures`` fixture with an independent implementation of the
signature in FACTS 1.13 (Date, Content-MD5 of the raw bytes sent,
Content-Type, X-Signature over the five lines).
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

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
    WebhookError,
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
    Installed,
    MessageKind,
    Rate,
    SenderProfile,
    SetupResult,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from bridge.schema import SettingsError, fields_of, load, secret_names
from crm_adapters import REGISTRY
from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.amocrm.chats import body_signature, rfc2822, sign_request
from crm_adapters.amocrm.inbox import forget_chats
from crm_adapters.amocrm.settings import AmoCrmApp, AmoCrmSettings
from crm_adapters.amocrm.timeline import marker, marker_hash, parse_marker
from crm_adapters.amocrm.webhooks import decode_brackets, items, strip_reply_marker
from crm_adapters.freetext import HIDDEN_CHARS, strip_hidden, strip_markers
from tests.support.fakes import MemoryCredentials as FakeCredentials
from tests.support.fakes import RecordingLimiter

SUB = "acme"
API = "https://acme.amocrm.ru"
AMOJO = "https://amojo.amocrm.ru"
SECRET = "client-secret-1"
CHANNEL_SECRET = "channel-secret-1"
ACCESS = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.access-token-payload-0123456789abcdef"
REFRESH = "def50200refresh-token-0123456789abcdef0123456789abcdef"
ACCOUNT_ID = "30100"
AMOJO_ID = "5d1c0b6e-0a4d-4c1e-9d3b-2a6f8e9b0c11"
SCOPE = f"chan-1_{AMOJO_ID}"
T0 = dt.datetime(2025, 3, 1, 9, 15, 30, 250000, tzinfo=dt.UTC)
LEAD = CrmRef("lead", "900")
CONTACT = CrmRef("contact", "501")

APP = {
    "client_id": "integration-uuid-1",
    "client_secret": SECRET,
    "channel_id": "chan-1",
    "channel_secret": CHANNEL_SECRET,
    "bot_id": "bot-1",
}
SETTINGS: dict[str, Any] = {
    "subdomain": SUB,
    "amo_account_id": ACCOUNT_ID,
    "amojo_id": AMOJO_ID,
    "identity_fields": {"telegram": 701},
    "conversation_field": 801,
    "custom_fields": {"leads": {"utm_source": 811}, "contacts": {"company_size": 711}},
    "redirect_uri": "https://bridge.example/oauth/amocrm/callback",
}
CHAT_SETTINGS = {**SETTINGS, "scope_id": SCOPE}


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    # a request without a registered answer raises ConnectionError: no test
    # can reach the network
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def expected_signature(request: requests.PreparedRequest) -> str:
    """FACTS 1.13, written independently of the adapter's code."""
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    md5 = hashlib.md5(body).hexdigest()  # noqa: S324
    assert request.headers["Content-MD5"] == md5
    lines = [
        request.method or "",
        md5,
        request.headers.get("Content-Type", ""),
        request.headers.get("Date", ""),
        urlsplit(request.url or "").path,
    ]
    return hmac.new(CHANNEL_SECRET.encode(), "\n".join(lines).encode(), hashlib.sha1).hexdigest()


@pytest.fixture(autouse=True)
def amojo_signatures(rsps: responses.RequestsMock) -> Iterator[None]:
    """After each test: every Chats API request was signed per FACTS 1.13."""
    forget_chats()
    yield
    for call in rsps.calls:
        request = call.request
        if not (request.url or "").startswith(AMOJO):
            continue
        assert request.headers["Content-Type"] == "application/json"
        date = email.utils.parsedate_to_datetime(request.headers["Date"])
        assert abs(date.timestamp() - time.time()) < 900  # valid 15 minutes
        assert request.headers["X-Signature"] == expected_signature(request)


def oauth_creds(**extra: Any) -> dict[str, Any]:
    return {
        "type": "oauth",
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_at": int(time.time()) + 86400,
        **extra,
    }


def app_of(values: Mapping[str, str]) -> AmoCrmApp:
    """The deployment's app settings as the core hands them to the class
    methods: read through the adapter's ``App`` schema."""
    return load(AmoCrmAdapter.App, values, strict=True)


def make_adapter(
    *,
    settings: Mapping[str, Any] | None = None,
    creds: Mapping[str, Any] | None = None,
    limiter: RecordingLimiter | None = None,
    app: Mapping[str, str] | None = None,
    api_base: str | None = None,
    **tenant: Any,
) -> tuple[AmoCrmAdapter, FakeCredentials]:
    """An adapter for one tenant; ``tenant``: what the core takes from the
    tenant's mapping (``inbox``, ``language``, ``timezone``)."""
    provider = FakeCredentials(creds or oauth_creds())
    settings = dict(SETTINGS if settings is None else settings)
    app = dict(APP if app is None else app)
    # every key a test sets is a declared field (a stale key would be dropped)
    load(AmoCrmAdapter.Settings, settings, strict=True)
    load(AmoCrmAdapter.App, app, strict=True)
    account = CrmAccountInfo(
        tenant_id=1,
        kind="amocrm",
        account_id=ACCOUNT_ID,
        settings=settings,
        app=app,
        api_base=api_base,
        webhook_url="https://bridge.example/webhooks/crm/amocrm/tenant-key",
        **tenant,
    )
    http = HttpClient(api_base or AmoCrmAdapter.default_api_base(), limiter=limiter)
    adapter = AmoCrmAdapter(account, provider, http)
    provider.refresher = adapter.refresh_credentials
    return adapter, provider


@pytest.fixture
def adapter() -> AmoCrmAdapter:
    return make_adapter()[0]


def body_of(call: Any) -> Any:
    return json.loads(call.request.body)


def collection(key: str, *records: Mapping[str, Any], next_page: bool = False) -> dict[str, Any]:
    """A hal+json collection (FACTS 1.3)."""
    links: dict[str, Any] = {"self": {"href": f"{API}/api/v4/{key}"}}
    if next_page:
        links["next"] = {"href": f"{API}/api/v4/{key}?page=2"}
    return {"_page": 1, "_links": links, "_embedded": {key: list(records)}}


def contact(contact_id: int, *, identity: str | None = None, phones=(), emails=(), owner=101):
    fields: list[dict[str, Any]] = []
    if identity is not None:
        fields.append(
            {"field_id": 701, "field_name": "Telegram ID", "values": [{"value": identity}]}
        )
    if phones:
        fields.append(
            {
                "field_id": 100,
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": [{"value": p, "enum_id": 1, "enum_code": "WORK"} for p in phones],
            }
        )
    if emails:
        fields.append(
            {
                "field_id": 101,
                "field_code": "EMAIL",
                "field_type": "multitext",
                "values": [{"value": e, "enum_id": 3, "enum_code": "WORK"} for e in emails],
            }
        )
    return {
        "id": contact_id,
        "name": "Ann",
        "responsible_user_id": owner,
        "custom_fields_values": fields or None,
        "account_id": int(ACCOUNT_ID),
    }


def lead(lead_id: int, *, conversation: str | None = None, status: int = 1001, deleted=False):
    fields = [{"field_id": 801, "values": [{"value": conversation}]}] if conversation else None
    return {
        "id": lead_id,
        "name": "Telegram: Ann",
        "status_id": status,
        "pipeline_id": 3001,
        "responsible_user_id": 101,
        "is_deleted": deleted,
        "custom_fields_values": fields,
    }


#: how the mapping wants an entry written (TimelineEntry's typed fields)
NOTE: dict[str, Any] = {"timeline": "note", "inbox": False, "channel_title": "Telegram"}
CHAT: dict[str, Any] = {"timeline": "none", "inbox": True, "channel_title": "Telegram"}


def entry(
    bridge_id: str = "m-1",
    *,
    text: str = "Hello",
    kind: MessageKind = MessageKind.TEXT,
    sequence: int | None = 1,
    entity: CrmRef | None = LEAD,
    contact_ref: CrmRef | None = CONTACT,
    maybe_written: bool = False,
    options: Mapping[str, Any] | None = None,
    conversation: str = "conv-1",
    **extra: Any,
) -> TimelineEntry:
    """An entry as the core builds it; ``options``: how the mapping wants it
    written (``timeline``, ``inbox``, ``language``, ``timezone``,
    ``channel_title``, ``first_in_conversation``, ``edit_of``), over the
    defaults (a note, no inbox, the channel's registry title)."""
    return TimelineEntry(
        bridge_id=bridge_id,
        conversation_uid=conversation,
        channel_kind="telegram",
        channel_account="7",
        direction="in",
        kind=kind,
        text=text,
        occurred_at=T0,
        contact=contact_ref,
        entity=entity,
        sequence=sequence,
        sender_name="Ann",
        sender_identifier="tg-user-1",
        owner_id="101",
        maybe_written=maybe_written,
        **{**NOTE, **(options or {})},
        **extra,
    )


def echo_notes(start_id: int = 5000) -> Callable[..., Any]:
    """``POST /api/v4/{leads|contacts}/notes`` echoing ``request_id`` (FACTS 1.9)."""

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        items_ = json.loads(request.body)
        notes = [
            {"id": start_id + i, "entity_id": item["entity_id"], "request_id": item["request_id"]}
            for i, item in enumerate(items_)
        ]
        return 200, {}, json.dumps(collection("notes", *notes))

    return callback


def sent(msgid: str = "amojo-msg-1") -> dict[str, Any]:
    """The Chats API's answer to new_message (FACTS 1.13)."""
    return {
        "new_message": {
            "conversation_id": "amojo-conv-1",
            "sender_id": "amojo-user-1",
            "receiver_id": "",
            "msgid": msgid,
            "ref_id": "m-1",
        }
    }


# --------------------------------------------------------------------------
# class attributes and the rate budget
# --------------------------------------------------------------------------


def most_in_one_second(rate: Rate) -> float:
    return rate.capacity + rate.per_second


def test_identity_and_registry() -> None:
    assert AmoCrmAdapter.kind == "amocrm"
    assert AmoCrmAdapter.title == "amoCRM"
    assert AmoCrmAdapter.entity_types == ("lead", "unsorted")
    assert "application/x-www-form-urlencoded" in AmoCrmAdapter.content_types
    assert "application/json" in AmoCrmAdapter.content_types
    assert REGISTRY["amocrm"] == "crm_adapters.amocrm:AmoCrmAdapter"
    assert most_in_one_second(AmoCrmAdapter.rate) <= 7  # FACTS 1.4


def test_settings_are_declared_with_help_and_secrets_marked() -> None:
    assert AmoCrmAdapter.App is AmoCrmApp and AmoCrmAdapter.Settings is AmoCrmSettings
    for schema in (AmoCrmApp, AmoCrmSettings):
        for spec in fields_of(schema):
            assert spec.metadata["help"], f"{schema.__name__}.{spec.name} has no help"
    assert secret_names(AmoCrmApp) == {"client_secret", "channel_secret"}
    assert secret_names(AmoCrmSettings) == set()
    # what the install and the setup record, not an admin
    assert {f.name for f in fields_of(AmoCrmSettings) if f.metadata["state"]} == {
        "subdomain",
        "domain",
        "redirect_uri",
        "amo_account_id",
        "amojo_id",
        "identity_fields",
        "conversation_field",
        "custom_fields",
        "scope_id",
    }
    defaults = AmoCrmSettings()
    assert (defaults.reply_marker, defaults.rate_per_second, defaults.marker_style) == (
        "@client",
        7.0,  # FACTS 1.4
        "hidden",
    )
    assert AmoCrmApp().channel_title == "CRM bridge"
    # a typo is refused with the values it may take, not taken for the default
    with pytest.raises(SettingsError, match="hidden, visible"):
        load(AmoCrmSettings, {"marker_style": "visibel"}, strict=True)


def test_settings_stored_by_an_earlier_version_still_load() -> None:
    """``inbox``, ``language`` and ``timezone`` came from the mapping into
    the stored settings; they are the mapping's now (CrmAccountInfo)."""
    account = CrmAccountInfo(
        tenant_id=1,
        kind="amocrm",
        account_id=ACCOUNT_ID,
        settings={**SETTINGS, "inbox": True, "language": "ru", "timezone": "Europe/Moscow"},
        app=APP,
        inbox=False,
    )
    adapter = AmoCrmAdapter(account, FakeCredentials(oauth_creds()))
    assert adapter.settings.subdomain == SUB and adapter.settings.conversation_field == 801
    assert adapter.app.channel_secret == CHANNEL_SECRET


@pytest.mark.parametrize("inbox", [False, True])
def test_a_drain_holds_one_notes_request(inbox: bool) -> None:
    adapter, _ = make_adapter(inbox=inbox)
    assert adapter.entries_per_request == 50  # notes per POST (FACTS 1.4 folklore)


@pytest.mark.parametrize("per_second", [1, 3, 7, 20])
def test_rate_override_never_exceeds_the_setting(per_second: int) -> None:
    adapter, _ = make_adapter(settings={**SETTINGS, "rate_per_second": per_second})
    assert math.floor(most_in_one_second(adapter.api.limit.rate)) <= per_second
    assert adapter.api.limit.rate.per_second > 0


def test_api_and_amojo_draw_from_separate_shared_buckets(rsps: responses.RequestsMock) -> None:
    limiter = RecordingLimiter()
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS, limiter=limiter)
    rsps.get(f"{API}/api/v4/users", status=204)
    rsps.post(f"{AMOJO}/v2/origin/custom/{SCOPE}", json=sent())
    adapter.list_owners()
    adapter.append_entries([entry(contact_ref=None, entity=None, options=CHAT)])
    keys = [key for key, _ in limiter.acquired]
    assert keys == [f"amocrm:{ACCOUNT_ID}:api", f"amocrm:{ACCOUNT_ID}:amojo"]


# --------------------------------------------------------------------------
# OAuth (FACTS 1.2)
# --------------------------------------------------------------------------


def test_install_url() -> None:
    url = AmoCrmAdapter.install_url(app_of(APP), redirect_uri="https://b.example/cb", state="s 1")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://www.amocrm.ru/oauth"
    assert parse_qs(parts.query) == {
        "client_id": ["integration-uuid-1"],
        "state": ["s 1"],
        "mode": ["post_message"],
    }
    sandbox = AmoCrmAdapter.install_url(
        app_of({**APP, "auth_base": "http://127.0.0.1:9/sandbox/amocrm/www"}),
        redirect_uri="x",
        state="s",
    )
    assert sandbox.startswith("http://127.0.0.1:9/sandbox/amocrm/www/oauth?")


def token_answer(access: str = ACCESS, refresh: str = REFRESH) -> dict[str, Any]:
    """FACTS 1.2: the token endpoint's 200 answer."""
    return {
        "token_type": "Bearer",
        "expires_in": 86400,
        "server_time": 1751621727,
        "access_token": access,
        "refresh_token": refresh,
    }


def account_answer() -> dict[str, Any]:
    """``GET /api/v4/account?with=amojo_id`` (FACTS 1.11), abbreviated."""
    return {"id": int(ACCOUNT_ID), "name": "Acme", "subdomain": SUB, "amojo_id": AMOJO_ID}


OAUTH_PROBLEM = {
    # FACTS 1.2 (community captures): the 400 body of the token endpoint
    "hint": "Authorization code has been revoked",
    "title": "Некорректный запрос",
    "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
    "status": 400,
    "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
}


def test_exchange_code_posts_json_to_the_referer_account(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/oauth2/access_token", json=token_answer())
    rsps.get(f"{API}/api/v4/account", json=account_answer())
    installed = AmoCrmAdapter.exchange_code(
        app_of(APP),
        code="code-1",
        redirect_uri="https://bridge.example/oauth/amocrm/callback",
        http=HttpClient(AmoCrmAdapter.default_api_base()),
        params={"code": "code-1", "referer": "acme.amocrm.ru", "platform": "1", "state": "s"},
    )
    assert body_of(rsps.calls[0]) == {
        "client_id": "integration-uuid-1",
        "client_secret": SECRET,
        "grant_type": "authorization_code",
        "code": "code-1",
        "redirect_uri": "https://bridge.example/oauth/amocrm/callback",
    }
    assert rsps.calls[0].request.headers["Content-Type"] == "application/json"
    assert rsps.calls[1].request.headers["Authorization"] == f"Bearer {ACCESS}"
    assert parse_qs(urlsplit(rsps.calls[1].request.url).query) == {"with": ["amojo_id"]}
    assert isinstance(installed, Installed)
    creds = installed.credentials
    assert creds["type"] == "oauth"
    assert creds["access_token"] == ACCESS and creds["refresh_token"] == REFRESH
    assert abs(creds["expires_at"] - (time.time() + 86400)) < 5
    assert installed.account_id == ACCOUNT_ID
    assert installed.settings == {
        "subdomain": SUB,
        "domain": "acme.amocrm.ru",
        "amo_account_id": ACCOUNT_ID,
        "amojo_id": AMOJO_ID,
        "redirect_uri": "https://bridge.example/oauth/amocrm/callback",
    }


def test_exchange_code_for_a_kommo_account_and_an_app_redirect_uri(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post("https://acme.kommo.com/oauth2/access_token", json=token_answer())
    rsps.get("https://acme.kommo.com/api/v4/account", json=account_answer())
    installed = AmoCrmAdapter.exchange_code(
        app_of({**APP, "redirect_uri": "https://configured.example/cb"}),
        code="c",
        redirect_uri="https://bridge.example/oauth/amocrm/callback",
        http=HttpClient(AmoCrmAdapter.default_api_base()),
        params={"referer": "acme.kommo.com", "platform": "2"},
    )
    assert body_of(rsps.calls[0])["redirect_uri"] == "https://configured.example/cb"
    assert installed.settings["domain"] == "acme.kommo.com"
    adapter, _ = make_adapter(settings=installed.settings)
    rsps.get("https://acme.kommo.com/api/v4/users", status=204)
    assert adapter.list_owners() == []


def test_exchange_code_with_a_sandbox_template(rsps: responses.RequestsMock) -> None:
    base = "http://127.0.0.1:9/sandbox/amocrm/{subdomain}"
    rsps.post("http://127.0.0.1:9/sandbox/amocrm/acme/oauth2/access_token", json=token_answer())
    rsps.get("http://127.0.0.1:9/sandbox/amocrm/acme/api/v4/account", json=account_answer())
    installed = AmoCrmAdapter.exchange_code(
        app_of(APP),
        code="c",
        redirect_uri="r",
        http=HttpClient(base),
        params={"referer": "acme.amocrm.ru"},
    )
    assert installed.settings["subdomain"] == SUB and "domain" not in installed.settings


@pytest.mark.parametrize(
    "referer",
    ["evil.example", "acme.amocrm.ru.evil.example", "a/b.amocrm.ru", "", "-x.amocrm.ru"],
)
def test_exchange_code_never_sends_the_secret_to_a_foreign_host(
    rsps: responses.RequestsMock, referer: str
) -> None:
    with pytest.raises(WebhookError):  # the callback is at fault: a 4xx
        AmoCrmAdapter.exchange_code(
            app_of(APP),
            code="c",
            redirect_uri="r",
            http=HttpClient(AmoCrmAdapter.default_api_base()),
            params={"referer": referer},
        )
    assert len(rsps.calls) == 0


def test_exchange_of_a_dead_code_is_auth_error(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/oauth2/access_token", status=400, json=OAUTH_PROBLEM)
    with pytest.raises(AuthError) as info:
        AmoCrmAdapter.exchange_code(
            app_of(APP),
            code="secret-code-xyz",
            redirect_uri="r",
            http=HttpClient(AmoCrmAdapter.default_api_base()),
            params={"referer": "acme.amocrm.ru"},
        )
    assert "secret-code-xyz" not in str(info.value)
    assert "revoked" in str(info.value)


# -- long-lived tokens (FACTS 1.1, 1.2) ---------------------------------------


def jwt(**claims: Any) -> str:
    """A JWT-shaped token with ``claims`` (ours: the claim names amoCRM's
    tokens carry, FACTS 1.1; the signature is never checked client-side)."""

    def part(value: Mapping[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    payload = {
        "aud": "integration-uuid-1",
        "iat": 1740820530,
        "exp": 1898586930,
        "sub": "101",
        "api_domain": "api-b.amocrm.ru",
        **claims,
    }
    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(payload)}.c2lnbmF0dXJl"


def test_a_long_lived_token_with_its_subdomain_is_an_install(rsps: responses.RequestsMock) -> None:
    token = jwt(account_id=int(ACCOUNT_ID), base_domain="amocrm.ru")
    installed = AmoCrmAdapter.token_credentials(f"  {SUB}:{token}\n")
    assert installed == Installed(
        ACCOUNT_ID,
        {"type": "long_lived", "access_token": token},
        {"subdomain": SUB, "domain": "acme.amocrm.ru", "amo_account_id": ACCOUNT_ID},
    )
    load(AmoCrmSettings, installed.settings, strict=True)
    # the tenant works: the account's own host, the token as is, never refreshed
    adapter, provider = make_adapter(settings=installed.settings, creds=installed.credentials)
    rsps.get(f"{API}/api/v4/users", status=204)
    assert adapter.list_owners() == []
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {token}"
    assert provider.calls == 0


@pytest.mark.parametrize(
    ("pasted", "host"),
    [
        # a bare subdomain: the token's base_domain says which amoCRM
        ("acme:{token}", "acme.kommo.com"),
        # the account's host or address: it wins
        ("acme.kommo.com:{token}", "acme.kommo.com"),
        ("https://acme.kommo.com/:{token}", "acme.kommo.com"),
        ("https://ACME.amocrm.com:{token}", "acme.amocrm.com"),
    ],
)
def test_a_long_lived_token_names_its_account_in_any_form(
    rsps: responses.RequestsMock, pasted: str, host: str
) -> None:
    token = jwt(account_id=int(ACCOUNT_ID), base_domain="kommo.com")
    installed = AmoCrmAdapter.token_credentials(pasted.format(token=token))
    assert installed.settings["subdomain"] == SUB and installed.settings["domain"] == host
    assert installed.credentials == {"type": "long_lived", "access_token": token}
    adapter, _ = make_adapter(settings=installed.settings, creds=installed.credentials)
    rsps.get(f"https://{host}/api/v4/users", status=204)
    assert adapter.list_owners() == []


def test_a_token_without_claims_needs_only_its_subdomain() -> None:
    installed = AmoCrmAdapter.token_credentials("acme:static-long-lived-token")
    assert installed == Installed(
        None, {"type": "long_lived", "access_token": "static-long-lived-token"}, {"subdomain": SUB}
    )


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        # amoCRM's tokens name no subdomain (FACTS 1.1): the fix is named
        ("{token}", "<subdomain>:<token>"),
        (":{token}", "<subdomain>:<token>"),
        ("evil.example:{token}", "is no amoCRM account"),
        ("acme.amocrm.ru.evil.example:{token}", "is no amoCRM account"),
        ("https://evil.example/acme.amocrm.ru:{token}", "is no amoCRM account"),
        ("-x:{token}", "is no amoCRM account"),
        ("{token}:acme", "is no amoCRM account"),  # the wrong way round: never echoed
        ("acme:", "the token is empty"),
        ("   ", "the token is empty"),
    ],
)
def test_a_long_lived_token_that_names_no_account_is_refused(pasted: str, message: str) -> None:
    token = jwt(account_id=int(ACCOUNT_ID), base_domain="amocrm.ru")
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        AmoCrmAdapter.token_credentials(pasted.format(token=token))
    assert token not in str(info.value) and token.split(".")[1] not in str(info.value)
    if "<subdomain>" in message:
        assert "https://acme.amocrm.ru:" in str(info.value)  # the address form too


def test_vendor_initiated_install() -> None:
    assert AmoCrmAdapter.vendor_initiated_install(
        {"code": "c", "referer": "acme.amocrm.ru", "from_widget": "1"}
    )
    assert not AmoCrmAdapter.vendor_initiated_install({"code": "c", "referer": "acme.amocrm.ru"})


def test_refresh_returns_and_stores_the_new_single_use_pair(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter(creds=oauth_creds(expires_at=int(time.time()) + 10))
    rsps.post(f"{API}/oauth2/access_token", json=token_answer("access-2" * 5, "refresh-2" * 5))
    rsps.get(f"{API}/api/v4/users", status=204)
    adapter.list_owners()
    assert body_of(rsps.calls[0]) == {
        "client_id": "integration-uuid-1",
        "client_secret": SECRET,
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "redirect_uri": SETTINGS["redirect_uri"],
    }
    assert provider.creds["access_token"] == "access-2" * 5
    assert provider.creds["refresh_token"] == "refresh-2" * 5  # the old one is dead
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer " + "access-2" * 5
    # the next refresh spends the new token, never the old one
    provider.creds["expires_at"] = int(time.time())
    rsps.post(f"{API}/oauth2/access_token", json=token_answer("access-3" * 5, "refresh-3" * 5))
    adapter.list_owners()
    refreshes = [c for c in rsps.calls if c.request.url.endswith("/oauth2/access_token")]
    assert body_of(refreshes[1])["refresh_token"] == "refresh-2" * 5


def test_refused_refresh_is_auth_error_and_not_retried(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(creds=oauth_creds(expires_at=int(time.time()) - 1))
    rsps.post(f"{API}/oauth2/access_token", status=400, json=OAUTH_PROBLEM)
    with pytest.raises(AuthError) as info:
        adapter.list_owners()
    assert REFRESH not in str(info.value)
    assert len(rsps.calls) == 1


def test_invalid_grant_body_is_auth_error(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter()
    rsps.post(f"{API}/oauth2/access_token", status=400, json={"error": "invalid_grant"})
    with pytest.raises(AuthError):
        adapter.refresh_credentials(oauth_creds())


def test_long_lived_tokens_are_never_refreshed(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter(creds={"type": "long_lived", "access_token": ACCESS})
    with pytest.raises(AuthError):
        adapter.refresh_credentials(provider.creds)
    rsps.get(f"{API}/api/v4/users", status=401)
    with pytest.raises(AuthError):
        adapter.list_owners()
    assert len(rsps.calls) == 1 and provider.calls == 0


def test_401_refreshes_once_and_retries_once(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter()
    rsps.get(f"{API}/api/v4/users", status=401)
    rsps.post(f"{API}/oauth2/access_token", json=token_answer("fresh-access" * 3, "r2" * 20))
    rsps.get(f"{API}/api/v4/users", status=204)
    assert adapter.list_owners() == []
    assert provider.calls == 1
    assert rsps.calls[2].request.headers["Authorization"] == "Bearer " + "fresh-access" * 3


def test_second_401_is_auth_error(rsps: responses.RequestsMock) -> None:
    adapter, provider = make_adapter()
    rsps.get(f"{API}/api/v4/users", status=401)
    rsps.post(f"{API}/oauth2/access_token", json=token_answer("a2" * 20, "r2" * 20))
    with pytest.raises(AuthError):
        adapter.list_owners()
    assert provider.calls == 1
    assert len(rsps.calls) == 3


# --------------------------------------------------------------------------
# errors in one place (FACTS 1.3, 1.4)
# --------------------------------------------------------------------------

VALIDATION = {
    # FACTS 1.3: the 400 body
    "validation-errors": [
        {
            "request_id": "0",
            "errors": [
                {
                    "code": "NotSupportedChoice",
                    "path": "custom_fields_values.0.field_id",
                    "detail": "The value you selected is not a valid choice.",
                }
            ],
        }
    ],
    "title": "Bad Request",
    "type": "https://httpstatus.es/400",
    "status": 400,
    "detail": "Request validation failed",
}


def test_204_is_nothing_found(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.get(f"{API}/api/v4/contacts", status=204)
    assert adapter.find_contact(ContactLookup(identities={"telegram": "42"})) is None


def test_validation_error_lists_path_and_detail_without_values(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.post(f"{API}/api/v4/contacts", status=400, json=VALIDATION)
    draft = ContactDraft(
        lookup=ContactLookup(identities={"telegram": "42"}, phones=("+442079460123",)),
        profile=SenderProfile(first_name="Ann", email="ann@example.com"),
    )
    with pytest.raises(PermanentError) as info:
        adapter.create_contact(draft)
    message = str(info.value)
    assert (
        "custom_fields_values.0.field_id: The value you selected is not a valid choice." in message
    )
    assert "NotSupportedChoice" in message
    assert "ann@example.com" not in message and "442079460123" not in message
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "retry_after"),
    [
        (429, b"", {}, RetryableError, 1.0),
        (429, b"Too Many Requests", {"Retry-After": "3"}, RetryableError, 3.0),
        (429, b"<html>slow down</html>", {}, RetryableError, 1.0),
        (402, b'{"title":"Payment Required","status":402}', {}, PermanentError, None),
        (404, b"", {}, NotFoundError, None),
        (
            403,
            b'{"title":"Forbidden","detail":"Account blocked: request limit exceeded"}',
            {},
            RetryableError,
            600.0,
        ),
        (403, b'{"title":"Forbidden","detail":"Access denied"}', {}, PermanentError, None),
        (500, b"", {}, RetryableError, None),
    ],
)
def test_status_mapping(
    rsps: responses.RequestsMock,
    status: int,
    body: bytes,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    limiter = RecordingLimiter()
    adapter, _ = make_adapter(limiter=limiter)
    rsps.get(f"{API}/api/v4/users", status=status, body=body, headers=headers)
    with pytest.raises(error) as info:
        adapter.list_owners()
    assert type(info.value) is error
    if retry_after is not None:
        assert info.value.retry_after == retry_after  # type: ignore[attr-defined]
    if status in (429, 403) and error is RetryableError:
        # every worker of the account backs off, not only this one
        assert limiter.penalties == [(f"amocrm:{ACCOUNT_ID}:api", retry_after)]
    if status == 403 and error is RetryableError:
        assert "blocked" in str(info.value)
    if status == 402:
        assert "subscription" in str(info.value)


def test_a_5xx_on_a_write_is_ambiguous(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.post(f"{API}/api/v4/leads/notes", status=502)
    with pytest.raises(AmbiguousError):
        adapter.append_entries([entry()])


def test_error_messages_never_carry_tokens(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter()
    rsps.get(f"{API}/api/v4/users", status=400, json={"detail": f"bad token {ACCESS}"})
    with pytest.raises(PermanentError) as info:
        adapter.list_owners()
    assert ACCESS not in str(info.value)


# --------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------

TELEGRAM = ChannelLink(id="7", kind="telegram", name="@acme_bot", identifier="4242")


def fields_page(key: str, *fields: Mapping[str, Any]) -> dict[str, Any]:
    return collection("custom_fields", *fields) if fields else {}


def created_fields(start: int) -> Callable[..., Any]:
    """``POST /api/v4/{type}/custom_fields`` echoing ``request_id``."""

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        made = [
            {"id": start + i, "name": f["name"], "type": f["type"], "request_id": f["request_id"]}
            for i, f in enumerate(json.loads(request.body))
        ]
        return 200, {}, json.dumps(collection("custom_fields", *made))

    return callback


def test_setup_creates_fields_and_subscribes_webhooks(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={"subdomain": SUB})
    rsps.get(f"{API}/api/v4/account", json=account_answer())
    rsps.get(f"{API}/api/v4/contacts/custom_fields", status=204)
    rsps.get(
        f"{API}/api/v4/leads/custom_fields",
        json=collection(
            "custom_fields",
            {"id": 900, "name": "utm_source", "type": "tracking_data", "code": "UTM_SOURCE"},
            {"id": 901, "name": "Budget", "type": "numeric"},
        ),
    )
    rsps.add_callback(
        responses.POST, f"{API}/api/v4/contacts/custom_fields", callback=created_fields(700)
    )
    rsps.add_callback(
        responses.POST, f"{API}/api/v4/leads/custom_fields", callback=created_fields(800)
    )
    rsps.post(f"{API}/api/v4/webhooks", status=201, json={"id": 1})
    result = adapter.setup([TELEGRAM], {"lead": ["utm_source", "utm_medium"]})
    assert result == SetupResult(
        settings={
            "amo_account_id": ACCOUNT_ID,
            "amojo_id": AMOJO_ID,
            "identity_fields": {"telegram": 700},
            "conversation_field": 800,
            "custom_fields": {"leads": {"utm_medium": 801, "utm_source": 900}},
        }
    )
    # the core stores them only if they are settings the schema declares
    load(AmoCrmSettings, result.settings, strict=True)
    posts = {c.request.url: body_of(c) for c in rsps.calls if c.request.method == "POST"}
    assert posts[f"{API}/api/v4/contacts/custom_fields"] == [
        {"name": "Telegram ID", "type": "text", "request_id": "Telegram ID"}
    ]
    assert [f["name"] for f in posts[f"{API}/api/v4/leads/custom_fields"]] == [
        "Bridge conversation",
        "utm_medium",
    ]
    assert posts[f"{API}/api/v4/webhooks"] == {
        "destination": "https://bridge.example/webhooks/crm/amocrm/tenant-key",
        "settings": [
            "status_lead",
            "update_lead",
            "responsible_lead",
            "delete_lead",
            "note_lead",
            "delete_contact",
            "update_contact",
        ],
        "sort": 10,
    }


def test_setup_is_idempotent(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={"subdomain": SUB})
    rsps.get(f"{API}/api/v4/account", json=account_answer())
    rsps.get(
        f"{API}/api/v4/contacts/custom_fields",
        json=collection("custom_fields", {"id": 700, "name": "Telegram ID", "type": "text"}),
    )
    rsps.get(
        f"{API}/api/v4/leads/custom_fields",
        json=collection(
            "custom_fields", {"id": 800, "name": "Bridge conversation", "type": "text"}
        ),
    )
    rsps.post(f"{API}/api/v4/webhooks", status=201, json={"id": 1})
    first = adapter.setup([TELEGRAM], {})
    second = adapter.setup([TELEGRAM], {})
    assert first == second
    posts = [c.request.url for c in rsps.calls if c.request.method == "POST"]
    assert posts == [f"{API}/api/v4/webhooks"] * 2  # the same destination is updated


def test_setup_with_inbox_connects_the_chat_channel(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={"subdomain": SUB}, inbox=True)
    rsps.get(f"{API}/api/v4/account", json=account_answer())
    rsps.get(f"{API}/api/v4/contacts/custom_fields", status=204)
    rsps.get(f"{API}/api/v4/leads/custom_fields", status=204)
    rsps.add_callback(
        responses.POST, f"{API}/api/v4/contacts/custom_fields", callback=created_fields(700)
    )
    rsps.add_callback(
        responses.POST, f"{API}/api/v4/leads/custom_fields", callback=created_fields(800)
    )
    rsps.post(f"{API}/api/v4/webhooks", status=201, json={"id": 1})
    rsps.post(
        f"{AMOJO}/v2/origin/custom/chan-1/connect",
        json={
            # FACTS 1.13: the connect answer
            "account_id": AMOJO_ID,
            "scope_id": SCOPE,
            "title": "CRM bridge",
            "hook_api_version": "v2",
            "is_time_window_disabled": True,
        },
    )
    # the chats' named sources (crm_adapters/amocrm/sources.py): none yet,
    # one made for the Telegram account in the main pipeline
    rsps.get(f"{API}/api/v4/sources", status=204)
    rsps.get(
        f"{API}/api/v4/leads/pipelines",
        json={"_embedded": {"pipelines": [{"id": 7001001, "is_main": True}]}},
    )
    made = rsps.post(
        f"{API}/api/v4/sources",
        json={
            "_embedded": {
                "sources": [{"id": 1, "request_id": "telegram-7", "external_id": "telegram-7"}]
            }
        },
    )
    result = adapter.setup([TELEGRAM], {})
    assert made.call_count == 1
    assert result.settings["scope_id"] == SCOPE and result.routes == (SCOPE,)
    load(AmoCrmSettings, result.settings, strict=True)
    connect = [c for c in rsps.calls if c.request.url.startswith(AMOJO)][0]
    assert body_of(connect) == {
        "account_id": AMOJO_ID,
        "title": "CRM bridge",
        "hook_api_version": "v2",
        "is_time_window_disabled": True,
    }


def test_setup_with_inbox_but_no_channel_tells_the_admin(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(
        settings={"subdomain": SUB}, app={"client_id": "x", "client_secret": "y"}, inbox=True
    )
    rsps.get(f"{API}/api/v4/account", json=account_answer())
    rsps.get(
        f"{API}/api/v4/contacts/custom_fields",
        json=collection("custom_fields", {"id": 700, "name": "Telegram ID", "type": "text"}),
    )
    rsps.get(
        f"{API}/api/v4/leads/custom_fields",
        json=collection(
            "custom_fields", {"id": 800, "name": "Bridge conversation", "type": "text"}
        ),
    )
    rsps.post(f"{API}/api/v4/webhooks", status=201, json={"id": 1})
    with pytest.raises(PermanentError, match="AMOCRM_CHANNEL_ID"):
        adapter.setup([TELEGRAM], {})


def test_a_same_named_field_of_another_type_is_not_adopted(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={"subdomain": SUB})
    rsps.get(f"{API}/api/v4/account", json=account_answer())
    rsps.get(
        f"{API}/api/v4/contacts/custom_fields",
        json=collection("custom_fields", {"id": 600, "name": "Telegram ID", "type": "select"}),
    )
    rsps.get(
        f"{API}/api/v4/leads/custom_fields",
        json=collection(
            "custom_fields", {"id": 800, "name": "Bridge conversation", "type": "text"}
        ),
    )
    rsps.add_callback(
        responses.POST, f"{API}/api/v4/contacts/custom_fields", callback=created_fields(700)
    )
    rsps.post(f"{API}/api/v4/webhooks", status=201, json={"id": 1})
    result = adapter.setup([TELEGRAM], {})
    assert result.settings["identity_fields"] == {"telegram": 700}
    post = [c for c in rsps.calls if c.request.url.endswith("contacts/custom_fields")][-1]
    assert body_of(post)[0]["name"] == "Telegram ID (bridge)"


# --------------------------------------------------------------------------
# contacts (FACTS 1.5, 1.6)
# --------------------------------------------------------------------------


def queries(rsps: responses.RequestsMock) -> list[str]:
    return [parse_qs(urlsplit(c.request.url).query)["query"][0] for c in rsps.calls]


def test_find_contact_by_identity_keeps_only_exact_matches(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(
        f"{API}/api/v4/contacts",
        json=collection(
            "contacts",
            contact(510, phones=["+7 4242 000"]),  # query matched a phone, not the identity
            contact(502, identity="4242", owner=103),
            contact(501, identity="4242", owner=102),
        ),
    )
    found = adapter.find_contact(ContactLookup(identities={"telegram": "4242"}))
    assert found is not None
    assert found.ref == CrmRef("contact", "501") and found.owner_id == "102"
    assert queries(rsps) == ["4242"]


def test_find_contact_by_phone_whatever_its_formatting(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(f"{API}/api/v4/contacts", status=204)  # identity: nobody
    rsps.get(
        f"{API}/api/v4/contacts",
        json=collection("contacts", contact(520, phones=["+44 (20) 7946-0123"])),
    )
    found = adapter.find_contact(
        ContactLookup(identities={"telegram": "4242"}, phones=("+442079460123",))
    )
    assert found is not None and found.ref.id == "520"
    assert queries(rsps) == ["4242", "442079460123"]


def test_find_contact_by_russian_trunk_prefix(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(
        f"{API}/api/v4/contacts",
        json=collection("contacts", contact(530, phones=["8 (916) 123-45-67"])),
    )
    found = adapter.find_contact(ContactLookup(identities={}, phones=("+79161234567",)))
    assert found is not None and found.ref.id == "530"


def test_find_contact_by_email_then_none(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(f"{API}/api/v4/contacts", status=204)
    rsps.get(
        f"{API}/api/v4/contacts",
        json=collection("contacts", contact(540, emails=["Ann@Example.com"])),
    )
    found = adapter.find_contact(
        ContactLookup(identities={}, phones=("+442079460999",), emails=("ann@example.com",))
    )
    assert found is not None and found.ref.id == "540"
    assert queries(rsps) == ["442079460999", "ann@example.com"]


def test_identity_beats_phone_beats_email(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(f"{API}/api/v4/contacts", json=collection("contacts", contact(550, identity="4242")))
    found = adapter.find_contact(
        ContactLookup(
            identities={"telegram": "4242"}, phones=("+442079460123",), emails=("a@example.com",)
        )
    )
    assert found is not None and found.ref.id == "550"
    assert len(rsps.calls) == 1  # stops at the first key that matches


def test_find_contact_without_a_setup_field_skips_identity(
    rsps: responses.RequestsMock,
) -> None:
    adapter, _ = make_adapter(settings={"subdomain": SUB})
    assert adapter.find_contact(ContactLookup(identities={"telegram": "4242"})) is None
    assert len(rsps.calls) == 0


def contact_draft(**extra: Any) -> ContactDraft:
    return ContactDraft(
        lookup=ContactLookup(
            identities={"telegram": "4242"},
            phones=("+442079460123",),
            emails=("Ann@Example.com",),
        ),
        profile=SenderProfile(first_name="Ann", last_name="Lee"),
        properties={"company_size": "10-50"},
        owner_id="101",
        **extra,
    )


def test_create_contact(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.post(
        f"{API}/api/v4/contacts",
        json=collection("contacts", {"id": 40401635, "request_id": "contact"}),
    )
    created = adapter.create_contact(contact_draft())
    assert created.ref == CrmRef("contact", "40401635") and created.owner_id == "101"
    assert body_of(rsps.calls[0]) == [
        {
            "name": "Ann Lee",
            "first_name": "Ann",
            "last_name": "Lee",
            "responsible_user_id": 101,
            "custom_fields_values": [
                {"field_code": "PHONE", "values": [{"value": "+442079460123", "enum_code": "MOB"}]},
                {
                    "field_code": "EMAIL",
                    "values": [{"value": "ann@example.com", "enum_code": "WORK"}],
                },
                {"field_id": 701, "values": [{"value": "4242"}]},
                {"field_id": 711, "values": [{"value": "10-50"}]},
            ],
            "request_id": "contact",
        }
    ]


@pytest.mark.parametrize(
    ("title", "name"), [("Telegram Bot", "Telegram Bot 4242"), ("", "Telegram 4242")]
)
def test_a_nameless_contact_is_named_by_its_channel(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter, title: str, name: str
) -> None:
    rsps.post(f"{API}/api/v4/contacts", json=collection("contacts", {"id": 40401636}))
    draft = ContactDraft(
        lookup=ContactLookup(identities={"telegram": "4242"}),
        profile=SenderProfile(),
        channel_title=title,
    )
    adapter.create_contact(draft)
    assert body_of(rsps.calls[0])[0]["name"] == name


def test_create_contact_without_setup_names_the_fix(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={"subdomain": SUB})
    with pytest.raises(NotReadyError, match="bridge crm setup"):
        adapter.create_contact(contact_draft())
    assert len(rsps.calls) == 0


def test_update_contact_sends_old_and_new_multitext_values(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(
        f"{API}/api/v4/contacts/501",
        json=contact(501, phones=["+7 916 000-00-00"], emails=["ann@example.com"]),
    )
    rsps.patch(f"{API}/api/v4/contacts/501", json={"id": 501})
    adapter.update_contact(CONTACT, contact_draft())
    assert body_of(rsps.calls[1]) == {
        "custom_fields_values": [
            {"field_id": 701, "values": [{"value": "4242"}]},
            {
                "field_code": "PHONE",
                "values": [
                    {"value": "+7 916 000-00-00", "enum_code": "WORK"},
                    {"value": "+442079460123", "enum_code": "MOB"},
                ],
            },
        ]
    }


def test_update_contact_with_nothing_new_makes_no_write(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(
        f"{API}/api/v4/contacts/501",
        json=contact(501, identity="4242", phones=["+44 20 7946 0123"], emails=["ANN@example.com"]),
    )
    adapter.update_contact(CONTACT, contact_draft())
    assert [c.request.method for c in rsps.calls] == ["GET"]


# --------------------------------------------------------------------------
# leads (FACTS 1.7, 1.8)
# --------------------------------------------------------------------------


def entity_draft(**extra: Any) -> EntityDraft:
    values: dict[str, Any] = {
        "object_type": "lead",
        "conversation_uid": "conv-1",
        "contact": CONTACT,
        "name": "Telegram: Ann",
        "pipeline": "3001",
        "stage": "1001",
        "owner_id": "101",
        "properties": {"utm_source": "ads"},
        "channel_title": "Telegram",
    }
    values.update(extra)
    return EntityDraft(**values)


def test_create_lead_through_complex(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.post(
        f"{API}/api/v4/leads/complex",
        # FACTS 1.7: a bare array
        json=[
            {
                "id": 900,
                "contact_id": 501,
                "company_id": None,
                "request_id": ["conv-1"],
                "merged": False,
            }
        ],
    )
    assert adapter.create_entity(entity_draft()) == LEAD
    assert body_of(rsps.calls[0]) == [
        {
            "name": "Telegram: Ann",
            "pipeline_id": 3001,
            "status_id": 1001,
            "responsible_user_id": 101,
            "custom_fields_values": [
                {"field_id": 811, "values": [{"value": "ads"}]},
                {"field_id": 801, "values": [{"value": "conv-1"}]},
            ],
            "_embedded": {
                "contacts": [{"id": 501}],
                "tags": [{"name": "CRM bridge"}, {"name": "Telegram"}],
            },
            "request_id": "conv-1",
        }
    ]


def test_a_lead_without_a_channel_title_has_only_the_bridge_tag(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.post(f"{API}/api/v4/leads/complex", json=[{"id": 900, "request_id": ["conv-1"]}])
    adapter.create_entity(entity_draft(channel_title=""))
    assert body_of(rsps.calls[0])[0]["_embedded"]["tags"] == [{"name": "CRM bridge"}]


@pytest.mark.parametrize(
    "extra",
    [
        {"pipeline": "Sales"},
        {"stage": "first"},
        {"object_type": "unsorted"},
        {"object_type": "deal"},
    ],
)
def test_bad_lead_drafts_are_permanent(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter, extra: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError):
        adapter.create_entity(entity_draft(**extra))
    assert len(rsps.calls) == 0


def test_unknown_mapping_field_names_the_fix(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    with pytest.raises(NotReadyError, match="utm_term"):
        adapter.create_entity(entity_draft(properties={"utm_term": "x"}))


def test_find_lead_by_conversation_uid(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(
        f"{API}/api/v4/leads",
        json=collection(
            "leads",
            lead(905, conversation="conv-10"),
            lead(903, conversation="conv-1"),
            lead(901, conversation="conv-1", deleted=True),
        ),
    )
    assert adapter.find_entity(entity_draft()) == CrmRef("lead", "903")
    assert parse_qs(urlsplit(rsps.calls[0].request.url).query)["query"] == ["conv-1"]
    rsps.get(f"{API}/api/v4/leads", status=204)
    assert adapter.find_entity(entity_draft(conversation_uid="conv-2")) is None


@pytest.mark.parametrize(
    ("answer", "is_open"),
    [
        ({"json": lead(900)}, True),
        ({"json": lead(900, status=142)}, False),
        ({"json": lead(900, status=143)}, False),
        ({"json": lead(900, deleted=True)}, False),
        ({"status": 204}, False),
        ({"status": 404}, False),
    ],
)
def test_entity_is_open(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter, answer: dict[str, Any], is_open: bool
) -> None:
    rsps.get(f"{API}/api/v4/leads/900", **answer)
    assert adapter.entity_is_open(LEAD) is is_open


# --------------------------------------------------------------------------
# timeline: notes (FACTS 1.9)
# --------------------------------------------------------------------------

NOTES = f"{API}/api/v4/leads/notes"


def test_a_batch_of_notes_is_one_call(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    batch = [entry(f"m-{i}", sequence=i, text=f"message {i}") for i in range(3)]
    result = adapter.append_entries(batch)
    assert result == {f"m-{i}": (CrmRef("note", str(5000 + i)),) for i in range(3)}
    assert len(rsps.calls) == 1
    items_ = body_of(rsps.calls[0])
    assert [i["entity_id"] for i in items_] == [900, 900, 900]
    assert [i["note_type"] for i in items_] == ["common"] * 3
    assert items_[0]["responsible_user_id"] == 101


def test_note_text_has_sender_channel_time_labels_and_marker_but_no_url(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    photo = Attachment(
        kind=MessageKind.PHOTO,
        url="https://api.telegram.org/file/bot123:SECRET/photo.jpg",
        file_name="photo.jpg",
    )
    adapter.append_entries(
        [entry(text="see this", kind=MessageKind.PHOTO, attachments=(photo,), is_edit=True)]
    )
    (item,) = body_of(rsps.calls[0])
    assert item["note_type"] == "service_message"
    assert item["params"]["service"] == "CRM bridge · Telegram"
    text = item["params"]["text"]
    # what a rep sees: no machine marker (it is hidden at the end of the header)
    assert strip_hidden(text).splitlines() == [
        "Ann via Telegram · 2025-03-01 09:15 UTC",
        "see this (edited)",
        "[photo: photo.jpg]",
    ]
    assert text.splitlines()[0] == "Ann via Telegram · 2025-03-01 09:15 UTC" + marker("m-1", 1, T0)
    assert "[bridge:" not in text and "SECRET" not in text and "http" not in text
    assert parse_marker(text) == (marker_hash("m-1"), 1, T0.replace(microsecond=250000))


@pytest.mark.parametrize(
    ("options", "tenant", "header"),
    [
        # the tenant's zone from the mapping (on the entry), with its abbreviation
        (
            {"language": "ru", "timezone": "Europe/Moscow"},
            {},
            "Ann через Telegram · 01.03.2025 12:15 MSK",
        ),
        # no zone on the entry: the tenant's (CrmAccountInfo.timezone)
        (
            {"language": "en", "timezone": ""},
            {"timezone": "Europe/Berlin"},
            "Ann via Telegram · 2025-03-01 10:15 CET",
        ),
        # no language on the entry: the tenant's
        (
            {"language": "", "timezone": "Europe/Moscow"},
            {"language": "ru"},
            "Ann через Telegram · 01.03.2025 12:15 MSK",
        ),
        # a zone tzdata names only by its offset
        (
            {"language": "en", "timezone": "Asia/Yekaterinburg"},
            {},
            "Ann via Telegram · 2025-03-01 14:15 UTC+05",
        ),
        (
            {"language": "en", "timezone": "Asia/Kolkata"},
            {},
            "Ann via Telegram · 2025-03-01 14:45 IST",
        ),
        # missing or unknown: UTC
        ({"language": "ru"}, {}, "Ann через Telegram · 01.03.2025 09:15 UTC"),
        (
            {"language": "en", "timezone": "Mars/Olympus"},
            {},
            "Ann via Telegram · 2025-03-01 09:15 UTC",
        ),
        (
            {"language": "en", "timezone": "../../etc/passwd"},
            {},
            "Ann via Telegram · 2025-03-01 09:15 UTC",
        ),
    ],
)
def test_note_header_shows_the_time_in_the_tenants_zone(
    rsps: responses.RequestsMock,
    options: dict[str, Any],
    tenant: dict[str, Any],
    header: str,
) -> None:
    adapter, _ = make_adapter(**tenant)
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    adapter.append_entries([entry(options={"timeline": "note", **options})])
    text = body_of(rsps.calls[0])[0]["params"]["text"]
    assert strip_hidden(text).splitlines() == [header, "Hello"]


def test_the_hidden_marker_is_only_zero_width_characters_and_old_markers_still_parse() -> None:
    tag = marker("m-1", 12, T0)
    assert tag and set(tag) <= HIDDEN_CHARS
    assert marker("m-1", visible=True) == f"[bridge:{marker_hash('m-1')}]"
    # a note an earlier version wrote: the visible marker on its last line
    visible = f"[bridge:{marker_hash('m-1')}:12:1740820530250]"
    old = f"Ann via Telegram · 2025-03-01 09:15:30 UTC\nhello\n{visible}"
    assert parse_marker(old) == (marker_hash("m-1"), 12, T0)
    assert strip_markers(old) == "Ann via Telegram · 2025-03-01 09:15:30 UTC\nhello"
    # the customer's own zero-width characters (an emoji sequence) do not disturb it
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 \u2060\u200b\u200c"
    assert parse_marker(f"head{tag}\n{family}") == (marker_hash("m-1"), 12, T0)
    assert parse_marker(family) is None


def test_the_channel_is_named_as_the_core_names_it(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    """``channel_title`` is the channel registry's name; only without it
    does the note fall back to the channel's kind."""
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    adapter.append_entries(
        [
            entry("m-1", options={"channel_title": "Telegram (Acme bot)"}),
            entry("m-2", options={"channel_title": ""}, kind=MessageKind.STICKER),
        ]
    )
    first, second = body_of(rsps.calls[0])
    assert strip_hidden(first["params"]["text"]).startswith("Ann via Telegram (Acme bot) · ")
    assert strip_hidden(second["params"]["text"]).startswith("Ann via telegram · ")
    assert second["params"]["service"] == "CRM bridge · telegram"


def test_russian_words_in_notes(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    adapter.append_entries(
        [
            entry(
                is_edit=True,
                options={"timeline": "note", "language": "ru", "channel_title": "Telegram"},
            )
        ]
    )
    text = body_of(rsps.calls[0])[0]["params"]["text"]
    assert "Ann через Telegram" in text and "(изменено)" in text


def test_without_a_lead_the_note_goes_on_the_contact(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.add_callback(responses.POST, f"{API}/api/v4/contacts/notes", callback=echo_notes())
    assert adapter.append_entries([entry(entity=None)]) == {"m-1": (CrmRef("note", "5000"),)}
    assert body_of(rsps.calls[0])[0]["entity_id"] == 501


def test_notes_are_chunked_at_50(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    result = adapter.append_entries([entry(f"m-{i}", sequence=i) for i in range(120)])
    assert len(result) == 120
    assert [len(body_of(c)) for c in rsps.calls] == [50, 50, 20]


def lead_notes(*notes: Mapping[str, Any]) -> dict[str, Any]:
    return collection("notes", *notes) if notes else {}


def our_note(note_id: int, bridge_id: str) -> dict[str, Any]:
    return {
        "id": note_id,
        "entity_id": 900,
        "note_type": "common",
        "params": {"text": f"Ann via Telegram{marker(bridge_id, 1, T0)}\nhello"},
    }


def old_note(note_id: int, bridge_id: str) -> dict[str, Any]:
    """A note an earlier version wrote: the visible marker on the last line."""
    visible = f"[bridge:{marker_hash(bridge_id)}:1:{int(T0.timestamp() * 1000)}]"
    return {
        "id": note_id,
        "entity_id": 900,
        "note_type": "common",
        "params": {"text": f"Ann via Telegram · 2025-03-01 09:15:30 UTC\nhello\n{visible}"},
    }


def test_maybe_written_entries_are_looked_up_not_rewritten(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(
        NOTES,
        json=lead_notes(our_note(7001, "m-1"), {"id": 7000, "params": {"text": "rep note"}}),
    )
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes(8000))
    batch = [entry("m-1", maybe_written=True), entry("m-2", maybe_written=True), entry("m-3")]
    result = adapter.append_entries(batch)
    assert result == {
        "m-1": (CrmRef("note", "7001"),),
        "m-2": (CrmRef("note", "8000"),),
        "m-3": (CrmRef("note", "8001"),),
    }
    assert [i["request_id"] for i in body_of(rsps.calls[1])] == ["m-2", "m-3"]
    query = parse_qs(urlsplit(rsps.calls[0].request.url).query)
    assert query["order[updated_at]"] == ["desc"] and query["limit"] == ["250"]
    assert query["filter[entity_id][]"] == ["900"]
    assert query["filter[note_type][]"] == ["common", "service_message"]
    assert "filter[updated_at][from]" not in query  # the entries do not say when stored


def lead_note(note_id: int, lead_id: int, bridge_id: str) -> dict[str, Any]:
    return {**our_note(note_id, bridge_id), "entity_id": lead_id}


def test_a_retry_across_many_leads_is_one_list_of_their_notes(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    """A batch written to 60 leads that may have committed: one notes list
    per 50 leads (``filter[entity_id][]`` takes an array, amoCRM's "notes
    list by entity type"), only the notes changed since the bridge stored
    the oldest message (less the clock slack), never a list per lead."""
    stored = T0 + dt.timedelta(minutes=10)
    batch = [
        entry(
            f"m-{i}",
            entity=CrmRef("lead", str(1000 + i)),
            maybe_written=True,
            stored_at=stored + dt.timedelta(seconds=i),
        )
        for i in range(60)
    ]
    rsps.get(NOTES, json=lead_notes(lead_note(7003, 1003, "m-3"), lead_note(7055, 1055, "m-55")))
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes(8000))
    result = adapter.append_entries(batch)
    assert result["m-3"] == (CrmRef("note", "7003"),)
    assert result["m-55"] == (CrmRef("note", "7055"),)
    assert len(result) == 60
    lists = [c for c in rsps.calls if c.request.method == "GET"]
    assert len(lists) == 2
    first, second = (parse_qs(urlsplit(c.request.url).query) for c in lists)
    assert first["filter[entity_id][]"] == [str(1000 + i) for i in range(50)]
    assert second["filter[entity_id][]"] == [str(1000 + i) for i in range(50, 60)]
    since = int((stored - dt.timedelta(minutes=5)).timestamp())
    assert first["filter[updated_at][from]"] == [str(since)]
    assert second["filter[updated_at][from]"] == [str(since + 50)]
    posted = [i["request_id"] for c in rsps.calls if c.request.method == "POST" for i in body_of(c)]
    assert sorted(posted) == sorted(f"m-{i}" for i in range(60) if i not in (3, 55))


def test_a_notes_list_pages_on_until_everything_is_found(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    others = [lead_note(6000 + i, 900, f"other-{i}") for i in range(250)]
    rsps.get(NOTES, json=lead_notes(*others))
    rsps.get(NOTES, json=lead_notes(our_note(7001, "m-1")))
    assert adapter.append_entries([entry(maybe_written=True)]) == {"m-1": (CrmRef("note", "7001"),)}
    pages = [parse_qs(urlsplit(c.request.url).query)["page"] for c in rsps.calls]
    assert pages == [["1"], ["2"]]


def test_all_found_means_no_write(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.get(NOTES, json=lead_notes(our_note(7001, "m-1")))
    assert adapter.append_entries([entry(maybe_written=True)]) == {"m-1": (CrmRef("note", "7001"),)}
    assert [c.request.method for c in rsps.calls] == ["GET"]


def test_a_note_an_earlier_version_wrote_is_found_by_its_visible_marker(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(NOTES, json=lead_notes(old_note(7001, "m-1")))
    assert adapter.append_entries([entry(maybe_written=True)]) == {"m-1": (CrmRef("note", "7001"),)}
    assert [c.request.method for c in rsps.calls] == ["GET"]


def test_a_note_stripped_of_its_marker_is_written_again_with_a_visible_one(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    """amoCRM may drop zero-width characters (UNCONFIRMED): the retry cannot
    prove its note is there, so it writes it again (never lost, maybe shown
    twice), warns with the fix, and uses the visible tag from then on."""
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes(8000))
    adapter.append_entries([entry()])
    stripped = strip_hidden(body_of(rsps.calls[0])[0]["params"]["text"])
    rsps.get(
        NOTES,
        json=lead_notes({"id": 8000, "entity_id": 900, "params": {"text": stripped}}),
    )
    with caplog.at_level("WARNING", logger="crm_adapters.amocrm.timeline"):
        result = adapter.append_entries([entry(maybe_written=True), entry("m-2")])
    assert set(result) == {"m-1", "m-2"}
    assert [c.request.method for c in rsps.calls] == ["POST", "GET", "POST"]
    assert [i["request_id"] for i in body_of(rsps.calls[2])] == ["m-1", "m-2"]  # m-1 again
    texts = [i["params"]["text"] for i in body_of(rsps.calls[2])]
    assert [t.splitlines()[0][-21:] for t in texts] == [
        f"[bridge:{marker_hash('m-1')}]",
        f"[bridge:{marker_hash('m-2')}]",
    ]
    assert not set("".join(texts)) & HIDDEN_CHARS
    assert "marker_style: visible" in caplog.text and "Hello" not in caplog.text


def test_marker_style_visible_writes_the_short_tag(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={**SETTINGS, "marker_style": "visible"})
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    adapter.append_entries([entry()])
    text = body_of(rsps.calls[0])[0]["params"]["text"]
    assert (
        text.splitlines()[0]
        == f"Ann via Telegram · 2025-03-01 09:15 UTC [bridge:{marker_hash('m-1')}]"
    )
    assert parse_marker(text) == (marker_hash("m-1"), None, None)


def test_partial_failure_reports_what_was_completed(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    answers = iter([echo_notes(), None])

    def first_chunk_then_429(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        handler = next(answers)
        return (429, {}, "") if handler is None else handler(request)

    rsps.add_callback(responses.POST, NOTES, callback=first_chunk_then_429)
    with pytest.raises(RetryableError) as info:
        adapter.append_entries([entry(f"m-{i}", sequence=i) for i in range(60)])
    assert set(info.value.partial) == {f"m-{i}" for i in range(50)}
    assert info.value.retry_after == 1.0


def test_unsorted_without_inbox_has_nowhere_to_go(adapter: AmoCrmAdapter) -> None:
    with pytest.raises(PermanentError, match="unsorted"):
        adapter.append_entries([entry(entity=None, contact_ref=None)])


# --------------------------------------------------------------------------
# timeline: the Chats API (FACTS 1.13)
# --------------------------------------------------------------------------

SEND = f"{AMOJO}/v2/origin/custom/{SCOPE}"


def test_amojo_signature_matches_an_independent_computation() -> None:
    when = dt.datetime(2020, 10, 29, 11, 59, 55, tzinfo=dt.UTC)
    assert rfc2822(when) == "Thu, 29 Oct 2020 11:59:55 +0000"
    body = b'{"a":"\xd0\xb6"}'
    md5 = hashlib.md5(body).hexdigest()  # noqa: S324
    message = "\n".join(
        ["POST", md5, "application/json", "Thu, 29 Oct 2020 11:59:55 +0000", "/v2/origin/custom/x"]
    )
    expected = hmac.new(b"s3cret", message.encode(), hashlib.sha1).hexdigest()
    assert (
        sign_request(
            "s3cret",
            "post",
            md5,
            "application/json",
            "Thu, 29 Oct 2020 11:59:55 +0000",
            "/v2/origin/custom/x",
        )
        == expected
    )


def test_get_requests_are_signed_with_the_md5_of_nothing(
    rsps: responses.RequestsMock,
) -> None:
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.get(f"{SEND}/chats/conv-1/history", json={"messages": []})
    rsps.post(f"{AMOJO}/v2/origin/custom/{SCOPE}/chats", json={"id": "chat-1"})
    rsps.post(f"{API}/api/v4/contacts/chats", json={})
    rsps.post(SEND, json=sent())
    adapter.append_entries([entry(maybe_written=True, options=CHAT)])
    get = rsps.calls[0].request
    assert get.method == "GET"
    assert get.headers["Content-MD5"] == "d41d8cd98f00b204e9800998ecf8427e"
    assert not get.body
    # the autouse fixture re-checks every signature


def test_chat_mode_creates_links_then_sends(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.post(
        f"{SEND}/chats",
        json={"id": "chat-1", "user": {"id": "u-1", "client_id": "tg-user-1", "name": "Ann"}},
    )
    rsps.post(f"{API}/api/v4/contacts/chats", json={})
    rsps.post(SEND, json=sent("amojo-1"))
    result = adapter.append_entries([entry(options=CHAT)])
    assert result == {"m-1": (CrmRef("message", "amojo-1"),)}
    urls = [c.request.url for c in rsps.calls]
    assert urls == [f"{SEND}/chats", f"{API}/api/v4/contacts/chats", SEND]
    # the chat and each message name the channel account (FACTS 1.13 source.external_id)
    assert body_of(rsps.calls[0]) == {
        "conversation_id": "conv-1",
        "source": {"external_id": "telegram-7"},
        "user": {"id": "tg-user-1", "name": "Ann"},
    }
    assert body_of(rsps.calls[1]) == [{"contact_id": 501, "chat_id": "chat-1"}]
    assert body_of(rsps.calls[2]) == {
        "event_type": "new_message",
        "payload": {
            "timestamp": int(T0.timestamp()),
            "msec_timestamp": int(T0.timestamp() * 1000),
            "msgid": "m-1",
            "conversation_id": "conv-1",
            "source": {"external_id": "telegram-7"},
            "message": {"type": "text", "text": "Hello"},
            "silent": False,
            "sender": {"id": "tg-user-1", "name": "Ann"},
        },
    }
    # the body sent is exactly the bytes hashed (checked by the autouse fixture)
    assert (
        rsps.calls[2].request.headers["Content-MD5"]
        == hashlib.md5(  # noqa: S324
            rsps.calls[2].request.body
        ).hexdigest()
    )


def test_unsorted_chat_mode_sends_only_the_message(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.post(SEND, json=sent())
    adapter.append_entries([entry(entity=None, contact_ref=None, options=CHAT)])
    assert [c.request.url for c in rsps.calls] == [SEND]
    assert body_of(rsps.calls[0])["payload"]["sender"] == {"id": "tg-user-1", "name": "Ann"}


def test_maybe_written_chat_messages_are_looked_up_in_the_history(
    rsps: responses.RequestsMock,
) -> None:
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.get(
        f"{SEND}/chats/conv-1/history",
        json={"messages": [{"id": "amojo-7", "ref_id": "m-1", "message": {"text": "Hello"}}]},
    )
    rsps.post(f"{SEND}/chats", json={"id": "chat-1"})
    rsps.post(f"{API}/api/v4/contacts/chats", json={})
    rsps.post(SEND, json=sent("amojo-8"))
    result = adapter.append_entries(
        [
            entry("m-1", maybe_written=True, options=CHAT),
            entry("m-2", maybe_written=True, options=CHAT),
        ]
    )
    assert result == {
        "m-1": (CrmRef("message", "amojo-7"),),
        "m-2": (CrmRef("message", "amojo-8"),),
    }
    sends = [body_of(c) for c in rsps.calls if c.request.url == SEND]
    assert [s["payload"]["msgid"] for s in sends] == ["m-2"]


def test_edits_refer_to_the_original_when_named(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.post(SEND, json={"edit_message": {"msgid": "amojo-1"}})
    rsps.post(SEND, json=sent("amojo-2"))
    adapter.append_entries(
        [
            entry(
                "m-2",
                entity=None,
                contact_ref=None,
                is_edit=True,
                text="fixed",
                options={**CHAT, "edit_of": "m-1"},
            ),
            entry("m-3", entity=None, contact_ref=None, is_edit=True, text="fixed", options=CHAT),
        ]
    )
    first, second = (body_of(c) for c in rsps.calls)
    assert first["event_type"] == "edit_message" and first["payload"]["msgid"] == "m-1"
    assert second["event_type"] == "new_message"
    assert second["payload"]["message"]["text"] == "fixed (edited)"


def test_every_chat_message_names_its_channel_account(rsps: responses.RequestsMock) -> None:
    """Each conversation's chat and each of its messages (incoming, the
    rep's echo, an edit, a file) carry ``source.external_id`` = the channel
    kind and account (FACTS 1.13): two accounts, two sources."""
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.post(f"{SEND}/chats", json={"id": "chat-1"})
    rsps.post(f"{API}/api/v4/contacts/chats", json={})
    rsps.add_callback(
        responses.POST,
        SEND,
        callback=lambda r: (
            200,
            {},
            json.dumps({json.loads(r.body)["event_type"]: {"msgid": "a"}}),
        ),
    )
    whatsapp = {"channel_kind": "whatsapp", "channel_account": "3"}
    file = Attachment(
        kind=MessageKind.DOCUMENT,
        file_ref="file:f-1",
        url="https://bridge.example/f/1",
        file_name="a.pdf",
        size=10,
    )
    adapter.append_entries(
        [
            replace(entry("m-1", options={**CHAT, "channel_title": "WhatsApp"}), **whatsapp),
            entry("m-2", options=CHAT, conversation="conv-2", attachments=(file,)),
            replace(
                entry(
                    "m-3", options={**CHAT, "first_in_conversation": False}, conversation="conv-2"
                ),
                direction="out",
            ),
            replace(
                entry(
                    "m-4",
                    is_edit=True,
                    text="fixed",
                    options={**CHAT, "edit_of": "m-1", "first_in_conversation": False},
                ),
                **whatsapp,
            ),
        ]
    )
    sources = [
        (
            c.request.url.rsplit("/", 1)[-1],
            (body_of(c).get("payload") or body_of(c)).get("source"),
        )
        for c in rsps.calls
        if c.request.url.startswith(SEND)
    ]
    wa, tg = {"external_id": "whatsapp-3"}, {"external_id": "telegram-7"}
    assert sources == [
        ("chats", wa),  # conv-1's chat
        (SCOPE, wa),  # m-1
        (SCOPE, wa),  # m-4, the edit (same conversation)
        ("chats", tg),  # conv-2's chat
        (SCOPE, tg),  # m-2
        (SCOPE, tg),  # m-2's file
        (SCOPE, tg),  # m-3, the rep's echo
    ]
    # the texts stay the customer's own
    assert [
        body_of(c)["payload"]["message"].get("text") for c in rsps.calls if c.request.url == SEND
    ][:2] == ["Hello", "fixed (edited)"]


def test_chat_partial_failure_keeps_what_was_sent(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.post(SEND, json=sent("amojo-1"))
    rsps.post(SEND, status=503)
    with pytest.raises(AmbiguousError) as info:
        adapter.append_entries(
            [entry(f"m-{i}", entity=None, contact_ref=None, options=CHAT) for i in (1, 2, 3)]
        )
    assert info.value.partial == {"m-1": (CrmRef("message", "amojo-1"),)}


def test_notes_and_chat_together(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    rsps.post(f"{SEND}/chats", json={"id": "chat-1"})
    rsps.post(f"{API}/api/v4/contacts/chats", json={})
    rsps.post(SEND, json=sent("amojo-1"))
    rsps.post(SEND, status=403, json={})  # bad signature: permanent
    both = {"timeline": "note", "inbox": True}
    with pytest.raises(PermanentError) as info:
        adapter.append_entries([entry("m-1", options=both), entry("m-2", options=both)])
    # m-2's note is written, its chat message is not: not complete, but
    # its note is reported, so the retry does not write it again
    assert info.value.partial == {
        "m-1": (CrmRef("note", "5000"), CrmRef("message", "amojo-1")),
    }
    assert info.value.progress == {"m-2": (CrmRef("note", "5001"),)}
    rsps.reset()
    rsps.post(SEND, json=sent("amojo-2"))
    retry = entry("m-2", options=both, written=(CrmRef("note", "5001"),))
    assert adapter.append_entries([retry]) == {
        "m-2": (CrmRef("note", "5001"), CrmRef("message", "amojo-2"))
    }
    assert [c.request.url for c in rsps.calls] == [SEND]  # no note written again


def test_chat_mode_before_setup_finished_waits_and_names_the_fix(
    rsps: responses.RequestsMock,
) -> None:
    adapter, _ = make_adapter(inbox=True)
    with pytest.raises(NotReadyError, match="bridge crm setup") as caught:
        adapter.append_entries([entry(options=CHAT)])
    assert caught.value.nothing_written


# --------------------------------------------------------------------------
# calls per message
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (20, 1), (50, 1), (120, 3)])
def test_calls_per_message_in_notes_mode(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter, n: int, expected: int
) -> None:
    """Once the conversation's contact and lead are known."""
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    adapter.append_entries([entry(f"m-{i}", sequence=i) for i in range(n)])
    assert len(rsps.calls) == expected == math.ceil(n / 50)
    assert len(rsps.calls) / n <= 1.1


def test_live_conversation_in_notes_mode_is_one_call_per_message(
    rsps: responses.RequestsMock,
) -> None:
    rsps.add_callback(responses.POST, NOTES, callback=echo_notes())
    for i in range(10):  # one job (one adapter) per message, as the core runs them
        adapter, _ = make_adapter()
        adapter.append_entries([entry(f"m-{i}", sequence=i)])
    assert len(rsps.calls) / 10 <= 1.1


def test_live_conversation_in_chat_mode(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{SEND}/chats", json={"id": "chat-1"})
    rsps.post(f"{API}/api/v4/contacts/chats", json={})
    rsps.post(SEND, json=sent())
    for i in range(10):
        adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
        adapter.append_entries([entry(f"m-{i}", sequence=i, options=CHAT)])
    # chat create + link once per process, then one new_message per message
    assert len(rsps.calls) == 10 + 2
    forget_chats()  # a new process (RQ forks a work-horse per job)
    rsps.calls.reset()
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    adapter.append_entries([entry("m-x", options=CHAT)])
    assert len(rsps.calls) == 3


def test_live_chat_mode_is_one_call_per_message_when_the_core_says_it_is_not_new(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(f"{SEND}/chats", json={"id": "chat-1"})
    rsps.post(f"{API}/api/v4/contacts/chats", json={})
    rsps.post(SEND, json=sent())
    for i in range(10):
        forget_chats()  # every job in a fresh process
        adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
        options = {**CHAT, "first_in_conversation": i == 0}
        adapter.append_entries([entry(f"m-{i}", sequence=i, options=options)])
    assert len(rsps.calls) == 10 + 2
    # a retry makes sure of the chat again, whatever the core says
    rsps.calls.reset()
    rsps.get(f"{SEND}/chats/conv-1/history", status=204)
    adapter, _ = make_adapter(inbox=True, settings=CHAT_SETTINGS)
    retry = {**CHAT, "first_in_conversation": False}
    adapter.append_entries([entry("m-9", maybe_written=True, options=retry)])
    assert [c.request.url.split("?")[0] for c in rsps.calls] == [
        f"{SEND}/chats/conv-1/history",
        f"{SEND}/chats",
        f"{API}/api/v4/contacts/chats",
        SEND,
    ]


# --------------------------------------------------------------------------
# tasks and owners (FACTS 1.10, 1.11)
# --------------------------------------------------------------------------


def task_draft(**extra: Any) -> TaskDraft:
    return TaskDraft(
        bridge_id="conv-1:task",
        subject="Reply to Ann",
        body="Is the blue one in stock?",
        due_at=T0,
        contact=CONTACT,
        entity=LEAD,
        owner_id="101",
        **extra,
    )


def test_create_task(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.post(f"{API}/api/v4/tasks", json=collection("tasks", {"id": 300, "request_id": "x"}))
    assert adapter.create_task(task_draft()) == CrmRef("task", "300")
    assert body_of(rsps.calls[0]) == [
        {
            "text": f"Reply to Ann{marker('conv-1:task')}\nIs the blue one in stock?",
            "complete_till": int(T0.timestamp()),
            "entity_id": 900,
            "entity_type": "leads",
            "task_type_id": 1,
            "request_id": "conv-1:task",
            "responsible_user_id": 101,
        }
    ]


def test_maybe_written_task_found_is_not_created_again(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(
        f"{API}/api/v4/tasks",
        json=collection(
            "tasks",
            {"id": 299, "text": "someone else's"},
            {"id": 300, "text": f"Reply to Ann\n{marker('conv-1:task')}"},
        ),
    )
    assert adapter.create_task(task_draft(maybe_written=True)) == CrmRef("task", "300")
    assert [c.request.method for c in rsps.calls] == ["GET"]
    query = parse_qs(urlsplit(rsps.calls[0].request.url).query)
    assert query["filter[entity_id]"] == ["900"] and query["filter[entity_type]"] == ["leads"]


def test_maybe_written_task_not_found_is_created(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(f"{API}/api/v4/tasks", status=204)
    rsps.post(f"{API}/api/v4/tasks", json=collection("tasks", {"id": 301}))
    assert adapter.create_task(task_draft(maybe_written=True)) == CrmRef("task", "301")


def test_list_owners_follows_paging(rsps: responses.RequestsMock, adapter: AmoCrmAdapter) -> None:
    rsps.get(
        f"{API}/api/v4/users",
        json=collection(
            "users",
            {
                "id": 101,
                "name": "Rep One",
                "email": "one@acme.example",
                "rights": {"is_active": True},
            },
            next_page=True,
        ),
    )
    rsps.get(
        f"{API}/api/v4/users",
        json=collection("users", {"id": 102, "name": "Rep Two", "rights": {"is_active": False}}),
    )
    owners = adapter.list_owners()
    assert [(o.id, o.name, o.email, o.active) for o in owners] == [
        ("101", "Rep One", "one@acme.example", True),
        ("102", "Rep Two", None, False),
    ]
    assert [parse_qs(urlsplit(c.request.url).query)["page"] for c in rsps.calls] == [["1"], ["2"]]


# --------------------------------------------------------------------------
# the PHP bracket-notation decoder
# --------------------------------------------------------------------------


def test_bracket_decoder_nested_and_arrays() -> None:
    body = (
        b"leads%5Bstatus%5D%5B0%5D%5Bid%5D=900&leads[status][0][status_id]=142"
        b"&leads[status][1][id]=901&tags[]=a&tags[]=b&account[subdomain]=acme"
        b"&x[][k]=1&x[][k]=2"
    )
    assert decode_brackets(body) == {
        "leads": {"status": {"0": {"id": "900", "status_id": "142"}, "1": {"id": "901"}}},
        "tags": ["a", "b"],
        "account": {"subdomain": "acme"},
        "x": [{"k": "1"}, {"k": "2"}],
    }


def test_bracket_decoder_unicode_and_plus() -> None:
    body = urlencode({"note[text]": "@клиент Привет, мир! ✓", "a[b c]": "x y"}).encode()
    assert decode_brackets(body) == {
        "note": {"text": "@клиент Привет, мир! ✓"},
        "a": {"b c": "x y"},
    }


def test_items_walk_numeric_keys_in_order() -> None:
    value = {"10": {"id": "c"}, "2": {"id": "b"}, "0": {"id": "a"}, "junk": "x"}
    assert [i["id"] for i in items(value)] == ["a", "b", "c"]
    assert items("nope") == []


@pytest.mark.parametrize(
    "body",
    [
        b"a[b]=1&a=2",  # value and container
        b"a=1&a[b]=2",
        b"a=1&a=2",  # repeated key
        b"[a]=1",  # no name
        b"a]b=1",
        b"a[b=1",
        b"a[][b]=1&a[c]=2",  # list and keyed
        b"\xff\xfe=1",  # not UTF-8
        b"a%ZZ=%E0%A4%A",  # broken escapes
        b"novalue",  # strict: no '='
        b"a" + b"[x]" * 20 + b"=1",  # too deep
    ],
)
def test_bracket_decoder_refuses_junk(body: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_brackets(body)


def test_reply_marker_stripping() -> None:
    markers = ("@client", "@клиент")
    assert strip_reply_marker("@client Yes, tomorrow.", markers) == "Yes, tomorrow."
    assert strip_reply_marker("  @CLIENT: hi", markers) == "hi"
    assert strip_reply_marker("@Клиент — привет", markers) == "привет"
    assert strip_reply_marker("@clientele hi", markers) is None
    assert strip_reply_marker("call @client later", markers) is None


# --------------------------------------------------------------------------
# account webhooks (FACTS 1.12): verify and parse
# --------------------------------------------------------------------------


def form_request(fields: Mapping[str, str], **headers: str) -> WebhookRequest:
    body = "&".join(f"{quote(k, safe='[]')}={quote(v)}" for k, v in fields.items()).encode()
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/crm/amocrm/tenant-key",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": "amoCRM-WebHook-client/1.0",
            **headers,
        },
        body=body,
        received_at=T0,
    )


ACCOUNT = {"account[subdomain]": SUB, "account[id]": ACCOUNT_ID}


def test_account_webhook_for_this_account_passes(adapter: AmoCrmAdapter) -> None:
    adapter.verify_webhook(form_request({"leads[delete][0][id]": "900", **ACCOUNT}))


@pytest.mark.parametrize(
    "fields",
    [
        {"leads[delete][0][id]": "900", "account[subdomain]": SUB, "account[id]": "999"},
        {"leads[delete][0][id]": "900", "account[subdomain]": SUB},
        {"leads[delete][0][id]": "900"},
        {"account": "x"},
    ],
)
def test_account_webhook_for_another_account_is_refused(
    adapter: AmoCrmAdapter, fields: dict[str, str]
) -> None:
    with pytest.raises(SignatureError):
        adapter.verify_webhook(form_request(fields))


def test_unsigned_hooks_never_count_at_the_public_route_url(adapter: AmoCrmAdapter) -> None:
    """The route key is the scope id ("<channel id>_<amojo id>"): no secret."""
    request = form_request({"leads[note][0][note][text]": "@client pay here", **ACCOUNT})
    routed = WebhookRequest(
        method="POST",
        url=f"https://bridge.example/webhooks/crm/amocrm/route/{SCOPE}",
        headers=request.headers,
        body=request.body,
    )
    with pytest.raises(SignatureError):
        adapter.verify_webhook(routed)


def test_account_webhook_junk_is_a_signature_error(adapter: AmoCrmAdapter) -> None:
    junk = replace_body(form_request(ACCOUNT), b"\xff[[[=")
    with pytest.raises(SignatureError):
        adapter.verify_webhook(junk)
    with pytest.raises(PayloadError):
        adapter.parse_webhook(junk)


def replace_body(request: WebhookRequest, body: bytes) -> WebhookRequest:
    from dataclasses import replace

    return replace(request, body=body)


def test_without_an_account_id_the_subdomain_decides() -> None:
    adapter, _ = make_adapter(settings={"subdomain": SUB})
    adapter.account = CrmAccountInfo(
        tenant_id=1, kind="amocrm", account_id=None, settings={"subdomain": SUB}
    )
    adapter.verify_webhook(form_request({"account[subdomain]": SUB}))
    with pytest.raises(SignatureError):
        adapter.verify_webhook(form_request({"account[subdomain]": "other"}))


def kinds(events: list[Any]) -> list[CrmEventKind]:
    return [e.kind for e in events]


def test_lead_status_won_and_lost_close_the_entity(adapter: AmoCrmAdapter) -> None:
    events = adapter.parse_webhook(
        form_request(
            {
                # FACTS 1.12: leads[status] with legacy field names
                "leads[status][0][id]": "900",
                "leads[status][0][status_id]": "142",
                "leads[status][0][old_status_id]": "1001",
                "leads[status][0][pipeline_id]": "3001",
                "leads[status][0][responsible_user_id]": "101",
                "leads[status][0][last_modified]": "1740820530",
                "leads[status][1][id]": "901",
                "leads[status][1][status_id]": "143",
                "leads[status][2][id]": "902",
                "leads[status][2][status_id]": "1002",
                **ACCOUNT,
            }
        )
    )
    assert kinds(events) == [
        CrmEventKind.ENTITY_CLOSED,
        CrmEventKind.ENTITY_CLOSED,
        # an open stage: the service layer's transfers by stage read it
        CrmEventKind.ENTITY_STAGE,
    ]
    assert events[2].stage == "1002" and events[2].entity == CrmRef("lead", "902")
    assert events[0].entity == LEAD and events[0].owner_id == "101"
    assert events[0].occurred_at == dt.datetime.fromtimestamp(1740820530, dt.UTC)
    assert events[1].entity == CrmRef("lead", "901")
    assert events[2].raw["status_id"] == "1002"


def test_a_lead_update_carries_its_tags(adapter: AmoCrmAdapter) -> None:
    """``leads[update]`` (FACTS 1.12) with the lead's tags now: ENTITY_TAGS
    (the service layer's transfers by tag); no tags sent: none left."""
    events = adapter.parse_webhook(
        form_request(
            {
                "leads[update][0][id]": "900",
                "leads[update][0][last_modified]": "1740820530",
                "leads[update][0][tags][0][id]": "11",
                "leads[update][0][tags][0][name]": "VIP",
                "leads[update][0][tags][1][id]": "12",
                "leads[update][0][tags][1][name]": "escalate",
                "leads[update][1][id]": "901",
                "leads[update][1][last_modified]": "1740820531",
                **ACCOUNT,
            }
        )
    )
    assert kinds(events) == [CrmEventKind.ENTITY_TAGS, CrmEventKind.ENTITY_TAGS]
    assert events[0].entity == LEAD and events[0].tags == ("VIP", "escalate")
    assert events[1].entity == CrmRef("lead", "901") and events[1].tags == ()
    assert events[0].external_id != events[1].external_id


def test_tags_are_added_to_a_lead_keeping_its_own(
    adapter: AmoCrmAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.patch(f"{API}/api/v4/leads/900", json={"id": 900})
    adapter.tag_entity(LEAD, ["orders", "web"])
    (call,) = rsps.calls
    assert body_of(call) == {"tags_to_add": [{"name": "orders"}, {"name": "web"}]}
    adapter.tag_entity(LEAD, [])  # nothing to add: no call
    assert len(rsps.calls) == 1


def test_owner_change_delete_and_contact_removal(adapter: AmoCrmAdapter) -> None:
    events = adapter.parse_webhook(
        form_request(
            {
                "leads[responsible][0][id]": "900",
                "leads[responsible][0][responsible_user_id]": "105",
                "leads[delete][0][id]": "903",
                "contacts[delete][0][id]": "501",
                "contacts[delete][0][type]": "contact",
                "contacts[delete][1][id]": "601",
                "contacts[delete][1][type]": "company",
                "contacts[update][0][id]": "502",
                "unknown_entity[add][0][id]": "1",
                **ACCOUNT,
            }
        )
    )
    assert kinds(events) == [
        CrmEventKind.OWNER_CHANGED,
        CrmEventKind.ENTITY_CLOSED,
        CrmEventKind.CONTACT_REMOVED,
        CrmEventKind.UNKNOWN,
        CrmEventKind.UNKNOWN,
        CrmEventKind.UNKNOWN,
    ]
    assert events[0].entity == LEAD and events[0].owner_id == "105"
    assert events[1].entity == CrmRef("lead", "903")
    assert events[2].contact == CONTACT
    assert events[4].raw == {"id": "502"}  # unknown keys are kept
    assert len({e.external_id for e in events}) == len(events)


def note_fields(text: str, note_id: str = "7100", **extra: str) -> dict[str, str]:
    """``leads[note][0][note][...]``: the note layout is not in FACTS 1.12;
    this is the legacy layout (ours)."""
    return {
        "leads[note][0][note][id]": note_id,
        "leads[note][0][note][text]": text,
        "leads[note][0][note][note_type]": "4",
        "leads[note][0][note][element_id]": "900",
        "leads[note][0][note][element_type]": "2",
        "leads[note][0][note][created_by]": "101",
        "leads[note][0][note][date_create]": "1740820530",
        **extra,
        **ACCOUNT,
    }


def test_a_note_with_the_reply_marker_is_a_reply(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(f"{API}/api/v4/leads/900", json=lead(900, conversation="conv-1"))
    (event,) = adapter.parse_webhook(form_request(note_fields("@client Yes, it ships tomorrow.")))
    assert event.kind is CrmEventKind.REPLY
    assert event.text == "Yes, it ships tomorrow."
    assert event.external_id == "note:900:7100"
    assert event.entity == LEAD and event.crm_thread_id == "lead:900"
    assert event.thread_key == "conv-1"  # read from the lead's conversation field
    assert event.author_id == "101"
    assert event.occurred_at == dt.datetime.fromtimestamp(1740820530, dt.UTC)


def test_the_russian_marker_and_a_custom_one(rsps: responses.RequestsMock) -> None:
    adapter, _ = make_adapter(settings={**SETTINGS, "reply_marker": "!reply"})
    rsps.get(f"{API}/api/v4/leads/900", status=204)
    (ru,) = adapter.parse_webhook(form_request(note_fields("@клиент Да, завтра")))
    (own,) = adapter.parse_webhook(form_request(note_fields("!reply ok", note_id="7101")))
    assert (ru.kind, ru.text, ru.thread_key) == (CrmEventKind.REPLY, "Да, завтра", None)
    assert (own.kind, own.text) == (CrmEventKind.REPLY, "ok")


def test_a_reply_is_refused_for_redelivery_when_amocrm_cannot_answer(
    rsps: responses.RequestsMock,
) -> None:
    limiter = RecordingLimiter()
    adapter, _ = make_adapter(limiter=limiter)
    rsps.get(f"{API}/api/v4/leads/900", status=503)
    with pytest.raises(WebhookError) as info:
        adapter.parse_webhook(form_request(note_fields("@client hi")))
    # amoCRM re-sends a webhook answered with >= 300 (FACTS 1.12): not dropped
    assert info.value.status_code == 503
    # a webhook never waits in the shared bucket (amoCRM waits 2 s at most)
    assert limiter.acquired == []


def test_a_reply_on_a_lead_the_bridge_did_not_open_has_no_thread(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(f"{API}/api/v4/leads/900", json=lead(900))
    (event,) = adapter.parse_webhook(form_request(note_fields("@client hi")))
    assert event.kind is CrmEventKind.REPLY and event.thread_key is None
    assert event.entity == LEAD


@pytest.mark.parametrize(
    "text",
    [
        f"Ann via Telegram{marker('m-1', 1, T0)}\n@client hi",  # our own note
        f"@client{marker('m-1')} a sender named @client",  # our own, hidden marker
        f"Ann via Telegram\n@client hi\n{marker('m-1', 1, T0)}",  # an earlier version's layout
        f"@client quoted by the bridge [bridge:{marker_hash('m-1')}]",  # the visible tag
        "internal: call back at 5",
        "",
    ],
)
def test_own_and_other_notes_are_unknown(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter, text: str
) -> None:
    (event,) = adapter.parse_webhook(form_request(note_fields(text)))
    assert event.kind is CrmEventKind.UNKNOWN
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    ("fields", "echo"),
    [
        (note_fields(f"Ann via Telegram{marker('m-1', 1, T0)}\nhi"), True),  # our own note
        (note_fields(f"@client{marker('m-1')} a sender named @client"), True),
        (note_fields("@client hi"), False),  # a rep's reply
        (note_fields("internal: call back at 5"), False),  # a rep's own note: parsed as usual
        ({**note_fields(f"x{marker('m-1')}"), "leads[status][0][id]": "900"}, False),
        (ACCOUNT, False),  # no record at all
    ],
)
def test_only_the_bridges_own_notes_are_echoes(
    adapter: AmoCrmAdapter, fields: dict[str, str], echo: bool
) -> None:
    """An echo is answered before the tenant is loaded: only a webhook whose
    every record is a note the bridge wrote (what parse_webhook ignores)."""
    request = form_request(fields)
    assert AmoCrmAdapter.echo(request) is echo
    if echo:
        assert all(e.kind is CrmEventKind.UNKNOWN for e in adapter.parse_webhook(request))


def test_a_chat_hook_or_junk_is_no_echo() -> None:
    junk = replace(form_request(ACCOUNT), body=b"leads[note]=%ZZ[[[")
    chat = replace(form_request(ACCOUNT), headers={"content-type": "application/json"})
    assert not AmoCrmAdapter.echo(junk) and not AmoCrmAdapter.echo(chat)


def test_a_reply_note_without_ids_is_a_payload_error(adapter: AmoCrmAdapter) -> None:
    with pytest.raises(PayloadError):
        adapter.parse_webhook(form_request({"leads[note][0][note][text]": "@client hi", **ACCOUNT}))


# --------------------------------------------------------------------------
# the chat channel's outgoing-message hook (FACTS 1.13)
# --------------------------------------------------------------------------


def chat_hook(**overrides: Any) -> dict[str, Any]:
    """The v2 outgoing-message hook body (FACTS 1.13), ours."""
    body: dict[str, Any] = {
        "account_id": AMOJO_ID,
        "time": 1740820600,
        "message": {
            "receiver": {
                "id": "amojo-client-1",
                "phone": "",
                "email": "",
                "client_id": "tg-user-1",
            },
            "sender": {"id": "amojo-manager-1"},
            "conversation": {"id": "amojo-conv-1", "client_id": "conv-1"},
            "source": {"external_id": "7"},
            "timestamp": 1740820600,
            "msec_timestamp": 1740820600123,
            "message": {
                "id": "amojo-msg-9",
                "type": "text",
                "text": "Yes, it ships tomorrow.",
                "tag": "",
                "media": "",
                "thumbnail": "",
                "file_name": "",
                "file_size": 0,
            },
        },
    }
    body.update(overrides)
    return body


def json_request(
    payload: Any, *, secret: str = CHANNEL_SECRET, signed: bool = True
) -> WebhookRequest:
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"content-type": "application/json"}
    if signed:
        headers["x-signature"] = body_signature(secret, body)
    return WebhookRequest(
        method="POST",
        url=f"https://bridge.example/webhooks/crm/amocrm/route/{SCOPE}",
        headers=headers,
        body=body,
        received_at=T0,
    )


def test_outgoing_hook_signature_is_hmac_sha1_of_the_body() -> None:
    body = b'{"account_id":"x"}'
    assert body_signature("k", body) == hmac.new(b"k", body, hashlib.sha1).hexdigest()


@pytest.fixture
def chat_adapter() -> AmoCrmAdapter:
    return make_adapter(inbox=True, settings=CHAT_SETTINGS)[0]


def test_signed_chat_hook_passes_and_parses(chat_adapter: AmoCrmAdapter) -> None:
    request = json_request(chat_hook())
    chat_adapter.verify_webhook(request)
    (event,) = chat_adapter.parse_webhook(request)
    assert event.kind is CrmEventKind.REPLY
    assert event.external_id == "amojo-msg-9"
    assert event.thread_key == "conv-1" and event.crm_thread_id == "amojo-conv-1"
    assert event.recipient == "tg-user-1"
    assert event.text == "Yes, it ships tomorrow."
    assert event.author_id == "amojo-manager-1"
    assert event.attachments == ()
    assert event.occurred_at == dt.datetime.fromtimestamp(1740820600.123, dt.UTC)


def test_signature_in_upper_case_is_accepted(chat_adapter: AmoCrmAdapter) -> None:
    request = json_request(chat_hook())
    upper = WebhookRequest(
        method="POST",
        url=request.url,
        headers={**request.headers, "x-signature": request.headers["x-signature"].upper()},
        body=request.body,
    )
    chat_adapter.verify_webhook(upper)


def test_forged_chat_hooks_are_refused(chat_adapter: AmoCrmAdapter) -> None:
    good = json_request(chat_hook())
    tampered = replace_body(good, good.body.replace(b"tomorrow", b"never!!!"))
    wrong_secret = json_request(chat_hook(), secret="guess")
    unsigned = json_request(chat_hook(), signed=False)
    other_account = json_request(chat_hook(account_id="another-amojo-account"))
    other_scope = WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/crm/amocrm/route/chan-1_other",
        headers=good.headers,
        body=good.body,
    )
    junk_header = WebhookRequest(
        method="POST",
        url=good.url,
        headers={**good.headers, "x-signature": "ж" * 40},
        body=good.body,
    )
    for forged in (tampered, wrong_secret, unsigned, other_account, other_scope, junk_header):
        with pytest.raises(SignatureError):
            chat_adapter.verify_webhook(forged)


def test_chat_hook_media_becomes_an_attachment(chat_adapter: AmoCrmAdapter) -> None:
    payload = chat_hook()
    payload["message"]["message"].update(
        {
            "type": "picture",
            "text": "",
            "media": "https://amojo.amocrm.ru/attachments/x.jpg",
            "file_name": "x.jpg",
            "file_size": 2048,
        }
    )
    (event,) = chat_adapter.parse_webhook(json_request(payload))
    assert event.attachments == (
        Attachment(
            kind=MessageKind.PHOTO,
            url="https://amojo.amocrm.ru/attachments/x.jpg",
            file_name="x.jpg",
            size=2048,
        ),
    )


def test_typing_and_reaction_hooks_are_unknown(chat_adapter: AmoCrmAdapter) -> None:
    typing_ = {"account_id": AMOJO_ID, "time": 1, "action": {"typing": {"expired_at": 2}}}
    (event,) = chat_adapter.parse_webhook(json_request(typing_))
    assert event.kind is CrmEventKind.UNKNOWN


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"message": {"message": {"text": "no id"}}}', b"\xff"]
)
def test_bad_chat_hook_bodies_are_payload_errors(chat_adapter: AmoCrmAdapter, body: bytes) -> None:
    request = WebhookRequest(
        method="POST", url="https://b/x", headers={"content-type": "application/json"}, body=body
    )
    with pytest.raises(PayloadError):
        chat_adapter.parse_webhook(request)


# --------------------------------------------------------------------------
# delivery reports
# --------------------------------------------------------------------------

STATUS = f"{SEND}/amojo-msg-9/delivery_status"


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (DeliveryStatus.SENT, None, {"msgid": "amojo-msg-9", "delivery_status": 1}),
        (DeliveryStatus.DELIVERED, None, {"msgid": "amojo-msg-9", "delivery_status": 1}),
        (DeliveryStatus.READ, None, {"msgid": "amojo-msg-9", "delivery_status": 2}),
        (
            DeliveryStatus.FAILED,
            "blocked by the user",
            {
                "msgid": "amojo-msg-9",
                "delivery_status": -1,
                "error_code": 905,
                "error": "blocked by the user",
            },
        ),
    ],
)
def test_report_delivery_in_chat_mode(
    rsps: responses.RequestsMock,
    chat_adapter: AmoCrmAdapter,
    status: DeliveryStatus,
    error: str | None,
    expected: dict[str, Any],
) -> None:
    rsps.post(STATUS, status=200)
    chat_adapter.report_delivery(
        DeliveryReport("amojo-msg-9", status, error=error, crm_thread_id="amojo-conv-1")
    )
    assert body_of(rsps.calls[0]) == expected


def test_report_delivery_for_an_unknown_message(
    rsps: responses.RequestsMock, chat_adapter: AmoCrmAdapter
) -> None:
    rsps.post(STATUS, status=404)
    with pytest.raises(NotFoundError):
        chat_adapter.report_delivery(DeliveryReport("amojo-msg-9", DeliveryStatus.SENT))


@pytest.mark.parametrize(
    ("language", "status", "expected"),
    [
        ("en", DeliveryStatus.SENT, "Reply sent to the customer (note 7100)"),
        ("ru", DeliveryStatus.SENT, "Ответ отправлен клиенту (примечание 7100)"),
        ("en", DeliveryStatus.FAILED, "Reply NOT delivered to the customer (note 7100): blocked"),
    ],
)
def test_report_delivery_in_notes_mode(
    rsps: responses.RequestsMock, language: str, status: DeliveryStatus, expected: str
) -> None:
    adapter, _ = make_adapter(language=language)
    rsps.post(NOTES, json=collection("notes", {"id": 7200, "entity_id": 900}))
    adapter.report_delivery(DeliveryReport("note:900:7100", status, error="blocked"))
    (item,) = body_of(rsps.calls[0])
    assert item["entity_id"] == 900 and item["note_type"] == "service_message"
    assert item["params"]["service"] == "CRM bridge"
    text = item["params"]["text"]
    assert strip_hidden(text) == expected  # one line, no visible machine marker
    # the bridge's marker: the note webhook never takes it for a reply
    assert parse_marker(text) == (marker_hash(f"delivery:7100:{status.value}"), None, None)
