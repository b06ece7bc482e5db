"""amoCRM's Chats API ("amojo"): request signing, the channel's calls, and
the outgoing-message hook's signature (FACTS 1.13).

Request signature (every request, GET included)::

    Date:         RFC 2822, e.g. "Thu, 29 Oct 2020 11:59:55 +0000" (valid 15 min)
    Content-Type: application/json
    Content-MD5:  hex md5 of the raw body bytes (md5 of b"" for a GET)
    X-Signature:  hex HMAC-SHA1(channel_secret,
                      "\\n".join([METHOD, Content-MD5, Content-Type, Date, path]))

``path`` is the request URL's path without host and query. The body is
serialised **once** and those very bytes are both hashed and sent.

The outgoing-message webhook (amoCRM -> us) is signed differently:
``X-Signature = hex HMAC-SHA1(channel_secret, raw body)``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from bridge.errors import BridgeError, NotFoundError, PermanentError, RetryableError
from bridge.http import HttpClient, Limit

from .client import decode, map_error
from .fields import as_map

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_AMOJO_BASE",
    "AmojoClient",
    "body_signature",
    "rfc2822",
    "sign_request",
    "signature_headers",
    "verify_body_signature",
]

DEFAULT_AMOJO_BASE = "https://amojo.amocrm.ru"
CONTENT_TYPE = "application/json"
#: history pages hold at most 50 messages (FACTS 1.13)
HISTORY_PAGE = 50
HISTORY_MAX_PAGES = 20


def rfc2822(when: dt.datetime) -> str:
    """``Thu, 29 Oct 2020 11:59:55 +0000`` (English names whatever the locale)."""
    return email.utils.format_datetime(when.astimezone(dt.UTC).replace(microsecond=0))


def sign_request(
    secret: str, method: str, content_md5: str, content_type: str, date: str, path: str
) -> str:
    """X-Signature of an amojo request (a missing header is ``""``)."""
    message = "\n".join([method.upper(), content_md5, content_type, date, path])
    return hmac.new(secret.encode(), message.encode(), hashlib.sha1).hexdigest()


def signature_headers(
    secret: str, method: str, url: str, body: bytes, *, now: dt.datetime | None = None
) -> dict[str, str]:
    """The four headers for a request of ``body`` (exactly the bytes sent)."""
    date = rfc2822(now or dt.datetime.now(dt.UTC))
    content_md5 = hashlib.md5(
        body, usedforsecurity=False
    ).hexdigest()  # amoCRM's Content-MD5, not our crypto
    path = urlsplit(url).path or "/"
    return {
        "Date": date,
        "Content-Type": CONTENT_TYPE,
        "Content-MD5": content_md5,
        "X-Signature": sign_request(secret, method, content_md5, CONTENT_TYPE, date, path),
    }


def body_signature(secret: str, body: bytes) -> str:
    """X-Signature of the outgoing-message webhook."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def verify_body_signature(secret: str, body: bytes, provided: str | None) -> bool:
    if not secret or not provided or len(provided) > 128:
        return False
    expected = body_signature(secret, body).encode("ascii")
    try:
        given = provided.strip().lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, given)


def map_amojo_error(response: requests.Response) -> BridgeError | None:
    """amojo answers: 403 is a bad signature (or a stale ``Date``), 404 an
    unknown channel / chat / message; the rest as on the API host."""
    if response.status_code == 403:
        return PermanentError(
            "amoCRM chats refused the request signature (HTTP 403): check the channel "
            "secret and the server clock",
            status=403,
        )
    if response.status_code == 404:
        return NotFoundError("amoCRM chats: no such channel, chat or message", status=404)
    return map_error(response)


