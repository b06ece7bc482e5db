# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Viber's kit: one bot per account, Viber posting one JSON callback per
request to the account's own URL (``/webhooks/viber/<key>``), signed with
``X-Viber-Content-Signature``: the hex HMAC-SHA256 of the raw body keyed with
the bot's auth token (FACTS §0 rule 1, §4) — like WhatsApp's signature, but
per account and without the ``sha256=`` prefix. ``message_token`` (beyond
2^53) is the journal key, as a string. Bodies are Viber's, shaped like the
real callback in ``tests/fixtures/corpora/viber/unicode_request.json`` and
the REST docs' examples (built here, and said so)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    RawDelivery,
    WebhookRequest,
)
from channel_adapters.viber import ViberAdapter, inbound
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

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "corpora" / "viber" / "unicode_request.json"
SIGNATURE = "X-Viber-Content-Signature"
TOKEN = "4a5b6c7d8e9f0a1b-fuzz0000viber00-0e1f2a3b4c5d6e7f"
MAX_KEY, MAX_THREAD, MAX_EVENT_TYPE = 255, 64, 64
BIG = 4912661846655238145
HANDLED = (
    "webhook",
    "message",
    "conversation_started",
    "subscribed",
    "unsubscribed",
    "delivered",
    "seen",
    "failed",
)


def adapter(welcome: str = "") -> ViberAdapter:
    return ViberAdapter(
        ChannelAccountInfo(
            id=1,
            kind="viber",
            key="fuzz",
            credentials={"auth_token": TOKEN},
            settings={"sender_name": "Fuzz Shop", "welcome_text": welcome},
            external_id="bot:fuzz",
        )
    )


def sign(body: bytes, token: str = TOKEN) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def request(body: bytes, signature: str | None = None) -> WebhookRequest:
    headers = {"content-type": JSON}
    if signature is not None:
        headers["x-viber-content-signature"] = signature
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/viber/fuzz",
        headers=headers,
        body=body,
        received_at=T0,
    )


def message(user: str, text: str, token: int = BIG, **extra: Any) -> dict[str, Any]:
    """A ``message`` callback (the corpus' shape)."""
    return {
        "event": "message",
        "timestamp": 1457764197627,
        "message_token": token,
        "sender": {
            "id": user,
            "name": "Fuzz User",
            "avatar": None,
            "language": "en",
            "country": "GB",
            "api_version": 10,
        },
        "message": {"type": "text", "text": text, **extra},
        "silent": False,
    }


def built(event: str, token: int = BIG, **fields: Any) -> dict[str, Any]:
    """A callback built from the REST docs' example for ``event``."""
    return {"event": event, "timestamp": 1457764197627, "message_token": token, **fields}


def _seed_docs() -> list[Any]:
    user = {"id": "01234567890A=", "name": "John McClane", "avatar": None, "language": "en"}
    return [
        json.loads(CORPUS.read_bytes()),
        built("webhook"),
        message("01234567890A=", "hi"),
        {
            **message("01234567890A=", ""),
            "message": {"type": "picture", "text": "", "media": "https://dl.viber.com/p.jpg"},
        },
        {
            **message("01234567890A=", ""),
            "message": {
                "type": "contact",
                "contact": {"name": "Fuzz User", "phone_number": "+972511123123"},
            },
        },
        {
            **message("01234567890A=", ""),
            "message": {"type": "location", "location": {"lat": 37.7898, "lon": -122.3942}},
        },
        built(
            "conversation_started", type="open", context="utm_source-x", user=user, subscribed=False
        ),
        built("subscribed", user=user),
        built("unsubscribed", user_id="01234567890A="),
        built("delivered", user_id="01234567890A="),
        built("seen", user_id="01234567890A="),
        built("failed", user_id="01234567890A=", desc="failure"),
    ]


def seeds() -> list[bytes]:
    return [dumps(doc) for doc in _seed_docs()]


def _documented(exc: WebhookError) -> None:
    if not 400 <= exc.status_code < 500:
        raise BrokenInvariant(f"not a 4xx: {exc.status_code} {exc.message!r}")
    if TOKEN in json.dumps(exc.to_json()) + str(exc):
        raise BrokenInvariant("a refusal repeats the token")


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


TOKEN_KEY = re.compile(r"[0-9]{1,20}")


