# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Property tests of every adapter parser (Hypothesis).

Each webhook parser is driven the way the web layer drives it
(``bridge.webhooks``: ``verify`` then ``parse``), with requests built by the
shared harness in ``tests/fuzz.py`` — correctly signed where the provider
signs (HubSpot v3, amoCRM's X-Signature, Telegram's secret header, Bitrix24's
``application_token``), so that parsing is reached:

* **robustness**: for arbitrary bytes, arbitrary JSON, arbitrary PHP forms and
  mutated real payloads (the Telegram corpora, the Bitrix24 docs' examples)
  a parser returns normalised events or raises the adapter's documented
  :class:`~bridge.errors.WebhookError` (4xx) — never anything else;
* **round trips**: payloads generated in the shape of the contract (ids,
  unicode texts, optional fields) come out with their key fields (ids, text,
  thread, sequence, author, time) in the normalised model;
* **determinism**: the same request parses to the same events;
* the helpers: BB-code conversion leaves no tag and keeps every word, PHP
  bracket forms decode to what was encoded, bridge markers round-trip,
  phone numbers normalise to E.164 idempotently, ``/start`` deep links give
  their UTM pairs.

No HTTP leaves the process: the adapters talk to ``CannedSession`` (the
amoCRM lead re-read, Bitrix24's ``crm.*.get``, ``app.info`` and the OAuth
token answer are canned in the harness).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import html
import json
import string
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import phonenumbers
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.identity import normalize_phone
from bridge.model import (
    CrmEventKind,
    CrmRef,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    ThreadMigrated,
)
from channel_adapters.telegram import utm_from_start
from channel_adapters.telegram.inbound import HANDLED_UPDATES
from crm_adapters.amocrm.fields import phones_match
from crm_adapters.amocrm.leads import CLOSED_STATUSES
from crm_adapters.amocrm.timeline import marker as amo_marker
from crm_adapters.amocrm.timeline import marker_hash as amo_marker_hash
from crm_adapters.amocrm.timeline import parse_marker as amo_parse_marker
from crm_adapters.amocrm.webhooks import decode_brackets as amo_decode_brackets
from crm_adapters.amocrm.webhooks import strip_reply_marker
from crm_adapters.bitrix24 import Bitrix24Adapter
from crm_adapters.bitrix24.openlines import bb_to_text, person_name, plain_text
from crm_adapters.bitrix24.timeline import marker as b24_marker
from crm_adapters.bitrix24.timeline import marker_hash as b24_marker_hash
from crm_adapters.bitrix24.timeline import parse_marker as b24_parse_marker
from crm_adapters.bitrix24.webhooks import decode_brackets as b24_decode_brackets
from crm_adapters.bitrix24.webhooks import token_digest
from crm_adapters.hubspot.webhooks import html_to_text
from tests import fuzz as h

UTC = dt.UTC
#: the main robustness properties (a few hundred parses each)
HOSTILE = settings(max_examples=150, deadline=None)
#: round trips and helpers
SHAPED = settings(max_examples=100, deadline=None)

# --------------------------------------------------------------------------
# generic strategies
# --------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
#: text without surrounding whitespace and without BB-code brackets
WORD = st.text(
    alphabet=st.characters(
        exclude_characters="[]", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")
    ),
    min_size=1,
    max_size=10,
)
SENTENCE = st.lists(WORD, min_size=1, max_size=6).map(" ".join)
DIGIT_ID = st.integers(1, 10**12)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _keys(docs: list[Any]) -> list[str]:
    found: set[str] = set()
    for doc in docs:
        for path in _paths(doc):
            found.update(p for p in path if isinstance(p, str))
    return sorted(found)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[Any], keys: list[str]) -> Any:
    """A real payload with 1-4 random edits: a value replaced by any JSON,
    a key deleted, or a known key added somewhere it does not belong."""
    doc = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    return doc


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# --------------------------------------------------------------------------
# Telegram
# --------------------------------------------------------------------------

TG_UPDATES = h.telegram_updates()
TG_SEEDS = TG_UPDATES + [json.loads(s) for s in h._telegram_seeds()[len(TG_UPDATES) :]]
TG_KEYS = _keys(TG_SEEDS)
DEEP = b"[" * 600 + b"]" * 600
TG_PRIVATE = b'{"update_id":1,"message":{"message_id":2,"date":3,"chat":{"id":4,"type":"private"}'


def test_the_telegram_corpus_is_there() -> None:
    assert len(TG_UPDATES) >= 40  # the real payloads the mutations start from


def telegram_parse(body: bytes) -> list[Any] | None:
    """verify (must pass: the header is right) then parse; None for a
    PayloadError."""
    adapter = h._adapter("telegram", h.telegram_adapter)
    request = h.telegram_request(body)
    adapter.verify(request)
    try:
        events = adapter.parse(request)
    except PayloadError as exc:
        assert 400 <= exc.status_code < 500
        return None
    h.check_channel_events(events)
    assert adapter.parse(request) == events  # deterministic
    return events


@HOSTILE
@given(
    st.one_of(
        st.binary(max_size=200),
        JSON_VALUES.map(dumps),
        st.builds(
            lambda v: {"update_id": 7, **(v if isinstance(v, dict) else {"x": v})}, JSON_VALUES
        ).map(dumps),
        mutated(TG_SEEDS, TG_KEYS).map(dumps),
    )
)
@example(TG_PRIVATE + b',"text":' + DEEP + b"}}")  # was RecursionError (PTB deepcopy)
@example(
    b'{"update_id":1,"callback_query":{"id":"1","from":{"id":1,"first_name":"a"},"chat_instance":"c","data":'
    + DEEP
    + b"}}"
)
@example(
    b'{"update_id":1,"message":{"message_id":1,"date":1e999,"chat":{"id":1,"type":"private"},"text":"x"}}'
)
@example(b'{"update_id":true,"message":{}}')
@example(b"\xff\xfe")
def test_telegram_any_body_is_one_event_or_a_payload_error(body: bytes) -> None:
    telegram_parse(body)


def test_telegram_every_corpus_update_parses() -> None:
    for update in TG_SEEDS:
        events = telegram_parse(dumps(update))
        assert events is not None, update
        assert events[0].external_id == str(update["update_id"])


TG_NAME = st.text(min_size=1, max_size=30)
TG_CHAT_ID = st.integers(-(10**13), 10**13).filter(bool)


