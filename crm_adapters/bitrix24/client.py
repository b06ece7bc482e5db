"""How to talk to Bitrix24 REST: both auth styles, the envelope, the errors.

* **Incoming webhook** (``{"type": "webhook", "url":
  "https://<portal>/rest/<user>/<code>/"}``): the method is appended to the
  URL; the code in the path is the credential (FACTS 2.1). CRM only: every
  ``imconnector.*`` answers ``403 WRONG_AUTH_TYPE``.
* **App (OAuth)** (``{"type": "oauth", "access_token", "refresh_token",
  "client_endpoint", …}``): ``{client_endpoint}{method}`` with ``auth`` in
  the JSON body (not the query: query strings end up in access logs).

Every call is ``POST`` with a JSON body (``general-principles.md``).
Success is ``{"result", "time", "total"?, "next"?}``; failure is
``{"error": CODE, "error_description": text}`` where ``error`` **may be
empty** (``crm.lead.add`` "Access denied.") or carry the text itself
(``crm.duplicate.findbycomm``) (FACTS 2.1). :func:`map_error` is the one
place those are turned into the bridge's exception tree (class-level
tables below; ``_includes/system-errors.md``, ``limits.md``):

================================  =============================================
``401 expired_token``             refresh through the core's single-flight
                                  ``credentials.refresh`` and retry **once**;
                                  the only time we refresh (FACTS 2.5:
                                  refreshing on a schedule gets apps blocked)
``401 NO_AUTH_FOUND``, other 401  ``AuthError`` (re-install / new webhook)
``503 QUERY_LIMIT_EXCEEDED``      ``RetryableError(retry_after=1)``, and the
                                  portal's shared bucket is emptied for 1 s
                                  (no ``Retry-After`` is documented)
``503 OVERLOAD_LIMIT``            ``RetryableError`` (15 min): a manual block,
                                  only Bitrix24 support lifts it
``429 OPERATION_TIME_LIMIT``      ``RetryableError`` until the method's
                                  ``time.operating_reset_at`` (from the answer,
                                  else the last successful one)
``403 insufficient_scope``        ``PermanentError`` naming the method
``403 ACCESS_DENIED`` / ``""``    ``PermanentError`` ("Access denied.", also
                                  with an empty ``error``)
``403 WRONG_AUTH_TYPE``           ``PermanentError``: Open Lines need the app
                                  install, not an incoming webhook
``NOT_FOUND``, "… not found"      ``NotFoundError``
5xx                               ``RetryableError`` on reads, ``AmbiguousError``
                                  on writes (it may have committed)
================================  =============================================

Descriptions are scrubbed (no tokens, no e-mails or phone numbers) and cut
short before they reach an exception: those texts land in logs and the DB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from bridge.errors import (
    AmbiguousError,
    AuthError,
    BridgeError,
    NotFoundError,
    PermanentError,
    RetryableError,
)
from bridge.http import HttpClient, Limit

from .batch import (
    MAX_COMMANDS,
    BatchAnswer,
    Command,
    as_map,
    chunks,
    command_string,
    members,
)

__all__ = [
    "Answer",
    "B24Api",
    "ExpiredToken",
    "drain_pause",
    "map_error",
    "scrub",
]

#: QUERY_LIMIT_EXCEEDED outside a known bucket: how long to pause (FACTS 2.3)
RATE_PAUSE = 1.0
#: the shortest pause after QUERY_LIMIT_EXCEEDED, whatever the portal's drain
MIN_RATE_PAUSE = 0.05


def drain_pause(per_second: float) -> float:
    """How long every worker of a portal whose bucket drains ``per_second``
    requests a second pauses after QUERY_LIMIT_EXCEEDED: one drain interval
    (0.5 s on the ordinary plans, 0.2 s on Enterprise), at least
    ``MIN_RATE_PAUSE``, at most ``RATE_PAUSE``."""
    if per_second <= 0:
        return RATE_PAUSE
    return min(RATE_PAUSE, max(MIN_RATE_PAUSE, 1.0 / per_second))


#: OVERLOAD_LIMIT: a manual block (system-errors.md); don't hammer it
OVERLOAD_PAUSE = 900.0
#: OPERATION_TIME_LIMIT without any known reset time: the baskets are 1 min
OPERATING_PAUSE = 60.0

_MAX_MESSAGE = 300
_TOKENISH = re.compile(r"[A-Za-z0-9_\-.]{32,}")
_PERSONAL = re.compile(r"[^\s\"'<>@,;:\[\]]+@[^\s\"'<>@,;:\[\]]+|\+?[0-9][0-9 ().-]{6,}[0-9]")

#: read-only methods: a 5xx or timeout there cannot have changed anything
_READ_SUFFIXES = (".list", ".get", ".fields", ".current", ".info", ".findbycomm", ".status")
_READ_METHODS = frozenset({"profile", "user.get", "app.info", "imopenlines.config.list.get"})


class ExpiredToken(AuthError):
    """``401 expired_token``: the one answer that triggers a refresh."""


def scrub(message: object) -> str:
    """A Bitrix24 text, safe for logs and the database."""
    text = message if isinstance(message, str) else ""
    text = _TOKENISH.sub("[redacted]", text)
    text = _PERSONAL.sub("[redacted]", text)
    return text[:_MAX_MESSAGE]


def is_read(method: str) -> bool:
    method = method.lower()
    return method in _READ_METHODS or method.endswith(_READ_SUFFIXES)


def _tagged(error: BridgeError, code: str) -> BridgeError:
    # the vendor's error name rides on the error (read by error_code())
    error.vendor_code = code
    return error


def error_code(error: BaseException) -> str:
    return (error.vendor_code or "") if isinstance(error, BridgeError) else ""


# -- the tables ---------------------------------------------------------------

#: code -> message template ({method}, {text}); PermanentError
PERMANENT: dict[str, str] = {
    "insufficient_scope": (
        "Bitrix24: the webhook/app lacks the scope {method} needs: add crm, user, task"
        " (and imopenlines, imconnector for Open Lines) and reinstall"
    ),
    "ACCESS_DENIED": (
        "Bitrix24 denied access to {method}: {text} (the user behind the webhook/app lacks"
        " the rights, or the REST API needs a commercial plan)"
    ),
    "INVALID_CREDENTIALS": "Bitrix24: the user behind the token may not call {method}: {text}",
    "WRONG_AUTH_TYPE": (
        "Bitrix24: Open Lines need the app install, not an incoming webhook ({method} works"
        " only with app authorization)"
    ),
    "ERROR_METHOD_NOT_FOUND": "Bitrix24 has no method {method} on this portal",
    "ERROR_BATCH_LENGTH_EXCEEDED": "Bitrix24 batch longer than 50 commands",
    "ERROR_BATCH_METHOD_NOT_ALLOWED": "Bitrix24 refuses {method} inside a batch",
    "INVALID_REQUEST": "Bitrix24 requires HTTPS: {text}",
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": "Bitrix24: {text}",
}
#: code -> AuthError message (the tenant must reconnect)
AUTH: dict[str, str] = {
    "NO_AUTH_FOUND": "Bitrix24 refused the credentials (NO_AUTH_FOUND): reinstall the app"
    " or issue a new incoming webhook",
    "invalid_token": "Bitrix24 refused the access token: reinstall the app",
    "expired_token": "Bitrix24 access token expired and could not be refreshed",
    "user_access_error": "Bitrix24: the app is restricted to other users; reinstall it as"
    " an allowed user",
    "PORTAL_DELETED": "Bitrix24: the portal was deleted or closed",
    "invalid_grant": "Bitrix24 OAuth refused the grant (expired/used code or refresh token)",
    "invalid_client": "Bitrix24 OAuth refused the client id/secret (or the app is not"
    " installed on this portal)",
    "PAYMENT_REQUIRED": "Bitrix24: the app's paid period has expired",
}
#: code -> seconds to wait (None: backoff)
RETRYABLE: dict[str, float | None] = {
    "QUERY_LIMIT_EXCEEDED": RATE_PAUSE,
    "OVERLOAD_LIMIT": OVERLOAD_PAUSE,
    "INTERNAL_SERVER_ERROR": None,
    "ERROR_UNEXPECTED_ANSWER": None,
}
NOT_FOUND = frozenset({"NOT_FOUND", "OWNER_NOT_FOUND", "ERROR_NOT_FOUND", "ERROR_ENTITY_NOT_FOUND"})


def map_error(
    code: str,
    description: str,
    *,
    method: str,
    status: int | None = None,
    operating_reset_at: float | None = None,
    now: float | None = None,
) -> BridgeError:
    """A Bitrix24 ``{error, error_description}`` (with the HTTP status when
    there was one: a batch command has none) -> the bridge's tree."""
    text = scrub(description) or scrub(code) or f"HTTP {status}"
    # an empty ``error`` carries its meaning in the text (FACTS 2.1)
    lowered = f"{code} {description}".lower()
    if not code or " " in code:
        if "access denied" in lowered:
            code = "ACCESS_DENIED"
        elif "not found" in lowered:
            code = "NOT_FOUND"
    if code == "expired_token":
        return _tagged(ExpiredToken(AUTH[code], status=status), code)
    if code in AUTH:
        return _tagged(AuthError(AUTH[code], status=status), code)
    if code == "OPERATION_TIME_LIMIT" or status == 429:
        now = time.time() if now is None else now
        wait = OPERATING_PAUSE
        if operating_reset_at:
            wait = min(max(operating_reset_at - now, 1.0), 600.0)
        return _tagged(
            RetryableError(
                f"Bitrix24: {method} used up its execution time (OPERATION_TIME_LIMIT);"
                f" paused {int(wait)} s",
                retry_after=wait,
                status=status or 429,
            ),
            code or "OPERATION_TIME_LIMIT",
        )
    if code in RETRYABLE:
        pause = RETRYABLE[code]
        cls = RetryableError if is_read(method) or pause is not None else AmbiguousError
        return _tagged(
            cls(f"Bitrix24 {code} on {method}: {text}", retry_after=pause, status=status), code
        )
    if code in PERMANENT:
        return _tagged(
            PermanentError(PERMANENT[code].format(method=method, text=text), status=status), code
        )
    if code in NOT_FOUND:
        return _tagged(NotFoundError(f"Bitrix24 {method}: not found ({text})", status=status), code)
    if status is not None and status >= 500:
        cls = RetryableError if is_read(method) else AmbiguousError
        return _tagged(cls(f"Bitrix24 HTTP {status} on {method}: {text}", status=status), code)
    if status == 401:
        return _tagged(AuthError(f"Bitrix24 refused the credentials: {text}", status=401), code)
    label = f"{scrub(code)}: " if code and " " not in code else ""
    return _tagged(
        PermanentError(f"Bitrix24 rejected {method}: {label}{text}", status=status), code
    )


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# -- answers ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A successful call: ``result`` plus the list envelope and timing."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] = field(default_factory=dict)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _ints(values: Mapping[str, Any]) -> dict[str, int]:
    return {k: n for k, v in values.items() if (n := _int(v)) is not None}


