"""CRM records (leads, contacts, deals): storage rules, validation, output.

Used by the REST handlers (:mod:`.crm_methods`), Open Lines (:mod:`.openlines`)
and the control API. Sources: crm-lead-add.md, crm-contact-add.md,
crm-deal-add.md and their update/get/list/fields pages; crm/data-types.md
(``crm_multifield``); FACTS.md 2.7.

* Values are kept the way Bitrix24 returns them: ids and amounts as strings
  (``"ID": "123"``, ``"OPPORTUNITY": "0.00"``), flags ``"Y"``/``"N"``,
  datetimes ISO-8601 in the portal's zone, unset text ``null``.
* Which keys a record has comes from the vendor's ``crm.*.fields`` catalogue
  (:mod:`.spec`): every single-valued field, plus ``UF_CRM_*`` user fields and
  the multifields that hold values (crm-lead-get.md shows ``PHONE``/``IM`` and
  no empty ``EMAIL``).
* Multifields: add ``[{"VALUE", "VALUE_TYPE"}]``; on update an entry with
  ``ID`` and a ``VALUE`` overwrites, an ``ID`` with ``DELETE=Y``, an empty
  ``VALUE`` or no ``VALUE`` deletes, an entry without ``ID`` adds
  (crm-contact-update.md "Working with Multiple Fields").
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from .errors import B24Error, core_error, crm_error
from .params import as_bool, as_int, as_str
from .spec import fields_catalog
from .store import Entity, Portal

__all__ = ["KINDS", "MULTI", "VALUE_TYPES", "catalog", "add_entity", "update_entity",
           "entity_json", "require_access", "parse_id", "normalize_phone", "get_entity"]

KINDS = ("lead", "contact", "deal")
MULTI = ("PHONE", "EMAIL", "WEB", "IM", "LINK")
#: crm/data-types.md crm_multifield VALUE_TYPE per TYPE_ID (LINK: UNCONFIRMED)
VALUE_TYPES = {
    "PHONE": ("WORK", "MOBILE", "FAX", "HOME", "PAGER", "MAILING", "OTHER"),
    "EMAIL": ("WORK", "HOME", "MAILING", "OTHER"),
    "WEB": ("WORK", "HOME", "VK", "LIVEJOURNAL", "TWITTER", "OTHER"),
    "IM": ("TELEGRAM", "VK", "SKYPE", "VIBER", "BITRIX24", "OPENLINE", "IMOL", "ICQ", "MSN",
           "JABBER", "OTHER"),
    "LINK": ("USER", "OTHER"),
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: keys the vendor's get examples show beyond the fields catalogue
_EXTRA_KEYS = {"contact": ("FACE_ID",), "lead": (), "deal": ()}
_CATALOGS: dict[str, dict[str, Any]] = {}


def catalog(kind: str) -> dict[str, Any]:
    """The vendor's field catalogue of ``kind`` (cached; callers must not mutate)."""
    if kind not in _CATALOGS:
        _CATALOGS[kind] = fields_catalog(kind)
    return _CATALOGS[kind]


def _scalar_keys(kind: str) -> list[str]:
    return [k for k, v in catalog(kind).items()
            if v["type"] != "crm_multifield" and not v.get("isMultiple")] + list(
        _EXTRA_KEYS[kind])


def require_access(portal: Portal, user_id: int, write: bool) -> None:
    """crm-lead-add.md: no permission -> ``{"error": "", "error_description":
    "Access denied."}`` (400, as crm-contact-add.md states)."""
    level = portal.crm_access(user_id)
    if level == "none" or (write and level != "write"):
        raise crm_error("Access denied.")


def parse_id(params: dict[str, Any]) -> int:
    """The ``id`` parameter (crm-lead-get.md: "ID is not defined or invalid.")."""
    raw = params.get("id", params.get("ID"))
    value = as_int(raw)
    if value is None or value <= 0:
        raise crm_error("ID is not defined or invalid.")
    return value


def get_entity(portal: Portal, kind: str, entity_id: int, missing: str = "Not found") -> Entity:
    ent = portal.entities[kind].get(entity_id)
    if ent is None:
        raise crm_error(missing)
    return ent


def normalize_phone(value: str) -> str:
    """Digits of a phone without its extension (crm-duplicate-find-by-comm.md:
    "The search does not consider the phone extension")."""
    head = re.split(r"(?i)\s*(?:ext\.?|extension|доб\.?|x|#|,|;)\s*\d", value, maxsplit=1)[0]
    return re.sub(r"\D", "", head)


