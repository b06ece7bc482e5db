"""CRM REST methods: ``crm.{lead,contact,deal}.{add,update,get,list,fields}``,
``crm.status.list``, ``crm.category.list``, ``crm.duplicate.findbycomm``,
``crm.multifield.fields`` (scope ``crm``; pages under api-reference/crm/).

Errors follow each page: 400 with ``"error": ""`` for access, id and
not-found problems (crm-lead-get.md, crm-contact-update.md: "Contact is not
found"), ``crm.duplicate.findbycomm`` with the text in ``error``.
"""

from __future__ import annotations

import re
from typing import Any

from .context import PAGE_SIZE, CallCtx, ListResult, method
from .crm import (
    KINDS,
    add_entity,
    catalog,
    entity_json,
    get_entity,
    normalize_phone,
    parse_id,
    require_access,
    update_entity,
)
from .errors import B24Error, crm_error
from .params import as_int
from .spec import multifield_catalog
from .userfields import label_text

__all__ = ["apply_filter", "page"]

_OPS = re.compile(r"^(>=|<=|!@|!%=|!=%|!%|=%|%=|!=|@|>|<|%|=|!)?(.*)$")
_UPDATE_MISSING = {"lead": "Not found", "contact": "Contact is not found", "deal": "Not found"}


def _num(value: Any) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def _like(pattern: str, value: str) -> bool:
    regex = "^" + ".*".join(re.escape(p) for p in pattern.lower().split("%")) + "$"
    return re.match(regex, value.lower(), re.S) is not None


def _test(op: str, actual: Any, wanted: Any) -> bool:
    if op in ("@", "!@"):
        options = wanted if isinstance(wanted, list) else [wanted]
        hit = any(_test("=", actual, o) for o in options)
        return hit if op == "@" else not hit
    text = "" if actual is None else str(actual)
    want = "" if wanted is None else str(wanted)
    if op in ("%", "!%"):
        hit = want.lower() in text.lower()
        return hit if op == "%" else not hit
    if op in ("=%", "%=", "!=%", "!%="):
        hit = _like(want, text)
        return not hit if op.startswith("!") else hit
    a, w = _num(actual), _num(wanted)
    if op in (">", ">=", "<", "<="):
        if a is None or w is None:
            left, right = text, want
            return {">": left > right, ">=": left >= right, "<": left < right,
                    "<=": left <= right}[op]
        return {">": a > w, ">=": a >= w, "<": a < w, "<=": a <= w}[op]
    equal = (a == w) if (a is not None and w is not None) else text.lower() == want.lower()
    return not equal if op in ("!", "!=") else equal


def apply_filter(rows: list[dict[str, Any]], flt: dict[str, Any]) -> list[dict[str, Any]]:
    """crm-lead-list.md filter prefixes (>=, >, <=, <, @, !@, %, =%, %=, !%, =, !=, !).
    A multifield key (``PHONE``, ``EMAIL``…) matches when any value matches."""
    out = []
    for row in rows:
        ok = True
        for raw_key, wanted in flt.items():
            match = _OPS.match(str(raw_key))
            assert match is not None
            op, key = match.group(1) or "=", match.group(2)
            actual = row.get(key)
            if isinstance(actual, list) and actual and isinstance(actual[0], dict):
                values = [m.get("VALUE") for m in actual]
                negative = op in ("!", "!=", "!@", "!%", "!=%", "!%=")
                hits = [_test(op, v, wanted) for v in values]
                ok = all(hits) if negative else any(hits)
            else:
                ok = _test(op, actual, wanted)
            if not ok:
                break
        if ok:
            out.append(row)
    return out


def _sort_key(value: Any) -> tuple[int, float, str]:
    number = _num(value)
    return (0, number, "") if number is not None else (1, 0.0, "" if value is None else
                                                        str(value).lower())


def _order(rows: list[dict[str, Any]], order: dict[str, Any], default: str) -> None:
    """Stable multi-key sort, the first ``order`` key most significant."""
    for key, direction in reversed(list(order.items()) or [(default, "ASC")]):
        field = str(key)

        def sort_key(row: dict[str, Any], field: str = field) -> tuple[int, float, str]:
            return _sort_key(row.get(field))

        rows.sort(key=sort_key, reverse=str(direction).upper() == "DESC")


