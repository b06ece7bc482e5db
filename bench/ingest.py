"""Webhook accept throughput: the bridge's Telegram webhook against a bare
Flask endpoint and a minimal durable endpoint, all three under the same
gunicorn settings, then the bridge at half its rate with a normaliser.

    python -m bench.ingest [--json] [--seconds N] [--connections C] [--warmup S]
                           [--users U] [--rounds R] [--web-workers W] [--wrk-threads T]
                           [--database-url URL] [--generator auto|wrk|python]
                           [--minimal-synchronous FULL|NORMAL] [--half-seconds N]
                           [--no-normaliser] [--drain-timeout S] [--keep]

The targets, each served by gunicorn with exactly the bridge's command line
(same workers, threads and worker class; only the bind address and the app
differ):

* **bare** (``bare_app``): parses the JSON and answers ``{"ok": true}``; no
  storage.
* **minimal** (``minimal_app``): the physical floor of a durable accept,
  written for this bench: a constant-time secret check, ``json.loads``
  and the edge check the bridge does (an object with an integer
  ``update_id``), then ONE ``INSERT ... ON CONFLICT DO NOTHING`` into a
  one-table journal (id, key unique, body, received_at) with plain
  ``sqlite3`` / ``psycopg``, committed with the bridge's durability: on
  SQLite WAL + ``synchronous=FULL`` (``bridge.db._sqlite_pragmas``) with
  writers queued on a thread mutex + ``flock`` like
  ``bridge.db._SqliteWriteLock``; on PostgreSQL an autocommit INSERT (one
  round trip, ``synchronous_commit`` on: the commit waits for the WAL
  flush). Its journal is its own SQLite file next to the bridge's (same
  disk), or its own table in the bench's PostgreSQL schema.
* **bridge**: the real one (``bench.stack``: gunicorn ``wsgi:app``, a
  redis-server with AOF, SQLite by default with WAL + ``synchronous=FULL``),
  the seeded bot's ``POST /webhooks/telegram/<key>``.

Every request is a distinct Telegram ``Update`` (unique ``update_id``, a pool
of ``--users`` private chats) with the right
``X-Telegram-Bot-Api-Secret-Token``. The phases:

1. **Saturation** (``--rounds`` times, the targets in turn): ``--warmup``
   seconds of load, then ``--seconds`` measured. Load comes from ``wrk``
   (Debian package ``wrk``) with a generated Lua script, else
   (``--generator python`` or no ``wrk``) from a multi-process Python
   client, which competes with the servers for this machine's CPU. No RQ
   worker runs, so what the bridge journals only queues.
2. **Half rate** (``--rounds`` times; the median by p99): a paced Python
   client sends at half the bridge's median saturation rate for
   ``--half-seconds`` (open loop: each request has a due time and its
   latency counts from then, so a slow answer delays no measurement);
   still no worker: the ack p50/p99 alone.
3. **Drain** (once the bridge has its ingest journal, table ``deliveries``;
   ``--no-normaliser`` skips 3 and 4): one worker process starts on the
   journal phases 1-2 left, with no load: deliveries per second of one
   worker process, from the first ``normalised_at`` to the last
   (``--drain-timeout`` caps the wait). ``--worker ingest`` (the default):
   an RQ worker on the ingest queue alone, set up like ``bridge worker``
   (``ingest_worker`` below), so the normaliser is what is measured; the
   CRM sync jobs it queues wait. ``--worker bridge``: ``bridge worker``
   itself, which also runs those sync jobs, one job at a time: a
   delivery's lag then includes the sync job in hand (seconds on a
   backlog of conversations).
4. **Half rate, normalising**: phase 2 again while that worker normalises
   as deliveries arrive: the ack p50/p99 and, for this phase's
   deliveries, the lag ``normalised_at - received_at`` (the webhook stamps
   ``received_at`` before its commit and 2xx).

With ``--json`` the last line on stdout is one JSON object::

    {"bench": "ingest", "generator": "wrk"|"python", "database": "sqlite"|"postgresql",
     "seconds": float, "connections": int, "users": int, "rounds": int,
     "gunicorn": "<workers>x<threads> gthread", "cores": int,
     "bare": TARGET, "minimal": TARGET, "bridge": TARGET,
     "ratio_minimal": bridge rps / minimal rps, "target_ratio_minimal": 0.9,
     "ratio_bare": bridge rps / bare rps, "minimal_over_bare": minimal rps / bare rps,
     "durability": {"minimal": what the minimal endpoint's connection reports
                               (SQLite journal_mode + synchronous, or
                               PostgreSQL synchronous_commit),
                    "minimal_writer_lock": "mutex+flock" | null},
     "journal": true when the bridge has the deliveries table,
     "half_rate": PACED (phase 2: the median of --rounds runs by p99, with
                  "p99_rounds_ms": every run's p99),
     "half_rate_normalising": PACED (phase 4) | null,
     "target_p99_ms": 25,
     "normaliser": null | {"workers": 1, "worker": "ingest"|"bridge",
         "drain": {"deliveries", "seconds", "per_s", "left_new", "states": {state: n}},
         "load": {"backlog_at_start", "deliveries", "unfinished",
                  "per_s": normalised / (last normalised_at - first received_at),
                  "lag_p50_ms", "lag_p99_ms", "lag_max_ms"}},
     "bridge_stored": journal rows (or inbound messages, before the journal) after
                      the saturation phase,
     "bridge_answered_2xx": 2xx the generator counted from the bridge in that phase
                            (warm-up included; <= bridge_stored: requests in flight at
                            the end are stored, not counted),
     "fsync_ms_p50": one 4 KiB write+fsync on the work directory's disk}

    PACED = {"rate": req/s asked, "rps", "p50_ms", "p99_ms", "max_ms", "requests",
             "ok_2xx", "non_2xx", "socket_errors", "seconds"}

    TARGET = {"rps": float, "p50_ms": float, "p99_ms": float, "mean_ms": float,
              "requests": int, "ok_2xx": int, "non_2xx": int, "socket_errors": int,
              "server_cpu_pct": CPU time of the server's processes / wall time
                                (100 = one core busy; PostgreSQL's own CPU not counted),
              "cpu_ms_per_request": the server's CPU milliseconds per answered request}

(With ``--rounds N`` the targets alternate N times; each TARGET is the
median round by rps.) About 2 minutes with the defaults on SQLite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hmac
import json
import multiprocessing as mp
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from bench.report import emit_json, percentile, postgres_schema, rnd, table

__all__ = ["bare_app", "main", "minimal_app"]

#: the bridge's rate over the minimal durable endpoint's (issue 11)
TARGET_RATIO = 0.9
#: the bridge's p99 ack at half its saturation rate (issue 11)
TARGET_P99_MS = 25.0
BARE_PATH = "/webhooks/telegram/<key>"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 — a header name
#: the minimal endpoint's one-table journal
MINIMAL_TABLE = "bench_journal"

# -- the bare endpoint (gunicorn bench.ingest:bare_app) -------------------------

bare_app = Flask("bench-bare")


@bare_app.post(BARE_PATH)
def _bare_webhook(key: str) -> ResponseReturnValue:
    request.get_json(force=True)
    return jsonify({"ok": True})


@bare_app.get("/healthz")
def _bare_health() -> ResponseReturnValue:
    return jsonify({"ok": True})


# -- the minimal durable endpoint (gunicorn bench.ingest:minimal_app) -----------
#
# Configured by the environment the bench starts it with:
# BENCH_MINIMAL_DATABASE (a SQLite file path or a postgresql:// URI),
# BENCH_MINIMAL_SECRET, BENCH_MINIMAL_SYNCHRONOUS (SQLite: FULL or NORMAL).

_SQLITE_INSERT = (
    f"INSERT INTO {MINIMAL_TABLE} (key, body, received_at) VALUES (?, ?, ?) "  # noqa: S608
    "ON CONFLICT (key) DO NOTHING"
)
_PG_INSERT = (
    f"INSERT INTO {MINIMAL_TABLE} (key, body, received_at) VALUES (%s, %s, %s) "  # noqa: S608
    "ON CONFLICT (key) DO NOTHING"
)


class _MinimalJournal:
    """One connection per thread; on SQLite, writers queue on a thread mutex
    and an ``flock`` shared by the gunicorn workers (what
    ``bridge.db._SqliteWriteLock`` does) instead of SQLite's busy-sleep."""

    def __init__(self, database: str, secret: str, synchronous: str) -> None:
        self.database = database
        self.secret = secret.encode()
        self.synchronous = synchronous
        self.postgres = database.startswith(("postgresql:", "postgres:"))
        self._local = threading.local()
        self._mutex = threading.Lock()
        self._flock: int | None = None

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.postgres:
                import psycopg

                # autocommit: the INSERT is its own transaction, committed in
                # one round trip (no BEGIN/COMMIT of their own)
                conn = psycopg.connect(self.database, autocommit=True)
            else:
                conn = sqlite3.connect(
                    self.database, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
        return conn

    @contextmanager
    def _writer(self) -> Iterator[None]:
        with self._mutex:
            if self._flock is None:
                self._flock = os.open(f"{self.database}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._flock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._flock, fcntl.LOCK_UN)

    def insert(self, key: str, body: bytes) -> None:
        now = dt.datetime.now(dt.UTC)
        conn = self._connection()
        if self.postgres:
            conn.execute(_PG_INSERT, (key, body, now))
            return
        with self._writer():
            # autocommit: one statement, one transaction, committed (WAL
            # appended and, with synchronous=FULL, fsynced) before it returns
            conn.execute(_SQLITE_INSERT, (key, body, now.isoformat()))

    def settings(self) -> dict[str, str]:
        """The durability settings in force on this thread's connection."""
        conn = self._connection()
        if self.postgres:
            return {
                "synchronous_commit": str(conn.execute("SHOW synchronous_commit").fetchone()[0])
            }
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        level = conn.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"journal_mode": str(mode), "synchronous": names.get(int(level), str(level))}


_minimal: _MinimalJournal | None = None
_minimal_guard = threading.Lock()


def _minimal_journal() -> _MinimalJournal:
    global _minimal  # noqa: PLW0603 — one per gunicorn worker, made after its fork
    if _minimal is None:
        with _minimal_guard:
            if _minimal is None:
                _minimal = _MinimalJournal(
                    os.environ["BENCH_MINIMAL_DATABASE"],
                    os.environ["BENCH_MINIMAL_SECRET"],
                    os.environ.get("BENCH_MINIMAL_SYNCHRONOUS", "FULL"),
                )
    return _minimal


minimal_app = Flask("bench-minimal")


@minimal_app.post(BARE_PATH)
def _minimal_webhook(key: str) -> ResponseReturnValue:
    journal = _minimal_journal()
    given = request.headers.get(SECRET_HEADER, "").encode()
    if not hmac.compare_digest(given, journal.secret):
        return jsonify({"error": "forbidden"}), 403
    body = request.get_data()
    try:
        data = json.loads(body)
    except ValueError:
        return jsonify({"error": "not_json"}), 400
    update_id = data.get("update_id") if isinstance(data, dict) else None
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return jsonify({"error": "no_update_id"}), 400
    journal.insert(str(update_id), body)
    return jsonify({"ok": True})


@minimal_app.get("/healthz")
def _minimal_health() -> ResponseReturnValue:
    return jsonify(_minimal_journal().settings())


def _create_minimal_journal(database: str) -> None:
    if database.startswith(("postgresql:", "postgres:")):
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE {MINIMAL_TABLE} (id bigserial PRIMARY KEY, "
                "key text NOT NULL UNIQUE, body bytea NOT NULL, "
                "received_at timestamptz NOT NULL)"
            )
        return
    lite = sqlite3.connect(database, isolation_level=None)
    try:
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute(
            f"CREATE TABLE IF NOT EXISTS {MINIMAL_TABLE} (id INTEGER PRIMARY KEY, "
            "key TEXT NOT NULL UNIQUE, body BLOB NOT NULL, received_at TEXT NOT NULL)"
        )
    finally:
        lite.close()


def _minimal_database(database_url: str | None, workdir: Path) -> str:
    """Where the minimal endpoint journals: the bench's PostgreSQL schema
    (a libpq URI with the same search_path), or a SQLite file next to the
    bridge's."""
    if database_url and not database_url.startswith("sqlite"):
        return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", database_url)
    return str(workdir / "minimal.db")


# -- load generators ------------------------------------------------------------

WRK_SCRIPT = r"""
-- generated by bench/ingest.py: unique Telegram updates, 2xx counting
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  base = tonumber(args[1]) + tid * 10000000
  path = args[2]
  secret = args[3]
  users = tonumber(args[4])
  ok2 = 0
  other = 0
  headers = {["Content-Type"] = "application/json",
             ["X-Telegram-Bot-Api-Secret-Token"] = secret}
end

function request()
  counter = counter + 1
  local id = base + counter
  local user = 7000000 + (id % users)
  local body = string.format(
    '{"update_id":%d,"message":{"message_id":%d,"from":{"id":%d,"is_bot":false,' ..
    '"first_name":"Load","language_code":"en"},"chat":{"id":%d,"first_name":"Load",' ..
    '"type":"private"},"date":%d,"text":"load test message %d"}}',
    id, counter, user, user, os.time(), id)
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok2 = ok2 + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("ok2")
    bad = bad + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"ok_2xx":%d,"non_2xx":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p99_us":%d,"mean_us":%f}\n',
    summary.requests, summary.duration, ok, bad,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def _wrk(
    base_url: str,
    path: str,
    secret: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    first_id: int,
    users: int,
    script: Path,
) -> dict[str, Any]:
    threads = max(1, min(threads, connections))
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url,
        "--",
        str(first_id),
        path,
        secret,
        str(users),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60)  # noqa: S603
    match = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(match.group(1))
    duration = raw["duration_us"] / 1e6
    return {
        "rps": raw["requests"] / duration if duration else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "requests": raw["requests"],
        "ok_2xx": raw["ok_2xx"],
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["socket_errors"],
        "seconds": duration,
    }


def _py_worker(
    host: str,
    port: int,
    path: str,
    secret: str,
    first_id: int,
    users: int,
    threads: int,
    deadline: float,
    out: Any,
) -> None:
    import http.client
    import threading

    from bench.traffic import telegram_update

    lock = threading.Lock()
    lat: list[float] = []
    codes = {"ok_2xx": 0, "non_2xx": 0, "socket_errors": 0}

    def loop(slot: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        n = 0
        mine: list[float] = []
        ok = bad = err = 0
        while time.time() < deadline:
            n += 1
            uid = first_id + slot * 100_000 + n
            user = 7_000_000 + uid % users
            body = json.dumps(telegram_update(user, n, update_id=uid, first_name="Load"))
            t0 = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    path,
                    body,
                    {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret},
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                err += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            mine.append(time.perf_counter() - t0)
            if 200 <= resp.status < 300:
                ok += 1
            else:
                bad += 1
        conn.close()
        with lock:
            lat.extend(mine)
            codes["ok_2xx"] += ok
            codes["non_2xx"] += bad
            codes["socket_errors"] += err

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((lat, codes))


def _python_load(
    base_url: str,
    path: str,
    secret: str,
    *,
    seconds: float,
    connections: int,
    first_id: int,
    users: int,
    processes: int = 2,
) -> dict[str, Any]:
    from urllib.parse import urlparse

    parsed = urlparse(base_url)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start = time.time()
    deadline = start + seconds
    per = [
        connections // processes + (1 if i < connections % processes else 0)
        for i in range(processes)
    ]
    procs = [
        ctx.Process(
            target=_py_worker,
            args=(
                parsed.hostname,
                parsed.port,
                path,
                secret,
                first_id + i * 10_000_000,
                users,
                n,
                deadline,
                out,
            ),
        )
        for i, n in enumerate(per)
        if n
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    wall = time.time() - start
    lat = [x for r, _ in results for x in r]
    codes = {k: sum(c[k] for _, c in results) for k in ("ok_2xx", "non_2xx", "socket_errors")}
    return {
        "rps": len(lat) / wall if wall else 0.0,
        "p50_ms": (percentile(lat, 50) or 0) * 1000,
        "p99_ms": (percentile(lat, 99) or 0) * 1000,
        "mean_ms": (sum(lat) / len(lat) * 1000) if lat else 0.0,
        "requests": len(lat),
        "seconds": wall,
        **codes,
    }


def _paced_worker(
    host: str,
    port: int,
    path: str,
    secret: str,
    first_id: int,
    users: int,
    slots: list[int],
    total_slots: int,
    rate: float,
    start: float,
    seconds: float,
    out: Any,
) -> None:
    """Open-loop load: slot ``s`` of ``total_slots`` sends request ``k`` at
    ``start + (s + k * total_slots) / rate``; latency counts from that due
    time, so a request sent late because the previous answer was slow is
    measured from when it should have gone (no coordinated omission)."""
    import http.client

    from bench.traffic import telegram_update

    lock = threading.Lock()
    lat: list[float] = []
    codes = {"ok_2xx": 0, "non_2xx": 0, "socket_errors": 0}
    end = start + seconds

    def loop(slot: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        mine: list[float] = []
        ok = bad = err = 0
        k = 0
        while True:
            due = start + (slot + k * total_slots) / rate
            if due >= end:
                break
            k += 1
            uid = first_id + slot * 1_000_000 + k
            user = 7_000_000 + uid % users
            body = json.dumps(telegram_update(user, k, update_id=uid, first_name="Load"))
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            try:
                conn.request(
                    "POST",
                    path,
                    body,
                    {"Content-Type": "application/json", SECRET_HEADER: secret},
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                err += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            mine.append(time.time() - due)
            if 200 <= resp.status < 300:
                ok += 1
            else:
                bad += 1
        conn.close()
        with lock:
            lat.extend(mine)
            codes["ok_2xx"] += ok
            codes["non_2xx"] += bad
            codes["socket_errors"] += err

    pool = [threading.Thread(target=loop, args=(s,)) for s in slots]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((lat, codes))


def _paced_load(
    base_url: str,
    path: str,
    secret: str,
    *,
    rate: float,
    seconds: float,
    connections: int,
    first_id: int,
    users: int,
    processes: int = 2,
) -> dict[str, Any]:
    """``rate`` requests per second, spread over ``connections`` threads in
    ``processes`` client processes, for ``seconds``."""
    from urllib.parse import urlparse

    parsed = urlparse(base_url)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 0.5  # every process forked and ready first
    groups = [list(range(connections))[i::processes] for i in range(processes)]
    procs = [
        ctx.Process(
            target=_paced_worker,
            args=(
                parsed.hostname,
                parsed.port,
                path,
                secret,
                first_id,
                users,
                slots,
                connections,
                rate,
                start,
                seconds,
                out,
            ),
        )
        for slots in groups
        if slots
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    lat = [x for r, _ in results for x in r]
    codes = {k: sum(c[k] for _, c in results) for k in ("ok_2xx", "non_2xx", "socket_errors")}
    return {
        "rate": rate,
        "rps": len(lat) / seconds if seconds else 0.0,
        "p50_ms": (percentile(lat, 50) or 0) * 1000,
        "p99_ms": (percentile(lat, 99) or 0) * 1000,
        "max_ms": max(lat, default=0.0) * 1000,
        "requests": len(lat),
        "seconds": seconds,
        **codes,
    }


# -- measuring -----------------------------------------------------------------


def _cpu_seconds(pids: list[int]) -> float:
    """user+system CPU seconds of ``pids`` and their children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            stat = (Path("/proc") / str(pid) / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        todo += _child_pids(pid)
    return total


def _child_pids(pid: int) -> list[int]:
    from bench.stack import _children

    return _children(pid)


def _fsync_ms(directory: Path, n: int = 100) -> float | None:
    path = directory / "fsync.probe"
    times = []
    with open(path, "wb") as fh:
        for _ in range(n):
            fh.write(b"x" * 4096)
            fh.flush()
            t0 = time.perf_counter()
            os.fsync(fh.fileno())
            times.append((time.perf_counter() - t0) * 1000)
    path.unlink()
    return percentile(times, 50)


class Target:
    """One server under load: its URL, its webhook path and secret, and the
    pids whose CPU time we account."""

    def __init__(self, name: str, base_url: str, path: str, secret: str, pids: list[int]) -> None:
        self.name, self.base_url, self.path, self.secret, self.pids = (
            name,
            base_url,
            path,
            secret,
            pids,
        )


def measure(
    target: Target, args: argparse.Namespace, first_id: int, script: Path | None
) -> dict[str, Any]:
    def load(seconds: float, start_id: int) -> dict[str, Any]:
        if script is not None:
            return _wrk(
                target.base_url,
                target.path,
                target.secret,
                seconds=seconds,
                connections=args.connections,
                threads=args.wrk_threads,
                first_id=start_id,
                users=args.users,
                script=script,
            )
        return _python_load(
            target.base_url,
            target.path,
            target.secret,
            seconds=seconds,
            connections=args.connections,
            first_id=start_id,
            users=args.users,
        )

    warm = load(args.warmup, first_id) if args.warmup > 0 else {"ok_2xx": 0}
    cpu0, t0 = _cpu_seconds(target.pids), time.monotonic()
    result = load(args.seconds, first_id + 50_000_000)
    cpu1, t1 = _cpu_seconds(target.pids), time.monotonic()
    result["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / (t1 - t0)
    result["warmup_2xx"] = warm["ok_2xx"]
    result["cpu_ms_per_request"] = (
        (cpu1 - cpu0) * 1000.0 / result["requests"] if result["requests"] else None
    )
    return result


def _start_app(
    web_args: list[str],
    port: int,
    workdir: Path,
    app: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``app`` served by gunicorn with the bridge's command line; only the
    bind address and the app differ."""
    from bench.stack import ROOT

    args = list(web_args)
    args[args.index("--bind") + 1] = f"127.0.0.1:{port}"
    args[args.index("wsgi:app")] = app
    log = open(workdir / f"{app.rsplit(':', 1)[-1]}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(  # noqa: S603
        args,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the bridge's ingest journal (read-only, from the bench) ----------------------


class Journal:
    """Reads of the bridge's ``deliveries`` table: ids grow with arrival,
    ``received_at`` is stamped by the webhook before its commit (and 2xx),
    ``normalised_at`` by the normaliser."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine

        self.engine = create_engine(database_url)
        self.table = Table(
            "deliveries",
            MetaData(),
            Column("id", Integer, primary_key=True),
            Column("state", String(16)),
            Column("received_at", DateTime(timezone=True)),
            Column("normalised_at", DateTime(timezone=True)),
        )

    def present(self) -> bool:
        from sqlalchemy import inspect

        return bool(inspect(self.engine).has_table("deliveries"))

    def _where(self, after: int, upto: int | None) -> Any:
        c = self.table.c
        return c.id > after if upto is None else (c.id > after) & (c.id <= upto)

    def last_id(self) -> int:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(self.table.c.id))).scalar() or 0)

    def states(self, after: int = 0, upto: int | None = None) -> dict[str, int]:
        from sqlalchemy import func, select

        c = self.table.c
        query = select(c.state, func.count()).where(self._where(after, upto)).group_by(c.state)
        with self.engine.connect() as conn:
            return {str(state): int(n) for state, n in conn.execute(query)}

    def timings(self, after: int = 0, upto: int | None = None) -> list[tuple[float, float]]:
        """(received_at, normalised_at) in seconds of every row that is done."""
        from sqlalchemy import select

        c = self.table.c
        query = select(c.received_at, c.normalised_at).where(
            self._where(after, upto) & c.normalised_at.is_not(None)
        )
        with self.engine.connect() as conn:
            return [(_seconds(r), _seconds(n)) for r, n in conn.execute(query)]

    def wait_done(self, after: int, upto: int | None, timeout: float, proc: Any = None) -> int:
        """Wait until no row in the range is ``new``; the rows still new."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.states(after, upto).get("new", 0)
            if left == 0 or time.monotonic() >= deadline:
                return left
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}")
            time.sleep(0.5)

    def close(self) -> None:
        self.engine.dispose()


def _seconds(value: dt.datetime) -> float:
    # SQLite returns the stored UTC time without its zone
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _count_stored(database_url: str, journal: bool) -> int:
    """Journal rows (the webhook's one write), or before the journal the
    inbound messages the webhook stored."""
    from sqlalchemy import create_engine, text

    query = (
        "SELECT count(*) FROM deliveries"
        if journal
        else "SELECT count(*) FROM messages WHERE direction = 'in'"
    )
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar() or 0)
    finally:
        engine.dispose()


def ingest_worker() -> None:
    """An RQ worker on the ingest queue alone (``--worker ingest``): the
    normaliser with no CRM sync job in its way. Set up as ``bridge worker``
    sets up its own (runtime, preloaded adapters), without the sweeper."""
    from rq import Worker

    from bridge.config import Settings
    from bridge.jobs import INGEST_QUEUE
    from bridge.runtime import Runtime, set_runtime
    from bridge.worker import _preload

    _preload()
    runtime = Runtime(Settings.from_env())
    set_runtime(runtime)
    worker = Worker(
        [runtime.queues[INGEST_QUEUE]], connection=runtime.redis, log_job_description=False
    )
    worker.work(logging_level="INFO", with_scheduler=False)


def _start_worker(stack: Any, kind: str) -> subprocess.Popen[bytes]:
    """``bridge worker`` (``kind="bridge"``: normaliser first, then the CRM
    sync jobs it queues) or an ingest-only worker; either is stopped with
    the stack."""
    if kind == "bridge":
        proc: subprocess.Popen[bytes] = stack.start_worker()
        return proc
    from bench.stack import ROOT

    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "bench.ingest", "--ingest-worker"],
        cwd=ROOT,
        env=stack.env(),
        stdout=stack._log(f"worker{len(stack.worker_procs)}"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.worker_procs.append(proc)
    return proc


def drain(journal: Journal, stack: Any, upto: int, timeout: float, kind: str) -> dict[str, Any]:
    """Start one worker process on the journal the saturation phase left
    and time it: deliveries per second from the first ``normalised_at`` to
    the last."""
    worker = _start_worker(stack, kind)
    left = journal.wait_done(0, upto, timeout, proc=worker)
    done = sorted(n for _, n in journal.timings(0, upto))
    seconds = done[-1] - done[0] if len(done) > 1 else 0.0
    return {
        "deliveries": len(done),
        "seconds": seconds,
        "per_s": (len(done) - 1) / seconds if seconds else None,
        "left_new": left,
        "states": journal.states(0, upto),
    }


def lag(journal: Journal, after: int, backlog: int, timeout: float) -> dict[str, Any]:
    """The half-rate phase's deliveries (ids above ``after``): how long
    each waited between its 2xx and ``normalised``."""
    unfinished = journal.wait_done(after, None, timeout)
    rows = journal.timings(after)
    lags = [n - r for r, n in rows]
    span = max(n for _, n in rows) - min(r for r, _ in rows) if rows else 0.0
    return {
        "backlog_at_start": backlog,
        "deliveries": len(rows) + unfinished,
        "unfinished": unfinished,
        "per_s": len(rows) / span if span else None,
        "lag_p50_ms": (percentile(lags, 50) or 0) * 1000 if lags else None,
        "lag_p99_ms": (percentile(lags, 99) or 0) * 1000 if lags else None,
        "lag_max_ms": max(lags) * 1000 if lags else None,
    }


def _gunicorn_shape(args: list[str]) -> str:
    def opt(name: str, default: str) -> str:
        return args[args.index(name) + 1] if name in args else default

    return f"{opt('--workers', '1')}x{opt('--threads', '1')} {opt('--worker-class', 'sync')}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import requests

    from bench.stack import Stack, _wait_http, free_port

    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk (or --generator python)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    script = None
    if generator == "wrk":
        script = workdir / "telegram.lua"
        script.write_text(WRK_SCRIPT)
    figures: dict[str, Any] = {}
    try:
        with postgres_schema(args.database_url) as database_url:
            stack = Stack(
                workdir=workdir / "stack",
                database_url=database_url,
                workers=0,
                web_workers=args.web_workers,
            )
            servers: list[subprocess.Popen[bytes]] = []
            journal: Journal | None = None
            try:
                stack.start(seed=True)
                bridge_db = stack.env()["DATABASE_URL"]
                url, secret = stack.telegram_webhook()
                path = url[len(stack.bridge_url) :]
                web = stack.procs["web"]
                web_args = [str(a) for a in web.args]  # type: ignore[union-attr]
                journal = Journal(bridge_db)
                has_journal = journal.present()

                bare_port, minimal_port = free_port(), free_port()
                bare = _start_app(web_args, bare_port, workdir, "bench.ingest:bare_app")
                servers.append(bare)
                minimal_db = _minimal_database(database_url, workdir / "stack")
                _create_minimal_journal(minimal_db)
                minimal = _start_app(
                    web_args,
                    minimal_port,
                    workdir,
                    "bench.ingest:minimal_app",
                    {
                        "BENCH_MINIMAL_DATABASE": minimal_db,
                        "BENCH_MINIMAL_SECRET": secret,
                        "BENCH_MINIMAL_SYNCHRONOUS": args.minimal_synchronous,
                    },
                )
                servers.append(minimal)
                _wait_http(f"http://127.0.0.1:{bare_port}/healthz", proc=bare)
                _wait_http(f"http://127.0.0.1:{minimal_port}/healthz", proc=minimal)
                minimal_settings = requests.get(
                    f"http://127.0.0.1:{minimal_port}/healthz", timeout=10
                ).json()
                targets = [
                    Target("bare", f"http://127.0.0.1:{bare_port}", path, secret, [bare.pid]),
                    Target(
                        "minimal", f"http://127.0.0.1:{minimal_port}", path, secret, [minimal.pid]
                    ),
                    Target("bridge", stack.bridge_url, path, secret, [web.pid]),
                ]
                rounds: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
                # 1. saturation
                for r in range(args.rounds):
                    for target in targets:
                        # ids never repeat on a target: 100M apart per round
                        first_id = 100_000_000 * (r + 1)
                        rounds[target.name].append(measure(target, args, first_id, script))
                for server in servers:
                    _stop(server)
                bridge_stored = _count_stored(bridge_db, has_journal)
                best = {name: _median_round(items) for name, items in rounds.items()}

                first_id = 100_000_000 * (args.rounds + 1)

                # 2. half rate, no worker: the ack alone (--rounds times, the
                # median round by p99)
                halves = [
                    _paced_load(
                        stack.bridge_url,
                        path,
                        secret,
                        rate=args.half_rate or best["bridge"]["rps"] / 2,
                        seconds=args.half_seconds,
                        connections=args.connections,
                        first_id=first_id + r * 10_000_000,
                        users=args.users,
                    )
                    for r in range(args.rounds)
                ]
                half = sorted(halves, key=lambda x: x["p99_ms"])[len(halves) // 2]
                half["p99_rounds_ms"] = [x["p99_ms"] for x in halves]

                # 3. drain: one worker normalises what phases 1-2 journaled
                # 4. half rate again, that worker normalising as it goes
                normaliser: dict[str, Any] | None = None
                half_normalising: dict[str, Any] | None = None
                if has_journal and args.normaliser:
                    normaliser = {
                        "workers": 1,
                        "worker": args.worker,
                        "drain": drain(
                            journal, stack, journal.last_id(), args.drain_timeout, args.worker
                        ),
                    }
                    after = journal.last_id()
                    backlog = journal.states().get("new", 0)
                    half_normalising = _paced_load(
                        stack.bridge_url,
                        path,
                        secret,
                        rate=args.half_rate or best["bridge"]["rps"] / 2,
                        seconds=args.half_seconds,
                        connections=args.connections,
                        first_id=first_id + 100_000_000,
                        users=args.users,
                    )
                    normaliser["load"] = lag(journal, after, backlog, args.drain_timeout)
                fsync = _fsync_ms(workdir)
            finally:
                for server in servers:
                    _stop(server)
                if journal is not None:
                    journal.close()
                stack.close()
        figures = {
            "bench": "ingest",
            "generator": generator,
            "database": "postgresql"
            if database_url and not database_url.startswith("sqlite")
            else "sqlite",
            "seconds": args.seconds,
            "connections": args.connections,
            "users": args.users,
            "rounds": args.rounds,
            "gunicorn": _gunicorn_shape(web_args),
            "cores": os.cpu_count(),
            **{name: _rounded(best[name]) for name in ("bare", "minimal", "bridge")},
            "ratio_minimal": _ratio(best["bridge"], best["minimal"]),
            "target_ratio_minimal": TARGET_RATIO,
            "ratio_bare": _ratio(best["bridge"], best["bare"]),
            "minimal_over_bare": _ratio(best["minimal"], best["bare"]),
            "durability": {
                "minimal": minimal_settings,
                "minimal_writer_lock": None
                if "synchronous_commit" in minimal_settings
                else "mutex+flock",
            },
            "journal": has_journal,
            "half_rate": _rounded_tree(half),
            "half_rate_normalising": _rounded_tree(half_normalising),
            "target_p99_ms": TARGET_P99_MS,
            "normaliser": _rounded_tree(normaliser),
            "bridge_stored": bridge_stored,
            "bridge_answered_2xx": sum(x["ok_2xx"] + x["warmup_2xx"] for x in rounds["bridge"]),
            "fsync_ms_p50": rnd(fsync, 3),
        }
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return rnd(a["rps"] / b["rps"], 3) if b["rps"] else None


def _rounded_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded_tree(v) for v in value]
    return rnd(value, 2) if isinstance(value, float) else value


def _median_round(items: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(items, key=lambda x: x["rps"])
    return ordered[len(ordered) // 2]


def _rounded(result: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "rps",
        "p50_ms",
        "p99_ms",
        "mean_ms",
        "requests",
        "ok_2xx",
        "non_2xx",
        "socket_errors",
        "server_cpu_pct",
        "cpu_ms_per_request",
    )
    return {k: (rnd(result[k], 2) if isinstance(result[k], float) else result[k]) for k in keys}


def _verdict(ok: bool) -> str:
    return "meets" if ok else "below"


def render(f: dict[str, Any]) -> str:
    rows = []
    labels = (
        ("bare", "bare Flask endpoint (no storage)"),
        ("minimal", "minimal durable endpoint"),
        ("bridge", "bridge /webhooks/telegram"),
    )
    for name, label in labels:
        t = f[name]
        rows.append(
            [
                label,
                t["rps"],
                t["p50_ms"],
                t["p99_ms"],
                t["ok_2xx"],
                t["non_2xx"] + t["socket_errors"],
                round(t["server_cpu_pct"]),
                t["cpu_ms_per_request"],
            ]
        )
    title = (
        f"Webhook accept — {f['generator']}, {f['connections']} connections, {f['seconds']:g} s, "
        f"gunicorn {f['gunicorn']}, {f['database']}, {f['users']} chats, "
        f"{f['cores']} cores, median of {f['rounds']} round(s)"
    )
    out = table(
        title,
        ["target", "req/s", "p50 ms", "p99 ms", "2xx", "non-2xx/err", "server CPU %", "CPU ms/req"],
        rows,
    )
    ratio = f["ratio_minimal"]
    durability = ", ".join(f"{k}={v}" for k, v in f["durability"]["minimal"].items())
    if f["durability"]["minimal_writer_lock"]:
        durability += ", writers queued on a mutex + flock"
    out += (
        f"\nbridge / minimal durable = {ratio:.3f}x (target >= {f['target_ratio_minimal']}x: "
        f"{_verdict(ratio is not None and ratio >= f['target_ratio_minimal'])})"
        f"\nbridge / bare = {f['ratio_bare']:.3f}x; minimal / bare = {f['minimal_over_bare']:.3f}x"
        f"\nminimal endpoint's durability: {durability}"
        f"\nCPU per request over storing the bytes: bridge "
        f"{f['bridge']['cpu_ms_per_request']} ms vs minimal {f['minimal']['cpu_ms_per_request']} ms"
        f"\nbridge: {f['bridge_stored']} "
        + ("journal rows" if f["journal"] else "messages")
        + f" stored, {f['bridge_answered_2xx']} 2xx counted in warm-up + runs (stored >= "
        "counted: requests in flight when the load stops are stored, not counted)"
        f"\nfsync of a 4 KiB write on this disk: p50 {f['fsync_ms_p50']} ms"
    )
    for key, label in (("half_rate", "no worker"), ("half_rate_normalising", "1 worker")):
        h = f[key]
        if h is None:
            continue
        out += (
            f"\nhalf rate, {label}: {h['rate']:.0f} req/s asked, {h['rps']:.0f} answered, "
            f"{h['non_2xx'] + h['socket_errors']} non-2xx/err, ack p50 {h['p50_ms']} ms, "
            f"p99 {h['p99_ms']} ms, max {h['max_ms']} ms (target p99 < "
            f"{f['target_p99_ms']:g} ms: {_verdict(h['p99_ms'] < f['target_p99_ms'])})"
        )
        if len(h.get("p99_rounds_ms") or []) > 1:
            out += f"; p99 of each round: {h['p99_rounds_ms']} ms"
    n = f["normaliser"]
    if n is not None:
        d, ld = n["drain"], n["load"]
        out += (
            f"\nnormaliser (1 worker process, {n['worker']}): drained {d['deliveries']} "
            f"deliveries in {d['seconds']} s = {d['per_s']} deliveries/s "
            f"({d['left_new']} left new; states {d['states']})"
            f"\nnormaliser during the half-rate load: {ld['deliveries']} deliveries, "
            f"{ld['unfinished']} unfinished, backlog at start {ld['backlog_at_start']}, "
            f"{ld['per_s']} normalised/s; "
            f"lag 2xx -> normalised p50 {ld['lag_p50_ms']} ms, p99 {ld['lag_p99_ms']} ms, "
            f"max {ld['lag_max_ms']} ms"
        )
    elif not f["journal"]:
        out += (
            "\nnormaliser: the bridge has no ingest journal (no deliveries table): it parses "
            "in the request; no normaliser figures"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured load per target (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="load before measuring (default 3)"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="concurrent connections (default 16)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--users", type=int, default=200, help="distinct Telegram chats (default 200)"
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate the targets' runs; median (default 1)"
    )
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--minimal-synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="SQLite synchronous of the minimal endpoint (default FULL, the bridge's; "
        "NORMAL is not durable on power loss)",
    )
    parser.add_argument(
        "--half-seconds",
        type=float,
        default=15.0,
        help="paced load at half the bridge's rate (default 15)",
    )
    parser.add_argument(
        "--half-rate",
        type=float,
        default=None,
        help="the paced load's rate in req/s (default: half the bridge's saturation rate)",
    )
    parser.add_argument(
        "--no-normaliser",
        dest="normaliser",
        action="store_false",
        help="run no worker (no drain, half rate without normaliser)",
    )
    parser.add_argument(
        "--worker",
        choices=("ingest", "bridge"),
        default="ingest",
        help="the normaliser's process: an RQ worker on the ingest queue alone (default) or "
        "`bridge worker` (CRM sync jobs too: the lag then waits for the sync job in hand)",
    )
    parser.add_argument("--ingest-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=180.0,
        help="longest wait for the worker to drain the journal (default 180)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (a fresh schema is made and dropped); default SQLite",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.ingest_worker:
        ingest_worker()
        return 0
    figures = run(args)
    print(render(figures), flush=True)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