# -- value coercion ------------------------------------------------------------------------


def _coerce(kind: str, key: str, value: Any) -> Any:
    desc = catalog(kind).get(key)
    if key.startswith("UF_"):
        return value
    ftype = desc["type"] if desc else "string"
    if value is None or value == "":
        return None if ftype not in ("char",) else "N"
    if ftype == "char":
        return "Y" if as_bool(value) else "N"
    if ftype == "double":
        try:
            return f"{float(str(value).replace(',', '.')):.2f}"
        except ValueError:
            raise crm_error(f'Invalid value for the "{desc["title"] if desc else key}" '
                            'field') from None
    if ftype in ("integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_category",
                 "crm_quote", "location"):
        number = as_int(value)
        if number is None:
            raise crm_error(f'Invalid value for the "{desc["title"] if desc else key}" field')
        return str(number)
    return as_str(value)


def _validate(portal: Portal, kind: str, fields: dict[str, Any], strict: bool) -> None:
    """Directory and user references. UNCONFIRMED (switch strict_field_validation):
    the documented shape is deal-add's ``Invalid value for the "Currency" field``."""
    if not strict:
        return
    titles = {k: v["title"] for k, v in catalog(kind).items()}
    checks: list[tuple[str, list[str]]] = [("SOURCE_ID", portal.status_ids("SOURCE"))]
    if kind == "lead":
        checks.append(("STATUS_ID", portal.status_ids("STATUS")))
    if kind == "deal":
        checks.append(("TYPE_ID", portal.status_ids("DEAL_TYPE")))
        checks.append(("CATEGORY_ID", [str(c) for c in portal.category_ids()]))
    for key, allowed in checks:
        if fields.get(key) is not None and str(fields[key]) not in allowed:
            raise crm_error(f'Invalid value for the "{titles.get(key, key)}" field')
    assigned = fields.get("ASSIGNED_BY_ID")
    if assigned is not None and int(assigned) not in portal.users:
        raise crm_error(f'Invalid value for the "{titles["ASSIGNED_BY_ID"]}" field')


def _multi_entry(type_id: str, raw: Any, strict: bool) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        return None
    value = as_str(raw.get("VALUE")).strip()
    if not value:
        return None
    default_type = "OTHER" if type_id in ("IM", "LINK") else "WORK"
    value_type = as_str(raw.get("VALUE_TYPE") or default_type).upper()
    if strict and value_type not in VALUE_TYPES[type_id]:
        raise crm_error(f'Invalid value for the "{type_id}" field')
    if type_id == "EMAIL" and not _EMAIL.match(value):
        # crm-contact-add.md: ERROR_CORE "The field Work e-mail contains an invalid address"
        raise core_error(f'The field "{value_type.capitalize()} e-mail" contains an invalid '
                         'address')
    return {"VALUE_TYPE": value_type, "VALUE": value, "TYPE_ID": type_id}


def _apply_multi(portal: Portal, ent: Entity, type_id: str, raw: Any, strict: bool) -> None:
    entries = raw if isinstance(raw, list) else list(raw.values()) if isinstance(raw, dict) else []
    current = ent.multi.setdefault(type_id, [])
    for item in entries:
        if not isinstance(item, dict):
            continue
        item_id = as_int(item.get("ID"))
        if item_id is None:
            entry = _multi_entry(type_id, item, strict)
            if entry is not None:
                current.append({"ID": str(portal.next_id("multifield")), **entry})
            continue
        target = next((m for m in current if m["ID"] == str(item_id)), None)
        if target is None:
            continue  # another record's value id: ignored (UNCONFIRMED)
        if as_bool(item.get("DELETE")) or not as_str(item.get("VALUE")).strip():
            current.remove(target)
            continue
        entry = _multi_entry(type_id, {"VALUE_TYPE": item.get("VALUE_TYPE") or
                                       target["VALUE_TYPE"], "VALUE": item["VALUE"]}, strict)
        if entry is not None:
            target.update(entry)
    if not current:
        ent.multi.pop(type_id, None)


def _refresh_flags(kind: str, ent: Entity) -> None:
    if kind == "deal":
        return
    ent.fields["HAS_PHONE"] = "Y" if ent.multi.get("PHONE") else "N"
    ent.fields["HAS_EMAIL"] = "Y" if ent.multi.get("EMAIL") else "N"
    ent.fields["HAS_IMOL"] = "Y" if any(m["VALUE_TYPE"] in ("OPENLINE", "IMOL")
                                        for m in ent.multi.get("IM", [])) else "N"


