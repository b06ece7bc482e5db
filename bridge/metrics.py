"""Prometheus metrics every process counts into one total, kept in Redis.

The web app runs as several gunicorn processes and the work as separate RQ
worker processes: a counter in one process's memory would see a fraction
of the work. So every process adds its observations to a few Redis hashes,
and ``GET /metrics`` (:mod:`bridge.metrics_web`) renders what they hold,
with the state read at scrape time (queues, the journal, the outbox).

Layout in Redis::

    bridge:metrics:<family>   hash  label values joined by "|" -> count
                                    (a histogram's bucket: "<labels>#le=<bound>",
                                    its sum: "<labels>#sum"; the buckets are
                                    not cumulative here, the scrape adds them up)
    bridge:metrics:tenants    set   the tenant ids that get a label of their own

**Recording** costs the caller a dict update under a lock: the observation
goes into this process's buffer, and a flusher thread sends whatever
gathered in one pipelined round trip (``HINCRBY`` / ``HINCRBYFLOAT``) at
most every :data:`FLUSH_DELAY` seconds. A process killed outright loses
what it gathered in its last ``FLUSH_DELAY``; one that exits flushes first.
Counting never breaks the pipeline: when Redis refuses a batch, the batch
is dropped and logged once (again only after a batch went through).

**Labels are bounded.** Channel and CRM kinds are the registries' slugs,
reasons and results are codes, and every label value is cut to
``[A-Za-z0-9_.:-]``, 40 characters. The tenant label is the tenant's id for
the first ``BRIDGE_METRICS_TENANTS`` tenants seen (default 20; the Redis set
admits them, across every process) and ``other`` for the rest. No names,
addresses, phone numbers, message text or tokens are ever a label.
"""

from __future__ import annotations

import atexit
import bisect
import datetime as dt
import functools
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis

__all__ = [
    "FAMILIES",
    "FLUSH_DELAY",
    "PREFIX",
    "TENANTS_KEY",
    "Family",
    "crm_call",
    "delivered",
    "epoch",
    "flush",
    "forget_tenants",
    "ingested",
    "label_value",
    "parsed",
    "rate_limit_wait",
    "read_families",
    "rejected",
    "requeued",
    "sla_alerts",
    "synced",
    "tenant_limit",
]

log = logging.getLogger(__name__)

PREFIX = "bridge:metrics:"
TENANTS_KEY = PREFIX + "tenants"
#: seconds a flush waits for more observations after the first one
FLUSH_DELAY = 0.25
#: the tenants with a label of their own, unless BRIDGE_METRICS_TENANTS says
DEFAULT_TENANTS = 20
#: how long (s) a process trusts what it learnt of a tenant's label
TENANT_CACHE_TTL = 300.0
OTHER = "other"
NONE = "none"

#: seconds from a delivery stored to parsed (the normaliser: milliseconds
#: when it keeps up, seconds to minutes when it falls behind)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: seconds from a message stored to written to the CRM (rate limits and
#: retries stretch it to minutes; an outage to hours)
SYNC_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


@dataclass(frozen=True)
class Family:
    """One metric: its name as exposed, its type, help text and labels (a
    ``tenant`` label is always the last one)."""

    name: str
    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        """The Redis hash that holds it."""
        return PREFIX + self.name

    @property
    def by_tenant(self) -> bool:
        return bool(self.labels) and self.labels[-1] == "tenant"


