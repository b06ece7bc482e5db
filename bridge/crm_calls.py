"""Each CRM call a conversation's work made, for its trace in the console.

A pipeline step that works for conversations (the inbound sync, a batch of
conversations opened or written together, the delivery reports) runs in
:func:`recording`; the HTTP client of a CRM adapter (:mod:`bridge.http`,
a metered client) notes every call it makes there: when, the method, the
path, the answer's status (None: no answer) and how long it took. When the
step ends, its calls are appended to each of its conversations' list in
Redis (one pipelined round trip; the newest :data:`KEEP` per conversation,
for :data:`TTL`); :func:`recent` reads them back.

What is kept is never personal data or a secret: the path only (no host,
no query string: a contact search puts a phone number or an address
there), and a path segment that looks like a key (a long run of letters
and digits, as a Bitrix24 incoming webhook's code in ``/rest/1/<code>/``)
is replaced by ``…``; ids and method names stay, so a call can be matched
to the record it wrote. Recording never breaks the work: a Redis that does
not answer loses the calls and is logged once per outage.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["KEEP", "TTL", "Call", "note", "recent", "recording", "safe_path"]

log = logging.getLogger(__name__)

#: calls kept per conversation (the newest)
KEEP = 200
#: how long a conversation's calls are kept after its last one (s)
TTL = 14 * 24 * 3600
_KEY = "bridge:crm-calls:{}"
#: a path segment that may be a key: 12+ letters and digits, both kinds
_SECRETISH = re.compile(r"^(?=[A-Za-z0-9_]*[A-Za-z])(?=[A-Za-z0-9_]*\d)[A-Za-z0-9_]{12,}$")

_CURRENT: ContextVar[list[Call] | None] = ContextVar("bridge_crm_calls", default=None)
_warned = False


@dataclass(frozen=True)
class Call:
    """One request to the CRM."""

    #: when it was sent (Unix time, s)
    at: float
    method: str
    path: str
    #: the answer's HTTP status; None: none came (a timeout, a reset)
    status: int | None
    ms: float


def safe_path(url: str) -> str:
    """The URL's path with key-like segments replaced (see the module)."""
    segments = urlsplit(url).path.split("/")
    return "/".join("…" if _SECRETISH.match(s) else s for s in segments) or "/"


def note(method: str, url: str, status: int | None, started: float, ms: float) -> None:
    """Record a call in the current :func:`recording` (none: nothing)."""
    calls = _CURRENT.get()
    if calls is not None:
        calls.append(Call(started, method, safe_path(url), status, round(ms, 1)))


@contextmanager
def recording(runtime: Runtime, conversation_ids: Iterable[int]) -> Iterator[None]:
    """Note the CRM calls made inside for the conversations named (each
    gets every call: a batch call serves them all)."""
    ids = list(dict.fromkeys(conversation_ids))
    calls: list[Call] = []
    token = _CURRENT.set(calls)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        if calls and ids:
            _save(runtime.redis, ids, calls)


def _save(connection: redis.Redis, ids: list[int], calls: list[Call]) -> None:
    global _warned
    rows = [json.dumps(asdict(c), separators=(",", ":")) for c in calls]
    try:
        pipe = connection.pipeline(transaction=False)
        for conversation_id in ids:
            key = _KEY.format(conversation_id)
            pipe.lpush(key, *rows)
            pipe.ltrim(key, 0, KEEP - 1)
            pipe.expire(key, TTL)
        pipe.execute()
        _warned = False
    except redis.RedisError as exc:
        if not _warned:
            log.warning("CRM calls not recorded (Redis: %s)", type(exc).__name__)
            _warned = True


def recent(connection: redis.Redis, conversation_id: int) -> list[Call]:
    """The conversation's recorded CRM calls, oldest first."""
    rows = connection.lrange(_KEY.format(conversation_id), 0, KEEP - 1)
    calls = []
    for row in reversed(rows):
        try:
            calls.append(Call(**json.loads(row)))
        except (TypeError, ValueError):
            continue  # a row of another version: skipped
    return calls


def now() -> float:
    """The clock calls are stamped with (Unix time)."""
    return time.time()
