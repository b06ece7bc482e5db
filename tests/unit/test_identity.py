"""One client across channels, safely (``bridge.identity``), through ``accept``
on real SQLite and PostgreSQL: which handles merge two clients, which only
link them for a rep, what a merge moves and what its undo puts back, and the
``bridge contacts`` commands that explain and undo."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bridge import identity
from bridge.cli import main
from bridge.pipeline.inbound import AccountRef
from bridge.tables import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    ContactLink,
    ContactMerge,
    Conversation,
    Message,
)
from mappings.schema import IdentityRules
from tests.support import fakes

MAPPING = """
crm: fake
identity:
  merge: [phone]
  link: [phone, email]
channels:
  telegram:
    object: none
    timeline: note
"""
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
PHONE = "+79991234567"
_n = iter(range(1, 10_000))


@pytest.fixture
def accounts(runtime, monkeypatch) -> dict[str, AccountRef]:  # type: ignore[no-untyped-def]
    tenant_id, telegram = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    refs = {"telegram": AccountRef(telegram, tenant_id, "telegram")}
    return {**refs, **fakes.channel_refs(runtime, tenant_id, ("whatsapp", "webchat", "email"))}


def write(runtime: Any, account: AccountRef, user: str, text: str = "hi", **profile: Any) -> None:
    fakes.customer_writes(runtime, account, user, text, **profile)


def client_of(runtime: Any, kind: str, user: str) -> int:
    """The live contact of a channel user."""
    with runtime.transaction() as s:
        row = s.scalars(
            select(ContactIdentity).where(
                ContactIdentity.kind == kind, ContactIdentity.value == user
            )
        ).one()
        return identity.live_contact(s, row.contact_id).id


def live_contacts(runtime: Any) -> int:
    with runtime.transaction() as s:
        return len(s.scalars(select(Contact).where(Contact.merged_into_id.is_(None))).all())


def texts_of(runtime: Any, kind: str, user: str) -> list[str]:
    """What a channel's own thread holds (the web chat shows only this)."""
    with runtime.transaction() as s:
        conv = s.scalars(
            select(Conversation)
            .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
            .where(ChannelAccount.kind == kind, Conversation.external_thread_id == user)
        ).one()
        return list(
            s.scalars(
                select(Message.text).where(Message.conversation_id == conv.id).order_by(Message.seq)
            )
        )


def test_a_number_typed_into_the_web_chat_only_links_to_the_client_who_owns_it(
    runtime: Any, accounts: dict[str, AccountRef]
) -> None:
    write(
        runtime, accounts["whatsapp"], "79991234567", "my order?", phone=PHONE, phone_verified=True
    )
    write(
        runtime,
        accounts["webchat"],
        "visitor-1",
        "hello",
        phone="+7 999 123-45-67",
        display_name="Mallory",
    )
    assert live_contacts(runtime) == 2
    assert client_of(runtime, "whatsapp", "79991234567") != client_of(
        runtime, "webchat", "visitor-1"
    )
    with runtime.transaction() as s:
        assert s.scalars(select(ContactMerge)).all() == []
        [link] = s.scalars(select(ContactLink)).all()
        assert (link.kind, link.value, link.state) == ("phone", PHONE, "open")
        assert link.evidence["verified"] is False
        assert link.evidence["source"] == "webchat: not verified"
    # the claimant's thread holds only what was said in it
    assert texts_of(runtime, "webchat", "visitor-1") == ["hello"]
    # the owner writing again does not turn the claim into a merge, nor the
    # owner proving the number on another channel later
    write(runtime, accounts["whatsapp"], "79991234567", "again", phone=PHONE, phone_verified=True)
    write(runtime, accounts["telegram"], "31", "tg", phone=PHONE, phone_verified=True)
    assert live_contacts(runtime) == 2
    assert client_of(runtime, "telegram", "31") == client_of(runtime, "whatsapp", "79991234567")
    with runtime.transaction() as s:
        assert len(s.scalars(select(ContactLink)).all()) == 1  # one claimant, one link


