"""PHP's bracket notation for form bodies, shared by the CRMs that post it.

amoCRM's account webhooks and Bitrix24's events are
``application/x-www-form-urlencoded`` bodies built by PHP's
``http_build_query``: ``leads[status][0][id]=1`` — nested arrays flattened
into bracketed keys, list indexes as numeric keys (contracts/FACTS.md 1.12;
Bitrix24's event examples). This module turns them back into nested dicts,
strictly, so a hostile body is a ``PayloadError`` and never a crash.

A helper, not an adapter: each CRM's ``webhooks`` module calls it with its
own wording and depth limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from bridge.errors import PayloadError

__all__ = ["MAX_FIELDS", "decode_brackets", "items"]

MAX_FIELDS = 10_000
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode_brackets(body: bytes, *, what: str, max_depth: int) -> dict[str, Any]:
    """``a[b][0][c]=x&a[b][]=y`` -> nested dicts (``[]`` appends to a list).

    Strict: a malformed key, a key used both as a value and as a container,
    invalid UTF-8, more than ``max_depth`` levels or ``MAX_FIELDS`` fields is
    a ``PayloadError`` whose message starts with ``what`` (say, "amoCRM
    webhook"). Numeric keys stay strings (``{"0": {...}}``); use
    :func:`items` to walk them in order.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise PayloadError(f"{what} body is not a valid form") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.fullmatch(key)
        if not match:
            raise PayloadError(f"{what} form has a malformed key")
        path = [match.group(1), *_PART.findall(match.group(2))]
        if len(path) > max_depth:
            raise PayloadError(f"{what} form is nested too deeply")
        _put(root, path, value, what)
    return root


def _put(root: dict[str, Any], path: list[str], value: str, what: str) -> None:
    node: Any = root
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if part != "":
                raise PayloadError(f"{what} form mixes list and keyed items")
            if last:
                node.append(value)
                return
            child: Any = [] if path[depth + 1] == "" else {}
            node.append(child)
            node = child
            continue
        if part == "":
            raise PayloadError(f"{what} form has an empty key")
        if last:
            if part in node:
                raise PayloadError(f"{what} form repeats a key")
            node[part] = value
            return
        want_list = path[depth + 1] == ""
        child = node.get(part)
        if child is None:
            child = [] if want_list else {}
            node[part] = child
        elif isinstance(child, str) or isinstance(child, list) != want_list:
            raise PayloadError(f"{what} form uses one key as a value and a container")
        node = child


def items(value: Any) -> list[Mapping[str, Any]]:
    """The records of a PHP array: a ``{"0": …, "1": …}`` dict in numeric
    order, or a list; anything that is not a record is skipped."""
    if isinstance(value, Mapping):
        keys = sorted(value, key=_index_order)
        records = [value[k] for k in keys]
    elif isinstance(value, list):
        records = value
    else:
        records = []
    return [r for r in records if isinstance(r, Mapping)]


def _index_order(key: Any) -> tuple[int, int | str]:
    """Numeric keys first, by value; the rest (``"²"`` is a digit int()
    refuses, so is a number of more than 4300 digits) after them, by text."""
    text = str(key)
    if text.isdigit():
        try:
            return 0, int(text)
        except ValueError:
            pass
    return 1, text
