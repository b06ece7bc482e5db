"""``python -m bench.metrics [--json] [--observations N] [--series 0,100,1000,10000]
[--database-url URL]``: what the metrics cost (``bridge.metrics``, ``GET /metrics``).

Against a redis-server this bench starts itself (TCP on 127.0.0.1, AOF
every second, as in production) and a throw-away database (SQLite by
default):

* **record**: one observation as the pipeline makes it, on the calling
  thread, with the flusher thread running (a CRM call: one counter; a
  message synced: a counter and a histogram; a delivery stored: two
  counters): microseconds of wall and CPU time per call, calls per second;
  the totals are checked in Redis afterwards;
* **direct**: the same observations, each sent at once in its own pipelined
  round trip from the calling thread (the design the buffer replaces);
* **end to end**: four threads recording CRM calls as fast as they can,
  until everything is in Redis: observations per second and the Redis
  commands each cost (INFO commandstats);
* **scrape**: ``render()`` (what ``GET /metrics`` serves, without Flask) with
  N counter series and N/10 histogram series stored, plus the state read
  from Redis and the database (0 series: that state alone): p50 and max of
  7 renders, lines and bytes.

With ``--json`` the last line on stdout is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from bench.report import emit_json, postgres_schema, rnd, table
from bench.stack import RedisServer
from bridge import metrics
from bridge.config import Settings
from bridge.metrics_web import render
from bridge.migrate import upgrade
from bridge.model import utcnow
from bridge.runtime import Runtime

THREADS = 4


@contextmanager
def bench_runtime(database_url: str | None) -> Iterator[Runtime]:
    """A runtime on a fresh redis-server and a migrated throw-away database."""
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis")
        server.start()
        try:
            with postgres_schema(database_url) as url:
                settings = Settings.from_env(
                    env={
                        "DATABASE_URL": url or f"sqlite:///{work / 'bridge.db'}",
                        "REDIS_URL": server.url,
                        "BRIDGE_VAR_DIR": str(work / "var"),
                    }
                )
                runtime = Runtime(settings)
                upgrade(runtime.engine)
                try:
                    yield runtime
                finally:
                    metrics.flush()
                    runtime.close()
        finally:
            server.stop()


def _timed(n: int, call: Callable[[int], None]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    for i in range(n):
        call(i)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return {"us_per_call": wall / n * 1e6, "cpu_us_per_call": cpu / n * 1e6, "per_s": n / wall}


def _observations(conn: redis.Redis) -> dict[str, Callable[[int], None]]:
    stored = utcnow()
    return {
        "crm call (counter)": lambda i: metrics.crm_call(conn, "crmx", i % 5, 200),
        "message synced (counter + histogram)": lambda i: metrics.synced(
            conn, "chan", "crmx", i % 5, [stored]
        ),
        "delivery stored (2 counters)": lambda i: metrics.ingested(conn, "chan", i % 5, 1, 1),
    }


def measure_record(runtime: Runtime, n: int) -> dict[str, Any]:
    conn = runtime.redis
    conn.flushdb()
    metrics.forget_tenants()
    out: dict[str, Any] = {}
    for name, call in _observations(conn).items():
        call(0)  # the tenant labels asked for once, before the clock runs
        metrics.flush()
        out[name] = _timed(n, call)
    metrics.flush()
    synced = conn.hgetall(metrics.SYNC_MESSAGES.key)
    calls = conn.hgetall(metrics.CRM_CALLS.key)
    out["counted"] = (
        sum(int(v) for v in calls.values()) == n + 1
        and sum(int(v) for v in synced.values()) == n + 1
    )
    return out


def measure_direct(runtime: Runtime, n: int) -> dict[str, Any]:
    """Each observation in its own pipelined round trip (the fields a flush
    would send for it alone)."""
    conn = runtime.redis
    conn.flushdb()

    def counter(i: int) -> None:
        with conn.pipeline(transaction=False) as pipe:
            pipe.hincrby(metrics.CRM_CALLS.key, f"crmx|ok|{i % 5}", 1)
            pipe.execute()

    def histogram(i: int) -> None:
        with conn.pipeline(transaction=False) as pipe:
            pipe.hincrby(metrics.SYNC_MESSAGES.key, f"chan|crmx|{i % 5}", 1)
            pipe.hincrby(metrics.SYNC_LATENCY.key, "chan|crmx#le=0.25", 1)
            pipe.hincrbyfloat(metrics.SYNC_LATENCY.key, "chan|crmx#sum", 0.2)
            pipe.execute()

    return {
        "crm call (counter)": _timed(n, counter),
        "message synced (counter + histogram)": _timed(n, histogram),
    }


def _commands(conn: redis.Redis) -> int:
    stats = conn.info("commandstats")
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if k in ("cmdstat_hincrby", "cmdstat_hincrbyfloat")
    )


def measure_end_to_end(runtime: Runtime, n: int) -> dict[str, Any]:
    conn = runtime.redis
    conn.flushdb()
    metrics.crm_call(conn, "crmx", 0, 200)
    metrics.flush()
    commands = _commands(conn)
    per_thread = n // THREADS

    def work() -> None:
        for i in range(per_thread):
            metrics.crm_call(conn, "crmx", i % 5, 200)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics.flush()
    elapsed = time.perf_counter() - started
    total = sum(int(v) for v in conn.hgetall(metrics.CRM_CALLS.key).values()) - 1
    return {
        "threads": THREADS,
        "observations": per_thread * THREADS,
        "counted": total == per_thread * THREADS,
        "per_s": per_thread * THREADS / elapsed,
        "redis_commands_per_observation": (_commands(conn) - commands) / (per_thread * THREADS),
    }


def _fill(conn: redis.Redis, series: int) -> None:
    """``series`` counter series (CRM calls of many CRMs and tenants) and a
    tenth as many histogram series (sync latency), written straight into
    their hashes."""
    conn.flushdb()
    with conn.pipeline(transaction=False) as pipe:
        for i in range(series):
            pipe.hset(metrics.CRM_CALLS.key, f"crm{i // 100}|ok|{i % 100}", i + 1)
        for i in range(series // 10):
            for bound in metrics.SYNC_BUCKETS[::3]:
                pipe.hset(metrics.SYNC_LATENCY.key, f"chan{i}|crm{i % 7}#le={bound!r}", 3)
            pipe.hset(metrics.SYNC_LATENCY.key, f"chan{i}|crm{i % 7}#sum", 12.5)
        pipe.execute()


def measure_scrape(runtime: Runtime, sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    for series in sizes:
        _fill(runtime.redis, series)
        times, body = [], b""
        for _ in range(7):
            started = time.perf_counter()
            body, _ = render(runtime)
            times.append((time.perf_counter() - started) * 1000)
        out.append(
            {
                "counter_series": series,
                "histogram_series": series // 10,
                "lines": body.count(b"\n"),
                "bytes": len(body),
                "p50_ms": statistics.median(times),
                "max_ms": max(times),
            }
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.series.split(",") if s.strip()]
    with bench_runtime(args.database_url) as runtime:
        figures = {
            "database": runtime.engine.dialect.name,
            "observations": args.observations,
            "record": measure_record(runtime, args.observations),
            "direct": measure_direct(runtime, max(1, args.observations // 10)),
            "end_to_end": measure_end_to_end(runtime, args.observations),
            "scrape": measure_scrape(runtime, sizes),
        }
    return figures


def _print(figures: dict[str, Any]) -> None:
    rows = []
    for name, f in figures["record"].items():
        if name == "counted":
            continue
        direct = figures["direct"].get(name)
        rows.append(
            [
                name,
                rnd(f["us_per_call"]),
                rnd(f["cpu_us_per_call"]),
                round(f["per_s"]),
                rnd(direct["us_per_call"]) if direct else None,
                rnd(direct["cpu_us_per_call"]) if direct else None,
            ]
        )
    print(
        table(
            f"Recording ({figures['observations']:,} calls each; buffered, flusher running; "
            f"counted right: {figures['record']['counted']})",
            ["observation", "µs/call", "CPU µs", "calls/s", "direct µs", "direct CPU µs"],
            rows,
        )
    )
    e2e = figures["end_to_end"]
    print(
        f"\nEnd to end: {e2e['threads']} threads, {e2e['observations']:,} observations in Redis "
        f"at {e2e['per_s']:,.0f}/s, {e2e['redis_commands_per_observation']:.4f} Redis "
        f"commands each (counted right: {e2e['counted']})\n"
    )
    print(
        table(
            f"Scrape (render, {figures['database']}: counters, histograms, queue and DB state)",
            ["counter series", "histogram series", "lines", "bytes", "p50 ms", "max ms"],
            [
                [
                    s["counter_series"],
                    s["histogram_series"],
                    s["lines"],
                    s["bytes"],
                    rnd(s["p50_ms"]),
                    rnd(s["max_ms"]),
                ]
                for s in figures["scrape"]
            ],
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON line of the figures")
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--series", default="0,100,1000,10000")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    figures = run(args)
    _print(figures)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
