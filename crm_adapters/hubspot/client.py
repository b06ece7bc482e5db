"""HubSpot's HTTP conventions: auth header, token refresh, error mapping.

Everything here is about *how* to talk to HubSpot, not *what* to say:

* :func:`map_error` turns HubSpot's error envelope
  ``{"status":"error","message","category","correlationId",...}`` into the
  bridge's exception tree (the one place status codes are interpreted for
  this CRM; ``bridge.http.HttpClient`` handles transport errors and 5xx).
* :class:`HubSpotApi` puts the bearer token on every request, refreshes an
  OAuth token *before* it expires, and retries once after a 401.

No token ever reaches an exception message: HubSpot's messages are scrubbed
of anything that looks like one and cut short.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from bridge.errors import (
    AmbiguousError,
    AuthError,
    BridgeError,
    NotFoundError,
    PermanentError,
    RetryableError,
)
from bridge.http import HttpClient, Limit, parse_retry_after

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_AUTH_BASE",
    "REFRESH_SKEW_SECONDS",
    "HubSpotApi",
    "decode",
    "existing_id",
    "map_error",
    "scrub",
]

DEFAULT_API_BASE = "https://api.hubapi.com"
DEFAULT_AUTH_BASE = "https://app.hubspot.com"

#: refresh an OAuth access token this long before ``expires_at``: HubSpot
#: says a 401 is not the signal to refresh (FACTS 3.1, usage-details doc).
REFRESH_SKEW_SECONDS = 300

#: wait hints for HubSpot's 429 policies when no ``Retry-After`` is sent
#: (whether API 429s carry it is UNCONFIRMED, FACTS 3.2).
TEN_SECONDLY_WAIT = 2.0  # a rolling window: the oldest calls roll off quickly
SECONDLY_WAIT = 1.0  # search: 4-5 requests per second
DAILY_WAIT = 3600.0  # resets at midnight in the account's time zone

_MAX_MESSAGE = 300
# Bearer tokens (private-app ``pat-na1-...``, OAuth access tokens, UUID
# refresh tokens) and any other long opaque run: never echo them.
_TOKENISH = re.compile(r"pat-[a-z0-9]+-[0-9a-f-]+|[A-Za-z0-9_\-]{32,}", re.IGNORECASE)
# Personal data HubSpot quotes back in validation errors ("Email address
# <value> is invalid"): e-mail addresses and international phone numbers.
_PERSONAL = re.compile(r"[^\s\"'<>@,;:\[\]]+@[^\s\"'<>@,;:\[\]]+|\+[0-9][0-9 ().-]{5,}[0-9]")
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)", re.IGNORECASE)


def scrub(message: object) -> str:
    """HubSpot's ``message``, safe for logs and the database."""
    text = message if isinstance(message, str) else ""
    text = _TOKENISH.sub("[redacted]", text)
    text = _PERSONAL.sub("[redacted]", text)
    return text[:_MAX_MESSAGE]


