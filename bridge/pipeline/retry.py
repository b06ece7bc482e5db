"""Retries, in one place: how long to wait before the next attempt, the
in-job retry of one call, and when a conversation backs off as a whole.

Retries stay inside the job (tenacity), never as a delayed RQ retry, so a
failing message cannot be overtaken by the ones behind it (RELIABILITY.md
2.1: a delayed RQ retry always let later messages overtake). When the budget
is spent on a transient error, the conversation backs off as a whole: its
outbox row stays pending with ``not_before`` and the sweeper resumes it. The
far side's own hint (``retry_after``: a 429's ``Retry-After``, Telegram's
``parameters.retry_after``) always wins over the backoff.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
)

from bridge.config import Settings
from bridge.errors import AmbiguousError, RetryableError
from bridge.model import utcnow

__all__ = [
    "backoff_until",
    "call_with_retries",
    "retry_delay",
    "send_with_retries",
]

T = TypeVar("T")


def retry_delay(settings: Settings, attempt: int, error: BaseException | None) -> float:
    """Seconds before retry number ``attempt`` (1-based): the far side's
    ``retry_after`` when it gave one, else exponential backoff with jitter,
    capped by ``retry_max_wait``."""
    hint = getattr(error, "retry_after", None)
    if hint is not None:
        return min(settings.retry_max_wait, max(float(hint), 0.05))
    backoff = min(settings.retry_max_wait, 0.5 * 2 ** (attempt - 1))
    return backoff * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not crypto)


def wait_for(settings: Settings) -> Callable[[RetryCallState], float]:
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
        wait=wait_for(settings),
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)


def backoff_until(settings: Settings, error: RetryableError) -> dt.datetime:
    delay = max(settings.retry_max_wait, float(error.retry_after or 0.0))
    return utcnow() + dt.timedelta(seconds=delay)


def _sendable(exc: BaseException) -> bool:
    # Never repeat a send that may have gone out.
    return isinstance(exc, RetryableError) and not isinstance(exc, AmbiguousError)


def send_with_retries(settings: Settings, fn: Callable[..., T], *args: Any) -> T:
    """Like :func:`call_with_retries` for a send to a customer: an
    ``AmbiguousError`` (it may have gone out) is never repeated here."""
    retrying = Retrying(
        retry=retry_if_exception(_sendable),
        stop=stop_after_attempt(max(1, settings.retry_attempts)),
        wait=wait_for(settings),
        reraise=True,
    )
    return retrying(fn, *args)
