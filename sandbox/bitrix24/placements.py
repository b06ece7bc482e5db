"""The app's pages inside Bitrix24: who opens them, where they are bound,
and what Bitrix24 POSTs to them.

REST methods:

* ``user.admin`` (dev.1c-bitrix.ru rest_help/general/user_admin: "for all";
  whether the current user may manage the portal's apps): ``true`` /
  ``false`` for the token's user (the portal's ``ADMIN`` users here).
* ``placement.bind`` (b24restdocs api-reference/widgets/placement-bind.md):
  app context only (local-webhooks.md), scope ``placement``, an
  administrator's token ("Who can execute the method: administrator");
  ``PLACEMENT`` and ``HANDLER`` required (``ERROR_ARGUMENT`` "Argument 'X' is
  null or empty"); ``TITLE``, ``DESCRIPTION``, ``GROUP_NAME``, ``LANG_ALL``
  kept; answers ``true``. UNCONFIRMED (not in the stored docs): the same
  handler bound twice to the same placement is ``400 ERROR_CORE`` "Unable to
  set placement handler: Handler already binded" (the wording integrators
  quote), and a non-administrator gets ``403 ACCESS_DENIED``.
* ``placement.get`` (placement-get.md): the app's bindings as
  ``[{"placement", "handler", "title", "description"}]``, administrators only.
* ``placement.unbind`` (placement-unbind.md): ``PLACEMENT`` required,
  ``HANDLER`` optional (every handler of the placement when absent); answers
  ``{"count": n}``.

Control (never faulted, no auth):

* ``POST /_open_app`` ``{"portal"?, "user_id"?, "placement"?: "DEFAULT",
  "handler"?, "submit"?: false}`` -- a portal user opens the app's page:
  the documented POST (settings/oauth/simple-way.md: ``AUTH_ID``,
  ``AUTH_EXPIRES``, ``REFRESH_ID``, ``SERVER_ENDPOINT``, ``member_id``,
  ``status``, ``PLACEMENT``, ``PLACEMENT_OPTIONS`` for widgets; the main page
  also ``APPLICATION_TOKEN`` and ``APPLICATION_SCOPE``) with ``DOMAIN``,
  ``PROTOCOL``, ``LANG``, ``APP_SID`` in the query, made with a fresh token
  pair of that user. ``handler``: default the handler bound to
  ``placement`` (``placement.bind``), for ``DEFAULT`` the config's
  ``app.main_handler``. Answers ``{"url", "form", "html"}`` (``html``: a page
  whose form submits itself, as Bitrix24's frame does); with ``submit`` the
  sandbox POSTs it and adds ``{"status", "body", "location"}``.
* ``GET /_open_app?portal=&user_id=&placement=&handler=`` -- that
  self-submitting page, for a browser.
"""

from __future__ import annotations

import html
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, request

from ..core.control import ControlError, json_object
from .context import CallCtx, method, sandbox
from .dispatch import base_url
from .errors import B24Error, json_response
from .params import as_bool, as_int, as_str
from .store import Portal

__all__ = ["bp", "page_post"]

bp = Blueprint("placements", __name__)


def _admin_only(ctx: CallCtx) -> None:
    if not ctx.portal.users.get(ctx.auth.user_id, {}).get("ADMIN"):
        # UNCONFIRMED code and text: the docs say "administrator" only
        raise B24Error(403, "ACCESS_DENIED", "Access denied! Administrator rights are required")


@method("user.admin")
def user_admin(ctx: CallCtx, params: dict[str, Any]) -> bool:
    return bool(ctx.portal.users.get(ctx.auth.user_id, {}).get("ADMIN"))


@method("placement.bind", scope="placement", app_only="wrong_auth_type")
def placement_bind(ctx: CallCtx, params: dict[str, Any]) -> bool:
    _admin_only(ctx)
    placement = as_str(params.get("PLACEMENT")).strip().upper()
    handler = as_str(params.get("HANDLER")).strip()
    if not placement:
        raise B24Error(400, "ERROR_ARGUMENT", "Argument 'PLACEMENT' is null or empty")
    if not handler:
        raise B24Error(400, "ERROR_ARGUMENT", "Argument 'HANDLER' is null or empty")
    for bound in ctx.portal.placements:
        if bound["PLACEMENT"] == placement and bound["HANDLER"] == handler:
            raise B24Error(400, "ERROR_CORE",
                           "Unable to set placement handler: Handler already binded")
    lang_all = params.get("LANG_ALL")
    ctx.portal.placements.append({
        "PLACEMENT": placement, "HANDLER": handler, "TITLE": as_str(params.get("TITLE")),
        "DESCRIPTION": as_str(params.get("DESCRIPTION")),
        "GROUP_NAME": as_str(params.get("GROUP_NAME")),
        "LANG_ALL": lang_all if isinstance(lang_all, dict) else {}})
    return True


@method("placement.get", scope="placement", app_only="wrong_auth_type")
def placement_get(ctx: CallCtx, params: dict[str, Any]) -> list[dict[str, str]]:
    _admin_only(ctx)
    return [{"description": p["DESCRIPTION"] if "DESCRIPTION" in p else "",
             "handler": p["HANDLER"], "placement": p["PLACEMENT"], "title": p.get("TITLE", "")}
            for p in ctx.portal.placements]


