# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""MAX's kit: one bot per account, the webhook proven by the secret MAX
echoes in ``X-Max-Bot-Api-Secret`` (no signature: FACTS §2), one ``Update``
JSON object per POST (the examples in ``tests/fixtures/corpora/max``:
go-stab fixtures, dev.max.ru examples, schema-built ones)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import requests
from hypothesis import strategies as st

from bridge.errors import PayloadError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    WebhookRequest,
)
from channel_adapters.max import MaxAdapter
from channel_adapters.max.adapter import SECRET_HEADER, UPDATE_TYPES
from channel_adapters.max.inbound import utm_from_payload
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
    SECRET_HEADER_CASES,
    T0,
    BrokenInvariant,
    check_channel_events,
    dumps,
    json_tokens,
    keys_of,
    mutated,
    secret_header_attack,
)

UTC = dt.UTC
ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora" / "max" / "examples"
HEADER = SECRET_HEADER

# -- the parser's account ------------------------------------------------------------------

SECRET = "fuzz_secret-max-1"
TOKEN = "sandbox-bot-token"  # the schema-built contact example's hash key (FACTS §8)
BOT_ID = 229229229  # the go-stab fixtures' bot


@cache
def adapter() -> MaxAdapter:
    """One bot, never reaching the network (its parse makes no call)."""
    account = ChannelAccountInfo(
        id=1,
        kind="max",
        key="acct-key",
        credentials={"access_token": TOKEN, "secret": SECRET},
        external_id=str(BOT_ID),
    )
    return MaxAdapter(account)


def request(body: bytes, secret: str | None = SECRET) -> WebhookRequest:
    headers = {"content-type": JSON}
    if secret is not None:
        headers[HEADER.lower()] = secret
    return WebhookRequest(
        "POST", "https://bridge.example/webhooks/max/acct-key", headers, body, received_at=T0
    )


def corpus_updates() -> list[dict[str, Any]]:
    """Every ``Update`` in the MAX examples (webhook bodies, and each
    element of the ``GET /updates`` answers)."""
    found: list[dict[str, Any]] = []
    for path in sorted(CORPORA.glob("*.json")):
        data = json.loads(path.read_bytes())
        if isinstance(data, dict) and isinstance(data.get("updates"), list):
            found.extend(u for u in data["updates"] if isinstance(u, dict))
        elif isinstance(data, dict) and isinstance(data.get("update_type"), str):
            found.append(data)
    return found


def user(user_id: int, name: str = "Ann") -> dict[str, Any]:
    return {
        "user_id": user_id,
        "first_name": name,
        "is_bot": False,
        "last_activity_time": 1775025580000,
        "name": name,
    }


def created(
    user_id: int,
    text: str | None,
    *,
    mid: str,
    seq: int = 1,
    ms: int = 1775025604400,
    chat: int | None = None,
    attachments: list[Any] | None = None,
) -> dict[str, Any]:
    """A ``message_created`` in the user's dialog, shaped like the go-stab
    fixtures (built here)."""
    body: dict[str, Any] = {"mid": mid, "seq": seq, "text": text}
    if attachments:
        body["attachments"] = attachments
    return {
        "message": {
            "recipient": {
                "chat_id": chat or 10**11 + user_id,
                "chat_type": "dialog",
                "user_id": BOT_ID,
            },
            "timestamp": ms,
            "body": body,
            "sender": user(user_id),
        },
        "timestamp": ms + 99,
        "user_locale": "ru",
        "update_type": "message_created",
    }


def seeds() -> list[bytes]:
    extra = [
        created(4242, "hello", mid="mid.seed1", seq=2**60),
        {
            "update_type": "bot_started",
            "timestamp": 1,
            "chat_id": 9,
            "user": user(4242),
            "payload": "utm_source-google__utm_campaign-spring",
        },
        {
            "update_type": "message_callback",
            "timestamp": 1,
            "callback": {
                "timestamp": 1,
                "callback_id": "cb_1",
                "payload": "buy:7",
                "user": user(1),
            },
            "message": None,
        },
    ]
    return [dumps(u) for u in [*corpus_updates(), *extra]]


