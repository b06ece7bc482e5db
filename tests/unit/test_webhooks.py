# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The webhook endpoints on the real app (Flask test client), a real database
(SQLite and, in CI, PostgreSQL) and a real Redis.

Telegram bodies follow the Bot API's ``Update`` type; HubSpot's reply
webhook is the ``OUTGOING_CHANNEL_MESSAGE_CREATED`` shape the sandbox sends
(``sandbox/hubspot/channels.py``), signed with HubSpot's v3 scheme through
the sandbox's signer (``sandbox/hubspot/signature.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from bridge import admin, create_app
from bridge.db import RawWriter, make_engine, make_sessionmaker
from bridge.jobs import DELIVER_QUEUE, INGEST_QUEUE, SYNC_QUEUE
from bridge.pipeline.inbound.journal import run_normaliser
from bridge.tables import Conversation, Delivery, IgnoredEventRow, Message, Outbox
from bridge.webhooks import waker
from tests.support.harness import (
    CLIENT_SECRET,
    HUBSPOT_MAPPING,
    PORTAL_A,
    PORTAL_B,
    all_queued,
    body,
    build_runtime,
    hubspot_app,
    hubspot_signed,
    queued,
    reply_payload,
    row_counts,
    tg_update,
    write_mapping,
)

SECRET = "s3cr3t-Token_for-the-webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
JSON = "application/json"