def test_the_owner_proving_a_number_typed_earlier_makes_one_client(
    runtime: Any, accounts: dict[str, AccountRef]
) -> None:
    write(runtime, accounts["webchat"], "visitor-2", "hello", phone="+7 999 123 45 67")
    write(
        runtime, accounts["whatsapp"], "79991234567", "me again", phone=PHONE, phone_verified=True
    )
    web = client_of(runtime, "webchat", "visitor-2")
    assert client_of(runtime, "whatsapp", "79991234567") == web
    write(runtime, accounts["telegram"], "555", "shared", phone="79991234567", phone_verified=True)
    assert client_of(runtime, "telegram", "555") == web and live_contacts(runtime) == 1
    # each channel's thread still holds only its own messages
    assert texts_of(runtime, "webchat", "visitor-2") == ["hello"]
    with runtime.transaction() as s:
        reasons = [m.reason for m in s.scalars(select(ContactMerge).order_by(ContactMerge.id))]
    assert reasons == ["same verified phone", "same verified phone"]


def test_a_name_never_links_and_an_unchecked_sender_never_merges(
    runtime: Any, accounts: dict[str, AccountRef]
) -> None:
    write(runtime, accounts["telegram"], "1", display_name="Anna Petrova")
    write(runtime, accounts["whatsapp"], "2", display_name="Anna Petrova")
    write(
        runtime,
        accounts["email"],
        "anna@example.com",
        email="anna@example.com",
        email_verified=True,
    )
    # a mail failing DMARC: the channel gives no address, only an unverified sender id
    write(runtime, accounts["email"], "unverified:anna@example.com", display_name="Anna Petrova")
    assert live_contacts(runtime) == 4
    with runtime.transaction() as s:
        assert s.scalars(select(ContactLink)).all() == []
        assert s.scalars(select(ContactMerge)).all() == []


def test_the_mapping_rules_decide_which_kinds_merge(
    runtime: Any, accounts: dict[str, AccountRef]
) -> None:
    rules = runtime.identity_rules(accounts["telegram"].tenant_id)
    assert rules == IdentityRules(merge=frozenset({"phone"}), link=frozenset({"phone", "email"}))
    email = AccountRef(accounts["email"].id, accounts["email"].tenant_id, "email", rules)
    whatsapp = AccountRef(
        accounts["whatsapp"].id, accounts["whatsapp"].tenant_id, "whatsapp", rules
    )
    # e-mail is not in merge: two verified holders of an address only link
    write(runtime, email, "bob@example.com", email="bob@example.com", email_verified=True)
    write(
        runtime,
        whatsapp,
        "79990000001",
        phone="+79990000001",
        phone_verified=True,
        email="bob@example.com",
        email_verified=True,
    )
    assert live_contacts(runtime) == 2
    with runtime.transaction() as s:
        [link] = s.scalars(select(ContactLink)).all()
        assert link.kind == "email"


