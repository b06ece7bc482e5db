"""Rate limiters the vendors' limits are built from, thread-safe, on a clock.

* :class:`RollingWindow` -- a log of accepted requests per key over the last
  ``span`` seconds (HubSpot's ten-secondly and search windows, amoCRM's
  7-per-second window). A request is admitted while fewer than ``limit`` are
  in the window; a refused one is not logged.
* :class:`TokenBucket` -- buckets per key that refill at ``rate`` per second
  up to ``capacity``; a request takes one token, or is refused (taking
  nothing) with the seconds until one is back. The same thing as a leaky
  bucket "as a meter": its level (``capacity - tokens``) rises by one per
  request and drains at ``rate``, and a request that would push it over
  ``capacity`` is refused (Bitrix24's X/Y request limit, Telegram's flood
  limits). Levels are kept, not tokens, so a changed capacity takes effect
  at once without forgetting what was used.

The vendor modules keep their limits' parameters, keys, headers and error
bodies; these classes only count. Both take ``now`` (a clock's ``now``;
``time.monotonic`` by default) and may be driven in one critical section by
holding :attr:`lock` (re-entrant) across several calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable

__all__ = ["RollingWindow", "TokenBucket"]


class RollingWindow:
    """Accepted-request logs per key (see the module docstring)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.lock = threading.RLock()
        self._logs: dict[Hashable, deque[float]] = {}

    def reset(self) -> None:
        with self.lock:
            self._logs.clear()

    def reset_key(self, key: Hashable) -> None:
        with self.lock:
            self._logs.pop(key, None)

    def _log(self, key: Hashable, span: float, now: float) -> deque[float]:
        log = self._logs.setdefault(key, deque())
        while log and log[0] <= now - span:
            log.popleft()
        return log

    def used(self, key: Hashable, span: float) -> int:
        """Requests of ``key`` in the window now."""
        with self.lock:
            return len(self._log(key, span, self.now()))

    def full(self, key: Hashable, limit: int, span: float) -> bool:
        with self.lock:
            return len(self._log(key, span, self.now())) >= limit

    def add(self, key: Hashable) -> None:
        """Log one accepted request (after :meth:`full` said there is room)."""
        with self.lock:
            self._logs.setdefault(key, deque()).append(self.now())

    def admit(self, key: Hashable, limit: int, span: float) -> bool:
        """Log one request unless the window is full; False when refused."""
        with self.lock:
            if self.full(key, limit, span):
                return False
            self.add(key)
            return True

    def wait(self, key: Hashable, span: float) -> float:
        """Seconds until the oldest logged request leaves the window (0: none)."""
        with self.lock:
            now = self.now()
            log = self._log(key, span, now)
            return max(log[0] + span - now, 0.0) if log else 0.0


class TokenBucket:
    """Token buckets (leaky-bucket meters) per key (see the module docstring)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.lock = threading.RLock()
        self._levels: dict[Hashable, tuple[float, float]] = {}  # key -> (level, at)

    def reset(self) -> None:
        with self.lock:
            self._levels.clear()

    def _drained(self, key: Hashable, rate: float, now: float) -> float:
        level, at = self._levels.get(key, (0.0, now))
        return max(0.0, level - rate * max(0.0, now - at))

    def take_all(self, specs: Iterable[tuple[Hashable, float, float]]) -> float:
        """Take one token from each ``(key, rate, capacity)`` bucket, all or none.

        Returns 0.0 when taken, else the seconds until every bucket has a
        token again (nothing is taken then)."""
        with self.lock:
            now = self.now()
            levels = [(key, rate, capacity, self._drained(key, rate, now))
                      for key, rate, capacity in specs]
            for key, _, _, level in levels:
                self._levels[key] = (level, now)
            wait = max((0.0 if level + 1.0 <= capacity else (level + 1.0 - capacity) / rate
                        for _, rate, capacity, level in levels), default=0.0)
            if wait > 0:
                return wait
            for key, _, _, level in levels:
                self._levels[key] = (level + 1.0, now)
            return 0.0

    def take(self, key: Hashable, rate: float, capacity: float) -> bool:
        """One bucket: True when a token was taken."""
        return self.take_all([(key, rate, capacity)]) == 0.0

    def level(self, key: Hashable, rate: float) -> float:
        """The bucket's level now (tokens used and not yet refilled)."""
        with self.lock:
            return self._drained(key, rate, self.now())

    def levels(self, rates: Callable[[Hashable], float]) -> dict[Hashable, float]:
        """Every known bucket's level, ``rates(key)`` giving each one's rate."""
        with self.lock:
            now = self.now()
            return {k: self._drained(k, rates(k), now) for k in self._levels}
