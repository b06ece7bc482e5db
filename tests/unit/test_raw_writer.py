"""``bridge.db.RawWriter`` on a real SQLite file: one statement in
autocommit, and the group commit of statements that queue while another
commits (one transaction, one WAL sync, each caller answered after it)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from bridge.db import RawWriter

INSERT = "INSERT INTO t (k, parent) VALUES (?, ?) ON CONFLICT (k) DO NOTHING"


@pytest.fixture
def writer(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO p (id) VALUES (1)")
        conn.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE,"
            " parent INTEGER REFERENCES p(id))"
        )
    w = RawWriter(f"sqlite:///{path}")
    yield w
    w.close()


def rows(writer: RawWriter) -> list[str]:
    with sqlite3.connect(writer.engine.url.database or "") as conn:
        return [k for (k,) in conn.execute("SELECT k FROM t ORDER BY id")]


def test_one_statement_alone_commits_and_a_duplicate_changes_nothing(writer) -> None:  # type: ignore[no-untyped-def]
    assert writer.run_statement(INSERT, ("a", 1)) == 1
    assert writer.run_statement(INSERT, ("a", 1)) == 0
    assert rows(writer) == ["a"]


def test_statements_queued_behind_a_commit_go_together_and_a_bad_one_fails_alone(
    writer, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()
    alone = writer._statement
    together: list[int] = []
    grouped = writer._statements

    def slow_first(sql, params):  # type: ignore[no-untyped-def]
        if params[0] == "first":
            release.wait(10)  # a commit in progress: the others queue behind it
        return alone(sql, params)

    def counted(items):  # type: ignore[no-untyped-def]
        together.append(len(items))
        return grouped(items)

    monkeypatch.setattr(writer, "_statement", slow_first)
    monkeypatch.setattr(writer, "_statements", counted)
    results: dict[str, object] = {}

    def insert(key: str, parent: int, label: str | None = None) -> None:
        try:
            results[label or key] = writer.run_statement(INSERT, (key, parent))
        except IntegrityError as exc:
            results[label or key] = exc

    first = threading.Thread(target=insert, args=("first", 1))
    first.start()
    time.sleep(0.2)
    others = [threading.Thread(target=insert, args=(f"k{i}", 1)) for i in range(10)]
    others.append(threading.Thread(target=insert, args=("orphan", 99)))  # no parent 99
    others.append(threading.Thread(target=insert, args=("first", 1, "again")))  # a redelivery
    for t in others:
        t.start()
    time.sleep(0.3)
    assert len(results) == 0  # nobody answered before its commit
    release.set()
    for t in [first, *others]:
        t.join(10)

    assert together and together[0] == len(others)  # one transaction for the queue...
    assert isinstance(results.pop("orphan"), IntegrityError)  # ...which failed on the orphan:
    assert (results.pop("first"), results.pop("again")) == (1, 0)
    assert list(results.values()) == [1] * 10
    assert sorted(rows(writer)) == sorted(["first", *(f"k{i}" for i in range(10))])


def test_writers_leave_wal_checkpoints_to_the_checkpointer_thread(writer) -> None:  # type: ignore[no-untyped-def]
    """No checkpoint inside a commit (under the writer lock); the process's
    checkpointer thread copies the WAL into the database beside the writers.
    The database file grows only when a checkpoint copies pages into it."""
    from bench.traffic import wait_until
    from bridge.db import CHECKPOINTER

    raw = writer.engine.raw_connection()
    try:
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    finally:
        raw.close()
    path = Path(writer.engine.url.database or "")
    before = path.stat().st_size
    with CHECKPOINTER._lock:  # the checkpointer's next pass waits meanwhile
        for i in range(2000):  # well past SQLite's automatic 1,000 pages
            writer.run_statement(INSERT, (f"row-{i}-" + "x" * 2000, 1))
        assert path.stat().st_size == before  # no commit checkpointed
        assert Path(f"{path}-wal").stat().st_size > 4_000_000
    assert wait_until(lambda: path.stat().st_size > 4_000_000, timeout=10)
    assert len(rows(writer)) == 2000


def test_a_child_forked_mid_commit_writes_on_its_own(writer) -> None:  # type: ignore[no-untyped-def]
    """A fork (gunicorn's workers) while the parent had a group commit
    running and its checkpointer held its lock: the child starts clean."""
    import os
    import signal

    from bridge.db import CHECKPOINTER

    group = writer._group
    url = str(writer.engine.url)
    with CHECKPOINTER._lock:  # as if its thread were in a pass
        group._busy = True  # as if a commit were running in another thread
        pid = os.fork()
        if pid == 0:  # the child: both writers, the old one and a new one
            code = 3
            try:
                fresh = RawWriter(url)
                code = (
                    0
                    if (
                        writer.run_statement(INSERT, ("old", 1)),
                        fresh.run_statement(INSERT, ("new", 1)),
                    )
                    == (1, 1)
                    else 1
                )
            finally:
                os._exit(code)
        group._busy = False
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on a lock held at fork time")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert sorted(rows(writer)) == ["new", "old"]
