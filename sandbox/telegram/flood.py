"""Flood control: Telegram's message limits as token buckets.

Telegram Bot Support's guidance (FACTS.md 1 "Outbound"; telegra.ph
Hitting-limits-bot-FAQ, grammy.dev/advanced/flood): in one chat avoid more
than ~1 message per second (short bursts are tolerated, then 429), about 30
messages per second across all chats, and at most 20 messages per minute in a
group. "The exact limits are unspecified", so every number is configuration:

* ``per_chat_per_s`` / ``per_chat_burst``: one bucket per (bot, chat)
* ``per_bot_per_s`` / ``per_bot_burst``: one bucket per bot
* ``per_group_per_min``: an extra bucket per (bot, group chat) (negative ids)

A value of ``0`` or ``None`` for a rate switches that bucket off. A refused
send takes no tokens; ``retry_after`` is the whole seconds until every bucket
the send needs has a token again (the client must obey it, FACTS.md 1).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .errors import retry_after_seconds

__all__ = ["FloodLimits", "FloodControl"]


@dataclass
class FloodLimits:
    """The configurable numbers (see module docstring)."""

    per_chat_per_s: float | None = 1.0
    per_chat_burst: int = 3
    per_bot_per_s: float | None = 30.0
    per_bot_burst: int = 30
    per_group_per_min: float | None = 20.0


class _Bucket:
    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self) -> float:
        """Seconds until one token is available (0 when one is there now)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class FloodControl:
    """Thread-safe set of buckets keyed by bot and chat."""

    def __init__(self, limits: FloodLimits | None = None) -> None:
        self.limits = limits or FloodLimits()
        self._buckets: dict[tuple[str, int, int], _Bucket] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def configure(self, limits: FloodLimits) -> None:
        with self._lock:
            self.limits = limits
            self._buckets.clear()

    def _needed(self, bot_id: int, chat_id: int, now: float) -> list[_Bucket]:
        limits = self.limits
        specs: list[tuple[tuple[str, int, int], float | None, float]] = [
            (("chat", bot_id, chat_id), limits.per_chat_per_s, limits.per_chat_burst),
            (("bot", bot_id, 0), limits.per_bot_per_s, limits.per_bot_burst),
        ]
        if chat_id < 0 and limits.per_group_per_min:
            specs.append((("group", bot_id, chat_id), limits.per_group_per_min / 60.0,
                          limits.per_group_per_min))
        buckets = []
        for key, rate, capacity in specs:
            if not rate:
                continue
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(rate), max(1.0, float(capacity)), now)
            bucket.refill(now)
            buckets.append(bucket)
        return buckets

    def take(self, bot_id: int, chat_id: int, now: float | None = None) -> int | None:
        """Take a token for one message; ``None`` if allowed, else ``retry_after``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            buckets = self._needed(bot_id, chat_id, now)
            wait = max((b.wait() for b in buckets), default=0.0)
            if wait > 0:
                return retry_after_seconds(wait)
            for bucket in buckets:
                bucket.tokens -= 1
            return None