def check_events(events: Any, key: str) -> None:
    """One event keyed by the delivery's key; a user message from a Viber
    user id its columns hold, a status naming our message by its token;
    every string storable, none the token."""
    if not isinstance(events, list) or len(events) != 1:
        raise BrokenInvariant(f"a delivery must give exactly one event: {events!r}")
    (event,) = events
    if isinstance(event, OutboundStatus):
        if event.status not in ("delivered", "seen", "failed"):
            raise BrokenInvariant(f"a status Viber has not: {event.status!r}")
        if not TOKEN_KEY.fullmatch(event.channel_message_id or ""):
            raise BrokenInvariant(f"a status not naming a token: {event!r}")
        if (event.status == "failed") != (event.error is not None):
            raise BrokenInvariant(f"a failure without its reason (or the other way): {event!r}")
    else:
        check_channel_events(events, exactly=1)
    if event.external_id != key:
        raise BrokenInvariant(f"the event's key {event.external_id!r} is not {key!r}")
    if isinstance(event, InboundMessage):
        if len(event.external_thread_id) > MAX_THREAD or not inbound.USER_ID_RE.fullmatch(
            event.external_user_id
        ):
            raise BrokenInvariant(f"not a Viber user id: {event.external_user_id!r}")
        if "\x00" in event.text:
            raise BrokenInvariant("a NUL in the text (PostgreSQL refuses it)")
        phone = event.profile.phone
        if phone is not None and not re.fullmatch(r"\+[1-9][0-9]{5,14}", phone):
            raise BrokenInvariant(f"a phone that is not E.164: {phone!r}")
        for attachment in event.attachments:
            url = attachment.url
            if url is not None and not (
                url.startswith(("http://", "https://")) and url.isprintable()
            ):
                raise BrokenInvariant(f"an attachment URL that is not http(s): {url!r}")
    elif isinstance(event, IgnoredEvent):
        if len(event.event_type) > MAX_EVENT_TYPE or not event.event_type.isprintable():
            raise BrokenInvariant(f"an event type its column cannot hold: {event.event_type!r}")
    for where, text in _strings(event, "event"):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BrokenInvariant(f"{where} cannot be stored (a lone surrogate)") from None
        if TOKEN in text:
            raise BrokenInvariant(f"{where} carries the auth token")


def deliver(body: bytes, signature: str | None = "sign") -> RawDelivery | None:
    """The account URL's path: ``verify`` (passes exactly for the body's
    own signature), then ``edge``: the one delivery, the body byte for byte,
    keyed by the token; None for a documented 4xx."""
    sig = sign(body) if signature == "sign" else signature
    req = request(body, sig)
    try:
        adapter().verify(req)
    except SignatureError as exc:
        _documented(exc)
        if sig is not None and hmac.compare_digest(
            sig.lower().encode("utf-8", "replace"), sign(body).encode()
        ):
            raise BrokenInvariant(f"a signed body was refused: {body[:200]!r}") from None
        return None
    if sig is None or sig.lower() != sign(body):
        raise BrokenInvariant(f"a body without its signature verified: {body[:200]!r}")
    try:
        deliveries = adapter().edge(req)
    except SignatureError:
        raise BrokenInvariant("edge checked a proof") from None
    except WebhookError as exc:
        _documented(exc)
        return None
    if not isinstance(deliveries, list) or len(deliveries) != 1:
        raise BrokenInvariant(f"one POST is one delivery: {deliveries!r}")
    (delivery,) = deliveries
    ident(delivery.key, "delivery key")
    if len(delivery.key) > MAX_KEY:
        raise BrokenInvariant(f"a key over {MAX_KEY} characters: {delivery.key!r}")
    if delivery.body != body:
        raise BrokenInvariant("the journal must keep the signed bytes")
    doc = json.loads(body)
    token = doc.get("message_token")
    if doc.get("event") == "message" and delivery.key != str(token):
        raise BrokenInvariant(f"a message not keyed by its exact token: {delivery.key!r}")
    if inbound.split(delivery.body) != delivery:
        raise BrokenInvariant(f"a delivery does not split to itself: {delivery.key!r}")
    return delivery


