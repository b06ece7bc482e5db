"""The CRM side of the identity graph (``bridge.identity``), kept in step by
the next sync of a client's conversation.

* Two clients merged while both had a CRM contact: the CRM merges them where
  its API can (``CrmAdapter.merge_contacts``); otherwise both contacts get a
  note naming the other and the bridge writes to the survivor from then on.
* "Possibly the same client" (a link): a note on both CRM contacts, saying
  which handle matched and how a rep makes them one.
* A merge undone: a note on the survivor (and on the split-off contact when
  it has its own CRM contact again).

Notes are written with a key, so a retried sync does not write them twice
where the CRM can be searched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.identity import CRM_PENDING, live_contact
from bridge.model import CrmRef
from bridge.tables import Contact, ContactLink, ContactMerge
from crm_adapters.base import CrmAdapter

log = logging.getLogger(__name__)

__all__ = ["settle"]

_WORDS = {
    "en": {
        "merged": "The bridge merged this contact with {other}: {why}.",
        "linked": (
            "Same client as {other} ({why}). The CRM cannot merge them through its API: new"
            " messages go to {keep}."
        ),
        "possibly": (
            "Possibly the same client as {other}: {why}. To make them one, merge the two"
            " contacts in the CRM, or run `bridge contacts confirm {link}`."
        ),
        "split": "The bridge split this contact from {other} again (merge {merge} undone by {by}).",
        "verified": "proven by the channel",
        "unverified": "not verified",
    },
    "ru": {
        "merged": "Мост объединил этот контакт с {other}: {why}.",
        "linked": (
            "Тот же клиент, что и {other} ({why}). CRM не даёт объединить их через API: новые"
            " сообщения пишутся в {keep}."
        ),
        "possibly": (
            "Возможно, тот же клиент, что и {other}: {why}. Чтобы объединить, слейте два"
            " контакта в CRM или выполните `bridge contacts confirm {link}`."
        ),
        "split": "Мост снова разделил этот контакт и {other} (объединение {merge} отменил {by}).",
        "verified": "подтверждён каналом",
        "unverified": "не подтверждён",
    },
}

Call = Callable[..., Any]
Transaction = Callable[[], Any]


def _words(language: str) -> dict[str, str]:
    return _WORDS.get(language, _WORDS["en"])


def _label(contact: Contact | None, crm_id: str | None) -> str:
    name = (contact.display_name if contact else None) or "?"
    return f"{name} (#{crm_id})" if crm_id else name


def _why(evidence: dict[str, Any] | None, words: dict[str, str]) -> str:
    evidence = evidence or {}
    if "crm_merge" in evidence:
        return "CRM"
    if "confirmed_by" in evidence:
        return f"{evidence.get('kind', '')} {evidence.get('value', '')}".strip() + (
            f" — {evidence['confirmed_by']}"
        )
    how = words["verified"] if evidence.get("verified") else words["unverified"]
    return (
        f"{evidence.get('kind', '')} {evidence.get('value', '')} ({how}, {evidence.get('source')})"
    )


def settle(
    transaction: Transaction,
    call: Call,
    adapter: CrmAdapter,
    tenant_id: int,
    contact_id: int,
    language: str,
) -> None:
    """Do in the CRM what the identity graph decided for the live contact
    ``contact_id`` and has not told the CRM yet."""
    words = _words(language)
    with transaction() as session:
        merges = _pending_merges(session, tenant_id, contact_id)
        links = _unnoted_links(session, tenant_id, contact_id)
    for merge_id in merges:
        _settle_merge(transaction, call, adapter, merge_id, words)
    for link_id in links:
        _note_link(transaction, call, adapter, link_id, words)


def _pending_merges(session: Session, tenant_id: int, contact_id: int) -> list[int]:
    rows = session.scalars(
        select(ContactMerge).where(
            ContactMerge.tenant_id == tenant_id,
            ContactMerge.crm_action.in_((CRM_PENDING, "undo-merged", "undo-linked")),
        )
    ).all()
    return [
        m.id
        for m in rows
        if contact_id
        in (
            live_contact(session, m.into_contact_id).id,
            live_contact(session, m.from_contact_id).id,
        )
    ]


def _unnoted_links(session: Session, tenant_id: int, contact_id: int) -> list[int]:
    rows = session.scalars(
        select(ContactLink).where(
            ContactLink.tenant_id == tenant_id,
            ContactLink.state == "open",
            ContactLink.crm_noted.is_(False),
        )
    ).all()
    out = []
    for link in rows:
        one = live_contact(session, link.contact_id)
        other = live_contact(session, link.other_contact_id)
        if contact_id in (one.id, other.id) and one.crm_contact_id and other.crm_contact_id:
            out.append(link.id)
    return out


def _settle_merge(
    transaction: Transaction, call: Call, adapter: CrmAdapter, merge_id: int, words: dict[str, str]
) -> None:
    with transaction() as session:
        merge = session.get(ContactMerge, merge_id)
        assert merge is not None
        action, keep_id, gone_id = merge.crm_action, merge.crm_keep_id, merge.crm_gone_id
        keep = session.get(Contact, merge.into_contact_id)
        gone = session.get(Contact, merge.from_contact_id)
        keep_label, gone_label = _label(keep, keep_id), _label(gone, gone_id)
        why, by = _why(merge.evidence, words), merge.undone_by or ""
    if not keep_id or not gone_id:
        done = "none"
    elif action == CRM_PENDING:
        done = _merge_in_crm(
            call, adapter, merge_id, keep_id, gone_id, keep_label, gone_label, why, words
        )
    else:  # a merge undone: say so on both contacts, where each still exists
        sides = [(keep_id, gone_label)]
        if action == "undo-linked":  # the CRM kept both records
            sides.append((gone_id, keep_label))
        for crm_id, other in sides:
            text = words["split"].format(other=other, merge=merge_id, by=by)
            _note(call, adapter, crm_id, text, f"bridge-split-{merge_id}-{crm_id}")
        done = "undone"
    with transaction() as session:
        merge = session.get(ContactMerge, merge_id)
        assert merge is not None
        merge.crm_action = done


def _merge_in_crm(
    call: Call,
    adapter: CrmAdapter,
    merge_id: int,
    keep_id: str,
    gone_id: str,
    keep_label: str,
    gone_label: str,
    why: str,
    words: dict[str, str],
) -> str:
    keep, gone = CrmRef("contact", keep_id), CrmRef("contact", gone_id)
    if call(adapter.merge_contacts, keep, gone):
        _note(
            call,
            adapter,
            keep_id,
            words["merged"].format(other=gone_label, why=why),
            f"bridge-merge-{merge_id}",
        )
        return "merged"
    for mine, other in ((keep_id, gone_label), (gone_id, keep_label)):
        text = words["linked"].format(other=other, why=why, keep=keep_label)
        _note(call, adapter, mine, text, f"bridge-merge-{merge_id}-{mine}")
    return "linked"


def _note_link(
    transaction: Transaction, call: Call, adapter: CrmAdapter, link_id: int, words: dict[str, str]
) -> None:
    with transaction() as session:
        link = session.get(ContactLink, link_id)
        assert link is not None
        one = live_contact(session, link.contact_id)
        other = live_contact(session, link.other_contact_id)
        why = _why(link.evidence, words)
        sides = [
            (one.crm_contact_id, _label(other, other.crm_contact_id)),
            (other.crm_contact_id, _label(one, one.crm_contact_id)),
        ]
    for crm_id, label in sides:
        if crm_id:
            text = words["possibly"].format(other=label, why=why, link=link_id)
            _note(call, adapter, crm_id, text, f"bridge-link-{link_id}-{crm_id}")
    with transaction() as session:
        link = session.get(ContactLink, link_id)
        assert link is not None
        link.crm_noted = True


def _note(call: Call, adapter: CrmAdapter, crm_id: str, text: str, key: str) -> None:
    try:
        call(adapter.note_contact, CrmRef("contact", crm_id), text, key)
    except NotImplementedError:
        # a CRM without contact notes: the link stays in `bridge contacts show`
        log.info("%s cannot note a contact; the link is kept in the bridge only", adapter.kind)
