"""OAuth app install, token exchange, introspection, account info (FACTS.md 3.1).

* ``GET /oauth/authorize`` -- consent page (portal chooser, Grant button);
  ``POST /oauth/authorize`` redirects to ``redirect_uri?code=...&state=...``.
* ``POST /oauth/v1/token`` -- form-encoded ``authorization_code`` and
  ``refresh_token`` grants; codes are single-use and short-lived.
* ``GET /oauth/v1/access-tokens/{token}``, ``GET|DELETE /oauth/v1/refresh-tokens/{token}``.
* ``GET /account-info/v3/details`` -- the token's portal.

:func:`create_code` is shared with the control endpoint ``POST /_install``.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, Response, request

from ..core.oauth import AccessToken, Code, RefreshPolicy, Rejected
from .context import auth, current_portal, sandbox
from .errors import correlation_id, json_response, not_found
from .store import Store

__all__ = ["bp", "create_code", "OAuthError"]

bp = Blueprint("oauth", __name__)


class OAuthError(Exception):
    """A token-endpoint failure: HubSpot's ``{"status": CODE, ...}`` 400 body."""

    def __init__(self, status: str, message: str, error: str = "invalid_grant") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error

    def response(self) -> Response:
        # `status` + `message` + `correlationId` as in live captures (FACTS 3.1,
        # community); newer bodies add OAuth-standard `error`/`error_description`.
        return json_response({"status": self.status, "message": self.message,
                              "correlationId": correlation_id(), "error": self.error,
                              "error_description": self.message}, 400)


def create_code(store: Store, portal_id: int, client_id: str, redirect_uri: str,
                scopes: list[str]) -> str:
    """Issue a single-use authorization code for an install. Caller holds the lock."""
    app = store.cfg["app"]
    if client_id != app["client_id"]:
        raise OAuthError("BAD_CLIENT_ID", "missing or unknown client id", "invalid_client")
    portal = store.portals.get(portal_id)
    if portal is None:
        raise OAuthError("BAD_PORTAL", f"unknown portal {portal_id}", "invalid_request")
    allowed = app.get("redirect_uris") or []
    if allowed and redirect_uri not in allowed:
        raise OAuthError("BAD_REDIRECT_URI", f"Authorization failed as the redirect URL "
                         f"'{redirect_uri}' doesn't match the app's registered redirect URL",
                         "invalid_request")
    owner: dict[str, Any] = (portal.owners[0] if portal.owners
                             else {"userId": 1, "email": "user@example.com"})
    code = store.oauth.issue_code(portal_id, owner["userId"], client_id, list(scopes),
                                  redirect_uri, float(store.cfg["code_ttl"]),
                                  {"app_id": int(app["app_id"]), "user": owner["email"]})
    return code.value


def _scopes(raw: str | None) -> list[str]:
    return [s for s in (raw or "").replace("+", " ").split() if s]


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           "</title><style>body{font-family:sans-serif;max-width:34em;margin:3em auto}"
           "button{padding:.5em 1.5em}</style></head><body>"
           f"<h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(doc, status=status, mimetype="text/html")


@bp.route("/oauth/authorize", methods=["GET"])
def authorize_page() -> Response:
    """The consent screen (the sandbox's app.hubspot.com/oauth/authorize)."""
    args = request.args
    store = sandbox().store
    app = store.cfg["app"]
    if args.get("client_id") != app["client_id"]:
        return _page("Authorization failed", "<p>Unknown client_id.</p>", 400)
    if not args.get("redirect_uri"):
        return _page("Authorization failed", "<p>redirect_uri is required.</p>", 400)
    allowed = app.get("redirect_uris") or []
    if allowed and args["redirect_uri"] not in allowed:
        return _page("Authorization failed",
                     f"<p>Authorization failed as the redirect URL "
                     f"'{html.escape(args['redirect_uri'])}' doesn't match the app's "
                     "registered redirect URL.</p>", 400)
    hidden = "".join(
        f"<input type='hidden' name='{k}' value='{html.escape(args.get(k, ''), quote=True)}'>"
        for k in ("client_id", "redirect_uri", "scope", "optional_scope", "state"))
    with store.lock:
        portals = list(store.portals.values())
    if len(portals) == 1:
        chooser = (f"<input type='hidden' name='portal_id' value='{portals[0].id}'>"
                   f"<p>Account: <b>{html.escape(portals[0].name)}</b> ({portals[0].id})</p>")
    else:
        chooser = "<p>Choose an account:</p>" + "".join(
            f"<label><input type='radio' name='portal_id' value='{p.id}'"
            f"{' checked' if i == 0 else ''}> {html.escape(p.name)} ({p.id})</label><br>"
            for i, p in enumerate(portals))
    scopes = _scopes(args.get("scope")) + _scopes(args.get("optional_scope"))
    scope_list = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in scopes)
    action = html.escape(request.script_root + "/oauth/authorize", quote=True)
    body = (f"<p>App <b>{html.escape(str(app['app_id']))}</b> requests access:</p>"
            f"<ul>{scope_list}</ul><form method='post' action='{action}'>{hidden}{chooser}"
            "<p><button type='submit' name='decision' value='grant'>Grant access</button> "
            "<button type='submit' name='decision' value='deny'>Cancel</button></p></form>")
    return _page("Connect app", body)


