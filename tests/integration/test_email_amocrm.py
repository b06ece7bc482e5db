"""E-mail -> amoCRM and back at the issue's scale, through real servers: a
real Dovecot holds the support mailbox, a real SMTP server (aiosmtpd)
receives what the bridge sends, the sandbox plays amoCRM (the demo mapping's
``email:`` rule: a lead per mail thread named by its ticket number, the
messages in amoCRM's chat), and real ``bridge worker`` processes (with their
pollers) do the work. On one database (PostgreSQL in CI).

10 customers write 5 mails each, as an MTA would deliver them to the
mailbox: a first mail (a new ticket), two replies in the thread
(In-Reply-To/References), a forward (``Fwd:``, the original quoted) and a
reply with a small PDF; each customer's mailbox also answers our
acknowledgement with an out-of-office auto-reply. The worker and its poller
are SIGKILLed while the last round is in the mailbox. Then a manager answers
every customer in amoCRM's chat, and every answer bounces.

Shown: 20 contacts and 20 leads named T-1001..T-1020, 100 customer messages
in the chats in order per customer and nothing from the auto-replies or the
bounces; 20 acknowledgements, none to an auto-reply; each manager's answer
sent exactly once as a threaded reply with the ticket in its subject, its
bounce marking it failed; nothing journaled twice, nothing sent twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import requests

from bench.stack import Stack
from bench.traffic import wait_until
from tests.integration.test_email_hubspot import (
    ADDRESS,
    _cli,
    _rows,
    _slug,
    mailbox,  # noqa: F401  (the fixture)
    outgoing,  # noqa: F401  (the fixture)
)
from tests.integration.test_telegram_amocrm import FAST, _account, _tenant_settings
from tests.support.dovecot import Dovecot
from tests.support.smtp_server import SmtpTestServer

CUSTOMERS = 10  # 20 until 2026-12-06: the suite's 20-minute budget
MAILS = 5
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def _address(i: int) -> str:
    return f"c{i:02d}@example.org"


def _token(i: int, k: int) -> str:
    """The words that identify mail ``k`` (1..5) of customer ``i`` in the CRM."""
    return f"customer {i:02d} mail {k}"


def _mail(
    i: int, subject: str, text: str, *, pdf: bool = False, **headers: str
) -> tuple[bytes, str]:
    msg = EmailMessage()
    msg["From"] = f"Customer {i:02d} <{_address(i)}>"
    msg["To"] = ADDRESS
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    mid = make_msgid(domain="example.org")
    msg["Message-ID"] = mid
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(text)
    if pdf:
        msg.add_attachment(
            PDF, maintype="application", subtype="pdf", filename=f"receipt-{i:02d}.pdf"
        )
    return msg.as_bytes(), mid


def _bounce(i: int, message_id: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: support@acme.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <bounce-{i}@mx.example.org>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; {_address(i)}\r\n"
        "Action: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nTo: {_address(i)}\r\n--B--\r\n"
    ).encode()


def _customer_of(address: str) -> int:
    return int(address.split("@")[0][1:])


def test_10_customers_5_mails_into_amocrm_leads_and_replies_go_out_threaded_once(
    make_stack_once,
    mailbox: Dovecot,  # noqa: F811
    outgoing: SmtpTestServer,  # noqa: F811  # type: ignore[no-untyped-def]
) -> None:
    stack: Stack = make_stack_once(
        crm="amocrm", sandbox_config=FAST, workers=1, env_overrides={"BRIDGE_POLL_TIMEOUT": "5"}
    )
    _tenant_settings(stack, rate_per_second=100)
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

    def in_synced() -> int:
        return int(stack.bridge_status()["messages"]["in"].get("synced", 0))

    def synced(n: int) -> bool:
        return in_synced() == n

    def acks() -> list[Any]:
        return [m for m in outgoing.messages if m["Auto-Submitted"] == "auto-replied"]

    ids: dict[int, list[str]] = {i: [] for i in range(CUSTOMERS)}

    # round 1: every customer's first mail, a new ticket each
    for i in range(CUSTOMERS):
        raw, mid = _mail(i, f"Order {i:02d}", f"Where is my order? ({_token(i, 1)})")
        ids[i].append(mid)
        mailbox.append(raw)
    assert wait_until(lambda: synced(CUSTOMERS), timeout=120), stack.bridge_status()
    assert wait_until(lambda: len(acks()) == CUSTOMERS, timeout=60), _rows(stack)["out"]
    ack_of = {_customer_of(str(m["To"])): m for m in acks()}
    assert sorted(ack_of) == list(range(CUSTOMERS))

    # round 2: a reply in the thread, and the customer's out-of-office
    # answering our acknowledgement (never filed, never acknowledged)
    for i in range(CUSTOMERS):
        first = ids[i][0]
        raw, mid = _mail(
            i, f"Re: Order {i:02d}",
            f"Any news? ({_token(i, 2)})\n\nOn Monday you wrote:\n> Where is my order?",
            In_Reply_To=first, References=first,
        )  # fmt: skip
        ids[i].append(mid)
        mailbox.append(raw)
        ack = ack_of[i]
        away, _ = _mail(
            i, f"Automatic reply: {ack['Subject']}", "I am away until Monday.",
            In_Reply_To=ack["Message-ID"], References=ack["Message-ID"],
            Auto_Submitted="auto-replied",
        )  # fmt: skip
        mailbox.append(away)
    assert wait_until(lambda: synced(2 * CUSTOMERS), timeout=120), stack.bridge_status()

    # round 3: another reply (Re: Re:), References to the whole thread
    for i in range(CUSTOMERS):
        raw, mid = _mail(
            i, f"Re: Re: Order {i:02d}", f"Hello? ({_token(i, 3)})",
            In_Reply_To=ids[i][-1], References=" ".join(ids[i]),
        )  # fmt: skip
        ids[i].append(mid)
        mailbox.append(raw)
    assert wait_until(lambda: synced(3 * CUSTOMERS), timeout=120), stack.bridge_status()

    # round 4: a forward of the first mail, the original quoted in the body
    for i in range(CUSTOMERS):
        raw, mid = _mail(
            i, f"Fwd: Order {i:02d}",
            f"Forwarding my first mail again ({_token(i, 4)})\n\n"
            "---------- Forwarded message ---------\n"
            f"From: Customer {i:02d} <{_address(i)}>\nSubject: Order {i:02d}\n"
            f"To: {ADDRESS}\n\nWhere is my order?\n",
            References=" ".join(ids[i]),
        )  # fmt: skip
        ids[i].append(mid)
        mailbox.append(raw)
    assert wait_until(lambda: synced(4 * CUSTOMERS), timeout=120), stack.bridge_status()

    # round 5: a reply with a PDF; the worker and its poller die mid-mailbox
    for i in range(CUSTOMERS):
        raw, mid = _mail(
            i, f"Re: Order {i:02d}", f"The receipt is attached ({_token(i, 5)})",
            pdf=True, In_Reply_To=ids[i][-1], References=" ".join(ids[i]),
        )  # fmt: skip
        ids[i].append(mid)
        mailbox.append(raw)
        if i == CUSTOMERS // 3:
            assert wait_until(lambda: in_synced() > 4 * CUSTOMERS, timeout=60)
            killed = stack.kill_worker(stack.worker_procs[0], replace=True, machine=True)
            assert len(killed) >= 2, killed  # the worker and its poller
            assert in_synced() < MAILS * CUSTOMERS
    assert wait_until(lambda: synced(MAILS * CUSTOMERS), timeout=180), stack.bridge_status()

    # the CRM: 20 contacts, 20 leads named by their tickets, 100 messages in order
    rows = _rows(stack)
    assert sorted(rows["tickets"].values()) == list(range(1001, 1001 + CUSTOMERS))
    account = _account(stack)
    contacts = [c for c in account["contacts"] if not c.get("is_deleted")]
    leads = {lead["id"]: lead for lead in account["leads"] if not lead.get("is_deleted")}
    assert len(contacts) == CUSTOMERS, [c["name"] for c in contacts]
    assert len(leads) == CUSTOMERS, [lead["name"] for lead in leads.values()]
    assert sorted(lead["name"].split(":")[0] for lead in leads.values()) == [
        f"T-{n}" for n in range(1001, 1001 + CUSTOMERS)
    ]
    conversation_of: dict[int, str] = {}
    messages = 0
    for chat in account["chats"]:
        inbound = [m for m in chat["messages"] if m["direction"] == "in"]
        texts = [m["text"] for m in inbound if m["type"] == "text"]
        messages += len(texts)
        who = {i for i in range(CUSTOMERS) for t in texts if _token(i, 1) in t}
        assert len(who) == 1, texts
        (i,) = who
        assert i not in conversation_of, f"customer {i} has two chats"
        conversation_of[i] = chat["conversation_id"]
        found = [k for t in texts for k in range(1, MAILS + 1) if _token(i, k) in t]
        assert found == list(range(1, MAILS + 1)), texts
        assert f"receipt-{i:02d}.pdf" in texts[-1], texts[-1]
        # the PDF reached amoCRM as a file: amojo fetched it from the
        # bridge's link, the bytes the customer sent; the original mail
        # is a link in the text, never a file message of its own
        [pdf] = [m for m in inbound if m["type"] == "file"]
        assert pdf["file_name"] == f"receipt-{i:02d}.pdf", pdf
        assert pdf["media"].startswith(stack.bridge_url + "/files/"), pdf["media"]
        assert pdf["fetched"]["status"] == 200, pdf["fetched"]
        assert pdf["fetched"]["sha256"] == hashlib.sha256(PDF).hexdigest()
        assert f"[document: original.eml] {stack.bridge_url}/files/" in texts[-1]
        assert requests.get(pdf["media"], timeout=10).content == PDF
        stamps = [m["timestamp"] for m in inbound]
        assert stamps == sorted(stamps), stamps
        assert not [t for t in texts if "away" in t or "Delivery failed" in t]
        # the chat is on the customer's lead, named by the thread's ticket
        ticket = rows["tickets"][chat["conversation_id"]]
        assert leads[chat["lead_id"]]["name"].startswith(f"T-{ticket}:")
    assert messages == MAILS * CUSTOMERS
    assert sorted(conversation_of) == list(range(CUSTOMERS))

    # exactly one acknowledgement per ticket, with its number; none to an auto-reply
    assert len(acks()) == CUSTOMERS
    for i, ack in ack_of.items():
        ticket = rows["tickets"][conversation_of[i]]
        assert f"[#T-{ticket}]" in ack["Subject"], ack["Subject"]

    # a manager answers every customer in amoCRM's chat: one threaded reply
    # each, though the worker dies again while the answers go out
    def replies() -> list[Any]:
        return [m for m in outgoing.messages if m["Auto-Submitted"] is None]

    for i in range(CUSTOMERS):
        if i == CUSTOMERS // 2:
            assert wait_until(lambda: len(replies()) > 0, timeout=60), _rows(stack)["out"]
            stack.kill_worker(stack.worker_procs[-1], replace=True, machine=True)
        answer = requests.post(
            f"{stack.sandbox_url}/amocrm/_reply",
            json={"conversation": conversation_of[i], "text": f"Answer for customer {i:02d}"},
            timeout=30,
        )
        answer.raise_for_status()
        assert answer.json()["webhook"]["status"] == 200, answer.json()

    def settled() -> bool:
        out = _rows(stack)["out"]
        return len(out) == 2 * CUSTOMERS and all(st in ("sent", "failed") for _, st, _ in out)

    assert wait_until(settled, timeout=120), _rows(stack)["out"]
    # an answer whose send the kill interrupted before the mail left is
    # failed as "outcome unknown" and parked for an operator, never sent
    # blindly again; every other answer went out exactly once
    reached = {str(m["Message-ID"]).split(".", 1)[1].split("@")[0] for m in replies()}
    unsent = [
        uid
        for uid, status, error in _rows(stack)["out"]
        if status == "failed" and "outcome unknown" in (error or "") and uid not in reached
    ]
    assert len(replies()) + len(unsent) == CUSTOMERS, (len(replies()), unsent)
    for sent in replies():
        i = _customer_of(str(sent["To"]))
        ticket = rows["tickets"][conversation_of[i]]
        assert sent["In-Reply-To"] == ids[i][-1]
        assert sent["Subject"] == f"Re: Order {i:02d} [#T-{ticket}]"
        assert f"Answer for customer {i:02d}" in sent.get_body(("plain",)).get_content()
        assert f"support+{conversation_of[i]}@acme.test" in sent["Reply-To"]

    # every answer bounces: each reply is marked failed, with the reason
    for sent in replies():
        mailbox.append(_bounce(_customer_of(str(sent["To"])), str(sent["Message-ID"])))

    def failed() -> list[Any]:
        return [row for row in _rows(stack)["out"] if row[1] == "failed"]

    assert wait_until(lambda: len(failed()) == CUSTOMERS, timeout=120), _rows(stack)["out"]
    assert all("5.2.2" in (error or "") for uid, _, error in failed() if uid not in unsent)
    assert stack.bridge_status()["messages"]["out"].get("failed") == CUSTOMERS

    # nothing journaled twice (100 mails, 20 auto-replies, 20 bounces), nothing
    # filed from the auto-replies or bounces, nothing sent twice
    rows = _rows(stack)
    assert set(rows["keys"].values()) == {1}, [k for k, n in rows["keys"].items() if n > 1]
    assert len(rows["keys"]) == (MAILS + 1) * CUSTOMERS + len(replies())  # bounces: one per sent
    # the auto-replies are ignored, the bounces too once they marked the replies
    states = Counter(rows["states"].values())
    assert states == {"normalised": MAILS * CUSTOMERS, "ignored": CUSTOMERS + len(replies())}
    inbound = [m for c in _account(stack)["chats"] for m in c["messages"] if m["direction"] == "in"]
    # each mail once, and each PDF once as a file message of its own
    assert Counter(m["type"] for m in inbound) == {"text": MAILS * CUSTOMERS, "file": CUSTOMERS}
    sent_ids = Counter(str(m["Message-ID"]) for m in outgoing.messages)
    assert len(outgoing.messages) == CUSTOMERS + len(replies()) and set(sent_ids.values()) == {1}
    assert len(acks()) == CUSTOMERS
