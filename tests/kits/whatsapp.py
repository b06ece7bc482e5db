# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""WhatsApp Cloud API's kit: one Meta app posts every connected phone
number's events to ``/webhooks/whatsapp/app``, signed with the App Secret
(``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``) after a
``hub.verify_token`` handshake; a POST is routed by each change's
``value.metadata.phone_number_id`` and split into one journal row per
message, status and other change (keyed by the wamid). Bodies are Meta's
envelope (``{"object": "whatsapp_business_account", "entry": [{"id": <WABA
id>, "changes": [{"field", "value"}]}]}``), shaped like the real payloads in
``tests/fixtures/corpora/whatsapp``.

The core serves an app-routed channel at an account's own URL too
(``/webhooks/whatsapp/<key>``): the app's signature proves the body there,
and the body must name the account (:meth:`WhatsAppKit.addressed` puts an
account's phone number id into a delivery the suites build)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
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

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    RawDelivery,
    WebhookRequest,
)
from channel_adapters.whatsapp import WhatsAppAdapter, inbound
from channel_adapters.whatsapp.settings import WhatsAppApp
from tests.kits.base import (
    MARK,
    AccountSpec,
    ChannelKit,
    DeepJson,
    FuzzTarget,
    HostileTarget,
    Property,
    Req,
)
from tests.kits.common import (
    JSON,
    JSON_VALUES,
    NAME,
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
CORPORA = ROOT / "tests" / "fixtures" / "corpora" / "whatsapp"
SIGNATURE = "X-Hub-Signature-256"
OBJECT = "whatsapp_business_account"
#: the journal's key column, a conversation's thread id column (bridge.tables)
MAX_KEY, MAX_THREAD = 255, 64
#: what WhatsApp says became of an outbound message (FACTS §2)
STATUSES = ("sent", "delivered", "read", "played", "failed")
#: and the failures the core acts on: 131047, sent outside the 24-hour window
FAILURES = ("failed", "window_closed")

# -- the deployment's Meta app and the parser's number --------------------------------------

APP = {"app_secret": "wa-app-secret-0123456789abcdef", "verify_token": "wa-verify-token-7f3a9c"}
#: the phone number the parsers' account is (the corpus' own ``phone_number_id``)
PN = "1122334455667"
#: another business's number in the same POST (never this account's)
OTHER_PN = "9988776655443"
WABA = "1234567890987654321"
TOKEN = "EAAG-fuzzing-access-token"


def sign(body: bytes, secret: str = APP["app_secret"]) -> str:
    return WhatsAppAdapter.signature(secret, body)


@cache
def app() -> WhatsAppApp:
    return WhatsAppApp(**APP)


@cache
def adapter() -> WhatsAppAdapter:
    """The parsers' number, never reaching the network (its hooks make no call)."""
    account = ChannelAccountInfo(
        id=1,
        kind="whatsapp",
        key="acct-key",
        credentials={"access_token": TOKEN},
        settings={"waba_id": WABA, "display_phone_number": "15550001111"},
        external_id=PN,
        app=dict(APP),
    )
    return WhatsAppAdapter(account)


def request(
    body: bytes, headers: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None
) -> WebhookRequest:
    """A POST at the app URL, signed with the app's secret unless ``headers`` say otherwise."""
    given = dict(headers) if headers is not None else {SIGNATURE: sign(body)}
    return WebhookRequest(
        method="POST" if query is None else "GET",
        url="https://bridge.example/webhooks/whatsapp/app",
        headers={"content-type": JSON, **{k.lower(): v for k, v in given.items()}},
        body=body,
        query=dict(query or {}),
        received_at=T0,
    )


# -- Meta's envelope -------------------------------------------------------------------------


def envelope(
    *values: Mapping[str, Any], waba: str = WABA, field: str = "messages"
) -> dict[str, Any]:
    """One entry with a change of ``field`` per value."""
    changes = [{"value": dict(v), "field": field} for v in values]
    return {"object": OBJECT, "entry": [{"id": waba, "changes": changes}]}


def value_of(
    phone_number_id: str,
    *,
    messages: Sequence[Mapping[str, Any]] = (),
    contacts: Sequence[Mapping[str, Any]] = (),
    statuses: Sequence[Mapping[str, Any]] = (),
    display: str = "15550001111",
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display, "phone_number_id": phone_number_id},
    }
    if contacts:
        value["contacts"] = [dict(c) for c in contacts]
    if messages:
        value["messages"] = [dict(m) for m in messages]
    if statuses:
        value["statuses"] = [dict(s) for s in statuses]
    return value


def contact(wa_id: str, name: str, username: str | None = None) -> dict[str, Any]:
    profile: dict[str, Any] = {"name": name}
    if username is not None:
        profile["username"] = username
    return {"profile": profile, "wa_id": wa_id}


def text_message(
    wamid: str, wa_id: str, text: str, timestamp: int, reply_to: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from": wa_id,
        "id": wamid,
        "timestamp": str(timestamp),
        "text": {"body": text},
        "type": "text",
    }
    if reply_to is not None:
        message["context"] = {"from": "15550001111", "id": reply_to}
    return message


def moved(doc: Any, phone_number_id: str, waba: str | None = None) -> Any:
    """``doc`` (an envelope) moved onto a phone number: every change's
    ``metadata.phone_number_id`` rewritten, and each ``entry.id`` to the
    business account ``waba`` when given (as the sandbox's ``/_deliver`` does)."""
    doc = copy.deepcopy(doc)
    entries = doc.get("entry") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if waba is not None and isinstance(entry, dict):
            entry["id"] = waba
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            metadata = value.get("metadata") if isinstance(value, dict) else None
            if isinstance(metadata, dict):
                metadata["phone_number_id"] = phone_number_id
    return doc