def _with_query(uri: str, params: dict[str, str]) -> str:
    sep = "&" if urlsplit(uri).query else "?"
    return uri + sep + urlencode(params)


@bp.route("/oauth/authorize", methods=["POST"])
def authorize_submit() -> Response:
    """Grant: redirect to ``redirect_uri?code=...&state=...`` (FACTS 3.1)."""
    form = request.form
    redirect_uri = form.get("redirect_uri", "")
    state = {"state": form["state"]} if form.get("state") else {}
    if form.get("decision") == "deny":
        return Response(status=302, headers={"Location": _with_query(
            redirect_uri, {"error": "access_denied", **state})})
    store = sandbox().store
    try:
        portal_id = int(form.get("portal_id", ""))
        with store.lock:
            code = create_code(store, portal_id, form.get("client_id", ""), redirect_uri,
                               _scopes(form.get("scope")) + _scopes(form.get("optional_scope")))
    except (ValueError, OAuthError) as exc:
        return _page("Authorization failed", f"<p>{html.escape(str(exc))}</p>", 400)
    return Response(status=302,
                    headers={"Location": _with_query(redirect_uri, {"code": code, **state})})


def _token_body(store: Store, access: AccessToken) -> dict[str, Any]:
    """``AccessTokenResponse`` (FACTS 3.1): required access_token, expires_in,
    refresh_token, token_type, token_use; plus hub_id, user_id, scopes."""
    return {"access_token": access.token, "refresh_token": access.refresh,
            "expires_in": int(store.cfg["access_token_ttl"]), "token_type": "bearer",
            "token_use": "access_token",  # value UNCONFIRMED (field required per spec)
            "hub_id": access.account, "user_id": access.user_id, "scopes": access.scopes}


@bp.route("/oauth/v1/token", methods=["POST"])
def token() -> Response:
    """Token exchange; ``application/x-www-form-urlencoded`` only (FACTS 3.1)."""
    store = sandbox().store
    if "application/x-www-form-urlencoded" not in (request.content_type or ""):
        return OAuthError("BAD_REQUEST", "the token endpoint takes "
                          "application/x-www-form-urlencoded bodies", "invalid_request").response()
    form = request.form
    grant_type = form.get("grant_type")
    app = store.cfg["app"]
    try:
        if grant_type not in {"authorization_code", "refresh_token"}:
            raise OAuthError("BAD_GRANT_TYPE", "missing or unknown grant_type",
                             "unsupported_grant_type")
        if form.get("client_id") != app["client_id"]:
            raise OAuthError("BAD_CLIENT_ID", "missing or unknown client id", "invalid_client")
        if form.get("client_secret") != app["client_secret"]:
            raise OAuthError("BAD_CLIENT_SECRET", "missing or invalid client secret",
                             "invalid_client")
        with store.lock:
            if grant_type == "authorization_code":
                access = _exchange_code(store, form.get("code", ""), form.get("redirect_uri", ""))
            else:
                access = _refresh(store, form.get("refresh_token", ""))
            return json_response(_token_body(store, access))
    except OAuthError as exc:
        return exc.response()


