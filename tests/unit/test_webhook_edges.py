# ruff: noqa: S105, S106  (fake secrets are test fixtures)
"""The adapters own their edge: the dispatcher (``bridge.webhooks``) serves
whatever a channel adapter declares — a ``GET`` verification handshake, a
plain-text answer, one app-level URL for many accounts routed by the
adapter — with no knowledge of the provider. Shown with a test channel
that uses all of it (shaped like Meta's and VK's edges), on the real app and
a real database."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

import channel_adapters
from bridge import admin, create_app
from bridge.errors import PayloadError, SignatureError
from bridge.model import (
    ConnectedAccount,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    SendResult,
    WebhookAnswer,
    WebhookRequest,
)
from bridge.pipeline.inbound.journal import normalise_pending
from bridge.schema import setting
from bridge.tables import Message
from channel_adapters.base import ChannelAdapter

APP_SECRET = "the-app-secret"


@dataclass(frozen=True)
class EdgeApp:
    app_secret: str = setting("", secret=True)
    verify_token: str = setting("", secret=True)


@dataclass(frozen=True)
class EdgeCredentials:
    verify_token: str = setting("", secret=True)


class EdgeChannel(ChannelAdapter):
    """Per-account URL: ``GET ?challenge=&token=`` handshake, posts answered
    with the text ``ok``. App URL: HMAC-SHA256 of the body with the app's
    secret, the body names the accounts (``{"to": [...], "text": ...}``)."""

    kind: ClassVar[str] = "edge"
    title: ClassVar[str] = "Edge"
    app_routed: ClassVar[bool] = True
    App: ClassVar[type[Any]] = EdgeApp
    Credentials: ClassVar[type[Any]] = EdgeCredentials

    def verify(self, request: WebhookRequest) -> None:
        if not hmac.compare_digest(
            request.header("x-token", "") or "", self.credentials.verify_token
        ):
            raise SignatureError("wrong token")

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        data = json.loads(request.body)
        mine = data.get("to", [self.account.external_id])
        if self.account.external_id not in mine:
            return []
        return [
            InboundMessage(
                channel_kind=self.kind,
                external_id=f"{data['id']}:{self.account.external_id}",
                external_user_id=str(data["from"]),
                external_thread_id=str(data["from"]),
                kind=MessageKind.TEXT,
                sent_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
                text=str(data["text"]),
            )
        ]

    def send(self, message: OutboundMessage) -> SendResult:
        return SendResult(external_ids=("1",))

    def answer(self, events: Sequence[InboundEvent]) -> WebhookAnswer:
        return WebhookAnswer.text("ok")

    def handshake(self, request: WebhookRequest) -> WebhookAnswer:
        if not hmac.compare_digest(request.query.get("token", ""), self.credentials.verify_token):
            raise SignatureError("verify token does not match")
        return WebhookAnswer.text(request.query.get("challenge", ""))

    @classmethod
    def connect(cls, values: Any) -> ConnectedAccount:
        raise NotImplementedError

    @classmethod
    def verify_app(cls, app: EdgeApp, request: WebhookRequest) -> None:
        want = hmac.new(app.app_secret.encode(), request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.header("x-signature", "") or "", want):
            raise SignatureError("app signature does not match")

    @classmethod
    def route(cls, app: EdgeApp, request: WebhookRequest) -> tuple[str, ...]:
        to = json.loads(request.body).get("to")
        if not isinstance(to, list) or not to:
            raise PayloadError("the delivery names no account")
        return tuple(str(x) for x in to)

    @classmethod
    def app_handshake(cls, app: EdgeApp, request: WebhookRequest) -> WebhookAnswer:
        if not hmac.compare_digest(request.query.get("token", ""), app.verify_token):
            raise SignatureError("verify token does not match")
        return WebhookAnswer.text(request.query.get("challenge", ""))


@pytest.fixture
def world(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setitem(channel_adapters.REGISTRY, "edge", f"{__name__}:EdgeChannel")
    (runtime.settings.mappings_dir / "m.yaml").write_text(
        "crm: hubspot\nchannels:\n  edge: {object: none, timeline: note}\n"
    )
    # the deployment's app settings, as EDGE_APP_SECRET / EDGE_VERIFY_TOKEN give them
    apps = {"edge": {"app_secret": APP_SECRET, "verify_token": "app-vt"}}
    runtime.settings = replace(runtime.settings, apps=apps)
    tenant = admin.create_tenant(runtime, slug="t", crm_kind="hubspot", mapping="m.yaml")
    accounts = {}
    for external_id in ("100", "200"):
        account = admin.add_channel_account(
            runtime,
            tenant,
            kind="edge",
            credentials={"verify_token": f"vt-{external_id}"},
            external_id=external_id,
        )
        accounts[external_id] = account
    from bridge.tables import ChannelAccount

    with runtime.transaction() as s:
        keys = {e: s.get(ChannelAccount, a).key for e, a in accounts.items()}
    return runtime, create_app(runtime=runtime).test_client(), accounts, keys


def _texts(runtime) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """The messages stored once the journal's normaliser ran (as a worker)."""
    normalise_pending(runtime)
    with runtime.transaction() as s:
        return sorted(s.execute(select(Message.channel_account_id, Message.text)).all())


