"""The e-mail sandbox: a mail system for the e-mail channel's demo and tests.

The SMTP side is driven by the bridge's own sender (``channel_adapters.email.
smtp.SmtpSender``) over a real loopback connection; ``/_deliver`` posts to a
stand-in bridge webhook served on a real port (``tests.support.servers.
serve_wsgi``) that records the raw requests. The raw mails below are our
own, written for these tests (no corpora file is used).
"""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from flask.testing import FlaskClient
from werkzeug.test import Client

from bridge.errors import AmbiguousError, AuthError, PermanentError, RetryableError
from channel_adapters.email.smtp import SmtpSender, SmtpSettings, build_reply
from sandbox.demo import Seeded, banner
from sandbox.email import DEMO_ADDRESS, EXTENSION, EmailSandbox, create_app
from sandbox.server import build
from sandbox.web import CRMS
from sandbox.web import create_app as create_web_app
from tests.support.servers import serve_wsgi

SECRET = "demo-webhook-secret"  # noqa: S105 - a test HMAC key
CUSTOMER = "anna@example.com"
STATIC = Path(__file__).resolve().parents[2] / "sandbox" / "web" / "static"
TEMPLATE = STATIC.parent / "templates" / "index.html"


# -- helpers -----------------------------------------------------------------------------


