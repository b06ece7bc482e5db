# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Bitrix24's kit: events (Open Lines operator messages, CRM changes,
uninstall) are posted form-encoded (PHP bracket notation; JSON accepted) to
each tenant's URL, proven only by the ``auth[application_token]`` the
install delivered (FACTS 2.5). The app installs by POSTing ``ONAPPINSTALL``
to one install URL: nothing signed, so the event's endpoint must be the
portal's own host, its token must work there for our app (``app.info``)
and the OAuth server must confirm the portal by redeeming the event's
single-use refresh token. An incoming webhook URL can be pasted instead."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
import requests
import responses
from hypothesis import assume
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.http import HttpClient
from bridge.model import CrmAccountInfo, CrmEventKind, CrmRef, Installed, WebhookRequest
from bridge.schema import load
from crm_adapters.bitrix24 import Bitrix24Adapter, Bitrix24App
from crm_adapters.bitrix24.openlines import bb_to_text, person_name, plain_text
from crm_adapters.bitrix24.timeline import marker, marker_hash, parse_marker
from crm_adapters.bitrix24.webhooks import decode_brackets, token_digest
from sandbox.demo import DEMO_CRMS, event_install
from tests.kits.base import (
    MARK,
    CrmKit,
    DeepJson,
    FuzzTarget,
    HostileTarget,
    IsoConversation,
    IsoTenant,
    Property,
    Req,
    TenantSpec,
    TextHelpers,
)
from tests.kits.common import (
    BRACKET_EXAMPLES,
    DATES,
    DIGIT_ID,
    FORM,
    JSON,
    JSON_VALUES,
    NESTED_FORM,
    PHP_PAIRS,
    SENTENCE,
    T0,
    WORD,
    BrokenInvariant,
    Vendor,
    check_crm_events,
    depth,
    dumps,
    form_tokens,
    ident,
    json_tokens,
    keys_of,
    mutated,
    php_form,
    php_form_raw,
)
from tests.support.fakes import MemoryCredentials

UTC = dt.UTC
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "sandbox" / "bitrix24" / "spec" / "examples"

# -- the parser's portal --------------------------------------------------------------------------

DOMAIN = "acme.bitrix24.com"
ENDPOINT = f"https://{DOMAIN}/rest/"
MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
APP_TOKEN = "51856fefc120afa4b628cc82d3935cce"
CONNECTOR = "crm_bridge_telegram"
LINE = "107"
APP_VALUES = {
    "client_id": "local.56017020f07e17.98523769",
    "client_secret": "app-secret-1",
    "auth_base": "https://oauth.bitrix.info",
}
SETTINGS = {
    "member_id": MEMBER,
    "domain": DOMAIN,
    "line": LINE,
    "connectors": {"telegram": CONNECTOR},
    "connector_id": CONNECTOR,
}
AUTH = {"member_id": MEMBER, "application_token": APP_TOKEN}


def app() -> Bitrix24App:
    """The app settings as the core hands them to the class methods."""
    return load(Bitrix24App, APP_VALUES, strict=True)


def record(kind: str, entity_id: int) -> dict[str, Any]:
    """What the offline portal answers for ``crm.<kind>.get``: odd ids are
    closed (won), every id has owner ``<id mod 7>`` (0 means none)."""
    semantic = "STATUS_SEMANTIC_ID" if kind == "lead" else "STAGE_SEMANTIC_ID"
    return {
        "ID": str(entity_id),
        "ASSIGNED_BY_ID": str(entity_id % 7),
        semantic: "S" if entity_id % 2 else "P",
    }


def vendor(method: str, url: str, kwargs: Mapping[str, Any]) -> tuple[int, Any] | None:
    """Any Bitrix24 portal's REST API (re-reads, ``app.info``) and the OAuth
    server (an install's refresh token redeemed)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if "bitrix24" not in host and host != "oauth.bitrix.info":
        return None
    path = parts.path
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
        return 200, {"result": record(match.group(1), entity_id), "time": timing}
    if name == "crm.status.list":
        return 200, {"result": [], "time": timing}
    if name == "app.info":
        info = {"CODE": APP_VALUES["client_id"], "LICENSE_FAMILY": "ent", "LICENSE": "de_ent250"}
        return 200, {"result": info, "time": timing}
    if path == "/oauth/token/":
        # the OAuth server redeems an install's refresh token; it names the
        # portal: MEMBER, or what follows "@" in the token (tests)
        query = kwargs.get("params") or {}
        token = str(query.get("refresh_token") or "")
        if query.get("grant_type") != "refresh_token" or not token:
            return 400, {"error": "invalid_grant", "error_description": "bad grant"}
        return 200, {
            "access_token": "new-access-" + token[:16],
            "refresh_token": "new-refresh-" + token[:16],
            "expires_in": 3600,
            "member_id": token.split("@", 1)[1] if "@" in token else MEMBER,
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "status": "L",
        }
    return None


def adapter(**settings: Any) -> Bitrix24Adapter:
    account = CrmAccountInfo(
        tenant_id=1,
        kind="bitrix24",
        account_id=MEMBER,
        settings={**SETTINGS, **settings},
        app=dict(APP_VALUES),
        inbox=True,
    )
    creds = {
        "type": "oauth",
        "access_token": "s6p6eclrvim6da22ft9ch94ekreb52lv",
        "refresh_token": "4s386p3q0tr8dy89xvmt96234v3dljg8",
        "expires_at": 4_000_000_000,
        "client_endpoint": ENDPOINT,
        "server_endpoint": "https://oauth.bitrix.info/rest/",
        "member_id": MEMBER,
        "application_token": APP_TOKEN,
    }
    return Bitrix24Adapter(account, MemoryCredentials(creds, refresher=dict))


cached_adapter = cache(adapter)


def request(body: bytes, content_type: str | None = None) -> WebhookRequest:
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


def official(name: str) -> dict[str, Any]:
    """An example from the official docs (``sandbox/bitrix24/spec``)."""
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.1.json").read_text(encoding="utf-8"))
    return data


def event(name: str) -> dict[str, Any]:
    """An official event example, addressed to this tenant's portal."""
    payload = official(name)
    payload["auth"] = {
        **payload.get("auth", {}),
        "member_id": MEMBER,
        "application_token": APP_TOKEN,
        "domain": DOMAIN,
        "client_endpoint": ENDPOINT,
    }
    return payload


