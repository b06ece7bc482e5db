"""The console's overview (``/console/``, ``bridge.console.overview``) on
SQLite and PostgreSQL: rows seeded in known states and what the page says
of them.

Tenant A ("Acme", HubSpot, its tokens refused) works Mon-Fri 09:00-18:00 in
Moscow and has three channel accounts:

* telegram: three client messages every working hour for three weeks, the
  last at 09:40 on Wednesday 9 December 2026; the page's clock is 12:45
  that day, so it is silent (3 h 05 min of working time) and its supervisor
  was alerted by a sweep;
* whatsapp: disconnected;
* webchat: connected, the CRM setup still pending, never a message.

Its work: three replies parked for one cause (each reason naming its own
message), one sync parked for another; two replies and one client message
failed, one delivery report failed; one delivery waiting in the journal
since ten minutes ago (the real clock: the journal's age is read now), one
rejected; one session past its SLA. Tenant B ("Beta") has a failed message
of its own that A's page never shows.
"""

from __future__ import annotations

import datetime as dt
import html as markup
import itertools
import re
import uuid
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient

from bridge import health, silence
from bridge.console import overview as figures
from bridge.console.pages import overview as overview_page
from bridge.model import utcnow
from bridge.runtime import Runtime
from bridge.tables import (
    SETUP_PENDING,
    ChannelAccount,
    Contact,
    Conversation,
    Delivery,
    Message,
    Outbox,
    ServiceSession,
    Tenant,
)
from tests.support.console import console_app, login, make_tenant, make_user

MSK = dt.timezone(dt.timedelta(hours=3))
WED = dt.date(2026, 12, 9)

MAPPING = """\
crm: hubspot
language: en
channels:
  telegram: {object: deal}
  whatsapp: {object: deal}
  webchat: {object: deal}
service:
  defaults:
    hours:
      timezone: Europe/Moscow
      week: {mon-fri: "09:00-18:00"}
    supervisor: {user: "900"}
  lines:
    support:
      title: {en: Support, ru: Поддержка}
      members: ["201"]
      sla:
        default: {first_response: 15m}
"""


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=MSK).astimezone(dt.UTC)


NOW = at(WED, 12, 45)
UID = "3f2b8c1e-9a4d-4e6b-8f00-123456789abc"


@dataclass(frozen=True)
class Seeded:
    a: int
    b: int
    telegram: int
    whatsapp: int
    webchat: int
    last_message: int


def _message(
    tenant: int, conv: int, account: int, seq: int, when: dt.datetime, **extra: object
) -> Message:
    return Message(
        uid=str(uuid.uuid4()),
        tenant_id=tenant,
        conversation_id=conv,
        channel_account_id=account,
        direction=extra.pop("direction", "in"),
        seq=seq,
        dedupe_key=uuid.uuid4().hex,
        kind="text",
        text="hello",
        payload={},
        sent_at=when,
        created_at=when,
        **extra,
    )


