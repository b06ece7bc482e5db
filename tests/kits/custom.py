# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The custom channel's kit: a system posts one customer message per request
to the account's URL, signed by Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">`` with the account's ``whsec_`` secret, a
5-minute window); the bridge posts the replies to the system's callback URL,
signed the same way (``channel_adapters/custom``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import requests
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    WebhookRequest,
    utcnow,
)
from channel_adapters.custom import CustomAdapter, signing
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
    check_channel_events,
    dumps,
    json_tokens,
    keys_of,
    mutated,
)

UTC = dt.UTC


def new_secret(seed: bytes | None = None) -> str:
    """A ``whsec_`` secret: the base64 of 32 bytes (random, or ``seed``
    padded to 32 bytes)."""
    raw = (seed or secrets.token_bytes(32)).ljust(32, b"!")[:32]
    return signing.SECRET_PREFIX + base64.b64encode(raw).decode()


def sign(secret: str, body: bytes, msg_id: str | None = None, *, at: float | None = None) -> dict:
    """The three Standard Webhooks headers for ``body`` (the id derived from
    the body: the same bytes are the same delivery)."""
    msg_id = msg_id or "msg_" + hashlib.sha256(body).hexdigest()[:24]
    when = dt.datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return signing.sign(secret, msg_id, body, when)


def message(
    sender: str, text: str | None, *, message_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": "message", "sender": {"id": sender, **fields.pop("who", {})}}
    payload["thread_id"] = fields.pop("thread_id", sender)
    if message_id is not None:
        payload["message_id"] = message_id
    if text is not None:
        payload["text"] = text
    payload.update(fields)
    return payload


# -- the parser's account ----------------------------------------------------------------------

SECRET = new_secret(b"kit-custom-parser-secret")


@cache
def adapter() -> CustomAdapter:
    account = ChannelAccountInfo(
        id=1,
        kind="custom",
        key="acct-key",
        credentials={"signing_secret": SECRET},
        settings={"callback_url": "https://system.example/cb", "attachment_hosts": []},
        external_id="site-form",
    )
    return CustomAdapter(account)


def request(body: bytes, headers: Mapping[str, str] | None = None) -> WebhookRequest:
    signed = dict(headers) if headers is not None else sign(SECRET, body)
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/custom/acct-key",
        headers={"content-type": JSON, **{k.lower(): v for k, v in signed.items()}},
        body=body,
        received_at=T0,
    )


def seeds() -> list[bytes]:
    payloads: list[Any] = [
        message("visitor-17", "Hello", message_id="m-1001"),
        message(
            "visitor-17",
            "order 42, see the photo",
            message_id="m-1002",
            thread_id="order-42",
            reply_to="m-1001",
            sent_at="2026-12-05T10:00:00+03:00",
            who={"name": "Anna", "email": "anna@example.org", "phone": "+79990001234"},
            attachments=[
                {"url": "https://files.example/a.jpg", "mime_type": "image/jpeg", "size": 1234}
            ],
        ),
        {"type": "conversation.closed", "thread_id": "order-42"},
        message("visitor-18", None, attachments=[{"url": "https://files.example/b.pdf"}]),
    ]
    return [dumps(p) for p in payloads]


def parse(body: bytes) -> list[Any] | None:
    """verify (must pass: signed now, with the account's secret) then
    parse; None for a PayloadError (a 4xx)."""
    channel = adapter()
    req = request(body)
    channel.verify(req)
    try:
        events = channel.parse(req)
    except PayloadError as exc:
        assert 400 <= exc.status_code < 500
        return None
    check_channel_events(events, exactly=1)
    assert channel.parse(req) == events  # deterministic
    return events


def fuzz(data: bytes) -> None:
    channel = adapter()
    req = request(data)
    try:
        channel.verify(req)
    except WebhookError:
        pass
    try:
        events = channel.parse(req)
    except WebhookError:
        return
    check_channel_events(events, exactly=1)


# -- properties ----------------------------------------------------------------------------------

ID = st.one_of(
    st.text(min_size=1, max_size=40).filter(lambda s: s.isprintable() and s.strip()),
    st.integers(0, 2**53),
)


@cache
def _seed_docs() -> list[Any]:
    return [json.loads(s) for s in seeds()]


def any_body_is_one_event_or_a_payload_error(body: bytes) -> None:
    parse(body)


def any_headers_are_verified_or_a_signature_error(headers: dict[str, str], body: bytes) -> None:
    """Whatever the three headers hold (the standard's own verifier raises
    undocumented exceptions on some: RELIABILITY.md 1.3), verify passes or
    refuses with a SignatureError, nothing else."""
    try:
        adapter().verify(request(body, headers))
    except SignatureError:
        return


