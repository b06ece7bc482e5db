"""Custom-field values (FACTS 1.6) and the bridge's field names.

Pure helpers: read ``custom_fields_values`` back, build them for writes,
compare phone numbers, name the fields ``setup()`` creates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.errors import NotReadyError, PermanentError

__all__ = [
    "CONVERSATION_FIELD_NAME",
    "ENTITY_PATHS",
    "as_map",
    "digits",
    "field_values",
    "identity_field_name",
    "kind_label",
    "oldest",
    "phones_match",
    "text_value",
    "to_int",
]

#: the lead text field holding the bridge's conversation uid
CONVERSATION_FIELD_NAME = "Bridge conversation"
#: the mapping names object types singular; amoCRM's paths are plural
ENTITY_PATHS: dict[str, str] = {
    "lead": "leads",
    "leads": "leads",
    "contact": "contacts",
    "contacts": "contacts",
    "company": "companies",
    "companies": "companies",
}


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (junk-tolerant reads)."""
    return value if isinstance(value, Mapping) else {}


def kind_label(kind: str) -> str:
    """A channel kind in words (``telegram`` -> ``Telegram``). Notes, lead
    tags and contact names use the channel's name the core gives
    (``channel_title``, from the channel registry); this is for where a
    name must never change (:func:`identity_field_name`) or none was given."""
    return kind.replace("_", " ").title()


def identity_field_name(kind: str) -> str:
    """The contact field holding a person's id on a channel ("Telegram ID").
    Setup finds its field again by this name in accounts set up earlier, so
    it follows the channel's kind, not a display title that may change."""
    return f"{kind_label(kind)} ID"


def digits(value: object) -> str:
    return re.sub(r"\D", "", str(value or ""))


def phones_match(stored: object, e164: str) -> bool:
    """A phone a rep typed (``8 (916) 123-45-67``, ``+44 (20) 7946-0123``)
    against an E.164 number: same digits, or Russia's trunk prefix 8 for +7
    (amoCRM is mostly used in Russia; how its own search normalises numbers
    is UNCONFIRMED, FACTS 1.5)."""
    got, want = digits(stored), digits(e164)
    if not got or not want:
        return False
    if got == want:
        return True
    return len(got) == 11 and got.startswith("8") and want == "7" + got[1:]


def to_int(value: object, what: str) -> int:
    text = str(value).strip() if value is not None else ""
    if not text.lstrip("-").isdigit():
        raise PermanentError(f"amoCRM {what} must be a numeric id (got {text[:40]!r})")
    return int(text)


def field_values(
    entity: Mapping[str, Any], *, field_id: object = None, code: str | None = None
) -> list[Mapping[str, Any]]:
    """The values of one field of an entity read back from amoCRM."""
    out: list[Mapping[str, Any]] = []
    for field in entity.get("custom_fields_values") or []:
        if not isinstance(field, Mapping):
            continue
        if field_id is not None and str(field.get("field_id")) != str(field_id):
            continue
        if code is not None and str(field.get("field_code") or "").upper() != code:
            continue
        out.extend(v for v in field.get("values") or [] if isinstance(v, Mapping))
    return out


def text_value(field_id: int | str, value: str) -> dict[str, Any]:
    return {"field_id": int(field_id), "values": [{"value": str(value)}]}


def has_value(entity: Mapping[str, Any], field_id: object, wanted: str) -> bool:
    return any(
        str(v.get("value") or "").strip() == wanted for v in field_values(entity, field_id=field_id)
    )


def oldest(items: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    def key(item: Mapping[str, Any]) -> tuple[int, str]:
        raw = str(item.get("id", ""))
        return (int(raw), raw) if raw.isdigit() else (1 << 62, raw)

    items = list(items)
    return min(items, key=key) if items else None


def custom_values(
    properties: Mapping[str, str], ids: Mapping[str, Any], object_type: str
) -> list[dict[str, Any]]:
    """Mapping properties (name -> rendered value) as field values; a name
    ``setup()`` did not create is a configuration problem with one fix."""
    out = []
    for name, value in properties.items():
        if value in (None, ""):
            continue
        field_id = ids.get(name)
        if field_id is None:
            # the setup creates it: a mapping changed since the last setup waits for it
            raise NotReadyError(
                f"amoCRM {object_type} field {name!r} is not set up: "
                "run `bridge crm setup --tenant <slug>` "
                "for this tenant after changing the mapping"
            )
        out.append(text_value(field_id, value))
    return out


def merge_fields(fields: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per field (later values win) - amoCRM refuses duplicates."""
    seen: dict[str, dict[str, Any]] = {}
    for field in fields:
        key = str(field.get("field_id") or field.get("field_code"))
        seen[key] = field
    return list(seen.values())
