# ruff: noqa: S105, S106  (test secrets)
"""What the core does for WhatsApp's rules, on real SQLite/PostgreSQL with
the in-memory CRM and the Graph API mocked (``responses``): the 24-hour
reply window (template instead, or a refusal the rep reads), statuses that
only move forward and reach the CRM, the business's echoes as outgoing
entries, reactions and deletions as notes on the message they concern."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import responses
from responses import matchers
from sqlalchemy import select, update

import crm_adapters
from bridge import admin
from bridge.model import (
    CrmEvent,
    CrmEventKind,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    SenderProfile,
    utcnow,
)
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.pipeline.outbound import accept_crm_events, run_outbound, run_reports
from bridge.tables import Conversation, Message
from tests.support import fakes

NUMBER = "106540352242922"
CUSTOMER = "79990001234"
SEND_URL = f"https://graph.facebook.com/v21.0/{NUMBER}/messages"
MAPPING = """
crm: fake
language: en
channels:
  whatsapp:
    object: deal
    timeline: note
{template}
"""
TEMPLATE = """    window_template:
      name: order_update
      language: en
      parameters: ["{contact.name}", "{message.text}"]
"""


def _tenant(runtime, monkeypatch, *, template: bool) -> AccountRef:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    mapping = MAPPING.format(template=TEMPLATE if template else "")
    (runtime.settings.mappings_dir / "fake.yaml").write_text(mapping)
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    account_id = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="whatsapp",
        credentials={"access_token": "EAAG-test-token"},
        external_id=NUMBER,
        settings={"waba_id": "102290129340398"},
    )
    return AccountRef(account_id, tenant_id, "whatsapp")


@pytest.fixture
def account(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    return _tenant(runtime, monkeypatch, template=False)


@pytest.fixture
def templated(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    return _tenant(runtime, monkeypatch, template=True)


def said(n: int, at: dt.datetime, **kw: Any) -> InboundMessage:
    return InboundMessage(
        channel_kind="whatsapp",
        external_id=f"wamid.in{n}",
        external_user_id=CUSTOMER,
        external_thread_id=CUSTOMER,
        kind=kw.pop("kind", MessageKind.TEXT),
        sent_at=at,
        text=kw.pop("text", f"question {n}"),
        provider_message_id=kw.pop("provider_message_id", f"wamid.in{n}"),
        profile=kw.pop("profile", SenderProfile(display_name="Anna", phone="+" + CUSTOMER)),
        **kw,
    )


def conversation(runtime) -> Conversation:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        found = s.scalars(select(Conversation)).one()
        s.expunge(found)
        return found


def reply(runtime, account: AccountRef, crm_id: str, text: str) -> None:  # type: ignore[no-untyped-def]
    uid = conversation(runtime).uid
    event = CrmEvent(CrmEventKind.REPLY, crm_id, utcnow(), thread_key=uid, text=text)
    accept_crm_events(runtime, account.tenant_id, [event])


def outbound(runtime) -> list[Message]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        rows = list(
            s.scalars(select(Message).where(Message.direction == "out").order_by(Message.seq))
        )
        for row in rows:
            s.expunge(row)
        return rows


def accepted(wamid: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}],
            "messages": [{"id": wamid}]}  # fmt: skip


def sent_bodies() -> list[dict[str, Any]]:
    return [json.loads(c.request.body) for c in responses.calls if c.request.url == SEND_URL]


@responses.activate
def test_inside_the_window_a_reply_goes_as_text_with_its_id_for_the_statuses(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [said(1, utcnow() - dt.timedelta(hours=23))])
    run_inbound(runtime, conversation(runtime).id)
    reply(runtime, account, "crm-1", "It ships today")
    responses.post(SEND_URL, json=accepted("wamid.out1"))
    assert run_outbound(runtime, conversation(runtime).id) == "idle"
    [body] = sent_bodies()
    assert body["type"] == "text" and body["text"]["body"] == "It ships today"
    assert body["to"] == CUSTOMER
    [row] = outbound(runtime)
    assert body["biz_opaque_callback_data"] == row.uid
    assert (row.status, row.channel_message_ids) == ("sent", ["wamid.out1"])
    assert responses.calls[0].request.headers["Authorization"] == "Bearer EAAG-test-token"


@responses.activate
def test_outside_the_window_without_a_template_the_reply_is_refused_and_the_rep_told_why(  # type: ignore[no-untyped-def]
    runtime, account
):
    accept(runtime, account, [said(1, utcnow() - dt.timedelta(hours=25))])
    run_inbound(runtime, conversation(runtime).id)
    reply(runtime, account, "crm-1", "Sorry for the wait")
    reply(runtime, account, "crm-2", "Are you there?")
    assert run_outbound(runtime, conversation(runtime).id) == "idle"
    assert sent_bodies() == []  # nothing attempted blindly
    rows = outbound(runtime)
    assert [r.status for r in rows] == ["refused", "refused"]  # neither holds the other back
    assert "24 h after the client's last message" in str(rows[0].last_error)
    assert "window_template" in str(rows[0].last_error)
    assert run_reports(runtime, conversation(runtime).id) == "idle"
    reports = fakes.STATE.reports
    assert [(r.crm_message_id, r.status.value) for r in reports] == [
        ("crm-1", "failed"),
        ("crm-2", "failed"),
    ]
    assert "window is closed" in str(reports[0].error)
    # the client writes again: the window is open, the next reply goes
    accept(runtime, account, [said(2, utcnow())])
    run_inbound(runtime, conversation(runtime).id)
    reply(runtime, account, "crm-3", "Welcome back")
    responses.post(SEND_URL, json=accepted("wamid.out3"))
    assert run_outbound(runtime, conversation(runtime).id) == "idle"
    assert [b["text"]["body"] for b in sent_bodies()] == ["Welcome back"]


@responses.activate
def test_outside_the_window_the_mappings_template_goes_instead(runtime, templated):  # type: ignore[no-untyped-def]
    accept(runtime, templated, [said(1, utcnow() - dt.timedelta(days=3))])
    run_inbound(runtime, conversation(runtime).id)
    reply(runtime, templated, "crm-1", "Your order is ready")
    responses.post(SEND_URL, json=accepted("wamid.t1"))
    assert run_outbound(runtime, conversation(runtime).id) == "idle"
    [body] = sent_bodies()
    assert body["type"] == "template"
    assert body["template"]["name"] == "order_update"
    assert body["template"]["language"] == {"code": "en"}
    params = body["template"]["components"][0]["parameters"]
    assert [p["text"] for p in params] == ["Anna", "Your order is ready"]
    assert [r.status for r in outbound(runtime)] == ["sent"]


@responses.activate
def test_metas_131047_is_handled_as_a_closed_window(runtime, templated):  # type: ignore[no-untyped-def]
    """Our clock says open, Meta's says closed: the template goes instead."""
    accept(runtime, templated, [said(1, utcnow() - dt.timedelta(hours=1))])
    run_inbound(runtime, conversation(runtime).id)
    reply(runtime, templated, "crm-1", "Hello again")
    error = {"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException",
                       "code": 131047, "fbtrace_id": "Az1"}}  # fmt: skip
    responses.post(SEND_URL, json=error, status=400)
    responses.post(SEND_URL, json=accepted("wamid.t2"))
    assert run_outbound(runtime, conversation(runtime).id) == "idle"
    assert [b["type"] for b in sent_bodies()] == ["text", "template"]
    assert [r.status for r in outbound(runtime)] == ["sent"]


