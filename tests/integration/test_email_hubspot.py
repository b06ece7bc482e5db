"""E-mail -> HubSpot and back through real servers: a real Dovecot holds the
support mailbox, a real SMTP server (aiosmtpd) receives what the bridge
sends, the sandbox plays HubSpot, and real ``bridge worker`` processes
(with their pollers) do the work. On one database (PostgreSQL in CI).

The mailbox is connected with the command an admin types (``bridge email
connect --password-env``); customers' mails, a reply in a thread, an
auto-reply and a bounce are appended to the mailbox as an MTA would
deliver them. Shown: one HubSpot ticket per mail thread named by its
number, the reply in the same ticket, the auto-reply never filed, the
rep's answer sent once as a threaded reply with the ticket in its subject,
a bounce of that answer marking it failed, and nothing journaled twice
after the worker (and its poller) is killed mid-mailbox.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import subprocess
import sys
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
from bridge.tables import ChannelAccount, Conversation, Delivery, Message, Tenant
from tests.integration.test_telegram_hubspot import FAST_TIER, _raise_tier
from tests.support.dovecot import Dovecot, dovecot_available
from tests.support.smtp_server import SmtpTestServer, smtp_server

pytestmark = pytest.mark.integration

ADDRESS = "support@acme.test"


@pytest.fixture
def mailbox() -> Iterator[Dovecot]:
    assert dovecot_available(), "dovecot-imapd is installed by make apt-deps"
    with Dovecot() as server:
        yield server


@pytest.fixture
def outgoing(mailbox: Dovecot) -> Iterator[SmtpTestServer]:
    with smtp_server(users={mailbox.user: mailbox.password}) as server:
        yield server


def customer_mail(sender: str, name: str, subject: str, text: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = ADDRESS
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = headers.pop("message_id", make_msgid(domain=sender.split("@")[1]))
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(text)
    return msg.as_bytes()


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


def _slug(stack: Stack) -> str:
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_engine.connect() as conn:
            return str(conn.scalar(select(Tenant.slug).where(Tenant.id == stack.seeded.tenant_id)))
    finally:
        runtime.close()


def _cursor(stack: Stack) -> str:
    """The e-mail account's stored poll cursor (``<uidvalidity>:<uid>``)."""
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_engine.connect() as conn:
            value = conn.scalar(
                select(ChannelAccount.poll_cursor).where(ChannelAccount.kind == "email")
            )
    finally:
        runtime.close()
    return str(value or "")


def _rows(stack: Stack) -> dict[str, Any]:
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_engine.connect() as conn:
            keys = dict(
                conn.execute(
                    select(Delivery.delivery_key, func.count()).group_by(Delivery.delivery_key)
                ).all()
            )
            states = dict(conn.execute(select(Delivery.delivery_key, Delivery.state)).all())
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


