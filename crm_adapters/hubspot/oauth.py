"""HubSpot OAuth 2.0: authorize URL, code exchange, refresh (FACTS 3.1).

* Authorize: ``{auth_base}/oauth/authorize?client_id&redirect_uri&scope&state``
  with scopes space-separated and encoded as ``%20`` (HubSpot's Python SDK).
* Token: ``POST {api_base}/oauth/v1/token``, **form-encoded**; the answer has
  ``access_token``, ``refresh_token``, ``expires_in`` and, optionally,
  ``hub_id``. When ``hub_id`` is missing, ``GET /oauth/v1/access-tokens/{t}``
  names the account.
* A revoked or unknown refresh token answers 400 ``BAD_REFRESH_TOKEN`` (or,
  newer, ``"error":"invalid_grant"``): that is :class:`AuthError`.
* Whether HubSpot rotates refresh tokens is UNCONFIRMED: always keep the one
  the answer carries.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import requests

from bridge.errors import AuthError, BridgeError, PermanentError
from bridge.http import HttpClient, Limit
from bridge.model import Installed

from .client import DEFAULT_API_BASE, DEFAULT_AUTH_BASE, decode, error_body, map_error, scrub
from .settings import HubSpotApp

__all__ = [
    "DEFAULT_SCOPES",
    "build_install_url",
    "credentials_from_token",
    "exchange_code",
    "refresh",
]

#: what the bridge needs: contacts, deals, tickets, owners, the Properties
#: API (crm.schemas.*), notes/tasks/communications ride on the object
#: scopes, and the custom channel + inbox list (FACTS 3.7).
DEFAULT_SCOPES = (
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "tickets",
    "crm.objects.owners.read",
    "crm.schemas.contacts.write",
    "crm.schemas.deals.write",
    "conversations.read",
    "conversations.custom_channels.read",
    "conversations.custom_channels.write",
)

#: token-endpoint error codes that mean "this grant is dead": re-authorise.
_DEAD_GRANT = frozenset(
    {"BAD_REFRESH_TOKEN", "BAD_AUTH_CODE", "BAD_CLIENT_ID", "BAD_GRANT_TYPE", "INVALID_GRANT"}
)


def _scopes(value: str | None) -> str:
    if not value:
        return " ".join(DEFAULT_SCOPES)
    return " ".join(part for part in value.replace(",", " ").split() if part)


def build_install_url(app: HubSpotApp, *, redirect_uri: str, state: str) -> str:
    """The URL a HubSpot admin opens to install the app."""
    base = (app.auth_base or DEFAULT_AUTH_BASE).rstrip("/")
    params = {
        "client_id": app.client_id,
        "redirect_uri": redirect_uri,
        "scope": _scopes(app.scopes),
    }
    if app.optional_scopes:
        params["optional_scope"] = _scopes(app.optional_scopes)
    params["state"] = state
    # quote (not quote_plus): HubSpot documents spaces in scope as %20.
    return f"{base}/oauth/authorize?{urlencode(params, quote_via=quote)}"


def token_error(response: requests.Response) -> BridgeError | None:
    """The token endpoint's errors: a dead grant is ``AuthError``."""
    if response.status_code in (400, 401):
        body = error_body(response)
        code = str(body.get("status") or body.get("error") or "").upper()
        if code in _DEAD_GRANT or response.status_code == 401:
            # never echo the grant: only the code and HubSpot's (scrubbed) text
            detail = scrub(body.get("message") or body.get("error_description"))
            return AuthError(
                f"HubSpot refused the OAuth grant ({code or response.status_code}): {detail}",
                status=response.status_code,
            )
    return map_error(response)


def _token_url(api_base: str) -> str:
    return f"{api_base.rstrip('/')}/oauth/v1/token"


def credentials_from_token(
    body: Mapping[str, Any], *, previous: Mapping[str, Any] | None = None, now: float | None = None
) -> dict[str, Any]:
    """Stored credentials from a token answer (keeps the old refresh token
    only when the answer carries none)."""
    if not isinstance(body, Mapping) or not body.get("access_token"):
        raise PermanentError("HubSpot token answer has no access_token")
    now = time.time() if now is None else now
    creds: dict[str, Any] = dict(previous or {})
    creds["type"] = "oauth"
    creds["access_token"] = str(body["access_token"])
    refresh_token = body.get("refresh_token") or creds.get("refresh_token")
    if refresh_token:
        creds["refresh_token"] = str(refresh_token)
    try:
        expires_in = float(body.get("expires_in") or 1800)
    except (TypeError, ValueError):
        expires_in = 1800.0  # HubSpot's usual lifetime (FACTS 3.1)
    creds["expires_at"] = int(now + expires_in)
    if body.get("hub_id") is not None:
        creds["hub_id"] = str(body["hub_id"])
        creds["account_id"] = str(body["hub_id"])
    return creds


def exchange_code(app: HubSpotApp, *, code: str, redirect_uri: str, http: HttpClient) -> Installed:
    """Trade an authorization code for the portal's credentials and hub id."""
    api_base = app.api_base or http.base_url or DEFAULT_API_BASE
    response = http.request(
        "POST",
        _token_url(api_base),
        data={
            "grant_type": "authorization_code",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "redirect_uri": redirect_uri,
            "code": code,
        },
        error_mapper=token_error,
    )
    creds = credentials_from_token(decode(response))
    if "account_id" not in creds:
        info = introspect(http, api_base, creds["access_token"])
        if info.get("hub_id") is None:
            raise PermanentError("HubSpot did not say which account installed the app")
        creds["hub_id"] = creds["account_id"] = str(info["hub_id"])
    return Installed(account_id=str(creds.pop("account_id")), credentials=creds)


def introspect(http: HttpClient, api_base: str, access_token: str) -> dict[str, Any]:
    """``GET /oauth/v1/access-tokens/{token}``: hub_id, scopes, expiry."""
    url = f"{api_base.rstrip('/')}/oauth/v1/access-tokens/{quote(access_token, safe='')}"
    try:
        response = http.request("GET", url, error_mapper=token_error)
    except BridgeError as exc:
        # The token is in this URL: drop the transport cause, which names it.
        raise type(exc)(exc.message, status=exc.status) from None
    body = decode(response)
    return body if isinstance(body, dict) else {}


def refresh(
    app: HubSpotApp,
    stale: Mapping[str, Any],
    *,
    http: HttpClient,
    api_base: str,
    limit: Limit | None = None,
) -> dict[str, Any]:
    """Fresh credentials for ``stale`` (called inside the core's lock)."""
    refresh_token = stale.get("refresh_token")
    if str(stale.get("type") or "oauth") != "oauth" or not refresh_token:
        raise AuthError("these HubSpot credentials cannot be refreshed: reinstall the app")
    response = http.request(
        "POST",
        _token_url(api_base),
        data={
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "refresh_token": str(refresh_token),
        },
        limit=limit,
        error_mapper=token_error,
    )
    return credentials_from_token(decode(response), previous=stale)
