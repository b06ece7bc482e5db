"""Telegram's error envelope and the exception the sandbox raises to produce it.

Every Bot API failure is ``{"ok": false, "error_code": N, "description": "...",
"parameters": {...}}`` (api.json ``types.ResponseParameters``; FACTS.md 1
"Outbound"). The description prefixes ("Bad Request: ", "Forbidden: ",
"Too Many Requests: retry after N") and the ``Retry-After`` header on 429 follow
the Bot API server's source (tdlib/telegram-bot-api ``Client.cpp``
``fail_query_with_error``, ``Query.cpp`` ``set_retry_after_error``,
``HttpConnection.cpp`` ``send_response``).
"""

from __future__ import annotations

import math
from typing import Any

from flask import Response, jsonify

__all__ = [
    "ApiError",
    "bad_request",
    "error_response",
    "ok_response",
    "retry_after_seconds",
    "QUERY_ID_INVALID",
    "CHAT_NOT_FOUND",
]

# Descriptions Telegram really returns (tdlib/telegram-bot-api Client.cpp, and
# the many public bots that match on these exact strings).
QUERY_ID_INVALID = "query is too old and response timeout expired or query ID is invalid"
CHAT_NOT_FOUND = "chat not found"

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """A Bot API failure; :meth:`envelope` is exactly what Telegram would answer."""

    def __init__(
        self,
        code: int,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.description = description or _REASONS.get(code, "Error")
        self.parameters = dict(parameters or {})
        super().__init__(f"{code} {self.description}")

    @classmethod
    def flood(cls, retry_after: int) -> ApiError:
        """429 exactly as ``Query::set_retry_after_error`` builds it."""
        return cls(
            429,
            f"Too Many Requests: retry after {retry_after}",
            {"retry_after": retry_after},
        )

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body

    def response(self) -> Response:
        return error_response(self)


def bad_request(what: str, parameters: dict[str, Any] | None = None) -> ApiError:
    """``400 Bad Request: <what>``."""
    return ApiError(400, f"Bad Request: {what}", parameters)


def retry_after_seconds(seconds: float) -> int:
    """Telegram's ``retry_after`` is a whole number of seconds, at least 1."""
    return max(1, math.ceil(seconds))


def error_response(error: ApiError) -> Response:
    """JSON response for ``error`` with the HTTP status equal to ``error_code``."""
    response = jsonify(error.envelope())
    response.status_code = error.code
    retry_after = error.parameters.get("retry_after")
    if error.code == 429 and retry_after:
        # HttpConnection::send_response adds Retry-After for flood errors.
        response.headers["Retry-After"] = str(retry_after)
    return response


def ok_response(result: Any, description: str | None = None) -> Response:
    """``{"ok": true, "result": ...}``; setWebhook/deleteWebhook also carry a description."""
    body: dict[str, Any] = {"ok": True, "result": result}
    if description:
        body["description"] = description
    return jsonify(body)


def fault_body(status: int, retry_after: float | None) -> Response:
    """Error body for :class:`sandbox.core.faults.FaultPlan` in Telegram's envelope."""
    if status == 429:
        return error_response(ApiError.flood(retry_after_seconds(retry_after or 1)))
    return error_response(ApiError(status, _REASONS.get(status, "Internal Server Error")))
