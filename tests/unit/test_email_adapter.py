# ruff: noqa: S105, S106  (fake secrets are test fixtures)
"""The e-mail channel adapter: its edge (keys, the HMAC header, what is not
a mail), what ``parse`` makes of customer mail, auto-replies and bounces
(threading hints, the thread state a reply needs, DMARC), ``send`` against
a real SMTP server, and ``connect``. The mails here are our own, written
for these cases (the corpora's real mails are in test_email_classify)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ConfigError, PayloadError, SignatureError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    OutboundMessage,
    OutboundStatus,
    WebhookRequest,
)
from channel_adapters.email import EmailAdapter, mail_key
from channel_adapters.email.adapter import KEY_HEADER
from channel_adapters.email.settings import EmailConnect
from channel_adapters.email.smtp import make_message_id
from tests.support.smtp_server import SmtpTestServer, smtp_server

T0 = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)
SECRET = "whsec-email-test"
CONV = "6bdc2f38-8a6a-4e3b-9e55-1f0c2d7a9a01"


def adapter(**settings: Any) -> EmailAdapter:
    return EmailAdapter(
        ChannelAccountInfo(
            id=1,
            kind="email",
            key="k",
            credentials={"webhook_secret": SECRET, "smtp_password": ""},
            settings={"mode": "webhook", "address": "support@acme.test", **settings},
            external_id="support@acme.test",
        )
    )


def mail(
    text: str = "Hello, my order 42 did not arrive.",
    *,
    subject: str = "Order 42",
    sender: str = "Anna Petrova <anna@example.org>",
    message_id: str | None = "<m1@example.org>",
    to: str = "support@acme.test",
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(T0)
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg.as_bytes()


def request(body: bytes, **headers: str) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="http://bridge.test/webhooks/email/k",
        headers={"content-type": "message/rfc822", **{k.lower(): v for k, v in headers.items()}},
        body=body,
        received_at=T0,
    )


def parse(body: bytes, channel: EmailAdapter | None = None) -> list[Any]:
    channel = channel or adapter()
    (delivery,) = channel.edge(request(body))
    return channel.parse(delivery.request(T0))


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- the edge ----------------------------------------------------------------------------


def test_a_mail_is_keyed_by_its_message_id_or_else_its_bytes() -> None:
    body = mail()
    (keyed,) = adapter().edge(request(body))
    assert keyed.key == "mid:m1@example.org" and keyed.headers == {KEY_HEADER: keyed.key}
    bare = mail(message_id=None)
    (hashed,) = adapter().edge(request(bare))
    assert hashed.key == "sha256:" + hashlib.sha256(bare).hexdigest()
    long_id = "<" + "x" * 300 + "@example.org>"
    (long,) = adapter().edge(request(mail(message_id=long_id)))
    assert long.key.startswith("mid#") and len(long.key) <= 200
    assert mail_key("x" * 300 + "@example.org", "") == long.key


@pytest.mark.parametrize(
    "body",
    [b"", b"hello world", b'{"json": true}', b"\r\n\r\nbody only", b"\r\nFrom: a@b.c\r\n\r\nx"],
)
def test_what_is_not_a_mail_is_a_400(body: bytes) -> None:
    with pytest.raises(PayloadError):
        adapter().edge(request(body))


def test_the_hmac_header_is_checked_when_present_and_required_when_asked() -> None:
    body = mail()
    adapter().verify(request(body))  # the path key alone
    adapter().verify(request(body, **{"X-Bridge-Signature": sign(body)}))
    for wrong in (sign(body, "other"), sign(body + b"x"), "sha256=", "garbage"):
        with pytest.raises(SignatureError):
            adapter().verify(request(body, **{"X-Bridge-Signature": wrong}))
    with pytest.raises(SignatureError):
        adapter(require_signature=True).verify(request(body))


def test_the_webhook_key_comes_from_the_environment_and_makes_signing_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_MAIL_KEY", "k3y-from-the-mta")
    keyed = EmailAdapter.connect(
        EmailConnect(address="Support@Acme.com", webhook_secret_env="ACME_MAIL_KEY")
    )
    assert keyed.credentials["webhook_secret"] == "k3y-from-the-mta"
    assert keyed.settings["require_signature"] is True and keyed.settings["mode"] == "webhook"
    bare = EmailAdapter.connect(EmailConnect(address="support@acme.com"))
    # without a key nothing can be checked: no header is required, and a
    # header is refused rather than taken on trust
    assert bare.credentials["webhook_secret"] == ""
    assert bare.settings["require_signature"] is False
    monkeypatch.delenv("ACME_MAIL_KEY")
    with pytest.raises(ConfigError, match="ACME_MAIL_KEY"):
        EmailAdapter.connect(EmailConnect(address="a@acme.com", webhook_secret_env="ACME_MAIL_KEY"))


# -- parse -------------------------------------------------------------------------------


def test_a_customer_mail_is_a_message_with_its_thread_state() -> None:
    (event,) = parse(mail())
    assert isinstance(event, InboundMessage)
    assert event.external_id == "mid:m1@example.org"
    assert event.external_user_id == "anna@example.org"
    assert event.external_thread_id.startswith("mail:") and len(event.external_thread_id) <= 64
    assert event.text == "Order 42\n\nHello, my order 42 did not arrive."
    assert event.profile.email == "anna@example.org"
    assert event.profile.display_name == "Anna Petrova"
    assert event.sent_at == T0 and event.opens_ticket and event.flag is None
    assert event.thread_state == {
        "address": "anna@example.org",
        "name": "Anna Petrova",
        "subject": "Order 42",
        "last_message_id": "m1@example.org",
        "references": ["m1@example.org"],
        "language": "en",
    }


def test_a_reply_names_its_thread_every_way_it_can() -> None:
    ours = str(uuid.uuid4())
    body = mail(
        "Thanks, still waiting.\n\n"
        "On Fri, Dec 4, 2026 at 10:00 AM Acme <support@acme.test> wrote:\n"
        "> We are on it.\n",
        subject="Re: Order 42 [#T-1042]",
        message_id="<m2@example.org>",
        to=f"support+{CONV}@acme.test",
        In_Reply_To=make_message_id(ours, "acme.test"),
        References=f"<m1@example.org> {make_message_id(ours, 'acme.test')}",
    )
    (event,) = parse(body)
    hints = event.thread_hints
    assert hints.bridge_ids == (ours,)
    assert hints.message_keys == ("mid:m1@example.org",)
    assert hints.conversation_uid == CONV
    assert hints.ticket == "1042"
    assert event.text == "Re: Order 42 [#T-1042]\n\nThanks, still waiting."  # the quote is gone


def test_a_sender_failing_dmarc_is_flagged_and_not_taken_for_the_address() -> None:
    body = mail(
        Authentication_Results="mx.acme.test; spf=fail smtp.mailfrom=example.org; "
        "dkim=none; dmarc=fail header.from=example.org"
    )
    (event,) = parse(body)
    assert event.flag == "dmarc_failed"
    assert event.external_user_id == "unverified:anna@example.org"
    assert event.profile.email is None


CORPORA = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"


def test_a_from_address_passing_dmarc_is_verified() -> None:
    # rspamd/rspamd test/functional/messages/arcallow.eml (MANIFEST.json):
    # mx.google.com's Authentication-Results say dmarc=pass for outlook.com
    body = (CORPORA / "email" / "raw_mime" / "rspamd" / "arcallow.eml").read_bytes()
    (event,) = parse(body)
    assert isinstance(event, InboundMessage)
    assert (event.profile.email, event.profile.email_verified) == ("testcpsf@outlook.com", True)
    assert event.profile.phone_verified is False


@pytest.mark.parametrize(
    ("headers", "email"),
    [
        ({}, "anna@example.org"),  # no Authentication-Results at all
        ({"Authentication_Results": "mx.acme.test; spf=pass; dmarc=none"}, "anna@example.org"),
        ({"Authentication_Results": "mx.acme.test; spf=fail; dmarc=fail"}, None),
        (  # DMARC checked the From; the address we answer is elsewhere
            {
                "Authentication_Results": "mx.acme.test; dkim=pass; dmarc=pass",
                "Reply_To": "someone@elsewhere.test",
            },
            "someone@elsewhere.test",
        ),
    ],
)
def test_an_address_dmarc_did_not_prove_is_not_verified(
    headers: dict[str, str], email: str | None
) -> None:
    (event,) = parse(mail(**headers))  # ours: each case's headers on one mail
    assert isinstance(event, InboundMessage)
    assert (event.profile.email, event.profile.email_verified) == (email, False)


def test_our_own_mail_passing_dmarc_is_verified() -> None:
    headers = {"Authentication_Results": "mx.acme.test; dkim=pass; dmarc=pass header.from=ex"}
    (event,) = parse(mail(**headers))
    assert isinstance(event, InboundMessage)
    assert (event.profile.email, event.profile.email_verified) == ("anna@example.org", True)


def test_an_auto_reply_is_ignored_by_its_class() -> None:
    (event,) = parse(
        mail("I am away until Monday.", subject="Out of office", Auto_Submitted="auto-replied")
    )
    assert event == IgnoredEvent("email", "mid:m1@example.org", "auto_reply")


def _bounce(original: str) -> bytes:
    """An RFC 3464 report on ``original`` (our own, shaped as Postfix sends them)."""
    return (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        "To: support@acme.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n"
        "--B\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "--B\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; anna@example.org\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "--B\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        "From: support@acme.test\r\n"
        "To: anna@example.org\r\n"
        f"Message-ID: {original}\r\n"
        "Subject: Re: Order 42\r\n"
        "--B--\r\n"
    ).encode()


def test_a_bounce_of_our_reply_fails_it_and_another_bounce_is_ignored() -> None:
    ours = str(uuid.uuid4())
    (status,) = parse(_bounce(make_message_id(ours, "acme.test")))
    assert isinstance(status, OutboundStatus)
    assert (status.bridge_id, status.status) == (ours, "failed")
    assert status.error is not None and "5.1.1" in status.error
    (other,) = parse(_bounce("<someone-else@example.org>"))
    assert other == IgnoredEvent("email", "mid:bounce-1@mx.example.org", "bounce")


def test_our_own_mail_coming_back_is_an_echo() -> None:
    ours = make_message_id(str(uuid.uuid4()), "acme.test")
    (event,) = parse(mail(sender="Acme <support@acme.test>", message_id=ours))
    assert isinstance(event, IgnoredEvent) and event.event_type == "own_echo"


# -- send ----------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with smtp_server() as running:
        yield running


def test_a_reply_goes_out_threaded_with_the_ticket_and_the_reply_address(
    server: SmtpTestServer,
) -> None:
    channel = adapter(
        smtp_host=server.host, smtp_port=server.port, smtp_security="plain", from_name="Acme"
    )
    bridge_id = str(uuid.uuid4())
    state = {
        "address": "anna@example.org",
        "subject": "Order 42",
        "last_message_id": "m2@example.org",
        "references": ["m1@example.org", "m2@example.org"],
        "language": "ru",
    }
    result = channel.send(
        OutboundMessage(
            bridge_id=bridge_id,
            external_thread_id="mail:x",
            text="We found it <b>today</b>.",
            thread_state=state,
            ticket="T-1042",
            conversation_uid=CONV,
        )
    )
    (sent,) = server.messages
    assert result.external_ids == (make_message_id(bridge_id, "acme.test"),)
    assert sent["Message-ID"] == result.external_ids[0]
    assert sent["In-Reply-To"] == "<m2@example.org>"
    assert sent["References"].split() == ["<m1@example.org>", "<m2@example.org>"]
    assert sent["Subject"] == "Re: Order 42 [#T-1042]"
    assert sent["To"] == "anna@example.org"
    assert f"support+{CONV}@acme.test" in sent["Reply-To"]
    assert sent["Auto-Submitted"] is None
    html = sent.get_body(("html",)).get_content()
    assert "&lt;b&gt;today&lt;/b&gt;" in html


def test_the_acknowledgement_is_marked_automatic(server: SmtpTestServer) -> None:
    channel = adapter(smtp_host=server.host, smtp_port=server.port, smtp_security="plain")
    channel.send(
        OutboundMessage(
            bridge_id=str(uuid.uuid4()),
            external_thread_id="mail:x",
            text="We have your request.",
            thread_state={"address": "anna@example.org", "subject": "Order 42"},
            ticket="T-1042",
            auto="acknowledgement",
        )
    )
    (sent,) = server.messages
    assert sent["Auto-Submitted"] == "auto-replied"
    assert sent["X-Auto-Response-Suppress"] == "All"


# -- connect ------------------------------------------------------------------------------


def test_connect_takes_passwords_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_MAIL_PASSWORD", "s3cret")
    connected = EmailAdapter.connect(
        EmailConnect(
            address="Support@Acme.test",
            user="support",
            password_env="ACME_MAIL_PASSWORD",
            imap_host="imap.acme.test",
        )
    )
    assert connected.external_id == "support@acme.test"
    assert connected.settings["mode"] == "polling"
    assert (connected.settings["imap_port"], connected.settings["smtp_host"]) == (
        993,
        "imap.acme.test",
    )
    assert connected.credentials["imap_password"] == "s3cret"
    assert connected.credentials["smtp_password"] == "s3cret"
    assert connected.credentials["webhook_secret"] == ""  # no key named: none
    webhook = EmailAdapter.connect(EmailConnect(address="support@acme.test"))
    assert webhook.settings["mode"] == "webhook" and webhook.credentials["imap_password"] == ""
    with pytest.raises(ConfigError, match="NOT_SET"):
        EmailAdapter.connect(
            EmailConnect(address="a@acme.test", password_env="NOT_SET", imap_host="imap.acme.test")
        )
    with pytest.raises(ConfigError):
        EmailAdapter.connect(EmailConnect(address="not an address"))


def test_a_customer_mail_without_any_sender_address_is_ignored_with_its_reason() -> None:
    body = mail(sender="undisclosed-recipients:;")
    (event,) = parse(body)
    assert event == IgnoredEvent("email", "mid:m1@example.org", "no_sender")


@pytest.mark.parametrize(
    "prefix",
    [b"\xef\xbb\xbf", b"   \n", b"\t \r\n"],
    ids=["utf-8 BOM (MimeKit messages__feedback-report.txt)", "spaces (flanker)", "blanks"],
)
def test_the_edge_takes_what_the_parser_takes_before_the_headers(prefix: bytes) -> None:
    (delivery,) = adapter().edge(request(prefix + mail()))
    assert delivery.key == "mid:m1@example.org"
    (event,) = adapter().parse(delivery.request(T0))
    assert isinstance(event, InboundMessage)
