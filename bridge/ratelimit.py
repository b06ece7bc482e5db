"""A token bucket in Redis, shared by every worker of a CRM account.

One Lua script refills and takes tokens atomically using the Redis server's
clock (``TIME``), so any number of processes on any number of machines draw
from the same budget. A 429 with ``Retry-After`` empties the bucket and
blocks it for that long (``penalise``), so every worker backs off, not only
the one that was told.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from bridge import metrics
from bridge.model import Rate

__all__ = ["RedisTokenBucket"]

_TAKE = """
local key = KEYS[1]
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local blocked = tonumber(redis.call('GET', key .. ':blocked') or '0')
if blocked > t then
  return tostring(blocked - t)
end
local data = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(data[1]) or capacity
local ts = tonumber(data[2]) or t
tokens = math.min(capacity, tokens + math.max(0, t - ts) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
-- %.17g: Lua's tostring keeps 14 digits, 0.1 ms of an epoch time; each
-- call rounding ts down refilled a little extra, which many processes
-- hammering the bucket added up to whole tokens (tests/unit/test_ratelimit.py)
redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', t))
redis.call('PEXPIRE', key, math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""

_PENALISE = """
local key = KEYS[1]
local seconds = tonumber(ARGV[1])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local current = tonumber(redis.call('GET', key .. ':blocked') or '0')
local untill = t + seconds
if untill > current then
  local px = math.ceil(seconds * 1000) + 100
  redis.call('SET', key .. ':blocked', string.format('%.17g', untill), 'PX', px)
end
redis.call('HSET', key, 'tokens', '0', 'ts', string.format('%.17g', untill))
return 1
"""


class RedisTokenBucket:
    """``bridge.model.RateLimiter`` on Redis."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        prefix: str = "bridge:rl:",
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = 120.0,
    ) -> None:
        self.redis = connection
        self.prefix = prefix
        self.sleep = sleep
        self.max_wait = max_wait
        self._take = connection.register_script(_TAKE)
        self._penalise = connection.register_script(_PENALISE)
        #: seconds this process spent waiting for tokens (benchmarks read it)
        self.waited = 0.0

    def try_acquire(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if available: 0.0, else the seconds to wait.

        A refused attempt takes nothing, so waiting callers don't starve
        each other.
        """
        wait = float(
            self._take(keys=[self.prefix + key], args=[rate.capacity, rate.per_second, cost])
        )
        return wait

    def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> None:
        deadline = time.monotonic() + self.max_wait
        while True:
            wait = self.try_acquire(key, rate, cost)
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                from bridge.errors import RetryableError

                raise RetryableError("rate-limit budget exhausted for too long", retry_after=wait)
            self.waited += wait
            metrics.rate_limit_wait(self.redis, key, min(wait, 5.0))
            self.sleep(min(wait, 5.0))

    def penalise(self, key: str, seconds: float) -> None:
        self._penalise(keys=[self.prefix + key], args=[max(0.05, seconds)])
