"""amoCRM's HTTP conventions: account host, bearer token, refresh, errors.

Everything here is about *how* to talk to amoCRM API v4, not *what* to say
(FACTS.md section 1, cited as "FACTS 1.x"):

* :func:`account_base` turns the deployment's ``api_base`` template
  (``https://{subdomain}.amocrm.ru``) and the tenant's ``subdomain`` into the
  account's own host: requests must go there, never to ``www`` (FACTS 1.1).
* :func:`map_error` is the one place amoCRM status codes are interpreted
  (``bridge.http.HttpClient`` keeps transport errors and 5xx):

  ======  ==============================================================
  204     not an error: "nothing found" (:func:`decode` returns ``None``)
  400     ``validation-errors`` -> ``PermanentError`` listing ``path: detail``
  401     ``AuthError`` (the caller refreshes once, then gives up)
  402     ``PermanentError``: the account's subscription ended
  403     blocked for exceeding the rate -> ``RetryableError`` (long wait);
          anything else (no rights, IP not whitelisted) -> ``PermanentError``
  404     ``NotFoundError``
  429     ``RetryableError(retry_after=Retry-After or 1 s)``; the body may be
          empty or not JSON (FACTS 1.3)
  ======  ==============================================================

* :class:`AmoApi` puts the bearer token on every call, refreshes an OAuth
  token *before* it expires, and on a 401 refreshes once and retries once.
  Long-lived tokens (FACTS 1.2) have no refresh: a 401 is ``AuthError``.

No token and no personal data ever reaches an exception message: amoCRM's
texts are scrubbed and cut short; validation errors keep only field paths,
codes and amoCRM's generic details (never the rejected values).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
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
from bridge.model import Rate

from .settings import DEFAULT_RATE_PER_SECOND, AmoCrmSettings

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_AUTH_BASE",
    "REFRESH_SKEW_SECONDS",
    "AmoApi",
    "account_base",
    "api_rate",
    "decode",
    "echoed",
    "map_error",
    "scrub",
]

DEFAULT_API_BASE = "https://{subdomain}.amocrm.ru"
DEFAULT_AUTH_BASE = "https://www.amocrm.ru"
#: account hosts amoCRM names in the OAuth ``referer`` (FACTS 1.1, 1.2)
ACCOUNT_DOMAINS = ("amocrm.ru", "amocrm.com", "kommo.com")

#: refresh this long before ``expires_at`` (access tokens live 1 day, FACTS 1.2)
REFRESH_SKEW_SECONDS = 300
#: 429 without ``Retry-After`` (no retry header is documented, FACTS 1.4)
RATE_LIMIT_WAIT = 1.0
#: 403 "blocked for repeatedly exceeding the rate" (FACTS 1.3/1.4): how long
#: the block lasts is undocumented; back every worker of the account off for
#: ten minutes rather than hammer a blocked account (which prolongs it).
BLOCKED_WAIT = 600.0

_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_MESSAGE = 300
# JWT access tokens and long opaque refresh tokens: never echo them
_TOKENISH = re.compile(r"[A-Za-z0-9_\-.]{32,}")
_PERSONAL = re.compile(r"[^\s\"'<>@,;:\[\]]+@[^\s\"'<>@,;:\[\]]+|\+?[0-9][0-9 ().-]{6,}[0-9]")
# words amoCRM may use when an account is blocked for its request rate (the
# body of that 403 is undocumented: UNCONFIRMED, FACTS 1.3)
_BLOCKED_WORDS = ("rate", "limit", "too many", "block", "заблок", "превыш", "лимит")


def scrub(message: object) -> str:
    """An amoCRM text, safe for logs and the database."""
    text = message if isinstance(message, str) else ""
    text = _TOKENISH.sub("[redacted]", text)
    text = _PERSONAL.sub("[redacted]", text)
    return text[:_MAX_MESSAGE]


def api_rate(per_second: float | None = None) -> Rate:
    """A bucket that never lets more than ``per_second`` (the tenant's
    ``rate_per_second``; unset or 0: 7, FACTS 1.4) requests through in any
    one second: ``capacity + per_second`` is the most a token bucket passes
    in a second."""
    value = float(per_second or DEFAULT_RATE_PER_SECOND)
    if value < 2:
        return Rate(capacity=1, per_second=max(value, 0.1) / 2)
    return Rate(capacity=1, per_second=value - 1)


def subdomain_from_host(host: str) -> str:
    """``acme.amocrm.ru`` -> ``acme``; anything else is refused."""
    value = (host or "").strip().lower().rstrip(".")
    name, _, rest = value.partition(".")
    if not _SUBDOMAIN.fullmatch(name) or (rest and rest not in ACCOUNT_DOMAINS):
        raise PermanentError("amoCRM named an account host that is not an amoCRM account")
    return name


def account_base(template: str | None, subdomain: str, domain: str | None = None) -> str:
    """The account's API host.

    ``template`` is the deployment's ``api_base`` (``{subdomain}`` is filled
    in); without one, a known account ``domain`` from the OAuth referer
    (``acme.kommo.com``) wins over the ``.amocrm.ru`` default.
    """
    if not subdomain or not _SUBDOMAIN.fullmatch(subdomain):
        raise PermanentError("the tenant has no valid amoCRM subdomain: install the bridge again")
    if template and "{subdomain}" in template:
        if template == DEFAULT_API_BASE and domain:
            return f"https://{domain}"
        return template.replace("{subdomain}", subdomain).rstrip("/")
    if template:
        return template.rstrip("/")
    if domain:
        return f"https://{domain}"
    return DEFAULT_API_BASE.replace("{subdomain}", subdomain)


def base_for(api_base: str | None, settings: AmoCrmSettings) -> str:
    """The API host of the account ``settings`` name, under the deployment's
    ``api_base`` template (if any)."""
    if settings.domain:
        # only hosts we could have got from a validated referer or token
        subdomain_from_host(settings.domain)
    return account_base(api_base or DEFAULT_API_BASE, settings.subdomain, settings.domain or None)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def error_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def validation_message(body: Mapping[str, Any]) -> str:
    """``path: detail (code)`` for every item of a ``validation-errors`` body
    (FACTS 1.3). amoCRM's details are generic sentences; values are never
    quoted back here."""
    parts: list[str] = []
    for item in body.get("validation-errors") or []:
        if not isinstance(item, Mapping):
            continue
        request_id = item.get("request_id")
        for error in item.get("errors") or []:
            if not isinstance(error, Mapping):
                continue
            path = str(error.get("path") or "?")
            if request_id not in (None, "", "0"):
                path = f"[{scrub(str(request_id))[:40]}] {path}"
            detail = scrub(error.get("detail")) or "invalid"
            code = error.get("code")
            parts.append(f"{path}: {detail}" + (f" ({scrub(code)})" if code else ""))
    return "; ".join(parts)


def map_error(response: requests.Response) -> BridgeError | None:
    """amoCRM's answers -> the exception tree; ``None`` defers to the
    ``HttpClient`` default (5xx: retryable, or ambiguous on a write)."""
    status = response.status_code
    body = error_body(response)
    title = scrub(body.get("title") or body.get("detail") or "")
    if status == 429:
        wait = parse_retry_after(response.headers.get("Retry-After"))
        return RetryableError(
            "amoCRM rate limit (over 7 requests per second)",
            retry_after=wait if wait is not None else RATE_LIMIT_WAIT,
            status=429,
        )
    if status == 400:
        listed = validation_message(body)
        if listed:
            return PermanentError(f"amoCRM rejected the request: {listed}", status=400)
        detail = scrub(body.get("detail") or body.get("hint") or body.get("title"))
        return PermanentError(f"amoCRM bad request: {detail or 'HTTP 400'}", status=400)
    if status == 401:
        # the 401 body is UNCONFIRMED (FACTS 1.3); it may describe the token
        return AuthError("amoCRM rejected the access token (HTTP 401)", status=401)
    if status == 402:
        return PermanentError(
            "amoCRM: the account's subscription has ended (HTTP 402): renew it in amoCRM",
            status=402,
        )
    if status == 403:
        return _forbidden(response, body)
    if status == 404:
        return NotFoundError(f"amoCRM: not found {title}".rstrip(), status=404)
    if 400 <= status < 500:
        return PermanentError(f"amoCRM HTTP {status}: {title}".rstrip(": "), status=status)
    return None


def _forbidden(response: requests.Response, body: Mapping[str, Any]) -> BridgeError:
    text = " ".join(str(body.get(k) or "") for k in ("title", "detail", "hint", "message")).lower()
    if not body:
        text = response.text[:500].lower() if response.content else ""
    if any(word in text for word in _BLOCKED_WORDS):
        # FACTS 1.3/1.4: repeated 429s get the account/IP blocked with a 403.
        # Waiting is the only cure, and every worker must wait (the caller
        # penalises the shared bucket); a retry-soon would extend the block.
        hinted = parse_retry_after(response.headers.get("Retry-After"))
        return RetryableError(
            "amoCRM blocked the account for exceeding the request rate (HTTP 403): "
            f"pausing {int(max(hinted or 0, BLOCKED_WAIT))} s",
            retry_after=max(hinted or 0.0, BLOCKED_WAIT),
            status=403,
        )
    # no rights (users, webhooks and chats need an admin), IP not whitelisted
    # (code 113), a disabled integration
    detail = scrub(body.get("detail") or body.get("title"))
    return PermanentError(
        f"amoCRM forbids this call (HTTP 403): {detail or 'no rights'}", status=403
    )


def decode(response: requests.Response) -> Any:
    """A body as JSON; ``None`` for 204 / an empty body ("nothing found",
    FACTS 1.3: the official SDK raises on 204, we treat it as empty)."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise AmbiguousError(
            f"amoCRM HTTP {response.status_code}: body is not JSON", status=response.status_code
        ) from exc


