"""Graph API error bodies, exactly in Meta's shape.

Every failure of the Cloud API is ``{"error": {"message", "type", "code",
"error_subcode"?, "error_data": {"messaging_product": "whatsapp", "details"}?,
"fbtrace_id"}}`` (Meta's "Error Response Contents", as mirrored by its
partners; FACTS §2). ``message`` is ``"(#<code>) <title>"`` for the
WhatsApp codes; ``error_subcode`` is "not included in v16.0+ responses", so
it appears only where a documented example carries one. Build handling on
``code``, not on the HTTP status (Meta's advice): the statuses below follow
the copies of Meta's error table, and the doubtful ones are configurable
(:mod:`.config`).

The same errors appear in ``failed`` status webhooks as
``errors[{code, title, message, error_data: {details}, href}]`` (corpus
``message_status.json`` "failed"): :func:`status_error`.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Response, g, has_request_context

from ..core.control import json_response

__all__ = [
    "GraphError",
    "CODES",
    "fbtrace_id",
    "graph_error_response",
    "fault_body",
    "status_error",
    "auth_error",
    "invalid_parameter",
    "no_object",
]

#: code -> (title, details, HTTP status) of the errors the sandbox gives
CODES: dict[int, tuple[str, str, int]] = {
    1: ("An unknown error occurred", "", 500),
    2: ("Service temporarily unavailable", "", 503),
    4: ("Application request limit reached", "", 429),
    100: ("Invalid parameter", "", 400),
    190: ("Invalid OAuth access token - Cannot parse access token", "", 401),
    2500: ("Unknown path components", "", 400),
    2635: (
        "You are calling a deprecated version of the Graph API. "
        "Please update to the latest version.",
        "",
        400,
    ),
    130429: (
        "Rate limit hit",
        "Message failed to send because there were too many messages sent from this "
        "phone number in a short period of time",
        400,
    ),
    131000: ("Something went wrong", "Message failed to send due to an unknown error.", 500),
    131008: ("Required parameter is missing", "", 400),
    131009: ("Parameter value is not valid", "", 400),
    131016: ("Service unavailable", "A service is temporarily unavailable.", 503),
    131026: (
        "Message Undeliverable",
        "Message failed to send because the recipient could not be reached "
        "(not a WhatsApp user, or an old app version).",
        400,
    ),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the "
        "customer last replied to this number.",
        400,
    ),
    131053: ("Media upload error", "Unable to download the media from the link given.", 400),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Too many messages sent from the sender phone number to the same recipient "
        "phone number in a short period of time.",
        429,
    ),
    132000: ("Number of parameters does not match the expected number of params", "", 400),
    132001: ("Template name does not exist in the translation", "", 404),
}

#: where a status webhook's error links to (corpus: message_status.json "failed")
ERROR_CODES_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


def fbtrace_id() -> str:
    """A trace id like Meta's (``Az8or2yhqkZfEZ-_4Qn_Bam``)."""
    return "A" + secrets.token_urlsafe(16)[:22]


class GraphError(Exception):
    """A Graph API failure; :meth:`response` is what Meta would answer."""

    def __init__(
        self,
        code: int,
        details: str | None = None,
        *,
        status: int | None = None,
        message: str | None = None,
        subcode: int | None = None,
        whatsapp: bool = True,
    ) -> None:
        title, default_details, default_status = CODES.get(code, ("Unknown error", "", 400))
        self.code = code
        self.status = status or default_status
        if message is None:
            # Graph's own errors (190, 2500) carry a bare message; the numbered
            # OAuth/WhatsApp errors "(#<code>) <title>".
            message = title if code in (190, 2500) else f"(#{code}) {title}"
        self.message = message
        self.details = default_details if details is None else details
        self.subcode = subcode
        self.whatsapp = whatsapp
        super().__init__(f"{code} {message}")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.whatsapp and self.details:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = fbtrace_id()
        return {"error": error}

    def response(self) -> Response:
        if has_request_context():
            g.graph_error_code = self.code  # GET /_stats counts the codes
        response = json_response(self.body(), self.status)
        if self.code == 190:
            # Graph names a bad token in WWW-Authenticate too
            response.headers["WWW-Authenticate"] = (
                f'OAuth "Facebook Platform" "invalid_token" "{self.message}"'
            )
        return response


def graph_error_response(error: GraphError) -> Response:
    return error.response()


def auth_error() -> GraphError:
    """401, code 190: the token is missing, malformed or not a known one."""
    return GraphError(190, whatsapp=False)


def invalid_parameter(details: str) -> GraphError:
    """400, ``(#100) Invalid parameter`` with what is wrong in ``details``."""
    return GraphError(100, details)


def no_object(object_id: str, method: str = "post") -> GraphError:
    """Graph's answer for an id that does not exist or that the token cannot see."""
    return GraphError(
        100,
        status=400,
        subcode=33,
        whatsapp=False,
        message=(
            f"Unsupported {method} request. Object with ID '{object_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this "
            "operation. Please read the Graph API documentation at "
            "https://developers.facebook.com/docs/graph-api"
        ),
    )


def fault_body(status: int, retry_after: float | None) -> Response:
    """Error bodies for :class:`sandbox.core.faults.FaultPlan`, in Meta's shape.

    5xx: ``131000`` (500) / ``131016`` (503) / ``2`` (504, after a hang);
    429: ``4`` "Application request limit reached" (Meta sends no
    ``Retry-After``); a refused path: ``131026`` "Message Undeliverable".
    """
    del retry_after  # Graph gives no Retry-After header
    if status == 429:
        error = GraphError(4, "The app has reached its API call rate limit.", whatsapp=True)
    elif status == 503:
        error = GraphError(131016)
    elif status == 504:
        error = GraphError(2, status=504, message="(#2) Service temporarily unavailable")
    elif status == 400:
        error = GraphError(131026)
    else:
        error = GraphError(131000, status=status if status >= 500 else 500)
    return error.response()


def status_error(code: int, details: str | None = None) -> dict[str, Any]:
    """One ``errors[]`` item of a ``failed`` status webhook."""
    title, default_details, _ = CODES.get(code, ("Message failed to send", "", 400))
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details or default_details or title},
        "href": ERROR_CODES_HREF,
    }
