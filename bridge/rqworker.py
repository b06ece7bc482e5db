"""The RQ worker the bridge runs: each job in the worker process itself.

RQ's default ``Worker`` forks a work-horse per job. For the bridge's jobs —
short, I/O-bound, holding ids only — the fork was most of the cost: the
horse of a ~180 MB interpreter pays the copy-on-write faults of everything
it touches, disposes of the pooled database and Redis connections it
inherited and opens new ones, builds new HTTP sessions, and is reaped; a
lone message (a normaliser job, then a sync job) cost ~200 ms of CPU, the
CRM write itself a few (``bench.sync_worker``, docs/benchmarks.md "Worker
path"). Here a job runs in the worker's main thread (RQ's
``SimpleWorker``), so the runtime — engines, pools, sessions, the imported
adapters — lives from one job to the next.

What the horse gave, and how it is kept:

* **Job timeouts**: RQ's death penalty (``SIGALRM`` in the main thread,
  ``UnixSignalDeathPenalty``) raises ``JobTimeoutException`` inside the job,
  as it did inside the horse; the job's transactions roll back, its
  conversation lease expires, the outbox keeps its work pending.
* **A killed worker**: a SIGKILL (OOM, the chaos soak) takes the job with
  the worker, as killing worker and horse together did. The job stays
  ``STARTED`` in RQ until its heartbeat lapses; the outbox sweeper re-drives
  the conversation once its lease expires (RELIABILITY.md 2.1: RQ is a hint,
  the outbox is the record). Nothing else changes: a SIGKILL of the horse
  alone, the one case the fork isolated, has no counterpart.
* **Warm and cold shutdown**: a first SIGTERM lets the job in hand finish; a
  second raises ``SystemExit`` in it (its work stays pending).
* **State between jobs**: jobs take ids and load what they need; what a
  process keeps between jobs (the adapters' bounded caches, the mapping
  store, connection pools) is what the web process keeps between requests.
"""

from __future__ import annotations

import time
from typing import Any

from redis.client import Pipeline
from rq import SimpleWorker

__all__ = ["InProcessWorker"]


class InProcessWorker(SimpleWorker):
    """RQ's ``SimpleWorker``: dequeue, run the job here, record the result.

    Its heartbeat TTL while a job runs is the job's timeout + 60 s (a job is
    never thought abandoned while it may still be running).

    Heartbeats: RQ sends one before and after each dequeue and after each
    job, each as three commands (three round trips). Here they go in one
    round trip, and one asked for within :attr:`HEARTBEAT_EVERY` of the last
    is left out — it would only move the worker key's expiry (minutes
    away) by that much; one with its own TTL (a job's) always goes."""

    #: seconds within which a repeated default heartbeat is left out
    HEARTBEAT_EVERY = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._beat_at = float("-inf")

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        now = time.monotonic()
        if timeout is None and now - self._beat_at < self.HEARTBEAT_EVERY:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            pipe.execute()
        self._beat_at = now
