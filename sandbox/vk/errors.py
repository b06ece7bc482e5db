"""VK API error bodies, in VK's shape.

Every failure of a method is ``{"error": {"error_code", "error_msg",
"request_params": [{"key", "value"}, ...]}}`` in the body, with HTTP 200
(FACTS §3: check the body, not the status). ``error_msg`` starts with the
description of ``errors.json`` (the VK API schema) and may add a detail after
a colon, as VK does ("User authorization failed: no access_token passed.",
corpus ``get_long_poll_server_response_error_sample_5_110.json``).
``request_params`` echoes the request's parameters (never ``access_token``),
then ``method`` and ``oauth``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, has_request_context, request

from ..core.control import json_response

__all__ = ["ApiError", "DESCRIPTIONS", "request_params", "api_fault_body", "param_error"]

#: error_code -> description (tests/fixtures/corpora/vk/schema/errors.json)
DESCRIPTIONS: dict[int, str] = {
    1: "Unknown error occurred",
    3: "Unknown method passed",
    5: "User authorization failed",
    6: "Too many requests per second",
    7: "Permission to perform this action is denied",
    8: "Invalid request",
    9: "Flood control",
    10: "Internal server error",
    15: "Access denied",
    27: "Group authorization failed",
    29: "Rate limit reached",
    100: "One of the parameters specified was missing or invalid",
    113: "Invalid user id",
    900: "Can't send messages for users from blacklist",
    901: "Can't send messages for users without permission",
    902: "Can't send messages to this user due to their privacy settings",
    911: "Keyboard format is invalid",
    913: "Too many forwarded messages",
    914: "Message is too long",
    917: "You don't have access to this chat",
}


def request_params(method: str | None = None) -> list[dict[str, str]]:
    """The request's parameters as VK echoes them (query, then form)."""
    if not has_request_context():
        return []
    out: list[dict[str, str]] = []
    for source in (request.args, request.form):
        for key, value in source.items(multi=True):
            if key != "access_token":
                out.append({"key": key, "value": value})
    if method is None and request.view_args:
        method = request.view_args.get("method")
    if method:
        out.append({"key": "method", "value": method})
    out.append({"key": "oauth", "value": "1"})
    return out


class ApiError(Exception):
    """A method's failure; :meth:`response` is VK's answer."""

    def __init__(self, code: int, detail: str | None = None, message: str | None = None) -> None:
        self.code = code
        base = DESCRIPTIONS.get(code, "Unknown error occurred")
        if message is None:
            message = f"{base}: {detail}" if detail else base
        self.message = message
        super().__init__(f"{code} {message}")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "error_code": self.code,
                "error_msg": self.message,
                "request_params": request_params(),
            }
        }

    def response(self) -> Response:
        if has_request_context():
            g.vk_error_code = self.code  # /_stats counts the codes
        return json_response(self.body(), 200)


def param_error(detail: str) -> ApiError:
    """Error 100 with what is wrong."""
    return ApiError(100, detail)


_BAD_GATEWAY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_GATEWAY_TIMEOUT = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def api_fault_body(status: int, retry_after: float | None, *, http_5xx: bool) -> Response:
    """Error answers for :class:`sandbox.core.faults.FaultPlan`, VK's way.

    429 (a storm or ``rate_429``): error 6 in a 200 body (VK sends no
    Retry-After); 5xx: error 10 in a 200 body, or a bare 502 page when
    ``http_5xx``; 504 (after a hang): the front end's 504 page; a refused path:
    901 for ``messages.send``, else 7.
    """
    del retry_after
    if status == 429:
        return ApiError(6).response()
    if status == 504:
        g.vk_error_code = None
        return Response(_GATEWAY_TIMEOUT, 504, mimetype="text/html")
    if status == 400:
        method = (request.view_args or {}).get("method") if has_request_context() else None
        if method is None and has_request_context():
            method = request.path.rsplit("/", 1)[-1]
        return ApiError(901 if method == "messages.send" else 7).response()
    if http_5xx:
        return Response(_BAD_GATEWAY, 502, mimetype="text/html")
    return ApiError(10, "Unknown error, try later").response()
