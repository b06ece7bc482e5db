"""One person is one client across channels — safely, explainably, reversibly.

Every handle that names a person — a Telegram user id, a phone number in
E.164, an e-mail address — is a ``ContactIdentity`` with the contact it was
learnt for (its *origin*, which never changes), the live contact it belongs
to now, whether its channel proved it (*verified*: a WhatsApp sender's
number, a Telegram contact shared by its owner, a From address passing
DMARC) and how it was learnt.

When a handle turns up on two clients, the mapping's ``identity`` rules
decide (:class:`mappings.schema.IdentityRules`):

* both handles verified and the kind in ``merge`` → the two contacts are
  **merged**: the older one survives, the merge is recorded with its
  evidence, each conversation keeps its own thread and channel (a web chat
  visitor still reads only the web chat);
* otherwise, the kind in ``link`` → the two are **linked** for a rep
  ("possibly the same client"): nothing moves until a rep confirms;
* a name never does either.

A merge is undone by :func:`unmerge`: every handle and conversation goes back
to the live contact of its origin, and the undone merge vetoes the same two
being merged automatically again (they are linked instead).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bridge.model import SenderProfile, utcnow
from bridge.tables import Contact, ContactIdentity, ContactLink, ContactMerge, Conversation
from mappings.schema import IdentityRules

__all__ = [
    "DEFAULT_RULES",
    "IdentityError",
    "Observation",
    "attach_identity",
    "confirm_link",
    "dismiss_link",
    "follow_crm_merge",
    "is_address",
    "join_by_crm_contact",
    "live_contact",
    "members_of",
    "merge_contacts",
    "normalize_email",
    "normalize_phone",
    "observe",
    "resolve_contact",
    "unmerge",
]

DEFAULT_RULES = IdentityRules()

#: merges and links kept in step with the CRM by the next sync of the contact
CRM_PENDING = "pending"
#: how a channel's own user id is named as a handle's source ("whatsapp: sender")
SENDER = ": sender"


class IdentityError(Exception):
    """An identity operation that cannot be done (says why, for the CLI/API)."""


@dataclass(frozen=True)
class Observation:
    """A handle a channel told us about, and how far it can be trusted."""

    kind: str
    value: str
    verified: bool
    #: where it came from: "<channel kind>: <how>" ("whatsapp: sender")
    source: str


# -- normalising --------------------------------------------------------------------------


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
        normalize_email(value) == value and ":" not in value and not any(c.isspace() for c in value)
    )


# -- the graph ----------------------------------------------------------------------------


def live_contact(session: Session, contact_id: int) -> Contact:
    """The contact ``contact_id`` is now: itself, or the survivor of the
    merges it went into."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise IdentityError(f"no contact {contact_id}")
    seen = {contact.id}
    while contact.merged_into_id is not None:
        nxt = session.get(Contact, contact.merged_into_id)
        if nxt is None or nxt.id in seen:
            break
        seen.add(nxt.id)
        contact = nxt
    return contact


def _holders(session: Session, tenant_id: int, kind: str, value: str) -> list[ContactIdentity]:
    return list(
        session.scalars(
            select(ContactIdentity)
            .where(
                ContactIdentity.tenant_id == tenant_id,
                ContactIdentity.kind == kind,
                ContactIdentity.value == value,
            )
            .order_by(ContactIdentity.id)
        )
    )


def _vetoed(session: Session, one: Contact, other: Contact) -> bool:
    """A merge of these two (or of contacts now part of them) was undone."""
    undone = session.scalars(
        select(ContactMerge).where(
            ContactMerge.tenant_id == one.tenant_id, ContactMerge.undone_at.is_not(None)
        )
    ).all()
    pair = {one.id, other.id}
    return any(
        {live_contact(session, m.from_contact_id).id, live_contact(session, m.into_contact_id).id}
        == pair
        for m in undone
    )


def _learn(contact: Contact, kind: str, value: str) -> None:
    if kind == "phone" and not contact.phone:
        contact.phone = value
    elif kind == "email" and not contact.email:
        contact.email = value
    else:
        return
    if contact.crm_contact_id is not None:
        contact.crm_dirty = True