class AmojoClient:
    """Signed calls to the Chats API for one tenant's channel connection."""

    def __init__(
        self,
        http: HttpClient,
        *,
        base_url: str,
        channel_secret: str,
        limit: Limit,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.secret = channel_secret
        self.limit = limit
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def call(self, method: str, path: str, payload: Any = None, *, ok: tuple[int, ...] = ()) -> Any:
        if not self.secret:
            raise PermanentError(
                "amoCRM chats: `channel_secret` is not configured (AMOCRM_CHANNEL_SECRET)"
            )
        url = f"{self.base_url}/{path.lstrip('/')}"
        body = b"" if payload is None else _serialise(payload)
        headers = signature_headers(self.secret, method, url, body, now=self.clock())
        response = self.http.request(
            method,
            url,
            data=body if payload is not None else None,
            headers=headers,
            limit=self.limit,
            ok=ok,
            error_mapper=map_amojo_error,
        )
        if response.status_code in ok and response.status_code >= 300:
            return response
        return decode(response)

    # -- channel --------------------------------------------------------

    def connect(self, channel_id: str, amojo_id: str, title: str) -> str:
        body = self.call(
            "POST",
            f"/v2/origin/custom/{channel_id}/connect",
            {
                "account_id": amojo_id,
                "title": title,
                "hook_api_version": "v2",
                "is_time_window_disabled": True,
            },
        )
        scope_id = body.get("scope_id") if isinstance(body, Mapping) else None
        if not scope_id:
            raise PermanentError("amoCRM chats did not return the channel's scope_id")
        return str(scope_id)

    def create_chat(self, scope_id: str, payload: Mapping[str, Any]) -> str:
        body = self.call("POST", f"/v2/origin/custom/{scope_id}/chats", payload)
        chat_id = body.get("id") if isinstance(body, Mapping) else None
        if not chat_id:
            raise PermanentError("amoCRM chats did not return the chat id")
        return str(chat_id)

    def send(self, scope_id: str, event_type: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        body = self.call(
            "POST", f"/v2/origin/custom/{scope_id}", {"event_type": event_type, "payload": payload}
        )
        answer = body.get(event_type) if isinstance(body, Mapping) else None
        if not isinstance(answer, Mapping):
            # 200 without the message: it may or may not exist; look it up next time
            raise RetryableError("amoCRM chats answered without the message id")
        return answer

    def delivery_status(self, scope_id: str, msgid: str, payload: Mapping[str, Any]) -> None:
        self.call("POST", f"/v2/origin/custom/{scope_id}/{msgid}/delivery_status", payload)

    def find_in_history(
        self, scope_id: str, conversation_id: str, wanted: set[str]
    ) -> dict[str, str]:
        """our msgid -> amojo message id, for the ``wanted`` msgids present in
        the conversation's history (newest pages first; a chat that does not
        exist yet has no history). Whether amojo deduplicates by msgid is
        UNCONFIRMED (FACTS 1.13): this lookup is what makes a retry safe."""
        found: dict[str, str] = {}
        for page in range(HISTORY_MAX_PAGES):
            response_body = self.call(
                "GET",
                f"/v2/origin/custom/{scope_id}/chats/{conversation_id}/history"
                f"?offset={page * HISTORY_PAGE}&limit={HISTORY_PAGE}",
                ok=(404,),
            )
            if isinstance(response_body, requests.Response) or not response_body:
                break
            items = _history_items(response_body)
            for item in items:
                ours, theirs = _history_ids(item)
                if ours in wanted:
                    found.setdefault(ours, theirs or ours)
            if len(found) == len(wanted) or len(items) < HISTORY_PAGE:
                break
        return found


def _serialise(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _history_items(body: Any) -> list[Mapping[str, Any]]:
    if isinstance(body, list):
        items = body
    elif isinstance(body, Mapping):
        items = body.get("messages") or body.get("history") or body.get("items") or []
    else:
        items = []
    return [i for i in items if isinstance(i, Mapping)]


def _history_ids(item: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(our msgid, amojo's id) of a history item. The item's shape is not in
    the facts we hold: accept the names the send answer and the webhook use."""
    message = as_map(item.get("message"))
    ours = (
        item.get("ref_id")
        or item.get("msgid")
        or message.get("ref_id")
        or message.get("msgid")
        or message.get("client_id")
    )
    theirs = item.get("id") or message.get("id")
    if ours is None and theirs is not None:
        ours = theirs  # some histories only echo the id we sent
    return (str(ours) if ours is not None else None, str(theirs) if theirs is not None else None)
