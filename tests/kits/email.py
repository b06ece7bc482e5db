# ruff: noqa: S105, S106  (fake secrets and passwords are test fixtures)
"""The e-mail channel's kit: one raw RFC 5322 mail per request
(``message/rfc822``) at the account's URL, proven by the path key and an
``X-Bridge-Signature: sha256=<hex HMAC-SHA256 of the body>`` header with the
account's ``webhook_secret`` (required when the account's
``require_signature`` says so: every account here does); or the same bytes
from the IMAP poller. A delivery is keyed by its Message-ID (``mid:<id>``),
else by its bytes' SHA-256 (by its UID from the poller); ``parse`` classifies
the mail: a customer's is a message, a bounce of our own reply an
``OutboundStatus``, anything else automatic an ``IgnoredEvent``
(``channel_adapters/email``). Replies go out over SMTP.

The real mails are the corpora in ``tests/fixtures/corpora/email`` (each
labelled with its MANIFEST source); the reply bodies there (texts and HTML
without a header) are sent wrapped in a plain customer's header block.

A mail names its thread by ``In-Reply-To``/``References`` (not by a chat id):
:meth:`EmailKit.customer_message` plays the customer's mail client, which
lists the earlier Message-IDs of the conversation (same ``chat``, same
``name``) in ``References`` as every client does, so a chat's mails land in
one conversation per account, as the cross-cutting suites expect.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.policy
import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import cache
from pathlib import Path
from typing import Any

import requests
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.model import (
    ChannelAccountInfo,
    IgnoredEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    RawDelivery,
    WebhookRequest,
)
from channel_adapters.email import EmailAdapter, mail_key, mime
from channel_adapters.email import quotes as email_quotes
from channel_adapters.email import smtp as email_smtp
from channel_adapters.email.imap import Fetched, FetchedMail
from channel_adapters.email.mime import decode_header_value
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
from tests.kits.common import T0, BrokenInvariant, check_channel_events, ident

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora"
RFC822 = "message/rfc822"
HEADER = "X-Bridge-Signature"
#: the support address of the parser's account (our replies' domain)
DOMAIN = "acme.test"
ADDRESS = f"support@{DOMAIN}"
#: where the kit's customers write from
CUSTOMERS = "customers.example"
#: the delivery key's column (``messages.dedupe_key``) and the thread id's
MAX_KEY, MAX_THREAD = 255, 64
#: a fixed Date for built mails (the same delivery is the same bytes)
DATE0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes) -> dict[str, str]:
    """The header an MTA pipe or a mail provider's inbound route adds."""
    return {HEADER: signature(secret, body)}


# -- the parser's account --------------------------------------------------------------------

SECRET = "kit-email-parser-webhook-secret"


@cache
def adapter() -> EmailAdapter:
    """A webhook account that requires the HMAC header; never reaches a
    server (parse makes no call)."""
    account = ChannelAccountInfo(
        id=1,
        kind="email",
        key="acct-key",
        credentials={"webhook_secret": SECRET, "imap_password": "", "smtp_password": ""},
        settings={"mode": "webhook", "address": ADDRESS, "require_signature": True},
        external_id=ADDRESS,
    )
    return EmailAdapter(account)


class _OneMail:
    """A mailbox whose every fetch holds the one mail put in it: the
    poller's path (no edge: the bytes come from the IMAP server) offline."""

    UIDVALIDITY, UID = 42, 7

    def __init__(self) -> None:
        self.raw = b""

    def fetch(self, cursor: str | None, timeout: float) -> Fetched:
        mail = FetchedMail(self.UID, self.UIDVALIDITY, self.raw)
        return Fetched((mail,), f"{self.UIDVALIDITY}:{self.UID}")

    def after_journaled(self, uids: Sequence[int], uidvalidity: int | None = None) -> None:
        raise AssertionError("nothing is marked or moved by this account")


@cache
def poller() -> tuple[EmailAdapter, _OneMail]:
    account = ChannelAccountInfo(
        id=2,
        kind="email",
        key="poll-key",
        credentials={"webhook_secret": "", "imap_password": "x", "smtp_password": "x"},
        settings={"mode": "polling", "address": ADDRESS, "imap_host": "imap.acme.test"},
        external_id=ADDRESS,
    )
    channel = EmailAdapter(account)
    box = _OneMail()
    channel._mailbox = box  # the adapter's mailbox client, replaced by the one above
    return channel, box


def request(body: bytes, headers: Mapping[str, str] | None = None) -> WebhookRequest:
    signed = dict(headers) if headers is not None else sign(SECRET, body)
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/email/acct-key",
        headers={"content-type": RFC822, **{k.lower(): v for k, v in signed.items()}},
        body=body,
        received_at=T0,
    )


