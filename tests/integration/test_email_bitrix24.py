"""E-mail -> Bitrix24 and back at the issue's scale, through real servers: a
real Dovecot holds the support mailbox, a real SMTP server (aiosmtpd)
receives what the bridge sends, the sandbox plays Bitrix24, and real
``bridge worker`` processes (with their pollers) do the work. On one
database (PostgreSQL in CI).

10 customers write 5 mails each: a new ticket, replies in the thread
(In-Reply-To / References), a forward (``Fwd:``, the original quoted), a
reply with a PDF attached; each also sends an out-of-office auto-reply.
The worker and its poller are SIGKILLed mid-mailbox. Shown: 20 contacts and
20 leads named by their ticket numbers T-1001..T-1020, the 100 mails as
timeline comments and Open Lines messages in each customer's order, none
from an auto-reply; 20 acknowledgements; an operator's answer in Open Lines
(the chat is the bridge's conversation) sent once to each customer as a
threaded reply with the ticket in its subject; each answer's bounce
marking it failed; nothing journaled or sent twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from bench.stack import ROOT, Stack
from bench.traffic import wait_until
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Conversation, Delivery, Message, Tenant
from tests.support.dovecot import Dovecot, dovecot_available
from tests.support.smtp_server import SmtpTestServer, smtp_server

pytestmark = pytest.mark.integration

ADDRESS = "support@acme.test"
CUSTOMERS = 10  # 20 until 2026-12-06: the suite's 20-minute budget
MAILS = 5
FAST = {"bitrix24": {"limits": {"basic": {"drain_per_s": 100, "burst": 250}}}}
#: a small, valid PDF
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
NAMES = [
    "Anna", "Boris", "Clara", "Denis", "Elena", "Fedor", "Galina", "Hugo", "Irina", "Jonas",
    "Karin", "Lev", "Marta", "Nikolai", "Olga", "Pavel", "Quentin", "Raisa", "Sergei", "Tamara",
    "Ulrich", "Vera", "Wanda", "Xenia", "Yakov", "Zoe", "Agata", "Bruno", "Celine", "Dmitri",
]  # fmt: skip


@pytest.fixture
def mailbox() -> Iterator[Dovecot]:
    assert dovecot_available(), "dovecot-imapd is installed by make apt-deps"
    with Dovecot() as server:
        yield server


@pytest.fixture
def outgoing(mailbox: Dovecot) -> Iterator[SmtpTestServer]:
    with smtp_server(users={mailbox.user: mailbox.password}) as server:
        yield server


class Customer:
    """One customer's side of the thread: the mails they sent, in order."""

    def __init__(self, index: int, base: dt.datetime) -> None:
        self.index = index
        self.name = NAMES[index]
        self.address = f"{self.name.lower()}{index}@example.org"
        self.subject = f"Order {100 + index}"
        self.base = base
        self.ids: list[str] = []  # Message-IDs of the customer's mails, in order

    def token(self, n: int) -> str:
        """The words that identify the customer's mail ``n`` (0-based)."""
        return f"c{self.index:02d}m{n}"

    def _mail(self, n: int, subject: str, text: str, **headers: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = f"{self.name} <{self.address}>"
        msg["To"] = ADDRESS
        msg["Subject"] = subject
        # strictly increasing per customer, all in the past
        msg["Date"] = format_datetime(self.base + dt.timedelta(seconds=10 * n + 1))
        msg["Message-ID"] = make_msgid(idstring=self.token(n), domain="example.org")
        for key, value in headers.items():
            msg[key.replace("_", "-")] = value
        msg.set_content(text)
        return msg

    def _threaded(self, n: int, subject: str, text: str) -> EmailMessage:
        quoted = f"On Mon, {self.name} wrote:\n> {self.token(n - 1)} earlier words\n"
        msg = self._mail(
            n, subject, f"{text}\n\n{quoted}",
            In_Reply_To=self.ids[-1], References=" ".join(self.ids),
        )  # fmt: skip
        return msg

    def mail(self, n: int) -> bytes:
        """The customer's mail ``n``: 0 new, 1 and 4 replies, 2 a forward,
        3 a reply with a PDF attached."""
        token = self.token(n)
        if n == 0:
            msg = self._mail(n, self.subject, f"{token} where is my order {100 + self.index}?")
        elif n == 2:
            forwarded = (
                f"{token} forwarding the shop's confirmation\n\n"
                "---------- Forwarded message ---------\n"
                "From: Shop <orders@shop.example.com>\n"
                "Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
                f"Subject: Confirmation {100 + self.index}\n"
                f"To: {self.address}\n\n"
                "Your order is confirmed.\n"
            )
            msg = self._mail(
                n, f"Fwd: Confirmation {100 + self.index}", forwarded,
                In_Reply_To=self.ids[-1], References=" ".join(self.ids),
            )  # fmt: skip
        elif n == 3:
            msg = self._threaded(n, f"Re: {self.subject}", f"{token} the receipt is attached")
            msg.add_attachment(
                PDF, maintype="application", subtype="pdf", filename=f"receipt-{token}.pdf"
            )
        else:
            msg = self._threaded(n, f"Re: {self.subject}", f"{token} any news?")
        self.ids.append(str(msg["Message-ID"]))
        return msg.as_bytes()

    def away(self) -> bytes:
        """An out-of-office answer to our acknowledgement."""
        msg = EmailMessage()
        msg["From"] = f"{self.name} <{self.address}>"
        msg["To"] = ADDRESS
        msg["Subject"] = f"Out of office: Re: {self.subject}"
        msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        msg["Message-ID"] = make_msgid(idstring=f"away{self.index}", domain="example.org")
        msg["In-Reply-To"] = self.ids[0]
        msg["Auto-Submitted"] = "auto-replied"
        msg.set_content(f"away{self.index} I am away until Monday.")
        return msg.as_bytes()


def bounce(answer: Any, to: str, n: int) -> bytes:
    """An RFC 3464 report of ``answer`` (a mail the bridge sent) bouncing."""
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: support@acme.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <bounce-{n}@mx.example.org>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; {to}\r\n"
        "Action: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {answer['Message-ID']}\r\nTo: {to}\r\n--B--\r\n"
    ).encode()


