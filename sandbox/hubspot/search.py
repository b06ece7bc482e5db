"""``POST /crm/v3/objects/{type}/search`` (FACTS.md 3.3, 3.2).

* filterGroups are ORed, filters inside a group ANDed.
* Operators: EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY,
  NOT_HAS_PROPERTY, CONTAINS_TOKEN, NOT_CONTAINS_TOKEN.
* ``limit`` <= 200 (default 10), at most 10,000 results reachable per query,
  up to 5 filterGroups, 10 filters per group, 25 filters in total (changelog
  Aug 2024; the spec text still says 6 groups).
* Phone properties compare normalised (E.164 when parseable, else digits);
  HubSpot's own phone matching is UNCONFIRMED (FACTS 3.3).
* Eventual consistency: records younger than ``search_index_lag_s`` are not
  found yet (default 0).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from . import catalog
from .errors import validation_error
from .records import PHONE_PROPS, e164, to_millis
from .store import CrmObject, Portal, Store

__all__ = ["run_search", "MAX_LIMIT", "MAX_TOTAL"]

MAX_LIMIT = 200
MAX_TOTAL = 10000
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25

_VALUE_OPS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}


def _kind(portal: Portal, type_name: str, prop: str) -> str:
    if prop in PHONE_PROPS:
        return "phone"
    pdef = portal.props[type_name].get(prop)
    if pdef is None:
        return "string"
    if pdef.type == "number":
        return "number"
    if pdef.type in {"datetime", "date"}:
        return "datetime"
    return "string"


def _norm(kind: str, value: str) -> Any:
    """A comparable form of ``value`` for a property kind (None if it has none)."""
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return None
    if kind == "datetime":
        return to_millis(value)
    if kind == "phone":
        return e164(value)
    return value.casefold()


def _tokens(value: str) -> list[str]:
    return [t for t in re.split(r"[\s,;:!?()\[\]{}\"'/\\|<>]+", value.casefold()) if t]


def _contains_token(have: str, pattern: str) -> bool:
    pat = pattern.casefold()
    if "*" in pat:
        return fnmatch.fnmatchcase(have.casefold(), pat) or any(
            fnmatch.fnmatchcase(t, pat) for t in _tokens(have))
    return pat == have.casefold() or pat in _tokens(have)


def _compile_filter(portal: Portal, type_name: str,
                    f: dict[str, Any]) -> Callable[[CrmObject], bool]:
    prop = str(f["propertyName"])
    op = str(f["operator"])
    if prop not in portal.props[type_name]:
        # HubSpot rejects filters on unknown properties (wording UNCONFIRMED).
        raise validation_error(f'There was a problem with the request. Property "{prop}" '
                               f"does not exist on {type_name}.")
    kind = _kind(portal, type_name, prop)
    if op in _VALUE_OPS and f.get("value") is None:
        raise validation_error(f"Filter on {prop}: operator {op} needs a value")
    if op in {"IN", "NOT_IN"} and not f.get("values"):
        raise validation_error(f"Filter on {prop}: operator {op} needs values")
    if op == "BETWEEN" and (f.get("value") is None or f.get("highValue") is None):
        raise validation_error(f"Filter on {prop}: operator BETWEEN needs value and highValue")

    def get(obj: CrmObject) -> str | None:
        v = obj.properties.get(prop)
        return v if v not in (None, "") else None

    if op == "HAS_PROPERTY":
        return lambda o: get(o) is not None
    if op == "NOT_HAS_PROPERTY":
        return lambda o: get(o) is None
    if op in {"CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}:
        pattern = str(f["value"])
        positive = op == "CONTAINS_TOKEN"
        return lambda o: (get(o) is not None and _contains_token(get(o) or "", pattern)) == positive
    if op in {"IN", "NOT_IN"}:
        wanted = {_norm(kind, str(v)) for v in f["values"]}
        if op == "IN":
            return lambda o: get(o) is not None and _norm(kind, get(o) or "") in wanted
        return lambda o: get(o) is None or _norm(kind, get(o) or "") not in wanted
    target = _norm(kind, str(f["value"]))
    high = _norm(kind, str(f["highValue"])) if op == "BETWEEN" else None

    def compare(obj: CrmObject) -> bool:
        raw = get(obj)
        if raw is None:
            return op == "NEQ"
        have = _norm(kind, raw)
        if have is None or target is None:
            return op == "NEQ"
        if op == "EQ":
            return bool(have == target)
        if op == "NEQ":
            return bool(have != target)
        try:
            if op == "LT":
                return bool(have < target)
            if op == "LTE":
                return bool(have <= target)
            if op == "GT":
                return bool(have > target)
            if op == "GTE":
                return bool(have >= target)
            if op == "BETWEEN":
                return bool(target <= have <= high)
        except TypeError:
            return False
        return False

    return compare


def _query_matches(obj: CrmObject, words: list[str], fields: tuple[str, ...]) -> bool:
    tokens = [t for name in fields for t in _tokens(obj.properties.get(name) or "")]
    values = [(obj.properties.get(name) or "").casefold() for name in fields]
    return all(any(t.startswith(w) for t in tokens) or any(w in v for v in values)
               for w in words)


def _sort_keys(body: dict[str, Any]) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    for s in body.get("sorts") or []:
        if isinstance(s, str):
            keys.append((s.lstrip("-"), s.startswith("-")))
        else:
            keys.append((s["propertyName"], s.get("direction") == "DESCENDING"))
    return keys


def run_search(store: Store, portal: Portal, type_name: str,
               body: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a ``PublicObjectSearchRequest``; returns the response body."""
    limit = body.get("limit", 10)
    if limit < 0 or limit > MAX_LIMIT:
        raise validation_error(f"limit must be between 0 and {MAX_LIMIT}, got {limit}")
    after_raw = body.get("after") or "0"
    if not str(after_raw).isdigit():
        raise validation_error(f"after must be a numeric paging cursor, got {after_raw!r}")
    after = int(after_raw)
    if after + limit > MAX_TOTAL:
        raise validation_error(f"Search results are limited to {MAX_TOTAL} per query "
                               "(after + limit exceeds it)")
    groups = body.get("filterGroups") or []
    if len(groups) > MAX_GROUPS:
        raise validation_error(f"Too many filter groups: {len(groups)} (max {MAX_GROUPS})")
    total_filters = 0
    compiled: list[list[Callable[[CrmObject], bool]]] = []
    for group in groups:
        filters = group.get("filters") or []
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise validation_error(f"Too many filters in a group: {len(filters)} "
                                   f"(max {MAX_FILTERS_PER_GROUP})")
        total_filters += len(filters)
        compiled.append([_compile_filter(portal, type_name, f) for f in filters])
    if total_filters > MAX_FILTERS:
        raise validation_error(f"Too many filters: {total_filters} (max {MAX_FILTERS})")

    lag = float(store.cfg["search_index_lag_s"])
    horizon = store.now() - lag
    words = _tokens(body.get("query") or "")
    fields = catalog.OBJECT_TYPES[type_name].search_props
    hits = [o for o in store.live(portal, type_name)
            if (lag <= 0 or o.created_at <= horizon)
            and (not compiled or any(all(f(o) for f in g) for g in compiled))
            and (not words or _query_matches(o, words, fields))]
    hits.sort(key=lambda o: int(o.id))
    for prop, desc in reversed(_sort_keys(body)):
        kind = _kind(portal, type_name, prop)

        def key(o: CrmObject, prop: str = prop, kind: str = kind) -> tuple[int, Any]:
            raw = o.properties.get(prop)
            value = _norm(kind, raw) if raw else None
            return (0, value) if value is not None else (1, 0)

        present = [o for o in hits if key(o)[0] == 0]
        missing = [o for o in hits if key(o)[0] == 1]
        present.sort(key=key, reverse=desc)
        hits = present + missing
    page = hits[after:after + limit]
    requested = body.get("properties") or None
    result: dict[str, Any] = {
        "total": len(hits),
        "results": [Store.render(portal, o, requested) for o in page],
    }
    if after + limit < len(hits) and limit > 0:
        nxt = str(after + limit)
        result["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
    return result
