"""Database engine and session factory (SQLAlchemy 2).

SQLite is the embedded default: WAL so readers never block the writer,
``synchronous=FULL`` so a commit the webhook acknowledged survives a power
loss (RELIABILITY.md 2.2: WAL+NORMAL may roll back), ``BEGIN IMMEDIATE`` so
concurrent writers queue on the lock instead of failing mid-transaction, and
a busy timeout. PostgreSQL is the production database; row locks there use
``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_sessionmaker", "transaction"]


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create the engine with the pragmas/settings the pipeline relies on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        _sqlite_pragmas(engine)
    else:
        engine = create_engine(
            url,
            echo=echo,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
        )
    _dispose_after_fork(engine)
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy emit BEGIN itself (see _on_begin), per the SQLAlchemy
        # docs' "Serializable isolation / Savepoints / Transactional DDL" recipe.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _dispose_after_fork(engine: Engine) -> None:
    """RQ forks a work-horse per job: a pooled connection must never be
    shared across a fork (SQLAlchemy docs, "Using Connection Pools with
    Multiprocessing or os.fork()")."""
    _ENGINES.add(engine)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        with session.begin():
            yield session
    finally:
        session.close()
