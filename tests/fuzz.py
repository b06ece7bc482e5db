# ruff: noqa: S105, S106  (fake secrets and tokens are fuzzing fixtures)
"""Coverage-guided fuzzing of every webhook parser (atheris / libFuzzer).

Run ``python -m tests.fuzz --seconds N`` (``make fuzz FUZZ_SECONDS=N``): each
target below fuzzes in a subprocess of its own for N seconds, then a table
(target, executions, corpus, crashes) is printed; the exit status is 1 when
any target crashed. ``--target NAME`` (repeatable) picks targets, ``--runs``
bounds executions instead of time, ``--list`` names the targets, and
``--reproduce NAME FILE`` runs one saved input again (a crash artifact).

A target takes the raw bytes as the webhook body, builds the request the way
the provider sends it (correctly signed: the HubSpot v3 signature, amoCRM's
X-Signature, Telegram's secret header, Bitrix24's ``application_token`` in the
seeds), and calls the adapter's ``verify`` *and* ``parse`` hooks (parse also
when verify refused: both must hold on any input). The adapter's documented
errors (:class:`bridge.errors.WebhookError`: 400/403/413/503) are expected;
any other exception, a broken invariant of the result (wrong types, an
``external_id`` that is not a non-empty string, a naive datetime) or an input
slower than ``--timeout`` seconds is a crash. Crash inputs are saved under
``var/fuzz/<target>/`` (``crash-*``, ``timeout-*``) and the growing corpus
under ``var/fuzz/<target>/corpus`` (seeded from the real payloads in
``tests/fixtures/corpora`` and the Bitrix24 examples in
``sandbox/bitrix24/spec/examples``).

No target can reach the network: every adapter's HTTP session is
:class:`CannedSession`, which answers the few reads a parser makes (amoCRM's
lead re-read, Bitrix24's ``crm.*.get`` and ``app.info``) from memory.

The builders here (adapters, signed requests, PHP forms, seeds) are shared
with the Hypothesis properties in ``tests/property/test_parsers.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT / "tests" / "fixtures" / "corpora"
B24_EXAMPLES = ROOT / "sandbox" / "bitrix24" / "spec" / "examples"
WORKDIR = ROOT / "var" / "fuzz"
#: the packages whose code the fuzzer measures coverage of (python-telegram-bot
#: too for the Telegram target: its de_json is half of that parser)
INSTRUMENTED = ["bridge", "channel_adapters", "crm_adapters"]


def _instrumentation() -> contextlib.AbstractContextManager[Any]:
    """In a fuzzing child process the parsers are imported instrumented
    (coverage feedback for libFuzzer); everywhere else, plainly."""
    if __name__ == "__main__" and "--child" in sys.argv:
        import atheris

        extra = ["telegram"] if "telegram_update" in sys.argv else []
        return atheris.instrument_imports(include=INSTRUMENTED + extra)
    return contextlib.nullcontext()


with _instrumentation():
    import requests

    from bridge.errors import WebhookError
    from bridge.http import HttpClient
    from bridge.identity import normalize_phone
    from bridge.model import (
        ChannelAccountInfo,
        CrmAccountInfo,
        CrmEvent,
        IgnoredEvent,
        InboundMessage,
        ThreadMigrated,
        WebhookRequest,
    )
    from channel_adapters.telegram import TelegramAdapter, utm_from_start
    from crm_adapters.amocrm import AmoCrmAdapter
    from crm_adapters.amocrm.chats import body_signature
    from crm_adapters.amocrm.fields import phones_match
    from crm_adapters.amocrm.timeline import parse_marker as amo_parse_marker
    from crm_adapters.amocrm.webhooks import decode_brackets as amo_decode_brackets
    from crm_adapters.amocrm.webhooks import strip_reply_marker
    from crm_adapters.bitrix24 import Bitrix24Adapter
    from crm_adapters.bitrix24.openlines import bb_to_text, person_name, plain_text
    from crm_adapters.bitrix24.timeline import parse_marker as b24_parse_marker
    from crm_adapters.bitrix24.webhooks import decode_brackets as b24_decode_brackets
    from crm_adapters.hubspot import HubSpotAdapter
    from crm_adapters.hubspot.webhooks import html_to_text, sign_v3

T0 = dt.datetime(2025, 3, 1, 9, 15, 30, tzinfo=dt.UTC)
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# --------------------------------------------------------------------------
# offline HTTP
# --------------------------------------------------------------------------

Handler = Callable[[str, str, Mapping[str, Any]], tuple[int, Any] | None]


class CannedSession(requests.Session):
    """A ``requests.Session`` that never touches the network: ``handler``
    answers ``(status, JSON body)`` or None (then: a connection error)."""

    def __init__(self, handler: Handler | None = None) -> None:
        super().__init__()
        self.handler = handler
        self.seen: list[tuple[str, str]] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.seen.append((method, url))
        answer = self.handler(method, url, kwargs) if self.handler else None
        if answer is None:
            raise requests.ConnectionError("no network while fuzzing")
        status, body = answer
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = JSON
        response.url = url
        return response


class StaticCredentials:
    """The core's CredentialProvider, without refreshes."""

    def __init__(self, creds: Mapping[str, Any]) -> None:
        self.creds = dict(creds)

    def get(self) -> Mapping[str, Any]:
        return dict(self.creds)

    def refresh(self, stale: Mapping[str, Any]) -> Mapping[str, Any]:
        return dict(self.creds)


