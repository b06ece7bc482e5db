# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""VK's kit: one community per account, its Callback API server posting one
JSON event per request to the account's own URL (``/webhooks/vk/<key>``).
There is no signature: the body proves itself (FACTS §0 rule 2, §3) — its
``group_id`` must be the account's community and its ``secret`` the stored
secret key (compared in constant time); the ``confirmation`` event may come
without a secret and is answered with the community's confirmation string,
every other event with the plain text ``ok``. ``v`` must be 5.103 or later
and ``event_id`` is the journal key ("if it passed twice or more, ignore
it"). Bodies are VK's (``{"type", "object", "group_id", "event_id", "v",
"secret"}``), shaped like the real payloads in ``tests/fixtures/corpora/vk``
(Bots Long Poll updates: a Callback API event without ``v`` and ``secret``,
posted here as the Callback API posts them).

Since the proof travels in the body, :meth:`VkKit.prove` adds no header and
:meth:`VkKit.addressed` is what makes a delivery genuine for an account: it
names the account's community and carries its secret (the secrets the kit
made for the accounts it described, :func:`secret_of`)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import requests
from hypothesis import strategies as st

from bridge.errors import ConfigError, PayloadError, SignatureError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    RawDelivery,
    WebhookRequest,
)
from channel_adapters.vk import VkAdapter, inbound
from channel_adapters.vk.adapter import CONFIRMATION_RE, SECRET_RE, _group_id
from tests.kits.base import (
    MARK,
    AccountSpec,
    ChannelKit,
    DeepJson,
    FuzzTarget,
    HostileTarget,
    Property,
    Req,
    TextHelpers,
)
from tests.kits.common import (
    JSON,
    JSON_VALUES,
    T0,
    BrokenInvariant,
    check_channel_events,
    dumps,
    ident,
    json_tokens,
    keys_of,
    mutated,
)

UTC = dt.UTC
ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora" / "vk"
KOTLIN = "kotlin_vk_api_extracted"
#: the journal's key column, a conversation's thread id column, an ignored
#: event's type column (bridge.tables)
MAX_KEY, MAX_THREAD, MAX_EVENT_TYPE = 255, 64, 64
#: ``peer_id`` of a group chat is ``2000000000 + chat_id``
CHAT_PEER = 2_000_000_000
CURRENT = "5.199"
#: ``message_new.object`` as today's clients send it (corpus ``*_5_118.json``)
CLIENT_INFO: dict[str, Any] = {
    "button_actions": ["text", "vkpay", "open_app", "location", "open_link", "callback"],
    "keyboard": True,
    "inline_keyboard": True,
    "carousel": True,
    "lang_id": 0,
}

# -- the parsers' community -------------------------------------------------------------------

GROUP = 227000777
SECRET = "FuzzVkSecretKey0123456789"
CONFIRMATION = "5ab0f022"
TOKEN = "vk1.a.FuzzingCommunityToken0123456789"
#: another community (never this account's)
OTHER_GROUP = 227000778
#: the event id of a body built here unless one is given (40 hex digits, as VK's)
EVENT_ID0 = "5302d2a8e0b1c4f6a7b8c9d0e1f2a3b4c5d6e7f8"


@cache
def adapter(confirmation: str = CONFIRMATION) -> VkAdapter:
    """The parsers' community, never reaching the network (its inbound hooks make no call)."""
    account = ChannelAccountInfo(
        id=1,
        kind="vk",
        key="acct-key",
        credentials={"access_token": TOKEN, "secret": SECRET},
        settings={"confirmation": confirmation},
        external_id=str(GROUP),
    )
    return VkAdapter(account)


