"""The mapping's priority rules (``priority``: a sender's domain or a
keyword -> ``{conversation.priority}``, written into the CRM entity by the
field templates), on real SQLite/PostgreSQL with the in-memory CRM."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from bridge.model import InboundMessage, MessageKind, SenderProfile
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.tables import Conversation
from mappings import MappingError
from mappings.loader import parse_mapping
from tests.support import fakes

MAPPING = """
crm: fake
channels:
  telegram:
    object: deal
    pipeline: p1
    stage: s1
    timeline: note
    fields:
      entity:
        priority: "{conversation.priority}"
    priority:
      default: MEDIUM
      rules:
        - {domain: bigclient.com, value: HIGH}
        - {keyword: срочно, value: URGENT}
"""
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def account(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    tenant_id, account_id = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    return AccountRef(account_id, tenant_id, "telegram")


def message(n: int, email: str, text: str) -> InboundMessage:
    return InboundMessage(
        channel_kind="telegram",
        external_id=str(n),
        external_user_id=str(n),
        external_thread_id=str(n),
        kind=MessageKind.TEXT,
        sent_at=T0,
        text=text,
        profile=SenderProfile(display_name=f"P{n}", email=email),
    )


def test_the_first_matching_rule_sets_the_entitys_priority(runtime, account):  # type: ignore[no-untyped-def]
    accept(
        runtime,
        account,
        [
            message(1, "ceo@bigclient.com", "hello"),
            message(2, "ops@eu.bigclient.com", "СРОЧНО нужна помощь"),  # the domain rule first
            message(3, "anna@example.org", "Срочно: не работает"),
            message(4, "boris@example.org", "a question"),
        ],
    )
    with runtime.transaction() as s:
        rows = s.execute(
            select(Conversation.id, Conversation.uid, Conversation.external_thread_id)
        ).all()
    threads = {uid: thread for _, uid, thread in rows}
    for conversation_id, _, _ in rows:
        run_inbound(runtime, conversation_id)
    by_thread = {
        threads[e["conversation_uid"]]: e["properties"].get("priority")
        for e in fakes.STATE.entities.values()
    }
    assert by_thread == {"1": "HIGH", "2": "HIGH", "3": "URGENT", "4": "MEDIUM"}


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        ("[{value: HIGH}]", "either domain or keyword"),
        ("[{domain: a.com, keyword: x, value: HIGH}]", "either domain or keyword"),
        ("[{domain: 'not a domain', value: HIGH}]", "String does not match"),
        ("[{keyword: x}]", "value"),
    ],
)
def test_a_rule_names_one_thing_to_match_and_its_value(rules: str, says: str) -> None:
    listed = (
        "        - {domain: bigclient.com, value: HIGH}\n        - {keyword: срочно, value: URGENT}"
    )
    text = MAPPING.replace(listed, "").replace("      rules:\n", f"      rules: {rules}\n")
    with pytest.raises(MappingError) as err:
        parse_mapping(text)
    assert says in str(err.value)