def echoed(
    answers: Sequence[Mapping[str, Any]], request_ids: Sequence[str]
) -> list[Mapping[str, Any] | None]:
    """A batch write's answers in the order of ``request_ids``: matched by
    the ``request_id`` amoCRM echoes (FACTS 1.3), else by position when
    there are as many answers as requests."""
    by_request = {str(a["request_id"]): a for a in answers if a.get("request_id") is not None}
    in_order = len(answers) == len(request_ids)
    return [
        by_request.get(str(request_id)) or (answers[n] if in_order else None)
        for n, request_id in enumerate(request_ids)
    ]


def embedded(body: Any, key: str) -> list[Mapping[str, Any]]:
    """``_embedded.<key>`` of a hal+json collection (``[]`` when empty)."""
    if not isinstance(body, Mapping):
        return []
    items = (
        (body.get("_embedded") or {}).get(key)
        if isinstance(body.get("_embedded"), Mapping)
        else None
    )
    return [item for item in items or [] if isinstance(item, Mapping)]


def has_next(body: Any) -> bool:
    links = body.get("_links") if isinstance(body, Mapping) else None
    return bool(isinstance(links, Mapping) and isinstance(links.get("next"), Mapping))


# --------------------------------------------------------------------------
# authenticated calls
# --------------------------------------------------------------------------


