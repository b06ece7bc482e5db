"""RQ entry points and enqueueing.

Jobs are module-level functions that take ids, never payloads (RQ keeps a
failed job's arguments for a year: no personal data may sit there). They
are hints: the outbox says what is pending, and the sweeper re-creates a job
that vanished.
"""

from __future__ import annotations

import logging

import redis
from rq import Queue

from bridge.outbox import IN

__all__ = ["DELIVER_QUEUE", "SYNC_QUEUE", "deliver_conversation", "enqueue", "sync_conversation"]

log = logging.getLogger(__name__)

SYNC_QUEUE = "bridge-sync"
DELIVER_QUEUE = "bridge-deliver"


def sync_conversation(conversation_id: int) -> str:
    """Drain a conversation's inbound messages into the CRM, in order."""
    from bridge.runtime import get_runtime
    from bridge.sync import run_inbound

    return run_inbound(get_runtime(), conversation_id)


def deliver_conversation(conversation_id: int) -> str:
    """Send a conversation's pending replies through its channel, in order."""
    from bridge.delivery import run_outbound
    from bridge.runtime import get_runtime

    return run_outbound(get_runtime(), conversation_id)


def enqueue(
    queues: dict[str, Queue],
    direction: str,
    conversation_id: int,
    job_id: str,
    *,
    timeout: int = 600,
) -> bool:
    """Enqueue a unit of work; False (and a log line) if Redis is away —
    the outbox row stays pending and the sweeper will enqueue it later."""
    if direction == IN:
        queue, func = queues[SYNC_QUEUE], sync_conversation
    else:
        queue, func = queues[DELIVER_QUEUE], deliver_conversation
    try:
        queue.enqueue(
            func,
            conversation_id,
            job_id=job_id,
            job_timeout=timeout,
            result_ttl=300,
            failure_ttl=7 * 24 * 3600,
            description=job_id,
        )
    except (redis.RedisError, OSError) as exc:
        log.warning("enqueue %s failed (%s); the sweeper will retry", job_id, type(exc).__name__)
        return False
    return True