def _wamid(n: int | str, salt: str = "") -> str:
    """A wamid as Meta writes them (base64 of the chat and a message id)."""
    return f"wamid.HBgL{salt}{n}FQIAEhgUM0E{n}A=="


# -- the corpus --------------------------------------------------------------------------------


@cache
def corpus_bodies() -> tuple[tuple[str, str], ...]:
    """Every variant of every corpus file, ``(name, body)`` (``file:variant``)."""
    out: list[tuple[str, str]] = []
    for path in sorted(CORPORA.rglob("*.json")):
        if path.name == "MANIFEST.json":
            continue
        variants = json.loads(path.read_text(encoding="utf-8"))
        for name, body in variants.items():
            out.append((f"{path.name}:{name}", json.dumps(body, ensure_ascii=False)))
    return tuple(out)


@cache
def _seed_docs() -> list[Any]:
    """The corpus on the parsers' number, and envelopes built here."""
    docs = [moved(json.loads(body), PN, WABA) for _, body in corpus_bodies()]
    batch = [text_message(_wamid(i), "79990001234", f"batch {i}", 1740820600) for i in range(3)]
    docs += [
        envelope(
            value_of(PN, contacts=[contact("79990001234", "Ann")], messages=batch),
            value_of(OTHER_PN, messages=[text_message("wamid.other", "1", "x", 1740820600)]),
        ),
        envelope(
            value_of(
                PN,
                statuses=[
                    {
                        "id": "wamid.out1",
                        "status": "failed",
                        "timestamp": "1740820601",
                        "recipient_id": "79990001234",
                        "biz_opaque_callback_data": str(uuid.UUID(int=7)),
                        "errors": [{"code": 131047, "title": "Re-engagement message"}],
                    }
                ],
            )
        ),
    ]
    return docs


def seeds() -> list[bytes]:
    return [dumps(doc) for doc in _seed_docs()]


# -- driving the hooks as the web layer and the journal do -------------------------------------


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


def check_events(events: Any, key: str) -> None:
    """A delivery parses to exactly one event keyed by the delivery's key
    (the journal's dedupe key): a message within the columns it is stored
    in, a status of ours found by our id or its wamid; every string in it
    storable (UTF-8: no lone surrogate)."""
    if not isinstance(events, list) or len(events) != 1:
        raise BrokenInvariant(f"a delivery must give exactly one event: {events!r}")
    (event,) = events
    if isinstance(event, OutboundStatus):
        ident(event.external_id, "external_id")
        if event.status not in (*STATUSES, *FAILURES):
            raise BrokenInvariant(f"an outbound status WhatsApp has not: {event.status!r}")
        if not isinstance(event.bridge_id, str):
            raise BrokenInvariant(f"bridge_id is not a string: {event.bridge_id!r}")
        if not (event.bridge_id or event.channel_message_id):
            raise BrokenInvariant("a status that names no message")
        if (event.status in FAILURES) != (event.error is not None):
            raise BrokenInvariant(f"a failure without its reason (or the other way): {event!r}")
    else:
        check_channel_events(events, exactly=1)
    if event.external_id != key:
        raise BrokenInvariant(
            f"the event's key {event.external_id!r} is not the delivery's {key!r}"
        )
    if isinstance(event, InboundMessage):
        if event.external_user_id != event.external_thread_id:
            raise BrokenInvariant("a WhatsApp chat is the customer's own")
        if len(event.external_thread_id) > MAX_THREAD:
            raise BrokenInvariant(f"thread id over {MAX_THREAD}: {event.external_thread_id!r}")
        if event.provider_message_id is not None and len(event.provider_message_id) > MAX_KEY:
            raise BrokenInvariant("a message id longer than its column")
    for where, text in _strings(event, "event"):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BrokenInvariant(f"{where} cannot be stored (a lone surrogate)") from None


def deliver(body: bytes) -> list[RawDelivery] | None:
    """The app URL's path: ``verify_app`` (signed: it must pass), ``route``
    and this number's ``edge`` — the deliveries the journal stores; None for
    the documented 4xx. An account's edge (its own URL calls it for any
    signed body) takes its number's items and its business account's
    notices, never another number's; each delivery is a minimal envelope
    that splits to itself again (a redelivery of it is the same row)."""
    req = request(body)
    WhatsAppAdapter.verify_app(app(), req)
    try:
        numbers = WhatsAppAdapter.route(app(), req)
    except PayloadError as exc:
        assert 400 <= exc.status_code < 500
        return None
    if not isinstance(numbers, tuple) or len(set(numbers)) != len(numbers):
        raise BrokenInvariant(f"route must name distinct numbers: {numbers!r}")
    for number in numbers:
        ident(number, "phone_number_id")
    deliveries = adapter().edge(req)  # a body route took is the envelope: no 4xx here
    keys = [d.key for d in deliveries]
    if len(set(keys)) != len(keys):
        raise BrokenInvariant(f"two journal rows with one key: {keys!r}")
    for delivery in deliveries:
        ident(delivery.key, "delivery key")
        if len(delivery.key) > MAX_KEY:
            raise BrokenInvariant(f"a key over {MAX_KEY} characters: {delivery.key!r}")
        named = {
            number
            for _, change in _changes_of(json.loads(delivery.body))
            if (number := _number_of(change)) is not None
        }
        if named - {PN}:
            raise BrokenInvariant(f"another number's item in this account's row: {named!r}")
        if adapter().edge(request(delivery.body)) != [delivery]:
            raise BrokenInvariant(f"a delivery does not split to itself: {delivery.key!r}")
    return deliveries