@st.composite
def tg_user(draw: st.DrawFn) -> dict[str, Any]:
    user: dict[str, Any] = {"id": draw(st.integers(1, 2**52)), "is_bot": False}
    user["first_name"] = draw(TG_NAME)
    for key, strategy in (
        ("last_name", TG_NAME),
        ("username", st.from_regex(r"[A-Za-z][A-Za-z0-9_]{4,31}", fullmatch=True)),
        ("language_code", st.sampled_from(["en", "ru", "de", "pt-br"])),
    ):
        if draw(st.booleans()):
            user[key] = draw(strategy)
    return user


def tg_chat(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Ann"}
    return {"id": chat_id, "type": "supergroup", "title": "Shop"}


@SHAPED
@given(
    update_id=st.integers(0, 2**52),
    message_id=st.integers(1, 2**31 - 1),
    chat_id=TG_CHAT_ID,
    user=st.one_of(st.none(), tg_user()),
    text=st.text(min_size=1, max_size=300),
    date=st.integers(1, 2**31 - 1),
    edit_after=st.one_of(st.none(), st.integers(1, 10**6)),
    reply_to=st.one_of(st.none(), st.integers(1, 2**31 - 1)),
)
def test_telegram_text_message_round_trips(
    update_id: int,
    message_id: int,
    chat_id: int,
    user: dict[str, Any] | None,
    text: str,
    date: int,
    edit_after: int | None,
    reply_to: int | None,
) -> None:
    message: dict[str, Any] = {
        "message_id": message_id,
        "date": date,
        "chat": tg_chat(chat_id),
        "text": text,
    }
    if user is not None:
        message["from"] = user
    else:  # an anonymous admin / a channel posting in the group
        message["sender_chat"] = {"id": -1009999, "type": "channel", "title": "News"}
    if edit_after is not None:
        message["edit_date"] = date + edit_after
    if reply_to is not None:
        message["reply_to_message"] = {
            "message_id": reply_to,
            "date": date,
            "chat": tg_chat(chat_id),
        }
    kind = "message" if edit_after is None else "edited_message"
    update = {"update_id": update_id, kind: message}
    events = telegram_parse(dumps(update))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage)
    assert event.kind is MessageKind.TEXT
    assert event.external_id == str(update_id)
    assert event.external_thread_id == str(chat_id)
    assert event.external_user_id == str(user["id"] if user else -1009999)
    assert event.text == text
    assert event.sequence == message_id and event.provider_message_id == str(message_id)
    assert event.is_edit is (edit_after is not None)
    when = date + edit_after if edit_after is not None else date
    assert event.sent_at == dt.datetime.fromtimestamp(when, UTC)
    assert event.reply_to == (str(reply_to) if reply_to is not None else None)
    if user is not None:
        assert event.profile.first_name == user["first_name"]
        assert event.profile.last_name == user.get("last_name")
        assert event.profile.username == user.get("username")
    assert event.raw == update


@SHAPED
@given(
    update_id=st.integers(0, 2**52),
    query_id=st.text(min_size=1, max_size=40),
    user=tg_user(),
    data=st.text(max_size=64),
    message=st.one_of(st.none(), st.tuples(st.integers(1, 2**31 - 1), TG_CHAT_ID)),
)
def test_telegram_button_press_round_trips(
    update_id: int,
    query_id: str,
    user: dict[str, Any],
    data: str,
    message: tuple[int, int] | None,
) -> None:
    query: dict[str, Any] = {"id": query_id, "from": user, "chat_instance": "ci-1", "data": data}
    if message is not None:
        query["message"] = {
            "message_id": message[0],
            "date": 1740820600,
            "chat": tg_chat(message[1]),
        }
    events = telegram_parse(dumps({"update_id": update_id, "callback_query": query}))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.CALLBACK
    assert event.external_id == str(update_id)
    assert event.external_user_id == str(user["id"])
    assert event.text == data
    assert event.callback_id == query_id
    assert event.external_thread_id == str(message[1] if message else user["id"])
    assert event.reply_to == (str(message[0]) if message else None)
    assert event.sent_at == h.T0  # a callback_query has no date: the arrival time


@SHAPED
@given(update_id=st.integers(0, 2**52), old=TG_CHAT_ID, new=TG_CHAT_ID, forward=st.booleans())
def test_telegram_group_migration_names_both_threads(
    update_id: int, old: int, new: int, forward: bool
) -> None:
    message: dict[str, Any] = {"message_id": 1, "date": 1740820600}
    if forward:  # the service message in the old group
        message.update(chat=tg_chat(old), migrate_to_chat_id=new)
    else:  # the one in the new supergroup
        message.update(chat=tg_chat(new), migrate_from_chat_id=old)
    events = telegram_parse(dumps({"update_id": update_id, "message": message}))
    assert events == [ThreadMigrated("telegram", str(update_id), str(old), str(new))]


@SHAPED
@given(
    update_id=st.integers(0, 2**52),
    key=st.text(min_size=1, max_size=30).filter(lambda k: k not in (*HANDLED_UPDATES, "update_id")),
    value=JSON_VALUES,
)
def test_telegram_other_update_kinds_are_ignored_by_name(
    update_id: int, key: str, value: Any
) -> None:
    events = telegram_parse(dumps({"update_id": update_id, key: value}))
    assert events == [IgnoredEvent("telegram", str(update_id), key)]


@SHAPED
@given(user=tg_user(), digits=st.from_regex(r"[1-9][0-9]{7,13}", fullmatch=True), own=st.booleans())
def test_telegram_shared_contact_gives_the_senders_own_phone_only(
    user: dict[str, Any], digits: str, own: bool
) -> None:
    contact = {
        "phone_number": digits,
        "first_name": "Ann",
        "user_id": user["id"] + (0 if own else 1),
    }
    message = {"message_id": 9, "date": 1740820600, "chat": tg_chat(user["id"]), "from": user}
    events = telegram_parse(dumps({"update_id": 1, "message": {**message, "contact": contact}}))
    assert events is not None
    (event,) = events
    assert event.kind is MessageKind.CONTACT and digits in event.text
    assert event.profile.phone == ("+" + digits if own else None)


UTM_KEY = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
UTM_VALUE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,8}", fullmatch=True)


@SHAPED
@given(
    pairs=st.dictionaries(UTM_KEY, UTM_VALUE, min_size=1, max_size=4),
    bot=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_]{5,20}", fullmatch=True)),
)
def test_start_payload_gives_its_utm_pairs(pairs: dict[str, str], bot: str | None) -> None:
    payload = "__".join(f"{k}-{v}" for k, v in pairs.items())
    if len(payload) > 64:
        assert utm_from_start(f"/start {payload}") == {}  # longer than a deep link allows
        return
    command = "/start" + (f"@{bot}" if bot else "")
    utm = utm_from_start(f"{command} {payload}")
    assert utm == {**pairs, "start": payload}