@responses.activate
def test_a_long_reply_is_split_at_4096_and_threads_to_the_message_answered(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [said(1, utcnow())])
    run_inbound(runtime, conversation(runtime).id)
    uid = conversation(runtime).uid
    text = ("word " * 1700).strip()  # 8,499 characters
    with runtime.transaction() as s:  # the CRM names the answered message by our id
        answered = s.scalar(select(Message.uid).where(Message.direction == "in"))
    event = CrmEvent(CrmEventKind.REPLY, "crm-1", utcnow(), thread_key=uid, text=text,
                     reply_to=answered)  # fmt: skip
    accept_crm_events(runtime, account.tenant_id, [event])
    for i in range(3):
        responses.post(SEND_URL, json=accepted(f"wamid.p{i}"))
    assert run_outbound(runtime, conversation(runtime).id) == "idle"
    bodies = sent_bodies()
    assert [len(b["text"]["body"]) <= 4096 for b in bodies] == [True, True, True]
    assert " ".join(b["text"]["body"] for b in bodies) == text
    assert {b["context"]["message_id"] for b in bodies} == {"wamid.in1"}
    assert outbound(runtime)[0].channel_message_ids == ["wamid.p0", "wamid.p1", "wamid.p2"]


@responses.activate
def test_statuses_move_forward_only_and_reach_the_crm(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [said(1, utcnow())])
    conv = conversation(runtime).id
    run_inbound(runtime, conv)
    reply(runtime, account, "crm-1", "On its way")
    responses.post(SEND_URL, json=accepted("wamid.out1"))
    run_outbound(runtime, conv)
    run_reports(runtime, conv)
    [row] = outbound(runtime)

    def status(name: str, by_uid: bool = True) -> OutboundStatus:
        return OutboundStatus("whatsapp", f"wamid.out1:{name}", row.uid if by_uid else "", name,
                              channel_message_id="wamid.out1")  # fmt: skip

    # out of order and duplicated: read first, then delivered (found by the
    # wamid alone), read again, sent
    accept(runtime, account, [status("read"), status("delivered", by_uid=False)])
    accept(runtime, account, [status("read"), status("sent")])
    run_reports(runtime, conv)
    assert outbound(runtime)[0].payload["delivery"] == "read"
    assert [r.status.value for r in fakes.STATE.reports] == ["sent", "read"]
    # a failure after that is still the truth: the reply failed
    failed = OutboundStatus(
        "whatsapp", "wamid.out1:failed", row.uid, "failed",
        error="131026: Message undeliverable", channel_message_id="wamid.out1",
    )  # fmt: skip
    accept(runtime, account, [failed])
    run_reports(runtime, conv)
    assert outbound(runtime)[0].status == "failed"
    assert fakes.STATE.reports[-1].status.value == "failed"
    assert "131026" in str(fakes.STATE.reports[-1].error)


