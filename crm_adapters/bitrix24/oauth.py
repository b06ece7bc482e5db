"""Bitrix24 app install and OAuth (FACTS 2.5; docs ``settings/oauth/*.md``,
``api-reference/common/events/on-app-install.md``,
``settings/app-installation/local-apps/installation-callback.md``).

* **Install event** (:func:`install_event`): Bitrix24 POSTs ``ONAPPINSTALL``
  form-encoded (``auth[access_token]=…``) to the app's install handler, one
  URL for every portal. Nothing in it is signed, so before anything is
  stored: ``auth[client_endpoint]`` must be ``https://<auth[domain]>/rest/``
  on a Bitrix24 cloud host (or a host the deployment allows:
  ``app.allowed_hosts``), and the access token must work there —
  ``app.info`` at that endpoint must name *our* app (``CODE`` equals our
  ``client_id``, or ``app.app_code`` for a Market app whose code differs).
  A forged event can then neither point us at a server of its choosing nor
  hand us tokens of another app. ``application_token`` (the only proof
  future events carry) goes into the credentials.
* **Full OAuth**: :func:`build_install_url` ``https://<portal>/oauth/authorize/?
  client_id&state`` (the portal is ``app.portal``: a host or a URL);
  :func:`exchange_code` GETs ``{auth_base}/oauth/token/?grant_type=
  authorization_code&client_id&client_secret&code`` — at the configured OAuth
  server, never at a server named in the callback (``server_domain`` is only
  checked). The code lives 30 s.
* **Refresh** (:func:`refresh`): ``GET {auth_base}/oauth/token/?grant_type=
  refresh_token&…``; every answer carries a **new** refresh token that the
  core commits before use. The adapter calls it only after ``401
  expired_token`` (``client.B24Api.call``).

``app`` is always the deployment's :class:`~.settings.Bitrix24App`.

OAuth server refusals (``invalid_grant``, ``invalid_client``,
``PAYMENT_REQUIRED``, …; the HTTP status is not documented) are
``AuthError``; its 5xx are retryable.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from bridge.errors import (
    AuthError,
    BridgeError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from bridge.http import HttpClient
from bridge.model import Installed, WebhookRequest

from .batch import as_map
from .client import AUTH, B24Api, map_error, scrub
from .settings import DEFAULT_AUTH_BASE, Bitrix24App
from .webhooks import decode_event, token_digest

__all__ = [
    "DEFAULT_AUTH_BASE",
    "build_install_url",
    "check_endpoint",
    "credentials_from_token",
    "exchange_code",
    "install_event",
    "refresh",
]

#: access tokens live one hour (FACTS 2.5)
DEFAULT_EXPIRES_IN = 3600
#: Bitrix24 cloud portals: ``<name>.bitrix24.<tld>`` (``.com``, ``.de``,
#: ``.com.br``, ``.co.uk``…). Stricter than ``*.bitrix24.*``, which would
#: also match ``x.bitrix24.attacker.example``.
CLOUD_HOST = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.bitrix24\.(?:[a-z]{2,3}|(?:com|co|net|org)\.[a-z]{2})"
)


# -- hosts --------------------------------------------------------------------


def _allowed(app: Bitrix24App) -> list[str]:
    return [i.strip().lower() for i in app.allowed_hosts.split(",") if i.strip()]


def host_allowed(app: Bitrix24App, netloc: str) -> bool:
    """``netloc`` (``host[:port]``) is a Bitrix24 cloud host, or matches a
    pattern of the deployment's ``allowed_hosts`` (comma-separated globs,
    e.g. ``crm.example.com,127.0.0.1:*``: on-premise portals, the sandbox)."""
    netloc = netloc.lower()
    host = netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc
    if any(fnmatch.fnmatchcase(netloc, p) or fnmatch.fnmatchcase(host, p) for p in _allowed(app)):
        return True
    return bool(CLOUD_HOST.fullmatch(host)) and host == netloc


def check_endpoint(app: Bitrix24App, client_endpoint: str, domain: str | None) -> str:
    """The portal's REST base, or ``SignatureError``: it must be on the
    portal's own host (``domain``), on an allowed host, over HTTPS for the
    cloud."""
    try:
        parts = urlsplit(client_endpoint or "")
    except ValueError:  # "https://[abc/rest/": an invalid IPv6 host
        raise SignatureError("Bitrix24 install names no valid client_endpoint") from None
    netloc = parts.netloc.lower()
    if not netloc or parts.scheme not in ("https", "http"):
        raise SignatureError("Bitrix24 install names no valid client_endpoint")
    explicitly = any(
        fnmatch.fnmatchcase(netloc, p) or fnmatch.fnmatchcase(netloc.split(":")[0], p)
        for p in _allowed(app)
    )
    if parts.scheme != "https" and not explicitly:
        raise SignatureError("Bitrix24 client_endpoint must use HTTPS")
    if not host_allowed(app, netloc):
        raise SignatureError("Bitrix24 client_endpoint is not on a Bitrix24 host")
    if domain is not None:
        own = str(domain).strip().lower().removeprefix("https://").removeprefix("http://")
        own = own.rstrip("/")
        # An allowed host may serve portals under a path (a proxy in front of
        # on-premise portals, the sandbox: ``http://host/<domain>/rest/``).
        segments = [p for p in parts.path.lower().split("/") if p]
        behind = explicitly and len(segments) >= 2 and segments[-2:] == [own, "rest"]
        if own != netloc and not behind:
            raise SignatureError("Bitrix24 client_endpoint is not on the portal's own host")
    if parts.query or parts.fragment:
        raise SignatureError("Bitrix24 client_endpoint carries a query")
    return client_endpoint if client_endpoint.endswith("/") else client_endpoint + "/"


# -- install URL / code exchange / refresh ------------------------------------


def _portal_base(app: Bitrix24App) -> str:
    portal = app.portal.strip().rstrip("/")
    if not portal:
        raise PermanentError(
            "Bitrix24 install needs the portal: set BITRIX24_PORTAL (e.g. acme.bitrix24.com), "
            "or install the app from the Bitrix24 Market/portal (the install event needs no URL)"
        )
    return portal if portal.startswith(("https://", "http://")) else f"https://{portal}"


def build_install_url(app: Bitrix24App, *, redirect_uri: str, state: str) -> str:
    """``https://<portal>/oauth/authorize/?client_id&state`` (Bitrix24 takes
    the redirect URI from the app's settings, not from this URL)."""
    params = {"client_id": app.client_id, "state": state}
    return f"{_portal_base(app)}/oauth/authorize/?{urlencode(params)}"


