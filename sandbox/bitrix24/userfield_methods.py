"""REST methods ``crm.{lead,deal,contact}.userfield.{add,list,get}`` (scope
``crm``; callable in ``batch`` like every method).

The vendor's pages (not in ``spec/``):
dev.1c-bitrix.ru/rest_help/crm/leads/crm_lead_userfield_add.php,
dev.1c-bitrix.ru/rest_help/crm/contacts/crm_contact_userfield_add.php,
dev.1c-bitrix.ru/rest_help/crm/cdeals/crm_deal_userfield_add.php, and the
``*_userfield_list.php`` / ``*_userfield_get.php`` pages next to them. The
record and its rows: :mod:`.userfields`.

* ``add(fields)``: ``FIELD_NAME`` (upper-cased) gets ``UF_CRM_`` in front;
  more than 20 characters in all, or a name the object already has, is the
  error the config names (``userfield_name_too_long``,
  ``userfield_duplicate_error``: UNCONFIRMED); answers the new field's ID (a
  number; crm_deal_userfield_add.php: "returns the ID").
* ``list(order, filter)``: the object's fields, filter prefixes as
  ``crm.*.list`` (:func:`.crm_methods.apply_filter`), labels only with
  ``filter[LANG]``, 50 a page with ``total``/``next`` (the page's example
  pages with ``result.more()``), default order SORT then ID.
* ``get(id)``: one field of this object.

Who may call: config ``userfield_admin_only`` (UNCONFIRMED), otherwise the
CRM rights of the other crm methods (crm-lead-add.md: "Access denied.").
UNCONFIRMED texts: a missing or malformed FIELD_NAME, an unknown
USER_TYPE_ID, ``fields`` not an object, an unknown id (all 400 as the
crm pages' errors).
"""

from __future__ import annotations

from typing import Any

from .context import CallCtx, ListResult, method
from .crm import KINDS, parse_id, require_access
from .crm_methods import _dict_param, _order, apply_filter, page
from .errors import B24Error, crm_error
from .params import as_str
from .userfields import ENTITY_IDS, MAX_NAME, NAME_CHARS, PREFIX, USER_TYPES, get_row, list_row

__all__ = ["field_name"]


def _access(ctx: CallCtx, write: bool) -> None:
    user = ctx.portal.users.get(ctx.auth.user_id) or {}
    if ctx.cfg["userfield_admin_only"] and not user.get("ADMIN"):
        raise crm_error("Access denied.")
    require_access(ctx.portal, ctx.auth.user_id, write=write)


def _config_error(err: dict[str, Any], name: str, kind: str) -> B24Error:
    text = str(err["description"]).replace("{field}", name).replace("{entity}",
                                                                    ENTITY_IDS[kind])
    return B24Error(int(err["status"]), str(err["error"]), text)


def field_name(ctx: CallCtx, kind: str, raw: Any) -> str:
    """The stored FIELD_NAME for ``raw`` (the pages' prefix and length rules)."""
    name = as_str(raw).strip().upper()
    if not name:
        raise B24Error(400, "ERROR_CORE", "The field FIELD_NAME is not defined.")
    if not (ctx.cfg["userfield_prefix"] == "unless_present" and name.startswith(PREFIX)):
        name = PREFIX + name
    if not NAME_CHARS.match(name):
        raise B24Error(400, "ERROR_CORE", f'The field name "{name}" may hold only Latin '
                       "letters, digits and the underscore.")
    if len(name) > MAX_NAME:
        rule = ctx.cfg["userfield_name_too_long"]
        if rule != "truncate":
            raise _config_error(rule, name, kind)
        name = name[:MAX_NAME]
    if name in ctx.portal.user_fields.get(kind, {}):
        raise _config_error(ctx.cfg["userfield_duplicate_error"], name, kind)
    return name


def _add(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> int:
        _access(ctx, write=True)
        raw = params.get("fields")
        if not isinstance(raw, dict):
            raise crm_error("Parameter 'fields' must be array.")
        fields = {str(k).upper(): v for k, v in raw.items()}
        user_type = as_str(fields.get("USER_TYPE_ID")).strip().lower()
        name = field_name(ctx, kind, fields.get("FIELD_NAME"))
        if user_type not in USER_TYPES:
            raise B24Error(400, "ERROR_CORE", f'Unknown user field type "{user_type}".'
                           if user_type else "The field USER_TYPE_ID is not defined.")
        # ENTITY_ID is the method's own object whatever the caller sends
        fields.update(FIELD_NAME=name, USER_TYPE_ID=user_type)
        rec = ctx.portal.add_user_field(kind, fields)
        return int(rec["ID"])
    return handler


def _list(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
        _access(ctx, write=False)
        flt = {str(k): v for k, v in _dict_param(params, "filter").items()}
        order = _dict_param(params, "order")
        lang_key = next((k for k in flt if k.upper() == "LANG"), None)
        language = as_str(flt.pop(lang_key)).strip().lower() if lang_key else None
        # filter and order on the rows without labels (the pages filter on the
        # field's columns); the labels are added to the page's rows
        rows = [list_row(rec, None) for rec in ctx.portal.user_fields.get(kind, {}).values()]
        rows = apply_filter(rows, flt)
        _order(rows, order, "SORT")
        result = page(rows, params)
        records = ctx.portal.user_fields[kind] if result.items else {}
        result.items = [list_row(records[row["FIELD_NAME"]], language) for row in result.items]
        return result
    return handler


def _get(kind: str) -> Any:
    def handler(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
        _access(ctx, write=False)
        wanted = str(parse_id(params))
        for rec in ctx.portal.user_fields.get(kind, {}).values():
            if rec["ID"] == wanted:
                language = str(ctx.portal.cfg.get("language") or "en")
                return get_row(rec, dict.fromkeys(("en", "ru", language)))
        raise crm_error("Not found")
    return handler


for _kind in KINDS:
    method(f"crm.{_kind}.userfield.add", scope="crm")(_add(_kind))
    method(f"crm.{_kind}.userfield.list", scope="crm")(_list(_kind))
    method(f"crm.{_kind}.userfield.get", scope="crm")(_get(_kind))
