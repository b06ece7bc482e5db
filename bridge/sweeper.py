"""The sweeper: re-create jobs the outbox says are due but nobody runs.

RQ is a hint that can be lost: a Redis without AOF loses every queued job on
a crash, and a SIGKILLed worker's job is abandoned or, without Retry, moved
to the failed registry and never run again (RELIABILITY.md 2.1-2.2). Every
``sweep_interval`` the sweeper (one at a time across all workers, by a Redis
lease) looks at outbox rows that are ``pending``, due (``not_before`` passed)
and were enqueued more than ``sweep_grace`` ago, and re-enqueues each one
whose conversation lease is free and whose last job is not waiting in a
queue. Recovery after a kill is therefore bounded by
``lock_ttl + sweep_interval + sweep_grace``.

It also wakes the ingest journal's normaliser for deliveries left ``new``
longer than ``journal_grace`` (a lost wake-up), and once an hour drops the
raw bodies retention no longer keeps.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
from rq.job import Job, JobStatus
from sqlalchemy import bindparam, or_, select

from bridge import cascade, files, live_fields, metrics, outbox, silence
from bridge.jobs import enqueue
from bridge.locks import ConversationLock, lock_name
from bridge.model import utcnow
from bridge.pipeline.inbound.journal import drop_old_bodies, sweep_journal
from bridge.pipeline.outbound.unread import forward_unread
from bridge.service import runner as service_runner
from bridge.tables import Outbox, OutboxState

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["Sweeper", "sweep_once"]

log = logging.getLogger(__name__)

WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


#: built once: the sweeper runs it every ``sweep_interval`` on every worker
_DUE = (
    select(Outbox.id, Outbox.conversation_id, Outbox.direction, Outbox.last_job_id)
    .where(
        Outbox.state == OutboxState.PENDING,
        or_(Outbox.not_before.is_(None), Outbox.not_before <= bindparam("now")),
        or_(Outbox.enqueued_at.is_(None), Outbox.enqueued_at <= bindparam("stale")),
    )
    .order_by(Outbox.enqueued_at)
    .limit(bindparam("limit"))
)
_WAITING_VALUES = {status.value for status in WAITING}


def _unattended(runtime: Runtime, rows: Sequence[Any]) -> list[Any]:
    """The rows whose conversation lease is free and whose last job is not
    waiting in a queue: two Redis reads per row, in one round trip."""
    if not rows:
        return []
    try:
        with runtime.redis.pipeline(transaction=False) as pipe:
            for r in rows:
                pipe.exists(lock_name(r.direction, r.conversation_id))
                if r.last_job_id:
                    pipe.hget(Job.key_for(r.last_job_id), "status")
                else:
                    pipe.echo(b"")
            answers = pipe.execute()
    except (redis.RedisError, OSError):
        return []  # Redis away: nothing can be enqueued anyway
    out = []
    for i, r in enumerate(rows):
        held, status = answers[2 * i], answers[2 * i + 1]
        if held:
            continue
        if isinstance(status, bytes):
            status = status.decode()
        if status in _WAITING_VALUES:
            continue
        out.append(r)
    return out


def sweep_once(runtime: Runtime, *, limit: int = 500) -> int:
    """One pass; returns how many conversations were re-enqueued (the
    journal's stale accounts are woken first)."""
    woken = sweep_journal(runtime)
    settings = runtime.settings
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.sweep_grace)
    # a read (no write lock): each candidate is checked again under its
    # row lock below before anything is enqueued
    with runtime.read_engine.connect() as conn:
        rows = list(conn.execute(_DUE, {"now": now, "stale": stale, "limit": limit}))
    due = _unattended(runtime, rows)
    jobs: list[tuple[str, int, str]] = []
    if due:
        with runtime.transaction() as session:
            for r in due:
                row = session.get(Outbox, r.id, with_for_update=True)
                if (
                    row is None
                    or row.state != OutboxState.PENDING
                    or row.last_job_id != r.last_job_id
                ):
                    continue
                row.sweeps += 1
                row.enqueued_at = now
                row.not_before = None
                row.last_job_id = outbox.job_id(
                    r.direction, r.conversation_id, row.version, row.sweeps
                )
                jobs.append((r.direction, r.conversation_id, row.last_job_id))
    for direction, conversation_id, job_id in jobs:
        enqueue(runtime.queues, direction, conversation_id, job_id, timeout=settings.job_timeout)
    if jobs:
        log.info("sweeper re-enqueued %d conversation(s)", len(jobs))
    metrics.requeued(runtime.redis, ["journal"] * woken + [direction for direction, _, _ in jobs])
    return len(jobs)


class Sweeper:
    """A background thread running ``sweep_once`` every ``sweep_interval``;
    a Redis lease makes sure only one process sweeps at a time."""

    LEASE = "bridge:sweeper"
    #: how often (s) the journal's retention runs
    RETENTION_EVERY = 3600.0

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retention_at = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bridge-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = self.runtime.settings.sweep_interval
        while not self._stop.wait(interval):
            try:
                lease = ConversationLock(self.runtime.redis, self.LEASE, ttl=max(interval * 3, 5))
                if not lease.acquire():
                    continue
                try:
                    sweep_once(self.runtime)
                    forwarded = forward_unread(self.runtime)
                    if forwarded:
                        log.info("%d unread replies sent on to the people's addresses", forwarded)
                    cascade.sweep(self.runtime)
                    live_fields.sweep(self.runtime)
                    service_runner.sweep(self.runtime)
                    silence.sweep(self.runtime)
                    if time.monotonic() >= self._retention_at:
                        self._retention_at = time.monotonic() + self.RETENTION_EVERY
                        dropped = drop_old_bodies(self.runtime)
                        if dropped:
                            log.info("journal retention dropped %d raw bodies", dropped)
                        dropped = files.drop_old(self.runtime)
                        if dropped:
                            log.info("file retention dropped %d files' bytes", dropped)
                finally:
                    lease.release()
            except Exception:  # noqa: BLE001 — the sweeper must outlive a bad pass
                log.exception("sweeper pass failed; next pass in %.0fs", interval)
