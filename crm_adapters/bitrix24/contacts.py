"""Contacts: find (identity > phone > e-mail) in one batch, create, add what
is new (FACTS 2.7; docs ``crm/contacts/*``, ``crm/duplicates/
crm-duplicate-find-by-comm.md``, ``crm/data-types.md``).

**Identity.** The customer's channel id is stored in the contact's ``IM``
multifield with the channel's ``VALUE_TYPE`` (``TELEGRAM`` for Telegram;
``VK``, ``VIBER``, ``SKYPE`` where Bitrix24 has one; ``OTHER`` with a
``<kind>:`` prefix for the rest) and found with ``crm.contact.list``
``filter[IM]=<value>`` — multifield filters are exact matches
(``crm-contact-list.md``), and ``select[]=IM`` lets us check the
``VALUE_TYPE`` too. Chosen over a custom ``UF_CRM_*`` field because the
docs we ship support it end to end (no ``crm.contact.userfield.*`` call,
no extra scope, works for incoming webhooks), the operator sees the
messenger on the contact card, and one less thing for ``setup()`` to keep
in step. ``crm.duplicate.findbycomm`` cannot search ``IM`` (only ``PHONE``
and ``EMAIL``).

**Phone and e-mail** go through ``crm.duplicate.findbycomm`` (≤ 20 values;
phones are normalised by Bitrix24, extensions ignored; no hits is ``[]``),
restricted to ``CONTACT``. The identity search, both duplicate searches and
the owner of the first phone/e-mail hit (``crm.contact.get?id=$result[…]``)
go out as **one batch**; priority identity > phone > e-mail, the oldest
(lowest id) on ties.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import PermanentError
from bridge.model import ContactDraft, ContactLookup, CrmAccountInfo, CrmContact, CrmRef

from .batch import MAX_COMMANDS, BatchAnswer, Command, Ref, as_map
from .client import B24Api
from .entities import field_code, field_values, mapped_fields, source_id
from .settings import Bitrix24Settings
from .timeline import to_int

__all__ = ["IM_TYPES", "ContactsMixin", "identity_value"]

#: channel kind -> IM VALUE_TYPE (crm/data-types.md)
IM_TYPES = {"telegram": "TELEGRAM", "vk": "VK", "viber": "VIBER", "skype": "SKYPE"}
MAX_VALUES = 20  # crm.duplicate.findbycomm
#: a field code (``UF_CRM_TIER``, ``TYPE_ID``)
_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


def identity_value(kind: str, value: str) -> tuple[str, str]:
    """(VALUE_TYPE, VALUE) of a channel identity in the IM multifield."""
    value = str(value).strip()
    if kind in IM_TYPES:
        return IM_TYPES[kind], value
    return "OTHER", f"{kind}:{value}"


def _ids(value: Any) -> list[int]:
    out = []
    for item in value if isinstance(value, list) else []:
        try:
            out.append(int(str(item)))
        except (TypeError, ValueError):
            continue
    return out


def _owner(row: Any) -> str | None:
    if not isinstance(row, Mapping):
        return None
    owner = row.get("ASSIGNED_BY_ID")
    return str(owner) if owner not in (None, "", 0, "0") else None


def _emails(lookup: ContactLookup) -> list[str]:
    return list(dict.fromkeys(e.strip().lower() for e in lookup.emails if e and e.strip()))


def _phones(lookup: ContactLookup) -> list[str]:
    return list(dict.fromkeys(p.strip() for p in lookup.phones if p and p.strip()))


class ContactsMixin:
    """The contact hooks of the Bitrix24 adapter."""

    account: CrmAccountInfo
    settings: Bitrix24Settings
    api: B24Api

    def lookup_commands(self, lookup: ContactLookup, prefix: str = "") -> list[Command]:
        """The batch that answers :meth:`find_contact` (also used by the
        one-request conversation opener), its keys starting with ``prefix``
        (many people's lookups in one batch)."""
        commands: list[Command] = []
        for n, (kind, value) in enumerate(sorted(lookup.identities.items())):
            if not value:
                continue
            _, im_value = identity_value(kind, value)
            commands.append(
                Command(
                    f"{prefix}id{n}",
                    "crm.contact.list",
                    {
                        "filter": {"IM": im_value},
                        "select": ["ID", "ASSIGNED_BY_ID", "IM"],
                        "order": {"ID": "ASC"},
                    },
                )
            )
        for key, kind, values in (
            ("phone", "PHONE", _phones(lookup)),
            ("email", "EMAIL", _emails(lookup)),
        ):
            if not values:
                continue
            commands.append(
                Command(
                    f"{prefix}{key}",
                    "crm.duplicate.findbycomm",
                    {"entity_type": "CONTACT", "type": kind, "values": values[:MAX_VALUES]},
                )
            )
            # the first hit's owner, in the same request (an empty reference
            # when nothing matched fails harmlessly: halt=0)
            commands.append(
                Command(
                    f"{prefix}{key}_owner",
                    "crm.contact.get",
                    {"id": Ref(f"{prefix}{key}")["CONTACT"][0]},
                )
            )
        return commands

    def find_contact(self, lookup: ContactLookup) -> CrmContact | None:
        """Identity (IM multifield) first, then phone, then e-mail; one batch."""
        commands = self.lookup_commands(lookup)
        if not commands:
            return None
        return self._found(self.api.batch(commands, halt=False), lookup)

    def find_contacts(self, lookups: Mapping[str, ContactLookup]) -> dict[str, CrmContact]:
        """:meth:`find_contact` for many people: their lookups' commands in
        as few ``batch`` requests as hold them (50 commands each, FACTS
        2.4; one person's commands never split across two: they refer to
        each other)."""
        found: dict[str, CrmContact] = {}
        group: list[tuple[str, ContactLookup, str]] = []
        commands: list[Command] = []

        def run() -> None:
            if commands:
                answer = self.api.batch(commands, halt=False)
                for key, lookup, prefix in group:
                    contact = self._found(answer, lookup, prefix)
                    if contact is not None:
                        found[key] = contact

        for n, (key, lookup) in enumerate(lookups.items()):
            prefix = f"p{n}_"
            mine = self.lookup_commands(lookup, prefix)
            if len(commands) + len(mine) > MAX_COMMANDS:
                run()
                group, commands = [], []
            group.append((key, lookup, prefix))
            commands.extend(mine)
        run()
        return found

    def _found(
        self, answer: BatchAnswer, lookup: ContactLookup, prefix: str = ""
    ) -> CrmContact | None:
        """One lookup's best hit in a batch's answer."""
        for n, (kind, value) in enumerate(sorted(lookup.identities.items())):
            key = f"{prefix}id{n}"
            if not value or not answer.ran(key):
                continue
            value_type, im_value = identity_value(kind, value)
            rows = answer.value(key)
            hits = [
                row
                for row in (rows if isinstance(rows, list) else [])
                if isinstance(row, Mapping)
                and any(
                    str(v.get("VALUE") or "").strip() == im_value
                    and str(v.get("VALUE_TYPE") or "").upper() == value_type
                    for v in field_values(row, "IM")
                )
            ]
            if hits:
                best = min(hits, key=lambda r: to_int(r.get("ID"), "contact id"))
                return CrmContact(CrmRef("contact", str(best["ID"])), owner_id=_owner(best))
        for kind in ("phone", "email"):
            key = f"{prefix}{kind}"
            if not answer.ran(key):
                continue
            found = answer.value(key)
            ids = _ids(found.get("CONTACT") if isinstance(found, Mapping) else None)
            if ids:
                owner_row = answer.get(f"{key}_owner")
                owner = (
                    _owner(owner_row)
                    if isinstance(owner_row, Mapping)
                    and str(owner_row.get("ID")) == str(ids[0])
                    and ids[0] == min(ids)
                    else None
                )
                return CrmContact(CrmRef("contact", str(min(ids))), owner_id=owner)
        return None

    # -- create / update --------------------------------------------------------------

    def contact_fields(self, draft: ContactDraft) -> dict[str, Any]:
        """``fields`` of ``crm.contact.add`` for ``draft``."""
        profile = draft.profile
        fields: dict[str, Any] = {}
        first, last = profile.first_name, profile.last_name
        if not first and not last:
            name = profile.name() or ""
            first, _, last = name.partition(" ")
        if not first and not last:
            kind, value = next(iter(sorted(draft.lookup.identities.items())), ("", ""))
            # "Telegram 4242": the channel's name (the registry's), else its kind
            label = draft.channel_title or kind.title()
            first = f"{label} {value}".strip() if kind else "Customer"
        if first:
            fields["NAME"] = first[:50]
        if last:
            fields["LAST_NAME"] = last[:50]
        phones = _phones(draft.lookup) or ([profile.phone] if profile.phone else [])
        if phones:
            fields["PHONE"] = [{"VALUE": p, "VALUE_TYPE": "MOBILE"} for p in phones]
        emails = _emails(draft.lookup) or ([profile.email.lower()] if profile.email else [])
        if emails:
            fields["EMAIL"] = [{"VALUE": e, "VALUE_TYPE": "WORK"} for e in emails]
        ims = [identity_value(k, v) for k, v in sorted(draft.lookup.identities.items()) if v]
        if ims:
            fields["IM"] = [{"VALUE": value, "VALUE_TYPE": kind} for kind, value in ims]
        if draft.owner_id:
            fields["ASSIGNED_BY_ID"] = to_int(draft.owner_id, "owner id")
        fields["SOURCE_ID"] = source_id(self.settings)
        fields.update(mapped_fields(self.settings, draft.properties, "contact"))
        return fields

    def create_contact(self, draft: ContactDraft) -> CrmContact:
        """``crm.contact.add``: name, PHONE (MOBILE), EMAIL (WORK), IM
        (the channel identity), owner, source, the mapping's contact fields.
        Bitrix24 allows duplicates: nothing to recover on a conflict."""
        result = self.api.call("crm.contact.add", {"fields": self.contact_fields(draft)}).result
        contact_id = to_int(result, "new contact id")
        return CrmContact(CrmRef("contact", str(contact_id)), owner_id=draft.owner_id)

    def create_contacts(self, drafts: Mapping[str, ContactDraft]) -> dict[str, CrmContact]:
        """``crm.contact.add`` for many people, 50 commands per ``batch``
        request (FACTS 2.4; ``halt=0``: one refused contact does not stop
        the others). A command refused raises its error with
        ``error.created`` naming the contacts made."""
        keys = {f"n{n}": key for n, key in enumerate(drafts)}
        commands = [
            Command(name, "crm.contact.add", {"fields": self.contact_fields(drafts[key])})
            for name, key in keys.items()
        ]
        answer = self.api.batch(commands, halt=False)
        made: dict[str, CrmContact] = {}
        for name, key in keys.items():
            if answer.ok(name):
                contact_id = to_int(answer.results[name], "new contact id")
                made[key] = CrmContact(
                    CrmRef("contact", str(contact_id)), owner_id=drafts[key].owner_id
                )
        failed = answer.first_error(list(keys))
        if failed is not None or len(made) < len(keys):
            error = (
                failed[1]
                if failed is not None
                else PermanentError("Bitrix24 batch: a crm.contact.add did not run")
            )
            error.created = {k: c.ref for k, c in made.items()}
            raise error
        return made

    def write_contact_fields(self, contact: CrmRef, properties: Mapping[str, str]) -> None:
        """``crm.contact.update`` with the user fields the setup created for
        the properties (fields not named are left as they are)."""
        fields = mapped_fields(self.settings, properties, "contact")
        if fields:
            contact_id = to_int(contact.id, "contact id")
            self.api.call("crm.contact.update", {"id": contact_id, "fields": fields})

    def read_contact_fields(self, contact: CrmRef, names: Sequence[str]) -> dict[str, str]:
        """The contact's ``crm.contact.get`` (every field, user fields
        included: ``crm-contact-get.md``) in one ``batch`` request, beside
        ``crm.contact.userfield.list`` of the list (``enumeration``) user
        fields when a user field is asked for: a list field's value is its
        item's ``ID``, read as the item's ``VALUE`` text (an answer without
        the items, e.g. "Access denied" for a user who is no CRM
        administrator, leaves the ids). ``names`` are field codes
        (``UF_CRM_TIER``, ``TYPE_ID``, ``SOURCE_ID``; any case) or the
        mapping's properties the setup made a field for
        (:func:`~.entities.mapped_fields`). Built-in list fields
        (``TYPE_ID``, ``SOURCE_ID``) read as their codes. Several values
        (a multiple field, phones) are joined by ", "; a field without a
        value is left out. A contact Bitrix24 no longer has raises
        ``NotFoundError``."""
        codes = self._read_codes(names)
        if not codes:
            return {}
        commands = [Command("contact", "crm.contact.get", {"id": to_int(contact.id, "contact id")})]
        if any(code.startswith("UF_") for code in codes.values()):
            commands.append(
                Command(
                    "lists",
                    "crm.contact.userfield.list",
                    {"filter": {"USER_TYPE_ID": "enumeration"}},
                )
            )
        answer = self.api.batch(commands, halt=False)
        record = as_map(answer.value("contact"))
        items = _list_items(answer.get("lists"))
        found: dict[str, str] = {}
        for name, code in codes.items():
            text = _field_text(record.get(code), items.get(code, {}))
            if text:
                found[name] = text
        return found

    def _read_codes(self, names: Sequence[str]) -> dict[str, str]:
        """name -> the field code it reads, as :func:`~.entities.mapped_fields`
        finds it (a code, ``utm_*``, a mapping's property the setup made a
        field for), else the name upper-cased; a name that cannot be a code
        is left out."""
        made = self.settings.custom_fields.get("contact") or {}
        codes: dict[str, str] = {}
        for name in dict.fromkeys(names):
            bare = (name or "").strip()
            code = field_code(bare) or made.get(bare) or bare.upper()
            if bare and _CODE.fullmatch(str(code)):
                codes[name] = str(code)
        return codes

    def update_contact(self, contact: CrmRef, draft: ContactDraft) -> None:
        """Add the identity, phones and e-mails the contact lacks. A
        multifield value sent without ``ID`` is added, the old ones stay
        (``crm-contact-update.md``, example 6)."""
        contact_id = to_int(contact.id, "contact id")
        current = self.api.call("crm.contact.get", {"id": contact_id}).result
        if not isinstance(current, Mapping):
            return
        add = _missing(current, self.contact_fields(draft))
        if add:
            self.api.call("crm.contact.update", {"id": contact_id, "fields": add})


def _list_items(rows: Any) -> dict[str, dict[str, str]]:
    """``crm.contact.userfield.list`` rows -> field name -> item ID -> its
    ``VALUE`` (the ``LIST`` of a list field: ``crm_contact_userfield_add.php``)."""
    out: dict[str, dict[str, str]] = {}
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, Mapping) or not isinstance(row.get("LIST"), list):
            continue
        out[str(row.get("FIELD_NAME") or "")] = {
            str(item.get("ID")): str(item.get("VALUE") or "")
            for item in row["LIST"]
            if isinstance(item, Mapping)
        }
    return out


