# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The kit of the test-only app-routed channel (``tests.support.fakes
.FakeAppChannel``, shaped like Meta's): the hostile-input suite registers
it for its world so that the routes no production adapter uses yet — an
account URL's GET handshake, the app-routed URL and its handshake — are
attacked like every other (forged verify tokens and signatures: a 4xx JSON
error, nothing changed)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.kits.base import (
    MARK,
    AccountSpec,
    ChannelKit,
    FuzzTarget,
    HostileTarget,
    Property,
    Req,
)
from tests.kits.common import JSON
from tests.support.fakes import FakeAppChannel

APP = {"app_secret": "fakeapp-app-secret-1", "verify_token": "fakeapp-app-verify-1"}
ACCOUNTS = {
    "A": AccountSpec({"verify_token": "fakeapp-verify-A-0123"}, "PN-1001"),
    "B": AccountSpec({"verify_token": "fakeapp-verify-B-4567"}, "PN-2002"),
}
SIGNATURE = "X-Hub-Signature-256"


def sign(body: bytes, secret: str = APP["app_secret"]) -> str:
    return FakeAppChannel.signature(secret, body)


def delivery(uid: str, phone_number_id: str) -> bytes:
    """A WhatsApp-Cloud-shaped delivery of one text message to an account."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "79990001234"}],
        "messages": [
            {
                "from": "79990001234",
                "id": f"wamid.{uid}",
                "timestamp": "1740820600",
                "type": "text",
                "text": {"body": f"{MARK} hello"},
            }
        ],
    }
    entry = {"id": "waba-1", "changes": [{"field": "messages", "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def signature_attacks(body: Callable[[], bytes]) -> dict[str, Callable[[bytes], dict[str, str]]]:
    """Attacks on ``X-Hub-Signature-256`` for a body (``body()``: another one)."""
    return {
        "forged": lambda raw: {SIGNATURE: sign(raw, "not-the-app-secret")},
        "missing": lambda raw: {},
        "empty": lambda raw: {SIGNATURE: ""},
        "malformed-no-prefix": lambda raw: {SIGNATURE: sign(raw).removeprefix("sha256=")},
        "malformed-short": lambda raw: {SIGNATURE: sign(raw)[:20]},
        "malformed-huge": lambda raw: {SIGNATURE: "a" * 10_240},
        "malformed-non-ascii": lambda raw: {SIGNATURE: "подпись".encode().decode("latin-1")},
        "body-swapped": lambda raw: {SIGNATURE: sign(body())},
    }


class FakeAppAccountTarget(HostileTarget):
    """An account's own URL: the app's signature, and the body must name
    this account."""

    name = "fakeapp"
    kind = "fakeapp"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        **{case: 403 for case in signature_attacks(bytes)},
        "another-accounts-delivery": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/fakeapp/{self.world.account_keys['fakeapp'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return delivery(uid, str(ACCOUNTS[tenant].external_id))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return {SIGNATURE: sign(body)}

    def auth_attack(self, case: str) -> Req:
        if case == "another-accounts-delivery":  # B's, validly signed, at A's URL
            raw = self.delivery(uuid.uuid4().hex, "B")
            return Req(self.path(), raw, JSON, {SIGNATURE: sign(raw)})
        raw = self.delivery(uuid.uuid4().hex)
        headers = signature_attacks(lambda: self.delivery(uuid.uuid4().hex))[case](raw)
        return Req(self.path(), raw, JSON, headers)


def handshake_query(token: str, challenge: str, mode: str = "subscribe") -> dict[str, str]:
    return {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": challenge}


TOKEN_ATTACKS: dict[str, Callable[[str], dict[str, str]]] = {
    "forged-token": lambda challenge: handshake_query("not-the-verify-token", challenge),
    "missing-token": lambda challenge: {"hub.mode": "subscribe", "hub.challenge": challenge},
    "empty-token": lambda challenge: handshake_query("", challenge),
    "wrong-mode": lambda challenge: handshake_query(
        str(ACCOUNTS["A"].credentials["verify_token"]), challenge, mode="unsubscribe"
    ),
    "malformed-huge": lambda challenge: handshake_query("A" * 8_000, challenge),
    "malformed-non-ascii": lambda challenge: handshake_query("токен\x00" + MARK, challenge),
}


class FakeAppHandshakeTarget(HostileTarget):
    """The account URL's ``GET``: echo ``hub.challenge`` for the account's
    own verify token only."""

    name = "fakeapp-handshake"
    kind = "fakeapp"
    endpoint = "handshake"
    auth_cases = {
        **{case: 403 for case in TOKEN_ATTACKS},
        "other-accounts-token": 403,
        "app-token-at-account-url": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/fakeapp/{self.world.account_keys['fakeapp'][tenant]}"

    def genuine(self, uid: str, tenant: str = "A", path_of: str | None = None) -> Req:
        token = str(ACCOUNTS[tenant].credentials["verify_token"])
        query = handshake_query(token, f"{MARK}-{uid[:8]}")
        return Req(self.path(path_of or tenant), method="GET", query=query)

    def answer(self, req: Req) -> bytes:
        return req.query["hub.challenge"].encode()

    def auth_attack(self, case: str) -> Req:
        challenge = f"{MARK}-challenge"
        query = {
            "other-accounts-token": lambda: handshake_query(
                str(ACCOUNTS["B"].credentials["verify_token"]), challenge
            ),
            "app-token-at-account-url": lambda: handshake_query(APP["verify_token"], challenge),
            **{name: (lambda f=f: f(challenge)) for name, f in TOKEN_ATTACKS.items()},
        }[case]()
        return Req(self.path(), method="GET", query=query)


class FakeAppTarget(HostileTarget):
    """The app-level URL: the app's signature; the body names the accounts."""

    name = "fakeapp-app"
    kind = "fakeapp"
    endpoint = "app"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {case: 403 for case in signature_attacks(bytes)}

    def path(self, tenant: str = "A") -> str:
        return "/webhooks/fakeapp/app"

    def unknown_path(self) -> str:  # one URL for every account: no key to get wrong
        raise NotImplementedError

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return delivery(uid, str(ACCOUNTS[tenant].external_id))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return {SIGNATURE: sign(body)}

    def auth_attack(self, case: str) -> Req:
        raw = self.delivery(uuid.uuid4().hex)
        headers = signature_attacks(lambda: self.delivery(uuid.uuid4().hex))[case](raw)
        return Req(self.path(), raw, JSON, headers)


