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
the send needs has a token again (the client must obey it, FACTS.md 1). The
buckets are :class:`sandbox.core.ratelimit.TokenBucket`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..core.ratelimit import TokenBucket
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


class FloodControl:
    """Token buckets keyed by bot and chat, thread-safe."""

    def __init__(self, limits: FloodLimits | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or FloodLimits()
        self.buckets = TokenBucket(now)

    def reset(self) -> None:
        self.buckets.reset()

    def configure(self, limits: FloodLimits) -> None:
        with self.buckets.lock:
            self.limits = limits
            self.buckets.reset()

    def take(self, bot_id: int, chat_id: int) -> int | None:
        """Take a token for one message; ``None`` if allowed, else ``retry_after``."""
        with self.buckets.lock:
            limits = self.limits
            specs: list[tuple[Hashable, float | None, float]] = [
                (("chat", bot_id, chat_id), limits.per_chat_per_s, limits.per_chat_burst),
                (("bot", bot_id, 0), limits.per_bot_per_s, limits.per_bot_burst),
            ]
            if chat_id < 0 and limits.per_group_per_min:
                specs.append((("group", bot_id, chat_id), limits.per_group_per_min / 60.0,
                              limits.per_group_per_min))
            wait = self.buckets.take_all([(key, float(rate), max(1.0, float(capacity)))
                                          for key, rate, capacity in specs if rate])
            return retry_after_seconds(wait) if wait > 0 else None
