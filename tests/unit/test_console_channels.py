# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The console's channels and CRM page (``/console/channels``,
``bridge.console.connect``) through the Flask test client, on SQLite and
PostgreSQL.

* The connect form is the channel adapter's schema (its fields, their
  help, a secret as a password input, choices as a select, a flag as a
  box); a required field left empty answers the schema's own words at
  that field.
* "Test connection" before anything is stored and on a connected account:
  the adapter's ``check_connection`` over HTTP, mocked with ``responses``
  (an unregistered URL fails the test); the vendor's refusal in words.
* Connecting Telegram stores the account as ``bridge telegram connect``
  does (``setWebhook`` called, the CRM setup run), the list shows its
  webhook URL with the key masked, an admin may reveal it (audited).
* Disconnecting asks first, then removes the webhook and the token.
* Every change leaves an audit row; no secret is in any audit row or page.
* A viewer reads and gets 403 on every POST; a POST without the CSRF
  token is refused; another tenant's account is a 404.
* The CRM: its state, the OAuth re-authorisation started from here (an
  audit row, then ``/oauth/<crm>/install``), the owner's installs.
* Each channel's ``check_connection`` (VK, MAX, Viber, WhatsApp) against its
  API mocked; e-mail's against a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import crm_adapters
from bridge import admin
from bridge.config import Settings
from bridge.console import connect as logic
from bridge.runtime import Runtime
from bridge.schema import fields_of
from bridge.tables import ChannelAccount, ConsoleAudit, Tenant
from channel_adapters.email.settings import EmailForm
from channel_adapters.telegram.settings import TelegramConnect
from tests.support import fakes
from tests.support.console import console_app, csrf_token, login, make_user
from tests.support.smtp_server import smtp_server

TOKEN = "5000000001:AAE-console-test-token-0123456789wxyz"
OTHER_TOKEN = "5000000002:AAE-another-bot-token-0123456789abcd"
API = "https://api.telegram.org"
FAKE_MAPPING = """
crm: fake
channels:
  telegram:
    object: deal
    owner: {strategy: round_robin, pool: ["101", "102"]}
"""


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    """The suite's settings, with a HubSpot app configured (its OAuth
    install is offered) and nothing from the developer's shell."""
    return Settings.from_env(
        env={
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BRIDGE_VAR_DIR": str(tmp_path / "var"),
            "BRIDGE_MAPPINGS_DIR": str(tmp_path / "mappings"),
            "BRIDGE_PUBLIC_URL": "http://bridge.test",
            "BRIDGE_LOCK_TTL": "5",
            "BRIDGE_HTTP_READ_TIMEOUT": "2",
            "HUBSPOT_CLIENT_ID": "hubspot-client-id",
            "HUBSPOT_CLIENT_SECRET": "hubspot-client-secret",
        }
    )


@pytest.fixture
def fake_crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    yield


@pytest.fixture
def app(runtime: Runtime, fake_crm: None) -> Flask:
    (runtime.settings.mappings_dir / "fake.yaml").write_text(FAKE_MAPPING, encoding="utf-8")
    return console_app(runtime)


def tenant(runtime: Runtime, slug: str = "acme", account: str | None = None) -> int:
    return admin.create_tenant(
        runtime, slug=slug, crm_kind="fake", mapping="fake.yaml", account_id=account
    )


def signed_in(
    app: Flask, runtime: Runtime, email: str, role: str, tenant_id: int | None
) -> FlaskClient:
    make_user(runtime, email, role=role, tenant_id=tenant_id)
    client = app.test_client()
    assert login(client, email).status_code == 302
    return client


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
    token = csrf_token(client, "/console/channels")
    return client.post(path, data={**(data or {}), "csrf_token": token}, **kw)


def audits(runtime: Runtime, action: str | None = None) -> list[ConsoleAudit]:
    with runtime.read_session() as session:
        query = select(ConsoleAudit).order_by(ConsoleAudit.id)
        if action:
            query = query.where(ConsoleAudit.action == action)
        return list(session.scalars(query))


def channel_rows(runtime: Runtime) -> list[ChannelAccount]:
    with runtime.read_session() as session:
        return list(session.scalars(select(ChannelAccount).order_by(ChannelAccount.id)))