def _writable(portal: Portal, kind: str, fields: dict[str, Any], *, updating: bool,
              undeclared: str = "accept") -> dict[str, Any]:
    out: dict[str, Any] = {}
    cat = catalog(kind)
    declared = portal.user_fields.get(kind, {})
    for key, value in fields.items():
        key = str(key).upper() if not str(key).startswith("UF_") else str(key)
        if key in MULTI:
            continue
        if key.startswith("UF_CRM_"):
            # a user field's value is stored as given (UNCONFIRMED typing); one the
            # portal does not have: the switch undeclared_user_fields
            if key in declared or undeclared == "accept":
                out[key] = value
            continue
        if key.startswith("PARENT_ID_"):
            out[key] = value
            continue
        desc = cat.get(key)
        if desc is None or desc["isReadOnly"] or (updating and desc.get("isImmutable")):
            continue  # unknown, read-only and (on update) immutable fields are ignored
        if desc.get("isMultiple"):
            out[key] = value if isinstance(value, list) else [value]
            continue
        out[key] = _coerce(kind, key, value)
    return out


def _stage(portal: Portal, ent: Entity, stage: str | None, strict: bool) -> None:
    category = int(ent.fields.get("CATEGORY_ID") or 0)
    entity_id = portal.stage_entity(category)
    allowed = portal.status_ids(entity_id)
    if stage is None:
        stage = ent.fields.get("STAGE_ID") or allowed[0]
    if stage not in allowed:
        if strict:
            raise crm_error('Invalid value for the "Stage" field')
    ent.fields["STAGE_ID"] = stage
    semantic = portal.semantic_id(entity_id, str(stage))
    ent.fields["STAGE_SEMANTIC_ID"] = semantic
    ent.fields["CLOSED"] = "N" if semantic == "P" else "Y"


def set_lead_status(portal: Portal, ent: Entity, status: str, user_id: int, now: float) -> None:
    ent.fields["STATUS_ID"] = status
    semantic = portal.semantic_id("STATUS", status)
    ent.fields["STATUS_SEMANTIC_ID"] = semantic
    ent.fields["DATE_CLOSED"] = portal.now_str(now) if semantic != "P" else ""
    ent.fields["MOVED_BY_ID"] = str(user_id)
    ent.fields["MOVED_TIME"] = portal.now_str(now)


def _is_link(key: str, value: Any) -> bool:
    """A multiple catalogue field (``CONTACT_IDS``...), kept apart; a multiple user
    field's list is its value."""
    return isinstance(value, list) and not key.startswith("UF_")


def add_entity(portal: Portal, kind: str, fields: dict[str, Any], user_id: int, now: float,
               strict: bool, undeclared: str = "accept") -> Entity:
    """Create a record from ``fields`` (crm.<kind>.add semantics)."""
    values = _writable(portal, kind, fields, updating=False, undeclared=undeclared)
    _validate(portal, kind, values, strict)
    new_id = portal.next_id(kind)
    stamp = portal.now_str(now)
    base: dict[str, Any] = {key: None for key in _scalar_keys(kind)}
    base.update({"ID": str(new_id), "ASSIGNED_BY_ID": str(user_id),
                 "CREATED_BY_ID": str(user_id), "MODIFY_BY_ID": str(user_id),
                 "DATE_CREATE": stamp, "DATE_MODIFY": stamp, "OPENED": "Y",
                 "LAST_ACTIVITY_TIME": stamp, "LAST_ACTIVITY_BY": str(user_id)})
    if "BIRTHDATE" in base:
        base["BIRTHDATE"] = ""
    if kind == "lead":
        base.update({"TITLE": f"Lead #{new_id}", "STATUS_ID": "NEW", "CURRENCY_ID": "USD",
                     "OPPORTUNITY": "0.00", "IS_MANUAL_OPPORTUNITY": "N",
                     "IS_RETURN_CUSTOMER": "N", "DATE_CLOSED": "",
                     "MOVED_BY_ID": str(user_id), "MOVED_TIME": stamp})
    elif kind == "contact":
        base.update({"EXPORT": "Y"})
    else:
        day = dt.date.fromisoformat(stamp[:10])
        base.update({"TITLE": f"Deal #{new_id}", "TYPE_ID": portal.status_ids("DEAL_TYPE")[0],
                     "CATEGORY_ID": "0", "CURRENCY_ID": "USD", "OPPORTUNITY": "0.00",
                     "IS_MANUAL_OPPORTUNITY": "N", "TAX_VALUE": "0.00",
                     "BEGINDATE": f"{day.isoformat()}T00:00:00{stamp[19:]}",
                     "CLOSEDATE": f"{(day + dt.timedelta(days=7)).isoformat()}T00:00:00"
                                  f"{stamp[19:]}",
                     "IS_NEW": "Y", "IS_RECURRING": "N", "IS_RETURN_CUSTOMER": "N",
                     "IS_REPEATED_APPROACH": "N", "SOURCE_ID": portal.status_ids("SOURCE")[0],
                     "MOVED_BY_ID": str(user_id), "MOVED_TIME": stamp})
    ent = Entity(new_id, base)
    links = {k: v for k, v in values.items() if _is_link(k, v)}
    ent.fields.update({k: v for k, v in values.items() if not _is_link(k, v)})
    if links:
        ent.fields["_links"] = links
    if kind == "lead":
        set_lead_status(portal, ent, str(ent.fields["STATUS_ID"]), user_id, now)
        # crm-lead-add.md: IS_RETURN_CUSTOMER becomes Y with CONTACT_ID or COMPANY_ID
        if ent.fields.get("CONTACT_ID") or ent.fields.get("COMPANY_ID"):
            ent.fields["IS_RETURN_CUSTOMER"] = "Y"
    if kind == "deal":
        _stage(portal, ent, values.get("STAGE_ID"), strict)
    for type_id in MULTI:
        if type_id in fields and kind != "deal":
            _apply_multi(portal, ent, type_id, fields[type_id], strict)
    _refresh_flags(kind, ent)
    portal.entities[kind][new_id] = ent
    return ent