def observe(
    session: Session,
    contact: Contact,
    origin_id: int,
    seen: Observation,
    rules: IdentityRules = DEFAULT_RULES,
) -> Contact:
    """Record that the person behind ``contact`` (learnt through the handle
    whose origin is ``origin_id``) has the handle ``seen``; merge with or
    link to whoever else holds it, as the rules say. Returns the live
    contact (the survivor when a merge happened)."""
    holders = _holders(session, contact.tenant_id, seen.kind, seen.value)
    own = next((h for h in holders if h.origin_contact_id == origin_id), None)
    if own is None:
        own = ContactIdentity(
            tenant_id=contact.tenant_id,
            contact_id=contact.id,
            origin_contact_id=origin_id,
            kind=seen.kind,
            value=seen.value,
            verified=seen.verified,
            source=seen.source[:64],
        )
        session.add(own)
        session.flush()
    elif seen.verified and not own.verified:
        own.verified = True
        if not (own.source or "").endswith(SENDER):  # a channel's own user id keeps its name
            own.source = seen.source[:64]
        if contact.crm_contact_id is not None:
            contact.crm_dirty = True  # the CRM is given proven handles only
    _learn(contact, seen.kind, seen.value)
    first_proof = min((h.id for h in (*holders, own) if h.verified), default=own.id)
    others: dict[int, list[ContactIdentity]] = {}
    for holder in holders:
        if holder is own:
            continue
        live = live_contact(session, holder.contact_id)
        if live.id != contact.id:
            others.setdefault(live.id, []).append(holder)
    for other_id, theirs in sorted(others.items()):
        # either side may have been merged by an earlier round of this loop
        other, contact = live_contact(session, other_id), live_contact(session, contact.id)
        if other.id == contact.id:
            continue
        evidence = _evidence(seen, own, theirs)
        if (
            _proves(own, theirs, first_proof)
            and seen.kind in rules.merge
            and not _vetoed(session, contact, other)
        ):
            merge = _merge(session, contact, other, f"same verified {seen.kind}", evidence)
            contact = live_contact(session, merge.into_contact_id)
        elif seen.kind in rules.link or seen.kind in rules.merge:
            _link(session, origin_id, theirs[0].origin_contact_id, seen, evidence)
    return contact


def _proves(own: ContactIdentity, theirs: list[ContactIdentity], first_proof: int) -> bool:
    """Our verified handle makes their holder the same person when theirs is
    verified too, or was only claimed before any channel had proven the
    handle (``first_proof``: the oldest verified row of it) — a number typed
    into the web chat, then its owner writes from it on WhatsApp. A claim
    made after the owner was known (someone types a client's number) never
    merges, whoever proves the number later: it only links."""
    return own.verified and any(h.verified or h.id < first_proof for h in theirs)


def _evidence(
    seen: Observation, own: ContactIdentity, theirs: list[ContactIdentity]
) -> dict[str, Any]:
    return {
        "kind": seen.kind,
        "value": seen.value,
        "verified": own.verified,
        "source": own.source,
        "matched": [
            {"contact": h.origin_contact_id, "verified": h.verified, "source": h.source}
            for h in theirs
        ],
        "at": utcnow().isoformat(),
    }


def _link(
    session: Session, origin_id: int, other_origin: int, seen: Observation, evidence: dict[str, Any]
) -> None:
    """Link the two clients on this handle unless they are linked on it
    already (an open, confirmed or dismissed link between the same two
    clients, whichever of their channels it was learnt through)."""
    contact = session.get(Contact, origin_id)
    assert contact is not None
    pair = {live_contact(session, origin_id).id, live_contact(session, other_origin).id}
    for link in session.scalars(
        select(ContactLink).where(
            ContactLink.tenant_id == contact.tenant_id,
            ContactLink.kind == seen.kind,
            ContactLink.value == seen.value,
        )
    ):
        ends = {
            live_contact(session, link.contact_id).id,
            live_contact(session, link.other_contact_id).id,
        }
        if ends == pair:
            return
    session.add(
        ContactLink(
            tenant_id=contact.tenant_id,
            contact_id=origin_id,
            other_contact_id=other_origin,
            kind=seen.kind,
            value=seen.value,
            evidence=evidence,
            state="open",
            crm_noted=False,
        )
    )
    session.flush()