@dataclass
class Bridge:
    rt: Any
    client: Any
    tenant_id: int
    account_id: int
    account_key: str
    tenant_key: str

    def post_update(self, data: Any, *, secret: str | None = SECRET, **kw: Any):  # type: ignore[no-untyped-def]
        raw = data if isinstance(data, bytes) else body(data)
        headers = dict(kw.pop("headers", {}))
        if secret is not None:
            headers[SECRET_HEADER] = secret
        response = self.client.post(
            kw.pop("path", f"/webhooks/telegram/{self.account_key}"),
            data=raw,
            headers=headers,
            content_type=kw.pop("content_type", JSON),
        )
        assert waker(self.rt).flush()  # the wake-up goes from the waker's thread
        return response

    def normalise(self) -> str:
        """What the worker's normaliser job does with the journaled rows."""
        return run_normaliser(self.rt, self.account_id)

    def journal(self) -> list[tuple[str, str, str | None]]:
        with self.rt.transaction() as s:
            rows = s.execute(
                select(Delivery.delivery_key, Delivery.state, Delivery.reason).order_by(Delivery.id)
            ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    @property
    def crm_url(self) -> str:
        return f"/webhooks/crm/hubspot/{self.tenant_key}"

    def post_crm(self, payload: dict[str, Any], *, key: str | None = None, headers=None, **sign):  # type: ignore[no-untyped-def]
        path = f"/webhooks/crm/hubspot/{key or self.tenant_key}"
        raw = body(payload)
        if headers is None:
            headers = hubspot_signed(f"{self.rt.settings.public_url}{path}", raw, **sign)
        return self.client.post(path, data=raw, headers=headers)


def _keys(rt, tenant_id: int, account_id: int | None = None) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    from bridge.tables import ChannelAccount, Tenant

    with rt.transaction() as s:
        tenant_key = s.get(Tenant, tenant_id).webhook_key
        account_key = s.get(ChannelAccount, account_id).key if account_id else None
    return tenant_key, account_key


@pytest.fixture
def bridge(settings, redis_conn):  # type: ignore[no-untyped-def]
    with build_runtime(settings, redis_conn, apps={"hubspot": hubspot_app()}) as rt:
        write_mapping(rt, "hub.yaml", HUBSPOT_MAPPING)
        tenant_id = admin.create_tenant(
            rt,
            slug="acme",
            crm_kind="hubspot",
            mapping="hub.yaml",
            account_id=str(PORTAL_A),
            credentials={"type": "private_app", "access_token": "pat-na1-unused"},
        )
        account_id = admin.add_channel_account(
            rt,
            tenant_id,
            kind="telegram",
            credentials={"bot_token": "123456:unused", "secret_token": SECRET},
            external_id="123456",
        )
        tenant_key, account_key = _keys(rt, tenant_id, account_id)
        app = create_app(runtime=rt)
        yield Bridge(rt, app.test_client(), tenant_id, account_id, account_key, tenant_key)


def _error(response) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.mimetype == JSON, response.data[:200]
    data = response.get_json()
    assert set(data) == {"error", "message"}, data
    assert data["error"] and data["message"]
    return data


def _nothing_stored(bridge: Bridge) -> None:
    counts = row_counts(bridge.rt)
    assert (counts["messages"], counts["ignored"], counts["conversations"], counts["contacts"]) == (
        0,
        0,
        0,
        0,
    ), counts
    assert bridge.journal() == []
    assert all_queued(bridge.rt.redis) == {SYNC_QUEUE: [], DELIVER_QUEUE: []}
    assert queued(bridge.rt.redis, INGEST_QUEUE) == []


# -- Telegram: accepted updates ----------------------------------------------------------


def test_valid_update_is_journaled_then_normalised_into_one_message_and_one_job(
    bridge: Bridge,
) -> None:
    response = bridge.post_update(tg_update(500_000_001, text="Hello, do you deliver?"))
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    # the 2xx means the raw delivery is committed; nothing is parsed yet
    assert bridge.journal() == [("500000001", "new", None)]
    assert row_counts(bridge.rt)["messages"] == 0
    (wake,) = queued(bridge.rt.redis, INGEST_QUEUE)
    assert wake.startswith(f"normalise-{bridge.account_id}-")
    assert queued(bridge.rt.redis) == []
    assert bridge.normalise() == "normalised 1"
    assert bridge.journal() == [("500000001", "normalised", None)]
    with bridge.rt.transaction() as s:
        (message,) = s.scalars(select(Message)).all()
        outbox_row = s.scalars(select(Outbox)).one()
        (delivery,) = s.scalars(select(Delivery)).all()
    assert (message.direction, message.status, message.text, message.dedupe_key) == (
        "in",
        "pending",
        "Hello, do you deliver?",
        "500000001",
    )
    assert message.channel_account_id == bridge.account_id and message.tenant_id == bridge.tenant_id
    assert delivery.body == body(tg_update(500_000_001, text="Hello, do you deliver?"))
    assert delivery.normalised_at is not None and delivery.attempts == 1
    assert "late" not in message.payload
    assert queued(bridge.rt.redis) == [outbox_row.last_job_id]
    assert queued(bridge.rt.redis, DELIVER_QUEUE) == []


def test_redelivered_update_changes_nothing(bridge: Bridge) -> None:
    update = tg_update(500_000_001, text="Hello")
    assert bridge.post_update(update).status_code == 200
    again_before_parse = bridge.post_update(update)  # before the worker ran
    assert again_before_parse.status_code == 200 and bridge.journal() == [
        ("500000001", "new", None)
    ]
    assert len(queued(bridge.rt.redis, INGEST_QUEUE)) == 1  # no second wake-up
    bridge.normalise()
    before = (row_counts(bridge.rt), all_queued(bridge.rt.redis))
    with bridge.rt.transaction() as s:
        version = s.scalars(select(Outbox)).one().version
    again = bridge.post_update(update)
    assert again.status_code == 200 and again.get_json() == {"ok": True}
    assert bridge.normalise() == "normalised 0"
    assert (row_counts(bridge.rt), all_queued(bridge.rt.redis)) == before
    assert bridge.journal() == [("500000001", "normalised", None)]
    with bridge.rt.transaction() as s:
        assert s.scalars(select(Outbox)).one().version == version


def test_burst_for_one_chat_is_five_rows_in_arrival_order_and_one_job(bridge: Bridge) -> None:
    for i in (3, 1, 4, 0, 2):  # update ids out of order: the arrival order counts
        response = bridge.post_update(tg_update(700 + i, text=f"part {i}"))
        assert response.status_code == 200
    assert len(queued(bridge.rt.redis, INGEST_QUEUE)) == 1  # one wake-up for the burst
    bridge.normalise()
    with bridge.rt.transaction() as s:
        rows = s.execute(select(Message.seq, Message.text).order_by(Message.seq)).all()
        conversations = s.scalars(select(Conversation)).all()
    assert [tuple(r) for r in rows] == [
        (seq + 1, f"part {i}") for seq, i in enumerate((3, 1, 4, 0, 2))
    ]
    assert len(conversations) == 1
    assert len(queued(bridge.rt.redis)) == 1


def test_two_chats_get_two_conversations_and_two_jobs(bridge: Bridge) -> None:
    assert bridge.post_update(tg_update(1, chat_id=1001, text="a")).status_code == 200
    assert bridge.post_update(tg_update(2, chat_id=1002, text="b")).status_code == 200
    bridge.normalise()
    assert row_counts(bridge.rt)["conversations"] == 2
    assert len(queued(bridge.rt.redis)) == 2


@pytest.mark.parametrize(
    "update,event_type",
    [
        (
            {
                "update_id": 9001,
                "inline_query": {
                    "id": "77",
                    "from": {"id": 5, "is_bot": False, "first_name": "Q"},
                    "query": "pizza",
                    "offset": "",
                },
            },
            "inline_query",
        ),
        (
            {"update_id": 9002, "a_kind_telegram_adds_tomorrow": {"anything": [1, 2, {"x": None}]}},
            "a_kind_telegram_adds_tomorrow",
        ),
        (
            {"update_id": 9003, "my_chat_member": {"chat": {"id": 1, "type": "private"}}},
            "my_chat_member",
        ),
    ],
)
def test_unknown_update_kinds_are_acknowledged_and_recorded(
    bridge: Bridge, update, event_type
) -> None:  # type: ignore[no-untyped-def]
    response = bridge.post_update(update)
    assert response.status_code == 200
    bridge.normalise()
    with bridge.rt.transaction() as s:
        (row,) = s.scalars(select(IgnoredEventRow)).all()
    assert (row.event_type, row.dedupe_key, row.channel_account_id) == (
        event_type,
        str(update["update_id"]),
        bridge.account_id,
    )
    assert bridge.journal() == [(str(update["update_id"]), "ignored", event_type)]
    assert row_counts(bridge.rt)["messages"] == 0
    assert queued(bridge.rt.redis) == []
    # a redelivery is recognised as well
    assert bridge.post_update(update).status_code == 200
    bridge.normalise()
    assert row_counts(bridge.rt)["ignored"] == 1


@pytest.mark.parametrize(
    "raw",
    [
        body({"update_id": 5, "message": "not an object"}),
        body({"update_id": 6, "message": {"message_id": 1, "chat": None, "date": 1}}),
    ],
    ids=["message-not-object", "chat-null"],
)
def test_what_only_the_parser_can_tell_is_journaled_and_rejected_with_a_reason(
    bridge: Bridge, raw: bytes
) -> None:
    """The edge checks the envelope only: a body the parser refuses is
    accepted (2xx, so Telegram stops retrying) and kept as ``rejected``
    for ``bridge reparse`` after a parser fix — never dropped."""
    response = bridge.post_update(raw)
    assert response.status_code == 200
    bridge.normalise()
    ((key, state, reason),) = bridge.journal()
    assert (state, reason) == ("rejected", "unparseable")
    assert row_counts(bridge.rt)["messages"] == 0
    with bridge.rt.transaction() as s:
        (delivery,) = s.scalars(select(Delivery)).all()
    assert delivery.body == raw and delivery.detail


# -- Telegram: rejected requests ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw,fragment",
    [
        (b'{"update_id": 1, "message": {', "JSON"),
        (b'{"update_id": 1, "message": {"text": "\xff\xfe"}}', "UTF-8"),
        (b"[1, 2, 3]", "object"),
        (b'"just a string"', "object"),
        (b"null", "object"),
        (b"", "JSON"),
        (
            body({"message": {"message_id": 1, "chat": {"id": 1, "type": "private"}, "date": 1}}),
            "update_id",
        ),
        (body({"update_id": "12", "message": {}}), "update_id"),
        (body({"update_id": True}), "update_id"),
        (b"[" * 50_000 + b"]" * 50_000, "JSON"),
    ],
    ids=[
        "truncated",
        "bad-utf8",
        "array",
        "string",
        "null",
        "empty",
        "no-update-id",
        "string-update-id",
        "bool-update-id",
        "deeply-nested",
    ],
)
def test_malformed_bodies_get_400_naming_the_problem(
    bridge: Bridge, raw: bytes, fragment: str
) -> None:
    response = bridge.post_update(raw)
    assert response.status_code == 400
    data = _error(response)
    assert fragment in data["message"]
    _nothing_stored(bridge)