def _changes_of(doc: Any) -> Iterator[tuple[Any, Any]]:
    for entry in doc.get("entry") or []:
        for change in entry.get("changes") or []:
            yield entry, change


def _number_of(change: Any) -> str | None:
    """The phone number a change names, read as the adapter reads it."""
    return inbound._phone_number_id(change) if isinstance(change, dict) else None


def parse_delivery(delivery: RawDelivery) -> list[Any]:
    """``parse`` as the journal's normaliser calls it; a PayloadError (the
    row rejected) only for JSON the worker's stack cannot nest as deep as
    the web's could."""
    req = delivery.request(T0)
    try:
        events = adapter().parse(req)
    except PayloadError:
        if delivery.body.count(b"[") + delivery.body.count(b"{") < 500:
            raise
        return []
    check_events(events, delivery.key)
    assert adapter().parse(req) == events  # deterministic
    return events


def parse(body: bytes) -> list[Any] | None:
    """The webhook's path then the worker's: every delivery's one event, in
    order; None for the edge's documented 4xx."""
    deliveries = deliver(body)
    if deliveries is None:
        return None
    return [event for delivery in deliveries for event in parse_delivery(delivery)]


def fuzz(data: bytes) -> None:
    """Every hook on any bytes, signed and not, each allowed only its
    documented WebhookError: the app's signature and handshake, route,
    edge (the app URL's and an account URL's), parse of the POST and of
    each delivery."""
    for req in (
        request(data, {}),
        request(data, {SIGNATURE: data[:80].decode("latin-1")}),
        request(data),
    ):
        try:
            WhatsAppAdapter.verify_app(app(), req)
        except WebhookError:
            pass
    text = data.decode("utf-8", "replace")
    for query in (
        {"hub.mode": "subscribe", "hub.verify_token": text, "hub.challenge": "1"},
        {"hub.mode": text, "hub.verify_token": APP["verify_token"], "hub.challenge": text},
    ):
        try:
            WhatsAppAdapter.app_handshake(app(), request(b"", {}, query))
        except WebhookError:
            continue
        if query["hub.verify_token"] != APP["verify_token"]:
            raise BrokenInvariant("a handshake with another token was answered")
    req = request(data)
    try:
        WhatsAppAdapter.route(app(), req)
    except WebhookError:
        pass
    try:
        deliveries = adapter().edge(req)
    except WebhookError:
        deliveries = []
    try:
        adapter().parse(req)
    except WebhookError:
        pass
    for delivery in deliveries:
        parse_delivery(delivery)


# -- properties ------------------------------------------------------------------------------

DEEP = b"[" * 600 + b"]" * 600
WA_ID = st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True)
TIMESTAMP = st.integers(1, 2**33)
WAMID = st.from_regex(r"wamid\.[A-Za-z0-9+/=_-]{1,80}", fullmatch=True)


def the_corpus_is_there() -> None:
    assert len(corpus_bodies()) >= 70  # the real payloads the mutations start from


def any_body_is_deliveries_or_a_payload_error(body: bytes) -> None:
    parse(body)


def every_corpus_variant_is_delivered_and_parses() -> None:
    for name, body in corpus_bodies():
        events = parse(dumps(moved(json.loads(body), PN, WABA)))
        assert events, name  # a number's items, or its business account's notices


def text_message_round_trips(
    wamid: str,
    wa_id: str,
    name: str | None,
    text: str,
    timestamp: int,
    reply_to: str | None,
) -> None:
    contacts = [contact(wa_id, name)] if name is not None else []
    message = text_message(wamid, wa_id, text, timestamp, reply_to)
    body = dumps(envelope(value_of(PN, contacts=contacts, messages=[message])))
    events = parse(body)
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage)
    assert event.kind is MessageKind.TEXT and event.text == text
    assert event.external_id == wamid and event.provider_message_id == wamid
    assert event.external_user_id == wa_id == event.external_thread_id
    assert event.sent_at == dt.datetime.fromtimestamp(timestamp, UTC)
    assert event.reply_to == reply_to
    assert event.profile.phone == "+" + wa_id
    assert event.profile.display_name == (name or None)
    assert not event.is_edit and not event.echo


def status_round_trips(wamid: str, status: str, bridge_id: str | None, code: int) -> None:
    node: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": "1740820601",
        "recipient_id": "79990001234",
    }
    if bridge_id is not None:
        node["biz_opaque_callback_data"] = bridge_id
    if status == "failed":
        node["errors"] = [{"code": code, "title": "Message failed to send"}]
    events = parse(dumps(envelope(value_of(PN, statuses=[node]))))
    assert events is not None
    (event,) = events
    assert isinstance(event, OutboundStatus)
    assert event.external_id == f"{wamid}:{status}"
    closed = status == "failed" and code == 131047  # sent outside the 24-hour window
    assert event.status == ("window_closed" if closed else status)
    assert event.channel_message_id == wamid
    assert event.bridge_id == (bridge_id or "")
    assert (event.error is not None and str(code) in event.error) is (status == "failed")