def _merge(
    session: Session,
    one: Contact,
    other: Contact,
    reason: str,
    evidence: dict[str, Any],
    keep: Contact | None = None,
) -> ContactMerge:
    """Fold one live contact into the other and record why. The survivor is
    ``keep`` when given (the CRM's choice), else the older contact: it keeps
    its CRM contact and its owner. Returns the merge (``into_contact_id``:
    the survivor)."""
    if keep is None:
        keep = one if one.id < other.id else other
    gone = other if keep is one else one
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
    crm_action = None
    if keep.crm_contact_id is None and gone.crm_contact_id is not None:
        keep.crm_contact_id, keep.crm_state = gone.crm_contact_id, gone.crm_state
        keep.crm_owner_id = keep.crm_owner_id or gone.crm_owner_id
    elif gone.crm_contact_id not in (None, keep.crm_contact_id):
        crm_action = CRM_PENDING  # two CRM contacts: the sync merges or links them there
    keep.crm_dirty = True
    _reach_changed(keep)
    merge = ContactMerge(
        tenant_id=keep.tenant_id,
        from_contact_id=gone.id,
        into_contact_id=keep.id,
        reason=reason[:200],
        evidence=evidence,
        crm_action=crm_action,
        crm_keep_id=keep.crm_contact_id,
        crm_gone_id=gone.crm_contact_id,
    )
    session.add(merge)
    session.flush()
    return merge


def merge_contacts(
    session: Session, one_id: int, other_id: int, reason: str, evidence: dict[str, Any]
) -> ContactMerge:
    """Merge two clients on a person's word (a confirmed link, the CLI)."""
    one, other = live_contact(session, one_id), live_contact(session, other_id)
    if one.tenant_id != other.tenant_id:
        raise IdentityError("the two contacts belong to different tenants")
    if one.id == other.id:
        raise IdentityError(f"contacts {one_id} and {other_id} are one client already")
    return _merge(session, one, other, reason, evidence)


def unmerge(session: Session, merge_id: int, by: str, tenant_id: int | None = None) -> ContactMerge:
    """Split a merge again: the merged contact is live once more and every
    handle and conversation goes back to the live contact of its origin.
    The merge stays on record, undone (and vetoes the same automatic merge)."""
    merge = session.get(ContactMerge, merge_id)
    if merge is None or (tenant_id is not None and merge.tenant_id != tenant_id):
        raise IdentityError(f"no merge {merge_id}")
    if merge.undone_at is not None:
        raise IdentityError(f"merge {merge_id} was undone already")
    gone = session.get(Contact, merge.from_contact_id)
    assert gone is not None
    holder = live_contact(session, merge.into_contact_id)
    gone.merged_into_id = None
    merge.undone_at, merge.undone_by = utcnow(), by[:100]
    session.flush()
    _send_home(session, holder.id)
    if merge.crm_action in ("merged", "by-crm"):
        # the CRM merged the two records and cannot split them (HubSpot has
        # no unmerge; the survivor holds both clients' identity properties):
        # the split-off client goes on writing to the one record there is
        gone.crm_contact_id, gone.crm_state = holder.crm_contact_id, holder.crm_state
    gone.crm_dirty = gone.crm_contact_id is not None
    if merge.crm_action in ("merged", "linked"):
        merge.crm_action = f"undo-{merge.crm_action}"
    elif merge.crm_action == CRM_PENDING:
        merge.crm_action = None
    for link in session.scalars(select(ContactLink).where(ContactLink.merge_id == merge.id)):
        link.state, link.decided_by, link.decided_at = "open", by[:100], utcnow()
    _reach_changed(holder)
    _reach_changed(gone)
    session.flush()
    return merge


def _reach_changed(contact: Contact) -> None:
    """The client's channels changed (a merge, a split): the CRM contact's
    live fields are looked at again (``bridge.live_fields``)."""
    if contact.crm_contact_id:
        contact.crm_live_due = utcnow()