def _cli(stack: Stack, *args: str, **env: str) -> str:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=ROOT,
        env={**stack.env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _tenant(stack: Stack, **settings: Any) -> str:
    """The demo tenant's slug, after adding ``settings`` to its own."""
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            assert tenant is not None
            tenant.settings = {**tenant.settings, **settings}
            return str(tenant.slug)
    finally:
        runtime.close()


def _rows(stack: Stack) -> dict[str, Any]:
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_engine.connect() as conn:
            keys = dict(
                conn.execute(
                    select(Delivery.delivery_key, func.count()).group_by(Delivery.delivery_key)
                ).all()
            )
            states = Counter(conn.scalars(select(Delivery.state)).all())
            tickets = dict(
                conn.execute(
                    select(Conversation.uid, Conversation.ticket_number).where(
                        Conversation.ticket_number.is_not(None)
                    )
                ).all()
            )
            out = conn.execute(
                select(Message.uid, Message.status, Message.last_error).where(
                    Message.direction == "out"
                )
            ).all()
    finally:
        runtime.close()
    return {"keys": keys, "states": states, "tickets": tickets, "out": out}


def _journaled(stack: Stack) -> tuple[int, int]:
    """(mails the poller has journaled, customer messages synced) so far."""
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_engine.connect() as conn:
            journaled = conn.scalar(select(func.count()).select_from(Delivery))
            synced = conn.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.direction == "in", Message.status == "synced")
            )
    finally:
        runtime.close()
    return int(journaled or 0), int(synced or 0)


def _token(text: str) -> str | None:
    """The customer's mail token (``c07m3``) in a comment or chat message."""
    for word in text.replace("\n", " ").split():
        if len(word) == 5 and word[0] == "c" and word[3] == "m" and word[1:3].isdigit():
            return word
    return None