def parse(body: bytes) -> list[Any] | None:
    """verify (must pass: the header is right), edge, then parse; None for a
    PayloadError (a 4xx)."""
    bot = adapter()
    req = request(body)
    bot.verify(req)
    try:
        [delivery] = bot.edge(req)
        events = bot.parse(delivery.request(T0))
    except PayloadError as exc:
        assert 400 <= exc.status_code < 500
        return None
    check_channel_events(events, exactly=1)
    assert bot.parse(req) == events  # deterministic
    return events


def fuzz(data: bytes) -> None:
    bot = adapter()
    req = request(data)
    try:
        bot.verify(req)
    except WebhookError:
        pass
    try:
        bot.edge(req)
        events = bot.parse(req)
    except WebhookError:
        return
    check_channel_events(events, exactly=1)


# -- properties -----------------------------------------------------------------------------

DEEP = b"[" * 600 + b"]" * 600
INT64 = st.integers(1, 2**63 - 1)
MID = st.from_regex(r"mid\.[0-9a-f]{32}", fullmatch=True)


@cache
def _seed_docs() -> list[Any]:
    return [json.loads(s) for s in seeds()]


def the_corpus_is_there() -> None:
    assert len(corpus_updates()) >= 30  # webhook bodies and GET /updates answers


def any_body_is_one_event_or_a_payload_error(body: bytes) -> None:
    parse(body)


def every_corpus_update_parses() -> None:
    for update in _seed_docs():
        events = parse(dumps(update))
        assert events is not None, update


def text_message_round_trips(
    user_id: int, chat: int, mid: str, seq: int, text: str, ms: int, edit_after: int | None
) -> None:
    update = created(user_id, text, mid=mid, seq=seq, ms=ms, chat=chat)
    if edit_after is not None:
        update["update_type"] = "message_edited"
        update["timestamp"] = ms + edit_after
    events = parse(dumps(update))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.TEXT
    assert event.external_user_id == str(user_id)
    # a dialog's thread is the user; a negative chat id is a group chat's
    assert event.external_thread_id == (str(chat) if chat < 0 else str(user_id))
    assert event.text == text.replace("\x00", "")
    assert event.provider_message_id == mid and event.sequence == seq  # int64, exact
    assert event.is_edit is (edit_after is not None)
    when = ms + edit_after if edit_after is not None else ms
    assert event.sent_at == dt.datetime.fromtimestamp(when / 1000, UTC)
    key = f"message_created:{mid}" if edit_after is None else f"message_edited:{mid}:{when}"
    assert event.external_id == key


def button_press_round_trips(
    user_id: int, callback_id: str, payload: str, chat: int | None
) -> None:
    message = None
    if chat is not None:
        message = {
            "recipient": {"chat_id": chat, "chat_type": "dialog", "user_id": user_id},
            "timestamp": 1,
            "body": {"mid": "mid.bot", "seq": 1, "text": "?"},
            "sender": {**user(BOT_ID, "Bot"), "is_bot": True},
        }
    update = {
        "update_type": "message_callback",
        "timestamp": 1775025604499,
        "callback": {
            "timestamp": 1775025604499,
            "callback_id": callback_id,
            "payload": payload,
            "user": user(user_id),
        },
        "message": message,
    }
    events = parse(dumps(update))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.CALLBACK
    assert (
        event.callback_id == callback_id and event.external_id == f"message_callback:{callback_id}"
    )
    assert event.external_thread_id == str(user_id)  # a dialog's thread


def other_update_kinds_are_ignored_by_name(kind: str, chat: int, user_id: int) -> None:
    update = {"update_type": kind, "timestamp": 5, "chat_id": chat, "user": user(user_id)}
    events = parse(dumps(update))
    assert events is not None
    (event,) = events
    assert isinstance(event, IgnoredEvent) and event.event_type == kind
    assert event.external_id == f"{kind}:{chat}:{user_id}:5"


