# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The web chat channel's kit: the bridge's own widget
(``channel_adapters/webchat``). A hosted channel: its client posts to the
widget API (``/widget/<key>/...``), which composes the checked body and
journals it through the same hooks as the account's generic URL,
``POST /webhooks/webchat/<key>``. A request is proven by a visitor token
(``Authorization: Bearer``, itsdangerous, signed with the widget's
``token_secret`` and bound to its ``widget_id``) and the page's ``Origin``
(one of the widget's sites); a body naming another visitor than the
token's is refused too. The suites attack the generic URL here; the widget
API's own routes are tested in ``tests/unit/test_webchat_api.py``.

The canaries go the documented way: ``bridge widget create`` with the
sandbox's own origin, the snippet given to the demo shop
(``sandbox/site``'s ``POST /_widget``), then the widget API as a browser on
that shop calls it (a session, the messages, the replies read back)."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import requests
from hypothesis import strategies as st
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    WebhookRequest,
)
from channel_adapters.webchat import WebChatAdapter, tokens
from channel_adapters.webchat.inbound import UTM_KEYS
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
    json_tokens,
    keys_of,
    mutated,
)

#: the page every kit widget runs on
ORIGIN = "https://shop.kit.example"
#: the visitor of the parser's requests
VISITOR = "kit-visitor-00000001"


def visitor_of(chat: int | str) -> str:
    """A customer's visitor id (the widget's are random; a kit's are named)."""
    return f"kit-visitor-{int(chat):08d}" if str(chat).isdigit() else f"kit-visitor-{chat}"


def token(credentials: Mapping[str, str], visitor: str) -> str:
    return tokens.visitor_token(credentials["token_secret"], credentials["widget_id"], visitor)


def proof(credentials: Mapping[str, str], visitor: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(credentials, visitor)}", "Origin": ORIGIN}


def settings() -> dict[str, Any]:
    return {"origins": [ORIGIN]}


def message(visitor: str, text: str, client_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "message", "visitor": visitor, "id": client_id, "text": text, **fields}