@SHAPED
@given(st.text(max_size=80))
@example("/start " + "a" * 65)
@example("/start utm-x__Bad-y")
def test_start_payload_parsing_never_raises(text: str) -> None:
    utm = utm_from_start(text)
    assert utm == {} or ("start" in utm and all(isinstance(v, str) for v in utm.values()))


# --------------------------------------------------------------------------
# HubSpot
# --------------------------------------------------------------------------

HS_SEEDS = [json.loads(s) for s in h._hubspot_seeds()]
HS_KEYS = _keys(HS_SEEDS)


def hubspot_parse(body: bytes) -> list[Any] | None:
    adapter = h._adapter("hubspot", h.hubspot_adapter)
    request = h.hubspot_request(body)
    adapter.verify_webhook(request)  # signed now, with the app's secret: must pass
    try:
        events = adapter.parse_webhook(request)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError | SignatureError)
        return None
    h.check_crm_events(events)
    assert adapter.parse_webhook(request) == events
    return events


@HOSTILE
@given(
    st.one_of(
        st.binary(max_size=200), JSON_VALUES.map(dumps), mutated(HS_SEEDS, HS_KEYS).map(dumps)
    )
)
@example(b"[" * 100_000)  # was RecursionError out of json.loads
@example(dumps(h.hubspot_reply(senders={"0": {"actorId": 1}})))  # was KeyError
@example(dumps(h.hubspot_reply(recipients=5)))  # was TypeError
@example(dumps(h.hubspot_reply(createdAt="9" * 30)))
@example(dumps(h.hubspot_reply(createdAt=1e300)))
def test_hubspot_any_signed_body_is_events_or_a_4xx(body: bytes) -> None:
    hubspot_parse(body)


HS_ID = st.one_of(st.text(min_size=1, max_size=30), st.integers(0, 2**53))


@st.composite
def hubspot_message(draw: st.DrawFn) -> dict[str, Any]:
    created = draw(st.integers(1, 4_102_444_800_000))  # epoch ms, up to 2100
    message: dict[str, Any] = {
        "id": draw(HS_ID),
        "conversationsThreadId": draw(HS_ID),
        "direction": "OUTGOING",
        "text": draw(st.text(min_size=1, max_size=300)),
        "senders": [{"actorId": draw(st.text(min_size=1, max_size=12)), "name": draw(TG_NAME)}],
        "recipients": [
            {"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": draw(HS_ID)}}
        ],
        "createdAt": draw(st.sampled_from([created, str(created)])),
        "channelIntegrationThreadIds": [draw(st.text(min_size=1, max_size=40))],
        "attachments": [
            {"type": "FILE", "fileId": draw(HS_ID), "fileUsageType": usage}
            for usage in draw(
                st.lists(st.sampled_from(["IMAGE", "AUDIO", "VIDEO", "OTHER"]), max_size=3)
            )
        ],
        "client": {"clientType": "HUBSPOT"},
    }
    return message


HS_KIND = {"IMAGE": MessageKind.PHOTO, "AUDIO": MessageKind.AUDIO, "VIDEO": MessageKind.VIDEO}


@SHAPED
@given(st.lists(hubspot_message(), min_size=1, max_size=4), st.booleans())
def test_hubspot_replies_round_trip(messages: list[dict[str, Any]], as_array: bool) -> None:
    items = [{**h.hubspot_reply(), "message": m} for m in messages]
    events = hubspot_parse(dumps(items if as_array or len(items) > 1 else items[0]))
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
        kinds = [
            HS_KIND.get(a["fileUsageType"], MessageKind.DOCUMENT) for a in message["attachments"]
        ]
        assert [a.kind for a in event.attachments] == kinds
        assert [a.file_ref for a in event.attachments] == [
            str(a["fileId"]) for a in message["attachments"]
        ]


@SHAPED
@given(SENTENCE)
def test_hubspot_rich_text_only_reply_becomes_its_plain_text(text: str) -> None:
    rich = "<p>" + html.escape(text).replace(" ", " <b></b>") + "</p>"
    events = hubspot_parse(dumps(h.hubspot_reply(text="", richText=rich)))
    assert events is not None and events[0].text == text
    assert html_to_text(rich) == text


@SHAPED
@given(
    direction=st.sampled_from(["INCOMING", "OUTGOING"]),
    client=st.sampled_from(["INTEGRATION", "HUBSPOT"]),
    portal=st.sampled_from([None, int(h.HS_PORTAL), h.HS_PORTAL, 4243, "", "4242 "]),
)
def test_hubspot_echoes_and_other_portals_never_become_replies(
    direction: str, client: str, portal: int | str | None
) -> None:
    payload = h.hubspot_reply(direction=direction, client={"clientType": client})
    if portal is None:
        del payload["portalId"]
    else:
        payload["portalId"] = portal
    request = h.hubspot_request(dumps(payload))
    adapter = h._adapter("hubspot", h.hubspot_adapter)
    if str(portal) != h.HS_PORTAL:
        with pytest.raises(SignatureError):  # the secret is app-wide: the portal decides
            adapter.parse_webhook(request)
        return
    (event,) = adapter.parse_webhook(request)
    ours = direction == "OUTGOING" and client != "INTEGRATION"
    assert event.kind is (CrmEventKind.REPLY if ours else CrmEventKind.UNKNOWN)


# --------------------------------------------------------------------------
# amoCRM: the chat channel's hook (signed JSON)
# --------------------------------------------------------------------------

AMO_CHAT_SEEDS = [json.loads(s) for s in h._amocrm_chat_seeds()]
AMO_CHAT_KEYS = _keys(AMO_CHAT_SEEDS)


def amocrm_adapter() -> Any:
    return h._adapter("amocrm", h.amocrm_adapter)


def amocrm_chat_parse(body: bytes, *, must_verify: bool) -> list[Any] | None:
    adapter = amocrm_adapter()
    request = h.amocrm_chat_request(body)
    try:
        adapter.verify_webhook(request)
    except (SignatureError, PayloadError):  # signed junk is a 400, another account a 403
        assert not must_verify
    try:
        events = adapter.parse_webhook(request)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError)
        return None
    h.check_crm_events(events)
    assert adapter.parse_webhook(request) == events
    return events


def with_amojo_account(value: Any) -> Any:
    if isinstance(value, dict):
        return {**value, "account_id": h.AMO_AMOJO}
    return value


