"""The identity graph, model-checked (Hypothesis stateful testing) on the real
``bridge.identity`` and a real database.

Rules: people write on three channels as a few channel users, each message
maybe carrying a phone and an e-mail from a small pool, verified or typed;
a rep confirms or dismisses an open link; a person undoes a merge; a person
merges two CRM contacts in the CRM.

Invariants, after every step: every conversation and every handle belongs to
exactly one live contact — the live contact of the contact it was first
learnt for; a merge in force joins two contacts that are one client; a name
alone never joined anyone. At the end every merge still in force is undone,
newest first, and each conversation and handle is back on its own origin.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bridge import admin, identity
from bridge.model import SenderProfile
from bridge.tables import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    ContactLink,
    ContactMerge,
    Conversation,
    Tenant,
)
from mappings.schema import IdentityRules

KINDS = ("chat_a", "chat_b", "chat_c")
PHONES = ("+79990000001", "+79990000002")
EMAILS = ("a@example.com", "b@example.com")

pytestmark = pytest.mark.usefixtures("runtime")


def _live(s: Session, contact_id: int) -> int:
    return identity.live_contact(s, contact_id).id


@pytest.mark.timeout(300)
def test_identity_graph(runtime: Any) -> None:
    (runtime.settings.mappings_dir / "fake.yaml").write_text(
        "crm: hubspot\nchannels:\n  telegram: {object: none}\n"
    )

    class Graph(RuleBasedStateMachine):
        @initialize(rules=st.sampled_from(["default", "link-only"]))
        def fresh(self, rules: str) -> None:
            with runtime.transaction() as s:
                for table in (Conversation, ContactLink, ContactMerge, ContactIdentity):
                    s.execute(delete(table))
                s.execute(Contact.__table__.update().values(merged_into_id=None))
                for table in (Contact, ChannelAccount, Tenant):
                    s.execute(delete(table))
            self.tenant = admin.create_tenant(
                runtime, slug=f"t{uuid.uuid4().hex[:6]}", crm_kind="hubspot", mapping="fake.yaml"
            )
            self.accounts: dict[str, int] = {}
            with runtime.transaction() as s:
                for kind in KINDS:
                    row = ChannelAccount(
                        tenant_id=self.tenant, kind=kind, key=uuid.uuid4().hex, name=kind
                    )
                    s.add(row)
                    s.flush()
                    self.accounts[kind] = row.id
            self.rules = (
                IdentityRules()
                if rules == "default"
                else IdentityRules(merge=frozenset(), link=frozenset({"phone", "email"}))
            )

        @rule(
            kind=st.sampled_from(KINDS),
            user=st.integers(0, 3),
            phone=st.sampled_from((None, *PHONES)),
            phone_verified=st.booleans(),
            email=st.sampled_from((None, *EMAILS)),
            email_verified=st.booleans(),
            name=st.sampled_from((None, "Anna", "Anna")),
        )
        def write(
            self,
            kind: str,
            user: int,
            phone: str | None,
            phone_verified: bool,
            email: str | None,
            email_verified: bool,
            name: str | None,
        ) -> None:
            profile = SenderProfile(
                display_name=name,
                phone=phone,
                phone_verified=phone_verified,
                email=email,
                email_verified=email_verified,
            )
            with runtime.transaction() as s:
                contact, origin = identity.resolve_contact(
                    s, self.tenant, kind, f"u{user}", profile, self.rules
                )
                exists = s.scalars(
                    select(Conversation).where(
                        Conversation.channel_account_id == self.accounts[kind],
                        Conversation.external_thread_id == f"u{user}",
                    )
                ).first()
                if exists is None:
                    s.add(
                        Conversation(
                            uid=str(uuid.uuid4()),
                            tenant_id=self.tenant,
                            channel_account_id=self.accounts[kind],
                            contact_id=contact.id,
                            origin_contact_id=origin,
                            external_thread_id=f"u{user}",
                            next_seq=1,
                        )
                    )

        @rule(pick=st.integers(0, 20), confirm=st.booleans())
        def decide_a_link(self, pick: int, confirm: bool) -> None:
            with runtime.transaction() as s:
                links = s.scalars(
                    select(ContactLink).where(ContactLink.state == "open").order_by(ContactLink.id)
                ).all()
                if not links:
                    return
                link = links[pick % len(links)]
                try:
                    if confirm:
                        identity.confirm_link(s, link.id, "rep")
                    else:
                        identity.dismiss_link(s, link.id, "rep")
                except identity.IdentityError:
                    # the two became one client meanwhile: nothing to confirm
                    assert _live(s, link.contact_id) == _live(s, link.other_contact_id)

        @rule(pick=st.integers(0, 20))
        def undo_a_merge(self, pick: int) -> None:
            with runtime.transaction() as s:
                merges = s.scalars(
                    select(ContactMerge)
                    .where(ContactMerge.undone_at.is_(None))
                    .order_by(ContactMerge.id)
                ).all()
                if merges:
                    identity.unmerge(s, merges[pick % len(merges)].id, "person")

        @rule(one=st.integers(0, 3), other=st.integers(0, 3))
        def merge_in_the_crm(self, one: int, other: int) -> None:
            with runtime.transaction() as s:
                live = s.scalars(
                    select(Contact)
                    .where(Contact.tenant_id == self.tenant, Contact.merged_into_id.is_(None))
                    .order_by(Contact.id)
                ).all()
                if len(live) < 2:
                    return
                a, b = live[one % len(live)], live[other % len(live)]
                for contact in (a, b):
                    contact.crm_contact_id = contact.crm_contact_id or f"crm-{contact.id}"
                s.flush()
                if a.id != b.id and a.crm_contact_id != b.crm_contact_id:
                    identity.follow_crm_merge(s, self.tenant, b.crm_contact_id, a.crm_contact_id)

        @invariant()
        def everything_on_its_origins_live_contact(self) -> None:
            if not hasattr(self, "tenant"):
                return
            with runtime.transaction() as s:
                for conv in s.scalars(select(Conversation)):
                    assert conv.origin_contact_id is not None
                    assert conv.contact_id == _live(s, conv.origin_contact_id)
                    assert s.get(Contact, conv.contact_id).merged_into_id is None
                for handle in s.scalars(select(ContactIdentity)):
                    assert handle.contact_id == _live(s, handle.origin_contact_id)

        @invariant()
        def merges_in_force_join_one_client(self) -> None:
            if not hasattr(self, "tenant"):
                return
            with runtime.transaction() as s:
                for merge in s.scalars(
                    select(ContactMerge).where(ContactMerge.undone_at.is_(None))
                ):
                    assert _live(s, merge.from_contact_id) == _live(s, merge.into_contact_id)
                    # a merge names what made it: a handle, a rep's word or the CRM
                    assert merge.evidence and (
                        merge.evidence.get("kind") in ("phone", "email")
                        or "crm_merge" in merge.evidence
                    )
                    if merge.reason.startswith("same verified"):
                        # automatic: only a handle its channel proved merges
                        assert merge.evidence["verified"] is True
                        assert merge.evidence["kind"] in self.rules.merge
                    if merge.reason.startswith("same verified"):
                        # automatic: only a handle its channel proved merges
                        assert merge.evidence["verified"] is True
                        assert merge.evidence["kind"] in self.rules.merge
                    if self.rules.merge == frozenset() and "crm_merge" not in merge.evidence:
                        assert "confirmed_by" in merge.evidence  # link-only: never automatic

        def teardown(self) -> None:
            if not hasattr(self, "tenant"):
                return
            # every merge still in force can be undone, newest first
            with runtime.transaction() as s:
                for merge in s.scalars(
                    select(ContactMerge)
                    .where(ContactMerge.undone_at.is_(None))
                    .order_by(ContactMerge.id.desc())
                ).all():
                    identity.unmerge(s, merge.id, "teardown")
            with runtime.transaction() as s:
                for conv in s.scalars(select(Conversation)):
                    assert conv.contact_id == conv.origin_contact_id
                for handle in s.scalars(select(ContactIdentity)):
                    assert handle.contact_id == handle.origin_contact_id

    Graph.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Graph.TestCase().runTest()