# -- what parse may return ---------------------------------------------------------------------


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in an event (its dataclasses, mappings and sequences)."""
    if isinstance(value, str):
        yield where, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _strings(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key, f"{where}[key]")
            yield from _strings(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def check_events(events: Any, key: str) -> None:
    """One event per mail, keyed by the delivery's key; every string in it
    storable (UTF-8, no lone surrogate: PostgreSQL and SQLite refuse them);
    a message's ids within their columns, its sender one address (no
    whitespace or control character: header injection) and its thread state
    JSON (conversations.channel_state)."""
    if not isinstance(events, list) or len(events) != 1:
        raise BrokenInvariant(f"a mail must give exactly one event: {events!r}")
    (event,) = events
    if isinstance(event, OutboundStatus):
        ident(event.external_id, "external_id")
        ident(event.bridge_id, "bridge_id")
        if event.status not in ("failed", "delayed"):
            raise BrokenInvariant(f"an outbound status is failed or delayed: {event.status!r}")
    elif isinstance(event, InboundMessage) and not event.external_user_id:
        raise BrokenInvariant("a message without a sender (no From or Reply-To address)")
    else:
        check_channel_events(events, exactly=1)
    if event.external_id != key:
        raise BrokenInvariant(f"the event's key {event.external_id!r} is not the delivery's")
    for where, text in _strings(event, "event"):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BrokenInvariant(f"{where} cannot be stored (a lone surrogate)") from None
    if isinstance(event, InboundMessage):
        if len(event.external_thread_id) > MAX_THREAD:
            raise BrokenInvariant(f"thread id over {MAX_THREAD}: {event.external_thread_id!r}")
        sender = event.external_user_id.removeprefix("unverified:")
        if _SPACE_OR_CONTROL.search(sender):
            raise BrokenInvariant(f"the sender is not one address: {sender!r}")
        if event.profile.email is not None and event.profile.email != sender:
            raise BrokenInvariant("the profile's address is not the sender's")
        try:
            json.dumps(dict(event.thread_state))
        except (TypeError, ValueError) as exc:
            raise BrokenInvariant(f"the thread state is not JSON: {exc}") from None
        if event.thread_hints is None:
            raise BrokenInvariant("a mail always carries its thread hints")


# -- driving the hooks as the web layer and the journal do ------------------------------------


def deliver(body: bytes) -> RawDelivery | None:
    """verify (must pass: signed with the account's secret) and edge: the
    delivery the journal stores; None for the edge's documented 4xx."""
    channel = adapter()
    req = request(body)
    channel.verify(req)
    try:
        deliveries = channel.edge(req)
    except PayloadError as exc:
        assert 400 <= exc.status_code < 500
        return None
    if len(deliveries) != 1:
        raise BrokenInvariant(f"one mail per request: {len(deliveries)} deliveries")
    (delivery,) = deliveries
    ident(delivery.key, "delivery key")
    if len(delivery.key) > MAX_KEY or delivery.body != body:
        raise BrokenInvariant(f"a delivery is the body under a key of <= {MAX_KEY} characters")
    return delivery


def parse_delivery(delivery: RawDelivery, channel: EmailAdapter | None = None) -> list[Any] | None:
    """parse as the journal's normaliser calls it (the delivery's bytes and
    headers, rebuilt); None for a PayloadError (the delivery is rejected)."""
    channel = channel or adapter()
    req = delivery.request(T0)
    try:
        events = channel.parse(req)
    except PayloadError as exc:
        assert 400 <= exc.status_code < 500
        return None
    check_events(events, delivery.key)
    assert channel.parse(req) == events  # deterministic
    return events


def parse(body: bytes) -> list[Any] | None:
    """The webhook's path: verify, edge, then parse in the worker."""
    delivery = deliver(body)
    return None if delivery is None else parse_delivery(delivery)


def polled(body: bytes) -> list[Any] | None:
    """The IMAP poller's path: any bytes the server holds, no edge."""
    channel, box = poller()
    box.raw = body
    result = channel.poll(None, 0.0)
    if len(result.deliveries) != 1 or result.deliveries[0].body != body:
        raise BrokenInvariant("the poller hands each mail over once, as it is")
    (delivery,) = result.deliveries
    if len(delivery.key) > MAX_KEY:
        raise BrokenInvariant(f"a poller key over {MAX_KEY} characters")
    return parse_delivery(delivery, channel)


def fuzz(data: bytes) -> None:
    """verify, edge and parse on any bytes (signed and not), each allowed
    only its documented WebhookError; the same bytes from the mailbox too
    (the poller hands them over without an edge)."""
    channel = adapter()
    for req in (request(data), request(data, {HEADER: data[:80].decode("latin-1")})):
        try:
            channel.verify(req)
        except WebhookError:
            pass
    try:
        deliveries = channel.edge(request(data))
    except WebhookError:
        deliveries = []
    from_mailbox, box = poller()
    box.raw = data
    pairs = [(channel, d) for d in deliveries]
    pairs += [(from_mailbox, d) for d in from_mailbox.poll(None, 0.0).deliveries]
    for hooks, delivery in pairs:
        try:
            events = hooks.parse(delivery.request(T0))
        except WebhookError:
            continue
        check_events(events, delivery.key)


# -- the corpora ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CorpusMail:
    """One real mail: ``label`` is its MANIFEST source (``repo:path``),
    ``file`` its path under the corpora; ``wrapped``: a reply body sent in a
    plain customer's header block; ``expect``: ``machine`` (never a
    message), ``customer`` (a message) or ``any``."""

    label: str
    file: str
    raw: bytes
    wrapped: bool
    expect: str


#: MANIFEST sources of machines' mails (bounces, auto-replies, complaints,
#: read receipts): never a message. sisimai's maildir/not/rb-issue-368-bug
#: is a postmaster's "email bounce notification" with Auto-Submitted (the
#: issue was sisimai's parser, not the mail); chatwoot's
#: non_utf_encoded_mail.eml is an auto-reply (its MANIFEST note).
MACHINE = re.compile(
    r"^(sisimai/set-of-emails:maildir/(?:bsd|dos)/"
    r"|sisimai/set-of-emails:maildir/not/rb-issue-368-bug\.eml$"
    r"|mailgun/flanker:tests/fixtures/messages/(?:bounce|complaints)/"
    r"|mailgun/flanker:tests/fixtures/messages/disposition-notification\.eml$"
    r"|mikel/mail:spec/fixtures/emails/multipart_report_emails/"
    r"|jstedfast/MimeKit:UnitTests/TestData/messages/"
    r"(?:bounce|delivery-status|disposition-notification|feedback-report)"
    r"|chatwoot/chatwoot:spec/fixtures/files/non_utf_encoded_mail\.eml$)"
)
#: MANIFEST sources of people's mails: a message
CUSTOMER = re.compile(
    r"^(mailgun/talon:tests/fixtures/(?:standard_replies/[^/]+|reply-quotations-share-block)\.eml$"
    r"|sisimai/set-of-emails:maildir/not/is-not-bounce-"
    r"|chatwoot/chatwoot:spec/fixtures/files/references\.eml$)"
)


def _is_body(file: str) -> bool:
    """A reply body (text or HTML without a header), not a mail."""
    name = file.rsplit("/", 1)[1]
    return (
        file.startswith("email/reply_bodies/")
        or name.endswith(".html")
        or name.endswith("_reply_text")
    )


def wrap(body: bytes, html: bool, n: int) -> bytes:
    """A reply body as the customer's mail client sends it."""
    head = (
        f"From: Customer {n} <customer-{n}@{CUSTOMERS}>\r\n"
        f"To: {ADDRESS}\r\n"
        "Subject: Re: your question\r\n"
        f"Message-ID: <corpus-{n}@{CUSTOMERS}>\r\n"
        f"Date: {format_datetime(DATE0)}\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: text/{'html' if html else 'plain'}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
    )
    return head.encode() + body


@cache
def corpus() -> tuple[CorpusMail, ...]:
    """Every e-mail file of the corpora, labelled from the MANIFEST."""
    manifest = json.loads((CORPORA / "MANIFEST.json").read_text(encoding="utf-8"))
    sources = {e["file"]: f"{e['repo']}:{e['path']}" for e in manifest}
    found: list[CorpusMail] = []
    for n, path in enumerate(sorted(p for p in (CORPORA / "email").rglob("*") if p.is_file())):
        file = path.relative_to(CORPORA).as_posix()
        label = sources.get(file, "")
        raw = path.read_bytes()
        wrapped = _is_body(file)
        if wrapped:
            raw = wrap(raw, file.endswith(".html"), n)
        expect = "any"
        if MACHINE.match(label):
            expect = "machine"
        elif wrapped or CUSTOMER.match(label):
            expect = "customer"
        found.append(CorpusMail(label, file, raw, wrapped, expect))
    return tuple(found)


def seeds() -> list[bytes]:
    return [mail.raw for mail in corpus()] + [
        customer_mail(),
        _bounce(our_id(str(uuid.UUID(int=1)))),
    ]


@cache
def _small_mails() -> list[bytes]:
    """The real mails the mutations start from (the largest are parsed
    once each by the corpus property, not hundreds of times)."""
    return [m.raw for m in corpus() if len(m.raw) <= 64_000]


# -- building mails --------------------------------------------------------------------------------


def our_id(bridge_id: str, domain: str = DOMAIN) -> str:
    """Our Message-ID for the outbound message ``bridge_id``."""
    return email_smtp.make_message_id(bridge_id, domain)


def customer_mail(
    text: str = "Hello, my order 42 did not arrive.",
    *,
    sender: str = f"anna@{CUSTOMERS}",
    name: str | None = "Anna Petrova",
    subject: str | None = "Order 42",
    message_id: str | None = f"<m1@{CUSTOMERS}>",
    to: str = ADDRESS,
    date: dt.datetime | None = DATE0,
    crlf: bool = True,
    cte: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    """A customer's mail as a mail client writes it."""
    msg = EmailMessage(policy=email.policy.SMTP if crlf else email.policy.default)
    msg["From"] = formataddr((name, sender), "utf-8") if name else sender
    msg["To"] = to
    if subject is not None:
        msg["Subject"] = subject
    if date is not None:
        msg["Date"] = format_datetime(date)
    if message_id is not None:
        msg["Message-ID"] = message_id
    for field, value in headers:
        msg[field] = value
    msg.set_content(text, charset="utf-8", cte=cte)
    if attachment is not None:
        file_name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=file_name)
    return msg.as_bytes()


def _bounce(
    original: str,
    *,
    status: str = "5.1.1",
    action: str = "failed",
    part: str = "text/rfc822-headers",
    key: str = "bounce-1",
) -> bytes:
    """An RFC 3464 report on ``original``, shaped as Postfix sends them."""
    if part == "message/rfc822":
        enclosed = (
            f"From: {ADDRESS}\r\nTo: anna@{CUSTOMERS}\r\nMessage-ID: {original}\r\n"
            "Subject: Re: Order 42\r\n\r\nYour order is on its way.\r\n"
        )
    else:
        enclosed = (
            f"From: {ADDRESS}\r\nTo: anna@{CUSTOMERS}\r\nMessage-ID: {original}\r\n"
            "Subject: Re: Order 42\r\n"
        )
    code = "550" if status.startswith("5") else "451"
    return (
        "From: MAILER-DAEMON@mx.customers.example (Mail Delivery System)\r\n"
        f"To: {ADDRESS}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{key}@mx.customers.example>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n"
        "--B\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "--B\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customers.example\r\n\r\n"
        f"Final-Recipient: rfc822; anna@{CUSTOMERS}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; {code} {status} mailbox unavailable\r\n"
        "--B\r\n"
        f"Content-Type: {part}\r\n\r\n"
        f"{enclosed}"
        "--B--\r\n"
    ).encode()


def _exim_bounce(original: str, key: str = "exim-1") -> bytes:
    """A bounce written for people (Exim): X-Failed-Recipients, the
    original message quoted below the explanation."""
    return (
        "From: Mail Delivery System <Mailer-Daemon@mx.customers.example>\r\n"
        f"To: {ADDRESS}\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\n"
        f"Message-ID: <{key}@mx.customers.example>\r\n"
        f"X-Failed-Recipients: anna@{CUSTOMERS}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "\r\n"
        "This message was created automatically by mail delivery software.\r\n\r\n"
        "A message that you sent could not be delivered to one or more of its\r\n"
        "recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
        f"  anna@{CUSTOMERS}\r\n"
        f"    SMTP error from remote mail server after RCPT TO:<anna@{CUSTOMERS}>:\r\n"
        "    550 5.1.1 User unknown\r\n\r\n"
        "------ This is a copy of the message, including all the headers. ------\r\n\r\n"
        f"From: {ADDRESS}\r\n"
        f"To: anna@{CUSTOMERS}\r\n"
        f"Message-ID: {original}\r\n"
        "Subject: Re: Order 42\r\n\r\n"
        "Your order is on its way.\r\n"
    ).encode()


# -- hostile bytes ---------------------------------------------------------------------------------

HEADER_NAMES = [
    "From", "To", "Cc", "Reply-To", "Sender", "Subject", "Date", "Message-ID", "In-Reply-To",
    "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "Content-Disposition", "Auto-Submitted", "Precedence", "List-Id", "List-Unsubscribe",
    "X-Autoreply", "X-Failed-Recipients", "X-Loop", "Return-Path", "Delivered-To",
    "Authentication-Results", "Received", "X-Original-To", "Content-ID", "X-Apple-Action",
]  # fmt: skip
HEADER_VALUES = [
    "", "<>", "Anna <anna@customers.example>", '"Pat, O\'Brien" <pat@customers.example>',
    "=?utf-8?B?0JDQvdC90LA=?= <anna@customers.example>", "=?koi8-r?Q?=F0=D2=C9=D7=C5=D4?=",
    "=?x-unknown?Q?=FF=FE?=", "=?utf-8?Q?broken", "=?utf-8?B?#$%?=", "undisclosed-recipients:;",
    "<m1@customers.example>", "<m1@customers.example> <m2@customers.example>", "<a b@c>",
    f"<bridge.{uuid.UUID(int=2)}@{DOMAIN}>", f"support+{uuid.UUID(int=3)}@{DOMAIN}",
    'multipart/mixed; boundary="b1"', "multipart/alternative; boundary=b2",
    "multipart/report; report-type=delivery-status; boundary=b3", "multipart/mixed; boundary=",
    'text/plain; charset="koi8-r"', "text/html; charset=utf-8", "text/plain; charset=utf-7",
    "message/rfc822", "message/delivery-status", "message/feedback-report", "text/rfc822-headers",
    "base64", "quoted-printable", "8bit", "x-uuencode", "auto-replied", "no", "bulk", "list",
    "mx.acme.test; dmarc=fail header.from=customers.example", "spf=pass; dkim=pass; dmarc=pass",
    "Thu, 1 Jan 1970 00:00:00 +0000", "Mon, 31 Dec 9999 23:59:59 -2400",
    "Fri, 31 Feb 2025 25:61:61",
    "attachment; filename*=utf-8''%D0%B0.pdf", "inline; filename=\"x.png\"", "[#T-1001] order 7",
    "Re: Re: AW: Order", "Automatic reply: away", "Undelivered Mail Returned to Sender",
    "<list.customers.example>", "VACATION", "a" * 3000,
]  # fmt: skip
BODY_PIECES = [
    "--b1\r\n", "--b1--\r\n", "--b2\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n",
    "Content-Type: text/plain\r\n\r\n", "> quoted\r\n", "On Mon, 1 Jan 2024, Anna wrote:\r\n",
    "-- \r\nAnna\r\n", "=C3=A9=\r\n", "0JDQvdC90LA=\r\n", "begin 644 x.txt\r\n#86)C\r\nend\r\n",
    "<html><body><p>x</p><blockquote>q</blockquote><script>x()</script></body></html>",
    "Final-Recipient: rfc822; a@customers.example\r\nAction: failed\r\nStatus: 5.1.1\r\n",
    f"Message-ID: <bridge.{uuid.UUID(int=4)}@{DOMAIN}>\r\n", "Sent from my iPhone\r\n",
    "From: Anna <anna@customers.example>\r\nSent: Monday\r\nSubject: x\r\n",
    "-----Original Message-----\r\n", "\x00", "\ufeff", "\ud800",
]  # fmt: skip
_ENCODINGS = ("utf-8", "latin-1", "cp1251", "koi8-r", "utf-16")


def _encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")


@st.composite
def mail_like(draw: st.DrawFn) -> bytes:
    """Bytes shaped like a mail: header fields drawn from the ones the
    parser reads, hostile values, any line ending, a body of MIME pieces."""
    eol = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    fields = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=12)),
                st.one_of(st.sampled_from(HEADER_VALUES), st.text(max_size=40)),
            ),
            max_size=12,
        )
    )
    head = eol.join(f"{name}: {value}" for name, value in fields)
    body = "".join(
        draw(st.lists(st.one_of(st.sampled_from(BODY_PIECES), st.text(max_size=30)), max_size=10))
    )
    encoding = draw(st.sampled_from(_ENCODINGS))
    return _encode(head + eol + eol + body, encoding)


