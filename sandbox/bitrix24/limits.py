"""Bitrix24's two REST limits (limits.md), thread-safe, on the sandbox clock.

**Request rate: a leaky bucket per portal.** Every HTTP request to a portal's
REST API adds 1 to a counter that drains by ``Y`` per second; "when the
counter value exceeds the threshold X, the following request is blocked with
status 503 and error code QUERY_LIMIT_EXCEEDED" (X/Y: 50/2 on ordinary plans,
250/5 on Enterprise). The docs key it by portal *and* source IP ("several
applications on a single server ... share a common request rate limit"); the
sandbox keys it by portal only. A batch is one HTTP request ("The rate limit
accounts for HTTP requests"), so it counts once. Our reading: a refused
request does not raise the counter. No ``Retry-After`` is documented. The
bucket is :class:`sandbox.core.ratelimit.TokenBucket` (a token bucket is a
leaky bucket as a meter) keyed by the portal's domain, with rate Y and
capacity X.

**Resource intensity ("operating").** Per portal, per app or webhook, per
method: the execution time of each call is summed in ten 1-minute baskets. A
basket opens at the first call of its minute and drops out 10 minutes later
(``operating_reset_at`` = the oldest basket's opening + 600 s). Before each
call the sum is checked: above the limit, the call is refused with 429
``OPERATION_TIME_LIMIT`` until enough baskets dropped out. The outer ``batch``
call is not counted; its nested calls are, each against its own method.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OperatingMeter", "OperatingState"]

_BASKET_S = 60.0
_WINDOW_S = 600.0  # ten baskets


@dataclass
class OperatingState:
    """What goes into ``time.operating`` / ``time.operating_reset_at``."""

    operating: float
    reset_at: int | None


class OperatingMeter:
    """Ten 1-minute baskets of execution time per (portal, credential, method)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._baskets: dict[tuple[str, str, str], list[list[float]]] = {}

    def _live(self, key: tuple[str, str, str], now: float) -> list[list[float]]:
        baskets = [b for b in self._baskets.get(key, []) if now < b[0] + _WINDOW_S]
        self._baskets[key] = baskets
        return baskets

    def state(self, key: tuple[str, str, str]) -> OperatingState:
        now = self._now()
        with self._lock:
            baskets = self._live(key, now)
            total = sum(b[1] for b in baskets)
            reset = int(baskets[0][0] + _WINDOW_S) if baskets else None
            return OperatingState(total, reset)

    def blocked(self, key: tuple[str, str, str], limit: float) -> bool:
        """limits.md: checked before each call; blocked while the sum exceeds the limit."""
        return self.state(key).operating > limit

    def record(self, key: tuple[str, str, str], seconds: float) -> OperatingState:
        now = self._now()
        with self._lock:
            baskets = self._live(key, now)
            if baskets and now < baskets[-1][0] + _BASKET_S:
                baskets[-1][1] += seconds
            else:
                baskets.append([now, seconds])
            total = sum(b[1] for b in baskets)
            return OperatingState(total, int(baskets[0][0] + _WINDOW_S))

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._now()
        with self._lock:
            out = []
            for key in list(self._baskets):
                baskets = self._live(key, now)
                if baskets:
                    out.append({"portal": key[0], "credential": key[1], "method": key[2],
                                "operating": round(sum(b[1] for b in baskets), 6),
                                "operating_reset_at": int(baskets[0][0] + _WINDOW_S),
                                "baskets": len(baskets)})
            return out

    def reset(self) -> None:
        with self._lock:
            self._baskets.clear()
