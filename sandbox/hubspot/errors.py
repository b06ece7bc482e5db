"""HubSpot-shaped error bodies and the exception the handlers raise.

Spec ``Error`` (every shipped spec): required ``category``, ``correlationId``
(uuid), ``message``; optional ``subCategory``, ``errors``, ``context``,
``links``. HubSpot also sends ``"status": "error"`` (FACTS.md 3.3).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Response

__all__ = [
    "HubSpotError",
    "error_body",
    "json_response",
    "validation_error",
    "property_errors",
    "not_found",
    "rate_limit_body",
    "unauthenticated",
    "expired_token",
]


def correlation_id() -> str:
    """A fresh correlation id (the spec types it ``format: uuid``)."""
    return str(uuid.uuid4())


def error_body(message: str, category: str, **extra: Any) -> dict[str, Any]:
    """The standard HubSpot error envelope (FACTS 3.3)."""
    body: dict[str, Any] = {"status": "error", "message": message,
                            "correlationId": correlation_id(), "category": category}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with HubSpot's content type."""
    resp = Response(json.dumps(data, separators=(",", ":")), status=status,
                    mimetype="application/json")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


class HubSpotError(Exception):
    """Raised by handlers; rendered as a HubSpot error response."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> Response:
        return json_response(self.body, self.status, self.headers)


def validation_error(message: str, **extra: Any) -> HubSpotError:
    """400 VALIDATION_ERROR (FACTS 3.3)."""
    return HubSpotError(400, error_body(message, "VALIDATION_ERROR", **extra))


def property_errors(problems: list[dict[str, Any]]) -> HubSpotError:
    """400 "Property values were not valid: [...]".

    The message embeds a JSON list of ``{"isValid":false,"message",...,"error":
    CODE,"name"}`` entries, as live HubSpot 400 bodies do (INVALID_OPTION body
    seen in a captured error, community). Codes used here: PROPERTY_DOESNT_EXIST,
    INVALID_OPTION, READ_ONLY_VALUE, INVALID_EMAIL, and (UNCONFIRMED codes)
    INVALID_DECIMAL, INVALID_DATE, INVALID_BOOLEAN, REQUIRED_PROPERTY.
    """
    entries = [{"isValid": False, "message": p["message"], "error": p["error"],
                "name": p["name"], "localizedErrorMessage": p["message"]} for p in problems]
    message = "Property values were not valid: " + json.dumps(entries, separators=(",", ":"))
    return validation_error(message)


def not_found(message: str = "resource not found") -> HubSpotError:
    """404. Category OBJECT_NOT_FOUND is UNCONFIRMED (FACTS 3.3, from memory)."""
    return HubSpotError(404, error_body(message, "OBJECT_NOT_FOUND"))


def unauthenticated() -> HubSpotError:
    """401 for a missing or unknown token.

    Body as seen in live captures (community: HubSpot community forum
    "Authentication credentials not found"); FACTS 3.3 marks the category
    INVALID_AUTHENTICATION as UNCONFIRMED.
    """
    return HubSpotError(401, error_body(
        "Authentication credentials not found. This API supports OAuth 2.0 authentication "
        "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
        "oauth-overview",
        "INVALID_AUTHENTICATION"))


def expired_token(seconds_ago: float, expired_at_iso: str) -> HubSpotError:
    """401 for an expired OAuth access token.

    UNCONFIRMED in the stored vendor sources: live captures (community,
    airbytehq/airbyte#74726, ToolJet#17192) show category
    ``EXPIRED_AUTHENTICATION`` with this message and an ``expire time`` context.
    """
    secs = int(max(seconds_ago, 0))
    if secs < 60:
        ago = f"{secs} second(s)"
    elif secs < 3600:
        ago = f"{secs // 60} minute(s)"
    elif secs < 86400:
        ago = f"{secs // 3600} hour(s)"
    else:
        ago = f"{secs // 86400} day(s)"
    return HubSpotError(401, error_body(
        f"The OAuth token used to make this call expired {ago} ago.",
        "EXPIRED_AUTHENTICATION", context={"expire time": [expired_at_iso]}))


def rate_limit_body(policy: str) -> dict[str, Any]:
    """The 429 body (FACTS 3.2).

    ``TEN_SECONDLY_ROLLING`` and ``DAILY`` are documented; the search limit's
    message "You have reached your secondly limit." is from the Node SDK
    (RetryDecorator.ts); its ``policyName`` ``SECONDLY`` is UNCONFIRMED.
    """
    messages = {
        "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
        "SECONDLY": "You have reached your secondly limit.",
        "DAILY": "You have reached your daily limit.",
    }
    return {"status": "error", "message": messages[policy], "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(), "policyName": policy,
            "requestId": uuid.uuid4().hex}
