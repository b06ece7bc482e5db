"""Contacts: find by identity / phone / e-mail, create with 409 recovery,
fill in what the channel learnt later."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import RetryableError
from bridge.model import ContactDraft, ContactLookup, CrmContact, CrmRef

from .client import decode, existing_id
from .search import MAX_FILTER_GROUPS, SearchMixin, digits, in_or_eq
from .setup import identity_property

__all__ = ["ContactsMixin"]


class ContactsMixin(SearchMixin):
    """The contact hooks of :class:`~crm_adapters.hubspot.HubSpotAdapter`."""

    def find_contact(self, lookup: ContactLookup) -> CrmContact | None:
        """One search, OR of: identity property, phone (E.164), e-mail.
        Best match by identity > phone > e-mail; the oldest on ties."""
        identity = {identity_property(k): str(v) for k, v in lookup.identities.items() if v}
        phones = [p for p in dict.fromkeys(lookup.phones) if p]
        emails = [e.strip().lower() for e in dict.fromkeys(lookup.emails) if e]
        groups = [{"filters": [in_or_eq(p, [v])]} for p, v in identity.items()]
        groups = groups[: MAX_FILTER_GROUPS - 2]
        if phones:
            groups.append({"filters": [in_or_eq("phone", phones)]})
        if emails:
            groups.append({"filters": [in_or_eq("email", emails)]})
        if not groups:
            return None
        hits = self._search("contacts", groups, [*identity, "phone", "email", "hubspot_owner_id"])
        if not hits:
            return None
        phone_digits = {digits(p) for p in phones}

        def rank(hit: Mapping[str, Any]) -> tuple[int, int]:
            props = hit.get("properties") or {}
            by_identity = any(props.get(p) == v for p, v in identity.items())
            by_email = str(props.get("email") or "").lower() in emails
            by_phone = digits(props.get("phone")) in phone_digits
            # a hit that matched neither identity nor e-mail matched the
            # phone group, whatever formatting HubSpot stored
            tier = 0 if by_identity else 1 if by_phone or not by_email else 2
            raw = str(hit.get("id", ""))
            return tier, int(raw) if raw.isdigit() else 1 << 62

        best = min(hits, key=rank)
        owner = (best.get("properties") or {}).get("hubspot_owner_id") or None
        return CrmContact(CrmRef("contact", str(best["id"])), owner_id=owner)

    def _contact_properties(self, draft: ContactDraft) -> dict[str, str]:
        profile = draft.profile
        props: dict[str, str] = {}
        first, last = profile.first_name, profile.last_name
        if not first and not last:
            first = profile.display_name or profile.username
        phone = draft.lookup.phones[0] if draft.lookup.phones else profile.phone
        email = draft.lookup.emails[0] if draft.lookup.emails else profile.email
        for name, value in (
            ("firstname", first),
            ("lastname", last),
            ("phone", phone),
            ("email", email.strip().lower() if email else None),
            ("hubspot_owner_id", draft.owner_id),
        ):
            if value:
                props[name] = str(value)
        props.update({k: str(v) for k, v in draft.properties.items() if v not in (None, "")})
        identity = {identity_property(k): str(v) for k, v in draft.lookup.identities.items() if v}
        props.update(identity)
        if not any(props.get(k) for k in ("firstname", "lastname", "email")):
            # HubSpot needs one of them (FACTS 3.3)
            kind, value = next(iter(draft.lookup.identities.items()), ("", ""))
            props["firstname"] = f"{draft.channel_title or kind} {value}".strip() or "Customer"
        return props

    def create_contact(self, draft: ContactDraft) -> CrmContact:
        """``POST /crm/v3/objects/contacts``; a 409 "Existing ID: N" (same
        e-mail, FACTS 3.3) returns that contact with our identity added."""
        response = self.api.request(
            "POST",
            "/crm/v3/objects/contacts",
            json={"properties": self._contact_properties(draft)},
            limit=self.api_limit,
            ok=(409,),
        )
        if response.status_code != 409:
            body = decode(response)
            owner = (body.get("properties") or {}).get("hubspot_owner_id") or draft.owner_id
            return CrmContact(CrmRef("contact", str(body["id"])), owner_id=owner)
        conflict = existing_id(response)
        if conflict is None:
            # a unique identity property clashed: the contact exists, but
            # search may not see it yet (eventually consistent, FACTS 3.3)
            found = self.find_contact(draft.lookup)
            if found is not None:
                return found
            raise RetryableError("HubSpot reports a duplicate contact search cannot see yet")
        return self._adopt_contact(conflict, draft)

    def _adopt_contact(self, contact_id: str, draft: ContactDraft) -> CrmContact:
        identity = {identity_property(k): str(v) for k, v in draft.lookup.identities.items() if v}
        current = self._get_contact(contact_id, [*identity, "hubspot_owner_id"])
        # the channel identity now points at this person (the brief's rule:
        # same e-mail, same person), even if it held another id before
        changed = {k: v for k, v in identity.items() if current.get(k) != v}
        if changed:
            self._patch_contact(contact_id, changed)
        owner = current.get("hubspot_owner_id") or None
        return CrmContact(CrmRef("contact", contact_id), owner_id=owner)

    def _get_contact(self, contact_id: str, properties: Sequence[str]) -> Mapping[str, Any]:
        body = self.api.json(
            "GET",
            f"/crm/v3/objects/contacts/{contact_id}",
            params={"properties": ",".join(properties)},
            limit=self.api_limit,
        )
        return body.get("properties") or {}

    def _patch_contact(self, contact_id: str, properties: Mapping[str, str]) -> bool:
        """PATCH; False on a 409 (a unique value belongs to someone else)."""
        response = self.api.request(
            "PATCH",
            f"/crm/v3/objects/contacts/{contact_id}",
            json={"properties": dict(properties)},
            limit=self.api_limit,
            ok=(409,),
        )
        return response.status_code != 409

    def update_contact(self, contact: CrmRef, draft: ContactDraft) -> None:
        """Fill in what the contact lacks: identity, phone (``mobilephone``
        when ``phone`` holds another number), e-mail. Never overwrites."""
        identity = {identity_property(k): str(v) for k, v in draft.lookup.identities.items() if v}
        current = self._get_contact(contact.id, [*identity, "phone", "mobilephone", "email"])
        patch = {k: v for k, v in identity.items() if not current.get(k)}
        known = {digits(current.get("phone")), digits(current.get("mobilephone"))}
        for phone in draft.lookup.phones or ((draft.profile.phone,) if draft.profile.phone else ()):
            if digits(phone) in known:
                continue
            slot = "phone" if not current.get("phone") else "mobilephone"
            if not current.get(slot) and slot not in patch:
                patch[slot] = phone
                known.add(digits(phone))
        email = (draft.lookup.emails or (draft.profile.email,))[0]
        if email and not current.get("email"):
            patch["email"] = email.strip().lower()
        if not patch:
            return
        if self._patch_contact(contact.id, patch) or "email" not in patch:
            return
        # 409: the e-mail is another contact's (unique, FACTS 3.3); keep the rest
        del patch["email"]
        if patch:
            self._patch_contact(contact.id, patch)