def test_an_echo_is_an_outgoing_entry_and_opens_no_window(runtime, account):  # type: ignore[no-untyped-def]
    old = utcnow() - dt.timedelta(hours=30)
    accept(runtime, account, [said(1, old)])
    echo = said(2, utcnow(), text="Sent from the Business app", echo=True, profile=SenderProfile())
    accept(runtime, account, [echo])
    run_inbound(runtime, conversation(runtime).id)
    entries = fakes.STATE.entries
    assert [e["text"] for e in entries] == ["question 1", "Sent from the Business app"]
    with runtime.transaction() as s:
        contact_names = {c for c in s.scalars(select(Conversation.contact_id))}
    assert len(contact_names) == 1
    assert [e["direction"] for e in entries] == ["in", "out"]
    # the window still counts from the customer's message of 30 h ago
    from bridge.pipeline.outbound.window import ReplyWindow
    from bridge.tables import Tenant

    with runtime.transaction() as s:
        tenant = s.get(Tenant, account.tenant_id)
        s.expunge(tenant)
    window = ReplyWindow(runtime, tenant, conversation(runtime), "whatsapp", dt.timedelta(hours=24))
    assert window.closed()


def test_a_reaction_and_a_deletion_are_notes_on_the_message_they_concern(runtime, account):  # type: ignore[no-untyped-def]
    now = utcnow()
    accept(runtime, account, [said(1, now, text="Can I pay by card?")])
    reaction = said(2, now, kind=MessageKind.REACTION, text="👍", reply_to="wamid.in1")
    revoke = said(3, now, text="", is_edit=True, revoked=True, provider_message_id="wamid.in1")
    accept(runtime, account, [reaction, revoke])
    run_inbound(runtime, conversation(runtime).id)
    texts = [e["text"] for e in fakes.STATE.entries]
    assert texts[1] == "reacted 👍 to: «Can I pay by card?»"
    assert texts[2] == "(deleted by the client)"
    assert fakes.STATE.entries[2]["is_edit"] is True