def offline(handler: Handler | None = None, base: str = "") -> HttpClient:
    return HttpClient(base, session=CannedSession(handler))


# --------------------------------------------------------------------------
# Telegram
# --------------------------------------------------------------------------

TG_SECRET = "fuzz-secret_token-1"
TG_TOKEN = "123456789:AAE-fuzzing-token"


def telegram_adapter() -> TelegramAdapter:
    account = ChannelAccountInfo(
        id=1,
        kind="telegram",
        key="acct-key",
        credentials={"bot_token": TG_TOKEN, "secret_token": TG_SECRET},
    )
    return TelegramAdapter(account, offline(base="https://api.telegram.org"))


def telegram_request(body: bytes, secret: str | None = TG_SECRET) -> WebhookRequest:
    headers = {"content-type": JSON}
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/telegram/acct-key",
        headers=headers,
        body=body,
        received_at=T0,
    )


def telegram_updates() -> list[dict[str, Any]]:
    """Every ``Update`` object in the Telegram corpora (real payloads)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("update_id"), int) and not isinstance(node["update_id"], bool):
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted((CORPORA / "telegram").rglob("*.json")):
        try:
            walk(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return found


# --------------------------------------------------------------------------
# HubSpot
# --------------------------------------------------------------------------

HS_SECRET = "hubspot-client-secret-1"
HS_PORTAL = "4242"
HS_URL = "https://bridge.example/webhooks/crm/hubspot/tenant-key"


def hubspot_adapter(account_id: str | None = HS_PORTAL) -> HubSpotAdapter:
    account = CrmAccountInfo(
        tenant_id=1,
        kind="hubspot",
        account_id=account_id,
        app={"client_id": "client-id-1", "client_secret": HS_SECRET},
    )
    creds = StaticCredentials({"type": "oauth", "access_token": "a", "refresh_token": "r"})
    return HubSpotAdapter(account, creds, offline(base="https://api.hubapi.com"))


def hubspot_request(body: bytes, *, now: float | None = None) -> WebhookRequest:
    """Signed with HubSpot's v3 scheme, timestamp now (within the window)."""
    timestamp = str(int((time.time() if now is None else now) * 1000))
    return WebhookRequest(
        method="POST",
        url=HS_URL,
        headers={
            "content-type": JSON,
            "x-hubspot-signature-v3": sign_v3(HS_SECRET, "POST", HS_URL, body, timestamp),
            "x-hubspot-request-timestamp": timestamp,
        },
        body=body,
        received_at=T0,
    )


def hubspot_reply(**message: Any) -> dict[str, Any]:
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
        "portalId": int(HS_PORTAL),
        "channelId": "ch-1",
        "eventTimestamp": 1740832260500,
        "message": base,
    }


# --------------------------------------------------------------------------
# amoCRM
# --------------------------------------------------------------------------

AMO_ACCOUNT = "30100"
AMO_SUB = "acme"
AMO_AMOJO = "5d1c0b6e-0a4d-4c1e-9d3b-2a6f8e9b0c11"
AMO_SCOPE = f"chan-1_{AMO_AMOJO}"
AMO_CHANNEL_SECRET = "channel-secret-1"
AMO_CONVERSATION_FIELD = 801
AMO_LEAD = re.compile(r"/api/v4/leads/(-?\d+)$")


def amo_lead_conversation(lead_id: str) -> str:
    """What the canned amoCRM answers as a lead's conversation uid."""
    return f"conv-of-lead-{lead_id}"


def _amo_portal(method: str, url: str, kwargs: Mapping[str, Any]) -> tuple[int, Any] | None:
    match = AMO_LEAD.search(urlsplit(url).path)
    if method == "GET" and match:
        lead = match.group(1)
        values = [{"value": amo_lead_conversation(lead)}]
        return 200, {
            "id": int(lead),
            "custom_fields_values": [{"field_id": AMO_CONVERSATION_FIELD, "values": values}],
        }
    return None


def amocrm_adapter(**settings: Any) -> AmoCrmAdapter:
    account = CrmAccountInfo(
        tenant_id=1,
        kind="amocrm",
        account_id=AMO_ACCOUNT,
        settings={
            "subdomain": AMO_SUB,
            "amo_account_id": AMO_ACCOUNT,
            "amojo_id": AMO_AMOJO,
            "scope_id": AMO_SCOPE,
            "inbox": True,
            "conversation_field": AMO_CONVERSATION_FIELD,
            **settings,
        },
        app={
            "client_id": "integration-uuid-1",
            "client_secret": "client-secret-1",
            "channel_id": "chan-1",
            "channel_secret": AMO_CHANNEL_SECRET,
            "bot_id": "bot-1",
        },
    )
    creds = StaticCredentials(
        {
            "type": "oauth",
            "access_token": "access",
            "refresh_token": "refresh",
            "expires_at": 4_000_000_000,
        }
    )
    return AmoCrmAdapter(account, creds, offline(_amo_portal))


def amocrm_chat_request(body: bytes, *, secret: str = AMO_CHANNEL_SECRET) -> WebhookRequest:
    """The chat channel's hook: JSON, X-Signature = HMAC-SHA1 of the body."""
    return WebhookRequest(
        method="POST",
        url=f"https://bridge.example/webhooks/crm/amocrm/route/{AMO_SCOPE}",
        headers={"content-type": JSON, "x-signature": body_signature(secret, body)},
        body=body,
        received_at=T0,
    )