class B24Api:
    """Authenticated Bitrix24 calls for one tenant.

    ``credentials`` is the core's ``CredentialProvider``; ``limit`` returns
    the portal's shared bucket. The bucket is drawn from here (not through
    ``HttpClient``'s ``limit=``) because the two limits need different
    handling: ``QUERY_LIMIT_EXCEEDED`` pauses the whole portal, while
    ``OPERATION_TIME_LIMIT`` (a 429) blocks only one method and must not
    empty the portal's bucket for minutes.
    """

    def __init__(
        self,
        http: HttpClient,
        credentials: Any,
        limit: Callable[[], Limit],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.credentials = credentials
        self._limit = limit
        self.clock = clock
        #: method -> the last ``time.operating_reset_at`` seen for it
        self.operating_reset: dict[str, float] = {}

    # -- credentials ----------------------------------------------------------

    @staticmethod
    def style(creds: Mapping[str, Any]) -> str:
        return "webhook" if str(creds.get("type") or "") == "webhook" else "oauth"

    def is_webhook(self) -> bool:
        return self.style(self.credentials.get()) == "webhook"

    @staticmethod
    def endpoint(creds: Mapping[str, Any]) -> str:
        """The REST base the method name is appended to (ends with ``/``)."""
        if B24Api.style(creds) == "webhook":
            url = str(creds.get("url") or "")
            parts = urlsplit(url)
            path = [p for p in parts.path.split("/") if p]
            if parts.scheme not in ("https", "http") or len(path) < 3 or path[-3] != "rest":
                raise AuthError(
                    "Bitrix24 webhook URL must look like https://<portal>/rest/<user>/<code>/"
                )
            return url if url.endswith("/") else url + "/"
        base = str(creds.get("client_endpoint") or "")
        if not base.startswith(("https://", "http://")):
            raise AuthError("no Bitrix24 client_endpoint stored for this tenant: reinstall")
        if not creds.get("access_token"):
            raise AuthError("no Bitrix24 access token stored for this tenant: reinstall")
        return base if base.endswith("/") else base + "/"

    # -- single calls -----------------------------------------------------------

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, budget: bool = True
    ) -> Answer:
        """One method call. On ``401 expired_token`` (app style only) the
        credentials are refreshed through the core and the call is repeated
        once; a second expiry is ``AuthError``. ``budget=False`` skips the
        wait for the shared bucket (an event hook must answer promptly)."""
        creds = self.credentials.get()
        try:
            return self._send(method, params or {}, creds, budget)
        except ExpiredToken:
            if self.style(creds) != "oauth" or not creds.get("refresh_token"):
                raise AuthError(AUTH["expired_token"], status=401) from None
        fresh = self.credentials.refresh(creds)
        try:
            return self._send(method, params or {}, fresh, budget)
        except ExpiredToken:
            raise AuthError(AUTH["expired_token"], status=401) from None

    def _send(
        self, method: str, params: Mapping[str, Any], creds: Mapping[str, Any], budget: bool
    ) -> Answer:
        url = self.endpoint(creds) + method
        body = dict(params)
        if self.style(creds) == "oauth":
            body["auth"] = str(creds["access_token"])
        limit = self._limit()
        if budget and self.http.limiter is not None:
            self.http.limiter.acquire(limit.key, limit.rate, limit.cost)
        try:
            response = self.http.request(
                "POST",
                url,
                json=body,
                headers={"Accept": "application/json"},
                error_mapper=lambda r: self._refuse(method, r),
            )
        except RetryableError as exc:
            if error_code(exc) == "QUERY_LIMIT_EXCEEDED":
                # refused before anything ran (limits.md): no lookup on retry
                exc.nothing_written = True
                # The bucket is full and drains one request every 1/drain s
                # (FACTS 2.3: 2/s, Enterprise 5/s; no Retry-After is sent):
                # one drain interval frees room for the next request.
                exc.retry_after = drain_pause(limit.rate.per_second)
                if self.http.limiter is not None:
                    # every worker of the portal stops, not only this one
                    self.http.limiter.penalise(limit.key, exc.retry_after)
            raise
        payload = _json(response)
        if not isinstance(payload, Mapping):
            cls = RetryableError if is_read(method) else AmbiguousError
            raise cls(f"Bitrix24 {method}: the answer is not a JSON object")
        if "error" in payload and "result" not in payload:
            raise self._error(method, payload, response.status_code)
        timing = as_map(payload.get("time"))
        self._note_time(method, timing)
        return Answer(
            result=payload.get("result"),
            total=_int(payload.get("total")),
            next=_int(payload.get("next")),
            time=timing,
        )

    def _note_time(self, method: str, timing: Mapping[str, Any]) -> None:
        reset = timing.get("operating_reset_at") if isinstance(timing, Mapping) else None
        if isinstance(reset, (int, float)) and reset > 0:
            self.operating_reset[method] = float(reset)

    def _error(self, method: str, payload: Mapping[str, Any], status: int | None) -> BridgeError:
        timing = as_map(payload.get("time"))
        reset = timing.get("operating_reset_at") if isinstance(timing, Mapping) else None
        return map_error(
            str(payload.get("error") or ""),
            str(payload.get("error_description") or ""),
            method=method,
            status=status,
            operating_reset_at=float(reset)
            if isinstance(reset, (int, float))
            else self.operating_reset.get(method),
            now=self.clock(),
        )

    def _refuse(self, method: str, response: requests.Response) -> BridgeError | None:
        payload = _json(response)
        if isinstance(payload, Mapping) and ("error" in payload or "error_description" in payload):
            return self._error(method, payload, response.status_code)
        if response.status_code == 429:
            return map_error(
                "OPERATION_TIME_LIMIT",
                "",
                method=method,
                status=429,
                operating_reset_at=self.operating_reset.get(method),
                now=self.clock(),
            )
        return None  # HttpClient's default: 5xx retryable/ambiguous, 401 auth, ...

    # -- batches ----------------------------------------------------------------

    def batch(
        self, commands: Sequence[Command], *, halt: bool = False, budget: bool = True
    ) -> BatchAnswer:
        """Run ``commands`` in as few ``batch`` calls as possible (≤ 50 each,
        FACTS 2.4), in order. With ``halt`` a failing command stops the rest
        (later chunks are not sent). Per-command errors are mapped with
        :func:`map_error` into ``BatchAnswer.errors``."""
        answer = BatchAnswer()
        methods = {c.key: c.method for c in commands}
        for chunk in chunks(commands, MAX_COMMANDS):
            body = {
                "halt": 1 if halt else 0,
                "cmd": {c.key: command_string(c) for c in chunk},
            }
            result = self.call("batch", body, budget=budget).result
            part = self.parse_batch(result, methods)
            answer.merge(part)
            if halt and part.errors:
                break
        return answer

    def parse_batch(self, result: Any, methods: Mapping[str, str]) -> BatchAnswer:
        """``result`` of a batch call -> :class:`BatchAnswer` (``[]`` members
        are empty; each ``result_error`` entry mapped per command)."""
        outer = result if isinstance(result, Mapping) else {}
        answer = BatchAnswer(
            results=members(outer.get("result")),
            totals=_ints(members(outer.get("result_total"))),
            nexts=_ints(members(outer.get("result_next"))),
            times={
                k: v for k, v in members(outer.get("result_time")).items() if isinstance(v, Mapping)
            },
        )
        for key, timing in answer.times.items():
            if key in methods:
                self._note_time(methods[key], timing)
        for key, raw in members(outer.get("result_error")).items():
            error = raw if isinstance(raw, Mapping) else {"error": "", "error_description": raw}
            method = methods.get(key, "batch command")
            answer.errors[key] = map_error(
                str(error.get("error") or ""),
                str(error.get("error_description") or ""),
                method=method,
                operating_reset_at=self.operating_reset.get(method),
                now=self.clock(),
            )
        return answer

    # -- lists ------------------------------------------------------------------

    def list_all(self, method: str, params: Mapping[str, Any], *, max_pages: int = 40) -> list[Any]:
        """Every item of a paged list (50 per page, ``start=next``): the first
        page tells the total, the other pages go in one batch."""
        first = self.call(method, {**params, "start": 0})
        items = list(first.result or []) if isinstance(first.result, list) else []
        if first.next is None or not first.total:
            return items
        starts = list(range(int(first.next), min(int(first.total), 50 * max_pages), 50))
        commands = [Command(f"p{i}", method, {**params, "start": s}) for i, s in enumerate(starts)]
        answer = self.batch(commands)
        for command in commands:
            page = answer.value(command.key)
            if isinstance(page, list):
                items.extend(page)
        return items
