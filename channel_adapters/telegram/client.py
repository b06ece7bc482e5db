"""The Bot API call and the one mapping of Telegram's errors.

Every method is ``POST {base}/bot<token>/<method>`` with a JSON body and
answers ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": N, "description": "...", "parameters": {...}}``.

The token is in the URL path, so it is kept out of everything that can be
printed: error messages are built from Telegram's description (masked
anyway), and a transport error's cause (whose text holds the URL) is
dropped before the error leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests

from bridge.errors import AmbiguousError, AuthError, BridgeError, PermanentError, RetryableError
from bridge.http import HttpClient, Limit
from bridge.model import Rate

__all__ = ["BOT_TOKEN_RE", "BotApi", "ChatMigratedError"]

#: "<bot id>:<secret>"; anything else could rewrite the URL path it goes in
BOT_TOKEN_RE = re.compile(r"(\d+):[A-Za-z0-9_-]+")
MASK = "<bot-token>"


class ChatMigratedError(PermanentError):
    """``parameters.migrate_to_chat_id``: the group became a supergroup and
    the call must be repeated against ``new_chat_id`` (PTB ``ChatMigrated``)."""

    def __init__(self, message: str, *, new_chat_id: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.new_chat_id = new_chat_id


class BotApi:
    """One bot's Bot API over the shared :class:`HttpClient`."""

    def __init__(self, http: HttpClient, credentials: Mapping[str, Any], rate: Rate | None):
        self.http = http
        self._credentials = credentials
        self.rate = rate

    def __repr__(self) -> str:
        return f"<BotApi bot_id={self.bot_id}>"

    @property
    def bot_id(self) -> str | None:
        """The bot's own user id: the token's public prefix."""
        match = BOT_TOKEN_RE.fullmatch(self._raw_token())
        return match.group(1) if match else None

    def _raw_token(self) -> str:
        token = self._credentials.get("bot_token")
        return token if isinstance(token, str) else ""

    def scrub(self, text: str) -> str:
        token = self._raw_token()
        return text.replace(token, MASK) if token else text

    def call(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        timeout: tuple[float, float] | None = None,
        limited: bool = True,
    ) -> Any:
        """``result`` of one method call, or an error from the tree.
        ``timeout``: (connect, read) for a call that waits on purpose (a long
        poll); ``limited=False``: the call sends nothing to anyone, so it
        does not draw from the bot's send bucket."""
        error: BridgeError | None = None
        try:
            response = self._post(method, params, timeout=timeout, limited=limited)
        except BridgeError as exc:
            error = self._scrubbed(exc)
        if error is not None:
            raise error  # raised outside the handler: no __context__ with the URL
        try:
            envelope = response.json()
        except ValueError:
            error = AmbiguousError(f"{method}: answer is not JSON", status=response.status_code)
        else:
            if not isinstance(envelope, dict) or envelope.get("ok") is not True:
                error = self.error(response) or PermanentError(f"{method}: unexpected answer")
        if error is not None:
            raise error
        return envelope.get("result")

    def _post(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        timeout: tuple[float, float] | None = None,
        limited: bool = True,
    ) -> requests.Response:
        token = self._raw_token()
        if not BOT_TOKEN_RE.fullmatch(token):
            raise AuthError("telegram account has no valid bot_token")
        limit = None
        if limited and self.rate:
            limit = Limit(key=f"telegram:{self.bot_id}", rate=self.rate)
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        return self.http.request(
            "POST",
            f"bot{token}/{method}",
            json=dict(params),
            limit=limit,
            error_mapper=self.error,
            **extra,
        )

    def _scrubbed(self, exc: BridgeError) -> BridgeError:
        """The same error (class and attributes) with the token masked and
        no cause. Built with ``__new__``: subclasses take keyword arguments."""
        clean = type(exc).__new__(type(exc))
        clean.__dict__.update(exc.__dict__)
        clean.message = self.scrub(exc.message)
        clean.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in exc.args)
        return clean

    def error(self, response: requests.Response) -> BridgeError | None:
        """Telegram's error envelope -> the exception tree (the one place).

        Same order as python-telegram-bot (``request/_baserequest.py``):
        ``migrate_to_chat_id``, then ``retry_after``, then the status. ``None``
        leaves the answer to HttpClient's defaults (5xx: ambiguous on a write;
        a 429 without ``retry_after``: the ``Retry-After`` header).
        """
        try:
            envelope = response.json()
        except ValueError:
            return None
        if not isinstance(envelope, dict):
            return None
        status = _int(envelope.get("error_code")) or response.status_code
        description = self.scrub(str(envelope.get("description") or f"HTTP {status}"))
        text = f"Telegram {status}: {description}"
        params = envelope.get("parameters")
        params = params if isinstance(params, dict) else {}
        new_chat = _int(params.get("migrate_to_chat_id"))
        if new_chat:
            return ChatMigratedError(text, new_chat_id=str(new_chat), status=status)
        retry_after = params.get("retry_after")
        if isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool):
            return RetryableError(text, retry_after=float(retry_after), status=status)
        if status == 429 or status >= 500:
            return None
        if status in (401, 404):  # revoked / malformed token (PTB: InvalidToken)
            return AuthError(text, status=status)
        return PermanentError(text, status=status)  # 400 bad request, 403 blocked, 409...


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