def _split_mail(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header lines (with their endings) and the rest."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    cut = min(ends) + 1 if ends else len(raw)
    return raw[:cut].splitlines(keepends=True), raw[cut:]


@st.composite
def mutated_mail(draw: st.DrawFn, mails: Sequence[bytes]) -> bytes:
    """A real mail with 1-4 edits: a header field dropped, repeated,
    given a hostile value or added; the mail cut short; bytes spliced in;
    its line endings changed; its boundaries broken; its body replaced."""
    raw = draw(st.sampled_from(list(mails)))
    for _ in range(draw(st.integers(1, 4))):
        lines, body = _split_mail(raw)
        action = draw(
            st.sampled_from(
                ["drop", "repeat", "value", "add", "cut", "splice", "eol", "boundary", "body"]
            )
        )
        at = draw(st.integers(0, len(lines)))
        if action == "drop" and lines:
            del lines[min(at, len(lines) - 1)]
        elif action == "repeat" and lines:
            lines.insert(at, draw(st.sampled_from(lines)))
        elif action == "value" and lines:
            index = min(at, len(lines) - 1)
            field = lines[index].split(b":", 1)[0]
            hostile = _encode(draw(st.sampled_from(HEADER_VALUES)), "utf-8")
            lines[index] = field + b": " + hostile + b"\r\n"
        elif action == "add":
            name = draw(st.sampled_from(HEADER_NAMES))
            value = draw(st.one_of(st.sampled_from(HEADER_VALUES), st.text(max_size=30)))
            lines.insert(at, _encode(f"{name}: {value}\r\n", "utf-8"))
        elif action == "cut":
            raw = raw[: draw(st.integers(0, len(raw)))]
            continue
        elif action == "splice":
            where = draw(st.integers(0, len(raw)))
            piece = draw(
                st.one_of(
                    st.binary(max_size=20),
                    st.sampled_from(BODY_PIECES).map(lambda p: _encode(p, "utf-8")),
                )
            )
            raw = raw[:where] + piece + raw[where:]
            continue
        elif action == "eol":
            style = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
            raw = re.sub(rb"\r\n|\r|\n", style, raw)
            continue
        elif action == "boundary":
            body = re.sub(rb"(?m)^--", b"-", body)
        elif action == "body":
            body = _encode(
                "".join(draw(st.lists(st.sampled_from(BODY_PIECES), max_size=8))), "utf-8"
            )
        raw = b"".join(lines) + body
    return raw


# -- properties ------------------------------------------------------------------------------------

#: bytes that once broke, or could break, a mail parser (tried first)
EXAMPLES: tuple[bytes, ...] = (
    b"",
    b"From: a@customers.example",
    b"\xef\xbb\xbfFrom: a@customers.example\r\n\r\nhi",
    b"From MAILER-DAEMON Sat Oct  4 08:00:09 2025\r\nFrom: a@b.example\r\n\r\nx",
    b"Subject: \xff\xfe\xed\r\n\r\n\xff\xfe",
    b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
    b"From: a@b.example\r\n"
    + b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(300)
    ),
    b"From: a@b.example\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 500 + b"x",
    b"From: a@b.example\r\nReferences: " + b" ".join(b"<r%d@x>" % i for i in range(5000)),
    b"From: a@b.example\r\nMessage-ID: <" + b"x" * 5000 + b"@y>\r\n\r\nx",
    b"From: =?utf-8?B?" + b"A" * 10_000 + b"?= <a@b.example>\r\n\r\nx",
    b"Date: Mon, 31 Dec 99999 23:59:59 +9999\r\nFrom: a@b.example\r\n\r\nx",
    b"From: a@b.example\r\nContent-Transfer-Encoding: base64\r\n\r\n====\xff",
    b'From: a@b.example\r\nContent-Type: text/plain; charset="\\"\r\n\r\nx',
    b'From: "\\\r\n\r\n',
    b"From: a@b.example\r\nContent-Type: text/html\r\n\r\n" + b"<div>" * 5000,
)