INGEST_RECEIVED = Family(
    "bridge_ingest_received_total",
    "counter",
    "Deliveries a channel's webhook or poller handed to the ingest journal, redeliveries included.",
    ("channel", "tenant"),
)
INGEST_ACCEPTED = Family(
    "bridge_ingest_accepted_total",
    "counter",
    "Deliveries the ingest journal stored (a redelivery of a stored one is not).",
    ("channel", "tenant"),
)
INGEST_REJECTED = Family(
    "bridge_ingest_rejected_total",
    "counter",
    "Channel webhook requests refused before the journal (4xx), by reason code "
    "(channel unknown: no such account).",
    ("channel", "reason"),
)
JOURNAL_PARSED = Family(
    "bridge_journal_parsed_total",
    "counter",
    "Journal rows the normaliser parsed, by the state it left them in "
    "(normalised, ignored, rejected).",
    ("channel", "state"),
)
JOURNAL_LAG = Family(
    "bridge_journal_lag_seconds",
    "histogram",
    "Seconds from a delivery stored in the ingest journal to its parse committed.",
    ("channel",),
    LAG_BUCKETS,
)
SYNC_MESSAGES = Family(
    "bridge_sync_messages_total",
    "counter",
    "Customer messages written to the CRM.",
    ("channel", "crm", "tenant"),
)
SYNC_LATENCY = Family(
    "bridge_sync_latency_seconds",
    "histogram",
    "Seconds from a customer message stored by the normaliser to its CRM write "
    "recorded (the journal lag comes before it).",
    ("channel", "crm"),
    SYNC_BUCKETS,
)
CRM_CALLS = Family(
    "bridge_crm_calls_total",
    "counter",
    "HTTP calls to a CRM by result: ok (below 400), 4xx, 429, 5xx, network (no answer).",
    ("crm", "result", "tenant"),
)
RATELIMIT_WAITS = Family(
    "bridge_ratelimit_waits_total",
    "counter",
    "Sleeps for a shared rate-limit bucket's tokens (one per sleep of at most 5 s).",
    ("vendor",),
)
RATELIMIT_SECONDS = Family(
    "bridge_ratelimit_wait_seconds_total",
    "counter",
    "Seconds slept for shared rate-limit buckets' tokens.",
    ("vendor",),
)
OUTBOUND = Family(
    "bridge_outbound_deliveries_total",
    "counter",
    "Replies the deliver job finished with the channel, by result: sent, failed, "
    "refused (the channel's rules: a closed reply window, consent), retry (backed off).",
    ("channel", "result", "tenant"),
)
SLA_ALERTS = Family(
    "bridge_sla_alerts_total",
    "counter",
    "SLA warnings and breaches the service layer raised, by clock.",
    ("clock", "level", "tenant"),
)
REQUEUED = Family(
    "bridge_sweeper_requeued_total",
    "counter",
    "Work the sweeper started again because its job was lost: a conversation's "
    "direction (in, out, ack, report) or the journal's normaliser (journal).",
    ("work",),
)

