"""Users, account info and the webhooks subscription API (FACTS.md 1.11/1.12).

* ``GET /<sub>/api/v4/users`` (admin rights only, else 403; paging) and
  ``/users/<id>``
* ``GET /<sub>/api/v4/account?with=amojo_id,task_types,users_groups,…``
* ``POST /<sub>/api/v4/webhooks`` ``{"destination","settings":[…],"sort"}`` -> 201
  and the webhook object; the same destination is updated, not duplicated;
  ``GET /<sub>/api/v4/webhooks?filter[destination]=`` (204 when none);
  ``DELETE /<sub>/api/v4/webhooks`` ``{"destination"}`` -> 204. Admin only;
  <= 100 per account (FACTS 1.4).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response

from .contacts import missing_entity
from .context import api, ctx, json_body, sandbox
from .entities import self_link
from .errors import ItemErrors, bad_request, forbidden, hal, no_content, not_found
from .listing import paginate, query, with_params
from .notes_tasks import TASK_TYPES
from .store import Account
from .webhooks import EVENTS

__all__ = ["bp", "render_webhook"]

bp = Blueprint("account", __name__)

_MAX_WEBHOOKS = 100  # FACTS 1.4


def _rights(is_admin: bool) -> dict[str, Any]:
    """The rights object (FACTS 1.11 field list); "A" = all (values ours)."""
    full = {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"}
    return {"leads": dict(full), "contacts": dict(full), "companies": dict(full),
            "tasks": {"edit": "A", "delete": "A"}, "mail_access": True, "catalog_access": True,
            "files_access": True, "status_rights": [], "is_admin": is_admin, "is_free": False,
            "is_active": True, "group_id": None, "role_id": None}


def _render_user(account: Account, user: dict[str, Any], with_: set[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"id": user["id"], "name": user["name"], "email": user["email"],
                            "lang": user["lang"], "rights": _rights(user["is_admin"]),
                            "_links": self_link(account, f"users/{user['id']}")}
    body["rights"]["is_active"] = user["is_active"]
    if "amojo_id" in with_:
        body["amojo_id"] = user["amojo_id"]
    if "uuid" in with_:
        body["uuid"] = user["uuid"]
    return body


@bp.route("/<subdomain>/api/v4/users", methods=["GET"])
@api
def list_users(subdomain: str) -> Response:
    c = ctx()
    if not c.is_admin:  # FACTS 1.11: admin rights only
        raise forbidden("Access denied: administrator rights are required")
    with_ = with_params()
    with sandbox().store.lock:
        users = sorted(c.account.users.values(), key=lambda u: u["id"])
        return paginate(c.account, "users", "users", users,
                        lambda u: _render_user(c.account, u, with_),
                        {"_total_items": len(users)})


@bp.route("/<subdomain>/api/v4/users/<int:user_id>", methods=["GET"])
@api
def get_user(subdomain: str, user_id: int) -> Response:
    c = ctx()
    with sandbox().store.lock:
        user = c.account.users.get(user_id)
        return hal(_render_user(c.account, user, with_params())) if user else missing_entity()


@bp.route("/<subdomain>/api/v4/account", methods=["GET"])
@api
def account_info(subdomain: str) -> Response:
    """FACTS 1.11: ``amojo_id`` (needed for the Chats API) only with ``with=amojo_id``."""
    c = ctx()
    account = c.account
    with_ = with_params()
    body: dict[str, Any] = {
        "id": account.id, "name": account.name, "subdomain": account.subdomain,
        "created_at": account.created_at, "created_by": account.admin_id(),
        "updated_at": account.created_at, "updated_by": account.admin_id(),
        "current_user_id": c.user_id, "country": "RU", "currency": "RUB",
        "currency_symbol": "₽", "customers_mode": "disabled", "is_unsorted_on": True,
        "mobile_feature_version": 0, "is_loss_reason_enabled": True,
        "is_helpbot_enabled": False, "is_technical_account": False,
        "contact_name_display_order": 1, "_links": self_link(account, "account")}
    if "amojo_id" in with_:
        body["amojo_id"] = account.amojo_id
    if "uuid" in with_:
        body["uuid"] = account.uuid
    if "version" in with_:
        body["version"] = 2
    embedded: dict[str, Any] = {}
    if "task_types" in with_:
        embedded["task_types"] = [dict(t) for t in TASK_TYPES]
    if "users_groups" in with_:
        embedded["users_groups"] = [{"id": 0, "name": "Отдел продаж", "uuid": None}]
    if "amojo_rights" in with_:
        body["amojo_rights"] = {"can_direct": True, "can_create_groups": True}
    if "datetime_settings" in with_:
        body["datetime_settings"] = {"timezone": "Europe/Moscow", "timezone_offset": "+03:00",
                                     "date_format": "d.m.Y", "time_format": "H:i"}
    if embedded:
        body["_embedded"] = embedded
    return hal(body)


# -- webhooks API (FACTS 1.12) --------------------------------------------------------------------


def render_webhook(hook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hook.items() if not k.startswith("_")}


def _admin() -> None:
    if not ctx().is_admin:  # FACTS 1.12: admin only
        raise forbidden("Access denied: administrator rights are required")


@bp.route("/<subdomain>/api/v4/webhooks", methods=["POST"])
@api
def subscribe(subdomain: str) -> Response:
    _admin()
    sb = sandbox()
    c = ctx()
    body = json_body()
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    errors = ItemErrors()
    errors.item("0")
    destination = body.get("destination")
    url = urlsplit(destination) if isinstance(destination, str) else None
    if url is None or url.scheme not in {"http", "https"} or not url.netloc:
        errors.add("destination", "InvalidUrl", "This value is not a valid URL.")
    raw_settings = body.get("settings")
    settings: list[Any] = raw_settings if isinstance(raw_settings, list) else []
    if not settings:
        errors.blank("settings")
    for i, name in enumerate(settings):
        if not isinstance(name, str) or name not in EVENTS:
            errors.add(f"settings.{i}")
    sort = body.get("sort", 1)
    if isinstance(sort, bool) or not isinstance(sort, int):
        errors.type_error("sort", "int")
    errors.raise_if_any()
    now = int(sb.store.now())
    with sb.store.lock:
        hook = next((w for w in c.account.webhooks.values()
                     if w["destination"] == destination), None)
        if hook is None:
            if len(c.account.webhooks) >= _MAX_WEBHOOKS:
                raise bad_request(f"No more than {_MAX_WEBHOOKS} webhooks per account")
            hook = {"id": sb.store.next_id("webhooks"), "destination": destination,
                    "created_at": now, "updated_at": now, "account_id": c.account.id,
                    "created_by": c.user_id, "sort": sort, "disabled": False,
                    "settings": list(dict.fromkeys(settings))}
            c.account.webhooks[hook["id"]] = hook
        else:  # the same destination is updated, not duplicated (FACTS 1.12)
            hook.update(settings=list(dict.fromkeys(settings)), sort=sort, updated_at=now,
                        disabled=False, _invalid=[])
        return hal(render_webhook(hook), 201)


@bp.route("/<subdomain>/api/v4/webhooks", methods=["GET"])
@api
def list_webhooks(subdomain: str) -> Response:
    _admin()
    c = ctx()
    flt = query().get("filter")
    wanted = flt.get("destination") if isinstance(flt, dict) else None
    with sandbox().store.lock:
        hooks = [render_webhook(w) for w in sorted(c.account.webhooks.values(),
                                                   key=lambda w: w["id"])
                 if wanted is None or w["destination"] == wanted]
    if not hooks:
        return no_content()
    return hal({"_total_items": len(hooks), "_links": self_link(c.account, "webhooks"),
                "_embedded": {"webhooks": hooks}})


@bp.route("/<subdomain>/api/v4/webhooks", methods=["DELETE"])
@api
def unsubscribe(subdomain: str) -> Response:
    _admin()
    c = ctx()
    body = json_body()
    destination = body.get("destination") if isinstance(body, dict) else None
    if not isinstance(destination, str):
        raise bad_request("destination is required")
    with sandbox().store.lock:
        hook = next((w for w in c.account.webhooks.values()
                     if w["destination"] == destination), None)
        if hook is None:
            raise not_found("Webhook not found")  # UNCONFIRMED: unknown destination
        del c.account.webhooks[hook["id"]]
    return no_content()
