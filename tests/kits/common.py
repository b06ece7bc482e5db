"""Provider-neutral pieces the kits share: the invariants of what a parser
returns, offline vendors (answered through ``responses``, the suite's one
HTTP seam), PHP bracket forms, Hypothesis strategies for hostile and shaped
payloads, and the tokens of a fuzzing dictionary."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import requests
import responses
from hypothesis import strategies as st

from bridge.model import CrmEvent, IgnoredEvent, InboundMessage, ThreadMigrated

__all__ = [
    "BRACKET_EXAMPLES",
    "DATES",
    "DIGIT_ID",
    "FORM",
    "JSON",
    "JSON_VALUES",
    "NAME",
    "NESTED_FORM",
    "PHP_PAIRS",
    "SENTENCE",
    "T0",
    "WORD",
    "BrokenInvariant",
    "Vendor",
    "check_channel_events",
    "check_crm_events",
    "depth",
    "dumps",
    "form_tokens",
    "ident",
    "json_tokens",
    "keys_of",
    "mutated",
    "offline",
    "php_form",
    "php_form_raw",
    "php_pairs",
]

#: the arrival time of every request the kits build for parsers
T0 = dt.datetime(2025, 3, 1, 9, 15, 30, tzinfo=dt.UTC)
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


#: how a webhook proven by a secret echoed in a header is attacked (Telegram's
#: X-Telegram-Bot-Api-Secret-Token, MAX's X-Max-Bot-Api-Secret): each 403
SECRET_HEADER_CASES: dict[str, int] = {
    "forged": 403,
    "missing": 403,
    "empty": 403,
    "malformed-prefix": 403,
    "malformed-longer": 403,
    "malformed-case": 403,
    "malformed-non-ascii": 403,
    "malformed-huge": 403,
    "other-accounts-secret": 403,
}


def secret_header_attack(case: str, own: str, other: str) -> str | None:
    """The header value of one of :data:`SECRET_HEADER_CASES` against the
    secret ``own`` (``other``: another account's); None: no header."""
    return {
        "forged": "not-the-secret-at-all",
        "missing": None,
        "empty": "",
        "malformed-prefix": own[:-1],
        "malformed-longer": own + "x",
        "malformed-case": own.swapcase(),
        "malformed-non-ascii": "sécret-ключ".encode().decode("latin-1"),
        "malformed-huge": "A" * 10_240,
        "other-accounts-secret": other,
    }[case]


# --------------------------------------------------------------------------
# invariants of what a parser returns
# --------------------------------------------------------------------------


class BrokenInvariant(AssertionError):
    """A parser returned something the normalised model does not allow."""


def aware(value: Any, what: str) -> None:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise BrokenInvariant(f"{what} is not an aware datetime: {value!r}")


def ident(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise BrokenInvariant(f"{what} is not a non-empty string: {value!r}")


def check_channel_events(events: Any, *, exactly: int | None = None) -> None:
    """A channel's ``parse`` result: a list of InboundEvents (``exactly``
    that many where the provider sends one event per delivery)."""
    if not isinstance(events, list):
        raise BrokenInvariant(f"parse must return a list: {events!r}")
    if exactly is not None and len(events) != exactly:
        raise BrokenInvariant(f"a delivery must give exactly {exactly} event(s): {events!r}")
    for event in events:
        if isinstance(event, InboundMessage):
            for name in ("external_id", "external_user_id", "external_thread_id"):
                ident(getattr(event, name), name)
            aware(event.sent_at, "sent_at")
            if not isinstance(event.text, str):
                raise BrokenInvariant("text is not a string")
        elif isinstance(event, ThreadMigrated):
            for name in ("external_id", "old_thread_id", "new_thread_id"):
                ident(getattr(event, name), name)
        elif isinstance(event, IgnoredEvent):
            ident(event.external_id, "external_id")
            if not isinstance(event.event_type, str):
                raise BrokenInvariant("event_type is not a string")
        else:
            raise BrokenInvariant(f"not an InboundEvent: {event!r}")


def check_crm_events(events: Any) -> None:
    """A CRM's ``parse_webhook`` result: a list of well-formed CrmEvents."""
    if not isinstance(events, list):
        raise BrokenInvariant(f"parse_webhook must return a list: {events!r}")
    for event in events:
        if not isinstance(event, CrmEvent):
            raise BrokenInvariant(f"not a CrmEvent: {event!r}")
        ident(event.external_id, "external_id")
        aware(event.occurred_at, "occurred_at")
        if not isinstance(event.text, str):
            raise BrokenInvariant("text is not a string")
        for name in ("thread_key", "crm_thread_id", "recipient", "author_id", "owner_id"):
            value = getattr(event, name)
            if value is not None and not isinstance(value, str):
                raise BrokenInvariant(f"{name} is not a string: {value!r}")


# --------------------------------------------------------------------------
# offline vendors
# --------------------------------------------------------------------------

#: ``(method, url, {"json": ..., "params": ..., "data": ...})`` -> ``(status,
#: JSON body)``, or None when the URL is not this vendor's
Vendor = Callable[[str, str, Mapping[str, Any]], tuple[int, Any] | None]

_METHODS = (responses.GET, responses.POST, responses.PUT, responses.PATCH, responses.DELETE)


def _request_kwargs(request: requests.PreparedRequest) -> dict[str, Any]:
    body = request.body or b""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    media = (request.headers.get("Content-Type") or "").split(";")[0].strip()
    kwargs: dict[str, Any] = {"params": dict(parse_qsl(urlsplit(request.url or "").query))}
    if media == JSON and raw:
        with contextlib.suppress(ValueError):
            kwargs["json"] = json.loads(raw)
    elif media == FORM:
        kwargs["data"] = dict(parse_qsl(raw))
    return kwargs


@contextlib.contextmanager
def offline(vendors: Iterable[Vendor]) -> Iterator[responses.RequestsMock]:
    """Every ``requests`` call answered by the first of ``vendors`` that
    knows its URL; any other URL is a ConnectionError (never the network)."""
    known = list(vendors)

    def answer(request: requests.PreparedRequest) -> Any:
        kwargs = _request_kwargs(request)
        for vendor in known:
            got = vendor(request.method or "GET", request.url or "", kwargs)
            if got is not None:
                status, body = got
                return status, {"Content-Type": JSON}, json.dumps(body)
        host = urlsplit(request.url or "").hostname
        return requests.ConnectionError(f"no offline vendor answers {host}")

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in _METHODS:
            mock.add_callback(method, re.compile(r".*"), callback=answer)
        yield mock


# --------------------------------------------------------------------------
# PHP bracket forms (what PHP clients post: amoCRM, Bitrix24)
# --------------------------------------------------------------------------


def php_pairs(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``http_build_query`` pairs: ``a[b][0][c]=x`` (lists by index)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        else:
            pairs.append((prefix, "" if value is None else str(value)))

    walk("", payload)
    return pairs


def php_form(payload: Mapping[str, Any]) -> bytes:
    return urlencode(php_pairs(payload)).encode()


def php_form_raw(payload: Mapping[str, Any]) -> bytes:
    """The same with brackets left unescaped (both are what PHP clients send)."""
    return "&".join(
        f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in php_pairs(payload)
    ).encode()


# --------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
#: any JSON value (small)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
#: text without surrounding whitespace and without BB-code brackets
WORD = st.text(
    alphabet=st.characters(
        exclude_characters="[]", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")
    ),
    min_size=1,
    max_size=10,
)
SENTENCE = st.lists(WORD, min_size=1, max_size=6).map(" ".join)
DIGIT_ID = st.integers(1, 10**12)
#: a person's (or a rep's) name as a channel or CRM shows it
NAME = st.text(min_size=1, max_size=30)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def keys_of(docs: Sequence[Any]) -> list[str]:
    """Every object key in ``docs`` (what :func:`mutated` adds elsewhere)."""
    found: set[str] = set()
    for doc in docs:
        for path in _paths(doc):
            found.update(p for p in path if isinstance(p, str))
    return sorted(found)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[Any], keys: Sequence[str]) -> Any:
    """A real payload with 1-4 random edits: a value replaced by any JSON,
    a key deleted, or a known key added somewhere it does not belong."""
    doc = copy.deepcopy(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(list(keys)))] = draw(JSON_VALUES)
    return doc


# --------------------------------------------------------------------------
# PHP bracket forms, shaped and hostile
# --------------------------------------------------------------------------

FORM_HEADS = ["leads", "contacts", "account", "unsorted", "talk", "message"]
FORM_PARTS = ["status", "delete", "note", "responsible", "add", "update", "0", "1", "10", "²"]
FORM_PARTS += ["", "id", "status_id", "text", "params", "note", "element_id", "created_by"]
FORM_PARTS += ["responsible_user_id", "date_create", "last_modified", "type", "9" * 4400]


@st.composite
def php_key(draw: st.DrawFn) -> str:
    head = draw(st.one_of(st.sampled_from(FORM_HEADS), st.text(min_size=1, max_size=6)))
    parts = draw(st.lists(st.one_of(st.sampled_from(FORM_PARTS), st.text(max_size=6)), max_size=5))
    return head + "".join(f"[{p}]" for p in parts)


FORM_VALUES = st.one_of(
    st.sampled_from(["142", "143", "900", "@client hi", "@клиент", "0", "-1", "1e9", "²", ""]),
    st.text(max_size=20),
)
#: arbitrary PHP bracket-form pairs, in the keys PHP CRMs post
PHP_PAIRS = st.lists(st.tuples(php_key(), FORM_VALUES), max_size=12)


FORM_KEY = st.text(min_size=1, max_size=8).filter(lambda k: "[" not in k and "]" not in k)
#: nested dictionaries of text, as PHP clients post them
NESTED_FORM = st.recursive(
    st.text(max_size=10),
    lambda inner: st.dictionaries(FORM_KEY, inner, min_size=1, max_size=4),
    max_leaves=12,
).filter(lambda v: isinstance(v, dict))


def depth(value: Any) -> int:
    """How deep a nested form goes (the decoders have a limit)."""
    return 1 + max((depth(v) for v in value.values()), default=0) if isinstance(value, dict) else 0


#: bodies that once broke a bracket decoder
BRACKET_EXAMPLES = (b"a[b]=1&a=2", b"a=1&a[b]=2", b"a[]=1&a[x]=2", b"a[b][]=1&a[b][c]=2")


#: times a bridge marker can carry
DATES = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)


# --------------------------------------------------------------------------
# fuzzing dictionaries
# --------------------------------------------------------------------------


def json_tokens(seeds: Iterable[bytes]) -> set[bytes]:
    """Keys, short strings and JSON punctuation of the seeds."""
    tokens: set[bytes] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                tokens.add(json.dumps(key, ensure_ascii=False).encode())
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and len(node) < 40:
            tokens.add(json.dumps(node, ensure_ascii=False).encode())

    for seed in seeds:
        with contextlib.suppress(ValueError):
            walk(json.loads(seed))
    return tokens | {b"{", b"}", b"[", b"]", b":", b",", b"null", b"true", b"-0", b"1e999"}


def form_tokens(seeds: Iterable[bytes]) -> set[bytes]:
    """The bracket parts of the seeds' form keys and form punctuation."""
    tokens: set[bytes] = {b"&", b"=", b"[]", b"%5B", b"%5D", b"%FF", b"+"}
    for seed in seeds:
        for part in re.findall(rb"(?:%5B|\[)([^&=%\[\]]{1,40})(?:%5D|\])", seed):
            tokens.add(b"[" + part + b"]")
    return tokens
