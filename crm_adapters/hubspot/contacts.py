"""Contacts: find by identity / phone / e-mail, create with 409 recovery,
fill in what the channel learnt later."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError, PermanentError, RetryableError
from bridge.model import ContactDraft, ContactLookup, CrmContact, CrmRef

from .client import decode, existing_id
from .search import (
    BATCH_SIZE,
    MAX_FILTER_GROUPS,
    SearchMixin,
    batch_reason,
    chunks,
    digits,
    in_or_eq,
)
from .setup import identity_property

__all__ = ["ContactsMixin"]


class ContactsMixin(SearchMixin):
    """The contact hooks of :class:`~crm_adapters.hubspot.HubSpotAdapter`."""

    def find_contact(self, lookup: ContactLookup) -> CrmContact | None:
        """One search, OR of: identity property, phone (E.164), e-mail.
        Best match by identity > phone > e-mail; the oldest on ties."""
        return self.find_contacts({"": lookup}).get("")

    def find_contacts(self, lookups: Mapping[str, ContactLookup]) -> dict[str, CrmContact]:
        """:meth:`find_contact` for many people: one search per up to 100
        values of each property (``IN`` filters, FACTS 3.3: identity
        property, phone, e-mail ORed), each hit matched back to the lookups
        it answers, each lookup's best hit by identity > phone > e-mail,
        the oldest on ties."""
        found: dict[str, CrmContact] = {}
        for chunk in _lookup_chunks(lookups):
            wanted = {key: _Wanted.of(lookup) for key, lookup in chunk.items()}
            # dicts as ordered sets: values in the order the lookups gave them
            identity: dict[str, dict[str, None]] = {}
            phones: dict[str, None] = {}
            emails: dict[str, None] = {}
            for w in wanted.values():
                for prop, value in w.identity.items():
                    identity.setdefault(prop, {})[value] = None
                phones.update(dict.fromkeys(w.phones))
                emails.update(dict.fromkeys(w.emails))
            groups = [{"filters": [in_or_eq(p, list(v))]} for p, v in identity.items()]
            groups = groups[: MAX_FILTER_GROUPS - 2]
            if phones:
                groups.append({"filters": [in_or_eq("phone", list(phones))]})
            if emails:
                groups.append({"filters": [in_or_eq("email", list(emails))]})
            if not groups:
                continue
            hits = self._search(
                "contacts", groups, [*identity, "phone", "email", "hubspot_owner_id"]
            )
            for key, w in wanted.items():
                best = w.best(hits, alone=len(wanted) == 1)
                if best is not None:
                    owner = (best.get("properties") or {}).get("hubspot_owner_id") or None
                    found[key] = CrmContact(CrmRef("contact", str(best["id"])), owner_id=owner)
        return found

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
        e-mail, FACTS 3.3) returns that contact with our identity added —
        when the address is a proven one (in ``draft.lookup.emails``). An
        address the channel did not prove (typed into a form) is not the
        person's by the bridge's rules: the contact is created without it
        rather than written into whoever holds it (docs/clients.md)."""
        properties = self._contact_properties(draft)
        response = self.api.request(
            "POST",
            "/crm/v3/objects/contacts",
            json={"properties": properties},
            limit=self.api_limit,
            ok=(409,),
        )
        email = properties.get("email")
        if (
            response.status_code == 409
            and email
            and existing_id(response) is not None
            and email not in {e.strip().lower() for e in draft.lookup.emails}
        ):
            response = self.api.request(
                "POST",
                "/crm/v3/objects/contacts",
                json={"properties": {k: v for k, v in properties.items() if k != "email"}},
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

    def create_contacts(self, drafts: Mapping[str, ContactDraft]) -> dict[str, CrmContact]:
        """``POST /crm/v3/objects/contacts/batch/create`` per 100 inputs
        (FACTS 3.3), each result matched back to its draft by the identity
        property (HubSpot does not promise the order). A uniqueness conflict
        fails a whole batch (409: an e-mail, or an identity someone has):
        that batch goes one by one through :meth:`create_contact`, which
        recovers each conflict. A draft without an identity goes alone too."""
        made: dict[str, CrmContact] = {}
        try:
            alone = {k: d for k, d in drafts.items() if not _identity_of(d.lookup)}
            batched = [k for k in drafts if k not in alone]
            for chunk in chunks(batched, BATCH_SIZE):
                made.update(self._create_contact_batch({k: drafts[k] for k in chunk}))
            for key, draft in alone.items():
                made[key] = self.create_contact(draft)
        except BridgeError as exc:
            exc.created = {**{k: c.ref for k, c in made.items()}, **exc.created}
            raise
        return made

    def _create_contact_batch(self, drafts: Mapping[str, ContactDraft]) -> dict[str, CrmContact]:
        response = self.api.request(
            "POST",
            "/crm/v3/objects/contacts/batch/create",
            json={"inputs": [{"properties": self._contact_properties(d)} for d in drafts.values()]},
            limit=self.api_limit,
            ok=(409,),
        )
        if response.status_code == 409:
            # nothing of the batch was written (HubSpot validates a batch
            # before it writes): one by one, each conflict recovered
            made: dict[str, CrmContact] = {}
            try:
                for key, draft in drafts.items():
                    made[key] = self.create_contact(draft)
            except BridgeError as exc:
                exc.created = {k: c.ref for k, c in made.items()}
                raise
            return made
        body = decode(response)
        by_identity: dict[tuple[str, str], Mapping[str, Any]] = {}
        for record in body.get("results") or []:
            if not isinstance(record, Mapping):
                continue
            for prop, value in (record.get("properties") or {}).items():
                if value is not None:
                    by_identity.setdefault((prop, str(value)), record)
        out: dict[str, CrmContact] = {}
        for key, draft in drafts.items():
            record = next(
                (r for pv in _identity_of(draft.lookup).items() if (r := by_identity.get(pv))),
                None,
            )
            if record is None:
                continue
            owner = (record.get("properties") or {}).get("hubspot_owner_id") or draft.owner_id
            out[key] = CrmContact(CrmRef("contact", str(record["id"])), owner_id=owner)
        missing = [k for k in drafts if k not in out]
        if missing:
            error = PermanentError(
                f"HubSpot created {len(out)} of {len(drafts)} contacts: {batch_reason(body)}"
            )
            error.created = {k: c.ref for k, c in out.items()}
            raise error
        return out

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

    def read_contact_fields(self, contact: CrmRef, names: Sequence[str]) -> dict[str, str]:
        """One ``GET /crm/v3/objects/contacts/{id}?properties=a,b``: ``names``
        are contact property internal names (``tier``, ``lifecyclestage``).
        HubSpot leaves out a name it has no property for and answers
        ``null`` for a property without a value (``SimplePublicObject``,
        crm-objects-contacts.v3.json): both are left out here. Values as
        HubSpot returns them: an enumeration's option value (its internal
        name, not its label); a multiple checkbox's options separated by
        ``;`` as HubSpot stores them (which a property's type tells apart
        from text only through the properties API, a call of its own). A
        contact HubSpot no longer has raises ``NotFoundError`` (404)."""
        wanted = list(dict.fromkeys(n for n in names if n and n.strip()))
        if not wanted:
            return {}
        current = self._get_contact(contact.id, [n.strip() for n in wanted])
        found: dict[str, str] = {}
        for name in wanted:
            value = current.get(name.strip())
            text = "" if value is None else str(value).strip()
            if text:
                found[name] = text
        return found

    def write_contact_fields(self, contact: CrmRef, properties: Mapping[str, str]) -> None:
        """PATCH the properties (the setup created them as contact
        properties); a 404 is the contact gone (merged away or deleted)."""
        if not self._patch_contact(contact.id, {k: str(v) for k, v in properties.items()}):
            raise PermanentError("HubSpot refused the contact's properties (409)")

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


#: the most values one ``IN`` filter is given (HubSpot's batch size; the
#: search docs we ship name no limit of their own)
MAX_IN_VALUES = BATCH_SIZE


def _identity_of(lookup: ContactLookup) -> dict[str, str]:
    return {identity_property(k): str(v) for k, v in lookup.identities.items() if v}


def _lookup_chunks(lookups: Mapping[str, ContactLookup]) -> Iterator[dict[str, ContactLookup]]:
    """Lookups in groups whose values fit one ``IN`` filter per property."""
    chunk: dict[str, ContactLookup] = {}
    counts: dict[str, int] = {}
    for key, lookup in lookups.items():
        w = _Wanted.of(lookup)
        need = {p: 1 for p in w.identity}
        need["phone"], need["email"] = len(w.phones), len(w.emails)
        if chunk and any(counts.get(p, 0) + n > MAX_IN_VALUES for p, n in need.items()):
            yield chunk
            chunk, counts = {}, {}
        chunk[key] = lookup
        for p, n in need.items():
            counts[p] = counts.get(p, 0) + n
    if chunk:
        yield chunk


@dataclass(frozen=True)
class _Wanted:
    """One lookup, normalised as the search sends it."""

    identity: dict[str, str]
    phones: tuple[str, ...]
    emails: tuple[str, ...]

    @classmethod
    def of(cls, lookup: ContactLookup) -> _Wanted:
        return cls(
            identity=_identity_of(lookup),
            phones=tuple(p for p in dict.fromkeys(lookup.phones) if p),
            emails=tuple(e.strip().lower() for e in dict.fromkeys(lookup.emails) if e),
        )

    def best(self, hits: Sequence[Mapping[str, Any]], *, alone: bool) -> Mapping[str, Any] | None:
        """The hit this lookup matches best: identity > phone > e-mail, the
        oldest on ties. ``alone``: the search was this lookup's only, so a
        hit that matched neither identity nor e-mail matched its phone
        group, whatever formatting HubSpot stored (in a shared search it
        must match one of this lookup's phones by its last 9 digits:
        international or national format alike)."""
        tails = {digits(p)[-9:] for p in self.phones}

        def tier(hit: Mapping[str, Any]) -> int | None:
            props = hit.get("properties") or {}
            if any(props.get(p) == v for p, v in self.identity.items()):
                return 0
            by_email = str(props.get("email") or "").lower() in self.emails
            stored = digits(props.get("phone"))
            if (self.phones and stored and stored[-9:] in tails) or (alone and not by_email):
                return 1
            return 2 if by_email else None

        ranked = []
        for hit in hits:
            t = tier(hit)
            if t is not None:
                raw = str(hit.get("id", ""))
                ranked.append(((t, int(raw) if raw.isdigit() else 1 << 62), hit))
        return min(ranked, key=lambda pair: pair[0])[1] if ranked else None