@HOSTILE
@given(st.one_of(JSON_VALUES, mutated(AMO_CHAT_SEEDS, AMO_CHAT_KEYS)).map(with_amojo_account))
@example(h.amocrm_chat_hook(type="picture", media="https://x/y.png", file_size="²"))  # ValueError
@example(h.amocrm_chat_hook(type="file", media="https://x/y", file_size="9" * 5000))  # ValueError
@example({"account_id": h.AMO_AMOJO, "message": {"message": {"id": 0}}})
def test_amocrm_chat_hook_any_signed_body_is_events_or_a_4xx(payload: Any) -> None:
    amocrm_chat_parse(dumps(payload), must_verify=isinstance(payload, dict))


@HOSTILE
@given(st.binary(max_size=200))
@example(b"[" * 100_000)  # was RecursionError out of json.loads
def test_amocrm_chat_hook_any_signed_bytes_are_events_or_a_4xx(body: bytes) -> None:
    amocrm_chat_parse(body, must_verify=False)


AMO_MEDIA = {
    "picture": MessageKind.PHOTO,
    "video": MessageKind.VIDEO,
    "file": MessageKind.DOCUMENT,
    "voice": MessageKind.VOICE,
    "audio": MessageKind.AUDIO,
    "sticker": MessageKind.STICKER,
}


@SHAPED
@given(
    message_id=st.text(min_size=1, max_size=40).filter(str.strip),
    text=st.text(max_size=300),
    client_id=st.text(min_size=1, max_size=40),
    conversation=st.text(min_size=1, max_size=40),
    receiver=st.text(min_size=1, max_size=40),
    sender=st.text(min_size=1, max_size=40),
    msec=st.integers(1, 4_102_444_800_000),
    media=st.one_of(
        st.none(), st.tuples(st.sampled_from(sorted(AMO_MEDIA)), st.integers(0, 2**40))
    ),
)
def test_amocrm_chat_reply_round_trips(
    message_id: str,
    text: str,
    client_id: str,
    conversation: str,
    receiver: str,
    sender: str,
    msec: int,
    media: tuple[str, int] | None,
) -> None:
    inner: dict[str, Any] = {"id": message_id, "text": text}
    if media is not None:
        inner.update(type=media[0], media="https://amojo.example/f/1", file_size=str(media[1]))
    payload = h.amocrm_chat_hook(**inner)
    outer = payload["message"]
    outer["conversation"] = {"id": conversation, "client_id": client_id}
    outer["receiver"] = {"id": "r", "client_id": receiver}
    outer["sender"] = {"id": sender, "name": "Bob"}
    outer["msec_timestamp"] = msec
    events = amocrm_chat_parse(dumps(payload), must_verify=True)
    assert events is not None
    (event,) = events
    assert event.kind is CrmEventKind.REPLY
    assert (event.external_id, event.text) == (message_id, text)
    assert (event.thread_key, event.crm_thread_id) == (client_id, conversation)
    assert (event.recipient, event.author_id) == (receiver, sender)
    assert event.occurred_at == dt.datetime.fromtimestamp(msec / 1000, UTC)
    if media is None:
        assert event.attachments == ()
    else:
        (attachment,) = event.attachments
        assert attachment.kind is AMO_MEDIA[media[0]] and attachment.size == media[1]


# --------------------------------------------------------------------------
# amoCRM: account webhooks (PHP bracket-notation forms, unsigned)
# --------------------------------------------------------------------------

FORM_HEADS = ["leads", "contacts", "account", "unsorted", "talk", "message"]
FORM_PARTS = ["status", "delete", "note", "responsible", "add", "update", "0", "1", "10", "²"]
FORM_PARTS += ["", "id", "status_id", "text", "params", "note", "element_id", "created_by"]
FORM_PARTS += ["responsible_user_id", "date_create", "last_modified", "type", "9" * 4400]


@st.composite
def php_key(draw: st.DrawFn) -> str:
    head = draw(st.one_of(st.sampled_from(FORM_HEADS), st.text(min_size=1, max_size=6)))
    parts = draw(st.lists(st.one_of(st.sampled_from(FORM_PARTS), st.text(max_size=6)), max_size=5))
    return head + "".join(f"[{p}]" for p in parts)


FORM_VALUES = st.one_of(
    st.sampled_from(["142", "143", "900", "@client hi", "@клиент", "0", "-1", "1e9", "²", ""]),
    st.text(max_size=20),
)
PHP_PAIRS = st.lists(st.tuples(php_key(), FORM_VALUES), max_size=12)
AMO_ACCOUNT_PAIRS = [("account[id]", h.AMO_ACCOUNT), ("account[subdomain]", h.AMO_SUB)]


def amocrm_form_parse(body: bytes) -> list[Any] | None:
    adapter = amocrm_adapter()
    request = h.amocrm_form_request(body)
    verified = True
    try:
        adapter.verify_webhook(request)
    except SignatureError:
        verified = False
    try:
        events = adapter.parse_webhook(request)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError)
        return None
    assert verified  # a form that parses and names this account passes
    h.check_crm_events(events)
    assert adapter.parse_webhook(request) == events
    return events


@HOSTILE
@given(PHP_PAIRS)
@example([("leads[status][²][id]", "900")])  # was ValueError (int("²") in items())
@example([("leads[delete][" + "1" * 5000 + "][id]", "900")])  # was ValueError (> 4300 digits)
@example([("leads[note][0][note][text]", "@client x"), ("leads[note][0][note][id]", "7")])
def test_amocrm_account_webhook_any_form_is_events_or_a_4xx(pairs: list[tuple[str, str]]) -> None:
    body = urlencode(pairs + AMO_ACCOUNT_PAIRS).encode()
    amocrm_form_parse(body)


@HOSTILE
@given(st.binary(max_size=200))
@example("account[id]=30100&leads[delete][²][id]=1".encode())
def test_amocrm_account_webhook_any_bytes_are_events_or_a_4xx(body: bytes) -> None:
    adapter = amocrm_adapter()
    request = h.amocrm_form_request(body)
    with contextlib.suppress(SignatureError):
        adapter.verify_webhook(request)
    with contextlib.suppress(PayloadError):
        h.check_crm_events(adapter.parse_webhook(request))


LEAD_ID = st.integers(1, 10**10).map(str)


