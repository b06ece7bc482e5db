"""What the inbound and outbound jobs share: the lease + drain loop, retries
inside the job, and how an outcome lands in the outbox.

Retries stay inside the job (tenacity), never as a delayed RQ retry, so a
failing message cannot be overtaken by the ones behind it (RELIABILITY.md
2.1: a delayed RQ retry always let later messages overtake). When the budget
is spent on a transient error, the conversation backs off as a whole: the
outbox row stays pending with ``not_before`` and the sweeper resumes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from bridge import outbox
from bridge.config import Settings
from bridge.errors import RetryableError
from bridge.locks import ConversationLock, lock_name
from bridge.model import utcnow

__all__ = ["Drained", "Parked", "call_with_retries", "run_drain"]

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def retry_delay(settings: Settings, attempt: int, error: BaseException | None) -> float:
    """Seconds before retry number ``attempt`` (1-based): the far side's
    ``retry_after`` when it gave one, else exponential backoff with jitter,
    capped by ``retry_max_wait``."""
    hint = getattr(error, "retry_after", None)
    if hint is not None:
        return min(settings.retry_max_wait, max(float(hint), 0.05))
    backoff = min(settings.retry_max_wait, 0.5 * 2 ** (attempt - 1))
    return backoff * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not crypto)


def _wait(settings: Settings) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return retry_delay(settings, state.attempt_number, exc)

    return wait


def call_with_retries(settings: Settings, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``, retrying RetryableError (honouring ``retry_after``) up to
    ``settings.retry_attempts`` times; the last error propagates."""
    retrying = Retrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(max(1, settings.retry_attempts)),
        wait=_wait(settings),
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)


def backoff_until(settings: Settings, error: RetryableError) -> dt.datetime:
    delay = max(settings.retry_max_wait, float(error.retry_after or 0.0))
    return utcnow() + dt.timedelta(seconds=delay)


def run_drain(
    runtime,  # type: ignore[no-untyped-def]
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
    last_drained: int | None = None
    try:
        with lock.keepalive():
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
    finally:
        lock.release()