#: every family kept in Redis, in the order /metrics shows them
FAMILIES: tuple[Family, ...] = (
    INGEST_RECEIVED,
    INGEST_ACCEPTED,
    INGEST_REJECTED,
    JOURNAL_PARSED,
    JOURNAL_LAG,
    SYNC_MESSAGES,
    SYNC_LATENCY,
    CRM_CALLS,
    RATELIMIT_WAITS,
    RATELIMIT_SECONDS,
    OUTBOUND,
    SLA_ALERTS,
    REQUEUED,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@functools.lru_cache(maxsize=1024)
def label_value(value: object) -> str:
    """A label value as stored: anything outside ``[A-Za-z0-9_.:-]`` becomes
    ``_``, at most 40 characters (never the field separators ``|`` / ``#``)."""
    text = _UNSAFE.sub("_", str(value))[:40]
    return text or NONE


def tenant_limit() -> int:
    """How many tenants get a label of their own (``BRIDGE_METRICS_TENANTS``)."""
    raw = os.environ.get("BRIDGE_METRICS_TENANTS", "")
    try:
        return max(0, int(raw)) if raw.strip() else DEFAULT_TENANTS
    except ValueError:
        return DEFAULT_TENANTS


# -- what the pipeline reports (one call per place, never raises) ---------------

#: a buffered increment: (family, label values without the tenant, tenant id
#: or None, field suffix "" / "#le=<bound>" / "#sum") -> amount
_Key = tuple[Family, tuple[str, ...], int | None, str]
_Item = tuple[_Key, float]


def ingested(
    connection: redis.Redis, channel: str, tenant_id: int | None, received: int, accepted: int
) -> None:
    """A webhook or poller handed ``received`` deliveries to the journal, of
    which ``accepted`` were new."""
    labels = (label_value(channel),)
    _add(
        connection,
        [
            ((INGEST_RECEIVED, labels, tenant_id, ""), received),
            ((INGEST_ACCEPTED, labels, tenant_id, ""), accepted),
        ],
    )


def rejected(connection: redis.Redis, channel: str, reason: str) -> None:
    """A channel webhook request refused before the journal."""
    _add(
        connection, [((INGEST_REJECTED, (label_value(channel), label_value(reason)), None, ""), 1)]
    )


def parsed(connection: redis.Redis, channel: str, rows: Iterable[tuple[str, dt.datetime]]) -> None:
    """The normaliser committed the parse of ``rows`` (each: the state it
    left the row in, the row's ``received_at``)."""
    now = time.time()
    kind = label_value(channel)
    items: list[_Item] = []
    for state, received_at in rows:
        items.append(((JOURNAL_PARSED, (kind, label_value(state)), None, ""), 1))
        items += _observe(JOURNAL_LAG, (kind,), None, now - epoch(received_at))
    _add(connection, items)


def synced(
    connection: redis.Redis,
    channel: str,
    crm: str,
    tenant_id: int | None,
    stored: Iterable[dt.datetime],
) -> None:
    """Messages stored at ``stored`` (their rows' ``created_at``) were
    recorded as written to the CRM."""
    now = time.time()
    kinds = (label_value(channel), label_value(crm))
    items: list[_Item] = []
    for created_at in stored:
        items.append(((SYNC_MESSAGES, kinds, tenant_id, ""), 1))
        items += _observe(SYNC_LATENCY, kinds, None, now - epoch(created_at))
    _add(connection, items)


def crm_result(status: int | None) -> str:
    """``ok`` / ``4xx`` / ``429`` / ``5xx`` for an HTTP status; ``network``
    for no answer (None)."""
    if status is None:
        return "network"
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    return "ok"


def crm_call(connection: redis.Redis, crm: str, tenant_id: int | None, status: int | None) -> None:
    """One HTTP call to a CRM answered ``status`` (None: no answer)."""
    labels = (label_value(crm), crm_result(status))
    _add(connection, [((CRM_CALLS, labels, tenant_id, ""), 1)])


def rate_limit_wait(connection: redis.Redis, bucket: str, seconds: float) -> None:
    """A call slept ``seconds`` for tokens of the shared bucket ``bucket``
    (``<vendor kind>:<account>:...``: only the vendor kind is a label)."""
    vendor = (label_value(bucket.split(":", 1)[0]),)
    _add(
        connection,
        [
            ((RATELIMIT_WAITS, vendor, None, ""), 1),
            ((RATELIMIT_SECONDS, vendor, None, ""), float(seconds)),
        ],
    )


def delivered(connection: redis.Redis, channel: str, tenant_id: int | None, result: str) -> None:
    """The deliver job finished a reply: sent, failed, refused or retry."""
    labels = (label_value(channel), label_value(result))
    _add(connection, [((OUTBOUND, labels, tenant_id, ""), 1)])


def sla_alerts(connection: redis.Redis, before: Any, after: Any, tenant_id: int | None) -> None:
    """The SLA alerts a service pass raised: what ``after`` (an
    ``SlaState``, or None) marks raised that ``before`` did not. A breach
    given at once marks the warning too: it counts as a breach only."""
    raised_before = {(c.kind, c.started): c.raised for c in getattr(before, "clocks", ())}
    items: list[_Item] = []
    for clock in getattr(after, "clocks", ()):
        new = set(clock.raised) - set(raised_before.get((clock.kind, clock.started), ()))
        level = "breach" if "breach" in new else "warning" if "warning" in new else None
        if level is not None:
            items.append(((SLA_ALERTS, (label_value(clock.kind), level), tenant_id, ""), 1))
    _add(connection, items)


def requeued(connection: redis.Redis, work: Iterable[str]) -> None:
    """The sweeper started these again (directions, or ``journal`` per
    account whose normaliser it woke)."""
    _add(connection, [((REQUEUED, (label_value(w),), None, ""), 1) for w in work])


def _observe(
    family: Family, labels: tuple[str, ...], tenant_id: int | None, value: float
) -> list[_Item]:
    """A histogram observation: its bucket and its sum."""
    value = max(0.0, value)
    at = bisect.bisect_left(family.buckets, value)
    bound = repr(family.buckets[at]) if at < len(family.buckets) else "+Inf"
    return [
        ((family, labels, tenant_id, f"#le={bound}"), 1),
        ((family, labels, tenant_id, "#sum"), float(value)),
    ]


def epoch(moment: dt.datetime) -> float:
    """Unix seconds of a stored time (SQLite gives it back naive: UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


# -- the buffer and its flusher ---------------------------------------------------

_ADMIT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('SADD', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class _Batch:
    """What one Redis connection is owed."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self.counts: dict[_Key, float] = {}


class _TenantLabels:
    """Which tenants get their own label, as far as this process knows:
    tenant id -> (its label, until when that is trusted)."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[str, float]] = {}

    def unknown(self, tenants: Iterable[int], now: float) -> list[int]:
        return [t for t in tenants if self.known.get(t, ("", 0.0))[1] <= now]

    def label(self, tenant_id: int | None) -> str:
        if tenant_id is None:
            return NONE
        return self.known.get(tenant_id, (OTHER, 0.0))[0]


class _Recorder:
    """The process's buffer and its flusher thread (started on first use,
    again in a forked child)."""

    def __init__(self) -> None:
        self._pid = -1
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        #: held while a batch is swapped out and sent (flush() waits for it)
        self._sending = threading.Lock()
        self._pending: dict[int, _Batch] = {}
        self._tenants: weakref.WeakKeyDictionary[redis.Redis, _TenantLabels] = (
            weakref.WeakKeyDictionary()
        )
        self._failing = False
        self._exit_hook = False

    _starting = threading.Lock()

    def add(self, connection: redis.Redis, items: Sequence[_Item]) -> None:
        if not items:
            return
        if self._pid != os.getpid():
            with self._starting:
                if self._pid != os.getpid():  # first use in this process
                    self._start()
        with self._lock:
            batch = self._pending.get(id(connection))
            if batch is None:
                batch = self._pending[id(connection)] = _Batch(connection)
                self._ready.notify()
            counts = batch.counts
            for key, amount in items:
                counts[key] = counts.get(key, 0) + amount

    def _start(self) -> None:
        # fresh locks: ones inherited through fork may be held by a thread
        # that does not exist here
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._sending = threading.Lock()
        self._pending = {}
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="metrics-flusher", daemon=True).start()
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(self.flush)

    def _run(self) -> None:
        ready = self._ready
        while True:
            with ready:
                while not self._pending:
                    ready.wait()
            time.sleep(FLUSH_DELAY)  # gather what comes meanwhile: one round trip
            try:
                self.flush()
            except Exception:  # noqa: BLE001 — the flusher outlives a bad batch
                log.exception("metrics flush failed")

    def flush(self) -> None:
        """Send everything buffered so far, here and now (after a send in
        progress)."""
        with self._sending:
            with self._lock:
                batches, self._pending = self._pending, {}
            for batch in batches.values():
                self._send(batch)

    def _send(self, batch: _Batch) -> None:
        try:
            fields = self._fields(batch)
            with batch.connection.pipeline(transaction=False) as pipe:
                for (key, field), amount in fields.items():
                    if isinstance(amount, int):
                        pipe.hincrby(key, field, amount)
                    else:
                        pipe.hincrbyfloat(key, field, amount)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                log.warning(
                    "metrics not counted: Redis refused a batch (%s); they are dropped "
                    "until it answers again",
                    type(exc).__name__,
                )
            self._failing = True
            return
        if self._failing:
            log.info("metrics counted again")
        self._failing = False

    def _fields(self, batch: _Batch) -> dict[tuple[str, str], float]:
        """The batch as (hash, field) -> amount, tenant labels resolved."""
        labels = self._tenant_labels(batch)
        out: dict[tuple[str, str], float] = {}
        for (family, values, tenant_id, suffix), amount in batch.counts.items():
            if family.by_tenant:
                values = (*values, labels.label(tenant_id))
            field = "|".join(values) + suffix
            key = (family.key, field)
            out[key] = out.get(key, 0) + amount
        return out

    def _tenant_labels(self, batch: _Batch) -> _TenantLabels:
        """This connection's tenant labels, with every tenant of the batch
        not known yet asked of Redis (one round trip for all of them)."""
        connection = batch.connection
        labels = self._tenants.get(connection)
        if labels is None:
            labels = self._tenants[connection] = _TenantLabels()
        now = time.monotonic()
        tenants = {t for (f, _, t, _) in batch.counts if f.by_tenant and t is not None}
        unknown = labels.unknown(tenants, now)
        if not unknown:
            return labels
        limit = tenant_limit()
        if limit == 0:
            answers = [0] * len(unknown)
        else:
            with connection.pipeline(transaction=False) as pipe:
                for tenant_id in unknown:
                    # EVAL, not a registered script: this runs for a tenant
                    # not seen lately only, and keeps no hold on the connection
                    pipe.eval(_ADMIT, 1, TENANTS_KEY, tenant_id, limit)
                answers = pipe.execute()
        for tenant_id, admitted in zip(unknown, answers, strict=True):
            label = str(tenant_id) if int(admitted) else OTHER
            labels.known[tenant_id] = (label, now + TENANT_CACHE_TTL)
        return labels

    def forget_tenants(self) -> None:
        """Ask Redis again about every tenant (tests; after the set was reset)."""
        self._tenants = weakref.WeakKeyDictionary()


_RECORDER = _Recorder()


def _add(connection: redis.Redis, items: Sequence[_Item]) -> None:
    _RECORDER.add(connection, items)


def flush() -> None:
    """Send this process's buffered observations now (the scrape does it
    first, so a process sees its own counts; tests)."""
    _RECORDER.flush()


def forget_tenants() -> None:
    """Ask Redis again which tenants have a label of their own."""
    _RECORDER.forget_tenants()


# -- reading them back (the scrape) ------------------------------------------------


def read_families(connection: redis.Redis) -> dict[Family, Mapping[str, str]]:
    """Every family's hash (field -> value, decoded), one round trip."""
    with connection.pipeline(transaction=False) as pipe:
        for family in FAMILIES:
            pipe.hgetall(family.key)
        answers = pipe.execute()
    return {
        family: {_text(k): _text(v) for k, v in (answer or {}).items()}
        for family, answer in zip(FAMILIES, answers, strict=True)
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