EVENT_EXAMPLES = [
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
INSTALL_EXAMPLE = "api-reference__common__events__on-app-install"


def connector_event() -> dict[str, Any]:
    payload = event(EVENT_EXAMPLES[0])
    payload["data"]["CONNECTOR"] = CONNECTOR
    return payload


def event_seeds() -> list[bytes]:
    payloads = [event(name) for name in EVENT_EXAMPLES] + [connector_event()]
    payloads.append(
        {
            "event": "ONCRMDEALDELETE",
            "data": {"FIELDS": {"ID": "77"}},
            "ts": "1740820600",
            "auth": dict(AUTH),
        }
    )
    forms = [php_form(p) for p in payloads]
    return forms + [dumps(payloads[-2])]


def install_seeds() -> list[bytes]:
    payload = event(INSTALL_EXAMPLE)
    return [php_form(payload), json.dumps(payload).encode()]


def parse(body: bytes, content_type: str | None = None, *, must_verify: bool) -> list[Any] | None:
    portal = cached_adapter()
    req = request(body, content_type)
    try:
        portal.verify_webhook(req)
    except SignatureError:
        assert not must_verify
    try:
        events = portal.parse_webhook(req)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError)
        return None
    check_crm_events(events)
    assert portal.parse_webhook(req) == events
    return events


def install(body: bytes, content_type: str | None = None) -> Installed | None:
    return Bitrix24Adapter.install_event(app(), request(body, content_type), http=HttpClient())


def fuzz_event(data: bytes) -> None:
    portal = cached_adapter()
    req = request(data)
    with contextlib.suppress(WebhookError):
        portal.verify_webhook(req)
    try:
        events = portal.parse_webhook(req)
    except WebhookError:
        return
    check_crm_events(events)


def fuzz_install(data: bytes) -> None:
    try:
        installed = install(data)
    except WebhookError:
        return
    if installed is None:
        return
    creds = installed.credentials
    ident(installed.account_id, "account_id")
    for key in ("access_token", "refresh_token", "member_id", "application_token"):
        ident(creds.get(key), f"credentials[{key}]")
    if not str(creds.get("client_endpoint")).endswith("/rest/"):
        raise BrokenInvariant(f"client_endpoint {creds.get('client_endpoint')!r}")
    if not isinstance(creds.get("expires_at"), int):
        raise BrokenInvariant(f"expires_at {creds.get('expires_at')!r}")


def fuzz_bbcode(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for keep in (False, True):
        body, author = bb_to_text(text, keep_signature=keep)
        if not isinstance(body, str) or (author is not None and not isinstance(author, str)):
            raise BrokenInvariant("bb_to_text returned something else than (str, str | None)")
    if not isinstance(plain_text(text), str):
        raise BrokenInvariant("plain_text returned something else than a str")


def bbcode_seeds() -> list[bytes]:
    texts = [
        "[b]Klaus Weber:[/b] [br]Guten Tag!",
        "[quote=Ann]first[br][quote]inner[/quote][/quote]answer [i]now[/i]",
        "see [url=https://example.com/x]the [b]docs[/b][/url] and [url]https://a.b[/url]",
        "[user=5]Ann[/user] [color=#ff0000]red[/color] [icon=x] [img]https://i/p.png[/img]",
        "[B]Bob:[/B]\n[s]old[/s] [code]x = [1][/code]",
    ]
    return [t.encode() for t in texts]


BB_TOKENS = {
    t.encode()
    for t in "[b] [/b] [br] [i] [/i] [u] [/u] [s] [/s] [quote] [quote=x] [/quote] [url] "
    "[url=https://x] [/url] [user=1] [/user] [img] [/img] [icon=1] [color=#f00] [/color] "
    "[code] [/code] [p] [/p] [chat=1] [/chat] : \n".split(" ")
}


def fuzz_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    parsed = parse_marker(text)
    if parsed is not None and len(parsed) != 12:
        raise BrokenInvariant(f"Bitrix24 parse_marker -> {parsed!r}")
    name = person_name(text)
    if len(name) > 25:
        raise BrokenInvariant(f"person_name -> {name!r}")
    with contextlib.suppress(WebhookError):
        decode_brackets(data)


# -- properties ---------------------------------------------------------------------------------


@cache
def _seed_docs() -> list[Any]:
    return [event(name) for name in EVENT_EXAMPLES] + [connector_event()]


def with_auth(value: Any) -> Any:
    return {**value, "auth": dict(AUTH)} if isinstance(value, dict) else value


def any_event_is_events_or_a_4xx(payload: Any, as_json: bool) -> None:
    if as_json:
        parse(dumps(payload), JSON, must_verify=isinstance(payload, dict))
    else:
        body = php_form(payload) if isinstance(payload, dict) else dumps(payload)
        parse(body, FORM, must_verify=False)


def any_form_or_bytes_are_events_or_a_4xx(pairs: list[tuple[str, str]], junk: bytes) -> None:
    auth = [("auth[application_token]", APP_TOKEN), ("auth[member_id]", MEMBER)]
    head = [("event", "ONIMCONNECTORMESSAGEADD"), ("data[CONNECTOR]", CONNECTOR)]
    parse(urlencode(head + pairs + auth).encode(), FORM, must_verify=False)
    parse(junk, None, must_verify=False)  # sniffed: "{" is JSON, the rest a form
    parse(junk, JSON, must_verify=False)


@st.composite
def operator_messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 12))  # > 10: "10" must come after "9"
    out = []
    for _ in range(count):
        lines = draw(st.lists(SENTENCE, min_size=1, max_size=3))
        out.append(
            {
                "im": {"chat_id": draw(DIGIT_ID), "message_id": draw(DIGIT_ID)},
                "message": {"user_id": draw(st.integers(1, 10**6)), "text": "\n".join(lines)},
                "chat": {"id": draw(st.text(min_size=1, max_size=40).filter(str.strip))},
            }
        )
    return out


