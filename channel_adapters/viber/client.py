"""The Viber REST bot API calls of one bot, and the one mapping of Viber's
statuses to the exception tree.

Every call is ``POST {base}/<name>`` (base ``https://chatapi.viber.com/pa``:
``send_message``, ``set_webhook``, ``get_account_info``,
``get_user_details``) with a JSON body and the header
``X-Viber-Auth-Token`` (corpora FACTS §4; ``viberbot/api/consts.py``,
``api_request_sender.py`` L31-32). Viber answers HTTP 200 even on errors:
the body's ``status`` says what happened, 0 is success, anything else comes
with ``status_message`` (the status table of the REST bot API, "Error
codes", as viber-bot-python and the other SDKs copy it: 0 ok,
1 invalidUrl, 2 invalidAuthToken, 3 badData, 4 missingData,
5 receiverNotRegistered, 6 receiverNotSubscribed, 7 publicAccountBlocked,
8 publicAccountNotFound, 9 publicAccountSuspended, 10 webhookNotSet,
11 receiverNoSuitableDevice, 12 tooManyRequests, 13 apiVersionNotSupported).

What the bridge does with them (:func:`viber_error`, the one place):

* 12 tooManyRequests: refused before anything ran: :class:`RetryableError`
  with a pause, and the bot's shared bucket is paused as long;
* 2 invalidAuthToken, 7, 8, 9 (the bot itself is refused): :class:`AuthError`
  naming the fix (a person must act);
* 5, 6, 11 (this user cannot get messages): :class:`PermanentError` whose
  text says why, as the CRM shows it;
* anything else: :class:`PermanentError` with Viber's own words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from bridge.errors import AmbiguousError, AuthError, BridgeError, PermanentError, RetryableError
from bridge.http import HttpClient, Limit
from bridge.model import Rate

__all__ = ["AUTH_HEADER", "OK", "ViberApi", "viber_error"]

AUTH_HEADER = "X-Viber-Auth-Token"
OK = 0
#: status -> seconds to wait (and to pause the bot's bucket) before retrying
RETRYABLE: dict[int, float] = {12: 1.0}
#: status -> why a message cannot reach this user, as the rep reads it
PERMANENT: dict[int, str] = {
    5: "the user is not registered on Viber (receiverNotRegistered)",
    6: "the user is not subscribed to the bot: they unsubscribed or never wrote "
    "(receiverNotSubscribed)",
    11: "the user's device or Viber version cannot receive bot messages (receiverNoSuitableDevice)",
}
#: status -> what to do about the bot itself
AUTH: dict[int, str] = {
    2: "the bot's auth token was rejected (invalidAuthToken): copy the token from the "
    "bot's admin panel and connect again",
    7: "the bot is blocked by Viber (publicAccountBlocked)",
    8: "the token does not belong to a bot (publicAccountNotFound)",
    9: "the bot is suspended by Viber (publicAccountSuspended)",
}


class ViberApi:
    """The REST bot API of one bot over the shared :class:`HttpClient`."""

    def __init__(self, http: HttpClient, token: str, bot_id: str, rate: Rate | None) -> None:
        self.http = http
        self._token = token
        self.bot_id = bot_id
        self.rate = rate

    def __repr__(self) -> str:
        return f"<ViberApi bot={self.bot_id}>"

    @property
    def limit(self) -> Limit | None:
        """The bot's shared bucket (every call counts)."""
        return Limit(key=f"viber:{self.bot_id}", rate=self.rate) if self.rate else None

    def call(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The answer of one call (``status`` 0), or an error from the tree."""
        if not self._token:
            raise AuthError("viber account has no auth_token")
        limit = self.limit
        response = self.http.request(
            "POST",
            name,
            json=dict(body),
            headers={AUTH_HEADER: self._token},
            limit=limit,
            error_mapper=self._http_error,
        )
        try:
            answer = response.json()
        except ValueError:
            raise AmbiguousError(
                f"Viber {name}: the answer is not JSON", status=response.status_code
            ) from None
        if not isinstance(answer, dict):
            raise AmbiguousError(f"Viber {name}: unexpected answer", status=response.status_code)
        status = answer.get("status")
        if status != OK or isinstance(status, bool):
            raise self._refused(viber_error(answer, status=response.status_code), limit)
        return answer

    def send(self, body: Mapping[str, Any]) -> str:
        """``send_message``: the new message's ``message_token`` as a string
        (it exceeds 2^53: FACTS §0 rule 5; Python's json keeps it an int)."""
        answer = self.call("send_message", body)
        token = answer.get("message_token")
        if isinstance(token, int) and not isinstance(token, bool):
            return str(token)
        if isinstance(token, str) and token.isdigit():
            return token
        # status 0 says it went out; without its token no status can find it
        raise AmbiguousError("Viber send_message: the answer names no message_token")

    def account_info(self) -> dict[str, Any]:
        """``get_account_info``: the bot's ``id``, ``name``, ``uri``, ``webhook``..."""
        return self.call("get_account_info", {})

    def set_webhook(self, url: str, event_types: tuple[str, ...]) -> dict[str, Any]:
        """``set_webhook``: Viber checks ``url`` with a signed ``webhook``
        event before it answers (status 1 when the URL did not answer 200);
        an empty ``url`` removes the webhook."""
        body: dict[str, Any] = {"url": url}
        if url:
            body.update({"event_types": list(event_types), "send_name": True, "send_photo": True})
        return self.call("set_webhook", body)

    def _refused(self, error: BridgeError, limit: Limit | None) -> BridgeError:
        """Status 12 pauses the bot's bucket for every process."""
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
        """A non-2xx answer carrying Viber's status body; None leaves it to
        the HTTP seam's defaults (5xx on a send: ambiguous; 429: Retry-After)."""
        try:
            answer = response.json()
        except ValueError:
            return None
        if not isinstance(answer, dict) or "status" not in answer or response.status_code >= 500:
            return None
        return self._scrubbed(viber_error(answer, status=response.status_code))


def viber_error(answer: Mapping[str, Any], *, status: int | None = None) -> BridgeError:
    """Viber's ``{"status", "status_message"}`` -> the exception tree (the one place)."""
    code = answer.get("status")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    words = answer.get("status_message")
    words = words[:300] if isinstance(words, str) and words else "no message"
    built: BridgeError
    if code in PERMANENT:
        built = PermanentError(f"Viber {code}: {PERMANENT[code]}", status=status)
    elif code in AUTH:
        built = AuthError(f"Viber {code}: {AUTH[code]}", status=status)
    elif code in RETRYABLE:
        built = RetryableError(f"Viber {code}: {words}", retry_after=RETRYABLE[code], status=status)
        built.nothing_written = True
    else:
        built = PermanentError(f"Viber {code if code is not None else '?'}: {words}", status=status)
    built.vendor_code = str(code) if code is not None else None
    return built
