"""RQ entry points and enqueueing.

Jobs are module-level functions that take ids, never payloads (RQ keeps a
failed job's arguments for a year: no personal data may sit there). They
are hints: the outbox says what is pending, and the sweeper re-creates a job
that vanished. One side effect per job: a conversation's CRM sync, its
replies' delivery, the channel's acknowledgements of its events, the CRM's
delivery reports of its replies — each its own outbox work. (The
normaliser's own work is the database's; a lone message's sync may follow
it in the same job, :func:`normalise_account`: still one side effect.)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import redis
from rq import Queue

from bridge.outbox import ACK, IN, OUT, REPORT, SERVICE

__all__ = [
    "DELIVER_QUEUE",
    "INGEST_QUEUE",
    "QUEUES",
    "SYNC_QUEUE",
    "acknowledge_conversation",
    "deliver_conversation",
    "enqueue",
    "enqueue_normaliser",
    "enqueue_task",
    "normalise_account",
    "report_conversation",
    "service_conversation",
    "sync_conversation",
]

log = logging.getLogger(__name__)

SYNC_QUEUE = "bridge-sync"
DELIVER_QUEUE = "bridge-deliver"
#: the journal's normaliser: short jobs everything inbound waits on
INGEST_QUEUE = "bridge-ingest"
#: what a worker listens to, in priority order
QUEUES = (INGEST_QUEUE, DELIVER_QUEUE, SYNC_QUEUE)


def normalise_account(account_id: int) -> str:
    """Parse a channel account's journaled deliveries into the model.

    A lone message (the run's only work was one conversation's sync) is
    synced by this job itself once the normaliser let the account go,
    unless work of a queue the workers take first (ingest, deliveries) is
    waiting: one job instead of two, the sync a queue hop sooner. The sync
    keeps its own lease, outbox row and job id; any other sync job is
    enqueued as usual.
    """
    from bridge.pipeline.inbound.journal import run_normaliser
    from bridge.runtime import get_runtime

    runtime = get_runtime()
    handoff: list[tuple[str, int, str]] = []
    outcome = run_normaliser(runtime, account_id, handoff=handoff)
    for direction, conversation_id, job_id in handoff:
        if _ahead_waiting(runtime.queues):
            enqueue(
                runtime.queues,
                direction,
                conversation_id,
                job_id,
                timeout=runtime.settings.job_timeout,
            )
            continue
        _, run = JOBS[direction]
        outcome = f"{outcome}; {job_id}: {run(conversation_id)}"
    return outcome


def _ahead_waiting(queues: dict[str, Queue]) -> bool:
    """A job waits in a queue workers take before sync (or Redis is away:
    then the sync job is enqueued, or left to the sweeper, as usual)."""
    try:
        with queues[INGEST_QUEUE].connection.pipeline(transaction=False) as pipe:
            for name in QUEUES[: QUEUES.index(SYNC_QUEUE)]:
                pipe.llen(queues[name].key)
            return any(int(n) for n in pipe.execute())
    except (redis.RedisError, OSError):
        return True


def sync_conversation(conversation_id: int) -> str:
    """Drain a conversation's inbound messages into the CRM, in order."""
    from bridge.pipeline.inbound import run_inbound
    from bridge.runtime import get_runtime

    return run_inbound(get_runtime(), conversation_id)


def deliver_conversation(conversation_id: int) -> str:
    """Send a conversation's pending replies through its channel, in order."""
    from bridge.pipeline.outbound import run_outbound
    from bridge.runtime import get_runtime

    return run_outbound(get_runtime(), conversation_id)


def acknowledge_conversation(conversation_id: int) -> str:
    """Tell the channel its events (button presses) were handled."""
    from bridge.pipeline.inbound import run_acknowledgements
    from bridge.runtime import get_runtime

    return run_acknowledgements(get_runtime(), conversation_id)


def report_conversation(conversation_id: int) -> str:
    """Tell the CRM what happened to the conversation's replies."""
    from bridge.pipeline.outbound import run_reports
    from bridge.runtime import get_runtime

    return run_reports(get_runtime(), conversation_id)


def service_conversation(conversation_id: int) -> str:
    """The service layer's pass over the conversation's new client messages."""
    from bridge.runtime import get_runtime
    from bridge.service.runner import run_service

    return run_service(get_runtime(), conversation_id)


#: direction -> (queue, job). Workers take the delivery queue first: the
#: replies, and the two short follow-ups people watch for (the customer's
#: spinner, the rep's "sent" mark), which would otherwise wait behind a
#: backlog of inbound sync (15-45 s in the chaos run)
JOBS: dict[str, tuple[str, Callable[[int], str]]] = {
    IN: (SYNC_QUEUE, sync_conversation),
    OUT: (DELIVER_QUEUE, deliver_conversation),
    ACK: (DELIVER_QUEUE, acknowledge_conversation),
    REPORT: (DELIVER_QUEUE, report_conversation),
    SERVICE: (DELIVER_QUEUE, service_conversation),
}


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
    queue_name, func = JOBS[direction]
    try:
        queues[queue_name].enqueue(
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


def enqueue_task(
    queues: dict[str, Queue],
    func: Callable[[int], str],
    row_id: int,
    prefix: str,
    *,
    timeout: int = 600,
) -> bool:
    """Enqueue a follow-up task on one row (a cascade's note, a contact's
    live fields, a service action) on the delivery queue; False (and a log
    line) if Redis is away — the row stays due and the sweeper enqueues it
    again."""
    job_id = f"{prefix}-{row_id}-{uuid.uuid4().hex[:8]}"
    try:
        queues[DELIVER_QUEUE].enqueue(
            func,
            row_id,
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


def enqueue_normaliser(queues: dict[str, Queue], account_id: int, *, timeout: int = 600) -> bool:
    """Enqueue the account's normaliser; False (and a log line) if Redis is
    away — the journal rows stay ``new`` and the sweeper wakes it later."""
    job_id = f"normalise-{account_id}-{uuid.uuid4().hex[:12]}"
    try:
        queues[INGEST_QUEUE].enqueue(
            normalise_account,
            account_id,
            job_id=job_id,
            job_timeout=timeout,
            result_ttl=60,
            failure_ttl=7 * 24 * 3600,
            description=job_id,
        )
    except (redis.RedisError, OSError) as exc:
        log.warning("enqueue %s failed (%s); the sweeper will retry", job_id, type(exc).__name__)
        return False
    return True