def amocrm_form_request(body: bytes) -> WebhookRequest:
    """An account webhook: form-encoded, unsigned, at the tenant's own URL."""
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/crm/amocrm/tenant-key",
        headers={"content-type": FORM, "user-agent": "amoCRM-WebHook-client/1.0"},
        body=body,
        received_at=T0,
    )


def amocrm_chat_hook(**message: Any) -> dict[str, Any]:
    """The amojo outgoing-message hook (FACTS 1.13)."""
    inner = {
        "id": "amojo-msg-9",
        "type": "text",
        "text": "Yes, it ships tomorrow.",
        "media": "",
        "file_name": "",
        "file_size": 0,
        **message,
    }
    return {
        "account_id": AMO_AMOJO,
        "time": 1740820600,
        "message": {
            "receiver": {"id": "amojo-client-1", "client_id": "tg-user-1"},
            "sender": {"id": "amojo-manager-1", "name": "Bob"},
            "conversation": {"id": "amojo-conv-1", "client_id": "conv-1"},
            "timestamp": 1740820600,
            "msec_timestamp": 1740820600123,
            "message": inner,
        },
    }


# --------------------------------------------------------------------------
# Bitrix24
# --------------------------------------------------------------------------

B24_DOMAIN = "acme.bitrix24.com"
B24_ENDPOINT = f"https://{B24_DOMAIN}/rest/"
B24_MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
B24_APP_TOKEN = "51856fefc120afa4b628cc82d3935cce"
B24_CONNECTOR = "crm_bridge_telegram"
B24_LINE = "107"
B24_APP = {
    "client_id": "local.56017020f07e17.98523769",
    "client_secret": "app-secret-1",
    "auth_base": "https://oauth.bitrix.info",
}
B24_SETTINGS = {
    "member_id": B24_MEMBER,
    "domain": B24_DOMAIN,
    "inbox": True,
    "line": B24_LINE,
    "connectors": {"telegram": B24_CONNECTOR},
    "connector_id": B24_CONNECTOR,
}


def b24_record(kind: str, entity_id: int) -> dict[str, Any]:
    """What the canned portal answers for ``crm.<kind>.get``: odd ids are
    closed (won), every id has owner ``<id mod 7>`` (0 means none)."""
    semantic = "STATUS_SEMANTIC_ID" if kind == "lead" else "STAGE_SEMANTIC_ID"
    return {
        "ID": str(entity_id),
        "ASSIGNED_BY_ID": str(entity_id % 7),
        semantic: "S" if entity_id % 2 else "P",
    }


def _b24_portal(method: str, url: str, kwargs: Mapping[str, Any]) -> tuple[int, Any] | None:
    path = urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    if not path.endswith("/rest/" + name) and path != "/oauth/token/":
        return 404, {"error": "NOT_FOUND", "error_description": "no REST API here"}
    params = kwargs.get("json") or {}
    timing = {"start": 1.0, "finish": 1.1, "operating": 0}
    match = re.fullmatch(r"crm\.(lead|deal)\.get", name)
    if match:
        try:
            entity_id = int(str(params.get("id")))
        except ValueError:
            return 400, {"error": "INVALID_ARG_VALUE", "error_description": "bad id"}
        if entity_id % 5 == 0:
            return 400, {"error": "NOT_FOUND", "error_description": "Not found"}
        return 200, {"result": b24_record(match.group(1), entity_id), "time": timing}
    if name == "crm.status.list":
        return 200, {"result": [], "time": timing}
    if name == "app.info":
        info = {"CODE": B24_APP["client_id"], "LICENSE_FAMILY": "ent", "LICENSE": "de_ent250"}
        return 200, {"result": info, "time": timing}
    if urlsplit(url).path == "/oauth/token/":
        # the OAuth server redeems an install's refresh token; it names the
        # portal: B24_MEMBER, or what follows "@" in the token (tests)
        query = kwargs.get("params") or {}
        token = str(query.get("refresh_token") or "")
        if query.get("grant_type") != "refresh_token" or not token:
            return 400, {"error": "invalid_grant", "error_description": "bad grant"}
        return 200, {
            "access_token": "new-access-" + token[:16],
            "refresh_token": "new-refresh-" + token[:16],
            "expires_in": 3600,
            "member_id": token.split("@", 1)[1] if "@" in token else B24_MEMBER,
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "status": "L",
        }
    return None


def bitrix24_adapter(**settings: Any) -> Bitrix24Adapter:
    account = CrmAccountInfo(
        tenant_id=1,
        kind="bitrix24",
        account_id=B24_MEMBER,
        settings={**B24_SETTINGS, **settings},
        app=dict(B24_APP),
    )
    creds = StaticCredentials(
        {
            "type": "oauth",
            "access_token": "s6p6eclrvim6da22ft9ch94ekreb52lv",
            "refresh_token": "4s386p3q0tr8dy89xvmt96234v3dljg8",
            "expires_at": 4_000_000_000,
            "client_endpoint": B24_ENDPOINT,
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "member_id": B24_MEMBER,
            "application_token": B24_APP_TOKEN,
        }
    )
    return Bitrix24Adapter(account, creds, offline(_b24_portal))


