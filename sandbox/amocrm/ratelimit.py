"""amoCRM's request limits (FACTS.md 1.4), thread-safe.

* A rolling window (1 s) per integration per account: ``per_second`` (7)
  accepted requests; over it the request is refused with 429 (and not counted).
* A sustained storm blocks the account: more than ``storm_429s`` refusals
  within ``storm_window_s`` -> every request of the account gets 403 for
  ``block_seconds`` (FACTS 1.3/1.4: "account blocked for repeatedly exceeding
  the request rate"; the thresholds and duration are ours, switch
  ``block_on_storm``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["RateLimiter", "Decision"]


@dataclass
class Decision:
    """``verdict`` is None (go on), ``"429"`` or ``"403"``; ``retry_after`` in s."""

    verdict: str | None
    retry_after: float = 0.0


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[object, deque[float]] = {}
        self._refusals: dict[int, deque[float]] = {}
        self._blocked: dict[int, float] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._refusals.clear()
            self._blocked.clear()

    def blocked_until(self, account_id: int) -> float | None:
        with self._lock:
            until = self._blocked.get(account_id)
            return until if until and until > time.monotonic() else None

    def check(self, key: object, account_id: int, limit: int, window_s: float, *,
              block: bool, storm_429s: int, storm_window_s: float,
              block_seconds: float) -> Decision:
        """Count one request of ``key`` (integration, account) or refuse it."""
        now = time.monotonic()
        with self._lock:
            until = self._blocked.get(account_id)
            if until is not None:
                if until > now:
                    return Decision("403", until - now)
                del self._blocked[account_id]
            win = self._windows.setdefault(key, deque())
            while win and win[0] <= now - window_s:
                win.popleft()
            if len(win) < limit:
                win.append(now)
                return Decision(None)
            wait = max(win[0] + window_s - now, 0.0)
            if block:
                refusals = self._refusals.setdefault(account_id, deque())
                refusals.append(now)
                while refusals and refusals[0] <= now - storm_window_s:
                    refusals.popleft()
                if len(refusals) > storm_429s:
                    self._blocked[account_id] = now + block_seconds
                    refusals.clear()
                    return Decision("403", block_seconds)
            return Decision("429", wait)
