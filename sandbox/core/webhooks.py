"""Outbound webhooks: what every sandbox fires at the bridge, and its record.

* :func:`send` -- one HTTP request to a receiver, never raising: an
  :class:`Outcome` with the status (``None``: no answer), the answer's text,
  headers and reason, the duration, and on failure ``error`` plus
  ``error_kind`` (``"timeout"``, ``"refused"``, ``"connect"``, ``"other"``).
  The vendor builds the body and headers (signatures, encodings) and words
  its own record from the outcome.
* :class:`DeliveryLog` -- the bounded record of deliveries ``GET /_state``
  shows (newest last, optionally numbered).
* Retry policies: :class:`RetrySchedule` (a table of delays by attempt and
  answer, amoCRM's account webhooks) and :class:`Backoff` (a doubling delay
  or the receiver's ``Retry-After``, capped; Telegram's redelivery). ``delay``
  answers the seconds before the next attempt, or ``None``: give up.
* :class:`Dispatcher` -- first attempts on worker threads (after the API
  answer, as the vendors' queue servers do) or synchronously (control
  endpoints), and a scheduler thread running retries when due on the
  sandbox clock (a moved clock is noticed within a second); ``flush()`` runs
  every scheduled retry at once (tests, the demo).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

__all__ = [
    "Outcome",
    "send",
    "DeliveryLog",
    "RetrySchedule",
    "Backoff",
    "Job",
    "Dispatcher",
]


@dataclass
class Outcome:
    """What one request to a receiver came to."""

    url: str
    status: int | None
    text: str | None = None
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # "<ExceptionType>: <message>" when no answer came
    error_kind: str | None = None  # "timeout" | "refused" | "connect" | "other"
    duration_ms: float = 0.0

    @property
    def answered(self) -> bool:
        return self.status is not None

    def body(self, limit: int | None = None) -> Any:
        """The answer as JSON when it parses, else its text (``limit`` chars)."""
        if self.text is None:
            return None
        try:
            return requests.models.complexjson.loads(self.text)
        except ValueError:
            return self.text if limit is None else self.text[:limit]


def send(url: str, body: bytes | None, headers: dict[str, str | None], timeout: float, *,
         method: str = "POST", allow_redirects: bool = False) -> Outcome:
    """One request; a header set to None drops the HTTP library's default."""
    started = time.monotonic()

    def took() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        # requests drops a header whose value is None; its types say str only
        resp = requests.request(method, url, data=body, headers=headers,  # type: ignore[arg-type]
                                timeout=timeout, allow_redirects=allow_redirects)
    except requests.RequestException as exc:
        if isinstance(exc, requests.Timeout):
            kind = "timeout"
        elif isinstance(exc, requests.ConnectionError):
            kind = "refused" if "refused" in str(exc).lower() else "connect"
        else:
            kind = "other"
        return Outcome(url, None, error=f"{type(exc).__name__}: {exc}", error_kind=kind,
                       duration_ms=took())
    return Outcome(url, resp.status_code, resp.text, resp.reason or "", dict(resp.headers),
                   duration_ms=took())


class DeliveryLog:
    """The newest ``keep`` delivery records, thread-safe; ``numbered`` gives each
    record an ``id`` (1, 2, ...)."""

    def __init__(self, keep: int | None, *, numbered: bool = False) -> None:
        self._lock = threading.Lock()
        self._items: deque[dict[str, Any]] = deque(maxlen=keep or None)
        self._ids = itertools.count(1) if numbered else None

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._ids is not None:
                record = {"id": next(self._ids), **record}
            self._items.append(record)
        return record

    def resize(self, keep: int | None) -> None:
        with self._lock:
            self._items = deque(self._items, maxlen=keep or None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.list())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# -- retry policies -------------------------------------------------------------------------


class RetrySchedule:
    """Attempt ``n + 1`` follows ``table[n - 1]["after_s"]`` seconds after attempt
    ``n`` when that attempt's answer matches ``table[n - 1]["on"]``; else, and
    after the table, no more attempts. ``classes`` names each ``on`` value's
    test of the status (no answer: status 0)."""

    def __init__(self, table: list[dict[str, Any]],
                 classes: dict[str, Callable[[int], bool]]) -> None:
        self.table = table
        self.classes = classes

    def delay(self, attempt: int, status: int) -> float | None:
        index = attempt - 1
        if index >= len(self.table):
            return None
        step = self.table[index]
        return float(step["after_s"]) if self.classes[step["on"]](status) else None


class Backoff:
    """``attempts`` retries after a failed attempt: ``base * 2**(n-1)`` seconds,
    or the receiver's ``Retry-After`` (whole seconds), never more than ``cap``."""

    def __init__(self, attempts: int, base: float, cap: float) -> None:
        self.attempts, self.base, self.cap = attempts, base, cap

    def delay(self, attempt: int, retry_after: str | None = None) -> float | None:
        if attempt > self.attempts:
            return None
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.cap)
        return min(self.base * (2 ** (attempt - 1)), self.cap)


# -- the dispatcher -----------------------------------------------------------------------------


_seq = itertools.count(1)


@dataclass(order=True)
class Job:
    """One delivery attempt to make (``data``: the vendor's)."""

    due: float
    seq: int = field(default_factory=lambda: next(_seq))
    attempt: int = field(compare=False, default=1)
    data: Any = field(compare=False, default=None)

    def retry(self, due: float) -> Job:
        return Job(due, attempt=self.attempt + 1, data=self.data)


class Dispatcher:
    """Runs a vendor's ``attempt(job) -> record`` (see the module docstring)."""

    def __init__(self, attempt: Callable[[Job], dict[str, Any]], *,
                 now: Callable[[], float], name: str, workers: int = 4) -> None:
        self.attempt = attempt
        self.now = now
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._cond = threading.Condition()
        self._heap: list[Job] = []
        self._thread: threading.Thread | None = None
        self._in_flight = 0

    # -- first attempts ---------------------------------------------------------------

    def submit(self, jobs: list[Job]) -> None:
        """Send in the background."""
        with self._cond:
            self._in_flight += len(jobs)
        for job in jobs:
            self._pool.submit(self._run, job)

    def _run(self, job: Job) -> None:
        try:
            self.attempt(job)
        finally:
            with self._cond:
                self._in_flight -= 1

    def deliver_now(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """First attempts, synchronously; retries are scheduled as usual."""
        return [self.attempt(job) for job in jobs]

    @property
    def in_flight(self) -> int:
        """Background attempts submitted and not finished yet."""
        with self._cond:
            return self._in_flight

    # -- retries --------------------------------------------------------------------------

    def schedule(self, job: Job) -> None:
        """Run ``job`` when its ``due`` time comes."""
        with self._cond:
            heapq.heappush(self._heap, job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=f"{self.name}-retries")
                self._thread.start()
            self._cond.notify()

    def flush(self) -> list[dict[str, Any]]:
        """Run every scheduled retry now, whatever its due time."""
        with self._cond:
            jobs = sorted(self._heap)
            self._heap.clear()
        return [self.attempt(job) for job in jobs]

    def pending(self) -> list[Job]:
        """The scheduled retries, soonest first."""
        with self._cond:
            return sorted(self._heap)

    def reset(self) -> None:
        with self._cond:
            self._heap.clear()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0].due > self.now():
                    # wake at least once a second: the sandbox clock may be moved
                    timeout = min(self._heap[0].due - self.now(), 1.0) if self._heap else None
                    self._cond.wait(timeout)
                job = heapq.heappop(self._heap)
            self.submit([job])
