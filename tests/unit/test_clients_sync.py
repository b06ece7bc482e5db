"""The CRM side of one client across channels, through the sync job, on real
SQLite/PostgreSQL and Redis with the in-memory CRM: a merged client's
conversations converge on one open deal, an unmerge gives each its own back
(and the split-off client a CRM contact of its own where the CRM had merged
the records), a proven e-mail learnt later reaches the CRM contact, and the
CRM is told of links and splits with a note on both contacts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from bridge import identity
from bridge.pipeline.inbound import AccountRef, run_inbound
from bridge.tables import ContactMerge
from tests.support import fakes

RULE = "{object: deal, pipeline: p, stage: s, reuse: open}"
MAPPING = f"""
crm: fake
channels:
  telegram: {RULE}
  whatsapp: {RULE}
  webchat: {RULE}
  email: {RULE}
"""
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
PHONE = "+79995550102"
EMAIL = "anna@example.com"
_n = iter(range(1, 10_000))


@pytest.fixture
def world(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, AccountRef]:
    tenant_id, telegram = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    refs = {"telegram": AccountRef(telegram, tenant_id, "telegram")}
    return {**refs, **fakes.channel_refs(runtime, tenant_id, ("whatsapp", "webchat", "email"))}


def write(runtime: Any, account: AccountRef, user: str, text: str, **profile: Any) -> int:
    """The customer writes; the conversation is synced. Returns its id."""
    conversation = fakes.customer_writes(runtime, account, user, text, **profile)
    run_inbound(runtime, conversation)
    return conversation


def entity_of(text: str) -> str:
    [entry] = [e for e in fakes.STATE.entries if e["text"].endswith(text)]
    return str(entry["entity"])


def test_a_merged_clients_conversations_share_one_deal_and_unmerge_gives_each_its_own(
    runtime: Any, world: dict[str, AccountRef]
) -> None:
    write(runtime, world["telegram"], "10", "tg 1")
    write(runtime, world["whatsapp"], "79995550102", "wa 1", phone=PHONE, phone_verified=True)
    crm = fakes.STATE
    tg_deal, wa_deal = entity_of("tg 1"), entity_of("wa 1")
    assert tg_deal != wa_deal and len(crm.contacts) == 2
    # the Telegram user shares their own number: one client (the older survives)
    write(runtime, world["telegram"], "10", "tg 2", phone=PHONE, phone_verified=True)
    write(runtime, world["whatsapp"], "79995550102", "wa 2", phone=PHONE, phone_verified=True)
    assert entity_of("tg 2") == entity_of("wa 2") == tg_deal  # one open deal from now on
    [tg_contact] = {e["contact"] for e in crm.entries if e["text"].endswith(("tg 2", "wa 2"))}
    assert list(crm.merged.values()) == [tg_contact]  # the CRM merged the two records
    with runtime.transaction() as s:
        merge = s.scalars(select(ContactMerge)).one()
        assert merge.crm_action == "merged"
        identity.unmerge(s, merge.id, "test")
    write(runtime, world["whatsapp"], "79995550102", "wa 3", phone=PHONE, phone_verified=True)
    write(runtime, world["telegram"], "10", "tg 3")
    # each conversation back on its own deal; the CRM cannot split the records
    # it merged: the split-off client goes on writing to the one there is
    assert entity_of("wa 3") == wa_deal and entity_of("tg 3") == tg_deal
    [wa_contact] = {e["contact"] for e in crm.entries if e["text"].endswith("wa 3")}
    assert wa_contact == tg_contact and len(crm.contacts) == 2


def test_a_proven_address_learnt_later_reaches_the_crm_contact(
    runtime: Any, world: dict[str, AccountRef]
) -> None:
    write(runtime, world["webchat"], "visitor", "web 1", email=EMAIL, display_name="Anna")
    crm = fakes.STATE
    [(contact_id, contact)] = crm.contacts.items()
    assert contact["emails"] == []  # typed only: never a search key
    write(runtime, world["email"], EMAIL, "mail 1", email=EMAIL, email_verified=True)
    assert len(crm.contacts) == 1 and crm.contacts[contact_id]["emails"] == [EMAIL]
    assert {e["contact"] for e in crm.entries} == {contact_id}


def test_linked_and_split_clients_get_a_note_on_both_crm_contacts(
    runtime: Any, world: dict[str, AccountRef]
) -> None:
    crm = fakes.STATE
    crm.can_merge = False  # a CRM without a merge call (amoCRM, Bitrix24)
    write(runtime, world["whatsapp"], "79995550102", "wa 1", phone=PHONE, phone_verified=True)
    write(runtime, world["webchat"], "visitor", "web 1", phone=PHONE, display_name="Mallory")
    wa_crm, web_crm = (e["contact"] for e in crm.entries)
    # typed after the owner proved it: only linked, both CRM contacts told
    assert wa_crm != web_crm
    linked = sorted(c for c, text, _ in crm.notes if "Possibly the same client" in text)
    assert linked == sorted([wa_crm, web_crm])
    write(runtime, world["telegram"], "10", "tg 1")
    [tg_crm] = {e["contact"] for e in crm.entries if e["text"].endswith("tg 1")}
    # the Telegram user shares the number: one client with the WhatsApp one,
    # which the CRM cannot merge: a note on each names the other
    write(runtime, world["telegram"], "10", "tg 2", phone=PHONE, phone_verified=True)
    with runtime.transaction() as s:
        merge = s.scalars(select(ContactMerge)).one()
        assert (merge.reason, merge.crm_action) == ("same verified phone", "linked")
        assert {merge.crm_keep_id, merge.crm_gone_id} == {wa_crm, tg_crm}
        keep = merge.crm_keep_id
    same = sorted(c for c, text, _ in crm.notes if text.startswith("Same client as"))
    assert same == sorted([wa_crm, tg_crm])
    # the web visitor's claim was not merged along: still linked only
    assert crm.merged == {} and {e["contact"] for e in crm.entries[-1:]} == {keep}
    with runtime.transaction() as s:
        identity.unmerge(s, merge.id, "rep:1")
    write(runtime, world["telegram"], "10", "tg 3")
    split = sorted(c for c, text, _ in crm.notes if "split this contact" in text)
    assert split == sorted([wa_crm, tg_crm])
    assert entity_of("tg 3") == entity_of("tg 1")  # back on its own deal
    [again] = {e["contact"] for e in crm.entries if e["text"].endswith("tg 3")}
    assert again == tg_crm  # the CRM kept both records: its own again


def test_the_crm_finding_one_contact_for_two_clients_makes_them_one(
    runtime: Any, world: dict[str, AccountRef]
) -> None:
    crm = fakes.STATE
    # a contact a rep keeps in the CRM, with both the address and the number
    crm.contacts["900"] = {
        "identities": {},
        "phones": [PHONE],
        "emails": [EMAIL],
        "owner": "7",
        "properties": {},
        "name": "Anna",
    }
    write(runtime, world["email"], EMAIL, "mail 1", email=EMAIL, email_verified=True)
    write(runtime, world["whatsapp"], "79995550102", "wa 1", phone=PHONE, phone_verified=True)
    assert {e["contact"] for e in crm.entries} == {"900"}
    with runtime.transaction() as s:
        merge = s.scalars(select(ContactMerge)).one()
        assert merge.reason == "same CRM contact"
        assert merge.evidence["value"] == "900"
        live = identity.live_contact(s, merge.from_contact_id)
        assert live.id == merge.into_contact_id and live.crm_contact_id == "900"
    # a number merely typed somewhere never gets that far: the CRM is not
    # searched by it, so the visitor is no client of that contact
    write(runtime, world["webchat"], "visitor", "web 1", phone=PHONE)
    assert [e["contact"] for e in crm.entries][-1] != "900"