def many_messages_in_one_post_are_one_row_each(n: int, changes: int, repeats: list[int]) -> None:
    """Up to 100 messages in one POST (spread over changes and entries, some
    sent twice by Meta's retries within it): one delivery per wamid, each
    parsing to its own message."""
    messages = [
        text_message(_wamid(i, "B"), f"7999{i:07d}", f"{MARK} {i}", 1740820600 + i)
        for i in range(n)
    ]
    messages += [messages[i % n] for i in repeats]
    chunks = [messages[i::changes] for i in range(changes)]
    values = [value_of(PN, messages=chunk) for chunk in chunks if chunk]
    doc = envelope(*values)
    doc["entry"].append({"id": WABA, "changes": []})  # an empty entry changes nothing
    deliveries = deliver(dumps(doc))
    assert deliveries is not None
    wamids = {_wamid(i, "B"): i for i in range(n)}
    assert sorted(d.key for d in deliveries) == sorted(wamids)
    for delivery in deliveries:
        (event,) = parse_delivery(delivery)
        assert isinstance(event, InboundMessage) and event.external_id == delivery.key
        assert event.text == f"{MARK} {wamids[delivery.key]}"


def a_post_is_split_by_phone_number(mine: int, theirs: int, first: bool) -> None:
    """A POST for two numbers: each account stores its own items only; the
    other number's never reach it (nor do its ids appear in a delivery)."""
    ours = [text_message(_wamid(i, "M"), "79990001234", f"ours {i}", 1) for i in range(mine)]
    other = [text_message(_wamid(i, "T"), "79990001234", f"theirs {i}", 1) for i in range(theirs)]
    values = [value_of(PN, messages=ours), value_of(OTHER_PN, messages=other)]
    body = dumps(envelope(*(values if first else values[::-1])))
    numbers = WhatsAppAdapter.route(app(), request(body))
    assert set(numbers) == {PN, OTHER_PN}
    deliveries = deliver(body)
    assert deliveries is not None
    assert [d.key for d in deliveries] == [_wamid(i, "M") for i in range(mine)]
    assert all(OTHER_PN.encode() not in d.body and b"theirs" not in d.body for d in deliveries)


def a_redelivered_wamid_is_the_same_row(
    wamid: str, others: int, time_of_entry: int | None, status_too: bool
) -> None:
    """Meta redelivers a message alone or inside another batch: the same
    journal key (the wamid), so one message; its status is a row of its own."""
    message = text_message(wamid, "79990001234", "hello", 1740820600)
    alone = deliver(dumps(envelope(value_of(PN, messages=[message]))))
    batch = [text_message(_wamid(i, "R"), "79990001234", "x", 1) for i in range(others)]
    doc = envelope(value_of(PN, messages=[*batch, message, message]))
    if time_of_entry is not None:
        doc["entry"][0]["time"] = time_of_entry
    if status_too:
        status = {"id": wamid, "status": "read", "timestamp": "1740820700", "recipient_id": "1"}
        change = {"value": value_of(PN, statuses=[status]), "field": "messages"}
        doc["entry"][0]["changes"].append(change)
    again = deliver(dumps(doc))
    assert alone is not None and again is not None
    assert [d.key for d in alone] == [wamid]
    keys = [d.key for d in again]
    assert keys.count(wamid) == 1
    assert (f"{wamid}:read" in keys) is status_too


def only_the_app_secrets_signature_of_the_exact_body_verifies(
    body: bytes, secret: str, flip: int
) -> None:
    WhatsAppAdapter.verify_app(app(), request(body))
    tampered = bytearray(body or b"{}")
    tampered[flip % len(tampered)] ^= 0x01
    attempts: list[tuple[bytes, dict[str, str]]] = [
        (body, {SIGNATURE: sign(body).upper()}),
        (body, {SIGNATURE: sign(body).removeprefix("sha256=")}),
        (body, {SIGNATURE: sign(body)[: 7 + flip % 64]}),
        (body, {"X-Hub-Signature": "sha1=" + sign(body)[7:47]}),
        (body, {}),
        (bytes(tampered), {SIGNATURE: sign(body)}),
    ]
    if secret != APP["app_secret"]:
        attempts.append((body, {SIGNATURE: sign(body, secret)}))
    for raw, headers in attempts:
        try:
            WhatsAppAdapter.verify_app(app(), request(raw, headers))
        except SignatureError:
            continue
        raise BrokenInvariant(f"a wrong signature verified: {headers!r}")
    unset = WhatsAppApp(app_secret="", verify_token=APP["verify_token"])
    try:  # no App Secret configured: nothing verifies, not even an unkeyed HMAC
        WhatsAppAdapter.verify_app(unset, request(body, {SIGNATURE: sign(body, "")}))
    except SignatureError:
        return
    raise BrokenInvariant("a deployment without an App Secret accepted a delivery")


