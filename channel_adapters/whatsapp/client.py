"""The Graph API calls of one WhatsApp number, and the one mapping of
Meta's errors to the exception tree.

Errors come as ``{"error": {"message", "type", "code", "error_subcode"?,
"error_data": {"details"}?, "fbtrace_id"}}`` (corpora FACTS §2). The codes
the bridge acts on:

* 131047 "Re-engagement message": the 24-hour window is closed:
  :class:`~bridge.errors.WindowClosedError` (the core sends the mapping's
  template instead, or tells the rep why).
* 130429 "Rate limit hit" (the number's throughput) and 131056 "pair rate
  limit hit" (too many to one customer): retryable after a pause; the
  shared bucket is penalised.
* 190 (an expired or revoked token) and HTTP 401: re-authorise.
* anything else 4xx: permanent, with Meta's words (the rep reads them);
  5xx on a send: ambiguous (WhatsApp has no idempotency key: the core never
  sends it again blindly).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from bridge.errors import (
    AuthError,
    BridgeError,
    PermanentError,
    RetryableError,
    WindowClosedError,
)
from bridge.http import HttpClient, Limit
from bridge.model import Rate

__all__ = ["GraphApi", "meta_error"]

#: seconds to wait after a throughput refusal, and after a pair refusal
#: (about one message every 6 s to one user, FACTS §2)
THROUGHPUT_PAUSE = 1.0
PAIR_PAUSE = 6.0


class GraphApi:
    """The Graph API of one phone number over the shared :class:`HttpClient`."""

    def __init__(
        self, http: HttpClient, token: str, phone_number_id: str, version: str, rate: Rate
    ) -> None:
        self.http = http
        self._token = token
        self.phone_number_id = phone_number_id
        self.version = version
        self.rate = rate

    def __repr__(self) -> str:
        return f"<GraphApi number={self.phone_number_id}>"

    @property
    def auth(self) -> dict[str, str]:
        if not self._token:
            raise AuthError("whatsapp account has no access_token")
        return {"Authorization": f"Bearer {self._token}"}

    def send(self, body: Mapping[str, Any], *, pair: tuple[str, Rate] | None = None) -> str:
        """POST one message; its wamid. ``pair``: the customer's own bucket
        (key, rate), drawn from before the number's."""
        if pair is not None and self.http.limiter is not None:
            self.http.limiter.acquire(pair[0], pair[1], 1.0)
        try:
            answer = self.http.json(
                "POST",
                f"{self.version}/{self.phone_number_id}/messages",
                json=dict(body),
                headers=self.auth,
                limit=Limit(key=f"whatsapp:{self.phone_number_id}", rate=self.rate),
                error_mapper=meta_error,
            )
        except RetryableError as exc:
            if pair is not None and exc.status is not None and "131056" in exc.message:
                if self.http.limiter is not None:
                    self.http.limiter.penalise(pair[0], exc.retry_after or PAIR_PAUSE)
            raise
        messages = answer.get("messages") if isinstance(answer, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if not isinstance(wamid, str) or not wamid:
            raise PermanentError("WhatsApp accepted the message but gave no id")
        return wamid

    def mark_read(self, wamid: str) -> None:
        self.http.json(
            "POST",
            f"{self.version}/{self.phone_number_id}/messages",
            json={"messaging_product": "whatsapp", "status": "read", "message_id": wamid},
            headers=self.auth,
            error_mapper=meta_error,
        )

    def media_url(self, media_id: str) -> tuple[str, int | None]:
        """The first step of a media download: its short-lived URL and size."""
        answer = self.http.json(
            "GET", f"{self.version}/{media_id}", headers=self.auth, error_mapper=meta_error
        )
        url = answer.get("url") if isinstance(answer, dict) else None
        if not isinstance(url, str) or not url:
            raise PermanentError("WhatsApp gave no URL for the media")
        size = answer.get("file_size")
        return url, size if isinstance(size, int) and not isinstance(size, bool) else None

    def number(self) -> dict[str, Any]:
        """The phone number's own object: its display number and verified
        name (a read: nothing is sent)."""
        answer = self.http.json(
            "GET",
            f"{self.version}/{self.phone_number_id}",
            params={"fields": "display_phone_number,verified_name"},
            headers=self.auth,
            error_mapper=meta_error,
        )
        if not isinstance(answer, dict):
            raise PermanentError("WhatsApp gave no phone number object")
        return answer

    def templates(self, waba_id: str) -> list[dict[str, Any]]:
        """The business account's message templates (every page)."""
        found: list[dict[str, Any]] = []
        path: str | None = f"{self.version}/{waba_id}/message_templates?limit=100"
        for _ in range(20):
            if path is None:
                break
            answer = self.http.json("GET", path, headers=self.auth, error_mapper=meta_error)
            data = answer.get("data") if isinstance(answer, dict) else None
            found.extend(t for t in data or [] if isinstance(t, dict))
            after = (((answer or {}).get("paging") or {}).get("cursors") or {}).get("after")
            has_next = bool(((answer or {}).get("paging") or {}).get("next"))
            path = (
                f"{self.version}/{waba_id}/message_templates?limit=100&after={after}"
                if after and has_next
                else None
            )
        return found


def meta_error(response: requests.Response) -> BridgeError | None:
    """Meta's error envelope -> the exception tree (the one place). None
    leaves the answer to HttpClient's defaults (5xx: ambiguous on a send)."""
    try:
        envelope = response.json()
    except ValueError:
        return None
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if not isinstance(error, dict):
        return None
    status = response.status_code
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    details = (
        (error.get("error_data") or {}) if isinstance(error.get("error_data"), dict) else {}
    ).get("details")
    words = str(error.get("message") or f"HTTP {status}")[:300]
    if isinstance(details, str) and details and details not in words:
        words = f"{words} — {details[:300]}"
    text = f"WhatsApp {code or status}: {words}"
    if code == 131047:
        return WindowClosedError(text, status=status)
    if code == 130429:
        return RetryableError(text, retry_after=THROUGHPUT_PAUSE, status=status)
    if code == 131056:
        return RetryableError(text, retry_after=PAIR_PAUSE, status=status)
    if code == 190 or status == 401:
        return AuthError(text, status=status)
    if status == 429:
        return RetryableError(text, retry_after=THROUGHPUT_PAUSE, status=status)
    if status >= 500:
        return None
    return PermanentError(text, status=status)