# -- the app URL: handshake, signature, routing, account-level notices ------------

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpora" / "whatsapp" / "pywa_updates"
APP_SECRET = "meta-app-secret-for-tests"
VERIFY = "verify-token-for-tests"


def _variants(name: str) -> dict[str, Any]:
    return dict(json.loads((CORPUS / name).read_text()))


def _onto(body: dict[str, Any], number: str, waba: str) -> bytes:
    """A corpus body addressed to our number and business account."""
    for entry in body.get("entry", []):
        entry["id"] = waba
        for change in entry.get("changes", []):
            metadata = change.get("value", {}).get("metadata")
            if isinstance(metadata, dict):
                metadata["phone_number_id"] = number
    return json.dumps(body).encode()


@pytest.fixture
def app_world(runtime, account):  # type: ignore[no-untyped-def]
    import dataclasses

    from bridge import create_app

    settings = dataclasses.replace(
        runtime.settings,
        apps={
            **runtime.settings.apps,
            "whatsapp": {"app_secret": APP_SECRET, "verify_token": VERIFY},
        },
    )
    runtime.settings = settings
    return create_app(runtime=runtime).test_client()


def _post(client, raw: bytes, secret: str = APP_SECRET):  # type: ignore[no-untyped-def]
    from channel_adapters.whatsapp import WhatsAppAdapter

    return client.post(
        "/webhooks/whatsapp/app",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": WhatsAppAdapter.signature(secret, raw),
        },  # fmt: skip
    )


