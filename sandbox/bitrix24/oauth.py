"""OAuth 2.0: the consent step on the portal and the authorization server.

settings/oauth/index.md (full protocol), auto-renewal.md (refresh),
error-codes.md (server errors), FACTS.md 2.5:

* ``GET /<portal>/oauth/authorize/?client_id=…&state=…`` (real:
  ``https://<portal>/oauth/authorize/``): the user consents; Bitrix24
  redirects to the **app's configured** ``redirect_uri`` ("This address is not
  passed in the authorization request") with ``code``, ``state``, ``domain``,
  ``member_id``, ``scope`` (comma list) and ``server_domain``. The app must be
  installed on the portal; failures are shown on Bitrix24's own page, never
  redirected. Without a configured redirect_uri the code is shown on the page.
  Sandbox extension: ``user_id=`` picks the consenting user (default: an admin).
* ``GET /oauth/oauth/token/?grant_type=authorization_code|refresh_token&…``
  (real: ``https://oauth.bitrix.info/oauth/token/``). Codes live 30 s and are
  single-use; access tokens 1 h; refresh tokens 180 days and rotate on every
  refresh (``refresh_grace_s`` keeps the old one alive, UNCONFIRMED, default 0).
  Errors ``{"error": "invalid_grant"|"invalid_client"|"invalid_request", …}``
  with status ``oauth_error_status`` (UNCONFIRMED, default 400).
* ``/oauth/rest/app.info?auth=…`` (the ``server_endpoint``): the trusted app
  status (simple-way.md note).
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from ..core.oauth import Code, RefreshPolicy, Rejected
from .context import sandbox
from .errors import json_response
from .params import as_int
from .store import Portal, Store

__all__ = ["bp", "create_code", "server_domain"]

bp = Blueprint("oauth", __name__)


def server_domain() -> str:
    configured = sandbox().cfg.get("oauth_server_domain")
    return str(configured) if configured else request.host


def _base() -> str:
    configured = sandbox().cfg.get("public_base_url")
    root = configured.rstrip("/") if configured else request.host_url.rstrip("/")
    return root + request.script_root


def _page(title: str, body: str, status: int) -> Response:
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(page, status=status, mimetype="text/html")


def create_code(store: Store, portal: Portal, user_id: int) -> Code:
    """A fresh authorization code (caller holds the lock)."""
    app = store.cfg["app"]
    return store.oauth.issue_code(portal.domain, user_id, app["client_id"],
                                  list(app["scope"]), "", float(store.cfg["code_ttl_s"]))


@bp.route("/<portal_name>/oauth/authorize/", methods=["GET"])
@bp.route("/<portal_name>/oauth/authorize", methods=["GET"])
def authorize(portal_name: str) -> Response:
    sb = sandbox()
    store = sb.store
    with store.lock:
        portal = store.portal(portal_name)
        if portal is None:
            return _page("Bitrix24 not found", "<p>No such Bitrix24.</p>", 404)
        app = store.cfg["app"]
        if request.args.get("client_id") != app["client_id"]:
            return _page("Authorization error", "<p>Application not found.</p>", 400)
        if portal.app is None:
            # oauth/index.md: "For an application that is not installed, the
            # authorization ends with an error" shown on Bitrix24's page
            return _page("Authorization error", "<p>The application is not installed.</p>",
                         400)
        uid = as_int(request.args.get("user_id"))
        user_id = uid if uid in portal.users else portal.admin_id()
        code = create_code(store, portal, user_id)
        params = {"code": code.value, "state": request.args.get("state", ""),
                  "domain": portal.domain, "member_id": portal.member_id,
                  "scope": ",".join(code.scopes), "server_domain": server_domain()}
        target = app.get("redirect_uri")
    if not target:
        # index.md note: without a redirect_uri Bitrix24 shows the code on the page
        return _page("Authorization code", f"<p>Code: <code id='code'>{code.value}</code></p>",
                     200)
    sep = "&" if "?" in target else "?"
    return Response(status=302, headers={"Location": f"{target}{sep}{urlencode(params)}"})


def _error(store: Store, grant: str, error: str, description: str) -> Response:
    store.count_oauth(grant or "unknown", error)
    return json_response({"error": error, "error_description": description},
                         int(store.cfg["oauth_error_status"]))


def _token_body(store: Store, portal: Portal, access: Any, refresh: Any,
                refreshed: bool) -> dict[str, Any]:
    app = store.cfg["app"]
    base = _base()
    body: dict[str, Any] = {"access_token": access.token,
                            "client_endpoint": f"{base}/{portal.domain}/rest/",
                            "domain": server_domain()}
    if refreshed:  # auto-renewal.md adds "expires" and "user_id"
        body["expires"] = int(access.expires_at)
    body.update({"expires_in": int(store.cfg["access_token_ttl_s"]),
                 "member_id": portal.member_id, "refresh_token": refresh.token,
                 "scope": ",".join(access.scopes), "server_endpoint": f"{base}/oauth/rest/",
                 "status": app["status"]})
    if refreshed:
        body["user_id"] = access.user_id
    return body


@bp.route("/oauth/oauth/token/", methods=["GET", "POST"])
@bp.route("/oauth/oauth/token", methods=["GET", "POST"])
def token() -> Response:
    sb = sandbox()
    store = sb.store
    args = request.args
    grant = args.get("grant_type", "")
    with store.lock:
        if request.method != "GET":
            # FACTS 2.5 / oauth/index.md: "makes a GET request to the authorization server"
            return _error(store, grant, "invalid_request", "GET request required")
        app = store.cfg["app"]
        if grant not in ("authorization_code", "refresh_token"):
            return _error(store, grant, "invalid_request", "Unknown grant_type")
        if args.get("client_id") != app["client_id"] or \
                args.get("client_secret") != app["client_secret"]:
            return _error(store, grant, "invalid_client", "Invalid client credentials")
        if grant == "authorization_code":
            raw = args.get("code", "")
            if not raw:
                return _error(store, grant, "invalid_request", "code is required")
            try:
                code = store.oauth.redeem(raw)  # single use
            except Rejected:
                return _error(store, grant, "invalid_grant", "Invalid authorization code")
            portal = store.portal(str(code.account))
            if portal is None or portal.app is None:
                return _error(store, grant, "invalid_client", "Application not installed")
            access, refresh = store.issue_pair(portal, code.user_id, code.scopes)
            store.count_oauth(grant, None)
            return json_response(_token_body(store, portal, access, refresh, refreshed=False))
        raw = args.get("refresh_token", "")
        if not raw:
            return _error(store, grant, "invalid_request", "refresh_token is required")
        old = store.oauth.refresh.get(raw)
        portal = store.portal(str(old.account)) if old is not None else None
        if old is not None and (portal is None or portal.app is None):
            return _error(store, grant, "invalid_grant", "Invalid refresh token")
        # auto-renewal.md: "Retain it instead of the previous one"; FACTS: rotates
        # (refresh_grace_s keeps the old one alive a while, UNCONFIRMED)
        policy = RefreshPolicy(grace_s=float(store.cfg["refresh_grace_s"]),
                               revoke_access_on_refresh=bool(
                                   store.cfg["revoke_access_on_refresh"]))
        try:
            access, refresh = store.oauth.refresh_grant(
                raw, policy, access_ttl=float(store.cfg["access_token_ttl_s"]),
                refresh_ttl=float(store.cfg["refresh_token_ttl_s"]))
        except Rejected:
            return _error(store, grant, "invalid_grant", "Invalid refresh token")
        assert portal is not None
        store.count_oauth(grant, None)
        return json_response(_token_body(store, portal, access, refresh, refreshed=True))


@bp.route("/oauth/rest/app.info", methods=["GET", "POST"])
@bp.route("/oauth/rest/app.info.json", methods=["GET", "POST"])
def server_app_info() -> Response:
    """The authorization server's trusted ``app.info`` (simple-way.md note)."""
    sb = sandbox()
    raw = request.values.get("auth") or (request.get_json(silent=True) or {}).get("auth")
    with sb.store.lock:
        access = sb.store.oauth.bearer(str(raw or ""))
        if access is None:
            return json_response({"error": "NO_AUTH_FOUND",
                                  "error_description": "Wrong authorization data"}, 401)
        if access.expires_at <= sb.clock.now():
            return json_response({"error": "expired_token", "error_description":
                                  "The access token provided has expired."}, 401)
        portal = sb.store.portal(str(access.account))
        app = sb.cfg["app"]
        installed = bool(portal and portal.app and portal.app.finished)
    return json_response({"result": {"ID": 1, "CODE": app.get("code") or app["client_id"],
                                     "VERSION": as_int(app.get("version")) or app.get("version"),
                                     "STATUS": app["status"], "INSTALLED": installed,
                                     "PAYMENT_EXPIRED": "N", "DAYS": None}})
