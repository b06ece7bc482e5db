"""Helpers shared by the contacts, companies and leads endpoints.

Common item fields (FACTS.md 1.5/1.7): ``responsible_user_id`` (must be a user
of the account, else 400 ``NotSupportedChoice``), ``created_by`` /
``updated_by`` (0 = robot), ``created_at`` / ``updated_at`` (unix),
``_embedded.tags`` (replaces), ``tags_to_add`` / ``tags_to_delete``; the
``?query=`` full-text match (FACTS 1.5: name and every filled custom field
value; phones match on digits, the normalisation is UNCONFIRMED); the
``If-Modified-Since`` list filter (FACTS 1.4).
"""

from __future__ import annotations

import email.utils
import re
from typing import Any

from flask import request

from .context import api_url, sandbox
from .errors import ItemErrors, bad_request
from .fields import value_strings
from .store import Account, Store

__all__ = [
    "as_dict",
    "check_int",
    "check_user",
    "common_fields",
    "apply_tags",
    "render_tags",
    "text_matches",
    "modified_since",
    "range_filter",
    "request_id",
    "self_link",
    "touch",
]

_PHONE_LIKE = re.compile(r"^[\d\s()+\-.]+$")


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty dict."""
    return value if isinstance(value, dict) else {}


def request_id(item: dict[str, Any], index: int) -> str:
    """FACTS 1.3: echoed unchanged; the item's index when omitted."""
    rid = item.get("request_id")
    return str(rid) if rid is not None else str(index)


def self_link(account: Account, path: str) -> dict[str, Any]:
    return {"self": {"href": api_url(account, path)}}


def check_int(item: dict[str, Any], key: str, errors: ItemErrors, prefix: str = "",
              minimum: int | None = 0) -> int | None:
    """``item[key]`` as an int (absent -> None); type errors are reported."""
    if key not in item or item[key] is None:
        return None
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, int) or (
            minimum is not None and value < minimum):
        errors.type_error(f"{prefix}{key}", "int")
        return None
    return value


def check_user(account: Account, item: dict[str, Any], key: str, errors: ItemErrors,
               prefix: str = "", allow_robot: bool = False) -> int | None:
    """A user id field: must name a user of the account (0 = robot where allowed)."""
    value = check_int(item, key, errors, prefix)
    if value is None:
        return None
    if value == 0 and allow_robot:
        return 0
    if value not in account.users:
        errors.add(f"{prefix}{key}")
        return None
    return value


def common_fields(account: Account, item: dict[str, Any], errors: ItemErrors,
                  prefix: str = "") -> dict[str, Any]:
    """The validated common fields present in ``item``."""
    out: dict[str, Any] = {}
    for key in ("name", "first_name", "last_name"):
        if key in item and item[key] is not None:
            if not isinstance(item[key], str):
                errors.type_error(f"{prefix}{key}", "string")
            else:
                out[key] = item[key]
    rid = check_user(account, item, "responsible_user_id", errors, prefix)
    if rid is not None:
        out["responsible_user_id"] = rid
    for key in ("created_by", "updated_by"):
        uid = check_user(account, item, key, errors, prefix, allow_robot=True)
        if uid is not None:
            out[key] = uid
    for key in ("created_at", "updated_at"):
        ts = check_int(item, key, errors, prefix)
        if ts is not None:
            out[key] = ts
    return out


def _tag_refs(raw: Any, path: str, errors: ItemErrors) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.type_error(path, "array")
        return []
    out = []
    for i, ref in enumerate(raw):
        if isinstance(ref, dict) and (isinstance(ref.get("id"), int)
                                      or isinstance(ref.get("name"), str)):
            out.append(ref)
        else:
            errors.blank(f"{path}.{i}.name")
    return out