def _body_visitor(body: bytes) -> str:
    """The visitor a body names (the token must be theirs); a kit default
    for a body that names none (it is refused at the edge, 400)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return VISITOR
    found = data.get("visitor") if isinstance(data, dict) else None
    return found if isinstance(found, str) and tokens.VISITOR_RE.fullmatch(found) else VISITOR


# -- the parser's account ------------------------------------------------------------------

CREDENTIALS = {"token_secret": "kit-webchat-parser-secret-0123456789", "widget_id": "kit-widget"}


@cache
def adapter() -> WebChatAdapter:
    account = ChannelAccountInfo(1, "webchat", "widget-key", CREDENTIALS, settings())
    return WebChatAdapter(account)


def file_ref(name: str = "a.pdf", mime: str = "application/pdf") -> str:
    ref = tokens.FileRef(str(uuid.UUID(int=len(name))), name, mime, 1234)
    return adapter().file_ref(VISITOR, ref)


def request(body: bytes, headers: Mapping[str, str] | None = None) -> WebhookRequest:
    proven = dict(headers) if headers is not None else proof(CREDENTIALS, _body_visitor(body))
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/webchat/widget-key",
        headers={"content-type": JSON, **{k.lower(): v for k, v in proven.items()}},
        body=body,
        received_at=T0,
    )


def seeds() -> list[bytes]:
    payloads: list[Any] = [
        message(VISITOR, "Hello", "c-seed-0001"),
        message(
            VISITOR,
            "Где мой заказ? 📦",
            "c-seed-0002",
            files=[file_ref(), file_ref("b.png", "image/png")],
            profile={"name": "Анна", "phone": "+79161234567", "email": "anna@example.org"},
            consent={"given": True, "version": "1", "at": "2026-12-05T10:00:00Z"},
            context={
                "page_url": "https://shop.kit.example/cart",
                "page_title": "Cart",
                "referrer": "https://ya.ru/",
                "language": "ru",
                "timezone": "Europe/Moscow",
                "utm_first": {"utm_source": "google", "gclid": "g-1"},
                "utm_last": {"utm_source": "yandex"},
            },
        ),
        {"type": "read", "visitor": VISITOR, "read_up_to": 7, "read": [str(uuid.UUID(int=1))]},
        {"type": "read", "visitor": VISITOR, "read_up_to": 3, "read": []},
    ]
    return [dumps(p) for p in payloads]


def check_events(events: Any) -> None:
    """A message, or read receipts (one status per reply named)."""
    if isinstance(events, list) and events and all(isinstance(e, OutboundStatus) for e in events):
        for event in events:
            if event.status != "read" or event.bridge_id != event.channel_message_id:
                raise BrokenInvariant(f"a read receipt names its reply: {event!r}")
        return
    check_channel_events(events, exactly=1)


def parse(body: bytes) -> list[Any] | None:
    """verify (proven for the body's visitor: passes unless the body names
    a visitor that is no visitor id) then edge and parse; None for a
    documented 4xx."""
    channel = adapter()
    req = request(body)
    try:
        channel.verify(req)
        channel.edge(req)
        events = channel.parse(req)
    except (PayloadError, SignatureError) as exc:
        assert 400 <= exc.status_code < 500
        return None
    check_events(events)
    assert channel.parse(req) == events  # deterministic
    return events


def fuzz(data: bytes) -> None:
    channel = adapter()
    req = request(data)
    try:
        channel.verify(req)
        channel.edge(req)
    except WebhookError:
        pass
    try:
        events = channel.parse(req)
    except WebhookError:
        return
    check_events(events)


# -- properties ----------------------------------------------------------------------------

CLIENT_ID = st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z")
MARKS = st.dictionaries(
    st.sampled_from(UTM_KEYS),
    st.text(min_size=1, max_size=50).filter(lambda s: s.isprintable() and s.strip() == s),
    max_size=4,
)


@cache
def _seed_docs() -> list[Any]:
    return [json.loads(s) for s in seeds()]


def any_body_is_events_or_a_4xx(body: bytes) -> None:
    parse(body)


def any_headers_are_verified_or_a_signature_error(headers: dict[str, str], body: bytes) -> None:
    try:
        adapter().verify(request(body, headers))
    except SignatureError:
        return


def a_message_round_trips(
    client_id: str, text: str, name: str | None, first: dict[str, str], last: dict[str, str]
) -> None:
    profile = {"name": name} if name is not None else {}
    body = message(
        VISITOR,
        text,
        client_id,
        profile=profile,
        context={"utm_first": first, "utm_last": last},
    )
    events = parse(dumps(body))
    assert events is not None
    (event,) = events
    assert isinstance(event, InboundMessage) and event.kind is MessageKind.TEXT
    assert (event.external_id, event.provider_message_id) == (f"{VISITOR}:{client_id}", client_id)
    assert event.external_thread_id == event.external_user_id == VISITOR
    assert event.text == text and event.sent_at == T0
    shown = " ".join("".join(c if c.isprintable() else " " for c in name or "").split())
    assert event.profile.display_name == (shown or None)
    assert dict(event.profile.utm) == {**last, **{f"first_{k}": v for k, v in first.items()}}
    assert event.raw == body


def read_receipts_name_each_reply(seq: int, uids: list[uuid.UUID]) -> None:
    body = {"type": "read", "visitor": VISITOR, "read_up_to": seq, "read": [str(u) for u in uids]}
    events = parse(dumps(body))
    assert events is not None
    if not uids:
        assert events == [IgnoredEvent("webchat", f"{VISITOR}:read:{seq}", "read")]
        return
    assert [(e.bridge_id, e.status) for e in events] == [(str(u), "read") for u in uids]  # type: ignore[union-attr]


def a_file_of_another_visitor_never_parses(name: str) -> None:
    theirs = adapter().file_ref(
        "kit-visitor-someone-else", tokens.FileRef("u-1", name or "f", "application/pdf", 1)
    )
    body = message(VISITOR, "", "c-theirs-01", files=[theirs])
    assert parse(dumps(body)) is None


# -- hostile input -------------------------------------------------------------------------

ACCOUNT_CREDENTIALS = {
    name: {"token_secret": f"hostile-webchat-{name}-secret-0123456789", "widget_id": f"w-{name}"}
    for name in ("A", "B")
}
ACCOUNTS = {
    name: AccountSpec(dict(creds), f"shop-{name.lower()}.kit.example", settings())
    for name, creds in ACCOUNT_CREDENTIALS.items()
}


class _OldSigner(TimestampSigner):
    """Signs as if 401 days ago (an expired visitor token)."""

    def get_timestamp(self) -> int:
        return int(time.time()) - 401 * 24 * 3600


def _expired(credentials: Mapping[str, str], visitor: str) -> str:
    serializer = URLSafeTimedSerializer(
        credentials["token_secret"], salt=tokens.VISITOR_SALT, signer=_OldSigner
    )
    return str(serializer.dumps({"a": credentials["widget_id"], "v": visitor}))


class WebChatTarget(HostileTarget):
    name = "webchat"
    kind = "webchat"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        "forged": 403,
        "other-accounts-token": 403,
        "other-widget-id": 403,
        "expired": 403,
        "missing-token": 403,
        "not-bearer": 403,
        "malformed-token": 403,
        "huge-token": 403,
        "non-ascii-token": 403,
        "missing-origin": 403,
        "other-origin": 403,
        "another-visitors-token": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/webchat/{self.world.account_keys['webchat'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return dumps(message(visitor_of(7001), f"{MARK} hello", f"c-{uid}"[:64]))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return proof(ACCOUNT_CREDENTIALS[tenant], _body_visitor(body))

    def auth_attack(self, case: str) -> Req:
        body = self.delivery(uuid.uuid4().hex)
        own = ACCOUNT_CREDENTIALS["A"]
        visitor = visitor_of(7001)
        good = proof(own, visitor)

        def bearer(value: str) -> dict[str, str]:
            return {**good, "Authorization": value}

        headers = {
            "forged": lambda: proof({**own, "token_secret": "not-the-secret-0123456789"}, visitor),
            "other-accounts-token": lambda: proof(ACCOUNT_CREDENTIALS["B"], visitor),
            "other-widget-id": lambda: proof({**own, "widget_id": "w-B"}, visitor),
            "expired": lambda: bearer(f"Bearer {_expired(own, visitor)}"),
            "missing-token": lambda: {"Origin": ORIGIN},
            "not-bearer": lambda: bearer(f"Basic {token(own, visitor)}"),
            "malformed-token": lambda: bearer("Bearer a.b.c"),
            "huge-token": lambda: bearer("Bearer " + "A" * 10_240),
            "non-ascii-token": lambda: bearer("Bearer токен".encode().decode("latin-1")),
            "missing-origin": lambda: {"Authorization": good["Authorization"]},
            "other-origin": lambda: {**good, "Origin": "https://evil.example"},
            "another-visitors-token": lambda: proof(own, visitor_of(7002)),
        }[case]()
        return Req(self.path(), body, JSON, headers)


# -- canaries ------------------------------------------------------------------------------

_SRC = re.compile(r'<script src="(?P<src>[^"]+)" async></script>')


class WebChatKit(ChannelKit):
    kind = "webchat"
    content_type = JSON

    def __init__(self) -> None:
        #: the canary customers' visitor tokens and ids, by widget and chat
        #: (one kit serves every canary run of the process)
        self._visitors: dict[tuple[str, str], tuple[str, str]] = {}
        self._last_api = ""
        self._lock = threading.Lock()

    # -- parsers

    def properties(self) -> Sequence[Property]:
        header = st.one_of(st.none(), st.text(max_size=60))
        return [
            Property(
                "webchat: any body is events or a 4xx",
                any_body_is_events_or_a_4xx,
                st.one_of(
                    st.binary(max_size=200),
                    JSON_VALUES.map(dumps),
                    mutated(_seed_docs(), keys_of(_seed_docs())).map(dumps),
                ),
                examples=(
                    b"[" * 100_000,
                    json.dumps(message(VISITOR, "\ud800", "c-00000001")).encode(),
                    json.dumps(message(VISITOR, "x", "c-00000001", consent={"given": 1})).encode(),
                    dumps(message(VISITOR, "x", "c-00000001", files=["not-a-ref"])),
                    dumps({"type": "read", "visitor": VISITOR, "read_up_to": True}),
                    dumps(message("kit-visitor-someone-else", "x", "c-00000001")),
                ),
                hostile=True,
            ),
            Property(
                "webchat: any token and origin headers are verified or a SignatureError",
                any_headers_are_verified_or_a_signature_error,
                (
                    st.fixed_dictionaries(
                        {}, optional={"authorization": header, "origin": header}
                    ).map(lambda d: {k: v for k, v in d.items() if v is not None}),
                    st.binary(max_size=50),
                ),
                examples=(
                    ({"authorization": "Bearer ", "origin": ORIGIN}, b"{}"),
                    ({"authorization": "Bearer a.b", "origin": ORIGIN}, b"x"),
                ),
                hostile=True,
            ),
            Property(
                "webchat: a message round-trips",
                a_message_round_trips,
                {
                    "client_id": CLIENT_ID,
                    "text": st.text(min_size=1, max_size=300).filter(str.strip),
                    "name": st.one_of(st.none(), NAME),
                    "first": MARKS,
                    "last": MARKS,
                },
            ),
            Property(
                "webchat: a read receipt names each reply",
                read_receipts_name_each_reply,
                {"seq": st.integers(0, 2**40), "uids": st.lists(st.uuids(), max_size=5)},
            ),
            Property(
                "webchat: another visitor's upload never parses",
                a_file_of_another_visitor_never_parses,
                st.text(max_size=30),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = (
            b'{"type":"message","visitor":"' + VISITOR.encode() + b'","id":"c-deep-0001",'
            b'"text":"x","context":'
        )
        return [DeepJson("webchat", head, b"}", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "webchat_message",
                "WebChatAdapter.verify/edge/parse (a visitor token, one message or receipt)",
                fuzz,
                seeds,
                json_tokens,
            )
        ]

    # -- hostile input

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [WebChatTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return ACCOUNTS

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        return AccountSpec(
            {"token_secret": tokens.new_secret(), "widget_id": tokens.new_widget_id()},
            f"shop-{idx}-{n}.kit.example",
            settings(),
            name=f"widget {idx}/{n}",
        )

    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        profile: dict[str, str] = {"name": name}
        if phone is not None:
            profile["phone"] = phone
        said = text if text is not None else "here is my phone number"
        return dumps(message(visitor_of(chat), said, f"c-{delivery_id:08d}", profile=profile))

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        return proof(credentials, _body_visitor(body))

    def forge(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        """The token almost right (its signature cut short), the origin right."""
        proven = self.prove(credentials, body)
        return {**proven, "Authorization": proven["Authorization"][:-1]}

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        # the widget's secret is generated by `bridge widget create`, not
        # given: the canary run finds it in the stored credentials
        return {}

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {}

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        site = urlsplit(sandbox_url)
        origin = f"{site.scheme}://{site.netloc}"
        # the shop's origin, where the widget runs; the kit's, that its
        # proofs name (the refused requests go straight to the bridge)
        out = cli(
            "widget", "create", "--tenant", slug, "--origin", origin, "--origin", ORIGIN,
            "--name", "Canary",
        )  # fmt: skip
        found = _SRC.search(out)
        assert found, out
        # the site owner pastes the snippet: the demo shop embeds it
        r = requests.post(f"{sandbox_url}/site/_widget", json={"src": found["src"]}, timeout=30)
        r.raise_for_status()
        return out

    def _api(self, sandbox_url: str) -> tuple[str, str]:
        """The widget API's base URL (from the script the shop embeds) and
        the shop's origin (the pages the widget runs on)."""
        r = requests.get(f"{sandbox_url}/site/_widget", timeout=30)
        r.raise_for_status()
        src = r.json()["src"]
        site = urlsplit(sandbox_url)
        return src.removesuffix(".js"), f"{site.scheme}://{site.netloc}"

    def _visitor(self, api: str, origin: str, chat: str) -> tuple[str, str]:
        with self._lock:
            self._last_api = api
            found = self._visitors.get((api, chat))
        if found is None:
            r = requests.post(f"{api}/session", json={}, headers={"Origin": origin}, timeout=30)
            r.raise_for_status()
            found = (r.json()["token"], r.json()["visitor_id"])
            with self._lock:
                self._visitors[(api, chat)] = found
        return found

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        name = f"{person['first name']} {person['last name']}"
        chat, text, mail, phone = person["chat"], person["text"], person["e-mail"], person["phone"]
        context = {
            "page_url": "https://shop.kit.example/cart?utm_source=canary",
            "page_title": "Cart",
            "language": "en",
            "utm_last": {"utm_source": "canary"},
        }
        return [
            {
                "chat": chat,
                "body": {
                    "id": "c-canary-0001",
                    "text": f"{text}: write to me at {mail}",
                    "profile": {"name": name, "email": mail},
                    "context": context,
                },
            },
            {
                "chat": chat,
                "body": {
                    "id": "c-canary-0002",
                    "text": "my phone",
                    "profile": {"name": name, "phone": phone},
                    "context": context,
                },
            },
            {
                "chat": chat,
                "body": {
                    "id": "c-canary-0003",
                    "text": f"{text} call {phone} or {mail}",
                    "context": context,
                },
            },
            # no edits in the widget: a correction is a new message
            {
                "chat": chat,
                "body": {
                    "id": "c-canary-0004",
                    "text": f"{person['edited text']} {mail}",
                    "context": context,
                },
            },
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        """The widget on the shop's page sends it (the same id again is the
        same message: the canary's redelivery)."""
        api, origin = self._api(sandbox_url)
        bearer, _ = self._visitor(api, origin, delivery["chat"])
        r = requests.post(
            f"{api}/messages",
            json=delivery["body"],
            headers={"Origin": origin, "Authorization": f"Bearer {bearer}"},
            timeout=30,
        )
        assert r.status_code == 202, r.text

    def canary_user_id(self, person: Mapping[str, str]) -> str:
        with self._lock:
            found = self._visitors.get((self._last_api, person["chat"]))
        assert found is not None, "the canary customer has written nothing yet"
        return found[1]

    def canary_sent(self, sandbox_url: str, user: str) -> list[str]:
        """The replies the widget shows the visitor ``user``."""
        api, origin = self._api(sandbox_url)
        with self._lock:
            bearer = next(
                (t for (a, _), (t, v) in self._visitors.items() if a == api and v == user), None
            )
        assert bearer is not None, user
        r = requests.get(
            f"{api}/messages",
            params={"after": 0},
            headers={"Origin": origin, "Authorization": f"Bearer {bearer}"},
            timeout=30,
        )
        r.raise_for_status()
        return [m["text"] for m in r.json()["messages"] if m["from"] == "operator"]