def _exchange_code(store: Store, value: str, redirect_uri: str) -> AccessToken:
    try:
        code: Code = store.oauth.redeem(value, redirect_uri=redirect_uri)
    except Rejected as exc:
        if exc.reason == "expired":  # status seen in the wild
            raise OAuthError("EXPIRED_AUTH_CODE", "auth code is expired") from None
        if exc.reason == "redirect_mismatch":
            raise OAuthError("BAD_REDIRECT_URI", "redirect_uri does not match the one used to "
                             "authorize", "invalid_grant") from None
        # BAD_AUTH_CODE "missing or unknown auth code" (community captures).
        raise OAuthError("BAD_AUTH_CODE", "missing or unknown auth code") from None
    access, _ = store.oauth.issue(code.account, code.user_id, code.client_id, code.scopes,
                                  access_ttl=float(store.cfg["access_token_ttl"]),
                                  refresh_ttl=None, extra=code.extra)
    return access


def _refresh(store: Store, refresh_token: str) -> AccessToken:
    # UNCONFIRMED switch rotate_refresh_tokens: a refresh returns a new refresh token
    # and the old one stops working; off, the same refresh token comes back.
    policy = RefreshPolicy(rotate=bool(store.cfg["rotate_refresh_tokens"]))
    try:
        access, _ = store.oauth.refresh_grant(
            refresh_token, policy, access_ttl=float(store.cfg["access_token_ttl"]),
            refresh_ttl=None)
    except Rejected:
        # FACTS 3.1: 400 BAD_REFRESH_TOKEN "missing or unknown refresh token".
        raise OAuthError("BAD_REFRESH_TOKEN", "missing or unknown refresh token") from None
    return access


@bp.route("/oauth/v1/access-tokens/<token_value>", methods=["GET"])
def access_token_info(token_value: str) -> Response:
    store = sandbox().store
    with store.lock:
        access = store.oauth.bearer(token_value)
        if access is None or access.expires_at <= store.now():
            # 404 for unknown/expired tokens: UNCONFIRMED.
            raise not_found("Token not found or expired")
        portal = store.portals[access.account]
        return json_response({
            "token": access.token, "user": access.extra["user"],
            "hub_domain": f"{portal.id}.hubspot.test", "scopes": access.scopes,
            "hub_id": access.account, "app_id": access.extra["app_id"],
            "expires_in": int(access.expires_at - store.now()), "user_id": access.user_id,
            "token_type": "access"})


@bp.route("/oauth/v1/refresh-tokens/<token_value>", methods=["GET", "DELETE"])
def refresh_token_info(token_value: str) -> Response:
    store = sandbox().store
    with store.lock:
        grant = store.oauth.refresh.get(token_value)
        if grant is None:
            raise not_found("Refresh token not found")
        if request.method == "DELETE":
            # Revoking a refresh token uninstalls: its access tokens stop working.
            store.oauth.revoke_refresh(token_value)
            return Response(status=204)
        return json_response({
            "token": grant.token, "user": grant.extra["user"],
            "hub_domain": f"{grant.account}.hubspot.test", "scopes": grant.scopes,
            "hub_id": grant.account, "client_id": grant.client_id, "user_id": grant.user_id,
            "token_type": "refresh"})


@bp.route("/account-info/v3/details", methods=["GET"])
@auth("bearer")
def account_details() -> Response:
    """``{portalId, timeZone, companyCurrency, ...}`` of the token's portal."""
    portal = current_portal()
    try:
        offset = dt.datetime.now(ZoneInfo(portal.time_zone)).utcoffset() or dt.timedelta()
    except (ZoneInfoNotFoundError, ValueError):  # unknown zone names fall back to UTC
        offset = dt.timedelta()
    millis = int(offset.total_seconds() * 1000)
    sign = "-" if millis < 0 else "+"
    hours, minutes = divmod(abs(millis) // 60000, 60)
    return json_response({
        "portalId": portal.id, "accountType": "STANDARD", "timeZone": portal.time_zone,
        "companyCurrency": portal.currency, "additionalCurrencies": [],
        "utcOffset": f"{sign}{hours:02d}:{minutes:02d}", "utcOffsetMilliseconds": millis,
        "uiDomain": "app.hubspot.com", "dataHostingLocation": "na1"})