def apply_tags(store: Store, account: Account, entity: str, obj: dict[str, Any] | None,
               item: dict[str, Any], errors: ItemErrors, prefix: str = "",
               dry_run: bool = False) -> list[int]:
    """Tag ids after ``_embedded.tags`` (replace), ``tags_to_add``, ``tags_to_delete``.

    With ``dry_run`` only validates (unknown tag ids are NotSupportedChoice)."""
    current: list[int] = list(obj["tags"]) if obj else []
    embedded = as_dict(item.get("_embedded"))
    replace = _tag_refs(embedded.get("tags"), f"{prefix}_embedded.tags", errors) \
        if "tags" in embedded else None
    add = _tag_refs(item.get("tags_to_add"), f"{prefix}tags_to_add", errors)
    delete = _tag_refs(item.get("tags_to_delete"), f"{prefix}tags_to_delete", errors)

    def resolve(ref: dict[str, Any], path: str) -> int | None:
        if isinstance(ref.get("id"), int):
            tag = store.tag_by_id(account, entity, ref["id"])
            if tag is None:
                errors.add(f"{path}.id")
                return None
            return int(tag["id"])
        if dry_run:
            return -1
        tag = store.tag(account, entity, name=ref["name"])
        return int(tag["id"]) if tag else None

    if replace is not None:
        current = []
        for i, ref in enumerate(replace):
            tid = resolve(ref, f"{prefix}_embedded.tags.{i}")
            if tid is not None and tid not in current:
                current.append(tid)
    for i, ref in enumerate(add):
        tid = resolve(ref, f"{prefix}tags_to_add.{i}")
        if tid is not None and tid not in current:
            current.append(tid)
    for ref in delete:
        if isinstance(ref.get("id"), int):
            current = [t for t in current if t != ref["id"]]
        else:
            tag = account.tags[entity].get(str(ref["name"]).strip().lower())
            if tag:
                current = [t for t in current if t != tag["id"]]
    return current


def render_tags(store: Store, account: Account, entity: str, obj: dict[str, Any]
                ) -> list[dict[str, Any]]:
    out = []
    for tid in obj.get("tags", []):
        tag = store.tag_by_id(account, entity, tid)
        if tag:
            out.append({"id": tag["id"], "name": tag["name"], "color": tag["color"]})
    return out


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def text_matches(q: str, obj: dict[str, Any], account: Account, entity: str) -> bool:
    """FACTS 1.5 ``?query=``: a case-insensitive substring of the name or of any
    filled custom field value; a phone-like query also matches the digits of
    PHONE values (digit normalisation is UNCONFIRMED; we compare digits only)."""
    needle = q.strip().lower()
    if not needle:
        return True
    texts = [obj.get("name") or "", obj.get("first_name") or "", obj.get("last_name") or ""]
    values = list(value_strings(obj.get("custom_fields_values")))
    texts += [v for _, v in values]
    if any(needle in t.lower() for t in texts):
        return True
    if _PHONE_LIKE.match(q.strip()):
        digits = _digits(q)
        if len(digits) >= 3:
            phone_fields = {fid for fid, f in account.fields[entity].items()
                            if f.get("code") == "PHONE"}
            return any(digits in _digits(v) for fid, v in values if fid in phone_fields)
    return False


def modified_since() -> float | None:
    """The ``If-Modified-Since`` header as unix seconds (FACTS 1.4 advises it)."""
    raw = request.headers.get("If-Modified-Since")
    if not raw:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        raise bad_request("Invalid If-Modified-Since header") from None
    return parsed.timestamp()


def range_filter(flt: dict[str, Any], key: str, value: Any) -> bool:
    """``filter[<key>][from]=…&filter[<key>][to]=…`` (or a single value)."""
    spec = flt.get(key)
    if spec is None:
        return True
    try:
        if isinstance(spec, dict):
            lo = int(spec["from"]) if "from" in spec else None
            hi = int(spec["to"]) if "to" in spec else None
            if lo is None and hi is None:
                return int(value) in {int(v) for v in spec.values()}
            return (lo is None or int(value) >= lo) and (hi is None or int(value) <= hi)
        return int(value) in {int(v) for v in str(spec).split(",")}
    except (TypeError, ValueError):
        raise bad_request(f"invalid filter[{key}]") from None


def touch(obj: dict[str, Any], user_id: int) -> None:
    obj["updated_at"] = int(sandbox().store.now())
    obj["updated_by"] = user_id