def test_mail_threads_into_hubspot_tickets_and_replies_go_out_threaded_once(
    make_stack_once,
    mailbox: Dovecot,
    outgoing: SmtpTestServer,  # type: ignore[no-untyped-def]
) -> None:
    stack: Stack = make_stack_once(
        sandbox_config=FAST_TIER, workers=1, env_overrides={"BRIDGE_POLL_TIMEOUT": "5"}
    )
    _raise_tier(stack)
    out = _cli(
        stack,
        "email", "connect",
        "--tenant", _slug(stack),
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

    anna1 = customer_mail("anna@example.org", "Anna", "Order 42", "Where is my order 42?")
    boris = customer_mail("boris@example.net", "Boris", "Invoice", "Please send the invoice.")
    away = customer_mail(
        "carl@example.com", "Carl", "Out of office: Order", "I am away.",
        Auto_Submitted="auto-replied",
    )  # fmt: skip
    for raw in (anna1, boris, away):
        mailbox.append(raw)

    def synced(n: int) -> bool:
        return stack.bridge_status()["messages"]["in"].get("synced", 0) == n

    assert wait_until(lambda: synced(2), timeout=90), stack.bridge_status()
    rows = _rows(stack)
    assert sorted(rows["tickets"].values()) == [1001, 1002]
    assert sorted(rows["states"].values()) == ["ignored", "normalised", "normalised"]

    # Anna answers in her thread (References to her first mail): the same ticket
    first_id = [line for line in anna1.decode().splitlines() if line.startswith("Message-ID")][0]
    anna2 = customer_mail(
        "anna@example.org", "Anna", "Re: Order 42", "Any news?",
        In_Reply_To=first_id.split(":", 1)[1].strip(),
        References=first_id.split(":", 1)[1].strip(),
    )  # fmt: skip
    mailbox.append(anna2)
    assert wait_until(lambda: synced(3), timeout=60), stack.bridge_status()
    assert len(_rows(stack)["tickets"]) == 2

    # one acknowledgement per new ticket, with its number; none to the auto-reply
    assert wait_until(lambda: len(outgoing.messages) == 2, timeout=60), _rows(stack)["out"]
    acks = {m["To"]: m for m in outgoing.messages}
    assert set(acks) == {"anna@example.org", "boris@example.net"}
    assert acks["anna@example.org"]["Auto-Submitted"] == "auto-replied"
    assert "[#T-100" in acks["anna@example.org"]["Subject"]

    hubspot = stack.hubspot_state()
    names = sorted(t["properties"].get("subject", "") for t in hubspot["tickets"])
    assert [n.split(":")[0] for n in names] == ["T-1001", "T-1002"], names
    # the demo mapping's priority rules: no urgent word, the default
    assert {t["properties"].get("hs_ticket_priority") for t in hubspot["tickets"]} == {"MEDIUM"}

    # the rep answers Anna in HubSpot: one threaded reply over SMTP
    anna_uid = next(uid for uid, n in rows["tickets"].items() if n == 1001)
    requests.post(
        f"{stack.sandbox_url}/hubspot/_reply",
        json={"conversation": anna_uid, "text": "It ships tomorrow."},
        timeout=30,
    ).raise_for_status()
    assert wait_until(lambda: len(outgoing.messages) == 3, timeout=60), _rows(stack)["out"]
    sent = outgoing.messages[-1]
    anna2_id = [line for line in anna2.decode().splitlines() if line.startswith("Message-ID")][0]
    assert sent["In-Reply-To"] == anna2_id.split(":", 1)[1].strip()
    assert sent["Subject"] == "Re: Order 42 [#T-1001]"
    assert sent["To"] == "anna@example.org"
    assert f"support+{anna_uid}@acme.test" in sent["Reply-To"]

    # the answer bounces: the reply is marked failed, with the reason
    bounce = (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: support@acme.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-77@mx.example.org>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; anna@example.org\r\n"
        "Action: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {sent['Message-ID']}\r\nTo: anna@example.org\r\n--B--\r\n"
    ).encode()
    mailbox.append(bounce)

    def failed() -> bool:
        return any(status == "failed" for _, status, _ in _rows(stack)["out"])

    assert wait_until(failed, timeout=60), _rows(stack)["out"]
    (error,) = [e for _, status, e in _rows(stack)["out"] if status == "failed"]
    assert "5.2.2" in error

    # the worker and its poller die mid-mailbox; a new one fetches nothing twice
    for i in range(5):
        mailbox.append(customer_mail(f"d{i}@example.org", f"D{i}", f"Q{i}", f"question {i}"))
    stack.kill_worker(stack.worker_procs[0], replace=True, machine=True)
    assert wait_until(lambda: synced(8), timeout=120), stack.bridge_status()
    rows = _rows(stack)
    assert set(rows["keys"].values()) == {1} and len(rows["keys"]) == 10
    # the answer was sent once; the five new tickets were acknowledged once each
    assert wait_until(lambda: len(outgoing.messages) == 8, timeout=60)
    assert len([m for m in outgoing.messages if m["Auto-Submitted"] is None]) == 1

    # a mail loop with a badly behaved auto-responder: it answers every mail
    # to its address at once, without any auto-reply mark or thread header,
    # under a subject of its own (so each answer is a new ticket). The
    # acknowledgements stop at the mapping's per_sender_per_hour (3); every
    # one of its mails is still filed, none is lost.
    robot = "robot@loop.example"
    mailbox.append(customer_mail(robot, "Robot", "Hello", "Is anyone there?"))
    answered: set[str] = set()

    def robot_answers() -> bool:
        for sent in [m for m in outgoing.messages if m["To"] == robot]:
            if sent["Message-ID"] not in answered:
                answered.add(sent["Message-ID"])
                mailbox.append(
                    customer_mail(
                        robot, "Robot", "Your mail was received", f"Ticket {len(answered)}"
                    )
                )
        return len(answered) == 3 and synced(8 + 1 + 3)

    assert wait_until(robot_answers, timeout=120), (len(answered), stack.bridge_status())
    # the fourth ticket's acknowledgement was decided with it (none): the loop is over
    robot_acks = [m for m in outgoing.messages if m["To"] == robot]
    assert len(robot_acks) == 3, [m["Subject"] for m in robot_acks]
    rows = _rows(stack)
    assert len(rows["tickets"]) == 2 + 5 + 4  # Anna, Boris, D0..D4, four of the robot's
    # out: the answer to Anna (failed by its bounce) and 7 + 3 acknowledgements, all sent
    assert sorted(status for _, status, _ in rows["out"]) == ["failed"] + ["sent"] * 10


CUSTOMERS = 30


def _message_id(raw: bytes) -> str:
    line = next(x for x in raw.decode().splitlines() if x.lower().startswith("message-id:"))
    return line.split(":", 1)[1].strip()


def _thread(n: int) -> list[bytes]:
    """Customer ``n``'s five mails: a question, a reply, a forward, one with
    an attachment, a last reply, each naming the ones before."""
    sender, name = f"c{n}@example.org", f"Customer {n}"
    first = customer_mail(sender, name, f"Question {n}", f"Question {n}: where is my order?")
    mails = [first]
    texts = ["where is my order?", "any news?", "see below", "the invoice", "thanks"]
    for i, text in enumerate(texts[1:], start=2):
        ids = [_message_id(m) for m in mails]
        subject = f"Fwd: Question {n}" if i == 3 else f"Re: Question {n}"
        body = f"{text} ({n}/{i})"
        if i == 3:
            body += (
                "\n\n---------- Forwarded message ---------\n"
                "From: shop <shop@example.net>\nYour order ships soon."
            )
        msg = customer_mail(
            sender, name, subject, body, In_Reply_To=ids[-1], References=" ".join(ids)
        )
        if i == 4:
            parsed = email.message_from_bytes(msg, policy=email.policy.default)
            parsed.add_attachment(
                b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf"
            )
            msg = parsed.as_bytes()
        mails.append(msg)
    return mails


def _bounce_of(sent: EmailMessage) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: support@acme.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <bounce-{sent['Message-ID'].strip('<>')}>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; {sent['To']}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {sent['Message-ID']}\r\nTo: {sent['To']}\r\n--B--\r\n"
    ).encode()


