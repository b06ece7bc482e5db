"""Conversation leases (``bridge.locks``): one renewer thread per process
keeps every held lease alive, and none after it is let go."""

from __future__ import annotations

import time

import redis

from bridge.locks import ConversationLock


def test_held_leases_outlive_their_ttl_and_end_with_their_holding(
    redis_conn: redis.Redis,
) -> None:
    first = ConversationLock(redis_conn, "bridge:lock:test:1", 1.0)
    second = ConversationLock(redis_conn, "bridge:lock:test:2", 1.0)
    assert first.acquire() and second.acquire()
    with first.keepalive(), second.keepalive():
        time.sleep(2.5)  # two and a half TTLs
        assert redis_conn.get(first.name) == first.token.encode()
        assert redis_conn.get(second.name) == second.token.encode()
    first.release()
    second.release()
    time.sleep(1.2)  # a renewal after the release would re-create them
    assert not redis_conn.exists(first.name) and not redis_conn.exists(second.name)
    assert not first.lost.is_set() and not second.lost.is_set()


def test_a_lease_taken_over_is_lost(redis_conn: redis.Redis) -> None:
    lease = ConversationLock(redis_conn, "bridge:lock:test:3", 1.0)
    assert lease.acquire()
    with lease.keepalive():
        redis_conn.set(lease.name, "someone-else")
        assert lease.lost.wait(2.0)
    assert redis_conn.get(lease.name) == b"someone-else"


def test_a_lease_redis_lost_is_taken_again(redis_conn: redis.Redis) -> None:
    lease = ConversationLock(redis_conn, "bridge:lock:test:4", 1.0)
    assert lease.acquire()
    with lease.keepalive():
        redis_conn.delete(lease.name)  # a wiped Redis
        time.sleep(0.8)
        assert redis_conn.get(lease.name) == lease.token.encode()
    lease.release()