def page(items: list[Any], params: dict[str, Any]) -> ListResult:
    """One page of 50 from ``start`` (list-methods-pecularities.md)."""
    start = max(as_int(params.get("start")) or 0, 0)
    chunk = items[start:start + PAGE_SIZE]
    nxt = start + PAGE_SIZE if start + PAGE_SIZE < len(items) else None
    return ListResult(chunk, len(items), nxt)


def _dict_param(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if value in (None, "", []):
        return {}
    if not isinstance(value, dict):
        raise crm_error(f"Parameter '{name}' must be array.")
    return value


# -- lead / contact / deal ----------------------------------------------------------------


def _add(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> int:
        require_access(ctx.portal, ctx.auth.user_id, write=True)
        fields = params.get("fields")
        if not isinstance(fields, dict):
            raise crm_error("Parameter 'fields' must be array.")
        if params.get("params") not in (None, "") and not isinstance(params.get("params"), dict):
            raise crm_error("Parameter 'params' must be array.")
        ent = add_entity(ctx.portal, kind, fields, ctx.auth.user_id, ctx.now(),
                         bool(ctx.cfg["strict_field_validation"]),
                         str(ctx.cfg["undeclared_user_fields"]))
        ctx.fire(f"ONCRM{kind.upper()}ADD", {"FIELDS": {"ID": str(ent.id)}}, ctx.auth.user_id)
        return ent.id
    return handler


def _update(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> bool:
        require_access(ctx.portal, ctx.auth.user_id, write=True)
        entity_id = parse_id(params)
        ent = get_entity(ctx.portal, kind, entity_id, _UPDATE_MISSING[kind])
        fields = params.get("fields")
        if not isinstance(fields, dict):
            raise crm_error("Parameter 'fields' must be array.")
        update_entity(ctx.portal, kind, ent, fields, ctx.auth.user_id, ctx.now(),
                      bool(ctx.cfg["strict_field_validation"]),
                      str(ctx.cfg["undeclared_user_fields"]))
        ctx.fire(f"ONCRM{kind.upper()}UPDATE", {"FIELDS": {"ID": str(ent.id)}},
                 ctx.auth.user_id)
        return True
    return handler


def _get(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
        require_access(ctx.portal, ctx.auth.user_id, write=False)
        ent = get_entity(ctx.portal, kind, parse_id(params))
        return entity_json(ctx.portal, kind, ent)
    return handler


def _list(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
        require_access(ctx.portal, ctx.auth.user_id, write=False)
        flt = _dict_param(params, "filter")
        order = _dict_param(params, "order")
        select = params.get("select")
        select_list = [str(s) for s in select] if isinstance(select, list) else (
            [str(select)] if isinstance(select, str) and select else [])
        portal = ctx.portal
        full = [entity_json(portal, kind, e) for _, e in sorted(portal.entities[kind].items())]
        rows = apply_filter(full, flt)
        _order(rows, order, "ID")
        result = page(rows, params)
        ents = portal.entities[kind]
        result.items = [entity_json(portal, kind, ents[int(r["ID"])], select_list)
                        for r in result.items]
        return result
    return handler


def _fields(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(catalog(kind))
        language = str(ctx.portal.cfg.get("language") or "en")
        for name, uf in ctx.portal.user_fields.get(kind, {}).items():

            def label(key: str, uf: dict[str, Any] = uf, name: str = name) -> str:
                return label_text(uf, key, language) or name

            # UNCONFIRMED shape for user fields (the stored examples show none)
            out[name] = {"type": uf["USER_TYPE_ID"],
                         "isRequired": uf["MANDATORY"] == "Y", "isReadOnly": False,
                         "isImmutable": False, "isMultiple": uf["MULTIPLE"] == "Y",
                         "isDynamic": True, "title": name,
                         "listLabel": label("LIST_COLUMN_LABEL"),
                         "formLabel": label("EDIT_FORM_LABEL"),
                         "filterLabel": label("LIST_FILTER_LABEL"), "settings": []}
        return out
    return handler


for _kind in KINDS:
    method(f"crm.{_kind}.add", scope="crm")(_add(_kind))
    method(f"crm.{_kind}.update", scope="crm")(_update(_kind))
    method(f"crm.{_kind}.get", scope="crm")(_get(_kind))
    method(f"crm.{_kind}.list", scope="crm")(_list(_kind))
    method(f"crm.{_kind}.fields", scope="crm")(_fields(_kind))


@method("crm.multifield.fields", scope="crm")
def multifield_fields(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    return multifield_catalog()


# -- directories --------------------------------------------------------------------------


@method("crm.status.list", scope="crm")
def status_list(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
    """crm-status-list.md: filter/order over the directory rows."""
    require_access(ctx.portal, ctx.auth.user_id, write=False)
    try:
        flt = _dict_param(params, "filter")
        order = _dict_param(params, "order")
    except B24Error:
        raise B24Error(400, "Invalid parameters.", "Incorrect parameters passed.") from None
    rows = apply_filter([dict(r) for r in ctx.portal.statuses], flt)
    _order(rows, order, "SORT")
    return page(rows, params)


@method("crm.category.list", scope="crm")
def category_list(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
    """crm-category-list.md. Deals (2) have the portal's pipelines; contacts (3) just
    the default one; leads (1) no pipelines (ENTITY_TYPE_NOT_SUPPORTED); anything
    else is an unknown smart process (NOT_FOUND). The 1/3 answers are our reading."""
    type_id = as_int(params.get("entityTypeId"))
    if type_id == 1:
        raise B24Error(400, "ENTITY_TYPE_NOT_SUPPORTED", "Entity type `LEAD` is not supported")
    if type_id not in (2, 3):
        raise B24Error(400, "NOT_FOUND", "Smart process not found")
    cats: list[dict[str, Any]] = []
    if type_id == 2:
        cats = [{"id": c["id"], "name": c["name"], "sort": c["sort"], "entityTypeId": 2,
                 "isDefault": "N", "originId": "", "originatorId": ""}
                for c in ctx.portal.categories]
    cats.append({"id": 0, "name": "General", "sort": 300, "entityTypeId": type_id,
                 "isDefault": "Y"})
    return ListResult({"categories": cats}, len(cats))


# -- duplicates (crm-duplicate-find-by-comm.md) ---------------------------------------------

_FINDBYCOMM_MAX = 20


@method("crm.duplicate.findbycomm", scope="crm")
def findbycomm(ctx: CallCtx, params: dict[str, Any]) -> Any:
    """Leads, then contacts, then companies holding any of ``values``. "If 20 or more
    duplicates are found for one object, the other types are not returned." The
    sandbox has no companies (COMPANY always finds nothing)."""
    if ctx.portal.crm_access(ctx.auth.user_id) == "none":
        raise B24Error(403, "Access denied", "Access denied")
    comm = str(params.get("type") or "").upper()
    if not comm:
        raise B24Error(400, "Communication type is not defined", "Parameter 'type' is required.")
    if comm not in ("PHONE", "EMAIL"):
        raise B24Error(400, f"Communication type '{comm}' is not supported in current context",
                       f"Communication type '{comm}' is not supported in current context")
    values = params.get("values")
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not [v for v in values if str(v).strip()]:
        raise B24Error(400, "Communication values is not defined",
                       "Parameter 'values' is required.")
    if len(values) > _FINDBYCOMM_MAX:
        if ctx.cfg["findbycomm_over_limit"] == "error":
            # UNCONFIRMED: the docs give the maximum (20), not the answer beyond it
            raise B24Error(400, "Too many communication values",
                           f"The maximum number of values is {_FINDBYCOMM_MAX}.")
        values = values[:_FINDBYCOMM_MAX]
    if comm == "PHONE":
        wanted = {normalize_phone(str(v)) for v in values} - {""}
    else:
        wanted = {str(v).strip().lower() for v in values}
    kinds = ["lead", "contact", "company"]
    requested = str(params.get("entity_type") or "").upper()
    if requested:
        kinds = [k for k in kinds if k.upper() == requested]
    result: dict[str, list[int]] = {}
    for kind in kinds:
        found = []
        for ent_id, ent in sorted(ctx.portal.entities.get(kind, {}).items()):
            for entry in ent.multi.get(comm, []):
                value = (normalize_phone(entry["VALUE"]) if comm == "PHONE"
                         else entry["VALUE"].strip().lower())
                if value in wanted:
                    found.append(ent_id)
                    break
        if found:
            result[kind.upper()] = found
        if len(found) >= _FINDBYCOMM_MAX:
            break
    if not result:
        return [] if ctx.cfg["findbycomm_empty_as_list"] else {}
    return result