def _send_home(session: Session, holder_id: int) -> None:
    """Everything the live contact ``holder_id`` holds goes to the live
    contact of its origin (itself, or one split off again)."""
    for identity in session.scalars(
        select(ContactIdentity).where(ContactIdentity.contact_id == holder_id)
    ).all():
        identity.contact_id = live_contact(session, identity.origin_contact_id).id
    moved = []
    for conversation in session.scalars(
        select(Conversation).where(Conversation.contact_id == holder_id)
    ).all():
        origin = conversation.origin_contact_id or holder_id
        conversation.contact_id = live_contact(session, origin).id
        if conversation.contact_id != holder_id:
            moved.append(conversation)
    for conversation in moved:
        if conversation.crm_entity_id is None:
            continue
        shared = session.scalar(
            select(Conversation.id).where(
                Conversation.tenant_id == conversation.tenant_id,
                Conversation.crm_entity_id == conversation.crm_entity_id,
                Conversation.contact_id != conversation.contact_id,
            )
        )
        if shared is None:
            continue
        if conversation.crm_entity_before:
            # it had joined the other client's deal/lead: back to its own
            conversation.crm_entity_id = conversation.crm_entity_before
            conversation.crm_entity_before = None
        else:
            # it had only ever written to the other client's: its next
            # message opens one of its own
            conversation.crm_entity_id = None
            conversation.crm_entity_state = None
            conversation.task_state = None


def _decide(session: Session, link_id: int, tenant_id: int | None) -> ContactLink:
    link = session.get(ContactLink, link_id)
    if link is None or (tenant_id is not None and link.tenant_id != tenant_id):
        raise IdentityError(f"no link {link_id}")
    if link.state != "open":
        raise IdentityError(f"link {link_id} is {link.state} already")
    return link


def confirm_link(
    session: Session, link_id: int, by: str, tenant_id: int | None = None
) -> ContactMerge:
    """A rep confirmed "possibly the same client": merge the two."""
    link = _decide(session, link_id, tenant_id)
    evidence = {"link": link.id, "confirmed_by": by, **(link.evidence or {})}
    merge = merge_contacts(
        session, link.contact_id, link.other_contact_id, f"confirmed by {by}", evidence
    )
    link.state, link.merge_id, link.decided_by, link.decided_at = (
        "confirmed",
        merge.id,
        by[:100],
        utcnow(),
    )
    return merge


def dismiss_link(
    session: Session, link_id: int, by: str, tenant_id: int | None = None
) -> ContactLink:
    """A rep said the two are different people: the link is closed for good."""
    link = _decide(session, link_id, tenant_id)
    link.state, link.decided_by, link.decided_at = "dismissed", by[:100], utcnow()
    return link


def follow_crm_merge(session: Session, tenant_id: int, gone_crm_id: str, keep_crm_id: str) -> None:
    """A person merged two contacts in the CRM: the bridge's clients behind
    them become one too (the CRM's survivor stays), or the one it knew now
    writes to the surviving CRM contact."""

    def holders(crm_id: str) -> list[Contact]:
        return list(
            session.scalars(
                select(Contact).where(
                    Contact.tenant_id == tenant_id,
                    Contact.crm_contact_id == crm_id,
                    Contact.merged_into_id.is_(None),
                )
            )
        )

    keep = next(iter(holders(keep_crm_id)), None)
    for gone in holders(gone_crm_id):
        if keep is None:
            gone.crm_contact_id = keep_crm_id
            gone.crm_dirty = True
            keep = gone
            continue
        evidence = {
            "crm_merge": {"gone": gone_crm_id, "keep": keep_crm_id},
            "at": utcnow().isoformat(),
        }
        done = _merge(session, keep, gone, "merged in the CRM", evidence, keep=keep)
        done.crm_action = "by-crm"
        members = members_of(session, keep)
        for link in session.scalars(
            select(ContactLink).where(
                ContactLink.state == "open",
                ContactLink.contact_id.in_(members),
                ContactLink.other_contact_id.in_(members),
            )
        ):
            link.state, link.merge_id, link.decided_by, link.decided_at = (
                "confirmed",
                done.id,
                "crm",
                utcnow(),
            )


def join_by_crm_contact(session: Session, contact_id: int, crm_contact_id: str) -> None:
    """The CRM's own contact fields are the client's too: the CRM found
    ``crm_contact_id`` for this client by its proven handles (the sync
    searches by nothing else), so a client the bridge already keeps on that
    CRM contact (a rep typed the number into the CRM, another channel wrote
    first) is the same person: the two are merged."""
    contact = live_contact(session, contact_id)
    others = session.scalars(
        select(Contact).where(
            Contact.tenant_id == contact.tenant_id,
            Contact.crm_contact_id == crm_contact_id,
            Contact.merged_into_id.is_(None),
            Contact.id != contact.id,
        )
    ).all()
    for other in others:
        if other.id == contact.id or _vetoed(session, contact, other):
            continue
        evidence = {
            "kind": "crm_contact",
            "value": crm_contact_id,
            "verified": True,
            "source": "crm: found by a proven handle",
            "at": utcnow().isoformat(),
        }
        merge = _merge(session, contact, other, "same CRM contact", evidence)
        contact = live_contact(session, merge.into_contact_id)


