"""Database engine and session factory (SQLAlchemy 2).

SQLite is the embedded default: WAL so readers never block the writer,
``synchronous=FULL`` so a commit the webhook acknowledged survives a power
loss (RELIABILITY.md 2.2: WAL+NORMAL may roll back), ``BEGIN IMMEDIATE`` so
concurrent writers queue on the lock instead of failing mid-transaction, and
a busy timeout. PostgreSQL is the production database; row locks there use
``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
_T = TypeVar("_T")

__all__ = [
    "NestedTransactionError",
    "make_engine",
    "make_sessionmaker",
    "rowcount",
    "RawWriter",
    "transaction",
    "write_connection",
]


def make_engine(
    url: str,
    *,
    echo: bool = False,
    reader: bool = False,
    pool_size: int = 5,
    max_overflow: int = 10,
    pre_ping: bool = True,
) -> Engine:
    """Create the engine with the pragmas/settings the pipeline relies on.

    ``reader=True`` (SQLite only): connections that run in autocommit and
    never take the write lock — WAL readers see the last commit and block
    nobody. Use it for reads on hot paths, outside write transactions.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        _sqlite_pragmas(engine, writer=not reader)
    else:
        engine = create_engine(
            url,
            echo=echo,
            pool_pre_ping=pre_ping,
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        _postgres_text_without_nul(engine)
    _dispose_after_fork(engine)
    return engine


def _postgres_text_without_nul(engine: Engine) -> None:
    """PostgreSQL text cannot hold NUL (U+0000): psycopg refuses such a
    parameter with a DataError, which turned a webhook carrying one into a
    500. NUL means nothing in any text the bridge stores: drop it."""
    from psycopg.abc import Buffer
    from psycopg.types.string import StrBinaryDumper, StrDumperUnknown

    class NulFreeText(StrDumperUnknown):
        def dump(self, obj: str) -> Buffer | None:
            return super().dump(obj.replace("\x00", ""))

    class NulFreeBinaryText(StrBinaryDumper):
        def dump(self, obj: str) -> Buffer | None:
            return super().dump(obj.replace("\x00", ""))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.adapters.register_dumper(str, NulFreeBinaryText)
        dbapi_connection.adapters.register_dumper(str, NulFreeText)


def _sqlite_pragmas(engine: Engine, *, writer: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin), per the SQLAlchemy
        # docs' "Serializable isolation / Savepoints / Transactional DDL" recipe.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if writer:
            # no checkpoint inside a commit, under the writer lock: the
            # process's checkpointer thread runs them beside the writers
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    if not writer:
        return
    if engine.url.database and engine.url.database != ":memory:":
        CHECKPOINTER.add(engine, engine.url.database)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class _Checkpointer:
    """SQLite WAL checkpoints off the writers' path: one thread per process
    runs a ``PASSIVE`` checkpoint of each database it writes every
    ``INTERVAL`` seconds, on a connection of its own.

    SQLite's automatic checkpoint runs inside the commit that crosses 1,000
    WAL pages, in the committing thread — here while it holds the writer
    lock, so every webhook of every process waited for the copy and the
    database file's fsync: the webhook's p99 at 861 requests/s was 149 ms
    with them and 6 ms without (bench.ingest ``--half-rate``). A passive
    checkpoint takes no writer lock, never waits, and copies whatever the
    readers let it.
    """

    INTERVAL = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
        self._conns: dict[str, sqlite3.Connection] = {}
        self._pid = -1

    def add(self, engine: Engine, path: str) -> None:
        with self._lock:
            self._engines[engine] = path
            if self._pid != os.getpid():  # first in this process (or forked)
                self._pid = os.getpid()
                self._conns = {}
                threading.Thread(target=self._run, name="wal-checkpoint", daemon=True).start()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread and connections are not
        ours (a connection must not cross a fork, SQLite's FAQ), and the
        lock may have been held by that thread."""
        self._lock = threading.Lock()
        self._conns = {}
        self._pid = -1  # the next add starts this process's thread

    def _run(self) -> None:
        while True:
            time.sleep(self.INTERVAL)
            self.run_once()

    def run_once(self) -> None:
        """Checkpoint every database with a live writer engine here; let go
        of the connections of the others."""
        with self._lock:
            paths = set(self._engines.values())
            for gone in set(self._conns) - paths:
                self._conns.pop(gone).close()
        for path in paths:
            self._checkpoint(path)

    def _checkpoint(self, path: str) -> None:
        conn = self._conns.get(path)
        try:
            if conn is None:
                if not os.path.exists(path):
                    return
                conn = self._conns[path] = sqlite3.connect(
                    path, isolation_level=None, check_same_thread=False
                )
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("WAL checkpoint of a database skipped (%s)", type(exc).__name__)
            self._conns.pop(path, None)
            if conn is not None:
                conn.close()


CHECKPOINTER = _Checkpointer()

_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)
    # a lock held by another thread at fork time stays held, and an inherited
    # flock is shared with the parent: start with fresh ones
    _WRITE_LOCKS.clear()
    CHECKPOINTER.after_fork()
    for group in list(_GROUPS):
        group.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _dispose_after_fork(engine: Engine) -> None:
    """A forked process (gunicorn's workers; a work-horse, were RQ's forking
    worker run instead of ``bridge.rqworker``'s) must never share a pooled
    connection with its parent (SQLAlchemy docs, "Using Connection Pools
    with Multiprocessing or os.fork()")."""
    _ENGINES.add(engine)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


class NestedTransactionError(RuntimeError):
    """A write transaction was opened inside another in the same thread."""


class _SqliteWriteLock:
    """SQLite has one writer at a time. Writers of this database queue here —
    threads on a mutex, processes on ``flock`` of a lock file next to it —
    instead of sleeping in SQLite's busy handler, whose growing sleeps turned
    a 2 ms wait into a 0.6-1.5 s p99 under 16 concurrent webhooks
    (bench.ingest). The kernel wakes the next waiter the moment the lock is
    released.

    ``flock`` is not a queue: a process that lets the lock go and wants it
    back at once (the normaliser going from one batch to the next) takes it
    again before the woken waiters of other processes run, and the webhooks
    waited behind batch after batch. A writer that let the lock go less than
    ``TURN`` seconds ago waits out the rest of it before taking it again
    (the webhook's writer does not: its group commit takes whatever queued
    meanwhile in one turn, and a request's answer waits for it)."""

    TURN = 0.002

    def __init__(self, database: str | None) -> None:
        self._thread = threading.Lock()
        self._path = f"{database}.writelock" if database and database != ":memory:" else None
        self._fd: int | None = None
        self._owner: int | None = None
        self._released = 0.0
        self.turn = self.TURN

    def __enter__(self) -> None:
        if self._owner == threading.get_ident():
            # A write transaction opened inside another in the same thread
            # would wait for itself forever (SQLite has one writer): a bug
            # in the caller, so say so instead of hanging.
            raise NestedTransactionError(
                "a write transaction was opened inside another one in the same thread"
            )
        self._thread.acquire()
        self._owner = threading.get_ident()
        try:
            if self._path is not None:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                since = time.monotonic() - self._released
                if since < self.turn:
                    time.sleep(self.turn - since)  # the other processes' turn first
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._owner = None
            self._thread.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._released = time.monotonic()
        finally:
            self._owner = None
            self._thread.release()


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, _SqliteWriteLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _sqlite_write_lock(engine: Engine) -> _SqliteWriteLock | None:
    if engine.dialect.name != "sqlite":
        return None
    with _LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = _SqliteWriteLock(engine.url.database)
        return lock


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    bind = factory.kw.get("bind")
    lock = _sqlite_write_lock(bind) if isinstance(bind, Engine) else None
    session = factory()
    try:
        if lock is None:
            with session.begin():
                yield session
        else:
            with lock, session.begin():
                yield session
    finally:
        session.close()


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A Core connection in one write transaction, without an ORM session
    (the ingest journal's one INSERT): committed on success, rolled back on
    any error, queued on SQLite's writer lock like :func:`transaction`."""
    lock = _sqlite_write_lock(engine)
    if lock is None:
        with engine.begin() as conn:
            yield conn
    else:
        with lock, engine.begin() as conn:
            yield conn


class RawWriter:
    """Write transactions on a bare DBAPI connection, for the one statement
    the webhook runs per request (the ingest journal's INSERT).

    SQLAlchemy's Core transaction around a single INSERT — the pre-ping (a
    round trip on PostgreSQL), the ``begin`` event, result wrapping — cost
    as much CPU as the rest of the request (bench.ingest's profile,
    2026-12-05). Here the caller writes the statement once and binds its
    parameters; the connection comes from a small pool of its own without
    pre-ping: ``POOL_SIZE`` connections per process kept open (one per
    request thread of the bench's gunicorn 2 × 8: 4 held PostgreSQL's webhook
    to 821 requests/s where 8 took 1,148), no overflow
    (an overflow connection is opened and closed per request, which halved
    the webhook's rate on PostgreSQL; and PostgreSQL's ``max_connections``
    is shared by every process of every machine: a thread waits its turn
    for the short INSERT instead), and
    SQLite writers still queue on the process- and thread-wide writer lock
    (in groups: :class:`_GroupCommit`).
    A connection that broke (the database restarted) is dropped and the unit
    runs once more on a new one.
    """

    POOL_SIZE = 8
    OVERFLOW = 0

    def __init__(self, url: str, *, group_commit: bool = True) -> None:
        self.engine = make_engine(
            url, pool_size=self.POOL_SIZE, max_overflow=self.OVERFLOW, pre_ping=False
        )
        self.dialect = self.engine.dialect.name
        # SQLite has one writer and syncs its WAL once per commit: statements
        # that queue while another commits go together. Not on PostgreSQL:
        # one commit at a time per process (pipelined, two round trips a
        # group) took 862 requests/s where concurrent commits, whose WAL
        # flushes the server groups itself, took 1,148 (bench.ingest).
        self._group = _GroupCommit(self) if group_commit and self.dialect == "sqlite" else None
        lock = _sqlite_write_lock(self.engine)
        if lock is not None:
            lock.turn = 0.0

    def run(self, unit: Callable[[Any], _T]) -> _T:
        """``unit(cursor)`` in one committed transaction; the result of unit.
        The driver's errors come out as SQLAlchemy's (``OperationalError``
        for a database that is away), as from any other query."""
        return self._retried(unit, single=False)

    def run_statement(self, sql: str, params: Any) -> int:
        """One statement committed on its own; the rows it changed.

        In autocommit: SQLite commits (and syncs its WAL) inside the
        statement's own step, PostgreSQL in the statement's one round trip —
        no ``BEGIN``/``COMMIT`` of ours around it. On SQLite that matters
        more than the two statements saved: the writer lock is held while
        the thread runs Python between them, and every step gives the GIL up
        and must win it back from the request threads (up to the 5 ms switch
        interval each time) — a lock held three GIL waits long instead of
        one halved the webhook's rate (bench.ingest)."""

        if self._group is not None:
            return self._group.submit(sql, params)
        return self._statement(sql, params)

    def _statement(self, sql: str, params: Any) -> int:
        def unit(cursor: Any) -> int:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

        return self._retried(unit, single=True)

    def _statements(self, items: Sequence[tuple[str, Any]]) -> list[int]:
        """Several statements in one committed transaction."""

        def unit(cursor: Any) -> list[int]:
            out = []
            for sql, params in items:
                cursor.execute(sql, params)
                out.append(int(cursor.rowcount))
            return out

        return self._retried(unit, single=False)

    def _retried(self, unit: Callable[[Any], _T], *, single: bool) -> _T:
        dbapi = self.engine.dialect.loaded_dbapi
        for attempt in (1, 2):
            conn = None
            try:
                conn = self.engine.raw_connection()
                result = self._once(conn, unit, single=single)
                conn.close()  # back to the pool
                return result
            except (dbapi.OperationalError, sa_exc.OperationalError) as exc:
                _drop(conn)
                if attempt == 2:
                    raise _wrapped(exc, dbapi) from exc
            except dbapi.Error as exc:
                _drop(conn)
                raise _wrapped(exc, dbapi) from exc
            except BaseException:
                _drop(conn)
                raise
        raise AssertionError("unreachable")

    def _once(self, conn: Any, unit: Callable[[Any], _T], *, single: bool) -> _T:
        sqlite = self.dialect == "sqlite"
        if not sqlite and conn.dbapi_connection.autocommit != single:
            conn.dbapi_connection.autocommit = single  # idle here: psycopg allows it
        lock = _sqlite_write_lock(self.engine)
        with lock if lock is not None else _NoLock():
            cursor = conn.cursor()
            try:
                if sqlite and not single:
                    cursor.execute("BEGIN IMMEDIATE")  # autocommit driver: BEGIN is ours
                result = unit(cursor)
                if not single:
                    conn.commit() if not sqlite else cursor.execute("COMMIT")
                return result
            finally:
                cursor.close()

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class _Waiter:
    sql: str
    params: Any
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    result: int = 0
    error: BaseException | None = None


class _GroupCommit:
    """Group commit for :meth:`RawWriter.run_statement`, leader-follower.

    A statement that finds no commit running runs at once, alone. One that
    arrives while a commit runs waits; when that commit ends, the first
    waiter leads the next one: every statement that queued meanwhile (up to
    ``MAX``) in one transaction, one WAL sync, one turn of the writer lock.
    Each caller returns only after the commit that holds its statement (a
    2xx still follows the commit of what arrived). If a group's transaction
    fails, its statements run again one by one, so one bad row fails only
    its own request.
    """

    MAX = 64

    def __init__(self, writer: RawWriter) -> None:
        self._writer = writer
        self._mutex = threading.Lock()
        self._busy = False
        self._queue: list[_Waiter] = []
        _GROUPS.add(self)

    def after_fork(self) -> None:
        """In a forked child: a commit the parent had running, and its
        waiters, are not here."""
        self._mutex = threading.Lock()
        self._busy = False
        self._queue = []

    def submit(self, sql: str, params: Any) -> int:
        me = _Waiter(sql, params)
        with self._mutex:
            if self._busy:
                self._queue.append(me)
                group = None
            else:
                self._busy = True
                group = [me]
        if group is None:
            me.done.wait()
            if me.lead:  # the commit before ended: this one leads the next
                with self._mutex:
                    group, self._queue = self._queue[: self.MAX], self._queue[self.MAX :]
        if group is not None:
            self._commit(group)
        if me.error is not None:
            raise me.error
        return me.result

    def _commit(self, group: list[_Waiter]) -> None:
        try:
            self._run(group)
        finally:
            with self._mutex:
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._busy = False
            for waiter in group[1:]:
                waiter.done.set()
            if following is not None:
                following.lead = True
                following.done.set()

    def _run(self, group: list[_Waiter]) -> None:
        writer = self._writer
        if len(group) == 1:
            self._alone(group[0])
            return
        try:
            results = writer._statements([(w.sql, w.params) for w in group])
        except Exception:  # noqa: BLE001 — each statement runs again on its own
            for waiter in group:
                self._alone(waiter)
            return
        except BaseException as exc:  # the leader's thread is going away
            for waiter in group:
                waiter.error = exc  # none of them may answer as if stored
            raise
        for waiter, result in zip(group, results, strict=True):
            waiter.result = result

    def _alone(self, waiter: _Waiter) -> None:
        try:
            waiter.result = self._writer._statement(waiter.sql, waiter.params)
        except BaseException as exc:  # noqa: BLE001 — raised in the caller's thread
            waiter.error = exc


_GROUPS: weakref.WeakSet[_GroupCommit] = weakref.WeakSet()


def _drop(conn: Any) -> None:
    """A connection whose transaction failed: closed, never pooled again."""
    if conn is None:
        return
    try:
        conn.invalidate()
    except Exception:  # noqa: BLE001 — already broken; nothing to save
        log.debug("dropping a broken journal connection failed")


def _wrapped(exc: BaseException, dbapi: Any) -> BaseException:
    if isinstance(exc, sa_exc.DBAPIError):
        return exc
    return sa_exc.DBAPIError.instance(None, None, exc, dbapi.Error)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched. ``Session.execute`` is typed to
    return a plain ``Result``; for those statements it is a ``CursorResult``."""
    assert isinstance(result, CursorResult)
    return result.rowcount