def bitrix24_http() -> HttpClient:
    """The HTTP client an install event is verified through (``app.info``)."""
    return offline(_b24_portal)


def bitrix24_request(body: bytes, content_type: str | None = None) -> WebhookRequest:
    """An event as Bitrix24 POSTs it; the media type is sniffed when not
    given (a body starting with ``{`` is JSON, anything else a form)."""
    if content_type is None:
        content_type = JSON if body.lstrip()[:1] == b"{" else FORM
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/crm/bitrix24/key-1",
        headers={"content-type": content_type},
        body=body,
        received_at=T0,
    )


def b24_example(name: str) -> dict[str, Any]:
    return json.loads((B24_EXAMPLES / f"{name}.1.json").read_text(encoding="utf-8"))


def b24_event(name: str) -> dict[str, Any]:
    """An official event example, addressed to this tenant's portal."""
    payload = b24_example(name)
    payload["auth"] = {
        **payload.get("auth", {}),
        "member_id": B24_MEMBER,
        "application_token": B24_APP_TOKEN,
        "domain": B24_DOMAIN,
        "client_endpoint": B24_ENDPOINT,
    }
    return payload


B24_EVENT_EXAMPLES = [
    "api-reference__imopenlines__imconnector__events__on-im-connector-message-add",
    "api-reference__imopenlines__imconnector__events__on-im-connector-message-update",
    "api-reference__imopenlines__imconnector__events__on-im-connector-dialog-finish",
    "api-reference__common__events__on-app-uninstall",
    "api-reference__common__events__on-app-install",
    "api-reference__crm__leads__events__on-crm-lead-update",
    "api-reference__crm__deals__events__on-crm-deal-update",
    "api-reference__crm__leads__events__on-crm-lead-add",
    "api-reference__crm__contacts__events__on-crm-contact-add",
]


# --------------------------------------------------------------------------
# PHP forms
# --------------------------------------------------------------------------


