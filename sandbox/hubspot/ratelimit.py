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

import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["RateLimiter", "Decision"]


@dataclass
class Decision:
    """The outcome of one check: ``policy`` is set when the request is refused."""

    policy: str | None
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """Rolling-window counters keyed by (portal, app) and by token for search."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[object, deque[float]] = {}
        self._daily: dict[object, tuple[str, int]] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._daily.clear()

    @staticmethod
    def _prune(window: deque[float], now: float, span: float) -> None:
        while window and window[0] <= now - span:
            window.popleft()

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
        now = time.monotonic()
        day = time.strftime("%Y-%m-%d")
        with self._lock:
            win = self._windows.setdefault(("10s", key), deque())
            self._prune(win, now, interval_ms / 1000.0)
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
            swin: deque[float] | None = None
            if search_key is not None:
                swin = self._windows.setdefault(("1s", search_key), deque())
                self._prune(swin, now, 1.0)
                headers["X-HubSpot-RateLimit-Secondly"] = str(search_limit)

            def fill(policy: str | None) -> Decision:
                headers["X-HubSpot-RateLimit-Remaining"] = str(max(limit - len(win), 0))
                if daily_limit is not None:
                    headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                        max(daily_limit - used_day, 0))
                if swin is not None:
                    headers["X-HubSpot-RateLimit-Secondly-Remaining"] = str(
                        max(search_limit - len(swin), 0))
                return Decision(policy, headers)

            # HubSpot's specs mark the search operations
            # "x-hubspot-rate-limit-exemptions": ["ten-secondly"]
            # (crm-objects-*.v3.json, POST /search): searches count only
            # against their own per-second limit.
            ten_secondly = swin is None
            if daily_limit is not None and used_day >= daily_limit:
                return fill("DAILY")
            if ten_secondly and len(win) >= limit:
                return fill("TEN_SECONDLY_ROLLING")
            if swin is not None and len(swin) >= search_limit:
                return fill("SECONDLY")
            if ten_secondly:
                win.append(now)
            if swin is not None:
                swin.append(now)
            if daily_limit is not None:
                used_day += 1
                self._daily[("day", key)] = (day, used_day)
            return fill(None)

    def retry_after(self, key: object, interval_ms: int, policy: str,
                    search_key: object | None = None) -> float:
        """Seconds until the refusing window frees a slot (for Retry-After)."""
        now = time.monotonic()
        with self._lock:
            if policy == "SECONDLY" and search_key is not None:
                win = self._windows.get(("1s", search_key))
                span = 1.0
            elif policy == "DAILY":
                return float(86400 - (int(time.time()) % 86400))
            else:
                win = self._windows.get(("10s", key))
                span = interval_ms / 1000.0
            if not win:
                return 0.0
            return max(win[0] + span - now, 0.0)