def the_handshake_echoes_the_challenge_for_the_verify_token_only(
    token: str, mode: str, challenge: str
) -> None:
    query = {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": challenge}
    genuine = token == APP["verify_token"] and mode == "subscribe"
    try:
        answer = WhatsAppAdapter.app_handshake(app(), request(b"", {}, query))
    except SignatureError:
        assert not genuine, query
        return
    assert genuine, query
    assert answer.status == 200 and answer.body == challenge


def a_body_that_is_not_metas_envelope_is_a_payload_error(doc: Any) -> None:
    for body in (dumps(doc), dumps(doc)[:-1]):
        req = request(body)
        hooks: tuple[Callable[[WebhookRequest], Any], ...] = (
            lambda r: WhatsAppAdapter.route(app(), r),
            adapter().edge,
            adapter().parse,
        )
        for hook in hooks:
            try:
                hook(req)
            except PayloadError as exc:
                assert exc.status_code == 400
                continue
            raise BrokenInvariant(f"not Meta's envelope, yet taken: {body[:200]!r}")


NOT_AN_ENVELOPE = st.one_of(
    JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
    st.builds(
        lambda obj, entry: {"object": obj, "entry": entry},
        st.one_of(st.none(), st.text(max_size=30).filter(lambda s: s != OBJECT), st.integers()),
        JSON_VALUES,
    ),
    st.builds(
        lambda entry: {"object": OBJECT, "entry": entry},
        st.one_of(
            st.just([]), st.none(), st.text(max_size=5), st.dictionaries(st.text(), JSON_VALUES)
        ),
    ),
)


def _ascii(doc: Any) -> bytes:
    """JSON as Meta writes it (non-ASCII escaped: a lone surrogate too)."""
    return json.dumps(doc, ensure_ascii=True).encode()


def _any_value(value: Any) -> dict[str, Any]:
    """An envelope of this number around any value (or any messages)."""
    inner = value if isinstance(value, dict) else {"messages": value}
    return envelope({"metadata": {"phone_number_id": PN}, **inner})


def _one(**message: Any) -> bytes:
    return _ascii(envelope(value_of(PN, messages=[message])))


#: bodies that once broke a parser, or might: tried first
HOSTILE_EXAMPLES = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":'
    b'"messages","value":{"metadata":{"phone_number_id":"' + PN.encode() + b'"},'
    b'"messages":[{"from":"1","id":"w","type":"text","text":{"body":' + DEEP + b"}}]}}]}]}",
    b"\xff\xfe",
    _one(id="w", type="text", text={"body": "\ud800 a lone surrogate"}, **{"from": "1"}),
    _one(id="w", type="text", text={"body": "a long sender"}, **{"from": "x" * 200}),
    _one(id="w" * 300, type="text", text={"body": "a long id"}, **{"from": "1"}),
    _one(id="w", timestamp=1e999, type="text", text={"body": "huge"}, **{"from": 10**400}),
    _ascii(envelope(value_of(PN, statuses=[{"id": "w", "status": "failed", "errors": [{}]}]))),
    _ascii(
        envelope(
            value_of(
                PN,
                messages=[{"id": "w:read", "from": "1", "type": "text", "text": {"body": "x"}}],
                statuses=[{"id": "w", "status": "read"}],
            )
        )
    ),
)


# -- hostile input ------------------------------------------------------------------------------

ACCOUNTS = {
    "A": AccountSpec(
        {"access_token": "EAAG-hostile-token-A-0123456789"},
        "100200300400501",
        {"waba_id": "200300400500601", "display_phone_number": "15550001001"},
        name="number A",
    ),
    "B": AccountSpec(
        {"access_token": "EAAG-hostile-token-B-9876543210"},
        "100200300400502",
        {"waba_id": "200300400500602", "display_phone_number": "15550001002"},
        name="number B",
    ),
}


def hostile_delivery(uid: str, tenant: str = "A") -> bytes:
    """One customer text to ``tenant``'s number, new by its wamid."""
    number = str(ACCOUNTS[tenant].external_id)
    message = text_message(f"wamid.{uid}", "79990001234", f"{MARK} hello", 1740820600)
    value = value_of(number, contacts=[contact("79990001234", "Ann")], messages=[message])
    return dumps(envelope(value, waba=str(ACCOUNTS[tenant].settings["waba_id"])))


def signature_attacks(other: Callable[[], bytes]) -> dict[str, Callable[[bytes], dict[str, str]]]:
    """Attacks on ``X-Hub-Signature-256`` for a body (``other()``: another body)."""
    return {
        "forged": lambda raw: {SIGNATURE: sign(raw, "not-the-app-secret")},
        "signed-with-the-verify-token": lambda raw: {SIGNATURE: sign(raw, APP["verify_token"])},
        "signed-with-an-access-token": lambda raw: {
            SIGNATURE: sign(raw, str(ACCOUNTS["A"].credentials["access_token"]))
        },
        "missing": lambda raw: {},
        "empty": lambda raw: {SIGNATURE: ""},
        "malformed-no-prefix": lambda raw: {SIGNATURE: sign(raw).removeprefix("sha256=")},
        "malformed-uppercase": lambda raw: {SIGNATURE: sign(raw).upper()},
        "malformed-short": lambda raw: {SIGNATURE: sign(raw)[:20]},
        "malformed-longer": lambda raw: {SIGNATURE: sign(raw) + "0"},
        "malformed-huge": lambda raw: {SIGNATURE: "a" * 10_240},
        "malformed-non-ascii": lambda raw: {SIGNATURE: "подпись".encode().decode("latin-1")},
        "legacy-sha1-only": lambda raw: {"X-Hub-Signature": "sha1=" + "0" * 40},
        "body-swapped": lambda raw: {SIGNATURE: sign(other())},
    }