def test_the_app_url_answers_metas_handshake_only_with_the_verify_token(app_world) -> None:  # type: ignore[no-untyped-def]
    ok = app_world.get(
        "/webhooks/whatsapp/app",
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY,
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200 and ok.data == b"1158201444"
    wrong = app_world.get(
        "/webhooks/whatsapp/app",
        query_string={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
    )
    assert wrong.status_code == 403 and wrong.is_json


def test_a_signed_post_lands_and_a_forged_one_changes_nothing(runtime, account, app_world) -> None:  # type: ignore[no-untyped-def]
    from bridge.pipeline.inbound.journal import normalise_pending

    raw = _onto(_variants("message.json")["text"], NUMBER, "102290129340398")
    forged = _post(app_world, raw, secret="not-the-app-secret")
    assert forged.status_code == 403 and forged.is_json
    assert _post(app_world, raw).status_code == 200
    assert _post(app_world, raw).status_code == 200  # Meta's retry: stored once
    normalise_pending(runtime)
    with runtime.transaction() as s:
        rows = list(s.scalars(select(Message).where(Message.direction == "in")))
    assert len(rows) == 1 and rows[0].dedupe_key.startswith("wamid.")


def test_account_level_notices_reach_each_number_and_bridge_status(
    runtime, account, app_world
) -> None:  # type: ignore[no-untyped-def]
    from bridge.pipeline.inbound.journal import normalise_pending

    waba = "102290129340398"  # the account's waba_id
    disabled = _variants("account_update.json")
    name = next(k for k in disabled if "disabled" in k.lower())
    assert _post(app_world, _onto(disabled[name], NUMBER, waba)).status_code == 200
    other = _onto(_variants("account_update.json")[name], NUMBER, "another-business")
    assert _post(app_world, other).status_code == 200  # not ours: answered, stored for nobody
    normalise_pending(runtime)
    problems = admin.status(runtime)["channel_problems"]
    assert [(p["account"], p["event"], p["count"]) for p in problems] == [
        (account.id, "account_update:DISABLED_UPDATE", 1)
    ]
    assert "disabled" in problems[0]["what"]


@responses.activate
def test_bridge_whatsapp_templates_lists_the_business_accounts_templates(  # type: ignore[no-untyped-def]
    runtime, account, monkeypatch
):
    from click.testing import CliRunner

    from bridge.cli import context, main

    url = "https://graph.facebook.com/v21.0/102290129340398/message_templates"
    page = {
        "data": [
            {"name": "order_update", "language": "en", "status": "APPROVED",
             "category": "UTILITY",
             "components": [{"type": "BODY", "text": "Hi {{1}}, {{2}}"}]},
            {"name": "promo", "language": "ru", "status": "REJECTED", "category": "MARKETING",
             "components": []},
        ],
        "paging": {"cursors": {"before": "a", "after": "b"}},
    }  # fmt: skip
    responses.get(url, json=page, match=[matchers.query_string_matcher("limit=100")])
    monkeypatch.setattr(context, "runtime", lambda **_: runtime)
    out = CliRunner().invoke(main, ["whatsapp", "templates", "--account", str(account.id)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split("\t") == ["name", "language", "status", "category", "parameters"]
    assert lines[1].split("\t") == ["order_update", "en", "APPROVED", "UTILITY", "2"]
    assert lines[2].split("\t")[:3] == ["promo", "ru", "REJECTED"]
    assert responses.calls[0].request.headers["Authorization"] == "Bearer EAAG-test-token"


def test_media_is_fetched_and_kept_before_the_crm_entry_and_a_lost_one_is_a_label(  # type: ignore[no-untyped-def]
    runtime, account, monkeypatch
):
    """The sync job fetches each media id through the adapter (its two-step
    download is exercised against the sandbox in the integration tests),
    keeps the bytes and the CRM gets a link; a media id Meta no longer has
    leaves a label, and the text still lands."""
    from bridge.errors import NotFoundError, RetryableError
    from bridge.model import Attachment
    from channel_adapters.whatsapp import WhatsAppAdapter

    calls: list[str] = []

    def download(self, attachment):  # type: ignore[no-untyped-def]
        calls.append(attachment.file_ref)
        if attachment.file_ref == "media-gone":
            raise NotFoundError("WhatsApp 100: media not found")
        if attachment.file_ref == "media-slow" and calls.count("media-slow") == 1:
            raise RetryableError("read timeout")
        return b"\x89PNG fake image " + attachment.file_ref.encode()

    monkeypatch.setattr(WhatsAppAdapter, "download", download)
    photo = Attachment(MessageKind.PHOTO, file_ref="media-1", mime_type="image/jpeg")
    gone = Attachment(MessageKind.DOCUMENT, file_ref="media-gone", file_name="a.pdf")
    slow = Attachment(MessageKind.PHOTO, file_ref="media-slow", mime_type="image/png")
    accept(runtime, account, [
        said(1, utcnow(), kind=MessageKind.PHOTO, text="my receipt", attachments=(photo,)),
        said(2, utcnow(), kind=MessageKind.DOCUMENT, text="", attachments=(gone,)),
        said(3, utcnow(), kind=MessageKind.PHOTO, text="", attachments=(slow,)),
    ])  # fmt: skip
    conv = conversation(runtime).id
    assert run_inbound(runtime, conv) == "backoff"  # the slow one: tried again, not dropped
    from sqlalchemy import update as sa_update

    from bridge.tables import Outbox

    with runtime.transaction() as s:
        s.execute(sa_update(Outbox).values(not_before=None))
    run_inbound(runtime, conv)
    entries = fakes.STATE.entries
    assert [e["text"] for e in entries] == ["my receipt", "", ""]
    first, second, third = (e["attachments"][0] for e in entries)
    assert first.url and first.url.startswith(runtime.settings.public_url + "/files/")
    assert third.url and "/files/" in third.url
    assert second.url is None  # Meta no longer has it: a label
    assert calls.count("media-1") == 1 and calls.count("media-gone") == 1
    with runtime.transaction() as s:
        payloads = [m.payload for m in s.scalars(select(Message).order_by(Message.seq))]
    assert "fetch_error" in payloads[1]["attachments"][0]


@responses.activate
def test_a_send_meta_fails_later_with_131047_goes_again_as_the_template(runtime, templated):  # type: ignore[no-untyped-def]
    """Meta may accept a free-form send and fail it afterwards for the
    window (a ``failed`` status with 131047): the reply goes again as the
    mapping's template, once."""
    from channel_adapters.whatsapp.inbound import parse

    accept(runtime, templated, [said(1, utcnow() - dt.timedelta(hours=2))])
    conv = conversation(runtime).id
    run_inbound(runtime, conv)
    reply(runtime, templated, "crm-1", "Your table is booked")
    responses.post(SEND_URL, json=accepted("wamid.first"))
    responses.post(SEND_URL, json=accepted("wamid.template"))
    assert run_outbound(runtime, conv) == "idle"
    [row] = outbound(runtime)
    failed = {
        "id": "wamid.first", "status": "failed", "timestamp": "1796500000",
        "recipient_id": CUSTOMER, "biz_opaque_callback_data": row.uid,
        "errors": [{"code": 131047, "title": "Re-engagement message"}],
    }  # fmt: skip
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": NUMBER},
        "statuses": [failed],
    }
    change = {"field": "messages", "value": value}
    status = {"object": "whatsapp_business_account",
              "entry": [{"id": "102290129340398", "changes": [change]}]}  # fmt: skip
    [event] = parse(json.dumps(status).encode(), utcnow())
    assert isinstance(event, OutboundStatus) and event.status == "window_closed"
    accept(runtime, templated, [event])
    accept(runtime, templated, [event])  # Meta's retry: once
    assert run_outbound(runtime, conv) == "idle"
    assert [b["type"] for b in sent_bodies()] == ["text", "template"]
    [row] = outbound(runtime)
    assert (row.status, row.channel_message_ids) == ("sent", ["wamid.template"])


@responses.activate
def test_a_status_arriving_while_its_report_is_sent_is_reported_too(runtime, account, monkeypatch):  # type: ignore[no-untyped-def]
    """The race the end-to-end run found: a reply's "sent" report is on its
    way to the CRM when "read" arrives; the report job must not mark the
    newer state done (it was lost: the CRM kept showing SENT)."""
    accept(runtime, account, [said(1, utcnow())])
    conv = conversation(runtime).id
    run_inbound(runtime, conv)
    reply(runtime, account, "crm-1", "On its way")
    responses.post(SEND_URL, json=accepted("wamid.out1"))
    run_outbound(runtime, conv)
    [row] = outbound(runtime)
    read = OutboundStatus("whatsapp", "wamid.out1:read", row.uid, "read",
                          channel_message_id="wamid.out1")  # fmt: skip
    original = fakes.FakeCrm.report_delivery

    def report_then_read(self, report):  # type: ignore[no-untyped-def]
        original(self, report)
        if report.status.value == "sent":
            accept(runtime, account, [read])  # the status lands meanwhile

    monkeypatch.setattr(fakes.FakeCrm, "report_delivery", report_then_read)
    assert run_reports(runtime, conv) == "idle"
    assert [r.status.value for r in fakes.STATE.reports] == ["sent", "read"]
    assert outbound(runtime)[0].followup_status == "done"


def test_a_reply_plans_text_media_and_a_place() -> None:
    """The request bodies of one reply: its text, a file by link, a place
    (a ``geo:`` URI) as WhatsApp's location message; a bad place is left out."""
    from bridge.model import Attachment, OutboundMessage
    from channel_adapters.whatsapp.outbound import plan

    reply = OutboundMessage(
        bridge_id="b-1",
        external_thread_id=CUSTOMER,
        text="Here we are",
        attachments=(
            Attachment(
                MessageKind.DOCUMENT, url="https://files.test/menu.pdf", file_name="menu.pdf"
            ),
            Attachment(MessageKind.AUDIO, url="https://files.test/hello.ogg"),
            Attachment(
                MessageKind.LOCATION, file_ref="geo:55.7539,37.6208", file_name="Red Square"
            ),
            Attachment(MessageKind.LOCATION, file_ref="geo:123,456"),
        ),
    )
    bodies = plan(reply, CUSTOMER)
    assert [b["type"] for b in bodies] == ["text", "document", "audio", "location"]
    assert bodies[1]["document"] == {"link": "https://files.test/menu.pdf", "filename": "menu.pdf"}
    assert bodies[3]["location"] == {
        "latitude": 55.7539,
        "longitude": 37.6208,
        "name": "Red Square",
    }
    assert {b["biz_opaque_callback_data"] for b in bodies} == {"b-1"}


@responses.activate
def test_statuses_that_come_before_the_send_is_recorded_are_applied_when_it_is(  # type: ignore[no-untyped-def]
    runtime, account
):
    """Meta answers the send, then posts delivered and read faster than the
    bridge commits the answer (the end-to-end run lost one in 50 that way):
    kept, applied once the send's ids are recorded, reported to the CRM."""
    accept(runtime, account, [said(1, utcnow() - dt.timedelta(minutes=5))])
    conv = conversation(runtime).id
    run_inbound(runtime, conv)
    reply(runtime, account, "crm-1", "On its way")
    [row] = outbound(runtime)
    assert row.status == "pending"

    def status(name: str, by_uid: bool) -> OutboundStatus:
        return OutboundStatus("whatsapp", f"wamid.early:{name}", row.uid if by_uid else "", name,
                              channel_message_id="wamid.early")  # fmt: skip

    # by our id (the reply is found, not sent yet) and by the wamid alone (not found)
    accept(runtime, account, [status("delivered", by_uid=True), status("read", by_uid=False)])
    assert outbound(runtime)[0].payload.get("delivery") is None
    responses.post(SEND_URL, json=accepted("wamid.early"))
    assert run_outbound(runtime, conv) == "idle"
    [sent] = outbound(runtime)
    assert (sent.status, sent.payload["delivery"]) == ("sent", "read")
    run_reports(runtime, conv)
    assert [r.status.value for r in fakes.STATE.reports] == ["read"]
    # each kept report applied once: a redelivery of them changes nothing
    accept(runtime, account, [status("delivered", by_uid=True), status("read", by_uid=False)])
    run_reports(runtime, conv)
    assert [r.status.value for r in fakes.STATE.reports] == ["read"]


@responses.activate
def test_a_failure_that_comes_before_the_send_is_recorded_fails_the_reply(  # type: ignore[no-untyped-def]
    runtime, account
):
    accept(runtime, account, [said(1, utcnow() - dt.timedelta(minutes=5))])
    conv = conversation(runtime).id
    run_inbound(runtime, conv)
    reply(runtime, account, "crm-1", "On its way")
    failed = OutboundStatus(
        "whatsapp", "wamid.early2:failed", "", "failed",
        error="131026: Message undeliverable", channel_message_id="wamid.early2",
    )  # fmt: skip
    accept(runtime, account, [failed])
    responses.post(SEND_URL, json=accepted("wamid.early2"))
    # sent, then failed by the channel: the conversation waits for an
    # operator, as after any failed reply
    assert run_outbound(runtime, conv) == "parked"
    [row] = outbound(runtime)
    assert (row.status, row.last_error) == ("failed", "131026: Message undeliverable")
    run_reports(runtime, conv)
    assert [(r.status.value, r.error) for r in fakes.STATE.reports] == [
        ("failed", "131026: Message undeliverable")
    ]


@responses.activate
def test_a_status_read_before_its_report_is_marked_done_still_makes_the_report_due(  # type: ignore[no-untyped-def]
    runtime, account
):
    """The lost "read" on PostgreSQL: the status's transaction read the reply
    while its "delivered" report was pending; the report job then marked it
    done; the status's write must still make the report due again (an
    UPDATE leaving out the unchanged-looking column kept "done")."""
    from bridge.pipeline.followup import due

    accept(runtime, account, [said(1, utcnow())])
    conv = conversation(runtime).id
    run_inbound(runtime, conv)
    reply(runtime, account, "crm-1", "On its way")
    responses.post(SEND_URL, json=accepted("wamid.lost1"))
    run_outbound(runtime, conv)
    [row] = outbound(runtime)
    assert row.followup_status == "pending"  # its "sent" report is due
    # the status's transaction has read it (pending) ...
    with runtime.transaction() as s:
        seen = s.get(Message, row.id)
        assert seen is not None
        s.expunge(seen)
    # ... the report job marks it done meanwhile ...
    with runtime.transaction() as s:
        s.execute(update(Message).where(Message.id == row.id).values(followup_status="done"))
    # ... and the status's write lands after that
    with runtime.transaction() as s:
        s.add(seen)
        seen.payload = {**(seen.payload or {}), "delivery": "read"}
        due(s, seen, "report")
    [after] = outbound(runtime)
    assert (after.payload["delivery"], after.followup_status) == ("read", "pending")
