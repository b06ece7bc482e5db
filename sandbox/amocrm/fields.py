"""Custom fields (FACTS.md 1.6): definitions, value validation, rendering.

* ``GET /<sub>/api/v4/{leads|contacts|companies}/custom_fields[/<id>]``
* ``POST /<sub>/api/v4/{leads|contacts|companies}/custom_fields`` (array)

Predefined fields: ``PHONE``/``EMAIL`` (multitext, ``is_predefined: true``,
enum codes WORK/WORKDD/MOB/FAX/HOME/OTHER and WORK/PRIV/OTHER) on contacts;
the UTM tracking fields ``UTM_SOURCE`` … ``UTM_CONTENT`` on leads (their codes
are not in FACTS: UNCONFIRMED naming).

Values: ``custom_fields_values: [{"field_id"|"field_code", "values":[…]}]``;
multitext values ``{"value", "enum_id"|"enum_code"}``; select-like values
``{"enum_id"}`` or ``{"value"}``; others ``{"value"}``. Errors use the 400
``validation-errors`` body with the item's ``request_id`` and the path
``custom_fields_values.<i>.field_id`` etc. (FACTS 1.3).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response

from .context import api, api_url, ctx, json_list, sandbox
from .errors import ItemErrors, hal, no_content
from .listing import paginate, query
from .store import Account

__all__ = ["bp", "normalize_values", "apply_values", "render_values", "value_strings",
           "field_by_code", "FIELD_TYPES"]

bp = Blueprint("fields", __name__)

#: types POST custom_fields accepts (a subset of amoCRM's; FACTS 1.6 names these)
FIELD_TYPES = frozenset({"text", "numeric", "textarea", "checkbox", "select", "multiselect",
                         "radiobutton", "date", "date_time", "birthday", "url",
                         "streetaddress", "price", "monetary", "tracking_data", "multitext"})
_ENUM_TYPES = frozenset({"select", "multiselect", "radiobutton"})
_DATE_TYPES = frozenset({"date", "date_time", "birthday"})
_ENTITY = "<any(leads,contacts,companies):entity>"


def field_by_code(account: Account, entity: str, code: str) -> dict[str, Any] | None:
    for fdef in account.fields[entity].values():
        if fdef.get("code") and fdef["code"].upper() == code.upper():
            return fdef
    return None


def _enum(fdef: dict[str, Any], *, enum_id: Any = None, value: Any = None
          ) -> dict[str, Any] | None:
    for e in fdef.get("enums") or []:
        if enum_id is not None and e["id"] == enum_id:
            return dict(e)
        if value is not None and str(e["value"]).lower() == str(value).lower():
            return dict(e)
    return None


def _one_value(fdef: dict[str, Any], raw: Any, path: str, errors: ItemErrors
               ) -> dict[str, Any] | None:
    """Validate/normalise one value of ``fdef``; report problems under ``path``."""
    if not isinstance(raw, dict):
        errors.type_error(path, "array")
        return None
    ftype = fdef["type"]
    if ftype == "multitext":
        value = raw.get("value")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            errors.blank(f"{path}.value")
            return None
        if "enum_id" in raw:
            enum = _enum(fdef, enum_id=raw["enum_id"])
            if enum is None:
                errors.add(f"{path}.enum_id")
                return None
        elif "enum_code" in raw:
            enum = _enum(fdef, value=raw["enum_code"])
            if enum is None or not isinstance(raw["enum_code"], str):
                errors.add(f"{path}.enum_code")
                return None
        else:
            enum = (fdef.get("enums") or [None])[0]  # default: the first (WORK)
        return {"value": value, "enum_id": enum["id"] if enum else None,
                "enum_code": enum["value"] if enum else None}
    if ftype in _ENUM_TYPES:
        if "enum_id" in raw:
            enum = _enum(fdef, enum_id=raw["enum_id"])
            bad = f"{path}.enum_id"
        else:
            enum = _enum(fdef, value=raw.get("value"))
            bad = f"{path}.value"
        if enum is None:
            errors.add(bad)
            return None
        return {"value": enum["value"], "enum_id": enum["id"], "enum_code": None}
    value = raw.get("value")
    if ftype == "checkbox":
        if not isinstance(value, bool):
            errors.type_error(f"{path}.value", "bool")
            return None
        return {"value": value}
    if ftype in _DATE_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.type_error(f"{path}.value", "int")
            return None
        return {"value": value}
    if ftype in {"numeric", "price", "monetary"}:
        try:
            float(str(value))
        except ValueError:
            errors.type_error(f"{path}.value", "numeric")
            return None
        return {"value": str(value)}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        errors.type_error(f"{path}.value", "string")
        return None
    return {"value": value}


def normalize_values(account: Account, entity: str, raw: Any, errors: ItemErrors,
                     prefix: str = "") -> list[dict[str, Any]]:
    """``custom_fields_values`` of one item -> ``[{"field_id", "values"}]``.

    An empty/null ``values`` means "clear this field". Problems go to
    ``errors`` with paths like ``custom_fields_values.0.field_id`` (FACTS 1.3)."""
    base = f"{prefix}custom_fields_values"
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.type_error(base, "array")
        return []
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        path = f"{base}.{i}"
        if not isinstance(item, dict):
            errors.type_error(path, "array")
            continue
        fdef = None
        if "field_id" in item:
            fdef = account.fields[entity].get(item["field_id"]) \
                if isinstance(item["field_id"], int) else None
            if fdef is None:
                errors.add(f"{path}.field_id")
                continue
        elif "field_code" in item:
            code = item["field_code"]
            fdef = field_by_code(account, entity, code) if isinstance(code, str) else None
            if fdef is None:
                errors.add(f"{path}.field_code")
                continue
        else:
            errors.blank(f"{path}.field_id")
            continue
        values = item.get("values")
        if values is None:
            out.append({"field_id": fdef["id"], "values": []})
            continue
        if not isinstance(values, list):
            errors.type_error(f"{path}.values", "array")
            continue
        norm = [_one_value(fdef, v, f"{path}.values.{j}", errors) for j, v in enumerate(values)]
        out.append({"field_id": fdef["id"], "values": [v for v in norm if v is not None]})
    return out


def apply_values(entity_dict: dict[str, Any], normalized: list[dict[str, Any]]) -> None:
    """Write normalised values: each field sent replaces that field's values;
    fields not sent stay. For multitext on PATCH the replace semantics are
    UNCONFIRMED (FACTS 1.6: "probably replace")."""
    current = {c["field_id"]: c for c in entity_dict.get("custom_fields_values") or []}
    for item in normalized:
        if item["values"]:
            current[item["field_id"]] = {"field_id": item["field_id"],
                                         "values": list(item["values"])}
        else:
            current.pop(item["field_id"], None)
    entity_dict["custom_fields_values"] = list(current.values())


def render_values(account: Account, entity: str, stored: list[dict[str, Any]] | None
                  ) -> list[dict[str, Any]] | None:
    """FACTS 1.6 read-back: ``{"field_id","field_name","field_code","field_type","values"}``;
    ``null`` when nothing is filled (FACTS 1.5: ``custom_fields_values (array|null)``)."""
    out = []
    for item in stored or []:
        fdef = account.fields[entity].get(item["field_id"])
        if fdef is None:
            continue
        values = []
        for v in item["values"]:
            if fdef["type"] == "multitext":
                values.append({"value": v["value"], "enum_id": v["enum_id"],
                               "enum_code": v["enum_code"]})
            elif fdef["type"] in _ENUM_TYPES:
                values.append({"value": v["value"], "enum_id": v["enum_id"],
                               "enum_code": v.get("enum_code")})
            else:
                values.append({"value": v["value"]})
        out.append({"field_id": fdef["id"], "field_name": fdef["name"],
                    "field_code": fdef["code"], "field_type": fdef["type"], "values": values})
    return out or None


def value_strings(stored: list[dict[str, Any]] | None) -> Iterator[tuple[int, str]]:
    """(field id, value as text) of every filled value (for ``?query=``)."""
    for item in stored or []:
        for v in item["values"]:
            yield item["field_id"], str(v.get("value", ""))


# -- the custom_fields API ----------------------------------------------------------------


def _render_field(account: Account, fdef: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in fdef.items()}
    body["_links"] = {"self": {"href": api_url(
        account, f"{fdef['entity_type']}/custom_fields/{fdef['id']}")}}
    return body


@bp.route(f"/<subdomain>/api/v4/{_ENTITY}/custom_fields", methods=["GET"])
@api
def list_fields(subdomain: str, entity: str) -> Response:
    account = ctx().account
    types = query().get("filter", {}).get("type") if isinstance(query().get("filter"),
                                                                dict) else None
    wanted = set(types.values()) if isinstance(types, dict) else ({types} if types else None)
    with sandbox().store.lock:
        items = sorted(account.fields[entity].values(), key=lambda f: (f["sort"], f["id"]))
        items = [f for f in items if wanted is None or f["type"] in wanted]
        return paginate(account, f"{entity}/custom_fields", "custom_fields", items,
                        lambda f: _render_field(account, f), {"_total_items": len(items)})


@bp.route(f"/<subdomain>/api/v4/{_ENTITY}/custom_fields/<int:field_id>", methods=["GET"])
@api
def get_field(subdomain: str, entity: str, field_id: int) -> Response:
    account = ctx().account
    with sandbox().store.lock:
        fdef = account.fields[entity].get(field_id)
        if fdef is None:
            return no_content()
        return hal(_render_field(account, fdef))


@bp.route(f"/<subdomain>/api/v4/{_ENTITY}/custom_fields", methods=["POST"])
@api
def create_fields(subdomain: str, entity: str) -> Response:
    """Create fields (admin rights are needed in amoCRM; we do not check)."""
    sb = sandbox()
    account = ctx().account
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        codes = {str(f["code"]).upper() for f in account.fields[entity].values() if f["code"]}
        for index, item in enumerate(items):
            errors.item(str(item.get("request_id", index)))
            name = item.get("name")
            ftype = item.get("type") if isinstance(item.get("type"), str) else None
            if not isinstance(name, str) or not name.strip():
                errors.blank("name")
            if ftype not in FIELD_TYPES:
                errors.add("type")
            if ftype in _ENUM_TYPES or ftype == "multitext":
                enums = item.get("enums")
                if not isinstance(enums, list) or not enums or not all(
                        isinstance(e, dict) and isinstance(e.get("value"), str) for e in enums):
                    errors.blank("enums")
            code = item.get("code")
            if code is not None:
                if not isinstance(code, str) or not code.strip():
                    errors.type_error("code", "string")
                elif code.upper() in codes:
                    errors.add("code", "NotUnique", "This value is already used.")
                else:
                    codes.add(code.upper())
        errors.raise_if_any()
        created = []
        for index, item in enumerate(items):
            fdef = sb.store.add_field(account, entity, {
                "name": item["name"].strip(), "type": item["type"], "code": item.get("code"),
                "sort": item.get("sort", 500), "is_api_only": item.get("is_api_only"),
                "enums": item.get("enums") if item["type"] in _ENUM_TYPES | {"multitext"}
                else None, "group_id": item.get("group_id")})
            body = _render_field(account, fdef)
            body["request_id"] = str(item.get("request_id", index))
            created.append(body)
        return hal({"_total_items": len(created), "_embedded": {"custom_fields": created}})