#: signed for real, yet not a delivery: refused by the parser (or the size cap)
SIGNED_REFUSALS: dict[str, tuple[int, Callable[[], bytes]]] = {
    "signed-not-json": (400, lambda: f"{MARK} not json".encode()),
    "signed-wrong-object": (
        400,
        lambda: dumps({"object": "page", "entry": [{"id": "1", "messaging": [{"text": MARK}]}]}),
    ),
    "signed-no-entry": (400, lambda: dumps({"object": OBJECT, "entry": [], "text": MARK})),
    "signed-no-phone-number": (
        400,
        lambda: dumps(
            {
                "object": OBJECT,
                "entry": [
                    {
                        "id": "1",
                        "changes": [{"field": "messages", "value": {"messages": [{"text": MARK}]}}],
                    }
                ],
            }
        ),
    ),
    # Meta's own cap is 3 MB (the adapter's max_body): over it, never read
    "signed-over-3-mb": (
        413,
        lambda: dumps(
            {"object": OBJECT, "entry": [], "padding": MARK * (3_000_001 // len(MARK) + 1)}
        ),
    ),
}


class _Signed(HostileTarget):
    kind = "whatsapp"
    content_type = JSON
    content_types = (JSON,)

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return hostile_delivery(uid, tenant)

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return {SIGNATURE: sign(body)}  # the app's secret: the same for every number

    def auth_attack(self, case: str) -> Req:
        if case in SIGNED_REFUSALS:
            raw = SIGNED_REFUSALS[case][1]()
            return Req(self.path(), raw, JSON, {SIGNATURE: sign(raw)})
        raw = self.delivery(uuid.uuid4().hex)
        headers = signature_attacks(lambda: self.delivery(uuid.uuid4().hex))[case](raw)
        return Req(self.path(), raw, JSON, headers)


SIGNED_CASES = {case: status for case, (status, _) in SIGNED_REFUSALS.items()}


class WhatsAppAccountTarget(_Signed):
    """An account's own URL (the core serves it for app-routed channels
    too): the app's signature, and the body must name this account's number."""

    name = "whatsapp"
    endpoint = "channel"
    auth_cases = {
        **{case: 403 for case in signature_attacks(bytes)},
        **SIGNED_CASES,
        # B's delivery, validly signed with the app-wide secret, at A's URL
        "another-accounts-delivery": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/whatsapp/{self.world.account_keys['whatsapp'][tenant]}"

    def auth_attack(self, case: str) -> Req:
        if case == "another-accounts-delivery":
            raw = self.delivery(uuid.uuid4().hex, "B")
            return Req(self.path(), raw, JSON, {SIGNATURE: sign(raw)})
        return super().auth_attack(case)


class WhatsAppAppTarget(_Signed):
    """``/webhooks/whatsapp/app``: the app's signature; the body names the numbers."""

    name = "whatsapp-app"
    endpoint = "app"
    auth_cases = {**{case: 403 for case in signature_attacks(bytes)}, **SIGNED_CASES}

    def path(self, tenant: str = "A") -> str:
        return "/webhooks/whatsapp/app"

    def unknown_path(self) -> str:  # one URL for every number: no key to get wrong
        raise NotImplementedError


def handshake_query(token: str, challenge: str, mode: str = "subscribe") -> dict[str, str]:
    return {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": challenge}


TOKEN_ATTACKS: dict[str, Callable[[str], dict[str, str]]] = {
    "forged-token": lambda challenge: handshake_query("not-the-verify-token", challenge),
    "missing-token": lambda challenge: {"hub.mode": "subscribe", "hub.challenge": challenge},
    "empty-token": lambda challenge: handshake_query("", challenge),
    "token-prefix": lambda challenge: handshake_query(APP["verify_token"][:-1], challenge),
    "token-longer": lambda challenge: handshake_query(APP["verify_token"] + "x", challenge),
    "token-other-case": lambda challenge: handshake_query(APP["verify_token"].upper(), challenge),
    "app-secret-as-token": lambda challenge: handshake_query(APP["app_secret"], challenge),
    "access-token-as-token": lambda challenge: handshake_query(
        str(ACCOUNTS["A"].credentials["access_token"]), challenge
    ),
    "wrong-mode": lambda challenge: handshake_query(
        APP["verify_token"], challenge, mode="unsubscribe"
    ),
    "missing-mode": lambda challenge: {
        "hub.verify_token": APP["verify_token"],
        "hub.challenge": challenge,
    },
    "malformed-huge": lambda challenge: handshake_query("A" * 8_000, challenge),
    "malformed-non-ascii": lambda challenge: handshake_query("токен\x00" + MARK, challenge),
}


class WhatsAppAppHandshakeTarget(HostileTarget):
    """The app URL's ``GET``: echo ``hub.challenge`` for the app's verify token only."""

    name = "whatsapp-app-handshake"
    kind = "whatsapp"
    endpoint = "app-handshake"
    auth_cases = {case: 403 for case in TOKEN_ATTACKS}

    def path(self, tenant: str = "A") -> str:
        return "/webhooks/whatsapp/app"

    def unknown_path(self) -> str:
        raise NotImplementedError

    def genuine(self, uid: str, tenant: str = "A", path_of: str | None = None) -> Req:
        query = handshake_query(APP["verify_token"], f"{MARK}-{uid[:8]}")
        return Req(self.path(), method="GET", query=query)

    def answer(self, req: Req) -> bytes:
        return req.query["hub.challenge"].encode()

    def auth_attack(self, case: str) -> Req:
        return Req(self.path(), method="GET", query=TOKEN_ATTACKS[case](f"{MARK}-challenge"))


# -- canaries -----------------------------------------------------------------------------------

CANARY_NUMBER = "109990000000001"
CANARY_WABA = "209990000000001"
CANARY_DISPLAY = "15550100999"
#: the canary run's Meta app (App Secret, verify token), by the run's access
#: token: canary_values makes them, the sandbox, the bridge's environment
#: and the signatures of requests sent straight to the bridge read them
_CANARY_APPS: dict[str, dict[str, str]] = {}


def app_secret_of(credentials: Mapping[str, Any]) -> str:
    """The App Secret the deployment of an account's number signs with."""
    token = credentials.get("access_token")
    found = _CANARY_APPS.get(token) if isinstance(token, str) else None
    return found["app_secret"] if found else APP["app_secret"]


def _canary_app(values: Mapping[str, str]) -> dict[str, str]:
    return _CANARY_APPS[values["access token"]]


def _sent_text(body: Mapping[str, Any]) -> str:
    """What a send said: a text's body, else the whole request (a template, media)."""
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("body"), str):
        return str(text["body"])
    return json.dumps(body, ensure_ascii=False)


# -- the kit ------------------------------------------------------------------------------------


class WhatsAppKit(ChannelKit):
    kind = "whatsapp"
    content_type = JSON

    # -- parsers

    def properties(self) -> Sequence[Property]:
        return [
            Property("whatsapp: the corpus is there", the_corpus_is_there),
            Property(
                "whatsapp: any body is deliveries of one event each or a PayloadError",
                any_body_is_deliveries_or_a_payload_error,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    st.builds(lambda entry: {"object": OBJECT, "entry": entry}, JSON_VALUES).map(
                        dumps
                    ),
                    st.builds(_any_value, JSON_VALUES).map(_ascii),
                    mutated(_seed_docs(), keys_of(_seed_docs())).map(_ascii),
                ),
                examples=HOSTILE_EXAMPLES,
                hostile=True,
            ),
            Property(
                "whatsapp: every corpus variant is delivered and parses",
                every_corpus_variant_is_delivered_and_parses,
            ),
            Property(
                "whatsapp: a text message round-trips",
                text_message_round_trips,
                {
                    "wamid": WAMID,
                    "wa_id": WA_ID,
                    "name": st.one_of(st.none(), NAME),
                    "text": st.text(max_size=300),
                    "timestamp": TIMESTAMP,
                    "reply_to": st.one_of(st.none(), WAMID),
                },
            ),
            Property(
                "whatsapp: a status round-trips",
                status_round_trips,
                {
                    "wamid": WAMID,
                    "status": st.sampled_from(STATUSES),
                    "bridge_id": st.one_of(st.none(), st.uuids().map(str)),
                    "code": st.one_of(st.just(131047), st.integers(1, 999_999)),
                },
            ),
            Property(
                "whatsapp: up to 100 messages in one POST are one row each",
                many_messages_in_one_post_are_one_row_each,
                {
                    "n": st.integers(1, 100),
                    "changes": st.integers(1, 5),
                    "repeats": st.lists(st.integers(0, 99), max_size=5),
                },
                examples=({"n": 100, "changes": 1, "repeats": [0, 99]},),
            ),
            Property(
                "whatsapp: a POST is split by phone number",
                a_post_is_split_by_phone_number,
                {
                    "mine": st.integers(1, 5),
                    "theirs": st.integers(1, 5),
                    "first": st.booleans(),
                },
            ),
            Property(
                "whatsapp: a redelivered wamid is the same row",
                a_redelivered_wamid_is_the_same_row,
                {
                    "wamid": WAMID,
                    "others": st.integers(0, 4),
                    "time_of_entry": st.one_of(st.none(), st.integers(1, 2**31)),
                    "status_too": st.booleans(),
                },
            ),
            Property(
                "whatsapp: only the app secret's signature of the exact body verifies",
                only_the_app_secrets_signature_of_the_exact_body_verifies,
                {
                    "body": st.binary(max_size=300),
                    "secret": st.text(min_size=1, max_size=40),
                    "flip": st.integers(0, 10_000),
                },
            ),
            Property(
                "whatsapp: the handshake echoes the challenge for the verify token only",
                the_handshake_echoes_the_challenge_for_the_verify_token_only,
                {
                    "token": st.one_of(
                        st.just(APP["verify_token"]),
                        st.text(max_size=40),
                        st.just(APP["verify_token"]).map(lambda t: t[:-1]),
                    ),
                    "mode": st.one_of(st.just("subscribe"), st.text(max_size=12)),
                    "challenge": st.text(max_size=40),
                },
            ),
            Property(
                "whatsapp: a body that is not Meta's envelope is a PayloadError",
                a_body_that_is_not_metas_envelope_is_a_payload_error,
                NOT_AN_ENVELOPE,
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = (
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":'
            b'"messages","value":{"metadata":{"phone_number_id":"' + PN.encode() + b'"},'
            b'"messages":[{"from":"1","id":"w","type":"text","text":{"body":"x"},"extra":'
        )
        return [DeepJson("whatsapp", head, b"}]}}]}]}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "whatsapp_webhook",
                "WhatsAppAdapter.verify_app/app_handshake/route/edge/parse (a Meta envelope)",
                fuzz,
                seeds,
                json_tokens,
            )
        ]

    # -- hostile input

    def hostile_app(self) -> Mapping[str, str]:
        return dict(APP)

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [WhatsAppAccountTarget, WhatsAppAppTarget, WhatsAppAppHandshakeTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return ACCOUNTS

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        number = str(101_000_000_000_000 + idx * 100 + n)
        token = f"EAAG{idx}x{n}{secrets.token_urlsafe(30)}"
        return AccountSpec(
            {"access_token": token},
            number,
            {
                "waba_id": str(201_000_000_000_000 + idx),
                "display_phone_number": f"1555{idx:04d}{n:03d}",
            },
            name=f"number {idx}/{n}",
        )

    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        """Addressed to the parsers' number: :meth:`addressed` moves it onto
        an account's (Meta names the number in every change)."""
        wa_id = str(abs(chat))
        stamp = int(T0.timestamp()) + delivery_id % 100_000
        if phone is None:
            message = text_message(_wamid(delivery_id, wa_id), wa_id, text or "hello", stamp)
        else:
            card = {
                "name": {"formatted_name": name, "first_name": name},
                "phones": [{"phone": phone, "wa_id": phone.lstrip("+"), "type": "CELL"}],
            }
            message = {
                "from": wa_id,
                "id": _wamid(delivery_id, wa_id),
                "timestamp": str(stamp),
                "type": "contacts",
                "contacts": [card],
            }
        return dumps(envelope(value_of(PN, contacts=[contact(wa_id, name)], messages=[message])))

    def addressed(self, body: bytes, external_id: str | None) -> bytes:
        """``body`` as Meta posts it for the account whose phone number id is
        ``external_id`` (every change names the number it is for)."""
        if external_id is None:
            return body
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        return dumps(moved(doc, external_id))

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        return {SIGNATURE: sign(body, app_secret_of(credentials))}

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        token = f"EAACANARY{tag}{secrets.token_hex(16)}"
        _CANARY_APPS[token] = {
            "app_secret": f"CANARYappsecret{tag}{secrets.token_hex(8)}",
            "verify_token": f"CANARY-verify-{tag}-{secrets.token_hex(6)}",
        }
        return {"access token": token}

    def canary_env(self, values: Mapping[str, str], sandbox_url: str) -> dict[str, str]:
        """The deployment's Meta app (secrets in the environment, as the
        docs say) and the Graph API at the sandbox."""
        app_values = _canary_app(values)
        return {
            "WHATSAPP_APP_SECRET": app_values["app_secret"],
            "WHATSAPP_VERIFY_TOKEN": app_values["verify_token"],
            "WHATSAPP_API_BASE": f"{sandbox_url}/whatsapp",
        }

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        app_values = _canary_app(values)
        account = {
            "phone_number_id": CANARY_NUMBER,
            "display_phone_number": CANARY_DISPLAY,
            "waba_id": CANARY_WABA,
            "access_token": values["access token"],
            "verified_name": "Canary Shop",
        }
        return {
            "whatsapp": {
                "accounts": [account],
                "app_secret": app_values["app_secret"],
                "verify_token": app_values["verify_token"],
                "status_webhooks": "in_order",
            }
        }

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        # the token the documented way: in the environment, not on the command line
        out = cli(
            "whatsapp",
            "connect",
            "--tenant",
            slug,
            "--phone-number-id",
            CANARY_NUMBER,
            "--waba-id",
            CANARY_WABA,
            "--display-phone-number",
            CANARY_DISPLAY,
            "--name",
            "Canary number",
            WHATSAPP_ACCESS_TOKEN=values["access token"],
        )
        # then the admin saves the app's callback URL and verify token in the
        # Meta App Dashboard: Meta's handshake, then its posts go there
        found = re.search(r"webhook URL: (\S+)/webhooks/whatsapp/", out)
        assert found, out
        hook = f"{found.group(1)}/webhooks/whatsapp/app"
        r = requests.post(f"{sandbox_url}/whatsapp/_config", json={"webhook_url": hook}, timeout=30)
        r.raise_for_status()
        verified = requests.post(f"{sandbox_url}/whatsapp/_verify", json={}, timeout=30)
        verified.raise_for_status()
        assert verified.json()["ok"], verified.json()
        return out

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        wa_id = person["chat"]
        first, last = person["first name"], person["last name"]
        text, mail, phone = person["text"], person["e-mail"], person["phone"]
        card = contact(wa_id, f"{first} {last}", person["username"])
        now = int(time.time()) - 60
        tag = secrets.token_hex(6).upper()

        def message(n: int, mtype: str, **content: Any) -> dict[str, Any]:
            return {
                "from": wa_id,
                "id": _wamid(n, tag),
                "timestamp": str(now + n),
                "type": mtype,
                **content,
            }

        shared = {
            "name": {"formatted_name": f"{first} {last}", "first_name": first, "last_name": last},
            "phones": [{"phone": phone, "wa_id": phone.lstrip("+"), "type": "CELL"}],
        }
        messages = [
            message(1, "text", text={"body": f"{text}: write to me at {mail}"}),
            message(2, "contacts", contacts=[shared]),
            message(3, "text", text={"body": f"{text} call {phone} or {mail}"}),
            message(
                4,
                "edit",
                edit={
                    "original_message_id": _wamid(1, tag),
                    "message": {
                        "type": "text",
                        "text": {"body": f"{person['edited text']} {mail}"},
                    },
                },
            ),
        ]
        return [
            envelope(
                value_of(CANARY_NUMBER, contacts=[card], messages=[m], display=CANARY_DISPLAY),
                waba=CANARY_WABA,
            )
            for m in messages
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        r = requests.post(
            f"{sandbox_url}/whatsapp/_deliver",
            json={"payload": delivery, "account": CANARY_NUMBER},
            timeout=30,
        )
        r.raise_for_status()
        assert r.json().get("status") == 200, r.json()

    def canary_sent(self, sandbox_url: str, user: str) -> list[str]:
        r = requests.get(
            f"{sandbox_url}/whatsapp/_sent",
            params={"to": user, "account": CANARY_NUMBER},
            timeout=30,
        )
        r.raise_for_status()
        return [_sent_text(m.get("body") or {}) for m in r.json()["sent"]]