def any_body_is_one_event_or_a_payload_error(body: bytes) -> None:
    parse(body)


def any_mail_from_the_mailbox_is_one_event_or_a_payload_error(body: bytes) -> None:
    polled(body)


def any_header_is_verified_or_a_signature_error(given: str | None, body: bytes) -> None:
    """verify passes exactly when the header holds the body's HMAC under the
    account's secret (surrounding whitespace aside): anything else, a
    missing header included, is a SignatureError (403), never another
    exception."""
    headers = {} if given is None else {HEADER: given}
    try:
        adapter().verify(request(body, headers))
        passed = True
    except SignatureError:
        passed = False
    assert passed == (given is not None and given.strip() == signature(SECRET, body)), given


def the_corpus_is_there() -> None:
    mails = corpus()
    assert len(mails) >= 250 and all(m.label for m in mails), "a file without a MANIFEST entry"
    assert sum(m.expect == "machine" for m in mails) >= 60
    assert sum(m.expect == "customer" for m in mails) >= 120


def every_corpus_mail_is_an_event() -> None:
    """Every real mail is one event from the mailbox and through the
    webhook alike (a BOM or a line of spaces before the headers included:
    MimeKit feedback-report.txt, flanker enclosed*.eml)."""
    for mail in corpus():
        assert polled(mail.raw) is not None, mail.label
        assert parse(mail.raw) is not None, mail.label


def machines_mails_never_become_messages() -> None:
    """Bounces, auto-replies, complaints and read receipts of the corpora
    are never a message; the people's mails are, with text."""
    for mail in corpus():
        events = polled(mail.raw)
        assert events is not None, mail.label
        (event,) = events
        if mail.expect == "machine":
            assert not isinstance(event, InboundMessage), mail.label
        elif mail.expect == "customer":
            assert isinstance(event, InboundMessage), (mail.label, event)
            assert event.text.strip(), mail.label


def _clean(text: str) -> str:
    return " ".join(text.split())


def _field(raw: bytes, name: bytes) -> bytes:
    """A header field's raw value, folds kept."""
    found = re.search(rb"(?im)^" + name + rb":(.*(?:\r?\n[ \t].*)*)", b"".join(_split_mail(raw)[0]))
    return found.group(1) if found else b""


def _folded_by_an_encoded_word(raw: bytes, name: bytes) -> bool:
    """The field folds next to an encoded-word (where the MIME bugs of the
    report lose or add a space)."""
    return re.search(rb"\?=\r?\n[ \t]|\r?\n[ \t]+=\?", _field(raw, name)) is not None


def _same_but_spaces(got: str, want: str) -> bool:
    return got.replace(" ", "") == want.replace(" ", "")