def operator_messages_round_trip_in_order(
    messages: list[dict[str, Any]], as_json: bool, ours: bool, line: int
) -> None:
    connector = CONNECTOR if ours else "someone_elses_connector"
    payload = {
        "event": "ONIMCONNECTORMESSAGEADD",
        "data": {"CONNECTOR": connector, "LINE": line, "MESSAGES": messages},
        "ts": "1740820600",
        "auth": dict(AUTH),
    }
    body = dumps(payload) if as_json else php_form(payload)
    events = parse(body, JSON if as_json else FORM, must_verify=True)
    assert events is not None and len(events) == len(messages)
    for got, message in zip(events, messages, strict=True):
        im = message["im"]
        assert got.external_id == f"{im['chat_id']}:{im['message_id']}"
        assert got.occurred_at == dt.datetime.fromtimestamp(1740820600, UTC)
        if not ours:
            assert got.kind is CrmEventKind.UNKNOWN  # another app's Open Lines chat
            continue
        chat = message["chat"]["id"]
        assert got.kind is CrmEventKind.REPLY
        assert got.text == message["message"]["text"]
        assert got.thread_key == chat
        assert got.crm_thread_id == f"{connector}:{line}:{chat}"
        assert got.author_id == str(message["message"]["user_id"])
        assert got.author_name is None


OPERATOR = st.lists(
    st.text(alphabet=string.ascii_letters + "äöüßéАБВгде", min_size=1, max_size=12),
    min_size=1,
    max_size=3,
).map(" ".join)


def operator_signature_becomes_the_author(name: str, body: str, keep: bool) -> None:
    message = {
        "im": {"chat_id": 1807, "message_id": 86497},
        "message": {"user_id": 27, "text": f"[b]{name}:[/b] [br]{body}"},
        "chat": {"id": "conv-1"},
    }
    payload = {
        "event": "ONIMCONNECTORMESSAGEADD",
        "data": {"CONNECTOR": CONNECTOR, "LINE": 107, "MESSAGES": [message]},
        "auth": dict(AUTH),
    }
    portal = adapter(operator_signature="keep" if keep else "strip")
    (got,) = portal.parse_webhook(request(php_form(payload)))
    assert got.author_name == name
    assert got.text == (f"{name}: {body}" if keep else body)


CRM_EVENTS = sorted(
    [
        "ONCRMLEADUPDATE",
        "ONCRMDEALUPDATE",
        "ONCRMLEADDELETE",
        "ONCRMDEALDELETE",
        "ONCRMCONTACTDELETE",
        "ONAPPUNINSTALL",
    ]
)


def crm_events_round_trip(name: str, entity_id: int, ts: int) -> None:
    payload = {
        "event": name,
        "data": {"FIELDS": {"ID": str(entity_id)}},
        "ts": str(ts),
        "auth": dict(AUTH),
    }
    events = parse(php_form(payload), FORM, must_verify=True)
    assert events
    when = dt.datetime.fromtimestamp(ts, UTC)
    assert all(e.occurred_at == when for e in events)
    kind = "lead" if "LEAD" in name else "deal" if "DEAL" in name else "contact"
    base = f"{name}:{entity_id}:{ts}"
    if name == "ONAPPUNINSTALL":
        assert [e.kind for e in events] == [CrmEventKind.APP_REMOVED]
    elif name == "ONCRMCONTACTDELETE":
        assert [(e.kind, e.contact, e.external_id) for e in events] == [
            (CrmEventKind.CONTACT_REMOVED, CrmRef("contact", str(entity_id)), base)
        ]
    elif name.endswith("DELETE"):
        assert [(e.kind, e.entity, e.external_id) for e in events] == [
            (CrmEventKind.ENTITY_CLOSED, CrmRef(kind, str(entity_id)), base)
        ]
    else:  # an update is re-read from the (offline) portal
        owner = record(kind, entity_id)["ASSIGNED_BY_ID"]
        expected = []
        if entity_id % 5 == 0:  # the offline portal: not found -> gone
            expected = [(CrmEventKind.ENTITY_CLOSED, base, None)]
        else:
            if entity_id % 2:
                expected.append((CrmEventKind.ENTITY_CLOSED, base, None if owner == "0" else owner))
            if owner != "0":
                expected.append((CrmEventKind.OWNER_CHANGED, f"{base}:owner:{owner}", owner))
            expected = expected or [(CrmEventKind.UNKNOWN, base, None)]
        assert [(e.kind, e.external_id, e.owner_id) for e in events] == expected
        assert all(e.entity == CrmRef(kind, str(entity_id)) for e in events)


HEX32 = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
TOKEN = st.from_regex(r"[0-9a-z]{16,40}", fullmatch=True)
PORTAL = st.tuples(
    st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["com", "de", "ru", "com.br", "co.uk"]),
).map(lambda t: f"{t[0]}.bitrix24.{t[1]}")


def install_event_round_trips(
    member: str,
    access: str,
    refresh: str,
    app_token: str,
    domain: str,
    upper: bool,
    language: str,
    as_json: bool,
) -> None:
    assume(app_token != member)
    payload = copy.deepcopy(official(INSTALL_EXAMPLE))
    shown = domain.upper() if upper else domain
    payload["auth"] = {
        **payload["auth"],
        "member_id": member,
        "access_token": access,
        "refresh_token": f"{refresh}@{member}",  # the offline OAuth server names this portal
        "application_token": app_token,
        "domain": shown,
        "client_endpoint": f"https://{shown}/rest/",
    }
    payload["data"]["LANGUAGE_ID"] = language
    installed = install(dumps(payload) if as_json else php_form(payload))
    assert installed is not None
    creds, settings_ = installed.credentials, installed.settings
    assert installed.account_id == creds["member_id"] == member
    assert creds["application_token"] == app_token
    assert creds["domain"] == domain
    assert creds["client_endpoint"].lower() == f"https://{domain}/rest/"
    assert creds["refresh_token"].startswith("new-refresh-")  # the redeemed pair is kept
    assert settings_["member_id"] == member and settings_["domain"] == domain
    assert settings_["application_token_sha256"] == token_digest(app_token)
    assert settings_["plan"] == "enterprise"
    wanted = language.lower() if language.lower() in ("en", "ru") else None
    assert settings_.get("portal_language") == wanted
    assert app_token not in settings_.values()  # only its digest is kept in settings
    # forged: another portal's member id with a working token, another host
    forged = copy.deepcopy(payload)
    forged["auth"]["refresh_token"] = f"{refresh}@{'f' * 32 if member != 'f' * 32 else 'e' * 32}"
    with pytest.raises(SignatureError):
        install(php_form(forged))
    forged = copy.deepcopy(payload)
    forged["auth"]["client_endpoint"] = "https://evil.bitrix24.com/rest/"
    with pytest.raises(SignatureError):
        install(php_form(forged))


