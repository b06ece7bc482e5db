# ruff: noqa: S105, S106  (canary secrets are test fixtures)
"""Personal data and secrets never reach a log line, an RQ job or ``bridge
status`` (DESIGN "Secrets ... personal data never goes into logs"; ASVS 16.2.5).

A customer with canary values (phone, e-mail, message text) writes through
the real webhook; the sync job writes them into the sandbox HubSpot (a
private-app token that is itself a canary) and a rep's reply goes out
through the sandbox Telegram (with a canary bot token and webhook secret),
with every logger at DEBUG under the bridge's own logging setup
(``bridge -v``). Then every log record, every Redis key and value and the
``bridge status`` output are searched for the canaries.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner
from rq.job import Job
from sqlalchemy import select

from bridge import admin, create_app
from bridge.cli import main
from bridge.jobs import DELIVER_QUEUE, INGEST_QUEUE, SYNC_QUEUE
from bridge.logs import configure_logging
from bridge.model import InboundMessage, MessageKind, SenderProfile, utcnow
from bridge.pipeline.inbound import accept, run_inbound
from bridge.pipeline.inbound.journal import normalise_pending
from bridge.pipeline.outbound import run_outbound
from bridge.runtime import set_runtime
from bridge.tables import Conversation, Message
from bridge.webhooks import waker
from sandbox.telegram import create_app as create_telegram
from tests.support.harness import (
    HUBSPOT_MAPPING,
    PORTAL_A,
    body,
    build_runtime,
    hubspot_app,
    hubspot_sandbox,
    hubspot_signed,
    queued,
    reply_payload,
    serve,
    tg_update,
    tg_user,
    write_mapping,
)

PHONE = "+79990001122"
EMAIL = "canary@example.org"
TEXT = "CANARY-TEXT-42"
BOT_TOKEN = "7999000111:CANARYbotTOKEN_abcdefghijklmnopqrst"
HUBSPOT_TOKEN = "pat-na1-ca0a0a0a-0000-4000-8000-c0ffeec0ffee"
WEBHOOK_SECRET = "CANARY-webhook-secret-0042"
#: what must never show up; the phone also in the forms channels write it
CANARIES = {
    "phone": PHONE,
    "phone digits": "9990001122",
    "e-mail": EMAIL,
    "text": TEXT,
    "bot token": BOT_TOKEN,
    "bot token secret part": BOT_TOKEN.split(":")[1],
    "HubSpot token": HUBSPOT_TOKEN,
    "webhook secret": WEBHOOK_SECRET,
}
CHAT = 1001


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [name for name, value in CANARIES.items() if value.lower() in lowered]


def record_text(record: logging.LogRecord) -> str:
    parts = [
        str(record.msg),
        repr(record.args),
        record.getMessage(),
        record.exc_text or "",
        record.stack_info or "",
    ]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def test_the_canary_search_finds_a_planted_leak(caplog: pytest.LogCaptureFixture) -> None:
    """The check below is not vacuous: a record carrying a canary is found."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("bridge.sync").debug("contact %s", {"phone": "79990001122"})
    try:
        raise ValueError(f"bad token {HUBSPOT_TOKEN}")
    except ValueError:
        logging.getLogger("bridge").exception("failed")
    found = [leaks(record_text(r)) for r in caplog.records]
    assert found == [["phone digits"], ["HubSpot token"]]