def seed(runtime: Runtime) -> Seeded:
    (runtime.settings.mappings_dir / "hubspot.yaml").write_text(MAPPING, encoding="utf-8")
    a = make_tenant(runtime, "acme", "Acme")
    b = make_tenant(runtime, "beta", "Beta")
    seq = itertools.count(1)
    with runtime.transaction() as session:
        tenant = session.get(Tenant, a)
        assert tenant is not None
        tenant.status, tenant.status_reason = "needs_reauth", "token refresh refused: invalid_grant"
        tenant.crm_account_id = "4711"
        ids = {}
        for kind, status, settings in (
            ("telegram", "active", {}),
            ("whatsapp", "disconnected", {}),
            ("webchat", "active", {SETUP_PENDING: True}),
        ):
            account = ChannelAccount(
                tenant_id=a,
                kind=kind,
                key=uuid.uuid4().hex,
                name=f"{kind} line",
                status=status,
                settings=settings,
                created_at=NOW - dt.timedelta(days=60),
            )
            session.add(account)
            session.flush()
            ids[kind] = account.id
        other = ChannelAccount(tenant_id=b, kind="telegram", key=uuid.uuid4().hex, settings={})
        session.add(other)
        session.flush()

        def conversation(tenant_id: int, account: int, thread: str) -> int:
            contact = Contact(tenant_id=tenant_id, display_name=thread)
            session.add(contact)
            session.flush()
            conv = Conversation(
                uid=str(uuid.uuid4()),
                tenant_id=tenant_id,
                channel_account_id=account,
                contact_id=contact.id,
                external_thread_id=thread,
            )
            session.add(conv)
            session.flush()
            return conv.id

        busy = conversation(a, ids["telegram"], "busy")
        # three messages every working hour for three weeks, up to 09:40 today
        hour = at(WED, 10) - dt.timedelta(days=21)
        while hour < at(WED, 10):
            local = hour.astimezone(MSK)
            if local.weekday() < 5 and 9 <= local.hour < 18:
                for minute in (10, 25, 40):
                    when = hour + dt.timedelta(minutes=minute)
                    session.add(_message(a, busy, ids["telegram"], next(seq), when))
            hour += dt.timedelta(hours=1)
        session.flush()
        last = max(
            m.id
            for m in session.query(Message).filter(Message.channel_account_id == ids["telegram"])
        )
        # parked: three replies refused for one cause, one sync for another
        for n in range(3):
            conv = conversation(a, ids["telegram"], f"parked-{n}")
            reason = f"reply {uuid.uuid4()} failed: HTTP 400 template rejected"
            session.add(Outbox(tenant_id=a, conversation_id=conv, direction="out",
                               state="parked", reason=reason))  # fmt: skip
        conv = conversation(a, ids["telegram"], "auth")
        session.add(Outbox(tenant_id=a, conversation_id=conv, direction="in", state="parked",
                           reason="auth: token expired"))  # fmt: skip
        # failed: two replies, one client message, one delivery report
        failed = conversation(a, ids["telegram"], "failed")
        early = NOW - dt.timedelta(days=30)
        for n, (direction, error, extra) in enumerate(
            [
                ("out", f"reply {UID}: HTTP 400 template rejected", {}),
                ("out", "reply 0e9b8c1e-9a4d-4e6b-8f00-123456789abc: HTTP 400 template rejected",
                 {}),
                ("in", "contact refused", {}),
                ("out", None, {"followup_status": "failed",
                               "followup_error": "delivery report refused"}),
            ]
        ):  # fmt: skip
            session.add(
                _message(
                    a,
                    failed,
                    ids["telegram"],
                    1000 + n,
                    early,
                    direction=direction,
                    status="failed" if error else "sent",
                    last_error=error,
                    **extra,
                )
            )
        b_conv = conversation(b, other.id, "beta")
        session.add(
            _message(b, b_conv, other.id, 1, early, status="failed", last_error="beta's own error")
        )
        # the journal: one delivery waiting (real clock), one rejected
        session.add(
            Delivery(tenant_id=a, channel_account_id=ids["telegram"], delivery_key="d1",
                     received_at=utcnow() - dt.timedelta(minutes=10), facts={}, state="new")
        )  # fmt: skip
        session.add(
            Delivery(tenant_id=a, channel_account_id=ids["telegram"], delivery_key="d2",
                     received_at=early, facts={}, state="rejected", reason="unparseable")
        )  # fmt: skip
        # a session whose first response was due days ago (the real clock: bridge status's)
        started = utcnow() - dt.timedelta(days=7)
        session.add(
            ServiceSession(
                tenant_id=a,
                conversation_id=failed,
                number=1,
                state={},
                line="support",
                owner_id="201",
                opened_at=started,
                sla={
                    "priority": None,
                    "phase": "client",
                    "answered": False,
                    "clocks": [
                        {
                            "kind": "first_response",
                            "started": started.isoformat(),
                            "used": 0,
                            "since": started.isoformat(),
                            "stopped": False,
                            "overdue_at": None,
                            "raised": [],
                        }
                    ],
                },
            )
        )
    assert silence.sweep(runtime, now=NOW) == 1
    return Seeded(a, b, ids["telegram"], ids["whatsapp"], ids["webchat"], last)


