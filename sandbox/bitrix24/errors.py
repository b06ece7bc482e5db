"""Bitrix24 error envelopes and the exception handlers raise.

Every error is ``{"error": CODE, "error_description": TEXT}`` (error-codes.md,
_includes/error-info.md) with the HTTP status the docs give for it. Two quirks
are kept: ``error`` is an empty string for the CRM access/not-found errors
(crm-lead-add.md: ``{"error": "", "error_description": "Access denied."}``) and
``crm.duplicate.findbycomm`` puts the text in ``error``
(crm-duplicate-find-by-comm.md). System errors are in _includes/system-errors.md.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response

__all__ = [
    "B24Error",
    "json_response",
    "no_auth",
    "expired_token",
    "insufficient_scope",
    "wrong_auth_type",
    "query_limit",
    "operation_time_limit",
    "method_not_found",
    "crm_error",
    "core_error",
    "argument_error",
]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON the way Bitrix24 sends it (``application/json; charset=utf-8``)."""
    resp = Response(json.dumps(data, ensure_ascii=False, separators=(",", ":")), status=status,
                    mimetype="application/json")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


class B24Error(Exception):
    """Raised by method handlers; rendered as a Bitrix24 error envelope."""

    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def response(self) -> Response:
        return json_response(self.body(), self.status)


# -- system errors (_includes/system-errors.md) -------------------------------------


def no_auth() -> B24Error:
    """401: invalid access token or webhook code."""
    return B24Error(401, "NO_AUTH_FOUND", "Wrong authorization data")


def expired_token() -> B24Error:
    """401: the access token has expired (refresh, then repeat: auto-renewal.md)."""
    return B24Error(401, "expired_token", "The access token provided has expired.")


def insufficient_scope() -> B24Error:
    """403: the webhook/app lacks the method's scope. batch.md's example shows an
    empty description inside result_error; this is the system-errors.md text."""
    return B24Error(403, "insufficient_scope",
                    "The request requires higher privileges than provided by the webhook token")


def wrong_auth_type() -> B24Error:
    """403 from app-context-only methods (imconnector-register.md and siblings)."""
    return B24Error(403, "WRONG_AUTH_TYPE",
                    "Current authorization type is denied for this method Application context "
                    "required")


def query_limit() -> B24Error:
    """503 (not 429): the leaky bucket is full (limits.md)."""
    return B24Error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")


def operation_time_limit(method: str) -> B24Error:
    """429: the method's accumulated execution time is over the limit (limits.md).
    The description text is UNCONFIRMED (the docs give the code only)."""
    return B24Error(429, "OPERATION_TIME_LIMIT",
                    f"Method is blocked due to operation time limit. Method: {method}")


def method_not_found() -> B24Error:
    """404 for an unknown method. UNCONFIRMED: not in the stored docs (the well-known
    live answer is ERROR_METHOD_NOT_FOUND / "Method not found!")."""
    return B24Error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


# -- method errors ----------------------------------------------------------------------


def crm_error(description: str, status: int = 400) -> B24Error:
    """The CRM methods' errors with an empty code (crm-lead-add.md, crm-contact-*.md:
    HTTP 400, ``"error": ""``)."""
    return B24Error(status, "", description)


def core_error(description: str) -> B24Error:
    """400 ERROR_CORE with a text (crm-contact-add.md field errors; tasks-task-add.md
    appends ``<br>``)."""
    return B24Error(400, "ERROR_CORE", description)


def argument_error(name: str) -> B24Error:
    """400 ERROR_ARGUMENT "Argument 'X' is null or empty" (imconnector-*.md)."""
    return B24Error(400, "ERROR_ARGUMENT", f"Argument '{name}' is null or empty")
