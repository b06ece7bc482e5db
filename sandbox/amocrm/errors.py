"""amoCRM-shaped responses: hal+json successes, problem+json errors (FACTS.md 1.3).

* Success: ``application/hal+json`` (FACTS 1.3).
* Empty result: 204 with an empty body (FACTS 1.3, code 2002).
* Validation: 400 ``validation-errors`` exactly as FACTS 1.3 shows it.
* Other errors: ``application/problem+json`` ``{title, type, status, detail}``.
  The 400 body is documented; the 401/402/403/404/429 bodies follow it by
  analogy and are UNCONFIRMED (FACTS 1.3 says so for 401).
* Token endpoint: the OAuthProblemJson 400 body (FACTS 1.2, community captures).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response

__all__ = [
    "AmoError",
    "hal",
    "plain_json",
    "no_content",
    "problem",
    "problem_body",
    "ItemErrors",
    "validation_failed",
    "unauthorized",
    "forbidden",
    "payment_required",
    "not_found",
    "bad_request",
    "oauth_problem",
    "rate_limited",
    "HAL",
    "PROBLEM",
]

HAL = "application/hal+json"
PROBLEM = "application/problem+json"

# https://httpstatus.es/<code> is the documented "type" of the 400 body (FACTS 1.3).
_TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _dump(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def hal(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A success answer with amoCRM's content type (FACTS 1.3)."""
    resp = Response(_dump(data), status=status, content_type=HAL)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def plain_json(data: Any, status: int = 200) -> Response:
    """``application/json`` (token endpoint, amojo, control API)."""
    return Response(_dump(data), status=status, content_type="application/json")


def no_content() -> Response:
    """204 No Content, empty body: "nothing found" (FACTS 1.3, code 2002)."""
    return Response(b"", status=204)


def problem_body(status: int, detail: str) -> dict[str, Any]:
    """``{title, type, status, detail}``; documented for 400 only (FACTS 1.3)."""
    return {"title": _TITLES.get(status, "Error"), "type": f"https://httpstatus.es/{status}",
            "status": status, "detail": detail}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    resp = Response(_dump(problem_body(status, detail)), status=status, content_type=PROBLEM)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


class AmoError(Exception):
    """Raised by handlers; carries a finished response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class ItemErrors:
    """Collects per-item validation errors of one batch (FACTS 1.3 body)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._current: list[dict[str, str]] | None = None

    def item(self, request_id: str) -> None:
        """Start collecting errors for the item with this ``request_id``."""
        self._current = []
        self.items.append({"request_id": request_id, "errors": self._current})

    def add(self, path: str, code: str = "NotSupportedChoice",
            detail: str = "The value you selected is not a valid choice.") -> None:
        """One error. ``NotSupportedChoice`` and its detail are documented
        (FACTS 1.3); the other codes we use (``InvalidType``, ``NotBlank``,
        ``TooMany``, ``NotFound``) are symfony-validator-style and UNCONFIRMED."""
        assert self._current is not None, "call item() first"
        self._current.append({"code": code, "path": path, "detail": detail})

    def type_error(self, path: str, kind: str) -> None:
        self.add(path, "InvalidType", f"This value should be of type {kind}.")

    def blank(self, path: str) -> None:
        self.add(path, "NotBlank", "This value should not be blank.")

    def __bool__(self) -> bool:
        return any(i["errors"] for i in self.items)

    def raise_if_any(self) -> None:
        if self:
            raise validation_failed([i for i in self.items if i["errors"]])


def validation_failed(items: list[dict[str, Any]]) -> AmoError:
    """The 400 ``validation-errors`` body, exactly as FACTS 1.3 shows it."""
    body = {"validation-errors": items, "title": "Bad Request",
            "type": "https://httpstatus.es/400", "status": 400,
            "detail": "Request validation failed"}
    return AmoError(Response(_dump(body), status=400, content_type=PROBLEM))


def bad_request(detail: str) -> AmoError:
    return AmoError(problem(400, detail))


def unauthorized(detail: str = "Unauthorized") -> AmoError:
    """401; body UNCONFIRMED (FACTS 1.3: "by analogy with 400, probably ...")."""
    return AmoError(problem(401, detail))


def forbidden(detail: str) -> AmoError:
    """403 (no rights, account blocked); body UNCONFIRMED (by analogy)."""
    return AmoError(problem(403, detail))


def payment_required() -> AmoError:
    """402 "subscription ended" (FACTS 1.3); body UNCONFIRMED (by analogy)."""
    return AmoError(problem(402, "Payment Required"))


def not_found(detail: str = "Not Found") -> AmoError:
    return AmoError(problem(404, detail))


def oauth_problem(hint: str) -> Response:
    """The token endpoint's 400 (FACTS 1.2: community captures, not on any
    official page). The three hints FACTS lists are used verbatim; the others
    (refresh-token ones, client/redirect/grant errors) are ours, in the style of
    the OAuth server library those hints come from (UNCONFIRMED)."""
    body = {"hint": hint, "title": "Некорректный запрос",
            "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson", "status": 400,
            "detail": "В запросе отсутствует ряд параметров или параметры невалидны"}
    return Response(_dump(body), status=400, content_type=PROBLEM)


def rate_limited(body_kind: str, retry_after: float | None) -> Response:
    """429 (FACTS 1.4). Body per the UNCONFIRMED switch ``rate_429_body``:
    ``"empty"`` (the SDK treats a non-JSON 429 as "Too many requests") or
    ``"json"`` (problem+json by analogy). ``Retry-After`` only when given
    (switch ``retry_after_header``, UNCONFIRMED)."""
    if body_kind == "json":
        resp = problem(429, "Too Many Requests")
    else:
        resp = Response(b"", status=429)
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return resp