def install_any_event_is_an_install_none_or_a_4xx(payload: dict[str, Any], as_json: bool) -> None:
    body = dumps(payload) if as_json else php_form(payload)
    try:
        first = install(body, JSON if as_json else FORM)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError | SignatureError)
        return
    if first is not None:
        creds = first.credentials
        assert creds["member_id"] and creds["application_token"] and first.account_id
        second = install(body, JSON if as_json else FORM)
        assert second is not None

        def stable(installed: Installed) -> tuple[Any, ...]:
            shown = {k: v for k, v in installed.credentials.items() if k != "expires_at"}
            return installed.account_id, shown, dict(installed.settings)

        assert stable(first) == stable(second)


PAIRED = ["b", "i", "u", "s", "B", "code", "color=#ff0000", "size=12", "p", "center"]
LABELLED = ["user=5", "chat=12", "send=/x", "put=/y", "context=1", "dialog=chat5"]
URL = st.from_regex(r"https://[a-z]{1,10}\.example/[a-z0-9/]{0,12}", fullmatch=True)


@st.composite
def bb_markup(draw: st.DrawFn, depth: int = 0, in_link: bool = False) -> tuple[str, list[str]]:
    """(BB-code, the words in it in order): nested at most 4 deep, no link
    inside a link (Bitrix24 never nests them)."""
    if depth >= 4 or draw(st.integers(0, 3)) == 0:
        words = draw(st.lists(WORD, min_size=1, max_size=3))
        return " ".join(words), words
    kind = draw(st.sampled_from(["paired", "labelled", "quote", "url", "br", "seq"]))
    if kind == "url" and in_link:
        kind = "paired"
    child = bb_markup(depth + 1, in_link or kind == "url")
    if kind in ("br", "seq"):
        parts = draw(st.lists(child, min_size=2, max_size=3))
        glue = draw(st.sampled_from(["[br]", "[BR]", "[br/]", "[br /]"])) if kind == "br" else " "
        return glue.join(p[0] for p in parts), [w for p in parts for w in p[1]]
    text, words = draw(child)
    if kind == "paired":
        tag = draw(st.sampled_from(PAIRED))
        return f"[{tag}]{text}[/{tag.split('=')[0]}]", words
    if kind == "labelled":
        tag = draw(st.sampled_from(LABELLED))
        return f"[{tag}]{text}[/{tag.split('=')[0]}]", words
    if kind == "quote":
        opener = draw(st.sampled_from(["[quote]", "[QUOTE]", "[quote=Ann]"]))
        return f"{opener}{text}[/quote]", words
    return f"[url={draw(URL)}]{text}[/url]", words


def in_order(words: list[str], text: str) -> bool:
    position = 0
    for word in words:
        found = text.find(word, position)
        if found < 0:
            return False
        position = found + len(word)
    return True


def bbcode_conversion_leaves_no_tag_and_keeps_every_word(
    markup: tuple[str, list[str]], extra: str
) -> None:
    text, words = markup
    out = plain_text(extra + text)
    assert "[" not in out and "]" not in out, out  # [b], [br], [quote], [url=…] all gone
    assert in_order(words, out), (words, out)
    assert plain_text(out) == out  # plain text is a fixed point
    body, _author = bb_to_text(text)
    assert "[" not in body and "]" not in body


def bbcode_conversion_never_raises(text: str) -> None:
    body, author = bb_to_text(text, keep_signature=True)
    assert isinstance(body, str) and (author is None or isinstance(author, str))


def person_names_keep_letters_only_and_fit_the_limit(value: str) -> None:
    name = person_name(value)
    assert len(name) <= 25 and name == name.rstrip(" -'") and not name.startswith(" ")
    assert all(c.isalpha() or c in " -'" for c in name)
    assert "  " not in name


def php_forms_decode_to_what_was_encoded(payload: dict[str, Any], raw: bool) -> None:
    body = (php_form_raw if raw else php_form)(payload)
    if depth(payload) > 10:  # the decoder's depth limit
        with pytest.raises(PayloadError):
            decode_brackets(body)
    else:
        assert decode_brackets(body) == payload


def php_decoder_accepts_or_refuses_with_a_payload_error(body: bytes) -> None:
    try:
        result = decode_brackets(body)
    except PayloadError:
        return
    assert isinstance(result, dict)


def bridge_markers_round_trip(
    bridge_id: str, sequence: int | None, at: dt.datetime | None, before: str
) -> None:
    text = f"{marker('other')} {before}\n{marker(bridge_id, sequence, at)}"
    assert parse_marker(text) == marker_hash(bridge_id)  # the last marker counts


def bridge_marker_parsing_never_raises(text: str, digits: str) -> None:
    for candidate in (text, f"{text}[bridge:0123456789ab:{digits}:{digits}]"):
        parsed = parse_marker(candidate)
        assert parsed is None or len(parsed) == 12


# -- hostile input --------------------------------------------------------------------------------

HOSTILE_APP = {
    "client_id": "local.56017020f07e17.98523769",
    "client_secret": "app-secret-1",
    "auth_base": "https://oauth.bitrix.info",
}
A = {
    "member": "a223c6b3710f85df22e9377d6c4f7553",
    "token": "51856fefc120afa4b628cc82d3935cce",
    "domain": "acme.bitrix24.com",
}
B = {
    "member": "b334d7c4821096e033f0488e7d5a8664",
    "token": "62967f0fd231b0fb5739dd93a4046ddf",
    "domain": "other.bitrix24.com",
}
#: the portal a genuine install event comes from (a third one: no tenant yet)
NEW = {
    "member": "c445e8d5932107f144015990e8f6b9775",
    "token": "73a78010e342c10c68400ee04b5157e0",
    "domain": "fresh.bitrix24.com",
}
TOKEN_URL = "https://oauth.bitrix.info/oauth/token/"
FORGED_MEMBER = "f0rged00000000000000000000000000"