def telegram(
    mocked: responses.RequestsMock, method: str, token: str = TOKEN, **answer: Any
) -> None:
    body = answer or {"ok": True, "result": True}
    status = int(body.get("error_code", 200))
    mocked.post(f"{API}/bot{token}/{method}", json=body, status=status)


GET_ME = {
    "ok": True,
    "result": {
        "id": 5000000001,
        "is_bot": True,
        "first_name": "Acme Support",
        "username": "acme_support_bot",
    },
}
UNAUTHORIZED = {"ok": False, "error_code": 401, "description": "Unauthorized"}


def no_secret_in(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        # nor its distinctive middle
        assert secret[5:-5] not in text


# -- pure parts ---------------------------------------------------------------------------------


def test_masked_shows_set_and_at_most_the_last_four_characters_of_a_long_secret() -> None:
    assert logic.masked("") == "" and logic.masked(None) == ""
    assert logic.masked("s3cret") == "set"  # a password: nothing of it
    assert logic.masked(TOKEN) == "set …wxyz"
    assert logic.audit_values("telegram", {"bot_token": TOKEN}) == {"bot_token": "set …wxyz"}
    # a field the form takes in clear but the account keeps secret (VK's key)
    assert logic.audit_values("vk", {"group_id": "42", "secret": "abc123"}) == {
        "group_id": "42",
        "secret": "set",
    }


def test_the_form_is_the_schema_of_the_channel() -> None:
    fields = {f.name: f for f in logic.form_fields("telegram")}
    assert list(fields) == [f.name for f in fields_of(TelegramConnect)]
    token = fields["bot_token"]
    assert (token.input, token.required, token.secret, token.default) == (
        "password",
        True,
        True,
        "",
    )
    assert token.help == "the bot's token from @BotFather (123456789:AAE...)"
    mail = {f.name: f for f in logic.form_fields("email")}
    assert list(mail) == [f.name for f in fields_of(EmailForm)]  # the form, not the CLI's
    assert "password_env" not in mail
    assert (mail["password"].input, mail["smtp_password"].input) == ("password", "password")
    assert mail["imap_security"].input == "select"
    assert mail["imap_security"].choices == ("tls", "starttls", "plain")
    assert (mail["mark_seen"].input, mail["imap_port"].input) == ("checkbox", "number")
    assert (mail["address"].required, mail["user"].required) == (True, False)
    assert mail["folder"].default == "INBOX"
    vk = {f.name: f for f in logic.form_fields("vk")}
    assert vk["secret"].input == "password"  # secret in VkCredentials
    assert (vk["per_second"].input, vk["per_second"].step) == ("number", "any")


def test_read_form_drops_blank_optional_fields_and_reads_boxes() -> None:
    posted = {"address": " support@acme.test ", "imap_port": "", "mark_seen": "true"}
    assert logic.read_form("email", posted) == {
        "address": "support@acme.test",
        "mark_seen": "true",
    }
    assert logic.read_form("telegram", {"bot_token": f"{TOKEN}\r\n"}) == {"bot_token": TOKEN}
    assert logic.read_form("telegram", {}) == {}


# -- the form -----------------------------------------------------------------------------------


def test_the_connect_page_renders_the_adapters_fields(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    html = client.get(f"/console/channels/connect/telegram?tenant={tid}").get_data(as_text=True)
    assert 'name="bot_token" type="password"' in html
    assert "the bot&#39;s token from @BotFather" in html
    assert 'id="connect-test"' in html and 'name="mode"' in html  # webhook or polling
    mail = client.get(f"/console/channels/connect/email?tenant={tid}").get_data(as_text=True)
    for spec in fields_of(EmailForm):
        assert f'name="{spec.name}"' in mail
    assert '<option value="starttls">' in mail and 'name="mark_seen"' in mail
    assert client.get(f"/console/channels/connect/nothing?tenant={tid}").status_code == 404
    ru = client.get(f"/console/channels/connect/telegram?tenant={tid}&lang=ru")
    assert "Подключить Telegram" in ru.get_data(as_text=True)


def test_a_missing_required_field_shows_the_schemas_error(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    answer = post(client, f"/console/channels/connect/telegram?tenant={tid}", {"action": "connect"})
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert "Not connected: required: set it" in html
    field = html[html.index('id="field-bot_token"') :]
    field = field[: field.index("</div>")]
    assert 'aria-invalid="true"' in field and "required: set it" in field
    # the same from the test button (JSON for the page's script)
    token = csrf_token(client, "/console/channels")
    checked = client.post(
        f"/console/channels/connect/email?tenant={tid}",
        data={"action": "test", "csrf_token": token, "imap_port": "many"},
        headers={"Accept": "application/json"},
    ).get_json()
    assert checked["ok"] is False and checked["code"] == "invalid"
    assert checked["field"] == "address"
    assert checked["message"] == "The form is not complete: required: set it"
    # a value of the wrong type: the schema's words at that field
    checked = client.post(
        f"/console/channels/connect/email?tenant={tid}",
        data={"action": "test", "csrf_token": token, "address": "a@b.c", "imap_port": "many"},
        headers={"Accept": "application/json"},
    ).get_json()
    assert (checked["field"], checked["detail"]) == (
        "imap_port",
        "must be a whole number (got 'many')",
    )
    assert channel_rows(runtime) == [] and audits(runtime, "channels.connect") == []


@responses.activate
def test_test_connection_before_connecting_asks_the_channel_and_stores_nothing(
    app: Flask, runtime: Runtime
) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "getMe", **GET_ME)
    token = csrf_token(client, "/console/channels")
    url = f"/console/channels/connect/telegram?tenant={tid}"
    data = {"action": "test", "csrf_token": token, "bot_token": TOKEN}
    ok = client.post(url, data=data, headers={"Accept": "application/json"})
    assert ok.get_json() == {
        "ok": True,
        "code": "ok",
        "detail": "@acme_support_bot (Acme Support)",
        "field": None,
        "message": "The connection works: @acme_support_bot (Acme Support)",
    }
    assert [c.request.url.rsplit("/", 1)[1] for c in responses.calls] == ["getMe"]
    # without the script: the page again, the result on it, the token not sent back
    page = client.post(url, data=data)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "The connection works: @acme_support_bot (Acme Support)" in html
    assert "The secret fields were emptied" in html
    no_secret_in(html, TOKEN)
    # a token Telegram refuses: its words
    telegram(responses.mock, "getMe", token=OTHER_TOKEN, **UNAUTHORIZED)
    refused = client.post(
        url, data={**data, "bot_token": OTHER_TOKEN}, headers={"Accept": "application/json"}
    ).get_json()
    assert refused["ok"] is False and refused["code"] == "refused"
    assert refused["message"] == ("The channel refused the credentials: Telegram 401: Unauthorized")
    no_secret_in(json.dumps(refused), OTHER_TOKEN)
    assert channel_rows(runtime) == [] and audits(runtime, "channels.connect") == []


@responses.activate
def test_an_unreachable_channel_is_named(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    responses.post(f"{API}/bot{TOKEN}/getMe", status=502, body="Bad Gateway")
    token = csrf_token(client, "/console/channels")
    answer = client.post(
        f"/console/channels/connect/telegram?tenant={tid}",
        data={"action": "test", "csrf_token": token, "bot_token": TOKEN},
        headers={"Accept": "application/json"},
    ).get_json()
    assert answer["code"] == "unreachable"
    assert answer["message"].startswith("The channel did not answer: api.telegram.org: ")


# -- connecting, listing, revealing ----------------------------------------------------------


def connect_bot(client: FlaskClient, tid: int, token: str = TOKEN, **extra: str) -> Any:
    return post(
        client,
        f"/console/channels/connect/telegram?tenant={tid}",
        {"action": "connect", "bot_token": token, **extra},
    )


@responses.activate
def test_connecting_telegram_stores_the_account_and_shows_its_webhook_url(
    app: Flask, runtime: Runtime
) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "setWebhook")
    answer = connect_bot(client, tid, name="Support bot")
    assert answer.status_code == 303, answer.get_data(as_text=True)
    assert answer.headers["Location"].endswith(f"/console/channels?tenant={tid}")
    (row,) = channel_rows(runtime)
    assert (row.kind, row.external_id, row.name, row.status) == (
        "telegram",
        "5000000001",
        "Support bot",
        "active",
    )
    assert not row.awaiting_crm_setup  # the CRM setup covered it
    assert runtime.decrypt_channel_credentials(row)["bot_token"] == TOKEN
    (call,) = responses.calls
    sent = json.loads(call.request.body or b"{}")
    assert sent["url"] == f"http://bridge.test/webhooks/telegram/{row.key}"
    html = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert f"Telegram connected as channel account {row.id}." in html
    assert f"http://bridge.test/webhooks/telegram/…{row.key[-4:]}" in html
    assert row.key not in html
    assert "set …wxyz" in html  # the token: set, its last four characters
    no_secret_in(html, TOKEN)
    (entry,) = audits(runtime, "channels.connect")
    assert (entry.user_email, entry.tenant_id, entry.target) == (
        "admin@acme.test",
        tid,
        f"channel:{row.id} telegram",
    )
    assert entry.before is None
    assert entry.after["values"] == {"bot_token": "set …wxyz"}
    assert entry.after["external_id"] == "5000000001" and entry.after["receives"] == "webhook"
    assert set(entry.after["credentials"]) == {"bot_token", "secret_token"}
    secret_token = runtime.decrypt_channel_credentials(row)["secret_token"]
    no_secret_in(json.dumps([entry.before, entry.after]), TOKEN, secret_token)
    # the same bot again: refused with the core's words, nothing stored twice
    again = connect_bot(client, tid)
    assert again.status_code == 409
    assert "this Telegram account is connected already" in again.get_data(as_text=True)
    assert len(channel_rows(runtime)) == 1


@responses.activate
def test_a_channel_refusing_the_webhook_keeps_nothing(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "setWebhook", **UNAUTHORIZED)
    answer = connect_bot(client, tid)
    assert answer.status_code == 502
    html = answer.get_data(as_text=True)
    assert "Not connected: The channel refused the credentials: Telegram 401: Unauthorized" in html
    no_secret_in(html, TOKEN)
    assert channel_rows(runtime) == [] and audits(runtime, "channels.connect") == []


@responses.activate
def test_a_token_refused_while_registering_the_webhook_is_said_at_the_form(
    app: Flask, runtime: Runtime
) -> None:
    """Viber proves the token when its webhook is set (after the account
    was stored): the refusal comes back in words and the account is gone."""
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    responses.post(
        "https://chatapi.viber.com/pa/get_account_info",
        json={"status": 2, "status_message": "invalidAuthToken"},
    )
    answer = post(
        client,
        f"/console/channels/connect/viber?tenant={tid}",
        {"action": "connect", "auth_token": "viber-token-0001", "sender_name": "Acme"},
    )
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert (
        "Not connected: Viber refused the token: Viber 2: the bot&#39;s auth token was "
        "rejected (invalidAuthToken)" in html
    )
    assert "viber-token-0001" not in html
    assert channel_rows(runtime) == [] and audits(runtime, "channels.connect") == []


@responses.activate
def test_polling_is_chosen_in_the_form(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "deleteWebhook")
    assert connect_bot(client, tid, mode="polling").status_code == 303
    (row,) = channel_rows(runtime)
    assert row.settings["mode"] == "polling"
    html = client.get(f"/console/channels?tenant={tid}").get_data(as_text=True)
    assert "polling" in html and "none needed" in html and "webhooks/telegram" not in html


@responses.activate
def test_an_admin_reveals_the_webhook_url_with_its_key(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "setWebhook")
    connect_bot(client, tid)
    (row,) = channel_rows(runtime)
    answer = post(client, f"/console/channels/{row.id}/webhook?tenant={tid}")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert f'id="webhook-revealed">http://bridge.test/webhooks/telegram/{row.key}<' in html
    (entry,) = audits(runtime, "channels.reveal_webhook")
    assert (entry.target, entry.before, entry.after) == (f"channel:{row.id} telegram", None, None)
    # shown once: the list masks it again
    assert row.key not in client.get(f"/console/channels?tenant={tid}").get_data(as_text=True)


@responses.activate
def test_test_connection_of_a_connected_account(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "setWebhook")
    connect_bot(client, tid)
    (row,) = channel_rows(runtime)
    telegram(responses.mock, "getMe", **GET_ME)
    answer = post(client, f"/console/channels/{row.id}/test?tenant={tid}")
    assert answer.status_code == 303
    html = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "The connection works: @acme_support_bot (Acme Support)" in html
    responses.replace(responses.POST, f"{API}/bot{TOKEN}/getMe", json=UNAUTHORIZED, status=401)
    token = csrf_token(client, "/console/channels")
    refused = client.post(
        f"/console/channels/{row.id}/test?tenant={tid}",
        data={"csrf_token": token},
        headers={"Accept": "application/json"},
    ).get_json()
    assert (refused["ok"], refused["code"]) == (False, "refused")
    assert refused["detail"] == "Telegram 401: Unauthorized"
    assert audits(runtime, "channels.test") == []  # a test changes nothing


# -- disconnecting ---------------------------------------------------------------------------------


@responses.activate
def test_disconnecting_asks_then_removes_the_webhook_and_the_token(
    app: Flask, runtime: Runtime
) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "setWebhook")
    connect_bot(client, tid)
    (row,) = channel_rows(runtime)
    confirm = client.get(f"/console/channels/{row.id}/disconnect?tenant={tid}")
    assert confirm.status_code == 200
    html = confirm.get_data(as_text=True)
    assert "Disconnect Telegram 5000000001?" in html and 'id="disconnect-submit"' in html
    assert channel_rows(runtime)[0].status == "active"  # asking changes nothing
    telegram(responses.mock, "deleteWebhook")
    answer = post(client, f"/console/channels/{row.id}/disconnect?tenant={tid}")
    assert answer.status_code == 303
    assert [c.request.url.rsplit("/", 1)[1] for c in responses.calls][-1] == "deleteWebhook"
    (row,) = channel_rows(runtime)
    assert (row.status, row.credentials) == ("disconnected", None)
    listed = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Telegram 5000000001 disconnected." in listed
    assert f'<tr class="off" id="account-{row.id}"' in listed
    (entry,) = audits(runtime, "channels.disconnect")
    assert entry.before == {
        "status": "active",
        "credentials": {
            "bot_token": "set …wxyz",
            "secret_token": entry.before["credentials"]["secret_token"],
        },
    }
    assert entry.before["credentials"]["secret_token"].startswith("set …")
    assert entry.after == {
        "status": "disconnected",
        "credentials": {"bot_token": "", "secret_token": ""},
        "problems": [],
    }
    # gone: no second disconnect, no test
    assert post(client, f"/console/channels/{row.id}/disconnect?tenant={tid}").status_code == 404
    assert post(client, f"/console/channels/{row.id}/test?tenant={tid}").status_code == 404


@responses.activate
def test_no_audit_row_holds_a_secret(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "setWebhook")
    telegram(responses.mock, "deleteWebhook")
    connect_bot(client, tid)
    (row,) = channel_rows(runtime)
    secret_token = runtime.decrypt_channel_credentials(row)["secret_token"]
    post(client, f"/console/channels/{row.id}/webhook?tenant={tid}")
    post(client, f"/console/channels/{row.id}/disconnect?tenant={tid}")
    rows = audits(runtime)
    assert {r.action for r in rows} >= {
        "channels.connect",
        "channels.reveal_webhook",
        "channels.disconnect",
    }
    dumped = json.dumps([[r.target, r.before, r.after] for r in rows], ensure_ascii=False)
    no_secret_in(dumped, TOKEN, secret_token, row.key)


# -- who may ---------------------------------------------------------------------------------------


@responses.activate
def test_a_viewer_reads_the_page_and_every_post_is_403(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    admin_client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    telegram(responses.mock, "setWebhook")
    connect_bot(admin_client, tid)
    (row,) = channel_rows(runtime)
    viewer = signed_in(app, runtime, "viewer@acme.test", "viewer", tid)
    page = viewer.get(f"/console/channels?tenant={tid}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Telegram" in html and f"…{row.key[-4:]}" in html
    assert "can see the channels but not change them" in html
    for control in ("connect-choices", "crm-reauthorize", "disconnect", "webhook?", "test?"):
        assert control not in html, control
    assert viewer.get(f"/console/channels/connect/telegram?tenant={tid}").status_code == 403
    assert viewer.get(f"/console/channels/{row.id}/disconnect?tenant={tid}").status_code == 403
    for path, data in (
        (f"/console/channels/connect/telegram?tenant={tid}", {"action": "connect"}),
        (f"/console/channels/connect/telegram?tenant={tid}", {"action": "test"}),
        (f"/console/channels/{row.id}/test?tenant={tid}", {}),
        (f"/console/channels/{row.id}/webhook?tenant={tid}", {}),
        (f"/console/channels/{row.id}/disconnect?tenant={tid}", {}),
        (f"/console/channels/crm/reauthorize?tenant={tid}", {}),
        ("/console/channels/crm/hubspot/install", {}),
    ):
        assert post(viewer, path, {**data, "bot_token": OTHER_TOKEN}).status_code == 403, path
    assert len(responses.calls) == 1  # only the admin's setWebhook
    (row,) = channel_rows(runtime)
    assert row.status == "active"
    assert [r.action for r in audits(runtime) if r.action.startswith(("channels", "crm"))] == [
        "channels.connect"
    ]


@responses.activate
def test_a_post_without_the_csrf_token_is_refused(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    answer = client.post(
        f"/console/channels/connect/telegram?tenant={tid}",
        data={"action": "connect", "bot_token": TOKEN},
    )
    assert answer.status_code == 400
    assert channel_rows(runtime) == []
    telegram(responses.mock, "setWebhook")
    connect_bot(client, tid)
    (row,) = channel_rows(runtime)
    for path in (
        f"/console/channels/{row.id}/disconnect?tenant={tid}",
        f"/console/channels/{row.id}/webhook?tenant={tid}",
        f"/console/channels/crm/reauthorize?tenant={tid}",
    ):
        bad = client.post(path, data={"csrf_token": "not-the-token"})
        assert bad.status_code == 400, path
    assert channel_rows(runtime)[0].status == "active"
    assert audits(runtime, "channels.disconnect") == []
    assert audits(runtime, "channels.reveal_webhook") == []


@responses.activate
def test_another_tenants_account_is_not_found(app: Flask, runtime: Runtime) -> None:
    tid, other = tenant(runtime), tenant(runtime, "globex")
    theirs = signed_in(app, runtime, "admin@globex.test", "admin", other)
    telegram(responses.mock, "setWebhook")
    connect_bot(theirs, other)
    (row,) = channel_rows(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    assert client.get(f"/console/channels?tenant={other}").status_code == 404
    html = client.get(f"/console/channels?tenant={tid}").get_data(as_text=True)
    assert "No channel is connected yet." in html
    for path in (
        f"/console/channels/{row.id}/disconnect?tenant={tid}",
        f"/console/channels/{row.id}/webhook?tenant={tid}",
        f"/console/channels/{row.id}/test?tenant={tid}",
    ):
        assert post(client, path).status_code == 404, path
    assert client.get(f"/console/channels/{row.id}/disconnect?tenant={tid}").status_code == 404
    assert channel_rows(runtime)[0].status == "active"


# -- the CRM -------------------------------------------------------------------------------------


def hubspot_tenant(runtime: Runtime, account: str | None = "62515") -> int:
    from tests.support.harness import HUBSPOT_MAPPING

    (runtime.settings.mappings_dir / "hub.yaml").write_text(HUBSPOT_MAPPING, encoding="utf-8")
    return admin.create_tenant(
        runtime,
        slug="hub",
        crm_kind="hubspot",
        mapping="hub.yaml",
        account_id=account,
        credentials={"type": "oauth", "access_token": "at-1", "refresh_token": "rt-1"},
    )


def test_the_crm_is_reauthorised_through_its_oauth_install(app: Flask, runtime: Runtime) -> None:
    tid = hubspot_tenant(runtime)
    with runtime.transaction() as session:
        row = session.get(Tenant, tid)
        assert row is not None
        row.status, row.status_reason = "needs_reauth", "token refresh refused"
    client = signed_in(app, runtime, "admin@hub.test", "admin", tid)
    html = client.get(f"/console/channels?tenant={tid}").get_data(as_text=True)
    assert "CRM: HubSpot" in html and "needs re-authorisation" in html
    assert "token refresh refused" in html and 'id="crm-reauthorize"' in html
    assert 'id="crm-installs"' not in html  # the owner's
    answer = post(client, f"/console/channels/crm/reauthorize?tenant={tid}")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/oauth/hubspot/install?mapping=hub.yaml"
    # the link the console sends to is the install flow's own: to HubSpot's consent page
    consent = app.test_client().get(answer.headers["Location"])
    assert consent.status_code == 302
    assert consent.headers["Location"].startswith("https://app.hubspot.com/oauth/authorize?")
    (entry,) = audits(runtime, "crm.reauthorize")
    assert (entry.target, entry.tenant_id) == (f"tenant:{tid} hubspot", tid)
    assert entry.before == {"status": "needs_reauth", "reason": "token refresh refused"}
    assert entry.after == {"oauth": "started"}


def test_a_crm_without_oauth_here_says_why(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, account="fake-1")
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    html = client.get(f"/console/channels?tenant={tid}").get_data(as_text=True)
    assert "CRM: FakeCRM" in html and "OAuth is not available here: FakeCRM has no OAuth" in html
    assert 'id="crm-reauthorize"' not in html
    assert post(client, f"/console/channels/crm/reauthorize?tenant={tid}").status_code == 404
    # a tenant connected with a token has no account id: OAuth would make another tenant
    token_tenant = hubspot_tenant(runtime, account=None)
    owner = signed_in(app, runtime, "owner@bridge.test", "owner", None)
    html = owner.get(f"/console/channels?tenant={token_tenant}").get_data(as_text=True)
    assert "has no CRM account id on record" in html and 'id="crm-reauthorize"' not in html
    assert audits(runtime, "crm.reauthorize") == []


def test_the_owner_installs_a_crm_through_oauth(app: Flask, runtime: Runtime) -> None:
    owner = signed_in(app, runtime, "owner@bridge.test", "owner", None)
    html = owner.get("/console/channels").get_data(as_text=True)
    assert "There is no tenant to show." in html
    assert 'id="crm-hubspot"' in html and "OAuth ready" in html
    assert "set AMOCRM_CLIENT_ID and AMOCRM_CLIENT_SECRET" in html  # not configured here
    answer = post(owner, "/console/channels/crm/hubspot/install")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/oauth/hubspot/install"
    assert post(owner, "/console/channels/crm/amocrm/install").status_code == 404
    (entry,) = audits(runtime, "crm.install")
    assert (entry.target, entry.tenant_id, entry.after) == (
        "crm:hubspot",
        None,
        {"oauth": "started"},
    )
    tid = tenant(runtime)
    admin_client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    assert post(admin_client, "/console/channels/crm/hubspot/install").status_code == 403


# -- e-mail: the form's own schema, a real SMTP server -------------------------------------------


def test_an_email_account_is_tested_and_connected_from_its_form(
    app: Flask, runtime: Runtime
) -> None:
    tid = tenant(runtime)
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    url = f"/console/channels/connect/email?tenant={tid}"
    with smtp_server(security="plain", users={"support": "mail-s3cret"}) as server:
        form = {
            "address": "Support@Acme.test",
            "smtp_host": server.host,
            "smtp_port": str(server.port),
            "smtp_security": "plain",
            "user": "support",
            "password": "mail-s3cret",
        }
        token = csrf_token(client, "/console/channels")
        json_headers = {"Accept": "application/json"}
        ok = client.post(
            url, data={**form, "action": "test", "csrf_token": token}, headers=json_headers
        ).get_json()
        assert ok["ok"] is True, ok
        assert ok["detail"] == f"SMTP {server.host}: logged in"
        wrong = client.post(
            url,
            data={**form, "password": "wrong", "action": "test", "csrf_token": token},
            headers=json_headers,
        ).get_json()
        assert wrong["code"] == "refused" and wrong["detail"].startswith("SMTP AUTH refused: 535")
        assert server.messages == []  # nothing was sent
        answer = post(client, url, {**form, "action": "connect", "name": "Support mail"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    (row,) = channel_rows(runtime)
    assert (row.kind, row.external_id, row.settings["mode"]) == (
        "email",
        "support@acme.test",
        "webhook",
    )
    assert runtime.decrypt_channel_credentials(row)["smtp_password"] == "mail-s3cret"
    html = client.get(f"/console/channels?tenant={tid}").get_data(as_text=True)
    assert f"http://bridge.test/webhooks/email/…{row.key[-4:]}" in html
    assert "mail-s3cret" not in html
    (entry,) = audits(runtime, "channels.connect")
    assert entry.after["values"]["password"] == "set"
    assert "mail-s3cret" not in json.dumps(entry.after)


# -- each channel's check, its API mocked ----------------------------------------------------------


@responses.activate
def test_vk_checks_the_community_with_groups_get_by_id(runtime: Runtime) -> None:
    values = {"group_id": "club215", "access_token": "vk1.a.token", "confirmation": "a1b2c3d4"}
    responses.post(
        "https://api.vk.com/method/groups.getById",
        json={"response": {"groups": [{"id": 215, "name": "Acme"}], "profiles": []}},
    )
    assert logic.check_values(runtime, "vk", values) == logic.Check("ok", "Acme (club215)")
    sent = responses.calls[0].request.body
    assert "group_id=215" in str(sent) and "v=5.199" in str(sent)
    responses.replace(
        responses.POST,
        "https://api.vk.com/method/groups.getById",
        json={"error": {"error_code": 5, "error_msg": "User authorization failed"}},
    )
    refused = logic.check_values(runtime, "vk", values)
    assert refused.code == "refused" and refused.detail.startswith("VK 5")


@responses.activate
def test_max_checks_the_bot_with_get_me(runtime: Runtime) -> None:
    values = {"access_token": "max-token", "bot_id": "9001"}
    responses.get(
        "https://platform-api2.max.ru/me",
        json={"user_id": 9001, "name": "Acme", "username": "acme_bot", "is_bot": True},
    )
    assert logic.check_values(runtime, "max", values) == logic.Check("ok", "@acme_bot (Acme)")
    assert responses.calls[0].request.headers["Authorization"] == "max-token"
    responses.replace(
        responses.GET,
        "https://platform-api2.max.ru/me",
        status=401,
        json={"code": "verify.token", "message": "Invalid access_token"},
    )
    assert logic.check_values(runtime, "max", values).code == "refused"


@responses.activate
def test_viber_checks_the_bot_with_get_account_info(runtime: Runtime) -> None:
    values = {"auth_token": "viber-token", "sender_name": "Acme"}
    responses.post(
        "https://chatapi.viber.com/pa/get_account_info",
        json={"status": 0, "status_message": "ok", "name": "Acme", "uri": "acme"},
    )
    assert logic.check_values(runtime, "viber", values) == logic.Check("ok", "Acme (acme)")
    responses.replace(
        responses.POST,
        "https://chatapi.viber.com/pa/get_account_info",
        json={"status": 2, "status_message": "invalidAuthToken"},
    )
    refused = logic.check_values(runtime, "viber", values)
    assert refused.code == "refused" and "invalidAuthToken" in refused.detail


@responses.activate
def test_whatsapp_checks_the_phone_number(runtime: Runtime) -> None:
    values = {"phone_number_id": "106540352242922", "waba_id": "102290129340398"}
    values["access_token"] = "EAAG-token"
    url = "https://graph.facebook.com/v21.0/106540352242922"
    responses.get(url, json={"display_phone_number": "+1 555 0100", "verified_name": "Acme"})
    assert logic.check_values(runtime, "whatsapp", values) == logic.Check(
        "ok", "+1 555 0100 (Acme)"
    )
    call = responses.calls[0].request
    assert call.headers["Authorization"] == "Bearer EAAG-token"
    assert "fields=display_phone_number%2Cverified_name" in str(call.url)
    responses.replace(
        responses.GET,
        url,
        status=401,
        json={"error": {"code": 190, "message": "Error validating access token"}},
    )
    refused = logic.check_values(runtime, "whatsapp", values)
    assert refused == logic.Check("refused", "WhatsApp 190: Error validating access token")


def test_a_channel_without_a_check_says_so(runtime: Runtime) -> None:
    values = {"origins": "https://acme.test"}
    assert logic.check_values(runtime, "webchat", values).code == "unsupported"
    assert [c.kind for c in logic.channel_choices() if not c.testable] == ["custom", "webchat"]
