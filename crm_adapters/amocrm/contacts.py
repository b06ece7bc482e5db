"""Contacts: find by identity / phone / e-mail, create, add what is new
(FACTS 1.5, 1.6).

amoCRM has one search, ``GET /api/v4/contacts?query=``, full text over
every filled field; 204 means nobody. A hit is only a candidate: we keep the
contacts whose identity field, PHONE or EMAIL value really equals ours (a
Telegram id can also be a substring of a phone number).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bridge.errors import BridgeError, NotFoundError, NotReadyError, PermanentError
from bridge.model import ContactDraft, ContactLookup, CrmAccountInfo, CrmContact, CrmRef

from .client import AmoApi, echoed, embedded
from .fields import (
    custom_values,
    digits,
    field_values,
    has_value,
    identity_field_name,
    kind_label,
    merge_fields,
    oldest,
    phones_match,
    text_value,
    to_int,
)
from .settings import AmoCrmSettings

__all__ = ["ContactsMixin"]

#: candidates per search: a person rarely has more namesakes than this
SEARCH_LIMIT = 50
#: contacts per POST (amoCRM documents no maximum; 50 is the folklore, FACTS 1.4)
CONTACTS_CHUNK = 50
#: enum codes for values the bridge adds (FACTS 1.6)
PHONE_ENUM = "MOB"
EMAIL_ENUM = "WORK"


class ContactsMixin:
    """The contact hooks of :class:`~crm_adapters.amocrm.AmoCrmAdapter`."""

    account: CrmAccountInfo
    settings: AmoCrmSettings
    api: AmoApi

    def _identity_fields(self) -> dict[str, int]:
        return dict(self.settings.identity_fields)

    def _search_contacts(self, query: str) -> list[Mapping[str, Any]]:
        body = self.api.json(
            "GET", "/api/v4/contacts", params={"query": query, "limit": SEARCH_LIMIT}
        )
        return embedded(body, "contacts")

    def find_contact(self, lookup: ContactLookup) -> CrmContact | None:
        """Identity field first, then each phone (searched by its digits,
        compared normalised), then e-mail; the oldest on ties. One search
        per key until one matches."""
        fields = self._identity_fields()
        for kind, value in lookup.identities.items():
            field_id = fields.get(kind)
            value = str(value or "").strip()
            if field_id is None or not value:
                continue
            hits = [c for c in self._search_contacts(value) if has_value(c, field_id, value)]
            if hits:
                return _contact(oldest(hits))
        for phone in dict.fromkeys(p for p in lookup.phones if p):
            hits = [
                c
                for c in self._search_contacts(digits(phone))
                if any(phones_match(v.get("value"), phone) for v in field_values(c, code="PHONE"))
            ]
            if hits:
                return _contact(oldest(hits))
        for email in dict.fromkeys(e.strip().lower() for e in lookup.emails if e):
            hits = [
                c
                for c in self._search_contacts(email)
                if any(
                    str(v.get("value") or "").strip().lower() == email
                    for v in field_values(c, code="EMAIL")
                )
            ]
            if hits:
                return _contact(oldest(hits))
        return None

    def _identity_values(self, lookup: ContactLookup) -> list[dict[str, Any]]:
        fields = self._identity_fields()
        out = []
        for kind, value in lookup.identities.items():
            if not value:
                continue
            if kind not in fields:
                # the setup creates it: a mapping changed since the last setup waits for it
                raise NotReadyError(
                    f"amoCRM has no {identity_field_name(kind)} field for this tenant: "
                    "run `bridge crm setup --tenant <slug>` (it creates one per channel)"
                )
            out.append(text_value(fields[kind], str(value)))
        return out

    def _contact_item(self, draft: ContactDraft, request_id: str) -> dict[str, Any]:
        """One contact of a ``POST /api/v4/contacts`` array: name, PHONE
        (MOB) and EMAIL (WORK) values, the identity field, the owner and the
        mapping's contact fields."""
        profile = draft.profile
        item: dict[str, Any] = {}
        name = profile.name()
        if not name:
            kind, value = next(iter(draft.lookup.identities.items()), ("", ""))
            channel = draft.channel_title or kind_label(kind)
            name = f"{channel} {value}".strip() if kind else "Customer"
        item["name"] = name
        if profile.first_name:
            item["first_name"] = profile.first_name
        if profile.last_name:
            item["last_name"] = profile.last_name
        if draft.owner_id:
            item["responsible_user_id"] = to_int(draft.owner_id, "owner id")
        values: list[dict[str, Any]] = []
        phones = list(
            dict.fromkeys(draft.lookup.phones or ([profile.phone] if profile.phone else []))
        )
        if phones:
            values.append(
                {
                    "field_code": "PHONE",
                    "values": [{"value": p, "enum_code": PHONE_ENUM} for p in phones],
                }
            )
        emails = list(
            dict.fromkeys(
                e.strip().lower()
                for e in (draft.lookup.emails or ([profile.email] if profile.email else []))
                if e
            )
        )
        if emails:
            values.append(
                {
                    "field_code": "EMAIL",
                    "values": [{"value": e, "enum_code": EMAIL_ENUM} for e in emails],
                }
            )
        values.extend(self._identity_values(draft.lookup))
        ids = self.settings.custom_fields.get("contacts") or {}
        values.extend(custom_values(draft.properties, ids, "contact"))
        if values:
            item["custom_fields_values"] = merge_fields(values)
        item["request_id"] = request_id
        return item

    def create_contact(self, draft: ContactDraft) -> CrmContact:
        """``POST /api/v4/contacts`` (a JSON array of one, :meth:`_contact_item`).
        amoCRM allows duplicates, so nothing to recover."""
        return self.create_contacts({"contact": draft})["contact"]

    def create_contacts(self, drafts: Mapping[str, ContactDraft]) -> dict[str, CrmContact]:
        """Many people per ``POST /api/v4/contacts`` (a JSON array, up to
        :data:`CONTACTS_CHUNK` items; amoCRM documents no maximum, FACTS
        1.4), each answer matched back by its ``request_id`` echo (FACTS
        1.3). amoCRM validates the whole array before it writes any."""
        made: dict[str, CrmContact] = {}
        keys = list(drafts)
        try:
            for start in range(0, len(keys), CONTACTS_CHUNK):
                chunk = keys[start : start + CONTACTS_CHUNK]
                # request ids are echoed as given: the position keeps them short
                items = [self._contact_item(drafts[k], str(n)) for n, k in enumerate(chunk)]
                if len(chunk) == 1:
                    items[0]["request_id"] = "contact"
                body = self.api.json("POST", "/api/v4/contacts", json=items)
                answers = echoed(embedded(body, "contacts"), [i["request_id"] for i in items])
                for key, created in zip(chunk, answers, strict=True):
                    if created is None or created.get("id") is None:
                        raise PermanentError("amoCRM did not return the new contact's id")
                    made[key] = CrmContact(
                        CrmRef("contact", str(created["id"])), owner_id=drafts[key].owner_id
                    )
        except BridgeError as exc:
            exc.created = {k: c.ref for k, c in made.items()}
            raise
        return made

    def write_contact_fields(self, contact: CrmRef, properties: Mapping[str, str]) -> None:
        """PATCH the custom fields the setup created for the properties
        (only the fields named are sent: amoCRM keeps the others)."""
        ids = self.settings.custom_fields.get("contacts") or {}
        values = custom_values(properties, ids, "contact")
        if not values:
            return
        self.api.json(
            "PATCH",
            f"/api/v4/contacts/{to_int(contact.id, 'contact id')}",
            json={"custom_fields_values": values},
        )

    def read_contact_fields(self, contact: CrmRef, names: Sequence[str]) -> dict[str, str]:
        """One ``GET /api/v4/contacts/{id}``: its ``custom_fields_values``
        carry each field's ``field_name`` and ``field_code`` (FACTS 1.6).
        A name matches a field by its code first, then by its name (both
        case-insensitive), then as the mapping's property the setup made a
        field for (its ``field_id``): the first of them with a value.
        Values as text: a select's option text, several values joined by
        ", "; a field without a value is left out. A contact amoCRM no
        longer has (204, FACTS 1.3; or 404) raises ``NotFoundError``."""
        wanted = list(dict.fromkeys(n for n in names if n and n.strip()))
        if not wanted:
            return {}
        current = self.api.json("GET", f"/api/v4/contacts/{to_int(contact.id, 'contact id')}")
        if not isinstance(current, Mapping):
            raise NotFoundError("amoCRM has no such contact (204)", status=204)
        fields = [f for f in current.get("custom_fields_values") or [] if isinstance(f, Mapping)]
        made = self.settings.custom_fields.get("contacts") or {}
        found: dict[str, str] = {}
        for name in wanted:
            named = _fields_named(fields, name.strip(), made.get(name.strip()))
            text = next((t for t in map(_field_text, named) if t), "")
            if text:
                found[name] = text
        return found

    def update_contact(self, contact: CrmRef, draft: ContactDraft) -> None:
        """Add what the contact lacks: the identity value, a new phone, a
        new e-mail. Multitext PATCH probably replaces the field's values
        (UNCONFIRMED, FACTS 1.6), so the old values are sent with the new."""
        current = self.api.json("GET", f"/api/v4/contacts/{to_int(contact.id, 'contact id')}")
        if not isinstance(current, Mapping):
            return  # 204: the contact is gone; the next lookup finds the person again
        patch: list[dict[str, Any]] = []
        for field in self._identity_values(draft.lookup):
            if not field_values(current, field_id=field["field_id"]):
                patch.append(field)
        profile = draft.profile
        phones = [p for p in draft.lookup.phones or ([profile.phone] if profile.phone else []) if p]
        old_phones = field_values(current, code="PHONE")
        new_phones = [
            p
            for p in dict.fromkeys(phones)
            if not any(phones_match(v.get("value"), p) for v in old_phones)
        ]
        if new_phones:
            patch.append(
                {
                    "field_code": "PHONE",
                    "values": [_keep(v) for v in old_phones]
                    + [{"value": p, "enum_code": PHONE_ENUM} for p in new_phones],
                }
            )
        emails = [
            e.strip().lower()
            for e in draft.lookup.emails or ([profile.email] if profile.email else [])
            if e
        ]
        old_emails = field_values(current, code="EMAIL")
        known = {str(v.get("value") or "").strip().lower() for v in old_emails}
        new_emails = [e for e in dict.fromkeys(emails) if e not in known]
        if new_emails:
            patch.append(
                {
                    "field_code": "EMAIL",
                    "values": [_keep(v) for v in old_emails]
                    + [{"value": e, "enum_code": EMAIL_ENUM} for e in new_emails],
                }
            )
        if not patch:
            return
        self.api.json(
            "PATCH",
            f"/api/v4/contacts/{to_int(contact.id, 'contact id')}",
            json={"custom_fields_values": patch},
        )