def members_of(session: Session, client: Contact) -> list[int]:
    """The contacts that are the live ``client`` now: itself and those
    merged into it (directly or through others)."""
    merged = session.scalars(
        select(Contact.id).where(
            Contact.tenant_id == client.tenant_id, Contact.merged_into_id.is_not(None)
        )
    ).all()
    return [client.id, *(c for c in merged if live_contact(session, c).id == client.id)]


# -- from a channel's message -------------------------------------------------------------


def attach_identity(
    session: Session,
    contact: Contact,
    kind: str,
    value: str,
    verified: bool = True,
    source: str = "",
    rules: IdentityRules = DEFAULT_RULES,
) -> Contact:
    """Give ``contact`` the handle (kind, value) as its own (origin: itself)."""
    return observe(session, contact, contact.id, Observation(kind, value, verified, source), rules)


def resolve_contact(
    session: Session,
    tenant_id: int,
    channel_kind: str,
    external_user_id: str,
    profile: SenderProfile,
    rules: IdentityRules = DEFAULT_RULES,
) -> tuple[Contact, int]:
    """The contact behind a channel user (created on first contact) and its
    origin (the contact the channel user was first seen as), enriched with
    whatever the channel told us (phone, e-mail) under the rules."""
    found = session.scalars(
        select(ContactIdentity)
        .where(
            ContactIdentity.tenant_id == tenant_id,
            ContactIdentity.kind == channel_kind,
            ContactIdentity.value == external_user_id,
            # a channel that names its users by a handle (an e-mail channel's
            # sender address) finds its own users, not whoever typed the
            # address somewhere (``observe`` decides about them)
            or_(
                ContactIdentity.source.is_(None),
                ContactIdentity.source == f"{channel_kind}{SENDER}"[:64],
            ),
        )
        .order_by(ContactIdentity.id)
    ).first()
    if found is not None:
        contact, origin = live_contact(session, found.contact_id), found.origin_contact_id
    else:
        contact = Contact(tenant_id=tenant_id, display_name=profile.name())
        session.add(contact)
        session.flush()
        origin = contact.id
        session.add(
            ContactIdentity(
                tenant_id=tenant_id,
                contact_id=contact.id,
                origin_contact_id=origin,
                kind=channel_kind,
                value=external_user_id,
                verified=_channel_proves(channel_kind, profile),
                source=f"{channel_kind}{SENDER}"[:64],
            )
        )
        # flushed: the channel's own handle may also be one of the person's
        # (an e-mail channel's user is an address), found again just below
        session.flush()
    if not contact.display_name and profile.name():
        contact.display_name = profile.name()
    for seen in _observations(channel_kind, profile):
        contact = observe(session, contact, origin, seen, rules)
    return contact, origin


def _channel_proves(channel_kind: str, profile: SenderProfile) -> bool:
    """A channel's own user id is proven by the channel, unless the channel
    names its users by a handle it may not have checked (an e-mail channel's
    sender address: verified only as far as the message's own flag says)."""
    if channel_kind == "email":
        return profile.email_verified
    return True


def _observations(channel_kind: str, profile: SenderProfile) -> list[Observation]:
    out = []
    phone = normalize_phone(profile.phone)
    if phone:
        how = "proven by the channel" if profile.phone_verified else "not verified"
        out.append(Observation("phone", phone, profile.phone_verified, f"{channel_kind}: {how}"))
    email = normalize_email(profile.email)
    if email:
        how = "proven by the channel" if profile.email_verified else "not verified"
        out.append(Observation("email", email, profile.email_verified, f"{channel_kind}: {how}"))
    return out


def merged_at(merge: ContactMerge) -> dt.datetime:
    """When the merge happened (for the audit's order)."""
    return merge.created_at