def test_a_get_is_the_adapters_handshake(world) -> None:  # type: ignore[no-untyped-def]
    runtime, client, _, keys = world
    ok = client.get(f"/webhooks/edge/{keys['100']}?challenge=1158201444&token=vt-100")
    assert ok.status_code == 200 and ok.get_data(as_text=True) == "1158201444"
    assert ok.mimetype == "text/plain"
    bad = client.get(f"/webhooks/edge/{keys['100']}?challenge=x&token=vt-200")
    assert bad.status_code == 403 and bad.get_json()["error"] == "forbidden"
    app = client.get("/webhooks/edge/app?challenge=42&token=app-vt")
    assert app.status_code == 200 and app.get_data(as_text=True) == "42"


def test_a_channel_without_a_handshake_answers_405_json(world) -> None:  # type: ignore[no-untyped-def]
    runtime, client, _, _ = world
    tenant = admin.create_tenant(runtime, slug="t2", crm_kind="hubspot", mapping="m.yaml")
    account = admin.add_channel_account(
        runtime, tenant, kind="telegram", credentials={"bot_token": "1:x", "secret_token": "s"}
    )
    from bridge.tables import ChannelAccount

    with runtime.transaction() as s:
        key = s.get(ChannelAccount, account).key
    answer = client.get(f"/webhooks/telegram/{key}")
    assert answer.status_code == 405
    assert answer.get_json() == {
        "error": "method_not_allowed",
        "message": "this webhook takes POST",
    }
    assert client.get("/webhooks/telegram/app").status_code == 404  # not app-routed


def test_the_answer_is_what_the_adapter_says(world) -> None:  # type: ignore[no-untyped-def]
    runtime, client, accounts, keys = world
    raw = json.dumps({"id": "d1", "from": 7, "text": "hello"})
    answer = client.post(
        f"/webhooks/edge/{keys['200']}",
        data=raw,
        headers={"X-Token": "vt-200"},
        content_type="application/json",
    )
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "ok"
    assert _texts(runtime) == [(accounts["200"], "hello")]


def test_one_app_url_is_routed_to_each_account_it_names(world) -> None:  # type: ignore[no-untyped-def]
    runtime, client, accounts, _ = world
    raw = json.dumps({"id": "d2", "from": 9, "text": "to both", "to": ["100", "200", "999"]})
    signature = hmac.new(APP_SECRET.encode(), raw.encode(), hashlib.sha256).hexdigest()
    answer = client.post(
        "/webhooks/edge/app",
        data=raw,
        headers={"X-Signature": signature},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    # "999" is not connected here: not ours, left
    assert _texts(runtime) == sorted([(accounts["100"], "to both"), (accounts["200"], "to both")])
    again = client.post(
        "/webhooks/edge/app",
        data=raw,
        headers={"X-Signature": signature},
        content_type="application/json",
    )
    assert again.status_code == 200 and len(_texts(runtime)) == 2  # a redelivery: nothing new
    forged = client.post(
        "/webhooks/edge/app",
        data=raw.replace("both", "all!"),
        headers={"X-Signature": signature},
        content_type="application/json",
    )
    assert forged.status_code == 403 and len(_texts(runtime)) == 2
    nobody = json.dumps({"id": "d3", "from": 9, "text": "x", "to": []})
    signed = hmac.new(APP_SECRET.encode(), nobody.encode(), hashlib.sha256).hexdigest()
    empty = client.post(
        "/webhooks/edge/app",
        data=nobody,
        headers={"X-Signature": signed},
        content_type="application/json",
    )
    assert empty.status_code == 400 and empty.get_json()["error"] == "invalid_payload"
