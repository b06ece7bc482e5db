"""The VK API calls of one community, and the one mapping of VK's errors to
the exception tree.

Every method is ``POST {base}/method/<name>`` with a form-encoded body
(``application/json`` is not supported: FACTS §3) carrying ``access_token``
and ``v``; the token rides in the body, never in the URL. VK answers
``{"response": ...}`` or, with HTTP 200 all the same, ``{"error":
{"error_code", "error_msg", "request_params"}}`` (corpus
``get_long_poll_server_response_error_sample_5_110.json``): the body is
checked, not the status. The codes the bridge acts on
(``vk/schema/errors.json``):

* 6 "Too many requests per second", 9 "Flood control", 29 "Rate limit
  reached": refused before anything ran: :class:`RetryableError` with a
  pause, and the community's shared bucket is paused as long;
* 10 "Internal server error": :class:`RetryableError` (a resend is safe:
  ``random_id`` makes ``messages.send`` idempotent);
* 900, 901, 902, 914 (blacklisted, no permission, privacy, too long):
  :class:`PermanentError` whose text says why, as the CRM shows it;
* 5 "User authorization failed", 27 "Group authorization failed":
  :class:`AuthError` (a new token is needed);
* anything else: :class:`PermanentError` with VK's own words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from bridge.errors import AmbiguousError, AuthError, BridgeError, PermanentError, RetryableError
from bridge.http import HttpClient, Limit
from bridge.model import Rate

__all__ = ["DENIED", "VkApi", "vk_error"]

#: code -> seconds to wait (and to pause the shared bucket) before retrying
RETRYABLE: dict[int, float] = {6: 1.0, 9: 5.0, 10: 1.0, 29: 60.0}
#: codes that refuse the request before running it
REFUSED = frozenset({6, 9, 29})
#: code -> why a message cannot reach this client, as the rep reads it
PERMANENT: dict[int, str] = {
    900: "the client has blacklisted the community",
    901: "the client does not allow messages from the community",
    902: "the client's privacy settings do not allow messages from the community",
    914: "the message is too long",
}
#: code -> what to do about a rejected token
AUTH: dict[int, str] = {
    5: "the access token was rejected (User authorization failed): "
    "create a new community token and connect again",
    27: "the community token was rejected (Group authorization failed): "
    "create a new community token and connect again",
}
#: "Permission to perform this action is denied", "Access denied", "Access
#: to group denied": the token lacks a right (``manage``, for the Callback
#: API methods)
DENIED = frozenset({7, 15, 203})


class VkApi:
    """The VK API of one community over the shared :class:`HttpClient`."""

    def __init__(
        self, http: HttpClient, token: str, group_id: str, version: str, rate: Rate | None
    ) -> None:
        self.http = http
        self._token = token
        self.group_id = group_id
        self.version = version
        self.rate = rate

    def __repr__(self) -> str:
        return f"<VkApi group={self.group_id}>"

    @property
    def limit(self) -> Limit | None:
        """The community's shared bucket (every method counts: VK limits
        requests per token, not per method)."""
        return Limit(key=f"vk:{self.group_id}", rate=self.rate) if self.rate else None

    def call(self, method: str, params: Mapping[str, Any]) -> Any:
        """``response`` of one method call, or an error from the tree."""
        if not self._token:
            raise AuthError("vk account has no access_token")
        form = {**{k: _form(v) for k, v in params.items()}, "access_token": self._token}
        form["v"] = self.version
        limit = self.limit
        response = self.http.request(
            "POST", f"method/{method}", data=form, limit=limit, error_mapper=self._http_error
        )
        try:
            envelope = response.json()
        except ValueError:
            raise AmbiguousError(
                f"VK {method}: the answer is not JSON", status=response.status_code
            ) from None
        if not isinstance(envelope, dict):
            raise AmbiguousError(f"VK {method}: unexpected answer", status=response.status_code)
        error = envelope.get("error")
        if isinstance(error, dict):
            raise self._refused(vk_error(error, status=response.status_code), limit)
        if "response" not in envelope:
            raise AmbiguousError(f"VK {method}: the answer has no response")
        return envelope["response"]

    def send(self, params: Mapping[str, Any]) -> str:
        """``messages.send`` to one peer: the new message's id."""
        answer = self.call("messages.send", params)
        if isinstance(answer, int) and not isinstance(answer, bool):
            return str(answer)
        # peer_ids (never sent here) answers [{peer_id, message_id,
        # conversation_message_id}] (corpus message_send_responses_sample_5_110)
        first = answer[0] if isinstance(answer, list) and answer else None
        if isinstance(first, dict):
            for name in ("message_id", "conversation_message_id"):
                found = first.get(name)
                if isinstance(found, int) and not isinstance(found, bool):
                    return str(found)
        # it may have gone out: a repeat with the same random_id is dropped by VK
        raise AmbiguousError("VK messages.send: the answer names no message")

    def answer_event(self, event_id: str, user_id: int, peer_id: int) -> None:
        """``messages.sendMessageEventAnswer`` without ``event_data``: the
        client's button stops spinning."""
        self.call(
            "messages.sendMessageEventAnswer",
            {"event_id": event_id, "user_id": user_id, "peer_id": peer_id},
        )

    def confirmation_code(self) -> str:
        """``groups.getCallbackConfirmationCode`` (needs the ``manage``
        right): the string the confirmation request must get back."""
        answer = self.call("groups.getCallbackConfirmationCode", {"group_id": self.group_id})
        code = answer.get("code") if isinstance(answer, dict) else None
        if not isinstance(code, str) or not code.strip():
            raise PermanentError("VK groups.getCallbackConfirmationCode gave no code")
        return code.strip()

    def _refused(self, error: BridgeError, limit: Limit | None) -> BridgeError:
        """Error 6/9/29 pauses the community's bucket for every process."""
        if (
            isinstance(error, RetryableError)
            and error.nothing_written
            and limit is not None
            and self.http.limiter is not None
        ):
            self.http.limiter.penalise(limit.key, error.retry_after or 1.0)
        return self._scrubbed(error)

    def _scrubbed(self, error: BridgeError) -> BridgeError:
        if self._token and self._token in error.message:
            error.message = error.message.replace(self._token, "<token>")
            error.args = (error.message,)
        return error

    def _http_error(self, response: requests.Response) -> BridgeError | None:
        """A non-2xx answer carrying VK's error envelope; None leaves it to
        the HTTP seam's defaults (5xx on a send: ambiguous; 429: Retry-After)."""
        try:
            envelope = response.json()
        except ValueError:
            return None
        error = envelope.get("error") if isinstance(envelope, dict) else None
        if not isinstance(error, dict) or response.status_code >= 500:
            return None
        return self._scrubbed(vk_error(error, status=response.status_code))


def vk_error(error: Mapping[str, Any], *, status: int | None = None) -> BridgeError:
    """VK's ``error`` object -> the exception tree (the one place)."""
    code = error.get("error_code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    words = error.get("error_msg")
    words = words[:300] if isinstance(words, str) and words else "no message"
    built: BridgeError
    if code in PERMANENT:
        built = PermanentError(f"VK {code}: {PERMANENT[code]}", status=status)
    elif code in AUTH:
        built = AuthError(f"VK {code}: {AUTH[code]}", status=status)
    elif code in RETRYABLE:
        built = RetryableError(f"VK {code}: {words}", retry_after=RETRYABLE[code], status=status)
        built.nothing_written = code in REFUSED
    else:
        built = PermanentError(f"VK {code if code is not None else '?'}: {words}", status=status)
    built.vendor_code = str(code) if code is not None else None
    return built


def _form(value: Any) -> Any:
    """Booleans as VK's 0/1; everything else as ``requests`` encodes it."""
    if isinstance(value, bool):
        return int(value)
    return value