class Bridge:
    """A stand-in for the bridge's raw-MIME webhook: records, answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: deque[tuple[int, Any]] = deque()
        self.app = Flask("bridge-stub")
        self.app.add_url_rule("/webhooks/email/<key>", "hook", self._hook, methods=["POST"])

    def _hook(self, key: str) -> Response:
        self.requests.append(
            {"key": key, "headers": dict(request.headers), "body": request.get_data()}
        )
        status, body = self.answers.popleft() if self.answers else (200, {"ok": True})
        return Response(
            body if isinstance(body, str) else json.dumps(body),
            status=status,
            mimetype="application/json",
        )

    def mail(self, index: int = -1) -> EmailMessage:
        message = email.message_from_bytes(self.requests[index]["body"], policy=default_policy)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class Sandbox:
    app: Flask
    client: FlaskClient
    sb: EmailSandbox

    def port(self) -> int:
        state = self.client.get("/_state").get_json()
        return int(state["smtp"]["port"])

    def sender(self, **overrides: Any) -> SmtpSender:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port(),
            "security": "plain",
            "from_addr": DEMO_ADDRESS,
            "timeout": 5.0,
        }
        values.update(overrides)
        return SmtpSender(SmtpSettings(**values))

    def connect(self, url: str, secret: str | None = SECRET) -> None:
        body = {"address": DEMO_ADDRESS, "webhook_url": f"{url}/webhooks/email/k3y"}
        if secret:
            body["webhook_secret"] = secret
        answer = self.client.post("/_mailboxes", json=body)
        assert answer.status_code == 201, answer.get_json()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    app = create_app()
    sb: EmailSandbox = app.extensions[EXTENSION]
    try:
        yield Sandbox(app, app.test_client(), sb)
    finally:
        sb.smtp.stop()


@pytest.fixture(scope="module")
def served_bridge() -> Iterator[tuple[Bridge, str]]:
    stub = Bridge()
    with serve_wsgi(stub.app) as running:
        yield stub, running.url


@pytest.fixture
def bridge(served_bridge: tuple[Bridge, str]) -> tuple[Bridge, str]:
    """The stand-in bridge, with nothing recorded and no answer queued."""
    stub, url = served_bridge
    stub.requests.clear()
    stub.answers.clear()
    return stub, url


def reply(to: str = CUSTOMER, **overrides: Any) -> EmailMessage:
    """A reply as the e-mail adapter builds it."""
    values: dict[str, Any] = {
        "from_addr": DEMO_ADDRESS,
        "from_name": "Demo Support",
        "to_addr": to,
        "subject": "Re: Доставка в Берлин [#T-1001]",
        "text": "Hi Anna,\nyes, two days.",
        "message_id": "<bridge.6b1e4c2a-0000-4000-8000-000000000001@demo.example>",
        "in_reply_to": "<q1@example.com>",
        "references": ["<q0@example.com>"],
        "reply_to": "support+6b1e4c2a-0000-4000-8000-00000000000a@demo.example",
    }
    values.update(overrides)
    return build_reply(**values)


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


RAW_KOI8 = (
    b"From: =?koi8-r?B?4c7OwQ==?= <Anna@Example.com>\r\n"
    b"To: Support <SUPPORT@demo.example>\r\n"
    b"Subject: =?koi8-r?Q?=FA=C1=CB=C1=DA?=\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0300\r\n"
    b"Message-ID: <koi8-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=koi8-r\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"\xfa\xc4\xd2\xc1\xd7\xd3\xd4\xd7\xd5\xca\xd4\xc5!\r\n"
)


# -- the SMTP server -----------------------------------------------------------------------


def test_smtp_server_starts_with_the_first_request(sandbox: Sandbox) -> None:
    assert not sandbox.sb.smtp.running
    state = sandbox.client.get("/_state").get_json()
    assert sandbox.sb.smtp.running
    assert state["smtp"] == {
        "host": "127.0.0.1",
        "port": sandbox.sb.smtp.port,
        "security": "plain",
        "auth": False,
        "running": True,
    }
    assert state["accounts"] == [
        {
            "account": DEMO_ADDRESS,
            "address": DEMO_ADDRESS,
            "name": "Demo Support",
            "webhook_url": None,
            "has_webhook_secret": False,
            "delivered": 0,
            "sent": 0,
        }
    ]


def test_smtp_server_records_what_the_bridge_sends(sandbox: Sandbox) -> None:
    ack = reply(extra_headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"})
    outcome = sandbox.sender().send(ack)
    assert outcome.accepted == (CUSTOMER,)
    assert re.fullmatch(r"250 2\.0\.0 Ok: queued as S1", outcome.reply)

    [sent] = sandbox.client.get("/_sent").get_json()["sent"]
    assert sent["id"] == 1 and sent["time"] == pytest.approx(time.time(), abs=60)
    assert sent["envelope"] == {"mail_from": DEMO_ADDRESS, "rcpt_tos": [CUSTOMER]}
    assert sent["login"] is None  # no users configured: no AUTH
    headers = sent["headers"]
    assert headers["Message-ID"] == "<bridge.6b1e4c2a-0000-4000-8000-000000000001@demo.example>"
    assert headers["In-Reply-To"] == "<q1@example.com>"
    assert sent["references"] == ["<q0@example.com>", "<q1@example.com>"]
    assert headers["Subject"] == sent["subject"] == "Re: Доставка в Берлин [#T-1001]"
    assert headers["From"] == "Demo Support <support@demo.example>"
    assert headers["To"] == CUSTOMER
    assert headers["Reply-To"] == (
        "Demo Support <support+6b1e4c2a-0000-4000-8000-00000000000a@demo.example>"
    )
    assert headers["Auto-Submitted"] == "auto-replied"
    assert headers["X-Auto-Response-Suppress"] == "All"
    assert headers["Cc"] is None and headers["Content-Language"] is None
    assert sent["text"] == "Hi Anna,\nyes, two days.\n"
    assert "Hi Anna," in sent["html"] and "<html>" in sent["html"]
    assert sent["attachments"] == []

    raw = sandbox.client.get("/_sent/1/raw")
    assert raw.status_code == 200 and raw.mimetype == "message/rfc822"
    parsed = email.message_from_bytes(raw.get_data(), policy=default_policy)
    assert parsed["Message-ID"] == headers["Message-ID"]
    assert sent["size"] == len(raw.get_data())
    assert sandbox.client.get("/_sent/2/raw").status_code == 404

    stats = sandbox.client.get("/_stats").get_json()
    assert stats["by_route"] == {"SMTP DATA": 1} and stats["by_status"] == {"250": 1}
    [account] = sandbox.client.get("/_state").get_json()["accounts"]
    assert account["sent"] == 1


def test_smtp_server_takes_utf8_addresses(sandbox: Sandbox) -> None:
    # RFC 6531: the sender switches to SMTPUTF8 for a non-ASCII local part and
    # writes the domain as its IDNA A-label; either spelling finds the mail
    sandbox.sender().send(reply(to="анна@пример.рф"))
    wire = "анна@xn--e1afmkfd.xn--p1ai"
    for spelling in ("анна@пример.рф", wire, "АННА@ПРИМЕР.РФ"):
        [sent] = sandbox.client.get("/_sent", query_string={"to": spelling}).get_json()["sent"]
        assert sent["envelope"]["rcpt_tos"] == [wire]
        assert sent["headers"]["To"] == wire  # UTF-8 headers (RFC 6532), read as such
        assert sent["subject"] == "Re: Доставка в Берлин [#T-1001]"


def test_sent_filters_by_recipient_and_mailbox(sandbox: Sandbox) -> None:
    sender = sandbox.sender()
    sender.send(reply(to=CUSTOMER))
    sender.send(
        reply(
            to="bob@example.com",
            message_id="<bridge.6b1e4c2a-0000-4000-8000-000000000002@demo.example>",
        )
    )
    sender.send(
        reply(
            to=CUSTOMER,
            subject="Re: second",
            message_id="<bridge.6b1e4c2a-0000-4000-8000-000000000003@demo.example>",
        )
    )

    def subjects(**query: str) -> list[str]:
        answer = sandbox.client.get("/_sent", query_string=query)
        assert answer.status_code == 200
        return [s["subject"] for s in answer.get_json()["sent"]]

    assert subjects(to="ANNA@example.com") == ["Re: Доставка в Берлин [#T-1001]", "Re: second"]
    assert subjects(to="bob@example.com") == ["Re: Доставка в Берлин [#T-1001]"]
    assert subjects(to="nobody@example.com") == []
    assert len(subjects()) == 3  # oldest first
    assert [s["id"] for s in sandbox.client.get("/_sent").get_json()["sent"]] == [1, 2, 3]
    assert len(subjects(account=DEMO_ADDRESS)) == 3
    assert subjects(account="other@demo.example") == []
    bad = sandbox.client.get("/_sent", query_string={"to": "not an address"})
    assert bad.status_code == 400
    assert "to must be a plain e-mail address" in bad.get_json()["message"]


def test_smtp_faults_read_as_a_mail_servers_answers(sandbox: Sandbox) -> None:
    client, sender = sandbox.client, sandbox.sender()
    client.post("/_faults", json={"error_rate": 1})
    with pytest.raises(RetryableError, match="451"):
        sender.send(reply())
    client.post(
        "/_faults", json={"reset": True, "refuse_path": "bob@example\\.com", "refuse_seconds": 60}
    )
    with pytest.raises(PermanentError, match="550"):
        sender.send(reply(to="bob@example.com"))
    sender.send(reply())  # another recipient passes
    assert [s["envelope"]["rcpt_tos"] for s in client.get("/_sent").get_json()["sent"]] == [
        [CUSTOMER]
    ]
    # committed, then no answer in the client's time: delivered, and the client cannot know
    client.post(
        "/_faults", json={"reset": True, "commit_then_timeout_rate": 1, "timeout_seconds": 1.5}
    )
    with pytest.raises(AmbiguousError):
        sandbox.sender(timeout=0.5).send(reply(subject="Re: ambiguous"))
    # kept before the stall began: there by the time the client gave up
    assert [s["subject"] for s in client.get("/_sent").get_json()["sent"]][-1] == "Re: ambiguous"
    stats = client.get("/_stats").get_json()["by_status"]
    assert stats == {"451": 1, "550": 1, "250": 2}


# -- the customer writes: POST /_deliver ---------------------------------------------------------


def test_deliver_json_posts_a_signed_rfc5322_mail(
    sandbox: Sandbox, bridge: tuple[Bridge, str]
) -> None:
    stub, url = bridge
    sandbox.connect(url)
    stub.answers.append((202, {"ok": True, "stored": 1}))
    answer = sandbox.client.post(
        "/_deliver",
        json={
            "from": "Anna@Example.com",
            "name": "Анна К.",
            "subject": "Доставка?\r\nBcc: x@evil.test",
            "text": "Do you deliver\nto Berlin?",
            "in_reply_to": "bridge.1@demo.example",
            "references": ["<q0@example.com>"],
            "language": "ru",
            "headers": {"X-Mailer": "demo"},
        },
    )
    assert answer.status_code == 200, answer.get_json()
    data = answer.get_json()
    assert data["delivered"] is True and data["status"] == 202
    assert data["body"] == {"ok": True, "stored": 1}
    assert data["account"] == DEMO_ADDRESS and data["signed"] is True and data["error"] is None

    [posted] = stub.requests
    assert posted["key"] == "k3y"
    assert posted["headers"]["Content-Type"] == "message/rfc822"
    assert posted["headers"]["X-Bridge-Signature"] == signature(posted["body"])
    assert b"\r\n" in posted["body"] and b"\n\n" not in posted["body"].replace(b"\r\n", b"")
    mail = stub.mail()
    assert mail["From"].addresses[0].addr_spec == CUSTOMER
    assert mail["From"].addresses[0].display_name == "Анна К."
    assert b"=?utf-8?" in posted["body"]  # RFC 2047: the headers stay ASCII
    assert mail["To"] == DEMO_ADDRESS
    assert mail["Subject"] == "Доставка? Bcc: x@evil.test"  # one line, no header injected
    assert mail["Bcc"] is None
    assert mail["Message-ID"] == data["message_id"]
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", mail["Message-ID"])
    assert parsedate_to_datetime(mail["Date"]).timestamp() == pytest.approx(time.time(), abs=60)
    assert mail["In-Reply-To"] == "<bridge.1@demo.example>"
    assert mail["References"] == "<q0@example.com> <bridge.1@demo.example>"
    assert mail["Content-Language"] == "ru" and mail["X-Mailer"] == "demo"
    assert mail.get_content().replace("\r\n", "\n") == "Do you deliver\nto Berlin?\n"

    [delivery] = sandbox.client.get("/_deliveries", query_string={"from": CUSTOMER}).get_json()[
        "deliveries"
    ]
    assert delivery["delivered"] is True and delivery["status"] == 202
    assert delivery["from"] == CUSTOMER and delivery["message_id"] == data["message_id"]
    assert delivery["subject"] == "Доставка? Bcc: x@evil.test"
    assert delivery["text"] == "Do you deliver\nto Berlin?\n"
    assert (
        sandbox.client.get("/_deliveries", query_string={"from": "bob@example.com"}).get_json()[
            "deliveries"
        ]
        == []
    )
    second = sandbox.client.post("/_deliver", json={"from": CUSTOMER, "text": "again"})
    assert second.get_json()["message_id"] != data["message_id"]
    assert stub.mail()["Subject"] is None and stub.mail()["In-Reply-To"] is None


def test_deliver_html_mail_has_both_parts(sandbox: Sandbox, bridge: tuple[Bridge, str]) -> None:
    stub, url = bridge
    sandbox.connect(url)
    sandbox.client.post(
        "/_deliver",
        json={"from": CUSTOMER, "subject": "Hi", "text": "plain", "html": "<p>rich</p>"},
    )
    mail = stub.mail()
    assert mail.get_content_type() == "multipart/alternative"
    plain, rich = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and rich is not None
    assert "rich" in rich.get_content() and plain.get_content().strip() == "plain"


def test_deliver_raw_mime_posts_the_bytes_unchanged(
    sandbox: Sandbox, bridge: tuple[Bridge, str]
) -> None:
    stub, url = bridge
    sandbox.connect(url)
    stub.answers.append((200, {"ok": True}))
    # the mailbox is the message's own recipient (To, any case)
    answer = sandbox.client.post("/_deliver", data=RAW_KOI8, content_type="message/rfc822")
    assert answer.status_code == 200, answer.get_json()
    data = answer.get_json()
    assert data == {
        **data,
        "delivered": True,
        "status": 200,
        "message_id": "<koi8-1@example.com>",
        "account": DEMO_ADDRESS,
        "signed": True,
    }
    [posted] = stub.requests
    assert posted["body"] == RAW_KOI8
    assert posted["headers"]["X-Bridge-Signature"] == signature(RAW_KOI8)
    [delivery] = sandbox.client.get("/_deliveries").get_json()["deliveries"]
    assert delivery["from"] == CUSTOMER and delivery["subject"] == "Заказ"
    assert delivery["text"] == "Здравствуйте!\n"
    # unsigned on request
    sandbox.client.post("/_deliver?sign=0", data=RAW_KOI8, content_type="message/rfc822")
    assert "X-Bridge-Signature" not in stub.requests[-1]["headers"]


def test_deliver_raw_mime_finds_the_mailbox(sandbox: Sandbox, bridge: tuple[Bridge, str]) -> None:
    stub, url = bridge
    sandbox.connect(url)
    other = RAW_KOI8.replace(b"To: Support <SUPPORT@demo.example>", b"To: bob@example.com")
    lost = sandbox.client.post("/_deliver", data=other, content_type="message/rfc822")
    assert lost.status_code == 404
    assert lost.get_json()["error"] == "account_not_found"
    assert "pass ?account=<address>" in lost.get_json()["message"]
    via = other.replace(b"Date:", b"Delivered-To: support@demo.example\r\nDate:")
    assert (
        sandbox.client.post("/_deliver", data=via, content_type="message/rfc822").status_code == 200
    )
    named = sandbox.client.post(
        f"/_deliver?account={DEMO_ADDRESS}", data=other, content_type="message/rfc822"
    )
    assert named.status_code == 200 and named.get_json()["delivered"] is True
    unknown = sandbox.client.post(
        "/_deliver?account=sales@demo.example", data=other, content_type="message/rfc822"
    )
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "account_not_found"
    assert len(stub.requests) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "wanted"),
    [
        (b"", "message/rfc822", "the body is empty"),
        (b"Hello, this is not a mail\r\n\r\nat all", "message/rfc822", "must start with header"),
        (b"Subject: no sender\r\n\r\nhi", "message/rfc822", "no From header"),
        (b"not json", "application/json", "post the mail as JSON"),
        (b"From: a@example.com\r\n\r\nhi", "text/plain", "Content-Type: message/rfc822"),
        (b'{"name": "Anna", "text": "hi"}', "application/json", "from must be a plain e-mail"),
        (
            b'{"from": "Anna <anna@example.com>", "text": "hi"}',
            "application/json",
            "from must be a plain e-mail",
        ),
        (b'{"from": "anna@example.com"}', "application/json", "write a subject or a text"),
        (
            b'{"from": "anna@example.com", "text": "hi", "in_reply_to": "no id"}',
            "application/json",
            "in_reply_to must be a message id",
        ),
        (
            b'{"from": "anna@example.com", "text": "hi", "colour": "red"}',
            "application/json",
            "unknown fields: ['colour']",
        ),
        (
            b'{"from": "anna@example.com", "text": "hi", "headers": {"Bcc": "x@y.z"}}',
            "application/json",
            "not a header field the form lets you set",
        ),
        (
            b'{"from": "anna@example.com", "text": "hi", "headers": {"X-A": "1\\r\\nBcc: x@y.z"}}',
            "application/json",
            "must be one line",
        ),
        (b'{"from": "anna@example.com", "text": 5}', "application/json", "must be strings"),
    ],
)
def test_bad_mail_is_a_400_that_says_why(
    sandbox: Sandbox, bridge: tuple[Bridge, str], body: bytes, content_type: str, wanted: str
) -> None:
    stub, url = bridge
    sandbox.connect(url)
    answer = sandbox.client.post("/_deliver", data=body, content_type=content_type)
    assert answer.status_code == 400
    data = answer.get_json()
    assert data["error"] == "invalid_mail" and wanted in data["message"], data
    assert stub.requests == []


def test_deliver_says_when_nobody_listens(sandbox: Sandbox) -> None:
    # the mailbox has no route to the bridge yet (the account is not connected)
    answer = sandbox.client.post("/_deliver", json={"from": CUSTOMER, "text": "hi"})
    assert answer.status_code == 409 and answer.get_json()["error"] == "not_connected"
    unknown = sandbox.client.post(
        "/_deliver", json={"from": CUSTOMER, "text": "hi", "to": "sales@demo.example"}
    )
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "account_not_found"
    # a bridge that is down: an answer without a status, and no URL (its path is a secret)
    with serve_wsgi(Flask("gone")) as running:
        gone = running.url
    sandbox.connect(gone)
    down = sandbox.client.post("/_deliver", json={"from": CUSTOMER, "text": "hi"}).get_json()
    assert down["delivered"] is False and down["status"] is None
    assert down["error"] == "connection refused" and "k3y" not in str(down)
    [delivery] = sandbox.client.get("/_deliveries").get_json()["deliveries"]
    assert delivery["delivered"] is False and delivery["error"] == "connection refused"


def test_deliver_returns_the_bridges_refusal(sandbox: Sandbox, bridge: tuple[Bridge, str]) -> None:
    stub, url = bridge
    sandbox.connect(url)
    stub.answers.append((401, {"error": "invalid_signature"}))
    answer = sandbox.client.post(
        "/_deliver", json={"from": CUSTOMER, "text": "hi", "secret": "another key"}
    ).get_json()
    assert answer["delivered"] is False and answer["status"] == 401
    assert answer["body"] == {"error": "invalid_signature"}
    assert answer["error"] == "the bridge answered 401 UNAUTHORIZED"
    posted = stub.requests[-1]
    assert posted["headers"]["X-Bridge-Signature"] == signature(posted["body"], "another key")
    sandbox.client.post("/_deliver", json={"from": CUSTOMER, "text": "hi", "sign": False})
    assert "X-Bridge-Signature" not in stub.requests[-1]["headers"]
    # a mailbox whose secret the sandbox was not told posts unsigned
    sandbox.client.post(
        "/_mailboxes",
        json={"address": "sales@demo.example", "webhook_url": f"{url}/webhooks/email/s4les"},
    )
    sales = sandbox.client.post(
        "/_deliver", json={"from": CUSTOMER, "text": "hi", "account": "sales@demo.example"}
    ).get_json()
    assert sales["signed"] is False and stub.requests[-1]["key"] == "s4les"
    assert "X-Bridge-Signature" not in stub.requests[-1]["headers"]


# -- the rest of the control API -------------------------------------------------------------


def test_mailboxes_state_reset_and_config(sandbox: Sandbox, bridge: tuple[Bridge, str]) -> None:
    stub, url = bridge
    client = sandbox.client
    sandbox.connect(url)
    state = client.get("/_state", query_string={"account": "Support@Demo.example"}).get_json()
    [box] = state["accounts"]
    assert box["webhook_url"] == f"{url}/webhooks/email/k3y" and box["has_webhook_secret"]
    assert SECRET not in str(state) and SECRET not in str(client.get("/_mailboxes").get_json())
    assert client.get("/_state?account=x@y.z").status_code == 404
    # updating a mailbox keeps what the update leaves out
    client.post("/_mailboxes", json={"address": DEMO_ADDRESS, "name": "Help desk"})
    [box] = client.get("/_mailboxes").get_json()["mailboxes"]
    assert box["name"] == "Help desk" and box["has_webhook_secret"] and box["webhook_url"]
    for bad in (
        {"address": "nope"},
        {"address": CUSTOMER, "webhook_url": "ftp://x"},
        {"address": CUSTOMER, "colour": 1},
        [],
    ):
        assert client.post("/_mailboxes", json=bad).status_code == 400, bad

    client.post("/_deliver", json={"from": CUSTOMER, "text": "hi"})
    sandbox.sender().send(reply())
    assert client.get("/_state").get_json()["accounts"][0]["delivered"] == 1
    assert client.post("/_reset", json={"keep_mailboxes": True}).status_code == 200
    assert client.get("/_sent").get_json()["sent"] == []
    assert client.get("/_deliveries").get_json()["deliveries"] == []
    assert client.get("/_mailboxes").get_json()["mailboxes"][0]["webhook_url"]
    client.post("/_reset")
    assert client.get("/_mailboxes").get_json()["mailboxes"] == [
        {
            "address": DEMO_ADDRESS,
            "name": "Demo Support",
            "webhook_url": None,
            "has_webhook_secret": False,
        }
    ]

    config = client.post("/_config", json={"webhook_timeout_s": 5}).get_json()
    assert config["webhook_timeout_s"] == 5
    for bad in ({"smtp_port": 2525}, {"colour": 1}, {"webhook_timeout_s": 0}):
        answer = client.post("/_config", json=bad)
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_config"


def test_configured_mailboxes_and_port(bridge: tuple[Bridge, str]) -> None:
    stub, url = bridge
    app = create_app(
        {
            "mailboxes": [
                {
                    "address": "help@acme.example",
                    "name": "Acme",
                    "webhook_url": f"{url}/webhooks/email/acme",
                    "webhook_secret": SECRET,
                }
            ]
        }
    )
    try:
        client = app.test_client()
        answer = client.post(
            "/_deliver", json={"from": CUSTOMER, "text": "hi", "to": "help@acme.example"}
        ).get_json()
        assert answer["delivered"] is True and stub.requests[-1]["key"] == "acme"
        # no demo mailbox here: a mail without "to" goes to the one mailbox with a route...
        assert client.post("/_deliver", json={"from": CUSTOMER, "text": "hi"}).status_code == 200
        assert stub.requests[-1]["key"] == "acme"
        # ...and with two, it must say which
        client.post(
            "/_mailboxes",
            json={"address": "sales@acme.example", "webhook_url": f"{url}/webhooks/email/s"},
        )
        two = client.post("/_deliver", json={"from": CUSTOMER, "text": "hi"})
        assert two.status_code == 404 and two.get_json()["error"] == "account_not_found"
        assert len(stub.requests) == 2
    finally:
        app.extensions[EXTENSION].smtp.stop()
    with pytest.raises(ValueError, match="unknown email sandbox config keys"):
        create_app({"smtp": 1})
    with pytest.raises(ValueError, match="address"):
        create_app({"mailboxes": [{"address": "nope"}]})
    with pytest.raises(ValueError, match="users must map SMTP logins"):
        create_app({"users": {"bot": ""}})


def test_smtp_users_must_log_in() -> None:
    login, password = "support@canary.example", "s3cret-canary"
    app = create_app({"users": {login: password, "relay-bot": "other"}})
    sb: EmailSandbox = app.extensions[EXTENSION]
    try:
        client = app.test_client()
        smtp = client.get("/_smtp").get_json()
        assert smtp == {
            "host": "127.0.0.1",
            "port": sb.smtp.port,
            "security": "plain",
            "auth": True,
            "running": True,
        }
        # a login that is an address is a mailbox (no route yet); the passwords never show
        state = client.get("/_state").get_json()
        assert [a["account"] for a in state["accounts"]] == [DEMO_ADDRESS, login]
        config = client.get("/_config").get_json()
        assert config["users"] == ["relay-bot", login] and password not in str(config)

        def settings(**values: Any) -> SmtpSettings:
            return SmtpSettings(
                host="127.0.0.1",
                port=sb.smtp.port,
                security="plain",
                from_addr=login,
                timeout=5.0,
                **values,
            )

        mail = reply(from_addr=login)
        with pytest.raises(AuthError, match="530"):  # no login: refused at MAIL FROM
            SmtpSender(settings()).send(mail)
        with pytest.raises(AuthError, match="535"):
            SmtpSender(settings(user=login, password="wrong")).send(mail)  # noqa: S106
        SmtpSender(settings(user=login, password=password)).send(mail)
        [sent] = client.get("/_sent").get_json()["sent"]
        assert sent["login"] == login and sent["envelope"]["mail_from"] == login
        assert (
            client.get("/_state", query_string={"account": login}).get_json()["accounts"][0]["sent"]
            == 1
        )
    finally:
        sb.smtp.stop()


def test_the_demo_server_mounts_it() -> None:
    server = build()
    client = Client(server)
    try:
        answer = client.get("/sandbox/email/_state")
        assert answer.status_code == 200
        assert answer.get_json()["accounts"][0]["account"] == DEMO_ADDRESS
        assert client.get("/sandbox/email/").get_json()["sandbox"] == "email"
    finally:
        server.mounts["/sandbox/email"].extensions[EXTENSION].smtp.stop()


def test_the_banner_tells_how_to_write_a_mail() -> None:
    base = "http://127.0.0.1:8000"
    with_mail = banner(base, Seeded("hubspot", 1, 2, "62515", email_account_id=3))
    assert f"{base}/sandbox/email/_deliver" in with_mail
    assert f"{base}/sandbox/email/_sent?to=anna@example.com" in with_mail
    assert DEMO_ADDRESS in with_mail
    without = banner(base, Seeded("hubspot", 1, 2, "62515"))
    assert "/sandbox/email/" not in without


# -- the try-it page's e-mail client ---------------------------------------------------------


def _email_js() -> str:
    return (STATIC / "email.js").read_text("utf-8")


@pytest.mark.parametrize("crm", CRMS)
def test_page_has_the_email_client(crm: str) -> None:
    html = create_web_app({"crm": crm}).test_client().get("/").get_data(as_text=True)
    for label in (
        "E-mail client",
        "Почтовый клиент",
        "Subject",
        "Тема",
        "Mailbox",
        "Почтовый ящик",
        'data-email-base="/email"',
        f'data-email-address="{DEMO_ADDRESS}"',
    ):
        assert label in html, label
    ids = set(re.findall(r'\bid="([\w-]+)"', html))
    used = set(re.findall(r'getElementById\("([\w-]+)"\)', _email_js()))
    assert used and used <= ids
    # the e-mail script loads first: demo.js's timer runs its poll
    assert html.index("email.js") < html.index("demo.js")


def test_page_email_settings_are_escaped_and_checked() -> None:
    app = create_web_app({"email_base": "http://mail.local/x", "email_address": 'a"<b>@x.y'})
    html = app.test_client().get("/").get_data(as_text=True)
    assert "<b>" not in html and 'data-email-base="http://mail.local/x"' in html
    with pytest.raises(ValueError, match="email_address"):
        create_web_app({"email_address": "nobody"})


def test_email_js_calls_only_endpoints_the_sandbox_has() -> None:
    js = _email_js()
    declared = re.findall(r'(\w+):\s*\["(/[^"]*)",\s*"(GET|POST)"\]', js)
    assert {name for name, _, _ in declared} == {
        "mailboxState",
        "deliverMail",
        "sentMail",
        "writtenMail",
    }
    assert set(re.findall(r'\bcall\("(\w+)"', js)) == {name for name, _, _ in declared}
    assert js.count("fetch(") == 1
    adapter = create_app().url_map.bind("localhost")
    for _, path, method in declared:
        adapter.match(path, method=method)  # raises when the route is missing


def test_email_js_never_renders_mail_as_html() -> None:
    js = _email_js()
    for unsafe in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "DOMParser",
        ".html",
    ):
        assert unsafe not in js, unsafe
    demo = (STATIC / "demo.js").read_text("utf-8")
    assert "window.DEMO_PANELS" in demo and "window.DEMO_PANELS" in js