@method("placement.unbind", scope="placement", app_only="wrong_auth_type")
def placement_unbind(ctx: CallCtx, params: dict[str, Any]) -> dict[str, int]:
    _admin_only(ctx)
    placement = as_str(params.get("PLACEMENT")).strip().upper()
    if not placement:
        raise B24Error(400, "ERROR_ARGUMENT", "Argument 'PLACEMENT' is null or empty")
    handler = as_str(params.get("HANDLER")).strip()
    kept = [p for p in ctx.portal.placements
            if p["PLACEMENT"] != placement or (handler and p["HANDLER"] != handler)]
    count = len(ctx.portal.placements) - len(kept)
    ctx.portal.placements[:] = kept
    return {"count": count}


# -- opening the app's page ---------------------------------------------------------------


def _handler(portal: Portal, placement: str, given: Any) -> str:
    if given:
        return str(given)
    if placement == "DEFAULT":
        main = sandbox().cfg["app"].get("main_handler")
        if main:
            return str(main)
        raise ControlError("the app has no main page here: pass handler (or set "
                           "app.main_handler)", 400, "no_handler")
    for bound in reversed(portal.placements):
        if bound["PLACEMENT"] == placement:
            return str(bound["HANDLER"])
    raise ControlError(f"nothing is bound to {placement} (placement.bind)", 404,
                       "placement_not_bound")


def page_post(portal: Portal, user_id: int, placement: str,
              handler: str | None = None) -> dict[str, Any]:
    """The URL and form fields of the POST Bitrix24 makes when ``user_id``
    opens the app's page at ``placement`` (caller holds no lock)."""
    sb = sandbox()
    placement = placement.upper() or "DEFAULT"
    with sb.store.lock:
        if portal.app is None:
            raise ControlError("the app is not installed on this portal", 409, "not_installed")
        if user_id not in portal.users:
            raise ControlError(f"unknown user {user_id}", 404, "user_not_found")
        target = _handler(portal, placement, handler)
        scopes = list(sb.cfg["app"]["scope"])
        access, refresh = sb.store.issue_pair(portal, user_id, scopes)
        application_token = portal.app.application_token
    base = base_url(sb)
    form = {"AUTH_ID": access.token, "AUTH_EXPIRES": str(int(sb.cfg["access_token_ttl_s"])),
            "REFRESH_ID": refresh.token, "SERVER_ENDPOINT": f"{base}/oauth/rest/",
            "member_id": portal.member_id, "status": str(sb.cfg["app"]["status"]),
            "PLACEMENT": placement}
    if placement == "DEFAULT":
        # simple-way.md: the main page also carries these two
        form["APPLICATION_TOKEN"] = application_token
        form["APPLICATION_SCOPE"] = ",".join(scopes)
    else:
        form["PLACEMENT_OPTIONS"] = "{}"
    query = {"DOMAIN": portal.domain,
             "PROTOCOL": "1" if urlsplit(base).scheme == "https" else "0",
             "LANG": str(portal.cfg.get("language") or "en"), "APP_SID": secrets.token_hex(16)}
    sep = "&" if "?" in target else "?"
    return {"url": f"{target}{sep}{urlencode(query)}", "form": form}


def _html(page: dict[str, Any]) -> str:
    fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in page["form"].items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Bitrix24</title></head>"
            f"<body><form id='app' method='post' action='{html.escape(page['url'])}'>{fields}"
            "<noscript><button>Open</button></noscript></form>"
            "<script>document.getElementById('app').submit()</script></body></html>")


def _portal(name: Any) -> Portal:
    store = sandbox().store
    if name in (None, ""):
        return next(iter(store.portals.values()))
    portal = store.portal(str(name)) or store.portal_by_member(str(name))
    if portal is None:
        raise ControlError(f"unknown portal {name}", 404, "portal_not_found")
    return portal


def _user(portal: Portal, given: Any) -> int:
    uid = as_int(given)
    return uid if uid is not None else portal.admin_id()


@bp.route("/_open_app", methods=["POST"])
def open_app() -> Response:
    from ..core import webhooks

    body = json_object()
    portal = _portal(body.get("portal"))
    page = page_post(portal, _user(portal, body.get("user_id")),
                     str(body.get("placement") or "DEFAULT"), body.get("handler"))
    out: dict[str, Any] = {**page, "html": _html(page)}
    if as_bool(body.get("submit"), False):
        sent = webhooks.send(page["url"], urlencode(page["form"]).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"}, 10.0)
        out.update({"status": sent.status, "body": sent.body(), "error": sent.error,
                    "location": (sent.headers or {}).get("Location")})
    return json_response(out)


@bp.route("/_open_app", methods=["GET"])
def open_app_page() -> Response:
    args = request.args
    portal = _portal(args.get("portal"))
    page = page_post(portal, _user(portal, args.get("user_id")),
                     str(args.get("placement") or "DEFAULT"), args.get("handler"))
    return Response(_html(page), mimetype="text/html")
