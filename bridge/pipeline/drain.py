"""What every job shares: the conversation's lease and the drain loop.

A job drains one conversation's work of one kind (its outbox row for that
direction) under the conversation's lease, calling its ``drain_once`` until
nothing is left at a version nobody bumped meanwhile, or it parks or backs
off (retries: :mod:`bridge.pipeline.retry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge import outbox
from bridge.locks import ConversationLock, lock_name

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["Drained", "LeaseLost", "Parked", "drain_held", "run_drain"]

log = logging.getLogger(__name__)


@dataclass
class Drained:
    """Nothing left to do as of ``version``."""

    version: int


@dataclass
class Parked:
    """Stop here: the outbox row is parked or backing off (already recorded)."""

    outcome: str


class LeaseLost(Exception):
    """Another job owns the conversation now: stop before the next write."""


def run_drain(
    runtime: Runtime,
    direction: str,
    conversation_id: int,
    drain_once: Callable[[ConversationLock], Drained | Parked | None],
) -> str:
    """Hold the conversation's lease and call ``drain_once`` until it reports
    the conversation drained at a version nobody bumped meanwhile.

    ``drain_once`` returns ``None`` to be called again (more work may be
    left), ``Drained(version)`` when it found nothing to do, or ``Parked``.
    """
    lock = ConversationLock(
        runtime.redis, lock_name(direction, conversation_id), runtime.settings.lock_ttl
    )
    if not lock.acquire():
        # Someone is draining it; they will see our version bump.
        return "busy"
    try:
        with lock.keepalive():
            return drain_held(runtime, direction, conversation_id, lock, drain_once)
    finally:
        lock.release()


def drain_held(
    runtime: Runtime,
    direction: str,
    conversation_id: int,
    lock: ConversationLock,
    drain_once: Callable[[ConversationLock], Drained | Parked | None],
) -> str:
    """:func:`run_drain`'s loop for a lease the caller already holds (and
    keeps alive, and releases): a job that took over other conversations'
    leases (opening them together) drains them to the end, as their own
    jobs, which found them busy, would have."""
    last_drained: int | None = None
    while True:
        if lock.lost.is_set():
            return "lease-lost"
        try:
            result = drain_once(lock)
        except LeaseLost:
            return "lease-lost"
        if isinstance(result, Parked):
            return result.outcome
        if isinstance(result, Drained):
            with runtime.transaction() as session:
                if outbox.mark_idle(session, conversation_id, direction, result.version):
                    return "idle"
            if result.version == last_drained:
                # Nothing to do and nothing changed: never spin.
                log.warning(
                    "conversation %s: outbox not idle-able; leaving it to the sweeper",
                    conversation_id,
                )
                return "stale"
            last_drained = result.version