def test_thirty_customers_five_mails_each_at_the_issues_scale(  # type: ignore[no-untyped-def]
    make_stack_once, mailbox: Dovecot, outgoing: SmtpTestServer
) -> None:
    """30 customers x 5 mails (replies, a forward, an attachment), an
    auto-reply each to our acknowledgement, the worker killed mid-mailbox,
    a rep's answer to each and its bounce, then the folder renumbered
    (UIDVALIDITY): 30 contacts, 30 tickets, 150 messages in order, 30
    acknowledgements, 30 answers sent once and failed by their bounces,
    and nothing journaled or sent twice."""
    stack: Stack = make_stack_once(
        sandbox_config=FAST_TIER, workers=2, env_overrides={"BRIDGE_POLL_TIMEOUT": "5"}
    )
    _raise_tier(stack)
    _cli(
        stack,
        "email", "connect", "--tenant", _slug(stack), "--address", ADDRESS,
        "--user", mailbox.user, "--password-env", "SUPPORT_MAIL_PASSWORD",
        "--imap-host", mailbox.host, "--imap-port", str(mailbox.imap_port),
        "--imap-security", "plain", "--smtp-host", outgoing.host,
        "--smtp-port", str(outgoing.port), "--smtp-security", "plain",
        SUPPORT_MAIL_PASSWORD=mailbox.password,
    )  # fmt: skip
    threads = {n: _thread(n) for n in range(CUSTOMERS)}
    for round_ in range(5):
        for n in range(CUSTOMERS):
            mailbox.append(threads[n][round_])
        if round_ == 1:
            # the poller's machine dies mid-mailbox
            stack.kill_worker(stack.worker_procs[0], replace=True, machine=True)
    for n in range(CUSTOMERS):  # each customer's auto-responder answers our acknowledgement
        mailbox.append(
            customer_mail(
                f"c{n}@example.org", f"Customer {n}", f"Automatic reply: Question {n}",
                "I am away until Monday.", Auto_Submitted="auto-replied",
            )
        )  # fmt: skip

    def synced() -> int:
        return int(stack.bridge_status()["messages"]["in"].get("synced", 0))

    assert wait_until(lambda: synced() == 5 * CUSTOMERS, timeout=180), stack.bridge_status()
    acks = lambda: [m for m in outgoing.messages if m["Auto-Submitted"] == "auto-replied"]  # noqa: E731
    assert wait_until(lambda: len(acks()) == CUSTOMERS, timeout=60), len(acks())
    rows = _rows(stack)
    assert sorted(rows["tickets"].values()) == list(range(1001, 1001 + CUSTOMERS))
    assert set(rows["keys"].values()) == {1}  # nothing journaled twice
    assert len(rows["keys"]) == 6 * CUSTOMERS  # 150 mails + 30 auto-replies
    hubspot = stack.hubspot_state()
    assert len(hubspot["contacts"]) == CUSTOMERS
    subjects = sorted(t["properties"]["subject"].split(":")[0] for t in hubspot["tickets"])
    assert subjects == sorted(f"T-{1001 + n}" for n in range(CUSTOMERS))
    assert sorted(m["To"] for m in acks()) == sorted(f"c{n}@example.org" for n in range(CUSTOMERS))
    # every customer's five messages in order, in one conversation each
    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_engine.connect() as conn:
            found = conn.execute(
                select(Conversation.uid, Message.text)
                .join(Message, Message.conversation_id == Conversation.id)
                .where(Message.direction == "in")
                .order_by(Conversation.id, Message.seq)
            ).all()
    finally:
        runtime.close()
    per_conversation: dict[str, list[str]] = {}
    for uid, text in found:
        per_conversation.setdefault(uid, []).append(text)
    assert len(per_conversation) == CUSTOMERS
    for texts in per_conversation.values():
        n = int(texts[0].split("Question ", 1)[1].split()[0].rstrip(":"))
        assert [t.split("\n\n", 1)[1].split("\n")[0] for t in texts[1:]] == [
            f"any news? ({n}/2)", f"see below ({n}/3)", f"the invoice ({n}/4)", f"thanks ({n}/5)"
        ]  # fmt: skip
    # HubSpot's inbox shows each attachment and the original mail as links
    # the bridge serves (the Files API is not in the stored specs)
    links = re.compile(r"\[document: (invoice\.pdf|original\.eml)\] (\S+)")
    found_links: Counter[str] = Counter()
    for thread in hubspot["threads"]:
        for message in thread["messages"]:
            for name, url in links.findall(message["text"]):
                assert url.startswith(stack.bridge_url + "/files/"), url
                found_links[name] += 1
                if name == "invoice.pdf":
                    assert requests.get(url, timeout=10).content == b"%PDF-1.4 invoice"
    assert found_links == {"invoice.pdf": CUSTOMERS, "original.eml": 5 * CUSTOMERS}, found_links

    # a rep answers every ticket in HubSpot: each answer once, threaded
    for uid in rows["tickets"]:
        requests.post(
            f"{stack.sandbox_url}/hubspot/_reply",
            json={"conversation": uid, "text": "We are on it."},
            timeout=30,
        ).raise_for_status()
    answers = lambda: [m for m in outgoing.messages if m["Auto-Submitted"] is None]  # noqa: E731
    assert wait_until(lambda: len(answers()) == CUSTOMERS, timeout=120), len(answers())
    last_ids = {f"c{n}@example.org": _message_id(threads[n][-1]) for n in range(CUSTOMERS)}
    for sent in answers():
        assert sent["In-Reply-To"] == last_ids[sent["To"]]
        assert "[#T-10" in sent["Subject"] and sent["Subject"].startswith("Re: Question")
    for sent in answers():
        mailbox.append(_bounce_of(sent))

    def failed() -> int:
        return sum(status == "failed" for _, status, _ in _rows(stack)["out"])

    assert wait_until(lambda: failed() == CUSTOMERS, timeout=120), failed()

    # the folder is renumbered (a restored backup): read again, nothing stored or sent twice
    before = len(_rows(stack)["keys"])
    mailbox.reset_uidvalidity()
    renumbered = str(mailbox.uidvalidity())
    # the poller re-scans the whole folder and stores a cursor of the new numbering
    assert wait_until(lambda: _cursor(stack).startswith(renumbered + ":"), timeout=60)
    after = _rows(stack)
    assert len(after["keys"]) == before and set(after["keys"].values()) == {1}
    assert len(answers()) == CUSTOMERS and len(acks()) == CUSTOMERS
