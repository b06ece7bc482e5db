"""Threads the core finds for a channel (e-mail's own threading, read by
its adapter into ThreadHints), ticket numbers, the channel state a reply
needs, and a channel's report that one of our messages failed (a bounce):
on real SQLite/PostgreSQL through ``accept`` and the journal's batch path."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from bridge import outbox
from bridge.model import (
    InboundMessage,
    MessageKind,
    OutboundStatus,
    SenderProfile,
    ThreadHints,
)
from bridge.pipeline.inbound import AccountRef, accept
from bridge.tables import Conversation, IgnoredEventRow, Message, Outbox, Tenant
from tests.support import fakes

MAPPING = """
crm: fake
ticket_format: "T-{number}"
channels:
  telegram:
    object: none
    timeline: note
"""
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def account(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    tenant_id, account_id = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    return AccountRef(account_id, tenant_id, "telegram")


def mail(n: int, sender: str = "ann@example.com", **kw: Any) -> InboundMessage:
    """A message of a channel that threads by itself: its own thread id is
    new each time (an e-mail's Message-ID); hints name the thread."""
    return InboundMessage(
        channel_kind="telegram",
        external_id=f"mid:{n}",
        external_user_id=sender,
        external_thread_id=f"thread-{n}",
        kind=MessageKind.TEXT,
        sent_at=T0 + dt.timedelta(minutes=n),
        text=f"mail {n}",
        **{"opens_ticket": True, "profile": SenderProfile(display_name="Ann"), **kw},
    )


def conversations(runtime) -> dict[str, tuple[int | None, list[str]]]:  # type: ignore[no-untyped-def]
    """Each conversation's ticket number and texts, by its first thread id."""
    out: dict[str, tuple[int | None, list[str]]] = {}
    with runtime.transaction() as s:
        for conv in s.scalars(select(Conversation).order_by(Conversation.id)):
            texts = list(
                s.scalars(
                    select(Message.text)
                    .where(Message.conversation_id == conv.id)
                    .order_by(Message.seq)
                )
            )
            out[conv.external_thread_id] = (conv.ticket_number, texts)
    return out


def test_hints_thread_mails_and_each_new_thread_takes_the_next_ticket(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [mail(1)])
    with runtime.transaction() as s:
        uid = s.scalar(select(Conversation.uid))
    accept(
        runtime,
        account,
        [
            mail(2, thread_hints=ThreadHints(message_keys=("mid:1",))),  # References
            mail(3, thread_hints=ThreadHints(conversation_uid=uid)),  # the reply address
            mail(4, thread_hints=ThreadHints(ticket="1001")),  # the subject's ticket, same sender
            mail(5, thread_hints=ThreadHints(message_keys=("mid:unknown",))),  # a new topic
            # someone else naming Ann's ticket number: a number can be guessed
            mail(6, sender="eve@example.com", thread_hints=ThreadHints(ticket="1001")),
        ],
    )
    assert conversations(runtime) == {
        "thread-1": (1001, ["mail 1", "mail 2", "mail 3", "mail 4"]),
        "thread-5": (1002, ["mail 5"]),
        "thread-6": (1003, ["mail 6"]),
    }
    with runtime.transaction() as s:
        assert s.scalar(select(Tenant.next_ticket)) == 1004


def test_a_reply_to_our_own_message_joins_its_conversation(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [mail(1)])
    ours = _outbound(runtime, "mail:1")
    accept(runtime, account, [mail(2, thread_hints=ThreadHints(bridge_ids=(ours,)))])
    assert conversations(runtime)["thread-1"][1] == ["mail 1", "our reply", "mail 2"]


def test_the_thread_state_is_merged_into_the_conversation_later_facts_winning(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [mail(1, thread_state={"address": "a@x", "subject": "Hi"})])
    accept(
        runtime,
        account,
        [
            mail(
                2,
                thread_hints=ThreadHints(message_keys=("mid:1",)),
                thread_state={"subject": "Re: Hi", "last_message_id": "2@x"},
            )
        ],
    )
    with runtime.transaction() as s:
        state = s.scalar(select(Conversation.channel_state))
    assert state == {"address": "a@x", "subject": "Re: Hi", "last_message_id": "2@x"}


def test_a_messenger_message_takes_no_ticket(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [mail(1, opens_ticket=False)])
    assert conversations(runtime)["thread-1"][0] is None


def test_a_bounce_fails_our_sent_reply_once_and_makes_its_crm_report_due(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [mail(1)])
    ours = _outbound(runtime, "mail:1", status="sent", crm_message_id="crm-9")
    reason = "bounced: 5.1.1 no such user"
    bounce = OutboundStatus("telegram", "mid:bounce-1", ours, "failed", reason)
    first = accept(runtime, account, [bounce])
    again = accept(runtime, account, [bounce])
    assert (first.ignored, again.duplicates) == (1, 1)
    with runtime.transaction() as s:
        row = s.scalars(select(Message).where(Message.uid == ours)).one()
        report = s.scalars(select(Outbox).where(Outbox.direction == outbox.REPORT)).one()
        recorded = s.scalars(select(IgnoredEventRow.event_type)).all()
    assert (row.status, row.last_error) == ("failed", reason)
    assert row.followup_status == "pending" and report.state == "pending"
    assert [j[0] for j in first.jobs] == [outbox.REPORT]
    assert recorded == ["outbound_failed"]


def test_a_status_for_a_message_not_ours_is_recorded_and_changes_nothing(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [mail(1)])
    ours = _outbound(runtime, "mail:1", status="sent")
    stranger = OutboundStatus("telegram", "mid:b2", str(uuid.uuid4()), "failed", "bounced")
    delayed = OutboundStatus("telegram", "mid:b3", ours, "delayed", "4.4.1 retrying")
    result = accept(runtime, account, [stranger, delayed])
    assert result.ignored == 2 and not result.jobs
    with runtime.transaction() as s:
        assert s.scalar(select(Message.status).where(Message.uid == ours)) == "sent"


def _outbound(runtime, thread: str, **values: Any) -> str:  # type: ignore[no-untyped-def]
    """One of our replies in the conversation first started as ``thread``."""
    uid = str(uuid.uuid4())
    with runtime.transaction() as s:
        conv = s.scalars(
            select(Conversation).where(
                Conversation.external_thread_id == thread.replace("mail:", "thread-")
            )
        ).one()
        seq = conv.next_seq
        conv.next_seq += 1
        s.add(
            Message(
                uid=uid,
                tenant_id=conv.tenant_id,
                conversation_id=conv.id,
                channel_account_id=conv.channel_account_id,
                direction=outbox.OUT,
                seq=seq,
                dedupe_key=f"crm:{uid}",
                kind="text",
                text="our reply",
                payload={},
                sent_at=T0,
                status=values.get("status", "pending"),
                crm_message_id=values.get("crm_message_id"),
            )
        )
    return uid


def test_a_channel_whose_user_is_an_address_learns_it_once(runtime, account):  # type: ignore[no-untyped-def]
    """The channel's own handle is also the person's e-mail (kind ``email``
    both): one identity, the contact's e-mail set, no second insert."""
    from bridge.model import SenderProfile as Profile
    from bridge.tables import Contact, ContactIdentity

    email_account = AccountRef(account.id, account.tenant_id, "email")
    accept(
        runtime,
        email_account,
        [mail(1, profile=Profile(display_name="Ann", email="ann@example.com"))],
    )
    with runtime.transaction() as s:
        identities = s.execute(select(ContactIdentity.kind, ContactIdentity.value)).all()
        emails = s.scalars(select(Contact.email)).all()
    assert identities == [("email", "ann@example.com")]
    assert emails == ["ann@example.com"]


def test_a_thread_arriving_in_one_batch_is_one_conversation(runtime, account):  # type: ignore[no-untyped-def]
    """A poll (or a quick follow-up) brings several mails of one thread to
    one normaliser batch: the later ones name the earlier ones, which are
    not in the table yet."""
    from bridge.model import SenderProfile as Profile

    learns = Profile(display_name="Ann", email="ann@example.com")  # e-mail: every mail learns
    accept(
        runtime,
        account,
        [
            mail(1, profile=learns),
            mail(2, profile=learns, thread_hints=ThreadHints(message_keys=("mid:1",))),
            mail(3, profile=learns, thread_hints=ThreadHints(message_keys=("mid:2", "mid:1"))),
            mail(4, profile=learns),  # a new topic in the same batch
        ],
    )
    assert conversations(runtime) == {
        "thread-1": (1001, ["mail 1", "mail 2", "mail 3"]),
        "thread-4": (1002, ["mail 4"]),
    }
