"""List endpoints: query parsing (PHP bracket notation), paging, envelopes.

FACTS.md 1.3: collections are
``{"_page":1,"_links":{"self":{"href":…},"next":{"href":…}},"_embedded":{"<entity>":[…]}}``;
``page`` and ``limit`` (max 250), ``with``, ``filter[…]``, ``order[…]=asc|desc``;
an empty result is 204 with an empty body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from flask import Response, request

from .context import api_url, sandbox
from .errors import bad_request, hal, no_content
from .store import Account

__all__ = [
    "parse_brackets",
    "query",
    "page_params",
    "with_params",
    "int_set",
    "order_key",
    "paginate",
    "bool_arg",
]

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_brackets(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style nesting into dicts: ``filter[id][]=1&filter[id][]=2`` ->
    ``{"filter": {"id": {"0": "1", "1": "2"}}}``; ``a[0][b]=x`` ->
    ``{"a": {"0": {"b": "x"}}}`` (``[]`` appends the next index)."""
    out: dict[str, Any] = {}
    for raw_key, value in pairs:
        match = _KEY.match(raw_key)
        if not match:
            out[raw_key] = value
            continue
        parts = [match.group(1)] + re.findall(r"\[([^\[\]]*)\]", match.group(2))
        node: dict[str, Any] = out
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return out


def query() -> dict[str, Any]:
    """The current request's query string, nested."""
    return parse_brackets(request.args.items(multi=True))


def page_params() -> tuple[int, int]:
    """``page`` (>= 1) and ``limit`` (FACTS 1.3: max 250; larger values are
    clamped to the maximum, UNCONFIRMED)."""
    cfg = sandbox().cfg
    try:
        page = int(request.args.get("page", "1"))
        limit = int(request.args.get("limit", str(cfg["default_limit"])))
    except ValueError:
        raise bad_request("page and limit must be integers") from None
    if page < 1 or limit < 1:
        raise bad_request("page and limit must be positive")
    return page, min(limit, int(cfg["max_limit"]))


def with_params() -> set[str]:
    """``with=leads,contacts`` -> ``{"leads", "contacts"}``."""
    return {p.strip() for p in request.args.get("with", "").split(",") if p.strip()}


def int_set(value: Any) -> set[int] | None:
    """A filter value (scalar, list or ``{"0": …}`` map) as a set of ints."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        value = str(value).split(",")
    out = set()
    for v in value:
        try:
            out.add(int(str(v).strip()))
        except ValueError:
            raise bad_request(f"invalid id in filter: {v!r}") from None
    return out


def bool_arg(value: Any) -> bool | None:
    if value is None:
        return None
    return str(value).lower() in {"1", "true", "yes"}


def order_key(allowed: tuple[str, ...] = ("id", "created_at", "updated_at")
              ) -> tuple[str, bool]:
    """``order[updated_at]=desc`` -> (``"updated_at"``, reverse=True); default id asc."""
    order = query().get("order")
    if isinstance(order, dict):
        for key, direction in order.items():
            if key in allowed:
                return key, str(direction).lower() == "desc"
    return "id", False


def paginate(account: Account, path: str, key: str, items: list[dict[str, Any]],
             render: Callable[[dict[str, Any]], dict[str, Any]],
             extra: dict[str, Any] | None = None) -> Response:
    """One page of ``items`` in the hal collection envelope, or 204 if empty."""
    page, limit = page_params()
    chunk = items[(page - 1) * limit: page * limit]
    if not chunk:
        return no_content()
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "page"]

    def link(p: int) -> dict[str, str]:
        return {"href": api_url(account, path) + "?" + urlencode(args + [("page", str(p))])}

    links = {"self": link(page)}
    if page * limit < len(items):
        links["next"] = link(page + 1)
    if page > 1:
        links["first"] = link(1)
        links["prev"] = link(page - 1)
    body: dict[str, Any] = {"_page": page, "_links": links,
                            "_embedded": {key: [render(i) for i in chunk]}}
    if extra:
        body.update(extra)
    return hal(body)
