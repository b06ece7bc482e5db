# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The console's "test connection" and connect against real servers, on
SQLite and PostgreSQL:

* Telegram: the Bot API sandbox (``sandbox.telegram``) served on
  127.0.0.1 over HTTP, the bridge pointed at it with ``TELEGRAM_API_BASE``.
  The demo bot's token tests ok (``getMe``), a token the sandbox does not
  know is its 401 in words; connecting registers the webhook the page shows
  (the sandbox holds the same URL), the connected bot tests ok, and
  disconnecting removes the webhook there.
* E-mail: a real Dovecot (IMAP) and a real SMTP server on 127.0.0.1: the
  form's mailbox logs in to both; a wrong password and an untrusted TLS
  certificate are the servers' refusals in words.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import crm_adapters
from bridge import admin
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import ChannelAccount, ConsoleAudit
from sandbox.telegram import DEMO_BOT_TOKEN
from sandbox.telegram import create_app as telegram_sandbox
from tests.support import fakes
from tests.support.console import console_app, csrf_token, login, make_user
from tests.support.dovecot import Dovecot, dovecot_available
from tests.support.servers import RunningServer, serve_wsgi
from tests.support.smtp_server import smtp_server

pytestmark = pytest.mark.integration

UNKNOWN_BOT = "7000000999:AAE_a-bot-the-sandbox-does-not-know00"
FAKE_MAPPING = """
crm: fake
channels:
  telegram:
    object: deal
    owner: {strategy: round_robin, pool: ["101", "102"]}
"""
JSON = {"Accept": "application/json"}


@pytest.fixture
def sandbox() -> Iterator[RunningServer]:
    # one per test: Telegram limits setWebhook per bot (the sandbox too), and
    # the test connects the same bot on each database
    with serve_wsgi(telegram_sandbox()) as server:
        yield server


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path, sandbox: RunningServer) -> Settings:
    return Settings.from_env(
        env={
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BRIDGE_VAR_DIR": str(tmp_path / "var"),
            "BRIDGE_MAPPINGS_DIR": str(tmp_path / "mappings"),
            # the Bot API accepts an https webhook on 443 only
            "BRIDGE_PUBLIC_URL": "https://bridge.test",
            "BRIDGE_LOCK_TTL": "5",
            "TELEGRAM_API_BASE": sandbox.url,
        }
    )