@pytest.mark.parametrize(
    "secret",
    [
        "wrong-secret",
        SECRET + "x",
        SECRET[:-1],
        "",
        "sécret-ünïcode",  # latin-1 range, as WSGI hands header bytes over
        "ключ".encode().decode("latin-1"),  # raw UTF-8 bytes in the header
        "A" * 10_240,
    ],
    ids=["wrong", "longer", "prefix", "empty", "latin1", "utf8-bytes", "10kB"],
)
def test_wrong_secret_gets_403(bridge: Bridge, secret: str) -> None:
    response = bridge.post_update(tg_update(1, text="hi"), secret=secret)
    assert response.status_code == 403
    assert _error(response)["error"] == "forbidden"
    _nothing_stored(bridge)


def test_missing_secret_gets_403(bridge: Bridge) -> None:
    response = bridge.post_update(tg_update(1, text="hi"), secret=None)
    assert response.status_code == 403
    assert "missing" in _error(response)["message"]
    _nothing_stored(bridge)


def test_secret_is_checked_before_the_body_is_read(bridge: Bridge) -> None:
    # a forged request learns nothing about the parser: junk with a wrong secret is a 403
    response = bridge.post_update(b"\xff not json", secret="wrong")
    assert response.status_code == 403
    _nothing_stored(bridge)


