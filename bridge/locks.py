"""Per-conversation leases in Redis.

A job holds ``bridge:lock:<direction>:<conversation>`` while it drains the
conversation. The lease expires ``ttl`` seconds after the holder dies
(SIGKILL, OOM), so the sweeper's replacement job can take over; while the
holder lives, it is renewed every ``ttl/3`` (at most every 2 s) — and
re-created with the same token if Redis lost it (a wiped or restarted
Redis), so a live job keeps its conversation. If someone else holds it by
then, ``lost`` is set and the job stops before its next write.

One renewer thread per process renews every lease held in it (a thread
started and joined per lease cost ~0.25 ms of CPU, two leases a message).
A lease leaves it before it is released: a renewal in flight is waited for,
so none can re-create a lease after its release.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
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

    @property
    def interval(self) -> float:
        """Seconds between renewals: a third of the lease, at most 2 s."""
        return min(self.ttl_ms / 3000.0, 2.0)

    @contextmanager
    def keepalive(self) -> Iterator[ConversationLock]:
        _RENEWER.hold(self)
        try:
            yield self
        finally:
            _RENEWER.let_go(self)

    @staticmethod
    def is_held(connection: redis.Redis, name: str) -> bool:
        return bool(connection.exists(name))


class _Renewer:
    """Renews the leases held in this process from one thread: each is
    renewed ``interval`` seconds after its last renewal until it is let go
    or found lost. Started on first use in a process (a forked child starts
    its own)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: lease -> when it is renewed next (monotonic seconds)
        self._due: dict[ConversationLock, float] = {}
        #: the lease being renewed right now (outside the condition)
        self._renewing: ConversationLock | None = None
        self._pid = -1

    def hold(self, lock: ConversationLock) -> None:
        if self._pid != os.getpid():
            with _STARTING:
                if self._pid != os.getpid():
                    self._start()
        with self._cond:
            self._due[lock] = time.monotonic() + lock.interval
            self._cond.notify()

    def let_go(self, lock: ConversationLock) -> None:
        """``lock`` is renewed no more once this returns."""
        with self._cond:
            self._due.pop(lock, None)
            while self._renewing is lock:
                self._cond.wait()

    def _start(self) -> None:
        # a fresh condition: one inherited through fork may be held by a
        # thread that does not exist here
        self._cond = threading.Condition()
        self._due = {}
        self._renewing = None
        self._pid = os.getpid()
        threading.Thread(target=self._run, args=(self._cond,), name="leases", daemon=True).start()

    def _run(self, cond: threading.Condition) -> None:
        while True:
            lock = self._next(cond)
            try:
                if not lock.renew():
                    with cond:
                        self._due.pop(lock, None)
            finally:
                with cond:
                    self._renewing = None
                    cond.notify_all()

    def _next(self, cond: threading.Condition) -> ConversationLock:
        """Wait for the lease due first, mark it renewing, set its next turn."""
        with cond:
            while True:
                if not self._due:
                    cond.wait()
                    continue
                lock, at = min(self._due.items(), key=lambda item: item[1])
                delay = at - time.monotonic()
                if delay <= 0:
                    self._due[lock] = time.monotonic() + lock.interval
                    self._renewing = lock
                    return lock
                cond.wait(delay)


_STARTING = threading.Lock()
_RENEWER = _Renewer()
