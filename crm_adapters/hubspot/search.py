"""HubSpot CRM search (``POST /crm/v3/objects/{type}/search``), shared by
the contact, entity and timeline hooks.

Search has its own budget, 4-5 requests per second per token, and is exempt
from the ten-secondly limit (FACTS 3.2; spec ``x-hubspot-rate-limit-exemptions``),
so it draws from its own bucket. It is eventually consistent: a record
created a moment ago may be missing (FACTS 3.3), which is why creates also
recover from 409 conflicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from bridge.http import Limit
from bridge.model import CrmAccountInfo, Rate

from .client import HubSpotApi, scrub

__all__ = ["BATCH_SIZE", "SEARCH_RATE", "SearchMixin", "batch_reason", "matched"]

T = TypeVar("T")

#: HubSpot's batch endpoints take at most 100 inputs (FACTS 3.3)
BATCH_SIZE = 100
#: at most 5 filterGroups (FACTS 3.2); at most 200 results per page
MAX_FILTER_GROUPS = 5
SEARCH_PAGE = 100
MAX_SEARCH_PAGES = 10
#: <= 5 searches in any second: 1 + 4/s
SEARCH_RATE = Rate(capacity=1, per_second=4)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def oldest(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    def key(item: Mapping[str, Any]) -> tuple[int, str]:
        raw = str(item.get("id", ""))
        return (int(raw), raw) if raw.isdigit() else (1 << 62, raw)

    return min(results, key=key) if results else None


def digits(value: str | None) -> str:
    return re.sub(r"\D", "", value or "")


def in_or_eq(prop: str, values: Sequence[str]) -> dict[str, Any]:
    if len(values) == 1:
        return {"propertyName": prop, "operator": "EQ", "value": values[0]}
    return {"propertyName": prop, "operator": "IN", "values": list(values)}


def matched(body: Mapping[str, Any], prop: str) -> dict[str, str]:
    """A batch answer's records by the value of ``prop`` each carries ->
    the record id (the oldest if two carry it). HubSpot does not promise
    the results in the order of the inputs."""
    by_value: dict[str, list[Mapping[str, Any]]] = {}
    for record in body.get("results") or []:
        if isinstance(record, Mapping):
            value = (record.get("properties") or {}).get(prop)
            if value is not None:
                by_value.setdefault(str(value), []).append(record)
    out: dict[str, str] = {}
    for value, records in by_value.items():
        first = oldest(records)
        if first is not None:
            out[value] = str(first["id"])
    return out


def batch_reason(body: Mapping[str, Any]) -> str:
    """Why a batch answer (207 multi-status) left inputs out, safe to log."""
    errors = [e for e in body.get("errors") or [] if isinstance(e, Mapping)]
    return scrub(errors[0].get("message")) if errors else "no result for them"


class SearchMixin:
    """Search helpers; the adapter provides ``api`` and the limits."""

    account: CrmAccountInfo
    api: HubSpotApi
    api_limit: Limit
    search_limit: Limit

    def _search(
        self,
        object_type: str,
        filter_groups: list[dict[str, Any]],
        properties: Sequence[str],
    ) -> list[Mapping[str, Any]]:
        results: list[Mapping[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_SEARCH_PAGES):
            request: dict[str, Any] = {
                "filterGroups": filter_groups,
                "properties": list(properties),
                "limit": SEARCH_PAGE,
            }
            if after:
                request["after"] = after
            body = self.api.json(
                "POST",
                f"/crm/v3/objects/{object_type}/search",
                json=request,
                limit=self.search_limit,
            )
            results.extend(r for r in body.get("results", []) if isinstance(r, Mapping))
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
        return results

    def _find_by_bridge_ids(self, object_type: str, bridge_ids: Sequence[str]) -> dict[str, str]:
        """bridge_message_id -> the oldest record carrying it."""
        found: dict[str, str] = {}
        for chunk in chunks(sorted(set(bridge_ids)), BATCH_SIZE):
            hits = self._search(
                object_type,
                [{"filters": [in_or_eq("bridge_message_id", chunk)]}],
                ["bridge_message_id"],
            )
            by_id: dict[str, list[Mapping[str, Any]]] = {}
            for hit in hits:
                bridge_id = str((hit.get("properties") or {}).get("bridge_message_id"))
                if bridge_id in chunk:
                    by_id.setdefault(bridge_id, []).append(hit)
            for bridge_id, records in by_id.items():
                first = oldest(records)
                if first is not None:
                    found[bridge_id] = str(first["id"])
        return found
