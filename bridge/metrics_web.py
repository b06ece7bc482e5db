"""``GET /metrics``: the bridge's metrics in the Prometheus text format.

:class:`Collector` (a ``prometheus_client`` custom collector) renders, at
scrape time,

* the counters and histograms every process keeps in Redis
  (:mod:`bridge.metrics`: ingest, the journal's lag, CRM calls, the sync's
  latency, rate-limit waits, outbound deliveries, SLA alerts, the sweeper);
* state read now: jobs per RQ queue (queued, started, failed), live
  workers (heartbeats), journal rows waiting to be parsed and the oldest
  one's age, conversations pending or parked per direction (the outbox).

Any process serves the whole picture: the counters are shared, the state
is read from Redis and the database. A source that does not answer leaves
its series out and says so in ``bridge_metrics_source_up``.

With ``BRIDGE_METRICS_TOKEN`` set, the endpoint wants
``Authorization: Bearer <token>`` (401 otherwise); unset, it is open (put
it behind the network's own fence).
"""

from __future__ import annotations

import bisect
import hmac
import logging
import os
import time
from collections.abc import Iterator, Mapping

import redis
from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from bridge import __version__, metrics
from bridge.runtime import Runtime, app_runtime

__all__ = ["Collector", "bp", "render"]

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

#: the queue registries counted per queue: state label -> Redis key of a queue name
_QUEUE_STATES = {"started": "rq:wip:{}", "failed": "rq:failed:{}"}


