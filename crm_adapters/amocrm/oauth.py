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
* Long-lived tokens (private integrations, FACTS 1.2) are pasted, not
  exchanged: :func:`long_lived_install` takes the token with the account it
  belongs to (``acme:<token>``), since the token cannot name it.

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

import base64
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from bridge.errors import AuthError, BridgeError, PayloadError, PermanentError, SignatureError
from bridge.http import HttpClient, Limit
from bridge.model import Installed

from .client import (
    ACCOUNT_DOMAINS,
    DEFAULT_API_BASE,
    DEFAULT_AUTH_BASE,
    account_base,
    decode,
    error_body,
    map_error,
    scrub,
    subdomain_from_host,
)
from .settings import AmoCrmApp

__all__ = [
    "LONG_LIVED_FORMS",
    "build_install_url",
    "credentials_from_token",
    "exchange_code",
    "long_lived_install",
    "refresh",
    "token_claims",
    "token_error",
]

#: access tokens live one day (FACTS 1.2)
DEFAULT_EXPIRES_IN = 86400


def build_install_url(app: AmoCrmApp, *, redirect_uri: str, state: str) -> str:
    """The consent URL a CRM admin opens. amoCRM takes the redirect URI from
    the integration's settings, not from this URL."""
    base = (app.auth_base or DEFAULT_AUTH_BASE).rstrip("/")
    params = {"client_id": app.client_id, "state": state, "mode": "post_message"}
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
    app: AmoCrmApp,
    *,
    code: str,
    redirect_uri: str,
    http: HttpClient,
    params: Mapping[str, str] | None = None,
) -> Installed:
    """Trade the code for tokens at the account named by ``referer``, then
    read the account (id, amojo id). The install's account id is amoCRM's
    numeric account id; its settings (:class:`AmoCrmSettings` fields) are
    ``subdomain``, ``domain``, ``amo_account_id``, ``amojo_id`` and
    ``redirect_uri``."""
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
    uri = app.redirect_uri or redirect_uri
    response = http.request(
        "POST",
        _token_url(base),
        json={
            "client_id": app.client_id,
            "client_secret": app.client_secret,
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
    return Installed(str(account["id"]), creds, settings)


def refresh(
    app: AmoCrmApp,
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
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": str(refresh_token),
            "redirect_uri": app.redirect_uri or redirect_uri or "",
        },
        limit=limit,
        error_mapper=token_error,
    )
    fresh = credentials_from_token(decode(response))
    fresh.setdefault("refresh_token", str(refresh_token))
    # credentials stored by earlier versions carry the account id: keep it
    for key in ("account_id",):
        if stale.get(key) is not None:
            fresh[key] = stale[key]
    return fresh


# --------------------------------------------------------------------------
# long-lived tokens
# --------------------------------------------------------------------------

#: how an admin names the account a long-lived token belongs to
LONG_LIVED_FORMS = (
    "<subdomain>:<token> (e.g. acme:eyJ0eXAi...), or the account's address before the "
    "token (acme.kommo.com:eyJ0eXAi... or https://acme.amocrm.ru:eyJ0eXAi...)"
)


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token (FACTS 1.1), **unverified** (the
    bridge holds no key to check them): ``{}`` when ``token`` is no JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, RecursionError):  # binascii.Error and JSON errors are ValueErrors
        return {}
    return claims if isinstance(claims, dict) else {}


def long_lived_install(pasted: str) -> Installed:
    """What an admin pastes for a private integration's long-lived token
    (FACTS 1.2: 1 day to 5 years, no refresh token), as an install.

    Requests must go to the account's own host (FACTS 1.1), and the token
    cannot name it: its ``api_domain`` claim is a host shared by many
    accounts (``api-b.amocrm.ru``), and the one documented way from a token
    to the account's subdomain (``/oauth2/account/current/subdomain``,
    FACTS 1.1) takes a refresh token, which a long-lived token does not
    have. So the admin names the account before the token, in one of the
    forms of :data:`LONG_LIVED_FORMS`; anything else is a ``ValueError``
    that names them.

    The token's ``account_id`` and ``base_domain`` claims (in amoCRM's
    tokens and the sandbox's, not on a vendor page: UNCONFIRMED) are read
    unverified, as hints: the account id (``setup()`` then records the one
    ``GET /api/v4/account`` answers) and, for a bare subdomain, the host
    (``acme`` + ``kommo.com``; default ``.amocrm.ru``).
    """
    account, _, token = pasted.strip().rpartition(":")  # a JWT has no ":" (base64url)
    token, account = token.strip(), account.strip().rstrip("/")
    if not token:
        raise ValueError("the token is empty")
    if not account:
        raise ValueError(
            "amoCRM: the token does not name its account (amoCRM's tokens carry no "
            f"subdomain, and requests must go to the account's own host): give {LONG_LIVED_FORMS}"
        )
    host = (urlsplit(account).hostname or "") if "://" in account else account.lower()
    try:
        subdomain = subdomain_from_host(host)
    except PermanentError:
        raise ValueError(
            f"amoCRM: {scrub(account)[:80]!r} is no amoCRM account (acme, acme.amocrm.ru, "
            f"acme.amocrm.com or acme.kommo.com): give {LONG_LIVED_FORMS}"
        ) from None
    claims = token_claims(token)
    settings: dict[str, Any] = {"subdomain": subdomain}
    base_domain = str(claims.get("base_domain") or "").lower()
    if "." in host:
        settings["domain"] = host
    elif base_domain in ACCOUNT_DOMAINS:
        settings["domain"] = f"{subdomain}.{base_domain}"
    account_id = str(claims.get("account_id") or "")
    if not account_id.isdigit():
        return Installed(None, {"type": "long_lived", "access_token": token}, settings)
    settings["amo_account_id"] = account_id
    return Installed(account_id, {"type": "long_lived", "access_token": token}, settings)