def php_pairs(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``http_build_query`` pairs: ``a[b][0][c]=x`` (lists by index)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        else:
            pairs.append((prefix, "" if value is None else str(value)))

    walk("", payload)
    return pairs


def php_form(payload: Mapping[str, Any]) -> bytes:
    return urlencode(php_pairs(payload)).encode()


def php_form_raw(payload: Mapping[str, Any]) -> bytes:
    """The same with brackets left unescaped (both are what PHP clients send)."""
    return "&".join(
        f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in php_pairs(payload)
    ).encode()


# --------------------------------------------------------------------------
# invariants of what a parser returns
# --------------------------------------------------------------------------


class BrokenInvariant(AssertionError):
    """A parser returned something the normalised model does not allow."""


def _aware(value: Any, what: str) -> None:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise BrokenInvariant(f"{what} is not an aware datetime: {value!r}")


def _ident(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise BrokenInvariant(f"{what} is not a non-empty string: {value!r}")


def check_channel_events(events: Any) -> None:
    if not isinstance(events, list) or len(events) != 1:
        raise BrokenInvariant(f"a Telegram update must give exactly one event: {events!r}")
    (event,) = events
    if isinstance(event, InboundMessage):
        for name in ("external_id", "external_user_id", "external_thread_id"):
            _ident(getattr(event, name), name)
        _aware(event.sent_at, "sent_at")
        if not isinstance(event.text, str):
            raise BrokenInvariant("text is not a string")
    elif isinstance(event, ThreadMigrated):
        for name in ("external_id", "old_thread_id", "new_thread_id"):
            _ident(getattr(event, name), name)
    elif isinstance(event, IgnoredEvent):
        _ident(event.external_id, "external_id")
        if not isinstance(event.event_type, str):
            raise BrokenInvariant("event_type is not a string")
    else:
        raise BrokenInvariant(f"not an InboundEvent: {event!r}")


def check_crm_events(events: Any) -> None:
    if not isinstance(events, list):
        raise BrokenInvariant(f"parse_webhook must return a list: {events!r}")
    for event in events:
        if not isinstance(event, CrmEvent):
            raise BrokenInvariant(f"not a CrmEvent: {event!r}")
        _ident(event.external_id, "external_id")
        _aware(event.occurred_at, "occurred_at")
        if not isinstance(event.text, str):
            raise BrokenInvariant("text is not a string")
        for name in ("thread_key", "crm_thread_id", "recipient", "author_id", "owner_id"):
            value = getattr(event, name)
            if value is not None and not isinstance(value, str):
                raise BrokenInvariant(f"{name} is not a string: {value!r}")


# --------------------------------------------------------------------------
# targets: raw bytes -> verify + parse
# --------------------------------------------------------------------------

_ADAPTERS: dict[str, Any] = {}


def _adapter(name: str, factory: Callable[[], Any]) -> Any:
    if name not in _ADAPTERS:
        _ADAPTERS[name] = factory()
    return _ADAPTERS[name]


def verify_then_parse(verify: Callable[[], None], parse: Callable[[], Any]) -> Any:
    """Both hooks, each allowed only its documented :class:`WebhookError`;
    parse runs even when verify refused (it must hold on any body)."""
    with contextlib.suppress(WebhookError):
        verify()
    try:
        return parse()
    except WebhookError:
        return None


def fuzz_telegram_update(data: bytes) -> None:
    adapter = _adapter("telegram", telegram_adapter)
    request = telegram_request(data)
    events = verify_then_parse(lambda: adapter.verify(request), lambda: adapter.parse(request))
    if events is not None:
        check_channel_events(events)


def fuzz_hubspot_webhook(data: bytes) -> None:
    adapter = _adapter("hubspot", hubspot_adapter)
    request = hubspot_request(data)
    events = verify_then_parse(
        lambda: adapter.verify_webhook(request), lambda: adapter.parse_webhook(request)
    )
    if events is not None:
        check_crm_events(events)


def fuzz_amocrm_chat_hook(data: bytes) -> None:
    adapter = _adapter("amocrm", amocrm_adapter)
    request = amocrm_chat_request(data)
    events = verify_then_parse(
        lambda: adapter.verify_webhook(request), lambda: adapter.parse_webhook(request)
    )
    if events is not None:
        check_crm_events(events)


def fuzz_amocrm_account_webhook(data: bytes) -> None:
    adapter = _adapter("amocrm", amocrm_adapter)
    request = amocrm_form_request(data)
    events = verify_then_parse(
        lambda: adapter.verify_webhook(request), lambda: adapter.parse_webhook(request)
    )
    if events is not None:
        check_crm_events(events)


def fuzz_bitrix24_event(data: bytes) -> None:
    adapter = _adapter("bitrix24", bitrix24_adapter)
    request = bitrix24_request(data)
    events = verify_then_parse(
        lambda: adapter.verify_webhook(request), lambda: adapter.parse_webhook(request)
    )
    if events is not None:
        check_crm_events(events)


def fuzz_bitrix24_install(data: bytes) -> None:
    http = _adapter("bitrix24-http", bitrix24_http)
    try:
        creds = Bitrix24Adapter.install_event(B24_APP, bitrix24_request(data), http=http)
    except WebhookError:
        return
    if creds is None:
        return
    for key in ("access_token", "refresh_token", "member_id", "application_token", "account_id"):
        _ident(creds.get(key), f"credentials[{key}]")
    if not str(creds.get("client_endpoint")).endswith("/rest/"):
        raise BrokenInvariant(f"client_endpoint {creds.get('client_endpoint')!r}")
    if not isinstance(creds.get("expires_at"), int):
        raise BrokenInvariant(f"expires_at {creds.get('expires_at')!r}")


def fuzz_bitrix24_bbcode(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for keep in (False, True):
        body, author = bb_to_text(text, keep_signature=keep)
        if not isinstance(body, str) or (author is not None and not isinstance(author, str)):
            raise BrokenInvariant("bb_to_text returned something else than (str, str | None)")
    if not isinstance(plain_text(text), str):
        raise BrokenInvariant("plain_text returned something else than a str")


def fuzz_text_helpers(data: bytes) -> None:
    """The small parsers: bridge markers, the reply marker, deep-link UTM,
    phone numbers, HubSpot richText, Bitrix24 person names, PHP forms."""
    text = data.decode("utf-8", "replace")
    parsed = amo_parse_marker(text)
    if parsed is not None:
        digest, sequence, at = parsed
        if len(digest) != 12 or (at is not None and at.tzinfo is None):
            raise BrokenInvariant(f"amoCRM parse_marker -> {parsed!r}")
    b24 = b24_parse_marker(text)
    if b24 is not None and len(b24) != 12:
        raise BrokenInvariant(f"Bitrix24 parse_marker -> {b24!r}")
    reply = strip_reply_marker(text, ("@client", "@клиент"))
    if reply is not None and reply != reply.strip():
        raise BrokenInvariant(f"strip_reply_marker left whitespace: {reply!r}")
    utm = utm_from_start(text)
    if utm and "start" not in utm:
        raise BrokenInvariant(f"utm_from_start -> {utm!r}")
    phone = normalize_phone(text)
    if phone is not None and not re.fullmatch(r"\+[0-9]{2,17}", phone):
        raise BrokenInvariant(f"normalize_phone -> {phone!r}")
    phones_match(text, "+79161234567")
    html_to_text(text)
    name = person_name(text)
    if len(name) > 25:
        raise BrokenInvariant(f"person_name -> {name!r}")
    for decode in (amo_decode_brackets, b24_decode_brackets):
        with contextlib.suppress(WebhookError):
            decode(data)


# --------------------------------------------------------------------------
# seeds and dictionaries
# --------------------------------------------------------------------------


def _telegram_seeds() -> list[bytes]:
    seeds = [json.dumps(u, ensure_ascii=False).encode() for u in telegram_updates()]
    chat = {"id": -1001234567890, "type": "supergroup", "title": "Shop"}
    user = {"id": 4242, "is_bot": False, "first_name": "Ann", "language_code": "en"}
    extra = [
        {
            "update_id": 10,
            "callback_query": {
                "id": "cb-1",
                "from": user,
                "chat_instance": "ci",
                "data": "buy:7",
                "message": {"message_id": 5, "date": 1740820600, "chat": chat, "text": "?"},
            },
        },
        {
            "update_id": 11,
            "message": {
                "message_id": 6,
                "date": 1740820600,
                "chat": {"id": -100, "type": "group", "title": "g"},
                "from": user,
                "migrate_to_chat_id": -1001234567890,
            },
        },
        {
            "update_id": 12,
            "message": {
                "message_id": 7,
                "date": 1740820600,
                "chat": {"id": 4242, "type": "private", "first_name": "Ann"},
                "from": user,
                "text": "/start utm_source-google__utm_campaign-spring-sale",
            },
        },
        {
            "update_id": 13,
            "message": {
                "message_id": 8,
                "date": 1740820600,
                "chat": {"id": 4242, "type": "private"},
                "from": user,
                "contact": {"phone_number": "79161234567", "first_name": "Ann", "user_id": 4242},
            },
        },
        {"update_id": 14, "inline_query": {"id": "q", "from": user, "query": "", "offset": ""}},
    ]
    return seeds + [json.dumps(e, ensure_ascii=False).encode() for e in extra]


def _hubspot_seeds() -> list[bytes]:
    payloads: list[Any] = [
        hubspot_reply(),
        [hubspot_reply(), hubspot_reply(id="hs-msg-2", text="", richText="<b>x</b><br>y")],
        {"type": "CHANNEL_ACCOUNT_CREATED", "portalId": int(HS_PORTAL), "eventId": 5},
        hubspot_reply(direction="INCOMING"),
    ]
    return [json.dumps(p, ensure_ascii=False).encode() for p in payloads]


def _amocrm_chat_seeds() -> list[bytes]:
    payloads = [
        amocrm_chat_hook(),
        amocrm_chat_hook(type="picture", media="https://amojo.example/f.jpg", file_size="2048"),
        {"account_id": AMO_AMOJO, "action": {"typing": {"expired_at": 1740820700}}},
    ]
    return [json.dumps(p, ensure_ascii=False).encode() for p in payloads]


AMO_ACCOUNT_FORM = {"subdomain": AMO_SUB, "id": AMO_ACCOUNT}


def _amocrm_account_seeds() -> list[bytes]:
    payloads = [
        {"leads": {"status": [{"id": "900", "status_id": "142", "pipeline_id": "7"}]}},
        {"leads": {"responsible": [{"id": "900", "responsible_user_id": "101"}]}},
        {"leads": {"delete": [{"id": "900"}, {"id": "901"}]}},
        {"contacts": {"delete": [{"id": "501", "type": "contact"}]}},
        {
            "leads": {
                "note": [
                    {
                        "note": {
                            "id": "77",
                            "text": "@client Yes, it ships tomorrow.",
                            "element_id": "900",
                            "created_by": "101",
                            "date_create": "1740820600",
                        }
                    }
                ]
            }
        },
    ]
    seeds = [php_form({**p, "account": AMO_ACCOUNT_FORM}) for p in payloads]
    return seeds + [php_form_raw({**payloads[0], "account": AMO_ACCOUNT_FORM})]


def _b24_connector_event() -> dict[str, Any]:
    payload = b24_event(B24_EVENT_EXAMPLES[0])
    payload["data"]["CONNECTOR"] = B24_CONNECTOR
    return payload


def _bitrix24_seeds() -> list[bytes]:
    payloads = [b24_event(name) for name in B24_EVENT_EXAMPLES] + [_b24_connector_event()]
    payloads.append(
        {
            "event": "ONCRMDEALDELETE",
            "data": {"FIELDS": {"ID": "77"}},
            "ts": "1740820600",
            "auth": {"member_id": B24_MEMBER, "application_token": B24_APP_TOKEN},
        }
    )
    forms = [php_form(p) for p in payloads]
    return forms + [json.dumps(payloads[-2], ensure_ascii=False).encode()]


def _bitrix24_install_seeds() -> list[bytes]:
    payload = b24_event("api-reference__common__events__on-app-install")
    return [php_form(payload), json.dumps(payload).encode()]


def _bbcode_seeds() -> list[bytes]:
    texts = [
        "[b]Klaus Weber:[/b] [br]Guten Tag!",
        "[quote=Ann]first[br][quote]inner[/quote][/quote]answer [i]now[/i]",
        "see [url=https://example.com/x]the [b]docs[/b][/url] and [url]https://a.b[/url]",
        "[user=5]Ann[/user] [color=#ff0000]red[/color] [icon=x] [img]https://i/p.png[/img]",
        "[B]Bob:[/B]\n[s]old[/s] [code]x = [1][/code]",
    ]
    return [t.encode() for t in texts]


def _helper_seeds() -> list[bytes]:
    texts = [
        "note body\n[bridge:0123456789ab:42:1740820600123]",
        "[bridge:0123456789ab]",
        "@client: Yes, tomorrow",
        "  @Клиент — привет",
        "/start utm_source-google__utm_campaign-spring-sale",
        "/start@shop_bot promo-7",
        "+44 20 7946 0123",
        "8 (916) 123-45-67",
        "<p>Hi &amp; bye<br/>x</p>",
        "Ann-Marie O'Neil 3rd",
        "a[b][0][c]=x&a[b][1][c]=y&k=v",
    ]
    return [t.encode() for t in texts]


def _json_tokens(seeds: Iterable[bytes]) -> set[bytes]:
    tokens: set[bytes] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                tokens.add(json.dumps(key, ensure_ascii=False).encode())
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and len(node) < 40:
            tokens.add(json.dumps(node, ensure_ascii=False).encode())

    for seed in seeds:
        with contextlib.suppress(ValueError):
            walk(json.loads(seed))
    return tokens | {b"{", b"}", b"[", b"]", b":", b",", b"null", b"true", b"-0", b"1e999"}


def _form_tokens(seeds: Iterable[bytes]) -> set[bytes]:
    tokens: set[bytes] = {b"&", b"=", b"[]", b"%5B", b"%5D", b"%FF", b"+"}
    for seed in seeds:
        for part in re.findall(rb"(?:%5B|\[)([^&=%\[\]]{1,40})(?:%5D|\])", seed):
            tokens.add(b"[" + part + b"]")
    return tokens


BB_TOKENS = {
    t.encode()
    for t in "[b] [/b] [br] [i] [/i] [u] [/u] [s] [/s] [quote] [quote=x] [/quote] [url] "
    "[url=https://x] [/url] [user=1] [/user] [img] [/img] [icon=1] [color=#f00] [/color] "
    "[code] [/code] [p] [/p] [chat=1] [/chat] : \n".split(" ")
}
HELPER_TOKENS = {
    t.encode()
    for t in ["[bridge:", "0123456789ab", ":", "]", "@client", "@клиент", "/start ", "__", "-"]
    + ["utm_source", "+", "(", ")", "<br>", "</p>", "&amp;", "&#", "[", "=", "&", "8", "7"]
}


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    tokens: Callable[[list[bytes]], set[bytes]]
    about: str


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            "telegram_update",
            fuzz_telegram_update,
            _telegram_seeds,
            _json_tokens,
            "TelegramAdapter.verify/parse (secret header, Update JSON)",
        ),
        Target(
            "hubspot_webhook",
            fuzz_hubspot_webhook,
            _hubspot_seeds,
            _json_tokens,
            "HubSpotAdapter.verify_webhook/parse_webhook (v3-signed JSON)",
        ),
        Target(
            "amocrm_chat_hook",
            fuzz_amocrm_chat_hook,
            _amocrm_chat_seeds,
            _json_tokens,
            "AmoCrmAdapter chat hook (X-Signature HMAC-SHA1, JSON)",
        ),
        Target(
            "amocrm_account_webhook",
            fuzz_amocrm_account_webhook,
            _amocrm_account_seeds,
            _form_tokens,
            "AmoCrmAdapter account webhook (PHP bracket form, note replies)",
        ),
        Target(
            "bitrix24_event",
            fuzz_bitrix24_event,
            _bitrix24_seeds,
            lambda seeds: _form_tokens(seeds) | _json_tokens(seeds),
            "Bitrix24Adapter events (application_token, form or JSON, re-reads)",
        ),
        Target(
            "bitrix24_install",
            fuzz_bitrix24_install,
            _bitrix24_install_seeds,
            lambda seeds: _form_tokens(seeds) | _json_tokens(seeds),
            "Bitrix24Adapter.install_event (ONAPPINSTALL, app.info check)",
        ),
        Target(
            "bitrix24_bbcode",
            fuzz_bitrix24_bbcode,
            _bbcode_seeds,
            lambda _seeds: BB_TOKENS,
            "Bitrix24 BB-code -> text (bb_to_text, plain_text)",
        ),
        Target(
            "text_helpers",
            fuzz_text_helpers,
            _helper_seeds,
            lambda _seeds: HELPER_TOKENS,
            "markers, reply marker, /start UTM, phones, richText, names, PHP forms",
        ),
    ]
}


