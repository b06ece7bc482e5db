"""A merge a person makes in the CRM, as the adapters report it
(``CrmEventKind.CONTACT_MERGED``: ``contact`` gone into ``merged_into``),
is followed by the core: ``accept_crm_events`` -> ``bridge.identity.
follow_crm_merge``. The CRM is the fake one (``tests.support.fakes``); SQLite
and PostgreSQL (the ``runtime`` fixture)."""

from __future__ import annotations

from sqlalchemy import select

from bridge.model import CrmEvent, CrmEventKind, CrmRef
from bridge.pipeline.inbound import accept, run_inbound
from bridge.pipeline.outbound import accept_crm_events
from bridge.tables import Contact
from tests.support import fakes
from tests.unit.test_pipeline import MAPPING, T0, conversation_id, fake_crm, msg

__all__ = ["fake_crm"]  # the fixture, re-exported for this module's tests


def crm_ids(runtime) -> dict[int, tuple[str | None, int | None]]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        return {
            c.id: (c.crm_contact_id, c.merged_into_id)
            for c in s.scalars(select(Contact).order_by(Contact.id))
        }


def test_a_merge_in_the_crm_makes_one_client_writing_to_the_survivor(  # type: ignore[no-untyped-def]
    runtime, fake_crm
):
    tenant_id, account = fakes.telegram_tenant(runtime, MAPPING)
    accept(runtime, account, [msg(1, user=7), msg(2, user=8)])
    for thread in ("7", "8"):
        run_inbound(runtime, conversation_id(runtime, account, thread))
    before = crm_ids(runtime)
    (ann, ann_crm), (bob, bob_crm) = [(k, v[0]) for k, v in before.items()]
    assert ann_crm and bob_crm and ann_crm != bob_crm
    assert fake_crm.entries[-1]["contact"] in (ann_crm, bob_crm)
    assert {e["contact"] for e in fake_crm.entries} == {ann_crm, bob_crm}
    merged = CrmEvent(
        CrmEventKind.CONTACT_MERGED,
        f"contact.merge:{bob_crm}:{ann_crm}",
        T0,
        contact=CrmRef("contact", bob_crm),
        merged_into=CrmRef("contact", ann_crm),
    )
    accept_crm_events(runtime, tenant_id, [merged])
    accept_crm_events(runtime, tenant_id, [merged])  # a redelivery changes nothing more
    after = crm_ids(runtime)
    assert after[ann] == (ann_crm, None)
    assert after[bob][1] == ann  # one client: the CRM's survivor's
    accept(runtime, account, [msg(3, user=8)])
    run_inbound(runtime, conversation_id(runtime, account, "8"))
    assert fake_crm.entries[-1]["contact"] == ann_crm