def parse_delivery(delivery: RawDelivery) -> list[Any] | None:
    req = delivery.request(T0)
    try:
        events = adapter().parse(req)
    except SignatureError:
        raise BrokenInvariant("parse checked a proof") from None
    except WebhookError as exc:
        _documented(exc)
        if not isinstance(exc, PayloadError):
            raise BrokenInvariant(f"parse refused with {type(exc).__name__}") from None
        return None
    check_events(events, delivery.key)
    if adapter().parse(req) != events:
        raise BrokenInvariant("parse is not deterministic")
    return events


def parse(body: bytes) -> list[Any] | None:
    """The webhook's path then the worker's: the event, or None for a 4xx."""
    delivery = deliver(body)
    return None if delivery is None else parse_delivery(delivery)


def fuzz(data: bytes) -> None:
    """verify (only SignatureError) on the bytes as they came, then the whole
    path signed for the parsers' bot; the answer to what was delivered."""
    try:
        adapter().verify(request(data, data[:64].hex()))
    except SignatureError:
        pass
    delivery = deliver(data)
    if delivery is not None:
        parse_delivery(delivery)
        answer = adapter("Welcome!").answer([delivery])
        if answer.status != 200 or not isinstance(answer.body, Mapping):
            raise BrokenInvariant(f"Viber would retry this answer: {answer!r}")


# -- properties ---------------------------------------------------------------------------------

DEEP = b"[" * 600 + b"]" * 600
TOKENS = st.integers(0, 2**64 - 1)
USERS = st.from_regex(r"[A-Za-z0-9+/]{10,30}={0,2}", fullmatch=True)


def the_corpus_is_there() -> None:
    assert CORPUS.exists(), CORPUS


def any_body_is_one_delivery_or_a_4xx(body: bytes) -> None:
    parse(body)


def every_seed_is_delivered_and_parses() -> None:
    for body in seeds():
        events = parse(body)
        assert events is not None, body


def text_message_round_trips(user: str, text: str, token: int, stamp: int) -> None:
    doc = {**message(user, text, token), "timestamp": stamp}
    events = parse(dumps(doc))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage)
    assert event.external_id == str(token) == event.provider_message_id  # exact, a string
    assert event.external_user_id == event.external_thread_id == user
    assert event.kind is MessageKind.TEXT
    clean = text.replace("\x00", "")
    assert event.text == re.sub("[\ud800-\udfff]", "\ufffd", clean)[:20_000]


def a_redelivered_token_is_the_same_row(token: int, text: str, other: str) -> None:
    first = deliver(dumps(message("01234567890A=", text, token)))
    again = deliver(dumps(message("01234567890A=", other, token)))
    assert first is not None and again is not None and first.key == again.key


def statuses_name_our_message(token: int, name: str) -> None:
    events = parse(dumps(built(name, token, user_id="01234567890A=", desc="x")))
    assert events is not None
    (event,) = events
    assert isinstance(event, OutboundStatus)
    assert event.channel_message_id == str(token) and event.external_id == f"{token}:{name}"


def only_the_bots_signature_verifies(case: tuple[bytes, str]) -> None:
    body, signature = case
    try:
        adapter().verify(request(body, signature))
    except SignatureError:
        assert signature.strip().lower() != sign(body)
    else:
        assert signature.strip().lower() == sign(body)


def the_welcome_answers_only_conversation_started(event: str, token: int) -> None:
    delivery = deliver(
        dumps(built(event, token, user={"id": "01234567890A="}, user_id="01234567890A="))
    )
    assert delivery is not None
    answer = adapter("Welcome! / Привет!").answer([delivery])
    if event == "conversation_started":
        assert isinstance(answer.body, Mapping) and answer.body["text"] == "Welcome! / Привет!"
    else:
        assert answer.body == {"status": 0, "status_message": "ok"}


def a_context_reads_as_utm(pairs: list[tuple[str, str]]) -> None:
    context = "__".join(f"{k}-{v}" for k, v in pairs)
    utm = inbound.utm_from_context(context)
    assert utm["start"] == context
    assert all(utm.get(k) for k, _ in pairs)


def fuzz_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    utm = inbound.utm_from_context(text or None)
    if text and utm.get("start") != text:
        raise BrokenInvariant("the context is not kept")
    phone = inbound.e164(text)
    if phone is not None and not re.fullmatch(r"\+[1-9][0-9]{5,14}", phone):
        raise BrokenInvariant(f"not E.164: {phone!r}")


