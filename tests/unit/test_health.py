"""``/``, ``/healthz`` and ``/readyz``: the database, Redis and the workers'
heartbeats, each said by name when it is what is wrong."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis

from bridge import __version__, create_app, health
from bridge.runtime import Runtime


@pytest.fixture
def client(runtime):  # type: ignore[no-untyped-def]
    return create_app(runtime=runtime).test_client()


def test_healthz_needs_a_worker_heartbeat(runtime, client) -> None:  # type: ignore[no-untyped-def]
    answer = client.get("/healthz")
    assert answer.status_code == 503
    body = answer.get_json()
    assert body["ready"] is True and body["ok"] is False
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert "start `bridge worker`" in body["checks"]["workers"]["detail"]
    health.beat(runtime.redis, worker_pid=4242)
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json()["checks"]["workers"] == {"ok": True, "detail": "1 alive"}
    assert answer.get_json()["version"] == __version__


def test_a_heartbeat_expires_on_its_own(runtime) -> None:  # type: ignore[no-untyped-def]
    health.beat(runtime.redis, worker_pid=1)
    health.beat(runtime.redis, worker_pid=2)
    assert health.live_workers(runtime.redis) == 2
    ttls = [runtime.redis.ttl(k) for k in runtime.redis.scan_iter(match="bridge:heartbeat:*")]
    assert all(0 < ttl <= health.HEARTBEAT_TTL for ttl in ttls)


def test_readyz_reports_workers_but_is_not_refused_for_them(runtime, client) -> None:  # type: ignore[no-untyped-def]
    answer = client.get("/readyz")  # no worker has beaten: reported, still ready
    assert answer.status_code == 200 and answer.get_json()["ready"] is True
    checks = answer.get_json()["checks"]
    assert set(checks) == {"database", "redis", "workers"}
    assert checks["workers"]["ok"] is False
    health.beat(runtime.redis, 4242)
    assert client.get("/readyz").get_json()["checks"]["workers"]["ok"] is True


def test_redis_down_is_named(runtime) -> None:  # type: ignore[no-untyped-def]
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    rt = Runtime(runtime.settings, redis_connection=dead)
    client = create_app(runtime=rt).test_client()
    for path in ("/healthz", "/readyz"):
        answer = client.get(path)
        assert answer.status_code == 503, path
        checks = answer.get_json()["checks"]
        assert checks["redis"]["ok"] is False and "unreachable" in checks["redis"]["detail"]
        assert checks["database"]["ok"] is True


def test_a_database_without_schema_is_named(settings, redis_conn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = replace(settings, database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    settings.mappings_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(empty, redis_connection=redis_conn)
    try:
        answer = create_app(runtime=rt).test_client().get("/readyz")
        assert answer.status_code == 503
        assert answer.get_json()["checks"]["database"] == {
            "ok": False,
            "detail": "no schema: run `bridge db upgrade`",
        }
    finally:
        rt.close()


def test_home_names_the_service_or_sends_to_the_demo(runtime) -> None:  # type: ignore[no-untyped-def]
    health.beat(runtime.redis, worker_pid=7)
    page = create_app(runtime=runtime).test_client().get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert f"CRM bridge <small>{__version__}</small>" in text and "healthy" in text
    demo = Runtime(replace(runtime.settings, home_url="/sandbox/"), redis_connection=runtime.redis)
    answer = create_app(runtime=demo).test_client().get("/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/sandbox/"