def a_message_round_trips(
    sender: str | int,
    thread: str | int | None,
    message_id: str | int | None,
    text: str,
    name: str | None,
    offset: int | None,
) -> None:
    payload = message(
        sender,  # type: ignore[arg-type]
        text,
        message_id=message_id,  # type: ignore[arg-type]
        who={"name": name} if name is not None else {},
    )
    if thread is None:
        del payload["thread_id"]
    else:
        payload["thread_id"] = thread
    if offset is not None:
        zone = dt.timezone(dt.timedelta(minutes=offset))
        payload["sent_at"] = dt.datetime(2026, 12, 5, 10, 0, tzinfo=zone).isoformat()
    events = parse(dumps(payload))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.TEXT
    thread_id = str(thread if thread is not None else sender)
    assert event.external_user_id == str(sender)
    assert event.external_thread_id == thread_id
    if message_id is not None:
        assert event.external_id == f"{thread_id}:{message_id}"
        assert event.provider_message_id == str(message_id)
    else:  # the delivery's own id keeps a repeat out
        assert event.external_id.startswith("delivery:msg_")
    assert event.text == text
    assert event.profile.display_name == ((name or "").strip() or None)
    if offset is None:
        assert event.sent_at == T0  # no time given: the arrival time
    else:
        zone = dt.timezone(dt.timedelta(minutes=offset))
        assert event.sent_at == dt.datetime(2026, 12, 5, 10, 0, tzinfo=zone)
    assert event.raw == payload


def other_types_are_ignored_by_name(kind: str, value: Any) -> None:
    raw = dumps({"type": kind, "data": value})
    events = parse(raw)
    assert events == [IgnoredEvent("custom", events[0].external_id, kind[:64])]  # type: ignore[index]
    assert events[0].external_id.startswith("event:msg_")  # type: ignore[index]


# -- hostile input --------------------------------------------------------------------------------

SECRET_A = new_secret(b"hostile-custom-A")
SECRET_B = new_secret(b"hostile-custom-B")
ACCOUNTS = {
    name: AccountSpec(
        {"signing_secret": secret},
        f"site-{name.lower()}",
        {"callback_url": f"http://127.0.0.1:9/cb-{name.lower()}", "attachment_hosts": []},
    )
    for name, secret in (("A", SECRET_A), ("B", SECRET_B))
}