HOSTILE_EXAMPLES = (
    dumps(message("01234567890A=", "x", extra=json.loads(DEEP))),
    b'{"event":"message","message_token":1,"sender":{"id":"a"},"message":' + DEEP + b"}",
    b"\xff\xfe",
    json.dumps(message("01234567890A=", "\ud800 a lone surrogate")).encode(),
    dumps(message("01234567890A=", "nul \x00 inside")),
    dumps({**message("01234567890A=", "x"), "message_token": 2**70}),
    dumps({**message("01234567890A=", "x"), "message_token": 1.5e300}),
    dumps({**message("01234567890A=", "x"), "timestamp": 10**30}),
    dumps({**message("../../x" * 20, "x")}),
    dumps(built("\x00" * 100 + "x" * 100)),
    dumps(built("seen", token=True)),
    dumps(
        {
            **message("01234567890A=", ""),
            "message": {
                "type": "contact",
                "contact": {"name": "Fuzz User", "phone_number": "+" + "9" * 40},
            },
        }
    ),
    dumps(
        {
            **message("01234567890A=", ""),
            "message": {
                "type": "file",
                "media": "javascript:alert(1)",
                "size": -1,
                "file_name": "\x00",
            },
        }
    ),
    dumps(
        {
            **message("01234567890A=", ""),
            "message": {"type": "location", "location": {"lat": "x", "lon": None}},
        }
    ),
)


# -- hostile input ------------------------------------------------------------------------------

TOKEN_A = "1a2b3c4d5e6f7a8b-hostile0viberA0-9c8d7e6f5a4b3c2d"
TOKEN_B = "9f8e7d6c5b4a3f2e-hostile0viberB0-1d2c3b4a5f6e7d8c"
ACCOUNTS = {
    "A": AccountSpec(
        {"auth_token": TOKEN_A}, "bot:hostileA", {"sender_name": "Shop A"}, name="bot A"
    ),
    "B": AccountSpec(
        {"auth_token": TOKEN_B}, "bot:hostileB", {"sender_name": "Shop B"}, name="bot B"
    ),
}
TOKENS_BY = {"A": TOKEN_A, "B": TOKEN_B}


def hostile_delivery(uid: str) -> dict[str, Any]:
    """One customer text, new by its token (from ``uid``)."""
    return message("79990001Abc=", f"{MARK} hello", int(uid[:15], 16))


