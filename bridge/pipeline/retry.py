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
import time
from collections.abc import Callable
from dataclasses import replace
from typing import ParamSpec, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from bridge.config import Settings
from bridge.errors import AmbiguousError, PartlySentError, RetryableError
from bridge.model import OutboundMessage, SendResult, utcnow

__all__ = [
    "backoff_until",
    "call_with_retries",
    "retry_delay",
    "send_with_retries",
]

P = ParamSpec("P")
T = TypeVar("T")


def retry_delay(settings: Settings, attempt: int, error: BaseException | None) -> float:
    """Seconds before retry number ``attempt`` (1-based): the far side's
    ``retry_after`` when it gave one, else exponential backoff with jitter,
    capped by ``retry_max_wait``."""
    hint = error.retry_after if isinstance(error, RetryableError) else None
    if hint is not None:
        return min(settings.retry_max_wait, max(float(hint), 0.05))
    backoff = min(settings.retry_max_wait, 0.5 * 2.0 ** (attempt - 1))
    return backoff * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not crypto)


def hinted(error: BaseException | None) -> bool:
    """The far side said how long to wait (a 429's ``Retry-After``)."""
    return isinstance(error, RetryableError) and error.retry_after is not None


def wait_for(settings: Settings) -> Callable[[RetryCallState], float]:
    """tenacity's wait: the far side's hint, else backoff doubling with each
    failure that came without one. A hinted refusal (a 429: nothing ran)
    says nothing about the far side's health, so it does not lengthen the
    backoff of a 5xx after it."""
    unhinted = 0

    def wait(state: RetryCallState) -> float:
        nonlocal unhinted
        exc = state.outcome.exception() if state.outcome else None
        if not hinted(exc):
            unhinted += 1
        return retry_delay(settings, max(unhinted, 1), exc)

    return wait


def call_with_retries(
    settings: Settings, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Call ``fn``, retrying RetryableError (honouring ``retry_after``) up to
    ``settings.retry_attempts`` times; the last error propagates."""
    retrying = Retrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(max(1, settings.retry_attempts)),
        wait=wait_for(settings),
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)


def doubling_pause(attempts: int, cap: dt.timedelta) -> dt.timedelta:
    """A row's next try after ``attempts`` failed ones: 1, 2, 4 … minutes,
    at most ``cap`` (a cascade's note, a service action)."""
    return min(cap, dt.timedelta(minutes=2 ** max(0, attempts - 1)))


def backoff_until(settings: Settings, error: RetryableError) -> dt.datetime:
    delay = max(settings.retry_max_wait, float(error.retry_after or 0.0))
    return utcnow() + dt.timedelta(seconds=delay)


def send_with_retries(
    settings: Settings,
    send: Callable[[OutboundMessage], SendResult],
    message: OutboundMessage,
    *,
    resend_ambiguous: bool = False,
    on_partial: Callable[[PartlySentError], None] | None = None,
) -> SendResult:
    """Send ``message`` with in-job retries. A reply refused part-way
    (``PartlySentError``) goes on from the first part not sent, after the
    channel's ``retry_after``; ``on_partial`` records the parts sent first,
    so no later attempt sends them again. An ``AmbiguousError`` (it may have
    gone out) is never repeated, unless ``resend_ambiguous`` (the receiver
    drops repeats by the delivery's id)."""
    attempt = unhinted = 0
    while True:
        try:
            return send(message)
        except PartlySentError as exc:
            if on_partial is not None:
                on_partial(exc)
            message = replace(
                message,
                sent_parts=exc.sent_ids,
                external_thread_id=exc.new_thread_id or message.external_thread_id,
            )
            error: RetryableError = exc
        except AmbiguousError as exc:
            if not resend_ambiguous:
                raise
            error = exc
        except RetryableError as exc:
            error = exc
        attempt += 1
        if attempt >= max(1, settings.retry_attempts):
            raise error
        unhinted += 0 if hinted(error) else 1
        time.sleep(retry_delay(settings, max(unhinted, 1), error))
