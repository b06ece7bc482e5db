"""OAuth 2.0 of the sandbox amoCRM (FACTS.md 1.1/1.2).

* ``GET /www/oauth?client_id&state&mode`` -- the consent page (real host
  ``www.amocrm.ru``); an account chooser when there are several accounts.
  Grant redirects to the integration's Redirect URI with ``code``,
  ``referer=<subdomain>.amocrm.ru``, ``state`` (only if sent) and ``platform``;
  refusal -> ``?error=access_denied&state=…``. ``mode=post_message`` would post
  to the opener window in amoCRM; the sandbox redirects in every mode.
  Sandbox-only: when the integration has no configured ``redirect_uri`` the
  page takes one as ``&redirect_uri=``.
* ``POST /<subdomain>/oauth2/access_token`` -- JSON body (FACTS 1.2; form
  bodies are accepted too, as the league/oauth2 clients send them):
  ``authorization_code`` (codes single-use, 20 min, bound to the account and
  redirect URI) and ``refresh_token`` (**single use**: every refresh returns a
  new pair and the old refresh token dies at once; reuse -> 400 OAuthProblemJson).
  Switch ``revoke_family_on_reuse`` (UNCONFIRMED, ASVS 10.4.5) also revokes the
  live pair on reuse. Calls are counted per grant type (``/_state``).
* ``GET /<host>/oauth2/account/current/subdomain`` with ``X-Refresh-Token``
  (FACTS 1.1; the real host is the token's ``api_domain``, any first path
  segment is accepted here) and the deprecated
  ``GET /www/oauth2/account/subdomain`` with a Bearer access token.

:func:`create_code`, :func:`fire_install_hook`, :func:`fire_disconnect_hook`
serve the control API.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, request

from ..core import webhooks
from ..core.oauth import Code, RefreshPolicy, Rejected
from .context import sandbox
from .errors import oauth_problem, plain_json, problem
from .store import Account, Store

__all__ = ["bp", "create_code", "InstallError", "fire_install_hook", "fire_disconnect_hook",
           "with_query"]

bp = Blueprint("oauth", __name__)


class InstallError(Exception):
    """A consent/install that cannot produce a code."""


def with_query(uri: str, params: dict[str, str]) -> str:
    sep = "&" if urlsplit(uri).query else "?"
    return uri + sep + urlencode(params)


def _redirect_uri(store: Store, given: str | None) -> str:
    configured = store.cfg["integration"].get("redirect_uri")
    if configured:
        if given and given != configured:
            raise InstallError("redirect_uri does not match the integration's Redirect URI")
        return str(configured)
    if not given:
        raise InstallError("the integration has no Redirect URI: pass redirect_uri")
    return given


def create_code(store: Store, account: Account, client_id: str, redirect_uri: str | None,
                user_id: int | None = None) -> Code:
    """Issue an authorization code (FACTS 1.2: 20 minutes, single use). Lock held."""
    if client_id != store.cfg["integration"]["client_id"]:
        raise InstallError("unknown client_id")
    uri = _redirect_uri(store, redirect_uri)
    uid = user_id if user_id is not None else account.admin_id()
    if uid not in account.users:
        raise InstallError(f"unknown user {uid} in account {account.subdomain}")
    return store.oauth.issue_code(account.id, uid, client_id, [], uri,
                                  float(store.cfg["code_ttl"]))


def fire_install_hook(url: str, params: dict[str, str], timeout: float) -> dict[str, Any]:
    """The one-shot "integration enabled" GET (FACTS 1.2: 3 s limit, response
    code not checked, never re-sent). Reports what the receiver answered."""
    target = with_query(url, params)
    outcome = webhooks.send(target, None, {}, timeout, method="GET")
    return {"url": target, "status": outcome.status, "body": outcome.body(2000),
            "error": outcome.error}


def fire_disconnect_hook(store: Store, account: Account) -> dict[str, Any] | None:
    """FACTS 1.2 disconnect hook: GET with ``account_id``, ``client_uuid`` and
    ``signature = hmac_sha256_hex(client_secret, f"{client_uuid}|{account_id}")``."""
    integ = store.cfg["integration"]
    url = integ.get("disconnect_hook_url")
    if not url:
        return None
    client_uuid = integ["client_id"]
    signature = hmac.new(integ["client_secret"].encode(),
                         f"{client_uuid}|{account.id}".encode(), hashlib.sha256).hexdigest()
    return fire_install_hook(url, {"account_id": str(account.id), "client_uuid": client_uuid,
                                   "signature": signature},
                             float(store.cfg["install_hook_timeout_s"]))


# -- consent page ---------------------------------------------------------------------------


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           "</title><style>body{font-family:sans-serif;max-width:34em;margin:3em auto}"
           "button{padding:.5em 1.5em}</style></head><body>"
           f"<h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(doc, status=status, mimetype="text/html")


@bp.route("/www/oauth", methods=["GET"])
def consent_page() -> Response:
    args = request.args
    store = sandbox().store
    integ = store.cfg["integration"]
    if args.get("client_id") != integ["client_id"]:
        return _page("Ошибка авторизации", "<p>Unknown client_id.</p>", 400)
    try:
        redirect_uri = _redirect_uri(store, args.get("redirect_uri"))
    except InstallError as exc:
        return _page("Ошибка авторизации", f"<p>{html.escape(str(exc))}</p>", 400)
    hidden = "".join(
        f"<input type='hidden' name='{k}' value='{html.escape(v, quote=True)}'>"
        for k, v in (("client_id", integ["client_id"]), ("redirect_uri", redirect_uri),
                     ("state", args.get("state", "")), ("mode", args.get("mode", "")),
                     ("has_state", "1" if "state" in args else "")))
    with store.lock:
        accounts = list(store.accounts.values())
    if len(accounts) == 1:
        chooser = (f"<input type='hidden' name='account_id' value='{accounts[0].id}'>"
                   f"<p>Аккаунт: <b>{html.escape(accounts[0].name)}</b> "
                   f"({html.escape(store.referer(accounts[0]))})</p>")
    else:
        chooser = "<p>Выберите аккаунт:</p>" + "".join(
            f"<label><input type='radio' name='account_id' value='{a.id}'"
            f"{' checked' if i == 0 else ''}> {html.escape(a.name)} "
            f"({html.escape(store.referer(a))})</label><br>" for i, a in enumerate(accounts))
    action = html.escape(request.script_root + "/www/oauth", quote=True)
    body = (f"<p>Интеграция <code>{html.escape(integ['client_id'])}</code> запрашивает доступ "
            f"к аккаунту.</p><form method='post' action='{action}'>{hidden}{chooser}"
            "<p><button type='submit' name='decision' value='grant'>Разрешить</button> "
            "<button type='submit' name='decision' value='deny'>Отказать</button></p></form>")
    return _page("Предоставить доступ", body)


@bp.route("/www/oauth", methods=["POST"])
def consent_submit() -> Response:
    form = request.form
    store = sandbox().store
    redirect_uri = form.get("redirect_uri", "")
    state = {"state": form.get("state", "")} if form.get("has_state") else {}
    if form.get("decision") == "deny":  # FACTS 1.2: ?error=access_denied&state=…
        return Response(status=302, headers={"Location": with_query(
            redirect_uri, {"error": "access_denied", **state})})
    try:
        with store.lock:
            account = store.accounts.get(int(form.get("account_id", "")))
            if account is None:
                raise InstallError("unknown account")
            code = create_code(store, account, form.get("client_id", ""), redirect_uri)
            params = {"code": code.value, "referer": store.referer(account), **state,
                      "platform": store.platform()}
    except (ValueError, InstallError) as exc:
        return _page("Ошибка авторизации", f"<p>{html.escape(str(exc))}</p>", 400)
    return Response(status=302, headers={"Location": with_query(code.redirect_uri, params)})


# -- token endpoint ------------------------------------------------------------------------------


def _token_request() -> dict[str, Any]:
    if "json" in (request.content_type or ""):
        try:
            data = json.loads(request.get_data() or b"{}")
        except ValueError:
            data = None
        return data if isinstance(data, dict) else {}
    return request.form.to_dict()


@bp.route("/<subdomain>/oauth2/access_token", methods=["POST"])
def access_token(subdomain: str) -> Response:
    store = sandbox().store
    body = _token_request()
    grant = str(body.get("grant_type") or "")
    with store.lock:
        account = store.account_by_subdomain(subdomain)
        counted = grant if grant in {"authorization_code", "refresh_token"} else "other"
        store.token_calls[counted] += 1
        if account is None:  # a non-existent account (error code 101) -> 401
            store.token_failures[counted] += 1
            return problem(401, "Account not found")
        account.token_calls[counted] += 1
        answer = _exchange(store, account, grant, body)
        if answer.status_code != 200:
            store.token_failures[counted] += 1
        return answer


#: FACTS 1.2 messages of the token endpoint by refusal reason
_CODE_ERRORS = {"used": "Authorization code has been revoked",
                "expired": "Authorization code has expired",
                "redirect_mismatch": "Invalid redirect_uri"}
_REFRESH_ERRORS = {"reused": "Token has been revoked", "expired": "Token has expired",
                   "redirect_mismatch": "Invalid redirect_uri"}


def _exchange(store: Store, account: Account, grant: str, body: dict[str, Any]) -> Response:
    integ = store.cfg["integration"]
    if body.get("client_id") != integ["client_id"] or \
            body.get("client_secret") != integ["client_secret"]:
        return oauth_problem("Client authentication failed")
    now = store.now()
    redirect_uri = str(body.get("redirect_uri") or "")
    cfg = store.cfg
    try:
        if grant == "authorization_code":
            code: Code = store.oauth.redeem(str(body.get("code") or ""), account=account.id,
                                            redirect_uri=redirect_uri)
            access, refresh = store.issue_pair(account, code.user_id, code.redirect_uri)
        elif grant == "refresh_token":
            # FACTS 1.2: single use, every refresh returns a new pair; reuse revokes the
            # live pair too with the UNCONFIRMED switch (ASVS 10.4.5)
            policy = RefreshPolicy(revoke_family_on_reuse=bool(cfg["revoke_family_on_reuse"]))
            access, refresh = store.oauth.refresh_grant(
                str(body.get("refresh_token") or ""), policy,
                access_ttl=float(cfg["access_token_ttl"]),
                refresh_ttl=float(cfg["refresh_token_ttl"]), account=account.id,
                redirect_uri=redirect_uri)
        else:
            return oauth_problem("The authorization grant type is not supported by the "
                                 "authorization server.")
    except Rejected as exc:
        if grant == "authorization_code":  # FACTS 1.2
            return oauth_problem(_CODE_ERRORS.get(exc.reason,
                                                  "Cannot decrypt the authorization code"))
        return oauth_problem(_REFRESH_ERRORS.get(exc.reason, "Cannot decrypt the refresh token"))
    # FACTS 1.2 response (application/json).
    return plain_json({"token_type": "Bearer", "expires_in": int(cfg["access_token_ttl"]),
                       "server_time": int(now), "access_token": access.token,
                       "refresh_token": refresh.token})


# -- account domain info (FACTS 1.1) ------------------------------------------------------------


def _domain_info(store: Store, account: Account) -> dict[str, Any]:
    return {"id": account.id, "subdomain": account.subdomain, "domain": store.referer(account),
            "top_level_domain": store.cfg["base_domain"].rsplit(".", 1)[-1]}


@bp.route("/<host>/oauth2/account/current/subdomain", methods=["GET"])
def current_subdomain(host: str) -> Response:
    """``X-Refresh-Token: <live refresh token>`` -> the account's current domain."""
    store = sandbox().store
    with store.lock:
        live = store.oauth.live_refresh(request.headers.get("X-Refresh-Token", ""))
        if live is None:
            return problem(401, "Unauthorized")
        return plain_json(_domain_info(store, store.accounts[int(live.account)]))


@bp.route("/www/oauth2/account/subdomain", methods=["GET"])
def subdomain_by_access_token() -> Response:
    """The deprecated variant: ``Authorization: Bearer <access token>``."""
    store = sandbox().store
    header = request.headers.get("Authorization", "")
    with store.lock:
        access = store.oauth.bearer(header[7:].strip()) if header[:7].lower() == "bearer " \
            else None
        if access is None or store.now() >= access.expires_at:
            return problem(401, "Unauthorized")
        return plain_json(_domain_info(store, store.accounts[int(access.account)]))