#: signature attacks: (what the header says given the genuine body), 403
SIGNATURE_ATTACKS: dict[str, Callable[[bytes], str | None]] = {
    "signature-missing": lambda raw: None,
    "signature-empty": lambda raw: "",
    "signature-forged": lambda raw: MARK + "0" * 45,
    "signature-almost-right": lambda raw: (
        sign(raw, TOKEN_A)[:-1] + ("0" if sign(raw, TOKEN_A)[-1] != "0" else "1")
    ),
    "signature-prefix": lambda raw: sign(raw, TOKEN_A)[:-2],
    "signature-longer": lambda raw: sign(raw, TOKEN_A) + "00",
    "signature-whatsapp-shape": lambda raw: "sha256=" + sign(raw, TOKEN_A),
    "signature-of-another-bot": lambda raw: sign(raw, TOKEN_B),
    "signature-keyed-with-nothing": lambda raw: sign(raw, ""),
    "signature-sha1": lambda raw: hmac.new(TOKEN_A.encode(), raw, hashlib.sha1).hexdigest(),
    "signature-the-token-itself": lambda raw: TOKEN_A,
    "signature-non-ascii": lambda raw: "ü" * 64,
    "signature-huge": lambda raw: "a" * 10_000,
}
#: the body changed after it was signed: 403
BODY_ATTACKS: dict[str, Callable[[bytes], bytes]] = {
    "body-reserialised": lambda raw: json.dumps(json.loads(raw), indent=1).encode(),
    "body-appended": lambda raw: raw + b" ",
    "body-swapped": lambda raw: raw.replace(MARK.encode(), b"another text", 1),
}
#: signed for the bot, yet no callback the bridge takes: 400 (413)
PROVEN_REFUSALS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "proven-not-json": (400, lambda raw: f"{MARK} not json".encode()),
    "proven-not-an-object": (400, lambda raw: b"[" + raw + b"]"),
    "proven-no-event": (
        400,
        lambda raw: dumps({k: v for k, v in json.loads(raw).items() if k != "event"}),
    ),
    "proven-no-message-token": (
        400,
        lambda raw: dumps({k: v for k, v in json.loads(raw).items() if k != "message_token"}),
    ),
    "proven-token-a-float": (400, lambda raw: dumps({**json.loads(raw), "message_token": 1.5})),
    "proven-invalid-utf8": (400, lambda raw: raw.replace(MARK.encode(), b"\xff\xfe", 1)),
    # a callback is a small JSON object: over the cap, never read
    "proven-over-1-mb": (
        413,
        lambda raw: dumps({**json.loads(raw), "padding": MARK * (1_000_001 // len(MARK) + 1)}),
    ),
}


class ViberTarget(HostileTarget):
    """A bot's own URL: ``X-Viber-Content-Signature`` over the raw body."""

    name = "viber"
    kind = "viber"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        **{case: 403 for case in SIGNATURE_ATTACKS},
        **{case: 403 for case in BODY_ATTACKS},
        **{case: status for case, (status, _) in PROVEN_REFUSALS.items()},
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/viber/{self.world.account_keys['viber'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return dumps(hostile_delivery(uid))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict[str, str]:
        return {SIGNATURE: sign(body, TOKENS_BY[tenant])}

    def auth_attack(self, case: str) -> Req:
        import uuid

        raw = dumps(hostile_delivery(uuid.uuid4().hex))
        if case in SIGNATURE_ATTACKS:
            sig = SIGNATURE_ATTACKS[case](raw)
            return Req(self.path(), raw, JSON, {SIGNATURE: sig} if sig is not None else {})
        if case in BODY_ATTACKS:
            return Req(self.path(), BODY_ATTACKS[case](raw), JSON, {SIGNATURE: sign(raw, TOKEN_A)})
        body = PROVEN_REFUSALS[case][1](raw)
        return Req(self.path(), body, JSON, {SIGNATURE: sign(body, TOKEN_A)})


# -- canaries -----------------------------------------------------------------------------------

CANARY_BOT = "pa:5704351299999999999"


# -- the kit ------------------------------------------------------------------------------------


class ViberKit(ChannelKit):
    kind = "viber"
    content_type = JSON

    # -- parsers

    def properties(self) -> Sequence[Property]:
        docs = _seed_docs()
        return [
            Property("viber: the corpus is there", the_corpus_is_there),
            Property(
                "viber: any signed body is one delivery of one event or a 4xx",
                any_body_is_one_delivery_or_a_4xx,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    st.builds(
                        lambda e, t: dumps(built(e, t)),
                        st.one_of(st.sampled_from(HANDLED), st.text(max_size=20)),
                        st.one_of(TOKENS, JSON_VALUES),
                    ),
                    mutated(docs, keys_of(docs)).map(dumps),
                ),
                examples=HOSTILE_EXAMPLES,
                hostile=True,
            ),
            Property(
                "viber: every seed callback is delivered and parses",
                every_seed_is_delivered_and_parses,
            ),
            Property(
                "viber: a text message round-trips with its exact token",
                text_message_round_trips,
                {
                    "user": USERS,
                    "text": st.text(max_size=300),
                    "token": TOKENS,
                    "stamp": st.integers(1, 2**45),
                },
                examples=({"user": "01234567890A=", "text": "x", "token": BIG, "stamp": 1},),
            ),
            Property(
                "viber: a redelivered message_token is the same row",
                a_redelivered_token_is_the_same_row,
                {"token": TOKENS, "text": st.text(max_size=50), "other": st.text(max_size=50)},
            ),
            Property(
                "viber: delivered/seen/failed name our message by its token",
                statuses_name_our_message,
                {"token": TOKENS, "name": st.sampled_from(["delivered", "seen", "failed"])},
            ),
            Property(
                "viber: only the bot's signature verifies",
                only_the_bots_signature_verifies,
                st.builds(
                    lambda body, sig, how: (
                        body,
                        {0: sig, 1: sign(body), 2: sign(body).upper(), 3: sign(body)[:-1]}[how],
                    ),
                    st.binary(max_size=100),
                    st.text(max_size=70),
                    st.integers(0, 3),
                ),
            ),
            Property(
                "viber: the welcome message answers conversation_started only",
                the_welcome_answers_only_conversation_started,
                {"event": st.sampled_from(HANDLED), "token": TOKENS},
            ),
            Property(
                "viber: a deep link's context reads as utm keys",
                a_context_reads_as_utm,
                st.lists(
                    st.tuples(
                        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
                            lambda k: "__" not in k  # the pairs' separator
                        ),
                        st.from_regex(r"[A-Za-z0-9-]{1,10}", fullmatch=True),
                    ),
                    min_size=1,
                    max_size=4,
                ),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = (
            b'{"event":"message","message_token":1,"timestamp":1,'
            b'"sender":{"id":"01234567890A="},"message":{"type":"text","text":"x","extra":'
        )
        return [DeepJson("viber", head, b"}}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "viber_callback",
                "ViberAdapter.verify/edge/parse/answer (a signed callback)",
                fuzz,
                seeds,
                json_tokens,
            )
        ]

    def text_helpers(self) -> TextHelpers:
        return TextHelpers(
            fuzz_text,
            (b"utm_source-google__utm_campaign-x", b"+972511123123", b"972 51 112 3123"),
            frozenset({b"__", b"-", b"+", b"utm_"}),
        )

    # -- hostile input

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [ViberTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return ACCOUNTS

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        token = f"{secrets.token_hex(8)}-{secrets.token_hex(8)}-{secrets.token_hex(8)}"
        return AccountSpec(
            {"auth_token": token},
            f"bot:iso{idx}x{n}",
            {"sender_name": f"Shop {idx}"},
            name=f"bot {idx}/{n}",
        )

    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        """``name`` writes from the Viber user ``<chat>`` (digits: a valid
        id), or shares their own phone (the share-phone button's contact)."""
        user = str(abs(chat) or 1)
        doc = message(user, text if text is not None else "hello", 10**18 + delivery_id)
        doc["sender"]["name"] = name
        if phone is not None:
            doc["message"] = {"type": "contact", "contact": {"name": name, "phone_number": phone}}
        return dumps(doc)

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        return {SIGNATURE: sign(body, str(credentials["auth_token"]))}

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        return {"auth token": f"CANARYviber{tag}-{secrets.token_hex(8)}-{secrets.token_hex(8)}"}

    def canary_env(self, values: Mapping[str, str], sandbox_url: str) -> dict[str, str]:
        return {"VIBER_API_BASE": f"{sandbox_url}/viber/pa"}

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {
            "viber": {
                "auth_token": values["auth token"],
                "id": CANARY_BOT,
                "name": "Canary Shop",
                "uri": "canaryshop",
            }
        }

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        # the token the documented way (the environment); connecting calls
        # set_webhook, and the sandbox checks the URL with a signed callback
        return cli(
            "viber",
            "connect",
            "--tenant",
            slug,
            "--sender-name",
            "Canary Shop",
            "--name",
            "Canary bot",
            VIBER_AUTH_TOKEN=values["auth token"],
        )

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        """Text with the e-mail, the phone shared (the share-phone contact),
        text with both (Viber has no edits)."""
        user = str(person["chat"])
        name = f"{person['first name']} {person['last name']}"
        run = int(time.time() * 1000) * 1000 + secrets.randbelow(1000)

        def new(n: int, body: dict[str, Any]) -> dict[str, Any]:
            return {
                "event": "message",
                "timestamp": int(time.time() * 1000) - 60_000 + n,
                "message_token": 10**18 + run % 10**17 + n,
                "sender": {"id": user, "name": name, "avatar": None, "language": "en"},
                "message": body,
                "silent": False,
            }

        return [
            new(1, {"type": "text", "text": f"{person['text']}: write to {person['e-mail']}"}),
            new(2, {"type": "contact", "contact": {"name": name, "phone_number": person["phone"]}}),
            new(
                3,
                {
                    "type": "text",
                    "text": f"{person['edited text']} call {person['phone']} or {person['e-mail']}",
                },
            ),
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        r = requests.post(
            f"{sandbox_url}/viber/_deliver",
            json={"payload": delivery, "message_token": "keep"},
            timeout=30,
        )
        r.raise_for_status()
        answer = r.json()
        assert answer.get("status") == 200, answer

    def canary_sent(self, sandbox_url: str, user: str) -> list[str]:
        r = requests.get(f"{sandbox_url}/viber/_sent", params={"receiver": user}, timeout=30)
        r.raise_for_status()
        return [str(m.get("text") or "") for m in r.json()["sent"]]
