"""One person is one client across channels.

Every handle that names a person — a Telegram user id, a phone number in
E.164, an e-mail address — is a ``ContactIdentity`` of exactly one
``Contact`` (unique per tenant). When a new handle turns out to belong to
another contact (the Telegram user shares the phone number the WhatsApp
customer wrote from), the two contacts are merged: the older one survives,
the merge is recorded with its reason (explainable, and reversible from the
record), and the survivor is flagged so the CRM learns the new handle.
"""

from __future__ import annotations

import phonenumbers
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.model import SenderProfile
from bridge.tables import Contact, ContactIdentity, ContactMerge, Conversation

__all__ = ["attach_identity", "is_address", "normalize_email", "normalize_phone", "resolve_contact"]


def normalize_phone(raw: str | None, region: str | None = None) -> str | None:
    """E.164 (``+79991234567``) or None when it is not a possible number.

    Channels send numbers in every shape: Telegram's ``contact.phone_number``
    often lacks the ``+`` (corpora telegram contact samples).
    """
    if not raw:
        return None
    text = raw.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        return None
    if not text.startswith("+") and region is None:
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str | None) -> str | None:
    if not raw or "@" not in raw:
        return None
    local, _, domain = raw.strip().rpartition("@")
    if not local or not domain:
        return None
    return f"{local}@{domain.lower()}"


def is_address(value: str) -> bool:
    """``value`` is an e-mail address as stored (normalised, no scheme-like
    prefix or spaces): what may be given to a CRM as one."""
    return (
        normalize_email(value) == value
        and ":" not in value
        and not any(c.isspace() for c in value)
    )


def _survivor(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    assert contact is not None
    seen = {contact.id}
    while contact.merged_into_id is not None:
        nxt = session.get(Contact, contact.merged_into_id)
        if nxt is None or nxt.id in seen:
            break
        seen.add(nxt.id)
        contact = nxt
    return contact


def _find(session: Session, tenant_id: int, kind: str, value: str) -> ContactIdentity | None:
    return session.scalars(
        select(ContactIdentity).where(
            ContactIdentity.tenant_id == tenant_id,
            ContactIdentity.kind == kind,
            ContactIdentity.value == value,
        )
    ).first()


def _merge(session: Session, keep: Contact, gone: Contact, reason: str) -> Contact:
    """Fold ``gone`` into ``keep`` (the older contact) and record why."""
    if keep.id > gone.id:
        keep, gone = gone, keep
    session.flush()  # bulk updates below must see identities added in this unit of work
    session.execute(
        update(ContactIdentity)
        .where(ContactIdentity.contact_id == gone.id)
        .values(contact_id=keep.id)
    )
    session.execute(
        update(Conversation).where(Conversation.contact_id == gone.id).values(contact_id=keep.id)
    )
    gone.merged_into_id = keep.id
    keep.phone = keep.phone or gone.phone
    keep.email = keep.email or gone.email
    keep.display_name = keep.display_name or gone.display_name
    if keep.crm_contact_id is None and gone.crm_contact_id is not None:
        keep.crm_contact_id, keep.crm_state = gone.crm_contact_id, gone.crm_state
        keep.crm_owner_id = keep.crm_owner_id or gone.crm_owner_id
    keep.crm_dirty = True
    session.add(
        ContactMerge(
            tenant_id=keep.tenant_id,
            from_contact_id=gone.id,
            into_contact_id=keep.id,
            reason=reason,
        )
    )
    return keep


def attach_identity(session: Session, contact: Contact, kind: str, value: str) -> Contact:
    """Give ``contact`` the handle (kind, value); merge if someone else has it.

    Returns the surviving contact.
    """
    existing = _find(session, contact.tenant_id, kind, value)
    if existing is None:
        session.add(
            ContactIdentity(
                tenant_id=contact.tenant_id, contact_id=contact.id, kind=kind, value=value
            )
        )
        if kind == "phone" and not contact.phone:
            contact.phone = value
        elif kind == "email" and not contact.email:
            contact.email = value
        if contact.crm_contact_id is not None:
            contact.crm_dirty = True
        return contact
    owner = _survivor(session, existing.contact_id)
    if owner.id == contact.id:
        if kind == "phone" and not contact.phone:
            contact.phone = value
        elif kind == "email" and not contact.email:
            contact.email = value
        return contact
    return _merge(session, owner, contact, reason=f"same {kind}")


def resolve_contact(
    session: Session,
    tenant_id: int,
    channel_kind: str,
    external_user_id: str,
    profile: SenderProfile,
) -> Contact:
    """The contact behind a channel user, created on first contact, enriched
    with whatever the channel told us (phone, e-mail)."""
    identity = _find(session, tenant_id, channel_kind, external_user_id)
    if identity is not None:
        contact = _survivor(session, identity.contact_id)
    else:
        contact = Contact(tenant_id=tenant_id, display_name=profile.name())
        session.add(contact)
        session.flush()
        session.add(
            ContactIdentity(
                tenant_id=tenant_id,
                contact_id=contact.id,
                kind=channel_kind,
                value=external_user_id,
            )
        )
        # flushed: the channel's own handle may also be one of the person's
        # (an e-mail channel's user is an address), found again just below
        session.flush()
    if not contact.display_name and profile.name():
        contact.display_name = profile.name()
    phone = normalize_phone(profile.phone)
    if phone:
        contact = attach_identity(session, contact, "phone", phone)
    email = normalize_email(profile.email)
    if email:
        contact = attach_identity(session, contact, "email", email)
    return contact