def error_body(response: requests.Response) -> dict[str, Any]:
    """The error envelope as a dict (``{}`` when the body is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def existing_id(response: requests.Response) -> str | None:
    """The record id in a 409 ``"... Existing ID: 12345"`` (FACTS 3.3)."""
    match = _EXISTING_ID.search(str(error_body(response).get("message") or ""))
    return match.group(1) if match else None


def map_error(response: requests.Response) -> BridgeError | None:
    """HubSpot's error envelope -> the exception tree; ``None`` defers to the
    ``HttpClient`` default (5xx: retryable, or ambiguous on a write)."""
    status = response.status_code
    body = error_body(response)
    message = scrub(body.get("message"))
    category = str(body.get("category") or body.get("errorType") or "")
    if status == 429:
        return _rate_limited(response, body, message)
    if status == 401:
        # HubSpot's 401 text can describe the token; keep only the category.
        return AuthError(f"HubSpot rejected the credentials ({category or 'HTTP 401'})", status=401)
    if status == 403:
        if category == "MISSING_SCOPES" or "scope" in message.lower():
            return AuthError(f"HubSpot: missing scopes, reinstall the app: {message}", status=403)
        return PermanentError(f"HubSpot forbids this call: {message}", status=403)
    if status == 404:
        return NotFoundError(f"HubSpot: not found: {message}", status=404)
    if status == 409:
        return PermanentError(f"HubSpot conflict: {message}", status=409)
    if 400 <= status < 500:
        return PermanentError(f"HubSpot {category or f'HTTP {status}'}: {message}", status=status)
    return None


def _rate_limited(
    response: requests.Response, body: Mapping[str, Any], message: str
) -> RetryableError:
    # 429 bodies (FACTS 3.2): policyName TEN_SECONDLY_ROLLING or DAILY; the
    # search endpoints' own limit says "You have reached your secondly limit."
    policy = str(body.get("policyName") or "").upper()
    hinted = parse_retry_after(response.headers.get("Retry-After"))
    if policy == "DAILY":
        wait = max(hinted or 0.0, DAILY_WAIT)
        return RetryableError("HubSpot daily API limit reached", retry_after=wait, status=429)
    # the search limit's policyName ("SECONDLY" in the sandbox) is UNCONFIRMED:
    # the message is what HubSpot's Node SDK matches on
    search_limit = "secondly limit" in message.lower() and "ten_secondly" not in message.lower()
    if policy == "SECONDLY" or search_limit:
        return RetryableError(
            "HubSpot search rate limit", retry_after=hinted or SECONDLY_WAIT, status=429
        )
    return RetryableError(
        f"HubSpot rate limit ({policy or 'unknown policy'})",
        retry_after=hinted or TEN_SECONDLY_WAIT,
        status=429,
    )


class HubSpotApi:
    """Authenticated calls for one tenant.

    ``credentials`` is the core's :class:`~bridge.model.CredentialProvider`;
    its ``refresh(stale)`` is single-flight across processes and calls the
    adapter's ``refresh_credentials`` back.
    """

    def __init__(
        self,
        http: HttpClient,
        credentials: Any,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.credentials = credentials
        self.clock = clock

    # -- credentials ------------------------------------------------------

    @staticmethod
    def is_oauth(creds: Mapping[str, Any]) -> bool:
        return str(creds.get("type") or "oauth") == "oauth" and bool(creds.get("refresh_token"))

    def current(self) -> Mapping[str, Any]:
        """Credentials good for the next call: refreshed first when the
        access token expires within ``REFRESH_SKEW_SECONDS``."""
        creds = self.credentials.get()
        expires_at = creds.get("expires_at")
        if self.is_oauth(creds) and expires_at is not None:
            try:
                due = float(expires_at) - REFRESH_SKEW_SECONDS <= self.clock()
            except (TypeError, ValueError):
                due = True  # unreadable expiry: refresh rather than guess
            if due:
                creds = self.credentials.refresh(creds)
        return creds

    @staticmethod
    def auth_headers(creds: Mapping[str, Any]) -> dict[str, str]:
        token = creds.get("access_token")
        if not token:
            raise AuthError("no HubSpot access token stored for this tenant")
        return {"Authorization": f"Bearer {token}"}

    # -- requests ---------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        limit: Limit,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> requests.Response:
        """One authenticated call; a 401 on OAuth credentials refreshes once
        and retries once, a second 401 raises ``AuthError``."""
        creds = self.current()
        try:
            return self.http.request(
                method,
                path,
                limit=limit,
                ok=ok,
                error_mapper=map_error,
                headers=self.auth_headers(creds),
                **kwargs,
            )
        except AuthError as exc:
            if exc.status != 401 or not self.is_oauth(creds):
                raise
        creds = self.credentials.refresh(creds)
        return self.http.request(
            method,
            path,
            limit=limit,
            ok=ok,
            error_mapper=map_error,
            headers=self.auth_headers(creds),
            **kwargs,
        )

    def json(
        self,
        method: str,
        path: str,
        *,
        limit: Limit,
        **kwargs: Any,
    ) -> Any:
        """``request`` and decode the JSON body (``{}`` when empty)."""
        response = self.request(method, path, limit=limit, **kwargs)
        return decode(response)


def decode(response: requests.Response) -> Any:
    """A response body as JSON; ``{}`` for an empty 2xx body."""
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError as exc:
        raise AmbiguousError(
            f"HubSpot HTTP {response.status_code}: body is not JSON",
            status=response.status_code,
        ) from exc