def test_10_customers_5_mails_into_bitrix24_leads_and_answers_threaded_once(
    make_stack_once,
    mailbox: Dovecot,
    outgoing: SmtpTestServer,
) -> None:
    started = time.monotonic()
    stack: Stack = make_stack_once(
        crm="bitrix24", sandbox_config=FAST, workers=1, env_overrides={"BRIDGE_POLL_TIMEOUT": "5"}
    )
    slug = _tenant(stack, rate_per_second=100, burst=250)
    out = _cli(
        stack,
        "email", "connect",
        "--tenant", slug,
        "--address", ADDRESS,
        "--user", mailbox.user,
        "--password-env", "SUPPORT_MAIL_PASSWORD",
        "--imap-host", mailbox.host,
        "--imap-port", str(mailbox.imap_port),
        "--imap-security", "plain",
        "--smtp-host", outgoing.host,
        "--smtp-port", str(outgoing.port),
        "--smtp-security", "plain",
        "--from-name", "Acme Support",
        SUPPORT_MAIL_PASSWORD=mailbox.password,
    )  # fmt: skip
    assert "polling" in out

    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    customers = [Customer(i, base) for i in range(CUSTOMERS)]

    def synced(n: int) -> bool:
        return stack.bridge_status()["messages"]["in"].get("synced", 0) == n

    # 1. thirty new threads: thirty tickets, each acknowledged once
    for customer in customers:
        mailbox.append(customer.mail(0))
    assert wait_until(lambda: synced(CUSTOMERS), timeout=120), stack.bridge_status()
    assert wait_until(lambda: len(outgoing.messages) == CUSTOMERS, timeout=60), _rows(stack)
    first_phase = time.monotonic() - started

    # 2. the rest of each thread, an out-of-office to the acknowledgement in
    # between; the worker and its poller die (as a machine does) mid-mailbox
    appended = CUSTOMERS
    for batch in ([c.away() for c in customers], *([c.mail(n) for c in customers] for n in (1, 2))):
        for raw in batch:
            mailbox.append(raw)
        appended += len(batch)
    # part of the second round journaled: the worker dies with mails still to file
    assert wait_until(lambda: _journaled(stack)[0] > 2 * CUSTOMERS, timeout=60, interval=0.02)
    killed = stack.kill_worker(stack.worker_procs[0], replace=True, machine=True)
    at_kill = _journaled(stack)
    assert len(killed) >= 2  # the worker and its pollers / sweeper
    # mid-mailbox: customer mails appended but not yet in the CRM
    assert at_kill[1] < appended - CUSTOMERS, (at_kill, appended)
    for n in (3, 4):
        for customer in customers:
            mailbox.append(customer.mail(n))
    total = CUSTOMERS * MAILS
    assert wait_until(lambda: synced(total), timeout=240), stack.bridge_status()

    rows = _rows(stack)
    # every mail journaled once: 100 customer mails and 20 auto-replies
    assert set(rows["keys"].values()) == {1}, [k for k, n in rows["keys"].items() if n > 1]
    assert len(rows["keys"]) == total + CUSTOMERS
    assert rows["states"]["ignored"] == CUSTOMERS, rows["states"]
    assert sorted(rows["tickets"].values()) == list(range(1001, 1001 + CUSTOMERS))

    # -- the CRM: 20 contacts, 20 leads named by ticket, 100 entries in order
    portal = stack.bitrix24_state()
    contacts = {c["id"]: c for c in portal["contacts"]}
    assert len(contacts) == CUSTOMERS
    emails = {
        str(m["VALUE"]).lower(): cid
        for cid, c in contacts.items()
        for m in (c["multifields"].get("EMAIL") or [])
    }
    assert set(emails) == {c.address for c in customers}
    assert len(portal["leads"]) == CUSTOMERS and portal["deals"] == []
    numbers = sorted(int(lead["fields"]["TITLE"].split(":")[0][2:]) for lead in portal["leads"])
    assert numbers == list(range(1001, 1001 + CUSTOMERS)), [
        lead["fields"]["TITLE"] for lead in portal["leads"]
    ]
    by_contact = {int(lead["fields"]["CONTACT_ID"]): lead for lead in portal["leads"]}
    assert len(by_contact) == CUSTOMERS
    for customer in customers:
        lead = by_contact[emails[customer.address]]
        comments = [
            _token(str(c["COMMENT"]))
            for c in sorted(lead["timeline"]["comments"], key=lambda c: int(c["ID"]))
        ]
        assert comments == [customer.token(n) for n in range(MAILS)], (
            customer.address,
            lead["timeline"]["comments"],
        )
        # one to-do per new lead, for its ticket
        (todo,) = lead["timeline"]["activities"]
        assert lead["fields"]["TITLE"].split(":")[0] in todo["title"], todo["title"]
    # the same 100 in the Open Lines chats, one chat per thread (the conversation)
    chats = {c["external_chat_id"]: c for c in portal["chats"]}
    assert set(chats) == set(rows["tickets"]), list(chats)
    chat_of: dict[str, str] = {}
    for uid, chat in chats.items():
        texts = [m["text"] for m in chat["messages"] if m["direction"] == "in"]
        tokens = [_token(t) for t in texts]
        assert None not in tokens, texts
        owner = customers[int(str(tokens[0])[1:3])]
        assert tokens == [owner.token(n) for n in range(MAILS)], texts
        chat_of[owner.address] = uid
        # a forward is the customer's content (the original kept); a reply's
        # quote of the thread is not
        assert "Your order is confirmed" in texts[2], texts[2]
        assert not any("earlier words" in t for t in texts), texts
        # the PDF reached Bitrix24 as a file: the portal fetched it from the
        # bridge's link, the customer's bytes; the original mail is a link
        inbound = [m for m in chat["messages"] if m["direction"] == "in"]
        [pdf] = inbound[3]["files"]
        assert pdf["name"] == f"receipt-{owner.token(3)}.pdf", pdf
        assert pdf["url"].startswith(stack.bridge_url + "/files/"), pdf
        assert pdf["fetched"]["status"] == 200, pdf
        assert pdf["fetched"]["sha256"] == hashlib.sha256(PDF).hexdigest()
        assert f"[document: original.eml] {stack.bridge_url}/files/" in texts[3]
        assert not [m for m in inbound if m is not inbound[3] and m["files"]]
    assert len(chat_of) == CUSTOMERS
    with_file = [
        m
        for c in chats.values()
        for m in c["messages"]
        if "receipt-" in str(m["text"]) + str(m["files"])
    ]
    assert len(with_file) == CUSTOMERS

    # -- 20 acknowledgements, none to an auto-reply
    acks = list(outgoing.messages)
    assert len(acks) == CUSTOMERS
    assert sorted(m["To"] for m in acks) == sorted(c.address for c in customers)
    assert all(m["Auto-Submitted"] == "auto-replied" for m in acks)
    tickets = {uid: f"T-{n}" for uid, n in rows["tickets"].items()}
    for ack in acks:
        uid = chat_of[ack["To"]]
        assert f"[#{tickets[uid]}]" in ack["Subject"], ack["Subject"]

    # 3. an operator answers every customer in Open Lines: one threaded reply each
    for customer in customers:
        answer = requests.post(
            f"{stack.sandbox_url}/bitrix24/_reply",
            json={
                "conversation": chat_of[customer.address],
                "text": f"Dear {customer.name}, order {100 + customer.index} ships tomorrow.",
            },
            timeout=30,
        )
        answer.raise_for_status()
        assert answer.json()["webhook"]["status"] == 200, answer.json()
    expected = 2 * CUSTOMERS
    assert wait_until(lambda: len(outgoing.messages) >= expected, timeout=90), _rows(stack)["out"]
    replies = {m["To"]: m for m in outgoing.messages[CUSTOMERS:]}
    assert len(replies) == CUSTOMERS
    for customer in customers:
        sent = replies[customer.address]
        ticket = tickets[chat_of[customer.address]]
        assert sent["Auto-Submitted"] is None
        assert sent["In-Reply-To"] == customer.ids[-1]
        assert sent["Subject"] == f"Re: {customer.subject} [#{ticket}]"
        plain = sent.get_body(("plain",))
        assert plain is not None
        assert f"order {100 + customer.index} ships tomorrow" in plain.get_content()
        assert f"support+{chat_of[customer.address]}@acme.test" in sent["Reply-To"]

    def sent_out() -> bool:  # the acknowledgements and the answers
        return stack.bridge_status()["messages"]["out"].get("sent", 0) == expected

    assert wait_until(sent_out, timeout=60), stack.bridge_status()["messages"]

    # 4. every answer bounces: each reply marked failed, with the reason
    for n, customer in enumerate(customers):
        mailbox.append(bounce(replies[customer.address], customer.address, n))

    def failed() -> list[Any]:
        return [row for row in _rows(stack)["out"] if row[1] == "failed"]

    assert wait_until(lambda: len(failed()) == CUSTOMERS, timeout=90), _rows(stack)["out"]
    assert all("5.2.2" in str(error) for _, _, error in failed())
    status = stack.bridge_status()
    assert status["messages"]["out"] == {"sent": CUSTOMERS, "failed": CUSTOMERS}, status["messages"]
    assert status["messages"]["in"].get("synced") == total

    # nothing journaled twice, nothing sent twice, nothing more filed
    rows = _rows(stack)
    assert set(rows["keys"].values()) == {1}
    assert len(rows["keys"]) == total + 2 * CUSTOMERS
    time.sleep(2)
    assert len(outgoing.messages) == expected
    ids = Counter(m["Message-ID"] for m in outgoing.messages)
    assert set(ids.values()) == {1}
    portal = stack.bitrix24_state()
    assert len(portal["contacts"]) == CUSTOMERS and len(portal["leads"]) == CUSTOMERS
    inbound = [m for c in portal["chats"] for m in c["messages"] if m["direction"] == "in"]
    assert len(inbound) == total
    for chat in portal["chats"]:  # the operator's answer, its delivery confirmed
        (answered,) = [m for m in chat["messages"] if m["direction"] == "out"]
        assert answered["delivered"], answered
    # Bitrix24 has no "failed" receipt: the bounce is a comment on each lead
    for lead in portal["leads"]:
        notes = [str(c["COMMENT"]) for c in lead["timeline"]["comments"]]
        assert len(notes) == MAILS + 1, notes
        assert "5.2.2" in notes[-1] and _token(notes[-1]) is None, notes[-1]
    took = time.monotonic() - started
    print(f"first {CUSTOMERS} tickets {first_phase:.1f}s, killed at {at_kill}, all {took:.1f}s")
