"""Request parameters the way Bitrix24 (PHP) reads them, and PHP-style output.

* Methods accept GET or POST, a JSON body (``Content-Type: application/json``),
  a form/multipart body, or the query string, with nested values in PHP bracket
  notation (``fields[PHONE][0][VALUE]=…``; settings/how-to-call-rest-api/
  general-principles.md, data-encoding.md). :func:`request_params` merges them.
* :func:`parse_php_query` is PHP's ``parse_str``; :func:`encode_form` is
  ``http_build_query`` (events are delivered that way: events/index.md).
* :func:`php_array` renders a PHP array the way ``json_encode`` does: an empty
  one as ``[]``, a 0..n-1 keyed one as a list (batch.md shows ``"result_error": []``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote_plus

from flask import Request

__all__ = [
    "parse_php_query",
    "parse_php_pairs",
    "encode_form",
    "flatten_form",
    "request_params",
    "php_array",
    "listify",
    "as_int",
    "as_bool",
    "as_str",
]

_KEY = re.compile(r"^([^\[]*)((?:\[[^\]]*\])*)")
_PART = re.compile(r"\[([^\]]*)\]")


def _assign(root: dict[str, Any], name: str, value: Any) -> None:
    match = _KEY.match(name)
    if not match or not match.group(1):
        return
    head, rest = match.group(1), match.group(2)
    parts = [head] + _PART.findall(rest)
    node: Any = root
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "":  # name[] appends, PHP-style
            part = str(sum(1 for k in node if str(k).isdigit()))
        if last:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child


def parse_php_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``[("a[b][]", "1")]`` -> ``{"a": {"b": ["1"]}}`` (digit-keyed maps become lists)."""
    root: dict[str, Any] = {}
    for name, value in pairs:
        _assign(root, name, value)
    return listify(root)


def parse_php_query(query: str) -> dict[str, Any]:
    """PHP ``parse_str`` of a query string."""
    return parse_php_pairs(parse_qsl(query, keep_blank_values=True))


def listify(value: Any) -> Any:
    """Turn maps keyed 0..n-1 into lists, recursively (what a PHP list is)."""
    if isinstance(value, dict):
        value = {k: listify(v) for k, v in value.items()}
        keys = list(value)
        if keys and all(str(k).isdigit() for k in keys):
            ordered = sorted(keys, key=lambda k: int(k))
            if [int(k) for k in ordered] == list(range(len(ordered))):
                return [value[k] for k in ordered]
        return value
    if isinstance(value, list):
        return [listify(v) for v in value]
    return value


def flatten_form(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    """PHP ``http_build_query`` pairs: nested keys in brackets, booleans as 1/0,
    None dropped (PHP drops nulls)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from flatten_form(f"{prefix}[{key}]" if prefix else str(key), sub)
    elif isinstance(value, (list, tuple)):
        for index, sub in enumerate(value):
            yield from flatten_form(f"{prefix}[{index}]", sub)
    elif value is None:
        return
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    else:
        yield prefix, str(value)


def encode_form(data: dict[str, Any]) -> str:
    """``{"auth": {"domain": "x"}}`` -> ``auth%5Bdomain%5D=x`` (http_build_query)."""
    return "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in flatten_form("", data))


def request_params(req: Request) -> dict[str, Any]:
    """Query string + body (JSON object, or form/multipart fields), body winning.

    Raises ``ValueError`` for a JSON body that is not an object."""
    params = parse_php_query(req.query_string.decode("latin-1"))
    if req.method in ("POST", "PUT"):
        mimetype = req.mimetype or ""
        if mimetype == "application/json" or (not mimetype and req.get_data()[:1] == b"{"):
            raw = req.get_data()
            if raw.strip():
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("the JSON body must be an object")
                params.update(body)
        elif req.form:
            params.update(parse_php_pairs(list(req.form.items(multi=True))))
    return params


def php_array(value: dict[Any, Any] | list[Any]) -> Any:
    """A PHP array as ``json_encode`` writes it: ``[]`` when empty, a list when
    keyed 0..n-1 in order, else an object."""
    if isinstance(value, list):
        return value
    if not value:
        return []
    keys = list(value)
    if all(isinstance(k, int) or (isinstance(k, str) and k.isdigit()) for k in keys):
        if [int(k) for k in keys] == list(range(len(keys))):
            return list(value.values())
    return {str(k): v for k, v in value.items()}


def as_int(value: Any) -> int | None:
    """A positive-or-zero integer from an int or a digit string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def as_bool(value: Any, default: bool = False) -> bool:
    """PHP-ish truthiness of Y/N, 1/0, true/false."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    text = str(value).strip().lower()
    if text in ("", "0", "n", "false", "no", "off"):
        return False
    return True


def as_str(value: Any) -> str:
    """How PHP would stringify a scalar for storage."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
