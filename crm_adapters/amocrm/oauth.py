"""amoCRM OAuth 2.0: authorize URL, code exchange, single-use refresh (FACTS 1.2).

* Authorize: ``{auth_base}/oauth?client_id&state&mode=post_message``.
* The redirect carries ``code``, ``referer`` (the account host,
  ``acme.amocrm.ru``), ``state`` and ``platform``; the one-shot "integration
  enabled" GET carries ``from_widget`` and no state of ours.
* Token: ``POST https://{account}/oauth2/access_token`` with **JSON**
  ``{client_id, client_secret, grant_type, code | refresh_token, redirect_uri}``.
  The answer is ``{token_type, expires_in, access_token, refresh_token}``.
* Refresh tokens are **single use**: every refresh returns a new pair and the
  old refresh token dies at once. The core commits the pair we return before
  anyone uses it (under the tenant's row lock); a refused refresh (400
  ``OAuthProblemJson`` / ``invalid_grant``, or 401) is ``AuthError`` and the
  same refresh token is never sent twice by this module.

The ``referer`` decides where we send ``client_secret``: it must name an
amoCRM account host (``*.amocrm.ru``, ``*.amocrm.com``, ``*.kommo.com``) or,
with an ``api_base`` template configured (the sandbox), only its first label
is used as the subdomain. A forged callback therefore cannot make us post the
secret to a host of its choosing.

The tenant's stable key (``account_id``) is amoCRM's numeric account id,
read once with the new token (``GET /api/v4/account``): subdomains can be
renamed (FACTS 1.1), the id cannot.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests

from bridge.errors import AuthError, BridgeError, PayloadError, PermanentError, SignatureError
from bridge.http import HttpClient, Limit

from .client import (
    DEFAULT_API_BASE,
    DEFAULT_AUTH_BASE,
    account_base,
    decode,
    error_body,
    map_error,
    scrub,
    subdomain_from_host,
)

__all__ = ["build_install_url", "credentials_from_token", "exchange_code", "refresh", "token_error"]

#: access tokens live one day (FACTS 1.2)
DEFAULT_EXPIRES_IN = 86400


def build_install_url(app: Mapping[str, str], *, redirect_uri: str, state: str) -> str:
    """The consent URL a CRM admin opens. amoCRM takes the redirect URI from
    the integration's settings, not from this URL."""
    base = (app.get("auth_base") or DEFAULT_AUTH_BASE).rstrip("/")
    params = {"client_id": app["client_id"], "state": state, "mode": "post_message"}
    return f"{base}/oauth?{urlencode(params)}"


def token_error(response: requests.Response) -> BridgeError | None:
    """The token endpoint's refusals are ``AuthError`` (re-authorise): 400
    ``OAuthProblemJson`` ("Authorization code has expired", a reused refresh
    token, ...) and 401. The grant itself never appears in the message."""
    if response.status_code in (400, 401):
        body = error_body(response)
        hint = scrub(body.get("hint") or body.get("error_description") or body.get("error"))
        return AuthError(
            f"amoCRM refused the OAuth grant (HTTP {response.status_code})"
            + (f": {hint}" if hint else ""),
            status=response.status_code,
        )
    return map_error(response)


def credentials_from_token(body: Any, *, now: float | None = None) -> dict[str, Any]:
    if not isinstance(body, Mapping) or not body.get("access_token"):
        raise PermanentError("amoCRM token answer has no access_token")
    now = time.time() if now is None else now
    try:
        expires_in = float(body.get("expires_in") or DEFAULT_EXPIRES_IN)
    except (TypeError, ValueError):
        expires_in = float(DEFAULT_EXPIRES_IN)
    creds: dict[str, Any] = {
        "type": "oauth",
        "access_token": str(body["access_token"]),
        "expires_at": int(now + expires_in),
    }
    if body.get("refresh_token"):
        creds["refresh_token"] = str(body["refresh_token"])
    return creds


def _token_url(base: str) -> str:
    return f"{base.rstrip('/')}/oauth2/access_token"


def exchange_code(
    app: Mapping[str, str],
    *,
    code: str,
    redirect_uri: str,
    http: HttpClient,
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Trade the code for tokens at the account named by ``referer``, then
    read the account (id, amojo id). Returns the credentials plus
    ``account_id`` and ``settings`` (``subdomain``, ``domain``,
    ``amo_account_id``, ``amojo_id``, ``redirect_uri``)."""
    referer = str((params or {}).get("referer") or "").strip()
    if not referer:
        raise PayloadError("amoCRM callback without `referer`: cannot tell which account")
    host = referer.lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    try:
        subdomain = subdomain_from_host(host)
    except PermanentError:
        # a forged callback: never send the client secret there
        raise SignatureError("amoCRM callback names a host that is not an amoCRM account") from None
    template = http.base_url or DEFAULT_API_BASE
    domain = host.lower() if "." in host else None
    base = account_base(template, subdomain, domain if template == DEFAULT_API_BASE else None)
    uri = app.get("redirect_uri") or redirect_uri
    response = http.request(
        "POST",
        _token_url(base),
        json={
            "client_id": app.get("client_id", ""),
            "client_secret": app.get("client_secret", ""),
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": uri,
        },
        error_mapper=token_error,
    )
    creds = credentials_from_token(decode(response))
    account = decode(
        http.request(
            "GET",
            f"{base}/api/v4/account",
            params={"with": "amojo_id"},
            headers={"Authorization": f"Bearer {creds['access_token']}"},
            error_mapper=map_error,
        )
    )
    if not isinstance(account, Mapping) or account.get("id") in (None, ""):
        raise PermanentError("amoCRM did not say which account installed the integration")
    settings: dict[str, Any] = {
        "subdomain": subdomain,
        "amo_account_id": str(account["id"]),
        "redirect_uri": uri,
    }
    if domain and template == DEFAULT_API_BASE:
        settings["domain"] = domain
    if account.get("amojo_id"):
        settings["amojo_id"] = str(account["amojo_id"])
    creds["account_id"] = str(account["id"])
    creds["settings"] = settings
    return creds


def refresh(
    app: Mapping[str, str],
    stale: Mapping[str, Any],
    *,
    http: HttpClient,
    base_url: str,
    redirect_uri: str | None,
    limit: Limit | None = None,
) -> dict[str, Any]:
    """The new pair for ``stale`` (called inside the core's single-flight
    lock). amoCRM always returns a new refresh token; if an answer ever
    lacked one, the old one is kept (it is the only one we have)."""
    refresh_token = stale.get("refresh_token")
    if str(stale.get("type") or "oauth") != "oauth" or not refresh_token:
        raise AuthError("these amoCRM credentials cannot be refreshed: install the bridge again")
    response = http.request(
        "POST",
        _token_url(base_url),
        json={
            "client_id": app.get("client_id", ""),
            "client_secret": app.get("client_secret", ""),
            "grant_type": "refresh_token",
            "refresh_token": str(refresh_token),
            "redirect_uri": app.get("redirect_uri") or redirect_uri or "",
        },
        limit=limit,
        error_mapper=token_error,
    )
    fresh = credentials_from_token(decode(response))
    fresh.setdefault("refresh_token", str(refresh_token))
    for key in ("account_id",):
        if stale.get(key) is not None:
            fresh[key] = stale[key]
    return fresh
