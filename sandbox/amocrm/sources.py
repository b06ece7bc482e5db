"""The Sources API (``/api/v4/sources``): named sources of an account's chats.

Not in FACTS.md: amoCRM developers' page crm_platform/sources-api is not in
the stored contracts, so **every field and rule here is UNCONFIRMED**. The
field names follow the official PHP SDK's ``SourceModel`` (amocrm/amocrm-api-php
``src/AmoCRM/Models/SourceModel.php``: ``id, name, default, external_id,
origin_code, pipeline_id, services``; read, not copied); the envelope and the
errors are the rest of the API's (FACTS 1.3).

* ``GET  /<sub>/api/v4/sources[?filter[external_id]=…]`` -- the account's
  sources in the hal collection envelope (``_embedded.sources``); none: 204.
* ``GET  /<sub>/api/v4/sources/<id>`` -- one source (unknown: as any unknown id).
* ``POST /<sub>/api/v4/sources`` -- ``[{"name", "external_id", "pipeline_id",
  "default"?, "origin_code"?, "services"?, "request_id"?}]``; ``name`` and
  ``external_id`` non-empty strings, ``external_id`` unique in the account,
  ``pipeline_id`` one of its pipelines; errors in the 400 ``validation-errors``
  body (FACTS 1.3). Answers ``_embedded.sources`` with ``request_id`` echoed.

PATCH and DELETE (which the SDK also calls) are not emulated. With the switch
``sources_api`` off every call answers 404, like an account without the feature.
What the chats show: :func:`source_name` (``GET /_state`` chats' ``source_name``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from .contacts import missing_entity
from .context import api, ctx, json_list, sandbox
from .entities import request_id, self_link
from .errors import ItemErrors, hal, not_found
from .listing import paginate, query
from .store import Account

__all__ = ["bp", "source_name", "render_source"]

bp = Blueprint("sources", __name__)

_OPTIONAL = {"default": bool, "origin_code": str, "services": list}


def source_name(account: Account, external_id: Any) -> str | None:
    """The name of ``account``'s source with this ``external_id`` (what a
    chat carrying it shows), or None. Caller holds the lock."""
    if not isinstance(external_id, str) or not external_id:
        return None
    for source in account.sources.values():
        if source["external_id"] == external_id:
            return str(source["name"])
    return None


def render_source(account: Account, source: dict[str, Any]) -> dict[str, Any]:
    body = dict(source)
    body["_links"] = self_link(account, f"sources/{source['id']}")
    return body


def _feature() -> None:
    """404 unless the account has the Sources API (switch ``sources_api``)."""
    if not sandbox().cfg["sources_api"]:
        raise not_found("Not Found")


def _external_ids(value: Any) -> set[str] | None:
    """``filter[external_id]``: one value, a comma list or ``[]``-indexed values."""
    if value is None:
        return None
    values = list(value.values()) if isinstance(value, dict) else str(value).split(",")
    return {str(v).strip() for v in values if str(v).strip()}


@bp.route("/<subdomain>/api/v4/sources", methods=["GET"])
@api
def list_sources(subdomain: str) -> Response:
    _feature()
    account = ctx().account
    flt = query().get("filter")
    wanted = _external_ids(flt.get("external_id")) if isinstance(flt, dict) else None
    with sandbox().store.lock:
        items = [
            s
            for s in sorted(account.sources.values(), key=lambda s: s["id"])
            if wanted is None or s["external_id"] in wanted
        ]
        return paginate(account, "sources", "sources", items, lambda s: render_source(account, s))


@bp.route("/<subdomain>/api/v4/sources/<int:source_id>", methods=["GET"])
@api
def get_source(subdomain: str, source_id: int) -> Response:
    _feature()
    account = ctx().account
    with sandbox().store.lock:
        source = account.sources.get(source_id)
        return hal(render_source(account, source)) if source else missing_entity()


def _text(item: dict[str, Any], key: str, errors: ItemErrors) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        errors.blank(key)
        return None
    if not isinstance(value, str):
        errors.type_error(key, "string")
        return None
    if not value.strip():
        errors.blank(key)
        return None
    return value


def _validate(
    account: Account, item: dict[str, Any], errors: ItemErrors, taken: set[str]
) -> dict[str, Any]:
    """One item's fields; errors go to ``errors``. ``taken``: external ids in
    use (the account's and this request's earlier items)."""
    name = _text(item, "name", errors)
    external_id = _text(item, "external_id", errors)
    if external_id is not None and external_id in taken:
        errors.add("external_id", "NotUnique", "This value is already used.")
    pipeline_id = item.get("pipeline_id")
    if pipeline_id is None:
        errors.blank("pipeline_id")
    elif isinstance(pipeline_id, bool) or not isinstance(pipeline_id, int):
        errors.type_error("pipeline_id", "int")
    elif pipeline_id not in account.pipelines:
        errors.add("pipeline_id")
    fields: dict[str, Any] = {"name": name, "external_id": external_id, "pipeline_id": pipeline_id}
    for key, kind in _OPTIONAL.items():
        value = item.get(key)
        if value is not None and not isinstance(value, kind):
            errors.type_error(key, {bool: "bool", str: "string", list: "array"}[kind])
        fields[key] = value
    if external_id is not None:
        taken.add(external_id)
    return fields


@bp.route("/<subdomain>/api/v4/sources", methods=["POST"])
@api
def create_sources(subdomain: str) -> Response:
    _feature()
    sb = sandbox()
    account = ctx().account
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        taken = {s["external_id"] for s in account.sources.values()}
        checked = []
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            checked.append(_validate(account, item, errors, taken))
        errors.raise_if_any()
        out = []
        for index, (item, fields) in enumerate(zip(items, checked, strict=True)):
            source = {
                "id": sb.store.next_id("sources"),
                "name": fields["name"],
                "pipeline_id": fields["pipeline_id"],
                "external_id": fields["external_id"],
                "default": bool(fields["default"]),
                "origin_code": fields["origin_code"],
                "services": fields["services"],
                "account_id": account.id,
            }
            account.sources[source["id"]] = source
            out.append(dict(render_source(account, source), request_id=request_id(item, index)))
    return hal(
        {
            "_total_items": len(out),
            "_links": self_link(account, "sources"),
            "_embedded": {"sources": out},
        }
    )
