"""The shared token bucket (``bridge.ratelimit.RedisTokenBucket``) on the
real Redis, hammered by several processes.

Time is read from the Redis server (``TIME``), the clock the bucket itself
uses, so the bound ``capacity + rate x elapsed`` is checked against the same
clock; nothing here asserts how long anything took.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import redis
import responses

from bridge.errors import RetryableError
from bridge.http import HttpClient, Limit
from bridge.model import Rate
from bridge.ratelimit import RedisTokenBucket

PROCESSES = 4
HAMMER_SECONDS = 1.0
GRANTS = "test:grants"


def server_time(conn: redis.Redis) -> float:
    seconds, micros = conn.time()
    return seconds + micros / 1_000_000


def _hammer(url: str, key: str, rate: Rate, start: Any, results: Any) -> None:
    conn = redis.Redis.from_url(url)
    bucket = RedisTokenBucket(conn)
    start.wait(timeout=30)
    t_end = server_time(conn) + HAMMER_SECONDS
    granted = refused = 0
    while server_time(conn) < t_end:
        if bucket.try_acquire(key, rate) <= 0:
            granted += 1
            conn.incr(GRANTS)
        else:
            refused += 1
    results.put((granted, refused))
    conn.close()


@pytest.mark.parametrize("rate", [Rate(capacity=5, per_second=20), Rate(capacity=1, per_second=50)])
def test_processes_never_exceed_capacity_plus_rate_times_elapsed(
    redis_conn, redis_url, rate: Rate
) -> None:  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(redis_url, "crm:acme", rate, start, results))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    t0 = server_time(redis_conn)
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    elapsed = server_time(redis_conn) - t0
    granted = sum(g for g, _ in outcomes)
    assert granted == int(redis_conn.get(GRANTS))  # every grant was counted in Redis too
    assert granted <= rate.capacity + rate.per_second * elapsed + 1e-6, (granted, elapsed)
    # the processes really competed: all of them were refused many times
    assert all(refused > 0 for _, refused in outcomes)
    assert granted >= rate.capacity


def test_penalise_blocks_every_process(redis_conn, redis_url) -> None:  # type: ignore[no-untyped-def]
    rate = Rate(capacity=100, per_second=100)
    bucket = RedisTokenBucket(redis_conn)
    assert bucket.try_acquire("crm:acme", rate) == 0.0  # plenty of tokens
    t0 = server_time(redis_conn)
    bucket.penalise("crm:acme", 3.0)  # a 429 with Retry-After: 3 seen by one worker

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def probe() -> None:
        conn = redis.Redis.from_url(redis_url)
        results.put([RedisTokenBucket(conn).try_acquire("crm:acme", rate) for _ in range(3)])
        conn.close()

    procs = [ctx.Process(target=probe) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    waits = [w for _ in procs for w in results.get(timeout=30)]
    for p in procs:
        p.join(timeout=30)
    t1 = server_time(redis_conn)
    # every process is told to wait out what is left of the 3 s, as the server clock says
    for wait in waits:
        assert 3.0 - (t1 - t0) - 1e-3 <= wait <= 3.0 + 1e-3, (wait, t1 - t0)
    # the refused attempts took nothing: this process is blocked the same way
    assert 0 < bucket.try_acquire("crm:acme", rate) <= 3.0


def test_penalty_is_never_shortened(redis_conn) -> None:  # type: ignore[no-untyped-def]
    bucket = RedisTokenBucket(redis_conn)
    rate = Rate(capacity=10, per_second=10)
    t0 = server_time(redis_conn)
    bucket.penalise("k", 30.0)
    bucket.penalise("k", 1.0)  # a shorter Retry-After from another worker
    wait = bucket.try_acquire("k", rate)
    assert 30.0 - (server_time(redis_conn) - t0) - 1e-3 <= wait <= 30.0 + 1e-3


def test_acquire_gives_up_with_a_retryable_error_when_blocked_too_long(redis_conn) -> None:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    bucket = RedisTokenBucket(redis_conn, sleep=slept.append, max_wait=1.0)
    bucket.penalise("k", 60.0)
    with pytest.raises(RetryableError) as caught:
        bucket.acquire("k", Rate(capacity=5, per_second=5))
    assert 1.0 < caught.value.retry_after <= 60.0
    assert slept == []  # it did not sleep on a wait it could never finish


def test_keys_have_independent_budgets(redis_conn) -> None:  # type: ignore[no-untyped-def]
    bucket = RedisTokenBucket(redis_conn)
    slow = Rate(capacity=3, per_second=0.001)
    assert [bucket.try_acquire("tenant-a", slow) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire("tenant-a", slow) > 0
    # tenant B's bucket is untouched by A's exhaustion ...
    assert [bucket.try_acquire("tenant-b", slow) for _ in range(3)] == [0.0, 0.0, 0.0]
    # ... and by A's penalty
    bucket.penalise("tenant-a", 60.0)
    assert bucket.try_acquire("tenant-c", slow) == 0.0
    assert bucket.try_acquire("tenant-a", slow) > 59.0
    assert bucket.try_acquire("tenant-b", slow) > 0  # b is empty, not blocked
    assert bucket.try_acquire("tenant-b", slow) < 1 / 0.001 + 1e-6


def test_refused_attempts_take_nothing(redis_conn) -> None:  # type: ignore[no-untyped-def]
    bucket = RedisTokenBucket(redis_conn)
    rate = Rate(capacity=1, per_second=0.01)  # one token per 100 s
    assert bucket.try_acquire("k", rate) == 0.0
    first = bucket.try_acquire("k", rate)
    for _ in range(50):
        later = bucket.try_acquire("k", rate)
    assert 0 < later <= first <= 100.0


def test_cost_above_one_takes_several_tokens(redis_conn) -> None:  # type: ignore[no-untyped-def]
    bucket = RedisTokenBucket(redis_conn)
    rate = Rate(capacity=10, per_second=0.001)
    assert bucket.try_acquire("k", rate, cost=7) == 0.0
    assert bucket.try_acquire("k", rate, cost=4) > 0  # 3 left
    assert bucket.try_acquire("k", rate, cost=3) == 0.0


def test_prefix_separates_buckets(redis_conn) -> None:  # type: ignore[no-untyped-def]
    rate = Rate(capacity=1, per_second=0.001)
    a = RedisTokenBucket(redis_conn, prefix="one:")
    b = RedisTokenBucket(redis_conn, prefix="two:")
    assert a.try_acquire("k", rate) == 0.0 and a.try_acquire("k", rate) > 0
    assert b.try_acquire("k", rate) == 0.0


@responses.activate
def test_a_429_seen_by_one_client_blocks_the_others(redis_conn, redis_url) -> None:  # type: ignore[no-untyped-def]
    """The HTTP seam penalises the shared bucket on a 429: every worker backs off."""
    responses.get("https://api.example/thing", status=429, headers={"Retry-After": "7"})
    limit = Limit("crm:acme", Rate(capacity=50, per_second=50))
    one = HttpClient("https://api.example", limiter=RedisTokenBucket(redis_conn))
    t0 = server_time(redis_conn)
    with pytest.raises(RetryableError) as caught:
        one.request("GET", "/thing", limit=limit)
    assert caught.value.retry_after == 7.0
    other = RedisTokenBucket(redis.Redis.from_url(redis_url))  # another worker's connection
    wait = other.try_acquire(limit.key, limit.rate)
    assert 7.0 - (server_time(redis_conn) - t0) - 1e-3 <= wait <= 7.0 + 1e-3