@pytest.fixture
def app(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(FAKE_MAPPING, encoding="utf-8")
    return console_app(runtime)


@pytest.fixture
def admin_of(app: Flask, runtime: Runtime) -> tuple[FlaskClient, int]:
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    make_user(runtime, "admin@acme.test", role="admin", tenant_id=tenant_id)
    client = app.test_client()
    assert login(client, "admin@acme.test").status_code == 302
    return client, tenant_id


def _bot(sandbox: RunningServer) -> dict[str, Any]:
    answer = requests.get(f"{sandbox.url}/_state", params={"account": DEMO_BOT_TOKEN}, timeout=10)
    answer.raise_for_status()
    return dict(answer.json()["accounts"][0])


def _post(client: FlaskClient, path: str, data: dict[str, Any], **kw: Any) -> Any:
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/console")}, **kw)


def test_a_telegram_bot_is_tested_connected_and_disconnected_against_the_sandbox(
    admin_of: tuple[FlaskClient, int], runtime: Runtime, sandbox: RunningServer
) -> None:
    client, tid = admin_of
    form = f"/console/channels/connect/telegram?tenant={tid}"
    ok = _post(client, form, {"action": "test", "bot_token": DEMO_BOT_TOKEN}, headers=JSON)
    assert ok.get_json()["message"] == "The connection works: @demo_bridge_bot (Demo Bridge Bot)"
    unknown = _post(client, form, {"action": "test", "bot_token": UNKNOWN_BOT}, headers=JSON)
    body = unknown.get_json()
    assert (body["ok"], body["code"]) == (False, "refused")
    assert body["message"] == "The channel refused the credentials: Telegram 401: Unauthorized"
    assert UNKNOWN_BOT not in json.dumps(body)

    connected = _post(client, form, {"action": "connect", "bot_token": DEMO_BOT_TOKEN})
    assert connected.status_code == 303, connected.get_data(as_text=True)
    with runtime.read_session() as session:
        (account,) = session.scalars(select(ChannelAccount)).all()
    url = f"https://bridge.test/webhooks/telegram/{account.key}"
    assert _bot(sandbox)["webhook"]["url"] == url
    assert _bot(sandbox)["webhook"]["has_secret_token"] is True
    listed = client.get(f"/console/channels?tenant={tid}").get_data(as_text=True)
    assert f"https://bridge.test/webhooks/telegram/…{account.key[-4:]}" in listed
    assert account.key not in listed and DEMO_BOT_TOKEN not in listed
    revealed = _post(client, f"/console/channels/{account.id}/webhook?tenant={tid}", {})
    assert f'id="webhook-revealed">{url}<' in revealed.get_data(as_text=True)

    tested = _post(client, f"/console/channels/{account.id}/test?tenant={tid}", {}, headers=JSON)
    assert tested.get_json()["detail"] == "@demo_bridge_bot (Demo Bridge Bot)"

    gone = _post(client, f"/console/channels/{account.id}/disconnect?tenant={tid}", {})
    assert gone.status_code == 303
    assert _bot(sandbox)["webhook"] is None
    with runtime.read_session() as session:
        row = session.get(ChannelAccount, account.id)
        assert row is not None and (row.status, row.credentials) == ("disconnected", None)
        actions = [
            a.action for a in session.scalars(select(ConsoleAudit).order_by(ConsoleAudit.id))
        ]
        dumped = json.dumps(
            [[a.before, a.after] for a in session.scalars(select(ConsoleAudit))], ensure_ascii=False
        )
    assert actions[-3:] == ["channels.connect", "channels.reveal_webhook", "channels.disconnect"]
    assert DEMO_BOT_TOKEN not in dumped and DEMO_BOT_TOKEN.split(":")[1] not in dumped


@pytest.fixture(scope="module")
def bare_dovecot() -> Iterator[Dovecot]:
    if not dovecot_available():
        pytest.fail("dovecot is not installed (make apt-deps)")
    with Dovecot(bare=True) as server:
        yield server


@pytest.fixture(scope="module")
def tls_dovecot() -> Iterator[Dovecot]:
    if not dovecot_available():
        pytest.fail("dovecot is not installed (make apt-deps)")
    with Dovecot() as server:
        yield server


def test_a_mailbox_is_tested_against_real_imap_and_smtp_servers(
    admin_of: tuple[FlaskClient, int], bare_dovecot: Dovecot, tls_dovecot: Dovecot
) -> None:
    client, tid = admin_of
    form = f"/console/channels/connect/email?tenant={tid}"
    with smtp_server(security="plain", users={bare_dovecot.user: bare_dovecot.password}) as smtp:
        values = {
            "action": "test",
            "address": "desk@example.org",
            "user": bare_dovecot.user,
            "password": bare_dovecot.password,
            "imap_host": bare_dovecot.host,
            "imap_port": str(bare_dovecot.imap_port),
            "imap_security": "plain",
            "smtp_host": smtp.host,
            "smtp_port": str(smtp.port),
            "smtp_security": "plain",
        }
        ok = _post(client, form, values, headers=JSON).get_json()
        assert ok["ok"] is True, ok
        assert ok["detail"] == (
            f"IMAP {bare_dovecot.host}: INBOX (0 messages); SMTP {smtp.host}: logged in"
        )
        wrong = _post(client, form, {**values, "password": "Wrong-Pass-0451"}, headers=JSON)
        body = wrong.get_json()
        assert body["code"] == "refused"
        assert (
            f"IMAP server {bare_dovecot.host}:{bare_dovecot.imap_port} refused the login"
            in (body["detail"])
        )
        assert "Wrong-Pass-0451" not in json.dumps(body)
        assert smtp.messages == []
    # a server whose certificate the system does not trust: said so, no login tried
    untrusted = {
        **values,
        "imap_port": str(tls_dovecot.imaps_port),
        "imap_security": "tls",
        "smtp_host": "",
    }
    body = _post(client, form, untrusted, headers=JSON).get_json()
    assert body["code"] == "failed"
    assert "its TLS certificate is not trusted" in body["detail"]