WORD = st.text(alphabet=st.characters(categories=("Lu", "Ll", "Nd")), min_size=1, max_size=10)
LINE = st.lists(WORD, min_size=1, max_size=8).map(" ".join)
#: a text a person writes (no quote, signature or header marker in it)
TEXT = (
    st.lists(st.one_of(LINE, st.just("")), min_size=1, max_size=6).map("\n".join).filter(str.strip)
)
#: a display name as people type it (no control or format character)
NAME_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp")), max_size=30
)
LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True).map(lambda s: "c" + s)
HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True).map(lambda s: f"{s}.example")
ID_LEFT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)
THEIR_ID = st.builds(lambda left, host: f"{left}@{host}", ID_LEFT, HOST)
OUR_ID = st.uuids().map(lambda u: our_id(str(u))[1:-1])
ANY_ID = st.one_of(THEIR_ID, OUR_ID)
DATES = st.builds(
    lambda when, minutes: when.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))),
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2090, 1, 1)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.integers(-12 * 60, 14 * 60),
)


def a_customer_mail_round_trips(
    local: str,
    host: str,
    name: str | None,
    reply_to: str | None,
    subject: str,
    text: str,
    message_id: str | None,
    in_reply_to: str | None,
    references: list[str],
    ticket: int | None,
    plus: uuid.UUID | None,
    date: dt.datetime | None,
    dmarc: str | None,
    cte: str,
    crlf: bool,
    attachment: bool,
) -> None:
    sender = f"{local}@{host}"
    # a mail answers other mails, never itself
    references = [r for r in references if r != message_id]
    in_reply_to = in_reply_to if in_reply_to != message_id else None
    if ticket is not None:
        subject = f"{subject} [#T-{ticket}]".strip()
    headers: list[tuple[str, str]] = []
    if reply_to is not None:
        headers.append(("Reply-To", reply_to))
    if in_reply_to is not None:
        headers.append(("In-Reply-To", f"<{in_reply_to}>"))
    if references:
        headers.append(("References", " ".join(f"<{r}>" for r in references)))
    if dmarc is not None:
        headers.append(("Authentication-Results", f"mx.{DOMAIN}; spf=pass; dmarc={dmarc}"))
    raw = customer_mail(
        text,
        sender=sender,
        name=name,
        subject=subject or None,
        message_id=f"<{message_id}>" if message_id else None,
        to=f"support+{plus}@{DOMAIN}" if plus else ADDRESS,
        date=date,
        crlf=crlf,
        cte=cte,
        headers=headers,
        attachment=("invoice.pdf", b"%PDF-1.4 x") if attachment else None,
    )
    events = parse(raw)
    assert events is not None
    (event,) = events
    parsed = mime.parse_mail(raw)
    if not (parsed.reply_to_addr or parsed.from_addr):
        # the stdlib's generator folds a long display name holding ":" without
        # quotes, which reads back as a group (RFC 5322 §3.4) with no address:
        # nobody to answer, the adapter ignores the mail by that reason
        assert event == IgnoredEvent("email", event.external_id, "no_sender"), event
        return
    assert isinstance(event, InboundMessage), event
    # the key: the Message-ID (hashed when long), else the bytes
    if message_id:
        assert event.external_id == mail_key(message_id, "") and event.external_id
        assert event.provider_message_id == message_id
    else:
        assert event.external_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert event.provider_message_id is None
    # the sender: the reply address first, lowercased; unverified when DMARC failed
    address = (reply_to or sender).lower()
    if dmarc == "fail":
        assert event.external_user_id == f"unverified:{address}"
        assert event.profile.email is None and event.flag == "dmarc_failed"
    else:
        assert event.external_user_id == address and event.profile.email == address
        assert event.flag is None
    shown = (_clean(name) if name else "") or None
    if event.profile.display_name != shown and parsed.from_name is None:
        # the same fold of a long name with ":" (above) when a Reply-To still
        # names the sender: the From is a group, its name is lost
        assert b'"' not in raw.split(b"\nTo:", 1)[0], raw[:200]
    elif event.profile.display_name != shown:
        # MIME BUG (reported): a display name folded over two encoded-words
        # gets a space between them (the stdlib's address parser keeps the
        # folding whitespace RFC 2047 §6.2 says to ignore)
        assert _folded_by_an_encoded_word(raw, b"From"), (event.profile.display_name, shown)
        assert _same_but_spaces(event.profile.display_name or "", shown or "")
    # what it says: the subject, then the text
    said = "\n".join(line.rstrip() for line in text.strip().split("\n"))
    got = "\n".join(line.rstrip() for line in event.text.split("\n"))
    titled = _clean(subject)
    if subject and not got.startswith(titled + "\n\n") and got != titled:
        # MIME BUG (reported): a fold between an encoded-word and plain text
        # loses its space (decode_header_value joins decode_header's chunks
        # with ""); the subject's letters must still all be there
        assert _folded_by_an_encoded_word(raw, b"Subject"), (got, titled)
        titled = got.split("\n\n", 1)[0]
        assert _same_but_spaces(titled, _clean(subject)), (titled, subject)
    assert got == (f"{titled}\n\n{said}" if subject else said), (got, said)
    assert event.kind is MessageKind.TEXT
    # its parts, then the whole mail as it arrived (kept and linked for the CRM)
    *parts, original = event.attachments
    assert len(parts) == (1 if attachment else 0)
    if attachment:
        assert parts[0].file_name == "invoice.pdf"
        assert parts[0].mime_type == "application/pdf"
    assert (original.file_name, original.mime_type) == ("original.eml", "message/rfc822")
    assert original.content == raw
    assert event.sent_at == (date if date is not None else T0)
    assert event.opens_ticket
    # the threading: our ids it answers, the others' keys (the parent first), the reply
    # address's conversation, the subject's ticket
    hints = event.thread_hints
    assert hints is not None
    answered = [*([in_reply_to] if in_reply_to else []), *references]
    ours = {i.split("@")[0].removeprefix("bridge.") for i in answered if i.startswith("bridge.")}
    theirs = {mail_key(i, "") for i in answered if not i.startswith("bridge.")}
    assert set(hints.bridge_ids) == ours
    assert set(hints.message_keys) == theirs
    if in_reply_to is not None and not in_reply_to.startswith("bridge."):
        assert hints.message_keys[0] == mail_key(in_reply_to, "")
    assert hints.conversation_uid == (str(plus) if plus else None)
    assert hints.ticket == (str(ticket) if ticket is not None else None)
    # what a reply needs
    state = event.thread_state
    assert state["address"] == address and state["subject"] == (titled if subject else "")
    assert state["last_message_id"] == (message_id or "")
    refs = list(state["references"])
    assert len(refs) <= 20 and set(refs) <= {*answered, *([message_id] if message_id else [])}
    if message_id:
        assert refs[-1] == message_id


#: (header, value) or ("Subject", prefix): what marks a mail automatic
AUTO_MARKS = [
    ("Auto-Submitted", "auto-replied"),
    ("Auto-Submitted", "auto-generated"),
    ("Auto-Submitted", "auto-notified (vacation)"),
    ("X-Autoreply", "yes"),
    ("X-Autorespond", "Vacation"),
    ("X-Apple-Action", "VACATION"),
    ("Precedence", "auto_reply"),
    ("Precedence", "junk"),
    ("Return-Path", "<>"),
    ("Subject", "Automatic reply: "),
    ("Subject", "Out of Office: "),
    ("Subject", "Autoreply: "),
    ("Subject", "Автоответ: "),
    ("Subject", "Abwesenheitsnotiz: "),
    ("Subject", "Réponse automatique : "),
]