class Collector:
    """Renders the shared counters and the state at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        """Every family, in a fixed order."""
        up = GaugeMetricFamily(
            "bridge_metrics_source_up",
            "1 when the source answered this scrape (redis: the counters and queues; "
            "database: the journal and outbox gauges), else 0.",
            labels=["source"],
        )
        info = GaugeMetricFamily("bridge_build_info", "The running version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        redis_ok = True
        try:
            yield from self._shared()
            yield from self._queues()
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: Redis unreadable (%s)", type(exc).__name__)
            redis_ok = False
        up.add_metric(["redis"], 1 if redis_ok else 0)
        database_ok = True
        try:
            yield from self._database()
        except SQLAlchemyError as exc:
            log.warning("metrics: database unreadable (%s)", type(exc).__name__)
            database_ok = False
        up.add_metric(["database"], 1 if database_ok else 0)
        yield up

    # -- the shared counters ---------------------------------------------------

    def _shared(self) -> Iterator[Metric]:
        metrics.flush()  # this process's own observations first
        stored = metrics.read_families(self.runtime.redis)
        families: list[Metric] = []
        for family in metrics.FAMILIES:
            if family.kind == "counter":
                families.append(_counter(family, stored[family]))
            else:
                families.append(_histogram(family, stored[family]))
        yield from families  # only once every read answered

    # -- state read now ----------------------------------------------------------

    def _queues(self) -> Iterator[Metric]:
        from bridge.health import live_workers
        from bridge.queue import QUEUE_NAMES

        connection = self.runtime.redis
        with connection.pipeline(transaction=False) as pipe:
            for name in QUEUE_NAMES:
                pipe.llen(f"rq:queue:{name}")
                for key in _QUEUE_STATES.values():
                    pipe.zcard(key.format(name))
            answers = iter(pipe.execute())
        jobs = GaugeMetricFamily(
            "bridge_queue_jobs",
            "Jobs per RQ queue: queued (waiting), started (running, or abandoned "
            "until RQ cleans up), failed (RQ's failed registry).",
            labels=["queue", "state"],
        )
        for name in QUEUE_NAMES:
            jobs.add_metric([name, "queued"], int(next(answers)))
            for state in _QUEUE_STATES:
                jobs.add_metric([name, state], int(next(answers)))
        workers = GaugeMetricFamily(
            "bridge_workers_alive", "Workers whose heartbeat is fresh (bridge worker)."
        )
        workers.add_metric([], live_workers(connection))
        yield jobs
        yield workers

    def _database(self) -> Iterator[Metric]:
        from bridge.model import utcnow
        from bridge.tables import ChannelAccount, Delivery, DeliveryState, Outbox, OutboxState

        with self.runtime.read_engine.connect() as conn:
            journal = conn.execute(
                select(ChannelAccount.kind, func.count(), func.min(Delivery.received_at))
                .join(ChannelAccount, ChannelAccount.id == Delivery.channel_account_id)
                .where(Delivery.state == DeliveryState.NEW.value)
                .group_by(ChannelAccount.kind)
            ).all()
            outbox = conn.execute(
                select(Outbox.direction, Outbox.state, func.count())
                .where(Outbox.state.in_((OutboxState.PENDING.value, OutboxState.PARKED.value)))
                .group_by(Outbox.direction, Outbox.state)
            ).all()
        waiting = GaugeMetricFamily(
            "bridge_journal_waiting",
            "Ingest journal rows stored and not parsed yet, per channel.",
            labels=["channel"],
        )
        oldest = GaugeMetricFamily(
            "bridge_journal_oldest_waiting_seconds",
            "Age of the oldest journal row not parsed yet (0: none waits).",
        )
        now = utcnow().timestamp()
        ages = [0.0]
        for kind, count, first in journal:
            waiting.add_metric([metrics.label_value(kind)], int(count))
            if first is not None:
                ages.append(now - metrics.epoch(first))
        oldest.add_metric([], max(ages))
        conversations = GaugeMetricFamily(
            "bridge_outbox_conversations",
            "Conversations with work pending (queued, running or backing off) or "
            "parked (a failed message, a tenant to re-authorise: `bridge replay`), "
            "per direction.",
            labels=["direction", "state"],
        )
        seen = {(str(d), str(s)): int(n) for d, s, n in outbox}
        for direction in ("in", "out", "ack", "report"):
            for state in (OutboxState.PENDING.value, OutboxState.PARKED.value):
                conversations.add_metric([direction, state], seen.pop((direction, state), 0))
        for (direction, state), count in sorted(seen.items()):
            conversations.add_metric([metrics.label_value(direction), state], count)
        yield waiting
        yield oldest
        yield conversations


def _split(field: str, width: int) -> tuple[str, ...] | None:
    values = tuple(field.split("|")) if width else ()
    if width == 0 and field:
        return None
    return values if len(values) == width else None


def _counter(family: metrics.Family, stored: Mapping[str, str]) -> CounterMetricFamily:
    out = CounterMetricFamily(family.name, family.help, labels=list(family.labels))
    for field, value in sorted(stored.items()):
        values = _split(field, len(family.labels))
        if values is not None:
            out.add_metric(list(values), float(value))
    return out


def _histogram(family: metrics.Family, stored: Mapping[str, str]) -> HistogramMetricFamily:
    """Buckets counted one each in Redis, added up here (``le`` cumulative);
    a bound no longer among the family's counts in the next one up."""
    bounds = [*family.buckets, float("inf")]
    series: dict[tuple[str, ...], tuple[list[float], float]] = {}
    for field, value in stored.items():
        labels_part, _, suffix = field.partition("#")
        values = _split(labels_part, len(family.labels))
        if values is None:
            continue
        counts, total = series.setdefault(values, ([0.0] * len(bounds), 0.0))
        if suffix == "sum":
            series[values] = (counts, total + float(value))
        elif suffix.startswith("le="):
            try:
                bound = float(suffix[3:])
            except ValueError:
                continue
            counts[bisect.bisect_left(bounds, bound)] += float(value)
    out = HistogramMetricFamily(family.name, family.help, labels=list(family.labels))
    for values in sorted(series):
        counts, total = series[values]
        cumulative, buckets = 0.0, []
        for bound, count in zip(bounds, counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        out.add_metric(list(values), buckets, total)
    return out


def render(runtime: Runtime, accept: str = "") -> tuple[bytes, str]:
    """The metrics of ``runtime``'s bridge and their content type: the
    Prometheus text format, or OpenMetrics when ``accept`` (the request's
    Accept header) asks for it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(runtime))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def _authorised() -> bool:
    token = os.environ.get("BRIDGE_METRICS_TOKEN", "")
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@bp.get("/metrics")
def metrics_endpoint() -> ResponseReturnValue:
    """The metrics, for Prometheus (bearer ``BRIDGE_METRICS_TOKEN`` when set)."""
    if not _authorised():
        response = jsonify(
            {
                "error": "unauthorized",
                "message": "send Authorization: Bearer <BRIDGE_METRICS_TOKEN>",
            }
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response, 401
    started = time.perf_counter()
    body, content_type = render(app_runtime(), request.headers.get("Accept", ""))
    log.debug("metrics rendered in %.1f ms", (time.perf_counter() - started) * 1000)
    return Response(body, content_type=content_type)
