"""The in-job retry's waits (``bridge.pipeline.retry``): the far side's hint
when it gave one, else backoff doubling with each failure that came without
one — a 429 (refused at the door, its own ``Retry-After``) does not lengthen
the backoff of a 5xx after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bridge.config import Settings
from bridge.errors import AmbiguousError, RetryableError
from bridge.model import OutboundMessage
from bridge.pipeline import retry


@dataclass
class _Outcome:
    error: BaseException

    def exception(self) -> BaseException:
        return self.error


@dataclass
class _State:
    attempt_number: int
    outcome: _Outcome


def rate_limited() -> RetryableError:
    return RetryableError("HTTP 429", retry_after=1.0, status=429)


def server_error() -> AmbiguousError:
    return AmbiguousError("HTTP 503 on POST", status=503)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(retry.random, "random", lambda: 0.0)  # jitter: half the backoff
    return Settings()


def test_a_hint_is_the_wait_and_does_not_count_as_backoff(settings: Settings) -> None:
    wait = retry.wait_for(settings)
    errors = [rate_limited(), server_error(), rate_limited(), server_error(), server_error()]
    waits = [wait(_State(n, _Outcome(e))) for n, e in enumerate(errors, start=1)]  # type: ignore[arg-type]
    # 429: its Retry-After; the first 5xx: the first backoff (0.5 s, half by the
    # jitter), not the second's; then 1.0 s, 2.0 s as the 5xx repeat
    assert waits == [1.0, 0.25, 1.0, 0.5, 1.0]


def test_each_retrying_call_counts_its_own_failures(settings: Settings) -> None:
    first, second = retry.wait_for(settings), retry.wait_for(settings)
    assert first(_State(1, _Outcome(server_error()))) == 0.25  # type: ignore[arg-type]
    assert first(_State(2, _Outcome(server_error()))) == 0.5  # type: ignore[arg-type]
    assert second(_State(1, _Outcome(server_error()))) == 0.25  # type: ignore[arg-type]


def test_call_with_retries_sleeps_the_hint_then_the_first_backoff(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", slept.append)
    errors: list[BaseException] = [rate_limited(), server_error()]

    def call() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    assert retry.call_with_retries(settings, call) == "ok"
    assert slept == [1.0, 0.25]


def test_send_with_retries_counts_the_same_way(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    errors: list[BaseException] = [rate_limited(), RetryableError("HTTP 502", status=502)]

    def send(message: Any) -> Any:
        if errors:
            raise errors.pop(0)
        return "sent"

    message: OutboundMessage = object()  # type: ignore[assignment]
    assert retry.send_with_retries(settings, send, message) == "sent"
    assert slept == [1.0, 0.25]