def _uid_digits(uid: str) -> str:
    return str(int(uid[:12], 16))


def _php_form(payload: dict[str, Any]) -> bytes:
    """PHP ``http_build_query`` of nested dicts (what Bitrix24 posts)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        else:
            pairs.append((prefix, str(value)))

    walk("", payload)
    return urlencode(pairs).encode()


class Bitrix24EventsTarget(HostileTarget):
    """Bitrix24 events at the tenant's URL: form-encoded (JSON accepted);
    ``auth[application_token]`` from the install is the only proof."""

    name = "bitrix24-events"
    kind = "bitrix24"
    endpoint = "tenant"
    content_type = FORM
    content_types = (FORM, JSON)
    auth_cases = {
        "forged-token": 403,
        "missing-token": 403,
        "missing-auth": 403,
        "malformed-token-container": 403,
        "malformed-token-empty": 403,
        "malformed-token-huge": 403,
        "malformed-token-non-ascii": 403,
        "malformed-auth-scalar": 403,
        "another-portals-member-id": 403,
        "json-forged-token": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/crm/bitrix24/{self.world.tenant_keys['bitrix24'][tenant]}"

    def event(self, uid: str, auth: Any) -> dict[str, Any]:
        return {
            "event": "ONIMCONNECTORMESSAGEADD",
            "data": {
                "CONNECTOR": CONNECTOR,
                "LINE": "1",
                "MESSAGES": {
                    "0": {
                        "im": {"chat_id": "123", "message_id": _uid_digits(uid)},
                        "message": {"text": f"{MARK} operator reply", "user_id": "1"},
                        "chat": {"id": self.world.conversations["bitrix24"]},
                    }
                },
            },
            "ts": "1740820600",
            "auth": auth,
        }

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        spec = A if tenant == "A" else B
        auth = {"application_token": spec["token"], "member_id": spec["member"]}
        return _php_form(self.event(uid, auth))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> None:
        return None  # the token travels in the body

    def auth_attack(self, case: str) -> Req:
        uid = uuid.uuid4().hex
        member = A["member"]
        if case == "json-forged-token":
            forged = self.event(uid, {"application_token": "0" * 32, "member_id": member})
            return Req(self.path(), json.dumps(forged).encode(), JSON)
        auth: Any = {
            "forged-token": {"application_token": "f" * 32, "member_id": member},
            "missing-token": {"member_id": member},
            "missing-auth": None,
            "malformed-token-container": {"application_token": {"0": A["token"]}},
            "malformed-token-empty": {"application_token": "", "member_id": member},
            "malformed-token-huge": {"application_token": "a" * 10_240},
            "malformed-token-non-ascii": {"application_token": "токен" + A["token"][5:]},
            "malformed-auth-scalar": A["token"],
            "another-portals-member-id": {
                "application_token": A["token"],
                "member_id": B["member"],
            },
        }[case]
        payload = self.event(uid, auth)
        if auth is None:
            del payload["auth"]
        return Req(self.path(), _php_form(payload), FORM)


@dataclass
class FarSide:
    """``app.info`` at the new portal and the OAuth server: refresh tokens
    are single use, as at Bitrix24 (a redeemed one is ``invalid_grant``)."""

    app_code: str = HOSTILE_APP["client_id"]
    member: str = NEW["member"]
    refuse_token: bool = False
    refuse_refresh: bool = False
    redeemed: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def install(self, rsps: responses.RequestsMock) -> FarSide:
        rsps.add_callback(
            responses.POST, f"https://{NEW['domain']}/rest/app.info", callback=self._app_info
        )
        rsps.add_callback(responses.GET, TOKEN_URL, callback=self._token)
        return self

    def _app_info(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls.append("app.info")
        if self.refuse_token:
            error = {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
            return 401, {"Content-Type": JSON}, json.dumps(error)
        info = {"ID": "7", "CODE": self.app_code, "VERSION": "1", "STATUS": "L"}
        info |= {"INSTALLED": True, "PAYMENT_EXPIRED": "N", "LICENSE": "en_project"}
        return 200, {"Content-Type": JSON}, json.dumps({"result": info})

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls.append("token")
        query = dict(parse_qsl(urlsplit(request.url).query))
        refresh = query.get("refresh_token", "")
        if self.refuse_refresh or refresh in self.redeemed:
            error = {"error": "invalid_grant", "error_description": "Invalid refresh token"}
            return 400, {"Content-Type": JSON}, json.dumps(error)
        self.redeemed.add(refresh)
        answer = {
            "access_token": f"fresh-{refresh}",
            "refresh_token": f"fresh-{refresh}-r",
            "expires_in": 3600,
            "member_id": self.member,
            "client_endpoint": f"https://{NEW['domain']}/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "domain": "oauth.bitrix.info",
            "scope": "crm,imopenlines,imconnector",
            "status": "L",
        }
        return 200, {"Content-Type": JSON}, json.dumps(answer)


class Bitrix24InstallTarget(HostileTarget):
    """Bitrix24's ONAPPINSTALL at the one install URL: nothing is signed;
    the event's endpoint must be the portal's own Bitrix24 host, its token
    must work there for our app, and the OAuth server must confirm the
    portal by redeeming the event's (single-use) refresh token."""

    name = "bitrix24-install"
    kind = "bitrix24"
    endpoint = "install"
    content_type = FORM
    content_types = (FORM, JSON)
    auth_cases = {
        "forged-endpoint": 403,
        "forged-endpoint-lookalike": 403,
        "endpoint-not-https": 403,
        "endpoint-other-portal": 403,
        "endpoint-not-a-url": 403,
        "forged-token": 403,
        "another-apps-token": 403,
        "forged-member-id": 403,
        "refresh-token-refused": 403,
        "missing-auth": 400,
        "missing-application-token": 400,
        "malformed-auth-scalar": 400,
    }
    #: refused on the event alone: neither the portal nor the OAuth server is called
    untouched_cases = frozenset(
        {
            "forged-endpoint",
            "forged-endpoint-lookalike",
            "endpoint-not-https",
            "endpoint-other-portal",
            "endpoint-not-a-url",
        }
    )
    #: a genuine install (app.info, the refresh token redeemed), then its
    #: replay (app.info, the redeemed token refused)
    replay_calls = ("app.info", "token", "app.info", "token")

    def path(self, tenant: str = "A") -> str:
        return "/webhooks/crm/bitrix24/install"

    def unknown_path(self) -> str:  # one URL for every portal: no key to get wrong
        raise NotImplementedError

    def event(self, uid: str, **auth: Any) -> dict[str, Any]:
        return {
            "event": "ONAPPINSTALL",
            "data": {"VERSION": "1", "LANGUAGE_ID": "en"},
            "ts": "1740820600",
            "auth": {
                "access_token": f"access-{uid}",
                "expires": "1740824200",
                "expires_in": "3600",
                "scope": "crm,imopenlines,imconnector",
                "domain": NEW["domain"],
                "server_endpoint": "https://oauth.bitrix.info/rest/",
                "status": "L",
                "client_endpoint": f"https://{NEW['domain']}/rest/",
                "member_id": NEW["member"],
                "user_id": "1",
                "refresh_token": f"refresh-{uid}",
                "application_token": NEW["token"],
                **auth,
            },
        }

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return _php_form(self.event(uid))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> None:
        return None

    def auth_attack(self, case: str) -> Req:
        uid = uuid.uuid4().hex
        if case == "malformed-auth-scalar":
            payload: dict[str, Any] = {**self.event(uid), "auth": "x"}
        elif case.startswith("missing-"):
            payload = self.event(uid)
            if case == "missing-auth":
                del payload["auth"]
            else:
                del payload["auth"]["application_token"]
        else:
            payload = self.event(
                uid,
                **{
                    "forged-endpoint": {"client_endpoint": "https://evil.example/rest/"},
                    "forged-endpoint-lookalike": {
                        "client_endpoint": "https://fresh.bitrix24.attacker.example/rest/",
                        "domain": "fresh.bitrix24.attacker.example",
                    },
                    "endpoint-not-https": {"client_endpoint": f"http://{NEW['domain']}/rest/"},
                    "endpoint-other-portal": {"client_endpoint": f"https://{A['domain']}/rest/"},
                    "endpoint-not-a-url": {"client_endpoint": "\x00not a url"},
                }.get(case, {}),
            )
        return Req(self.path(), _php_form(payload), FORM)

    def far_side(self, case: str, rsps: responses.RequestsMock) -> FarSide:
        far = FarSide(
            refuse_token=case == "forged-token",
            app_code="someone.elses.app"
            if case == "another-apps-token"
            else HOSTILE_APP["client_id"],
            member=FORGED_MEMBER if case == "forged-member-id" else NEW["member"],
            refuse_refresh=case == "refresh-token-refused",
        )
        return far.install(rsps)