def _keep(value: Mapping[str, Any]) -> dict[str, Any]:
    """A read-back multitext value, as a write keeps it."""
    out: dict[str, Any] = {"value": value.get("value")}
    if value.get("enum_code"):
        out["enum_code"] = value["enum_code"]
    elif value.get("enum_id") is not None:
        out["enum_id"] = value["enum_id"]
    return out


def _fields_named(
    fields: Sequence[Mapping[str, Any]], name: str, field_id: object
) -> Iterator[Mapping[str, Any]]:
    """The read-back fields ``name`` may name, best first: by ``field_code``,
    by ``field_name`` (case-insensitive), by the setup's ``field_id``."""
    wanted = name.casefold()
    for key in ("field_code", "field_name"):
        yield from (f for f in fields if str(f.get(key) or "").casefold() == wanted)
    if field_id is not None:
        yield from (f for f in fields if str(f.get("field_id")) == str(field_id))


def _field_text(field: Mapping[str, Any]) -> str:
    """A read-back field's values as text, joined by ", " (a select's value
    is its option's text, FACTS 1.6; a checkbox's ``true``/``false``);
    values that are not text (an address's parts) are skipped."""
    parts: list[str] = []
    for item in field.get("values") or []:
        value = item.get("value") if isinstance(item, Mapping) else None
        if isinstance(value, bool):
            parts.append("true" if value else "false")
        elif isinstance(value, (str, int, float)) and str(value).strip():
            parts.append(str(value).strip())
    return ", ".join(parts)


def _contact(item: Mapping[str, Any] | None) -> CrmContact | None:
    if item is None:
        return None
    owner = item.get("responsible_user_id")
    return CrmContact(
        CrmRef("contact", str(item["id"])),
        owner_id=str(owner) if owner not in (None, "", 0) else None,
    )
