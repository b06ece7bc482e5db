"""The MAX Bot API calls of one bot, and the one mapping of MAX's errors to
the exception tree.

Every call is ``<method> {base}/<path>`` (``https://platform-api2.max.ru``,
``MAX_API_BASE``) with the raw token in ``Authorization: <token>`` — no
``Bearer``, never in the query (a query token is a 403
``deprecated.token``: FACTS §1) — and JSON bodies. Errors are ``{"code":
"<dotted.key>", "message": "..."}`` (FACTS §12); an action answered HTTP
200 ``{"success": false, "message"}`` failed all the same (SimpleQueryResult,
FACTS §12). The mapping (:func:`max_error`):

* 401 (``verify.token``) and 403 ``deprecated.token``: :class:`AuthError`
  (a new token, or a bridge that sends it the documented way);
* 429: :class:`RetryableError`, refused before anything ran; the bot's
  shared bucket is paused (no ``Retry-After`` is documented: 1 s unless
  one comes, FACTS §12);
* ``attachment.not.ready`` (400, right after an upload, FACTS §11):
  :class:`RetryableError`, nothing written;
* other 403s: :class:`PermanentError` — the client stopped the bot or the
  bot has no access to the chat (the code MAX gives a stopped bot is
  UNCONFIRMED, FACTS §9: any 403 on a send reads so);
* 404: :class:`NotFoundError`; other 4xx: :class:`PermanentError` with
  MAX's words; 5xx: the HTTP seam's default (a POST is ambiguous).

Limits (FACTS §12): 30 requests per second per bot token (its scope is
UNCONFIRMED: assumed per token) is the bot's shared bucket, every call
drawing from it; 2 messages per second per chat is a second shared bucket
per chat that every send and callback answer draws from too.
"""

from __future__ import annotations

from collections.abc import Mapping
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

__all__ = ["BOT_RATE", "CHAT_RATE", "MaxApi", "max_error"]

#: "максимальное количество запросов в секунду ... 30 rps" (FACTS §12)
BOT_RATE = Rate(capacity=30, per_second=30.0)
#: "at most 2 messages per second per dialog, chat or channel" (FACTS §9,
#: §10): one token every half second, no burst, so two never land in one
#: second however the far side counts
CHAT_RATE = Rate(capacity=1, per_second=2.0)
NOT_READY = "attachment.not.ready"
#: what a 403 on a send means, as the rep reads it
FORBIDDEN = (
    "the client stopped the bot or the bot has no access to this chat; "
    "a reply can go once they start the bot again"
)


class MaxApi:
    """The MAX Bot API of one bot over the shared :class:`HttpClient`."""

    def __init__(self, http: HttpClient, token: str, bot_id: str) -> None:
        self.http = http
        self._token = token
        self.bot_id = bot_id

    def __repr__(self) -> str:
        return f"<MaxApi bot={self.bot_id}>"

    @property
    def limit(self) -> Limit:
        """The bot's shared bucket (every call counts)."""
        return Limit(key=f"max:{self.bot_id}", rate=BOT_RATE)

    def chat_turn(self, chat: str) -> None:
        """Wait for the chat's turn: 2 messages per second per chat, shared
        by every worker (a second Redis bucket, one key per chat)."""
        if self.http.limiter is not None:
            self.http.limiter.acquire(f"max:{self.bot_id}:chat:{chat}", CHAT_RATE)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: tuple[float, float] | None = None,
    ) -> Any:
        """The decoded JSON answer of one call, or an error from the tree."""
        if not self._token:
            raise AuthError("max account has no access_token")
        kwargs: dict[str, Any] = {"headers": {"Authorization": self._token}}
        if params:
            kwargs["params"] = {k: _query(v) for k, v in params.items() if v is not None}
        if body is not None:
            kwargs["json"] = body
        if timeout is not None:
            kwargs["timeout"] = timeout
        response = self.http.request(
            method, path, limit=self.limit, error_mapper=self._http_error, **kwargs
        )
        try:
            answer = response.json() if response.content else None
        except ValueError:
            raise AmbiguousError(
                f"MAX {method} /{path}: the answer is not JSON", status=response.status_code
            ) from None
        if isinstance(answer, dict) and answer.get("success") is False:
            words = answer.get("message")
            shown = words[:300] if isinstance(words, str) and words else "no reason given"
            raise PermanentError(f"MAX {method} /{path} failed: {shown}", status=200)
        return answer

    def upload(self, url: str, name: str, data: bytes, mime: str | None) -> Any:
        """Step 2 of an upload: the file to the URL step 1 gave, as the
        multipart field ``data`` (FACTS §11), without the token ([GO] sends
        none to the upload host). A JSON answer (image, file) or None (video
        and audio answer XML ``<retval>1</retval>``)."""
        response = self.http.request(
            "POST",
            url,
            files={"data": (name, data, mime or "application/octet-stream")},
            error_mapper=self._http_error,
        )
        try:
            return response.json()
        except ValueError:
            return None

    def _http_error(self, response: requests.Response) -> BridgeError | None:
        """A non-2xx answer with MAX's error body; None leaves 5xx and
        bodies without a code to the HTTP seam's defaults."""
        if response.status_code >= 500:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        error = max_error(response.status_code, body if isinstance(body, dict) else {})
        if response.status_code == 429:
            error_retry = parse_retry_after(response.headers.get("Retry-After"))
            if isinstance(error, RetryableError):
                error.retry_after = error_retry or 1.0
        return self._scrubbed(error)

    def _scrubbed(self, error: BridgeError) -> BridgeError:
        if self._token and self._token in error.message:
            error.message = error.message.replace(self._token, "<token>")
            error.args = (error.message,)
        return error


def max_error(status: int, body: Mapping[str, Any]) -> BridgeError:
    """MAX's ``{"code", "message"}`` with its status -> the exception tree
    (the module docstring; the one place)."""
    code = body.get("code") if isinstance(body.get("code"), str) else None
    code = code[:80] if code else None
    words = body.get("message") if isinstance(body.get("message"), str) else None
    words = words[:300] if words else "no message"
    said = f"MAX {status} {code or '?'}: {words}"
    built: BridgeError
    if status == 401 or code in ("verify.token", "deprecated.token"):
        built = AuthError(
            f"{said} (the bot token was refused: take the token from business.max.ru and "
            "connect the bot again)",
            status=status,
        )
    elif status == 429:
        built = RetryableError(said, retry_after=1.0, status=status)
        built.nothing_written = True
    elif code == NOT_READY:
        built = RetryableError(said, retry_after=1.0, status=status)
        built.nothing_written = True
    elif status == 403:
        built = PermanentError(f"MAX 403 {code or '?'}: {FORBIDDEN} ({words})", status=status)
    elif status == 404:
        built = NotFoundError(said, status=status)
    else:
        built = PermanentError(said, status=status)
    built.vendor_code = code
    return built


def _query(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