# -- tenant isolation --------------------------------------------------------------------------

ISO_APP = {
    "client_id": "local.1.2",
    "client_secret": "b24-client-secret-1",
    "portal": "portal.bitrix24.invalid",
}


def _form(fields: Mapping[str, Any]) -> bytes:
    return "&".join(f"{quote(k, safe='[]')}={quote(str(v))}" for k, v in fields.items()).encode()


def _post(stack: Any, path: str, **body: Any) -> dict[str, Any]:
    r = requests.post(f"{stack.sandbox_url}/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


# -- the kit ---------------------------------------------------------------------------------


class Bitrix24Kit(CrmKit):
    kind = "bitrix24"
    entity_type = "lead"
    #: the owner change needs a re-read of the entity (a vendor call): not generated
    events = {
        "reply": "reply",
        "close": "close",
        "contact_removed": "contact_removed",
        "uninstall": "uninstall",
    }
    proof_in_body = True
    fast_settings = {"rate_per_second": 100, "burst": 250}

    def mapping_text(self) -> str:
        return (ROOT / "mappings" / "bitrix24.yaml").read_text(encoding="utf-8")

    # -- parsers

    def vendors(self) -> Sequence[Vendor]:
        return [vendor]

    def properties(self) -> Sequence[Property]:
        seeds = _seed_docs()
        install_example = official(INSTALL_EXAMPLE)
        install_keys = [*keys_of([install_example]), "client_endpoint", "domain"]

        def with_endpoint(endpoint: str) -> dict[str, Any]:
            return {
                **install_example,
                "auth": {**install_example["auth"], "client_endpoint": endpoint},
            }

        return [
            Property(
                "bitrix24: any event is events or a 4xx",
                any_event_is_events_or_a_4xx,
                (
                    st.one_of(JSON_VALUES, mutated(seeds, keys_of(seeds))).map(with_auth),
                    st.booleans(),
                ),
                examples=(
                    (
                        with_auth(
                            {"event": "ONIMCONNECTORMESSAGEADD", "data": {"MESSAGES": {"²": {}}}}
                        ),
                        True,
                    ),
                    (
                        with_auth({"event": "ONCRMLEADUPDATE", "data": {"FIELDS": {"ID": "²"}}}),
                        True,
                    ),
                    (
                        with_auth(
                            {"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "1" * 500}}}
                        ),
                        False,
                    ),
                ),
                hostile=True,
            ),
            Property(
                "bitrix24: any form or bytes are events or a 4xx",
                any_form_or_bytes_are_events_or_a_4xx,
                (PHP_PAIRS, st.binary(max_size=100)),
                examples=(([("data[MESSAGES][²][im][chat_id]", "1")], b"[" * 100_000),),
                hostile=True,
            ),
            Property(
                "bitrix24: operator messages round-trip in order",
                operator_messages_round_trip_in_order,
                {
                    "messages": operator_messages(),
                    "as_json": st.booleans(),
                    "ours": st.booleans(),
                    "line": st.integers(1, 999),
                },
            ),
            Property(
                "bitrix24: the operator's signature becomes the author",
                operator_signature_becomes_the_author,
                {"name": OPERATOR, "body": SENTENCE, "keep": st.booleans()},
            ),
            Property(
                "bitrix24: CRM events round-trip",
                crm_events_round_trip,
                {
                    "name": st.sampled_from(CRM_EVENTS),
                    "entity_id": st.integers(1, 10**9),
                    "ts": st.integers(1, 4_102_444_800),
                },
            ),
            Property(
                "bitrix24: an install event round-trips",
                install_event_round_trips,
                {
                    "member": HEX32,
                    "access": TOKEN,
                    "refresh": TOKEN,
                    "app_token": HEX32,
                    "domain": PORTAL,
                    "upper": st.booleans(),
                    "language": st.sampled_from(["en", "ru", "de", "EN"]),
                    "as_json": st.booleans(),
                },
            ),
            Property(
                "bitrix24: any install event is an install, None or a 4xx",
                install_any_event_is_an_install_none_or_a_4xx,
                (
                    st.one_of(
                        mutated([install_example], install_keys),
                        st.builds(
                            with_endpoint,
                            st.text(max_size=40)
                            | st.builds("https://{}/rest/".format, st.text(max_size=20)),
                        ),
                    ),
                    st.booleans(),
                ),
                examples=(
                    (with_endpoint("https://[abc/rest/"), False),
                    (with_endpoint("https://[::1]x/rest/"), True),
                    # found by the fuzzer (bitrix24_install): the endpoint check
                    # reads the scheme case-blind, HttpClient.url does not, so
                    # the call went to "/httPs://..." (AmbiguousError: a 502)
                    (with_endpoint(f"httPs://{install_example['auth']['domain']}/rest/"), True),
                ),
                hostile=True,
            ),
            Property(
                "bitrix24: BB-code conversion leaves no tag and keeps every word",
                bbcode_conversion_leaves_no_tag_and_keeps_every_word,
                (
                    bb_markup(),
                    st.sampled_from(["", "[icon=1]", "[img]https://i.example/p.png[/img] "]),
                ),
                examples=(
                    (
                        (
                            "[b]Klaus Weber:[/b] [br]Guten Tag!",
                            ["Klaus", "Weber:", "Guten", "Tag!"],
                        ),
                        "",
                    ),
                ),
            ),
            Property(
                "bitrix24: BB-code conversion never raises",
                bbcode_conversion_never_raises,
                st.text(max_size=200),
                examples=(
                    "[quote]" * 50 + "x" + "[/quote]" * 50,
                    "[b]" * 30 + "x" + "[/b]" * 30,
                    "[url=" + "a" * 100,
                ),
            ),
            Property(
                "bitrix24: person names keep letters only and fit the limit",
                person_names_keep_letters_only_and_fit_the_limit,
                st.text(max_size=60),
            ),
            Property(
                "bitrix24: PHP bracket forms decode to what was encoded",
                php_forms_decode_to_what_was_encoded,
                (NESTED_FORM, st.booleans()),
            ),
            Property(
                "bitrix24: the bracket decoder accepts or refuses with a PayloadError",
                php_decoder_accepts_or_refuses_with_a_payload_error,
                st.binary(max_size=120),
                examples=BRACKET_EXAMPLES,
            ),
            Property(
                "bitrix24: bridge markers round-trip (the last one counts)",
                bridge_markers_round_trip,
                {
                    "bridge_id": st.uuids().map(str),
                    "sequence": st.one_of(st.none(), st.integers(-(2**63), 2**63)),
                    "at": st.one_of(st.none(), DATES),
                    "before": st.text(max_size=40),
                },
            ),
            Property(
                "bitrix24: bridge marker parsing never raises",
                bridge_marker_parsing_never_raises,
                (st.text(max_size=60), st.from_regex(r"[0-9]{0,30}", fullmatch=True)),
                examples=(("", "99999999999999999999"), ("", "9" * 5000)),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = (
            b'{"event":"ONAPPUNINSTALL","auth":{"application_token":"'
            + APP_TOKEN.encode()
            + b'"},"x":'
        )
        return [DeepJson("bitrix24", head, b"}", lambda body: parse(body, JSON, must_verify=False))]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "bitrix24_event",
                "Bitrix24Adapter events (application_token, form or JSON, re-reads)",
                fuzz_event,
                event_seeds,
                lambda seeds: form_tokens(seeds) | json_tokens(seeds),
            ),
            FuzzTarget(
                "bitrix24_install",
                "Bitrix24Adapter.install_event (ONAPPINSTALL, app.info check)",
                fuzz_install,
                install_seeds,
                lambda seeds: form_tokens(seeds) | json_tokens(seeds),
            ),
            FuzzTarget(
                "bitrix24_bbcode",
                "Bitrix24 BB-code -> text (bb_to_text, plain_text)",
                fuzz_bbcode,
                bbcode_seeds,
                lambda _seeds: BB_TOKENS,
            ),
        ]

    def text_helpers(self) -> TextHelpers:
        seeds = (
            b"[bridge:0123456789ab]",
            b"Ann-Marie O'Neil 3rd",
            b"a[b][0][c]=x&a[b][1][c]=y&k=v",
        )
        tokens = frozenset(
            t.encode() for t in ["[bridge:", "0123456789ab", ":", "]", "[", "=", "&"]
        )
        return TextHelpers(fuzz_text, seeds, tokens)

    # -- hostile input

    def hostile_app(self) -> Mapping[str, str]:
        return dict(HOSTILE_APP)

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [Bitrix24EventsTarget, Bitrix24InstallTarget]

    def hostile_tenants(self) -> Mapping[str, TenantSpec]:
        return {
            name: TenantSpec(
                spec["member"],
                {
                    "type": "oauth",
                    "access_token": f"b24-access-{name}",
                    "refresh_token": f"b24-refresh-{name}",
                    "expires_at": 1_900_000_000,
                    "client_endpoint": f"https://{spec['domain']}/rest/",
                    "server_endpoint": "https://oauth.bitrix.info/rest/",
                    "member_id": spec["member"],
                    "application_token": spec["token"],
                },
                {
                    "member_id": spec["member"],
                    "domain": spec["domain"],
                    "line": "1",
                    "connectors": {"telegram": CONNECTOR},
                },
            )
            for name, spec in (("A", A), ("B", B))
        }

    # -- tenant isolation

    def isolation_app(self, sandbox: str | None) -> Mapping[str, str]:
        return dict(ISO_APP)

    def isolation_api_base(self, nowhere: str, sandbox: str | None) -> str:
        return nowhere

    def isolation_tenant(self, idx: int, n: int, nowhere: str) -> TenantSpec:
        account = ("a1" * 16, "b2" * 16)[n]
        return TenantSpec(
            account,
            {
                "type": "oauth",
                "access_token": f"bitrix24-access-{idx}-{secrets.token_hex(8)}",
                "refresh_token": f"bitrix24-refresh-{idx}-{secrets.token_hex(8)}",
                "expires_at": 4_000_000_000,
                "client_endpoint": f"{nowhere}/rest/",
                "member_id": account,
                "application_token": f"b24-app-token-{idx}-{secrets.token_hex(8)}",
            },
            {
                "member_id": account,
                "domain": f"portal{idx}.bitrix24.invalid",
                "line": "107",
                "connectors": {"telegram": CONNECTOR},
                "connector_id": CONNECTOR,
            },
        )

    def thread_id(self, idx: int, j: int, conversation_uid: str) -> str:
        return f"{CONNECTOR}:107:{conversation_uid}"

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
        # form-encoded events with auth[...] (src's application token is the proof)
        auth = {
            "auth[application_token]": src.credentials["application_token"],
            "auth[member_id]": claim.account_id,
            "auth[domain]": claim.settings["domain"],
        }
        if event == "reply":
            assert conv is not None
            fields: dict[str, Any] = {
                "event": "ONIMCONNECTORMESSAGEADD",
                "data[CONNECTOR]": CONNECTOR,
                "data[LINE]": "107",
                "data[MESSAGES][0][im][chat_id]": "1807",
                "data[MESSAGES][0][im][message_id]": str(80_000 + n),
                "data[MESSAGES][0][message][id]": str(80_000 + n),
                "data[MESSAGES][0][message][text]": text,
                "data[MESSAGES][0][message][user_id]": "27",
                "data[MESSAGES][0][chat][id]": conv.uid,
            }
        elif event == "close":
            fields = {"event": "ONCRMDEALDELETE", "data[FIELDS][ID]": entity}
        elif event == "contact_removed":
            fields = {"event": "ONCRMCONTACTDELETE", "data[FIELDS][ID]": contact}
        else:
            assert event == "uninstall", event
            fields = {"event": "ONAPPUNINSTALL", "data[CLEAN]": "0"}
        raw = _form({**fields, "ts": str(1_767_225_600 + n), **auth})
        return Req(f"/webhooks/crm/bitrix24/{src.webhook_key}", raw, FORM), None

    # -- secrets at rest

    def at_rest_app(self) -> Mapping[str, str]:
        return {"client_id": "local.9.9", "client_secret": "b24-client-secret-at-rest"}

    def at_rest_api_base(self, nowhere: str) -> str:
        return nowhere

    def installed(self, n: int, token: Callable[[str], str], nowhere: str) -> Installed:
        app_token = token("b24-application-token")
        member = f"{n:032d}"
        return Installed(
            member,
            {
                "type": "oauth",
                "access_token": token("b24-access"),
                "refresh_token": token("b24-refresh"),
                "expires_at": 4_000_000_000,
                "client_endpoint": f"{nowhere}/rest/",
                "server_endpoint": f"{nowhere}/oauth/",
                "member_id": member,
                "application_token": app_token,
            },
            {
                "member_id": member,
                "domain": f"portal{n}.bitrix24.invalid",
                "application_token_sha256": token_digest(app_token),
            },
        )

    def pasted(self, token: Callable[[str], str]) -> str:
        return f"https://acme.bitrix24.com/rest/1/{token('b24-hook')}/"

    def secrets_of(self, credentials: Mapping[str, Any]) -> set[str]:
        found = super().secrets_of(credentials)
        url = credentials.get("url")
        if isinstance(url, str) and url in found:
            # an incoming webhook: its code is the secret (the portal's host
            # is the tenant's account id, and the user id is no secret)
            found.discard(url)
            found.add([part for part in urlsplit(url).path.split("/") if part][-1])
        return found

    def stored_secret_webhook(self, key: str, credentials: Mapping[str, Any]) -> Req | None:
        if "application_token" not in credentials:
            return None  # an incoming webhook's tenant: Bitrix24 sends it no events
        fields = {
            "event": "ONCRMDEALDELETE",
            "data[FIELDS][ID]": "999999",
            "ts": "1767225600",
            "auth[application_token]": credentials["application_token"],
            "auth[member_id]": credentials["member_id"],
        }
        return Req(f"/webhooks/crm/bitrix24/{key}", _form(fields), FORM)

    def check_at_rest(self, settings: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        # the settings keep only a digest of the application token
        token = credentials.get("application_token")
        if token:
            assert settings["application_token_sha256"] == token_digest(token)

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        return {"client secret": f"CanaryClientSecret{tag}"}

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {
            "bitrix24": {
                "limits": {"basic": {"drain_per_s": 100, "burst": 250}},
                "app": {"client_secret": values["client secret"]},
            }
        }

    def canary_env(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"BITRIX24_CLIENT_SECRET": values["client secret"]}

    def canary_install(self, stack: Any, runtime: Any) -> int:
        return event_install(
            runtime,
            stack.bridge_url,
            crm=self.kind,
            sandbox=stack.sandbox_url,
            mapping=DEMO_CRMS[self.kind],
        )

    def canary_in_crm(self, stack: Any) -> str:
        return json.dumps(stack.bitrix24_state())

    def canary_replies(
        self, stack: Any, values: Mapping[str, str], channel: str, user: str
    ) -> list[str]:
        # The Open Lines chat's user is the conversation's thread: a
        # messenger's chat id is the user too. An e-mail thread is its first
        # mail's, so that customer is found as the CRM keeps them: the
        # contact with the address (a multifield), its lead or deal, whose
        # ORIGIN_ID is the chat's id (the conversation).
        portal = stack.bitrix24_state()
        contacts = {
            str(x["id"])
            for x in portal["contacts"]
            for values in x["multifields"].values()
            if any(str(v.get("VALUE") or "").lower() == user.lower() for v in values)
        }
        origins = {
            str(e["fields"].get("ORIGIN_ID"))
            for e in [*portal["leads"], *portal["deals"]]
            if str(e["fields"].get("CONTACT_ID")) in contacts
        }
        found = next(
            x
            for x in portal["chats"]
            if x["external_user_id"] == user or x["external_chat_id"] in origins
        )
        answer = _post(
            stack, "bitrix24/_reply", conversation=found["external_chat_id"], text=values["reply"]
        )
        assert answer["webhook"]["status"] == 200, answer
        return ["reply"]