@pytest.fixture
def debug_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The bridge's own logging set-up at DEBUG (``bridge -v``), captured.

    Every logger is at DEBUG except the two that are quiet on purpose:
    ``sqlalchemy`` (WARN, SQLAlchemy's own default: bound parameters are
    personal data) and ``urllib3`` (WARNING, set by ``configure_logging``: its
    DEBUG line carries the request path, and Telegram's has the bot token).
    """
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("urllib3").level)
    configure_logging(logging.DEBUG)
    root.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("urllib3").setLevel(saved[2])


@pytest.fixture
def world(settings, redis_conn) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    portal = {"id": PORTAL_A, "name": "Canary Co", "private_app_token": HUBSPOT_TOKEN}
    telegram = create_telegram(
        {"bots": [{"token": BOT_TOKEN, "username": "canary_bot", "first_name": "Canary"}]}
    )
    with (
        hubspot_sandbox({"portals": [portal], "per_10s": 10_000}) as (hs_url, _),
        serve(telegram) as tg_url,
    ):
        requests.post(
            f"{tg_url}/_chats",
            timeout=10,
            json={
                "token": BOT_TOKEN,
                "chat": {"id": CHAT, "type": "private", "first_name": "Anna"},
            },
        )
        with build_runtime(
            settings,
            redis_conn,
            apps={"hubspot": hubspot_app(hs_url)},
            api_bases={"hubspot": hs_url, "telegram": tg_url},
        ) as rt:
            write_mapping(rt, "hub.yaml", HUBSPOT_MAPPING)
            tenant = admin.create_tenant(
                rt,
                slug="canary",
                crm_kind="hubspot",
                mapping="hub.yaml",
                account_id=str(PORTAL_A),
                credentials={"type": "private_app", "access_token": HUBSPOT_TOKEN},
            )
            account = admin.add_channel_account(
                rt,
                tenant,
                kind="telegram",
                external_id=BOT_TOKEN.split(":")[0],
                credentials={"bot_token": BOT_TOKEN, "secret_token": WEBHOOK_SECRET},
            )
            admin.setup_crm(rt, tenant)
            yield {
                "rt": rt,
                "tenant": tenant,
                "account": account,
                "hubspot": hs_url,
                "telegram": tg_url,
                "redis": redis_conn,
                "settings": rt.settings,
            }


def _redis_dump(conn: redis.Redis) -> str:
    """Every key and value in Redis as text (RQ's job data decompressed)."""
    out: list[str] = []
    for key in conn.scan_iter():
        out.append(key.decode("latin-1"))
        kind = conn.type(key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [conn.get(key) or b""]
        elif kind == "hash":
            for field, value in conn.hgetall(key).items():
                values += [field, value]
        elif kind == "list":
            values = conn.lrange(key, 0, -1)
        elif kind in ("set", "zset"):
            values = list(conn.smembers(key)) if kind == "set" else conn.zrange(key, 0, -1)
        for value in values:
            try:
                value = zlib.decompress(value)
            except zlib.error:
                pass
            out.append(value.decode("latin-1"))
    return "\n".join(out)


def _status_output(settings) -> str:  # type: ignore[no-untyped-def]
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BRIDGE_VAR_DIR": str(settings.var_dir),
        "BRIDGE_MAPPINGS_DIR": str(settings.mappings_dir),
    }
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        result = CliRunner().invoke(main, ["status"], env=env)
        as_json = CliRunner().invoke(main, ["status", "--json"], env=env)
    finally:
        root.handlers[:] = handlers
        set_runtime(None)
    assert result.exit_code == 0 and as_json.exit_code == 0, result.output
    return result.output + as_json.output


def test_no_canary_in_logs_jobs_or_status(world, debug_logging, capsys) -> None:  # type: ignore[no-untyped-def]
    rt, redis_conn = world["rt"], world["redis"]
    client = create_app(runtime=rt).test_client()
    with rt.transaction() as s:
        from bridge.tables import ChannelAccount, Tenant

        key = s.get(ChannelAccount, world["account"]).key
        tenant_key = s.get(Tenant, world["tenant"]).webhook_key
    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
    user = tg_user(CHAT, "Anna", username="anna_k")
    updates = [
        tg_update(1, chat_id=CHAT, user=user, text=f"{TEXT}: please write to {EMAIL}"),
        tg_update(
            2,
            chat_id=CHAT,
            user=user,
            contact={"phone_number": PHONE.lstrip("+"), "first_name": "Anna", "user_id": CHAT},
        ),
        {"update_id": 3, "inline_query": {"id": "9", "from": user, "query": TEXT, "offset": ""}},
    ]
    for update in updates:
        response = client.post(
            f"/webhooks/telegram/{key}",
            data=body(update),
            headers=headers,
            content_type="application/json",
        )
        assert response.status_code == 200
    # a rejected request carrying the canaries is refused without repeating them
    refused = client.post(
        f"/webhooks/telegram/{key}",
        data=body(updates[0]),
        headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET[:-1]},
        content_type="application/json",
    )
    assert refused.status_code == 403 and not leaks(refused.get_data(as_text=True))
    # the normaliser's job carries the account id only
    assert waker(world["rt"]).flush()
    (wake_id,) = queued(redis_conn, INGEST_QUEUE)
    wake = Job.fetch(wake_id, connection=redis_conn)
    assert wake.args == (world["account"],) and wake.kwargs == {}
    assert not leaks(repr((wake.args, wake.description, wake.meta, wake.func_name)))
    normalise_pending(rt)  # parsed in the worker, as the job would
    # a channel that knows the e-mail (a website chat) reports it in the profile
    accept(
        rt,
        world["account"],
        [
            InboundMessage(
                channel_kind="telegram",
                external_id="web-1",
                external_user_id=str(CHAT),
                external_thread_id=str(CHAT),
                kind=MessageKind.TEXT,
                sent_at=utcnow(),
                text=f"{TEXT} again",
                provider_message_id="web-1",
                # proven (an unproven address is not written into the CRM's
                # e-mail field: docs/clients.md), so the canary reaches the CRM
                profile=SenderProfile(first_name="Anna", email=EMAIL, email_verified=True),
            )
        ],
    )

    # the queued job: ids only
    (job_id,) = queued(redis_conn, SYNC_QUEUE)
    job = Job.fetch(job_id, connection=redis_conn)
    with rt.transaction() as s:
        conversation = s.scalar(select(Conversation.id))
        conversation_uid = s.scalar(select(Conversation.uid))
    assert job.args == (conversation,) and job.kwargs == {}
    assert not leaks(repr((job.args, job.kwargs, job.description, job.meta, job.func_name)))

    assert run_inbound(rt, conversation) == "idle"

    # the rep answers in HubSpot; the reply goes out through Telegram
    path = f"/webhooks/crm/hubspot/{tenant_key}"
    raw = body(
        reply_payload(
            portal_id=PORTAL_A,
            thread_uid=conversation_uid,
            message_id="r-1",
            text=f"Thanks! {TEXT}",
        )
    )
    assert (
        client.post(
            path, data=raw, headers=hubspot_signed(f"{rt.settings.public_url}{path}", raw)
        ).status_code
        == 200
    )
    (deliver_id,) = queued(redis_conn, DELIVER_QUEUE)
    assert Job.fetch(deliver_id, connection=redis_conn).args == (conversation,)
    assert run_outbound(rt, conversation) == "idle"

    # the canaries really went through the pipeline ...
    hubspot = requests.get(f"{world['hubspot']}/_state", timeout=10).json()["accounts"][0]
    (contact,) = hubspot["contacts"]
    assert (contact["properties"].get("phone"), contact["properties"].get("email")) == (
        PHONE,
        EMAIL,
    )
    assert sum(TEXT in n["properties"].get("hs_note_body", "") for n in hubspot["notes"]) == 2
    sent = requests.get(f"{world['telegram']}/_sent", timeout=10).json()["sent"]
    assert [s["text"] for s in sent] == [f"Thanks! {TEXT}"]
    with rt.transaction() as s:
        assert set(s.scalars(select(Message.status))) == {"synced", "sent"}

    # ... and none of them was logged ...
    records = debug_logging.records
    assert any(r.name.startswith("bridge") for r in records)  # logging was on
    leaked = {
        (r.name, r.levelname, r.getMessage()[:200], tuple(leaks(record_text(r))))
        for r in records
        if leaks(record_text(r))
    }
    assert leaked == set()
    captured = capsys.readouterr()
    assert leaks(captured.err + captured.out) == []
    # ... nor kept in Redis ...
    assert leaks(_redis_dump(redis_conn)) == []
    # ... nor shown by bridge status
    assert leaks(_status_output(world["settings"])) == []


def test_a_crm_error_about_the_customers_data_does_not_leak_it(world, debug_logging) -> None:  # type: ignore[no-untyped-def]
    """HubSpot's validation errors quote the rejected value ("Email address
    <value> is invalid"); the failure is recorded and shown without it."""
    rt = world["rt"]
    bad_email = "canary.bad@localhost"  # accepted by the channel, refused by HubSpot
    CANARIES["bad e-mail"] = bad_email
    try:
        accept(
            rt,
            world["account"],
            [
                InboundMessage(
                    channel_kind="telegram",
                    external_id="web-2",
                    external_user_id="2002",
                    external_thread_id="2002",
                    kind=MessageKind.TEXT,
                    sent_at=utcnow(),
                    text=TEXT,
                    provider_message_id="web-2",
                    profile=SenderProfile(first_name="Bo", email=bad_email, email_verified=True),
                )
            ],
        )
        with rt.transaction() as s:
            conversation = s.scalar(select(Conversation.id))
        assert run_inbound(rt, conversation) == "parked"
        with rt.transaction() as s:
            message = s.scalars(select(Message)).one()
        assert message.status == "failed"
        assert "INVALID_EMAIL" in message.last_error or "invalid" in message.last_error.lower()
        assert leaks(message.last_error) == []
        assert leaks(_status_output(world["settings"])) == []
        assert [r.getMessage() for r in debug_logging.records if leaks(record_text(r))] == []
    finally:
        del CANARIES["bad e-mail"]