def test_unknown_key_gets_404(bridge: Bridge) -> None:
    response = bridge.post_update(tg_update(1, text="hi"), path="/webhooks/telegram/no-such-key")
    assert response.status_code == 404
    assert _error(response)["error"] == "not_found"
    _nothing_stored(bridge)


@pytest.mark.parametrize("kind", ["whatsapp", "vk", "TELEGRAM"])
def test_key_of_another_channel_kind_gets_404(bridge: Bridge, kind: str) -> None:
    response = bridge.post_update(
        tg_update(1, text="hi"), path=f"/webhooks/{kind}/{bridge.account_key}"
    )
    assert response.status_code == 404
    _error(response)
    _nothing_stored(bridge)


def test_channel_key_is_not_a_crm_key(bridge: Bridge) -> None:
    response = bridge.post_update(
        tg_update(1, text="hi"), path=f"/webhooks/crm/hubspot/{bridge.account_key}"
    )
    assert response.status_code == 404
    _error(response)
    _nothing_stored(bridge)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_wrong_content_type_gets_415(bridge: Bridge, content_type: str) -> None:
    response = bridge.post_update(tg_update(1, text="hi"), content_type=content_type)
    assert response.status_code == 415
    assert "application/json" in _error(response)["message"]
    _nothing_stored(bridge)


def test_oversized_body_gets_413(bridge: Bridge) -> None:
    limit = bridge.rt.settings.max_body
    update = tg_update(1, text="x" * (limit + 10))
    response = bridge.post_update(update)
    assert response.status_code == 413
    _error(response)
    _nothing_stored(bridge)


def test_none_of_the_rejections_is_a_server_error(bridge: Bridge) -> None:
    """A sweep of odd but possible requests: always a deliberate answer."""
    odd = [
        (body({"update_id": 2**70, "message": {"message_id": 1}}), SECRET),
        (body({"update_id": -1, "message": {"message_id": "x", "chat": None}}), SECRET),
        (body({"update_id": 3, "message": {}}), SECRET),
        (body({"update_id": 4, "edited_message": {"chat": {"id": "abc"}}}), SECRET),
        (body({"update_id": 5, "callback_query": {"id": None}}), SECRET),
        (body({"update_id": 6}), SECRET),
        (b"\x00" * 100, SECRET),
        (
            body(
                {
                    "update_id": 7,
                    "message": {
                        "chat": {"id": 1, "type": "private"},
                        "date": "soon",
                        "message_id": 7,
                        "text": {"nested": True},
                    },
                }
            ),
            SECRET,
        ),
    ]
    for raw, secret in odd:
        response = bridge.post_update(raw, secret=secret)
        assert response.status_code in (200, 400), (
            raw[:80],
            response.status_code,
            response.data[:200],
        )
        if response.status_code == 400:
            _error(response)


# -- the CRM webhook ---------------------------------------------------------------------------


@pytest.fixture
def conversation_uid(bridge: Bridge) -> str:
    assert bridge.post_update(tg_update(1, text="I need help")).status_code == 200
    bridge.normalise()
    with bridge.rt.transaction() as s:
        return s.scalars(select(Conversation.uid)).one()


def _outbound(bridge: Bridge) -> list[Message]:
    with bridge.rt.transaction() as s:
        return list(s.scalars(select(Message).where(Message.direction == "out")))


def test_signed_reply_creates_one_outbound_message_and_a_deliver_job(
    bridge: Bridge, conversation_uid: str
) -> None:
    payload = reply_payload(
        portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-1", text="Yes, we deliver"
    )
    response = bridge.post_crm(payload)
    assert response.status_code == 200, response.data
    (message,) = _outbound(bridge)
    assert (message.text, message.dedupe_key, message.status, message.crm_message_id) == (
        "Yes, we deliver",
        "m-1",
        "pending",
        "m-1",
    )
    with bridge.rt.transaction() as s:
        row = s.scalars(select(Outbox).where(Outbox.direction == "out")).one()
    assert queued(bridge.rt.redis, DELIVER_QUEUE) == [row.last_job_id]