@pytest.fixture
def seeded(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    monkeypatch.setattr(overview_page, "utcnow", lambda: NOW)
    return seed(runtime)


def _viewer(runtime: Runtime, tenant: int, email: str = "viewer@acme.test") -> FlaskClient:
    make_user(runtime, email, role="viewer", tenant_id=tenant)
    client = console_app(runtime).test_client()
    assert login(client, email).status_code == 302
    return client


def _row(html: str, attr: str, value: object) -> str:
    found = re.search(rf'<tr {attr}="{value}"[^>]*>.*?</tr>', html, re.S)
    assert found, (attr, value)
    return found.group(0)


def _cell(row: str, col: str) -> tuple[str, str]:
    """(data-state, or data-at, or "", text) of the row's cell ``data-col=col``."""
    found = re.search(rf'<td([^>]*)data-col="{col}"([^>]*)>(.*?)</td>', row, re.S)
    assert found, col
    attrs = found.group(1) + found.group(2)
    state = re.search(r'data-(?:state|at)="([^"]*)"', attrs)
    text = markup.unescape(re.sub(r"<[^>]+>", " ", found.group(3)))
    return state.group(1) if state else "", " ".join(text.split())


def _reasons(html: str, table: str) -> dict[tuple[str, str], int]:
    body = re.search(rf'<table class="grid" id="{table}">.*?</table>', html, re.S)
    assert body, table
    rows = re.findall(
        r'<tr data-direction="([^"]+)">.*?data-col="reason">([^<]*)<.*?data-col="count">(\d+)<',
        body.group(0),
        re.S,
    )
    return {(d, markup.unescape(r)): int(n) for d, r, n in rows}


def _reasons_or_none(html: str, table: str) -> dict[tuple[str, str], int] | None:
    return _reasons(html, table) if f'id="{table}"' in html else None


def test_the_figures(runtime: Runtime, seeded: Seeded) -> None:
    view = figures.build(runtime, seeded.a, now=NOW)
    assert view.crm.needs_reauth and view.crm.reason == "token refresh refused: invalid_grant"
    assert view.crm.title == "HubSpot" and not view.crm.reinstall  # no HubSpot app set up here
    accounts = {a.kind: a for a in view.accounts}
    assert [(k, a.auth) for k, a in accounts.items()] == [
        ("telegram", "ok"),
        ("whatsapp", "disconnected"),
        ("webchat", "setup_pending"),
    ]
    telegram = accounts["telegram"]
    assert telegram.last_inbound == at(WED, 9, 40) and telegram.receive == "webhook"
    assert telegram.silent and telegram.alert == "pending"
    assert telegram.silence is not None and telegram.silence.per_hour == 3.0
    assert telegram.silence.key == silence.alert_key(seeded.telegram, seeded.last_message)
    assert accounts["whatsapp"].silence is None and accounts["webchat"].last_inbound is None
    assert accounts["webchat"].silence is not None and not accounts["webchat"].silent
    assert view.parked == (
        figures.ReasonCount("out", "reply failed: HTTP 400 template rejected", 3),
        figures.ReasonCount("in", "auth: token expired", 1),
    )
    assert view.failed == (
        figures.ReasonCount("out", "reply: HTTP 400 template rejected", 2),
        figures.ReasonCount("in", "contact refused", 1),
        figures.ReasonCount("report", "delivery report refused", 1),
    )
    assert view.parked_total == 4 and view.failed_total == 4
    assert view.journal["by_state"]["new"] == 1 and view.journal["rejected_reasons"] == {
        "unparseable": 1
    }
    assert view.journal_lag is not None and view.journal_lag >= 600
    assert [(r["conversation"], r["breached"]) for r in view.at_risk] == [
        (view.at_risk[0]["conversation"], True)
    ]
    assert view.queues is not None
    assert [q.name for q in view.queues] == ["bridge-ingest", "bridge-deliver", "bridge-sync"]
    # the silence alert's task waits on the deliver queue
    assert {q.name: q.queued for q in view.queues}["bridge-deliver"] == 1


def test_reason_kind() -> None:
    assert figures.reason_kind(f"reply {UID} failed: x") == "reply failed: x"
    assert figures.reason_kind(f"message {UID.upper()} failed:   y\n z") == "message failed: y z"
    assert figures.reason_kind(f"reply {UID}: outcome unknown") == "reply: outcome unknown"
    assert figures.reason_kind(None) == "-" and figures.reason_kind("  ") == "-"
    assert figures.reason_kind("channel account 5 is disconnected") == (
        "channel account 5 is disconnected"
    )


def test_the_page(runtime: Runtime, seeded: Seeded) -> None:
    client = _viewer(runtime, seeded.a)
    for path in ("/console/", "/console/overview"):
        page = client.get(path)
        assert page.status_code == 200, path
    html = page.get_data(as_text=True)
    assert '<h1 id="overview-heading">Overview <small class="muted">Acme</small></h1>' in html
    assert 'aria-current="page">Overview</a>' in html
    # the banner
    for item in ("reauth", "silent", "parked", "failed", "at-risk"):
        assert f'data-attention="{item}"' in html, item
    assert "1 channel account(s) silent in working hours." in html
    # the CRM
    crm = _row(html, "data-crm", "hubspot")
    state, text = _cell(crm, "auth")
    assert state == "needs_reauth"
    assert text.startswith("needs re-authorisation token refresh refused: invalid_grant")
    assert "Install the bridge's app in HubSpot again" in text
    assert 'id="reauth-link"' not in html  # no OAuth app configured: the hint only
    assert "<td>4711</td>" in crm
    # the channel accounts
    telegram = _row(html, "data-account", seeded.telegram)
    assert _cell(telegram, "auth") == ("ok", "connected")
    assert _cell(telegram, "receive")[0] == "webhook"
    assert _cell(telegram, "last") == (at(WED, 9, 40).isoformat(), "2026-12-09 09:40 3h 05m ago")
    state, text = _cell(telegram, "silence")
    assert state == "silent"
    assert text == (
        "Silent for 3h 05m of working time usually 3 per working hour supervisor alert being sent"
    )
    assert 'class="silent"' in telegram
    assert _cell(_row(html, "data-account", seeded.whatsapp), "auth") == (
        "disconnected",
        "disconnected",
    )
    webchat = _row(html, "data-account", seeded.webchat)
    assert _cell(webchat, "auth") == ("setup_pending", "CRM setup pending")
    assert _cell(webchat, "last") == ("", "never")
    assert _cell(webchat, "silence") == ("low", "no steady traffic (median 0 per working hour)")
    assert "Times in Europe/Moscow." in html
    # the pipeline
    lag = re.search(r'data-tile="journal-lag" data-seconds="([0-9.]+)"', html)
    assert lag and float(lag.group(1)) >= 600
    assert re.search(r'data-tile="rejected"><span class="value">1</span>', html)
    assert "unparseable 1" in html
    for queue in ("bridge-ingest", "bridge-deliver", "bridge-sync"):
        assert f'<tr data-queue="{queue}">' in html
    assert _cell(_row(html, "data-queue", "bridge-deliver"), "queued")[1] == "1"
    # parked and failed, by reason
    assert _reasons(html, "parked-table") == {
        ("out", "reply failed: HTTP 400 template rejected"): 3,
        ("in", "auth: token expired"): 1,
    }
    assert _reasons(html, "failed-table") == {
        ("out", "reply: HTTP 400 template rejected"): 2,
        ("in", "contact refused"): 1,
        ("report", "delivery report refused"): 1,
    }
    assert '<small class="muted" data-total="parked">4</small>' in html
    assert "bridge replay --tenant acme --all" in html
    assert "beta&#39;s own error" not in html and "beta's own error" not in html
    # the SLA
    assert 'data-state="breached"' in _row(html, "data-conversation", r"\d+")


def test_the_page_in_russian(runtime: Runtime, seeded: Seeded) -> None:
    client = _viewer(runtime, seeded.a)
    html = client.get("/console/?lang=ru").get_data(as_text=True)
    assert "Обзор" in html and "нужна повторная авторизация" in html
    state, text = _cell(_row(html, "data-account", seeded.telegram), "silence")
    assert state == "silent" and text.startswith("Тишина 3 ч 05 мин рабочего времени")
    assert "Приостановленные диалоги" in html and "в CRM" in html


def test_a_viewer_sees_only_its_own_tenant(runtime: Runtime, seeded: Seeded) -> None:
    client = _viewer(runtime, seeded.a)
    assert client.get(f"/console/?tenant={seeded.b}").status_code == 404
    assert client.get(f"/console/overview?tenant={seeded.b}").status_code == 404
    assert client.get("/console/?tenant=999999").status_code == 404
    assert client.get(f"/console/?tenant={seeded.a}").status_code == 200
    beta = _viewer(runtime, seeded.b, "viewer@beta.test")
    html = beta.get("/console/").get_data(as_text=True)
    assert "Beta" in html and "Acme" not in html
    assert _reasons(html, "failed-table") == {("in", "beta's own error"): 1}
    assert "channel account(s) silent" not in html
    assert beta.get(f"/console/?tenant={seeded.a}").status_code == 404


def test_the_owner_picks_the_tenant(runtime: Runtime, seeded: Seeded) -> None:
    make_user(runtime, "owner@bridge.test", role="owner")
    client = console_app(runtime).test_client()
    assert login(client, "owner@bridge.test").status_code == 302
    html = client.get("/console/").get_data(as_text=True)
    assert f'<option value="{seeded.a}" selected>Acme</option>' in html
    assert f'<option value="{seeded.b}">Beta</option>' in html
    html = client.get(f"/console/?tenant={seeded.b}").get_data(as_text=True)
    assert f'<option value="{seeded.b}" selected>Beta</option>' in html
    assert 'Overview <small class="muted">Beta</small>' in html


def test_an_admin_gets_the_reinstall_link_when_the_app_is_set_up(
    runtime: Runtime, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge import oauth

    monkeypatch.setattr(oauth, "install_url", lambda rt, crm, mapping=None: "https://crm/install")
    client = _viewer(runtime, seeded.a)
    assert 'id="reauth-link"' not in client.get("/console/").get_data(as_text=True)
    make_user(runtime, "admin@acme.test", role="admin", tenant_id=seeded.a)
    admin = console_app(runtime).test_client()
    assert login(admin, "admin@acme.test").status_code == 302
    html = admin.get("/console/").get_data(as_text=True)
    link = re.search(r'<a class="ov-detail" id="reauth-link" href="([^"]+)">([^<]+)</a>', html)
    assert link and link.group(2) == "Re-authorise in HubSpot"
    assert link.group(1) == "/oauth/hubspot/install?mapping=hubspot.yaml"


def test_a_signed_out_visitor_is_sent_to_the_login(runtime: Runtime) -> None:
    client = console_app(runtime).test_client()
    page = client.get("/console/")
    assert page.status_code == 302 and "/console/login" in page.headers["Location"]


def test_a_tenant_with_nothing_wrong(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overview_page, "utcnow", lambda: NOW)
    (runtime.settings.mappings_dir / "hubspot.yaml").write_text(MAPPING, encoding="utf-8")
    tenant = make_tenant(runtime, "calm", "Calm")
    client = _viewer(runtime, tenant, "viewer@calm.test")
    html = client.get("/console/").get_data(as_text=True)
    # no worker runs in the tests: the banner says so, and only that
    assert re.findall(r'data-attention="([a-z-]+)"', html) == ["workers"]
    health.beat(runtime.redis, 4321)  # a worker's heartbeat
    html = client.get("/console/").get_data(as_text=True)
    assert 'id="all-well"' in html and 'id="attention"' not in html
    assert re.search(r'data-tile="workers"><span class="value">1 alive<', html)
    assert "No channel account is connected yet." in html
    assert _cell(_row(html, "data-crm", "hubspot"), "auth") == ("active", "tokens valid")
    assert _reasons_or_none(html, "parked-table") is None


def test_an_unreadable_mapping_is_said(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overview_page, "utcnow", lambda: NOW)
    tenant = make_tenant(runtime, "broken", "Broken")  # hubspot.yaml is not there
    client = _viewer(runtime, tenant, "viewer@broken.test")
    html = client.get("/console/").get_data(as_text=True)
    assert 'id="mapping-error"' in html and "Times in UTC." in html
