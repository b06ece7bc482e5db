"""Contacts (FACTS.md 1.5) and chat links.

* ``GET /<sub>/api/v4/contacts`` (``query``, ``filter[id|name|responsible_user_id|
  created_at|updated_at]``, ``order``, ``with=leads``, paging; 204 when empty)
* ``GET /<sub>/api/v4/contacts/<id>`` (``with=leads``)
* ``POST /<sub>/api/v4/contacts`` (array; ``request_id`` echo)
* ``PATCH /<sub>/api/v4/contacts`` (array with ids) and ``/contacts/<id>`` (object)
* ``GET /<sub>/api/v4/companies[/<id>]`` (read-only; companies come from
  ``/leads/complex``)
* ``POST|GET /<sub>/api/v4/contacts/chats`` (link an amojo chat to a contact;
  admin only, FACTS 1.5)

:func:`create_contact` / :func:`update_contact` are shared with
``/leads/complex``, the Chats API (unsorted contacts) and the control API.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from . import webhooks
from .context import api, collect_events, ctx, json_body, json_list, sandbox
from .entities import (
    apply_tags,
    common_fields,
    modified_since,
    range_filter,
    render_tags,
    request_id,
    self_link,
    text_matches,
    touch,
)
from .errors import ItemErrors, bad_request, forbidden, hal, no_content, not_found
from .fields import apply_values, normalize_values, render_values
from .listing import int_set, order_key, paginate, query, with_params
from .store import Account, Store

__all__ = ["bp", "create_contact", "validate_contact", "update_contact", "render_contact",
           "missing_entity"]

bp = Blueprint("contacts", __name__)


def missing_entity() -> Response:
    """A GET of an unknown id: 204 (default) or 404 (switch ``not_found_status``,
    UNCONFIRMED)."""
    if sandbox().cfg["not_found_status"] == 404:
        raise not_found("Entity not found")
    return no_content()


def validate_contact(account: Account, item: dict[str, Any], errors: ItemErrors,
                     entity: str = "contacts", prefix: str = "",
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check one contact/company item; returns (common fields, custom values)."""
    store = sandbox().store
    fields = common_fields(account, item, errors, prefix)
    values = normalize_values(account, entity, item.get("custom_fields_values"), errors, prefix)
    apply_tags(store, account, entity, None, item, errors, prefix, dry_run=True)
    return fields, values


def create_contact(store: Store, account: Account, item: dict[str, Any],
                   fields: dict[str, Any], values: list[dict[str, Any]], user_id: int,
                   entity: str = "contacts") -> dict[str, Any]:
    """Insert a validated contact (or company). Caller holds the lock."""
    now = int(store.now())
    name = fields.get("name")
    if name is None:
        name = " ".join(p for p in (fields.get("first_name"), fields.get("last_name")) if p)
    obj: dict[str, Any] = {
        "id": store.next_id(entity), "name": name,
        "responsible_user_id": fields.get("responsible_user_id", user_id), "group_id": 0,
        "created_by": fields.get("created_by", user_id),
        "updated_by": fields.get("updated_by", fields.get("created_by", user_id)),
        "created_at": fields.get("created_at", now),
        "updated_at": fields.get("updated_at", fields.get("created_at", now)),
        "closest_task_at": None, "is_deleted": False, "custom_fields_values": [],
        "account_id": account.id, "tags": [], "companies": []}
    if entity == "contacts":
        obj["first_name"] = fields.get("first_name", "")
        obj["last_name"] = fields.get("last_name", "")
    apply_values(obj, values)
    obj["tags"] = apply_tags(store, account, entity, None, item, ItemErrors())
    account.entities(entity)[obj["id"]] = obj
    return obj


def update_contact(store: Store, account: Account, obj: dict[str, Any], item: dict[str, Any],
                   fields: dict[str, Any], values: list[dict[str, Any]], user_id: int,
                   entity: str = "contacts") -> None:
    """Apply a validated PATCH item. Caller holds the lock."""
    for key, value in fields.items():
        obj[key] = value
    if "name" not in fields and entity == "contacts" and (
            "first_name" in fields or "last_name" in fields):
        obj["name"] = " ".join(p for p in (obj.get("first_name"), obj.get("last_name")) if p)
    apply_values(obj, values)
    obj["tags"] = apply_tags(store, account, entity, obj, item, ItemErrors())
    touch(obj, fields.get("updated_by", user_id))
    if "updated_at" in fields:
        obj["updated_at"] = fields["updated_at"]