def _token_error(response: requests.Response) -> BridgeError | None:
    try:
        body = response.json()
    except ValueError:
        body = None
    code = str(body.get("error") or "") if isinstance(body, Mapping) else ""
    if response.status_code >= 500 and code not in AUTH:
        return RetryableError(f"Bitrix24 OAuth server HTTP {response.status_code}")
    if code or response.status_code in (400, 401, 403):
        text = scrub(body.get("error_description") if isinstance(body, Mapping) else "")
        message = AUTH.get(code, f"Bitrix24 OAuth server refused the grant ({scrub(code)})")
        return AuthError(f"{message}: {text}" if text else message, status=response.status_code)
    return None


def _token_call(app: Bitrix24App, http: HttpClient, params: Mapping[str, str]) -> Mapping[str, Any]:
    base = (app.auth_base or DEFAULT_AUTH_BASE).rstrip("/")
    # FACTS 2.5: a GET with the secret in the query, as documented; the URL
    # never reaches an exception message (HttpClient keeps URLs out)
    response = http.request(
        "GET",
        f"{base}/oauth/token/",
        params={
            **params,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        },
        error_mapper=_token_error,
    )
    try:
        body = response.json()
    except ValueError:
        raise RetryableError("Bitrix24 OAuth server answered without JSON") from None
    if not isinstance(body, Mapping):
        raise RetryableError("Bitrix24 OAuth server answered without a JSON object")
    if body.get("error"):
        code = str(body["error"])
        raise AuthError(AUTH.get(code, f"Bitrix24 OAuth server refused: {scrub(code)}"))
    return body


def credentials_from_token(
    app: Bitrix24App, body: Mapping[str, Any], *, now: float | None = None
) -> dict[str, Any]:
    """App-style credentials from a token answer (or an event's ``auth``)."""
    if not body.get("access_token") or not body.get("refresh_token"):
        raise PermanentError("Bitrix24 token answer without access_token/refresh_token")
    now = time.time() if now is None else now
    try:
        expires_at = float(body.get("expires") or 0) or now + float(
            body.get("expires_in") or DEFAULT_EXPIRES_IN
        )
    except (TypeError, ValueError):
        expires_at = now + DEFAULT_EXPIRES_IN
    member_id = str(body.get("member_id") or "")
    if not member_id:
        raise PermanentError("Bitrix24 did not say which portal (member_id)")
    creds: dict[str, Any] = {
        "type": "oauth",
        "access_token": str(body["access_token"]),
        "refresh_token": str(body["refresh_token"]),
        "expires_at": int(expires_at),
        "client_endpoint": check_endpoint(app, str(body.get("client_endpoint") or ""), None),
        "server_endpoint": str(body.get("server_endpoint") or ""),
        "member_id": member_id,
    }
    if body.get("scope"):
        creds["scope"] = str(body["scope"])
    return creds