def the_bot_s_own_message_is_never_the_customer_s(text: str, mid: str) -> None:
    update = created(BOT_ID, text, mid=mid)
    update["message"]["sender"]["is_bot"] = True
    events = parse(dumps(update))
    assert events is not None
    assert isinstance(events[0], IgnoredEvent)


def a_contact_is_a_phone_identity_only_when_proven(digits: str, own: bool, good: bool) -> None:
    sender = 4242
    vcf = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ann\r\nTEL;TYPE=cell:{digits}\r\nEND:VCARD\r\n"
    key = TOKEN if good else "another-token"
    digest = hmac.new(key.encode(), vcf.encode(), hashlib.sha256).hexdigest()
    node = {
        "type": "contact",
        "payload": {
            "vcf_info": vcf,
            "hash": digest,
            "max_info": user(sender if own else sender + 1),
        },
    }
    events = parse(dumps(created(sender, None, mid="mid.contact", attachments=[node])))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.CONTACT
    if own and good and event.profile.phone:
        assert event.profile.phone.endswith(digits[-6:])
    else:
        assert event.profile.phone is None


UTM_KEY = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
UTM_VALUE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,8}", fullmatch=True)


def deep_link_payload_gives_its_utm_pairs(pairs: dict[str, str]) -> None:
    payload = "__".join(f"{k}-{v}" for k, v in pairs.items())
    assert utm_from_payload(payload) == {**pairs, "start": payload}


def deep_link_parsing_never_raises(text: str) -> None:
    utm = utm_from_payload(text)
    assert utm == {} or ("start" in utm and all(isinstance(v, str) for v in utm.values()))


def fuzz_text(data: bytes) -> None:
    utm = utm_from_payload(data.decode("utf-8", "replace"))
    if utm and "start" not in utm:
        raise BrokenInvariant(f"utm_from_payload -> {utm!r}")


# -- hostile input ----------------------------------------------------------------------------

SECRET_A = "max-secret-A_0123456789abcdef"
SECRET_B = "max-secret-B_fedcba9876543210"


