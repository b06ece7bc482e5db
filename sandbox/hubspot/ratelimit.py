"""HubSpot rate limits (FACTS.md 3.2), thread-safe.

* A rolling window (10 s by default) per token's portal + app: 100 for
  Free/Starter private apps, 110 for OAuth apps (UNCONFIRMED), 190 for
  Pro/Enterprise; configurable (``per_10s``, ``per_10s_oauth``).
* A daily count per portal + private app (no daily limit on OAuth calls).
* Search endpoints: their own per-second limit per token (``search_per_s``).

Only accepted requests are counted. Every answer to a counted request carries
``X-HubSpot-RateLimit-Max``/``-Remaining``/``-Interval-Milliseconds`` (plus
``-Daily``/``-Daily-Remaining`` for private apps and ``-Secondly``/
``-Secondly-Remaining`` on search).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.ratelimit import RollingWindow

__all__ = ["RateLimiter", "Decision"]


@dataclass
class Decision:
    """The outcome of one check: ``policy`` is set when the request is refused."""

    policy: str | None
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """Rolling windows (:mod:`sandbox.core.ratelimit`) keyed by (portal, app) and
    by token for search, plus a daily count per portal + private app."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.windows = RollingWindow(now)
        self._daily: dict[object, tuple[str, int]] = {}

    def reset(self) -> None:
        with self.windows.lock:
            self.windows.reset()
            self._daily.clear()

    def check(
        self,
        key: object,
        limit: int,
        interval_ms: int,
        *,
        daily_limit: int | None = None,
        search_key: object | None = None,
        search_limit: int = 5,
    ) -> Decision:
        """Count one request under ``key`` unless a window is full."""
        windows = self.windows
        span = interval_ms / 1000.0
        with windows.lock:
            day = time.strftime("%Y-%m-%d", time.localtime(self.now()))
            ten = ("10s", key)
            used = windows.used(ten, span)
            headers = {
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval_ms),
                "X-HubSpot-RateLimit-Max": str(limit),
            }
            used_day = 0
            if daily_limit is not None:
                stamp, used_day = self._daily.get(("day", key), (day, 0))
                if stamp != day:
                    used_day = 0
                headers["X-HubSpot-RateLimit-Daily"] = str(daily_limit)
            second = ("1s", search_key) if search_key is not None else None
            used_s = 0
            if second is not None:
                used_s = windows.used(second, 1.0)
                headers["X-HubSpot-RateLimit-Secondly"] = str(search_limit)

            def fill(policy: str | None) -> Decision:
                headers["X-HubSpot-RateLimit-Remaining"] = str(max(limit - used, 0))
                if daily_limit is not None:
                    headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                        max(daily_limit - used_day, 0))
                if second is not None:
                    headers["X-HubSpot-RateLimit-Secondly-Remaining"] = str(
                        max(search_limit - used_s, 0))
                return Decision(policy, headers)

            # HubSpot's specs mark the search operations
            # "x-hubspot-rate-limit-exemptions": ["ten-secondly"]
            # (crm-objects-*.v3.json, POST /search): searches count only
            # against their own per-second limit.
            ten_secondly = second is None
            if daily_limit is not None and used_day >= daily_limit:
                return fill("DAILY")
            if ten_secondly and used >= limit:
                return fill("TEN_SECONDLY_ROLLING")
            if second is not None and used_s >= search_limit:
                return fill("SECONDLY")
            if ten_secondly:
                windows.add(ten)
                used += 1
            if second is not None:
                windows.add(second)
                used_s += 1
            if daily_limit is not None:
                used_day += 1
                self._daily[("day", key)] = (day, used_day)
            return fill(None)

    def retry_after(self, key: object, interval_ms: int, policy: str,
                    search_key: object | None = None) -> float:
        """Seconds until the refusing window frees a slot (for Retry-After)."""
        if policy == "SECONDLY" and search_key is not None:
            return self.windows.wait(("1s", search_key), 1.0)
        if policy == "DAILY":
            return float(86400 - (int(self.now()) % 86400))
        return self.windows.wait(("10s", key), interval_ms / 1000.0)