def test_redelivered_reply_changes_nothing(bridge: Bridge, conversation_uid: str) -> None:
    payload = reply_payload(portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-1")
    assert bridge.post_crm(payload).status_code == 200
    before = (row_counts(bridge.rt), all_queued(bridge.rt.redis))
    assert bridge.post_crm(payload).status_code == 200  # a new signature, same message
    assert (row_counts(bridge.rt), all_queued(bridge.rt.redis)) == before
    assert len(_outbound(bridge)) == 1


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize(
    "case",
    [
        "forged",
        "stale",
        "future",
        "no-signature",
        "no-timestamp",
        "no-headers",
        "junk-timestamp",
        "huge-signature",
        "body-swapped",
    ],
)
def test_unsigned_or_badly_signed_reply_gets_403(
    bridge: Bridge, conversation_uid: str, case: str
) -> None:
    payload = reply_payload(portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-1")
    raw = body(payload)
    url = f"{bridge.rt.settings.public_url}{bridge.crm_url}"
    good = hubspot_signed(url, raw)
    headers = {
        "forged": hubspot_signed(url, raw, secret="not-the-client-secret"),
        "stale": hubspot_signed(url, raw, now_ms=_now_ms() - 301_000),
        "future": hubspot_signed(url, raw, now_ms=_now_ms() + 301_000),
        "no-signature": {k: v for k, v in good.items() if k != "X-HubSpot-Signature-v3"},
        "no-timestamp": {k: v for k, v in good.items() if k != "X-HubSpot-Request-Timestamp"},
        "no-headers": {"Content-Type": JSON},
        "junk-timestamp": {**good, "X-HubSpot-Request-Timestamp": "soon\u00e9"},
        "huge-signature": {**good, "X-HubSpot-Signature-v3": "A" * 10_240},
        "body-swapped": hubspot_signed(
            url,
            body(
                reply_payload(portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-other")
            ),
        ),
    }[case]
    response = bridge.post_crm(payload, headers=headers)
    assert response.status_code == 403
    assert _error(response)["error"] == "forbidden"
    assert _outbound(bridge) == []
    assert queued(bridge.rt.redis, DELIVER_QUEUE) == []


def test_reply_inside_the_window_is_accepted(bridge: Bridge, conversation_uid: str) -> None:
    # the same request 4 minutes old is still HubSpot's (the window is 300 s)
    payload = reply_payload(portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-1")
    assert bridge.post_crm(payload, now_ms=_now_ms() - 240_000).status_code == 200
    assert len(_outbound(bridge)) == 1


def test_reply_for_another_portal_gets_403(bridge: Bridge, conversation_uid: str) -> None:
    # the client secret is app-wide: a valid signature does not prove the tenant
    payload = reply_payload(portal_id=PORTAL_B, thread_uid=conversation_uid, message_id="m-1")
    response = bridge.post_crm(payload)
    assert response.status_code == 403
    assert "portal" in _error(response)["message"]
    assert _outbound(bridge) == []


def test_reply_without_portal_gets_403(bridge: Bridge, conversation_uid: str) -> None:
    payload = reply_payload(portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-1")
    del payload["portalId"]
    assert bridge.post_crm(payload).status_code == 403
    assert _outbound(bridge) == []


def test_another_tenants_key_cannot_touch_this_tenant(
    bridge: Bridge, conversation_uid: str
) -> None:
    other = admin.create_tenant(
        bridge.rt,
        slug="other",
        crm_kind="hubspot",
        mapping="hub.yaml",
        account_id=str(PORTAL_B),
        credentials={"type": "private_app", "access_token": "pat-na1-other"},
    )
    other_key, _ = _keys(bridge.rt, other)
    # this tenant's payload, validly signed, sent to the other tenant's URL
    payload = reply_payload(portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-1")
    response = bridge.post_crm(payload, key=other_key)
    assert response.status_code in (403, 404)
    _error(response)
    # the other portal's payload naming this tenant's conversation: routed
    # only among the other tenant's conversations, i.e. nowhere
    payload = reply_payload(portal_id=PORTAL_B, thread_uid=conversation_uid, message_id="m-2")
    response = bridge.post_crm(payload, key=other_key)
    assert response.status_code < 500
    assert _outbound(bridge) == []
    assert queued(bridge.rt.redis, DELIVER_QUEUE) == []


def test_unknown_tenant_key_or_wrong_crm_gets_404(bridge: Bridge, conversation_uid: str) -> None:
    payload = reply_payload(portal_id=PORTAL_A, thread_uid=conversation_uid, message_id="m-1")
    assert bridge.post_crm(payload, key="no-such-key").status_code == 404
    raw = body(payload)
    path = f"/webhooks/crm/amocrm/{bridge.tenant_key}"
    headers = hubspot_signed(f"{bridge.rt.settings.public_url}{path}", raw)
    response = bridge.client.post(path, data=raw, headers=headers)
    assert response.status_code == 404
    _error(response)
    assert _outbound(bridge) == []


def test_crm_webhook_malformed_body_is_400_not_500(bridge: Bridge) -> None:
    for raw in (b"{not json", b"[]", b'"x"', b"[1]"):
        headers = hubspot_signed(f"{bridge.rt.settings.public_url}{bridge.crm_url}", raw)
        response = bridge.client.post(bridge.crm_url, data=raw, headers=headers)
        assert response.status_code == 400, (raw, response.data)
        _error(response)
    assert _outbound(bridge) == []


# -- the database is away -----------------------------------------------------------------------


UNREACHABLE_DB = "postgresql+psycopg://bridge@127.0.0.1:1/nowhere?connect_timeout=2"


def _point_at(rt, url: str) -> Any:  # type: ignore[no-untyped-def]
    """Swap the runtime's engines and session factory (what the journal's
    insert, its reads and every transaction use)."""
    saved = rt.sessions, rt.engine, rt.read_engine, rt.raw_writer
    engine = make_engine(url)
    rt.__dict__.update(
        sessions=make_sessionmaker(engine),
        engine=engine,
        read_engine=engine,
        raw_writer=RawWriter(url),
    )
    return saved


def test_database_outage_is_503_with_retry_after_and_the_retry_is_accepted(bridge: Bridge) -> None:
    update = tg_update(42, text="during the outage")
    assert bridge.post_update(tg_update(41, text="warm the cache")).status_code == 200
    saved = _point_at(bridge.rt, UNREACHABLE_DB)
    try:
        response = bridge.post_update(update)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert _error(response)["error"] == "unavailable"
        crm = bridge.post_crm(reply_payload(portal_id=PORTAL_A, thread_uid="x", message_id="m"))
        assert crm.status_code == 503 and "Retry-After" in crm.headers
    finally:
        sessions, engine, read_engine, raw_writer = saved
        bridge.rt.__dict__.update(
            sessions=sessions, engine=engine, read_engine=read_engine, raw_writer=raw_writer
        )
    # Telegram retries: now it is stored, exactly once
    assert bridge.post_update(update).status_code == 200
    bridge.normalise()
    with bridge.rt.transaction() as s:
        texts = sorted(s.scalars(select(Message.text)))
    assert texts == ["during the outage", "warm the cache"]


def test_secret_is_never_echoed(bridge: Bridge) -> None:
    response = bridge.post_update(tg_update(1, text="hi"), secret="guess-" + SECRET[:5])
    assert SECRET not in response.get_data(as_text=True)
    assert CLIENT_SECRET not in bridge.post_crm({"portalId": 1}, headers={}).get_data(as_text=True)
    assert json.loads(response.data)["error"] == "forbidden"


def test_form_encoded_webhooks_keep_their_raw_body_and_form() -> None:
    """amoCRM posts form-encoded hooks: the adapter needs the exact bytes and
    the decoded form (reading the form first used to leave the body empty)."""
    from flask import Flask, request

    from bridge.webhooks import to_webhook_request

    app = Flask("t")
    seen = {}

    @app.post("/hook")
    def hook():  # type: ignore[no-untyped-def]
        webhook = to_webhook_request(request, "https://bridge.example")
        seen["body"], seen["form"] = webhook.body, dict(webhook.form)
        return "ok"

    raw = b"leads%5Bstatus%5D%5B0%5D%5Bid%5D=7&account%5Bsubdomain%5D=demo"
    app.test_client().post("/hook", data=raw, content_type="application/x-www-form-urlencoded")
    assert seen["body"] == raw
    assert seen["form"] == {"leads[status][0][id]": "7", "account[subdomain]": "demo"}
