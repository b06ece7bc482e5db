"""Metrics (bridge.metrics, bridge.metrics_web) on a real Redis and a real
database: what each observation adds, how the scrape renders it (parsed back
with prometheus_client's own parser), tenant labels bounded across
processes, two real processes counting into one total, a Redis that does not
answer, the state read at scrape time, and the endpoint's token."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import requests
import responses
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine

from bridge import admin, create_app, health, metrics, outbox
from bridge.http import HttpClient
from bridge.metrics_web import render
from bridge.model import InboundMessage, MessageKind, Rate, RawDelivery, SenderProfile, utcnow
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.pipeline.inbound.journal import record, run_normaliser
from bridge.ratelimit import RedisTokenBucket
from bridge.service import runner
from bridge.service.calendar import Hours, Span
from bridge.service.sla import Targets, check, client_wrote, start
from bridge.service.sla import record as sla_record
from bridge.tables import Conversation, Message, Tenant
from tests.support import fakes
from tests.support.harness import body, tg_update

ROOT = Path(__file__).resolve().parents[2]

MAPPING = """
crm: fake
channels:
  telegram:
    object: none
    timeline: note
"""


@pytest.fixture(autouse=True)
def clean(redis_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing an earlier test buffered lands in this one's Redis, and
    every tenant is asked about afresh."""
    metrics.flush()
    redis_conn.flushdb()
    metrics.forget_tenants()
    monkeypatch.delenv("BRIDGE_METRICS_TENANTS", raising=False)
    monkeypatch.delenv("BRIDGE_METRICS_TOKEN", raising=False)
    yield
    metrics.flush()


def scrape(runtime: Any) -> dict[str, Any]:
    """The scrape, parsed by prometheus_client: family name -> family."""
    text, _ = render(runtime)
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def value(families: dict[str, Any], sample: str, **labels: str) -> float | None:
    """The value of the sample named ``sample`` with exactly ``labels``."""
    for family in families.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def unanswered(tmp_path: Path) -> redis.Redis:
    """A client of a Redis that is not there (no retries: the test stays short)."""
    return redis.Redis(
        unix_socket_path=str(tmp_path / "no-redis.sock"), retry=Retry(NoBackoff(), 0)
    )


def sent(families: dict[str, Any], tenant: str) -> float | None:
    """Replies counted sent on Telegram for ``tenant``."""
    labels = {"channel": "telegram", "result": "sent", "tenant": tenant}
    return value(families, "bridge_outbound_deliveries_total", **labels)


def samples(families: dict[str, Any], family: str) -> dict[tuple[Any, ...], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value) for s in families[family].samples
    }


# -- what each observation adds ---------------------------------------------------------------