@SHAPED
@given(
    records=st.lists(
        st.tuples(LEAD_ID, st.sampled_from(["142", "143", "20", "1"]), st.integers(1, 999)),
        min_size=1,
        max_size=12,
    ),
    raw_brackets=st.booleans(),
)
def test_amocrm_lead_status_and_owner_round_trip_in_order(
    records: list[tuple[str, str, int]], raw_brackets: bool
) -> None:
    payload = {
        "leads": {
            "status": [
                {"id": i, "status_id": s, "responsible_user_id": str(o)} for i, s, o in records
            ],
            "responsible": [{"id": i, "responsible_user_id": str(o)} for i, _s, o in records],
        },
        "account": h.AMO_ACCOUNT_FORM,
    }
    body = (h.php_form_raw if raw_brackets else h.php_form)(payload)
    events = amocrm_form_parse(body)
    assert events is not None and len(events) == 2 * len(records)
    statuses, owners = events[: len(records)], events[len(records) :]
    for event, (lead, status, _owner) in zip(statuses, records, strict=True):  # in order
        closed = int(status) in CLOSED_STATUSES
        assert event.kind is (CrmEventKind.ENTITY_CLOSED if closed else CrmEventKind.UNKNOWN)
        assert event.external_id == f"leads.status:{lead}" + (f":{status}" if closed else "")
        assert event.entity == (CrmRef("lead", lead) if closed else None)
    for event, (lead, _status, owner) in zip(owners, records, strict=True):
        assert event.kind is CrmEventKind.OWNER_CHANGED
        assert (event.entity, event.owner_id) == (CrmRef("lead", lead), str(owner))
        assert event.external_id == f"leads.responsible:{lead}:{owner}"


REPLY_TEXT = st.tuples(st.characters(categories=("Lu", "Ll", "Nd")), st.text(max_size=100)).map(
    lambda t: (t[0] + t[1]).strip()
)


@SHAPED
@given(
    lead=LEAD_ID,
    note=LEAD_ID,
    author=st.integers(1, 10**6),
    marker=st.sampled_from(["@client", "@CLIENT", "@клиент", "@Клиент"]),
    separator=st.sampled_from([" ", ": ", " — ", ", ", "\t- "]),
    reply=REPLY_TEXT,
    nested=st.booleans(),
)
def test_amocrm_note_reply_round_trips(
    lead: str, note: str, author: int, marker: str, separator: str, reply: str, nested: bool
) -> None:
    fields = {"id": note, "text": f"{marker}{separator}{reply}", "element_id": lead}
    fields["created_by"] = str(author)
    record = {"note": fields} if nested else fields
    body = h.php_form({"leads": {"note": [record]}, "account": h.AMO_ACCOUNT_FORM})
    events = amocrm_form_parse(body)
    assert events is not None
    (event,) = events
    assert event.kind is CrmEventKind.REPLY
    assert event.text == reply
    assert event.external_id == f"note:{lead}:{note}"
    assert event.crm_thread_id == f"lead:{lead}" and event.entity == CrmRef("lead", lead)
    assert event.thread_key == h.amo_lead_conversation(lead)  # re-read from the lead
    assert event.author_id == str(author)


@SHAPED
@given(text=SENTENCE, bridge_id=st.uuids().map(str))
def test_amocrm_notes_without_the_marker_or_by_the_bridge_are_no_replies(
    text: str, bridge_id: str
) -> None:
    notes = [f"@client {text}\n{amo_marker(bridge_id)}"]  # the bridge's own note
    if strip_reply_marker(text, ("@client", "@клиент")) is None:
        notes.append(text)  # an internal note
    for note_text in notes:
        body = h.php_form(
            {
                "leads": {"note": [{"note": {"id": "1", "text": note_text, "element_id": "9"}}]},
                "account": h.AMO_ACCOUNT_FORM,
            }
        )
        events = amocrm_form_parse(body)
        assert events is not None and all(e.kind is not CrmEventKind.REPLY for e in events)


# --------------------------------------------------------------------------
# PHP bracket forms (both CRMs) round-trip
# --------------------------------------------------------------------------

FORM_KEY = st.text(min_size=1, max_size=8).filter(lambda k: "[" not in k and "]" not in k)
NESTED_FORM = st.recursive(
    st.text(max_size=10),
    lambda inner: st.dictionaries(FORM_KEY, inner, min_size=1, max_size=4),
    max_leaves=12,
).filter(lambda v: isinstance(v, dict))


def _depth(value: Any) -> int:
    return 1 + max((_depth(v) for v in value.values()), default=0) if isinstance(value, dict) else 0


@SHAPED
@given(NESTED_FORM, st.booleans())
def test_php_bracket_forms_decode_to_what_was_encoded(payload: dict[str, Any], raw: bool) -> None:
    body = (h.php_form_raw if raw else h.php_form)(payload)
    for decode, max_depth in ((amo_decode_brackets, 8), (b24_decode_brackets, 10)):
        if _depth(payload) > max_depth:
            with pytest.raises(PayloadError):
                decode(body)
        else:
            assert decode(body) == payload


@SHAPED
@given(st.binary(max_size=120))
@example(b"a[b]=1&a=2")
@example(b"a=1&a[b]=2")
@example(b"a[]=1&a[x]=2")
@example(b"a[b][]=1&a[b][c]=2")
def test_php_bracket_decoders_accept_or_refuse_with_a_payload_error(body: bytes) -> None:
    for decode in (amo_decode_brackets, b24_decode_brackets):
        try:
            result = decode(body)
        except PayloadError:
            continue
        assert isinstance(result, dict)


# --------------------------------------------------------------------------
# amoCRM helpers: reply marker, bridge markers, phones
# --------------------------------------------------------------------------


@SHAPED
@given(
    reply=REPLY_TEXT,
    glue=st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=3),
)
def test_reply_marker_is_taken_off_and_only_a_whole_marker_counts(reply: str, glue: str) -> None:
    markers = ("@client", "@клиент")
    assert strip_reply_marker(f"  @client {reply}", markers) == reply
    assert strip_reply_marker(f"@Клиент: {reply}", markers) == reply
    assert strip_reply_marker(f"@client{glue}{reply}", markers) is None  # "@clientele"
    assert strip_reply_marker(f"x @client {reply}", markers) is None


DATES = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
)


