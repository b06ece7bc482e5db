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

from collections.abc import Callable
from dataclasses import dataclass

from ..core.ratelimit import RollingWindow

__all__ = ["RateLimiter", "Decision"]


@dataclass
class Decision:
    """``verdict`` is None (go on), ``"429"`` or ``"403"``; ``retry_after`` in s."""

    verdict: str | None
    retry_after: float = 0.0


class RateLimiter:
    """The request window and the refusal log are :class:`RollingWindow` logs."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.requests = RollingWindow(now)
        self.refusals = RollingWindow(now)
        self._blocked: dict[int, float] = {}

    def reset(self) -> None:
        with self.requests.lock:
            self.requests.reset()
            self.refusals.reset()
            self._blocked.clear()

    def blocked_until(self, account_id: int) -> float | None:
        with self.requests.lock:
            until = self._blocked.get(account_id)
            return until if until and until > self.now() else None

    def check(self, key: object, account_id: int, limit: int, window_s: float, *,
              block: bool, storm_429s: int, storm_window_s: float,
              block_seconds: float) -> Decision:
        """Count one request of ``key`` (integration, account) or refuse it."""
        with self.requests.lock:
            now = self.now()
            until = self._blocked.get(account_id)
            if until is not None:
                if until > now:
                    return Decision("403", until - now)
                del self._blocked[account_id]
            if self.requests.admit(key, limit, window_s):
                return Decision(None)
            wait = self.requests.wait(key, window_s)
            if block:
                self.refusals.add(account_id)
                if self.refusals.used(account_id, storm_window_s) > storm_429s:
                    self._blocked[account_id] = now + block_seconds
                    self.refusals.reset_key(account_id)
                    return Decision("403", block_seconds)
            return Decision("429", wait)