def render_contact(store: Store, account: Account, obj: dict[str, Any],
                   with_: set[str], entity: str = "contacts") -> dict[str, Any]:
    """The v4 contact model (FACTS 1.5)."""
    body: dict[str, Any] = {"id": obj["id"], "name": obj["name"]}
    if entity == "contacts":
        body["first_name"] = obj.get("first_name", "")
        body["last_name"] = obj.get("last_name", "")
    body.update({
        "responsible_user_id": obj["responsible_user_id"], "group_id": obj["group_id"],
        "created_by": obj["created_by"], "updated_by": obj["updated_by"],
        "created_at": obj["created_at"], "updated_at": obj["updated_at"],
        "closest_task_at": obj["closest_task_at"], "is_deleted": obj["is_deleted"],
        "is_unsorted": bool(obj.get("is_unsorted")),
        "custom_fields_values": render_values(account, entity, obj["custom_fields_values"]),
        "account_id": account.id, "_links": self_link(account, f"{entity}/{obj['id']}")})
    embedded: dict[str, Any] = {"tags": render_tags(store, account, entity, obj)}
    if entity == "contacts":
        embedded["companies"] = [{"id": cid, "_links": self_link(account, f"companies/{cid}")}
                                 for cid in obj.get("companies", [])]
    if "leads" in with_:
        embedded["leads"] = [{"id": lid, "_links": self_link(account, f"leads/{lid}")}
                             for lid, lead in sorted(account.leads.items())
                             if any(c["id"] == obj["id"] for c in lead.get(entity, []))]
    body["_embedded"] = embedded
    return body


@bp.route("/<subdomain>/api/v4/contacts", methods=["GET"])
@api
def list_contacts(subdomain: str) -> Response:
    store = sandbox().store
    account = ctx().account
    q = request.args.get("query")
    flt = query().get("filter")
    flt = flt if isinstance(flt, dict) else {}
    ids = int_set(flt.get("id"))
    since = modified_since()
    key, reverse = order_key()
    with_ = with_params()
    with store.lock:
        items = []
        for obj in account.contacts.values():
            if obj["is_deleted"] or (ids is not None and obj["id"] not in ids):
                continue
            if "name" in flt and str(flt["name"]).lower() != obj["name"].lower():
                continue
            if not all(range_filter(flt, k, obj[k]) for k in
                       ("responsible_user_id", "created_at", "updated_at")):
                continue
            if since is not None and obj["updated_at"] <= since:
                continue
            if q and not text_matches(q, obj, account, "contacts"):
                continue
            items.append(obj)
        items.sort(key=lambda o: (o[key], o["id"]), reverse=reverse)
        return paginate(account, "contacts", "contacts", items,
                        lambda o: render_contact(store, account, o, with_))


@bp.route("/<subdomain>/api/v4/contacts/<int:contact_id>", methods=["GET"])
@api
def get_contact(subdomain: str, contact_id: int) -> Response:
    store = sandbox().store
    account = ctx().account
    with store.lock:
        obj = account.contacts.get(contact_id)
        if obj is None or obj["is_deleted"]:
            return missing_entity()
        return hal(render_contact(store, account, obj, with_params()))


@bp.route("/<subdomain>/api/v4/contacts", methods=["POST"])
@api
def create_contacts(subdomain: str) -> Response:
    sb = sandbox()
    c = ctx()
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        checked = []
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            checked.append(validate_contact(c.account, item, errors))
        errors.raise_if_any()  # all or nothing
        out, jobs = [], []
        for index, (item, (fields, values)) in enumerate(zip(items, checked, strict=True)):
            obj = create_contact(sb.store, c.account, item, fields, values, c.user_id)
            jobs += webhooks.jobs_for(sb.store, c.account, "add_contact", obj)
            out.append({"id": obj["id"], "request_id": request_id(item, index),
                        "_links": self_link(c.account, f"contacts/{obj['id']}")})
    if sb.cfg["webhooks_on_api_changes"]:
        collect_events(jobs)
    return hal({"_links": self_link(c.account, "contacts"), "_embedded": {"contacts": out}})