@SHAPED
@given(
    bridge_id=st.uuids().map(str),
    sequence=st.one_of(st.none(), st.integers(-(2**63), 2**63)),
    at=st.one_of(st.none(), DATES),
    before=st.text(max_size=40),
)
def test_bridge_markers_round_trip(
    bridge_id: str, sequence: int | None, at: dt.datetime | None, before: str
) -> None:
    digest, parsed_seq, parsed_at = amo_parse_marker(
        f"{before}\n{amo_marker(bridge_id, sequence, at)}"
    )
    assert digest == amo_marker_hash(bridge_id) and parsed_seq == sequence
    if at is None:
        assert parsed_at is None
    else:
        assert parsed_at is not None and abs(parsed_at - at) <= dt.timedelta(milliseconds=1)
    text = f"{b24_marker('other')} {before}\n{b24_marker(bridge_id, sequence, at)}"
    assert b24_parse_marker(text) == b24_marker_hash(bridge_id)  # the last marker counts


@SHAPED
@given(st.text(max_size=60), st.from_regex(r"[0-9]{0,30}", fullmatch=True))
@example("", "99999999999999999999")  # was OSError/OverflowError (year out of range)
@example("", "9" * 5000)  # was ValueError (> 4300 digits)
def test_bridge_marker_parsing_never_raises(text: str, digits: str) -> None:
    for candidate in (text, f"{text}[bridge:0123456789ab:{digits}:{digits}]"):
        parsed = amo_parse_marker(candidate)
        assert parsed is None or len(parsed[0]) == 12
        b24 = b24_parse_marker(candidate)
        assert b24 is None or len(b24) == 12


REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


@SHAPED
@given(
    region=st.sampled_from(REGIONS),
    style=st.sampled_from(
        [
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.RFC3966,
        ]
    ),
)
def test_phone_numbers_normalise_to_e164_from_any_international_format(
    region: str, style: int
) -> None:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if number is None:
        return
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    shown = phonenumbers.format_number(number, style).removeprefix("tel:")
    assert normalize_phone(shown) == e164
    assert normalize_phone(e164.removeprefix("+")) == e164  # Telegram's contact, no "+"
    assert phones_match(shown, e164)


@SHAPED
@given(st.text(max_size=40))
@example("+" + "9" * 300)
@example("８ (916) 123-45-67")
def test_phone_normalisation_never_raises_and_is_idempotent(text: str) -> None:
    phone = normalize_phone(text)
    if phone is not None:
        assert phone.startswith("+") and phone[1:].isdigit() and phone[1:].isascii()
        assert normalize_phone(phone) == phone
    phones_match(text, "+79161234567")


@SHAPED
@given(
    st.from_regex(r"9[0-9]{9}", fullmatch=True), st.sampled_from(["8 ({}) {}-{}-{}", "8{}{}{}{}"])
)
def test_russian_trunk_prefix_matches_plus_seven(local: str, shape: str) -> None:
    typed = shape.format(local[:3], local[3:6], local[6:8], local[8:])
    assert phones_match(typed, "+7" + local)
    assert not phones_match(typed, "+1" + local)


# --------------------------------------------------------------------------
# Bitrix24: events (form-encoded or JSON, application_token)
# --------------------------------------------------------------------------

B24_SEEDS = [h.b24_event(name) for name in h.B24_EVENT_EXAMPLES] + [h._b24_connector_event()]
B24_KEYS = _keys(B24_SEEDS)
B24_AUTH = {"member_id": h.B24_MEMBER, "application_token": h.B24_APP_TOKEN}


def bitrix24_adapter() -> Any:
    return h._adapter("bitrix24", h.bitrix24_adapter)


def bitrix24_parse(
    body: bytes, content_type: str | None = None, *, must_verify: bool
) -> list[Any] | None:
    adapter = bitrix24_adapter()
    request = h.bitrix24_request(body, content_type)
    try:
        adapter.verify_webhook(request)
    except SignatureError:
        assert not must_verify
    try:
        events = adapter.parse_webhook(request)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError)
        return None
    h.check_crm_events(events)
    assert adapter.parse_webhook(request) == events
    return events


def with_b24_auth(value: Any) -> Any:
    return {**value, "auth": B24_AUTH} if isinstance(value, dict) else value