def an_auto_reply_never_becomes_a_message(mark: tuple[str, str], subject: str, text: str) -> None:
    field, value = mark
    if field == "Subject":
        raw = customer_mail(text, subject=value + subject)
    else:
        raw = customer_mail(text, subject=subject, headers=[(field, value)])
    events = parse(raw)
    assert events is not None
    assert events == [IgnoredEvent("email", f"mid:m1@{CUSTOMERS}", "auto_reply")], (mark, events)


def a_bounce_of_our_reply_fails_it(
    bridge_id: uuid.UUID, ours: bool, status: str, action: str, part: str, shape: str
) -> None:
    """A bounce of one of our replies is an OutboundStatus naming it:
    failed when the server gave up on it (a 5.x.x status, or "Action:
    failed" after days of 4.x.x), delayed while it still retries; a bounce
    of anyone else's mail is ignored as a bounce, never a message."""
    original = our_id(str(bridge_id)) if ours else f"<{bridge_id}@elsewhere.example>"
    if shape == "exim":  # "This is a permanent error", 550 5.1.1
        raw, key = _exim_bounce(original), "mid:exim-1@mx.customers.example"
        status, action = "5.1.1", "failed"
    else:
        raw = _bounce(original, status=status, action=action, part=part)
        key = "mid:bounce-1@mx.customers.example"
    events = parse(raw)
    assert events is not None
    (event,) = events
    if not ours:
        assert event == IgnoredEvent("email", key, "bounce"), event
        return
    assert isinstance(event, OutboundStatus), event
    assert event.bridge_id == str(bridge_id) and event.external_id == key
    gave_up = status.startswith("5") or action == "failed"
    assert event.status == ("failed" if gave_up else "delayed"), (status, action, event)
    assert event.error is not None and status in event.error, event.error


def our_message_ids_are_recognised(bridge_id: uuid.UUID, domain: str, other: str) -> None:
    made = our_id(str(bridge_id), domain)
    assert email_smtp.own_bridge_id(made, domain) == str(bridge_id)
    assert email_smtp.own_bridge_id(made[1:-1], domain.upper()) == str(bridge_id)
    assert email_smtp.own_bridge_id(made, other) is None or other.lower() == domain.lower()
    assert email_smtp.own_bridge_id(f"<{bridge_id}@{domain}>", domain) is None


def reply_text_is_never_emptied(text: str) -> None:
    body = email_quotes.strip_reply(text).body
    assert not text.strip() or body.strip(), text


# -- the text helpers (fuzzed together) ------------------------------------------------------------


def fuzz_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    stripped = email_quotes.strip_reply(text)
    if text.strip() and not stripped.body.strip():
        raise BrokenInvariant("strip_reply emptied a text that has something in it")
    line = decode_header_value(data.decode("latin-1"))
    if "\r" in line or "\n" in line:
        raise BrokenInvariant(f"decode_header_value -> {line!r}")
    subject = email_smtp.reply_subject(text, text[:12] or None)
    if not subject.startswith("Re: ") or "\n" in subject or "\r" in subject:
        raise BrokenInvariant(f"reply_subject -> {subject!r}")


# -- hostile input ---------------------------------------------------------------------------------

SECRET_A = "email-webhook-secret-A_0123456789abcdef"
SECRET_B = "email-webhook-secret-B_fedcba9876543210"


def _account(name: str, secret: str) -> AccountSpec:
    address = f"support-{name.lower()}@{DOMAIN}"
    return AccountSpec(
        {"webhook_secret": secret, "imap_password": "", "smtp_password": ""},
        address,
        {"mode": "webhook", "address": address, "require_signature": True},
    )


ACCOUNTS = {"A": _account("A", SECRET_A), "B": _account("B", SECRET_B)}