def _field_text(value: Any, items: Mapping[str, str]) -> str:
    """A field's value as text: a list item's text for its id, a
    multifield's ``VALUE``s and a multiple field's values joined by ", ";
    values that are not text (a file's object) are skipped."""
    parts: list[str] = []
    for part in value if isinstance(value, list) else [value]:
        if isinstance(part, Mapping):
            part = part.get("VALUE")  # a multifield value (crm_multifield)
        if isinstance(part, (str, int, float)) and not isinstance(part, bool):
            text = items.get(str(part), str(part)).strip()
            if text:
                parts.append(text)
    return ", ".join(parts)


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _same_phone(a: str, b: str) -> bool:
    """Same number whatever the formatting or trunk prefix (the last nine
    digits; Bitrix24's own duplicate search ignores formatting too)."""
    da, db = _digits(a), _digits(b)
    return len(da) >= 7 and len(db) >= 7 and da[-9:] == db[-9:]


def _missing(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The multifield values of ``wanted`` that ``current`` lacks."""
    out: dict[str, list[Any]] = {}
    for field in ("PHONE", "EMAIL", "IM"):
        have = field_values(current, field)
        for value in wanted.get(field) or []:
            new = str(value["VALUE"])
            if field == "PHONE":
                known = any(_same_phone(str(v.get("VALUE") or ""), new) for v in have)
            elif field == "EMAIL":
                known = any(str(v.get("VALUE") or "").strip().lower() == new for v in have)
            else:
                known = any(
                    str(v.get("VALUE") or "") == new
                    and str(v.get("VALUE_TYPE") or "").upper() == value["VALUE_TYPE"]
                    for v in have
                )
            if not known:
                out.setdefault(field, []).append(dict(value))
    return out