def _patch(items: list[dict[str, Any]], single: bool) -> Response:
    sb = sandbox()
    c = ctx()
    errors = ItemErrors()
    with sb.store.lock:
        checked = []
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            obj = c.account.contacts.get(item["id"]) if isinstance(item.get("id"),
                                                                         int) else None
            if obj is None or obj["is_deleted"]:
                # UNCONFIRMED code/detail for an unknown id on PATCH.
                errors.add("id", "NotFound", "Entity not found.")
            checked.append((obj, *validate_contact(c.account, item, errors)))
        errors.raise_if_any()
        out, jobs = [], []
        for index, (item, (obj, fields, values)) in enumerate(zip(items, checked,
                                                                   strict=True)):
            assert obj is not None
            old_responsible = obj["responsible_user_id"]
            update_contact(sb.store, c.account, obj, item, fields, values, c.user_id)
            jobs += webhooks.jobs_for(sb.store, c.account, "update_contact", obj)
            if obj["responsible_user_id"] != old_responsible:
                jobs += webhooks.jobs_for(sb.store, c.account, "responsible_contact", obj,
                                          {"old_responsible_user_id": old_responsible})
            out.append({"id": obj["id"], "name": obj["name"], "updated_at": obj["updated_at"],
                        "request_id": request_id(item, index),
                        "_links": self_link(c.account, f"contacts/{obj['id']}")})
    if sb.cfg["webhooks_on_api_changes"]:
        collect_events(jobs)
    if single:
        out[0].pop("request_id")
        return hal(out[0])
    return hal({"_links": self_link(c.account, "contacts"), "_embedded": {"contacts": out}})


@bp.route("/<subdomain>/api/v4/contacts", methods=["PATCH"])
@api
def patch_contacts(subdomain: str) -> Response:
    return _patch(json_list(sandbox().cfg["batch_limit"]), single=False)


@bp.route("/<subdomain>/api/v4/contacts/<int:contact_id>", methods=["PATCH"])
@api
def patch_contact(subdomain: str, contact_id: int) -> Response:
    item = json_body()
    if not isinstance(item, dict):
        raise bad_request("Request body must be a JSON object")
    item = dict(item, id=contact_id)
    return _patch([item], single=True)


@bp.route("/<subdomain>/api/v4/companies", methods=["GET"])
@api
def list_companies(subdomain: str) -> Response:
    """Companies are created by ``/leads/complex`` only; read-only here."""
    store = sandbox().store
    account = ctx().account
    q = request.args.get("query")
    with_ = with_params()
    with store.lock:
        items = [o for o in sorted(account.companies.values(), key=lambda o: o["id"])
                 if not o["is_deleted"] and (not q or text_matches(q, o, account, "companies"))]
        return paginate(account, "companies", "companies", items,
                        lambda o: render_contact(store, account, o, with_, "companies"))


@bp.route("/<subdomain>/api/v4/companies/<int:company_id>", methods=["GET"])
@api
def get_company(subdomain: str, company_id: int) -> Response:
    store = sandbox().store
    account = ctx().account
    with store.lock:
        obj = account.companies.get(company_id)
        if obj is None or obj["is_deleted"]:
            return missing_entity()
        return hal(render_contact(store, account, obj, with_params(), "companies"))


# -- chats <-> contacts (FACTS 1.5) ----------------------------------------------------------


@bp.route("/<subdomain>/api/v4/contacts/chats", methods=["POST"])
@api
def link_chats(subdomain: str) -> Response:
    """``[{"contact_id", "chat_id"}]``: admin only; the chat must be an amojo
    chat of this account (of the integration's channel)."""
    sb = sandbox()
    c = ctx()
    if not c.is_admin:
        raise forbidden("Access denied: only administrators may link chats")
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            contact = c.account.contacts.get(item.get("contact_id")) \
                if isinstance(item.get("contact_id"), int) else None
            if contact is None or contact["is_deleted"]:
                errors.add("contact_id")
            chat = sb.store.chats.get(item.get("chat_id")) \
                if isinstance(item.get("chat_id"), str) else None
            if chat is None or chat["account_id"] != c.account.id:
                errors.add("chat_id")
        errors.raise_if_any()
        out = []
        for index, item in enumerate(items):
            chat = sb.store.chats[item["chat_id"]]
            chat["contact_id"] = item["contact_id"]
            chat["link_id"] = chat.get("link_id") or sb.store.next_id("links")
            out.append({"chat_id": chat["id"], "contact_id": item["contact_id"],
                        "id": chat["link_id"], "request_id": request_id(item, index)})
    return hal({"_total_items": len(out), "_embedded": {"chats": out}})


@bp.route("/<subdomain>/api/v4/contacts/chats", methods=["GET"])
@api
def list_chat_links(subdomain: str) -> Response:
    sb = sandbox()
    account = ctx().account
    contact_ids = int_set(request.args.getlist("contact_id") or None)
    chat_ids = set(request.args.getlist("chat_id")) or None
    with sb.store.lock:
        out = [{"chat_id": ch["id"], "contact_id": ch["contact_id"], "id": ch.get("link_id")}
               for ch in sb.store.chats.values()
               if ch["account_id"] == account.id and ch.get("contact_id")
               and (contact_ids is None or ch["contact_id"] in contact_ids)
               and (chat_ids is None or ch["id"] in chat_ids)]
    if not out:
        return no_content()
    return hal({"_total_items": len(out), "_embedded": {"chats": out}})