def test_counters_and_histograms_render_as_prometheus_text(runtime) -> None:  # type: ignore[no-untyped-def]
    conn = runtime.redis
    now = utcnow()
    metrics.ingested(conn, "telegram", 1, 3, 2)
    metrics.ingested(conn, "telegram", 1, 1, 1)
    metrics.rejected(conn, "telegram", "forbidden")
    metrics.parsed(conn, "telegram", [("normalised", now), ("ignored", now)])
    # stored 0.03 s, 0.3 s and 7 s before they were recorded in the CRM
    stored = [now - dt.timedelta(seconds=s) for s in (0.03, 0.3, 7.0)]
    metrics.synced(conn, "telegram", "crmx", 1, stored)
    metrics.crm_call(conn, "crmx", 1, 200)
    metrics.crm_call(conn, "crmx", 1, 404)
    metrics.crm_call(conn, "crmx", 1, 429)
    metrics.crm_call(conn, "crmx", 1, 502)
    metrics.crm_call(conn, "crmx", 1, None)
    metrics.delivered(conn, "telegram", 1, "sent")
    metrics.requeued(conn, ["journal", "in", "in"])
    f = scrape(runtime)

    assert value(f, "bridge_ingest_received_total", channel="telegram", tenant="1") == 4
    assert value(f, "bridge_ingest_accepted_total", channel="telegram", tenant="1") == 3
    assert value(f, "bridge_ingest_rejected_total", channel="telegram", reason="forbidden") == 1
    parsed = samples(f, "bridge_journal_parsed")
    assert parsed == {
        ("bridge_journal_parsed_total", (("channel", "telegram"), ("state", "ignored"))): 1,
        ("bridge_journal_parsed_total", (("channel", "telegram"), ("state", "normalised"))): 1,
    }
    assert value(f, "bridge_journal_lag_seconds_count", channel="telegram") == 2
    assert value(f, "bridge_sync_messages_total", channel="telegram", crm="crmx", tenant="1") == 3
    latency = {"channel": "telegram", "crm": "crmx"}
    buckets = {
        s.labels["le"]: s.value
        for s in f["bridge_sync_latency_seconds"].samples
        if s.name.endswith("_bucket")
    }
    # cumulative: 0.03 s under 0.05, 0.3 s under 0.5, 7 s under 10
    assert buckets["0.05"] == 1 and buckets["0.25"] == 1 and buckets["0.5"] == 2
    assert buckets["5.0"] == 2 and buckets["10.0"] == 3 and buckets["+Inf"] == 3
    assert value(f, "bridge_sync_latency_seconds_count", **latency) == 3
    total = value(f, "bridge_sync_latency_seconds_sum", **latency)
    assert total is not None and 7.33 <= total < 8.5
    calls = {dict(labels)["result"]: v for (_, labels), v in samples(f, "bridge_crm_calls").items()}
    assert calls == {"ok": 1, "4xx": 1, "429": 1, "5xx": 1, "network": 1}
    assert sent(f, "1") == 1
    assert value(f, "bridge_sweeper_requeued_total", work="in") == 2
    assert value(f, "bridge_sweeper_requeued_total", work="journal") == 1
    # a family nothing was counted in is there, empty
    assert f["bridge_sla_alerts"].samples == []
    assert value(f, "bridge_metrics_source_up", source="redis") == 1
    assert value(f, "bridge_metrics_source_up", source="database") == 1