class FakeAppAppHandshakeTarget(HostileTarget):
    """The app URL's ``GET``: echo ``hub.challenge`` for the app's token only."""

    name = "fakeapp-app-handshake"
    kind = "fakeapp"
    endpoint = "app-handshake"
    auth_cases = {**{case: 403 for case in TOKEN_ATTACKS}, "account-token-at-app-url": 403}

    def path(self, tenant: str = "A") -> str:
        return "/webhooks/fakeapp/app"

    def unknown_path(self) -> str:
        raise NotImplementedError

    def genuine(self, uid: str, tenant: str = "A", path_of: str | None = None) -> Req:
        query = handshake_query(APP["verify_token"], f"{MARK}-{uid[:8]}")
        return Req(self.path(), method="GET", query=query)

    def answer(self, req: Req) -> bytes:
        return req.query["hub.challenge"].encode()

    def auth_attack(self, case: str) -> Req:
        challenge = f"{MARK}-challenge"
        if case == "account-token-at-app-url":
            token = str(ACCOUNTS["A"].credentials["verify_token"])
            return Req(self.path(), method="GET", query=handshake_query(token, challenge))
        return Req(self.path(), method="GET", query=TOKEN_ATTACKS[case](challenge))


class FakeAppKit(ChannelKit):
    """Only the hostile-input hooks: the channel is a test double, outside
    the registries the other suites iterate."""

    kind = "fakeapp"

    def properties(self) -> Sequence[Property]:
        return ()

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return ()

    def hostile_app(self) -> Mapping[str, str]:
        return dict(APP)

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [
            FakeAppAccountTarget,
            FakeAppHandshakeTarget,
            FakeAppTarget,
            FakeAppAppHandshakeTarget,
        ]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return ACCOUNTS

    def _not_here(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the fake app channel is only attacked, not driven")

    isolation_account = _not_here
    customer_message = _not_here
    prove = _not_here
    canary_values = _not_here
    canary_sandbox = _not_here
    canary_connect = _not_here
    canary_deliveries = _not_here
    canary_deliver = _not_here
    canary_sent = _not_here