def update_entity(portal: Portal, kind: str, ent: Entity, fields: dict[str, Any], user_id: int,
                  now: float, strict: bool, undeclared: str = "accept") -> None:
    """Apply ``fields`` (crm.<kind>.update semantics) to ``ent`` in place."""
    values = _writable(portal, kind, fields, updating=True, undeclared=undeclared)
    _validate(portal, kind, values, strict)
    multi_before = {k: [dict(m) for m in v] for k, v in ent.multi.items()}
    try:
        for type_id in MULTI:
            if type_id in fields and kind != "deal":
                _apply_multi(portal, ent, type_id, fields[type_id], strict)
    except B24Error:
        ent.multi = multi_before
        raise
    old_status = ent.fields.get("STATUS_ID")
    if kind == "deal" and "STAGE_ID" in values:
        _stage(portal, ent, values.pop("STAGE_ID"), strict)
    for key, value in values.items():
        if _is_link(key, value):
            ent.fields.setdefault("_links", {})[key] = value
        else:
            ent.fields[key] = value
    if kind == "lead" and ent.fields.get("STATUS_ID") != old_status:
        set_lead_status(portal, ent, str(ent.fields["STATUS_ID"]), user_id, now)
    stamp = portal.now_str(now)
    ent.fields.update({"MODIFY_BY_ID": str(user_id), "DATE_MODIFY": stamp})
    _refresh_flags(kind, ent)


def entity_json(portal: Portal, kind: str, ent: Entity,
                select: list[str] | None = None) -> dict[str, Any]:
    """A record as crm.<kind>.get (``select`` None) or crm.<kind>.list returns it.

    crm-lead-list.md select masks: ``*`` = all but user fields and multifields
    (the default), ``UF_*`` = user fields; multifields only by name. The sandbox
    always includes ``ID`` (UNCONFIRMED)."""
    declared = portal.user_fields.get(kind, {})
    uf_keys = list(declared) + [k for k in ent.fields
                                if k.startswith(("UF_CRM_", "PARENT_ID_")) and k not in declared]
    scalars = {k: ent.fields.get(k) for k in _scalar_keys(kind)}
    if select is None:
        out = dict(scalars)
        out.update({k: ent.fields.get(k) for k in uf_keys})
        out.update({t: [dict(m) for m in ent.multi[t]] for t in MULTI if ent.multi.get(t)})
        return out
    wanted = [str(s) for s in select] or ["*"]
    out = {"ID": scalars["ID"]}
    for item in wanted:
        if item == "*":
            out.update(scalars)
        elif item == "UF_*":
            out.update({k: ent.fields.get(k) for k in uf_keys})
        elif item in MULTI:
            if ent.multi.get(item):
                out[item] = [dict(m) for m in ent.multi[item]]
        elif item in scalars or item in uf_keys:
            out[item] = scalars.get(item, ent.fields.get(item))
    return out
