"""Per-conversation leases in Redis.

A job holds ``bridge:lock:<direction>:<conversation>`` while it drains the
conversation. The lease expires ``ttl`` seconds after the holder dies
(SIGKILL, OOM), so the sweeper's replacement job can take over; while the
holder lives, a keepalive thread renews it every ``ttl/3`` (at most every
2 s) — and re-creates it with the same token if Redis lost it (a wiped or
restarted Redis), so a live job keeps its conversation. If someone else
holds it by then, ``lost`` is set and the job stops before its next write.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

__all__ = ["ConversationLock", "lock_name"]

_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lock_name(direction: str, conversation_id: int) -> str:
    return f"bridge:lock:{direction}:{conversation_id}"


class ConversationLock:
    def __init__(self, connection: redis.Redis, name: str, ttl: float) -> None:
        self.redis = connection
        self.name = name
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.token = secrets.token_hex(16)
        self.lost = threading.Event()
        self._renew = connection.register_script(_RENEW)
        self._release = connection.register_script(_RELEASE)

    def acquire(self) -> bool:
        return bool(self.redis.set(self.name, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        try:
            ok = int(self._renew(keys=[self.name], args=[self.token, self.ttl_ms])) > 0
        except (redis.RedisError, OSError):
            return True  # Redis briefly away: keep working, try again next tick
        if not ok:
            self.lost.set()
        return ok

    def release(self) -> None:
        try:
            self._release(keys=[self.name], args=[self.token])
        except (redis.RedisError, OSError):
            pass

    @contextmanager
    def keepalive(self) -> Iterator[ConversationLock]:
        stop = threading.Event()
        interval = min(self.ttl_ms / 3000.0, 2.0)

        def loop() -> None:
            while not stop.wait(interval):
                if not self.renew():
                    return

        thread = threading.Thread(target=loop, name=f"lease:{self.name}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)

    @staticmethod
    def is_held(connection: redis.Redis, name: str) -> bool:
        return bool(connection.exists(name))
