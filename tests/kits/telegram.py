# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Telegram's kit: one bot per account, the webhook proven by the secret
token Telegram echoes in ``X-Telegram-Bot-Api-Secret-Token`` (no HMAC, no
timestamp: FACTS §1), ``Update`` JSON bodies (the real payloads in
``tests/fixtures/corpora/telegram``)."""

from __future__ import annotations

import datetime as dt
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
    ThreadMigrated,
    WebhookRequest,
)
from channel_adapters.telegram import TelegramAdapter, utm_from_start
from channel_adapters.telegram.inbound import HANDLED_UPDATES
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
    NAME,
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
from tests.support.harness import tg_update, tg_user

UTC = dt.UTC
ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora" / "telegram"
HEADER = "X-Telegram-Bot-Api-Secret-Token"

# -- the parser's account ------------------------------------------------------------------

SECRET = "fuzz-secret_token-1"
TOKEN = "123456789:AAE-fuzzing-token"


@cache
def adapter() -> TelegramAdapter:
    """One bot, never reaching the network (its parse makes no call)."""
    account = ChannelAccountInfo(
        id=1,
        kind="telegram",
        key="acct-key",
        credentials={"bot_token": TOKEN, "secret_token": SECRET},
    )
    return TelegramAdapter(account)


def request(body: bytes, secret: str | None = SECRET) -> WebhookRequest:
    headers = {"content-type": JSON}
    if secret is not None:
        headers[HEADER.lower()] = secret
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/telegram/acct-key",
        headers=headers,
        body=body,
        received_at=T0,
    )


def corpus_updates() -> list[dict[str, Any]]:
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

    for path in sorted(CORPORA.rglob("*.json")):
        try:
            walk(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return found


def seeds() -> list[bytes]:
    out = [json.dumps(u, ensure_ascii=False).encode() for u in corpus_updates()]
    chat = {"id": -1001234567890, "type": "supergroup", "title": "Shop"}
    user = {"id": 4242, "is_bot": False, "first_name": "Ann", "language_code": "en"}
    extra: list[dict[str, Any]] = [
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
    return out + [json.dumps(e, ensure_ascii=False).encode() for e in extra]


def parse(body: bytes) -> list[Any] | None:
    """verify (must pass: the header is right) then parse; None for a
    PayloadError (a 4xx)."""
    bot = adapter()
    req = request(body)
    bot.verify(req)
    try:
        events = bot.parse(req)
    except PayloadError as exc:
        assert 400 <= exc.status_code < 500
        return None
    check_channel_events(events, exactly=1)
    assert bot.parse(req) == events  # deterministic
    return events


def fuzz(data: bytes) -> None:
    """Both hooks on any bytes, each allowed only its documented
    WebhookError; parse also when verify refused."""
    bot = adapter()
    req = request(data)
    try:
        bot.verify(req)
    except WebhookError:
        pass
    try:
        events = bot.parse(req)
    except WebhookError:
        return
    check_channel_events(events, exactly=1)


# -- properties -----------------------------------------------------------------------------

DEEP = b"[" * 600 + b"]" * 600
PRIVATE = b'{"update_id":1,"message":{"message_id":2,"date":3,"chat":{"id":4,"type":"private"}'
CHAT_ID = st.integers(-(10**13), 10**13).filter(bool)


@cache
def _seed_docs() -> list[Any]:
    updates = corpus_updates()
    return updates + [json.loads(s) for s in seeds()[len(updates) :]]


@st.composite
def user_strategy(draw: st.DrawFn) -> dict[str, Any]:
    user: dict[str, Any] = {"id": draw(st.integers(1, 2**52)), "is_bot": False}
    user["first_name"] = draw(NAME)
    for key, strategy in (
        ("last_name", NAME),
        ("username", st.from_regex(r"[A-Za-z][A-Za-z0-9_]{4,31}", fullmatch=True)),
        ("language_code", st.sampled_from(["en", "ru", "de", "pt-br"])),
    ):
        if draw(st.booleans()):
            user[key] = draw(strategy)
    return user


def chat_of(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Ann"}
    return {"id": chat_id, "type": "supergroup", "title": "Shop"}


def the_corpus_is_there() -> None:
    assert len(corpus_updates()) >= 40  # the real payloads the mutations start from


def any_body_is_one_event_or_a_payload_error(body: bytes) -> None:
    parse(body)


def every_corpus_update_parses() -> None:
    for update in _seed_docs():
        events = parse(dumps(update))
        assert events is not None, update
        assert events[0].external_id == str(update["update_id"])


def text_message_round_trips(
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
        "chat": chat_of(chat_id),
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
            "chat": chat_of(chat_id),
        }
    kind = "message" if edit_after is None else "edited_message"
    update = {"update_id": update_id, kind: message}
    events = parse(dumps(update))
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


def button_press_round_trips(
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
            "chat": chat_of(message[1]),
        }
    events = parse(dumps({"update_id": update_id, "callback_query": query}))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.CALLBACK
    assert event.external_id == str(update_id)
    assert event.external_user_id == str(user["id"])
    assert event.text == data
    assert event.callback_id == query_id
    assert event.external_thread_id == str(message[1] if message else user["id"])
    assert event.reply_to == (str(message[0]) if message else None)
    assert event.sent_at == T0  # a callback_query has no date: the arrival time


def group_migration_names_both_threads(update_id: int, old: int, new: int, forward: bool) -> None:
    message: dict[str, Any] = {"message_id": 1, "date": 1740820600}
    if forward:  # the service message in the old group
        message.update(chat=chat_of(old), migrate_to_chat_id=new)
    else:  # the one in the new supergroup
        message.update(chat=chat_of(new), migrate_from_chat_id=old)
    events = parse(dumps({"update_id": update_id, "message": message}))
    assert events == [ThreadMigrated("telegram", str(update_id), str(old), str(new))]


def other_update_kinds_are_ignored_by_name(update_id: int, key: str, value: Any) -> None:
    events = parse(dumps({"update_id": update_id, key: value}))
    assert events == [IgnoredEvent("telegram", str(update_id), key)]


def shared_contact_gives_the_senders_own_phone_only(
    user: dict[str, Any], digits: str, own: bool
) -> None:
    contact = {
        "phone_number": digits,
        "first_name": "Ann",
        "user_id": user["id"] + (0 if own else 1),
    }
    message = {"message_id": 9, "date": 1740820600, "chat": chat_of(user["id"]), "from": user}
    events = parse(dumps({"update_id": 1, "message": {**message, "contact": contact}}))
    assert events is not None
    (event,) = events
    assert event.kind is MessageKind.CONTACT and digits in event.text
    assert event.profile.phone == ("+" + digits if own else None)


UTM_KEY = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
UTM_VALUE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,8}", fullmatch=True)


def start_payload_gives_its_utm_pairs(pairs: dict[str, str], bot: str | None) -> None:
    payload = "__".join(f"{k}-{v}" for k, v in pairs.items())
    if len(payload) > 64:
        assert utm_from_start(f"/start {payload}") == {}  # longer than a deep link allows
        return
    command = "/start" + (f"@{bot}" if bot else "")
    utm = utm_from_start(f"{command} {payload}")
    assert utm == {**pairs, "start": payload}


def start_payload_parsing_never_raises(text: str) -> None:
    utm = utm_from_start(text)
    assert utm == {} or ("start" in utm and all(isinstance(v, str) for v in utm.values()))


def fuzz_text(data: bytes) -> None:
    utm = utm_from_start(data.decode("utf-8", "replace"))
    if utm and "start" not in utm:
        raise BrokenInvariant(f"utm_from_start -> {utm!r}")


# -- hostile input ----------------------------------------------------------------------------

SECRET_A = "tg-secret-A_0123456789abcdef"
SECRET_B = "tg-secret-B_fedcba9876543210"


def _uid_digits(uid: str) -> str:
    return str(int(uid[:12], 16))


class TelegramTarget(HostileTarget):
    name = "telegram"
    kind = "telegram"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = SECRET_HEADER_CASES

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/telegram/{self.world.account_keys['telegram'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        update = tg_update(int(_uid_digits(uid)), chat_id=7001, text=f"{MARK} hello")
        return json.dumps(update).encode()

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return {HEADER: SECRET_A if tenant == "A" else SECRET_B}

    def auth_attack(self, case: str) -> Req:
        secret = secret_header_attack(case, SECRET_A, SECRET_B)
        headers = {} if secret is None else {HEADER: secret}
        return Req(self.path(), self.delivery(uuid.uuid4().hex), JSON, headers)


# -- the kit ------------------------------------------------------------------------------------


class TelegramKit(ChannelKit):
    kind = "telegram"
    content_type = JSON

    # -- parsers

    def properties(self) -> Sequence[Property]:
        deep_callback = (
            b'{"update_id":1,"callback_query":{"id":"1","from":{"id":1,"first_name":"a"},'
            b'"chat_instance":"c","data":' + DEEP + b"}}"
        )
        return [
            Property("telegram: the corpus is there", the_corpus_is_there),
            Property(
                "telegram: any body is one event or a PayloadError",
                any_body_is_one_event_or_a_payload_error,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    st.builds(
                        lambda v: {"update_id": 7, **(v if isinstance(v, dict) else {"x": v})},
                        JSON_VALUES,
                    ).map(dumps),
                    mutated(_seed_docs(), keys_of(_seed_docs())).map(dumps),
                ),
                examples=(
                    PRIVATE + b',"text":' + DEEP + b"}}",  # was RecursionError (PTB deepcopy)
                    deep_callback,
                    b'{"update_id":1,"message":{"message_id":1,"date":1e999,'
                    b'"chat":{"id":1,"type":"private"},"text":"x"}}',
                    b'{"update_id":true,"message":{}}',
                    b"\xff\xfe",
                ),
                hostile=True,
            ),
            Property("telegram: every corpus update parses", every_corpus_update_parses),
            Property(
                "telegram: a text message round-trips",
                text_message_round_trips,
                {
                    "update_id": st.integers(0, 2**52),
                    "message_id": st.integers(1, 2**31 - 1),
                    "chat_id": CHAT_ID,
                    "user": st.one_of(st.none(), user_strategy()),
                    "text": st.text(min_size=1, max_size=300),
                    "date": st.integers(1, 2**31 - 1),
                    "edit_after": st.one_of(st.none(), st.integers(1, 10**6)),
                    "reply_to": st.one_of(st.none(), st.integers(1, 2**31 - 1)),
                },
            ),
            Property(
                "telegram: a button press round-trips",
                button_press_round_trips,
                {
                    "update_id": st.integers(0, 2**52),
                    "query_id": st.text(min_size=1, max_size=40),
                    "user": user_strategy(),
                    "data": st.text(max_size=64),
                    "message": st.one_of(st.none(), st.tuples(st.integers(1, 2**31 - 1), CHAT_ID)),
                },
            ),
            Property(
                "telegram: a group migration names both threads",
                group_migration_names_both_threads,
                {
                    "update_id": st.integers(0, 2**52),
                    "old": CHAT_ID,
                    "new": CHAT_ID,
                    "forward": st.booleans(),
                },
            ),
            Property(
                "telegram: other update kinds are ignored by name",
                other_update_kinds_are_ignored_by_name,
                {
                    "update_id": st.integers(0, 2**52),
                    "key": st.text(min_size=1, max_size=30).filter(
                        lambda k: k not in (*HANDLED_UPDATES, "update_id")
                    ),
                    "value": JSON_VALUES,
                },
            ),
            Property(
                "telegram: a shared contact gives the sender's own phone only",
                shared_contact_gives_the_senders_own_phone_only,
                {
                    "user": user_strategy(),
                    "digits": st.from_regex(r"[1-9][0-9]{7,13}", fullmatch=True),
                    "own": st.booleans(),
                },
            ),
            Property(
                "telegram: a /start payload gives its UTM pairs",
                start_payload_gives_its_utm_pairs,
                {
                    "pairs": st.dictionaries(UTM_KEY, UTM_VALUE, min_size=1, max_size=4),
                    "bot": st.one_of(
                        st.none(), st.from_regex(r"[A-Za-z0-9_]{5,20}", fullmatch=True)
                    ),
                },
            ),
            Property(
                "telegram: /start payload parsing never raises",
                start_payload_parsing_never_raises,
                st.text(max_size=80),
                examples=("/start " + "a" * 65, "/start utm-x__Bad-y"),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = (
            b'{"update_id":1,"message":{"message_id":2,"date":3,'
            b'"chat":{"id":4,"type":"private"},"text":'
        )
        return [DeepJson("telegram", head, b"}}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "telegram_update",
                "TelegramAdapter.verify/parse (secret header, Update JSON)",
                fuzz,
                seeds,
                json_tokens,
                # python-telegram-bot's de_json is half of this parser
                instrument=("telegram",),
            )
        ]

    def text_helpers(self) -> TextHelpers:
        return TextHelpers(
            fuzz_text,
            (b"/start utm_source-google__utm_campaign-spring-sale", b"/start@shop_bot promo-7"),
            frozenset({b"/start ", b"__", b"-", b"utm_source"}),
        )

    def secrets_of(self, credentials: Mapping[str, Any]) -> set[str]:
        found = super().secrets_of(credentials)
        token = credentials.get("bot_token")
        if isinstance(token, str) and ":" in token:
            found.add(token.split(":", 1)[1])  # the part after the bot id
        return found

    # -- hostile input

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [TelegramTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return {
            "A": AccountSpec({"bot_token": "123456:unused", "secret_token": SECRET_A}, "123456"),
            "B": AccountSpec({"bot_token": "654321:unused", "secret_token": SECRET_B}, "654321"),
        }

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        bot_id = 7_100_000_000 + idx * 10 + n
        token = f"{bot_id}:AAE-bot-{idx}-{n}-{secrets.token_hex(10)}"
        secret = f"tg-secret-{idx}-{n}-{secrets.token_hex(12)}"
        return AccountSpec(
            {"bot_token": token, "secret_token": secret}, str(bot_id), name=f"bot {idx}/{n}"
        )

    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        extra: dict[str, Any] = {}
        if phone is not None:
            extra["contact"] = {
                "phone_number": phone.lstrip("+"),
                "first_name": name[:1] or "X",
                "user_id": chat,
            }
        update = tg_update(delivery_id, chat_id=chat, text=text, user=tg_user(chat, name), **extra)
        return dumps(update)

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        return {HEADER: credentials["secret_token"]}

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        rng = secrets.SystemRandom()
        body = "CANARYbot" + secrets.token_hex(8)
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        pad = "".join(rng.choice(letters) for _ in range(35 - len(body)))
        bot = f"7999{rng.randrange(10**5, 10**6)}:{body}{pad}"
        return {"bot token": bot, "bot token secret part": bot.split(":", 1)[1]}

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        bots = [{"token": values["bot token"], "username": "canary_bot", "first_name": "Canary"}]
        return {"telegram": {"bots": bots}}

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        # the token the documented way: in the environment, not on the command line
        return cli(
            "telegram",
            "connect",
            "--tenant",
            slug,
            "--name",
            "Canary bot",
            TELEGRAM_BOT_TOKEN=values["bot token"],
        )

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        chat = int(person["chat"])
        user = {
            "id": chat,
            "is_bot": False,
            "first_name": person["first name"],
            "last_name": person["last name"],
            "username": person["username"],
            "language_code": "en",
        }
        chat_obj = {"id": chat, "type": "private", "first_name": person["first name"]}
        date = int(time.time()) - 60

        def message(n: int, **fields: Any) -> dict[str, Any]:
            return {"message_id": n, "from": user, "chat": chat_obj, "date": date + n, **fields}

        text, mail, phone = person["text"], person["e-mail"], person["phone"]
        return [
            {
                "update_id": 810_000_001,
                "message": message(1, text=f"{text}: write to me at {mail}"),
            },
            {
                "update_id": 810_000_002,
                "message": message(
                    2,
                    contact={
                        "phone_number": phone.lstrip("+"),
                        "first_name": person["first name"],
                        "last_name": person["last name"],
                        "user_id": chat,
                    },
                ),
            },
            {
                "update_id": 810_000_003,
                "message": message(3, text=f"{text} call {phone} or {mail}"),
            },
            {
                "update_id": 810_000_004,
                "edited_message": {
                    **message(1, text=f"{person['edited text']} {mail}"),
                    "edit_date": date + 30,
                },
            },
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        r = requests.post(
            f"{sandbox_url}/telegram/_deliver",
            json={"token": values["bot token"], "update": delivery},
            timeout=30,
        )
        r.raise_for_status()
        assert r.json().get("status") == 200, r.json()

    def canary_sent(self, sandbox_url: str, chat: str) -> list[str]:
        r = requests.get(f"{sandbox_url}/telegram/_sent", params={"chat_id": chat}, timeout=30)
        r.raise_for_status()
        return [m.get("text") or "" for m in r.json()["sent"]]