def test_unmerge_sends_everything_home_and_vetoes_the_same_merge(
    runtime: Any, accounts: dict[str, AccountRef]
) -> None:
    write(runtime, accounts["whatsapp"], "79991234567", "wa", phone=PHONE, phone_verified=True)
    write(runtime, accounts["telegram"], "77", "tg", phone=PHONE, phone_verified=True)
    wa, tg = client_of(runtime, "whatsapp", "79991234567"), client_of(runtime, "telegram", "77")
    assert wa == tg
    with runtime.transaction() as s:
        # the Telegram conversation had joined the WhatsApp one's open deal
        for conv in s.scalars(select(Conversation)):
            conv.crm_entity_type, conv.crm_entity_id, conv.crm_entity_state = "deal", "D1", "synced"
    with runtime.transaction() as s:
        merge = s.scalars(select(ContactMerge)).one()
        identity.unmerge(s, merge.id, "test")
        # the one that joined (not the origin's) opens its own deal next time
        entities = {c.origin_contact_id: c.crm_entity_id for c in s.scalars(select(Conversation))}
        assert entities == {merge.into_contact_id: "D1", merge.from_contact_id: None}
    wa, tg = client_of(runtime, "whatsapp", "79991234567"), client_of(runtime, "telegram", "77")
    assert wa != tg and live_contacts(runtime) == 2
    with runtime.transaction() as s:
        for conv in s.scalars(select(Conversation)):
            assert conv.contact_id == conv.origin_contact_id
        for handle in s.scalars(select(ContactIdentity)):
            assert handle.contact_id == handle.origin_contact_id
        with pytest.raises(identity.IdentityError, match="undone already"):
            identity.unmerge(s, merge.id, "test")
    # the same proof again links instead of merging what a person split
    write(runtime, accounts["telegram"], "77", "tg again", phone=PHONE, phone_verified=True)
    assert live_contacts(runtime) == 2
    with runtime.transaction() as s:
        assert len(s.scalars(select(ContactLink)).all()) == 1


def test_a_link_is_confirmed_into_a_merge_or_dismissed(
    runtime: Any, accounts: dict[str, AccountRef]
) -> None:
    write(runtime, accounts["whatsapp"], "79991234567", phone=PHONE, phone_verified=True)
    write(runtime, accounts["webchat"], "v1", phone=PHONE)
    write(runtime, accounts["webchat"], "v2", phone=PHONE)
    wa = client_of(runtime, "whatsapp", "79991234567")
    with runtime.transaction() as s:
        # each visitor is linked to the owner (and v2 to v1: both typed it)
        links = s.scalars(select(ContactLink).order_by(ContactLink.id)).all()
        assert len(links) == 3
        first, second = (link for link in links if link.other_contact_id == wa)
        merge = identity.confirm_link(s, first.id, "rep:7")
        identity.dismiss_link(s, second.id, "rep:7")
        assert merge.reason == "confirmed by rep:7"
        with pytest.raises(identity.IdentityError, match="confirmed already"):
            identity.confirm_link(s, first.id, "rep:7")
    assert client_of(runtime, "webchat", "v1") == client_of(runtime, "whatsapp", "79991234567")
    assert client_of(runtime, "webchat", "v2") != client_of(runtime, "whatsapp", "79991234567")


def test_a_merge_made_in_the_crm_is_followed(runtime: Any, accounts: dict[str, AccountRef]) -> None:
    write(runtime, accounts["telegram"], "10")
    write(runtime, accounts["whatsapp"], "20")
    one, two = client_of(runtime, "telegram", "10"), client_of(runtime, "whatsapp", "20")
    with runtime.transaction() as s:
        s.get(Contact, one).crm_contact_id = "501"
        s.get(Contact, two).crm_contact_id = "502"
    with runtime.transaction() as s:
        # the person kept the newer CRM contact: the bridge keeps it too
        identity.follow_crm_merge(s, accounts["telegram"].tenant_id, "501", "502")
    assert client_of(runtime, "telegram", "10") == client_of(runtime, "whatsapp", "20") == two
    with runtime.transaction() as s:
        merge = s.scalars(select(ContactMerge)).one()
        assert (merge.reason, merge.crm_action) == ("merged in the CRM", "by-crm")
        assert s.get(Contact, two).crm_contact_id == "502"


