"""Worker processes: an RQ worker (delivery queue first, then sync) with the
outbox sweeper in a background thread, or the sweeper alone."""

from __future__ import annotations

import logging
import signal
import threading

from rq import Worker

from bridge.config import Settings
from bridge.jobs import DELIVER_QUEUE, SYNC_QUEUE
from bridge.runtime import Runtime, set_runtime
from bridge.sweeper import Sweeper

__all__ = ["run_sweeper", "run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings, *, burst: bool = False, with_sweeper: bool = True) -> None:
    runtime = Runtime(settings)
    set_runtime(runtime)
    # RQ forks a work-horse per job. The sweeper thread gets a runtime of its
    # own (engine, Redis pool), so a fork can never copy a lock it holds
    # into the horse.
    sweeper = Sweeper(Runtime(settings, redis_connection=runtime.redis)) if with_sweeper else None
    if sweeper:
        sweeper.start()
    worker = Worker(
        [runtime.queues[DELIVER_QUEUE], runtime.queues[SYNC_QUEUE]],
        connection=runtime.redis,
        log_job_description=False,
    )
    try:
        worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
    finally:
        if sweeper:
            sweeper.stop()


def run_sweeper(settings: Settings) -> None:
    runtime = Runtime(settings)
    set_runtime(runtime)
    sweeper = Sweeper(runtime)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sweeper.start()
    log.info("sweeper running every %.1fs", settings.sweep_interval)
    stop.wait()
    sweeper.stop()