class MaxTarget(HostileTarget):
    name = "max"
    kind = "max"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = SECRET_HEADER_CASES

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/max/{self.world.account_keys['max'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return dumps(created(7001, f"{MARK} hello", mid=f"mid.{uid}", seq=int(uid[:12], 16)))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return {HEADER: SECRET_A if tenant == "A" else SECRET_B}

    def auth_attack(self, case: str) -> Req:
        secret = secret_header_attack(case, SECRET_A, SECRET_B)
        headers = {} if secret is None else {HEADER: secret}
        return Req(self.path(), self.delivery(uuid.uuid4().hex), JSON, headers)


# -- canaries -----------------------------------------------------------------------------------

CANARY_BOT = 229900077


# -- the kit ------------------------------------------------------------------------------------


class MaxKit(ChannelKit):
    kind = "max"
    content_type = JSON

    # -- parsers

    def properties(self) -> Sequence[Property]:
        docs = _seed_docs()
        return [
            Property("max: the corpus is there", the_corpus_is_there),
            Property(
                "max: any body is one event or a PayloadError",
                any_body_is_one_event_or_a_payload_error,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    st.builds(
                        lambda v: {
                            "update_type": "message_created",
                            "timestamp": 1,
                            **(v if isinstance(v, dict) else {"message": v}),
                        },
                        JSON_VALUES,
                    ).map(dumps),
                    mutated(docs, keys_of(docs)).map(dumps),
                ),
                examples=(
                    b'{"update_type":"message_created","timestamp":1,"message":' + DEEP + b"}",
                    b'{"update_type":"message_created","timestamp":1e999}',
                    b'{"update_type":true,"timestamp":1}',
                    b'{"update_type":"message_created","timestamp":1,"message":{"body":'
                    b'{"mid":"mid.x","seq":1.5e300},"sender":{"user_id":99999999999999999999}}}',
                    b"\xff\xfe",
                ),
                hostile=True,
            ),
            Property("max: every corpus update parses", every_corpus_update_parses),
            Property(
                "max: a text message round-trips (int64 ids, ms timestamps)",
                text_message_round_trips,
                {
                    "user_id": INT64,
                    "chat": st.integers(-(2**63), 2**63 - 1).filter(bool),
                    "mid": MID,
                    "seq": INT64,
                    "text": st.text(min_size=1, max_size=300).filter(
                        lambda t: t.replace("\x00", "").strip()
                    ),
                    "ms": st.integers(1, 4 * 10**12),
                    "edit_after": st.one_of(st.none(), st.integers(1, 10**9)),
                },
            ),
            Property(
                "max: a button press round-trips",
                button_press_round_trips,
                {
                    "user_id": INT64,
                    "callback_id": st.from_regex(r"[A-Za-z0-9_-]{1,150}", fullmatch=True),
                    "payload": st.text(max_size=64),
                    "chat": st.one_of(st.none(), st.integers(1, 2**63 - 1)),
                },
            ),
            Property(
                "max: other update kinds are ignored by name",
                other_update_kinds_are_ignored_by_name,
                {
                    "kind": st.from_regex(r"[a-z_]{1,30}", fullmatch=True).filter(
                        lambda k: k not in UPDATE_TYPES
                    ),
                    "chat": st.integers(-(2**62), 2**62),
                    "user_id": INT64,
                },
            ),
            Property(
                "max: the bot's own message is never the customer's",
                the_bot_s_own_message_is_never_the_customer_s,
                {"text": st.text(max_size=50), "mid": MID},
            ),
            Property(
                "max: a shared contact is a phone identity only when proven",
                a_contact_is_a_phone_identity_only_when_proven,
                {
                    "digits": st.from_regex(r"7[0-9]{10}", fullmatch=True),
                    "own": st.booleans(),
                    "good": st.booleans(),
                },
            ),
            Property(
                "max: a deep-link payload gives its UTM pairs",
                deep_link_payload_gives_its_utm_pairs,
                {"pairs": st.dictionaries(UTM_KEY, UTM_VALUE, min_size=1, max_size=4)},
            ),
            Property(
                "max: deep-link parsing never raises",
                deep_link_parsing_never_raises,
                st.text(max_size=600),
                examples=("a" * 513, "utm-x__Bad-y", "\x00", " "),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = (
            b'{"update_type":"message_created","timestamp":1,"message":{"sender":'
            b'{"user_id":5},"recipient":{"chat_id":6},"body":{"mid":"mid.d","text":'
        )
        return [DeepJson("max", head, b"}}}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "max_update",
                "MaxAdapter.verify/edge/parse (secret header, Update JSON)",
                fuzz,
                seeds,
                json_tokens,
            )
        ]

    def text_helpers(self) -> TextHelpers:
        return TextHelpers(
            fuzz_text,
            (b"utm_source-google__utm_campaign-spring-sale", b"promo-7", b"any data"),
            frozenset({b"__", b"-", b"utm_source"}),
        )

    # -- hostile input

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [MaxTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return {
            "A": AccountSpec({"access_token": "tok-A-unused", "secret": SECRET_A}, "229000001"),
            "B": AccountSpec({"access_token": "tok-B-unused", "secret": SECRET_B}, "229000002"),
        }

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        bot_id = 229_100_000 + idx * 10 + n
        token = f"max-bot-{idx}-{n}-{secrets.token_urlsafe(24)}"
        secret = f"max-secret-{idx}-{n}-{secrets.token_hex(12)}"
        return AccountSpec(
            {"access_token": token, "secret": secret}, str(bot_id), name=f"MAX bot {idx}/{n}"
        )

    def customer_message(
        self,
        delivery_id: int,
        chat: int,
        name: str,
        *,
        text: str | None = None,
        phone: str | None = None,
    ) -> bytes:
        attachments = None
        if phone is not None:
            # the client's own contact: a valid hash needs the account's token,
            # which this hook does not get; a phone shown unverified
            vcf = (
                f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=cell:{phone}\r\nEND:VCARD\r\n"
            )
            attachments = [
                {
                    "type": "contact",
                    "payload": {"vcf_info": vcf, "hash": None, "max_info": user(chat)},
                }
            ]
        update = created(
            chat,
            text,
            mid=f"mid.{delivery_id:032x}",
            seq=delivery_id,
            chat=chat,
            attachments=attachments,
        )
        update["message"]["sender"] = user(chat, name)
        return dumps(update)

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        return {HEADER: credentials["secret"]}

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        return {"bot token": f"CANARYmaxtoken{tag}{secrets.token_urlsafe(24)}"}

    def canary_env(self, values: Mapping[str, str], sandbox_url: str) -> dict[str, str]:
        return {"MAX_API_BASE": f"{sandbox_url}/max"}

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {
            "max": {"token": values["bot token"], "bot_id": CANARY_BOT, "bot_name": "Canary Shop"}
        }

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        # the token the documented way: in the environment, not on the command
        # line; the bot's id read with GET /me, the subscription made with a
        # generated secret (POST /subscriptions)
        return cli(
            "max",
            "connect",
            "--tenant",
            slug,
            "--name",
            "Canary MAX bot",
            MAX_ACCESS_TOKEN=values["bot token"],
        )

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        """A customer writes (name, e-mail in the text), shares their phone
        (a contact card), writes again, then edits the first message."""
        chat = int(person["chat"])
        text, mail, phone = person["text"], person["e-mail"], person["phone"]
        now = int(time.time() * 1000) - 60_000
        run = secrets.token_hex(6)
        sender = {
            "user_id": chat,
            "first_name": person["first name"],
            "last_name": person["last name"],
            "is_bot": False,
        }

        def message(n: int, said: str | None, **extra: Any) -> dict[str, Any]:
            update = created(
                chat, said, mid=f"mid.{run}{n:020d}", seq=n, ms=now + n * 1000, **extra
            )
            update["message"]["sender"] = sender
            return update

        vcf = (
            f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{person['first name']} {person['last name']}"
            f"\r\nTEL;TYPE=cell:{phone}\r\nEND:VCARD\r\n"
        )
        contact = {"type": "contact", "payload": {"vcf_info": vcf, "max_info": sender}}
        edit = message(1, f"{person['edited text']} {mail}")
        edit["update_type"], edit["timestamp"] = "message_edited", now + 30_000
        return [
            message(1, f"{text}: write to me at {mail}"),
            message(2, None, attachments=[contact]),
            message(3, f"{text} call {phone} or {mail}"),
            edit,
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        if delivery["message"]["body"].get("attachments"):
            # the sandbox signs a shared contact with the bot token, as MAX does
            contact = delivery["message"]["body"]["attachments"][0]["payload"]
            contact["hash"] = hmac.new(
                values["bot token"].encode(), contact["vcf_info"].encode(), hashlib.sha256
            ).hexdigest()
        delivery = {
            **delivery,
            "message": {**delivery["message"], "recipient": {"chat_type": "dialog"}},
        }
        r = requests.post(f"{sandbox_url}/max/_deliver", json={"payload": delivery}, timeout=30)
        r.raise_for_status()
        assert r.json().get("status") == 200, r.json()

    def canary_sent(self, sandbox_url: str, user: str) -> list[str]:
        r = requests.get(f"{sandbox_url}/max/_sent", params={"user_id": user}, timeout=30)
        r.raise_for_status()
        return [m.get("text") or "" for m in r.json()["sent"]]