def exchange_code(
    app: Bitrix24App,
    *,
    code: str,
    http: HttpClient,
    params: Mapping[str, str] | None = None,
) -> Installed:
    """The first token pair (the account id is the ``member_id``; settings:
    ``member_id``, ``domain``). ``params`` is
    the callback query: its ``member_id`` must match the token's, and its
    ``domain`` the endpoint's host. No ``application_token`` comes this way:
    events are accepted once the install event delivered it."""
    params = params or {}
    body = _token_call(app, http, {"grant_type": "authorization_code", "code": code})
    try:
        creds = credentials_from_token(app, body)
    except SignatureError as exc:
        raise PermanentError(f"Bitrix24 OAuth: {exc.message}") from None
    claimed = str(params.get("member_id") or "")
    if claimed and claimed != creds["member_id"]:
        raise PermanentError("Bitrix24 OAuth callback names another portal than its token")
    domain = str(params.get("domain") or urlsplit(creds["client_endpoint"]).netloc).lower()
    try:
        check_endpoint(app, creds["client_endpoint"], domain)
    except SignatureError:
        raise PermanentError(
            "Bitrix24 OAuth callback domain differs from the token's portal"
        ) from None
    member_id = creds["member_id"]
    return Installed(member_id, creds, {"member_id": member_id, "domain": domain})


def refresh(app: Bitrix24App, stale: Mapping[str, Any], *, http: HttpClient) -> dict[str, Any]:
    """The new pair for ``stale`` (inside the core's single-flight lock).
    Keeps what the OAuth server does not return (``application_token``) and
    refuses an answer for another portal."""
    if B24Api.style(stale) != "oauth" or not stale.get("refresh_token"):
        raise AuthError("these Bitrix24 credentials cannot be refreshed: reinstall the app")
    body = _token_call(
        app, http, {"grant_type": "refresh_token", "refresh_token": str(stale["refresh_token"])}
    )
    merged = {
        **body,
        "member_id": body.get("member_id") or stale.get("member_id"),
        "client_endpoint": body.get("client_endpoint") or stale.get("client_endpoint"),
    }
    try:
        fresh = credentials_from_token(app, merged)
    except SignatureError:
        # a client_endpoint we would not accept at install: keep the known one
        try:
            fresh = credentials_from_token(
                app, {**merged, "client_endpoint": stale.get("client_endpoint")}
            )
        except SignatureError:
            raise AuthError(
                "Bitrix24: the portal's REST endpoint is not on an allowed host: reinstall"
            ) from None
    if stale.get("member_id") and fresh["member_id"] != str(stale["member_id"]):
        raise AuthError("Bitrix24 OAuth server answered for another portal")
    # (``account_id``: credentials stored by earlier versions carried it)
    for key in ("application_token", "account_id", "domain"):
        if stale.get(key) is not None:
            fresh[key] = stale[key]
    return fresh


# -- the install event --------------------------------------------------------


def install_event(
    app: Bitrix24App, request: WebhookRequest, *, http: HttpClient
) -> Installed | None:
    """``ONAPPINSTALL`` -> the install (the account id is the ``member_id``;
    settings: ``member_id``, ``domain``, ``application_token_sha256``,
    ``portal_language``, ``plan``),
    ``None`` for any other event. Raises ``SignatureError``
    for a forged one (wrong host, a token that does not work there, another
    app's token) and ``PayloadError`` for junk."""
    payload = decode_event(request)
    event = payload.get("event")
    if not isinstance(event, str) or not event.strip():
        raise PayloadError("Bitrix24 install handler: the body names no event")
    if event.upper() != "ONAPPINSTALL":
        return None
    auth = payload.get("auth")
    if not isinstance(auth, Mapping):
        raise PayloadError("Bitrix24 install event without auth[…]")
    for key in ("access_token", "refresh_token", "client_endpoint", "member_id", "domain"):
        if not isinstance(auth.get(key), str) or not auth.get(key):
            raise PayloadError(f"Bitrix24 install event without auth[{key}]")
    if not isinstance(auth.get("application_token"), str) or not auth["application_token"]:
        raise PayloadError("Bitrix24 install event without auth[application_token]")
    if not app.client_id:
        raise PermanentError("Bitrix24 app is not configured: set BITRIX24_CLIENT_ID")
    endpoint = check_endpoint(app, str(auth["client_endpoint"]), str(auth["domain"]))
    info = _app_info(app, endpoint, str(auth["access_token"]), http)
    creds = _confirmed_pair(app, auth, endpoint, http)
    creds["application_token"] = str(auth["application_token"])
    domain = str(auth["domain"]).strip().lower()
    creds["domain"] = domain
    data = as_map(payload.get("data"))
    settings: dict[str, Any] = {
        "member_id": creds["member_id"],
        "domain": domain,
        # the token is a credential; its digest verifies events after a full
        # OAuth re-authorisation, which delivers no token (FACTS 2.5)
        "application_token_sha256": token_digest(creds["application_token"]),
    }
    # data[LANGUAGE_ID] (FACTS 2.5): the portal's language, a default for the
    # mapping's (which decides the words the bridge writes)
    language = str(data.get("LANGUAGE_ID") or "").lower()
    if language in ("en", "ru"):
        settings["portal_language"] = language
    plan = plan_from_license(info)
    if plan:
        settings["plan"] = plan
    return Installed(creds["member_id"], creds, settings)