# --------------------------------------------------------------------------
# the fuzzing child (one target, inside atheris)
# --------------------------------------------------------------------------


def _dict_line(token: bytes) -> str:
    out = []
    for byte in token:
        char = chr(byte)
        if char in '\\"':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02X}")
    return '"' + "".join(out) + '"'


def prepare(target: Target, workdir: Path) -> tuple[Path, Path]:
    """The target's corpus folder (seeded) and libFuzzer dictionary."""
    corpus = workdir / target.name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = target.seeds()
    for seed in seeds:
        path = corpus / ("seed-" + hashlib.sha1(seed).hexdigest())  # noqa: S324 (a file name)
        if not path.exists():
            path.write_bytes(seed)
    dictionary = workdir / target.name / "tokens.dict"
    lines = sorted(_dict_line(t) for t in target.tokens(seeds) if 0 < len(t) <= 64)
    dictionary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus, dictionary


def child(name: str, args: argparse.Namespace) -> None:
    import atheris

    target = TARGETS[name]
    workdir = Path(args.workdir)
    logging.disable(logging.CRITICAL)  # the adapters' warnings would drown libFuzzer's
    corpus, dictionary = prepare(target, workdir)
    run = target.run
    run(b"")  # the adapters are built before the clock starts
    flags = [
        "-print_final_stats=1",
        f"-artifact_prefix={workdir / name}/",
        f"-dict={dictionary}",
        f"-timeout={args.timeout}",
        "-rss_limit_mb=2048",
        "-max_len=8192",
    ]
    if args.reproduce:
        argv = [sys.argv[0], *flags, args.reproduce]
    elif args.runs:
        argv = [sys.argv[0], *flags, f"-runs={args.runs}", str(corpus)]
    else:
        argv = [sys.argv[0], *flags, f"-max_total_time={args.seconds}", str(corpus)]
    atheris.Setup(argv, run)
    atheris.Fuzz()