def request(body: bytes, headers: Mapping[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/vk/acct-key",
        headers={"content-type": JSON, **{k.lower(): v for k, v in (headers or {}).items()}},
        body=body,
        received_at=T0,
    )


# -- VK's bodies --------------------------------------------------------------------------------


def callback(
    etype: str,
    obj: Any,
    *,
    event_id: str | None = None,
    group: int = GROUP,
    secret: str | None = SECRET,
    v: str = CURRENT,
) -> dict[str, Any]:
    """A Callback API body in VK's field order (``secret`` left out when None)."""
    body: dict[str, Any] = {
        "type": etype,
        "object": obj,
        "group_id": group,
        "event_id": event_id if event_id is not None else EVENT_ID0,
        "v": v,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def message(
    from_id: int,
    text: str,
    *,
    message_id: int = 0,
    cmid: int = 1,
    date: int = 1740820600,
    peer_id: int | None = None,
    out: int = 0,
) -> dict[str, Any]:
    """A message object as the 5.103+ Callback API writes it."""
    return {
        "date": date,
        "from_id": from_id,
        "id": message_id,
        "out": out,
        "peer_id": peer_id if peer_id is not None else from_id,
        "text": text,
        "conversation_message_id": cmid,
        "fwd_messages": [],
        "important": False,
        "random_id": 0,
        "attachments": [],
        "is_hidden": False,
    }


def message_new(msg: Mapping[str, Any], lang_id: int | None = 0) -> dict[str, Any]:
    """``message_new.object``: ``{message, client_info}`` (since 5.103)."""
    info = dict(CLIENT_INFO)
    if lang_id is None:
        info.pop("lang_id")
    else:
        info["lang_id"] = lang_id
    return {"message": dict(msg), "client_info": info}


def signed(doc: Any, group: int = GROUP, secret: str = SECRET) -> Any:
    """``doc`` (an object) as the community's Callback API server posts it:
    its community and its secret key; anything else as it is."""
    if not isinstance(doc, dict):
        return doc
    return {**doc, "group_id": group, "secret": secret}


def _ascii(doc: Any) -> bytes:
    """JSON with non-ASCII escaped (a lone surrogate too: valid JSON text)."""
    return json.dumps(doc, ensure_ascii=True).encode()


# -- the corpus ---------------------------------------------------------------------------------


def _version_of(path: Path) -> str:
    """The API version a capture was made with: ``..._5_110.json`` is 5.110,
    the kotlin-vk-api captures 5.103, the rest today's."""
    found = re.search(r"_5_(\d+)\.json$", path.name)
    if found:
        return f"5.{found.group(1)}"
    return "5.103" if path.parent.name == KOTLIN else CURRENT


@cache
def corpus_events() -> tuple[tuple[str, str, str], ...]:
    """Every event of the corpus: ``(file:index, the update as JSON, its version)``."""
    out: list[tuple[str, str, str]] = []
    for path in sorted(CORPORA.rglob("*.json")):
        if path.parent.name == "schema":
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        updates = data.get("updates") if isinstance(data, dict) else None
        for index, update in enumerate(updates if isinstance(updates, list) else []):
            if isinstance(update, dict) and isinstance(update.get("type"), str):
                out.append((f"{path.name}:{index}", json.dumps(update), _version_of(path)))
    return tuple(out)


def corpus_callback(update: str, version: str, event_id: str | None = None) -> dict[str, Any]:
    """A corpus update as the Callback API posts it to the parsers' community."""
    doc = json.loads(update)
    doc.update(group_id=GROUP, v=version, secret=SECRET)
    if event_id is not None:
        doc["event_id"] = event_id
    return doc


@cache
def _seed_docs() -> list[Any]:
    """The corpus as callbacks, and the events it lacks built here."""
    docs: list[Any] = [corpus_callback(u, v) for _, u, v in corpus_events()]
    docs += [
        {"type": "confirmation", "group_id": GROUP},
        callback("confirmation", None, secret=SECRET),
        callback("message_allow", {"user_id": 918650328, "key": "promo"}),
        callback("message_deny", {"user_id": 918650328}),
        callback(
            "message_event",
            {
                "user_id": 918650328,
                "peer_id": CHAT_PEER + 8,
                "event_id": "5bba1af2abf1",
                "payload": '{"cmd":"buy"}',
                "conversation_message_id": 833,
            },
        ),  # fmt: skip
        callback(
            "message_new",
            message_new(message(918650328, "in a chat", peer_id=CHAT_PEER + 8, cmid=99)),
        ),
        callback(
            "message_edit",
            {**message(918650328, "edited", message_id=77, cmid=5), "update_time": 1740820700},
        ),
    ]
    return docs


def seeds() -> list[bytes]:
    return [dumps(doc) for doc in _seed_docs()]


# -- driving the hooks as the web layer and the journal do ----------------------------------


def proven(body: bytes, group: int = GROUP, secret: str = SECRET) -> bool:
    """What ``verify`` must let through: a JSON object naming the community
    (an integer ``group_id``) with its secret key, or a ``confirmation``
    without a secret for it."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict):
        return False
    named = doc.get("group_id")
    if isinstance(named, bool) or not isinstance(named, int) or named != group:
        return False
    given = doc.get("secret")
    if given is None and doc.get("type") == inbound.CONFIRMATION:
        return True
    return given == secret


def _documented(exc: WebhookError, *secrets_: str) -> None:
    """A documented refusal: a 4xx whose words repeat no secret (the
    community's, or ``secrets_``: a forged one long enough to tell)."""
    if not 400 <= exc.status_code < 500:
        raise BrokenInvariant(f"not a 4xx: {exc.status_code} {exc.message!r}")
    said = json.dumps(exc.to_json(), ensure_ascii=False) + str(exc)
    for secret in (SECRET, TOKEN, CONFIRMATION, *(s for s in secrets_ if len(s) >= 12)):
        if secret in said:
            raise BrokenInvariant(f"a refusal repeats a secret: {said[:200]!r}")


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _strings(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key, f"{where}[key]")
            yield from _strings(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


USER_ID = re.compile(r"[1-9][0-9]{0,18}")
PEER_ID = re.compile(r"-?[1-9][0-9]{0,18}")
MESSAGE_REF = re.compile(r"[1-9][0-9]*|c[1-9][0-9]*")


def check_events(events: Any, key: str) -> None:
    """A delivery parses to exactly one event keyed by the delivery's key:
    a customer's message from a VK user (never the community's own or
    another community's), within the columns it is stored in; every string
    storable (UTF-8, no NUL in a message's text) and none the secret."""
    check_channel_events(events, exactly=1)
    (event,) = events
    if event.external_id != key:
        raise BrokenInvariant(f"the event's key {event.external_id!r} is not {key!r}")
    if isinstance(event, InboundMessage):
        if not USER_ID.fullmatch(event.external_user_id):
            raise BrokenInvariant(f"not a VK user: {event.external_user_id!r}")
        if not PEER_ID.fullmatch(event.external_thread_id):
            raise BrokenInvariant(f"not a VK peer: {event.external_thread_id!r}")
        if len(event.external_thread_id) > MAX_THREAD:
            raise BrokenInvariant(f"thread id over {MAX_THREAD}")
        ref = event.provider_message_id
        if ref is not None and not MESSAGE_REF.fullmatch(ref):
            raise BrokenInvariant(f"a message id VK has not: {ref!r}")
        if event.sequence is not None and event.sequence <= 0:
            raise BrokenInvariant(f"a sequence that is no conversation_message_id: {event!r}")
        if "\x00" in event.text:
            raise BrokenInvariant("a NUL in the text (PostgreSQL refuses it)")
        for attachment in event.attachments:
            url = attachment.url
            if url is not None and not (
                url.startswith(("http://", "https://")) and url.isprintable()
            ):
                raise BrokenInvariant(f"an attachment URL that is not http(s): {url!r}")
        if (event.kind is MessageKind.CALLBACK) != (event.callback_id is not None):
            raise BrokenInvariant(f"a callback without its id (or the other way): {event!r}")
    elif isinstance(event, IgnoredEvent):
        if len(event.event_type) > MAX_EVENT_TYPE or not event.event_type.isprintable():
            raise BrokenInvariant(f"an event type its column cannot hold: {event.event_type!r}")
        if "secret" in event.raw:
            raise BrokenInvariant("an ignored event keeps the secret")
    for where, text in _strings(event, "event"):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BrokenInvariant(f"{where} cannot be stored (a lone surrogate)") from None
        if SECRET in text:
            raise BrokenInvariant(f"{where} carries the secret key")
    if isinstance(event, InboundMessage | IgnoredEvent) and SECRET in repr(event.raw):
        raise BrokenInvariant("the event's raw facts carry the secret key")


def deliver(body: bytes) -> RawDelivery | None:
    """The account URL's path: ``verify`` (it passes exactly for a proven
    body), then ``edge`` — the one delivery the journal stores; None for a
    documented 4xx. The delivery is keyed by ``event_id`` (the
    confirmation: ``confirmation:<id or digest>``), never holds the secret,
    and splits to itself again (a redelivery of it is the same row)."""
    req = request(body)
    try:
        adapter().verify(req)
    except SignatureError as exc:
        _documented(exc)
        if exc.status_code != 403:
            raise BrokenInvariant(f"a failed proof answered {exc.status_code}") from None
        if proven(body):
            raise BrokenInvariant(f"a proven body was refused: {body[:200]!r}") from None
        return None
    if not proven(body):
        raise BrokenInvariant(f"a body without the community's proof verified: {body[:200]!r}")
    try:
        deliveries = adapter().edge(req)
    except SignatureError:
        raise BrokenInvariant("edge refused a verified body's proof") from None
    except WebhookError as exc:
        _documented(exc)
        return None
    if not isinstance(deliveries, list) or len(deliveries) != 1:
        raise BrokenInvariant(f"one POST is one delivery: {deliveries!r}")
    (delivery,) = deliveries
    ident(delivery.key, "delivery key")
    if len(delivery.key) > MAX_KEY:
        raise BrokenInvariant(f"a key over {MAX_KEY} characters: {delivery.key!r}")
    doc = json.loads(body)
    if doc.get("type") == inbound.CONFIRMATION:
        if not inbound.is_confirmation(delivery):
            raise BrokenInvariant(f"a confirmation not keyed as one: {delivery.key!r}")
    elif delivery.key != doc.get("event_id") or inbound.is_confirmation(delivery):
        raise BrokenInvariant(f"the key is not the event_id: {delivery.key!r}")
    stored = json.loads(delivery.body)
    if "secret" in stored or SECRET.encode() in delivery.body:
        raise BrokenInvariant("the journal keeps the secret key")
    if inbound.split(delivery.body) != delivery:
        raise BrokenInvariant(f"a delivery does not split to itself: {delivery.key!r}")
    return delivery


def parse_delivery(delivery: RawDelivery, posted: bytes | None = None) -> list[Any] | None:
    """``parse`` as the journal's normaliser calls it: one event, or a
    PayloadError (the row rejected: a message without its ids); the same
    for the body as VK posted it (``posted``)."""
    req = delivery.request(T0)
    try:
        events = adapter().parse(req)
    except SignatureError:
        raise BrokenInvariant("parse checked a proof") from None
    except WebhookError as exc:
        _documented(exc)
        if not isinstance(exc, PayloadError):
            raise BrokenInvariant(f"parse refused with {type(exc).__name__}") from None
        events = None
    if events is not None:
        check_events(events, delivery.key)
        if adapter().parse(req) != events:
            raise BrokenInvariant("parse is not deterministic")
    if posted is not None:
        try:
            direct = adapter().parse(request(posted))
        except PayloadError:
            direct = None
        if direct != events:
            raise BrokenInvariant("the journaled delivery parses otherwise than the POST")
    return events


def parse(body: bytes) -> list[Any] | None:
    """The webhook's path then the worker's: the event, or None for a 4xx."""
    delivery = deliver(body)
    if delivery is None:
        return None
    return parse_delivery(delivery, body)


def fuzz(data: bytes) -> None:
    """Every inbound hook on any bytes, as they came and signed for the
    parsers' community, each allowed only its documented WebhookError:
    verify (only SignatureError), edge, parse of the POST and of its
    delivery; the answer to what was delivered."""
    bodies = [data]
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        bodies.append(_ascii(signed(doc)))
    for body in bodies:
        req = request(body)
        try:
            adapter().verify(req)
        except SignatureError:
            pass
        try:
            deliveries = adapter().edge(req)
        except SignatureError:
            raise BrokenInvariant("edge checked a proof") from None
        except WebhookError as exc:
            _documented(exc)
            deliveries = []
        try:
            adapter().parse(req)
        except SignatureError:
            raise BrokenInvariant("parse checked a proof") from None
        except WebhookError as exc:
            _documented(exc)
        for delivery in deliveries:
            parse_delivery(delivery)
        if deliveries:
            answer = adapter().answer(deliveries)
            if answer.status != 200 or answer.body not in ("ok", CONFIRMATION):
                raise BrokenInvariant(f"VK would retry this answer: {answer!r}")


# -- properties ---------------------------------------------------------------------------------

DEEP = b"[" * 600 + b"]" * 600
EVENT_ID = st.one_of(
    st.from_regex(r"[0-9a-f]{40}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True),
)
#: a VK user (below the group chats' peer ids)
USER = st.integers(1, CHAT_PEER - 1)
DATE = st.integers(1, 2**33)
#: API versions the adapter takes (5.103 and later), and the ones it must refuse
GOOD_VERSION = st.one_of(
    st.sampled_from(["5.103", "5.110", "5.118", "5.131", "5.199"]),
    st.builds("{}.{}".format, st.just(5), st.integers(103, 9999)),
    st.builds("{}.{}".format, st.integers(6, 999), st.integers(0, 9999)),
)
OLD_VERSION = st.one_of(
    st.sampled_from(["5.102", "5.101", "5.80", "5.0", "4.104"]),
    st.builds("{}.{}".format, st.just(5), st.integers(0, 102)),
    st.builds("{}.{}".format, st.integers(0, 4), st.integers(0, 9999)),
)
HANDLED = ("confirmation", "message_new", "message_edit", "message_reply", "message_event",
           "message_allow", "message_deny")  # fmt: skip


def the_corpus_is_there() -> None:
    assert len(corpus_events()) >= 30  # the real payloads the mutations start from


def any_body_is_one_delivery_or_a_4xx(body: bytes) -> None:
    parse(body)


def _expected_of_corpus(update: Mapping[str, Any]) -> str:
    """What a corpus event must become, read from the update itself."""
    etype = update["type"]
    obj = update.get("object") if isinstance(update.get("object"), dict) else {}
    msg = obj.get("message") if etype == "message_new" else obj
    if etype == "message_reply":
        return "ignored message_reply:outgoing"
    if etype in ("message_new", "message_edit"):
        if msg.get("out") == 1:
            return f"ignored {etype}:outgoing"
        if msg.get("from_id", 0) < 0:
            return f"ignored {etype}:from_community"
        return "message"
    if etype == "message_event":
        return "callback"
    if etype in ("message_allow", "message_deny"):
        return "system"
    return f"ignored {etype}"


def _described(event: Any) -> str:
    if isinstance(event, IgnoredEvent):
        return f"ignored {event.event_type}"
    if event.kind is MessageKind.CALLBACK:
        return "callback"
    if event.kind is MessageKind.SYSTEM and event.raw.get("type") in CONSENT_TYPES:
        return "system"
    return "message"


CONSENT_TYPES = ("message_allow", "message_deny")


def any_corpus_event_round_trips(item: tuple[str, str, str], event_id: str, v: str | None) -> None:
    """A corpus event as the Callback API posts it (any event id, its own
    version or a later one): proven, one delivery keyed by the event id, one
    event that says what the update is; a customer message names its sender,
    peer, id and time as the update does; the community's own never is one."""
    name, update, version = item
    doc = corpus_callback(update, v or version, event_id)
    events = parse(dumps(doc))
    assert events is not None, name
    (event,) = events
    assert event.external_id == event_id, name
    expected = _expected_of_corpus(json.loads(update))
    assert _described(event) == expected, (name, event)
    if expected == "message":
        obj = doc["object"]
        msg = obj["message"] if doc["type"] == "message_new" else obj
        assert isinstance(event, InboundMessage)
        assert event.external_user_id == str(msg["from_id"]), name
        assert event.external_thread_id == str(msg["peer_id"]), name
        assert event.is_edit is (doc["type"] == "message_edit"), name
        ref = str(msg["id"]) if msg.get("id") else f"c{msg['conversation_message_id']}"
        assert event.provider_message_id == ref, name
        stamp = msg.get("update_time") if event.is_edit else msg["date"]
        assert event.sent_at == dt.datetime.fromtimestamp(stamp, UTC), name
        assert event.text or event.attachments, name


def every_corpus_event_is_delivered_and_parses() -> None:
    for name, update, version in corpus_events():
        events = parse(dumps(corpus_callback(update, version)))
        assert events, name


def text_message_round_trips(
    event_id: str,
    from_id: int,
    chat: int | None,
    message_id: int,
    cmid: int,
    text: str,
    date: int,
    edited_after: int | None,
    lang_id: int | None,
    v: str,
) -> None:
    peer = CHAT_PEER + chat if chat is not None else from_id
    msg = message(from_id, text, message_id=message_id, cmid=cmid, date=date, peer_id=peer)
    if edited_after is None:
        doc = callback("message_new", message_new(msg, lang_id), event_id=event_id, v=v)
    else:
        doc = callback(
            "message_edit", {**msg, "update_time": date + edited_after}, event_id=event_id, v=v
        )
    events = parse(dumps(doc))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage)
    cleaned = text.replace("\x00", "")
    if cleaned.strip():
        assert event.kind is MessageKind.TEXT and event.text == cleaned[: inbound.MAX_TEXT]
    else:
        assert event.kind is MessageKind.UNKNOWN and event.text == "[empty message]"
    assert event.external_id == event_id
    assert event.external_user_id == str(from_id) and event.external_thread_id == str(peer)
    ref = str(message_id) if message_id > 0 else (f"c{cmid}" if cmid > 0 else None)
    assert event.provider_message_id == ref
    assert event.sequence == (cmid if cmid > 0 else None)
    assert event.is_edit is (edited_after is not None)
    when = date + edited_after if edited_after is not None else date
    assert event.sent_at == dt.datetime.fromtimestamp(when, UTC)
    told = edited_after is None and lang_id is not None  # an edit has no client_info
    assert event.profile.language == (inbound.LANGUAGES.get(lang_id) if told else None)
    assert event.reply_to is None and event.callback_id is None and not event.attachments
    assert event.raw["from_id"] == from_id and event.raw["peer_id"] == peer
    assert event.raw.get("chat") is (True if chat is not None else None)


def the_communitys_own_messages_are_never_a_customers(
    etype: str, from_id: int, out: Any, text: str, seed: int
) -> None:
    """``message_reply`` (what the community sent: the bridge's replies, an
    admin's), any message with ``out: 1``, and a message another community
    (a bot in a chat: ``from_id`` < 0) wrote are ignored by name, never a
    customer message — built here and taken from the corpus."""
    corpus = [json.loads(u) for _, u, _ in corpus_events()]
    messages = [
        (u["object"]["message"] if u["type"] == "message_new" else u["object"])
        for u in corpus
        if u["type"] in ("message_new", "message_edit", "message_reply")
    ]
    base = copy.deepcopy(messages[seed % len(messages)])
    base.update(from_id=from_id, text=text)
    outgoing = out in (1, True)
    if etype == "message_reply":
        doc = callback("message_reply", {**base, "out": out})
        expected = "message_reply:outgoing"
    else:
        msg = {**base, "out": out}
        obj = message_new(msg) if etype == "message_new" else msg
        doc = callback(etype, obj)
        if outgoing:
            expected = f"{etype}:outgoing"
        elif from_id < 0:
            expected = f"{etype}:from_community"
        else:
            expected = ""
    events = parse(dumps(doc))
    assert events is not None
    (event,) = events
    if expected:
        assert isinstance(event, IgnoredEvent) and event.event_type == expected, event
    else:
        assert isinstance(event, InboundMessage), event
        assert event.external_user_id == str(from_id)


def button_press_round_trips(
    event_id: str, user: int, chat: int | None, button: str, payload: Any, cmid: int | None
) -> None:
    peer = CHAT_PEER + chat if chat is not None else user
    obj: dict[str, Any] = {"user_id": user, "peer_id": peer, "event_id": button}
    if payload is not None:
        obj["payload"] = payload
    if cmid is not None:
        obj["conversation_message_id"] = cmid
    events = parse(dumps(callback("message_event", obj, event_id=event_id)))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.CALLBACK
    assert event.external_id == event_id
    assert event.external_user_id == str(user) and event.external_thread_id == str(peer)
    assert event.callback_id == (button if chat is None else f"{button}:{user}")
    assert event.reply_to == (f"c{cmid}" if cmid is not None and cmid > 0 else None)
    assert event.sent_at == T0  # a message_event has no date: the arrival time
    if isinstance(payload, str):
        assert event.text == payload.replace("\x00", "")[: inbound.MAX_QUOTED]
    elif payload is None:
        assert event.text == ""


def consent_events_are_on_the_timeline(event_id: str, etype: str, user: int) -> None:
    obj: dict[str, Any] = {"user_id": user}
    if etype == "message_allow":
        obj["key"] = "promo"
    events = parse(dumps(callback(etype, obj, event_id=event_id)))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.SYSTEM
    assert event.external_user_id == event.external_thread_id == str(user)
    assert event.text == inbound.CONSENT[etype]


def other_event_types_are_ignored_by_name(event_id: str, etype: str, obj: Any) -> None:
    events = parse(dumps(callback(etype, obj, event_id=event_id)))
    assert events is not None
    (event,) = events
    assert isinstance(event, IgnoredEvent)
    shown = "".join(c if c.isprintable() else "?" for c in etype.replace("\x00", ""))
    assert event.event_type == shown[:MAX_EVENT_TYPE]


def only_the_communitys_secret_and_group_verify(
    secret: Any, group: Any, etype: str, drop: bool
) -> None:
    """``verify`` takes the stored secret key exactly (a string: no prefix,
    no case change, no padding, no other type) with the community's own
    integer ``group_id``; a confirmation may come without a secret, for
    this community only; any other event without one is refused."""
    doc = callback(etype, message_new(message(1, MARK)), group=GROUP)
    doc["secret"] = secret
    if drop:
        doc.pop("secret")
    doc["group_id"] = group
    body = _ascii(doc)
    ours = not isinstance(group, bool) and isinstance(group, int) and group == GROUP
    genuine = ours and (
        (secret == SECRET and not drop) or (etype == "confirmation" and (drop or secret is None))
    )
    try:
        adapter().verify(request(body))
    except SignatureError as exc:
        _documented(exc, secret if isinstance(secret, str) else "")
        assert not genuine, (secret, group, etype, drop)
        return
    assert genuine, (secret, group, etype, drop)


def _almost(secret: str) -> list[str]:
    return [
        secret[:-1],
        secret + "0",
        "0" + secret,
        secret.swapcase(),
        f" {secret}",
        f"{secret}\n",
        secret[::-1],
        secret.replace("0", "O"),
        "",
    ]


SECRET_VALUES = st.one_of(
    st.just(SECRET),
    st.sampled_from(_almost(SECRET)),
    st.text(max_size=60),
    st.sampled_from([TOKEN, CONFIRMATION, str(GROUP), MARK * 500, "секрет", "\ud800"]),
    JSON_VALUES,
)
GROUP_VALUES = st.one_of(
    st.just(GROUP),
    st.sampled_from([OTHER_GROUP, -GROUP, str(GROUP), float(GROUP), True, 0, None, 10**30]),
    st.integers(),
    JSON_VALUES,
)


def versions_from_5_103_are_taken_older_ones_are_a_400(case: tuple[Any, bool]) -> None:
    """``v`` is the Callback API server's version: 5.103 and later are
    taken, an older or unreadable one is a 400 naming the fix (the shape of
    ``message_new`` changed at 5.103); the confirmation is answered whatever
    its version."""
    v, good = case
    msg = message_new(message(4242, "hello", message_id=1))
    doc = callback("message_new", msg, v=v)
    delivery = deliver(_ascii(doc))
    assert (delivery is not None) is good, v
    if not good:
        try:
            adapter().edge(request(_ascii(doc)))
        except PayloadError as exc:
            assert exc.status_code == 400 and "5.103" in exc.message
        else:
            raise BrokenInvariant(f"v {v!r} was taken")
    confirmation = callback("confirmation", None, v=v)
    assert deliver(_ascii(confirmation)) is not None


def the_event_id_is_the_journal_key(event_id: Any, etype: str) -> None:
    """An event's ``event_id`` (letters, digits, ``_`` and ``-``, up to 128)
    is its journal key; anything else is a 400 — but a confirmation, which
    may have none, is keyed ``confirmation:<its id or its digest>``."""
    obj = None if etype == "confirmation" else message_new(message(4242, "hi", message_id=3))
    doc = callback(etype, obj)
    doc["event_id"] = event_id
    valid = isinstance(event_id, str) and inbound.EVENT_ID_RE.fullmatch(event_id) is not None
    delivery = deliver(_ascii(doc))
    if etype == "confirmation":
        assert delivery is not None and delivery.key.startswith("confirmation:")
        assert delivery.key == (f"confirmation:{event_id}" if valid else delivery.key)
        again = deliver(_ascii(doc))
        assert again is not None and again.key == delivery.key  # a redelivery: one row
        return
    assert (delivery is not None) is valid, event_id
    if delivery is not None:
        assert delivery.key == event_id


def a_redelivered_event_is_the_same_row(
    event_id: str, text: str, retry: int, other_text: str
) -> None:
    """VK retries an event with the same ``event_id`` (``X-Retry-Counter``):
    the same journal key, so one message; the journaled body holds no secret
    and is the same bytes for the same event."""
    msg = message_new(message(4242, text, message_id=9))
    doc = callback("message_new", msg, event_id=event_id)
    first = deliver(dumps(doc))
    req = request(dumps(doc), {"X-Retry-Counter": str(retry)})
    adapter().verify(req)
    (retried,) = adapter().edge(req)
    changed = copy.deepcopy(doc)
    changed["object"]["message"]["text"] = other_text
    again = deliver(dumps(changed))
    assert first is not None and again is not None
    assert first == retried and first.key == again.key == event_id
    assert b'"secret"' not in first.body and b'"secret"' not in again.body


def the_answer_is_the_confirmation_string_or_ok(
    etype: str, event_id: str | None, with_secret: bool
) -> None:
    """VK's ``confirmation`` is answered with the community's string (HTTP
    200, plain text), every other event with ``ok``; a community with no
    string stored refuses the confirmation (409) instead of telling VK
    something wrong."""
    obj = None if etype == "confirmation" else message_new(message(4242, "hi", message_id=5))
    doc = callback(etype, obj, event_id=event_id, secret=SECRET if with_secret else None)
    if event_id is None:
        doc.pop("event_id")
    body = _ascii(doc)
    delivery = deliver(body)
    if etype != "confirmation" and (event_id is None or not with_secret):
        assert delivery is None
        return
    assert delivery is not None
    answer = adapter().answer([delivery])
    want = CONFIRMATION if etype == "confirmation" else "ok"
    assert (answer.body, answer.status) == (want, 200)
    assert answer.content_type.startswith("text/plain")
    unset = adapter(confirmation="")
    unset.verify(request(body))
    if etype != "confirmation":
        assert unset.answer(unset.edge(request(body))).body == "ok"
        return
    try:
        unset.edge(request(body))
    except WebhookError as exc:
        assert exc.status_code == 409 and "--confirmation" in exc.message
        return
    raise BrokenInvariant("a confirmation answered without a string stored")


def a_body_that_is_not_an_event_is_a_400(doc: Any) -> None:
    """Proven or not, a body that is no VK event (not JSON, not an object,
    no ``type``) is refused by every hook: ``verify`` (403: no secret to
    read) or ``edge``/``parse`` (400)."""
    for body in (_ascii(doc), _ascii(doc)[:-1], _ascii(signed(doc))):
        req = request(body)
        for hook in (adapter().edge, adapter().parse):
            try:
                hook(req)
            except PayloadError as exc:
                assert exc.status_code == 400
                continue
            raise BrokenInvariant(f"not an event, yet taken: {body[:200]!r}")


NOT_AN_EVENT = st.one_of(
    JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
    st.dictionaries(st.text(max_size=10).filter(lambda k: k != "type"), JSON_VALUES, max_size=4),
    st.builds(
        lambda t, rest: {**rest, "type": t},
        st.one_of(st.none(), st.just(""), st.integers(), st.booleans(), st.lists(st.text())),
        st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3),
    ),
)


def a_version_reads_as_its_numbers(major: int, minor: int, pad: str) -> None:
    assert inbound.version(f"{pad}{major}.{minor}{pad}") == (major, minor)


def a_group_id_reads_from_what_admins_paste(group: int, form: str) -> None:
    assert _group_id(form.format(group)) == str(group)


def any_pasted_community_id_is_an_id_or_a_config_error(text: str) -> None:
    """``bridge vk connect --group-id``: whatever an admin pastes is the
    community's id (digits) or a ConfigError naming the fix, never a crash."""
    try:
        group = _group_id(text)
    except ConfigError:
        return
    assert group.isascii() and group.isdigit() and group == str(int(group)) and int(group) > 0


def fuzz_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    found = inbound.version(text)
    if found is not None and not all(isinstance(n, int) and n >= 0 for n in found):
        raise BrokenInvariant(f"version({text!r}) -> {found!r}")
    try:
        group = _group_id(text)
    except ConfigError:
        return
    if not (group.isdigit() and group.isascii() and int(group) > 0 and group == str(int(group))):
        raise BrokenInvariant(f"_group_id({text!r}) -> {group!r}")


#: bodies that once broke a parser, or might: tried first
HOSTILE_EXAMPLES = (
    _ascii(
        callback(
            "message_new",
            {"message": {"from_id": 1, "peer_id": 1, "text": "x", "extra": json.loads(DEEP)}},
        )
    ),  # fmt: skip
    b'{"type":"message_new","group_id":'
    + str(GROUP).encode()
    + b',"secret":"'
    + SECRET.encode()
    + b'","event_id":"e","v":"5.199","object":{"message":{"from_id":1,"peer_id":1,"text":'
    + DEEP
    + b"}}}",
    b"\xff\xfe",
    _ascii(callback("message_new", message_new(message(1, "\ud800 a lone surrogate")))),
    _ascii(callback("message_new", message_new(message(1, "nul \x00 inside")))),
    _ascii(callback("message_new", message_new({**message(10**400, "huge"), "date": 1e999}))),
    _ascii(callback("message_new", message_new({**message(1, "x"), "peer_id": -(2**63)}))),
    _ascii(callback("message_new", {"peer_id": 1, "from_id": 1, "text": "before 5.103"})),
    _ascii(callback("\x00" * 100 + "x" * 100, {})),
    _ascii(callback("confirmation", None, event_id="x" * 200)),
    _ascii({"type": "confirmation", "group_id": GROUP, "secret": None}),
    _ascii(
        callback(
            "message_event",
            {"user_id": 1, "peer_id": 1, "event_id": "b", "payload": {"a": json.loads(DEEP)}},
        )
    ),  # fmt: skip
    _ascii(
        callback(
            "message_new",
            message_new(
                {
                    **message(1, ""),
                    "attachments": [
                        {"type": "photo", "photo": {"sizes": [{"url": "javascript:alert(1)"}]}},
                        {
                            "type": "doc",
                            "doc": {"title": "\x00", "ext": "\ud800", "url": "http://a b"},
                        },
                        {"type": "sticker"},
                        {"type": None},
                        7,
                    ],
                    "fwd_messages": [{"fwd_messages": [{"fwd_messages": [{"text": "deep"}]}]}],
                }
            ),
        )
    ),
    _ascii(callback("message_new", {"message": {**message(1, "x"), "id": True, "out": True}})),
)


# -- hostile input ------------------------------------------------------------------------------

GROUP_A, GROUP_B = 227100001, 227100002
SECRET_A = "HostileVkSecretA0123456789abcdef"
SECRET_B = "HostileVkSecretB9876543210fedcba"
ACCOUNTS = {
    "A": AccountSpec(
        {"access_token": "vk1.a.HostileCommunityTokenA0123456789", "secret": SECRET_A},
        str(GROUP_A),
        {"confirmation": "a1b2c3d4"},
        name="community A",
    ),
    "B": AccountSpec(
        {"access_token": "vk1.a.HostileCommunityTokenB9876543210", "secret": SECRET_B},
        str(GROUP_B),
        {"confirmation": "e5f6a7b8"},
        name="community B",
    ),
}
GROUPS = {"A": GROUP_A, "B": GROUP_B}
SECRETS = {"A": SECRET_A, "B": SECRET_B}


def hostile_delivery(uid: str, tenant: str = "A") -> dict[str, Any]:
    """One customer text to ``tenant``'s community, new by its event id."""
    msg = message(79990001, f"{MARK} hello", message_id=int(uid[:7], 16) + 1, cmid=7)
    return callback(
        "message_new",
        message_new(msg),
        event_id=hashlib.sha1(uid.encode()).hexdigest(),  # noqa: S324 (an id, not a digest of secrets)
        group=GROUPS[tenant],
        secret=SECRETS[tenant],
    )


def _with(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The genuine body with fields set (``None``: left out)."""

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        out = dict(doc)
        for key, value in changes.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    return edit


def _confirmation(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda doc: {"type": "confirmation", "group_id": GROUP_A, **fields}


#: attacks on the proof in the body (the secret key, the community): 403
PROOF_ATTACKS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "secret-missing": _with(secret=None),
    "secret-null": lambda doc: {**doc, "secret": None},
    "secret-empty": _with(secret=""),
    "secret-forged": _with(secret=f"{MARK}0123456789"),
    "secret-prefix": _with(secret=SECRET_A[:-1]),
    "secret-longer": _with(secret=SECRET_A + "0"),
    "secret-other-case": _with(secret=SECRET_A.swapcase()),
    "secret-padded": _with(secret=f" {SECRET_A} "),
    "secret-huge": _with(secret=MARK * 600),
    "secret-non-ascii": _with(secret=f"секрет-{MARK}"),
    "secret-lone-surrogate": _with(secret="\ud800" + SECRET_A),
    "secret-not-a-string": _with(secret=1234567890),
    "secret-a-list": _with(secret=[SECRET_A]),
    "secret-an-object": _with(secret={"secret": SECRET_A}),
    "secret-of-another-community": _with(secret=SECRET_B),
    "secret-is-the-access-token": _with(secret=ACCOUNTS["A"].credentials["access_token"]),
    "secret-is-the-confirmation-string": _with(secret="a1b2c3d4"),
    "group-of-another-community": _with(group_id=GROUP_B),
    "another-communitys-delivery": _with(group_id=GROUP_B, secret=SECRET_B),
    "group-missing": _with(group_id=None),
    "group-as-a-string": _with(group_id=str(GROUP_A)),
    "group-negative": _with(group_id=-GROUP_A),
    "group-as-a-float": _with(group_id=float(GROUP_A)),
    "group-true": _with(group_id=True),
    "group-huge": _with(group_id=10**40 + GROUP_A),
    "confirmation-forged-secret": _confirmation(secret=f"{MARK}0123456789"),
    "confirmation-secret-of-another-community": _confirmation(secret=SECRET_B),
    "confirmation-empty-secret": _confirmation(secret=""),
    "confirmation-secret-not-a-string": _confirmation(secret=0),
    "confirmation-of-another-community": _confirmation(group_id=GROUP_B),
    "confirmation-of-another-community-with-its-secret": _confirmation(
        group_id=GROUP_B, secret=SECRET_B
    ),
    "confirmation-group-missing": lambda doc: {"type": "confirmation", "secret": SECRET_A},
    "confirmation-group-as-a-string": _confirmation(group_id=str(GROUP_A)),
}
#: bodies that carry no readable proof at all: 403
UNREADABLE: dict[str, Callable[[bytes], bytes]] = {
    "not-json": lambda raw: f"{MARK} not json".encode(),
    "json-cut-short": lambda raw: raw[:-7],
    "json-not-an-object": lambda raw: b"[" + raw + b"]",
    "json-a-string": lambda raw: json.dumps(raw.decode()).encode(),
    "invalid-utf8": lambda raw: raw.replace(MARK.encode(), b"\xff\xfe" + MARK.encode(), 1),
}
#: proven (the right community and secret), yet no event the bridge takes: 400 (413)
PROVEN_REFUSALS: dict[str, tuple[int, Callable[[dict[str, Any]], Any]]] = {
    "proven-no-type": (400, _with(type=None)),
    "proven-type-empty": (400, _with(type="")),
    "proven-type-not-a-string": (400, _with(type=["message_new"])),
    "proven-no-event-id": (400, _with(event_id=None)),
    "proven-event-id-empty": (400, _with(event_id="")),
    "proven-event-id-not-a-string": (400, _with(event_id=4242)),
    "proven-event-id-bad-characters": (400, _with(event_id=f"../{MARK}/x")),
    "proven-event-id-too-long": (400, _with(event_id="e" * 129)),
    "proven-old-version": (400, _with(v="5.80")),
    "proven-version-5.102": (400, _with(v="5.102")),
    "proven-version-unreadable": (400, _with(v="latest")),
    "proven-version-not-a-string": (400, _with(v=[5, 199])),
    # the Callback API's body is a small JSON event: over the cap, never read
    "proven-over-1-mb": (413, _with(padding=MARK * (1_000_001 // len(MARK) + 1))),
}


class VkTarget(HostileTarget):
    """A community's own URL: the body's ``group_id`` and ``secret`` are the proof."""

    name = "vk"
    kind = "vk"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        **{case: 403 for case in PROOF_ATTACKS},
        **{case: 403 for case in UNREADABLE},
        **{case: status for case, (status, _) in PROVEN_REFUSALS.items()},
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/vk/{self.world.account_keys['vk'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return dumps(hostile_delivery(uid, tenant))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> None:
        return None  # the secret key travels in the body

    def auth_attack(self, case: str) -> Req:
        doc = hostile_delivery(uuid.uuid4().hex)
        if case in PROOF_ATTACKS:
            raw = _ascii(PROOF_ATTACKS[case](doc))
        elif case in UNREADABLE:
            raw = UNREADABLE[case](dumps(doc))
        else:
            raw = _ascii(PROVEN_REFUSALS[case][1](doc))
        return Req(self.path(), raw, JSON)


# -- tenant isolation, secrets at rest: the accounts' secrets ---------------------------------

#: the secret key of each community the kit described, by the account's id on
#: the channel (what :meth:`VkKit.addressed` is given)
_SECRETS: dict[str, str] = {}


def secret_of(external_id: str) -> str | None:
    return _SECRETS.get(external_id)


# -- canaries -----------------------------------------------------------------------------------

CANARY_GROUP = 229900001
#: the canary run's secrets (canary_values makes them; refused_body reads them)
_CANARY: dict[str, str] = {}


def _event_id(*parts: object) -> str:
    """An event id as VK writes them (40 hex digits), one per delivery."""
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()  # noqa: S324 (an id)


def _webhook_of(cli: Callable[..., str], slug: str) -> str:
    """The account's webhook URL with its key (``bridge tenant show --reveal``)."""
    detail = json.loads(cli("tenant", "show", slug, "--reveal", "--json"))
    (url,) = [ch["webhook"] for ch in detail["channels"] if ch["kind"] == "vk"]
    return str(url)


# -- the kit ------------------------------------------------------------------------------------


class VkKit(ChannelKit):
    kind = "vk"
    content_type = JSON

    # -- parsers

    def properties(self) -> Sequence[Property]:
        docs = _seed_docs()
        return [
            Property("vk: the corpus is there", the_corpus_is_there),
            Property(
                "vk: any body is one delivery of one event or a 4xx",
                any_body_is_one_delivery_or_a_4xx,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    st.builds(
                        lambda t, o: callback(t, o, event_id="e0"),
                        st.one_of(st.sampled_from(HANDLED), st.text(max_size=20)),
                        JSON_VALUES,
                    ).map(_ascii),
                    mutated(docs, keys_of(docs)).map(_ascii),
                    mutated(docs, keys_of(docs)).map(signed).map(_ascii),
                ),
                examples=HOSTILE_EXAMPLES,
                hostile=True,
            ),
            Property(
                "vk: every corpus event is delivered and parses",
                every_corpus_event_is_delivered_and_parses,
            ),
            Property(
                "vk: any corpus event round-trips",
                any_corpus_event_round_trips,
                {
                    "item": st.sampled_from(corpus_events()),
                    "event_id": EVENT_ID,
                    "v": st.one_of(st.none(), GOOD_VERSION),
                },
            ),
            Property(
                "vk: a text message round-trips",
                text_message_round_trips,
                {
                    "event_id": EVENT_ID,
                    "from_id": USER,
                    "chat": st.one_of(st.none(), st.integers(1, 10**6)),
                    "message_id": st.integers(0, 2**31),
                    "cmid": st.integers(0, 10**7),
                    "text": st.text(max_size=300),
                    "date": DATE,
                    "edited_after": st.one_of(st.none(), st.integers(0, 10**6)),
                    "lang_id": st.one_of(st.none(), st.integers(0, 12)),
                    "v": GOOD_VERSION,
                },
            ),
            Property(
                "vk: message_reply and out:1 are never a customer message",
                the_communitys_own_messages_are_never_a_customers,
                {
                    "etype": st.sampled_from(["message_new", "message_edit", "message_reply"]),
                    "from_id": st.one_of(USER, st.integers(-(2**31), -1)),
                    "out": st.sampled_from([0, 1, True, False]),
                    "text": st.text(max_size=50),
                    "seed": st.integers(0, 1000),
                },
            ),
            Property(
                "vk: a button press round-trips",
                button_press_round_trips,
                {
                    "event_id": EVENT_ID,
                    "user": USER,
                    "chat": st.one_of(st.none(), st.integers(1, 10**6)),
                    "button": st.from_regex(r"[0-9a-f]{12}", fullmatch=True),
                    "payload": st.one_of(st.none(), st.text(max_size=100), JSON_VALUES),
                    "cmid": st.one_of(st.none(), st.integers(-5, 10**6)),
                },
            ),
            Property(
                "vk: message_allow and message_deny are on the timeline",
                consent_events_are_on_the_timeline,
                {
                    "event_id": EVENT_ID,
                    "etype": st.sampled_from(["message_allow", "message_deny"]),
                    "user": USER,
                },
            ),
            Property(
                "vk: other event types are ignored by name",
                other_event_types_are_ignored_by_name,
                {
                    "event_id": EVENT_ID,
                    "etype": st.text(min_size=1, max_size=100).filter(
                        lambda t: t not in HANDLED and t.replace("\x00", "") != ""
                    ),
                    "obj": JSON_VALUES,
                },
            ),
            Property(
                "vk: only the community's secret key and group verify",
                only_the_communitys_secret_and_group_verify,
                {
                    "secret": SECRET_VALUES,
                    "group": GROUP_VALUES,
                    "etype": st.sampled_from(["message_new", "confirmation"]),
                    "drop": st.booleans(),
                },
                examples=(
                    {"secret": SECRET, "group": GROUP, "etype": "message_new", "drop": True},
                    {"secret": None, "group": GROUP, "etype": "confirmation", "drop": False},
                    {"secret": None, "group": OTHER_GROUP, "etype": "confirmation", "drop": True},
                    {"secret": "\ud800", "group": GROUP, "etype": "message_new", "drop": False},
                ),
            ),
            Property(
                "vk: v from 5.103 is taken, older is a 400",
                versions_from_5_103_are_taken_older_ones_are_a_400,
                st.one_of(
                    st.tuples(GOOD_VERSION, st.just(True)),
                    st.tuples(OLD_VERSION, st.just(False)),
                    st.tuples(
                        st.one_of(
                            st.text(max_size=12).filter(lambda s: inbound.version(s) is None),
                            st.none(),
                            st.lists(st.integers(), max_size=2),
                        ),
                        st.just(False),
                    ),
                ),
            ),
            Property(
                "vk: the event_id is the journal key",
                the_event_id_is_the_journal_key,
                {
                    "event_id": st.one_of(EVENT_ID, JSON_VALUES, st.just("e" * 129)),
                    "etype": st.sampled_from(["message_new", "confirmation"]),
                },
            ),
            Property(
                "vk: a redelivered event_id is the same row",
                a_redelivered_event_is_the_same_row,
                {
                    "event_id": EVENT_ID,
                    "text": st.text(max_size=50),
                    "retry": st.integers(1, 10),
                    "other_text": st.text(max_size=50),
                },
            ),
            Property(
                "vk: the confirmation gets the community's string, the rest ok",
                the_answer_is_the_confirmation_string_or_ok,
                {
                    "etype": st.sampled_from(["confirmation", "message_new"]),
                    "event_id": st.one_of(st.none(), EVENT_ID),
                    "with_secret": st.booleans(),
                },
            ),
            Property(
                "vk: a body that is not an event is a 400",
                a_body_that_is_not_an_event_is_a_400,
                NOT_AN_EVENT,
            ),
            Property(
                "vk: an API version reads as its numbers",
                a_version_reads_as_its_numbers,
                {
                    "major": st.integers(0, 999),
                    "minor": st.integers(0, 9999),
                    "pad": st.sampled_from(["", " ", "\t"]),
                },
            ),
            Property(
                "vk: a community id reads from what admins paste",
                a_group_id_reads_from_what_admins_paste,
                {
                    "group": st.integers(1, 10**16),
                    "form": st.sampled_from(["{}", "-{}", "club{}", "public{}", " CLUB{} ", "0{}"]),
                },
            ),
            Property(
                "vk: any pasted community id is an id or a ConfigError",
                any_pasted_community_id_is_an_id_or_a_config_error,
                st.one_of(
                    st.text(max_size=25),
                    st.builds("club{}".format, st.text(alphabet="0123456789²³¹٣", max_size=6)),
                ),
                examples=("²", "club¹²³", "-٣", "public", "0", "9" * 19),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = (
            b'{"type":"message_new","group_id":' + str(GROUP).encode() + b',"event_id":"deep",'
            b'"v":"5.199","secret":"' + SECRET.encode() + b'","object":{"message":'
            b'{"from_id":1,"peer_id":1,"id":1,"date":1,"text":"x","extra":'
        )
        return [DeepJson("vk", head, b"}}}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "vk_callback",
                "VkAdapter.verify/edge/parse/answer (a Callback API event, secret in the body)",
                fuzz,
                seeds,
                json_tokens,
            )
        ]

    def text_helpers(self) -> TextHelpers:
        return TextHelpers(
            fuzz_text,
            (b"5.199", b" 5.103 ", b"club227000001", b"-227000001", b"public1"),
            frozenset({b"5.", b"club", b"public", b"-", b" "}),
        )

    # -- hostile input

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [VkTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return ACCOUNTS

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        """A community with a fresh token and secret key; its secret is
        remembered by its id (and, for the first, by ``idx``: the at-rest
        suite stores account ``idx`` under that id) for :meth:`addressed`."""
        group = 230_000_000 + idx * 1000 + n
        secret = f"VkIso{idx}x{n}{secrets.token_hex(12)}"
        _SECRETS[str(group)] = secret
        if n == 0:
            _SECRETS[str(idx)] = secret
        return AccountSpec(
            {"access_token": f"vk1.a.{secrets.token_urlsafe(48)}", "secret": secret},
            str(group),
            name=f"community {idx}/{n}",
        )

    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        """To the parsers' community: :meth:`addressed` moves it onto an
        account's (the body names the community and carries its secret key).
        A VK event names no sender (its ``from_id`` only) and has no shared
        contact: the phone is in the text, as a customer writes it."""
        user = abs(chat) or 1
        said = text if text is not None else "here is my phone number"
        if phone is not None:
            said = f"{said}: you can call me on {phone}"
        msg = message(
            user,
            said,
            message_id=delivery_id % 2**31 or 1,
            cmid=delivery_id % 100_000 + 1,
            date=int(T0.timestamp()) + delivery_id % 100_000,
        )
        return dumps(callback("message_new", message_new(msg), event_id=_event_id(delivery_id)))

    def addressed(self, body: bytes, external_id: str | None) -> bytes:
        """``body`` as the community ``external_id``'s Callback API server
        posts it: its ``group_id`` and its secret key."""
        secret = secret_of(str(external_id)) if external_id is not None else None
        if secret is None or not str(external_id).isdigit():
            return body
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        if not isinstance(doc, dict):
            return body
        return dumps(signed(doc, int(str(external_id)), secret))

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        return {}  # the secret key is in the body (addressed)

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        """The access token, the secret key and the confirmation string. The
        confirmation string is a setting, not a credential; so that the
        connect check finds every canary in the stored credentials, the
        secret key (letters and digits, up to 50) starts with it: a leak of
        the secret names both, a leak of the confirmation string alone names
        the confirmation string."""
        confirmation = f"CANARYconf{tag}"
        values = {
            "access token": f"vk1.a.CANARYtoken{tag}{secrets.token_urlsafe(32)}",
            "secret": f"{confirmation}S{secrets.token_hex(8)}",
            "confirmation": confirmation,
        }
        assert CONFIRMATION_RE.fullmatch(confirmation) and SECRET_RE.fullmatch(values["secret"])
        _CANARY.clear()
        _CANARY.update(values)
        _SECRETS[str(CANARY_GROUP)] = values["secret"]
        return values

    def canary_env(self, values: Mapping[str, str], sandbox_url: str) -> dict[str, str]:
        return {"VK_API_BASE": f"{sandbox_url}/vk"}

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {
            "vk": {
                "group_id": CANARY_GROUP,
                "name": "Canary Shop",
                "screen_name": "canary_shop",
                "access_token": values["access token"],
                "secret": values["secret"],
                "confirmation": values["confirmation"],
            }
        }

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        # the token and the secret key the documented way: in the environment,
        # not on the command line; the confirmation string read from VK
        # (groups.getCallbackConfirmationCode: the sandbox's token may)
        out = cli(
            "vk",
            "connect",
            "--tenant",
            slug,
            "--group-id",
            f"club{CANARY_GROUP}",
            "--name",
            "Canary community",
            VK_ACCESS_TOKEN=values["access token"],
            VK_SECRET=values["secret"],
        )
        # then the admin saves the account's URL as the community's Callback
        # API server: VK's confirmation handshake, then its events go there
        hook = _webhook_of(cli, slug)
        r = requests.post(f"{sandbox_url}/vk/_connect", json={"server_url": hook}, timeout=30)
        r.raise_for_status()
        assert r.json()["ok"], {k: v for k, v in r.json().items() if k != "expected"}
        return out

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        """A customer writes (their name, e-mail and phone in the text: a VK
        event carries only the sender's id, and VK has no shared contact),
        then edits the first message."""
        user = int(person["chat"])
        first, last = person["first name"], person["last name"]
        text, mail, phone = person["text"], person["e-mail"], person["phone"]
        now = int(time.time()) - 60
        run = secrets.token_hex(6)

        def new(n: int, said: str) -> dict[str, Any]:
            msg = message(user, said, message_id=n, cmid=n, date=now + n)
            return callback(
                "message_new", message_new(msg), event_id=_event_id(run, n), group=CANARY_GROUP
            )

        first_text = (
            f"{text}: I am {first} {last} (vk.com/{person['username']}), write to me at {mail}"
        )
        edited = {
            **message(user, f"{person['edited text']} {mail}", message_id=1, cmid=1, date=now + 1),
            "update_time": now + 30,
        }
        return [
            new(1, first_text),
            new(2, f"my phone is {phone}"),
            new(3, f"{text} call {phone} or {mail}"),
            callback("message_edit", edited, event_id=_event_id(run, 4), group=CANARY_GROUP),
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        # the event id as given: a redelivery is VK's retry of the same event
        r = requests.post(
            f"{sandbox_url}/vk/_deliver",
            json={"payload": delivery, "community": CANARY_GROUP, "event_id": "keep"},
            timeout=30,
        )
        r.raise_for_status()
        answer = r.json()
        assert (answer.get("status"), answer.get("body")) == (200, "ok"), answer

    def canary_sent(self, sandbox_url: str, user: str) -> list[str]:
        r = requests.get(
            f"{sandbox_url}/vk/_sent",
            params={"peer_id": user, "community": CANARY_GROUP},
            timeout=30,
        )
        r.raise_for_status()
        return [str(m.get("message") or "") for m in r.json()["sent"]]

    def refused_body(self, delivery: bytes, canary: str) -> bytes:
        """The canary community's own event (its ``group_id`` and secret key:
        proven), without its ``type`` and carrying ``canary``: a 400 that
        must repeat neither."""
        doc = json.loads(delivery)
        doc.pop("type", None)
        doc["object"]["message"]["text"] += f" {canary}"
        secret = _CANARY.get("secret")
        if secret is None:
            return _ascii(doc)
        return _ascii(signed(doc, CANARY_GROUP, secret))