def _confirmed_pair(
    app: Bitrix24App, auth: Mapping[str, Any], endpoint: str, http: HttpClient
) -> dict[str, Any]:
    """The install's token pair, confirmed by the OAuth server.

    ``app.info`` proves the access token works at ``endpoint`` for our app,
    but says nothing of ``member_id``, and the tenant is keyed by it: a
    forged event naming another portal's ``member_id`` with the forger's own
    working token would take that tenant over. So the event's refresh token
    is redeemed at the OAuth server (it needs our ``client_secret``), whose
    answer names the portal authoritatively (settings/oauth/index.md: the
    token answer's ``member_id``, ``client_endpoint``); the new pair is kept.
    """
    try:
        body = _token_call(
            app, http, {"grant_type": "refresh_token", "refresh_token": str(auth["refresh_token"])}
        )
    except AuthError:
        raise SignatureError(
            "Bitrix24 install: the OAuth server refused its refresh token"
        ) from None
    if str(body.get("member_id") or "") != str(auth["member_id"]):
        raise SignatureError("Bitrix24 install: the OAuth server names another portal")
    answered = str(body.get("client_endpoint") or endpoint)
    if urlsplit(answered).netloc.lower() != urlsplit(endpoint).netloc.lower():
        raise SignatureError("Bitrix24 install: the OAuth server names another REST endpoint")
    return credentials_from_token(app, {**body, "client_endpoint": endpoint})


def _app_info(app: Bitrix24App, endpoint: str, token: str, http: HttpClient) -> Mapping[str, Any]:
    """``app.info`` with the event's token at the event's endpoint: the
    token must work there and belong to our app."""

    def refuse(response: requests.Response) -> BridgeError | None:
        if response.status_code >= 500:
            return None  # the portal is down: retryable (HttpClient's default)
        return SignatureError(
            f"Bitrix24 install: the token does not work at the portal (HTTP {response.status_code})"
        )

    try:
        response = http.request(
            "POST", endpoint + "app.info", json={"auth": token}, error_mapper=refuse
        )
        body = response.json()
    except (ValueError, PermanentError, AuthError):
        raise SignatureError("Bitrix24 install: the portal did not confirm the token") from None
    if not isinstance(body, Mapping) or body.get("error"):
        if isinstance(body, Mapping):
            error = map_error(
                str(body.get("error") or ""),
                str(body.get("error_description") or ""),
                method="app.info",
            )
            if isinstance(error, RetryableError):
                raise error
        raise SignatureError("Bitrix24 install: the portal did not confirm the token")
    info = body.get("result")
    if not isinstance(info, Mapping):
        raise SignatureError("Bitrix24 install: app.info answered nothing")
    ours = {app.client_id, app.app_code} - {""}
    if str(info.get("CODE") or "") not in ours:
        raise SignatureError("Bitrix24 install: the token belongs to another app")
    return info


def plan_from_license(info: Mapping[str, Any]) -> str | None:
    """``enterprise`` for ``LICENSE_FAMILY`` ``ent`` (``app.info``: e.g.
    ``de_ent250``), else ``basic``; None when app.info says nothing."""
    family = str(info.get("LICENSE_FAMILY") or "").lower()
    license_ = str(info.get("LICENSE") or "").lower()
    if not family and not license_:
        return None
    if family == "ent" or "_ent" in license_:
        return "enterprise"
    return "basic"