@HOSTILE
@given(st.one_of(JSON_VALUES, mutated(B24_SEEDS, B24_KEYS)).map(with_b24_auth), st.booleans())
@example(with_b24_auth({"event": "ONIMCONNECTORMESSAGEADD", "data": {"MESSAGES": {"²": {}}}}), True)
@example(with_b24_auth({"event": "ONCRMLEADUPDATE", "data": {"FIELDS": {"ID": "²"}}}), True)
@example(with_b24_auth({"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "1" * 500}}}), False)
def test_bitrix24_any_event_is_events_or_a_4xx(payload: Any, as_json: bool) -> None:
    if as_json:
        bitrix24_parse(dumps(payload), h.JSON, must_verify=isinstance(payload, dict))
    else:
        body = h.php_form(payload) if isinstance(payload, dict) else dumps(payload)
        bitrix24_parse(body, h.FORM, must_verify=False)


@HOSTILE
@given(PHP_PAIRS, st.binary(max_size=100))
@example([("data[MESSAGES][²][im][chat_id]", "1")], b"[" * 100_000)
def test_bitrix24_any_form_or_bytes_are_events_or_a_4xx(
    pairs: list[tuple[str, str]], junk: bytes
) -> None:
    auth = [("auth[application_token]", h.B24_APP_TOKEN), ("auth[member_id]", h.B24_MEMBER)]
    event = [("event", "ONIMCONNECTORMESSAGEADD"), ("data[CONNECTOR]", h.B24_CONNECTOR)]
    bitrix24_parse(urlencode(event + pairs + auth).encode(), h.FORM, must_verify=False)
    bitrix24_parse(junk, None, must_verify=False)  # sniffed: "{" is JSON, the rest a form
    bitrix24_parse(junk, h.JSON, must_verify=False)


@st.composite
def b24_messages(draw: st.DrawFn) -> list[dict[str, Any]]:
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


@SHAPED
@given(messages=b24_messages(), as_json=st.booleans(), ours=st.booleans(), line=st.integers(1, 999))
def test_bitrix24_operator_messages_round_trip_in_order(
    messages: list[dict[str, Any]], as_json: bool, ours: bool, line: int
) -> None:
    connector = h.B24_CONNECTOR if ours else "someone_elses_connector"
    payload = {
        "event": "ONIMCONNECTORMESSAGEADD",
        "data": {"CONNECTOR": connector, "LINE": line, "MESSAGES": messages},
        "ts": "1740820600",
        "auth": B24_AUTH,
    }
    body = dumps(payload) if as_json else h.php_form(payload)
    events = bitrix24_parse(body, h.JSON if as_json else h.FORM, must_verify=True)
    assert events is not None and len(events) == len(messages)
    for event, message in zip(events, messages, strict=True):
        im = message["im"]
        assert event.external_id == f"{im['chat_id']}:{im['message_id']}"
        assert event.occurred_at == dt.datetime.fromtimestamp(1740820600, UTC)
        if not ours:
            assert event.kind is CrmEventKind.UNKNOWN  # another app's Open Lines chat
            continue
        chat = message["chat"]["id"]
        assert event.kind is CrmEventKind.REPLY
        assert event.text == message["message"]["text"]
        assert event.thread_key == chat
        assert event.crm_thread_id == f"{connector}:{line}:{chat}"
        assert event.author_id == str(message["message"]["user_id"])
        assert event.author_name is None


OPERATOR = st.lists(
    st.text(alphabet=string.ascii_letters + "äöüßéАБВгде", min_size=1, max_size=12),
    min_size=1,
    max_size=3,
).map(" ".join)


@SHAPED
@given(name=OPERATOR, body=SENTENCE, keep=st.booleans())
def test_bitrix24_operator_signature_becomes_the_author(name: str, body: str, keep: bool) -> None:
    message = {
        "im": {"chat_id": 1807, "message_id": 86497},
        "message": {"user_id": 27, "text": f"[b]{name}:[/b] [br]{body}"},
        "chat": {"id": "conv-1"},
    }
    payload = {
        "event": "ONIMCONNECTORMESSAGEADD",
        "data": {"CONNECTOR": h.B24_CONNECTOR, "LINE": 107, "MESSAGES": [message]},
        "auth": B24_AUTH,
    }
    adapter = h.bitrix24_adapter(operator_signature="keep" if keep else "")
    (event,) = adapter.parse_webhook(h.bitrix24_request(h.php_form(payload)))
    assert event.author_name == name
    assert event.text == (f"{name}: {body}" if keep else body)


@SHAPED
@given(
    name=st.sampled_from(
        sorted(
            [
                "ONCRMLEADUPDATE",
                "ONCRMDEALUPDATE",
                "ONCRMLEADDELETE",
                "ONCRMDEALDELETE",
                "ONCRMCONTACTDELETE",
                "ONAPPUNINSTALL",
            ]
        )
    ),
    entity_id=st.integers(1, 10**9),
    ts=st.integers(1, 4_102_444_800),
)
def test_bitrix24_crm_events_round_trip(name: str, entity_id: int, ts: int) -> None:
    payload = {
        "event": name,
        "data": {"FIELDS": {"ID": str(entity_id)}},
        "ts": str(ts),
        "auth": B24_AUTH,
    }
    events = bitrix24_parse(h.php_form(payload), h.FORM, must_verify=True)
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
    else:  # an update is re-read from the (canned) portal
        record = h.b24_record(kind, entity_id)
        owner = record["ASSIGNED_BY_ID"]
        expected = []
        if entity_id % 5 == 0:  # the canned portal: not found -> gone
            expected = [(CrmEventKind.ENTITY_CLOSED, base, None)]
        else:
            if entity_id % 2:
                expected.append((CrmEventKind.ENTITY_CLOSED, base, None if owner == "0" else owner))
            if owner != "0":
                expected.append((CrmEventKind.OWNER_CHANGED, f"{base}:owner:{owner}", owner))
            expected = expected or [(CrmEventKind.UNKNOWN, base, None)]
        assert [(e.kind, e.external_id, e.owner_id) for e in events] == expected
        assert all(e.entity == CrmRef(kind, str(entity_id)) for e in events)


# --------------------------------------------------------------------------
# Bitrix24: ONAPPINSTALL
# --------------------------------------------------------------------------

B24_INSTALL = h.b24_event("api-reference__common__events__on-app-install")
HEX32 = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
TOKEN = st.from_regex(r"[0-9a-z]{16,40}", fullmatch=True)
PORTAL = st.tuples(
    st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["com", "de", "ru", "com.br", "co.uk"]),
).map(lambda t: f"{t[0]}.bitrix24.{t[1]}")


def install(body: bytes, content_type: str | None = None) -> dict[str, Any] | None:
    return Bitrix24Adapter.install_event(
        h.B24_APP, h.bitrix24_request(body, content_type), http=h.bitrix24_http()
    )


@SHAPED
@given(
    member=HEX32,
    access=TOKEN,
    refresh=TOKEN,
    app_token=HEX32,
    domain=PORTAL,
    upper=st.booleans(),
    language=st.sampled_from(["en", "ru", "de", "EN"]),
    as_json=st.booleans(),
)
def test_bitrix24_install_event_round_trips(
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
    payload = copy.deepcopy(B24_INSTALL)
    shown = domain.upper() if upper else domain
    payload["auth"] = {
        **payload["auth"],
        "member_id": member,
        "access_token": access,
        "refresh_token": f"{refresh}@{member}",  # the canned OAuth server names this portal
        "application_token": app_token,
        "domain": shown,
        "client_endpoint": f"https://{shown}/rest/",
    }
    payload["data"]["LANGUAGE_ID"] = language
    creds = install(dumps(payload) if as_json else h.php_form(payload))
    assert creds is not None
    assert creds["account_id"] == creds["member_id"] == member
    assert creds["application_token"] == app_token
    assert creds["domain"] == domain
    assert creds["client_endpoint"].lower() == f"https://{domain}/rest/"
    assert creds["refresh_token"].startswith("new-refresh-")  # the redeemed pair is kept
    settings_ = creds["settings"]
    assert settings_["member_id"] == member and settings_["domain"] == domain
    assert settings_["application_token_sha256"] == token_digest(app_token)
    assert settings_["plan"] == "enterprise"
    wanted = language.lower() if language.lower() in ("en", "ru") else None
    assert settings_.get("language") == wanted
    assert app_token not in settings_.values()  # only its digest is kept in settings
    # forged: another portal's member id with a working token, another host
    forged = copy.deepcopy(payload)
    forged["auth"]["refresh_token"] = f"{refresh}@{'f' * 32 if member != 'f' * 32 else 'e' * 32}"
    with pytest.raises(SignatureError):
        install(h.php_form(forged))
    forged = copy.deepcopy(payload)
    forged["auth"]["client_endpoint"] = "https://evil.bitrix24.com/rest/"
    with pytest.raises(SignatureError):
        install(h.php_form(forged))


INSTALL_KEYS = _keys([B24_INSTALL]) + ["client_endpoint", "domain"]


@HOSTILE
@given(
    st.one_of(
        mutated([B24_INSTALL], INSTALL_KEYS),
        st.builds(
            lambda endpoint: {
                **B24_INSTALL,
                "auth": {**B24_INSTALL["auth"], "client_endpoint": endpoint},
            },
            st.text(max_size=40) | st.builds("https://{}/rest/".format, st.text(max_size=20)),
        ),
    ),
    st.booleans(),
)
@example(
    {**B24_INSTALL, "auth": {**B24_INSTALL["auth"], "client_endpoint": "https://[abc/rest/"}}, False
)
@example(
    {**B24_INSTALL, "auth": {**B24_INSTALL["auth"], "client_endpoint": "https://[::1]x/rest/"}},
    True,
)
def test_bitrix24_install_any_event_is_credentials_none_or_a_4xx(
    payload: dict[str, Any], as_json: bool
) -> None:
    body = dumps(payload) if as_json else h.php_form(payload)
    try:
        first = install(body, h.JSON if as_json else h.FORM)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError | SignatureError)
        return
    if first is not None:
        assert first["member_id"] and first["application_token"] and first["account_id"]
        second = install(body, h.JSON if as_json else h.FORM)
        assert second is not None
        assert {k: v for k, v in first.items() if k != "expires_at"} == {
            k: v for k, v in second.items() if k != "expires_at"
        }


# --------------------------------------------------------------------------
# Bitrix24: BB-code -> text
# --------------------------------------------------------------------------

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


@SHAPED
@given(bb_markup(), st.sampled_from(["", "[icon=1]", "[img]https://i.example/p.png[/img] "]))
@example(("[b]Klaus Weber:[/b] [br]Guten Tag!", ["Klaus", "Weber:", "Guten", "Tag!"]), "")
def test_bbcode_conversion_leaves_no_tag_and_keeps_every_word(
    markup: tuple[str, list[str]], extra: str
) -> None:
    text, words = markup
    out = plain_text(extra + text)
    assert "[" not in out and "]" not in out, out  # [b], [br], [quote], [url=…] all gone
    assert in_order(words, out), (words, out)
    assert plain_text(out) == out  # plain text is a fixed point
    body, _author = bb_to_text(text)
    assert "[" not in body and "]" not in body


@SHAPED
@given(st.text(max_size=200))
@example("[quote]" * 50 + "x" + "[/quote]" * 50)
@example("[b]" * 30 + "x" + "[/b]" * 30)
@example("[url=" + "a" * 100)
def test_bbcode_conversion_never_raises(text: str) -> None:
    body, author = bb_to_text(text, keep_signature=True)
    assert isinstance(body, str) and (author is None or isinstance(author, str))


@SHAPED
@given(st.text(max_size=60))
def test_person_names_keep_letters_only_and_fit_the_limit(value: str) -> None:
    name = person_name(value)
    assert len(name) <= 25 and name == name.rstrip(" -'") and not name.startswith(" ")
    assert all(c.isalpha() or c in " -'" for c in name)
    assert "  " not in name


# --------------------------------------------------------------------------
# every JSON parser at the recursion limit; every fuzz target on its seeds
# --------------------------------------------------------------------------


def _loadable_depth() -> int:
    """The deepest JSON array ``json.loads`` accepts at this stack depth."""
    low, high = 1, sys.getrecursionlimit() + 10
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads("[" * middle + "]" * middle)
            low = middle
        except RecursionError:
            high = middle - 1
    return low


JSON_PARSERS: dict[str, Callable[[bytes], Any]] = {
    "telegram": telegram_parse,
    "hubspot": hubspot_parse,
    "amocrm": lambda body: amocrm_chat_parse(body, must_verify=False),
    "bitrix24": lambda body: bitrix24_parse(body, h.JSON, must_verify=False),
}
DEEP_SHAPES = {
    "telegram": (
        b'{"update_id":1,"message":{"message_id":2,"date":3,"chat":{"id":4,"type":"private"},"text":',
        b"}}",
    ),
    "hubspot": (b'{"type":"X","portalId":4242,"eventId":', b"}"),
    "amocrm": (b'{"account_id":"' + h.AMO_AMOJO.encode() + b'","x":', b"}"),
    "bitrix24": (
        b'{"event":"ONAPPUNINSTALL","auth":{"application_token":"'
        + h.B24_APP_TOKEN.encode()
        + b'"},"x":',
        b"}",
    ),
}


@pytest.mark.parametrize("name", sorted(JSON_PARSERS))
def test_json_parsers_hold_at_the_recursion_limit(name: str) -> None:
    """Nesting just under, at and over what ``json.loads`` accepts here: the
    body is parsed or refused with a 400, never a RecursionError (json.dumps
    of the raw payload, PTB's deepcopy and de_json recurse deeper than the
    decoder)."""
    head, tail = DEEP_SHAPES[name]
    edge = _loadable_depth()
    for depth in [*range(max(1, edge - 40), edge + 3), 5000]:
        JSON_PARSERS[name](head + b"[" * depth + b"]" * depth + tail)


@pytest.mark.parametrize("name", sorted(h.TARGETS))
def test_fuzz_targets_accept_their_seeds(name: str) -> None:
    """``tests/fuzz.py`` stays runnable: every target holds on its seeds and
    on a few degenerate inputs."""
    target = h.TARGETS[name]
    seeds = target.seeds()
    assert seeds
    for data in [*seeds, b"", b"\x00", b"{}", b"[]", b"&", b"=" * 3, b"\xff" * 4]:
        target.run(data)


def test_fuzz_summary_table_reports_execs_and_crashes() -> None:
    outcomes = [
        h.Outcome("telegram_update", 21.4, 12345, 90, 0, "ok", fuzzed=10, rate=1234, new=7),
        h.Outcome("hubspot_webhook", 3.0, None, None, 1, "CRASH", "KeyError: 0"),
    ]
    table = h.table(outcomes).splitlines()
    assert table[0].split() == [
        *("target", "fuzzed", "s", "wall", "s", "execs", "execs/s", "new", "corpus"),
        *("crashes", "status"),
    ]
    assert table[2].split() == [
        "telegram_update",
        "10",
        "21",
        "12,345",
        "1,234",
        "7",
        "90",
        "0",
        "ok",
    ]
    assert table[3].split()[-2:] == ["1", "CRASH"]
    assert table[5].split() == ["total", "12,345", "1"]
    output = "#1\tINITED\n#77\tNEW cov: 3\nstat::number_of_executed_units: 4242\n"
    assert h._stat(output, "number_of_executed_units") == 4242
    assert h._last_exec_line(output) == 77
    crash = "=== Uncaught Python exception: ===\nKeyError: 0\nTraceback (most recent...\n"
    assert h._crash_detail(crash) == "KeyError: 0"