# --------------------------------------------------------------------------
# the driver (one subprocess per target, then the table)
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    wall: float  # seconds, start-up (instrumenting the imports) included
    execs: int | None
    corpus: int | None
    crashes: int
    status: str
    detail: str = ""
    #: libFuzzer's own figures: seconds fuzzed, executions per second, new units
    fuzzed: int | None = None
    rate: int | None = None
    new: int | None = None


def _stat(output: str, key: str) -> int | None:
    match = re.search(rf"stat::{key}:\s*(\d+)", output)
    return int(match.group(1)) if match else None


def _last_exec_line(output: str) -> int | None:
    found = re.findall(r"^#(\d+)\s", output, re.M)
    return int(found[-1]) if found else None


def _crash_detail(output: str) -> str:
    """The exception line atheris prints first ("KeyError: 0"), or
    libFuzzer's own verdict (a timeout, out of memory)."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if "Uncaught Python exception" in line:
            tail = [entry.strip() for entry in lines[index + 1 : index + 5] if entry.strip()]
            return tail[0] if tail else "?"
    for line in lines:
        if "ERROR: libFuzzer:" in line:
            return line.split("ERROR: libFuzzer:", 1)[1].strip()
    return ""


def _artifacts(output: str) -> list[str]:
    return re.findall(r"Test unit written to (\S+)", output)


def drive(name: str, args: argparse.Namespace) -> Outcome:
    command = [sys.executable, "-m", "tests.fuzz", "--child", name, "--workdir", args.workdir]
    command += ["--seconds", str(args.seconds), "--timeout", str(args.timeout)]
    if args.runs:
        command += ["--runs", str(args.runs)]
    started = time.monotonic()
    budget = (args.seconds if not args.runs else 600) + 300
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    try:
        done = subprocess.run(  # noqa: S603 (our own interpreter and module)
            command, cwd=ROOT, capture_output=True, text=True, timeout=budget, env=env
        )
    except subprocess.TimeoutExpired:
        return Outcome(name, time.monotonic() - started, None, None, 1, "hung")
    elapsed = time.monotonic() - started
    output = (done.stdout or "") + (done.stderr or "")
    log = Path(args.workdir) / name / "last-run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(output, encoding="utf-8")
    execs = _stat(output, "number_of_executed_units") or _last_exec_line(output)
    corpus = _count_corpus(Path(args.workdir) / name / "corpus")
    done_line = re.search(r"^Done \d+ runs in (\d+) second", output, re.M)
    figures = {
        "fuzzed": int(done_line.group(1)) if done_line else None,
        "rate": _stat(output, "average_exec_per_sec"),
        "new": _stat(output, "new_units_added"),
    }
    if done.returncode == 0:
        return Outcome(name, elapsed, execs, corpus, 0, "ok", **figures)
    if "No module named 'atheris'" in output:
        hint = "pip install -c constraints.txt -e '.[fuzz]'"
        return Outcome(name, elapsed, execs, corpus, 0, "no atheris", hint, **figures)
    artifacts = _artifacts(output)
    detail = _crash_detail(output)
    if artifacts:
        detail = f"{detail} -> {artifacts[0]}"
    crashes = max(1, len(artifacts))
    return Outcome(name, elapsed, execs, corpus, crashes, "CRASH", detail, **figures)


def _count_corpus(path: Path) -> int | None:
    try:
        return sum(1 for p in path.iterdir() if p.is_file())
    except OSError:
        return None


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def table(outcomes: list[Outcome]) -> str:
    head = ("target", "fuzzed s", "wall s", "execs", "execs/s", "new", "corpus", "crashes")
    head += ("status",)
    rows = [head]
    for o in outcomes:
        rows.append(
            (
                o.name,
                _num(o.fuzzed),
                f"{o.wall:.0f}",
                _num(o.execs),
                _num(o.rate),
                _num(o.new),
                _num(o.corpus),
                str(o.crashes),
                o.status,
            )
        )
    total = sum(o.execs or 0 for o in outcomes)
    crashes = sum(o.crashes for o in outcomes)
    rows.append(("total", "", "", _num(total), "", "", "", str(crashes), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    rule = "  ".join("-" * w for w in widths)
    lines.insert(1, rule)
    lines.insert(len(lines) - 1, rule)
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--runs", type=int, default=0, help="executions per target instead")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--workdir", default=str(WORKDIR))
    parser.add_argument("--list", action="store_true", help="name the targets and stop")
    parser.add_argument("--reproduce", nargs=2, metavar=("TARGET", "FILE"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        for target in TARGETS.values():
            print(f"{target.name:24} {target.about}")
        return 0
    if args.reproduce:
        name, path = args.reproduce
        args.reproduce = path
        child(name, args)
        return 0
    args.reproduce = None
    if args.child:
        child(args.child, args)
        return 0
    outcomes = []
    for name in args.target or list(TARGETS):
        print(
            f"fuzzing {name} ({f'{args.runs} runs' if args.runs else f'{args.seconds} s'})",
            flush=True,
        )
        outcome = drive(name, args)
        if outcome.status != "ok":
            print(f"  {outcome.status}: {outcome.detail}", flush=True)
        outcomes.append(outcome)
    print()
    print(table(outcomes))
    failed = [o for o in outcomes if o.status != "ok"]
    if failed:
        print(f"\n{len(failed)} target(s) failed; logs in {args.workdir}/<target>/last-run.log")
        print("reproduce one input: python -m tests.fuzz --reproduce TARGET FILE")
        return 1
    return 0


def seeds_of(name: str) -> Iterator[bytes]:
    """A target's seed inputs (the property tests run every target on them)."""
    yield from TARGETS[name].seeds()


if __name__ == "__main__":
    sys.exit(main())