def test_bridge_contacts_show_and_unmerge(
    runtime: Any, accounts: dict[str, AccountRef], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(runtime, accounts["webchat"], "v9", "from the site", phone=PHONE, display_name="Ann")
    write(runtime, accounts["whatsapp"], "79991234567", "from wa", phone=PHONE, phone_verified=True)
    client = client_of(runtime, "webchat", "v9")
    monkeypatch.setattr("bridge.cli.context.runtime", lambda **_: runtime)
    cli = CliRunner()
    shown = cli.invoke(main, ["contacts", "show", str(client)])
    assert shown.exit_code == 0, shown.output
    assert "client" in shown.output and "Ann" in shown.output
    assert "webchat" in shown.output and "whatsapp" in shown.output
    assert "NOT verified" in shown.output and "same verified phone" in shown.output
    data = json.loads(cli.invoke(main, ["contacts", "show", str(client), "--json"]).output)
    [merge] = data["merges"]
    assert merge["evidence"]["source"] == "whatsapp: proven by the channel"
    assert {c["channel"] for c in data["conversations"]} == {"webchat", "whatsapp"}
    assert "reachable:" in shown.output
    assert {r["channel"] for r in data["reachability"]} == {"webchat", "whatsapp"}
    undone = cli.invoke(main, ["contacts", "unmerge", str(merge["id"])])
    assert undone.exit_code == 0 and "undone" in undone.output
    assert client_of(runtime, "webchat", "v9") != client_of(runtime, "whatsapp", "79991234567")
    again = cli.invoke(main, ["contacts", "unmerge", str(merge["id"])])
    assert again.exit_code == 1 and "undone already" in again.output
    missing = cli.invoke(main, ["contacts", "show", "crm:nope"])
    assert missing.exit_code == 1 and "no client with CRM contact" in missing.output


def test_the_tenant_api_explains_a_client_and_takes_a_reps_one_action(
    runtime: Any, accounts: dict[str, AccountRef]
) -> None:
    from bridge import admin, apitokens, create_app

    write(runtime, accounts["whatsapp"], "79991234567", "wa", phone=PHONE, phone_verified=True)
    write(runtime, accounts["webchat"], "v1", "web", phone=PHONE)
    owner = client_of(runtime, "whatsapp", "79991234567")
    with runtime.transaction() as s:
        s.get(Contact, owner).crm_contact_id = "4242"
        link_id = s.scalars(select(ContactLink.id)).one()
    http = create_app(runtime=runtime).test_client()
    token = apitokens.issue(runtime, accounts["whatsapp"].tenant_id)
    auth = {"Authorization": f"Bearer {token}", "X-Bridge-Actor": "rep-7"}
    assert http.get("/api/v1/contacts/4242").status_code == 401
    shown = http.get("/api/v1/contacts/4242", headers=auth)
    assert shown.status_code == 200 and shown.json["id"] == owner
    assert [link["state"] for link in shown.json["links"]] == ["open"]
    assert http.get("/api/v1/contacts/nobody", headers=auth).status_code == 404
    # another tenant's token sees and decides nothing of this tenant's
    other = admin.create_tenant(runtime, slug="other", crm_kind="fake", mapping="fake.yaml")
    theirs = {"Authorization": f"Bearer {apitokens.issue(runtime, other)}"}
    assert http.get("/api/v1/contacts/4242", headers=theirs).status_code == 404
    assert http.post(f"/api/v1/links/{link_id}/confirm", headers=theirs).status_code == 404
    # the rep's one action
    done = http.post(f"/api/v1/links/{link_id}/confirm", headers=auth)
    assert done.status_code == 200 and done.json["state"] == "confirmed"
    assert client_of(runtime, "webchat", "v1") == owner
    again = http.post(f"/api/v1/links/{link_id}/dismiss", headers=auth)
    assert again.status_code == 409 and "confirmed already" in again.json["message"]
    undone = http.post(f"/api/v1/merges/{done.json['merge']}/undo", headers=auth)
    assert undone.status_code == 200 and client_of(runtime, "webchat", "v1") != owner
    with runtime.transaction() as s:
        merge = s.get(ContactMerge, done.json["merge"])
        assert merge.undone_by == "api:rep-7" and merge.reason == "confirmed by api:rep-7"
