"""What the bridge knows of one client, for a person to read: the contact,
the handles with how each was learnt, the conversations per channel, the
merges and links with their evidence, and which channels reach the client
now (``bridge contacts show``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from bridge.identity import IdentityError, live_contact, members_of
from bridge.tables import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    ContactLink,
    ContactMerge,
    Conversation,
    Message,
)

__all__ = ["describe", "find_client"]


def find_client(session: Session, ref: str, tenant_id: int | None = None) -> Contact:
    """The live client named by ``ref``: a bridge contact id (``42``) or a
    CRM contact id (``crm:1234``)."""
    if ref.startswith("crm:"):
        query = select(Contact).where(Contact.crm_contact_id == ref[4:])
        if tenant_id is not None:
            query = query.where(Contact.tenant_id == tenant_id)
        found = session.scalars(query.order_by(Contact.id)).first()
        if found is None:
            raise IdentityError(f"no client with CRM contact {ref[4:]}")
        return live_contact(session, found.id)
    if not ref.isdigit():
        raise IdentityError(f"{ref!r} is neither a contact id nor crm:<CRM contact id>")
    contact = live_contact(session, int(ref))
    if tenant_id is not None and contact.tenant_id != tenant_id:
        raise IdentityError(f"no contact {ref}")
    return contact


def describe(session: Session, contact: Contact) -> dict[str, Any]:
    """The client as a plain dict (the CLI prints it; ``--json`` dumps it)."""
    members = members_of(session, contact)
    return {
        "id": contact.id,
        "tenant_id": contact.tenant_id,
        "name": contact.display_name,
        "crm_contact_id": contact.crm_contact_id,
        "owner_id": contact.crm_owner_id,
        "contacts": members,
        "identities": _identities(session, contact),
        "conversations": _conversations(session, contact),
        "merges": _merges(session, members),
        "links": _links(session, members),
        "reachability": _reachability(session, contact),
    }


def _reachability(session: Session, contact: Contact) -> list[dict[str, Any]]:
    from bridge import reach

    return [
        {
            "channel": r.kind,
            "title": r.title,
            "conversation": r.conversation_id,
            "reachable": r.reachable,
            "reason": r.reason,
            "detail": r.detail,
        }
        for r in reach.for_contact(session, contact.id)
    ]


def _identities(session: Session, contact: Contact) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ContactIdentity)
        .where(ContactIdentity.contact_id == contact.id)
        .order_by(ContactIdentity.id)
    )
    return [
        {
            "kind": i.kind,
            "value": i.value,
            "verified": i.verified,
            "source": i.source,
            "learnt_for": i.origin_contact_id,
            "at": i.created_at.isoformat(),
        }
        for i in rows
    ]


def _conversations(session: Session, contact: Contact) -> list[dict[str, Any]]:
    last_in = (
        select(func.max(Message.sent_at))
        .where(Message.conversation_id == Conversation.id, Message.direction == "in")
        .scalar_subquery()
    )
    rows = session.execute(
        select(Conversation, ChannelAccount.kind, last_in)
        .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
        .where(Conversation.contact_id == contact.id)
        .order_by(Conversation.id)
    ).all()
    return [
        {
            "id": conv.id,
            "channel": kind,
            "status": conv.status,
            "started_as": conv.origin_contact_id,
            "crm_entity": f"{conv.crm_entity_type}:{conv.crm_entity_id}"
            if conv.crm_entity_id
            else None,
            "last_inbound": last.isoformat() if last else None,
        }
        for conv, kind, last in rows
    ]


def _merges(session: Session, members: list[int]) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ContactMerge)
        .where(
            or_(
                ContactMerge.into_contact_id.in_(members),
                ContactMerge.from_contact_id.in_(members),
            )
        )
        .order_by(ContactMerge.id)
    )
    return [
        {
            "id": m.id,
            "merged": m.from_contact_id,
            "into": m.into_contact_id,
            "reason": m.reason,
            "evidence": m.evidence,
            "crm": m.crm_action,
            "at": m.created_at.isoformat(),
            "undone": m.undone_at.isoformat() if m.undone_at else None,
            "undone_by": m.undone_by,
        }
        for m in rows
    ]


def _links(session: Session, members: list[int]) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ContactLink)
        .where(or_(ContactLink.contact_id.in_(members), ContactLink.other_contact_id.in_(members)))
        .order_by(ContactLink.id)
    )
    return [
        {
            "id": link.id,
            "contacts": [link.contact_id, link.other_contact_id],
            "kind": link.kind,
            "value": link.value,
            "state": link.state,
            "evidence": link.evidence,
            "crm_noted": link.crm_noted,
            "decided_by": link.decided_by,
        }
        for link in rows
    ]