class CustomTarget(HostileTarget):
    name = "custom"
    kind = "custom"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        "forged": 403,
        "other-accounts-secret": 403,
        "missing-signature": 403,
        "missing-id": 403,
        "missing-timestamp": 403,
        "missing-all": 403,
        "malformed-no-version": 403,
        "malformed-not-base64": 403,
        "malformed-huge": 403,
        "malformed-non-ascii": 403,
        "malformed-timestamp": 403,
        "stale": 403,
        "future": 403,
        "body-swapped": 403,
        "id-swapped": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/custom/{self.world.account_keys['custom'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return dumps(message("visitor-7001", f"{MARK} hello", message_id=f"m-{uid}"))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return sign(SECRET_A if tenant == "A" else SECRET_B, body)

    def auth_attack(self, case: str) -> Req:
        body = self.delivery(uuid.uuid4().hex)
        good = sign(SECRET_A, body)
        sid, ts, sig = signing.HEADERS
        now = time.time()
        headers = {
            "forged": lambda: sign(new_secret(b"not-the-secret"), body),
            "other-accounts-secret": lambda: sign(SECRET_B, body),
            "missing-signature": lambda: {sid: good[sid], ts: good[ts]},
            "missing-id": lambda: {ts: good[ts], sig: good[sig]},
            "missing-timestamp": lambda: {sid: good[sid], sig: good[sig]},
            "missing-all": lambda: {},
            "malformed-no-version": lambda: {**good, sig: good[sig].split(",", 1)[1]},
            "malformed-not-base64": lambda: {**good, sig: "v1,%%%% not base64 %%%%"},
            "malformed-huge": lambda: {**good, sig: "v1," + "A" * 10_240},
            "malformed-non-ascii": lambda: {**good, sig: "v1,подпись".encode().decode("latin-1")},
            "malformed-timestamp": lambda: {**good, ts: "1e12"},
            "stale": lambda: sign(SECRET_A, body, at=now - 301),
            "future": lambda: sign(SECRET_A, body, at=now + 301),
            "body-swapped": lambda: sign(SECRET_A, self.delivery(uuid.uuid4().hex)),
            "id-swapped": lambda: {**good, sid: "msg_another"},
        }[case]()
        return Req(self.path(), body, JSON, headers)


# -- canaries --------------------------------------------------------------------------------------

SYSTEM = "canary-site"


# -- the kit ------------------------------------------------------------------------------------


class CustomKit(ChannelKit):
    kind = "custom"
    content_type = JSON

    # -- parsers

    def properties(self) -> Sequence[Property]:
        header = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["v1,", "v1,AAAA"]))
        return [
            Property(
                "custom: any body is one event or a PayloadError",
                any_body_is_one_event_or_a_payload_error,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    mutated(_seed_docs(), keys_of(_seed_docs())).map(dumps),
                ),
                examples=(
                    b"[" * 100_000,
                    dumps(message("v", "x", sent_at="2026-12-05T10:00:00")),  # no offset
                    json.dumps(message("v", "\ud800")).encode(),  # a lone surrogate
                    dumps({"type": "message", "sender": {"id": True}, "text": "x"}),
                ),
                hostile=True,
            ),
            Property(
                "custom: any signature headers are verified or a SignatureError",
                any_headers_are_verified_or_a_signature_error,
                (
                    st.fixed_dictionaries(
                        {},
                        optional={name: header.filter(bool) for name in signing.HEADERS},
                    ).map(lambda d: {k: v for k, v in d.items() if v is not None}),
                    st.binary(max_size=50),
                ),
                examples=(
                    (
                        {
                            "webhook-id": "1",
                            "webhook-timestamp": "1",
                            "webhook-signature": "v1,a,b",
                        },
                        b"x",
                    ),
                    (
                        {
                            "webhook-id": "1",
                            "webhook-timestamp": "x",
                            "webhook-signature": "garbage",
                        },
                        b"",
                    ),
                ),
                hostile=True,
            ),
            Property(
                "custom: a message round-trips",
                a_message_round_trips,
                {
                    "sender": ID,
                    "thread": st.one_of(st.none(), ID),
                    "message_id": st.one_of(st.none(), ID),
                    "text": st.text(min_size=1, max_size=300).filter(str.strip),
                    "name": st.one_of(st.none(), NAME),
                    "offset": st.one_of(st.none(), st.integers(-12 * 60, 14 * 60)),
                },
            ),
            Property(
                "custom: other types are ignored by name",
                other_types_are_ignored_by_name,
                {
                    "kind": st.text(min_size=1, max_size=80).filter(lambda k: k != "message"),
                    "value": JSON_VALUES,
                },
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = b'{"type":"message","sender":{"id":"v-1"},"text":"x","thread_id":'
        return [DeepJson("custom", head, b"}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "custom_message",
                "CustomAdapter.verify/parse (Standard Webhooks signature, one message per request)",
                fuzz,
                seeds,
                json_tokens,
            )
        ]

    # -- hostile input

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [CustomTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return ACCOUNTS

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        return AccountSpec(
            {"signing_secret": new_secret()},
            f"site-{idx}-{n}",
            {"callback_url": f"http://127.0.0.1:9/cb-{idx}-{n}", "attachment_hosts": []},
            name=f"site {idx}/{n}",
        )

    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        who: dict[str, str] = {"name": name}
        if phone is not None:
            who["phone"] = phone
        said = text if text is not None else "here is my phone number"
        return dumps(message(str(chat), said, message_id=f"m-{delivery_id}", who=who))

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        return sign(credentials["signing_secret"], body)

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        return {"signing secret": new_secret(f"CANARY-{tag}-{secrets.token_hex(4)}".encode())}

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {"custom": {"systems": {SYSTEM: values["signing secret"]}}}

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        # the secret the documented way: in the environment, not on the command line
        return cli(
            "custom",
            "connect",
            "--tenant",
            slug,
            "--system",
            SYSTEM,
            "--callback-url",
            f"{sandbox_url}/custom/callbacks/{SYSTEM}",
            "--name",
            "Canary site",
            CUSTOM_SIGNING_SECRET=values["signing secret"],
        )

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        who = {
            "name": f"{person['first name']} {person['last name']}",
            "first_name": person["first name"],
            "last_name": person["last name"],
            "email": person["e-mail"],
        }
        chat, text, mail, phone = person["chat"], person["text"], person["e-mail"], person["phone"]
        sent = utcnow() - dt.timedelta(seconds=60)

        def at(n: int) -> str:
            return (sent + dt.timedelta(seconds=n)).isoformat()

        return [
            message(
                chat, f"{text}: write to me at {mail}", message_id="m-1", who=who, sent_at=at(1)
            ),
            message(chat, "my phone", message_id="m-2", who={**who, "phone": phone}, sent_at=at(2)),
            message(
                chat, f"{text} call {phone} or {mail}", message_id="m-3", who=who, sent_at=at(3)
            ),
            # no edits on this channel: a correction refers to the message it corrects
            message(
                chat,
                f"{person['edited text']} {mail}",
                message_id="m-4",
                who=who,
                reply_to="m-1",
                sent_at=at(4),
            ),
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        r = requests.post(
            f"{sandbox_url}/custom/_deliver",
            json={"account": SYSTEM, "payload": delivery, "webhook_id": _delivery_id(delivery)},
            timeout=30,
        )
        r.raise_for_status()
        assert r.json().get("status") == 200, r.json()

    def canary_sent(self, sandbox_url: str, chat: str) -> list[str]:
        r = requests.get(
            f"{sandbox_url}/custom/_sent",
            params={"account": SYSTEM, "thread_id": chat},
            timeout=30,
        )
        r.raise_for_status()
        return [m.get("text") or "" for m in r.json()["sent"]]


def _delivery_id(delivery: Mapping[str, Any]) -> str:
    """The same message is the same delivery (a redelivery keeps its id)."""
    return "msg_" + hashlib.sha256(dumps(delivery)).hexdigest()[:24]
