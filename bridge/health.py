"""Health of the moving parts: the database, Redis, the workers.

``/healthz`` and ``/readyz`` (``bridge.api``) and ``bridge status`` ask the
same questions. A worker proves it is alive by a heartbeat key in Redis that
its sweeper process refreshes every few seconds (``beat``); the key expires
by itself when the worker dies, so a dead machine drops out of the count
without anyone cleaning up.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError, StatementError

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["HEARTBEAT_TTL", "Check", "Health", "beat", "check", "live_workers"]

#: a worker that has not beaten for this long counts as gone
HEARTBEAT_TTL = 30
_PREFIX = "bridge:heartbeat:"


def beat(connection: redis.Redis, worker_pid: int) -> None:
    """Record that the worker ``worker_pid`` on this host is alive."""
    key = f"{_PREFIX}{socket.gethostname()}:{worker_pid}"
    connection.set(key, str(int(time.time())), ex=HEARTBEAT_TTL)


def live_workers(connection: redis.Redis) -> int:
    """How many workers beat within the last ``HEARTBEAT_TTL`` seconds."""
    return sum(1 for _ in connection.scan_iter(match=f"{_PREFIX}*", count=100))


@dataclass
class Check:
    ok: bool
    detail: str = ""


@dataclass
class Health:
    database: Check
    redis: Check
    workers: Check
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Can take webhooks: what arrives is stored and queued."""
        return self.database.ok and self.redis.ok

    @property
    def healthy(self) -> bool:
        """Ready, and somebody works the queues."""
        return self.ready and self.workers.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.healthy,
            "ready": self.ready,
            "checks": {
                name: {"ok": c.ok, "detail": c.detail}
                for name, c in (
                    ("database", self.database),
                    ("redis", self.redis),
                    ("workers", self.workers),
                )
            },
            **self.extra,
        }


def _database(runtime: Runtime) -> Check:
    try:
        with runtime.read_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            if not inspect(conn).has_table("alembic_version"):
                return Check(False, "no schema: run `bridge db upgrade`")
    except SQLAlchemyError as exc:
        # the driver's error names the cause; only a statement's error has one
        cause = exc.orig if isinstance(exc, StatementError) else None
        return Check(False, f"unreachable ({type(cause or exc).__name__})")
    return Check(True, runtime.engine.dialect.name)


def _redis(runtime: Runtime) -> Check:
    try:
        runtime.redis.ping()
    except (redis.RedisError, OSError) as exc:
        return Check(False, f"unreachable ({type(exc).__name__})")
    return Check(True)


def _workers(runtime: Runtime, redis_ok: bool) -> Check:
    if not redis_ok:
        return Check(False, "unknown: Redis is unreachable")
    try:
        n = live_workers(runtime.redis)
    except (redis.RedisError, OSError) as exc:
        return Check(False, f"unknown ({type(exc).__name__})")
    if n == 0:
        return Check(False, "no worker has reported in the last 30 s: start `bridge worker`")
    return Check(True, f"{n} alive")


def check(runtime: Runtime, *, workers: bool = True) -> Health:
    """Ask the database, Redis and (unless ``workers=False``) the workers."""
    database = _database(runtime)
    cache = _redis(runtime)
    if workers:
        worker_check = _workers(runtime, cache.ok)
    else:
        worker_check = Check(True, "not checked")
    return Health(database, cache, worker_check)