class AmoApi:
    """Authenticated amoCRM API v4 calls for one tenant.

    ``credentials`` is the core's :class:`~bridge.model.CredentialProvider`:
    its ``refresh(stale)`` is single-flight across processes, commits the
    new pair under a row lock, and calls the adapter's refresher back.
    """

    def __init__(
        self,
        http: HttpClient,
        credentials: Any,
        base_url: Callable[[], str],
        limit: Limit,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.credentials = credentials
        self._base_url = base_url
        self.limit = limit
        self.clock = clock

    @property
    def base_url(self) -> str:
        return self._base_url()

    @staticmethod
    def refreshable(creds: Mapping[str, Any]) -> bool:
        return str(creds.get("type") or "oauth") == "oauth" and bool(creds.get("refresh_token"))

    def current(self) -> Mapping[str, Any]:
        """Credentials good for the next call (refreshed first when the
        access token expires within ``REFRESH_SKEW_SECONDS``)."""
        creds = self.credentials.get()
        expires_at = creds.get("expires_at")
        if self.refreshable(creds) and expires_at is not None:
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
            raise AuthError("no amoCRM access token stored for this tenant")
        return {"Authorization": f"Bearer {token}"}

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (),
        budget: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One call; a 401 on OAuth credentials refreshes once and retries
        once, a second 401 is ``AuthError``. ``budget=False`` skips the wait
        in the shared bucket (for the rare call a webhook answer needs: it
        must answer within 2 s, FACTS 1.12)."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        limit = self.limit if budget else None
        creds = self.current()
        try:
            return self._send(method, url, creds, ok, limit, kwargs)
        except AuthError as exc:
            if exc.status != 401 or not self.refreshable(creds):
                raise
        creds = self.credentials.refresh(creds)
        return self._send(method, url, creds, ok, limit, kwargs)

    def _send(
        self,
        method: str,
        url: str,
        creds: Mapping[str, Any],
        ok: tuple[int, ...],
        limit: Limit | None,
        kwargs: Mapping[str, Any],
    ) -> requests.Response:
        headers = {**dict(kwargs.get("headers") or {}), **self.auth_headers(creds)}
        rest = {k: v for k, v in kwargs.items() if k != "headers"}
        try:
            return self.http.request(
                method,
                url,
                limit=limit,
                ok=ok,
                error_mapper=map_error,
                headers=headers,
                **rest,
            )
        except RetryableError as exc:
            if exc.status == 403 and self.http.limiter is not None:
                # every worker of the account stops, not only this one
                self.http.limiter.penalise(self.limit.key, exc.retry_after or BLOCKED_WAIT)
            raise

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and decode (``None`` for 204 "nothing found")."""
        return decode(self.request(method, path, **kwargs))

    def pages(
        self, path: str, key: str, params: Mapping[str, Any] | None = None, *, max_pages: int = 40
    ) -> list[Mapping[str, Any]]:
        """Every item of a paged collection (``limit`` 250, FACTS 1.3)."""
        out: list[Mapping[str, Any]] = []
        for page in range(1, max_pages + 1):
            body = self.json("GET", path, params={**dict(params or {}), "limit": 250, "page": page})
            items = embedded(body, key)
            out.extend(items)
            if not items or not has_next(body):
                break
        return out