class EmailTarget(HostileTarget):
    name = "email"
    kind = "email"
    endpoint = "channel"
    content_type = RFC822
    content_types = (RFC822,)
    # the proof (403); then what the endpoint refuses of a proven body: a
    # body that is no mail (400), the other media types (415), too large (413)
    auth_cases = {
        "forged": 403,
        "other-accounts-secret": 403,
        "missing": 403,
        "empty": 403,
        "malformed-no-prefix": 403,
        "malformed-sha1": 403,
        "malformed-truncated": 403,
        "malformed-non-ascii": 403,
        "malformed-huge": 403,
        "body-swapped": 403,
        "not-a-mail": 400,
        "json-as-mail": 400,
        "as-json": 415,
        "as-message-global": 415,
        "too-large": 413,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/email/{self.world.account_keys['email'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return customer_mail(
            f"{MARK} hello, where is my order?",
            sender=f"visitor-7001@{CUSTOMERS}",
            name="Visitor 7001",
            subject="Order",
            message_id=f"<{uid}@{CUSTOMERS}>",
            to=ACCOUNTS[tenant].settings["address"],
        )

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return sign(SECRET_A if tenant == "A" else SECRET_B, body)

    def auth_attack(self, case: str) -> Req:
        body = self.delivery(uuid.uuid4().hex)
        good = signature(SECRET_A, body)
        media = RFC822
        if case in ("not-a-mail", "json-as-mail", "as-json", "as-message-global", "too-large"):
            body = {
                "not-a-mail": f"{MARK} hello, where is my order?".encode(),
                "json-as-mail": json.dumps({"from": "a@b.example", "text": MARK}).encode(),
                "as-json": json.dumps({"from": "a@b.example", "text": MARK}).encode(),
                "as-message-global": body,
                "too-large": body + MARK.encode() * (1_000_001 // len(MARK) + 1),
            }[case]
            media = {"as-json": "application/json", "as-message-global": "message/global"}.get(
                case, RFC822
            )
            return Req(self.path(), body, media, sign(SECRET_A, body))
        header = {
            "forged": lambda: signature("not-the-secret", body),
            "other-accounts-secret": lambda: signature(SECRET_B, body),
            "missing": lambda: None,
            "empty": lambda: "",
            "malformed-no-prefix": lambda: good.removeprefix("sha256="),
            "malformed-sha1": lambda: (
                "sha1=" + hmac.new(SECRET_A.encode(), body, hashlib.sha1).hexdigest()
            ),
            "malformed-truncated": lambda: good[:-1],
            "malformed-non-ascii": lambda: "sha256=подпись".encode().decode("latin-1"),
            "malformed-huge": lambda: "sha256=" + "a" * 10_240,
            "body-swapped": lambda: signature(SECRET_A, self.delivery(uuid.uuid4().hex)),
        }[case]()
        headers = {} if header is None else {HEADER: header}
        return Req(self.path(), body, media, headers)


# -- the kit ---------------------------------------------------------------------------------------


class EmailKit(ChannelKit):
    kind = "email"
    content_type = RFC822

    def __init__(self) -> None:
        #: (chat, name) -> the delivery ids of the customer's mails, in the
        #: order written (what their mail client threads by)
        self._threads: dict[tuple[int, str], list[int]] = {}

    # -- parsers

    def properties(self) -> Sequence[Property]:
        bodies = st.one_of(
            st.binary(max_size=300),
            mail_like(),
            mutated_mail(_small_mails()),
        )
        return [
            Property("email: the corpus is there", the_corpus_is_there),
            Property(
                "email: any body is one event or a PayloadError",
                any_body_is_one_event_or_a_payload_error,
                bodies,
                examples=EXAMPLES,
                hostile=True,
            ),
            Property(
                "email: any mail from the mailbox is one event or a PayloadError",
                any_mail_from_the_mailbox_is_one_event_or_a_payload_error,
                bodies,
                examples=EXAMPLES,
                hostile=True,
            ),
            Property(
                "email: any signature header is verified or a SignatureError",
                any_header_is_verified_or_a_signature_error,
                (
                    st.one_of(
                        st.none(),
                        # what an HTTP header carries (Werkzeug decodes latin-1)
                        st.text(st.characters(max_codepoint=255), max_size=80),
                        st.sampled_from(["sha256=", "sha256=" + "0" * 64, " sha256=x "]),
                    ),
                    st.binary(max_size=80),
                ),
                examples=(
                    (None, b""),
                    ("", b"x"),
                    (signature(SECRET, b"x"), b"x"),
                    (f"  {signature(SECRET, b'x')}\t", b"x"),
                    (signature(SECRET, b"x").upper(), b"x"),
                    (signature(SECRET, b"y"), b"x"),
                    ("sha256=\xff", b"x"),
                ),
                hostile=True,
            ),
            Property("email: every corpus mail is an event", every_corpus_mail_is_an_event),
            Property(
                "email: the corpus's bounces and auto-replies never become messages",
                machines_mails_never_become_messages,
            ),
            Property(
                "email: a customer mail round-trips",
                a_customer_mail_round_trips,
                {
                    "local": LOCAL,
                    "host": HOST,
                    "name": st.one_of(st.none(), LINE, NAME_TEXT),
                    "reply_to": st.one_of(
                        st.none(), st.builds(lambda a, b: f"{a}@{b}", LOCAL, HOST)
                    ),
                    "subject": st.one_of(st.just(""), LINE),
                    "text": TEXT,
                    "message_id": st.one_of(
                        st.none(),
                        THEIR_ID,
                        st.builds(lambda n, h: "x" * n + f"@{h}", st.integers(190, 400), HOST),
                    ),
                    "in_reply_to": st.one_of(st.none(), ANY_ID),
                    "references": st.lists(ANY_ID, max_size=6, unique=True),
                    "ticket": st.one_of(st.none(), st.integers(1, 10**9)),
                    "plus": st.one_of(st.none(), st.uuids()),
                    "date": st.one_of(st.none(), DATES),
                    "dmarc": st.sampled_from([None, "pass", "fail", "none"]),
                    "cte": st.sampled_from(["base64", "quoted-printable", "8bit"]),
                    "crlf": st.booleans(),
                    "attachment": st.booleans(),
                },
            ),
            Property(
                "email: an auto-reply never becomes a message",
                an_auto_reply_never_becomes_a_message,
                {"mark": st.sampled_from(AUTO_MARKS), "subject": LINE, "text": TEXT},
            ),
            Property(
                "email: a bounce of our reply fails it, another bounce is ignored",
                a_bounce_of_our_reply_fails_it,
                {
                    "bridge_id": st.uuids(),
                    "ours": st.booleans(),
                    "status": st.sampled_from(["5.1.1", "5.2.2", "4.2.2", "4.4.7"]),
                    "action": st.sampled_from(["failed", "delayed"]),
                    "part": st.sampled_from(["text/rfc822-headers", "message/rfc822"]),
                    "shape": st.sampled_from(["dsn", "exim"]),
                },
            ),
            Property(
                "email: our Message-IDs are recognised, no one else's",
                our_message_ids_are_recognised,
                {
                    "bridge_id": st.uuids(),
                    "domain": st.sampled_from([DOMAIN, "mail.acme.test", "пример.рф"]),
                    "other": st.sampled_from([DOMAIN, "elsewhere.example", "acme.test.evil"]),
                },
            ),
            Property(
                "email: quote stripping never empties a reply",
                reply_text_is_never_emptied,
                st.one_of(
                    TEXT,
                    st.text(max_size=200),
                    st.lists(
                        st.sampled_from(BODY_PIECES + ["\n", "> a\n", "x\n"]), max_size=12
                    ).map("".join),
                ),
                examples=("> only quoted\n> lines", "-- \nsignature only", "Sent from my iPhone"),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        # The mail parser takes no JSON; the suite asks every kit for a
        # shape (test_every_kit_nests_json_somewhere): a JSON text nested
        # at the limit as a customer's mail body is a message like any text.
        head = (
            f"From: Anna <anna@{CUSTOMERS}>\r\nTo: {ADDRESS}\r\nSubject: data\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        return [DeepJson("email", head, b"\r\n", parse)]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "email_mail",
                "EmailAdapter.verify/edge/parse (HMAC header; a raw RFC 5322 mail: the "
                "stdlib's email parser, charsets, HTML to text, quotes, classification)",
                fuzz,
                seeds,
                _mail_tokens,
                # the standard library's email package is half of this parser
                instrument=("email",),
            )
        ]

    def text_helpers(self) -> TextHelpers:
        return TextHelpers(
            fuzz_text,
            (
                b"Thanks!\n\nOn Mon, 1 Jan 2024 at 10:00, Anna <anna@customers.example>"
                b" wrote:\n> hi",
                b"=?utf-8?B?0JDQvdC90LA=?= <anna@customers.example>",
                b"Re: AW: Order 42 [#T-1042]",
            ),
            frozenset(
                {b"> ", b"wrote:", b"-- \n", b"=?utf-8?B?", b"?=", b"Re: ", b"[#T-", b"\r\n"}
            ),
        )

    def secrets_of(self, credentials: Mapping[str, Any]) -> set[str]:
        found = super().secrets_of(credentials)
        found |= {
            value
            for key, value in credentials.items()
            if key.endswith("password") and isinstance(value, str) and value
        }
        return found

    # -- hostile input

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [EmailTarget]

    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        return ACCOUNTS

    # -- tenant isolation, secrets at rest

    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        address = f"support-{n}@tenant{idx}.{DOMAIN}"
        return AccountSpec(
            {
                "webhook_secret": secrets.token_urlsafe(32),
                "imap_password": f"imap-{idx}-{n}-{secrets.token_hex(12)}",
                "smtp_password": f"smtp-{idx}-{n}-{secrets.token_hex(12)}",
            },
            address,
            {"mode": "webhook", "address": address, "require_signature": True},
            name=f"mailbox {idx}/{n}",
        )

    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        # a mail client threads by the conversation's earlier Message-IDs
        thread = self._threads.setdefault((chat, name), [])
        if delivery_id not in thread:
            thread.append(delivery_id)
        earlier = [_customer_id(d, chat, name) for d in thread[: thread.index(delivery_id)]]
        said = text if text is not None else "here is my phone number"
        if phone is not None:
            said = f"{said}: you can call me on {phone}"
        headers: list[tuple[str, str]] = []
        if earlier:
            headers += [("In-Reply-To", earlier[-1]), ("References", " ".join(earlier[-20:]))]
        return customer_mail(
            said,
            sender=_customer_address(chat),
            name=name,
            subject="Re: Question" if earlier else "Question",
            message_id=_customer_id(delivery_id, chat, name),
            to=f"support@{DOMAIN}",
            date=DATE0 + dt.timedelta(seconds=delivery_id % 86_400),
            headers=headers,
        )

    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        # an account connected without --webhook-secret-env has no key: the
        # path key alone proves the sender (a header would be refused)
        secret = credentials.get("webhook_secret")
        return sign(secret, body) if secret else {}

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        return {
            "smtp password": f"CANARY-smtp-{tag}-{secrets.token_hex(6)}",
            "webhook key": f"CANARY-mailkey-{tag}-{secrets.token_hex(6)}",
        }

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        # an SMTP login makes the sandbox's server ask for AUTH (and the
        # login's address a mailbox of the mail system)
        return {"email": {"users": {CANARY_SUPPORT: values["smtp password"]}, "mailboxes": []}}

    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        # the password the documented way: in the environment variable
        # --password-env names, never on the command line. Webhook mode (no
        # IMAP host): the mail system posts the customers' mails to the
        # account's URL, its SMTP server takes the replies.
        smtp = _sandbox_smtp(sandbox_url)
        out = cli(
            "email",
            "connect",
            "--tenant",
            slug,
            "--name",
            "Canary mailbox",
            "--address",
            CANARY_SUPPORT,
            "--user",
            CANARY_SUPPORT,
            "--password-env",
            "CANARY_MAIL_PASSWORD",
            "--smtp-host",
            str(smtp["host"]),
            "--smtp-port",
            str(smtp["port"]),
            "--smtp-security",
            str(smtp["security"]),  # plain: a loopback server, allowed in clear
            "--from-name",
            "Canary support",
            "--webhook-secret-env",
            "CANARY_MAIL_WEBHOOK_KEY",
            CANARY_MAIL_PASSWORD=values["smtp password"],
            CANARY_MAIL_WEBHOOK_KEY=values["webhook key"],
        )
        # An admin points the mail provider's inbound route at the account's
        # URL: connect names it with the path key masked (a secret, never in
        # its output: the canary searches that) and the command that shows
        # the key, run here as the admin runs it. What that command prints
        # is the key asked for, so it is not the connect's output returned.
        assert re.search(
            rf"^webhook URL: https?://\S+/webhooks/email/<key> "
            rf"\(the key: bridge tenant show {re.escape(slug)} --reveal\)$",
            out,
            re.M,
        ), out
        shown = cli("tenant", "show", slug, "--reveal")
        assert values["smtp password"] not in shown and values["webhook key"] not in shown
        (url,) = re.findall(r" webhook (https?://\S+/webhooks/email/[A-Za-z0-9_-]+)$", shown, re.M)
        # the mail system signs its posts with the key the admin gave both
        r = requests.post(
            f"{sandbox_url}/email/_mailboxes",
            json={
                "address": CANARY_SUPPORT,
                "name": "Canary support",
                "webhook_url": url,
                "webhook_secret": values["webhook key"],
            },
            timeout=30,
        )
        r.raise_for_status()
        return out

    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        # the customer writes from their own (canary) address: in e-mail the
        # address is who they are
        address = self.canary_user_id(person)
        name = f"{person['first name']} {person['last name']}"
        text, phone = person["text"], person["phone"]
        first = f"<canary-1.{person['chat']}@{CUSTOMERS}>"

        def mail(n: int, subject: str, said: str) -> dict[str, Any]:
            form: dict[str, Any] = {
                "account": CANARY_SUPPORT,
                "from": address,
                "name": name,
                "subject": subject,
                "text": said,
                "message_id": f"<canary-{n}.{person['chat']}@{CUSTOMERS}>",
            }
            if n > 1:  # the thread: a reply to the first mail
                form["in_reply_to"] = first
            return form

        return [
            mail(1, "Question", f"{text}: write to me at {address}"),
            mail(2, "Re: Question", f"my phone is {phone}"),
            mail(3, "Re: Question", f"{text} call {phone} or write to {address}"),
            # no edits in mail: a correction is another mail of the thread
            mail(4, "Re: Question", f"{person['edited text']} {address}"),
        ]

    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        r = requests.post(f"{sandbox_url}/email/_deliver", json=delivery, timeout=30)
        r.raise_for_status()
        assert r.json().get("status") == 200, r.json()

    def canary_sent(self, sandbox_url: str, user: str) -> list[str]:
        r = requests.get(f"{sandbox_url}/email/_sent", params={"to": user}, timeout=30)
        r.raise_for_status()
        return [m.get("text") or "" for m in r.json()["sent"]]

    def canary_user_id(self, person: Mapping[str, str]) -> str:
        # in e-mail the sender's address is who they are (the adapter keeps
        # it lower-cased as the channel identity)
        return person["e-mail"].lower()

    def refused_body(self, delivery: bytes, canary: str) -> bytes:
        # a cut mail is still a mail (200): what the edge refuses (400) is a
        # body that is no mail, here the same mail as JSON (what a
        # provider's JSON inbound route posts), canaries and all
        mail = email.message_from_bytes(delivery, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        body = mail.get_body(preferencelist=("plain",))
        return json.dumps(
            {
                "from": str(mail["From"]),
                "subject": str(mail["Subject"]),
                "text": f"{body.get_content().strip() if body is not None else ''} {canary}",
            }
        ).encode()


# -- helpers ---------------------------------------------------------------------------------------

#: the canary account's support address
CANARY_SUPPORT = f"support@canary.{DOMAIN}"


def _customer_address(chat: int) -> str:
    """The customer of ``chat`` (the same person at every business)."""
    return f"customer-{chat}@{CUSTOMERS}".replace("--", "-m")


def _customer_id(delivery_id: int, chat: int, name: str) -> str:
    tag = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"<d{delivery_id}.c{chat}.{tag}@{CUSTOMERS}>"


def _sandbox_smtp(sandbox_url: str) -> dict[str, Any]:
    """Where the mail system's SMTP server listens (any request starts it)."""
    r = requests.get(f"{sandbox_url}/email/_smtp", timeout=30)
    r.raise_for_status()
    smtp: dict[str, Any] = r.json()
    assert smtp.get("host") and smtp.get("port") and smtp.get("auth"), smtp
    return smtp


def _mail_tokens(seeds: Sequence[bytes]) -> set[bytes]:
    """Header names, the MIME words and the punctuation of a mail."""
    tokens = {f"{name}: ".encode() for name in HEADER_NAMES}
    tokens |= {v.encode() for v in HEADER_VALUES if 0 < len(v) < 60}
    tokens |= {p.encode("utf-8", "surrogatepass") for p in BODY_PIECES if len(p) < 60}
    tokens |= {b"\r\n", b"\r\n\r\n", b"\n\n", b"=?", b"?=", b"?B?", b"?Q?", b"boundary=", b"--"}
    tokens |= {b"charset=", b"<", b">", b"@", b"; ", b"=\r\n", b"&#", b"<br>", b"<blockquote>"}
    return tokens