def test_the_pipeline_counts_ingest_the_journal_and_the_sync(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Deliveries through the journal (one redelivered), the normaliser and
    the sync on the in-memory CRM: each counted once, where it happened."""
    tenant_id, account_id = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    account = AccountRef(account_id, tenant_id, "telegram")
    updates = [RawDelivery(str(i), body(tg_update(i, text=f"hello {i}"))) for i in (1, 2, 3)]
    assert record(runtime, account, updates[:2]) == 2
    assert record(runtime, account, updates[1:]) == 1  # 2 again, and 3
    assert run_normaliser(runtime, account_id) == "normalised 3"
    with runtime.read_session() as session:
        conversations = {m.conversation_id for m in session.query(Message)}
    for conversation_id in conversations:
        run_inbound(runtime, conversation_id)
    assert len(fakes.STATE.entries) == 3
    f = scrape(runtime)
    tenant = str(tenant_id)
    assert value(f, "bridge_ingest_received_total", channel="telegram", tenant=tenant) == 4
    assert value(f, "bridge_ingest_accepted_total", channel="telegram", tenant=tenant) == 3
    assert value(f, "bridge_journal_parsed_total", channel="telegram", state="normalised") == 3
    assert value(f, "bridge_journal_lag_seconds_count", channel="telegram") == 3
    synced = {"channel": "telegram", "crm": "fake"}
    assert value(f, "bridge_sync_messages_total", **synced, tenant=tenant) == 3
    assert value(f, "bridge_sync_latency_seconds_count", **synced) == 3
    assert value(f, "bridge_journal_waiting", channel="telegram") is None  # none waits


def test_sla_alerts_count_what_a_pass_raised(runtime) -> None:  # type: ignore[no-untyped-def]
    """A warning, then the breach, each once; a clock found past its due
    time gives the breach alone (the warning it implies is not counted)."""
    minute = dt.timedelta(minutes=1)
    hours = Hours("UTC", {d: (Span(dt.time(0), dt.time(23, 59)),) for d in range(7)})
    targets = Targets(first_response=15 * minute, next_response=None, resolution=None)
    wrote = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
    state = client_wrote(start(hours, targets), wrote)
    warned = sla_record(state, check(state, wrote + 13 * minute))
    breached = sla_record(warned, check(warned, wrote + 16 * minute))
    at_once = sla_record(state, check(state, wrote + 20 * minute))
    metrics.sla_alerts(runtime.redis, state, warned, 4)
    metrics.sla_alerts(runtime.redis, warned, breached, 4)
    metrics.sla_alerts(runtime.redis, breached, breached, 4)  # nothing new
    metrics.sla_alerts(runtime.redis, state, at_once, 4)
    metrics.sla_alerts(runtime.redis, None, None, 4)
    f = scrape(runtime)
    alerts = {
        (dict(labels)["clock"], dict(labels)["level"]): v
        for (_, labels), v in samples(f, "bridge_sla_alerts").items()
    }
    assert alerts == {("first_response", "warning"): 1, ("first_response", "breach"): 2}


SERVICE_MAPPING = """\
crm: fake
language: en
channels:
  telegram:
    object: deal
    timeline: note
service:
  defaults:
    hours:
      timezone: Europe/Moscow
      week: {mon-fri: "09:00-18:00"}
    sla:
      default: {first_response: 1h, warn_share: 0.8}
    supervisor: {user: "900"}
  lines:
    support:
      title: {en: Support, ru: Поддержка}
      members: ["201"]
  default_line: support
"""


def test_the_service_sweep_counts_the_sla_warning_and_breach_once(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A client unanswered past the line's first-response time: the
    sweeper's passes raise the warning, then the breach, each counted once."""

    monkeypatch.setitem(__import__("crm_adapters").REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "shop.yaml").write_text(SERVICE_MAPPING, encoding="utf-8")
    tenant = admin.create_tenant(runtime, slug="shop", crm_kind="fake", mapping="shop.yaml")
    account = admin.add_channel_account(
        runtime, tenant, kind="telegram", credentials={"bot_token": "1:x"}, external_id="2"
    )
    wrote = dt.datetime(2026, 12, 8, 7, 0, tzinfo=dt.UTC)  # 10:00 in Moscow, a Tuesday
    message = InboundMessage(
        channel_kind="telegram",
        external_id="m1",
        external_user_id="42",
        external_thread_id="42",
        kind=MessageKind.TEXT,
        sent_at=wrote,
        text="Hi",
        profile=SenderProfile(first_name="Ann"),
    )
    accept(
        runtime, AccountRef(account, tenant, "telegram", *runtime.ingest_view(tenant)), [message]
    )
    with runtime.read_session() as session:
        conversation_id = session.query(Conversation.id).scalar()
    runner.run_service(runtime, conversation_id)
    for minutes in (30, 50, 61, 62, 90):
        runner.sweep(runtime, now=wrote + dt.timedelta(minutes=minutes))
    f = scrape(runtime)
    alerts = {
        (dict(labels)["clock"], dict(labels)["level"], dict(labels)["tenant"]): v
        for (_, labels), v in samples(f, "bridge_sla_alerts").items()
    }
    assert alerts == {
        ("first_response", "warning", str(tenant)): 1,
        ("first_response", "breach", str(tenant)): 1,
    }


def test_crm_calls_are_counted_by_result_for_a_metered_client_only(runtime) -> None:  # type: ignore[no-untyped-def]
    limiter = RedisTokenBucket(runtime.redis)
    metered = HttpClient("https://crm.test", limiter=limiter, counters=runtime.redis)
    metered.metered = ("crmx", 9)
    plain = HttpClient("https://channel.test", limiter=limiter, counters=runtime.redis)
    with responses.RequestsMock() as mock:
        mock.get("https://crm.test/ok", status=200, json={})
        mock.get("https://crm.test/missing", status=404)
        mock.get("https://crm.test/busy", status=429)
        mock.get("https://crm.test/down", status=503)
        mock.get("https://crm.test/gone", body=requests.ConnectionError("reset"))
        mock.get("https://channel.test/ok", status=200)
        metered.request("GET", "/ok")
        metered.request("GET", "/missing", ok=(404,))  # a lookup: returned, still a 4xx
        for path in ("/busy", "/down", "/gone"):
            with pytest.raises(Exception):  # noqa: B017 — the tree's errors, not what is tested
                metered.request("GET", path)
        plain.request("GET", "/ok")
    f = scrape(runtime)
    calls = {
        (dict(labels)["crm"], dict(labels)["result"], dict(labels)["tenant"]): v
        for (_, labels), v in samples(f, "bridge_crm_calls").items()
    }
    assert calls == {
        ("crmx", "ok", "9"): 1,
        ("crmx", "4xx", "9"): 1,
        ("crmx", "429", "9"): 1,
        ("crmx", "5xx", "9"): 1,
        ("crmx", "network", "9"): 1,
    }


def test_a_crm_adapter_meters_its_client(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tenant_id, _ = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    with runtime.read_session() as session:
        tenant = session.get(Tenant, tenant_id)
        adapter = runtime.crm_adapter(tenant)
    assert adapter.http.metered == ("fake", tenant_id)


def test_rate_limit_sleeps_are_counted_with_what_was_slept(runtime) -> None:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    bucket = RedisTokenBucket(runtime.redis, sleep=slept.append)
    rate = Rate(capacity=1, per_second=20)
    for _ in range(3):
        bucket.try_acquire("crmx:acct-1:api", rate)  # empty it
    bucket.acquire("crmx:acct-1:api", rate)
    assert slept  # it had to wait
    f = scrape(runtime)
    assert value(f, "bridge_ratelimit_waits_total", vendor="crmx") == len(slept)
    seconds = value(f, "bridge_ratelimit_wait_seconds_total", vendor="crmx")
    assert seconds == pytest.approx(sum(slept))


# -- labels --------------------------------------------------------------------------------------


def test_tenant_labels_are_bounded_across_processes(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two tenants get their own label, the first two seen by any process;
    the rest are "other", and every observation is still counted."""
    monkeypatch.setenv("BRIDGE_METRICS_TENANTS", "2")
    conn = runtime.redis
    for tenant_id in (11, 12, 13, 14):
        metrics.delivered(conn, "telegram", tenant_id, "sent")
    metrics.flush()
    metrics.forget_tenants()  # as another process would start: knows nothing
    for tenant_id in (14, 11, 15):
        metrics.delivered(conn, "telegram", tenant_id, "sent")
    metrics.delivered(conn, "telegram", None, "sent")
    f = scrape(runtime)
    by_tenant = {
        dict(labels)["tenant"]: v
        for (_, labels), v in samples(f, "bridge_outbound_deliveries").items()
    }
    assert by_tenant == {"11": 2, "12": 1, "other": 4, "none": 1}
    assert {int(t) for t in conn.smembers(metrics.TENANTS_KEY)} == {11, 12}


def test_no_tenant_gets_a_label_when_the_limit_is_zero(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BRIDGE_METRICS_TENANTS", "0")
    metrics.ingested(runtime.redis, "telegram", 1, 1, 1)
    f = scrape(runtime)
    assert value(f, "bridge_ingest_received_total", channel="telegram", tenant="other") == 1
    assert runtime.redis.exists(metrics.TENANTS_KEY) == 0


def test_label_values_are_cut_to_a_safe_alphabet(runtime) -> None:  # type: ignore[no-untyped-def]
    assert metrics.label_value("a|b#c d/é") == "a_b_c_d__"
    assert metrics.label_value("x" * 100) == "x" * 40
    assert metrics.label_value("") == "none"
    metrics.rejected(runtime.redis, "tele|gram", 'bad"code\n#le=1')
    f = scrape(runtime)
    assert samples(f, "bridge_ingest_rejected") == {
        (
            "bridge_ingest_rejected_total",
            (("channel", "tele_gram"), ("reason", "bad_code__le_1")),
        ): 1
    }


# -- processes, failures, state --------------------------------------------------------------


def test_two_processes_count_into_one_total(runtime, redis_url) -> None:  # type: ignore[no-untyped-def]
    """Each process buffers its own observations and flushes them into the
    shared hashes (at exit at the latest): the scrape sees the sum."""
    code = (
        "import sys, redis\n"
        "from bridge import metrics\n"
        "conn = redis.Redis.from_url(sys.argv[1])\n"
        "for _ in range(100):\n"
        "    metrics.delivered(conn, 'telegram', 3, 'sent')\n"
        "    metrics.crm_call(conn, 'crmx', 3, 200)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, redis_url], cwd=ROOT)  # noqa: S603
        for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    metrics.delivered(runtime.redis, "telegram", 3, "sent")  # and this one's
    f = scrape(runtime)
    assert sent(f, "3") == 201
    assert value(f, "bridge_crm_calls_total", crm="crmx", result="ok", tenant="3") == 200


def test_a_redis_that_does_not_answer_breaks_nothing_and_is_logged_once(
    runtime, caplog, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    away = unanswered(tmp_path)
    metrics.delivered(runtime.redis, "telegram", 1, "sent")
    metrics.flush()  # a batch that went through: the next failure is logged
    with caplog.at_level(logging.INFO, logger="bridge.metrics"):
        for _ in range(3):
            metrics.delivered(away, "telegram", 1, "sent")
            metrics.flush()
        metrics.delivered(runtime.redis, "telegram", 1, "sent")
        metrics.flush()
        metrics.delivered(away, "telegram", 1, "sent")
        metrics.flush()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per outage
    assert "ConnectionError" in warnings[0].getMessage()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "metrics counted again"
    ]
    f = scrape(runtime)
    assert sent(f, "1") == 2


def test_a_scrape_without_its_database_still_serves_the_counters(runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    metrics.delivered(runtime.redis, "telegram", 1, "sent")
    broken = SimpleNamespace(
        redis=runtime.redis,
        read_engine=create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"),
    )
    f = scrape(broken)
    assert value(f, "bridge_metrics_source_up", source="database") == 0
    assert value(f, "bridge_metrics_source_up", source="redis") == 1
    assert sent(f, "1") == 1
    assert "bridge_journal_waiting" not in f


def test_a_scrape_without_redis_still_serves_the_database_gauges(runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = SimpleNamespace(
        redis=unanswered(tmp_path),
        read_engine=runtime.read_engine,
    )
    f = scrape(broken)
    assert value(f, "bridge_metrics_source_up", source="redis") == 0
    assert value(f, "bridge_metrics_source_up", source="database") == 1
    assert "bridge_ingest_received" not in f
    assert value(f, "bridge_outbox_conversations", direction="in", state="parked") == 0


def test_the_state_is_read_at_scrape_time(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tenant_id, account_id = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    account = AccountRef(account_id, tenant_id, "telegram")
    a_minute_ago = utcnow() - dt.timedelta(seconds=60)
    updates = [RawDelivery(str(i), body(tg_update(i, text=f"hi {i}"))) for i in (1, 2)]
    record(runtime, account, updates, received_at=a_minute_ago)
    f = scrape(runtime)
    assert value(f, "bridge_journal_waiting", channel="telegram") == 2
    oldest = value(f, "bridge_journal_oldest_waiting_seconds")
    assert oldest is not None and oldest >= 60
    # the journal's wake-up is queued; the gauge says what the queue holds
    queued = runtime.queues["bridge-ingest"].count
    assert queued >= 1
    assert value(f, "bridge_queue_jobs", queue="bridge-ingest", state="queued") == queued
    assert value(f, "bridge_queue_jobs", queue="bridge-deliver", state="failed") == 0
    assert value(f, "bridge_workers_alive") == 0

    run_normaliser(runtime, account_id)
    with runtime.transaction() as session:
        conversation_id = session.query(Message).first().conversation_id
        outbox.park(session, conversation_id, outbox.IN, "a test parks it")
    health.beat(runtime.redis, 4242)
    f = scrape(runtime)
    assert value(f, "bridge_journal_waiting", channel="telegram") is None
    assert value(f, "bridge_journal_oldest_waiting_seconds") == 0
    assert value(f, "bridge_outbox_conversations", direction="in", state="parked") == 1
    assert value(f, "bridge_outbox_conversations", direction="out", state="pending") == 0
    assert value(f, "bridge_workers_alive") == 1


# -- the endpoint -------------------------------------------------------------------------------


def test_the_endpoint_serves_text_and_wants_the_token_once_one_is_set(runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = create_app(runtime=runtime).test_client()
    metrics.ingested(runtime.redis, "telegram", 1, 1, 1)
    open_answer = client.get("/metrics")
    assert open_answer.status_code == 200
    assert open_answer.content_type.startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(open_answer.get_data(as_text=True))}
    assert {
        "bridge_ingest_received",
        "bridge_sync_latency_seconds",
        "bridge_queue_jobs",
    } <= families

    monkeypatch.setenv("BRIDGE_METRICS_TOKEN", "s3cret-metrics")
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.get_json()["error"] == "unauthorized"
    assert "bridge_" not in refused.get_data(as_text=True)
    wrong = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metricz"})
    assert wrong.status_code == 401
    right = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert right.status_code == 200
    assert b"bridge_ingest_received_total" in right.data

    openmetrics = client.get(
        "/metrics",
        headers={
            "Authorization": "Bearer s3cret-metrics",
            "Accept": "application/openmetrics-text; version=1.0.0",
        },
    )
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.data.rstrip().endswith(b"# EOF")
